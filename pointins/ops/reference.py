"""Plain-PyTorch reference implementations ("oracles") of the pointins ops.

Readable, device-agnostic and slow on purpose: every compiled or Triton kernel is tested
against these, and ``backend="reference"`` runs them through the public API. They validate
their inputs too, so the error behaviour is part of what the kernels are compared with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

GRID_LIMIT = 2**30  # |floor(coord / grid_size)| must stay below this (kernels/include/pointins/common.h)
MIN_KEY_BITS, MAX_KEY_BITS, DEFAULT_KEY_BITS = 1, 21, 16


def check_offsets(offsets: torch.Tensor, n: int, op: str) -> None:
    """CSR offsets: 1-D, offsets[0] == 0, non-decreasing, offsets[-1] == n."""
    if offsets.dim() != 1 or offsets.numel() < 1:
        raise ValueError(f"pointins.{op}: offsets must be 1-D CSR offsets of length B+1, got {tuple(offsets.shape)}")
    from pointins.ops._checks import defer

    if defer((offsets[0] != 0) | (offsets[-1] != n) | (offsets.diff() < 0).any(),
             f"pointins.{op}: offsets are not valid CSR offsets for N = {n} points"):  # fmt: skip
        return
    bad = offsets[0] != 0 or offsets[-1] != n or bool((offsets.diff() < 0).any())
    if bad:
        raise ValueError(
            f"pointins.{op}: offsets are not valid CSR offsets for N = {n} points: they must start at 0, "
            f"never decrease and end at N; got {offsets[:8].tolist()}... ending at {int(offsets[-1])}"
        )


def offsets_to_batch(offsets: torch.Tensor) -> torch.Tensor:
    """Per-point sample ids from CSR offsets."""
    counts = offsets.diff()
    return torch.repeat_interleave(torch.arange(counts.numel(), device=offsets.device), counts)


def grid_coord(coord: torch.Tensor, offsets: torch.Tensor, grid_size: Sequence[float]) -> torch.Tensor:
    """floor(coord / grid_size) minus its per-sample minimum, as int32 (N, 3)."""
    if not coord.is_floating_point():
        raise TypeError(f"pointins.grid_coord: coord must be floating point, got {coord.dtype}")
    n = coord.shape[0]
    check_offsets(offsets, n, "grid_coord")
    if not bool(torch.isfinite(coord).all()):
        raise ValueError("pointins.grid_coord: coord contains NaN or Inf")
    g = torch.as_tensor(list(grid_size), dtype=coord.dtype, device=coord.device)
    f = torch.floor(coord / g)
    if not bool(((f >= -GRID_LIMIT) & (f < GRID_LIMIT)).all()):
        raise ValueError("pointins.grid_coord: coord / grid_size exceeds the supported range of +-2^30 cells")
    batch = offsets_to_batch(offsets)
    num_samples = offsets.numel() - 1
    mins = torch.full((num_samples, 3), float("inf"), dtype=coord.dtype, device=coord.device)
    mins = mins.scatter_reduce(0, batch[:, None].expand(-1, 3), f, reduce="amin")
    return (f - mins[batch]).to(torch.int32)


def pack_keys(
    grid_coord: torch.Tensor, batch: torch.Tensor | None = None, bits: int = DEFAULT_KEY_BITS
) -> torch.Tensor:
    """key = batch << 3*bits | x << 2*bits | y << bits | z (int64)."""
    if not MIN_KEY_BITS <= bits <= MAX_KEY_BITS:
        raise ValueError(f"pointins.pack_keys: bits must be in [{MIN_KEY_BITS}, {MAX_KEY_BITS}], got {bits}")
    g = grid_coord.long()
    b = torch.zeros(g.shape[0], dtype=torch.long, device=g.device) if batch is None else batch.long()
    if bool((g < 0).any()):
        raise ValueError("pointins.pack_keys: grid_coord has negative values")
    if bool((g >= 2**bits).any()):
        raise ValueError(f"pointins.pack_keys: grid_coord does not fit {bits} bits per axis")
    if bool(((b < 0) | (b >= 2 ** (63 - 3 * bits))).any()):
        raise ValueError(f"pointins.pack_keys: batch ids do not fit the {63 - 3 * bits} batch bits")
    return (b << (3 * bits)) | (g[:, 0] << (2 * bits)) | (g[:, 1] << bits) | g[:, 2]


def unpack_keys(keys: torch.Tensor, bits: int = DEFAULT_KEY_BITS) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack_keys`: (grid_coord int32 (N, 3), batch int64 (N,))."""
    if not MIN_KEY_BITS <= bits <= MAX_KEY_BITS:
        raise ValueError(f"pointins.unpack_keys: bits must be in [{MIN_KEY_BITS}, {MAX_KEY_BITS}], got {bits}")
    if bool((keys < 0).any()):
        raise ValueError("pointins.unpack_keys: keys contains negative values")
    mask = (1 << bits) - 1
    grid = torch.stack([(keys >> (2 * bits)) & mask, (keys >> bits) & mask, keys & mask], dim=1)
    return grid.to(torch.int32), keys >> (3 * bits)


