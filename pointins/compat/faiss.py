"""``faiss.Kmeans``-shaped K-means on :func:`pointins.ops.kmeans`: ``Kmeans(d, k, niter=25, seed=1234).train(x)``,
then ``.centroids`` (k, d) float32, ``.obj``, ``.index.search(x, 1)`` and ``.assign(x)``.

Differences, by design: the initialisation is k-means++ (faiss samples k random points; ``init="random"`` does
that too), ``.obj`` holds the final inertia only (faiss records it per iteration), and the spherical variant is
``spherical=True`` as in faiss (our metric="cosine"). NumPy in, NumPy out (float32, as faiss).
"""

from __future__ import annotations

import numpy as np
import torch

from pointins import ops

__all__ = ["Kmeans"]


class _FlatL2:
    """What ``Kmeans.index`` offers: ``search(x, k) -> (distances, labels)`` over the centroids (squared L2, or
    inner products for a spherical Kmeans, as faiss' IndexFlatL2 / IndexFlatIP)."""

    def __init__(self, centroids: np.ndarray, spherical: bool):
        self.centroids, self.spherical = centroids, spherical
        self.ntotal = len(centroids)

    def search(self, x, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        q = torch.as_tensor(np.ascontiguousarray(x, np.float32))
        c = torch.as_tensor(self.centroids)
        if self.spherical:
            score = q @ c.T
            d, i = score.topk(min(k, self.ntotal), dim=1, largest=True)
        else:
            score = (q * q).sum(1, keepdim=True) - 2 * q @ c.T + (c * c).sum(1)
            d, i = score.topk(min(k, self.ntotal), dim=1, largest=False)
        return d.numpy(), i.numpy().astype(np.int64)


class Kmeans:
    """``faiss.Kmeans(d, k, niter=25, verbose=False, seed=1234, spherical=False)``."""

    def __init__(self, d: int, k: int, niter: int = 25, verbose: bool = False, seed: int = 1234,
                 spherical: bool = False, init: str = "k-means++", **_faiss_options):  # fmt: skip
        if not isinstance(d, int) or not isinstance(k, int) or d < 1 or k < 1:
            raise ValueError(f"pointins.compat.faiss.Kmeans(d, k): d and k must be positive ints, got d={d!r}, "
                             f"k={k!r}")  # fmt: skip
        self.d, self.k, self.niter, self.verbose, self.seed = d, k, niter, verbose, seed
        self.spherical, self.init = spherical, init
        self.centroids: np.ndarray | None = None
        self.obj: list[float] = []
        self.index: _FlatL2 | None = None

    def train(self, x, weights=None, init_centroids=None) -> float:
        """faiss' ``train(x, weights=None, init_centroids=None)``: ``init_centroids`` (k, d) starts Lloyd's
        iterations from those centres (as faiss does); per-point ``weights`` are not supported (faiss-only)."""
        x = np.ascontiguousarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != self.d:
            raise ValueError(f"pointins.compat.faiss.Kmeans.train: x must be (n, {self.d}), got {x.shape}")
        if weights is not None:
            raise NotImplementedError("pointins.compat.faiss.Kmeans.train: per-point weights are not supported; "
                                      "repeat points to weight them, or use faiss.")  # fmt: skip
        init = self.init
        if init_centroids is not None:
            init = torch.from_numpy(np.ascontiguousarray(init_centroids, np.float32))
            if tuple(init.shape) != (self.k, self.d):
                raise ValueError(f"pointins.compat.faiss.Kmeans.train: init_centroids must be ({self.k}, {self.d}), "
                                 f"got {tuple(init.shape)}")  # fmt: skip
        res = ops.kmeans(torch.from_numpy(x), None, k=self.k, iters=self.niter, seed=self.seed, init=init,
                         metric="cosine" if self.spherical else "l2")  # fmt: skip
        self.centroids = res.centroids.numpy().astype(np.float32)
        self.obj = [float(res.inertia[0])] if len(res.inertia) else []
        self.index = _FlatL2(self.centroids, self.spherical)
        if self.verbose:
            print(f"pointins Kmeans: {len(x)} points, k={len(self.centroids)}, {int(res.n_iter[0])} iterations, "
                  f"objective {self.obj[-1] if self.obj else float('nan'):.6g}")  # fmt: skip
        return self.obj[-1] if self.obj else 0.0

    def assign(self, x) -> tuple[np.ndarray, np.ndarray]:
        """(distance, label) of each row of ``x`` to its nearest centroid, flattened, as faiss."""
        if self.index is None:
            raise RuntimeError("pointins.compat.faiss.Kmeans.assign: call train(x) first")
        d, i = self.index.search(x, 1)
        return d.ravel(), i.ravel()
