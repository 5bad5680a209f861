"""Pointcept's calls in Pointcept's shapes: its ``GridSample`` transform, its ``offset`` (no leading 0), and its
serialization calls with Pointcept's argument order (``pointcept/models/utils/serialization``):
``encode(grid_coord, batch=None, depth=16, order="z")`` and ``decode(code, depth=16, order="z")`` on the package's
curve kernels. The codes are Pointcept's (z-order and Hilbert, ``-trans`` swapping x and y, the batch above
``3 * depth`` bits). ``tests/test_compat.py`` checks all of it against Pointcept's own code."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pointins import ops

__all__ = ["GridSample", "decode", "encode", "offsets_from_pointcept", "serialization"]


def encode(grid_coord: Any, batch: Any = None, depth: int = 16, order: str = "z") -> Any:
    """Pointcept's ``encode``: (N,) int64 codes of (N, 3) grid coordinates, the batch id above the curve bits."""
    return ops.encode(grid_coord, batch, order=order, depth=depth)


def decode(code: Any, depth: int = 16, order: str = "z") -> tuple[Any, Any]:
    """Pointcept's ``decode``: (grid_coord, batch) from codes."""
    return ops.decode(code, depth=depth, order=order)


#: the keys Pointcept's transforms index per point unless a dict says otherwise (``index_valid_keys``)
INDEX_VALID_KEYS = ("coord", "color", "normal", "superpoint", "strength", "segment", "instance")


def _index(d: dict, idx, copy_all: bool) -> dict:
    keys = d.get("index_valid_keys", INDEX_VALID_KEYS)
    out = dict(d) if copy_all else d
    for k in keys:
        if k in d:
            out[k] = d[k][idx]
    out["index_valid_keys"] = list(keys)
    return out


class GridSample:
    """Pointcept's ``GridSample`` transform (``pointcept/datasets/transform.py``) with its keywords, on
    :func:`pointins.ops.voxelize`: a NumPy dict in, a NumPy dict out (a list of them in test mode).

    Same outputs as Pointcept's: ``grid_coord`` = floor(coord / grid_size) - its minimum, one point per voxel
    (train: a random one; test: fragment i takes each voxel's point i mod count, ``count.max()`` fragments, each with
    ``index``), ``inverse`` mapping every input point to its voxel's row of the output, ``min_coord`` (1, 3),
    ``displacement`` to the voxel centre (projected on the normal when asked), ``index_valid_keys`` kept. The rows
    are in a different order than Pointcept's (ours: by first point; theirs: by hash) and the random draws differ;
    ``hash_type`` is accepted and does not matter (no hash collisions here: the voxel keys are exact).
    """

    def __init__(self, grid_size=0.05, hash_type: str = "fnv", mode: str = "train", return_inverse: bool = False,
                 return_grid_coord: bool = False, return_min_coord: bool = False, return_displacement: bool = False,
                 project_displacement: bool = False, seed: int | None = None):  # fmt: skip
        if mode not in ("train", "test"):
            raise ValueError(f"GridSample: mode must be 'train' or 'test', got {mode!r}")
        self.grid_size, self.hash_type, self.mode = grid_size, hash_type, mode
        self.return_inverse, self.return_grid_coord = return_inverse, return_grid_coord
        self.return_min_coord, self.return_displacement = return_min_coord, return_displacement
        self.project_displacement = project_displacement
        self._rng = np.random.default_rng(seed)

    def __call__(self, data_dict: dict):
        if "coord" not in data_dict:
            raise KeyError("GridSample: the data dict has no 'coord'")
        size = np.asarray(self.grid_size, np.float64)
        scaled = np.asarray(data_dict["coord"], np.float64) / size
        grid = np.floor(scaled).astype(np.int64)
        low = grid.min(0) if len(grid) else np.zeros(3, np.int64)
        grid -= low
        scaled -= low
        vox = ops.voxelize(torch.from_numpy(grid.astype(np.float64)), None, 1.0, mode="all")
        inverse, counts = vox.inverse.numpy(), vox.counts.numpy()
        order = np.argsort(inverse, kind="stable")  # points grouped by voxel, voxels by first point
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        extra = {}
        if self.return_min_coord:
            extra["min_coord"] = (low * size).reshape(1, 3)
        if self.mode == "train":
            pick = order[starts + self._rng.integers(0, max(int(counts.max(initial=1)), 1), len(counts)) % counts]
            return self._finish(_index(data_dict, pick, False), pick, grid, scaled, inverse, extra, data_dict)
        parts = []
        for i in range(int(counts.max(initial=0))):
            pick = order[starts + i % counts]
            part = _index(data_dict, pick, True)
            part["index"] = pick
            parts.append(self._finish(part, pick, grid, scaled, inverse, extra, data_dict))
        return parts

    def _finish(self, d, pick, grid, scaled, inverse, extra, src):
        if self.return_inverse:
            d["inverse"] = inverse.copy()
        if self.return_grid_coord:
            d["grid_coord"] = grid[pick]
            if "grid_coord" not in d["index_valid_keys"]:
                d["index_valid_keys"] = [*d["index_valid_keys"], "grid_coord"]
        d.update({k: v.copy() for k, v in extra.items()})
        if self.return_displacement:
            disp = scaled - grid - 0.5
            if self.project_displacement:
                disp = np.sum(disp * src["normal"], axis=-1, keepdims=True)
            d["displacement"] = disp[pick]
            if "displacement" not in d["index_valid_keys"]:
                d["index_valid_keys"] = [*d["index_valid_keys"], "displacement"]
        return d


