"""Active sensing: the robot's sweep and its matched filter (pulse compression).

The speaker next to the array emits a known sweep; correlating each microphone
with it compresses every echo into a peak at its delay, so a surface at range
``r`` shows up at lag ``2 r / c * fs`` (sample 0 = sweep onset). The numpy
reference (:func:`echo_profile`) serves the data engine and the classical
baseline; the torch version (:func:`echogram`) runs inside the student network
and exports to ONNX as a padded convolution, a max-pool and a log;
:func:`beam_envelope` beamforms the same compressed echoes towards a few
directions inside the network (short fractional-delay filters).

The echo image (:func:`echo_image`) steers the microphones' analytic
matched-filter outputs towards a set of directions before taking the envelope:
a surface in direction ``u`` at range ``r`` lights up the direction nearest
``u`` at lag ``2 r / c * fs``. Each output is delayed by ``u . p_m / c`` (exact
fractional delays in the frequency domain) and summed, so it is delay-and-sum
beamforming of the compressed echoes (far field). The dataset preview draws it.
"""

from __future__ import annotations

import numpy as np

from ..constants import SPEED_OF_SOUND


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


_PHASES = 16  # lags per step of matched_iq's strided convolution


def matched_iq(x, kernels):
    """The analytic matched filter in torch: ``(..., N)`` audio -> ``(..., 2, N)`` in-phase and quadrature.

    ``I + jQ`` correlates ``x`` (sample 0 = sweep onset) with the analytic sweep; lag ``t`` is output ``t``.
    ``kernels``: ``(2, 1, L)`` tensor from :func:`quadrature_kernels`.
    """
    import torch
    import torch.nn.functional as F

    lead, n = x.shape[:-1], x.shape[-1]
    c, _, k = kernels.shape
    # polyphase: lag t = p s + r is phase r of step s, and one convolution of stride p computes all p phases:
    # the sums of a plain correlation, as a matrix product of a shape ONNX Runtime runs about twice as fast
    p = _PHASES
    w = torch.stack([F.pad(kernels[:, 0], (r, p - 1 - r)) for r in range(p)], dim=1)  # (2, p, k + p - 1)
    y = F.conv1d(F.pad(x.reshape(-1, 1, n), (0, k + p - 2 + (-n) % p)), w.reshape(c * p, 1, -1), stride=p)
    y = y.reshape(-1, c, p, y.shape[-1]).transpose(2, 3).reshape(-1, c, y.shape[-1] * p)  # (B', 2, >= N)
    return y[..., :n].reshape(lead + (c, n))


def log_envelope(iq, hop: int, eps: float = 1e-8):
    """``(..., 2, N)`` I/Q -> ``(..., N // hop)``: ``log(I^2 + Q^2 + eps)``, the strongest value in each
    ``hop`` samples (output ``t`` covers lags ``[t hop, (t + 1) hop)``)."""
    import torch
    import torch.nn.functional as F

    lead, n = iq.shape[:-2], iq.shape[-1]
    p = (iq[..., 0, :] * iq[..., 0, :] + iq[..., 1, :] * iq[..., 1, :]).reshape(-1, 1, n)
    p = F.max_pool1d(p, hop)[:, 0]
    return torch.log(p + eps).reshape(lead + (p.shape[-1],))


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
    return log_envelope(matched_iq(x, kernels), hop, eps)


def _steering_delays(positions: np.ndarray, directions: np.ndarray, fs: float, c: float) -> np.ndarray:
    """``(D, M)`` samples: mic ``m`` hears a plane wave from ``u`` ``u . p_m / c`` earlier than the array
    origin, so delay-and-sum delays it by that much."""
    return np.asarray(directions, dtype=np.float64) @ np.asarray(positions, dtype=np.float64).T / c * fs


def sweep_band(emitted: np.ndarray, floor_db: float = -20.0) -> tuple[float, float]:
    """``(low, high)`` in cycles per sample: where ``emitted`` has energy within ``floor_db`` of its peak."""
    spec = np.abs(np.fft.rfft(np.asarray(emitted, dtype=np.float64), 4096))
    f = np.fft.rfftfreq(4096)
    on = f[spec >= spec.max() * 10 ** (floor_db / 20)]
    return float(on.min()), float(on.max())


def beam_kernels(positions: np.ndarray, directions: np.ndarray, fs: float, band: tuple[float, float],
                 c: float = SPEED_OF_SOUND) -> np.ndarray:
    """``(D, M, K)`` float32 delay-and-sum filters towards ``directions (D, 3)`` for mics at ``positions (M, 3)``.

    Correlating mic ``m`` (``conv1d`` with ``K // 2`` zeros on both sides) with ``[d, m]`` delays it by
    its steering delay towards direction ``d`` (:func:`_steering_delays`). The
    fractional delays are least-squares fits over ``band`` (cycles per sample, e.g. :func:`sweep_band`),
    the only frequencies the matched filter passes.
    """
    delays = _steering_delays(positions, directions, fs, c)
    lo, hi = band
    if not 0 <= lo < hi <= 0.5:
        raise ValueError(f"band must satisfy 0 <= low < high <= 0.5 cycles per sample, got {band}")
    half = int(np.ceil(np.abs(delays).max(initial=0.0))) + 3
    j = np.arange(-half, half + 1)  # correlation offset: out[t] = sum_j w[j] in[t + j]
    f = np.linspace(lo, hi, 8 * j.size)
    basis = np.exp(2j * np.pi * f[:, None] * j[None])  # (F, K): each tap's response
    a = np.concatenate([basis.real, basis.imag])  # real taps, complex target
    target = np.exp(-2j * np.pi * f[None] * delays.reshape(-1, 1))  # (D M, F)
    b = np.concatenate([target.real, target.imag], axis=1).T  # (2F, D M)
    w = np.linalg.solve(a.T @ a + 1e-3 * np.eye(j.size), a.T @ b).T  # a small ridge keeps out-of-band gain low
    return w.reshape(delays.shape + (j.size,)).astype(np.float32)


def beam_envelope(iq, kernels, hop: int, eps: float = 1e-8):
    """Echoes by direction: ``(B, M, 2, N)`` I/Q of every mic -> ``(B, D, N // hop)`` log power of their
    delay-and-sum towards each of ``kernels``' directions (:func:`beam_kernels`), the strongest lag in
    each ``hop`` samples. A surface in direction ``u`` at range ``r`` lights up the beam nearest ``u`` at
    lag ``2 r / c * fs``: the torch, strided counterpart of :func:`echo_image`.
    """
    import torch.nn.functional as F

    b, m, _, n = iq.shape
    half = kernels.shape[-1] // 2
    y = iq.transpose(1, 2).reshape(2 * b, m, n)  # I and Q as separate batch entries
    z = F.conv1d(F.pad(y, (half, half)), kernels).reshape(b, 2, -1, n)  # (B, 2, D, N)
    return log_envelope(z.transpose(1, 2), hop, eps)


def echo_image(audio: np.ndarray, emitted: np.ndarray, positions: np.ndarray, directions: np.ndarray,
               fs: float, c: float = SPEED_OF_SOUND) -> np.ndarray:
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
    tau = _steering_delays(positions, directions, fs, c)  # (D, M) samples
    steered = np.einsum("mf,dmf->df", spec, np.exp(-2j * np.pi * f[None, None, :] * tau[..., None]))
    return np.abs(np.fft.ifft(steered, axis=1)[:, :n]) ** 2
