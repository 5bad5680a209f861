"""spconv 2.x's convolution layers on :func:`pointins.ops.sparse_conv`.

Same constructor arguments, the same ``weight`` parameter layout ``(out_channels, *kernel_size, in_channels)`` (an
spconv 2.x ``state_dict`` loads unchanged; spconv 1.x's ``(*kernel_size, in_channels, out_channels)`` is converted
on load, as spconv does) and the same geometry (:mod:`pointins.compat.spconv._maps`). Unlike spconv's CPU build,
they run backward on the CPU. ``algo``, ``fp32_accum``, ``large_kernel_fast_algo``, ``record_voxel_count`` and
``act_*`` are accepted and ignored (PointINS accumulates in float32 always); ``groups`` must be 1 (as spconv).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

import pointins.ops as ops
from pointins.compat.spconv import _maps
from pointins.compat.spconv.core import IndiceData, SparseConvTensor
from pointins.compat.spconv.modules import SparseModule

__all__ = [
    "SparseConv1d", "SparseConv2d", "SparseConv3d", "SparseConv4d", "SparseConvolution", "SparseInverseConv1d",
    "SparseInverseConv2d", "SparseInverseConv3d", "SparseInverseConv4d", "SubMConv1d", "SubMConv2d", "SubMConv3d",
    "SubMConv4d",
]  # fmt: skip


def _expand(ndim: int, val: Any, name: str) -> list[int]:
    if isinstance(val, int):
        return [val] * ndim
    v = [int(x) for x in val]
    if len(v) != ndim:
        raise ValueError(f"pointins.compat.spconv: {name} must be an int or {ndim} ints, got {val!r}.")
    return v


def _check_indices(x: SparseConvTensor, who: str) -> None:
    """Once per voxel set: the checks spconv leaves to undefined behaviour (one sync)."""
    idx = x.indices
    n = idx.shape[0]
    if x.features.shape[0] != n:
        raise ValueError(f"{who}: features have {x.features.shape[0]} rows but indices {n}; one row per voxel.")
    if idx.device != x.features.device:
        raise ValueError(f"{who}: indices are on {idx.device} but features on {x.features.device}; move one.")
    if n:
        lo = idx.amin(0).tolist()
        hi = idx.amax(0).tolist()
        if lo[0] < 0 or hi[0] >= x.batch_size:
            raise ValueError(f"{who}: batch ids (indices[:, 0]) span [{lo[0]}, {hi[0]}] but batch_size is "
                             f"{x.batch_size}.")  # fmt: skip
        for d, s in enumerate(x.spatial_shape):
            if lo[d + 1] < 0 or hi[d + 1] >= s:
                raise ValueError(
                    f"{who}: coordinates along axis {d} (indices[:, {d + 1}]) span [{lo[d + 1]}, {hi[d + 1]}] "
                    f"outside spatial_shape[{d}] = {s}; shift them to >= 0 and size spatial_shape past the maximum."
                )
        if math.prod(x.spatial_shape) * x.batch_size < 2**62:
            keys = _maps.linear_keys(idx[:, 1:], idx[:, 0], x.spatial_shape)
            first = ops.HashTable(keys).query(keys)  # each key's first row: a duplicate points elsewhere
            if not bool((first == torch.arange(n, device=keys.device)).all()):
                raise ValueError(
                    f"{who}: indices hold the same voxel more than once; merge duplicates first (e.g. "
                    "pointins.ops.voxelize, or torch.unique(indices, dim=0, return_inverse=True) and a mean)."
                )
    x._checked = True


class SparseConvolution(SparseModule):
    """The common layer: ``subm`` (output voxels = input voxels), strided conv, or ``inverse`` (the transpose of
    the strided conv registered under the same ``indice_key``)."""

    def __init__(self, ndim: int, in_channels: int, out_channels: int, kernel_size: Any = 3, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True, subm: bool = False,
                 output_padding: Any = 0, transposed: bool = False, inverse: bool = False,
                 indice_key: str | None = None, algo: Any = None, fp32_accum: bool | None = None,
                 record_voxel_count: bool = False, act_type: Any = None, act_alpha: float = 0,
                 act_beta: float = 0, large_kernel_fast_algo: bool = False,
                 name: str | None = None) -> None:  # fmt: skip
        super().__init__(name=name)
        who = f"pointins.compat.spconv.{type(self).__name__}"
        if groups != 1:
            raise ValueError(f"{who}: groups must be 1 (spconv 2.x supports no grouped sparse conv either).")
        if transposed:
            raise NotImplementedError(
                f"{who}: transposed (SparseConvTranspose) layers are not provided; SparseInverseConv with the "
                "strided layer's indice_key is (the usual U-Net decoder)."
            )
        self.ndim = ndim
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _expand(ndim, kernel_size, "kernel_size")
        self.stride = _expand(ndim, stride, "stride")
        self.padding = _expand(ndim, padding, "padding")
        self.dilation = _expand(ndim, dilation, "dilation")
        self.output_padding = _expand(ndim, output_padding, "output_padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.dilation) < 1 or min(self.padding) < 0:
            raise ValueError(
                f"{who}: kernel_size, stride and dilation must be >= 1 and padding >= 0; got {self.kernel_size}, "
                f"{self.stride}, {self.dilation}, {self.padding}."
            )
        self.groups = groups
        self.subm = subm
        self.transposed = transposed
        self.inverse = inverse
        self.indice_key = indice_key
        self.algo = algo
        self.fp32_accum = fp32_accum
        self.record_voxel_count = record_voxel_count
        self.act_type, self.act_alpha, self.act_beta = act_type, act_alpha, act_beta
        self.conv1x1 = math.prod(self.kernel_size) == 1 and (subm or math.prod(self.stride) == 1)
        self.weight = nn.Parameter(torch.empty(self.out_channels, *self.kernel_size, self.in_channels))
        self.bias = nn.Parameter(torch.empty(self.out_channels)) if bias else None
        self.reset_parameters()
        self._register_load_state_dict_pre_hook(self._spconv1_layout)

    def reset_parameters(self) -> None:
        """Kaiming-uniform with fan_in = in_channels x kernel volume (what nn.Conv3d does), bias likewise."""
        fan_in = self.in_channels * math.prod(self.kernel_size)
        bound = 1 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)) gives gain sqrt(1/3) * sqrt(3 / fan_in)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def _spconv1_layout(self, state_dict, prefix, *args) -> None:
        key = prefix + "weight"
        w = state_dict.get(key)
        old = (*self.kernel_size, self.in_channels, self.out_channels)
        if isinstance(w, torch.Tensor) and tuple(w.shape) == old and tuple(w.shape) != tuple(self.weight.shape):
            if self.conv1x1:  # read as (in, out) memory either way (see _kernel): keep the memory, change the shape
                state_dict[key] = w.contiguous().reshape(self.weight.shape)
            else:
                state_dict[key] = w.permute(self.ndim + 1, *range(self.ndim), self.ndim).contiguous()

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
             f", padding={self.padding}, dilation={self.dilation}")  # fmt: skip
        if self.bias is None:
            s += ", bias=False"
        if self.indice_key is not None:
            s += f", indice_key={self.indice_key!r}"
        return s

    def _kernel(self) -> torch.Tensor:
        """The weight as (K, C_in, C_out) for pointins.ops.sparse_conv (a view: gradients reach ``weight``).

        A 1x1 conv (kernel volume 1; submanifold, or stride 1) reads its ``(out, 1, 1, 1, in)`` parameter's memory
        as an ``(in, out)`` matrix, because spconv 2.x does (``SparseConvolution._conv_forward`` in
        ``spconv/pytorch/conv.py``: ``torch.mm(features, weight.view(in_channels, out_channels))`` while
        ``FILTER_HWIO`` is False, its default): an spconv-trained 1x1 weight means exactly that."""
        if self.conv1x1:
            return self.weight.reshape(self.in_channels, self.out_channels).unsqueeze(0)
        return self.weight.reshape(self.out_channels, -1, self.in_channels).permute(1, 2, 0)

    def _who(self) -> str:
        return f"pointins.compat.spconv.{type(self).__name__}"

    def _record(self, x: SparseConvTensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, list[int]]:
        """``(map, transposed map or None, output indices, output spatial shape)``."""
        who, key = self._who(), self.indice_key
        data = x.find_indice_pair(key)
        if self.inverse:
            if data is None:
                raise ValueError(f"{who}: no kernel map under indice_key={key!r}; an inverse conv needs the "
                                 "strided conv (SparseConv) that made this tensor to carry the same "
                                 "indice_key.")  # fmt: skip
            if data.is_subm:
                raise ValueError(f"{who}: indice_key={key!r} names a submanifold map; inverse conv can only undo "
                                 "a strided conv or pooling.")  # fmt: skip
            if data.ksize != self.kernel_size:
                raise ValueError(f"{who}: kernel_size {self.kernel_size} differs from the paired conv's {data.ksize} "
                                 f"(indice_key={key!r}).")  # fmt: skip
            if data.kernel_map.shape[0] != x.features.shape[0]:
                raise ValueError(f"{who}: {x.features.shape[0]} voxels in, but the conv under indice_key={key!r} "
                                 f"made {data.kernel_map.shape[0]}.")  # fmt: skip
            return data.transposed_map(), data.kernel_map, data.indices, data.spatial_shape
        if not x._checked:
            _check_indices(x, who)
        if self.subm:
            if data is not None:
                if not data.is_subm:
                    raise ValueError(f"{who}: indice_key={key!r} holds a strided conv's map; submanifold layers can "
                                     "only share keys with submanifold layers.")  # fmt: skip
                for what, mine, theirs in (("kernel size", self.kernel_size, data.ksize),
                                           ("dilation", self.dilation, data.dilation),
                                           ("spatial shape", x.spatial_shape, data.spatial_shape),
                                           ("number of voxels", x.indices.shape[0],
                                            data.indices.shape[0])):  # fmt: skip
                    if mine != theirs:
                        raise ValueError(f"{who}: layers sharing indice_key={key!r} must have the same {what}: "
                                         f"this one {mine}, the cached map {theirs}.")  # fmt: skip
            else:
                kmap = _maps.subm_map(x.indices, x.spatial_shape, x.batch_size, self.kernel_size, self.dilation)
                data = IndiceData(x.indices, x.indices, kmap, True, x.spatial_shape, x.spatial_shape,
                                  self.kernel_size, self.stride, self.padding, self.dilation)  # fmt: skip
                if key is not None:
                    x.indice_dict[key] = data
            kt = data.transposed_map() if x.features.requires_grad and torch.is_grad_enabled() else None
            return data.kernel_map, kt, x.indices, x.spatial_shape
        if data is not None:
            raise ValueError(f"{who}: indice_key={key!r} already exists in this sparse tensor; a strided conv needs "
                             "a key of its own (only submanifold layers share).")  # fmt: skip
        out_idx, oshape, kmap = _maps.conv_map(x.indices, x.spatial_shape, x.batch_size, self.kernel_size,
                                               self.stride, self.padding, self.dilation)  # fmt: skip
        data = IndiceData(out_idx, x.indices, kmap, False, x.spatial_shape, oshape, self.kernel_size, self.stride,
                          self.padding, self.dilation)  # fmt: skip
        if key is not None:
            x.indice_dict[key] = data
        return kmap, None, out_idx, oshape

    def forward(self, input: SparseConvTensor, add_input: SparseConvTensor | None = None) -> SparseConvTensor:
        who = self._who()
        if not isinstance(input, SparseConvTensor):
            raise TypeError(f"{who}: input must be a SparseConvTensor (pointins.compat.spconv), got {type(input)}.")
        if len(input.spatial_shape) != self.ndim:
            raise ValueError(f"{who}: a {self.ndim}-D layer got a tensor with spatial_shape {input.spatial_shape}.")
        feat = input.features
        if feat.shape[1] != self.in_channels:
            raise ValueError(f"{who}: expects {self.in_channels} input channels, features have {feat.shape[1]}.")
        kmap, kt, out_idx, oshape = self._record(input)
        w = self._kernel().to(feat.dtype)
        b = None if self.bias is None else self.bias.to(feat.dtype)
        if kmap.shape[0] == 0 or feat.shape[0] == 0:
            out = feat.new_zeros((kmap.shape[0], self.out_channels)) + (0 if b is None else b) + 0 * w.sum()
        else:
            out = ops.sparse_conv(feat, kmap, w, b, kernel_map_t=kt, validate=False)
        if add_input is not None:
            out = out + add_input.features
        res = SparseConvTensor(out, out_idx, oshape, input.batch_size, indice_dict=input.indice_dict,
                               benchmark=input.benchmark)  # fmt: skip
        res._checked = True
        return res


def _family(ndim: int, kind: str):
    subm, inverse = kind == "SubMConv", kind == "SparseInverseConv"

    if inverse:

        def __init__(self, in_channels, out_channels, kernel_size, indice_key=None, bias=True, algo=None,
                     fp32_accum=None, large_kernel_fast_algo=False, name=None):  # fmt: skip
            SparseConvolution.__init__(self, ndim, in_channels, out_channels, kernel_size, bias=bias, inverse=True,
                                       indice_key=indice_key, algo=algo, fp32_accum=fp32_accum,
                                       large_kernel_fast_algo=large_kernel_fast_algo, name=name)  # fmt: skip
    else:

        def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                     bias=True, indice_key=None, algo=None, fp32_accum=None, record_voxel_count=False,
                     large_kernel_fast_algo=False, name=None):  # fmt: skip
            SparseConvolution.__init__(self, ndim, in_channels, out_channels, kernel_size, stride, padding, dilation,
                                       groups, bias, subm=subm, indice_key=indice_key, algo=algo,
                                       fp32_accum=fp32_accum, record_voxel_count=record_voxel_count,
                                       large_kernel_fast_algo=large_kernel_fast_algo, name=name)  # fmt: skip

    name = f"{kind}{ndim}d"
    doc = {"SubMConv": "Submanifold sparse conv: output voxels = input voxels (spconv's ``{}``).",
           "SparseConv": "Strided sparse conv: output voxels = every site the kernel reaches (spconv's ``{}``).",
           "SparseInverseConv": "Inverse of the strided conv under the same ``indice_key``: back to its input voxels "
                                "(spconv's ``{}``)."}[kind].format(name)  # fmt: skip
    return type(name, (SparseConvolution,), {"__init__": __init__, "__doc__": doc, "__module__": __name__})


SubMConv1d, SubMConv2d, SubMConv3d, SubMConv4d = (_family(d, "SubMConv") for d in (1, 2, 3, 4))
SparseConv1d, SparseConv2d, SparseConv3d, SparseConv4d = (_family(d, "SparseConv") for d in (1, 2, 3, 4))
SparseInverseConv1d, SparseInverseConv2d, SparseInverseConv3d, SparseInverseConv4d = (
    _family(d, "SparseInverseConv") for d in (1, 2, 3, 4)
)
