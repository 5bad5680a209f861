"""Surface sampling for the synthetic scenes: rectangles (quads), vertical cylinders and discs collected
in one :class:`Surfaces` builder and sampled in a single vectorised pass (area-proportional Poisson
counts, then one batched draw per primitive type)."""

from __future__ import annotations

import numpy as np


def consecutive_ids(inst: np.ndarray) -> np.ndarray:
    """Renumber the non-negative ids 0..K-1 in increasing order (instances that lost all points vanish); -1 stays."""
    ids = np.unique(inst[inst >= 0])
    remap = np.full(int(ids.max()) + 1 if len(ids) else 1, -1, np.int64)
    remap[ids] = np.arange(len(ids))
    return np.where(inst >= 0, remap[np.maximum(inst, 0)], -1)


def yaw_matrix(yaw: float) -> np.ndarray:
    """2D rotation by ``yaw`` about z, as a 3x3 matrix."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class Surfaces:
    """Primitives with labels; ``sample`` draws points, normals, labels and colours for all at once.

    Every primitive carries: semantic class, instance id (-1 for stuff), an RGB base colour (0-255) and a
    density weight (1 = the scene's density; downward faces get less, as a scanner seldom sees them).
    """

    def __init__(self) -> None:
        self.quads: list[tuple] = []  # origin, u, v, normal, sem, inst, color, weight
        self.cyls: list[tuple] = []  # base centre, radius, height, sem, inst, color, weight
        self.discs: list[tuple] = []  # centre, radius, up(+1/-1), sem, inst, color, weight

    def quad(self, origin, u, v, normal, sem, inst, color, weight=1.0) -> None:
        self.quads.append((origin, u, v, normal, sem, inst, color, weight))

    def box(self, lo, hi, rot, t, sem, inst, color, skip=(), floor_z=0.01, down_weight=0.3) -> None:
        """Faces of the box [lo, hi] (local frame) placed by rotation ``rot`` and translation ``t``.

        ``skip`` names faces to leave out (``"-x"``, ``"+y"``, ...); a bottom face on the floor is left out.
        """
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        s = hi - lo
        x0, y0, z0 = lo
        x1, y1, z1 = hi
        faces = {
            "+x": ((x1, y0, z0), (0, s[1], 0), (0, 0, s[2]), (1, 0, 0)),
            "-x": ((x0, y0, z0), (0, s[1], 0), (0, 0, s[2]), (-1, 0, 0)),
            "+y": ((x0, y1, z0), (s[0], 0, 0), (0, 0, s[2]), (0, 1, 0)),
            "-y": ((x0, y0, z0), (s[0], 0, 0), (0, 0, s[2]), (0, -1, 0)),
            "+z": ((x0, y0, z1), (s[0], 0, 0), (0, s[1], 0), (0, 0, 1)),
            "-z": ((x0, y0, z0), (s[0], 0, 0), (0, s[1], 0), (0, 0, -1)),
        }
        for name, (o, u, v, n) in faces.items():
            if name in skip or (name == "-z" and z0 < floor_z):
                continue
            w = down_weight if name == "-z" else 1.0
            self.quads.append(
                (rot @ np.asarray(o, float) + t, rot @ np.asarray(u, float), rot @ np.asarray(v, float),
                 rot @ np.asarray(n, float), sem, inst, color, w)
            )  # fmt: skip

    def cylinder(self, base, radius, height, rot, t, sem, inst, color, top=True, bottom=False) -> None:
        """A vertical cylinder (side, and optionally caps) with its base centre at ``base`` (local frame)."""
        c = rot @ np.asarray(base, float) + t
        self.cyls.append((c, radius, height, sem, inst, color, 1.0))
        if top:
            self.discs.append((c + np.array([0.0, 0.0, height]), radius, 1.0, sem, inst, color, 1.0))
        if bottom and c[2] > 0.01:
            self.discs.append((c, radius, -1.0, sem, inst, color, 0.3))

    def areas(self) -> np.ndarray:
        qa = [np.linalg.norm(np.cross(q[1], q[2])) for q in self.quads]
        ca = [2 * np.pi * c[1] * c[2] for c in self.cyls]
        da = [np.pi * d[1] ** 2 for d in self.discs]
        return np.asarray(qa + ca + da, float)

    def weights(self) -> np.ndarray:
        return np.asarray([q[7] for q in self.quads] + [c[6] for c in self.cyls] + [d[6] for d in self.discs], float)

    def sample(self, rng: np.random.Generator, density: float) -> dict[str, np.ndarray]:
        """Poisson(area * weight * density) points per primitive; uniform on each surface."""
        counts = rng.poisson(self.areas() * self.weights() * density)
        nq, nc = len(self.quads), len(self.cyls)
        parts = []
        if nq:
            o, u, v, n = (np.asarray([q[i] for q in self.quads], float) for i in range(4))
            idx = np.repeat(np.arange(nq), counts[:nq])
            a, b = rng.random((2, idx.size, 1))
            parts.append((o[idx] + a * u[idx] + b * v[idx], n[idx], idx, self.quads))
        if nc:
            c = np.asarray([x[0] for x in self.cyls], float)
            r = np.asarray([x[1] for x in self.cyls], float)
            h = np.asarray([x[2] for x in self.cyls], float)
            idx = np.repeat(np.arange(nc), counts[nq : nq + nc])
            th = rng.random(idx.size) * 2 * np.pi
            n = np.stack([np.cos(th), np.sin(th), np.zeros_like(th)], 1)
            p = c[idx] + n * r[idx, None]
            p[:, 2] += rng.random(idx.size) * h[idx]
            parts.append((p, n, idx, self.cyls))
        if self.discs:
            c = np.asarray([x[0] for x in self.discs], float)
            r = np.asarray([x[1] for x in self.discs], float)
            up = np.asarray([x[2] for x in self.discs], float)
            idx = np.repeat(np.arange(len(self.discs)), counts[nq + nc :])
            th = rng.random(idx.size) * 2 * np.pi
            rad = np.sqrt(rng.random(idx.size)) * r[idx]
            p = c[idx] + np.stack([rad * np.cos(th), rad * np.sin(th), np.zeros_like(th)], 1)
            n = np.zeros((idx.size, 3))
            n[:, 2] = up[idx]
            parts.append((p, n, idx, self.discs))
        coord, normal, sem, inst, color = [], [], [], [], []
        for p, n, idx, prims in parts:
            off = 3 if prims is not self.quads else 4
            labels = np.asarray([[x[off], x[off + 1]] for x in prims], np.int64).reshape(-1, 2)
            colors = np.asarray([x[off + 2] for x in prims], float).reshape(-1, 3)
            coord.append(p)
            normal.append(n)
            sem.append(labels[idx, 0])
            inst.append(labels[idx, 1])
            color.append(colors[idx])
        return {
            "coord": np.concatenate(coord) if coord else np.zeros((0, 3)),
            "normal": np.concatenate(normal) if normal else np.zeros((0, 3)),
            "segment": np.concatenate(sem) if sem else np.zeros(0, np.int64),
            "instance": np.concatenate(inst) if inst else np.zeros(0, np.int64),
            "color": np.concatenate(color) if color else np.zeros((0, 3)),
        }


def obb_overlap(a: tuple, b: tuple, margin: float = 0.0) -> bool:
    """Separating-axis test of two 2D oriented boxes ``(cx, cy, half_w, half_d, yaw)``."""
    axes = []
    corners = []
    for cx, cy, hw, hd, yaw in (a, b):
        c, s = np.cos(yaw), np.sin(yaw)
        ex, ey = np.array([c, s]), np.array([-s, c])
        axes += [ex, ey]
        hw, hd = hw + margin / 2, hd + margin / 2
        ctr = np.array([cx, cy])
        corners.append(np.array([ctr + sx * hw * ex + sy * hd * ey for sx in (-1, 1) for sy in (-1, 1)]))
    for ax in axes:
        pa, pb = corners[0] @ ax, corners[1] @ ax
        if pa.max() <= pb.min() or pb.max() <= pa.min():
            return False
    return True


def obb_corners(box: tuple) -> np.ndarray:
    cx, cy, hw, hd, yaw = box
    c, s = np.cos(yaw), np.sin(yaw)
    ex, ey = np.array([c, s]), np.array([-s, c])
    return np.array([np.array([cx, cy]) + sx * hw * ex + sy * hd * ey for sx in (-1, 1) for sy in (-1, 1)])
