"""Pointcept's own PT-v3m2 model file on pointins.compat (tools/pointcept_ptv3.py): runs when a Pointcept checkout
is beside this one (search tool: fetch github:Pointcept/Pointcept) and addict is installed; skipped otherwise."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPO = ROOT.parent / ".mirror" / "Pointcept+Pointcept" / "repo"

pytestmark = [
    pytest.mark.skipif(not REPO.exists(), reason="no Pointcept checkout at ../.mirror/Pointcept+Pointcept/repo"),
    pytest.mark.skipif(importlib.util.find_spec("addict") is None, reason="addict (Pointcept's dependency) absent"),
]


def _tool(name: str, tmp_path) -> dict:
    """Run tools/<name>.py on a small batch; its JSON results."""
    out = tmp_path / "r.json"
    cmd = [sys.executable, str(ROOT / "tools" / f"{name}.py"), "--points", "6000", "--repeat", "1", "--steps", "3",
           "--json", str(out)]  # fmt: skip
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(out.read_text())
    assert res["compat"]["grads_finite"] and res["compat"]["train_losses"][-1] < res["compat"]["train_losses"][0]
    return res


def test_pointcept_ptv3_file_runs_on_pointins_kernels_and_equals_ours(tmp_path):
    res = _tool("pointcept_ptv3", tmp_path)
    assert set(res["compat"]["served"]) >= {"spconv.pytorch", "torch_scatter"}
    assert res["native"]["same_voxels"] and res["native"]["max_abs_diff_vs_pointcept_file"] < 1e-4
    if "peer" in res:  # spconv + torch_scatter installed: the same file on them gives the same output
        assert res["compat"]["same_voxels"] and res["compat"]["max_abs_diff_vs_peer"] < 1e-4


def test_pointcept_spunet_file_runs_on_pointins_compat(tmp_path):
    """SpUNet-v1m1 exercises what PT-v3m2 does not: strided SparseConv3d, SparseInverseConv3d, 1x1 SubMConv3d,
    indice_key reuse between encoder and decoder."""
    res = _tool("pointcept_spunet", tmp_path)
    if "peer" in res:
        assert res["compat"]["max_abs_diff_vs_peer"] < 1e-4
