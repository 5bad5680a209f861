"""Synthetic indoor rooms: walls and floor (stuff) plus furniture instances built from parametric parts.

Each furniture template returns an :class:`Item` in its local frame (footprint centred on the origin,
standing on z = 0, front facing +y). Items are arranged in groups (a row of same-class items side by side,
a table with chairs along its sides, desks with their chairs), and groups are placed in the room against
a wall or free-standing, without overlap (2D oriented-box separating-axis test). All surfaces are then
sampled in one vectorised pass and made scan-like: noise along and across the surface, no bottoms on the
floor, faces against walls removed, floor and wall hidden behind solid furniture removed, door/window
openings and random occlusion holes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from pointins.data._geometry import Surfaces, consecutive_ids, obb_corners, obb_overlap, yaw_matrix

CLASSES = ("wall", "floor", "chair", "table", "desk", "sofa", "bed", "cabinet", "bookshelf", "toilet")
THING_CLASSES = (2, 3, 4, 5, 6, 7, 8, 9)
_C = {name: i for i, name in enumerate(CLASSES)}
SOLID = {_C["sofa"], _C["bed"], _C["cabinet"], _C["bookshelf"], _C["toilet"]}  # hide what is under/behind them

# base colours (RGB 0-255) to draw an instance's colour from, per class and per material
_PALETTE = {
    "fabric": [(70, 80, 110), (120, 40, 40), (60, 60, 60), (150, 130, 100), (40, 90, 70), (170, 160, 150)],
    "wood": [(150, 105, 65), (110, 75, 45), (190, 150, 100), (90, 60, 40)],
    "metal": [(60, 60, 65), (170, 170, 175), (30, 30, 30)],
    "white": [(225, 225, 220), (240, 240, 235), (200, 205, 210)],
    "plastic": [(200, 200, 200), (40, 40, 45), (180, 60, 50), (50, 100, 160)],
    "book": [(160, 40, 40), (40, 70, 140), (200, 180, 60), (40, 110, 60), (220, 210, 190), (90, 50, 100)],
}


@dataclass
class IndoorConfig:
    """Knobs of the indoor room generator (lengths in metres)."""

    room_size: tuple[float, float] = (4.0, 10.0)  # side lengths drawn uniformly from this range
    height: tuple[float, float] = (2.5, 3.2)
    points: tuple[int, int] = (50_000, 200_000)  # final point count is clipped to this range
    density: float = 1500.0  # surface samples per m^2 (before holes); sets the count within `points`
    noise: float = 0.004  # std of the displacement along the normal (m); a third of it across
    normal_noise: float = 0.05
    holes_per_m2: float = 0.12  # occlusion-like holes (discs removed from the surfaces)
    hole_radius: tuple[float, float] = (0.05, 0.35)
    items_per_m2: float = 0.45  # furniture instances per m^2 of floor (upper bound; placement may fail)
    max_items: int = 60

    def __post_init__(self):
        from pointins._validate import check_fields

        for name in ("room_size", "height", "points", "hole_radius"):
            setattr(self, name, tuple(getattr(self, name)))
        check_fields("IndoorConfig", self, {
            "room_size": ("pair", 1.0, 1000.0), "height": ("pair", 1.0, 100.0), "points": ("pair", 100, 2**26),
            "density": ("float", 0, None, "lo-open"), "noise": ("float", 0, 1), "normal_noise": ("float", 0, 10),
            "holes_per_m2": ("float", 0, 100), "hole_radius": ("pair", 0, 10), "items_per_m2": ("float", 0, 100),
            "max_items": ("int", 0, 10_000),
        })  # fmt: skip
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in self.points):
            raise TypeError(f"IndoorConfig: points must be two integers, got {self.points!r}.")


@dataclass
class Item:
    cls: int
    w: float  # footprint along local x
    d: float  # footprint along local y (front is +y)
    h: float
    parts: list = field(default_factory=list)  # ("box", lo, hi, material, skip) | ("cyl", base, r, h, material)

    def box(self, lo, hi, mat, skip=()):
        self.parts.append(("box", lo, hi, mat, skip))

    def cyl(self, base, r, h, mat):
        self.parts.append(("cyl", base, r, h, mat))


def _u(rng, a, b):
    return float(rng.uniform(a, b))


def chair(rng) -> Item:
    w, d, sh, bh = _u(rng, 0.42, 0.56), _u(rng, 0.42, 0.54), _u(rng, 0.42, 0.5), _u(rng, 0.32, 0.5)
    st, bt, lt = _u(rng, 0.04, 0.08), _u(rng, 0.03, 0.07), _u(rng, 0.025, 0.045)
    it = Item(_C["chair"], w, d, sh + bh)
    leg = "metal" if rng.random() < 0.5 else "wood"
    z1 = sh - st
    for sx in (-1, 1):
        for sy in (-1, 1):
            cx, cy = sx * (w / 2 - lt), sy * (d / 2 - lt)
            if rng.random() < 0.5 and leg == "metal":
                it.cyl((cx, cy, 0.0), lt / 2, z1, leg)
            else:
                it.box((cx - lt / 2, cy - lt / 2, 0.0), (cx + lt / 2, cy + lt / 2, z1), leg)
    it.box((-w / 2, -d / 2, z1), (w / 2, d / 2, sh), "fabric")
    it.box((-w / 2, -d / 2, sh), (w / 2, -d / 2 + bt, sh + bh), "fabric")
    if rng.random() < 0.3:  # armrests
        for sx in (-1, 1):
            it.box(
                (sx * w / 2 - 0.03 * (sx > 0), -d / 2, sh + 0.18), (sx * w / 2 + 0.03 * (sx < 0), d / 2, sh + 0.22), leg
            )
    return it


def table(rng) -> Item:
    if rng.random() < 0.25:  # round table on a pedestal
        r, h = _u(rng, 0.4, 0.65), _u(rng, 0.7, 0.78)
        it = Item(_C["table"], 2 * r, 2 * r, h)
        it.cyl((0, 0, h - 0.04), r, 0.04, "wood")
        it.cyl((0, 0, 0.0), 0.05, h - 0.04, "metal")
        it.cyl((0, 0, 0.0), 0.25, 0.03, "metal")
        return it
    w, d, h, t, lt = _u(rng, 0.9, 2.0), _u(rng, 0.6, 1.0), _u(rng, 0.7, 0.78), _u(rng, 0.03, 0.05), _u(rng, 0.04, 0.07)
    it = Item(_C["table"], w, d, h)
    it.box((-w / 2, -d / 2, h - t), (w / 2, d / 2, h), "wood")
    leg = "metal" if rng.random() < 0.5 else "wood"
    ins = _u(rng, 0.03, 0.1)
    for sx in (-1, 1):
        for sy in (-1, 1):
            cx, cy = sx * (w / 2 - ins - lt / 2), sy * (d / 2 - ins - lt / 2)
            it.box((cx - lt / 2, cy - lt / 2, 0.0), (cx + lt / 2, cy + lt / 2, h - t), leg)
    return it


def desk(rng) -> Item:
    w, d, h, t, pt = _u(rng, 1.0, 1.6), _u(rng, 0.55, 0.8), _u(rng, 0.72, 0.76), 0.03, _u(rng, 0.02, 0.04)
    it = Item(_C["desk"], w, d, h)
    it.box((-w / 2, -d / 2, h - t), (w / 2, d / 2, h), "wood")
    for sx in (-1, 1):
        x0 = sx * w / 2 - (pt if sx > 0 else 0)
        it.box((x0, -d / 2, 0.0), (x0 + pt, d / 2, h - t), "wood")
    it.box((-w / 2 + pt, -d / 2, 0.3), (w / 2 - pt, -d / 2 + pt, h - t), "wood", skip=("-y",))
    if rng.random() < 0.6:  # drawer block on one side
        dw = _u(rng, 0.35, 0.45)
        sx = rng.choice((-1, 1))
        x0 = sx * (w / 2 - pt) - (dw if sx > 0 else 0)
        it.box((x0, -d / 2 + 0.02, 0.0), (x0 + dw, d / 2 - 0.02, h - t), "wood")
    return it


def sofa(rng) -> Item:
    w, d, h = _u(rng, 1.5, 2.4), _u(rng, 0.8, 1.0), _u(rng, 0.75, 0.9)
    seat, back, arm, arm_h = _u(rng, 0.38, 0.46), _u(rng, 0.15, 0.25), _u(rng, 0.1, 0.2), _u(rng, 0.55, 0.65)
    it = Item(_C["sofa"], w, d, h)
    it.box((-w / 2 + arm, -d / 2 + back, 0.0), (w / 2 - arm, d / 2, seat), "fabric")
    it.box((-w / 2, -d / 2, 0.0), (w / 2, -d / 2 + back, h), "fabric")
    for sx in (-1, 1):
        x0 = -w / 2 if sx < 0 else w / 2 - arm
        it.box((x0, -d / 2 + back, 0.0), (x0 + arm, d / 2, arm_h), "fabric")
    return it


def bed(rng) -> Item:
    w, d = _u(rng, 1.0, 1.9), _u(rng, 1.95, 2.2)
    fh, mh, hb = _u(rng, 0.2, 0.35), _u(rng, 0.15, 0.25), _u(rng, 0.8, 1.2)
    it = Item(_C["bed"], w, d, hb)
    it.box((-w / 2, -d / 2, 0.0), (w / 2, d / 2, fh), "wood")
    it.box((-w / 2 + 0.03, -d / 2 + 0.06, fh), (w / 2 - 0.03, d / 2 - 0.03, fh + mh), "white")
    it.box((-w / 2, -d / 2, 0.0), (w / 2, -d / 2 + 0.06, hb), "wood")
    for k in range(1 if w < 1.3 else 2):  # pillows
        pw = min(0.6, w / 2 - 0.1) if w >= 1.3 else w - 0.3
        x0 = -w / 2 + 0.1 + k * (w / 2) if w >= 1.3 else -pw / 2
        it.box((x0, -d / 2 + 0.1, fh + mh), (x0 + pw, -d / 2 + 0.5, fh + mh + 0.12), "white")
    return it


def cabinet(rng) -> Item:
    w, d, h = _u(rng, 0.4, 1.2), _u(rng, 0.4, 0.6), _u(rng, 0.7, 2.0)
    it = Item(_C["cabinet"], w, d, h)
    it.box((-w / 2, -d / 2, 0.0), (w / 2, d / 2, h), rng.choice(["wood", "white", "metal"]))
    doors = 2 if w > 0.7 else 1
    for k in range(doors):  # handles
        x = (k + 0.5) * w / doors - w / 2 + (0.1 if doors == 1 else (0.15 if k == 0 else -0.15)) * 0.5
        it.box((x - 0.01, d / 2, h * 0.55), (x + 0.01, d / 2 + 0.025, h * 0.55 + 0.12), "metal", skip=("-y",))
    return it


def bookshelf(rng) -> Item:
    w, d, h, t = _u(rng, 0.6, 1.2), _u(rng, 0.28, 0.4), _u(rng, 1.4, 2.2), _u(rng, 0.018, 0.03)
    it = Item(_C["bookshelf"], w, d, h)
    for sx in (-1, 1):
        x0 = -w / 2 if sx < 0 else w / 2 - t
        it.box((x0, -d / 2, 0.0), (x0 + t, d / 2, h), "wood")
    it.box((-w / 2 + t, -d / 2, 0.0), (w / 2 - t, -d / 2 + t, h), "wood")
    shelves = int(rng.integers(3, 7))
    levels = np.linspace(0.05, h - t, shelves + 1)
    for z in levels:
        it.box((-w / 2 + t, -d / 2 + t, z), (w / 2 - t, d / 2, z + t), "wood")
    for z0, z1 in itertools.pairwise(levels):  # rows of books
        x = -w / 2 + t + _u(rng, 0.0, 0.1)
        while x < w / 2 - t - 0.1 and rng.random() < 0.85:
            bw = _u(rng, 0.08, 0.3)
            bh = min(_u(rng, 0.15, 0.3), (z1 - z0) - t - 0.02)
            x1 = min(x + bw, w / 2 - t)
            it.box((x, -d / 2 + t, z0 + t), (x1, d / 2 - _u(rng, 0.02, 0.08), z0 + t + bh), "book")
            x = x1 + _u(rng, 0.0, 0.15)
    return it


def toilet(rng) -> Item:
    r, bh = _u(rng, 0.17, 0.21), _u(rng, 0.38, 0.42)
    tw, td, th = _u(rng, 0.34, 0.44), _u(rng, 0.14, 0.2), _u(rng, 0.3, 0.4)
    d = td + 2 * r + 0.05
    it = Item(_C["toilet"], max(2 * r, tw), d, bh + th)
    cy = -d / 2 + td + r
    it.cyl((0.0, cy, 0.0), r * 0.6, bh * 0.5, "white")
    it.cyl((0.0, cy, bh * 0.5), r, bh * 0.5, "white")
    it.box((-tw / 2, -d / 2, bh - 0.05), (tw / 2, -d / 2 + td, bh + th), "white")
    return it


TEMPLATES = {
    "chair": chair,
    "table": table,
    "desk": desk,
    "sofa": sofa,
    "bed": bed,
    "cabinet": cabinet,
    "bookshelf": bookshelf,
    "toilet": toilet,
}


# ---- groups: members placed in a group frame (front +y) ------------------------------------------------------


def _row(items: list[Item], gap_range, rng) -> list[tuple[Item, float, float, float]]:
    """Items side by side along x, backs aligned, centred on x = 0 (the hard case for instance separation)."""
    depth = max(it.d for it in items)
    gaps = [_u(rng, *gap_range) for _ in items[1:]] + [0.0]
    total = sum(it.w for it in items) + sum(gaps)
    out, x = [], -total / 2
    for it, gap in zip(items, gaps, strict=True):
        out.append((it, x + it.w / 2, -depth / 2 + it.d / 2, 0.0))
        x += it.w + gap
    return out


def _table_set(rng) -> list:
    t = table(rng)
    members = [(t, 0.0, 0.0, 0.0)]
    proto = chair(rng)  # chairs around one table are alike (same template draw, own instances)
    for side in (-1, 1):
        n = int(max(0, (t.w - 0.1) // (proto.w + 0.08)))
        n = int(rng.integers(max(0, n - 1), n + 1)) if n else 0
        if n == 0:
            continue
        span = n * proto.w + (n - 1) * 0.08
        for k in range(n):
            cx = -span / 2 + proto.w / 2 + k * (proto.w + 0.08)
            cy = side * (t.d / 2 + proto.d / 2 + _u(rng, -0.05, 0.1))
            members.append((_copies(proto, 1)[0], cx, cy, 0.0 if side < 0 else np.pi))
    return members


def _desk_row(rng, n) -> list:
    members, x = [], 0.0
    desks = [desk(rng) for _ in range(n)]
    total = sum(d.w for d in desks) + 0.02 * (n - 1)
    for dk in desks:
        cx = x + dk.w / 2 - total / 2
        members.append((dk, cx, 0.0, 0.0))
        if rng.random() < 0.85:
            ch = chair(rng)
            members.append((ch, cx + _u(rng, -0.15, 0.15), dk.d / 2 + ch.d / 2 - _u(rng, 0.0, 0.1), np.pi))
        x += dk.w + 0.02
    return members


def _group_box(members) -> tuple[float, float, float, float]:
    """(centre x, centre y, half w, half d) of the members' footprints in the group frame."""
    pts = []
    for it, cx, cy, yaw in members:
        pts.append(obb_corners((cx, cy, it.w / 2, it.d / 2, yaw)))
    pts = np.concatenate(pts)
    lo, hi = pts.min(0), pts.max(0)
    return (lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, (hi[0] - lo[0]) / 2, (hi[1] - lo[1]) / 2


_WALL_YAW = (0.0, np.pi / 2, np.pi, -np.pi / 2)  # facing into the room from wall y=0, x=Lx, y=Ly, x=0


def _requests(rng, room_type: str, area: float) -> list[tuple[str, list]]:
    """(placement, members) groups for a room; placement is "wall" or "free"."""
    g = []
    row = lambda cls, n, gap=(0.0, 0.06): _row([TEMPLATES[cls](rng) for _ in range(n)], gap, rng)
    same = lambda cls, n, gap=(0.0, 0.06): _row(_copies(TEMPLATES[cls](rng), n), gap, rng)
    # first (so it fits into the empty room): a row of same-class instances side by side, the hard case
    pair_cls = {"bedroom": "cabinet", "living": "chair", "restroom": "toilet", "classroom": "chair"}.get(
        room_type, ("chair", "cabinet", "bookshelf", "toilet", "desk")[int(rng.integers(5))]
    )
    gap = (0.25, 0.5) if pair_cls == "toilet" else (0.0, 0.08)
    g.append(("wall" if pair_cls != "chair" else "free", same(pair_cls, int(rng.integers(2, 4)), gap)))
    if room_type == "office":
        for _ in range(max(1, int(area / 14))):
            g.append(("free" if rng.random() < 0.5 else "wall", _desk_row(rng, int(rng.integers(2, 5)))))
        g.append(("wall", same("cabinet", int(rng.integers(2, 4)))))
        g.append(("wall", same("bookshelf", int(rng.integers(2, 4)))))
    elif room_type == "conference":
        g.append(("free", _table_set(rng)))
        g.append(("wall", row("chair", int(rng.integers(3, 7)), (0.02, 0.12))))
        g.append(("wall", row("cabinet", int(rng.integers(1, 3)))))
    elif room_type == "classroom":
        for _ in range(int(rng.integers(2, 5))):
            g.append(("free", same("chair", int(rng.integers(3, 7)), (0.03, 0.15))))
        g.append(("wall", _desk_row(rng, 1)))
        g.append(("wall", row("bookshelf", int(rng.integers(1, 4)))))
    elif room_type == "bedroom":
        g.append(("wall", same("bed", int(rng.integers(1, 3)), (0.3, 0.8))))
        g.append(("wall", row("cabinet", int(rng.integers(1, 4)))))
        g.append(("wall", _desk_row(rng, 1)))
        g.append(("wall", row("bookshelf", int(rng.integers(1, 3)))))
    elif room_type == "living":
        g.append(("wall", row("sofa", 1)))
        g.append(("free", row("sofa", 1)))
        g.append(("free", _table_set(rng)))
        g.append(("wall", same("bookshelf", int(rng.integers(2, 4)))))
        g.append(("free", same("chair", int(rng.integers(2, 4)), (0.05, 0.3))))
    elif room_type == "restroom":
        g.append(("wall", same("toilet", int(rng.integers(2, 5)), (0.25, 0.5))))
        g.append(("wall", row("cabinet", int(rng.integers(1, 3)))))
    # fill with a mix of every class so each room type still shows the whole label set now and then
    names = list(TEMPLATES)
    for _ in range(int(rng.integers(2, 6 + int(area / 10)))):
        cls = names[int(rng.integers(len(names)))]
        n = int(rng.integers(1, 4)) if cls in ("chair", "cabinet", "bookshelf", "toilet") else 1
        g.append(("wall" if cls in ("cabinet", "bookshelf", "toilet", "bed") else "free", row(cls, n)))
    return g


def _copies(proto: Item, n: int) -> list[Item]:
    return [Item(proto.cls, proto.w, proto.d, proto.h, list(proto.parts)) for _ in range(n)]


ROOM_TYPES = ("office", "conference", "classroom", "bedroom", "living", "restroom", "mixed")


def _place_groups(rng, groups, lx, ly, max_items) -> list[tuple[Item, float, float, float]]:
    """World poses (item, x, y, yaw) of the groups that fit without overlap."""
    placed_boxes, items = [], []
    for placement, members in groups:
        if len(items) + len(members) > max_items:
            continue
        gx, gy, hw, hd = _group_box(members)
        for _ in range(40):
            if placement == "wall":
                wall = int(rng.integers(4))
                yaw = _WALL_YAW[wall]
                length = lx if wall % 2 == 0 else ly
                if 2 * hw + 0.1 > length:
                    continue
                s = _u(rng, hw + 0.05, length - hw - 0.05)
                off = hd + _u(rng, 0.01, 0.05)
                cx, cy = [(s, off), (lx - off, s), (lx - s, ly - off), (off, ly - s)][wall]
            else:
                yaw = float(rng.choice(_WALL_YAW)) + _u(rng, -0.3, 0.3) * (rng.random() < 0.4)
                cx, cy = _u(rng, 0.3, lx - 0.3), _u(rng, 0.3, ly - 0.3)
            # the group frame's box centre is (gx, gy); place that centre at (cx, cy)
            box = (cx, cy, hw, hd, yaw)
            corners = obb_corners(box)
            if corners.min() < 0.005 or (corners[:, 0] > lx - 0.005).any() or (corners[:, 1] > ly - 0.005).any():
                continue
            if any(obb_overlap(box, b, margin=0.15) for b in placed_boxes):
                continue
            placed_boxes.append(box)
            rot = yaw_matrix(yaw)[:2, :2]
            for it, mx, my, myaw in members:
                wx, wy = rot @ np.array([mx - gx, my - gy]) + np.array([cx, cy])
                items.append((it, float(wx), float(wy), yaw + myaw))
            break
    return items


def _colour(rng, mat: str) -> np.ndarray:
    pal = _PALETTE[mat]
    return np.clip(np.asarray(pal[int(rng.integers(len(pal)))], float) + rng.normal(0, 12, 3), 0, 255)


def _near_points(coord: np.ndarray, centres: np.ndarray, radius: float):
    """For each centre, the rows of ``coord`` in the 3x3x3 grid cells around it: every point closer than
    ``radius`` (and some farther), in ascending row order. Cells are 0.1% wider than ``radius`` so rounding in the
    cell numbers cannot drop a point of the ball. (A full scan per centre was 60% of a room's generation time.)"""
    side = radius * 1.001
    lo = coord.min(0)
    ijk = np.floor((coord - lo) / side).astype(np.int64) + 1  # a free layer of cells below ...
    dims = ijk.max(0) + 2  # ... and above
    key = (ijk[:, 0] * dims[1] + ijk[:, 1]) * dims[2] + ijk[:, 2]
    order = np.argsort(key, kind="stable")
    skey = key[order]
    cc = np.clip(np.floor((centres - lo) / side).astype(np.int64) + 1, 1, dims - 2)
    d = np.array([(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)])
    mid = ((cc[:, None, 0] + d[:, 0]) * dims[1] + (cc[:, None, 1] + d[:, 1])) * dims[2] + cc[:, None, 2]  # (n, 9)
    a = np.searchsorted(skey, mid - 1, "left")
    b = np.searchsorted(skey, mid + 1, "right")
    for ai, bi in zip(a, b, strict=True):
        yield np.sort(np.concatenate([order[x:y] for x, y in zip(ai, bi, strict=True)]))


def generate_room(rng: np.random.Generator, cfg: IndoorConfig | None = None) -> dict[str, np.ndarray]:
    """One room as a dict of arrays: coord (N,3) float32, color (N,3) uint8, normal (N,3) float32,
    segment (N,) int32 in ``CLASSES``, instance (N,) int32 (-1 on stuff, 0..I-1 on furniture)."""
    cfg = cfg or IndoorConfig()
    lx, ly = _u(rng, *cfg.room_size), _u(rng, *cfg.room_size)
    hz = _u(rng, *cfg.height)
    s = Surfaces()
    wall_c = _colour(rng, "white") * _u(rng, 0.8, 1.0)
    floor_c = _colour(rng, rng.choice(["wood", "fabric", "white"]))
    w, f = _C["wall"], _C["floor"]
    s.quad((0, 0, 0), (lx, 0, 0), (0, ly, 0), (0, 0, 1), f, -1, floor_c)
    s.quad((0, 0, 0), (lx, 0, 0), (0, 0, hz), (0, 1, 0), w, -1, wall_c)
    s.quad((lx, 0, 0), (0, ly, 0), (0, 0, hz), (-1, 0, 0), w, -1, wall_c)
    s.quad((0, ly, 0), (lx, 0, 0), (0, 0, hz), (0, -1, 0), w, -1, wall_c)
    s.quad((0, 0, 0), (0, ly, 0), (0, 0, hz), (1, 0, 0), w, -1, wall_c)

    room_type = ROOM_TYPES[int(rng.integers(len(ROOM_TYPES)))]
    area = lx * ly
    groups = _requests(rng, room_type, area)
    max_items = min(cfg.max_items, max(4, int(area * cfg.items_per_m2)))
    items = _place_groups(rng, groups, lx, ly, max_items)
    solids = []
    for inst, (it, x, y, yaw) in enumerate(items):
        rot, t = yaw_matrix(yaw), np.array([x, y, 0.0])
        mats: dict[str, np.ndarray] = {}
        for part in it.parts:
            mat = part[4] if part[0] == "cyl" else part[3]
            if mat not in mats:  # one colour per material per instance; books vary per box
                mats[mat] = _colour(rng, mat)
            col = _colour(rng, "book") if mat == "book" else mats[mat]
            if part[0] == "box":
                s.box(part[1], part[2], rot, t, it.cls, inst, col, skip=part[4])
            else:
                s.cylinder(part[1], part[2], part[3], rot, t, it.cls, inst, col)
        if it.cls in SOLID:
            solids.append((x, y, it.w / 2, it.d / 2, yaw, it.h))

    total_area = float((s.areas() * s.weights()).sum())
    target = int(np.clip(cfg.density * total_area * 0.8, cfg.points[0], cfg.points[1]))
    pts = s.sample(rng, max(cfg.density, 2.0 * target / total_area))
    coord, normal = pts["coord"], pts["normal"]
    sem, inst = pts["segment"], pts["instance"]
    keep = np.ones(len(coord), bool)
    stuff = inst < 0
    for x, y, hw, hd, yaw, h in solids:  # floor and wall hidden under/behind solid furniture
        local = (coord[:, :2] - (x, y)) @ yaw_matrix(yaw)[:2, :2]
        inside = (np.abs(local[:, 0]) < hw + 0.04) & (np.abs(local[:, 1]) < hd + 0.07) & (coord[:, 2] < h)
        keep &= ~(inside & stuff)
    # furniture faces looking into a wall they nearly touch
    for axis, pos, inward in ((1, 0.0, 1), (0, lx, -1), (1, ly, -1), (0, 0.0, 1)):
        near = np.abs(coord[:, axis] - pos) < 0.08
        keep &= ~(near & ~stuff & (normal[:, axis] * inward < -0.7))
    # openings: one door and some windows
    for k in range(1 + int(rng.integers(0, 4))):
        wall = int(rng.integers(4))
        axis_along = 0 if wall % 2 == 0 else 1
        pos = (0.0, lx, ly, 0.0)[wall]
        length = lx if wall % 2 == 0 else ly
        ww = _u(rng, 0.8, 1.0) if k == 0 else _u(rng, 0.8, 2.0)
        a = _u(rng, 0.1, max(0.11, length - ww - 0.1))
        z0, z1 = (0.0, _u(rng, 2.0, 2.2)) if k == 0 else (_u(rng, 0.8, 1.0), _u(rng, 1.8, 2.3))
        on_wall = (sem == w) & (np.abs(coord[:, 1 - axis_along] - pos) < 1e-6)
        keep &= ~(on_wall & (coord[:, axis_along] > a) & (coord[:, axis_along] < a + ww) & (coord[:, 2] > z0) &
                  (coord[:, 2] < z1))  # fmt: skip
    # occlusion-like holes: discs of missing surface around random surface points
    nh = int(rng.poisson(cfg.holes_per_m2 * total_area))
    if nh and len(coord):
        centres = coord[rng.integers(len(coord), size=nh)]
        radii = rng.uniform(*cfg.hole_radius, size=nh)
        for c, r, idx in zip(centres, radii, _near_points(coord, centres, cfg.hole_radius[1]), strict=True):
            keep[idx[((coord[idx] - c) ** 2).sum(1) < r * r]] = False
    idx = np.flatnonzero(keep)
    if len(idx) > target:
        idx = np.sort(rng.choice(idx, target, replace=False))
    coord, normal, sem, inst = coord[idx], normal[idx], sem[idx], inst[idx]
    color = pts["color"][idx]

    # scan noise: mostly along the normal, a little across it
    n = len(coord)
    coord = coord + normal * rng.normal(0, cfg.noise, (n, 1)) + rng.normal(0, cfg.noise / 3, (n, 3))
    normal = normal + rng.normal(0, cfg.normal_noise, (n, 3))
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    light = np.array([0.3, 0.2, 0.93])
    shade = 0.6 + 0.4 * np.abs(normal @ light)[:, None]
    color = np.clip(color * shade + rng.normal(0, 5, (n, 3)), 0, 255)
    inst = consecutive_ids(inst)
    return {
        "coord": coord.astype(np.float32),
        "color": np.round(color).astype(np.uint8),
        "normal": normal.astype(np.float32),
        "segment": sem.astype(np.int32),
        "instance": inst.astype(np.int32),
    }
