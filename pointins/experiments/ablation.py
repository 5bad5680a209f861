"""``python -m pointins.experiments.ablation``: what each part of PointINS adds (METHOD.md section 7).

On the built-in synthetic benchmark, with one fixed pretraining budget and fixed seeds, pretrain each variant
and score its frozen encoder:

* indoor rooms: linear-probe mIoU and instance AP / AP50 / AP25 (one linear semantic + offset probe; its
  semantic head is trained exactly as the semantic linear probe, the heads share nothing);
* outdoor sweeps: linear-probe panoptic PQ (SemanticKITTI protocol, ``min_points`` 50), also over the thing and the
  stuff classes apart. At the CPU scale the outdoor probes use a larger set of sweeps than pretraining
  (``outdoor_eval_scenes``: 48 from the same generator and seed; the 12 scored sweeps are unseen by pretraining).

Variants: ``scratch`` (random encoder, no pretraining), ``semantic-only``, ``offset`` (+ offset branch, raw
teacher offsets), ``offset+odr``, ``offset+scr``, ``pointins`` (offset branch with ODR, then SCR on the
ODR-refined offsets; ``ssl.scr_before_odr=true`` swaps them), and two **controls that use labels** (marked in every
table): ``oracle-offset`` (the teacher's offset targets replaced by the true instance-centre offsets) and
``oracle-scr`` (SCR fed the true offsets): the ceiling of what instance-aware pretraining can add at the budget.
Each pretraining run also logs label diagnostics (:mod:`pointins.ssl.diagnostics`); the tables give their last
values.

    python -m pointins.experiments.ablation --out runs/ablation            # CPU scale (tiny, ~45 min/seed)
    python -m pointins.experiments.ablation --scale gpu --out runs/abl-gpu # GPU scale
    python -m pointins.experiments.ablation --seeds 0 1 2 --steps 400 --skip-outdoor

Writes ``ablation.md`` (the tables, mean +- std over seeds), ``ablation.json`` (every number) and
``ablation_indoor.svg`` / ``ablation_outdoor.svg`` (bar charts); each run keeps its folder under ``--out``.
Finished runs are reused when the command is repeated with the same settings.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

__all__ = [
    "CONTROLS",
    "ORDER",
    "PAPER_ORDER",
    "SCALES",
    "add_run_args",
    "gap",
    "main",
    "ordering",
    "run_ablation",
    "svg_bars",
    "write_report",
]

ORDER = ("scratch", "semantic-only", "offset", "offset+odr", "offset+scr", "pointins", "oracle-offset", "oracle-scr")
#: controls that read instance labels during pretraining: the ceiling of what instance-aware pretraining can add
CONTROLS = ("oracle-offset", "oracle-scr")
OFFSET_VARIANTS = ("offset", "offset+odr", "offset+scr", "pointins", *CONTROLS)  # those with an offset head

_SMOKE = [
    "backbone=tiny",
    "views.max_points=2000",
    "views.local_views=1",
    "batch_size=1",
    "num_workers=0",
    "device=cpu",
    "ckpt_every=0",
    "vis_every=0",
    "ssl.prototypes=32",
    "ssl.head_hidden=64",
    "ssl.offset_warmup=0.0",
]

# (pretraining overrides, dataset sizes, probe epochs) per scale
SCALES = {
    "cpu": {
        "indoor": [
            "backbone=tiny",
            "views.max_points=8000",
            "views.local_views=2",
            "num_workers=0",
            "device=cpu",
            "ckpt_every=100",
            "vis_every=0",
            "log_every=10",
        ],
        "outdoor": [
            "backbone=tiny",
            "views.max_points=8000",
            "views.local_views=2",
            "batch_size=2",
            "lr=0.002",
            "lr_batch=2",
            "ssl.prototypes=256",
            "ssl.head_hidden=512",
            "ssl.head_dim=64",
            "ssl.offset_hidden=128",
            "num_workers=0",
            "device=cpu",
            "ckpt_every=100",
            "vis_every=0",
            "log_every=10",
        ],
        "steps": 150,
        "indoor_scenes": 24,
        "outdoor_scenes": 16,
        # the outdoor probes train and score on 48 sweeps (36 / 12; the first 16 are the pretraining data's, so
        # the 12 scored ones are unseen by pretraining): with the pretraining data's own 4 validation sweeps even
        # the oracle-offset control scored below semantic-only (27.3 vs 27.9 PQ, seed 0); on these 12 it is
        # 43.1 vs 40.3 (docs/results/ablation-600-rules/README.md)
        "outdoor_eval_scenes": 48,
        "indoor_points": (20_000, 40_000),
        "probe_epochs": 10,
    },
    "smoke": {  # the tests: seconds, numbers meaningless
        "indoor": _SMOKE,
        "outdoor": _SMOKE,
        "steps": 2,
        "indoor_scenes": 4,
        "outdoor_scenes": 4,
        "indoor_points": (8_000, 12_000),
        "probe_epochs": 1,
    },
    "gpu": {
        "indoor": [
            "backbone=small",
            "views.max_points=60000",
            "batch_size=8",
            "num_workers=8",
            "ckpt_every=500",
            "vis_every=0",
            "log_every=50",
        ],
        "outdoor": ["backbone=small", "batch_size=8", "num_workers=8", "ckpt_every=500", "vis_every=0", "log_every=50"],
        "steps": 3000,
        "indoor_scenes": 400,
        "outdoor_scenes": 300,
        "indoor_points": (50_000, 200_000),
        "probe_epochs": 20,
    },
}


def _data(root: Path, kind: str, n: int, points, seed: int, progress: bool, make: bool = True) -> Path | None:
    """The generated scenes (made once, atomically); None when they are missing and ``make`` is false."""
    from pointins.data import synthetic

    out = root / f"{kind}-n{n}-seed{seed}"
    if (out / "meta.json").exists():
        return out
    if not make:
        return None
    cfg = synthetic.IndoorConfig(points=tuple(points)) if kind == "indoor" else synthetic.OutdoorConfig(beams=32)
    tmp = out.with_name(out.name + ".tmp")
    synthetic.generate(kind, tmp, n, seed=seed, val_fraction=0.25, config=cfg, progress=progress, workers=1)
    tmp.rename(out)
    return out


# settings that change what a run writes, not what it learns: a finished run or checkpoint with other values of
# these is still the same run (earlier runs were made with ckpt_every=0)
# (and how the step is executed: threads, the overlapped teacher forward, caches -- float summation order only)
BOOKKEEPING = ("ckpt_every", "keep_checkpoints", "log_every", "vis_every", "tensorboard", "threads", "view_threads",
               "overlap_teacher", "scene_cache_mb", "worker_nice")  # fmt: skip


# the outdoor table: SemanticKITTI's PQ, SQ, RQ, PQ†, then PQ over the thing classes alone (where instance-aware
# features can show; the official evaluator reports it too) and over the stuff classes, and the probe's mIoU
OUTDOOR_METRICS = ("pq", "sq", "rq", "pq_dagger", "pq_things", "pq_stuff", "miou")

# settings added after runs were made: a config written before has none and ran with the default
ADDED = {("views", "scene_points"): 0}


def _same_run(a, b) -> bool:
    if not isinstance(a, dict) or not isinstance(b, dict):
        return False

    def norm(c):
        c = {k: (dict(v) if isinstance(v, dict) else v) for k, v in c.items() if k not in BOOKKEEPING}
        for (section, key), default in ADDED.items():
            if isinstance(c.get(section), dict):
                c[section].setdefault(key, default)
        return c

    return norm(a) == norm(b)


def _pretrain(
    kind: str, variant: str, seed: int, steps: int, data: Path, out: Path, over: list[str], progress, train: bool = True
):
    """The finished run of this config in ``out`` (reused), else trained (or resumed) there; with ``train=False``
    a run not finished yet gives None instead."""
    from pointins.config import resolve
    from pointins.train import run

    preset = "cpu-demo" if kind == "indoor" else "outdoor-base"
    cfg = resolve(preset, [*over, f"steps={steps}", f"seed={seed}", f"data={data}", f"out={out}"],
                  variant=None if variant == "pointins" else variant)  # fmt: skip
    done = out / "done.json"
    want = json.loads(json.dumps(cfg.to_dict()))  # as it reads back from done.json (tuples become lists)
    if (out / "backbone.pt").exists() and done.exists():  # reuse a finished run of exactly this config
        if _same_run(json.loads(done.read_text()).get("config"), want):
            return out
    if not train:
        return None
    # an interrupted run of this config continues from its last checkpoint (training resumes exactly)
    resume = None
    if (out / "latest").exists():
        from pointins.train import load_checkpoint

        try:
            saved = load_checkpoint(out)
        except Exception:  # an unreadable checkpoint: start over (the run rewrites it)
            saved = None
        if saved is not None and _same_run(json.loads(json.dumps(saved.get("config"))), want):
            resume = out
            print(f"ablation: resuming {out} from step {saved.get('step')}", file=sys.stderr)
    t0 = time.perf_counter()
    summary = run(cfg, resume=resume, progress=progress)
    import torch

    # the thread count changes float summation order only, but a report of side-by-side runs should say it
    rec = {"seconds": time.perf_counter() - t0, "step": summary["step"], "config": want,
           "threads": torch.get_num_threads(), "finished": time.strftime("%Y-%m-%d %H:%M %Z")}  # fmt: skip
    done.write_text(json.dumps(rec) + "\n")
    return out


def _eval_key(ckpt, data: Path, task: str, run_dir: Path, kw: dict) -> dict:
    """What an evaluation depends on: its settings and the pretraining run's ``done.json`` (config + time)."""
    done = run_dir / "done.json"
    pretrained = json.loads(done.read_text()) if str(ckpt) != "scratch" and done.exists() else None
    key = {"task": task, "data": str(data), "checkpoint": str(ckpt), **kw, "pretrained": pretrained}
    return json.loads(json.dumps(key, default=str))


