"""Direction grids: the set of directions a beamformer scans, and how they map to an image.

Conventions (array frame, REP 103): azimuth counter-clockwise from +x toward +y,
elevation up from the xy-plane, both in degrees. A direction is a unit vector
pointing from the array toward the source.

Equirectangular images put azimuth +180 deg at column 0 and decreasing to the
right (so +y, the robot's left, is on the left of the picture, as when looking
forward from inside a panorama), and the highest elevation in row 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..config import ArrayGeometry, ConfigError, GridConfig


def azel_to_vector(az_deg: np.ndarray | float, el_deg: np.ndarray | float) -> np.ndarray:
    """Unit vectors ``(..., 3)`` from azimuth / elevation in degrees."""
    az = np.radians(np.asarray(az_deg, dtype=np.float64))
    el = np.radians(np.asarray(el_deg, dtype=np.float64))
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)


def vector_to_azel(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Azimuth and elevation in degrees of ``(..., 3)`` vectors (need not be unit)."""
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v, axis=-1)
    az = np.degrees(np.arctan2(v[..., 1], v[..., 0]))
    el = np.degrees(np.arcsin(np.clip(v[..., 2] / np.maximum(n, 1e-12), -1, 1)))
    return az, el


def angular_distance_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Great-circle angle in degrees between direction vectors ``(..., 3)``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.degrees(np.arccos(np.clip(np.sum(a * b, axis=-1), -1.0, 1.0)))


def rpy_matrix(roll_deg: float, pitch_deg: float, yaw_deg: float) -> np.ndarray:
    """Rotation matrix ``(3, 3)`` for fixed-axis roll (x), pitch (y), yaw (z), as in REP 103."""
    r, p, y = np.radians([roll_deg, pitch_deg, yaw_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(r), -np.sin(r)], [0, np.sin(r), np.cos(r)]])
    ry = np.array([[np.cos(p), 0, np.sin(p)], [0, 1, 0], [-np.sin(p), 0, np.cos(p)]])
    rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    return rz @ ry @ rx


