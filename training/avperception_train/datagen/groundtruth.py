"""Ground truth from the scene geometry: ray-cast depth and semantic views, occupancy, energy targets.

Rays are cast with open3d's ``RaycastingScene`` over the triangulated surfaces
of :mod:`.geometry` (the same polygons the acoustic simulator reflects off).
An exact numpy ray caster (Moeller-Trumbore over all triangles) stands in when
open3d is not importable, and a test keeps the two equal.

Panorama conventions are those of :func:`avperception.dsp.grid.equirectangular`:
column 0 = azimuth +180 deg decreasing to the right, row 0 = highest elevation,
azimuth counter-clockwise from the array's +x, directions in the array frame
(x forward, y left, z up).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import replace

import numpy as np

from .geometry import IGNORE, RoomGeometry, surface_triangles, voxel_grid


@functools.lru_cache(maxsize=1)
def _open3d():
    try:
        import open3d as o3d  # noqa: F401
        import open3d.core  # noqa: F401
    except Exception as e:  # ImportError, or OSError for a missing libusb
        warnings.warn(f"open3d is not importable ({e}); using the numpy ray caster "
                      "(pip install open3d; on Debian/Ubuntu also apt-get install libusb-1.0-0)", stacklevel=3)
        return None
    return o3d


class RayCaster:
    """Casts rays against triangles ``(T, 3)`` of ``vertices (V, 3)`` that carry ``labels (T,)``.

    Args:
        backend: ``open3d``, ``numpy`` or ``auto`` (open3d when importable).
    """

    def __init__(self, vertices: np.ndarray, triangles: np.ndarray, labels: np.ndarray, backend: str = "auto") -> None:
        self.vertices = np.asarray(vertices, dtype=np.float64)
        self.triangles = np.asarray(triangles, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.uint8)
        if backend not in ("auto", "open3d", "numpy"):
            raise ValueError(f"backend must be auto, open3d or numpy, got {backend!r}")
        o3d = _open3d() if backend in ("auto", "open3d") else None
        if backend == "open3d" and o3d is None:
            raise ImportError("open3d is not importable; pip install open3d (and apt-get install libusb-1.0-0)")
        self.backend = "open3d" if o3d is not None else "numpy"
        if self.backend == "open3d":
            self._scene = o3d.t.geometry.RaycastingScene()
            self._scene.add_triangles(o3d.core.Tensor(self.vertices.astype(np.float32)),
                                      o3d.core.Tensor(self.triangles.astype(np.uint32)))

    @classmethod
    def for_room(cls, room: RoomGeometry, backend: str = "auto") -> "RayCaster":
        v, t, lab = surface_triangles(room.surfaces(box_bottoms=True))
        return cls(v, t, lab, backend)

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distance along each ray to the first hit (inf for none) and its label (IGNORE for none).

        ``origins`` ``(N, 3)`` or ``(3,)``; ``directions`` ``(N, 3)`` unit vectors. Returns ``(N,)`` float64, uint8.
        """
        d = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
        o = np.broadcast_to(np.asarray(origins, dtype=np.float64), d.shape)
        if self.backend == "open3d":
            import open3d as o3d

            rays = np.ascontiguousarray(np.c_[o, d].astype(np.float32))
            res = self._scene.cast_rays(o3d.core.Tensor(rays))
            t = res["t_hit"].numpy().astype(np.float64)
            prim = res["primitive_ids"].numpy().astype(np.int64)
            hit = np.isfinite(t)
            t = np.where(hit, t, np.inf)
        else:
            t, prim = _cast_numpy(self.vertices, self.triangles, o, d)
            hit = np.isfinite(t)
        lab = np.full(len(d), IGNORE, dtype=np.uint8)
        lab[hit] = self.labels[prim[hit]]
        return t, lab


