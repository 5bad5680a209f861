"""Drop-in layers for pipelines written against other point-cloud libraries.

- :mod:`pointins.compat.torch_scatter` -- torch_scatter's API on the package's segment kernels.
- :mod:`pointins.compat.spconv` -- ``spconv.pytorch`` (2.x) layers and ``SparseConvTensor`` on the sparse-conv kernels.
- :mod:`pointins.compat.pointcept` -- Pointcept's ``encode`` / ``decode`` argument order, serialization, GridSample.
- :mod:`pointins.compat.faiss` -- ``faiss.Kmeans``-shaped K-means.
- :mod:`pointins.compat.scipy` -- ``(n, labels)`` radius connected components, as SciPy's csgraph gives them.

``install()`` makes ``import torch_scatter`` and ``import spconv.pytorch`` (with ``spconv.pytorch.modules`` /
``.conv`` / ``.core``) resolve to these modules for the rest of the process. A peer that was imported already is
left alone unless ``force=True``; ``peers=`` picks which to serve.
"""

from __future__ import annotations

import importlib
import sys
import types

__all__ = ["PEERS", "install"]

PEERS = {
    "torch_scatter": {"torch_scatter": "pointins.compat.torch_scatter",
                      "torch_scatter.testing": "pointins.compat.torch_scatter.testing"},
    "spconv": {"spconv": None,  # a package module made here, whose .pytorch is ours
               "spconv.pytorch": "pointins.compat.spconv",
               "spconv.pytorch.modules": "pointins.compat.spconv.modules",
               "spconv.pytorch.conv": "pointins.compat.spconv.conv",
               "spconv.pytorch.core": "pointins.compat.spconv.core"},
}  # fmt: skip


def _spconv_root() -> types.ModuleType:
    root = types.ModuleType("spconv", "PointINS's stand-in for the spconv package: only spconv.pytorch is served.")
    root.__path__ = []  # a package, so that 'import spconv.pytorch' looks in sys.modules
    root.pytorch = importlib.import_module("pointins.compat.spconv")
    root.__version__ = root.pytorch.__version__
    root.__pointins__ = True
    return root


def _ours(mod) -> bool:
    return mod.__name__.startswith("pointins.") or getattr(mod, "__pointins__", False)


def install(force: bool = False, peers: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """Register the stand-ins under the peers' module names (``peers``: names of :data:`PEERS`, default all);
    returns the module names now served by PointINS."""
    chosen = list(PEERS) if peers is None else list(peers)
    bad = [p for p in chosen if p not in PEERS]
    if bad:
        raise ValueError(f"pointins.compat.install: unknown peers {bad}; choose from {list(PEERS)}.")
    done = []
    for peer in chosen:
        names = PEERS[peer]
        if not force and any(n in sys.modules and not _ours(sys.modules[n]) for n in names):
            continue  # the real peer is in use in this process: do not mix the two
        for name, target in names.items():
            sys.modules[name] = _spconv_root() if target is None else importlib.import_module(target)
            done.append(name)
    return done