# ---------------------------------------------------------------------------------------------
# Serialization: z-order and Hilbert codes (PTv3 / Pointcept conventions)
# ---------------------------------------------------------------------------------------------

ORDERS = ("z", "z-trans", "hilbert", "hilbert-trans")


def z_order_encode(grid_coord: torch.Tensor, depth: int) -> torch.Tensor:
    """Bit i of x -> code bit 3i+2, of y -> 3i+1, of z -> 3i (one bit at a time)."""
    x, y, z = grid_coord.long().unbind(1)
    code = torch.zeros_like(x)
    for i in range(depth):
        m = 1 << i
        code |= ((x & m) << (2 * i + 2)) | ((y & m) << (2 * i + 1)) | ((z & m) << (2 * i))
    return code


def z_order_decode(code: torch.Tensor, depth: int) -> torch.Tensor:
    xyz = torch.zeros(code.shape[0], 3, dtype=torch.long, device=code.device)
    for i in range(depth):
        for axis, shift in ((0, 2), (1, 1), (2, 0)):
            xyz[:, axis] |= ((code >> (3 * i + shift)) & 1) << i
    return xyz


def _bits_msb_first(v: torch.Tensor, nbits: int) -> torch.Tensor:
    shifts = torch.arange(nbits - 1, -1, -1, device=v.device)
    return ((v[..., None] >> shifts) & 1).bool()


def _from_bits_msb_first(bits: torch.Tensor) -> torch.Tensor:
    n = bits.shape[-1]
    weights = torch.ones(n, dtype=torch.long, device=bits.device) << torch.arange(n - 1, -1, -1, device=bits.device)
    return (bits.long() * weights).sum(-1)


def hilbert_encode(grid_coord: torch.Tensor, depth: int) -> torch.Tensor:
    """Skilling's Hilbert transform written on bit planes (one boolean per bit), as PTv3's
    reference encoder does: undo excess work from the most significant bit down, flatten
    bit-major with x first, then Gray-decode the flattened bits (prefix XOR)."""
    n = grid_coord.shape[0]
    gray = _bits_msb_first(grid_coord.long(), depth)  # (N, 3 dims, depth bits), MSB first
    for bit in range(depth):
        for dim in range(3):
            on = gray[:, dim, bit].clone()
            gray[:, 0, bit + 1 :] ^= on[:, None]  # bit set: invert the lower bits of x
            swap = ~on[:, None] & (gray[:, 0, bit + 1 :] ^ gray[:, dim, bit + 1 :])  # else exchange
            gray[:, dim, bit + 1 :] ^= swap
            gray[:, 0, bit + 1 :] ^= swap
    flat = gray.transpose(1, 2).reshape(n, 3 * depth)
    binary = (torch.cumsum(flat.long(), dim=1) % 2).bool()
    return _from_bits_msb_first(binary)


