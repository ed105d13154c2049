"""Which walls an array hears in a dataset's rooms: a check of the echoes themselves, without a model.

A flat wall returns its first echo from one point, where the perpendicular from the array meets it: in the
panorama, the column where the wall is nearest. Towards that column's azimuth the matched filters are
delay-and-sum beamformed (:func:`avperception.dsp.echo.echo_image`), and the strongest echo between half and one
and a half times the wall's distance is found. The wall is **heard** when that echo lies within
:data:`TOLERANCE_M` of it, and **masked** otherwise: something else is louder in its beam at about its range (a
nearer surface's echo, the room's reverberation, an ambient source). **early** counts the masked walls whose
strongest echo comes before them.

The share heard by band of range is what a layout head can at most read from one ping without guessing: the
shipped model's walls are within 1.25x about as often as this check hears them (``docs/training.md``, "The misses
are the heard room's layout"). It compares arrays, sweeps and rooms before anything is trained:
``avperception-train wall-echoes --data DIR``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avperception.bench.common import markdown_table
from avperception.eval.safety import RANGE_EDGES_M, range_band_names

TOLERANCE_M = 0.1      # heard: the strongest echo within this of the wall's range
SEARCH = (0.5, 1.5)    # the strongest echo is looked for between these multiples of the wall's range
DIRECT_M = 0.25        # ranges nearer than this are the direct sound's: not searched
HOP = 4                # samples per step of the envelope (the layout head's)
NEIGHBOURS = 3         # a specular column: no column within this many on either side shows the wall nearer


def specular_columns(walls: np.ndarray, neighbours: int = NEIGHBOURS) -> np.ndarray:
    """``(W,)`` bool: the columns that show a wall no farther than any column within ``neighbours`` on either
    side (the panorama wraps around): where a flat wall returns its echo.

    Args:
        walls: ``(W,)`` horizontal distance (m) of each column's wall, NaN where it shows none.
    """
    w = np.asarray(walls, dtype=np.float64)
    idx = (np.arange(len(w))[:, None] + np.arange(-neighbours, neighbours + 1)[None]) % len(w)
    with np.errstate(invalid="ignore"):
        return np.isfinite(w) & ~np.any(w[idx] < w[:, None], axis=1)


def wall_echoes(power: np.ndarray, walls: np.ndarray, fs: float, c: float, hop: int = HOP,
                tolerance_m: float = TOLERANCE_M) -> np.ndarray:
    """Whether each wall's echo is the strongest in its beam at about its range.

    Args:
        power: ``(W, N)`` echo power beamformed towards each column's azimuth, by lag in samples from the sweep's
            onset (:func:`~avperception.dsp.echo.echo_image` towards the panorama's column directions).
        walls: ``(W,)`` horizontal distance (m) of each column's wall, NaN where it shows none.
        fs, c: sample rate (Hz), speed of sound (m/s).
    Returns:
        ``(K, 3)`` float: the range (m), heard (1/0) and early (1/0) of each specular column
        (:func:`specular_columns`) whose search window ends inside the recording.
    """
    power = np.asarray(power, dtype=np.float64)
    walls = np.asarray(walls, dtype=np.float64)
    if power.ndim != 2 or power.shape[0] != walls.shape[0]:
        raise ValueError(f"power {power.shape} needs one row per column of walls {walls.shape}")
    steps = 2.0 / c * fs / hop                      # envelope steps per metre of range
    n = power.shape[1] // hop
    env = power[:, :n * hop].reshape(len(walls), n, hop).max(-1)
    first, tol = int(round(DIRECT_M * steps)), tolerance_m * steps
    rows = []
    for col in np.flatnonzero(specular_columns(walls)):
        r = walls[col] * steps                      # the wall's echo, in steps (its centre at r)
        a0 = max(int(SEARCH[0] * r), first)
        a1 = max(int(SEARCH[1] * r) + 1, 2 * first)
        if a1 > n:
            continue
        peak = a0 + int(np.argmax(env[col, a0:a1])) + 0.5
        rows.append((walls[col], abs(peak - r) <= tol, peak < r - tol))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


def band_table(rows: np.ndarray, edges=RANGE_EDGES_M) -> list[dict]:
    """Per band of range (:data:`~avperception.eval.safety.RANGE_EDGES_M`) and over all: walls, the share heard
    and the share early (NaN where a band has no wall). ``rows``: :func:`wall_echoes`' rows pooled."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    band = np.searchsorted(np.asarray(edges), rows[:, 0], side="right")
    out = []
    for b, name in [*enumerate(range_band_names(edges)), (None, "all")]:
        sel = rows[band == b] if b is not None else rows
        out.append({"band": name, "walls": int(len(sel)),
                    "heard": float(sel[:, 1].mean()) if len(sel) else float("nan"),
                    "early": float(sel[:, 2].mean()) if len(sel) else float("nan")})
    return out


def audit(data: str | Path, split: str = "test", max_scenes: int = 0, progress: bool = True) -> dict:
    """:func:`wall_echoes` over a dataset's ``split`` scenes (the first ``max_scenes``; 0 all).

    Returns ``scenes``, ``array``, ``walls`` (how many specular columns were checked) and ``bands``
    (:func:`band_table`).
    """
    from avperception.dsp.echo import echo_image
    from avperception.dsp.grid import horizon

    from .data import InMemoryScenes, room_layout
    from .train import _bar

    ds = InMemoryScenes(data, split, max_samples=max_scenes)
    info = ds.info
    width = info.pano_shape[1]
    dirs = horizon(360.0 / width).vectors.reshape(-1, 3)  # the panorama's columns, in its order
    if len(dirs) != width:
        raise ValueError(f"{data}: panoramas {width} columns wide do not tile 360 degrees evenly")
    positions = np.asarray(info.array_positions, dtype=np.float64)
    rows = []
    for i in _bar(range(len(ds)), "wall echoes", progress):
        item = ds.item(i)
        walls, _ = room_layout(item["depth"], item["semantic"], info.el_range_deg)
        power = echo_image(item["audio"], info.emitted, positions, dirs, info.sample_rate, info.speed_of_sound)
        rows.append(wall_echoes(power, walls, info.sample_rate, info.speed_of_sound))
    pooled = np.concatenate(rows) if rows else np.zeros((0, 3))
    return {"data": str(data), "split": split, "scenes": len(ds), "array": info.array, "walls": int(len(pooled)),
            "bands": band_table(pooled)}


def report(result: dict) -> str:
    """A markdown table of :func:`audit`'s result."""
    def pct(v: float) -> str:
        return "–" if not np.isfinite(v) else f"{100 * v:.0f} %"

    table = markdown_table(["range", "walls", "heard", "strongest echo earlier"],
                           [[b["band"], b["walls"], pct(b["heard"]), pct(b["early"])] for b in result["bands"]])
    return (f"{result['data']} ({result['array']}, {result['scenes']} {result['split']} scenes): the share of the "
            f"walls whose strongest echo in their beam lies at the wall, by band of range\n\n{table}\n")
