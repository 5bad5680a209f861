"""Look at a scene: ``python -m pointins.data.show PATH`` writes a PNG and a coloured PLY.

The PNG has one row per colouring and two columns: top-down and oblique (z-buffered point splats).
Colourings: ``rgb`` (the scan's colours), ``strength`` (LiDAR intensity), ``semantic``, ``instance``
(stuff in grey), ``view`` (which global/local training view covers each point: global 0 red, global 1
blue, local views green/orange/purple/cyan, uncovered light grey) and ``mask`` (global view 0's block
mask at the end of the mask schedule: hidden cubes red, visible points blue). By default every colouring
the data supports is drawn. The PLY has the first colouring as its colours plus ``label`` / ``instance``
properties, ready for MeshLab or CloudCompare.

PATH is anything :func:`pointins.data.read` reads (a file or a Pointcept scene folder), or a dataset
folder (its first scene, or ``--scene N``).
"""

from __future__ import annotations

import argparse
import math
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

__all__ = ["instance_colors", "label_colors", "render", "write_png"]

_BASE = np.array([[174, 199, 232], [152, 223, 138], [31, 119, 180], [255, 187, 120], [188, 189, 34],
                  [140, 86, 75], [255, 152, 150], [214, 39, 40], [197, 176, 213], [148, 103, 189],
                  [196, 156, 148], [23, 190, 207], [247, 182, 210], [219, 219, 141], [255, 127, 14],
                  [158, 218, 229], [44, 160, 44], [112, 128, 144], [227, 119, 194], [82, 84, 163]],
                 np.uint8)  # fmt: skip


def label_colors(labels: np.ndarray) -> np.ndarray:
    """A fixed colour per semantic class (20 hand-picked, then hashed); -1 (ignore) is black."""
    labels = np.asarray(labels, np.int64)
    out = np.empty((len(labels), 3), np.uint8)
    small = (labels >= 0) & (labels < len(_BASE))
    out[small] = _BASE[labels[small]]
    big = labels >= len(_BASE)
    out[big] = _hash_colors(labels[big])
    out[labels < 0] = 0
    return out


def _hash_colors(ids: np.ndarray) -> np.ndarray:
    h = (ids * 0.618033988749895) % 1.0  # golden-ratio hues, distinct for neighbouring ids
    s = 0.55 + 0.4 * ((ids * 0.377) % 1.0)
    v = 0.75 + 0.25 * ((ids * 0.5213) % 1.0)
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = np.choose(i[None], [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]])
    return (np.stack(list(rgb) if rgb.ndim == 2 else rgb, -1) * 255).astype(np.uint8).reshape(-1, 3)


def instance_colors(instance: np.ndarray) -> np.ndarray:
    """A distinct colour per instance id; -1 (stuff / none) light grey."""
    instance = np.asarray(instance, np.int64)
    out = np.full((len(instance), 3), 200, np.uint8)
    thing = instance >= 0
    if thing.any():
        out[thing] = _hash_colors(instance[thing] + 1)
    return out


