"""python -m pointins.train: end to end, checkpoints, exact resume after kill -9, NaN handling, DDP (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pointins import train
from pointins.config import apply_overrides, from_dict, resolve

FAST = [
    "synthetic_scenes=4", "views.max_points=3000", "views.local_views=1", "batch_size=2", "num_workers=0",
    "log_every=1", "ckpt_every=2", "vis_every=0", "ssl.offset_warmup=0.2", "deterministic=true", "device=cpu",
]  # fmt: skip


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A shared POINTINS_CACHE with the 4 synthetic rooms the fast runs use (generated once)."""
    d = tmp_path_factory.mktemp("cache")
    cfg = resolve("cpu-demo", FAST)
    old = os.environ.get("POINTINS_CACHE")
    os.environ["POINTINS_CACHE"] = str(d)
    try:
        train._ensure_synthetic(cfg, 0, progress=False)
    finally:
        if old is None:
            os.environ.pop("POINTINS_CACHE")
        else:
            os.environ["POINTINS_CACHE"] = old
    return d


def _env(cache) -> dict:
    env = dict(os.environ, POINTINS_CACHE=str(cache), OMP_NUM_THREADS="2")
    env.pop("TRITON_INTERPRET", None)
    return env


def _records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]


def _cli(args, cache, **kw):
    return subprocess.run([sys.executable, "-m", "pointins.train", *args], env=_env(cache), capture_output=True,
                          text=True, timeout=600, **kw)  # fmt: skip


def test_config_presets_and_overrides():
    for name in ("cpu-demo", "indoor-base", "outdoor-base"):
        cfg = resolve(name)
        assert from_dict(cfg.to_dict()) == cfg
    assert resolve("outdoor-base").views.grid_size == 0.05 and resolve("outdoor-base").ssl.prior == "outdoor-all"
    c = resolve("cpu-demo", ["variant=semantic-only", "ssl.zipf_alpha=1.3", "weight_decay=0.01,0.1"])
    assert c.variant == "semantic-only" and not c.ssl.offset and c.ssl.zipf_alpha == 1.3
    assert c.weight_decay == (0.01, 0.1)
    with pytest.raises(KeyError, match="no such setting"):
        resolve("cpu-demo", ["nope=1"])
    with pytest.raises(KeyError, match="unknown section"):
        apply_overrides(c, ["bogus.x=1"])
    with pytest.raises(ValueError, match="integer"):
        resolve("cpu-demo", ["steps=ten"])
    with pytest.raises(ValueError, match="unknown variant"):
        resolve("cpu-demo", variant="magic")
    with pytest.raises(ValueError, match="unknown preset"):
        resolve("gpu-huge")


