"""Calibrating a student's depth uncertainty on rooms it was not trained on.

The uncertainty head predicts, per pixel, a Laplace of log depth with scale ``b`` around the depth's log; the node's
near bound (:func:`avperception.sonar.products.depth_near_bound`) is its ``q`` quantile, ``d * (2q) ** b``. The head
learns the bulk of the errors, not their tails: a head moved to another array unchanged (the recipe's) is too sure,
and the shipped one leaves the truth below the bound too often where the depth is far and too rarely where it is near.
A calibration ``b -> c b d^k`` (``d`` in metres) fixes the bound where it matters:

    r = log g - log d                      the depth's log error on each pixel whose truth is known
    c = the (1 - q) quantile of r / (b d^k log 2q)     so that r < c b d^k log 2q at exactly q of the pixels
    k = the slope (of SLOPES) whose bound has the least quantile (pinball) loss: the sharpest bound that holds

:func:`calibrate_uncertainty` fits it on a dataset split (the validation rooms: the test rooms stay unseen), once
with the array's height heard and once with it given (a student with a layout head takes it, and its errors differ),
and sets :meth:`~avperception.models.student.AudioStudent.set_uncertainty_calibration`: the config saved with the
weights, so the ONNX graph, the torch weights and every consumer carry it.

    avperception-train calibrate-uncertainty runs/layout/best.pt --data DATA --out calibrated/student
"""

from __future__ import annotations

import numpy as np
import torch

SLOPES = np.round(np.arange(-0.5, 1.5001, 0.05), 2)  # the depth slopes k tried; 0: one factor on every pixel


