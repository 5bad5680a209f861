"""Point-cloud transforms on dicts of NumPy arrays (METHOD.md section 3), recording the linear map of each view.

A cloud is a dict with ``coord`` (N,3) and any per-point arrays (:data:`POINT_KEYS`). Every geometric
transform keeps the view's map to the original frame up to date::

    view_coord = original_coord @ d["transform"].T + d["shift"]

``transform`` (3x3 float64) collects rotations, tilts, flips and scaling; ``shift`` (3,) the centring.
:func:`to_original` inverts it for points, :func:`vectors_to_original` / :func:`vectors_to_view` for
offset vectors (they ignore the shift). Jitter and elastic distortion move points by small non-linear
amounts and are deliberately not part of the map (METHOD.md). Normals follow ``transform``'s inverse
transpose. ``index`` (added by :func:`start_view` when absent) keeps each point's row in the source cloud,
so every crop and grid sample stays traceable.

All randomness comes from an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "POINT_KEYS",
    "center_shift",
    "chromatic_translation",
    "color_jitter",
    "elastic_distortion",
    "grid_sample",
    "nearest_crop",
    "random_color_jitter",
    "random_flip",
    "random_jitter",
    "random_rotate",
    "random_scale",
    "sphere_crop",
    "start_view",
    "take",
    "to_original",
    "vectors_to_original",
    "vectors_to_view",
    "voxel_grouping",
]

POINT_KEYS = (
    "coord",
    "color",
    "normal",
    "strength",
    "segment",
    "instance",
    "index",
    "grid_coord",
    "mask",
    "origin",
    "centre",
)


def take(d: dict, idx) -> dict:
    """The points ``idx`` of every per-point array; other entries are carried over."""
    if isinstance(idx, np.ndarray) and idx.dtype.kind in "iu":  # np.take: the same rows, faster than v[idx]
        return {k: (np.take(v, idx, axis=0) if k in POINT_KEYS and isinstance(v, np.ndarray) else
                    v[idx] if k in POINT_KEYS else v) for k, v in d.items()}  # fmt: skip
    return {k: (v[idx] if k in POINT_KEYS else v) for k, v in d.items()}


def _n(d: dict) -> int:
    return len(d["coord"])


def _cmin(a: np.ndarray) -> np.ndarray:
    """Column minima of an (N, C) array (= a.min(0), without numpy's slow reduce over a short inner axis)."""
    return np.array([a[:, j].min() for j in range(a.shape[1])], dtype=a.dtype)


def _cmax(a: np.ndarray) -> np.ndarray:
    return np.array([a[:, j].max() for j in range(a.shape[1])], dtype=a.dtype)


def _row_norms(a: np.ndarray) -> np.ndarray:
    """(N, 1) Euclidean norms of the rows of an (N, 3) array (= np.linalg.norm(a, axis=1, keepdims=True): the same
    three squares added in the same order)."""
    sq = a * a
    return np.sqrt(sq[:, 0] + sq[:, 1] + sq[:, 2])[:, None]


def start_view(d: dict) -> dict:
    """A copy with float64 coordinates, an identity ``transform``/zero ``shift`` and ``index`` (if absent)."""
    out = dict(d)
    out["coord"] = np.asarray(d["coord"], np.float64).copy()
    out.setdefault("index", np.arange(_n(d), dtype=np.int64))
    out["transform"] = np.asarray(d.get("transform", np.eye(3)), np.float64).copy()
    out["shift"] = np.asarray(d.get("shift", np.zeros(3)), np.float64).copy()
    return out


def _linear(d: dict, a: np.ndarray) -> dict:
    d["coord"] = d["coord"] @ a.T
    d["transform"] = a @ d["transform"]
    d["shift"] = a @ d["shift"]
    if "normal" in d and "_normals_from" not in d:
        d["normal"] = _normals(np.asarray(d["normal"], np.float64) @ np.linalg.inv(a))  # rows: (A^-T n)^T
    return d


def _normals(n: np.ndarray) -> np.ndarray:
    return (n / np.maximum(_row_norms(n), 1e-12)).astype(np.float32)


def defer_normals(d: dict) -> dict:
    """Let the linear transforms that follow leave ``normal`` alone until :func:`finish_normals`, which maps the
    normals once through all of them (the view pipeline's fast path: one matrix and one normalisation per view
    instead of one per transform; the same directions up to rounding)."""
    if "normal" in d:
        d["_normals_from"] = (np.asarray(d["normal"], np.float64), d["transform"].copy())
    return d


def finish_normals(d: dict) -> dict:
    """Normals through every linear transform since :func:`defer_normals`: ``n @ inv(A)`` for the product A of
    those transforms (A = transform @ inv(transform then)), normalised."""
    start = d.pop("_normals_from", None)
    if start is not None:
        n0, t0 = start
        d["normal"] = _normals(n0 @ (t0 @ np.linalg.inv(d["transform"])))
    return d


def _translate(d: dict, t: np.ndarray) -> dict:
    d["coord"] = d["coord"] + t
    d["shift"] = d["shift"] + t
    return d


def to_original(d: dict, coord: np.ndarray | None = None) -> np.ndarray:
    """View coordinates (default ``d["coord"]``) mapped back to the original frame."""
    c = d["coord"] if coord is None else coord
    return (np.asarray(c, np.float64) - d["shift"]) @ np.linalg.inv(d["transform"]).T


def vectors_to_original(d: dict, vec: np.ndarray) -> np.ndarray:
    """Offset vectors predicted in the view frame, expressed in the original frame."""
    return np.asarray(vec, np.float64) @ np.linalg.inv(d["transform"]).T


def vectors_to_view(d: dict, vec: np.ndarray) -> np.ndarray:
    """Offset vectors of the original frame, expressed in the view frame."""
    return np.asarray(vec, np.float64) @ np.asarray(d["transform"]).T


def center_shift(d: dict, apply_z: bool = True) -> dict:
    """Move the bounding-box centre (x, y) to the origin, and the lowest point to z = 0 when ``apply_z``."""
    if not _n(d):
        return d
    lo, hi = _cmin(d["coord"]), _cmax(d["coord"])
    c = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2] if apply_z else 0.0])
    return _translate(d, -c)


