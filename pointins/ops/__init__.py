"""PointINS ops: point-cloud kernels on torch tensors (CPU and CUDA), NumPy and CuPy arrays.

Every op takes ``backend=`` (``None`` picks the compiled kernel of the input's device;
``"reference"`` runs the plain-PyTorch oracle of :mod:`pointins.ops.reference`). See
:func:`backends` for what this installation can run.
"""

from __future__ import annotations

import torch

from pointins import _ext
from pointins.ops import _dispatch, reference
from pointins.ops._checks import DeferredCheckError, check_deferred, deferred_checks
from pointins.ops.attention import PatchIndex, patch_attention, patch_index
from pointins.ops.cluster import Components, KMeans, connected_components, kmeans
from pointins.ops.keys import DEFAULT_BITS, grid_coord, max_batch, pack_keys, unpack_keys
from pointins.ops.segment import REDUCTIONS, segment_reduce
from pointins.ops.serialize import ORDERS, Serialization, auto_depth, decode, encode, patch_partition, serialize
from pointins.ops.sparse_conv import sparse_conv
from pointins.ops.voxel import (
    Downsample,
    HashTable,
    Voxelization,
    downsample,
    kernel_map,
    kernel_map_pairs,
    transpose_kernel_map,
    voxel_select,
    voxelize,
)

__all__ = [
    "DEFAULT_BITS",
    "ORDERS",
    "REDUCTIONS",
    "Components",
    "DeferredCheckError",
    "Downsample",
    "HashTable",
    "KMeans",
    "PatchIndex",
    "Serialization",
    "Voxelization",
    "auto_depth",
    "backends",
    "build_info",
    "check_deferred",
    "connected_components",
    "decode",
    "deferred_checks",
    "downsample",
    "encode",
    "grid_coord",
    "kernel_map",
    "kernel_map_pairs",
    "kmeans",
    "max_batch",
    "pack_keys",
    "patch_attention",
    "patch_index",
    "patch_partition",
    "reference",
    "segment_reduce",
    "serialize",
    "sparse_conv",
    "transpose_kernel_map",
    "unpack_keys",
    "voxel_select",
    "voxelize",
]


def backends() -> dict[str, bool]:
    """Which backends can run here: ``cpu`` / ``cuda`` (compiled extension), ``triton``.

    ``build_info()`` says why one is missing.
    """
    loaded = _ext.try_load() is not None
    return {
        "cpu": loaded,
        "cuda": loaded and _ext.has_cuda() and torch.cuda.is_available(),
        "triton": _dispatch.triton_status() is None,
    }


def build_info() -> dict[str, object]:
    """Versions, compiled CUDA architectures and the reason for every unavailable backend."""
    mod = _ext.try_load()
    info: dict[str, object] = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "extension": "loaded" if mod is not None else _ext.error(),
    }
    if mod is not None:
        info.update(
            built_with_cuda=bool(mod.with_cuda),
            cuda_archs=mod.cuda_archs or None,
            source_hash=mod.source_hash,
            built_against_torch=mod.torch_version,
        )
        if not mod.with_cuda:
            info["cuda_reason"] = "pointins._C was built without CUDA (CPU torch or no nvcc at build time)"
        elif not torch.cuda.is_available():
            info["cuda_reason"] = "no CUDA device visible"
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    info["triton_reason"] = _dispatch.triton_status()
    info["triton_interpret"] = _dispatch.triton_interpret()
    return info
