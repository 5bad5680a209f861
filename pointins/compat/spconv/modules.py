"""spconv's container and element-wise modules: ``SparseSequential`` hands a ``SparseConvTensor`` to sparse layers
and applies any other ``nn.Module`` to its features."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

__all__ = ["SparseBatchNorm", "SparseIdentity", "SparseModule", "SparseReLU", "SparseSequential", "is_sparse_conv",
           "is_spconv_module"]  # fmt: skip


class SparseModule(nn.Module):
    """Base of the modules that take a ``SparseConvTensor`` (not its features) inside ``SparseSequential``."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__()
        self.name = name
        self._sparse_unique_name = ""


def _sparse(x) -> bool:
    from pointins.compat.spconv.core import SparseConvTensor

    return isinstance(x, SparseConvTensor)


class SparseBatchNorm(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` over a sparse tensor's features."""

    def forward(self, input):
        if _sparse(input):
            return input.replace_feature(super().forward(input.features))
        return super().forward(input)


class SparseReLU(nn.ReLU):
    """``nn.ReLU`` over a sparse tensor's features."""

    def forward(self, input):
        if _sparse(input):
            return input.replace_feature(super().forward(input.features))
        return super().forward(input)


class SparseIdentity(nn.Identity):
    def forward(self, input):
        return input


def is_spconv_module(module) -> bool:
    return isinstance(module, SparseModule | SparseBatchNorm | SparseReLU | SparseIdentity)


def is_sparse_conv(module) -> bool:
    from pointins.compat.spconv.conv import SparseConvolution

    return isinstance(module, SparseConvolution)


class SparseSequential(SparseModule):
    """A sequence of modules: sparse modules get the tensor, others its features (``x.replace_feature(m(x.features))``,
    skipped for a tensor with no voxels, as spconv does). Built like ``nn.Sequential``: positional modules, one
    ``OrderedDict``, or keyword names."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for key, module in args[0].items():
                self.add_module(key, module)
        else:
            for i, module in enumerate(args):
                self.add_module(str(i), module)
        for name, module in kwargs.items():
            if name in self._modules:
                raise ValueError(f"pointins.compat.spconv.SparseSequential: name {name!r} exists.")
            self.add_module(name, module)

    def __getitem__(self, idx: int) -> nn.Module:
        n = len(self)
        if not -n <= idx < n:
            raise IndexError(f"index {idx} is out of range for a SparseSequential of {n} modules")
        return list(self._modules.values())[idx % n]

    def __len__(self) -> int:
        return len(self._modules)

    def add(self, module: nn.Module, name: str | None = None) -> None:
        if name is None:
            name = str(len(self._modules))
        if name in self._modules:
            raise KeyError(f"pointins.compat.spconv.SparseSequential: name {name!r} exists.")
        self.add_module(name, module)

    def forward(self, input):
        for module in self._modules.values():
            if is_spconv_module(module) or not _sparse(input):
                input = module(input)
            elif input.indices.shape[0] != 0:
                input = input.replace_feature(module(input.features))
        return input
