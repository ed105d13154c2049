"""The network's raw outputs -> what the sonar publishes (pure numpy post-processing)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SonarOutputs:
    """One ping's perception, on the bundle's grids.

    depth: ``(H, W)`` float32 metres along each panorama pixel's ray, NaN where unknown.
    labels: ``(H, W)`` uint8 class index (argmax of the semantic logits; the bundle names the classes).
    confidence: ``(H, W)`` float32 the winning class's softmax probability.
    occupancy: ``(D, H, W)`` bool voxels ``[z, y, x]`` of the bundle's crop, occupied where the logit is > 0.
    occupancy_prob: ``(D, H, W)`` float32 sigmoid of the logits, when asked for.
    energy: ``(H, W)`` float32 acoustic energy map, or None.
    layout: ``(H, W)`` float32 metres, the room without obstacles, or None (no layout head).
    depth_uncertainty: ``(H, W)`` float32 metres, the depth's standard deviation at each pixel (NaN where the depth
        is unknown), or None (a bundle without an uncertainty head).
    stamp: seconds (the window's onset); infer_ms: the network's time; pings_averaged: how many pings' windows
        the network heard averaged (``sonar.average_pings``; 1: this ping alone).
    """

    depth: np.ndarray
    labels: np.ndarray
    confidence: np.ndarray
    occupancy: np.ndarray
    occupancy_prob: np.ndarray | None = None
    energy: np.ndarray | None = None
    layout: np.ndarray | None = None
    depth_uncertainty: np.ndarray | None = None
    stamp: float = 0.0
    infer_ms: float = 0.0
    pings_averaged: int = 1


def _squeeze(a: np.ndarray, ndim: int, name: str) -> np.ndarray:
    a = np.asarray(a)
    while a.ndim > ndim and a.shape[0] == 1:
        a = a[0]
    if a.ndim != ndim:
        raise ValueError(f"output {name}: expected {ndim} dimensions (without batch), got shape {a.shape}")
    return a


def decode(bundle, raw: dict[str, np.ndarray], stamp: float = 0.0, infer_ms: float = 0.0,
           with_prob: bool = False) -> SonarOutputs:
    """``raw``: a backend's outputs (batch dimension removed or 1) -> :class:`SonarOutputs`.

    Shapes are checked against ``bundle`` (``depth (H, W)``, ``semantic (C, H, W)``, ``voxels (D, H, W)``, and
    the optional ``depth_uncertainty (H, W)``).
    """
    h, w = bundle.pano_shape
    depth = _squeeze(raw["depth"], 2, "depth").astype(np.float32, copy=True)
    depth[~np.isfinite(depth)] = np.nan
    sem = _squeeze(raw["semantic"], 3, "semantic").astype(np.float32, copy=False)
    vox = _squeeze(raw["voxels"], 3, "voxels")
    if depth.shape != (h, w) or sem.shape[1:] != (h, w):
        raise ValueError(f"outputs depth {depth.shape} / semantic {sem.shape} do not match the bundle's panorama "
                         f"{(h, w)}")
    if sem.shape[0] != len(bundle.classes):
        raise ValueError(f"semantic has {sem.shape[0]} classes, the bundle names {len(bundle.classes)}")
    nx, ny, nz = bundle.voxel_resolution
    if vox.shape != (nz, ny, nx):
        raise ValueError(f"voxels {vox.shape} do not match the bundle's crop [z, y, x] {(nz, ny, nx)}")
    top = sem.max(axis=0)
    e = np.exp(sem - top[None])
    conf = (1.0 / e.sum(axis=0)).astype(np.float32)
    labels = sem.argmax(axis=0).astype(np.uint8)
    prob = (1.0 / (1.0 + np.exp(-vox.astype(np.float32)))).astype(np.float32) if with_prob else None
    energy = _squeeze(raw["energy"], 2, "energy").astype(np.float32, copy=False) if "energy" in raw else None
    layout = _squeeze(raw["layout"], 2, "layout").astype(np.float32, copy=False) if "layout" in raw else None
    unc = None
    if "depth_uncertainty" in raw:
        unc = _squeeze(raw["depth_uncertainty"], 2, "depth_uncertainty").astype(np.float32, copy=True)
        if unc.shape != (h, w):
            raise ValueError(f"output depth_uncertainty {unc.shape} does not match the bundle's panorama {(h, w)}")
        unc[~np.isfinite(unc) | np.isnan(depth)] = np.nan
    return SonarOutputs(depth=depth, labels=labels, confidence=conf, occupancy=vox > 0, occupancy_prob=prob,
                        energy=energy, layout=layout, depth_uncertainty=unc, stamp=float(stamp),
                        infer_ms=float(infer_ms))