def _rot(axis: str, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    if axis == "z":
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])
    if axis == "x":
        return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])
    raise ValueError(f"random_rotate: axis must be 'x', 'y' or 'z', got {axis!r}.")


def random_rotate(
    d: dict, rng: np.random.Generator, axis: str = "z", angle=(-math.pi, math.pi), p: float = 1.0, about: str = "origin"
):
    """Rotate about ``axis`` by a uniform angle in ``angle``, with probability ``p``: through the origin, or with
    ``about="bbox"`` through the bounding-box centre (Pointcept's ``RandomRotate`` without ``center``)."""
    if rng.random() < p:
        a = float(rng.uniform(*angle))
        if about == "bbox" and _n(d):
            c = (_cmin(d["coord"]) + _cmax(d["coord"])) / 2
            _translate(d, -c)
            _linear(d, _rot(axis, a))
            _translate(d, c)
        elif about in ("origin", "bbox"):
            _linear(d, _rot(axis, a))
        else:
            raise ValueError(f"random_rotate: about must be 'origin' or 'bbox', got {about!r}.")
    return d


def random_scale(d: dict, rng: np.random.Generator, scale=(0.9, 1.1), anisotropic: bool = False) -> dict:
    """Scale by a uniform factor in ``scale`` (one per axis when ``anisotropic``)."""
    s = rng.uniform(*scale, size=3 if anisotropic else 1)
    return _linear(d, np.diag(np.broadcast_to(s, 3).astype(np.float64)))


def random_flip(d: dict, rng: np.random.Generator, p: float = 0.5) -> dict:
    """Mirror x and y, each with probability ``p``."""
    f = np.where(rng.random(2) < p, -1.0, 1.0)
    if (f < 0).any():
        _linear(d, np.diag([f[0], f[1], 1.0]))
    return d


def random_jitter(d: dict, rng: np.random.Generator, sigma: float = 0.005, clip: float = 0.02) -> dict:
    """Add clipped Gaussian noise to each point (not part of the recorded map)."""
    if sigma > 0:
        d["coord"] = d["coord"] + np.clip(rng.normal(0, sigma, (_n(d), 3)), -clip, clip)
    return d