# optical frame (x right, y down, z forward) -> body frame (x forward, y left, z up)
OPTICAL_TO_BODY = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass
class DirectionGrid:
    """A set of unit direction vectors, optionally laid out as an image.

    Attributes:
        vectors: ``(G, 3)`` unit vectors in the array frame.
        shape: image shape ``(H, W)`` with ``H * W == G``, or ``(G,)`` for an unordered set.
        kind: ``equirectangular``, ``pinhole``, ``sphere`` or ``custom``.
        resolution_deg: typical spacing between neighbouring directions.
    """

    vectors: np.ndarray
    shape: tuple[int, ...]
    kind: str = "custom"
    resolution_deg: float = 1.0
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = np.asarray(self.vectors, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != 3:
            raise ValueError(f"vectors must be (G, 3), got {v.shape}")
        self.vectors = v / np.linalg.norm(v, axis=1, keepdims=True)
        if int(np.prod(self.shape)) != len(v):
            raise ValueError(f"shape {self.shape} does not hold {len(v)} directions")

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def azimuth_deg(self) -> np.ndarray:
        return vector_to_azel(self.vectors)[0]

    @property
    def elevation_deg(self) -> np.ndarray:
        return vector_to_azel(self.vectors)[1]

    def as_image(self, values: np.ndarray) -> np.ndarray:
        """Reshape ``(..., G)`` values to ``(..., *shape)``."""
        return np.asarray(values).reshape(*np.shape(values)[:-1], *self.shape)

    def neighbors(self, k: int = 8) -> np.ndarray:
        """``(G, k)`` indices of each direction's ``k`` nearest other directions (cached)."""
        cache = self.meta.setdefault("_neighbors", {})
        if k not in cache:
            from scipy.spatial import cKDTree

            k_eff = min(k + 1, len(self))
            _, idx = cKDTree(self.vectors).query(self.vectors, k=k_eff)
            cache[k] = np.asarray(idx, dtype=np.intp).reshape(len(self), k_eff)[:, 1:]
        return cache[k]

    def local_maxima(self, values: np.ndarray) -> np.ndarray:
        """``(G,)`` bool: directions whose value is >= that of all their neighbours."""
        v = np.asarray(values)
        nb = self.neighbors()
        if nb.shape[1] == 0:
            return np.ones(len(self), dtype=bool)
        return v >= v[nb].max(axis=1)

    def nearest(self, v: np.ndarray) -> int:
        """Index of the grid direction closest to vector ``v``."""
        v = np.asarray(v, dtype=np.float64)
        return int(np.argmax(self.vectors @ (v / np.linalg.norm(v))))

    def pixel_of(self, v: np.ndarray) -> tuple[float, float] | None:
        """Continuous (row, col) of direction ``v`` in the image, or None when outside it."""
        v = np.asarray(v, dtype=np.float64)
        if self.kind == "equirectangular":
            az, el = vector_to_azel(v)
            m = self.meta
            col = (m["az_max"] - az) / m["daz"] - 0.5
            row = (m["el_max"] - el) / m["del"] - 0.5
            h, w = self.shape
            if -0.5 <= row <= h - 0.5 and -0.5 <= col <= w - 0.5:
                return float(row), float(col)
            return None
        if self.kind == "pinhole":
            m = self.meta
            c = m["R_cam_to_array"].T @ v  # camera optical frame
            if c[2] <= 0:
                return None
            col = m["fx"] * c[0] / c[2] + m["cx"]
            row = m["fy"] * c[1] / c[2] + m["cy"]
            h, w = self.shape
            if -0.5 <= row <= h - 0.5 and -0.5 <= col <= w - 0.5:
                return float(row), float(col)
            return None
        return None

    def search_mask(self, array: ArrayGeometry) -> np.ndarray:
        """``(G,)`` bool: the directions a peak search may report for this array.

        A planar array cannot tell the two sides of its plane apart, so only the
        side its normal points to (up, for a horizontal array) is searched. A
        linear array only resolves the angle to its axis; peaks are searched on
        the horizon half that faces away from the axis' left side.
        """
        n = array.normal
        if n is not None:
            return self.vectors @ n >= -1e-9
        a = array.axis
        if a is not None:
            ref = np.cross([0.0, 0.0, 1.0], a)
            if np.linalg.norm(ref) < 1e-6:  # vertical axis: every azimuth is the same cone
                ref = np.array([1.0, 0.0, 0.0])
            ref /= np.linalg.norm(ref)
            # keep the half-space in front of the axis' perpendicular; break ties toward +x
            return self.vectors @ (ref if ref @ [1, 0, 0] >= 0 else -ref) >= -1e-9
        return np.ones(len(self), dtype=bool)


def equirectangular(
    az_min: float = -180.0,
    az_max: float = 180.0,
    el_min: float = -90.0,
    el_max: float = 90.0,
    resolution_deg: float = 3.0,
) -> DirectionGrid:
    """Pixel-centred azimuth x elevation grid; image shape ``(H, W)``."""
    w = max(1, int(round((az_max - az_min) / resolution_deg)))
    h = max(1, int(round((el_max - el_min) / resolution_deg)))
    daz = (az_max - az_min) / w
    de = (el_max - el_min) / h if el_max > el_min else 1.0
    az = az_max - (np.arange(w) + 0.5) * daz
    el = el_max - (np.arange(h) + 0.5) * de if el_max > el_min else np.array([el_min])
    azg, elg = np.meshgrid(az, el)
    vec = azel_to_vector(azg.ravel(), elg.ravel())
    meta = {"az_max": az_max, "el_max": el_max if el_max > el_min else el_min + 0.5, "daz": daz, "del": de}
    return DirectionGrid(vec, (len(el), w), "equirectangular", float(max(daz, de if h > 1 else daz)), meta)


def pinhole(
    width: int, height: int, fx: float, fy: float, cx: float, cy: float,
    camera_rpy_deg: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> DirectionGrid:
    """The rays of a pinhole camera's pixels, as directions in the array frame.

    The camera looks along the array's +x when ``camera_rpy_deg`` is zero
    (optical frame: x right, y down, z forward).
    """
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    rays = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], axis=-1).reshape(-1, 3)
    r = rpy_matrix(*camera_rpy_deg) @ OPTICAL_TO_BODY
    vec = rays @ r.T
    res = float(np.degrees(1.0 / max(fx, fy)))
    meta = {"fx": fx, "fy": fy, "cx": cx, "cy": cy, "R_cam_to_array": r}
    return DirectionGrid(vec, (height, width), "pinhole", res, meta)


