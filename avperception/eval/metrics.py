"""Dense-prediction metrics: depth, segmentation, class accuracy and voxel IoU (numpy).

The scores replay evaluation (``avperception replay-eval``), the live demo and
bag comparison give. Every function takes a batch or a single sample, ignores
invalid ground truth (NaN depth, the ignore label), and returns plain floats so
results can be averaged over a split and written to a table. The further
metrics only training's evaluation reports (depth errors per class, voxel
Chamfer / F1, energy maps) are in ``avperception_train.learn.metrics``.
"""

from __future__ import annotations

import numpy as np

IGNORE = 255
LAYOUT_CLASSES = (0, 1, 2)  # floor, ceiling, wall in the data engine's labels
OBSTACLE = 3                # and the obstacles (boxes)


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
