"""Active sensing: the robot's sweep and its matched filter (pulse compression).

The speaker next to the array emits a known sweep; correlating each microphone
with it compresses every echo into a peak at its delay, so a surface at range
``r`` shows up at lag ``2 r / c * fs`` (sample 0 = sweep onset). The numpy
reference (:func:`echo_profile`) serves the data engine and the classical
baseline; the torch version (:func:`echogram`) runs inside the student network
and exports to ONNX as a padded convolution, a max-pool and a log.

The echo image (:func:`echo_image`) steers the microphones' analytic
matched-filter outputs towards a set of directions before taking the envelope:
a surface in direction ``u`` at range ``r`` lights up the direction nearest
``u`` at lag ``2 r / c * fs``. Each output is delayed by ``u . p_m / c`` (exact
fractional delays in the frequency domain) and summed, so it is delay-and-sum
beamforming of the compressed echoes (far field). The dataset preview draws it.
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
    return np.abs(_analytic_matched_filter(audio, emitted))


def _analytic_matched_filter(audio: np.ndarray, emitted: np.ndarray) -> np.ndarray:
    """``(M, N)`` complex: the analytic signal of each mic's correlation with ``emitted`` (lag 0 first)."""
    from scipy.signal import hilbert, oaconvolve

    x = np.atleast_2d(np.asarray(audio, dtype=np.float64))
    e = np.asarray(emitted, dtype=np.float64)
    return hilbert(oaconvolve(x, e[::-1][None], axes=1)[:, len(e) - 1:], axis=1)


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


def echo_image(audio: np.ndarray, emitted: np.ndarray, positions: np.ndarray, directions: np.ndarray,
               fs: float, c: float = 343.0) -> np.ndarray:
    """``(D, N)`` power of the matched filters of ``audio (M, N)`` beamformed towards ``directions (D, 3)``
    (unit vectors in the array frame, e.g. a :mod:`avperception.dsp.grid` grid's ``vectors``), scaled
    like :func:`quadrature_kernels` (one unit copy of ``emitted`` at one mic peaks at 1).

    Mic ``m`` hears a plane wave from ``u`` ``u . p_m / c`` earlier than the array origin, so it is
    delayed by that much before the sum.
    """
    a = _analytic_matched_filter(audio, emitted) / np.sum(np.asarray(emitted, dtype=np.float64) ** 2)
    n = a.shape[1]
    spec = np.fft.fft(a, 2 * n, axis=1)
    f = np.fft.fftfreq(2 * n)
    tau = np.asarray(directions, float) @ np.asarray(positions, float).T / c * fs  # (D, M) samples
    steered = np.einsum("mf,dmf->df", spec, np.exp(-2j * np.pi * f[None, None, :] * tau[..., None]))
    return np.abs(np.fft.ifft(steered, axis=1)[:, :n]) ** 2
