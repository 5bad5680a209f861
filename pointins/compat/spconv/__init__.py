"""A stand-in for ``spconv.pytorch`` (spconv 2.x) on PointINS kernels: ``import pointins.compat.spconv as spconv``,
or :func:`pointins.compat.install` so that ``import spconv.pytorch as spconv`` resolves here.

Provided: ``SparseConvTensor`` (spconv's index layout ``[batch, coordinates...]``, ``replace_feature``, ``dense``,
``from_dense``, ``indice_dict``), ``SubMConv{1,2,3,4}d``, ``SparseConv{1,2,3,4}d`` (strided),
``SparseInverseConv{1,2,3,4}d``, ``SparseSequential`` (plain ``nn`` modules act on the features),
``SparseModule``, ``SparseBatchNorm``, ``SparseReLU``, ``SparseIdentity``, ``Identity``, ``ToDense``, ``ConvAlgo``,
``modules.is_spconv_module``.
Kernel maps are cached under ``indice_key`` as spconv does; weights keep spconv 2.x's layout
``(out_channels, *kernel_size, in_channels)`` so its ``state_dict`` loads unchanged. The same network built from
spconv and from these gives the same outputs (``tests/test_compat_spconv.py`` compares them with spconv 2.3.8 on
the CPU), and these also run backward on the CPU, which spconv's CPU build does not.

Not provided: ``SparseConvTranspose*d``, sparse pooling, int8 / quantisation, ``spconv.pytorch.ops`` / ``utils``
(voxel generators: use :func:`pointins.ops.voxelize`).
"""

import enum

from torch import nn

from pointins.compat.spconv import conv, core, modules
from pointins.compat.spconv.conv import (
    SparseConv1d,
    SparseConv2d,
    SparseConv3d,
    SparseConv4d,
    SparseConvolution,
    SparseInverseConv1d,
    SparseInverseConv2d,
    SparseInverseConv3d,
    SparseInverseConv4d,
    SubMConv1d,
    SubMConv2d,
    SubMConv3d,
    SubMConv4d,
)
from pointins.compat.spconv.core import SparseConvTensor
from pointins.compat.spconv.modules import (
    SparseBatchNorm,
    SparseIdentity,
    SparseModule,
    SparseReLU,
    SparseSequential,
    is_spconv_module,
)

__version__ = "2.3.8"  # the spconv API this mirrors


class ConvAlgo(enum.Enum):
    """spconv's algorithm choice; accepted by the conv layers (``algo=``) and ignored (one CPU/CUDA path here)."""

    Native = 0
    MaskImplicitGemm = 1
    MaskSplitImplicitGemm = 2


class Identity(nn.Module):
    """spconv's ``Identity`` (a plain module: inside ``SparseSequential`` it gets the features, as in spconv)."""

    def forward(self, input):
        return input

    def input_spatial_size(self, out_size):
        return out_size


class ToDense(SparseModule):
    """A SparseConvTensor to its dense (B, C, *spatial) tensor."""

    def forward(self, x: SparseConvTensor):
        return x.dense()


class RemoveGrid(SparseModule):
    def forward(self, x: SparseConvTensor):
        x.grid = None
        return x


__all__ = [
    "ConvAlgo", "Identity", "RemoveGrid", "SparseBatchNorm", "SparseConv1d", "SparseConv2d", "SparseConv3d",
    "SparseConv4d",
    "SparseConvTensor", "SparseConvolution", "SparseIdentity", "SparseInverseConv1d", "SparseInverseConv2d",
    "SparseInverseConv3d", "SparseInverseConv4d", "SparseModule", "SparseReLU", "SparseSequential", "SubMConv1d",
    "SubMConv2d", "SubMConv3d", "SubMConv4d", "ToDense", "conv", "core", "is_spconv_module", "modules", "nn",
]  # fmt: skip
