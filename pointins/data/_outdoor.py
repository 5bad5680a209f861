"""Synthetic outdoor LiDAR sweeps: a spinning 32- or 64-beam sensor ray-cast against a street scene.

The scene (world frame, ground at z = 0) is a road along x (optionally a cross road), raised sidewalks,
ground (terrain) beyond them, building blocks, trees (trunk + porous crown), hedges, poles, and the
things: cars (parked bumper to bumper along the kerbs and driving in the lanes), pedestrians (alone or
side by side in groups) and cyclists. Every ray of the sensor's (beam, azimuth) grid is intersected with
the ground planes analytically and with every primitive whose azimuth window it falls in (boxes by the
slab test, vertical cylinders and ellipsoids by their quadratics), keeping the nearest hit: occlusion is
exact. Then range noise, range- and reflectivity-dependent dropout and an intensity model (reflectivity
x incidence x range falloff) make it scan-like. Coordinates are returned in the sensor frame (sensor at
the origin, ground at z = -sensor height), as SemanticKITTI stores them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pointins.data._geometry import consecutive_ids

CLASSES = ("ground", "road", "sidewalk", "building", "vegetation", "pole", "car", "pedestrian", "cyclist")
THING_CLASSES = (6, 7, 8)
_C = {name: i for i, name in enumerate(CLASSES)}


@dataclass
class OutdoorConfig:
    """Knobs of the LiDAR sweep generator (lengths in metres, angles in degrees)."""

    beams: int = 64  # 64 (HDL-64E-like: +2 .. -24.8 deg) or 32 (HDL-32E-like: +10.67 .. -30.67 deg)
    columns: int | None = None  # azimuth steps per turn (default 2048 for 64 beams, 1800 for 32)
    sensor_height: float = 1.73
    max_range: float = 80.0
    min_range: float = 1.5
    range_noise: float = 0.015
    dropout: float = 0.03  # base probability that a return is lost
    street_length: float = 160.0
    cars: tuple[int, int] = (8, 24)
    pedestrians: tuple[int, int] = (3, 14)
    cyclists: tuple[int, int] = (1, 5)

    def __post_init__(self):
        from pointins._validate import check_fields

        for name in ("cars", "pedestrians", "cyclists"):
            setattr(self, name, tuple(getattr(self, name)))
        if self.beams not in (32, 64):
            raise ValueError(f"OutdoorConfig: beams must be 32 or 64, got {self.beams!r}.")
        check_fields("OutdoorConfig", self, {
            "columns": ("opt-int", 16, 100_000), "sensor_height": ("float", 0, 100, "lo-open"),
            "max_range": ("float", 0, 10_000, "lo-open"), "min_range": ("float", 0, 10_000),
            "range_noise": ("float", 0, 10), "dropout": ("float", 0, 1, "hi-open"),
            "street_length": ("float", 1, 100_000), "cars": ("pair", 0, 10_000), "pedestrians": ("pair", 0, 10_000),
            "cyclists": ("pair", 0, 10_000),
        })  # fmt: skip
        if self.min_range >= self.max_range:
            raise ValueError(f"OutdoorConfig: min_range ({self.min_range}) must be below max_range ({self.max_range}).")
        for name in ("cars", "pedestrians", "cyclists"):
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in getattr(self, name)):
                raise TypeError(f"OutdoorConfig: {name} must be two integers, got {getattr(self, name)!r}.")


class _Prims:
    """Primitives to ray-cast: oriented boxes, vertical cylinders, axis-aligned ellipsoids."""

    def __init__(self) -> None:
        self.items: list[tuple] = []  # (kind, params, sem, inst, reflectivity, porosity)

    def box(self, centre, half, yaw, sem, inst, refl, porous=0.0):
        self.items.append(("box", (np.asarray(centre, float), np.asarray(half, float), float(yaw)), sem, inst, refl,
                           porous))  # fmt: skip

    def cyl(self, cx, cy, r, z0, z1, sem, inst, refl):
        self.items.append(("cyl", (float(cx), float(cy), float(r), float(z0), float(z1)), sem, inst, refl, 0.0))

    def ellipsoid(self, centre, radii, sem, inst, refl, porous=0.0):
        self.items.append(("ell", (np.asarray(centre, float), np.asarray(radii, float)), sem, inst, refl, porous))

    def bounds(self, item) -> tuple[float, float, float]:
        """(cx, cy, radius) of a circle containing the primitive's footprint."""
        kind, p = item[0], item[1]
        if kind == "box":
            return p[0][0], p[0][1], float(np.hypot(p[1][0], p[1][1]))
        if kind == "cyl":
            return p[0], p[1], p[2]
        return p[0][0], p[0][1], float(max(p[1][0], p[1][1]))