def offsets_from_pointcept(offset) -> torch.Tensor:
    """Pointcept's ``offset`` (cumulative point counts, no leading 0: ``[n0, n0 + n1, ...]``) as the CSR offsets the
    ops take (``[0, n0, n0 + n1, ...]``)."""
    off = torch.as_tensor(offset, dtype=torch.long).reshape(-1)
    return torch.cat([off.new_zeros(1), off])


def serialization(point: dict, order="z", depth: int | None = None, shuffle_orders: bool = False,
                  generator: torch.Generator | None = None) -> dict:  # fmt: skip
    """Pointcept's ``Point.serialization`` on a dict of tensors, on :func:`pointins.ops.serialize`: fills ``order``,
    ``grid_coord`` (when absent: ``trunc((coord - min) / grid_size)``), ``serialized_depth`` (default: the bit
    length of the largest grid coordinate + 1), ``serialized_code`` / ``serialized_order`` / ``serialized_inverse``
    ((orders, N) int64; the batch above the curve bits) as Pointcept does. ``batch`` or Pointcept's ``offset`` (no
    leading 0) gives the samples. With ``shuffle_orders`` the orders are permuted (``generator`` draws it)."""
    orders = [order] if isinstance(order, str) else list(order)
    point["order"] = order
    if "batch" not in point:
        if "offset" not in point:
            raise KeyError("serialization: the point dict needs 'batch' or 'offset' (Pointcept's, no leading 0)")
        off = offsets_from_pointcept(point["offset"]).to(torch.as_tensor(point["coord"]).device)
        point["batch"] = torch.repeat_interleave(torch.arange(len(off) - 1, device=off.device), off.diff())
    if "grid_coord" not in point:
        if "grid_size" not in point or "coord" not in point:
            raise KeyError("serialization: without 'grid_coord' the point dict needs 'coord' and 'grid_size'")
        c = point["coord"]
        point["grid_coord"] = torch.div(c - c.min(0)[0], point["grid_size"], rounding_mode="trunc").int()
    g = point["grid_coord"]
    if depth is None:
        depth = int(g.max() + 1).bit_length() if g.numel() else 1
    if depth > 16:
        raise ValueError(f"serialization: depth {depth} > 16 (Pointcept's limit: 48 bits for the position)")
    point["serialized_depth"] = depth
    ser = ops.serialize(g, batch=point["batch"], orders=tuple(orders), depth=depth)
    code, perm_order, inverse = ser.code, ser.order, ser.inverse
    if shuffle_orders:
        perm = torch.randperm(code.shape[0], generator=generator)
        code, perm_order, inverse = code[perm], perm_order[perm], inverse[perm]
    point["serialized_code"], point["serialized_order"], point["serialized_inverse"] = code, perm_order, inverse
    return point
