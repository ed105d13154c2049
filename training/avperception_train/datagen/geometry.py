"""Scene geometry: floor plans, furniture boxes, surfaces, free-space tests, occupancy.

World frame: x, y on the floor, z up, floor at z = 0, the floor plan in the
positive quadrant. A room is a simple polygon (counter-clockwise) extruded to a
height; boxes stand on the floor with a yaw about z.

Every surface is a planar polygon whose corner order gives its normal by the
right-hand rule; normals point *away from the air* (out of the room, into a
box), which is what pyroomacoustics expects of a wall, and the same polygons
are triangulated for the ray caster, so acoustics and ground truth share one
geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# semantic classes of the panoramas (uint8); IGNORE where no surface is hit
FLOOR, CEILING, WALL, OBSTACLE = 0, 1, 2, 3
IGNORE = 255
CLASS_NAMES = ("floor", "ceiling", "wall", "obstacle")


@dataclass
class Box:
    """A furniture-like box on the floor: footprint centre, side lengths, height, yaw (rad)."""

    center: tuple[float, float]
    size: tuple[float, float]
    height: float
    yaw: float = 0.0
    material: str = "hard_surface"

    def footprint(self) -> np.ndarray:
        """``(4, 2)`` footprint corners, counter-clockwise."""
        sx, sy = self.size[0] / 2, self.size[1] / 2
        local = np.array([[-sx, -sy], [sx, -sy], [sx, sy], [-sx, sy]])
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return local @ np.array([[c, s], [-s, c]]) + np.asarray(self.center)

    def as_array(self) -> np.ndarray:
        """``[cx, cy, sx, sy, height, yaw]``."""
        return np.array([*self.center, *self.size, self.height, self.yaw], dtype=np.float64)


@dataclass
class Surface:
    """A planar polygon ``(n, 3)``, its semantic class and acoustic material."""

    corners: np.ndarray
    label: int
    material: str
    name: str = ""


@dataclass
class RoomGeometry:
    """Floor plan ``(P, 2)`` (counter-clockwise), height, materials and boxes."""

    floor: np.ndarray
    height: float
    shape: str = "shoebox"
    floor_material: str = "concrete_floor"
    ceiling_material: str = "plasterboard"
    wall_materials: list[str] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)

    def __post_init__(self) -> None:
        f = np.asarray(self.floor, dtype=np.float64)
        if polygon_area(f) < 0:
            f = f[::-1].copy()
        self.floor = f
        if not self.wall_materials:
            self.wall_materials = ["plasterboard"] * len(f)

    @property
    def is_rectangle(self) -> bool:
        f = self.floor
        if len(f) != 4:
            return False
        e = np.diff(np.vstack([f, f[:1]]), axis=0)
        return bool(np.all(np.abs(e).min(axis=1) < 1e-9)) and bool(np.allclose(f.min(0), 0))

    @property
    def bbox(self) -> np.ndarray:
        """``[[xmin, ymin, 0], [xmax, ymax, height]]``."""
        return np.array([[*self.floor.min(0), 0.0], [*self.floor.max(0), self.height]])

    @property
    def volume(self) -> float:
        return polygon_area(self.floor) * self.height - sum(b.size[0] * b.size[1] * b.height for b in self.boxes)

    def surfaces(self, box_bottoms: bool = False) -> list[Surface]:
        """All surfaces, normals pointing away from the air.

        Box bottoms lie on the floor and are left out unless asked for.
        """
        f, h = self.floor, self.height
        out = []
        for i in range(len(f)):
            a, b = f[i], f[(i + 1) % len(f)]
            quad = np.array([[a[0], a[1], 0], [b[0], b[1], 0], [b[0], b[1], h], [a[0], a[1], h]])
            out.append(Surface(quad, WALL, self.wall_materials[i], f"wall{i}"))
        out.append(Surface(np.c_[f[::-1], np.zeros(len(f))], FLOOR, self.floor_material, "floor"))
        out.append(Surface(np.c_[f, np.full(len(f), h)], CEILING, self.ceiling_material, "ceiling"))
        for k, bx in enumerate(self.boxes):
            fp = bx.footprint()
            for i in range(4):
                a, b = fp[i], fp[(i + 1) % 4]
                # box side seen from outside the box: reverse order -> normal into the box
                quad = np.array([[a[0], a[1], bx.height], [b[0], b[1], bx.height], [b[0], b[1], 0], [a[0], a[1], 0]])
                out.append(Surface(quad, OBSTACLE, bx.material, f"box{k}_side{i}"))
            out.append(Surface(np.c_[fp[::-1], np.full(4, bx.height)], OBSTACLE, bx.material, f"box{k}_top"))
            if box_bottoms:
                out.append(Surface(np.c_[fp, np.zeros(4)], OBSTACLE, bx.material, f"box{k}_bottom"))
        return out

    # ------------------------------------------------------------------ free space

    def contains(self, pts: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: points ``(N, 3)`` in the air (inside the room, outside every box)."""
        return ~self.solid(pts)

    def solid(self, pts: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: points ``(N, 3)`` outside the room's air volume or inside a box."""
        p = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
        inside = points_in_polygon(p[:, :2], self.floor) & (p[:, 2] > 0) & (p[:, 2] < self.height)
        solid = ~inside
        for bx in self.boxes:
            solid |= points_in_polygon(p[:, :2], bx.footprint()) & (p[:, 2] >= 0) & (p[:, 2] <= bx.height)
        return solid

    def clearance_2d(self, pts: np.ndarray) -> np.ndarray:
        """``(N,)`` horizontal distance from points ``(N, 2)`` to the nearest wall or box side.

        Negative where the point is outside the floor plan or inside a box footprint.
        """
        p = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        d = polygon_edge_distance(p, self.floor)
        d = np.where(points_in_polygon(p, self.floor), d, -d)
        for bx in self.boxes:
            fp = bx.footprint()
            db = polygon_edge_distance(p, fp)
            d = np.minimum(d, np.where(points_in_polygon(p, fp), -db, db))
        return d


# --------------------------------------------------------------------------- polygons


def polygon_area(poly: np.ndarray) -> float:
    """Signed area (positive when counter-clockwise)."""
    x, y = np.asarray(poly, dtype=np.float64).T
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def points_in_polygon(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: crossing-number test of points ``(N, 2)`` against a simple polygon ``(P, 2)``."""
    p = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    a = np.asarray(poly, dtype=np.float64)
    b = np.roll(a, -1, axis=0)
    x, y = p[:, :1], p[:, 1:]
    cond = (a[None, :, 1] > y) != (b[None, :, 1] > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xint = a[None, :, 0] + (y - a[None, :, 1]) * (b[None, :, 0] - a[None, :, 0]) / (b[None, :, 1] - a[None, :, 1])
    return (np.sum(cond & (x < xint), axis=1) % 2) == 1


def specular_point_on(corners: np.ndarray, point: np.ndarray) -> bool:
    """Whether the foot of the perpendicular from ``point (3,)`` to the plane of the polygon ``corners (n, 3)`` lies on
    the polygon: the one place a sound sent from ``point`` can reflect straight back to it. The image-source model
    gives a surface without it no first-order echo for a source beside its receiver (only its edges' diffraction,
    :mod:`.diffraction`, with ``acoustics.edge_diffraction``)."""
    c = np.asarray(corners, dtype=np.float64)
    p = np.asarray(point, dtype=np.float64)
    normal = np.cross(c[1] - c[0], c[2] - c[0])
    normal /= np.linalg.norm(normal)
    u = (c[1] - c[0]) / np.linalg.norm(c[1] - c[0])
    v = np.cross(normal, u)
    foot = p - np.dot(p - c[0], normal) * normal
    plane = np.c_[(c - c[0]) @ u, (c - c[0]) @ v]
    return bool(points_in_polygon(np.array([(foot - c[0]) @ u, (foot - c[0]) @ v]), plane)[0])


def polygon_edge_distance(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """``(N,)`` distance from points ``(N, 2)`` to the closest edge of a polygon."""
    p = np.asarray(pts, dtype=np.float64).reshape(-1, 2)[:, None]
    a = np.asarray(poly, dtype=np.float64)[None]
    e = np.roll(a, -1, axis=1) - a
    t = np.clip(np.sum((p - a) * e, axis=-1) / np.maximum(np.sum(e * e, axis=-1), 1e-12), 0, 1)
    return np.min(np.linalg.norm(p - (a + t[..., None] * e), axis=-1), axis=1)


def convex_gap(a: np.ndarray, b: np.ndarray) -> float:
    """A lower bound of the distance between convex polygons (separating-axis gap; <= 0 when they overlap)."""
    best = -np.inf
    for poly in (a, b):
        e = np.roll(poly, -1, axis=0) - poly
        normals = np.c_[e[:, 1], -e[:, 0]] / np.linalg.norm(e, axis=1, keepdims=True)
        pa, pb = a @ normals.T, b @ normals.T
        gap = np.maximum(pb.min(0) - pa.max(0), pa.min(0) - pb.max(0))
        best = max(best, float(gap.max()))
    return best


def triangulate_polygon(poly: np.ndarray) -> np.ndarray:
    """``(P - 2, 3)`` vertex indices of an ear-clipping triangulation of a simple 2-D polygon.

    Triangles keep the polygon's orientation.
    """
    pts = np.asarray(poly, dtype=np.float64)
    idx = list(range(len(pts)))
    sign = 1.0 if polygon_area(pts) >= 0 else -1.0
    tris = []

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    guard = 0
    while len(idx) > 3 and guard < 10 * len(pts) ** 2:
        guard += 1
        n = len(idx)
        for k in range(n):
            i0, i1, i2 = idx[(k - 1) % n], idx[k], idx[(k + 1) % n]
            a, b, c = pts[i0], pts[i1], pts[i2]
            if sign * cross(a, b, c) <= 1e-12:
                continue  # reflex or degenerate corner
            inside = False
            for j in idx:
                if j in (i0, i1, i2):
                    continue
                p = pts[j]
                if (sign * cross(a, b, p) >= -1e-12 and sign * cross(b, c, p) >= -1e-12
                        and sign * cross(c, a, p) >= -1e-12):
                    inside = True
                    break
            if not inside:
                tris.append((i0, i1, i2))
                idx.pop(k)
                break
        else:  # pragma: no cover - only for self-intersecting input
            raise ValueError("polygon could not be triangulated (is it simple?)")
    tris.append(tuple(idx))
    return np.asarray(tris, dtype=np.int64)


def surface_triangles(surfaces: list[Surface]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangulate planar surfaces: vertices ``(V, 3)``, triangles ``(T, 3)``, labels ``(T,)``."""
    verts, tris, labels = [], [], []
    base = 0
    for s in surfaces:
        c = np.asarray(s.corners, dtype=np.float64)
        n = np.cross(c[1] - c[0], c[2] - c[0])
        if np.linalg.norm(n) < 1e-12:
            n = np.cross(c[2] - c[0], c[-1] - c[0])
        n /= np.linalg.norm(n)
        u = c[1] - c[0]
        u /= np.linalg.norm(u)
        v = np.cross(n, u)
        flat = np.c_[(c - c[0]) @ u, (c - c[0]) @ v]
        t = triangulate_polygon(flat)
        verts.append(c)
        tris.append(t + base)
        labels.append(np.full(len(t), s.label, dtype=np.uint8))
        base += len(c)
    return np.vstack(verts), np.vstack(tris), np.concatenate(labels)


# --------------------------------------------------------------------------- sampling


def sample_floor_plan(shape: str, rng: np.random.Generator, size: tuple[float, float], min_width: float) -> np.ndarray:
    """A counter-clockwise floor polygon of the given shape inside ``[0, W] x [0, L]``.

    ``corridor``: a rectangle ``min_width`` to twice that wide and as long as the upper half of ``size``.
    """
    w, l = rng.uniform(*size, size=2)
    if shape == "shoebox":
        return np.array([[0, 0], [w, 0], [w, l], [0, l]], dtype=np.float64)
    if shape == "corridor":
        w = rng.uniform(min_width, 2 * min_width)
        l = max(rng.uniform((size[0] + size[1]) / 2, size[1]), 2 * w)
        return np.array([[0, 0], [w, 0], [w, l], [0, l]], dtype=np.float64)
    w = max(w, 2 * min_width + 0.2)
    l = max(l, 2 * min_width + 0.2)
    if shape == "l_shape":
        # cut the top-right corner: arms at least min_width wide
        cw = rng.uniform(0.3, 0.6) * w
        cl = rng.uniform(0.3, 0.6) * l
        cw = float(np.clip(cw, 0.5, w - min_width))
        cl = float(np.clip(cl, 0.5, l - min_width))
        return np.array([[0, 0], [w, 0], [w, l - cl], [w - cw, l - cl], [w - cw, l], [0, l]], dtype=np.float64)
    if shape == "t_shape":
        # a bar across the top, a stem below it
        bar = float(np.clip(rng.uniform(0.35, 0.55) * l, min_width, l - min_width))
        stem = float(np.clip(rng.uniform(0.35, 0.6) * w, min_width, w - 1.0))
        x0 = float(rng.uniform(0.5, w - stem - 0.5)) if w - stem > 1.0 else (w - stem) / 2
        y1 = l - bar
        return np.array([[x0, 0], [x0 + stem, 0], [x0 + stem, y1], [w, y1], [w, l], [0, l], [0, y1], [x0, y1]],
                        dtype=np.float64)
    raise ValueError(f"unknown room shape {shape!r}")


def box_fits(room: RoomGeometry, box: Box, clearance: float, gap: float) -> bool:
    """The box lies inside the floor plan (with clearance) and clear of the other boxes."""
    fp = box.footprint()
    if box.height >= room.height - 0.1:
        return False
    u = np.linspace(-0.5, 0.5, 5)
    uu, vv = np.meshgrid(u, u)
    c, s = np.cos(box.yaw), np.sin(box.yaw)
    local = np.c_[uu.ravel() * box.size[0], vv.ravel() * box.size[1]]
    samples = local @ np.array([[c, s], [-s, c]]) + np.asarray(box.center)
    if not np.all(points_in_polygon(samples, room.floor)):
        return False
    if np.any(polygon_edge_distance(fp, room.floor) < clearance):
        return False
    # no room corner (the inner corner of an L) may poke into the box or come too close
    if np.any(points_in_polygon(room.floor, fp)) or np.any(polygon_edge_distance(room.floor, fp) < clearance):
        return False
    return all(convex_gap(fp, other.footprint()) >= gap for other in room.boxes)


def sample_free_point(room: RoomGeometry, rng: np.random.Generator, clearance: float, z: tuple[float, float],
                      avoid: list[tuple[np.ndarray, float]] = (), tries: int = 2000,
                      max_clearance: float = np.inf) -> np.ndarray | None:
    """A point with horizontal ``clearance`` (up to ``max_clearance``) from walls and boxes, ``z`` uniform,
    away from ``avoid``.

    ``avoid``: ``(point, min_distance)`` pairs. Returns None after ``tries`` rejections.
    """
    lo, hi = room.floor.min(0), room.floor.max(0)
    batch = 64
    for _ in range(max(1, tries // batch)):
        xy = rng.uniform(lo, hi, size=(batch, 2))
        zz = rng.uniform(*z, size=batch)
        c = room.clearance_2d(xy)
        ok = (c >= clearance) & (c <= max_clearance)
        pts = np.c_[xy, zz]
        for p, dmin in avoid:
            ok &= np.linalg.norm(pts - np.asarray(p), axis=1) >= dmin
        if np.any(ok):
            return pts[int(np.argmax(ok))]
    return None


def voxel_grid(center: tuple[float, float, float], extent: tuple[float, float, float],
               resolution: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel centres of an axis-aligned crop, indexed ``[z, y, x]``.

    Returns ``(centres (D, H, W, 3) as (x, y, z), lower corner (3,), voxel size (3,))``
    with D, H, W the counts along z, y, x.
    """
    c = np.asarray(center, dtype=np.float64)
    e = np.asarray(extent, dtype=np.float64)
    n = np.asarray(resolution, dtype=np.int64)
    lo = c - e / 2
    size = e / n
    axes = [lo[i] + (np.arange(n[i]) + 0.5) * size[i] for i in range(3)]
    zz, yy, xx = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    return np.stack([xx, yy, zz], axis=-1), lo, size


def yaw_matrix(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
