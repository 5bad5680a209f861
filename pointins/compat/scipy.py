"""SciPy-shaped radius connected components: ``n, labels = radius_components(points, r)``, the result
``scipy.sparse.csgraph.connected_components`` gives on the graph of ``cKDTree(points).query_pairs(r)``, in one
call of :func:`pointins.ops.connected_components`.

One difference: our edge test is strict (``|p - q| < r``), cKDTree's ``query_pairs`` keeps ``<= r``; pairs exactly
at distance r (measure zero for real coordinates) can differ. Labels are numbered by each component's first point,
as SciPy's are. NumPy in, NumPy out.
"""

from __future__ import annotations

import numpy as np
import torch

from pointins import ops

__all__ = ["radius_components"]


def radius_components(points, r: float) -> tuple[int, np.ndarray]:
    """(number of components, (N,) int32 label of each point)."""
    x = torch.from_numpy(np.ascontiguousarray(points, np.float64 if np.asarray(points).dtype == np.float64
                                              else np.float32))  # fmt: skip
    cc = ops.connected_components(x, None, radius=float(r))
    return cc.num_components, cc.labels.numpy().astype(np.int32)