def test_cpu_demo_end_to_end_short(cache, tmp_path):
    """The cpu-demo preset, shortened: every output appears and the checkpoint loads with weights_only."""
    out = tmp_path / "run"
    r = _cli(["--out", str(out), "--steps", "6", "--no-progress", *FAST, "vis_every=3", "num_workers=2"], cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "6 steps" in r.stdout and "points/s" in r.stdout
    recs = _records(out)
    assert [x["step"] for x in recs] == list(range(1, 7))
    assert all(x["loss"] == x["loss"] and x["points_per_s"] > 0 for x in recs)
    assert recs[-1]["loss_off"] > 0 and recs[0]["loss_off"] == 0  # offset loss after its 20% warm-up
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["step", "epoch", "loss", "loss_sem", "loss_off"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["steps"] == 6 and cfg["preset"] == "cpu-demo"
    assert (out / "latest").read_text().strip() == "ckpt_0000006.pt"
    assert sorted(p.name for p in out.glob("ckpt_*.pt")) == ["ckpt_0000004.pt", "ckpt_0000006.pt"]  # keep 2
    ck = train.load_checkpoint(out)
    assert ck["step"] == 6 and set(ck) >= {"student", "teacher", "optimizer", "scheduler", "rng", "config"}
    bb = torch.load(out / "backbone.pt", weights_only=True)
    assert bb["in_channels"] == 9 and bb["feat_keys"] == ["coord", "color", "normal"]
    for kind in ("segments", "instances", "centres"):
        assert (out / "vis" / f"step_0000006_{kind}.png").stat().st_size > 1000
        assert (out / "vis" / f"step_0000006_{kind}.ply").exists()


def test_kill9_then_resume_reproduces_the_uninterrupted_run(cache, tmp_path):
    steps = ["--steps", "14", "--no-progress", *FAST]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    r = _cli(["--out", str(ref), *steps], cache)
    assert r.returncode == 0, r.stderr[-3000:]
    want = {x["step"]: x for x in _records(ref)}

    proc = subprocess.Popen([sys.executable, "-m", "pointins.train", "--out", str(cut), *steps], env=_env(cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            latest = cut / "latest"
            if latest.exists() and (cut / "metrics.jsonl").exists():
                done = [x["step"] for x in _records(cut)]
                if latest.read_text().strip() >= "ckpt_0000006.pt" and done and done[-1] >= 7:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed; make it longer"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    resumed_from = train.load_checkpoint(cut)["step"]
    assert 6 <= resumed_from < 14
    r = _cli(["--out", str(cut), "--resume", *steps], cache)
    assert r.returncode == 0, r.stderr[-3000:]
    got = {x["step"]: x for x in _records(cut)}
    assert sorted(got) == list(range(1, 15))  # records past the checkpoint were replaced, none duplicated
    for s in range(resumed_from + 1, 15):
        for k in ("loss", "loss_sem", "loss_off", "pairs", "lr"):
            assert got[s][k] == pytest.approx(want[s][k], rel=1e-6, abs=1e-7), (s, k)
    a = torch.load(ref / "backbone.pt", weights_only=True)["backbone"]
    b = torch.load(cut / "backbone.pt", weights_only=True)["backbone"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def _run_in_process(cache, out, extra, monkeypatch):
    monkeypatch.setenv("POINTINS_CACHE", str(cache))
    cfg = resolve("cpu-demo", [*FAST, f"out={out}", *extra])
    return train.run(cfg, progress=False)


def test_nan_loss_skips_the_step_and_aborts_after_repeats(cache, tmp_path, monkeypatch):
    from pointins.ssl.model import PointINS

    real = PointINS.step_losses
    bad_steps: set[int] = set()

    def flaky(self, batch, progress, **kw):
        out = real(self, batch, progress, **kw)
        if kw.get("step") in bad_steps:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(PointINS, "step_losses", flaky)
    bad_steps.update({2, 3})
    with pytest.warns(UserWarning, match="non-finite"):
        s = _run_in_process(cache, tmp_path / "a", ["steps=6"], monkeypatch)
    recs = _records(tmp_path / "a")
    assert s["step"] == 6 and [x["skipped"] for x in recs] == [False, False, True, True, False, False]

    bad_steps.clear()
    bad_steps.update(range(3, 100))
    with pytest.warns(UserWarning), pytest.raises(train.TrainingDiverged, match="last good checkpoint"):
        _run_in_process(cache, tmp_path / "b", ["steps=12", "max_bad_steps=3"], monkeypatch)
    ck = train.load_checkpoint(tmp_path / "b")
    assert ck["step"] == 2 and all(torch.isfinite(v).all() for v in ck["student"].values())


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no 'latest'"):
        train.load_checkpoint(tmp_path)
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="corrupt"):
        train.load_checkpoint(tmp_path / "x.pt")
    torch.save({"a": 1}, tmp_path / "y.pt")
    with pytest.raises(RuntimeError, match="not a pointins training checkpoint"):
        train.load_checkpoint(tmp_path / "y.pt")


def test_cli_reports_bad_overrides(cache):
    r = _cli(["--print-config", "stepz=3"], cache)
    assert r.returncode == 2 and "no such setting" in r.stderr
    r = _cli(["--print-config", "steps=5", "ssl.prototypes=64"], cache)
    assert r.returncode == 0 and json.loads(r.stdout)["ssl"]["prototypes"] == 64


def test_ddp_two_processes_gloo(cache, tmp_path):
    """torchrun with 2 CPU processes (gloo): Sinkhorn sums and gradients are all-reduced; the run completes."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "pointins.train", "--out", str(out), "--steps", "4", "--no-progress", *FAST, "batch_size=1"]  # fmt: skip
    env = _env(cache)
    env["OMP_NUM_THREADS"] = "1"
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "x2" in r.stdout
    recs = _records(out)
    assert [x["step"] for x in recs] == [1, 2, 3, 4]
    ck = train.load_checkpoint(out)
    assert ck["config"]["batch_size"] == 1 and ck["step"] == 4


_SINKHORN_RANK = """
import sys, torch, torch.distributed as dist
from pointins.ssl import sinkhorn_knopp
dist.init_process_group("gloo")
scores = torch.load(sys.argv[1], weights_only=True)
part = scores.chunk(dist.get_world_size())[dist.get_rank()]
torch.save(sinkhorn_knopp(part, 0.05, iters=3, zipf_alpha=1.3), f"{sys.argv[2]}{dist.get_rank()}.pt")
dist.destroy_process_group()
"""


def test_sinkhorn_all_reduced_equals_single_process(cache, tmp_path):
    from pointins.ssl import sinkhorn_knopp

    scores = torch.randn(64, 10, generator=torch.Generator().manual_seed(0))
    torch.save(scores, tmp_path / "scores.pt")
    script = tmp_path / "rank.py"
    script.write_text(_SINKHORN_RANK)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tmp_path / "scores.pt"), str(tmp_path / "q")]  # fmt: skip
    r = subprocess.run(cmd, env=_env(cache), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    both = torch.cat(
        [torch.load(tmp_path / "q0.pt", weights_only=True), torch.load(tmp_path / "q1.pt", weights_only=True)]
    )
    torch.testing.assert_close(both, sinkhorn_knopp(scores, 0.05, iters=3, zipf_alpha=1.3), rtol=1e-5, atol=1e-7)


def test_outdoor_preset_and_clean_cli_errors(cache, tmp_path):
    """outdoor-base shrunk for a CPU: LiDAR scenes (xyz + strength = 4 inputs), 5 cm grid, outdoor prior."""
    out = tmp_path / "lidar"
    r = _cli(["--preset", "outdoor-base", "--out", str(out), "--steps", "3", "--no-progress", "backbone=tiny",
              "synthetic_scenes=2", "batch_size=1", "num_workers=0", "views.max_points=4000", "views.local_views=1",
              "ssl.offset_warmup=0.0", "device=cpu", "ckpt_every=3", "vis_every=0", "ssl.prototypes=32",
              "ssl.head_hidden=64"], cache)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    bb = torch.load(out / "backbone.pt", weights_only=True)
    assert bb["in_channels"] == 4 and bb["feat_keys"] == ["coord", "strength"]
    assert bb["config"]["views"]["grid_size"] == 0.05 and _records(out)[-1]["loss_off"] > 0
    r = _cli(["--out", str(tmp_path / "empty"), "--resume", "--no-progress", *FAST], cache)
    assert r.returncode == 2 and "no 'latest' checkpoint" in r.stderr and "Traceback" not in r.stderr
    r = _cli(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x"), "--no-progress", *FAST], cache)
    assert r.returncode == 2 and "does not exist" in r.stderr