def color_jitter(
    d: dict,
    rng: np.random.Generator,
    auto_contrast_p: float = 0.2,
    translate: float = 0.05,
    std: float = 0.05,
    p: float = 0.95,
) -> dict:
    """Colour augmentation in Pointcept's spirit: random auto-contrast (blended), a random translation of
    up to ``translate`` x 255 per channel, and per-point Gaussian noise of ``std`` x 255; 0-255 kept."""
    if "color" not in d or not _n(d):
        return d
    c = np.asarray(d["color"], np.float64)
    if rng.random() < auto_contrast_p:
        lo, hi = c.min(0), c.max(0)
        scaled = (c - lo) * (255.0 / np.maximum(hi - lo, 1e-6))
        blend = rng.random()
        c = (1 - blend) * c + blend * scaled
    if rng.random() < p:
        c = c + (rng.random(3) - 0.5) * 2 * translate * 255
    if rng.random() < p:
        c = c + rng.normal(0, std * 255, c.shape)
    d["color"] = np.clip(c, 0, 255).astype(np.float32)
    return d


def _gray(c: np.ndarray) -> np.ndarray:
    return (0.2989 * c[:, 0] + 0.587 * c[:, 1] + 0.114 * c[:, 2]).astype(c.dtype)


def _rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) RGB in [0, 1] -> HSV (colorsys' formulas, vectorised; float64)."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    eq = mx == mn
    cr = mx - mn
    div = np.where(eq, 1.0, cr)
    rc, gc, bc = (mx - r) / div, (mx - g) / div, (mx - b) / div
    is_r = mx == r
    h = np.where(is_r, bc - gc, np.where(mx == g, 2.0 + rc - bc, 4.0 + gc - rc))
    out = np.empty_like(rgb)
    out[:, 0] = (h / 6.0 + 1.0) % 1.0
    out[:, 1] = cr / np.where(eq, 1.0, mx)
    out[:, 2] = mx
    return out


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_rgb_to_hsv` (colorsys' sector table), channels clipped to [0, 1]."""
    h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.astype(np.int64) % 6
    p = np.clip(v * (1.0 - s), 0, 1)
    q = np.clip(v * (1.0 - s * f), 0, 1)
    t = np.clip(v * (1.0 - s * (1.0 - f)), 0, 1)
    out = np.empty_like(hsv)
    for ch, table in enumerate(((v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))):
        out[:, ch] = np.choose(i, table)
    return out


def _hue_shift_numpy(c: np.ndarray, shift: float) -> np.ndarray:
    hsv = _rgb_to_hsv(c.astype(np.float64) / 255.0)
    hsv[:, 0] = (hsv[:, 0] + shift) % 1.0
    return (_hsv_to_rgb(hsv) * 255.0).astype(np.float32)


def _compiled() -> bool:
    from pointins import _ext

    return _ext.try_load() is not None


def _hue_shift(c: np.ndarray, shift: float) -> np.ndarray:
    """Rotate the hue of (N, 3) float32 0-255 colours by ``shift`` (the compiled kernel when built: bitwise the
    NumPy expression :func:`_hue_shift_numpy`, several times faster)."""
    if _compiled() and len(c):
        out = torch.ops.pointins.hue_shift(torch.from_numpy(np.ascontiguousarray(c, np.float32)), float(shift))
        return out.numpy()
    return _hue_shift_numpy(c, shift)


def random_color_jitter(
    d: dict,
    rng: np.random.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.2,
    hue: float = 0.02,
    p: float = 0.8,
) -> dict:
    """Sonata's ``RandomColorJitter`` (torchvision's rules on 0-255 colour): factors drawn once per call
    (brightness / contrast / saturation in [1 - x, 1 + x], hue shift in [-hue, hue]), the four adjustments in a
    random order, each applied with probability ``p``; results clipped to 0-255."""
    if "color" not in d or not _n(d):
        return d
    c = np.asarray(d["color"], np.float32).copy()
    order = rng.permutation(4)
    b = rng.uniform(max(0.0, 1 - brightness), 1 + brightness)
    k = rng.uniform(max(0.0, 1 - contrast), 1 + contrast)
    s = rng.uniform(max(0.0, 1 - saturation), 1 + saturation)
    h = rng.uniform(-hue, hue)

    def blend(a, other, ratio):
        return np.clip(ratio * a + (1.0 - ratio) * other, 0, 255).astype(np.float32)

    for fn in order:
        if rng.random() >= p:
            continue
        if fn == 0:
            c = blend(c, 0.0, b)
        elif fn == 1:
            c = blend(c, np.float32(_gray(c).mean()), k)
        elif fn == 2:
            c = blend(c, _gray(c)[:, None], s)
        else:
            c = _hue_shift(c, h)
    d["color"] = c
    return d


def chromatic_translation(d: dict, rng: np.random.Generator, p: float = 0.95, ratio: float = 0.05) -> dict:
    """Sonata's ``ChromaticTranslation``: with probability ``p`` add one random RGB offset in
    +-``ratio`` x 255 to every point, clipped to 0-255."""
    if "color" not in d or not _n(d) or rng.random() >= p:
        return d
    tr = (rng.random(3) - 0.5) * 255 * 2 * ratio
    d["color"] = np.clip(np.asarray(d["color"], np.float32) + tr, 0, 255).astype(np.float32)
    return d


def _smooth(noise: np.ndarray) -> np.ndarray:
    """Box blur (3 taps) along x, y, z; zeros outside, as scipy.ndimage mode="constant"."""
    for axis in range(3):
        n = noise.shape[axis]
        p = np.pad(noise, [(1, 1) if a == axis else (0, 0) for a in range(3)] + [(0, 0)])
        tap = [tuple(slice(k, k + n) if a == axis else slice(None) for a in range(3)) for k in range(3)]
        s = p[tap[0]] + p[tap[1]]
        s += p[tap[2]]
        s /= 3
        noise = s
    return noise


def elastic_distortion(d: dict, rng: np.random.Generator, params=((0.2, 0.4), (0.8, 1.6)), p: float = 1.0) -> dict:
    """Smooth random deformation (Pointcept's ``ElasticDistortion``, which applies it with ``p`` = 0.95): for
    each (granularity, magnitude), a Gaussian noise lattice with spacing ``granularity``, box-blurred twice
    along each axis, is interpolated trilinearly at the points and added x ``magnitude``. Not part of the
    recorded map."""
    if not _n(d) or rng.random() >= p:
        return d
    coord = d["coord"]
    for gran, mag in params:
        lo = _cmin(coord)
        dims = ((_cmax(coord) - lo) // gran).astype(int) + 3
        noise = rng.normal(0, 1, (*dims, 3))
        lattice = _smooth(_smooth(noise))
        if _compiled():  # the same arithmetic, compiled (bitwise equal)
            coord = torch.ops.pointins.elastic_displace(
                torch.from_numpy(np.ascontiguousarray(coord, np.float64)), torch.from_numpy(lattice),
                [float(v) for v in lo], float(gran), float(mag),
            ).numpy()  # fmt: skip
        else:
            coord = _displace_numpy(coord, lattice, lo, gran, mag)
    d["coord"] = coord
    return d


def _displace_numpy(coord: np.ndarray, lattice: np.ndarray, lo: np.ndarray, gran: float, mag: float) -> np.ndarray:
    """``coord + mag * trilinear(lattice, (coord - lo) / gran + 1)`` (the reference of the compiled kernel)."""
    dims = np.array(lattice.shape[:3])
    flat = lattice.reshape(-1, 3)
    g = (coord - lo) / gran + 1.0
    i0 = np.clip(np.floor(g).astype(int), 0, dims - 2)
    f = g - i0
    f1 = 1 - f
    base = (i0[:, 0] * dims[1] + i0[:, 1]) * dims[2] + i0[:, 2]
    disp = np.zeros_like(coord)
    for corner in range(8):  # trilinear weights (wx * wy) * wz, corners in x, y, z bit order
        o = ((corner >> 2) & 1, (corner >> 1) & 1, corner & 1)
        w = (f if o[0] else f1)[:, 0] * (f if o[1] else f1)[:, 1] * (f if o[2] else f1)[:, 2]
        disp += w[:, None] * flat[base + (o[0] * dims[1] + o[1]) * dims[2] + o[2]]
    return coord + disp * mag


def voxel_grouping(d: dict, grid_size: float) -> dict:
    """The deterministic part of :func:`grid_sample` (which voxel each point is in, the voxels' grid coordinates),
    to cache with a scene and pass back as ``grouping=``: a train-mode sample then only draws its random points."""
    from pointins import ops

    coord = torch.from_numpy(np.ascontiguousarray(d["coord"], dtype=np.float32))
    vox = ops.voxelize(coord, None, grid_size, mode="all")
    return {"grid_size": float(grid_size), "points": _n(d), "inverse": vox.inverse,
            "grid_coord": vox.grid_coord.numpy().astype(np.int32)}  # fmt: skip


def grid_sample(d: dict, grid_size: float, mode: str = "train", rng: np.random.Generator | None = None,
                grouping: dict | None = None):  # fmt: skip
    """Keep one point per voxel of side ``grid_size`` and add ``grid_coord`` (int32, minimum at 0).

    ``mode="train"`` keeps a random point of each voxel (drawn from ``rng``); ``mode="test"`` returns a
    list of fragments, each with one point of every voxel, together covering every point (Pointcept's test
    mode). Uses :func:`pointins.ops.voxelize`; with a ``grouping`` of the same points and grid size
    (:func:`voxel_grouping`) train mode only draws the points (:func:`pointins.ops.voxel_select`), with the
    same result.
    """
    from pointins import ops

    if mode not in ("train", "test"):
        raise ValueError(f"grid_sample: mode must be 'train' or 'test', got {mode!r}.")
    n = _n(d)
    if n == 0:
        out = take(d, np.zeros(0, np.int64))
        out["grid_coord"] = np.zeros((0, 3), np.int32)
        return out if mode == "train" else [out]
    seed = int(rng.integers(2**62)) if rng is not None else 0
    if (mode == "train" and grouping is not None and grouping["points"] == n
            and grouping["grid_size"] == float(grid_size)):  # fmt: skip
        index = ops.voxel_select(grouping["inverse"], len(grouping["grid_coord"]), seed)
        out = take(d, index.numpy())
        out["grid_coord"] = grouping["grid_coord"]
        return out
    coord = torch.from_numpy(np.ascontiguousarray(d["coord"], dtype=np.float32))
    vox = ops.voxelize(coord, None, grid_size, mode=mode, seed=seed if mode == "train" else None)
    gc = vox.grid_coord.numpy().astype(np.int32)
    if mode == "train":
        out = take(d, vox.index.numpy())
        out["grid_coord"] = gc
        return out
    frags = []
    for f in vox.fragments.numpy():
        out = take(d, f)
        out["grid_coord"] = gc
        frags.append(out)
    return frags


def nearest_crop(d: dict, num_points: int, centre: np.ndarray) -> dict:
    """The ``num_points`` points nearest to ``centre`` (in their original order)."""
    n = _n(d)
    if num_points >= n:
        return d
    diff = d["coord"] - centre
    sq = diff * diff
    dist = sq[:, 0] + sq[:, 1] + sq[:, 2]  # = sq.sum(1) (same additions in the same order), without its slow reduce
    keep = np.sort(np.argpartition(dist, num_points - 1)[:num_points])
    return take(d, keep)


def sphere_crop(d: dict, rng: np.random.Generator, radius: float | None = None, max_points: int | None = None,
                centre: np.ndarray | None = None) -> dict:  # fmt: skip
    """Points within ``radius`` of ``centre`` (a random point by default), then at most ``max_points`` of
    them nearest the centre."""
    n = _n(d)
    if not n:
        return d
    if centre is None:
        centre = d["coord"][int(rng.integers(n))]
    if radius is not None:
        d = take(d, np.flatnonzero(((d["coord"] - centre) ** 2).sum(1) <= radius * radius))
    if max_points is not None:
        d = nearest_crop(d, max_points, centre)
    return d