def hilbert_decode(code: torch.Tensor, depth: int) -> torch.Tensor:
    n = code.shape[0]
    binary = _bits_msb_first(code.long(), 3 * depth)
    gray = binary.clone()
    gray[:, 1:] ^= binary[:, :-1]  # Gray encode along the flattened bits
    gray = gray.reshape(n, depth, 3).transpose(1, 2).contiguous()
    for bit in range(depth - 1, -1, -1):
        for dim in range(2, -1, -1):
            on = gray[:, dim, bit].clone()
            gray[:, 0, bit + 1 :] ^= on[:, None]
            swap = ~on[:, None] & (gray[:, 0, bit + 1 :] ^ gray[:, dim, bit + 1 :])
            gray[:, dim, bit + 1 :] ^= swap
            gray[:, 0, bit + 1 :] ^= swap
    return _from_bits_msb_first(gray)


def serialize_encode(
    grid_coord: torch.Tensor, batch: torch.Tensor | None, depth: int, order: str = "z"
) -> torch.Tensor:
    """PTv3 code of one order: curve code | batch << 3*depth."""
    g = grid_coord.long()
    if bool((g < 0).any()) or bool((g >= 2**depth).any()):
        raise ValueError(f"pointins.serialize: grid_coord does not fit depth={depth} bits per axis")
    if order.endswith("-trans"):
        g = g[:, [1, 0, 2]]
    code = z_order_encode(g, depth) if order.startswith("z") else hilbert_encode(g, depth)
    if batch is not None:
        code = code | (batch.long() << (3 * depth))
    return code


def serialize_decode(code: torch.Tensor, depth: int, order: str = "z") -> tuple[torch.Tensor, torch.Tensor]:
    if bool((code < 0).any()):
        raise ValueError("pointins.deserialize: code contains negative values")
    c = code & ((1 << (3 * depth)) - 1)
    g = z_order_decode(c, depth) if order.startswith("z") else hilbert_decode(c, depth)
    if order.endswith("-trans"):
        g = g[:, [1, 0, 2]]
    return g.to(torch.int32), code >> (3 * depth)


# ---------------------------------------------------------------------------------------------
# Hashing, voxels, kernel maps, patches
# ---------------------------------------------------------------------------------------------


def hash_lookup(keys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Index of the first occurrence of each query in ``keys``, or -1 (searchsorted)."""
    if keys.numel() == 0:
        return torch.full_like(queries, -1)
    sorted_keys, order = torch.sort(keys, stable=True)  # stable: first occurrence first
    pos = torch.searchsorted(sorted_keys, queries).clamp(max=keys.numel() - 1)
    found = sorted_keys[pos] == queries
    return torch.where(found, order[pos], torch.full_like(queries, -1))


def voxel_group(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unique keys numbered in order of first occurrence: (inverse, first index, counts)."""
    n = keys.numel()
    if n == 0:
        e = keys.new_empty(0)
        return e, e, e
    _, inv, counts = torch.unique(keys, return_inverse=True, return_counts=True)
    first = torch.full((counts.numel(),), n, dtype=torch.long, device=keys.device)
    first = first.scatter_reduce(0, inv, torch.arange(n, device=keys.device), reduce="amin")
    order = torch.argsort(first)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=keys.device)
    return rank[inv], first[order], counts[order]


def voxel_select(inverse: torch.Tensor, num_voxels: int, seed: int) -> torch.Tensor:
    """One seeded random point per voxel, as the kernels pick it: the point of least
    (24-bit splitmix64 priority of (seed, index), index) (kernels/include/pointins/hash.h)."""
    n = inverse.shape[0]
    idx = torch.arange(n, device=inverse.device)
    packed = _priority_pack(idx, seed)
    best = torch.full((num_voxels,), 2**63 - 1, dtype=torch.long, device=inverse.device)
    best = best.scatter_reduce(0, inverse, packed, reduce="amin")
    return best & ((1 << 39) - 1)


_M64 = (1 << 64) - 1


