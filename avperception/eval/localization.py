"""Localisation metrics: angular errors between estimated and true source directions."""

from __future__ import annotations

import numpy as np

from ..config import ArrayGeometry
from ..dsp.grid import angular_distance_deg
from ..dsp.peaks import canonical_direction


def match_errors(estimated: np.ndarray, true: np.ndarray, array: ArrayGeometry | None = None) -> np.ndarray:
    """Angular error (deg) of each true source to its matched estimate.

    Args:
        estimated: ``(n, 3)`` estimated directions (strongest first).
        true: ``(m, 3)`` true directions.
        array: when given, true directions are folded into what the array can
            resolve (see :func:`~avperception.dsp.peaks.canonical_direction`).
    Returns:
        ``(m,)`` errors, NaN for a true source left without an estimate. The
        assignment minimises the total error (Hungarian).
    """
    from scipy.optimize import linear_sum_assignment

    est = np.asarray(estimated, dtype=np.float64).reshape(-1, 3)
    tru = np.asarray(true, dtype=np.float64).reshape(-1, 3)
    if array is not None:
        tru = np.array([canonical_direction(t, array) for t in tru]).reshape(-1, 3)
        est = np.array([canonical_direction(e, array) for e in est]).reshape(-1, 3)
    out = np.full(len(tru), np.nan)
    if len(est) == 0 or len(tru) == 0:
        return out
    cost = angular_distance_deg(tru[:, None], est[None])
    r, c = linear_sum_assignment(cost)
    out[r] = cost[r, c]
    return out


def summarize(errors: np.ndarray, threshold_deg: float = 10.0) -> dict:
    """Median / p90 error and the fraction of sources found within ``threshold_deg``."""
    e = np.asarray(errors, dtype=np.float64).ravel()
    found = e[np.isfinite(e)]
    return {
        "count": int(e.size),
        "median_deg": float(np.median(found)) if found.size else float("nan"),
        "p90_deg": float(np.percentile(found, 90)) if found.size else float("nan"),
        "within_threshold": float(np.mean(np.nan_to_num(e, nan=1e9) <= threshold_deg)) if e.size else float("nan"),
        "threshold_deg": threshold_deg,
    }
