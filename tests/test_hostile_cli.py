"""Crafted checkpoints, run-folder locking, config range checks, the synthetic CLI, and organized scans with NaN
returns: the user-facing side of hostile input."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pointins import train
from pointins.config import resolve
from pointins.data import DataError, PointCloudDataset, write
from pointins.eval.probe import EvalError, load_encoder
from pointins.models import build_backbone, load_pointcept_state_dict


class _Evil:
    """Unpickling this calls os.system: the file would run a shell command if loaded with weights_only=False."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_files(tmp_path) -> tuple[Path, list[Path]]:
    marker = tmp_path / "PWNED"
    legacy = tmp_path / "legacy.pt"
    with open(legacy, "wb") as f:
        pickle.dump({"format": train.CKPT_FORMAT, "backbone_config": _Evil(marker)}, f)
    zipped = tmp_path / "zipped.pt"
    torch.save({"format": train.CKPT_FORMAT, "backbone_config": {}, "x": _Evil(marker)}, zipped)
    return marker, [legacy, zipped]


def test_code_running_pickles_are_refused_on_every_loading_path(tmp_path):
    marker, files = _evil_files(tmp_path)
    model = build_backbone("tiny", in_channels=6)
    for f in files:
        with pytest.raises(train.CheckpointError, match="weights-only unpickler refused"):
            train.load_checkpoint(f)
        with pytest.raises(EvalError, match="weights-only unpickler refused"):
            load_encoder(f)
        with pytest.raises(ValueError, match="weights-only unpickler refused"):
            load_pointcept_state_dict(model, f)
        # through a run folder: resume, evaluate, and the evaluate fallback to latest beside a backbone.pt
        run = tmp_path / f"run-{f.stem}"
        run.mkdir()
        (run / "ckpt_0000010.pt").write_bytes(f.read_bytes())
        (run / "latest").write_text("ckpt_0000010.pt\n")
        with pytest.raises(train.CheckpointError, match="refused"):
            train.load_checkpoint(run)
        with pytest.raises(EvalError, match="refused"):
            load_encoder(run)
        cli = subprocess.run([sys.executable, "-m", "pointins.evaluate", "--checkpoint", str(run), "--data",
                              str(tmp_path), "--task", "semseg"], capture_output=True, text=True,
                             timeout=300)  # fmt: skip
        assert cli.returncode != 0 and "refused" in cli.stderr and "Traceback" not in cli.stderr, cli.stderr[-2000:]
    assert not marker.exists(), "a checkpoint ran code"


def test_latest_must_stay_inside_the_run_folder(tmp_path):
    outside = tmp_path / "elsewhere.pt"
    torch.save({"format": train.CKPT_FORMAT}, outside)
    run = tmp_path / "run"
    run.mkdir()
    for name in (str(outside), "../elsewhere.pt", "..", "", "a/b.pt"):
        (run / "latest").write_text(name + "\n")
        with pytest.raises(train.CheckpointError, match="latest"):
            train.load_checkpoint(run)
        with pytest.raises(EvalError, match="latest"):
            load_encoder(run)
    (run / "link.pt").symlink_to(outside)
    (run / "latest").write_text("link.pt\n")
    with pytest.raises(train.CheckpointError, match="outside"):
        train.load_checkpoint(run)


def test_damaged_checkpoints_are_clean_errors(tmp_path):
    p = tmp_path / "c.pt"
    for obj in ({"format": train.CKPT_FORMAT, "step": 3}, {"format": train.CKPT_FORMAT, "step": "x"}, [1, 2], 5):
        torch.save(obj, p)
        with pytest.raises(train.CheckpointError):
            train.load_checkpoint(p)
    cfg = {"in_channels": 6, "enc_channels": [10**7] * 5}
    torch.save({"backbone_config": cfg, "backbone": {"w": torch.zeros(1)}}, p)
    with pytest.raises(EvalError, match=r"usable encoder|do not match"):
        load_encoder(p)
    torch.save({"backbone_config": {}, "backbone": {"w": "not a tensor"}}, p)
    with pytest.raises(EvalError):
        load_encoder(p)
    os.mkfifo(tmp_path / "fifo.pt")
    with pytest.raises(train.CheckpointError, match="FIFO"):
        train.load_checkpoint(tmp_path / "fifo.pt")


