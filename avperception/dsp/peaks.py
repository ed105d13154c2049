"""Sound-source directions from a beamformed map: peak picking and refinement."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import ArrayGeometry
from .grid import DirectionGrid, local_patch, vector_to_azel


@dataclass(frozen=True)
class SourceDirection:
    """One detected source, in the array frame."""

    azimuth_deg: float
    elevation_deg: float
    power: float
    vector: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {
            "azimuth_deg": round(float(self.azimuth_deg), 3),
            "elevation_deg": round(float(self.elevation_deg), 3),
            "power": round(float(self.power), 6),
        }


def pick_peaks(
    power: np.ndarray,
    grid: DirectionGrid,
    num: int = 3,
    min_separation_deg: float = 20.0,
    min_relative_power: float = 0.5,
    mask: np.ndarray | None = None,
) -> list[int]:
    """Local maxima of a map on a grid, strongest first, kept apart by a minimum angle.

    Args:
        power: ``(G,)`` map.
        mask: ``(G,)`` bool, directions allowed as peaks.
    Returns:
        grid indices of up to ``num`` peaks, strongest first, each at least
        ``min_separation_deg`` from the others, with power >= ``min_relative_power``
        times the strongest and > 0.
    """
    p = np.asarray(power, dtype=np.float64).copy()
    p[~grid.local_maxima(p)] = -np.inf
    if mask is not None:
        p[~mask] = -np.inf
    cos_sep = np.cos(np.radians(min_separation_deg))
    out: list[int] = []
    best = None
    for _ in range(num):
        i = int(np.argmax(p))
        v = p[i]
        if not np.isfinite(v) or v <= 0:
            break
        if best is None:
            best = v
        elif v < min_relative_power * best:
            break
        out.append(i)
        p[grid.vectors @ grid.vectors[i] >= cos_sep] = -np.inf
        p[i] = -np.inf
    return out


def canonical_directions(v: np.ndarray, array: ArrayGeometry) -> np.ndarray:
    """Fold directions ``v (K, 3)`` into the half-space / plane an array can resolve -> ``(K, 3)`` unit vectors.

    Planar arrays: mirror into the side the normal points to (elevation >= 0
    for a horizontal array). Linear arrays: keep the angle to the axis and put
    the direction on the horizon, in front.
    """
    v = np.asarray(v, dtype=np.float64)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    n = array.normal
    if n is not None:
        d = v @ n
        return np.where((d < 0)[:, None], v - 2 * d[:, None] * n[None], v)
    a = array.axis
    if a is not None:
        ref = np.cross([0.0, 0.0, 1.0], a)
        if np.linalg.norm(ref) < 1e-6:
            ref = np.array([1.0, 0.0, 0.0])
        ref = ref / np.linalg.norm(ref)
        if ref @ [1.0, 0.0, 0.0] < 0:
            ref = -ref
        cos_t = np.clip(v @ a, -1, 1)
        return cos_t[:, None] * a[None] + np.sqrt(1 - cos_t**2)[:, None] * ref[None]
    return v


def canonical_direction(v: np.ndarray, array: ArrayGeometry) -> np.ndarray:
    """:func:`canonical_directions` of one direction ``v (3,)`` -> ``(3,)``."""
    return canonical_directions(np.asarray(v, dtype=np.float64).reshape(1, 3), array)[0]


def find_sources(
    beamformer,
    spec: np.ndarray | None,
    power: np.ndarray,
    num: int = 3,
    min_separation_deg: float = 20.0,
    min_relative_power: float = 0.5,
    refine: bool = True,
    mask: np.ndarray | None = None,
) -> list[SourceDirection]:
    """Peaks of ``power`` (from ``beamformer.map(spec)``), optionally refined off-grid.

    Refinement evaluates the beamformer on a local patch around each peak at
    1/8 of the grid spacing, twice (coarse-to-fine), so the result is not tied
    to the grid resolution. A beamformer with its own ``find_sources(power,
    num, min_separation_deg, min_relative_power, refine, mask)`` method does the
    search itself.
    """
    grid: DirectionGrid = beamformer.grid
    array: ArrayGeometry = beamformer.array
    if mask is None:
        mask = grid.search_mask(array)
    custom = getattr(beamformer, "find_sources", None)
    if custom is not None:  # a method with its own multi-source search (e.g. srp_phat_normmusic)
        return custom(power, num, min_separation_deg, min_relative_power, refine, mask)
    out = []
    for i in pick_peaks(power, grid, num, min_separation_deg, min_relative_power, mask):
        v = grid.vectors[i]
        pw = float(power[i])
        if refine:
            radius = max(grid.resolution_deg, 0.5)
            for _ in range(2):
                cand = local_patch(v, radius, radius / 8)
                vals = beamformer.evaluate(None, cand)
                j = int(np.argmax(vals))
                if vals[j] > pw:
                    v, pw = cand[j], float(vals[j])
                radius /= 4
        v = canonical_direction(v, array)
        az, el = vector_to_azel(v)
        out.append(SourceDirection(float(az), float(el), pw, tuple(float(x) for x in v)))
    return out