def icosphere(subdivisions: int = 4) -> DirectionGrid:
    """Near-uniform sphere grid: ``10 * 4**s + 2`` directions (2562 for s = 4)."""
    t = (1.0 + 5 ** 0.5) / 2.0
    verts = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t),
             (0, -1, -t), (0, 1, -t), (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4),
             (11, 10, 2), (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8),
             (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    v = [np.array(p, dtype=np.float64) / np.linalg.norm(p) for p in verts]
    for _ in range(subdivisions):
        cache: dict[tuple[int, int], int] = {}

        def mid(a: int, b: int) -> int:
            key = (min(a, b), max(a, b))
            if key not in cache:
                m = v[a] + v[b]
                v.append(m / np.linalg.norm(m))
                cache[key] = len(v) - 1
            return cache[key]

        new = []
        for a, b, c in faces:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new
    vec = np.array(v)
    return DirectionGrid(vec, (len(vec),), "sphere", 63.4 / 2 ** subdivisions)


def horizon(resolution_deg: float = 1.0) -> DirectionGrid:
    """Azimuths on the horizontal plane only (360 directions at 1 deg)."""
    return equirectangular(-180, 180, 0.0, 0.0, resolution_deg)


def from_config(cfg: GridConfig) -> DirectionGrid:
    """Build the grid a :class:`~avperception.config.GridConfig` describes."""
    cfg.validate()
    if cfg.kind == "equirectangular":
        return equirectangular(cfg.az_min_deg, cfg.az_max_deg, cfg.el_min_deg, cfg.el_max_deg, cfg.resolution_deg)
    if cfg.kind == "pinhole":
        return pinhole(cfg.width, cfg.height, cfg.fx, cfg.fy, cfg.cx, cfg.cy, tuple(cfg.camera_rpy_deg))
    raise ConfigError(f"unknown grid kind {cfg.kind!r}")


@lru_cache(maxsize=32)
def _patch_tangents(radius_deg: float, step_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """``(n, 1)`` tangent offsets along the two patch axes of :func:`local_patch` (computed once per size)."""
    k = int(np.ceil(radius_deg / step_deg))
    offs = np.radians(np.arange(-k, k + 1) * step_deg)
    a, b = np.meshgrid(offs, offs)
    ta, tb = np.tan(a.ravel())[:, None], np.tan(b.ravel())[:, None]
    ta.setflags(write=False)
    tb.setflags(write=False)
    return ta, tb


def local_patch(center: np.ndarray, radius_deg: float, step_deg: float) -> np.ndarray:
    """``(n, 3)`` directions on a small square patch around ``center`` (for peak refinement)."""
    c = np.asarray(center, dtype=np.float64)
    c = c / np.linalg.norm(c)
    x, y, z = float(c[0]), float(c[1]), float(c[2])
    # e1 = helper x c, e2 = c x e1, with helper +z (or +x near the poles): three-vector cross products by hand
    e1 = np.array([-y, x, 0.0]) if abs(z) < 0.9 else np.array([0.0, -z, y])
    e1 /= np.linalg.norm(e1)
    e2 = np.array([y * e1[2] - z * e1[1], z * e1[0] - x * e1[2], x * e1[1] - y * e1[0]])
    ta, tb = _patch_tangents(float(radius_deg), float(step_deg))
    v = c[None] + ta * e1[None] + tb * e2[None]
    return v / np.linalg.norm(v, axis=1, keepdims=True)
