"""Pure-numpy visualisation helpers shared by the nodes and the CLI (no ROS, no display)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=4)
def colormap_lut(name: str = "inferno") -> np.ndarray:
    """``(256, 3)`` uint8 colour table (matplotlib's when available, else a black-red-yellow-white ramp)."""
    try:
        from matplotlib import colormaps

        lut = (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    except Exception:  # matplotlib missing or unknown name
        t = np.linspace(0, 1, 256)
        lut = (np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], 1) * 255).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def heatmap_rgb(values: np.ndarray, vmin: float | None = None, vmax: float | None = None, cmap: str = "inferno") -> np.ndarray:
    """``(H, W)`` float map -> ``(H, W, 3)`` uint8 RGB, scaled to [vmin, vmax] (default: the map's range)."""
    v = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(v)
    lo = float(np.min(v[finite])) if vmin is None and finite.any() else (vmin or 0.0)
    hi = float(np.max(v[finite])) if vmax is None and finite.any() else (vmax if vmax is not None else 1.0)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    idx = np.clip((np.nan_to_num(v, nan=lo) - lo) * scale, 0, 255).astype(np.uint8)
    return colormap_lut(cmap)[idx]
