"""Depth metrics that matter to a robot that drives by them, and the quality of a depth uncertainty (numpy).

Safety (:func:`safety_counts`, pooled over many images, then :func:`safety_metrics`):

- **false-far rate**: of the pixels whose true range is under ``near_m`` (0.5 m), the fraction predicted beyond
  ``far_m`` (1 m): an obstacle at arm's length reported as open space, the most dangerous error;
- **near-obstacle recall**: of the pixels whose true range is under ``close_m`` (1 m), the fraction predicted
  under ``close_pred_m`` (1.5 m): what a planner that slows down for anything nearer than 1.5 m would catch;
- **false-near rate**: of the pixels whose true range is beyond ``open_m`` (2 m), the fraction predicted under
  ``far_m`` (1 m): open space reported as an obstacle at arm's length, what stops a robot for nothing (the price
  of a cautious depth, such as the near bound);
- AbsRel and delta_1 in bands of true range (:data:`RANGE_EDGES_M`: <0.5, 0.5-1, 1-2, 2-4, 4-6, >6 m) and
  delta_1 on the obstacle class's pixels.

Uncertainty (:func:`sparsification`): sort the pixels by predicted uncertainty, leave out the most uncertain
fraction step by step and score the rest; the oracle does the same by the true error. AUSE is the area between
the two curves (0: the uncertainty ranks the errors perfectly); a random order gives the reference.
"""

from __future__ import annotations

import functools

import numpy as np

from .metrics import OBSTACLE

RANGE_EDGES_M = (0.5, 1.0, 2.0, 4.0, 6.0)  # bands of true range: below the first edge, between edges, above the last
NEAR_M, FAR_M = 0.5, 1.0                   # false far: true range < NEAR_M, predicted > FAR_M
CLOSE_M, CLOSE_PRED_M = 1.0, 1.5           # near-obstacle recall: true range < CLOSE_M, predicted < CLOSE_PRED_M
OPEN_M = 2.0                               # false near: true range > OPEN_M, predicted < FAR_M
SPARSIFICATION_METRICS = ("abs_rel", "rmse")


def range_band_names(edges=RANGE_EDGES_M) -> list[str]:
    """``['<0.5 m', '0.5-1 m', ..., '>6 m']`` for the bands :func:`safety_counts` pools."""
    e = [f"{v:g}" for v in edges]
    return [f"<{e[0]} m"] + [f"{a}-{b} m" for a, b in zip(e, e[1:])] + [f">{e[-1]} m"]