# ---- run folder lock ----------------------------------------------------------------------------------

_HOLD = """
import sys, time
from pathlib import Path
from pointins.train import RunLock
RunLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def _holder(folder: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_run_lock_busy_and_stale(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    p = _holder(run)
    try:
        with pytest.raises(train.RunFolderBusy, match=f"pid {p.pid}"):
            train.RunLock(run).acquire()
        t0 = time.perf_counter()
        cli = subprocess.run([sys.executable, "-m", "pointins.train", "--out", str(run), "steps=1", "device=cpu"],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert cli.returncode == 2 and "in use by another run" in cli.stderr, cli.stderr[-2000:]
        assert time.perf_counter() - t0 < 60
        assert not (run / "config.json").exists()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    lock = train.RunLock(run)  # the killed holder left its record: stale, taken over
    note = lock.acquire()
    assert note and "stale" in note and str(p.pid) in note
    lock.release()
    again = train.RunLock(run)
    assert again.acquire() is None
    again.release()


# ---- CLI parsing and config ranges -----------------------------------------------------------------------


def test_resume_without_path_then_overrides():
    args = train.build_parser().parse_args(["--out", "x", "--resume", "steps=20"])
    assert args.resume == "steps=20"  # what argparse does; main() repairs it:
    calls = {}

    def fake_run(cfg, resume=None, progress=True):
        calls.update(cfg=cfg, resume=resume)
        return {"out": cfg.out, "step": 0, "last": {}, "world": 1, "device": "cpu"}

    orig = train.run
    train.run = fake_run
    try:
        assert train.main(["--out", "/tmp/pointins-x", "--resume", "steps=20", "--no-progress"]) == 0
    finally:
        train.run = orig
    assert calls["cfg"].steps == 20 and str(calls["resume"]) == "/tmp/pointins-x"


@pytest.mark.parametrize("override", ["views.grid_size=0", "device=bogus", "seed=1234567890123456789012345",
                                      "views.max_points=0", "lr=nan", "clip_grad=-1", "drop_path=2", "lr=inf",
                                      "ssl.mask_ratio=0.3,1.0", "num_workers=-2", "views.local_ratio=0,0.4",
                                      "ssl.teacher_temp=0,0.07", "backbone=huge", "data_nan=maybe",
                                      "ssl.kmeans_k=0", "weight_decay=-1,0.2", "deterministic=3"])  # fmt: skip
def test_config_values_are_range_checked(override, capsys):
    with pytest.raises((ValueError, TypeError)):
        resolve("cpu-demo", [override])
    assert train.main(["--print-config", override]) == 2
    err = capsys.readouterr().err
    assert override.split("=")[0].split(".")[-1] in err and "Traceback" not in err


# ---- synthetic CLI ---------------------------------------------------------------------------------------


def test_synthetic_cli_clean_errors_and_no_leftovers(tmp_path, capsys):
    from pointins.data import synthetic as S

    f = tmp_path / "file"
    f.write_text("x")
    for out, extra in ((f, []), (f / "sub", []), ("/proc/pointins-x", []), (tmp_path / "w", ["--workers", "-1"]),
                       (tmp_path / "p", ["points=[0,0]"]), (tmp_path / "q", ["--seed", "-3"])):  # fmt: skip
        rc = S.main(["--kind", "indoor", "--scenes", "2", "--quiet", "--out", str(out), *extra])
        assert rc == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing half-written
    small = ["points=[200,300]", "max_items=2"]
    ok = tmp_path / "ok"
    assert S.main(["--kind", "indoor", "--scenes", "2", "--quiet", "--workers", "1", "--out", str(ok), *small]) == 0
    before = sorted(p.name for p in (ok / "train").iterdir())
    assert S.main(["--kind", "indoor", "--scenes", "1", "--quiet", "--out", str(ok), *small]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert S.main(["--kind", "indoor", "--scenes", "1", "--quiet", "--workers", "1", "--overwrite", "--out", str(ok),
                   "--val-fraction", "0", *small]) == 0  # fmt: skip
    assert sorted(p.name for p in (ok / "train").iterdir()) == ["scene_00000"] != before
    assert not (ok / "val").exists() or not any((ok / "val").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "ok"]


# ---- organized scans: NaN returns are dropped, not the scan ---------------------------------------------


def _organized_scan(path: Path, seed: int, nan_rows: int):
    rng = np.random.default_rng(seed)
    coord = rng.uniform(0, 4, (600, 3)).astype(np.float32)
    coord[rng.choice(600, nan_rows, replace=False)] = np.nan
    write(path, {"coord": coord, "color": rng.integers(0, 256, (600, 3)).astype(np.float32)}, encoding="binary")


def test_organized_scans_keep_their_finite_points(tmp_path):
    for i in range(3):
        _organized_scan(tmp_path / f"scan{i}.pcd", i, nan_rows=100 * (i + 1))
    _organized_scan(tmp_path / "almost_empty.pcd", 9, nan_rows=590)
    ds = PointCloudDataset(tmp_path, on_error="skip", min_points=50)
    got = []
    with pytest.warns(UserWarning, match="almost_empty.pcd.*fewer than min_points"):
        for i in range(len(ds)):
            got.append((ds[i]["name"], len(ds[i]["coord"]), ds[i]["dropped_points"]))
    assert ("scan0.pcd", 500, 100) in got and ("scan2.pcd", 300, 300) in got
    assert all(name != "almost_empty.pcd" for name, _, _ in got)
    strict = PointCloudDataset(tmp_path, on_error="skip", nan="raise")
    with pytest.warns(UserWarning, match="nan='drop'"), pytest.raises(DataError, match="every scene"):
        strict[0]


def test_train_on_organized_scans_counts_dropped_points(tmp_path):
    data = tmp_path / "scans"
    for i in range(2):
        _organized_scan(data / f"scan{i}.pcd", i, nan_rows=50)
    out = tmp_path / "run"
    cfg = resolve("cpu-demo", ["steps=2", "batch_size=2", "num_workers=0", "views.max_points=400",
                               "views.local_views=1", "views.grid_size=0.1", "log_every=1", "ckpt_every=0",
                               "vis_every=0", "device=cpu", "split=none", f"data={data}", f"out={out}",
                               "min_scene_points=50"])  # fmt: skip
    import warnings

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        train.run(cfg, progress=False)
    assert not [w for w in rec if "skipping" in str(w.message)]
    logs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert logs[-1]["dropped_points"] == 4 * 50  # two scans per step, two steps


def test_checkpoint_zip_bomb_is_refused_before_torch_reads_it(tmp_path):
    import zipfile

    p = tmp_path / "bomb.pt"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("archive/data/0", "w", force_zip64=True) as m:
            zero = bytes(2**22)
            for _ in range(200_000_000 // len(zero)):
                m.write(zero)
        z.writestr("archive/data.pkl", pickle.dumps({"format": train.CKPT_FORMAT}))
    assert p.stat().st_size < 1_000_000
    with pytest.raises(train.CheckpointError, match="zip bomb"):
        train.load_checkpoint(p)


def test_crafted_backbone_config_is_refused_before_building(tmp_path):
    p = tmp_path / "c.pt"
    for cfg in ({"depths": [10**6], "channels": [16], "num_heads": [1]},
                {"depths": [1] * 5, "channels": [10**9] * 5, "num_heads": [1] * 5},
                {"depths": "xx", "channels": [16]}):  # fmt: skip
        torch.save({"backbone_config": cfg, "backbone": {"w": torch.zeros(1)}}, p)
        t0 = time.perf_counter()
        with pytest.raises(EvalError, match=r"implausible backbone_config|usable encoder"):
            load_encoder(p)
        assert time.perf_counter() - t0 < 5
