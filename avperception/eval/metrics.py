"""Dense-prediction metrics of the papers: depth, segmentation, voxels and energy maps (numpy).

Every function takes a batch or a single sample, ignores invalid ground truth
(NaN depth, the ignore label), and returns plain floats so results can be
averaged over a split and written to a table.
"""

from __future__ import annotations

import numpy as np

IGNORE = 255
LAYOUT_CLASSES = (0, 1, 2)  # floor, ceiling, wall in the data engine's labels (3 = obstacle)


def depth_metrics(pred: np.ndarray, gt: np.ndarray, min_depth: float = 1e-3, max_depth: float | None = None) -> dict:
    """MAE, RMSE, AbsRel, SqRel, RMSE-log and delta_1..3 (fraction with max(p/g, g/p) < 1.25^k).

    Args:
        pred, gt: ``(..., H, W)`` metres; gt NaN / <= min_depth / > max_depth are ignored.

    Every metric is NaN when no pixel has a known depth, or when the prediction is not finite at one that
    has: there is no distance to score (the caller counts such images).
    """
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    valid = np.isfinite(g) & (g > min_depth)
    if max_depth is not None:
        valid &= g <= max_depth
    p = np.clip(p[valid], min_depth, None)
    g = g[valid]
    if g.size == 0 or not np.isfinite(p).all():
        return {k: float("nan") for k in ("mae", "rmse", "abs_rel", "sq_rel", "rmse_log", "delta1", "delta2", "delta3")}
    ratio = np.maximum(p / g, g / p)
    return {
        "mae": float(np.mean(np.abs(p - g))),
        "rmse": float(np.sqrt(np.mean((p - g) ** 2))),
        "abs_rel": float(np.mean(np.abs(p - g) / g)),
        "sq_rel": float(np.mean((p - g) ** 2 / g)),
        "rmse_log": float(np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
    }


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


def confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore: int = IGNORE) -> np.ndarray:
    """``(C, C)`` confusion matrix, rows = ground truth, columns = prediction."""
    g = np.asarray(gt).ravel().astype(np.int64)
    p = np.asarray(pred).ravel().astype(np.int64)
    keep = (g != ignore) & (g >= 0) & (g < num_classes)
    return np.bincount(g[keep] * num_classes + p[keep], minlength=num_classes**2).reshape(num_classes, num_classes)


def segmentation_metrics(conf: np.ndarray, layout_classes=LAYOUT_CLASSES) -> dict:
    """pAcc, mAcc, mIoU, per-class IoU and layout IoU (mean IoU over floor/ceiling/wall) from a confusion matrix.

    Classes absent from both ground truth and prediction are left out of the means.
    """
    c = np.asarray(conf, dtype=np.float64)
    tp = np.diag(c)
    gt_count = c.sum(1)
    pred_count = c.sum(0)
    union = gt_count + pred_count - tp
    present = union > 0
    iou = np.where(present, tp / np.maximum(union, 1), np.nan)
    acc = np.where(gt_count > 0, tp / np.maximum(gt_count, 1), np.nan)
    layout = [iou[k] for k in layout_classes if k < len(iou) and present[k]]
    return {
        "pacc": float(tp.sum() / max(c.sum(), 1)),
        "macc": float(np.nanmean(acc)) if np.any(gt_count > 0) else float("nan"),
        "miou": float(np.nanmean(iou)) if present.any() else float("nan"),
        "layout_iou": float(np.mean(layout)) if layout else float("nan"),
        "iou_per_class": [None if np.isnan(x) else float(x) for x in iou],
    }


def class_accuracy(pred: np.ndarray, gt: np.ndarray, ignore: int = IGNORE) -> float:
    """Fraction of the labelled pixels (``gt != ignore``) whose class is right; NaN when none is labelled."""
    known = np.asarray(gt) != ignore
    return float(np.mean(np.asarray(pred)[known] == np.asarray(gt)[known])) if known.any() else float("nan")


def voxel_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two occupancy grids (bool); 1 when both are empty."""
    p = np.asarray(pred).astype(bool)
    g = np.asarray(gt).astype(bool)
    union = np.logical_or(p, g).sum()
    return float(np.logical_and(p, g).sum() / union) if union else 1.0


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
