"""``SparseConvTensor`` as spconv 2.x shapes it, and the record of a layer's kernel map (``IndiceData``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class IndiceData:
    """What a conv with an ``indice_key`` leaves in ``SparseConvTensor.indice_dict``: later layers with the same
    key reuse the map (submanifold) or invert it (``SparseInverseConv``).

    ``kernel_map`` is PointINS's layout, ``(M, K)`` int64 (row = output voxel, column = kernel slot, entry = input
    row or -1), not spconv's pair lists; ``indices`` / ``out_indices`` / ``spatial_shape`` / ``out_spatial_shape``
    / ``ksize`` / ``stride`` / ``padding`` / ``dilation`` / ``is_subm`` mean what they mean in spconv."""

    out_indices: torch.Tensor
    indices: torch.Tensor
    kernel_map: torch.Tensor
    is_subm: bool
    spatial_shape: list[int]
    out_spatial_shape: list[int]
    ksize: list[int]
    stride: list[int]
    padding: list[int]
    dilation: list[int]
    _transposed: torch.Tensor | None = field(default=None, repr=False)

    @property
    def voxel_num(self) -> None:
        return None

    def transposed_map(self) -> torch.Tensor:
        """``(N_in, K)``: for each input row and slot, the output row that reads it (-1: none); cached."""
        if self._transposed is None:
            k0 = self.ksize[0]
            symmetric = self.is_subm and all(k == k0 and k % 2 == 1 for k in self.ksize)
            if symmetric:  # a centred submanifold map of unique voxels is its own transpose, slots reversed
                self._transposed = self.kernel_map.flip(1)
            else:
                from pointins.ops.sparse_conv import transpose_map

                self._transposed = transpose_map(self.kernel_map, self.indices.shape[0])
        return self._transposed


def scatter_nd(indices: torch.Tensor, updates: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """A dense tensor of ``shape`` holding ``updates`` at the rows of ``indices`` (zeros elsewhere)."""
    out = updates.new_zeros(shape)
    nd = indices.shape[1]
    flat = torch.zeros(indices.shape[0], dtype=torch.long, device=indices.device)
    for d in range(nd):
        flat = flat * shape[d] + indices[:, d].long()
    out.view(math.prod(shape[:nd]), -1).index_copy_(0, flat, updates.reshape(indices.shape[0], -1))
    return out


class SparseConvTensor:
    """A batch of sparse voxels, spconv's way: ``features`` (N, C); ``indices`` (N, 1 + ndim) integer (int32 in
    spconv), column 0 the sample, then the coordinates along ``spatial_shape``'s axes; ``batch_size``;
    ``indice_dict`` the kernel maps layers cached under their ``indice_key`` (shared by every tensor derived with
    :meth:`replace_feature`).

    Set features with ``x = x.replace_feature(f)`` (assigning ``x.features`` is refused, as in spconv). ``grid``,
    ``voxel_num``, ``benchmark`` and the other spconv tuning arguments are accepted and kept, and change nothing.
    """

    def __init__(self, features: torch.Tensor, indices: torch.Tensor, spatial_shape: Any, batch_size: int,
                 grid: torch.Tensor | None = None, voxel_num: torch.Tensor | None = None,
                 indice_dict: dict | None = None, benchmark: bool = False, permanent_thrust_allocator: bool = False,
                 enable_timer: bool = False, force_algo: Any = None) -> None:  # fmt: skip
        ndim = len(spatial_shape)
        if not isinstance(features, torch.Tensor) or features.dim() != 2:
            raise ValueError(
                "pointins.compat.spconv.SparseConvTensor: features must be a 2-D tensor (N, C), got "
                f"{type(features).__name__} {tuple(getattr(features, 'shape', ()))}."
            )
        if not isinstance(indices, torch.Tensor) or indices.dim() != 2 or indices.shape[1] != ndim + 1:
            raise ValueError(
                "pointins.compat.spconv.SparseConvTensor: indices must be (N, 1 + len(spatial_shape)) = "
                f"(N, {ndim + 1}) [batch, coordinates...], got {tuple(getattr(indices, 'shape', ()))}."
            )
        if indices.is_floating_point() or indices.dtype == torch.bool:
            raise TypeError(
                f"pointins.compat.spconv.SparseConvTensor: indices must be an integer tensor (int32 as spconv), got "
                f"{indices.dtype}."
            )
        if int(batch_size) <= 0:
            raise ValueError(f"pointins.compat.spconv.SparseConvTensor: batch_size must be > 0, got {batch_size}.")
        self._features = features
        self.indices = indices
        self.spatial_shape = [int(s) for s in spatial_shape]
        self.batch_size = int(batch_size)
        self.indice_dict = {} if indice_dict is None else indice_dict
        self.grid = grid
        self.voxel_num = voxel_num
        self.benchmark = benchmark
        self.benchmark_record: dict = {}
        self.thrust_allocator = None
        self._timer = None
        self.force_algo = force_algo
        self.int8_scale = None
        self._checked = False  # indices validated once (by the first conv that reads them)

    def __repr__(self) -> str:
        return (f"SparseConvTensor[shape={tuple(self._features.shape)}, spatial_shape={self.spatial_shape}, "
                f"batch_size={self.batch_size}]")  # fmt: skip

    @property
    def features(self) -> torch.Tensor:
        return self._features

    @features.setter
    def features(self, val: torch.Tensor) -> None:
        raise ValueError(
            "pointins.compat.spconv.SparseConvTensor: features cannot be assigned; use "
            "x = x.replace_feature(new_features), which keeps the indices and cached kernel maps."
        )

    def _derived(self, features: torch.Tensor, indices: torch.Tensor, indice_dict: dict) -> SparseConvTensor:
        t = SparseConvTensor(features, indices, self.spatial_shape, self.batch_size, self.grid, self.voxel_num,
                             indice_dict, self.benchmark)  # fmt: skip
        t.benchmark_record = self.benchmark_record
        t.force_algo = self.force_algo
        t.int8_scale = self.int8_scale
        return t

    def replace_feature(self, feature: torch.Tensor) -> SparseConvTensor:
        """The same voxels with new features (the kernel-map cache is shared)."""
        if feature.dim() != 2 or feature.shape[0] != self.indices.shape[0]:
            raise ValueError(
                f"pointins.compat.spconv.SparseConvTensor.replace_feature: need ({self.indices.shape[0]}, C) "
                f"features, one row per voxel, got {tuple(feature.shape)}."
            )
        t = self._derived(feature, self.indices, self.indice_dict)
        t._checked = self._checked
        return t

    def shadow_copy(self) -> SparseConvTensor:
        t = self._derived(self._features, self.indices, self.indice_dict)
        t._checked = self._checked
        return t

    def select_by_index(self, valid_indices: torch.Tensor) -> SparseConvTensor:
        """A subset of the voxels; the cached maps no longer apply and are cleared (as spconv does)."""
        t = self._derived(self._features[valid_indices], self.indices[valid_indices], self.indice_dict)
        t.indice_dict.clear()
        return t

    def minus(self) -> SparseConvTensor:
        return self.replace_feature(-self._features)

    @property
    def spatial_size(self) -> int:
        return math.prod(self.spatial_shape)

    def find_indice_pair(self, key: Any) -> IndiceData | None:
        if key is None:
            return None
        return self.indice_dict.get(key)

    @classmethod
    def from_dense(cls, x: torch.Tensor) -> SparseConvTensor:
        """From a channel-last dense tensor (B, *spatial, C): one voxel per site with any non-zero channel."""
        nz = (x != 0).any(-1)
        idx = nz.nonzero()
        return cls(x[nz], idx.to(torch.int32), list(x.shape[1:-1]), x.shape[0])

    def dense(self, channels_first: bool = True) -> torch.Tensor:
        """(B, C, *spatial) (or channel-last (B, *spatial, C)), zeros where there is no voxel."""
        shape = [self.batch_size, *self.spatial_shape, self._features.shape[1]]
        res = scatter_nd(self.indices.to(self._features.device), self._features, shape)
        if not channels_first:
            return res
        nd = len(self.spatial_shape)
        return res.permute(0, nd + 1, *range(1, nd + 1)).contiguous()

    def _other(self, other: Any) -> torch.Tensor:
        if isinstance(other, SparseConvTensor):
            return other.features
        if isinstance(other, torch.Tensor):
            return other
        raise TypeError(
            f"pointins.compat.spconv.SparseConvTensor: can add a SparseConvTensor or a tensor, got {type(other)}."
        )

    def __add__(self, other: Any) -> SparseConvTensor:
        return self.replace_feature(self._features + self._other(other))

    __radd__ = __add__

    def __iadd__(self, other: Any) -> SparseConvTensor:
        self._features += self._other(other)
        return self
