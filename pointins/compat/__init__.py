"""Drop-in layers for pipelines written against other point-cloud libraries.

- :mod:`pointins.compat.torch_scatter` -- torch_scatter's API on the package's segment kernels.
- :mod:`pointins.compat.pointcept` -- Pointcept's ``encode`` / ``decode`` argument order.
- :mod:`pointins.compat.faiss` -- ``faiss.Kmeans``-shaped K-means.
- :mod:`pointins.compat.scipy` -- ``(n, labels)`` radius connected components, as SciPy's csgraph gives them.

``install()`` makes ``import torch_scatter`` (and ``torch_scatter.testing``) resolve to these modules for the rest
of the process, unless a real torch_scatter was imported already (``force=True`` replaces it).
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["install"]

_ALIASES = {"torch_scatter": "pointins.compat.torch_scatter",
            "torch_scatter.testing": "pointins.compat.torch_scatter.testing"}  # fmt: skip


def install(force: bool = False) -> list[str]:
    """Register the stand-ins under the peers' module names; returns the names now served by PointINS."""
    done = []
    for name, ours in _ALIASES.items():
        if name in sys.modules and not force and not sys.modules[name].__name__.startswith("pointins."):
            continue
        sys.modules[name] = importlib.import_module(ours)
        done.append(name)
    return done
