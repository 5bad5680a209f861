"""Shared fixtures and markers.

- ``@pytest.mark.cuda``: needs a GPU and pointins built with CUDA; skipped cleanly otherwise.
- ``@pytest.mark.slow``: long-running (deselect with ``-m "not slow"``).
- ``triton_interpret`` fixture: runs Triton kernels on CPU tensors under ``TRITON_INTERPRET=1``
  (switched on at import below when there is no GPU; a GPU run exercises the compiled kernels)
  (fp16/fp32 only; the interpreter gets bf16 dots/atomics wrong).
- ``device`` fixture: parametrises a test over "cpu" and "cuda" (the latter marked ``cuda``).
"""

from __future__ import annotations

import os

import torch

# Triton decides interpreter vs compiled mode for its own library when it is first imported, so
# on a machine without a GPU (where Triton can only interpret) switch the interpreter on now,
# before anything imports triton. On a GPU machine Triton tests run compiled on the GPU instead.
if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import pytest

from pointins import _ext
from pointins.ops import _dispatch


def cuda_ready() -> tuple[bool, str]:
    if not torch.cuda.is_available():
        return False, "no CUDA GPU"
    if _ext.try_load() is None:
        return False, f"extension not loaded: {_ext.error()}"
    if not _ext.has_cuda():
        return False, "pointins._C built without CUDA"
    return True, ""


def pytest_collection_modifyitems(config, items):
    ok, why = cuda_ready()
    if ok:
        return
    skip = pytest.mark.skip(reason=f"cuda test: {why}")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request) -> str:
    return request.param


@pytest.fixture
def triton_interpret(monkeypatch):
    """Run Triton kernels under the CPU interpreter for the duration of the test."""
    pytest.importorskip("triton", reason="triton is not installed (pip install triton)")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    why = _dispatch.triton_status(torch.device("cpu"))
    if why:
        pytest.skip(f"Triton interpreter unavailable in this process: {why}")
    yield "cpu"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """Tiny indoor and outdoor datasets and a 2-step PointINS run on each (the evaluation tests)."""
    from pointins.config import resolve
    from pointins.data import synthetic
    from pointins.train import run

    root = tmp_path_factory.mktemp("eval")
    synthetic.generate("indoor", root / "indoor", 4, seed=3, val_fraction=0.25, workers=1, progress=False,
                       config=synthetic.IndoorConfig(points=(8000, 12000)))  # fmt: skip
    synthetic.generate("outdoor", root / "outdoor", 3, seed=3, val_fraction=0.34, workers=1, progress=False,
                       config=synthetic.OutdoorConfig(beams=32, columns=600))  # fmt: skip
    small = ["steps=2", "batch_size=1", "num_workers=0", "views.max_points=3000", "views.local_views=1",
             "ssl.offset_warmup=0.0", "device=cpu", "ckpt_every=2", "vis_every=0", "ssl.prototypes=32",
             "ssl.head_hidden=64", "log_every=1"]  # fmt: skip
    run(resolve("cpu-demo", [*small, f"data={root / 'indoor'}", f"out={root / 'run_in'}"]), progress=False)
    out = resolve("outdoor-base", [*small, "backbone=tiny", f"data={root / 'outdoor'}", f"out={root / 'run_out'}"])
    run(out, progress=False)
    return root
