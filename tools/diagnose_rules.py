"""Choose the scale rules (#32) from label diagnostics on *training* scenes: short pretraining runs of the ablation's
CPU scale, one per setting, and a table of the diagnostics averaged over the last 30% of each run's log steps.

    python tools/diagnose_rules.py --out runs/rules                    # indoor, the default settings grid
    python tools/diagnose_rules.py --out runs/rules --kind outdoor --steps 600
    python tools/diagnose_rules.py --out runs/rules --only const rule   # some settings of the grid

Nothing here reads a validation scene or a probe: the diagnostics are computed on the pretraining views
(pointins.ssl.diagnostics), which is where the rules must be decided. Finished runs are reused (delete a run's
folder to redo it); the table (``rules.md``, ``rules.json``) is rewritten after every run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

#: setting name -> pretraining overrides (on top of the ablation's CPU-scale settings)
_PAPER = ["ssl.prior=indoor", "ssl.odr_directions=true"]  # the settings before the rules (explicit: defaults moved)
GRID = {
    "const": ["ssl.scale_ref_points=0", *_PAPER],
    "rule": ["ssl.scale_ref_points=2800", *_PAPER],
    "rule+ema0.9": ["ssl.scale_ref_points=2800", *_PAPER, "ssl.ema_ref_steps=100000", "ssl.ema_floor=0.9"],
    "rule+ema0.5": ["ssl.scale_ref_points=2800", *_PAPER, "ssl.ema_ref_steps=100000", "ssl.ema_floor=0.5"],
    "rule+ema0.5-dirs": [
        "ssl.scale_ref_points=2800",
        "ssl.prior=indoor",
        "ssl.odr_directions=false",
        "ssl.ema_ref_steps=100000",
        "ssl.ema_floor=0.5",
    ],
    "oracle-offset": ["variant=oracle-offset"],
    "rule-dirs": ["ssl.scale_ref_points=2800", "ssl.prior=indoor", "ssl.odr_directions=false"],
    "rule+prior-all": ["ssl.scale_ref_points=2800", "ssl.prior=indoor-all", "ssl.odr_directions=true"],
    # the defaults since 2026-12-07 (docs/results/scale-rules/)
    "rule+prior-all-dirs": ["ssl.scale_ref_points=2800", "ssl.prior=indoor-all", "ssl.odr_directions=false"],
    "rule+prior-all+grid6": [
        "ssl.scale_ref_points=2800",
        "ssl.prior=indoor-all",
        "ssl.odr_directions=true",
        "views.grid_size=0.06",
    ],
    # the defaults with each sample's views made from an 8,000-point part of the scene (views.scene_points): views
    # cover ~70% of their "scene" as the paper's do of a whole room (40-100% of min(65,536, N) points) instead of
    # ~15% of the room, at the same view size and cost
    "defaults+part": [
        "ssl.scale_ref_points=2800",
        "ssl.prior=indoor-all",
        "ssl.odr_directions=false",
        "views.scene_points=8000",
    ],
}
KEYS = ("diag_teacher_cos", "diag_teacher_l1", "diag_raw_cos", "diag_student_cos", "diag_student_l1",
        "diag_scr_recall", "diag_scr_kept", "diag_scr_k", "diag_scr_per_view", "diag_true_per_view",
        "loss_sem")  # fmt: skip


def summarize(run_dir: Path, tail: float = 0.3) -> dict:
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    recs = [r for r in recs if "diag_raw_cos" in r or "diag_teacher_cos" in r]
    last = recs[int(len(recs) * (1 - tail)) :] or recs[-1:]
    out = {}
    for k in KEYS:
        vals = [r[k] for r in last if isinstance(r.get(k), int | float) and math.isfinite(r[k])]
        out[k] = sum(vals) / len(vals) if vals else float("nan")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python tools/diagnose_rules.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/rules")
    p.add_argument("--kind", default="indoor", choices=["indoor", "outdoor"])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="+", default=None, choices=list(GRID))
    a = p.parse_args(argv)
    from pointins.experiments.ablation import SCALES, _data, _pretrain

    sc = SCALES["cpu"]
    out = Path(a.out) / a.kind
    out.mkdir(parents=True, exist_ok=True)
    data = _data(Path(a.out) / "data", a.kind, sc[f"{a.kind}_scenes"], sc["indoor_points"], 100, True)
    results = {}
    for name in a.only or list(GRID):
        setting = [o.replace("ssl.prior=indoor", f"ssl.prior={a.kind}") for o in GRID[name]]  # the benchmark's prior
        over = [*sc[a.kind], "log_every=5", *[o for o in setting if not o.startswith("variant=")]]
        variant = next((o.split("=", 1)[1] for o in setting if o.startswith("variant=")), "pointins")
        run_dir = out / name
        t0 = time.perf_counter()
        print(f"diagnose_rules: {a.kind} {name} ({a.steps} steps)", file=sys.stderr)
        _pretrain(a.kind, variant, a.seed, a.steps, data, run_dir, over, True)
        results[name] = {"overrides": setting, "seconds": time.perf_counter() - t0, **summarize(run_dir)}
        _write(Path(a.out), a.kind, a.steps, results)
    return 0


def _write(root: Path, kind: str, steps: int, results: dict) -> None:
    path = root / "rules.json"
    allr = json.loads(path.read_text()) if path.exists() else {}
    allr.setdefault(kind, {}).update(results)
    path.write_text(json.dumps(allr, indent=1) + "\n")
    md = ["# Scale rules: label diagnostics on the pretraining views", "",
          f"{steps} pretraining steps each (the ablation's CPU scale), diagnostics averaged over the last 30% of the "
          "log steps. Cosine / L1 (L1 error over the zero offset's L1) of the offsets against the true centre "
          "offsets; SCR recall: true instances (>= 8 up-cast points) matched by a pseudo-instance at IoU > 0.5.",
          f"Written {time.strftime('%Y-%m-%d %H:%M %Z')}.", ""]  # fmt: skip
    for k, rs in allr.items():
        md += [f"## {k}", "", "| setting | teacher cos / L1 | raw cos | student cos / L1 | SCR recall / kept | "
               "K | pseudo / true per view | semantic loss |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, r in rs.items():
            f = lambda key, r=r: f"{r[key]:.2f}" if math.isfinite(r.get(key, float("nan"))) else "-"
            md.append(f"| {name} | {f('diag_teacher_cos')} / {f('diag_teacher_l1')} | {f('diag_raw_cos')} | "
                      f"{f('diag_student_cos')} / {f('diag_student_l1')} | {f('diag_scr_recall')} / "
                      f"{f('diag_scr_kept')} | {f('diag_scr_k')} | {f('diag_scr_per_view')} / "
                      f"{f('diag_true_per_view')} | {f('loss_sem')} |")  # fmt: skip
        md.append("")
    (root / "rules.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    sys.exit(main())