def _cast_numpy(v: np.ndarray, tri: np.ndarray, o: np.ndarray, d: np.ndarray, chunk: int = 4096):
    """Moeller-Trumbore, all rays against all triangles (exact, fine for a few hundred triangles)."""
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    e1, e2 = b - a, c - a
    t_out = np.full(len(d), np.inf)
    p_out = np.full(len(d), -1, dtype=np.int64)
    for s in range(0, len(d), chunk):
        dd, oo = d[s: s + chunk, None], o[s: s + chunk, None]
        p = np.cross(dd, e2[None])
        det = np.sum(e1[None] * p, axis=-1)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        tv = oo - a[None]
        u = np.sum(tv * p, axis=-1) * inv
        q = np.cross(tv, e1[None])
        w = np.sum(dd * q, axis=-1) * inv
        t = np.sum(e2[None] * q, axis=-1) * inv
        ok &= (u >= 0) & (w >= 0) & (u + w <= 1) & (t > 1e-9)
        t = np.where(ok, t, np.inf)
        k = np.argmin(t, axis=1)
        t_out[s: s + chunk] = t[np.arange(len(k)), k]
        p_out[s: s + chunk] = k
    return t_out, p_out


# --------------------------------------------------------------------------- views


def render_view(caster: RayCaster, origin: np.ndarray, rotation: np.ndarray, grid_vectors: np.ndarray,
                shape: tuple[int, int], max_range: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Range image and semantic labels seen along ``grid_vectors`` (array frame, rotated to world by ``rotation``).

    Returns ``(H, W)`` float32 range in metres (NaN where nothing is hit) and ``(H, W)`` uint8 labels.
    """
    dirs = np.asarray(grid_vectors, dtype=np.float64) @ np.asarray(rotation).T
    t, lab = caster.cast(np.asarray(origin, dtype=np.float64), dirs)
    miss = ~np.isfinite(t) | (t > max_range)
    depth = np.where(miss, np.nan, t).astype(np.float32).reshape(shape)
    lab = np.where(miss, IGNORE, lab).astype(np.uint8).reshape(shape)
    return depth, lab


def surface_view(room: RoomGeometry, origin: np.ndarray, rotation: np.ndarray, grid_vectors: np.ndarray,
                 shape: tuple[int, int], backend: str = "auto") -> np.ndarray:
    """``(H, W)`` int16: which of ``room.surfaces(box_bottoms=True)`` each pixel's ray first hits (-1: none), cast
    as :func:`render_view` casts the depth."""
    surfaces = room.surfaces(box_bottoms=True)
    if len(surfaces) >= IGNORE:
        raise ValueError(f"{len(surfaces)} surfaces: at most {IGNORE - 1} can be told apart")
    caster = RayCaster(*surface_triangles([replace(s, label=k) for k, s in enumerate(surfaces)]), backend)
    _, lab = render_view(caster, origin, rotation, grid_vectors, shape)
    return np.where(lab == IGNORE, -1, lab.astype(np.int16)).astype(np.int16)


def occupancy(room: RoomGeometry, origin: np.ndarray, rotation: np.ndarray, center, extent, resolution) -> np.ndarray:
    """``(D, H, W)`` bool occupancy of the crop (indexed ``[z, y, x]`` in the array frame).

    A voxel is occupied when its centre is not in the room's air: behind a wall,
    below the floor, above the ceiling, or inside a box.
    """
    centres, _, _ = voxel_grid(center, extent, resolution)
    world = centres.reshape(-1, 3) @ np.asarray(rotation).T + np.asarray(origin)
    return room.solid(world).reshape(centres.shape[:3])


def energy_target(grid_vectors: np.ndarray, shape: tuple[int, int], directions: np.ndarray, weights: np.ndarray,
                  sigma_deg: float) -> np.ndarray:
    """``(H, W)`` float32: each source direction splatted as an angular Gaussian, the max over sources.

    ``directions`` ``(K, 3)`` unit vectors (array frame); ``weights`` ``(K,)`` peak
    values (the loudest source at the array is 1). All zeros without sources.
    """
    g = np.asarray(grid_vectors, dtype=np.float64)
    out = np.zeros(len(g))
    for d, w in zip(np.asarray(directions, dtype=np.float64).reshape(-1, 3), np.asarray(weights).ravel()):
        ang = np.degrees(np.arccos(np.clip(g @ (d / np.linalg.norm(d)), -1.0, 1.0)))
        out = np.maximum(out, w * np.exp(-0.5 * (ang / sigma_deg) ** 2))
    return out.astype(np.float32).reshape(shape)