def _known_pixels(pred: np.ndarray, gt: np.ndarray, min_depth: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(prediction, truth)`` float64, flat, at the pixels whose truth is known (finite, beyond ``min_depth``), and
    which those are (a flat mask)."""
    g = np.asarray(gt, dtype=np.float64).ravel()
    p = np.asarray(pred, dtype=np.float64).ravel()
    if p.shape != g.shape:
        raise ValueError(f"prediction has {p.size} pixels, the ground truth {g.size}: give the same panorama")
    valid = np.isfinite(g) & (g > min_depth)
    return p[valid], g[valid], valid


def safety_counts(pred: np.ndarray, gt: np.ndarray, labels: np.ndarray | None = None, obstacle: int = OBSTACLE,
                  edges=RANGE_EDGES_M, min_depth: float = 1e-3) -> dict[str, np.ndarray]:
    """Pixel counts behind :func:`safety_metrics`, to add up over images (``merge_counts``).

    Args:
        pred, gt: ``(..., H, W)`` metres; gt NaN / <= min_depth is unknown and left out. A prediction that is
            not finite counts as infinitely far (the robot is told nothing is there).
        labels: same shape, the true classes (for delta_1 on ``obstacle`` pixels), or None.
        edges: ``(K,)`` increasing band edges (m): ``K + 1`` bands of true range.
    Returns:
        ``near``, ``false_far`` (true < NEAR_M; of those predicted > FAR_M), ``close``, ``close_hit``
        (true < CLOSE_M; of those predicted < CLOSE_PRED_M), ``open``, ``false_near`` (true > OPEN_M; of those
        predicted < FAR_M), ``band_n``, ``band_abs_rel``, ``band_delta1``
        (``(K + 1,)``: pixels, sum of ``|p - g| / g``, pixels within 1.25x, per band of true range),
        ``obstacle_n`` and ``obstacle_delta1``; all float64 arrays.
    """
    p, g, valid = _known_pixels(pred, gt, min_depth)
    p = np.where(np.isfinite(p), np.maximum(p, min_depth), np.inf)
    ok = np.maximum(p / g, g / p) < 1.25
    band = np.searchsorted(np.asarray(edges, dtype=np.float64), g, side="right")  # 0 .. K
    k = len(edges) + 1
    near, close = g < NEAR_M, g < CLOSE_M
    out = {
        "near": np.float64(near.sum()), "false_far": np.float64((near & (p > FAR_M)).sum()),
        "close": np.float64(close.sum()), "close_hit": np.float64((close & (p < CLOSE_PRED_M)).sum()),
        "open": np.float64((g > OPEN_M).sum()), "false_near": np.float64(((g > OPEN_M) & (p < FAR_M)).sum()),
        "band_n": np.bincount(band, minlength=k).astype(np.float64),
        "band_abs_rel": np.bincount(band, weights=np.abs(p - g) / g, minlength=k),
        "band_delta1": np.bincount(band, weights=ok.astype(np.float64), minlength=k),
        "obstacle_n": np.float64(0.0), "obstacle_delta1": np.float64(0.0),
    }
    if labels is not None:
        lab = np.asarray(labels).ravel()
        if lab.size != valid.size:
            raise ValueError(f"labels have {lab.size} pixels, the depth {valid.size}")
        obs = lab[valid] == obstacle
        out["obstacle_n"] = np.float64(obs.sum())
        out["obstacle_delta1"] = np.float64((obs & ok).sum())
    return out


def merge_counts(total: dict | None, counts: dict) -> dict:
    """``total + counts`` key by key (``total`` None: a copy of ``counts``)."""
    if total is None:
        return {k: np.array(v, dtype=np.float64, copy=True) for k, v in counts.items()}
    return {k: total[k] + counts[k] for k in total}


def pooled_metrics(records, field: str, metrics=None) -> dict:
    """``metrics`` (default :func:`safety_metrics`) of the ``field`` counts of ``records`` (dicts, e.g. one per ping)
    added up; records without them are skipped, and {} is returned when none has them."""
    total = None
    for r in records:
        if r.get(field) is not None:
            total = merge_counts(total, r[field])
    return {} if total is None else (metrics or safety_metrics)(total)


def named_rates(metrics: dict, keys, prefix: str = "") -> dict:
    """``{prefix + key: rate}`` for ``keys`` of ``metrics`` (e.g. :func:`pooled_metrics`' output), None where a
    rate is missing or not finite (no pixel qualifies), for JSON."""
    def rate(v):
        return float(v) if v is not None and np.isfinite(v) else None

    return {prefix + k: rate(metrics.get(k)) for k in keys}


CONFIDENT_RATES = ("kept", "delta1", "abs_rel", "false_far_rate")  # the confident depth's, reported ``confident_*``


def _ratio(a, b) -> float:
    return float(a / b) if b else float("nan")


def safety_metrics(counts: dict, edges=RANGE_EDGES_M) -> dict:
    """Rates from pooled :func:`safety_counts`: ``false_far_rate``, ``near_recall``, ``false_near_rate``,
    ``obstacle_delta1`` (NaN where no pixel qualifies), how many pixels each rests on (``near_pixels``,
    ``close_pixels``, ``open_pixels``, ``obstacle_pixels``),
    and ``by_range``: ``{band name: {share, abs_rel, delta1}}`` for every band with pixels."""
    n = counts["band_n"]
    by_range = {name: {"share": float(n[i] / n.sum()), "abs_rel": float(counts["band_abs_rel"][i] / n[i]),
                       "delta1": float(counts["band_delta1"][i] / n[i])}
                for i, name in enumerate(range_band_names(edges)) if n[i]}
    return {"false_far_rate": _ratio(counts["false_far"], counts["near"]),
            "near_recall": _ratio(counts["close_hit"], counts["close"]),
            "false_near_rate": _ratio(counts["false_near"], counts["open"]),
            "obstacle_delta1": _ratio(counts["obstacle_delta1"], counts["obstacle_n"]),
            "near_pixels": int(counts["near"]), "close_pixels": int(counts["close"]),
            "open_pixels": int(counts["open"]), "obstacle_pixels": int(counts["obstacle_n"]), "by_range": by_range}


def kept_counts(pred: np.ndarray, gt: np.ndarray, min_depth: float = 1e-3) -> dict[str, np.ndarray]:
    """Pixel counts behind :func:`kept_metrics`, for a depth that leaves out the pixels it is unsure of (NaN: not
    reported, as :func:`avperception.sonar.products.confident_depth` does), to add up over images
    (``merge_counts``). ``pred``, ``gt``: ``(..., H, W)`` metres; gt NaN / <= min_depth is unknown and left out.
    Returns ``known``, ``kept`` (of those, predicted), ``kept_delta1`` (of those, within 1.25x), ``kept_abs_rel``
    (their sum of ``|p - g| / g``), ``near`` (true < NEAR_M), ``near_kept`` and ``near_kept_far`` (of those kept,
    predicted > FAR_M)."""
    p, g, _ = _known_pixels(pred, gt, min_depth)
    kept = np.isfinite(p)
    gk, pk = g[kept], np.maximum(p[kept], min_depth)
    near = g < NEAR_M
    return {"known": np.float64(g.size), "kept": np.float64(kept.sum()),
            "kept_delta1": np.float64((np.maximum(pk / gk, gk / pk) < 1.25).sum()),
            "kept_abs_rel": np.float64((np.abs(pk - gk) / gk).sum()), "near": np.float64(near.sum()),
            "near_kept": np.float64((near & kept).sum()), "near_kept_far": np.float64((near & kept & (p > FAR_M)).sum())}


def kept_metrics(counts: dict) -> dict:
    """Rates from pooled :func:`kept_counts`: ``kept`` (the share of the known pixels reported), ``delta1`` and
    ``abs_rel`` over those, ``false_far_rate`` (of the near pixels reported, the share beyond FAR_M) and
    ``near_kept`` (the share of the near pixels reported); NaN where no pixel qualifies."""
    return {"kept": _ratio(counts["kept"], counts["known"]), "delta1": _ratio(counts["kept_delta1"], counts["kept"]),
            "abs_rel": _ratio(counts["kept_abs_rel"], counts["kept"]),
            "false_far_rate": _ratio(counts["near_kept_far"], counts["near_kept"]),
            "near_kept": _ratio(counts["near_kept"], counts["near"])}


# ----------------------------------------------------------------------------- sparsification


def pixel_errors(pred: np.ndarray, gt: np.ndarray, metric: str = "abs_rel", min_depth: float = 1e-3
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel error terms of ``metric`` on the known pixels: ``|p - g| / g`` (abs_rel) or ``(p - g)^2`` (rmse,
    whose curve takes the square root of the mean), and the boolean mask ``(..., H, W)`` of the pixels kept
    (gt finite and > min_depth, prediction finite)."""
    if metric not in SPARSIFICATION_METRICS:
        raise ValueError(f"metric must be one of {SPARSIFICATION_METRICS}, got {metric!r}")
    g = np.asarray(gt, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    keep = np.isfinite(g) & (g > min_depth) & np.isfinite(p)
    g, p = g[keep], np.maximum(p[keep], min_depth)
    return (np.abs(p - g) / g if metric == "abs_rel" else (p - g) ** 2), keep


def sparsification_curve(errors: np.ndarray, score: np.ndarray, fractions: np.ndarray, metric: str = "abs_rel"
                         ) -> np.ndarray:
    """The metric of the pixels left after removing, for each of ``fractions``, that fraction with the highest
    ``score`` (ties in the order ``argsort`` gives).

    Args:
        errors: ``(N,)`` per-pixel error terms (:func:`pixel_errors`).
        score: ``(N,)`` what to sort by (highest removed first): an uncertainty, or the errors for the oracle.
        fractions: ``(S,)`` in ``[0, 1)``.
    Returns:
        ``(S,)``: the mean error (abs_rel) or root mean squared error (rmse) of the rest.
    """
    e = np.asarray(errors, dtype=np.float64).ravel()
    return _ordered_curve(e[np.argsort(-np.asarray(score, dtype=np.float64).ravel(), kind="stable")], fractions, metric)


def _ordered_curve(ordered: np.ndarray, fractions: np.ndarray, metric: str) -> np.ndarray:
    """:func:`sparsification_curve` of errors ``(N,)`` already in the order they are removed (NaN for none)."""
    n = ordered.size
    if n == 0:
        return np.full(len(fractions), np.nan)
    tail = np.concatenate([np.cumsum(ordered[::-1])[::-1], [0.0]])  # tail[k]: sum of all but the first k
    k = np.minimum((np.asarray(fractions, dtype=np.float64) * n).astype(np.int64), n - 1)
    mean = tail[k] / (n - k)
    return np.sqrt(mean) if metric == "rmse" else mean


@functools.lru_cache(maxsize=8)
def _random_order(n: int, seed: int) -> np.ndarray:
    """The random order of ``n`` pixels that seed ``seed`` gives (the same for every image of that many known
    pixels: computed once)."""
    order = np.argsort(-np.random.default_rng(seed).random(n), kind="stable")
    order.flags.writeable = False
    return order


def sparsification(pred: np.ndarray, gt: np.ndarray, uncertainty: np.ndarray, metric: str = "abs_rel",
                   steps: int = 20, seed: int = 0, min_depth: float = 1e-3) -> dict:
    """Sparsification curves of one depth prediction and its uncertainty, and their areas.

    Args:
        pred, gt, uncertainty: ``(..., H, W)``: depth (m), true depth (m, NaN unknown) and the predicted
            uncertainty (higher = less sure; for abs_rel a relative one ranks best, for rmse one in metres).
        metric: ``abs_rel`` or ``rmse``. steps: fractions ``0, 1/steps, ..., (steps - 1)/steps`` removed.
        seed: the random order's.
    Returns:
        ``fractions``, ``model``, ``oracle``, ``random`` (curves, ``(steps,)`` lists), ``ause`` (area between the
        model's and the oracle's curve over the fractions removed, trapezoids), ``ause_random`` (the same for the
        random order) and ``pixels``; the areas are NaN without a known pixel.
    """
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    err, keep = pixel_errors(pred, gt, metric, min_depth)
    u = np.asarray(uncertainty, dtype=np.float64)
    if u.shape != keep.shape:
        raise ValueError(f"uncertainty has shape {u.shape}, the depth {keep.shape}: give one per pixel")
    u = u[keep]
    u = np.where(np.isfinite(u), u, np.inf)  # an unknown uncertainty is the least sure
    f = np.arange(steps) / steps
    model = sparsification_curve(err, u, f, metric)
    oracle = _ordered_curve(np.sort(err)[::-1], f, metric)  # the errors' own order: largest removed first
    rand = _ordered_curve(err[_random_order(err.size, seed)], f, metric)
    return {"fractions": f.tolist(), "model": model.tolist(), "oracle": oracle.tolist(), "random": rand.tolist(),
            "ause": float(np.trapezoid(model - oracle, f)), "ause_random": float(np.trapezoid(rand - oracle, f)),
            "pixels": int(err.size)}