def _evaluate(ckpt, data: Path, task: str, run_dir: Path, kw: dict, progress: bool, run: bool = True) -> dict | None:
    """``pointins.evaluate`` into ``run_dir/eval-<task>``, reusing a finished evaluation of exactly these
    settings and this checkpoint (its ``done.json``); with ``run=False`` one not finished gives None."""
    from pointins.evaluate import evaluate

    out = run_dir / f"eval-{task}"
    key = _eval_key(ckpt, data, task, run_dir, kw)
    stamp = out / "ablation_key.json"
    if stamp.exists() and (out / "results.json").exists() and json.loads(stamp.read_text()) == key:
        return json.loads((out / "results.json").read_text())
    if not run:
        return None
    r = evaluate(ckpt, data, task, out=out, progress=progress, **kw)
    stamp.write_text(json.dumps(key) + "\n")
    return r


def _stats(vals: list[float]) -> tuple[float, float]:
    a = np.asarray(vals, np.float64)
    return float(np.mean(a)), (float(np.std(a, ddof=1)) if len(a) > 1 else 0.0)


def _cell(vals: list[float]) -> str:
    m, s = _stats(vals)
    if not math.isfinite(m):
        return "-"
    return f"{100 * m:.1f}" + (f" ± {100 * s:.1f}" if len(vals) > 1 else "")


