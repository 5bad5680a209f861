"""Voxel hashing: a GPU/CPU hash table on packed keys, voxelization (grid sampling) and
sparse-convolution kernel maps.

Example::

    >>> import torch, pointins.ops as ops
    >>> coord = torch.rand(10_000, 3) * 4
    >>> offsets = torch.tensor([0, 6_000, 10_000])
    >>> vox = ops.voxelize(coord, offsets, grid_size=0.05, mode="train", seed=0)
    >>> sampled = coord[vox.index]                 # one random point per voxel
    >>> kmap = ops.kernel_map(vox.grid_coord, batch=vox.batch, kernel_size=3)   # (V, 27), -1 = none
    >>> table = ops.HashTable(ops.pack_keys(vox.grid_coord, vox.batch))
    >>> bool((table.query(ops.pack_keys(vox.grid_coord, vox.batch)) == torch.arange(len(vox))).all())
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pointins import _ext
from pointins.ops import _dispatch, reference
from pointins.ops._checks import defer, misplaced
from pointins.ops._interop import check_seed, result_fields, results, to_tensor
from pointins.ops.keys import _grid_size, _offsets_and_perm, grid_coord, pack_keys
from pointins.ops.segment import segment_reduce

__all__ = [
    "Downsample",
    "HashTable",
    "Voxelization",
    "downsample",
    "kernel_map",
    "kernel_map_pairs",
    "transpose_kernel_map",
    "voxel_select",
    "voxelize",
]


def _capacity(n: int) -> int:
    cap = 16
    while cap < 2 * n:
        cap <<= 1
    return cap


def _keys_arg(keys: Any, name: str, op: str) -> tuple[torch.Tensor, str]:
    k, kind = to_tensor(keys, name, op)
    if k.dtype != torch.int64:
        raise TypeError(f"pointins.{op}: {name} must be int64 packed keys (pointins.ops.pack_keys), got {k.dtype}.")
    if k.dim() != 1:
        raise ValueError(f"pointins.{op}: {name} must be 1-D, got shape {tuple(k.shape)}.")
    return k, kind


class HashTable:
    """Open-addressing hash table (linear probing, power-of-two capacity ~2x the keys) mapping
    each non-negative int64 key to the index of its first occurrence in ``keys``.

    >>> t = HashTable(torch.tensor([7, 3, 7]))
    >>> t.query(torch.tensor([3, 7, 5]))
    tensor([ 1,  0, -1])
    """

    def __init__(self, keys: Any, capacity: int | None = None, *, backend: str | None = None):
        k, _ = _keys_arg(keys, "keys", "HashTable")
        self.num_keys = int(k.shape[0])
        cap = _capacity(self.num_keys) if capacity is None else int(capacity)
        if cap <= self.num_keys or cap & (cap - 1):
            raise ValueError(
                f"pointins.HashTable: capacity must be a power of two larger than the number of keys "
                f"({self.num_keys}), got {cap}."
            )
        self.capacity = cap
        self.backend = _dispatch.select(backend, k.device, "HashTable", ("cpu", "cuda", "reference"))
        if self.backend == "reference":
            if bool((k < 0).any()):
                raise ValueError("pointins.HashTable: keys must be non-negative (pack_keys output).")
            self.keys = k
            self.table_keys = self.table_vals = None
        else:
            self.keys = None
            self.table_keys, self.table_vals = torch.ops.pointins.hash_build(k, cap)

    @property
    def device(self) -> torch.device:
        return (self.keys if self.keys is not None else self.table_keys).device

    def __len__(self) -> int:
        return self.num_keys

    def __repr__(self) -> str:
        return f"HashTable(keys={self.num_keys}, capacity={self.capacity}, device={self.device})"

    def query(self, queries: Any) -> Any:
        """Index of the first occurrence of each query key in the build keys, or -1."""
        q, kind = _keys_arg(queries, "queries", "HashTable.query")
        if q.device != self.device:
            raise ValueError(f"pointins.HashTable.query: queries are on {q.device}, the table on {self.device}.")
        if self.backend == "reference":
            out = reference.hash_lookup(self.keys, q)
        else:
            out = torch.ops.pointins.hash_query(self.table_keys, self.table_vals, q)
        return results(out, kind)

    def contains(self, queries: Any) -> Any:
        """Boolean mask: which query keys are in the table."""
        q, kind = _keys_arg(queries, "queries", "HashTable.contains")
        return results(to_tensor(self.query(q), "q", "HashTable")[0] >= 0, kind)


@dataclass
class Voxelization:
    """Result of :func:`voxelize`. Voxels are numbered in order of their first point, so the
    voxels of each sample are contiguous and ``offsets`` is their CSR split."""

    grid_coord: torch.Tensor  # (V, 3) int32 voxel grid coordinates (per-sample minimum at 0)
    batch: torch.Tensor  # (V,) int64 sample of each voxel
    offsets: torch.Tensor  # (B+1,) int64 CSR offsets of the voxels per sample
    inverse: torch.Tensor  # (N,) int64 voxel of each point
    counts: torch.Tensor  # (V,) int64 points per voxel
    index: torch.Tensor  # (V,) int64 kept point per voxel (train: random; test/all: first)
    point_grid_coord: torch.Tensor  # (N, 3) int32 grid coordinates of every point
    fragments: torch.Tensor | None = None  # test mode: (F, V), fragment f takes point f % count
    feats: torch.Tensor | None = None  # (V, C) per-voxel mean of the given features

    def __len__(self) -> int:
        return int(self.counts.shape[0])


def voxelize(
    coord: Any,
    offsets: Any = None,
    grid_size: Any = None,
    *,
    batch: Any = None,
    mode: str = "train",
    feats: Any = None,
    seed: int | None = None,
    bits: int = 16,
    backend: str | None = None,
) -> Voxelization:
    """Grid sampling of batched clouds.

    Args:
        coord: (N, 3) float points; offsets (CSR) or ``batch`` ids give the samples.
        grid_size: voxel size (one number or one per axis).
        mode: ``"train"`` keeps one uniformly random point per voxel (seeded by ``seed``, or by
            torch's generator when None); ``"test"`` also returns ``fragments`` so every point
            appears in at least one fragment; ``"all"`` keeps the first point of each voxel.
        feats: optional (N, C) per-point features to average per voxel.
        bits: bits per axis of the voxel keys (16: grids up to 65536 cells per axis).

    Returns:
        :class:`Voxelization` of torch tensors on the input's device (NumPy/CuPy inputs are
        accepted; convert the fields you need back with ``.numpy()`` / ``cupy.from_dlpack``).

    Raises:
        ValueError: NaN/Inf coordinates, a grid that needs more than ``bits`` bits per axis (the
            message names the grid size and the extent), bad offsets or batch ids.
    """
    op = "voxelize"
    slip = misplaced(op, "offsets", offsets, "grid_size", "voxelize(coord, offsets=None, grid_size=None, *, "
                     "batch=None, mode='train', feats=None, seed=None, bits=16)")  # fmt: skip
    if slip is not None:
        raise slip
    if mode not in ("train", "test", "all"):
        raise ValueError(f"pointins.{op}: mode must be 'train', 'test' or 'all', got {mode!r}.")
    c, kind = to_tensor(coord, "coord", op)
    if c.dim() != 2 or c.shape[-1] != 3:
        raise ValueError(f"pointins.{op}: coord must have shape (N, 3), got {tuple(c.shape)}.")
    n = c.shape[0]
    gs = _grid_size(grid_size)
    off, perm = _offsets_and_perm(offsets, batch, n, c.device, op)
    be = _dispatch.select(backend, c.device, op, ("cpu", "cuda", "reference"))
    f = None
    if feats is not None:
        f, _ = to_tensor(feats, "feats", op)
        if f.shape[0] != n:
            raise ValueError(f"pointins.{op}: feats must have one row per point ({n}), got {tuple(f.shape)}.")
    if perm is not None:
        c = c[perm]
        f = None if f is None else f[perm]
    if be == "reference":
        g = grid_coord(c, off, gs, backend=be)
    else:  # the op directly: arguments are already normalised (saves wrapper overhead on small clouds)
        g = torch.ops.pointins.grid_coord(c.float() if c.dtype in (torch.float16, torch.bfloat16) else c, off, gs)
    if n and int(g.amax()) >= 2**bits:
        gmax = g.max(0).values
        extent = [round(float(v) * s, 4) for v, s in zip(gmax.tolist(), gs, strict=True)]
        raise ValueError(
            f"pointins.{op}: at grid_size {gs} a sample spans up to {extent} m, i.e. {[int(v) + 1 for v in gmax]} "
            f"cells per axis, but voxel keys hold 2^{bits} = {2**bits} cells per axis. Use a larger grid_size "
            f"(>= {max(e / 2**bits for e in extent):.4g}) or crop the cloud."
        )
    single = off.numel() == 2  # one sample: no batch bits to pack
    pbatch = None if single else reference.offsets_to_batch(off)
    keys = (
        pack_keys(g, pbatch, bits=bits, backend=be)
        if be == "reference"
        else torch.ops.pointins.pack_keys(g, pbatch, bits)
    )
    if mode == "train" and seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    elif seed is not None:
        seed = check_seed(seed, "voxelize")
    sel_seed = int(seed) if mode == "train" else None
    if be == "reference":
        inverse, first, counts = reference.voxel_group(keys)
        index = first if sel_seed is None else reference.voxel_select(inverse, int(counts.shape[0]), sel_seed)
    else:
        inverse, first, counts, index = torch.ops.pointins.voxel_group(keys, sel_seed)
    num_voxels = int(counts.shape[0])
    fragments = None
    if mode == "test" and num_voxels:
        within = torch.sort(inverse, stable=True).indices  # points grouped by voxel, ascending
        start = torch.cumsum(counts, 0) - counts
        f_count = int(counts.max())
        fragments = within[start[None, :] + torch.arange(f_count, device=c.device)[:, None] % counts[None, :]]
    elif mode == "test":
        fragments = torch.zeros((0, 0), dtype=torch.long, device=c.device)
    vfeats = None
    if f is not None:  # deterministic segment mean (no atomics, also on CUDA)
        ff = f if f.is_floating_point() else f.float()
        vfeats = segment_reduce(ff, index=inverse, num_segments=num_voxels, reduce="mean", backend=be)
    vbatch = torch.zeros_like(first) if single else pbatch[first]
    voffsets = torch.cat([vbatch.new_zeros(1), torch.bincount(vbatch, minlength=off.numel() - 1).cumsum(0)])
    if perm is not None:  # back to the caller's point order
        inverse = torch.empty_like(inverse).index_copy_(0, perm, inverse)
        g = torch.empty_like(g).index_copy_(0, perm, g)
        index, first = perm[index], perm[first]
        fragments = None if fragments is None else perm[fragments]
    return result_fields(Voxelization(g[first], vbatch, voffsets, inverse, counts, index, g, fragments, vfeats), kind)


def voxel_select(inverse: Any, num_voxels: int, seed: int, *, backend: str | None = None) -> Any:
    """One seeded random point per voxel from a point -> voxel map (e.g. a :class:`Voxelization`'s ``inverse``):
    exactly the ``index`` that ``voxelize(..., mode="train", seed=seed)`` returns for the same points, without
    grouping them again (re-draw a cached grouping each epoch). Voxels without points get -1."""
    op = "voxel_select"
    inv, kind = to_tensor(inverse, "inverse", op)
    if inv.dim() != 1 or inv.is_floating_point() or inv.dtype == torch.bool:
        raise TypeError(f"pointins.{op}: inverse must be a 1-D integer tensor, got {inv.dtype} {tuple(inv.shape)}.")
    seed = check_seed(seed, op)
    if isinstance(num_voxels, bool) or not isinstance(num_voxels, int) or num_voxels < 0:
        raise ValueError(f"pointins.{op}: num_voxels must be an int >= 0, got {num_voxels!r}.")
    be = _dispatch.select(backend, inv.device, op, ("cpu", "reference"))
    inv = inv.long()
    if be == "reference" or inv.device.type != "cpu":
        if inv.numel() and (int(inv.min()) < 0 or int(inv.max()) >= num_voxels):
            raise ValueError(f"pointins.{op}: inverse entries must be voxel ids in [0, {num_voxels}).")
        out = reference.voxel_select(inv, num_voxels, seed)
        out = torch.where(out == (1 << 39) - 1, -1, out)  # the index bits of an untouched (empty) voxel
    else:
        out = torch.ops.pointins.voxel_select(inv, num_voxels, seed)
    return results(out, kind)


def kernel_map(
    grid_coord: Any,
    offsets: Any = None,
    *,
    batch: Any = None,
    kernel_size: int = 3,
    dilation: int = 1,
    bits: int = 16,
    backend: str | None = None,
) -> Any:
    """Submanifold sparse-conv kernel map: ``(N, kernel_size**3)`` int64, entry ``[i, k]`` the
    index of the voxel at ``grid_coord[i] + offset_k`` in the same sample, or -1.

    Offsets run x slowest, z fastest: ``k = ((dx + r) * K + (dy + r)) * K + (dz + r)`` with
    ``r = K // 2`` (times ``dilation``); ``k = K**3 // 2`` is the voxel itself. Voxels should be
    unique (as :func:`voxelize` makes them); for duplicates the first index is returned.
    """
    op = "kernel_map"
    g, kind = to_tensor(grid_coord, "grid_coord", op)
    if g.dim() != 2 or g.shape[-1] != 3:
        raise ValueError(f"pointins.{op}: grid_coord must have shape (N, 3), got {tuple(g.shape)}.")
    b = None
    if offsets is not None or batch is not None:
        off, perm = _offsets_and_perm(offsets, batch, g.shape[0], g.device, op)
        b = reference.offsets_to_batch(off)
        if perm is not None:  # kernel maps work on any point order; keep the caller's
            b = torch.empty_like(b).index_copy_(0, perm, b)
    be = _dispatch.select(backend, g.device, op, ("cpu", "cuda", "reference"))
    if be == "reference":
        if kernel_size < 1 or kernel_size % 2 == 0 or kernel_size > 7:
            raise ValueError(f"pointins.{op}: kernel_size must be odd and in [1, 7], got {kernel_size}.")
        out = reference.kernel_map(g, b, kernel_size, dilation, bits)
    else:
        out = torch.ops.pointins.kernel_map(g, b, kernel_size, dilation, bits)
    return results(out, kind)


def kernel_map_pairs(kmap: Any) -> tuple[Any, Any, Any]:
    """Compact a dense kernel map into pair lists grouped by kernel offset.

    Returns ``(in_index, out_index, kernel_offsets)``: for offset k the pairs are
    ``kernel_offsets[k]:kernel_offsets[k+1]``, each pair meaning output voxel ``out_index``
    reads input voxel ``in_index`` through weight k (outputs ascending within an offset).
    """
    m, kind = to_tensor(kmap, "kmap", "kernel_map_pairs")
    if m.dim() != 2 or m.dtype != torch.int64:
        raise TypeError(
            f"pointins.kernel_map_pairs: kmap must be a 2-D int64 kernel map, got {m.dtype} {tuple(m.shape)}."
        )
    if m.numel() and bool((m < -1).any()):
        raise ValueError(
            f"pointins.kernel_map_pairs: kmap entries must be -1 (no neighbour) or row indices >= 0; found "
            f"{int(m.min())}."
        )
    return results(_pairs(m), kind)


def _pairs(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`kernel_map_pairs` of a checked int64 map: one compiled pass on the CPU, torch ops elsewhere."""
    if m.device.type == "cpu":
        return torch.ops.pointins.kernel_map_pairs(m)
    mt = m.t()
    valid = mt >= 0
    k_idx, out_idx = valid.nonzero(as_tuple=True)  # row-major: by offset, then output
    in_idx = mt[k_idx, out_idx]
    counts = valid.sum(1)
    return in_idx, out_idx, torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def transpose_kernel_map(kmap: Any, num_inputs: int) -> Any:
    """Transpose of a kernel map: ``(num_inputs, K)`` with ``T[kmap[o, k], k] = o``, -1 elsewhere.

    The transpose of a stride-2 down-sampling map is the up-sampling (inverse-conv) map; each
    column of a convolution's map is injective, so the transpose is well defined."""
    m, kind = to_tensor(kmap, "kmap", "transpose_kernel_map")
    if m.dim() != 2 or m.dtype != torch.int64:
        raise TypeError("pointins.transpose_kernel_map: kmap must be a 2-D int64 kernel map.")
    if m.numel() and int(m.min()) < -1:
        raise ValueError(f"pointins.transpose_kernel_map: kmap entries must be -1 or >= 0; found {int(m.min())}.")
    if m.numel() and int(m.max()) >= num_inputs:
        raise ValueError(
            f"pointins.transpose_kernel_map: kmap indexes up to {int(m.max())} >= num_inputs={num_inputs}."
        )
    out_ids = torch.arange(m.shape[0], device=m.device)[:, None].expand_as(m)
    k_ids = torch.arange(m.shape[1], device=m.device)[None, :].expand_as(m)
    valid = m >= 0
    t = torch.full((num_inputs * m.shape[1],), -1, dtype=torch.long, device=m.device)
    t.scatter_reduce_(0, (m * m.shape[1] + k_ids)[valid], out_ids[valid], reduce="amax", include_self=True)
    return results(t.view(num_inputs, m.shape[1]), kind)


@dataclass
class Downsample:
    """Stride-s down-sampling of voxels (PTv3 grid pooling / sparse conv k=s, stride s).

    ``kernel_map[m, k]`` is the fine voxel at ``stride * grid_coord[m] + d_k`` (d in
    ``[0, stride)^3``, x slowest) or -1; ``parent[i]`` is the coarse voxel of fine voxel i."""

    grid_coord: torch.Tensor  # (M, 3) int32 coarse coordinates
    batch: torch.Tensor  # (M,) int64
    offsets: torch.Tensor  # (B+1,) int64
    parent: torch.Tensor  # (N,) int64
    kernel_map: torch.Tensor  # (M, stride^3) int64

    def up_map(self) -> torch.Tensor:
        """The transposed map ``(N, stride^3)`` for up-sampling (inverse convolution)."""
        return transpose_kernel_map(self.kernel_map, self.parent.shape[0])


def downsample(
    grid_coord: Any, offsets: Any = None, *, batch: Any = None, stride: int = 2, backend: str | None = None
) -> Downsample:
    """Coarse voxels ``unique(grid_coord // stride)`` per sample, numbered by first fine voxel."""
    op = "downsample"
    g, _ = to_tensor(grid_coord, "grid_coord", op)
    if g.dim() != 2 or g.shape[-1] != 3 or g.is_floating_point():
        raise ValueError(f"pointins.{op}: grid_coord must be an integer (N, 3) tensor, got {g.dtype} {tuple(g.shape)}.")
    if stride < 1 or stride > 8:
        raise ValueError(f"pointins.{op}: stride must be in [1, 8], got {stride}.")
    neg = f"pointins.{op}: grid_coord has negative values; use per-sample grid coordinates (>= 0)."
    bad = (g < 0).any()
    if not defer(bad, neg) and bool(bad):
        raise ValueError(neg)
    n = g.shape[0]
    off, perm = _offsets_and_perm(offsets, batch, n, g.device, op)
    if perm is not None:
        raise ValueError(
            f"pointins.{op}: voxels must be grouped by sample (sorted batch ids), as voxelize returns them."
        )
    b = reference.offsets_to_batch(off)
    coarse = torch.div(g.long(), stride, rounding_mode="floor")
    be = _dispatch.select(backend, g.device, op, ("cpu", "cuda", "reference"))
    keys = pack_keys(coarse, b, backend=be)
    if be == "reference":
        parent, first, _ = reference.voxel_group(keys)
    else:
        parent, first, _, _ = torch.ops.pointins.voxel_group(keys)
    m = first.shape[0]
    d = g.long() - stride * coarse  # in [0, stride)^3
    k = (d[:, 0] * stride + d[:, 1]) * stride + d[:, 2]
    kmap = torch.full((m * stride**3,), n, dtype=torch.long, device=g.device)
    kmap.scatter_reduce_(0, parent * stride**3 + k, torch.arange(n, device=g.device), reduce="amin")
    kmap = torch.where(kmap == n, -1, kmap).view(m, stride**3)
    cb = b[first]
    coff = torch.cat([cb.new_zeros(1), torch.bincount(cb, minlength=off.numel() - 1).cumsum(0)])
    return Downsample(coarse[first].to(torch.int32), cb, coff, parent, kmap)


def _register_fakes() -> None:
    @torch.library.register_fake("pointins::hash_build")
    def _(keys, capacity):
        return keys.new_empty((capacity,)), keys.new_empty((capacity,))

    @torch.library.register_fake("pointins::hash_query")
    def _(table_keys, table_vals, queries):
        return queries.new_empty(queries.shape)

    @torch.library.register_fake("pointins::voxel_group")
    def _(keys, seed=None):
        v = torch.library.get_ctx().new_dynamic_size()
        return keys.new_empty(keys.shape), keys.new_empty((v,)), keys.new_empty((v,)), keys.new_empty((v,))

    # the view pipeline's kernels (pointins/data/transforms.py)
    @torch.library.register_fake("pointins::elastic_displace")
    def _(coord, lattice, lo, gran, mag):
        return torch.empty_like(coord)

    @torch.library.register_fake("pointins::hue_shift")
    def _(color, shift):
        return torch.empty_like(color)

    @torch.library.register_fake("pointins::voxel_select")
    def _(inverse, num_voxels, seed):
        return inverse.new_empty((num_voxels,))

    @torch.library.register_fake("pointins::kernel_map")
    def _(grid_coord, batch, kernel_size, dilation, bits=16):
        return grid_coord.new_empty((grid_coord.shape[0], kernel_size**3), dtype=torch.int64)

    @torch.library.register_fake("pointins::kernel_map_pairs")
    def _(kmap):
        p = torch.library.get_ctx().new_dynamic_size()
        return kmap.new_empty((p,)), kmap.new_empty((p,)), kmap.new_empty((kmap.shape[1] + 1,))


if _ext.try_load() is not None:
    _register_fakes()