def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64 finaliser on int64 tensors holding uint64 bit patterns."""

    def mul(a, c):  # 64-bit wrap-around multiply on int64
        return a * (c - (1 << 64) if c >= 1 << 63 else c)

    def shr(a, s):  # logical right shift
        return (a >> s) & ((1 << (64 - s)) - 1)

    x = x ^ shr(x, 30)
    x = mul(x, 0xBF58476D1CE4E5B9)
    x = x ^ shr(x, 27)
    x = mul(x, 0x94D049BB133111EB)
    return x ^ shr(x, 31)


def _priority_pack(idx: torch.Tensor, seed: int) -> torch.Tensor:
    s = (seed + 0x9E3779B97F4A7C15) & _M64
    s = s - (1 << 64) if s >= 1 << 63 else s
    base = _mix(torch.tensor([s], dtype=torch.long, device=idx.device))
    prio = _mix(base ^ idx)
    top24 = (prio >> 40) & ((1 << 24) - 1)
    return (top24 << 39) | idx


def kernel_map(
    grid_coord: torch.Tensor, batch: torch.Tensor | None, kernel_size: int = 3, dilation: int = 1, bits: int = 16
) -> torch.Tensor:
    """(N, k^3) index of the voxel at grid_coord + offset (x slowest, z fastest), or -1."""
    g = grid_coord.long()
    b = torch.zeros(g.shape[0], dtype=torch.long, device=g.device) if batch is None else batch.long()
    keys = pack_keys(g, b, bits)
    r = kernel_size // 2
    rng = torch.arange(-r, r + 1, device=g.device) * dilation
    offs = torch.cartesian_prod(rng, rng, rng)  # x slowest
    nb = g[:, None, :] + offs[None]  # (N, K, 3)
    valid = ((nb >= 0) & (nb < 2**bits)).all(-1)
    nb_keys = (b[:, None] << (3 * bits)) | (nb[..., 0] << (2 * bits)) | (nb[..., 1] << bits) | nb[..., 2]
    idx = hash_lookup(keys, torch.where(valid, nb_keys, -1).reshape(-1)).reshape(valid.shape)
    return torch.where(valid, idx, torch.full_like(idx, -1))


def sparse_conv(
    feat: torch.Tensor, kmap: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Gather-GEMM-scatter sparse convolution: for each kernel offset k, the pairs (i, kmap[i, k])
    with a neighbour contribute ``feat[kmap[i, k]] @ weight[k]`` to output i (autograd by PyTorch)."""
    out = feat.new_zeros((kmap.shape[0], weight.shape[2]))
    for k in range(kmap.shape[1]):
        rows = torch.nonzero(kmap[:, k] >= 0).squeeze(1)
        if rows.numel():
            out = out.index_add(0, rows, feat[kmap[rows, k]] @ weight[k])
    return out if bias is None else out + bias