def _hit_box(o, d, centre, half, yaw):
    c, s = np.cos(yaw), np.sin(yaw)
    rel = o - centre
    ol = np.stack([c * rel[..., 0] + s * rel[..., 1], -s * rel[..., 0] + c * rel[..., 1], rel[..., 2]], -1)
    dl = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dl
        t1, t2 = (-half - ol) * inv, (half - ol) * inv
    tlo, thi = np.minimum(t1, t2), np.maximum(t1, t2)
    tlo = np.where(np.isnan(tlo), -np.inf, tlo)
    thi = np.where(np.isnan(thi), np.inf, thi)
    tnear, axis = tlo.max(1), tlo.argmax(1)
    tfar = thi.min(1)
    hit = (tnear <= tfar) & (tnear > 0)
    t = np.where(hit, tnear, np.inf)
    nl = np.zeros_like(dl)
    nl[np.arange(len(dl)), axis] = -np.sign(dl[np.arange(len(dl)), axis])
    n = np.stack([c * nl[:, 0] - s * nl[:, 1], s * nl[:, 0] + c * nl[:, 1], nl[:, 2]], -1)
    return t, n


def _hit_cyl(o, d, cx, cy, r, z0, z1):
    ox, oy = o[0] - cx, o[1] - cy
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2 * (ox * d[:, 0] + oy * d[:, 1])
    cc = ox * ox + oy * oy - r * r
    disc = b * b - 4 * a * cc
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (-b - np.sqrt(disc)) / (2 * a)
    z = o[2] + t * d[:, 2]
    side = (disc >= 0) & (t > 0) & (z >= z0) & (z <= z1)
    t_side = np.where(side, t, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        tc = (z1 - o[2]) / d[:, 2]
    px, py = ox + tc * d[:, 0], oy + tc * d[:, 1]
    cap = (d[:, 2] < 0) & (tc > 0) & (px * px + py * py <= r * r)
    t_cap = np.where(cap, tc, np.inf)
    t = np.minimum(t_side, t_cap)
    n = np.zeros((len(d), 3))
    hx, hy = ox + t_side * d[:, 0], oy + t_side * d[:, 1]
    with np.errstate(invalid="ignore"):
        n[:, 0], n[:, 1] = hx / r, hy / r
    n[t_cap < t_side] = (0.0, 0.0, 1.0)
    return t, np.nan_to_num(n)


def _hit_ell(o, d, centre, radii):
    ol, dl = (o - centre) / radii, d / radii
    a = (dl * dl).sum(1)
    b = 2 * (dl @ ol)
    cc = float(ol @ ol) - 1.0
    disc = b * b - 4 * a * cc
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / (2 * a)
    ok = (disc >= 0) & (t > 0)
    t = np.where(ok, t, np.inf)
    p = o + np.where(ok, t, 0.0)[:, None] * d
    n = (p - centre) / radii**2
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    return t, n


def _beam_elevations(beams: int) -> np.ndarray:
    if beams == 64:
        return np.deg2rad(np.linspace(2.0, -24.8, 64))
    if beams == 32:
        return np.deg2rad(np.linspace(10.67, -30.67, 32))
    raise ValueError(f"OutdoorConfig.beams must be 32 or 64, got {beams}.")


def _street(rng, cfg: OutdoorConfig):
    """Layout and primitives of one street scene."""
    u = lambda a, b: float(rng.uniform(a, b))
    half_len = cfg.street_length / 2
    road_w = u(6.0, 14.0)
    yc = u(-(road_w / 2 - 1.8), road_w / 2 - 1.8)  # road centre relative to the sensor (in a lane)
    walk_w, curb = u(1.5, 4.0), u(0.1, 0.18)
    cross = (u(-40, 40), u(6.0, 10.0)) if rng.random() < 0.5 else None
    lay = {"yc": yc, "road_w": road_w, "walk_w": walk_w, "curb": curb, "cross": cross}
    P = _Prims()
    y_edge = (yc - road_w / 2, yc + road_w / 2)

    def blocked(x, half):  # keeps objects off the cross road
        return cross is not None and abs(x - cross[0]) < cross[1] / 2 + walk_w + half

    # buildings: blocks along both sides, set back from the sidewalk
    for side in (-1, 1):
        x = -half_len
        base = (y_edge[1] + walk_w if side > 0 else y_edge[0] - walk_w) + side * u(0.0, 6.0)
        while x < half_len:
            length = u(8.0, 30.0)
            if not blocked(x + length / 2, length / 2):
                depth, height = u(8.0, 15.0), u(4.0, 20.0)
                y = base + side * (u(0.0, 2.0) + depth / 2)
                P.box((x + length / 2, y, height / 2), (length / 2, depth / 2, height / 2), 0.0, _C["building"], -1,
                      u(0.15, 0.5))  # fmt: skip
                if rng.random() < 0.4:  # hedge in front of it
                    hy = y - side * (depth / 2 + 0.6)
                    P.box((x + length / 2, hy, 0.5), (length / 2 * 0.8, 0.5, 0.5), 0.0, _C["vegetation"], -1,
                          u(0.5, 0.7), porous=0.3)  # fmt: skip
            x += length + u(0.0, 8.0)
    # trees and poles along the outer edge of the sidewalks
    for side in (-1, 1):
        ye = (y_edge[1] + walk_w - 0.5) if side > 0 else (y_edge[0] - walk_w + 0.5)
        x = -half_len + u(0, 10)
        while x < half_len:
            if not blocked(x, 1.0):
                if rng.random() < 0.6:
                    r, h = u(0.12, 0.3), u(2.0, 4.0)
                    P.cyl(x, ye, r, 0.0, h, _C["vegetation"], -1, u(0.4, 0.6))
                    cr = u(1.5, 3.0)
                    P.ellipsoid((x, ye, h + cr * 0.7), (cr, cr, cr * u(0.7, 1.2)), _C["vegetation"], -1, u(0.5, 0.8),
                                porous=0.35)  # fmt: skip
                else:
                    P.cyl(x, ye - side * u(0.0, 0.3), u(0.06, 0.15), 0.0, u(3.0, 8.0), _C["pole"], -1, u(0.3, 0.7))
            x += u(6.0, 18.0)

    inst = 0

    def car(x, y, yaw):
        nonlocal inst
        length, width, hb, hc = u(3.8, 4.9), u(1.65, 1.95), u(0.55, 0.75), u(0.45, 0.6)
        refl = u(0.1, 0.9)
        c, s = np.cos(yaw), np.sin(yaw)
        P.box((x, y, 0.3 + hb / 2), (length / 2, width / 2, hb / 2), yaw, _C["car"], inst, refl)
        cab = length * u(0.45, 0.6)
        dx = u(-0.3, 0.1)
        P.box((x + c * dx, y + s * dx, 0.3 + hb + hc / 2), (cab / 2, width / 2 - 0.08, hc / 2), yaw, _C["car"], inst,
              refl * 0.6)  # fmt: skip
        for fx in (-1, 1):
            for fy in (-1, 1):
                wx, wy = fx * (length / 2 - 0.7), fy * (width / 2 - 0.12)
                P.box((x + c * wx - s * wy, y + s * wx + c * wy, 0.33), (0.33, 0.12, 0.33), yaw, _C["car"], inst, 0.05)
        inst += 1
        return length

    def pedestrian(x, y):
        nonlocal inst
        h = u(1.5, 1.9)
        refl = u(0.2, 0.45)
        P.cyl(x, y, u(0.13, 0.18), 0.0, h * 0.5, _C["pedestrian"], inst, refl)
        P.cyl(x, y, u(0.18, 0.24), h * 0.5, h * 0.85, _C["pedestrian"], inst, refl)
        P.ellipsoid((x, y, h * 0.93), (0.1, 0.1, h * 0.08), _C["pedestrian"], inst, refl)
        inst += 1

    def cyclist(x, y, yaw):
        nonlocal inst
        c, s = np.cos(yaw), np.sin(yaw)
        refl = u(0.2, 0.5)
        P.box((x, y, 0.6), (0.55, 0.06, 0.3), yaw, _C["cyclist"], inst, refl)
        for f in (-0.55, 0.55):
            P.box((x + c * f, y + s * f, 0.35), (0.33, 0.03, 0.33), yaw, _C["cyclist"], inst, refl)
        P.cyl(x - c * 0.1, y - s * 0.1, u(0.16, 0.21), 0.9, 1.5, _C["cyclist"], inst, refl)
        P.ellipsoid((x - c * 0.05, y - s * 0.05, 1.62), (0.1, 0.1, 0.12), _C["cyclist"], inst, refl)
        inst += 1

    # cars: parked rows along the kerbs (bumper to bumper), and some driving in the lanes
    n_cars = int(rng.integers(*cfg.cars))
    parked = int(n_cars * u(0.4, 0.8))
    placed = 0
    for side in (-1, 1):
        x = -half_len * u(0.2, 0.6)
        y = (y_edge[1] - 1.1) if side > 0 else (y_edge[0] + 1.1)
        while placed < parked * (0.5 if side < 0 else 1.0) and x < half_len * 0.7:
            if not blocked(x, 3.0) and (abs(x) > 3.0 or abs(y) > 2.0):
                yaw = (0.0 if rng.random() < 0.5 else np.pi) + u(-0.05, 0.05)
                x += car(x, y, yaw) + u(0.4, 2.0)
                placed += 1
            else:
                x += 5.0
            if rng.random() < 0.15:
                x += u(5.0, 20.0)  # a gap in the row
    lanes = [yc - road_w / 4, yc + road_w / 4]
    for _ in range(n_cars - placed):
        for _try in range(20):
            x, y = u(-half_len * 0.6, half_len * 0.6), lanes[int(rng.integers(2))] + u(-0.3, 0.3)
            if abs(x) < 4.0 and abs(y) < 2.5:
                continue  # not on top of the sensor's own car
            clear = all(
                np.hypot(p[1][0][0] - x, p[1][0][1] - y) > 6.0 for p in P.items if p[2] == _C["car"] and p[0] == "box"
            )
            if clear:
                car(x, y, (0.0 if y > yc else np.pi) + u(-0.05, 0.05))
                break
    # pedestrians: on the sidewalks, alone or in groups side by side
    n_ped = int(rng.integers(*cfg.pedestrians))
    while n_ped > 0:
        k = min(n_ped, int(rng.integers(1, 5)))
        side = 1 if rng.random() < 0.5 else -1
        x = u(-half_len * 0.5, half_len * 0.5)
        y = (y_edge[1] + walk_w * u(0.3, 0.7)) if side > 0 else (y_edge[0] - walk_w * u(0.3, 0.7))
        for j in range(k):
            pedestrian(x + j * u(0.5, 0.8), y + u(-0.2, 0.2))
        n_ped -= k
    for _ in range(int(rng.integers(*cfg.cyclists))):
        side = 1 if rng.random() < 0.5 else -1
        y = (y_edge[1] - 0.5) if side > 0 else (y_edge[0] + 0.5)
        x = u(-half_len * 0.5, half_len * 0.5)
        if abs(x) < 3.0:
            x += 6.0
        cyclist(x, y, (0.0 if side > 0 else np.pi) + u(-0.1, 0.1))
    return lay, P


def generate_sweep(rng: np.random.Generator, cfg: OutdoorConfig | None = None) -> dict[str, np.ndarray]:
    """One LiDAR sweep: coord (N,3) float32 in the sensor frame, strength (N,1) float32 in [0,1],
    normal (N,3) float32, segment (N,) int32 in ``CLASSES``, instance (N,) int32 (-1 on stuff)."""
    cfg = cfg or OutdoorConfig()
    el = _beam_elevations(cfg.beams)
    cols = cfg.columns or (2048 if cfg.beams == 64 else 1800)
    az = np.linspace(-np.pi, np.pi, cols, endpoint=False)
    el_r = el[:, None] + rng.normal(0, np.deg2rad(0.02), (len(el), 1))
    d = np.stack(np.broadcast_arrays(np.cos(el_r) * np.cos(az), np.cos(el_r) * np.sin(az), np.sin(el_r)), -1)
    d = d.reshape(-1, 3)
    o = np.array([0.0, 0.0, cfg.sensor_height])
    lay, P = _street(rng, cfg)
    nrays = len(d)

    # ground: sidewalks are raised by the kerb height, the rest lies at z = 0
    def regions(x, y):
        road = np.abs(y - lay["yc"]) < lay["road_w"] / 2
        walk = np.abs(y - lay["yc"]) < lay["road_w"] / 2 + lay["walk_w"]
        if lay["cross"] is not None:
            cx, cw = lay["cross"]
            road |= np.abs(x - cx) < cw / 2
            walk |= np.abs(x - cx) < cw / 2 + lay["walk_w"]
        return road, walk & ~road

    t_best = np.full(nrays, np.inf)
    sem = np.full(nrays, -1, np.int64)
    inst = np.full(nrays, -1, np.int64)
    refl = np.zeros(nrays)
    normal = np.zeros((nrays, 3))
    down = d[:, 2] < -1e-6
    with np.errstate(divide="ignore"):
        t_curb = np.where(down, (lay["curb"] - o[2]) / d[:, 2], np.inf)
        t_zero = np.where(down, -o[2] / d[:, 2], np.inf)
    pc = o + np.where(np.isfinite(t_curb), t_curb, 0)[:, None] * d
    _, walk_c = regions(pc[:, 0], pc[:, 1])
    p0 = o + np.where(np.isfinite(t_zero), t_zero, 0)[:, None] * d
    road0, walk0 = regions(p0[:, 0], p0[:, 1])
    on_walk = down & walk_c
    t_best = np.where(on_walk, t_curb, t_zero)
    sem = np.where(on_walk | walk0, _C["sidewalk"], np.where(road0, _C["road"], _C["ground"]))
    sem = np.where(down, sem, -1)
    normal[down] = (0.0, 0.0, 1.0)
    refl = np.select([sem == _C["road"], sem == _C["sidewalk"]], [0.18, 0.3], 0.42)
    marking = (sem == _C["road"]) & (np.abs(p0[:, 1] - lay["yc"]) < 0.08) & (np.mod(p0[:, 0], 9.0) < 3.0)
    refl = np.where(marking, 0.85, refl)  # dashed centre line

    for item in P.items:  # nearest hit over the primitives in each ray's azimuth window
        cx, cy, rad = P.bounds(item)
        dist = np.hypot(cx, cy)
        if dist - rad > cfg.max_range:
            continue
        if dist <= rad + 0.5:
            ray_cols = np.arange(cols)
        else:
            phi, half = np.arctan2(cy, cx), np.arcsin(min(1.0, (rad + 0.2) / dist))
            lo = int(np.floor((phi - half + np.pi) / (2 * np.pi) * cols))
            hi = int(np.ceil((phi + half + np.pi) / (2 * np.pi) * cols))
            ray_cols = np.arange(lo, hi + 1) % cols
        rays = (np.arange(len(el))[:, None] * cols + ray_cols[None, :]).ravel()
        kind, p, s, i, rf, porous = item
        dd = d[rays]
        if kind == "box":
            t, n = _hit_box(o, dd, *p)
        elif kind == "cyl":
            t, n = _hit_cyl(o, dd, *p)
        else:
            t, n = _hit_ell(o, dd, *p)
        if porous:
            t = np.where(rng.random(len(t)) < porous, np.inf, t)
        better = t < t_best[rays]
        r = rays[better]
        t_best[r], sem[r], inst[r], refl[r], normal[r] = t[better], s, i, rf, n[better]

    valid = np.isfinite(t_best) & (t_best >= cfg.min_range) & (t_best <= cfg.max_range) & (sem >= 0)
    rng_t = t_best + rng.normal(0, cfg.range_noise, nrays)
    cos_inc = np.abs((normal * d).sum(1))
    frac = np.clip(t_best / cfg.max_range, 0, 1)
    p_drop = cfg.dropout + 0.6 * frac**2 * (1 - refl) + 0.3 * (cos_inc < 0.1)
    valid &= rng.random(nrays) >= p_drop
    idx = np.flatnonzero(valid)
    coord = (o + rng_t[idx, None] * d[idx]) - np.array([0.0, 0.0, cfg.sensor_height])
    strength = refl[idx] * (0.35 + 0.65 * cos_inc[idx]) / np.sqrt(1 + (t_best[idx] / 60.0) ** 2)
    strength = np.clip(strength + rng.normal(0, 0.02, len(idx)), 0.0, 1.0)
    nrm = normal[idx] * np.where((normal[idx] * d[idx]).sum(1, keepdims=True) > 0, -1.0, 1.0)  # face the sensor
    ii = consecutive_ids(inst[idx])
    return {
        "coord": coord.astype(np.float32),
        "strength": strength[:, None].astype(np.float32),
        "normal": nrm.astype(np.float32),
        "segment": sem[idx].astype(np.int32),
        "instance": ii.astype(np.int32),
    }
