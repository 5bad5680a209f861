"""``python -m pointins.experiments.budget``: the budget curve (#32 7c): semantic-only against PointINS at several
pretraining budgets, on the ablation's benchmarks and scales.

Each budget is one ablation (:func:`pointins.experiments.ablation.run_ablation`) in ``<out>/steps<N>/``; the
synthetic scenes are generated once into ``<out>/data`` and shared. A budget that an earlier ablation already ran
can be reused in place (``--reuse 600=runs/abl-600-rules``: its finished runs are read, not redone, and its scenes
become the shared ones when ``<out>/data`` does not exist yet). Budgets run from the smallest up, so an interrupted
command leaves whole budgets behind; repeat the command to resume (finished runs are reused, an interrupted
pretraining continues from its last checkpoint).

    python -m pointins.experiments.budget --out runs/budget --steps 600 1200 2400 --seeds 0
    python -m pointins.experiments.budget --out runs/budget --steps 600 1200 --reuse 600=runs/abl-600-rules

Writes ``budget.md`` (per benchmark: each variant's metric per budget, PointINS minus semantic-only with the std of
the per-seed differences and the verdict against the +3 target, the offset head's cosine with the true centre
offsets), ``budget.json`` (every run's numbers per budget) and ``budget_indoor.svg`` / ``budget_outdoor.svg``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from pointins.experiments import ablation

__all__ = ["main", "run_budget"]

#: the headline metric per benchmark (the issue's targets) and a second one shown beside it
METRICS = {"indoor": (("ap", "AP"), ("miou", "mIoU")), "outdoor": (("pq", "PQ"), ("pq_things", "PQ^Th"))}


def _parse_reuse(items: list[str]) -> dict[int, Path]:
    out = {}
    for it in items:
        steps, sep, path = it.partition("=")
        if not sep or not steps.strip().isdigit() or not path:
            raise ValueError(f"--reuse takes STEPS=DIR (e.g. 600=runs/abl-600-rules), got {it!r}.")
        if not Path(path).is_dir():
            raise FileNotFoundError(f"--reuse {it}: {path} is not a folder (an ablation's --out).")
        out[int(steps)] = Path(path)
    return out


def _budget_dir(out: Path, steps: int, reuse: dict[int, Path]) -> Path:
    if steps in reuse:
        return reuse[steps]
    d = out / f"steps{steps}"
    d.mkdir(parents=True, exist_ok=True)
    link = d / "data"
    if not link.exists() and not link.is_symlink():
        os.symlink(os.path.join("..", "data"), link)  # relative: the folder can move as a whole
    return d


def run_budget(
    out,
    steps=(600, 1200, 2400),
    scale: str = "cpu",
    seeds=(0,),
    variants=("semantic-only", "pointins"),
    indoor: bool = True,
    outdoor: bool = True,
    reuse: dict[int, Path] | None = None,
    device: str = "auto",
    progress: bool = True,
    extra: list[str] | None = None,
    report_only: bool = False,
) -> dict:
    """Run the ablation of ``variants`` at every budget in ``steps`` (ascending) and write the budget tables;
    ``report_only``: run nothing, tabulate the runs already finished."""
    steps = sorted({int(s) for s in steps})
    if not steps or steps[0] < 1:
        raise ValueError(f"budget: steps must be positive integers, got {steps}.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reuse = dict(reuse or {})
    if not (out / "data").exists():
        src = next((reuse[s] / "data" for s in steps if s in reuse and (reuse[s] / "data").is_dir()), None)
        if src is not None:  # share the reused ablation's scenes (same generator and seed) instead of regenerating
            os.symlink(os.path.abspath(src), out / "data")
        else:
            (out / "data").mkdir()
    kinds = [k for k, on in (("indoor", indoor), ("outdoor", outdoor)) if on]
    res: dict = {"scale": scale, "steps": steps, "seeds": list(seeds), "variants": list(variants), "budgets": {},
                 "dirs": {}, "machine": ablation._machine(device),
                 "started": time.strftime("%Y-%m-%d %H:%M %Z"), "report_only": report_only}  # fmt: skip
    t0 = time.perf_counter()
    for n in steps:
        if report_only and n not in reuse and not (out / f"steps{n}").is_dir():
            res["budgets"][str(n)], res["dirs"][str(n)] = {}, str(out / f"steps{n}")  # not started: nothing to read
            continue
        d = _budget_dir(out, n, reuse)
        if not report_only:
            print(f"budget: {n} pretraining steps in {d}", file=sys.stderr)
        r = ablation.run_ablation(d, scale, seeds, n, variants, indoor, outdoor, device=device, progress=progress,
                                  extra=extra, report_only=report_only)  # fmt: skip
        res["budgets"][str(n)] = r["runs"]
        res["dirs"][str(n)] = str(d)
        res["seconds"] = time.perf_counter() - t0
        _report(out, res, kinds)
    res["finished"] = time.strftime("%Y-%m-%d %H:%M %Z")
    _report(out, res, kinds)
    return res


def _mean_cell(vals: list[float]) -> str:
    return ablation._cell(vals) if vals else "…"


def _report(out: Path, res: dict, kinds: list[str]) -> None:
    from pointins.ssl.diagnostics import svg_lines

    variants, seeds = res["variants"], res["seeds"]
    done = [int(n) for n in res["budgets"]]
    md = [f"# PointINS budget curve ({res['scale']} scale)", "",
          f"Pretraining budgets {done} steps (asked: {res['steps']}), seeds {seeds}, linear probes on frozen "
          "features as in the ablation (mean ± std over the seeds finished; the seeds column counts them). "
          "Numbers in %.", "",
          f"Machine: {res['machine']}. "
          + (f"Report only (`--report-only`, {res['started']}): nothing was run; the runs finished by then."
             if res.get("report_only") else f"Started {res['started']}"
             + (f", finished {res['finished']}." if "finished" in res else " (still running or interrupted: rerun "
                "the same command to resume)."))]  # fmt: skip
    md += ["", "Folders: " + ", ".join(f"{n} steps `{d}`" for n, d in res["dirs"].items()) + "."]
    gains: dict = {}
    for kind in kinds:
        (m1, l1), (m2, l2) = METRICS[kind]
        md += ["", f"## {kind}", ""]
        head = ["steps"] + [f"{v} {lab}" for v in variants for lab in (l1, l2)]
        head += ["PointINS − semantic-only (" + l1 + ")", "+3 beyond 2 std", "offset cosine (PointINS)", "seeds"]
        md += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        series: dict[str, list[tuple[float, float]]] = {}
        for n in done:
            runs = res["budgets"][str(n)]
            row = [str(n)]
            counts = []
            for v in variants:
                rs = [runs[f"{kind}/{v}/seed{s}"] for s in seeds if f"{kind}/{v}/seed{s}" in runs]
                counts.append(len(rs))
                row += [_mean_cell([r[m1] for r in rs]), _mean_cell([r[m2] for r in rs])]
                if rs:
                    mean = sum(r[m1] for r in rs) / len(rs)
                    series.setdefault(f"{v} {l1}", []).append((n, 100 * mean))
            g = None
            if "semantic-only" in variants and "pointins" in variants:
                g = ablation.gap(runs, kind, m1, "semantic-only", "pointins", seeds)
            if g is None:
                row += ["-", "-"]
            else:
                sd = f" (std of differences {100 * g['std_diff']:.1f})" if math.isfinite(g["std_diff"]) else ""
                verdict = ablation.gap_verdict(g).rsplit(": ", 1)[-1].rstrip(".")
                row += [f"{100 * g['mean']:+.1f}{sd}", verdict + (" (1 seed)" if g["seeds"] == 1 else "")]
                gains.setdefault(kind, {})[str(n)] = g
            pts = [runs[f"{kind}/pointins/seed{s}"] for s in seeds if f"{kind}/pointins/seed{s}" in runs]
            cos = [p["offset_cos"] for p in pts if "offset_cos" in p]
            row += [f"{sum(cos) / len(cos):.3f}" if cos else "-", "/".join(map(str, counts))]
            md.append("| " + " | ".join(row) + " |")
        md += ["", f"![{kind}](budget_{kind}.svg)"]
        if series:
            svg = svg_lines(f"{kind}: {l1} (%) against pretraining steps", series, ylabel=f"{l1} (%)")
            (out / f"budget_{kind}.svg").write_text(svg)
    md += ["", "Verdict: the issue's target, PointINS − semantic-only >= +3 (AP indoors, PQ outdoors) and more than "
           "2 std of the variants over the seeds (`ablation.gap_verdict`); with one seed it cannot be met.", "",
           f"Time {res.get('seconds', 0):.0f} s (this command)."]  # fmt: skip
    res["pointins_gain"] = gains
    ablation.write_report(out, "budget", md, res)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pointins.experiments.budget", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/budget")
    p.add_argument("--steps", type=int, nargs="+", default=[600, 1200, 2400], help="pretraining budgets")
    p.add_argument("--scale", default="cpu", choices=list(ablation.SCALES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    reuse = "a budget an earlier ablation ran: read its folder, not <out>/steps<N> (repeatable)"
    p.add_argument("--reuse", action="append", default=[], metavar="STEPS=DIR", help=reuse)
    ablation.add_run_args(p, ["semantic-only", "pointins"])
    a = p.parse_args(argv)
    try:
        res = run_budget(a.out, a.steps, a.scale, a.seeds, a.variants, not a.skip_indoor, not a.skip_outdoor,
                         reuse=_parse_reuse(a.reuse), device=a.device, progress=not a.no_progress,
                         extra=a.overrides, report_only=a.report_only)  # fmt: skip
    except (ValueError, FileNotFoundError) as e:
        print(f"budget: {e}", file=sys.stderr)
        return 2
    print((Path(a.out) / "budget.md").read_text())
    return 0 if res else 1


if __name__ == "__main__":
    sys.exit(main())
