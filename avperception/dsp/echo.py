"""Active sensing: the robot's sweep and its matched filter (pulse compression).

The speaker next to the array emits a known sweep; correlating each microphone
with it compresses every echo into a peak at its delay, so a surface at range
``r`` shows up at lag ``2 r / c * fs`` (sample 0 = sweep onset). The numpy
reference (:func:`echo_profile`) serves the data engine and the classical
baseline; the torch version (:func:`echogram`) runs inside the student network
and exports to ONNX as a padded convolution, a max-pool and a log.
"""

from __future__ import annotations

import numpy as np


def sweep(fs: int, f0: float, f1: float, duration: float, kind: str = "linear", fade: float = 0.25) -> np.ndarray:
    """The emitted sweep, peak amplitude 1, Tukey-tapered: ``(round(duration * fs),)`` float64.

    ``kind``: ``linear`` or ``exponential`` (logarithmic frequency sweep).
    """
    from scipy.signal import chirp
    from scipy.signal.windows import tukey

    if kind not in ("linear", "exponential"):
        raise ValueError(f"sweep kind must be linear or exponential, got {kind!r}")
    n = max(2, int(round(duration * fs)))
    t = np.arange(n) / fs
    x = chirp(t, f0=f0, t1=t[-1], f1=f1, method="linear" if kind == "linear" else "logarithmic")
    x = x * tukey(n, fade)
    return x / np.max(np.abs(x))


def echo_profile(audio: np.ndarray, emitted: np.ndarray) -> np.ndarray:
    """Matched-filter envelope ``(M, N)`` of ``audio (M, N)``: how much of ``emitted`` arrives at each lag.

    A path of length ``d`` shows up as a peak at lag ``d / c * fs``.
    """
    from scipy.signal import hilbert, oaconvolve

    x = np.atleast_2d(np.asarray(audio, dtype=np.float64))
    mf = oaconvolve(x, np.asarray(emitted, dtype=np.float64)[::-1][None], axes=1)[:, len(emitted) - 1:]
    return np.abs(hilbert(mf, axis=1))


def quadrature_kernels(emitted: np.ndarray) -> np.ndarray:
    """``(2, 1, L)`` float32 correlation kernels: ``emitted`` and its Hilbert transform, scaled so that a
    unit copy of ``emitted`` in the input gives an envelope peak of 1."""
    from scipy.signal import hilbert

    e = np.asarray(emitted, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or not np.any(e):
        raise ValueError("the emitted signal must be a non-zero 1-D array of at least 2 samples")
    a = hilbert(e)
    k = np.stack([a.real, a.imag]) / np.sum(e * e)
    return k[:, None, :].astype(np.float32)


def echogram(x, kernels, hop: int, eps: float = 1e-8):
    """Log envelope power of the matched filter, the strongest value in each ``hop`` samples.

    Args:
        x: ``(..., N)`` audio tensor, sample 0 = sweep onset.
        kernels: ``(2, 1, L)`` tensor from :func:`quadrature_kernels`.
        hop: output step in samples.
    Returns:
        ``(..., N // hop)``: ``log(I^2 + Q^2 + eps)`` where ``I + jQ`` correlates ``x`` with the analytic sweep;
        output ``t`` covers lags ``[t hop, (t + 1) hop)``.
    """
    import torch
    import torch.nn.functional as F

    lead, n = x.shape[:-1], x.shape[-1]
    y = F.conv1d(F.pad(x.reshape(-1, 1, n), (0, kernels.shape[-1] - 1)), kernels)  # (B', 2, N)
    p = y[:, 0] * y[:, 0] + y[:, 1] * y[:, 1]
    p = F.max_pool1d(p[:, None], hop)[:, 0]  # (B', N // hop)
    return torch.log(p + eps).reshape(lead + (p.shape[-1],))
