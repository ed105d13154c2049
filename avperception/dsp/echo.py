"""Active sensing: the robot's sweep and its matched filter (pulse compression).

The speaker next to the array emits a known sweep; correlating each microphone
with it compresses every echo into a peak at its delay, so a surface at range
``r`` shows up at lag ``2 r / c * fs`` (sample 0 = sweep onset). The numpy
reference (:func:`echo_profile`) serves the data engine and the classical
baseline; the torch version (:func:`echogram`) runs inside the student network
and exports to ONNX as a padded convolution, a max-pool and a log.

The echo image (:func:`echo_image`, numpy reference :func:`echo_image_reference`)
steers the matched-filter outputs of all microphones towards a set of
directions before taking the envelope: a surface in direction ``u`` at range
``r`` lights up the direction nearest ``u`` at lag ``2 r / c * fs``. Each
microphone's complex matched-filter output is delayed by ``u . p_m / c``
(a fractional delay, realised as a short FIR filter) and summed, so it is
delay-and-sum beamforming of the compressed echoes (far field). The dataset
preview draws it; the torch version exports to ONNX like the echogram.
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

    lead = x.shape[:-1]
    y = matched_filter(x.reshape((-1,) + x.shape[-1:]), kernels)  # (B', 2, N)
    p = y[:, 0] * y[:, 0] + y[:, 1] * y[:, 1]
    p = F.max_pool1d(p[:, None], hop)[:, 0]  # (B', N // hop)
    return torch.log(p + eps).reshape(lead + (p.shape[-1],))


def matched_filter(x, kernels):
    """``(B, N)`` audio -> ``(B, 2, N)``: in-phase and quadrature correlation with the analytic sweep
    (``kernels`` from :func:`quadrature_kernels`); output ``t`` = lag ``t``."""
    import torch.nn.functional as F

    n = x.shape[-1]
    return F.conv1d(F.pad(x.reshape(-1, 1, n), (0, kernels.shape[-1] - 1)), kernels)


# ----------------------------------------------------------------------------- echo image


def echo_directions(azimuths: int, elevations_deg) -> np.ndarray:
    """``(E * A, 3)`` unit vectors, elevation-major: ``azimuths`` evenly spaced from 0 (x axis,
    counter-clockwise towards y) at each elevation in ``elevations_deg``."""
    if azimuths < 1 or len(elevations_deg) < 1:
        raise ValueError("an echo image needs at least one azimuth and one elevation")
    az = 2 * np.pi * np.arange(azimuths) / azimuths
    el = np.radians(np.asarray(elevations_deg, dtype=np.float64))
    ce, se = np.cos(el)[:, None], np.sin(el)[:, None]
    d = np.stack([ce * np.cos(az), ce * np.sin(az), np.broadcast_to(se, (el.size, azimuths))], axis=-1)
    return d.reshape(-1, 3)


def steering_delays(positions: np.ndarray, directions: np.ndarray, fs: float, c: float = 343.0) -> np.ndarray:
    """``(D, M)`` delays in samples that line up a plane wave from each direction across the mics:
    mic ``m`` hears it ``u . p_m / c`` earlier than the array origin, so it is delayed by that much."""
    return np.asarray(directions, float) @ np.asarray(positions, float).T / c * fs


def fractional_delay_kernels(delays: np.ndarray, taps: int, band: tuple[float, float] | None = None) -> np.ndarray:
    """``(D, M, taps)`` float32 fractional-delay filters: correlating (``conv1d``, ``taps // 2`` zeros on
    both sides) mic ``m`` with ``[d, m]`` delays it by ``delays[d, m]`` samples; summing over ``m``
    beamforms towards direction ``d``.

    ``band``: ``(low, high)`` in cycles per sample where the delay must be exact (least-squares fit
    over the band, e.g. the sweep's); ``None``: a Kaiser-windowed sinc (accurate up to about 0.8
    Nyquist for 25 taps).
    """
    delays = np.asarray(delays, dtype=np.float64)
    if taps % 2 == 0 or taps < 3:
        raise ValueError(f"taps must be odd and at least 3, got {taps}")
    half = taps // 2
    if np.abs(delays).max(initial=0.0) > half - 2:
        raise ValueError(f"delays up to {np.abs(delays).max():.1f} samples need more than {taps} taps")
    j = np.arange(taps) - half  # correlation offset: out[t] = sum_j w[j] in[t + j]
    if band is None:
        t = j + delays[..., None]  # the sinc and its Kaiser window both centred on the delay
        window = np.i0(6.0 * np.sqrt(np.clip(1 - (t / (half + 1)) ** 2, 0, 1))) / np.i0(6.0)
        return (np.sinc(t) * window).astype(np.float32)
    lo, hi = band
    if not 0 <= lo < hi <= 0.5:
        raise ValueError(f"band must satisfy 0 <= low < high <= 0.5 cycles per sample, got {band}")
    f = np.linspace(lo, hi, 4 * taps)
    basis = np.exp(2j * np.pi * f[:, None] * j[None])  # (F, taps): response of each tap
    a = np.concatenate([basis.real, basis.imag])  # real taps, complex target
    target = np.exp(-2j * np.pi * f[None] * delays.reshape(-1, 1))  # (DM, F)
    b = np.concatenate([target.real, target.imag], axis=1).T  # (2F, DM)
    ridge = 1e-3 * np.eye(taps)  # keeps the out-of-band gain small
    w = np.linalg.solve(a.T @ a + ridge, a.T @ b).T
    return w.reshape(delays.shape + (taps,)).astype(np.float32)


def echo_image(x, kernels, fd_kernels, hop: int, length: int, eps: float = 1e-8):
    """Log power of the beamformed matched filter: an echo's direction and range.

    Args:
        x: ``(B, M, N)`` audio, sample 0 = sweep onset.
        kernels: ``(2, 1, L)`` from :func:`quadrature_kernels`.
        fd_kernels: ``(D, M, K)`` from :func:`fractional_delay_kernels` (``K`` odd).
        hop: range step in samples (the strongest lag in each ``hop`` is kept).
        length: lags kept, ``[0, length)``, a multiple of ``hop``.
    Returns:
        ``(B, D, length // hop)`` ``log(|sum_m y_m(t - delay_dm)|^2 + eps)`` with ``y_m`` mic ``m``'s
        analytic matched-filter output.
    """
    import torch
    import torch.nn.functional as F

    b, m, n = x.shape
    y = matched_filter(x.reshape(b * m, n), kernels)[..., :length]  # (B M, 2, length)
    y = y.reshape(b, m, 2, length).transpose(1, 2).reshape(2 * b, m, length)  # I and Q as batch entries
    half = fd_kernels.shape[-1] // 2
    z = F.conv1d(F.pad(y, (half, half)), fd_kernels).reshape(b, 2, -1, length)  # (B, 2, D, length)
    p = z[:, 0] * z[:, 0] + z[:, 1] * z[:, 1]
    d = p.shape[1]
    p = F.max_pool1d(p.reshape(b * d, 1, length), hop).reshape(b, d, length // hop)
    return torch.log(p + eps)


def echo_image_reference(audio: np.ndarray, emitted: np.ndarray, positions: np.ndarray,
                         directions: np.ndarray, fs: float, c: float = 343.0) -> np.ndarray:
    """numpy reference for :func:`echo_image` at ``hop = 1``: ``(D, N)`` power (not log), exact
    fractional delays in the frequency domain, scaled like :func:`quadrature_kernels`."""
    from scipy.signal import hilbert, oaconvolve

    x = np.atleast_2d(np.asarray(audio, dtype=np.float64))
    e = np.asarray(emitted, dtype=np.float64)
    n = x.shape[1]
    mf = oaconvolve(x, e[::-1][None], axes=1)[:, len(e) - 1:] / np.sum(e * e)
    a = hilbert(mf, axis=1)  # (M, N) analytic
    pad = 2 * n
    spec = np.fft.fft(a, pad, axis=1)
    f = np.fft.fftfreq(pad)
    tau = steering_delays(positions, directions, fs, c)  # (D, M)
    steered = np.einsum("mf,dmf->df", spec, np.exp(-2j * np.pi * f[None, None, :] * tau[..., None]))
    return np.abs(np.fft.ifft(steered, axis=1)[:, :n]) ** 2
