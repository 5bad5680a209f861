"""Point Transformer V3 encoder (the Sonata / PT-v3m2 encoder, no decoder) on pointins kernels.

Architecture (METHOD.md §2):

- **Embedding**: Linear -> LayerNorm -> GELU; masked points' stem features may be replaced by a
  learnable mask token.
- **5 stages**; stage s > 0 starts with **grid pooling** (stride 2): ``unique(grid // 2)`` per
  cloud, features Linear -> segment max, coordinates segment mean, LayerNorm + GELU, then the
  coarse points are serialized again with freshly shuffled curves.
- **Block**: CPE (submanifold sparse conv 3x3x3 -> Linear -> LayerNorm, residual) -> pre-norm
  serialized patch attention -> pre-norm MLP (4x, GELU); drop path rising linearly to
  ``drop_path`` over all blocks (per point, as Pointcept applies it to its (N, C) features).
  Block i of a stage attends along curve ``i % len(orders)``.
- **Outputs** (:class:`EncoderOutput`): the **up-cast** features at stage-2 resolution (stage 2, 3,
  4 outputs concatenated, 192 + 384 + 512 = 1088 channels in ``base``) for SSL heads, and the
  **full-resolution** features of all stages un-pooled to the input points (1232 channels) for
  probes.

Kernels: voxel hashing (kernel maps, pooling), serialization, patch partition, segment
reductions, sparse convolution and patch attention from :mod:`pointins.ops`. ``ops="reference"``
runs the same weights on plain-PyTorch versions instead (gather-GEMM-scatter convolution, gather
-> SDPA -> scatter attention, ``scatter_reduce`` pooling, the reference serialization and kernel
maps): the oracle for tests and the baseline for ``bench/bench_ptv3.py``.

Parameter names and shapes follow Pointcept's PT-v3m2 (``embedding.stem.linear``,
``enc.enc{s}.down.proj``, ``enc.enc{s}.block{i}.cpe.0`` (spconv layout (C, 3, 3, 3, C)),
``attn.qkv``, ``mlp.0.fc1``, ...); :func:`load_pointcept_state_dict` maps Pointcept/Sonata
checkpoints onto them (see its doc for the key map).
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

import pointins.ops as ops
from pointins._timing import phase
from pointins.models.point import Level, Point
from pointins.ops import reference
from pointins.ops._checks import defer

__all__ = [
    "PRESETS",
    "EncoderOutput",
    "PTv3Config",
    "PointTransformerV3",
    "SubMConv3d",
    "build_backbone",
    "load_pointcept_state_dict",
    "pointcept_backbone_config",
    "pointcept_state_dict",
    "save_pointcept_state_dict",
]

OPS_MODES = ("auto", "reference")


@dataclass
class PTv3Config:
    """Encoder hyper-parameters (defaults: Sonata's ``base``)."""

    in_channels: int = 9
    depths: tuple[int, ...] = (3, 3, 3, 12, 3)
    channels: tuple[int, ...] = (48, 96, 192, 384, 512)
    num_heads: tuple[int, ...] = (3, 6, 12, 24, 32)
    patch_size: int | tuple[int, ...] = 1024
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    qk_scale: float | None = None
    drop_path: float = 0.3
    orders: tuple[str, ...] = ("z", "z-trans", "hilbert", "hilbert-trans")
    shuffle_orders: bool = True  # shuffle the curve list at every serialization (training mode only)
    mask_token: bool = False
    grid_size: float = 0.02  # used only when a batch comes without grid_coord
    upcast_stage: int = 2
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        n = len(self.depths)
        if not (len(self.channels) == len(self.num_heads) == n) or n < 1:
            raise ValueError(
                f"PTv3Config: depths, channels and num_heads need one entry per stage, got {self.depths}, "
                f"{self.channels}, {self.num_heads}."
            )
        for c, h in zip(self.channels, self.num_heads, strict=True):
            if c % h:
                raise ValueError(f"PTv3Config: {c} channels do not split into {h} heads.")
        if isinstance(self.patch_size, int):
            self.patch_size = (self.patch_size,) * n
        if len(self.patch_size) != n:
            raise ValueError(f"PTv3Config: patch_size needs one entry per stage, got {self.patch_size}.")
        if not 0 <= self.upcast_stage < n:
            raise ValueError(f"PTv3Config: upcast_stage must be in [0, {n - 1}], got {self.upcast_stage}.")
        bad = [o for o in self.orders if o not in ops.ORDERS]
        if bad or not self.orders:
            raise ValueError(f"PTv3Config: orders must be a non-empty subset of {ops.ORDERS}, got {self.orders}.")
        self.depths, self.channels, self.num_heads = tuple(self.depths), tuple(self.channels), tuple(self.num_heads)
        self.orders = tuple(self.orders)

    @property
    def upcast_channels(self) -> int:
        return sum(self.channels[self.upcast_stage :])

    @property
    def full_channels(self) -> int:
        return sum(self.channels)


PRESETS: dict[str, dict[str, Any]] = {
    # Sonata's encoder: ~108 M parameters.
    "base": dict(depths=(3, 3, 3, 12, 3), channels=(48, 96, 192, 384, 512), num_heads=(3, 6, 12, 24, 32)),
    "small": dict(depths=(2, 2, 2, 6, 2), channels=(32, 64, 128, 256, 384), num_heads=(2, 4, 8, 16, 24), drop_path=0.2),
    # CPU demos and tests: head dim 16 like the others, smaller patches.
    "tiny": dict(
        depths=(1, 1, 1, 2, 1),
        channels=(16, 32, 64, 128, 192),
        num_heads=(1, 2, 4, 8, 12),
        patch_size=256,
        drop_path=0.1,
    ),
}


def build_backbone(preset: str = "base", in_channels: int = 9, **overrides: Any) -> PointTransformerV3:
    """A PTv3 encoder from a preset (``base``, ``small``, ``tiny``) with optional config overrides."""
    if preset not in PRESETS:
        raise ValueError(f"pointins.models.build_backbone: unknown preset {preset!r}; choose from {list(PRESETS)}.")
    return PointTransformerV3(PTv3Config(in_channels=in_channels, **{**PRESETS[preset], **overrides}))


@dataclass
class EncoderOutput:
    """What the encoder returns.

    ``feat`` (up-cast) lives on level ``upcast_stage`` (``coord``/``offsets`` are that level's);
    ``point_to_upcast[i]`` is the up-cast point of input point i. ``full`` is at the input points.
    """

    feat: torch.Tensor | None  # (N_u, sum(channels[u:])) up-cast features
    coord: torch.Tensor  # (N_u, 3) level-u coordinates (segment means of the input points)
    offsets: torch.Tensor  # (B+1,) CSR offsets of level u
    grid_coord: torch.Tensor  # (N_u, 3) level-u grid coordinates
    point_to_upcast: torch.Tensor  # (N,) int64
    full: torch.Tensor | None  # (N, sum(channels)) features of every stage at the input points
    stage_feats: list[torch.Tensor] = field(default_factory=list)  # output of each stage on its level
    levels: list[Level] = field(default_factory=list)
    origin: torch.Tensor | None = None  # (N_u, 3) level-u common-frame positions (when the batch has ``origin``)


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


class SubMConv3d(nn.Module):
    """Submanifold sparse convolution on a kernel map, with spconv's weight layout
    ``(C_out, k, k, k, C_in)`` over (x, y, z) so Pointcept/spconv weights load unchanged."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        k = kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, k, k, k, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        bound = 1.0 / math.sqrt(in_channels * k**3)  # torch's Conv3d default
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, bias={self.bias is not None}"

    def kernel_weight(self) -> torch.Tensor:
        """The weight as ``(K, C_in, C_out)`` for :func:`pointins.ops.sparse_conv`."""
        return self.weight.reshape(self.out_channels, -1, self.in_channels).permute(1, 2, 0)

    def forward(
        self, feat: torch.Tensor, kernel_map: torch.Tensor, kernel_map_t: torch.Tensor | None = None, ops_mode="auto"
    ) -> torch.Tensor:
        w = self.kernel_weight()
        if ops_mode == "reference":
            out = reference.sparse_conv(feat, kernel_map, w.to(feat.dtype))
            return out if self.bias is None else out + self.bias.to(out.dtype)
        return ops.sparse_conv(feat, kernel_map, w, self.bias, kernel_map_t=kernel_map_t, validate=False)


class DropPath(nn.Module):
    """Stochastic depth per row (per point, as Pointcept applies timm's DropPath to (N, C))."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        return x * x.new_empty((x.shape[0], 1)).bernoulli_(keep).div_(keep)


class MLP(nn.Module):
    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SerializedAttention(nn.Module):
    """qkv Linear -> attention inside serialized patches -> output projection."""

    def __init__(self, channels: int, num_heads: int, qkv_bias: bool = True, qk_scale: float | None = None):
        super().__init__()
        self.channels, self.num_heads = channels, num_heads
        self.scale = qk_scale if qk_scale is not None else (channels // num_heads) ** -0.5
        self.qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, level: Level, curve: int, ops_mode: str = "auto") -> torch.Tensor:
        qkv = self.qkv(x)
        order = level.serialization.order[curve]
        if ops_mode == "reference":
            out = reference.patch_attention_sdpa(
                qkv, order, level.pad, level.unpad, level.cu_seqlens, self.num_heads, self.scale
            )
        else:
            out = ops.patch_attention(
                qkv, order, level.pad, level.unpad, level.cu_seqlens, self.num_heads, self.scale,
                max_seqlen=level.patch_size, index=level.patch_index(curve), validate=False,
            )  # fmt: skip
        return self.proj(out)


class Block(nn.Module):
    def __init__(self, cfg: PTv3Config, stage: int, index: int, drop_path: float):
        super().__init__()
        c = cfg.channels[stage]
        eps = cfg.layer_norm_eps
        self.curve = index % len(cfg.orders)
        self.cpe = nn.ModuleList([SubMConv3d(c, c, 3), nn.Linear(c, c), nn.LayerNorm(c, eps=eps)])
        self.norm1 = nn.ModuleList([nn.LayerNorm(c, eps=eps)])
        self.attn = SerializedAttention(c, cfg.num_heads[stage], cfg.qkv_bias, cfg.qk_scale)
        self.norm2 = nn.ModuleList([nn.LayerNorm(c, eps=eps)])
        self.mlp = nn.ModuleList([MLP(c, int(c * cfg.mlp_ratio))])
        self.drop_path = DropPath(drop_path)

    def forward(self, feat: torch.Tensor, level: Level, ops_mode: str = "auto") -> torch.Tensor:
        with phase("conv"):
            need_t = torch.is_grad_enabled() and feat.requires_grad  # the transposed map serves the input gradient
            conv = self.cpe[0](feat, level.kernel_map, level.transposed_map() if need_t else None, ops_mode)
        with phase("cpe linear+norm"):
            feat = feat + self.cpe[2](self.cpe[1](conv))
        with phase("attention"):
            feat = feat + self.drop_path(self.attn(self.norm1[0](feat), level, self.curve, ops_mode))
        with phase("mlp"):
            return feat + self.drop_path(self.mlp[0](self.norm2[0](feat)))


class GridPooling(nn.Module):
    """Stride-2 pooling: Linear, segment max over each coarse voxel's children, LayerNorm, GELU."""

    def __init__(self, in_channels: int, out_channels: int, eps: float = 1e-5):
        super().__init__()
        self.proj = nn.Linear(in_channels, out_channels)
        self.norm = nn.ModuleList([nn.LayerNorm(out_channels, eps=eps)])
        self.act = nn.GELU()

    def forward(self, feat: torch.Tensor, coarse: Level, ops_mode: str = "auto") -> torch.Tensor:
        x = self.proj(feat)
        m = len(coarse)
        if ops_mode == "reference":
            idx = coarse.parent[:, None].expand_as(x)
            pooled = x.new_zeros((m, x.shape[1])).scatter_reduce(0, idx, x, reduce="amax", include_self=False)
        else:
            pooled = ops.segment_reduce(x, index=coarse.parent, num_segments=m, reduce="max")
        return self.act(self.norm[0](pooled))


class Embedding(nn.Module):
    def __init__(self, in_channels: int, channels: int, mask_token: bool = False, eps: float = 1e-5):
        super().__init__()
        self.stem = nn.Sequential(
            OrderedDict(linear=nn.Linear(in_channels, channels), norm=nn.LayerNorm(channels, eps=eps), act=nn.GELU())
        )
        self.mask_token = nn.Parameter(torch.zeros(1, channels)) if mask_token else None

    def forward(self, feat: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.stem(feat)
        if mask is not None and self.mask_token is not None:
            x = torch.where(mask[:, None], self.mask_token.to(x.dtype), x)
        return x


class Stage(nn.Module):
    def __init__(self, cfg: PTv3Config, s: int, drop_paths: Sequence[float]):
        super().__init__()
        if s > 0:
            self.down = GridPooling(cfg.channels[s - 1], cfg.channels[s], cfg.layer_norm_eps)
        for i in range(cfg.depths[s]):
            self.add_module(f"block{i}", Block(cfg, s, i, drop_paths[i]))
        self.depth = cfg.depths[s]

    def blocks(self) -> list[Block]:
        return [getattr(self, f"block{i}") for i in range(self.depth)]


# ---------------------------------------------------------------------------------------------
# The encoder
# ---------------------------------------------------------------------------------------------


def _origin(p: Point) -> torch.Tensor | None:
    """The batch's common-frame positions as float (N, 3), checked; None when it has none."""
    if p.origin is None:
        return None
    o = p.origin
    if o.shape != (len(p), 3) or not o.is_floating_point():
        raise ValueError(f"PointTransformerV3: origin must be float (N, 3) like coord, got {o.dtype} {tuple(o.shape)}.")
    return o.to(p.coord.dtype)


def _init_weights(m: nn.Module) -> None:
    """Pointcept's PT-v3m2 initialisation (``point_transformer_v3m2_sonata.py``, ``_init_weights``): Linear and
    submanifold-conv weights truncated normal (std 0.02), biases zero; norms keep ones / zeros."""
    if isinstance(m, nn.Linear | SubMConv3d):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class PointTransformerV3(nn.Module):
    """PTv3 encoder. ``forward(batch)`` takes a :class:`Point` (or a collated dict) and returns an
    :class:`EncoderOutput`.

    ``ops``: ``"auto"`` runs pointins kernels (CPU: compiled C++ + PyTorch fused attention; CUDA:
    CUDA + Triton), ``"reference"`` the plain-PyTorch versions (same weights, same results within
    float tolerance). Switch at any time with ``model.ops = "reference"``.
    """

    def __init__(self, config: PTv3Config | None = None, *, ops: str = "auto", **kwargs: Any):
        super().__init__()
        cfg = config if config is not None else PTv3Config(**kwargs)
        if config is not None and kwargs:
            cfg = replace(cfg, **kwargs)
        self.config = cfg
        self.ops = ops
        self.embedding = Embedding(cfg.in_channels, cfg.channels[0], cfg.mask_token, cfg.layer_norm_eps)
        rates = torch.linspace(0, cfg.drop_path, sum(cfg.depths), device="cpu").tolist()
        self.enc = nn.ModuleDict()
        start = 0
        for s, d in enumerate(cfg.depths):
            self.enc[f"enc{s}"] = Stage(cfg, s, rates[start : start + d])
            start += d
        self.apply(_init_weights)

    @property
    def ops(self) -> str:
        return self._ops

    @ops.setter
    def ops(self, mode: str) -> None:
        if mode not in OPS_MODES:
            raise ValueError(f"PointTransformerV3: ops must be one of {OPS_MODES}, got {mode!r}.")
        self._ops = mode

    def extra_repr(self) -> str:
        c = self.config
        return f"depths={c.depths}, channels={c.channels}, heads={c.num_heads}, ops={self.ops!r}"

    # --- structure -----------------------------------------------------------------------------

    def _backend(self) -> str | None:
        return "reference" if self.ops == "reference" else None

    def _structure(self, grid, offsets, batch, max_coord, stage):
        """Serialization, patch padding and kernel map of one level on trusted inputs (grid coordinates checked by
        the input level, offsets checked once): the compiled kernels called directly, without the per-call
        argument checks of the public :mod:`pointins.ops` wrappers (some 150 small ops and several host reads per
        level; the results are identical)."""
        cfg = self.config
        depth = max(1, max_coord + 1).bit_length()
        names = list(cfg.orders)
        if cfg.shuffle_orders and self.training:  # the same draw as ops.serialize(shuffle_orders=True)
            perm = torch.randperm(len(names)).tolist()
            names = [names[i] for i in perm]
        with phase("serialize"):
            code = torch.ops.pointins.serialize_encode(grid, batch, depth, [ops.ORDERS.index(o) for o in names])
            if code.device.type == "cpu":
                order = torch.ops.pointins.sort_keys(code)[1]
            else:
                order = torch.sort(code, dim=1, stable=True).indices
            arange = torch.arange(code.shape[1], device=code.device).expand_as(order)
            ser = ops.Serialization(code, order, torch.empty_like(order).scatter_(1, order, arange), depth,
                                    tuple(names))  # fmt: skip
        with phase("patch partition"):
            pad, unpad, cu = torch.ops.pointins.patch_partition(offsets, cfg.patch_size[stage])
        with phase("kernel map"):
            kmap = torch.ops.pointins.kernel_map(grid, batch, 3, 1, ops.DEFAULT_BITS)
        return depth, ser, pad, unpad, cu, kmap

    def _lean_levels(self, p: Point) -> list[Level]:
        """:meth:`build_levels` for the compiled backends (see :meth:`_structure`)."""
        grid, top = self._input_grid(p)
        offsets = p.offsets.long().contiguous()
        reference.check_offsets(offsets, len(p), "PointTransformerV3")
        batch = reference.offsets_to_batch(offsets)
        with phase("L0"):
            depth, ser, pad, unpad, cu, kmap = self._structure(grid, offsets, batch, top, 0)
            levels = [Level(p.coord, grid, offsets, depth, ser, pad, unpad, cu, self.config.patch_size[0], kmap,
                            None, None, top, _origin(p))]  # fmt: skip
            with phase("input checks"):
                self._check_input(p, levels[0])
        for s in range(1, len(self.config.depths)):
            with phase(f"L{s}"):
                fine = levels[-1]
                with phase("downsample"):  # ops.downsample's voxels (numbered by first fine voxel), no stride map
                    coarse = torch.div(fine.grid_coord.long(), 2, rounding_mode="floor")
                    keys = torch.ops.pointins.pack_keys(coarse, batch, ops.DEFAULT_BITS)
                    parent, first, _, _ = torch.ops.pointins.voxel_group(keys)
                    m = first.shape[0]
                    grid_c = coarse[first].to(torch.int32)
                    batch = batch[first]
                    counts = torch.bincount(batch, minlength=fine.offsets.numel() - 1)
                    offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
                with phase("pooled coords"):  # children's means (of coord and origin together, one reduction)
                    both = fine.coord if fine.origin is None else torch.cat([fine.coord, fine.origin], 1)
                    pooled = ops.segment_reduce(both, index=parent, num_segments=m, reduce="mean")
                    coord, origin = (pooled, None) if fine.origin is None else (pooled[:, :3], pooled[:, 3:])
                top = fine.max_coord // 2  # the pooled grid is grid // 2: no device sync needed
                depth, ser, pad, unpad, cu, kmap = self._structure(grid_c, offsets, batch, top, s)
                levels.append(Level(coord, grid_c, offsets, depth, ser, pad, unpad, cu, self.config.patch_size[s],
                                    kmap, None, parent, top, origin))  # fmt: skip
        return levels

    def _level(self, coord, grid, offsets, max_coord, stage, parent=None) -> Level:
        cfg, be = self.config, self._backend()
        # Pointcept's rule at every level: Point.serialization in pointcept/models/utils/structure.py computes
        # depth = int(grid_coord.max() + 1).bit_length() whenever it is called without a depth (after each pooling)
        depth = max(1, max_coord + 1).bit_length()
        with phase("serialize"):
            ser = ops.serialize(
                grid, offsets, orders=cfg.orders, depth=max(depth, 1),
                shuffle_orders=cfg.shuffle_orders and self.training, backend=be,
            )  # fmt: skip
        with phase("patch partition"):
            pad, unpad, cu = ops.patch_partition(offsets, cfg.patch_size[stage], backend=be)
        with phase("kernel map"):
            kmap = ops.kernel_map(grid, offsets, kernel_size=3, backend=be)
        return Level(
            coord,
            grid,
            offsets,
            depth,
            ser,
            pad,
            unpad,
            cu,
            cfg.patch_size[stage],
            kmap,
            None,  # the transposed map: made on first use (training), kmap.flip(1) for unique voxels
            parent,
            max_coord,
        )

    def _input_level(self, p: Point) -> Level:
        grid, top = self._input_grid(p)
        level = self._level(p.coord, grid, p.offsets, top, 0)
        level.origin = _origin(p)
        with phase("input checks"):
            self._check_input(p, level)
        return level

    def _input_grid(self, p: Point) -> tuple[torch.Tensor, int]:
        """The checked int32 grid coordinates of the input points and their largest value."""
        cfg, be = self.config, self._backend()
        if p.feat.dim() != 2 or p.feat.shape[1] != cfg.in_channels:
            raise ValueError(
                f"PointTransformerV3: feat must be (N, {cfg.in_channels}) (in_channels), got {tuple(p.feat.shape)}."
            )
        if not p.feat.is_floating_point() or not p.coord.is_floating_point():
            raise TypeError(
                f"PointTransformerV3: coord and feat must be floating point, got {p.coord.dtype}/{p.feat.dtype}."
            )
        if p.coord.shape != (len(p), 3):
            raise ValueError(f"PointTransformerV3: coord must be (N, 3), got {tuple(p.coord.shape)}.")
        if len(p) == 0:
            raise ValueError("PointTransformerV3: the batch has no points.")
        grid = p.grid_coord
        if grid is None:
            grid = ops.grid_coord(p.coord, p.offsets, cfg.grid_size, backend=be)
        elif grid.shape != (len(p), 3) or grid.is_floating_point():
            raise ValueError(
                f"PointTransformerV3: grid_coord must be integer (N, 3), got {grid.dtype} {tuple(grid.shape)}."
            )
        grid = grid.to(torch.int32)
        neg = (grid < 0).any()
        msg = "PointTransformerV3: grid_coord has negative entries; use per-cloud grid coordinates >= 0."
        if not defer(neg, msg) and bool(neg):
            raise ValueError(msg)
        top = int(grid.max()) if grid.numel() else 0  # the serialization depth: a computation, one sync per forward
        depth = max(1, top + 1).bit_length()
        if depth > 16:
            raise ValueError(
                f"PointTransformerV3: grid coordinates up to {top} need {depth} bits per axis (> 16, "
                "PTv3's limit); use a larger grid size or crop the scene."
            )
        return grid, top

    @staticmethod
    def _check_input(p: Point, level: Level) -> None:
        centre = level.kernel_map[:, level.kernel_map.shape[1] // 2]
        dup = centre != torch.arange(len(p), device=centre.device)
        flags = torch.stack([dup.any(), ~torch.isfinite(p.feat).all(), ~torch.isfinite(p.coord).all()])
        if defer(flags[0], "PointTransformerV3: points share a voxel; grid-sample the clouds first") and defer(
            flags[1:].any(), "PointTransformerV3: the batch has NaN/Inf in feat or coord"
        ):
            return
        flags = flags.tolist()
        if flags[0]:
            raise ValueError(
                f"PointTransformerV3: {int(dup.sum())} points share a voxel with an earlier point; the encoder needs "
                "one point per voxel. Grid-sample the clouds first (pointins.ops.voxelize(..., mode='train'))."
            )
        if flags[1] or flags[2]:
            raise ValueError("PointTransformerV3: the batch has NaN/Inf in feat or coord; clean the input first.")

    def _pool_level(self, fine: Level, stage: int) -> Level:
        be = self._backend()
        with phase("downsample"):
            down = ops.downsample(fine.grid_coord, fine.offsets, stride=2, backend=be)
        m = down.grid_coord.shape[0]
        with phase("pooled coords"):
            c = fine.coord if fine.origin is None else torch.cat([fine.coord, fine.origin], 1)
            if be == "reference":
                cnt = c.new_zeros(m).index_add_(0, down.parent, torch.ones_like(c[:, 0]))
                pooled = c.new_zeros((m, c.shape[1])).index_add_(0, down.parent, c) / cnt[:, None]
            else:
                pooled = ops.segment_reduce(c, index=down.parent, num_segments=m, reduce="mean")
        # the pooled grid is grid // 2, so its maximum is the finer maximum // 2: no device sync needed
        level = self._level(pooled[:, :3], down.grid_coord, down.offsets, fine.max_coord // 2, stage, down.parent)
        level.origin = None if fine.origin is None else pooled[:, 3:]
        return level

    def build_levels(self, batch: Point | dict[str, Any]) -> list[Level]:
        """The per-resolution structure of a batch (what :meth:`forward` computes first); pass it
        back as ``levels=`` to reuse it (e.g. teacher and student on the same view)."""
        p = batch if isinstance(batch, Point) else Point.from_dict(batch)
        if self._backend() is None:
            with torch.no_grad(), phase("levels"):
                return self._lean_levels(p)
        with torch.no_grad(), phase("levels"):
            with phase("L0"):
                levels = [self._input_level(p)]
            for s in range(1, len(self.config.depths)):
                with phase(f"L{s}"):
                    levels.append(self._pool_level(levels[-1], s))
        return levels

    # --- forward -------------------------------------------------------------------------------

    def forward(
        self,
        batch: Point | dict[str, Any],
        *,
        levels: list[Level] | None = None,
        return_upcast: bool = True,
        return_full: bool = True,
    ) -> EncoderOutput:
        p = batch if isinstance(batch, Point) else Point.from_dict(batch)
        if levels is None:
            levels = self.build_levels(p)
        cfg = self.config
        mode = self.ops
        with phase("embedding"):
            feat = self.embedding(p.feat, p.mask)
        stage_feats = []
        for s in range(len(cfg.depths)):
            stage = self.enc[f"enc{s}"]
            if s > 0:
                with phase("pooling"):
                    feat = stage.down(feat, levels[s], mode)
            for block in stage.blocks():
                feat = block(feat, levels[s], mode)
            stage_feats.append(feat)
        u, n = cfg.upcast_stage, len(cfg.depths)
        f = stage_feats[-1]
        up = f if u == n - 1 else None
        for s in range(n - 2, -1, -1):  # un-pool: each level's features, then its children's
            if s < u and not return_full:
                break
            f = torch.cat([stage_feats[s], torch.index_select(f, 0, levels[s + 1].parent)], dim=1)
            if s == u:
                up = f
        full = f if return_full else None
        to_u = torch.arange(len(p), device=p.coord.device)
        for s in range(1, u + 1):
            to_u = levels[s].parent[to_u]
        lu = levels[u]
        return EncoderOutput(
            up if return_upcast else None,
            lu.coord,
            lu.offsets,
            lu.grid_coord,
            to_u,
            full,
            stage_feats,
            levels,
            lu.origin,
        )


# ---------------------------------------------------------------------------------------------
# Pointcept / Sonata checkpoints
# ---------------------------------------------------------------------------------------------

_PREFIXES = ("module.", "student.backbone.", "teacher.backbone.", "backbone.", "model.", "encoder.")


def load_pointcept_state_dict(
    model: PointTransformerV3, state_dict: dict[str, torch.Tensor] | str | Path, strict: bool = False
) -> tuple[list[str], list[str]]:
    """Load a Pointcept PT-v3m2 / Sonata encoder state dict (or a checkpoint path) into ``model``.

    Key map (Pointcept -> ours): identical names after stripping wrapper prefixes (``module.``,
    ``student.backbone.``, ``teacher.backbone.``, ``backbone.``, ``model.``), i.e.

    ====================================  ==========================================================
    ``embedding.stem.linear.*``           stem Linear; ``embedding.stem.norm.*`` its LayerNorm
    ``embedding.mask_token``              (1, C0) mask token (only with ``mask_token=True``)
    ``enc.enc{s}.down.proj.*``            grid pooling Linear; ``enc.enc{s}.down.norm.0.*`` LayerNorm
    ``enc.enc{s}.block{i}.cpe.0.weight``  SubMConv3d, spconv 2.x layout (C, 3, 3, 3, C); spconv 1.x
                                          (3, 3, 3, C_in, C_out) is permuted on load
    ``enc.enc{s}.block{i}.cpe.1/2.*``     CPE Linear / LayerNorm
    ``...norm1.0.* / norm2.0.*``          pre-norms
    ``...attn.qkv.* / attn.proj.*``       attention projections ([q | k | v], heads contiguous)
    ``...mlp.0.fc1.* / mlp.0.fc2.*``      MLP
    ====================================  ==========================================================

    Decoder (``dec.*``), heads and BatchNorm statistics of other PTv3 variants are reported as
    unexpected and skipped. Checkpoints are read with ``torch.load(weights_only=True)``.
    Returns ``(missing, unexpected)`` key lists (``strict=True`` raises on either).
    """
    if isinstance(state_dict, (str, Path)):
        from pointins._torchio import torch_load

        obj = torch_load(state_dict)
        for key in ("state_dict", "model", "student", "backbone"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
        state_dict = obj
    if not isinstance(state_dict, dict):
        raise ValueError(f"load_pointcept_state_dict: expected a state dict (name -> tensor), got "
                         f"{type(state_dict).__name__}.")  # fmt: skip
    bad = [k for k, v in state_dict.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"load_pointcept_state_dict: entry {bad[0]!r} is not a named tensor; not a model state dict.")
    own = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    unexpected = []
    # a Sonata checkpoint holds student.backbone.* and teacher.backbone.*: the student's weights win (as
    # Pointcept's fine-tuning hook takes them); teacher copies of names already filled are reported unexpected
    items = sorted(state_dict.items(), key=lambda kv: "teacher." in kv[0])
    for key, value in items:
        name = key
        changed = True
        while changed:
            changed = False
            for pre in _PREFIXES:
                if name not in own and name.startswith(pre):
                    name, changed = name[len(pre) :], True
        if name not in own or name in out:
            unexpected.append(key)
            continue
        target = own[name].shape
        if value.shape != target and name.endswith("cpe.0.weight") and value.dim() == 5:
            value = value.permute(4, 0, 1, 2, 3)  # spconv 1.x (k, k, k, C_in, C_out) -> (C_out, k, k, k, C_in)
        if value.shape != target:
            raise ValueError(
                f"load_pointcept_state_dict: {key} has shape {tuple(value.shape)} but the model's {name} is "
                f"{tuple(target)}; the checkpoint is for a different preset (check channels/depths)."
            )
        out[name] = value
    missing = [k for k in own if k not in out]
    if strict and (missing or unexpected):
        raise KeyError(f"load_pointcept_state_dict: missing {missing[:10]}..., unexpected {unexpected[:10]}...")
    model.load_state_dict(out, strict=False)
    return missing, unexpected


def config_dict(model: PointTransformerV3) -> dict[str, Any]:
    """The model's config as plain data (saved beside checkpoints)."""
    return asdict(model.config)


def pointcept_backbone_config(model: PointTransformerV3) -> dict[str, Any]:
    """The ``backbone=dict(type="PT-v3m2", ...)`` entry of a Pointcept config that builds this encoder
    (``enc_mode=True``: encoder only, as Sonata's linear-probe configs; a config with a decoder builds the same
    encoder keys plus ``dec.*``)."""
    c = model.config
    n = len(c.depths)
    return {
        "type": "PT-v3m2", "in_channels": c.in_channels, "order": tuple(c.orders), "stride": (2,) * (n - 1),
        "enc_depths": tuple(c.depths), "enc_channels": tuple(c.channels), "enc_num_head": tuple(c.num_heads),
        "enc_patch_size": tuple(c.patch_size), "mlp_ratio": c.mlp_ratio, "qkv_bias": c.qkv_bias,
        "qk_scale": c.qk_scale, "attn_drop": 0.0, "proj_drop": 0.0, "drop_path": c.drop_path, "layer_scale": None,
        "pre_norm": True, "shuffle_orders": True, "enable_rpe": False, "enable_flash": True,
        "upcast_attention": False, "upcast_softmax": False, "traceable": True, "mask_token": c.mask_token,
        "enc_mode": True,
    }  # fmt: skip


def pointcept_state_dict(model: PointTransformerV3, prefix: str = "module.backbone.") -> dict[str, torch.Tensor]:
    """The encoder's weights under Pointcept PT-v3m2's names and layouts (``prefix`` + name; the CPE conv in
    spconv 2.x's (C_out, 3, 3, 3, C_in) layout), detached, contiguous, on the CPU. Our parameter names are
    Pointcept's (see :func:`load_pointcept_state_dict`), so this is the identity map plus the wrapper prefix."""
    return {prefix + k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_pointcept_state_dict(
    model: PointTransformerV3, path: str | Path, *, prefix: str = "module.backbone.", meta: dict | None = None
) -> Path:
    """Write a checkpoint Pointcept loads: ``{"state_dict": {prefix + name: tensor}, "epoch": 0, ...}``
    (read in Pointcept: ``CheckpointLoader`` in pointcept/engines/hooks/misc.py takes ``checkpoint["state_dict"]``;
    the names are PT-v3m2's, pointcept/models/point_transformer_v3/point_transformer_v3m2_sonata.py).

    The default prefix ``module.backbone.`` is what Pointcept's ``CheckpointLoader`` hook hands to a segmentor
    (``DefaultSegmentorV2.backbone``): with Sonata's fine-tuning configs (``keywords="module.student.backbone"``)
    and with the plain hook alike. ``prefix="module.student.backbone."`` writes Sonata's own pretraining layout.
    The file is written atomically (temp file + rename) and holds only tensors and plain data (loads with
    ``weights_only=True``). ``meta`` is stored under ``"pointins"`` (ignored by Pointcept)."""
    path = Path(path)
    obj = {"state_dict": pointcept_state_dict(model, prefix), "epoch": 0,
           "pointins": {"backbone": pointcept_backbone_config(model), **(meta or {})}}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