def _camera(coord: np.ndarray, view: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = np.asarray(coord, np.float64)
    if view == "top":
        return c[:, 0], c[:, 1], -c[:, 2]
    az, el = math.radians(-35.0), math.radians(40.0)
    x = c[:, 0] * math.cos(az) - c[:, 1] * math.sin(az)
    y = c[:, 0] * math.sin(az) + c[:, 1] * math.cos(az)
    return x, y * math.sin(el) + c[:, 2] * math.cos(el), y * math.cos(el) - c[:, 2] * math.sin(el)


def render(coord: np.ndarray, colors: np.ndarray, view: str = "top", size: tuple[int, int] = (640, 480),
           point_px: int = 2, shade: bool = True, normal: np.ndarray | None = None,
           fit: float = 1.0) -> np.ndarray:  # fmt: skip
    """Splat points into an (H, W, 3) uint8 image (white background), nearest point per pixel.

    ``view``: ``"top"`` (looking down z) or ``"oblique"`` (40 degrees above the horizon). With ``normal``,
    the oblique view leaves out points facing away from the camera (so near walls do not hide a room).
    ``fit``: the framed share of points per axis (e.g. 0.98 frames the 1st-99th percentiles; LiDAR sweeps
    have a few returns far out).
    """
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    if len(coord) == 0:
        return img
    sx, sy, depth = _camera(coord, view)
    col = np.asarray(colors, np.float64)
    if normal is not None and view != "top":
        az, el = math.radians(-35.0), math.radians(40.0)
        away = np.array([math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), -math.sin(el)])
        front = np.asarray(normal, np.float64) @ away < 0.25
        sx, sy, depth, col = sx[front], sy[front], depth[front], col[front]
        if not len(sx):
            return img
    q = (1.0 - fit) / 2 * 100
    x0, x1 = np.percentile(sx, [q, 100 - q]) if fit < 1 else (sx.min(), sx.max())
    y0, y1 = np.percentile(sy, [q, 100 - q]) if fit < 1 else (sy.min(), sy.max())
    margin = 6
    span_x, span_y = max(x1 - x0, 1e-6), max(y1 - y0, 1e-6)
    scale = min((w - 2 * margin - point_px) / span_x, (h - 2 * margin - point_px) / span_y)
    px = np.floor((sx - x0) * scale + margin + (w - 2 * margin - span_x * scale) / 2).astype(np.int64)
    py = (h - 1 - np.floor((sy - y0) * scale + margin + (h - 2 * margin - span_y * scale) / 2)).astype(np.int64)
    if shade and view != "top":
        dn = (depth - depth.min()) / max(np.ptp(depth), 1e-6)
        col = col * (1.0 - 0.35 * dn)[:, None]
    offs = [(dx, dy) for dx in range(point_px) for dy in range(point_px)]
    pxs = np.concatenate([px + dx for dx, _ in offs])
    pys = np.concatenate([py - dy for _, dy in offs])
    dep = np.tile(depth, len(offs))
    cols = np.tile(col, (len(offs), 1))
    ok = (pxs >= 0) & (pxs < w) & (pys >= 0) & (pys < h)
    pix = pys[ok] * w + pxs[ok]
    order = np.lexsort((dep[ok], pix))  # by pixel, nearest first
    first = np.unique(pix[order], return_index=True)[1]
    sel = order[first]
    img.reshape(-1, 3)[pix[sel]] = np.clip(cols[ok][sel], 0, 255).astype(np.uint8)
    return img


