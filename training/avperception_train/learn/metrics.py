"""Metrics only training and offline evaluation use: depth errors pooled per class, voxel Chamfer / F1, energy maps.

The scores the robot-side tools share (depth, segmentation, class accuracy,
voxel IoU: ``avperception replay-eval``, the live demo, bag comparison) stay
in :mod:`avperception.eval.metrics`; these are the papers' further metrics
that :func:`avperception_train.learn.evaluate.evaluate` reports. Same
conventions: numpy in, plain floats out, invalid ground truth ignored.
"""

from __future__ import annotations

import numpy as np

from avperception.eval.metrics import voxel_iou


def depth_error_by_label(pred: np.ndarray, gt: np.ndarray, labels: np.ndarray, num_classes: int,
                         min_depth: float = 1e-3) -> np.ndarray:
    """Per-label sums for pooling depth errors over many images.

    Args:
        pred, gt: ``(..., H, W)`` metres (gt NaN / <= min_depth ignored); labels: same shape, ints.
    Returns:
        ``(num_classes, 3)``: valid pixels, sum of |p - g| / g, pixels with max(p/g, g/p) < 1.25.
        Pooled AbsRel = col 1 / col 0 and delta_1 = col 2 / col 0.
    """
    g = np.asarray(gt, dtype=np.float64).ravel()
    lab = np.asarray(labels).ravel().astype(np.int64)
    valid = np.isfinite(g) & (g > min_depth) & (lab >= 0) & (lab < num_classes)
    g, lab = g[valid], lab[valid]
    p = np.clip(np.asarray(pred, dtype=np.float64).ravel()[valid], min_depth, None)
    out = np.zeros((num_classes, 3))
    out[:, 0] = np.bincount(lab, minlength=num_classes)
    out[:, 1] = np.bincount(lab, weights=np.abs(p - g) / g, minlength=num_classes)
    out[:, 2] = np.bincount(lab, weights=(np.maximum(p / g, g / p) < 1.25).astype(np.float64), minlength=num_classes)
    return out


def voxel_metrics(pred: np.ndarray, gt: np.ndarray, voxel_size: float = 1.0, f1_tau: float | None = None) -> dict:
    """IoU, Chamfer-L1 and F1 between two occupancy grids ``(D, H, W)`` (bool).

    Chamfer-L1 is the mean of the two directed mean nearest-neighbour distances
    between occupied voxel centres (in the units of ``voxel_size``); F1 at
    distance ``f1_tau`` (default: one voxel).
    """
    from scipy.spatial import cKDTree

    p = np.asarray(pred).astype(bool)
    g = np.asarray(gt).astype(bool)
    out = {"iou": voxel_iou(p, g)}
    tau = voxel_size if f1_tau is None else f1_tau
    pp = np.argwhere(p) * voxel_size
    gp = np.argwhere(g) * voxel_size
    if len(pp) == 0 or len(gp) == 0:
        same = len(pp) == len(gp)
        out.update(chamfer_l1=0.0 if same else float("nan"), f1=1.0 if same else 0.0)
        return out
    d_pg = cKDTree(gp).query(pp)[0]
    d_gp = cKDTree(pp).query(gp)[0]
    eps = 1e-9 * max(tau, 1.0)  # a neighbour exactly tau away counts, despite rounding
    precision = float(np.mean(d_pg <= tau + eps))
    recall = float(np.mean(d_gp <= tau + eps))
    out["chamfer_l1"] = float(0.5 * (d_pg.mean() + d_gp.mean()))
    out["f1"] = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return out


def energy_map_metrics(pred: np.ndarray, gt: np.ndarray) -> dict:
    """Localisation quality of an energy map, as in the acoustic-image paper.

    Both maps are thresholded at their mean; IoU of the two masks, whether it
    exceeds 0.5, and the AUC of the success rate over IoU thresholds 0..1 (step 0.1).
    """
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    pm = p > p.mean()
    gm = g > g.mean()
    union = np.logical_or(pm, gm).sum()
    iou = float(np.logical_and(pm, gm).sum() / union) if union else 1.0
    thresholds = np.linspace(0, 1, 11)
    success = (iou >= thresholds).astype(np.float64)
    return {"iou": iou, "iou_at_0.5": float(iou >= 0.5), "auc": float(np.trapezoid(success, thresholds))}