def log_errors(model: torch.nn.Module, dataset, batch_size: int = 32, device: str = "cpu", progress: bool = False,
               known_height: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(r, b, d)``, each ``(N,)`` over every pixel of ``dataset`` whose truth is known (finite, > 0): the depth's
    log error ``log g - log d``, the Laplace scale ``b`` of log depth the uncertainty head gives it and the depth
    ``d`` (m). ``known_height``: the student is given each scene's array height (as ``evaluate --known-height``)."""
    from torch.utils.data import DataLoader

    from .evaluate import run_student

    if getattr(model, "uncertainty", None) is None:
        raise ValueError("the student has no uncertainty head (model.uncertainty) to calibrate")
    model = model.float().eval().to(device)
    rs, bs, ds = [], [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    what = "calibration" + (" (height given)" if known_height else "")
    for i, batch in enumerate(loader):
        with torch.no_grad():
            out = run_student(model, batch, device, known_height)
        d = out["depth"].float().cpu().numpy()
        b = np.exp(out["depth_log_scale"].float().cpu().numpy())
        g = batch["depth"].numpy()
        known = np.isfinite(g) & (g > 0) & np.isfinite(d) & (d > 0)
        rs.append(np.log(g[known]) - np.log(d[known]))
        bs.append(b[known])
        ds.append(d[known])
        if progress:
            print(f"\r{what}: {min((i + 1) * batch_size, len(dataset))}/{len(dataset)} scenes", end="", flush=True)
    if progress:
        print()
    r, b, d = np.concatenate(rs), np.concatenate(bs), np.concatenate(ds)
    if r.size == 0:
        raise ValueError("the calibration scenes have no pixel with a known depth")
    return r, b, d


def check_quantile(quantile: float) -> None:
    """``ValueError`` unless ``quantile`` is a near bound's probability that can be calibrated, in (0, 0.5)."""
    if not 0 < quantile < 0.5:
        raise ValueError(f"quantile must be in (0, 0.5), got {quantile}")


def fit_scale(r: np.ndarray, b: np.ndarray, quantile: float) -> float:
    """The factor ``c`` on every scale ``b`` that puts the truth below the ``quantile`` bound at exactly that share of
    the pixels (``r < c b log 2q``)."""
    check_quantile(quantile)
    t = r / (b * np.log(2 * quantile))
    c = float(np.quantile(t, 1 - quantile))
    if not c > 0:
        raise ValueError(f"the depth is nearer than the truth at more than {1 - quantile:.0%} of the pixels: no "
                         "scale of its uncertainty puts the bound below them")
    return c


def quantile_loss(r: np.ndarray, bound: np.ndarray, quantile: float) -> float:
    """The mean pinball loss of ``bound`` as the ``quantile`` quantile of ``r`` (both log, ``(N,)``): least for the
    sharpest bound that holds at that share of the pixels."""
    u = r - bound
    return float(np.mean(np.maximum(quantile * u, (quantile - 1.0) * u)))


def fit_calibration(r: np.ndarray, b: np.ndarray, d: np.ndarray, quantile: float, slopes=SLOPES,
                    max_pixels: int = 2_000_000) -> tuple[float, float]:
    """``(c, k)``: the scale ``c b d^k`` whose bound holds at exactly ``quantile`` of the pixels (:func:`fit_scale`),
    with the slope ``k`` of ``slopes`` whose bound has the least :func:`quantile_loss` (chosen on every n-th pixel,
    at most ``max_pixels`` of them; ``c`` on all)."""
    step = max(1, -(-r.size // max_pixels))
    rs, bs, log_ds, log_2q = r[::step], b[::step], np.log(d[::step]), np.log(2 * quantile)
    best = None
    for k in slopes:  # (a slope never decides whether a scale exists: that is the sign of r, refused by fit_scale)
        bk = bs * np.exp(k * log_ds)
        c = fit_scale(rs, bk, quantile)
        loss = quantile_loss(rs, c * bk * log_2q, quantile)
        if best is None or loss < best[0]:
            best = (loss, float(k))
    k = best[1]
    return fit_scale(r, b * d ** k, quantile), k


def below_share(r: np.ndarray, b: np.ndarray, quantile: float, scale: float = 1.0, d: np.ndarray | None = None,
                slope: float = 0.0) -> float:
    """The share of pixels whose truth lies below the ``quantile`` bound with every scale ``b`` times ``scale``
    (and ``d ** slope``)."""
    if d is not None and slope:
        b = b * d ** slope
    return float(np.mean(r < scale * b * np.log(2 * quantile)))


def _fit_mode(model, dataset, q: float, batch_size: int, device: str, progress: bool, known_height: bool) -> dict:
    r, b, d = log_errors(model, dataset, batch_size, device, progress, known_height)
    c, k = fit_calibration(r, b, d, q)
    return {"scale": c, "depth_slope": k, "pixels": int(r.size), "below_before": below_share(r, b, q),
            "below_after": below_share(r, b, q, c, d, k)}


def calibrate_uncertainty(model: torch.nn.Module, dataset, quantile: float | None = None, batch_size: int = 32,
                          device: str = "cpu", progress: bool = False) -> dict:
    """Fit the calibration of ``model``'s depth uncertainty on ``dataset`` (:func:`fit_calibration` at ``quantile``,
    None: the node's ``sonar.near_bound_quantile``) from the head as trained, with the array's height heard and, for a
    student with a layout head on scenes that know their floor, given; and apply it. Returns what was done (for the
    weights' metadata and the bundle): ``quantile``, ``scenes`` and, for ``heard`` and ``given``, the ``scale``
    ``c``, ``depth_slope`` ``k``, ``pixels`` and the share of pixels below the bound before and after
    (``below_before``, ``below_after``). Without a height to give, ``given`` is ``heard``'s calibration, as the
    student then ignores the height."""
    from avperception.config import SonarConfig

    q = SonarConfig().near_bound_quantile if quantile is None else float(quantile)
    check_quantile(q)  # before the scenes are run
    model.set_uncertainty_calibration(None)  # fitted on the head as trained
    info = {"quantile": q, "scenes": len(dataset),
            "heard": _fit_mode(model, dataset, q, batch_size, device, progress, known_height=False)}
    takes_height = getattr(model, "layout", None) is not None
    if takes_height and "heights" in dataset[0]:
        info["given"] = _fit_mode(model, dataset, q, batch_size, device, progress, known_height=True)
    rows = [[float(np.log(m["scale"])), m["depth_slope"]] for m in (info["heard"], info.get("given", info["heard"]))]
    model.set_uncertainty_calibration(rows)
    return info