def write_png(path, img: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image as an 8-bit RGB PNG (zlib, no dependencies)."""
    img = np.ascontiguousarray(img, np.uint8)
    h, w, _ = img.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, w * 3)], 1).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    Path(path).write_bytes(png)


_VIEW_COLORS = np.array([[214, 39, 40], [31, 119, 180], [44, 160, 44], [255, 127, 14], [148, 103, 189],
                         [23, 190, 207], [140, 86, 75], [227, 119, 194]], np.uint8)  # fmt: skip


def colorings(scene: dict, by: list[str], seed: int = 0, view_config=None) -> dict[str, np.ndarray]:
    """Per-point colours of a grid-sampled scene for each requested colouring."""
    out = {}
    n = len(scene["coord"])
    for name in by:
        if name == "rgb":
            out[name] = np.clip(scene["color"], 0, 255).astype(np.uint8)
        elif name == "strength":
            s = np.asarray(scene["strength"], np.float64).reshape(-1)
            s = np.clip(s / max(np.quantile(s, 0.99), 1e-6), 0, 1)
            out[name] = (np.stack([s, s**0.5 * 0.8, 1 - s], 1) * 255).astype(np.uint8)
        elif name == "semantic":
            out[name] = label_colors(scene["segment"])
        elif name == "instance":
            out[name] = instance_colors(scene["instance"])
        elif name in ("view", "mask"):
            from pointins.data.masking import MaskSchedule, block_mask
            from pointins.data.views import ViewConfig, make_views

            rng = np.random.default_rng(seed)
            views = make_views(scene, view_config or ViewConfig(), rng)
            if name == "view":
                col = np.full((n, 3), 225, np.uint8)
                allv = views["global"] + views["local"]
                for k, v in reversed(list(enumerate(allv))):  # global views drawn over local ones
                    col[v["index"]] = _VIEW_COLORS[k % len(_VIEW_COLORS)]
                out[name] = col
            else:
                v = views["global"][0]
                size, ratio = MaskSchedule().at(1.0)
                import torch

                m = block_mask(v["coord"], size=size, ratio=ratio, generator=torch.Generator().manual_seed(seed))
                col = np.full((n, 3), 225, np.uint8)
                col[v["index"]] = np.where(m[:, None], [[214, 39, 40]], [[31, 119, 180]])
                out[name] = col
        else:
            raise ValueError(f"show: unknown colouring {name!r} (rgb, strength, semantic, instance, view, mask).")
    return out


def show(path, out: str | None = None, by: list[str] | None = None, scene_index: int = 0, size: int = 520,
         seed: int = 0, grid_size: float | None = None) -> tuple[Path, Path]:  # fmt: skip
    """Render ``path`` (see the module docstring); returns the PNG and PLY paths."""
    from pointins.data.readers import PointCloudDataset, read
    from pointins.data.views import ViewConfig, prepare_scene
    from pointins.data.writers import write_ply

    path = Path(path)
    if path.is_dir() and not (path / "coord.npy").exists():
        ds = PointCloudDataset(path)
        data = ds.load(scene_index)
        data.pop("name", None)
    else:
        data = read(path)
    outdoor = "color" not in data and "strength" in data
    if grid_size is None:
        grid_size = 0.05 if outdoor else 0.02
    vcfg = ViewConfig.outdoor() if outdoor else ViewConfig()
    vcfg.grid_size = grid_size
    scene = prepare_scene(data, grid_size, np.random.default_rng(seed))
    if by is None:
        by = [k for k, need in (("rgb", "color"), ("strength", "strength"), ("semantic", "segment"),
                                ("instance", "instance")) if need in scene] + ["view", "mask"]  # fmt: skip
    for name, need in (("rgb", "color"), ("strength", "strength"), ("semantic", "segment"), ("instance", "instance")):
        if name in by and need not in scene:
            raise ValueError(f"show: {path} has no {need}, so it cannot be coloured by {name}.")
    cols = colorings(scene, by, seed, vcfg)
    w, h = size, int(size * 0.75)
    gap = 4
    canvas = np.full((len(by) * (h + gap) - gap, 2 * w + gap, 3), 255, np.uint8)
    canvas[:] = 235
    for r, name in enumerate(by):
        for c, view in enumerate(("top", "oblique")):
            canvas[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = render(
                scene["coord"], cols[name], view, (w, h), normal=scene.get("normal"), fit=0.96 if outdoor else 1.0
            )
    prefix = Path(out) if out else path.with_name(path.name.split(".")[0] + "_show")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    png, ply = prefix.with_suffix(".png"), prefix.with_suffix(".ply")
    write_png(png, canvas)
    ply_data = {"coord": scene["coord"], "color": cols[by[0]]}
    for k in ("segment", "instance"):
        if k in scene:
            ply_data[k] = scene[k]
    write_ply(ply, ply_data)
    return png, ply


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pointins.data.show", description=__doc__.split("\n\n")[0])
    p.add_argument("path", help="a scan file, a Pointcept scene folder, or a dataset folder")
    p.add_argument("--out", help="output prefix (default: next to PATH, <name>_show.png / .ply)")
    p.add_argument("--by", help="comma-separated colourings: rgb,strength,semantic,instance,view,mask")
    p.add_argument("--scene", type=int, default=0, help="scene of a dataset folder")
    p.add_argument("--size", type=int, default=520, help="panel width in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid-size", type=float, default=None, help="grid sampling (default 0.02 indoor, 0.05 LiDAR)")
    a = p.parse_args(argv)
    from pointins.data.readers import DataError

    try:
        png, ply = show(a.path, a.out, a.by.split(",") if a.by else None, a.scene, a.size, a.seed, a.grid_size)
    except (DataError, ValueError) as e:
        print(f"pointins.data.show: {e}", file=sys.stderr)
        return 2
    print(f"wrote {png} and {ply}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
