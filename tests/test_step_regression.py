"""The optimised training step computes what the unoptimised one did.

``tests/data/cpu_demo_steps.json`` holds the per-step losses of a short ``cpu-demo`` run (real view pipeline:
elastic distortion, colour jitter, masking; offset loss on from step 3). The speed work of issue #35 (compiled conv
kernels, shared structures, thread settings, in-process views) was checked against the record made on the step
before it (commit 116da36); the record was then remade twice, for changes meant to change the numbers: the #32
frame fix (matching and offset targets on carried original coordinates) with the guarded cosine of the offset
loss, and the #32 scale-rule defaults (K-means K and minimum pseudo-instance size from each view's size, the ODR
prior fitted on all points, no direction re-ranking; the file's ``commit`` is the commit before each re-record).
Every other change to the step must reproduce it within float noise: the tolerance per
quantity is three times the largest deviation the old code itself shows over these steps when run at one
thread instead of two, or with its weights perturbed at float32 rounding level (1e-7 relative); both are
recorded in the file.

Re-record only when a change is *meant* to change the numbers (a method change), never to make this pass:

    python tests/test_step_regression.py --record
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

RECORD = Path(__file__).parent / "data" / "cpu_demo_steps.json"
OVERRIDES = [
    "synthetic_scenes=4", "steps=8", "batch_size=2", "num_workers=0", "log_every=1", "ckpt_every=0",
    "vis_every=0", "ssl.offset_warmup=0.25", "device=cpu", "tensorboard=false",
]  # fmt: skip
KEYS = ("loss", "loss_sem", "loss_off", "pairs", "student_points", "student_upcast_points", "pseudo_instances",
        "grad_norm")  # fmt: skip


def run_steps(out: Path, cache: Path, perturb: float = 0.0) -> list[dict]:
    """The recorded run; ``perturb`` multiplies every encoder weight by (1 + perturb * N(0, 1)) first (the
    noise-floor run of ``--record``)."""
    from pointins import train
    from pointins.config import resolve

    old = os.environ.get("POINTINS_CACHE")
    os.environ["POINTINS_CACHE"] = str(cache)
    build = train.build_backbone

    def perturbed(*a, **kw):
        bb = build(*a, **kw)
        g = torch.Generator().manual_seed(1234)
        with torch.no_grad():
            for p in bb.parameters():
                p.mul_(1 + perturb * torch.randn(p.shape, generator=g))
        return bb

    if perturb:
        train.build_backbone = perturbed
    try:
        train.run(resolve("cpu-demo", [*OVERRIDES, f"out={out}"]), progress=False)
    finally:
        train.build_backbone = build
        if old is None:
            os.environ.pop("POINTINS_CACHE", None)
        else:
            os.environ["POINTINS_CACHE"] = old
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [{k: r.get(k, 0.0) for k in ("step", *KEYS)} for r in recs]


def test_cpu_demo_steps_match_the_recorded_unoptimised_step(tmp_path):
    want = json.loads(RECORD.read_text())
    got = run_steps(tmp_path / "run", tmp_path / "cache")
    assert [r["step"] for r in got] == [r["step"] for r in want["steps"]]
    for g, w in zip(got, want["steps"], strict=True):
        for k in ("pairs", "student_points", "student_upcast_points"):  # structure: exact
            assert g[k] == w[k], (g["step"], k, g[k], w[k])
        for k in ("loss", "loss_sem", "loss_off", "grad_norm"):
            assert g[k] == pytest.approx(w[k], rel=want["rtol"][k], abs=1e-6), (g["step"], k, g[k], w[k])
        # SCR's pseudo-instance count is a discrete output of K-means + components on the teacher's features: a
        # float-noise change can move a point across a boundary, so allow one instance either way
        assert abs(g["pseudo_instances"] - w["pseudo_instances"]) <= 1, (g["step"], g["pseudo_instances"])
    assert got[-1]["loss_off"] > 0 and got[0]["loss_off"] == 0


if __name__ == "__main__":
    if "--record" not in sys.argv:
        sys.exit("usage: python tests/test_step_regression.py --record   (see the module docstring)")
    import subprocess
    import tempfile

    tmp = Path(tempfile.mkdtemp())
    runs = {}
    # The noise floor of float arithmetic over these steps: the same code at one thread, and with every encoder
    # weight perturbed at float32 rounding level (1e-7 relative), against the recorded run (two threads). The L1
    # part of the offset loss has a sign discontinuity, so its gradient (grad_norm) moves most.
    for name, threads, perturb in (("1 thread", 1, 0.0), ("perturbed", 2, 1e-7), ("record", 2, 0.0)):
        here, base = str(Path(__file__).parent), str(tmp)
        code = (
            f"import torch, json, sys; torch.set_num_threads({threads}); sys.path.insert(0, {here!r}); "
            "from test_step_regression import run_steps; from pathlib import Path; "
            f"print(json.dumps(run_steps(Path({base!r}) / {name!r}, Path({base!r}) / 'cache', {perturb})))"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        runs[name] = json.loads(out.stdout.strip().splitlines()[-1])
    noise = {k: max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-6) for run in ("1 thread", "perturbed")
                    for a, b in zip(runs[run], runs["record"], strict=True))
             for k in ("loss", "loss_sem", "loss_off", "grad_norm")}  # fmt: skip
    rtol = {k: max(1e-4, 3 * v) for k, v in noise.items()}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    RECORD.parent.mkdir(exist_ok=True)
    rec = {"commit": commit, "torch": torch.__version__, "threads": 2, "noise": noise, "rtol": rtol,
           "overrides": OVERRIDES, "steps": runs["record"]}  # fmt: skip
    RECORD.write_text(json.dumps(rec, indent=1) + "\n")
    print(f"recorded {RECORD} (noise {noise}, rtol {rtol})")
