"""The step profiler: phase timers (pointins._timing) and bench/profile_step.py on the real training loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pointins import _timing

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def timing():
    _timing.enable(True)
    yield _timing
    _timing.enable(False)


def test_phases_are_a_shared_no_op_when_off():
    _timing.enable(False)
    assert _timing.phase("a") is _timing.phase("b")
    with _timing.phase("a"):
        pass
    assert _timing.snapshot() == {}
    _timing.end_step()  # no error, nothing counted


def test_phases_nest_accumulate_and_skip_warmup(timing):
    timing.enable(True, skip_steps=1, stop_after=3)
    with timing.phase("warm"):
        pass
    timing.end_step()  # the warm-up step's phases are dropped
    assert timing.snapshot() == {}
    for _ in range(2):
        with timing.phase("step"):
            with timing.phase("conv"):
                time.sleep(0.01)
            with timing.phase("conv"):
                pass
        if _ == 0:
            timing.end_step()
    with pytest.raises(timing.Done):
        timing.end_step()
    acc = timing.snapshot()
    assert set(acc) == {"step", "step/conv"}
    assert acc["step/conv"][1] == 4 and acc["step"][1] == 2
    assert acc["step"][0] >= acc["step/conv"][0] >= 0.02
    assert timing.timed_steps() == 2 and timing.wall() >= 0.02
    table = timing.report(acc, 2)
    lines = table.splitlines()
    assert lines[1].split()[0] == "step" and lines[2].split()[0] == "conv"  # child indented under its parent
    assert float(lines[2].split()[-1]) == 2.0  # calls per step


def test_worker_phases_merge_under_a_prefix(timing):
    timing.merge({"views/colour": [0.5, 3.0]})
    timing.merge({"views/colour": [0.25, 1.0], "collate": [0.1, 1.0]})
    acc = timing.snapshot()
    assert acc["worker/views/colour"] == [0.75, 4.0] and acc["worker/collate"] == [0.1, 1.0]
    table = timing.report({k[len("worker/") :]: v for k, v in acc.items()}, 1, 1.0)
    assert "views" in table and "colour" in table  # an implicit parent row sums its children


def test_helper_thread_phases_go_under_their_root_and_keep_the_main_stack(timing):
    import threading

    def work():
        timing.thread_root("view threads", cpu=True)
        with timing.phase("views"):
            with timing.phase("colour"):
                sum(range(20000))

    with timing.phase("data wait"):
        t = threading.Thread(target=work)
        t.start()
        t.join()
        with timing.phase("collate"):
            pass
    acc = timing.snapshot()
    assert {"data wait", "data wait/collate", "view threads/views", "view threads/views/colour"} <= set(acc)
    assert not any(k.startswith("data wait/views") for k in acc)


def test_profile_step_cli_on_the_real_loop(tmp_path):
    """A tiny run with one data worker: main-process phases of the encoder, losses and backward, and the worker's
    view-pipeline phases, all present; the JSON has the same numbers."""
    out = tmp_path / "prof.json"
    env = dict(os.environ, POINTINS_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="2")
    env.pop("TRITON_INTERPRET", None)
    args = ["--steps", "2", "--warmup", "1", "--json", str(out), "--min-share", "0", "synthetic_scenes=4",
            "views.max_points=3000", "views.local_views=1", "num_workers=1"]  # fmt: skip
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "profile_step.py"), *args], env=env,
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("teacher", "student", "levels", "conv", "attention", "SCR", "kmeans", "backward", "optimizer",
                 "data workers", "colour", "elastic", "collate"):  # fmt: skip
        assert name in r.stdout, name
    res = json.loads(out.read_text())
    assert res["steps"] == 2 and res["step_ms"] > 0 and res["points_per_s"] > 0
    ph = res["phases_ms_per_step"]
    # with 2 threads the teacher's forward runs on its own thread (overlap_teacher) and is filed under it
    assert ph["teacher thread/teacher/encoder/conv"] > 0 and ph["forward + losses/student/encoder/conv"] > 0
    assert ph["forward + losses/wait for teacher"] >= 0 and ph["backward/conv"] > 0
    assert ph["worker/views/elastic"] > 0


def test_profile_step_help():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "profile_step.py"), "--help"], capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0 and "phase table" in r.stdout.lower() and "--json" in r.stdout
