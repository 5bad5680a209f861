"""Op plumbing: opcheck, torch.compile, DLPack interop, backend selection, extension errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pointins.ops as ops
from pointins import _ext
from pointins.ops import _dispatch

# --- opcheck: schema, fake (meta) implementation, dispatch consistency -----------------------


def _opcheck_cases(device):
    coord = torch.rand(257, 3, device=device) * 10
    offsets = torch.tensor([0, 100, 100, 257], device=device)
    grid = torch.randint(0, 1000, (257, 3), device=device, dtype=torch.int32)
    batch = torch.randint(0, 7, (257,), device=device)
    keys = torch.ops.pointins.pack_keys(grid, batch, 16)
    return [
        (torch.ops.pointins.grid_coord.default, (coord, offsets, [0.1, 0.2, 0.3])),
        (torch.ops.pointins.grid_coord.default, (coord.double(), offsets, [0.5, 0.5, 0.5])),
        (
            torch.ops.pointins.grid_coord.default,
            (coord[:0], torch.zeros(1, dtype=torch.long, device=device), [1.0] * 3),
        ),
        (torch.ops.pointins.pack_keys.default, (grid, batch, 16)),
        (torch.ops.pointins.pack_keys.default, (grid.long(), None, 12)),
        (torch.ops.pointins.unpack_keys.default, (keys, 16)),
    ]


def test_opcheck(device):
    for op, args in _opcheck_cases(device):
        torch.library.opcheck(op, args)


# --- torch.compile -----------------------------------------------------------------------------


def test_torch_compile_fullgraph():
    def voxel_keys(coord, offsets):
        g = torch.ops.pointins.grid_coord(coord, offsets, [0.05, 0.05, 0.05])
        batch = torch.repeat_interleave(torch.arange(offsets.numel() - 1), offsets.diff(), output_size=coord.shape[0])
        return torch.ops.pointins.pack_keys(g, batch, 16) + 0

    compiled = torch.compile(voxel_keys, fullgraph=True, backend="aot_eager")
    coord = torch.rand(500, 3) * 3
    offsets = torch.tensor([0, 200, 500])
    assert torch.equal(compiled(coord, offsets), voxel_keys(coord, offsets))


def test_public_wrappers_compile_fullgraph():
    def f(coord, offsets):
        g = ops.grid_coord(coord, offsets, 0.1)
        keys = ops.pack_keys(g)
        return ops.unpack_keys(keys)[0]

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    coord = torch.rand(300, 3) * 2
    offsets = torch.tensor([0, 120, 300])
    assert torch.equal(compiled(coord, offsets), f(coord, offsets))


# --- DLPack / NumPy interop ------------------------------------------------------------------


def test_numpy_in_numpy_out():
    rng = np.random.default_rng(0)
    coord = rng.random((400, 3), dtype=np.float32) * 4
    g = ops.grid_coord(coord, np.array([0, 150, 400]), 0.1)
    assert isinstance(g, np.ndarray) and g.dtype == np.int32
    expected = ops.grid_coord(torch.from_numpy(coord), torch.tensor([0, 150, 400]), 0.1).numpy()
    np.testing.assert_array_equal(g, expected)
    keys = ops.pack_keys(g, offsets=[0, 150, 400])
    assert isinstance(keys, np.ndarray) and keys.dtype == np.int64
    g2, b2 = ops.unpack_keys(keys)
    assert isinstance(g2, np.ndarray) and isinstance(b2, np.ndarray)
    np.testing.assert_array_equal(g2, g)
    np.testing.assert_array_equal(b2, np.repeat([0, 1], [150, 250]))


def test_numpy_readonly_bigendian_noncontiguous():
    rng = np.random.default_rng(1)
    base = rng.random((3, 200)) * 5
    expected = ops.grid_coord(np.ascontiguousarray(base.T), None, 0.25)
    ro = np.ascontiguousarray(base.T)
    ro.flags.writeable = False
    np.testing.assert_array_equal(ops.grid_coord(ro, None, 0.25), expected)
    np.testing.assert_array_equal(ops.grid_coord(base.T.astype(">f8"), None, 0.25), expected)
    np.testing.assert_array_equal(ops.grid_coord(base.T, None, 0.25), expected)  # strided view


class _DLPackOnly:
    """An array type pointins does not know, speaking only the DLPack protocol."""

    def __init__(self, t):
        self._t = t

    def __dlpack__(self, **kwargs):
        return self._t.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._t.__dlpack_device__()


def test_generic_dlpack_input_returns_torch():
    t = torch.rand(50, 3)
    out = ops.grid_coord(_DLPackOnly(t), None, 0.1)
    assert isinstance(out, torch.Tensor)
    assert torch.equal(out, ops.grid_coord(t, None, 0.1))


def test_unsupported_input_type_is_a_clear_error():
    with pytest.raises(TypeError, match="cannot use coord of type ndarray"):
        ops.grid_coord(np.array([[object(), 1, 2]], dtype=object), None, 0.1)


@pytest.mark.cuda
def test_cupy_in_cupy_out():
    cupy = pytest.importorskip("cupy")
    coord = cupy.random.rand(1000, 3, dtype=cupy.float32) * 4
    g = ops.grid_coord(coord, cupy.asarray([0, 400, 1000]), 0.1)
    assert isinstance(g, cupy.ndarray) and g.dtype == cupy.int32
    expected = ops.grid_coord(torch.from_dlpack(coord), torch.tensor([0, 400, 1000], device="cuda"), 0.1)
    assert torch.equal(torch.from_dlpack(g), expected)
    keys = ops.pack_keys(g)
    assert isinstance(keys, cupy.ndarray)
    g2, _ = ops.unpack_keys(keys)
    assert bool((g2 == g).all())


# --- backends and errors ---------------------------------------------------------------------


def test_backends_report():
    b = ops.backends()
    assert set(b) == {"cpu", "cuda", "triton"}
    assert b["cpu"] is True  # the test-suite runs on a built extension
    assert b["cuda"] == (torch.cuda.is_available() and _ext.has_cuda())
    info = ops.build_info()
    assert info["extension"] == "loaded" and info["torch"] == torch.__version__
    if not b["cuda"]:
        assert info.get("cuda_reason")


def test_backend_selection_errors():
    x = torch.zeros(2, 3, dtype=torch.int32)
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        ops.pack_keys(x, backend="gpu")
    with pytest.raises(ValueError, match=r"backend='cuda' but the input is on cpu.*\.cuda\(\)"):
        ops.pack_keys(x, backend="cuda")
    with pytest.raises(ValueError, match="'triton' is not implemented"):
        ops.grid_coord(torch.zeros(2, 3), None, 0.1, backend="triton")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only build's message")
def test_cuda_input_with_cpu_only_build_names_the_fix(monkeypatch):
    monkeypatch.setattr(_ext, "has_cuda", lambda: False)
    with pytest.raises(_ext.ExtensionError, match=r"built without CUDA.*pip install --no-build-isolation -e \."):
        _dispatch.select(None, torch.device("cuda"), "pack_keys", ("cpu", "cuda"))


def _reload_ext(monkeypatch, **patches):
    for name, value in patches.items():
        monkeypatch.setattr(_ext, name, value)
    monkeypatch.setattr(_ext, "_tried", False)
    monkeypatch.setattr(_ext, "_module", None)
    monkeypatch.setattr(_ext, "_error", None)


def test_missing_extension_names_the_build_command(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake_import(name, *a, **k):
        if name == "pointins._C":
            raise ImportError("No module named 'pointins._C'")
        return real(name, *a, **k)

    _reload_ext(monkeypatch)
    monkeypatch.setattr(_ext.importlib, "import_module", fake_import)
    assert ops.backends()["cpu"] is False
    with pytest.raises(_ext.ExtensionError, match=r"not built.*pip install --no-build-isolation -e \."):
        ops.pack_keys(torch.zeros(1, 3, dtype=torch.int32))
    # the reference backend still works without the extension
    assert ops.pack_keys(torch.zeros(1, 3, dtype=torch.int32), backend="reference").tolist() == [0]


def test_stale_extension_is_detected(monkeypatch):
    if _ext._checkout_root() is None:
        pytest.skip("not running from a source checkout")
    import pointins._sources as sources

    _reload_ext(monkeypatch)
    monkeypatch.setattr(sources, "source_hash", lambda root: "0123456789abcdef")
    monkeypatch.delenv("POINTINS_SKIP_STALE_CHECK", raising=False)
    with pytest.raises(_ext.ExtensionError, match=r"stale.*sources.*changed.*pip install --no-build-isolation -e \."):
        ops.grid_coord(torch.zeros(1, 3), None, 1.0)


def test_torch_mismatch_is_detected(monkeypatch):
    _reload_ext(monkeypatch)
    monkeypatch.setattr(torch, "__version__", "0.0.1-other")
    with pytest.raises(_ext.ExtensionError, match=r"built against torch .* but torch 0.0.1-other"):
        _ext.require("x")


def test_source_hash_covers_native_sources():
    from pointins._sources import native_sources

    root = _ext._checkout_root()
    if root is None:
        pytest.skip("not running from a source checkout")
    names = {p.relative_to(root).as_posix() for p in native_sources(root)}
    assert "kernels/keys.cu" in names and "csrc/cpu/keys_cpu.cpp" in names and "csrc/ops.cpp" in names
    assert "kernels/include/pointins/keys.h" in names


# --- Triton kernels compile for the GPU (no GPU needed) --------------------------------------


@pytest.mark.triton
def test_triton_kernels_compile_for_sm80_sm90():
    """Every kernel in pointins/triton compiles to cubin (the interpreter checks far less)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    root = _ext._checkout_root()
    if root is None:
        pytest.skip("not running from a source checkout")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run(
        [sys.executable, str(root / "tools" / "check_triton_compile.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "compiled to cubin" in r.stdout


def test_every_triton_launcher_guards_its_device(monkeypatch):
    """Triton launches on the current device: each launcher must make its tensors' device current (tensors on
    cuda:1 with device 0 current would fault)."""
    import pointins.triton as pt
    from pointins.triton import _device

    launchers = {"attention": ["forward", "backward"], "keys": ["pack_keys", "unpack_keys"], "kmeans": ["assign"],
                 "sparse_conv": ["conv", "weight_grad"]}  # fmt: skip
    for mod, names in launchers.items():
        m = pt.load(mod)
        for name in names:
            assert getattr(getattr(m, name), "__pointins_device_guard__", False), f"{mod}.{name} has no device guard"
    entered = []

    class FakeCuda:
        is_cuda = True
        device = "cuda:1"

    monkeypatch.setattr(torch, "Tensor", FakeCuda)  # isinstance(FakeCuda(), torch.Tensor) in the guard
    monkeypatch.setattr(torch.cuda, "device", lambda d: __import__("contextlib").nullcontext(entered.append(d)))
    assert _device.on_tensor_device(lambda *a: "ran")(1, FakeCuda()) == "ran"
    assert entered == ["cuda:1"]


def test_deferred_checks_queue_value_checks_until_the_block_ends():
    """Inside deferred_checks the ops' value checks do not read the device back: they are queued and read once."""
    import pointins.ops as ops

    g = torch.randint(0, 8, (50, 3), dtype=torch.int32)
    good = ops.downsample(g, torch.tensor([0, 50]))
    with ops.deferred_checks("cpu"):  # valid input: identical results, no error
        same = ops.downsample(g, torch.tensor([0, 50]))
    assert torch.equal(same.grid_coord, good.grid_coord)
    # a check the C++ ops do not repeat: the encoder's one-point-per-voxel input check
    from pointins.models import build_backbone

    model = build_backbone("tiny", in_channels=3).eval()
    grid = torch.randint(0, 20, (300, 3), dtype=torch.int32)
    grid[1] = grid[0]  # two points in one voxel
    batch = {"coord": grid.float() * 0.05, "feat": torch.zeros(300, 3), "offsets": torch.tensor([0, 300]),
             "grid_coord": grid}  # fmt: skip
    with pytest.raises(ValueError, match="share a voxel with an earlier point"):  # immediate: the op's message
        model.build_levels(batch)
    ran = []
    with pytest.raises(ops.DeferredCheckError, match="share a voxel") as ei:
        with ops.deferred_checks("cpu"):
            model.build_levels(batch)  # no error here ...
            ran.append(True)
    assert ran == [True]  # ... but at the end of the block
    assert "Re-run the step outside" in str(ei.value)
    with pytest.raises(ops.DeferredCheckError, match="CSR offsets"):
        with ops.deferred_checks("cpu", check=False):
            ops.reference.check_offsets(torch.tensor([0, 4, 3, 5]), 5, "segment_reduce")
            ops.check_deferred()
    assert not ops._checks.deferred_active()


def test_deferred_checks_remove_the_per_op_syncs_of_a_ptv3_forward():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import count_syncs

    from pointins.models import build_backbone

    model = build_backbone("tiny", in_channels=6).eval()
    batch = count_syncs._batch(6000, torch.device("cpu"))
    before = count_syncs.count(model, batch, torch.device("cpu"), deferred=False)
    after = count_syncs.count(model, batch, torch.device("cpu"), deferred=True)
    after["ops"].pop("set_deferred_flags", None)
    assert before["ops"] == after["ops"]
    assert before["cuda_flag_reads"] > 0 and after["cuda_flag_reads"] == 0
    assert after["python"] < before["python"]
    assert after["total"] < before["total"] / 2, (before, after)