def patch_partition(offsets: torch.Tensor, patch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PTv3 padding, written per sample as in its reference code (slot j >= n takes j - K)."""
    pads, unpads, cu = [], [], []
    start_pad = 0
    for s in range(offsets.numel() - 1):
        lo, hi = int(offsets[s]), int(offsets[s + 1])
        n = hi - lo
        n_pad = -(-n // patch_size) * patch_size if n > patch_size else n
        local = torch.arange(n_pad, device=offsets.device)
        local = torch.where(local < n, local, local - patch_size)
        pads.append(local + lo)
        unpads.append(torch.arange(n, device=offsets.device) + start_pad)
        cu.append(torch.arange(start_pad, start_pad + n_pad, patch_size, device=offsets.device))
        start_pad += n_pad
    cat = lambda xs, dt: torch.cat(xs).to(dt) if xs else torch.zeros(0, dtype=dt, device=offsets.device)
    cu_seqlens = torch.cat([cat(cu, torch.int32), torch.tensor([start_pad], dtype=torch.int32, device=offsets.device)])
    return cat(pads, torch.long), cat(unpads, torch.long), cu_seqlens


# ---------------------------------------------------------------------------------------------
# Serialized patch attention (pointins/ops/attention.py, pointins/triton/attention.py)
# ---------------------------------------------------------------------------------------------


def patch_attention(
    qkv: torch.Tensor,
    order: torch.Tensor,
    pad: torch.Tensor,
    unpad: torch.Tensor,
    cu_seqlens: torch.Tensor,
    num_heads: int,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention inside each patch, written out patch by patch (differentiable, any float dtype).

    Slot j reads point ``order[pad[j]]``; a point's output and log-sum-exp come from its own slot
    ``unpad[position]``, so duplicated padding slots act as keys/values only. Scores in float64
    for float64 input, else float32. Returns ``out`` (N, C) in qkv's dtype, ``lse`` (N, H) float32
    (float64 for float64 input).
    """
    n, c3 = qkv.shape
    c = c3 // 3
    d = c // num_heads
    scale = d**-0.5 if scale is None else scale
    work = torch.float64 if qkv.dtype == torch.float64 else torch.float32
    x = qkv.to(work).view(n, 3, num_heads, d)
    outs, lses = [], []
    for p in range(cu_seqlens.numel() - 1):
        slots = torch.arange(int(cu_seqlens[p]), int(cu_seqlens[p + 1]), device=qkv.device)
        q, k, v = x[order[pad[slots]]].unbind(1)  # (L, H, d) each
        s = torch.einsum("ihd,jhd->hij", q, k) * scale
        lses.append(torch.logsumexp(s, -1).T)
        outs.append(torch.einsum("hij,jhd->ihd", torch.softmax(s, -1), v).reshape(-1, c))
    p_total = pad.numel()
    slot_out = torch.cat(outs) if outs else x.new_zeros(0, c)
    slot_lse = torch.cat(lses) if lses else x.new_zeros(0, num_heads)
    own = unpad[pad] == torch.arange(p_total, device=qkv.device)
    dst = order[pad][own]
    out = x.new_zeros(n, c).index_copy(0, dst, slot_out[own])
    lse = x.new_zeros(n, num_heads).index_copy(0, dst, slot_lse[own])
    return out.to(qkv.dtype), lse


def patch_buckets(cu_seqlens: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """Patches grouped by length: ``[(L, slots (n_L, L) int64), ...]`` (one sync)."""
    starts, lengths = cu_seqlens[:-1].long(), cu_seqlens.diff().long()
    out = []
    for length in sorted(set(lengths.tolist())):
        if length == 0:
            continue
        first = starts[lengths == length]
        out.append((length, first[:, None] + torch.arange(length, device=cu_seqlens.device)))
    return out


def patch_attention_sdpa(
    qkv: torch.Tensor,
    order: torch.Tensor,
    pad: torch.Tensor,
    unpad: torch.Tensor,
    cu_seqlens: torch.Tensor,
    num_heads: int,
    scale: float | None = None,
    buckets: list[tuple[int, torch.Tensor]] | None = None,
) -> torch.Tensor:
    """The explicit-gather baseline: gather q/k/v into (patches, H, L, d) per patch length, run
    ``F.scaled_dot_product_attention`` (any backend it picks), scatter the own slots back to point
    order. Differentiable through PyTorch; the benchmark's SDPA baseline (pass ``buckets`` from
    :func:`patch_buckets` to keep its one sync out of a timed loop)."""
    n, c3 = qkv.shape
    c = c3 // 3
    d = c // num_heads
    p_total = pad.numel()
    rows = order[pad]
    own = unpad[pad] == torch.arange(p_total, device=qkv.device)
    slot_out = qkv.new_empty(p_total, c)
    for length, slots in buckets if buckets is not None else patch_buckets(cu_seqlens):
        x = qkv[rows[slots]].view(slots.shape[0], length, 3, num_heads, d).permute(2, 0, 3, 1, 4)
        o = torch.nn.functional.scaled_dot_product_attention(x[0], x[1], x[2], scale=scale)
        slot_out = slot_out.index_copy(0, slots.flatten(), o.transpose(1, 2).reshape(-1, c))
    return qkv.new_zeros(n, c).index_copy(0, rows[own], slot_out[own])


# ---------------------------------------------------------------------------------------------
# Segment reductions
# ---------------------------------------------------------------------------------------------

SEGMENT_REDUCTIONS = ("sum", "mean", "max", "min", "var")


def segment_reduce(
    src: torch.Tensor, index: torch.Tensor, num_segments: int, reduce: str = "sum", correction: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Reduce rows of ``src`` (N, C) by segment id (negative ids ignored) -> ``(out (S, C), arg)``.

    Empty segments give 0 (arg -1); a variance over ``n <= correction`` rows is 0; the
    extremum's row is the lowest index among ties; NaN propagates through max/min.
    ``arg`` is None except for max/min. Accumulates in float64.
    """
    if reduce not in SEGMENT_REDUCTIONS:
        raise ValueError(f"pointins.segment_reduce: reduce must be one of {SEGMENT_REDUCTIONS}, got {reduce!r}")
    if bool((index >= num_segments).any()):
        raise ValueError("pointins.segment_reduce: index has ids >= num_segments")
    n, c = src.shape
    keep = index >= 0
    x, idx = src[keep].double(), index[keep]
    rows = torch.arange(n, device=src.device)[keep]
    counts = torch.bincount(idx, minlength=num_segments).double()[:, None]
    seg = idx[:, None].expand(-1, c)
    total = torch.zeros(num_segments, c, dtype=torch.float64, device=src.device).index_add_(0, idx, x)
    mean = total / counts.clamp(min=1)
    arg = None
    if reduce == "sum":
        out = total
    elif reduce == "mean":
        out = mean
    elif reduce == "var":
        dev = torch.zeros_like(total).index_add_(0, idx, (x - mean[idx]) ** 2)
        out = torch.where(counts > correction, dev / (counts - correction).clamp(min=1), 0.0)
    else:
        fill = float("-inf") if reduce == "max" else float("inf")
        best = torch.full((num_segments, c), fill, dtype=torch.float64, device=src.device)
        best = best.scatter_reduce(0, seg, x, reduce="amax" if reduce == "max" else "amin")
        nan = torch.zeros(num_segments, c, dtype=torch.bool, device=src.device).index_put_(
            (idx,), torch.isnan(x), accumulate=True
        )
        # The winner: the lowest row equal to the extremum (or the first NaN, which propagates).
        hit = torch.where(nan[idx], torch.isnan(x), x == best[idx])
        cand = torch.where(hit, rows[:, None], n)
        arg = torch.full((num_segments, c), n, dtype=torch.long, device=src.device)
        arg = arg.scatter_reduce(0, seg, cand, reduce="amin")
        empty = counts.expand(-1, c) == 0
        arg = torch.where(empty, -1, arg)
        out = torch.where(nan, float("nan"), torch.where(empty, 0.0, best))
    return out.to(src.dtype), arg


# ---------------------------------------------------------------------------------------------
# K-means steps (kernels/include/pointins/kmeans.h, csrc/cpu/kmeans_cpu.cpp)
# ---------------------------------------------------------------------------------------------

_M64 = (1 << 64) - 1


def _mix_int(k: int) -> int:
    k &= _M64
    k ^= k >> 30
    k = (k * 0xBF58476D1CE4E5B9) & _M64
    k ^= k >> 27
    k = (k * 0x94D049BB133111EB) & _M64
    return k ^ (k >> 31)


def kmeans_uniform(seed: int, set_index: int, draw: int) -> float:
    """The seeded uniform draw of the K-means initialisation (same on every backend)."""
    inner = _mix_int((set_index * 0x9E3779B97F4A7C15 + draw) & _M64)
    h = _mix_int(_mix_int((seed ^ 0x6A09E667F3BCC909) & _M64) ^ inner)
    return (h >> 11) * (1.0 / 9007199254740992.0)


def kmeans_uniforms(seed: int, sets: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """:func:`kmeans_uniform` for tensors of set indices and draw indices (float64, same device)."""

    def signed(v: int) -> int:
        v &= _M64
        return v - (1 << 64) if v >= 1 << 63 else v

    inner = _mix(sets.long() * signed(0x9E3779B97F4A7C15) + draws.long())
    outer = _mix(torch.tensor([signed(seed ^ 0x6A09E667F3BCC909)], dtype=torch.long, device=sets.device))
    h = _mix(outer ^ inner)
    return ((h >> 11) & ((1 << 53) - 1)).double() * (1.0 / 9007199254740992.0)


def kmeans_local_trials(trials: int, k: int) -> int:
    """Candidates per centre of greedy k-means++: ``trials`` when > 0, else 2 + floor(ln k) (scikit-learn's
    ``n_local_trials``), floor(ln k) from exact integer thresholds as the kernels compute it."""
    if trials > 0:
        return int(trials)
    return 2 + sum(1 for t in _LN_THRESHOLDS if k >= t)


# ceil(e^m), m = 1..20: k >= _LN_THRESHOLDS[m - 1] <=> floor(ln k) >= m
_LN_THRESHOLDS = (3, 8, 21, 55, 149, 404, 1097, 2981, 8104, 22027, 59875, 162755, 442414, 1202605, 3269018, 8886111,
                  24154953, 65659970, 178482301, 485165196)  # fmt: skip


_CHUNK = 2048  # the CPU kernel's work unit: potentials are summed per chunk, then over chunks, in order


def _seq_sqdist(xd: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared distances of the rows of ``xd`` to ``c`` (..., D), summed over D in order as the kernels do."""
    s = torch.zeros(torch.broadcast_shapes(xd.shape[:-1], c.shape[:-1]), dtype=torch.float64, device=xd.device)
    for j in range(xd.shape[-1]):
        s = s + (xd[..., j] - c[..., j]) ** 2
    return s


def _seq_sum(v: torch.Tensor) -> torch.Tensor:
    """Sum over the last dim in the CPU kernel's order (per 2048-chunk, then over the chunks)."""
    total = torch.zeros(v.shape[:-1], dtype=torch.float64, device=v.device)
    for c0 in range(0, v.shape[-1], _CHUNK):
        total = total + v[..., c0 : c0 + _CHUNK].cumsum(-1)[..., -1]
    return total


def _d2_pick(d2: torch.Tensor, u: float, total: float, n: int) -> int:
    if total > 0:
        cum = torch.cumsum(d2, 0)
        hit = ((cum > u * total) & (d2 > 0)).nonzero()
        return int(hit[0]) if hit.numel() else int((d2 > 0).nonzero()[-1])
    return min(n - 1, int(u * n))


def kmeans_init(
    x: torch.Tensor, offsets: torch.Tensor, coff: torch.Tensor, method: str, seed: int, local_trials: int = 0
) -> torch.Tensor:
    """Greedy k-means++ (first centre uniform; each next centre the best of L D^2-sampled candidates, the
    lowest potential winning, L = ``local_trials`` or 2 + floor(ln k); ``local_trials=1`` is classic k-means++)
    or k distinct random points (Floyd). The draws are those of ``pointins/kmeans.h``."""
    d = x.shape[1]
    out = x.new_empty(int(coff[-1]), d)
    for b in range(offsets.numel() - 1):
        xs = x[int(offsets[b]) : int(offsets[b + 1])]
        n, k, c0 = xs.shape[0], int(coff[b + 1] - coff[b]), int(coff[b])
        if k == 0:
            continue
        if method == "random":
            chosen: list[int] = []
            for draw, j in enumerate(range(n - k, n)):
                t = min(int(kmeans_uniform(seed, b, draw) * (j + 1)), j)
                chosen.append(j if t in chosen else t)
            out[c0 : c0 + k] = xs[chosen]
            continue
        trials = kmeans_local_trials(local_trials, k)
        xd = xs.double()
        first = min(n - 1, int(kmeans_uniform(seed, b, 0) * n))
        out[c0] = xs[first]
        d2 = _seq_sqdist(xd, xd[first])
        for r in range(1, k):
            total = float(d2.cumsum(0)[-1])  # in point order, as the kernels
            picks = [_d2_pick(d2, kmeans_uniform(seed, b, 1 + (r - 1) * trials + t), total, n) for t in range(trials)]
            best, best_d2 = picks[0], None
            if trials > 1:
                cand = torch.minimum(d2[None], _seq_sqdist(xd[None], xd[picks][:, None]))  # (L, n)
                pots = _seq_sum(cand)
                j = int(torch.nonzero(pots == pots.min())[0])  # the first of equal potentials
                best, best_d2 = picks[j], cand[j]
            out[c0 + r] = xs[best]
            d2 = best_d2 if best_d2 is not None else torch.minimum(d2, _seq_sqdist(xd, xd[best]))
    return out


def kmeans_assign(
    x: torch.Tensor, offsets: torch.Tensor, coff: torch.Tensor, centroids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest centroid of each point within its set (first on ties), its squared distance, and
    the per-cluster sums and counts."""
    n = x.shape[0]
    labels = torch.full((n,), -1, dtype=torch.long, device=x.device)
    dist = x.new_zeros(n)
    sums = torch.zeros_like(centroids, dtype=torch.float64)
    counts = torch.zeros(centroids.shape[0], dtype=torch.long, device=x.device)
    for b in range(offsets.numel() - 1):
        lo, hi, c0, c1 = int(offsets[b]), int(offsets[b + 1]), int(coff[b]), int(coff[b + 1])
        if c1 == c0 or hi == lo:
            continue
        d2 = ((x[lo:hi, None, :].double() - centroids[None, c0:c1, :].double()) ** 2).sum(-1)
        best, arg = d2.min(1)
        labels[lo:hi], dist[lo:hi] = arg, best.to(x.dtype)
        sums.index_add_(0, arg + c0, x[lo:hi].double())
        counts += torch.bincount(arg + c0, minlength=centroids.shape[0])
    return labels, dist, sums.to(x.dtype), counts


def kmeans_update(
    x, offsets, coff, labels, dist, sums, counts, centroids, tol, converged, n_iter, spherical
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """New centres = cluster means; empty clusters take the farthest points (descending distance,
    lowest index first), which leave their old clusters; a set converges when the squared centre
    shift is <= its tol."""
    cen, converged, n_iter = centroids.clone(), converged.clone(), n_iter.clone()
    sums, counts = sums.double().clone(), counts.clone()
    for b in range(offsets.numel() - 1):
        lo, hi, c0, c1 = int(offsets[b]), int(offsets[b + 1]), int(coff[b]), int(coff[b + 1])
        if c1 == c0 or bool(converged[b]):
            continue
        empty = (counts[c0:c1] == 0).nonzero().flatten().tolist()
        if empty:
            idx = torch.arange(lo, hi, device=x.device)
            key = sorted(range(hi - lo), key=lambda i: (-float(dist[lo + i]), i))
            for r, j in enumerate(empty[: hi - lo]):
                i = int(idx[key[r]])
                old = c0 + int(labels[i])
                sums[old] -= x[i].double()
                counts[old] -= 1
                sums[c0 + j] = x[i].double()
                counts[c0 + j] = 1
        shift = 0.0
        for j in range(c0, c1):
            if counts[j] <= 0:
                continue
            c = sums[j] / counts[j]
            if spherical:
                norm = math.sqrt(sum(v * v for v in c.tolist()))  # in d order, as the kernels
                if norm == 0:
                    continue
                c = c / norm
            new = c.to(x.dtype)
            shift += float(((new.double() - cen[j].double()) ** 2).sum())
            cen[j] = new
        n_iter[b] += 1
        if tol is not None and shift <= float(tol[b]):
            converged[b] = True
    return cen, converged, n_iter


# ---------------------------------------------------------------------------------------------
# Connected components of a radius graph within groups
# ---------------------------------------------------------------------------------------------


def radius_components(coord: torch.Tensor, group: torch.Tensor, radius: float) -> torch.Tensor:
    """Root (smallest index) of each point's component of the graph |p_i - p_j| < radius, same
    group >= 0; -1 where group < 0. Dense O(N^2) label propagation: small inputs only."""
    n = coord.shape[0]
    valid = group >= 0
    if bool((~torch.isfinite(coord[valid])).any()):
        raise ValueError("pointins.connected_components: coord contains NaN or Inf")
    c = coord.double()
    d2 = ((c[:, None, :] - c[None, :, :]) ** 2).sum(-1) if n else torch.zeros(0, 0, dtype=torch.float64)
    adj = (d2 < radius * radius) & (group[:, None] == group[None, :]) & valid[:, None] & valid[None, :]
    label = torch.arange(n, device=coord.device)
    big = torch.full_like(label, n)
    while True:  # each point takes the smallest label among its neighbours until nothing changes
        nxt = torch.minimum(label, torch.where(adj, label[None, :], big[None, :]).amin(1)) if n else label
        if torch.equal(nxt, label):
            break
        label = nxt
    return torch.where(valid, label, -1)
