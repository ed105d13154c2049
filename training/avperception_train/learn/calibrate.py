"""Calibrating a student's depth uncertainty on rooms it was not trained on.

The uncertainty head predicts, per pixel, a Laplace of log depth with scale ``b`` around the depth's log; the node's
near bound (:func:`avperception.sonar.products.depth_near_bound`) is its ``q`` quantile, ``d * (2q) ** b``. A head
that never trained on an array's echoes (the recipe moves the 8-mic student's head to another array unchanged) can
be too sure: the truth then lies below the bound at more than ``q`` of the pixels. One factor on every pixel's
scale fixes the bound where it matters without changing the order of the errors (the AUSE):

    r = log g - log d                      the depth's log error on each pixel whose truth is known
    c = the (1 - q) quantile of r / (b log 2q)     so that r < c b log 2q at exactly q of the pixels

:func:`calibrate_uncertainty` finds ``c`` on a dataset split (the validation rooms: the test rooms stay unseen) and
moves the head's last bias by ``log c``, so the ONNX graph, the torch weights and every consumer carry it.

    avperception-train calibrate-uncertainty runs/layout/best.pt --data DATA --out calibrated/student
"""

from __future__ import annotations

import numpy as np
import torch


def log_errors(model: torch.nn.Module, dataset, batch_size: int = 32, device: str = "cpu",
               progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(r, b)``, each ``(N,)`` over every pixel of ``dataset`` whose truth is known (finite, > 0): the depth's log
    error ``log g - log d`` and the Laplace scale ``b`` of log depth the uncertainty head gives it."""
    from torch.utils.data import DataLoader

    if getattr(model, "uncertainty", None) is None:
        raise ValueError("the student has no uncertainty head (model.uncertainty) to calibrate")
    model = model.float().eval().to(device)
    rs, bs = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for i, batch in enumerate(loader):
        with torch.no_grad():
            out = model(batch["audio"].to(device))
        d = out["depth"].float().cpu().numpy()
        b = np.exp(out["depth_log_scale"].float().cpu().numpy())
        g = batch["depth"].numpy()
        known = np.isfinite(g) & (g > 0) & np.isfinite(d) & (d > 0)
        rs.append(np.log(g[known]) - np.log(d[known]))
        bs.append(b[known])
        if progress:
            print(f"\rcalibration: {min((i + 1) * batch_size, len(dataset))}/{len(dataset)} scenes", end="", flush=True)
    if progress:
        print()
    r, b = np.concatenate(rs), np.concatenate(bs)
    if r.size == 0:
        raise ValueError("the calibration scenes have no pixel with a known depth")
    return r, b


def fit_scale(r: np.ndarray, b: np.ndarray, quantile: float) -> float:
    """The factor ``c`` on every scale ``b`` that puts the truth below the ``quantile`` bound at exactly that share of
    the pixels (``r < c b log 2q``)."""
    if not 0 < quantile < 0.5:
        raise ValueError(f"quantile must be in (0, 0.5), got {quantile}")
    t = r / (b * np.log(2 * quantile))
    c = float(np.quantile(t, 1 - quantile))
    if not c > 0:
        raise ValueError(f"the depth is nearer than the truth at more than {1 - quantile:.0%} of the pixels: no "
                         "scale of its uncertainty puts the bound below them")
    return c


def below_share(r: np.ndarray, b: np.ndarray, quantile: float, scale: float = 1.0) -> float:
    """The share of pixels whose truth lies below the ``quantile`` bound with every scale times ``scale``."""
    return float(np.mean(r < scale * b * np.log(2 * quantile)))


def calibrate_uncertainty(model: torch.nn.Module, dataset, quantile: float | None = None, batch_size: int = 32,
                          device: str = "cpu", progress: bool = False) -> dict:
    """Fit the scale factor of ``model``'s depth uncertainty on ``dataset`` (:func:`fit_scale` at ``quantile``, None:
    the node's ``sonar.near_bound_quantile``) and apply it: the head's last bias moves by ``log c``. Returns what was
    done (for the weights' metadata and the bundle): ``scale``, ``quantile``, ``pixels``, ``scenes``, the share of
    pixels below the bound before and after (``below_before``, ``below_after``)."""
    from avperception.config import SonarConfig

    q = SonarConfig().near_bound_quantile if quantile is None else float(quantile)
    r, b = log_errors(model, dataset, batch_size, device, progress)
    c = fit_scale(r, b, q)
    with torch.no_grad():
        last = model.uncertainty.body[-1]
        last.bias.add_(float(np.log(c)))
    return {"scale": c, "quantile": q, "pixels": int(r.size), "scenes": len(dataset),
            "below_before": below_share(r, b, q), "below_after": below_share(r, b, q, c)}