def svg_bars(
    title: str,
    groups: list[str],
    series: dict[str, list[float]],
    errors: dict[str, list[float]] | None = None,
    width: int = 760,
    height: int = 320,
) -> str:
    """A grouped bar chart as SVG text: ``groups`` on the x axis (variants), one bar per ``series`` entry
    (metric -> value per group, 0-1 shown as %), optional error bars."""
    colors = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2"]
    left, right, top, bottom = 50, 150, 30, 70
    pw, ph = width - left - right, height - top - bottom
    vals = [v for s in series.values() for v in s if math.isfinite(v)]
    vmax = max([0.05, *[v + (max(errors[k]) if errors else 0) for k in series for v in series[k] if math.isfinite(v)]])
    vmax = min(1.0, math.ceil(vmax * 10) / 10) if vals else 1.0
    gw = pw / max(1, len(groups))
    bw = gw * 0.8 / max(1, len(series))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           'font-size="11">', f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="18" font-size="13" font-weight="bold">{title}</text>']  # fmt: skip
    for t in range(0, 11, 2):
        y = top + ph - ph * (t / 10)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{100 * vmax * t / 10:.0f}</text>')
    for si, (name, v) in enumerate(series.items()):
        for gi, x in enumerate(v):
            if not math.isfinite(x):
                continue
            h = ph * min(x, vmax) / vmax
            x0 = left + gi * gw + gw * 0.1 + si * bw
            out.append(f'<rect x="{x0:.1f}" y="{top + ph - h:.1f}" width="{bw - 1:.1f}" height="{h:.1f}" '
                       f'fill="{colors[si % len(colors)]}"/>')  # fmt: skip
            if errors and errors.get(name) and errors[name][gi] > 0:
                e = ph * errors[name][gi] / vmax
                cx = x0 + bw / 2
                out.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{top + ph - h - e:.1f}" y2="{top + ph - h + e:.1f}" '
                           'stroke="black"/>')  # fmt: skip
        ly = top + 16 * si
        out.append(f'<rect x="{left + pw + 12}" y="{ly}" width="10" height="10" fill="{colors[si % len(colors)]}"/>')
        out.append(f'<text x="{left + pw + 26}" y="{ly + 9}">{name}</text>')
    for gi, g in enumerate(groups):
        out.append(f'<text x="{left + gi * gw + gw / 2:.1f}" y="{top + ph + 16}" text-anchor="middle">{g}</text>')
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="black"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def run_ablation(
    out,
    scale: str = "cpu",
    seeds=(0,),
    steps: int | None = None,
    variants=ORDER,
    indoor: bool = True,
    outdoor: bool = True,
    data_seed: int = 100,
    device: str = "auto",
    progress: bool = True,
    extra: list[str] | None = None,
    report_only: bool = False,
) -> dict:
    """Pretrain + evaluate every variant (see the module docstring); returns the results dict. ``report_only``:
    run nothing, write the report from the runs (pretraining and evaluations) already finished with these settings
    (e.g. while other commands are still running some of them)."""
    if scale not in SCALES:
        raise ValueError(f"ablation: scale must be one of {list(SCALES)}, got {scale!r}.")
    bad = [v for v in variants if v not in ORDER]
    if bad:
        raise ValueError(f"ablation: unknown variants {bad}; choose from {list(ORDER)}.")
    sc = SCALES[scale]
    steps = steps or sc["steps"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kinds = [k for k, on in (("indoor", indoor), ("outdoor", outdoor)) if on]
    res: dict = {"scale": scale, "steps": steps, "seeds": list(seeds), "variants": list(variants), "runs": {},
                 "machine": _machine(device), "started": time.strftime("%Y-%m-%d %H:%M %Z"),
                 "report_only": report_only}  # fmt: skip
    t0 = time.perf_counter()
    datas = {}
    # seed-major: an interrupted command leaves every variant of the first seeds done, not half the variants
    for seed in seeds:
        for kind in kinds:
            n = sc[f"{kind}_scenes"]
            make = not report_only
            if kind not in datas:
                datas[kind] = _data(out / "data", kind, n, sc["indoor_points"], data_seed, progress, make)
            data = datas[kind]
            n_eval = sc.get(f"{kind}_eval_scenes", n)
            if (kind, "eval") not in datas:  # the probes' scenes: the same generator and seed, maybe more of them
                datas[kind, "eval"] = data if n_eval == n else _data(out / "data", kind, n_eval, sc["indoor_points"],
                                                                     data_seed, progress, make)  # fmt: skip
            eval_data = datas[kind, "eval"]
            if data is None or eval_data is None:  # report only, and no scenes yet: no run of this kind finished
                continue
            over = [*sc[kind], *(extra or [])]
            if device != "auto":
                over.append(f"device={device}")
            for v in variants:
                tag = f"{kind}/{v}/seed{seed}"
                if not report_only:
                    print(f"ablation: {tag} ({steps} pretraining steps)", file=sys.stderr)
                run_dir = out / kind / v / f"seed{seed}"
                if v == "scratch":
                    ckpt, grid = "scratch", (0.04 if kind == "indoor" else 0.05)
                else:
                    ckpt = _pretrain(kind, v, seed, steps, data, run_dir, over, progress, train=not report_only)
                    grid = None
                task = "insseg" if kind == "indoor" else "panoptic"
                kw = {"epochs": sc["probe_epochs"], "seed": seed, "grid_size": grid, "device": device, "render": 1,
                      "backbone": "tiny" if scale == "cpu" else "small"}  # fmt: skip
                r = None if ckpt is None else _evaluate(ckpt, eval_data, task, run_dir, kw, progress, not report_only)
                u = None
                if r is not None and v in OFFSET_VARIANTS:  # what the self-supervised offset head alone finds
                    u = _evaluate(ckpt, eval_data, "unsupervised", run_dir, {**kw, "epochs": None}, progress,
                                  not report_only)  # fmt: skip
                if r is None or (u is None and v in OFFSET_VARIANTS):  # report only: not finished yet, left out
                    print(f"ablation: {tag} not finished yet, left out of the report", file=sys.stderr)
                    continue
                keep = ("miou", "ap", "ap50", "ap25") if kind == "indoor" else OUTDOOR_METRICS
                res["runs"][tag] = {k: r.get(k, float("nan")) for k in keep}
                res["runs"][tag]["probe_loss_last"] = r["probe_loss_last"]
                if v != "scratch" and "threads" in (done := json.loads((run_dir / "done.json").read_text())):
                    res["runs"][tag]["pretrain_threads"] = done["threads"]
                if u is not None:  # what the self-supervised offset head alone finds (no labels, no probe)
                    res["runs"][tag].update(unsup_ap=u["ap"], unsup_ap50=u["ap50"], unsup_ap25=u["ap25"],
                                            offset_cos=u["ssl_offset_cosine"],
                                            offset_l1=u["ssl_offset_l1_ratio"])  # fmt: skip
                    for k in ("bfs_ap", "bfs_ap50", "bfs_ap25", "ceiling_ap", "ceiling_ap50", "ceiling_ap25",
                              "bfs_ceiling_ap", "bfs_ceiling_ap50", "bfs_ceiling_ap25"):  # fmt: skip
                        if k in u:
                            res["runs"][tag][f"unsup_{k}"] = u[k]
                    res["runs"][tag].update(_last_diagnostics(run_dir))
                res["seconds"] = time.perf_counter() - t0
                _report(out, res, kinds)  # after every run: a partial table is always on disk
    res["seconds"] = time.perf_counter() - t0
    res["finished"] = time.strftime("%Y-%m-%d %H:%M %Z")
    _report(out, res, kinds)
    return res


def _last_diagnostics(run_dir: Path) -> dict:
    """The pretraining run's last logged label diagnostics (``diag_*`` of metrics.jsonl), prefixed ``pre_``."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return {}
    recs = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    last = next((r for r in reversed(recs) if any(k.startswith("diag_") for k in r)), None)
    return {} if last is None else {"pre_" + k[5:]: v for k, v in last.items() if k.startswith("diag_")}


def _opt_cell(rs: list[dict], key: str) -> str:
    """A table cell (%, mean ± std) of ``key`` over the runs, or - when a run lacks it."""
    return _cell([r[key] for r in rs]) if rs and all(key in r for r in rs) else "-"


def _raw_mean(rs: list[dict], key: str) -> str:
    """Mean of ``key`` over the runs that logged a finite value (2 significant digits), or -."""
    vals = [r[key] for r in rs if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
    return f"{np.mean(vals):.2g}" if vals else "-"


def _name(v: str) -> str:
    return f"{v} (control: uses labels)" if v in CONTROLS else v


def _machine(device: str) -> str:
    import os
    import platform

    import torch

    dev = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if dev.startswith("cuda") and torch.cuda.is_available():
        what = torch.cuda.get_device_name(0)
    else:
        cpu = platform.processor() or platform.machine()
        what = f"{cpu}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} threads"
    return f"{what}; torch {torch.__version__}; Python {platform.python_version()}"


#: The paper's ordering of the instance metric (METHOD.md section 7): each part adds.
PAPER_ORDER = ("semantic-only", "offset", "offset+odr", "offset+scr", "pointins")


def gap(runs: dict, kind: str, metric: str, a: str, b: str, seeds) -> dict | None:
    """``b`` minus ``a`` on ``metric`` over the seeds both finished: mean, std of the per-seed differences,
    and the pooled std of the two variants (None when no seed has both)."""
    pairs = [(runs[f"{kind}/{a}/seed{s}"][metric], runs[f"{kind}/{b}/seed{s}"][metric]) for s in seeds
             if f"{kind}/{a}/seed{s}" in runs and f"{kind}/{b}/seed{s}" in runs]  # fmt: skip
    if not pairs:
        return None
    x, y = np.asarray(pairs, np.float64).T
    d = y - x
    sd = lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
    return {"mean": float(d.mean()), "std_diff": sd(d), "std_a": sd(x), "std_b": sd(y), "seeds": len(d)}


def _beyond(mean: float, std: float) -> str:
    if not math.isfinite(std):
        return "n/a with one seed"
    if abs(mean) <= 2 * std:
        return "within 2 std"
    return "ahead by more than 2 std" if mean > 0 else "behind by more than 2 std"


def gap_verdict(g: dict, target: float = 0.03) -> str:
    """Where a :func:`gap` stands against the spread, in both senses of it (the larger std of the two variants,
    and the std of the per-seed differences, which removes what a seed does to both), and whether it meets
    ``target`` (a gain of at least ``target`` that is more than 2 std of the variants).

    >>> print(gap_verdict({"mean": 0.05, "std_a": 0.01, "std_b": 0.01, "std_diff": 0.02, "seeds": 3}))
    ... # doctest: +NORMALIZE_WHITESPACE
    By the variants' std: ahead by more than 2 std; by the per-seed differences: ahead by more than 2 std.
    Target +3.0 beyond 2 std: **met**.
    >>> print(gap_verdict({"mean": -0.034, "std_a": 0.02, "std_b": 0.017, "std_diff": 0.008, "seeds": 3}))
    ... # doctest: +NORMALIZE_WHITESPACE
    By the variants' std: within 2 std; by the per-seed differences: behind by more than 2 std.
    Target +3.0 beyond 2 std: **not met**.
    """
    spread = max(g["std_a"], g["std_b"]) if math.isfinite(g["std_a"]) else float("nan")
    met = g["mean"] >= target and math.isfinite(spread) and g["mean"] > 2 * spread
    return (
        f"By the variants' std: {_beyond(g['mean'], spread)}; by the per-seed differences: "
        f"{_beyond(g['mean'], g['std_diff'])}. Target {100 * target:+.1f} beyond 2 std: "
        f"**{'met' if met else 'not met'}**."
    )


def ordering(names: list[str], values: list[float], tol: float = 5e-4) -> str:
    """``"a < b = c"``: names sorted by value, ties (within ``tol``) joined by ``=``.

    >>> ordering(["x", "y", "z"], [0.3, 0.1, 0.1])
    'y = z < x'
    """
    pairs = sorted(zip(values, names, strict=True), key=lambda p: p[0])
    text = pairs[0][1] if pairs else ""
    for (v0, _), (v1, n1) in itertools.pairwise(pairs):
        text += (" = " if abs(v1 - v0) <= tol else " < ") + n1
    return text


def _report(out: Path, res: dict, kinds: list[str]) -> None:
    variants, seeds, runs = res["variants"], res["seeds"], res["runs"]
    md = [f"# PointINS ablation ({res['scale']} scale)", "",
          f"{res['steps']} pretraining steps per variant, seeds {seeds}, linear probes on frozen features "
          "(mean ± std over the seeds finished so far: the last column counts them). Numbers in %.",
          "", f"Machine: {res.get('machine', '?')}. "
          + (f"Report only (`--report-only`, {res.get('started', '?')}): nothing was run; the tables hold the runs "
             "finished by then (each run's `done.json` dates it)." if res.get("report_only") else
             f"This invocation started {res.get('started', '?')}"
             + (f", finished {res['finished']}" if res.get("finished") else " (still running or interrupted: "
                "rerun the same command to resume)")
             + "; runs finished by earlier invocations were reused, not redone (each run's `done.json` dates it)."),
          ""]  # fmt: skip
    threads = collections.Counter(r.get("pretrain_threads") for k, r in runs.items() if "/scratch/" not in k)
    if any(t is not None for t in threads):  # each run's own count (from its done.json), not this process's
        md[-1:-1] = ["Pretraining threads per run (each run's `done.json`): " + ", ".join(
            f"{'not recorded' if t is None else t} ({n} run{'s' * (n > 1)})"
            for t, n in sorted(threads.items(), key=lambda kv: -1 if kv[0] is None else kv[0])) + ".", ""]  # fmt: skip
    summary = {}
    for kind in kinds:
        metrics = ("miou", "ap", "ap50", "ap25") if kind == "indoor" else OUTDOOR_METRICS
        label = {"miou": "mIoU", "ap": "AP", "ap50": "AP50", "ap25": "AP25", "pq": "PQ", "sq": "SQ", "rq": "RQ",
                 "pq_dagger": "PQ†", "pq_things": "PQ^Th", "pq_stuff": "PQ^St"}  # fmt: skip
        proto = "ScanNet-protocol instance AP" if kind == "indoor" else "SemanticKITTI-protocol PQ"
        md += [f"## {kind} ({proto})", "", "| variant | " + " | ".join(label[m] for m in metrics) + " | seeds |",
               "|---|" + "---|" * (len(metrics) + 1)]  # fmt: skip
        means: dict[str, list[float]] = {m: [] for m in metrics}
        stds: dict[str, list[float]] = {m: [] for m in metrics}
        done_v = []
        for v in variants:
            have = [s for s in seeds if f"{kind}/{v}/seed{s}" in runs]
            if not have:
                md.append(f"| {_name(v)} | " + " | ".join("…" for _ in metrics) + " | 0 |")
                continue
            done_v.append(v)
            # (a metric added to the table later is "-" for results written before it)
            vals = {m: [runs[f"{kind}/{v}/seed{s}"].get(m, float("nan")) for s in have] for m in metrics}
            md.append(f"| {_name(v)} | " + " | ".join(_cell(vals[m]) for m in metrics) + f" | {len(have)} |")
            for m in metrics:
                mu, sd = _stats(vals[m])
                means[m].append(mu)
                stds[m].append(sd)
        if not done_v:
            md.append("")
            continue
        key = "ap" if kind == "indoor" else "pq"
        summary[kind] = ordering(done_v, means[key])
        counts = {sum(f"{kind}/{v}/seed{s}" in runs for s in seeds) for v in done_v}
        md += ["", f"Ordering by {label[key]} (low to high; = within 0.05 points): {summary[kind]}"
               + (" (means over different numbers of seeds: see the seeds column)" if len(counts) > 1 else ""),
               ""]  # fmt: skip
        paper = [v for v in PAPER_ORDER if v in done_v]
        if len(paper) > 1:
            # each step as the mean per-seed difference over the seeds both variants finished: while a seed is
            # partial, the variants' means cover different seeds and a seed's offset on both would decide it
            step_gaps = [(a, b, gap(runs, kind, key, a, b, seeds)) for a, b in itertools.pairwise(paper)]
            steps_txt = ", ".join(f"{b} − {a} " + (f"{100 * g['mean']:+.1f} ({g['seeds']} seed(s))" if g else
                                                   "no seed has both") for a, b, g in step_gaps)  # fmt: skip
            if all(g is not None for _, _, g in step_gaps):
                holds = all(g["mean"] > 0 for _, _, g in step_gaps)
                verdict = "holds" if holds else "does not hold"
                res.setdefault("paper_order_holds", {})[kind] = holds
            else:
                verdict = "undecided"
                res.get("paper_order_holds", {}).pop(kind, None)  # (res may carry an earlier report's verdict)
                if res.get("paper_order_holds") == {}:
                    del res["paper_order_holds"]
            md += [f"Paper's ordering ({' < '.join(paper)}): **{verdict}** (each step: the mean of the per-seed "
                   f"differences over the seeds both variants finished; {steps_txt}).", ""]  # fmt: skip
        g = gap(runs, kind, key, "semantic-only", "pointins", seeds)
        if g is not None:
            md += [f"PointINS − semantic-only: {100 * g['mean']:+.1f} {label[key]} over {g['seeds']} seed(s) "
                   f"(std of the variants {100 * g['std_a']:.1f} / {100 * g['std_b']:.1f}, of the per-seed "
                   f"differences {100 * g['std_diff']:.1f}). {gap_verdict(g)}", ""]  # fmt: skip
            res.setdefault("pointins_gain", {})[kind] = g
        shown = ("miou", "ap", "ap50", "ap25") if kind == "indoor" else ("pq", "pq_dagger", "miou")
        svg = svg_bars(f"{kind}: linear probe ({res['steps']} pretraining steps)", done_v,
                       {label[m]: means[m] for m in shown}, {label[m]: stds[m] for m in shown})  # fmt: skip
        (out / f"ablation_{kind}.svg").write_text(svg)
        md += [f"![{kind}](ablation_{kind}.svg)", ""]
        offs = [v for v in done_v if v in OFFSET_VARIANTS]
        if offs:
            md += [f"### {kind}: the self-supervised offset head alone (no probe)", "",
                   "Class-agnostic AP of the validation scenes' points shifted by the pretrained offset head and "
                   "clustered (`--task unsupervised`): **BFS** on all shifted points (the paper's read-out, no "
                   "K-means) "
                   "and **grouped** inside K-means segments of the features (as SCR clusters in pretraining); "
                   "*ceiling*: the same clustering of the true centre offsets (what perfect offsets would score). "
                   "Then how well the offsets point at the true instance centres: mean cosine (0 = random) and L1 "
                   "error relative to predicting no offset (below 100 = better than nothing).", "",
                   "| variant | BFS AP / AP50 / AP25 | grouped AP / AP50 / AP25 | ceiling BFS / grouped AP "
                   "| offset cosine | offset L1 / zero-offset L1 |", "|---|---|---|---|---|---|"]  # fmt: skip
            for v in offs:
                rs = [runs[f"{kind}/{v}/seed{s}"] for s in seeds if f"{kind}/{v}/seed{s}" in runs]
                bfs = " / ".join(_opt_cell(rs, f"unsup_bfs_{m}") for m in ("ap", "ap50", "ap25"))
                grouped = " / ".join(_opt_cell(rs, f"unsup_{m}") for m in ("ap", "ap50", "ap25"))
                ceil = " / ".join(_opt_cell(rs, k) for k in ("unsup_bfs_ceiling_ap", "unsup_ceiling_ap"))
                cos = _stats([r["offset_cos"] for r in rs])
                md.append(f"| {_name(v)} | {bfs} | {grouped} | {ceil} | {cos[0]:.3f}"
                          + (f" ± {cos[1]:.3f}" if len(rs) > 1 else "")
                          + f" | {_cell([r['offset_l1'] for r in rs])} |")  # fmt: skip
            md.append("")
            md += [f"### {kind}: label diagnostics at the end of pretraining (training views; logging only)", "",
                   "Teacher targets (after ODR / SCR) and student predictions against the true centre offsets at "
                   "the same up-cast points (cosine; L1 / zero-offset L1), SCR's pseudo-instances (true instances "
                   "matched at IoU > 0.5; share of points kept; pseudo- vs true instances per view), gradient norms "
                   "the two losses send into the up-cast features (pointins.ssl.diagnostics).", "",
                   "| variant | teacher cos / L1 | student cos / L1 | SCR recall / kept | pseudo / true per view | "
                   "grad semantic / offset |", "|---|---|---|---|---|---|"]  # fmt: skip
            for v in offs:
                rs = [runs[f"{kind}/{v}/seed{s}"] for s in seeds if f"{kind}/{v}/seed{s}" in runs]
                pair = lambda a, b, rs=rs: f"{_raw_mean(rs, a)} / {_raw_mean(rs, b)}"
                md.append(f"| {_name(v)} | {pair('pre_teacher_cos', 'pre_teacher_l1')} | "
                          f"{pair('pre_student_cos', 'pre_student_l1')} | {pair('pre_scr_recall', 'pre_scr_kept')} | "
                          f"{pair('pre_scr_per_view', 'pre_true_per_view')} | "
                          f"{pair('pre_grad_sem', 'pre_grad_off')} |")  # fmt: skip
            md.append("")
    md.append(f"Time {res.get('seconds', 0):.0f} s (this command).")
    res["ordering"] = summary
    write_report(out, "ablation", md, res)


def write_report(out: Path, stem: str, md: list[str], res: dict) -> None:
    """``<stem>.md`` (the lines) and ``<stem>.json`` (``res``) in ``out``, each replaced atomically: a table read
    while a run goes on, or left by a crash, is always a whole one."""
    from pointins.train import _atomic_text

    _atomic_text(out / f"{stem}.md", "\n".join(md) + "\n")
    _atomic_text(out / f"{stem}.json", json.dumps(res, indent=2) + "\n")


def add_run_args(p: argparse.ArgumentParser, variants: list[str]) -> None:
    """The options every experiment command shares: which variants (default ``variants``), benchmarks, device,
    progress bars, and extra pretraining settings."""
    p.add_argument("--variants", nargs="+", default=variants, choices=list(ORDER))
    p.add_argument("--skip-indoor", action="store_true")
    p.add_argument("--skip-outdoor", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: write the report from the runs already finished with these settings",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="extra pretraining settings for every run")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pointins.experiments.ablation", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--scale", default="cpu", choices=list(SCALES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=None, help="pretraining steps per variant (default: the scale's)")
    add_run_args(p, list(ORDER))
    a = p.parse_args(argv)
    try:
        res = run_ablation(a.out, a.scale, a.seeds, a.steps, a.variants, not a.skip_indoor, not a.skip_outdoor,
                           device=a.device, progress=not a.no_progress, extra=a.overrides,
                           report_only=a.report_only)  # fmt: skip
    except (ValueError, FileNotFoundError) as e:
        print(f"ablation: {e}", file=sys.stderr)
        return 2
    print((Path(a.out) / "ablation.md").read_text())
    for kind, order in res["ordering"].items():
        print(f"{kind}: {order}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
