"""Generalised cross-correlation with phase transform (GCC-PHAT)."""

from __future__ import annotations

import numpy as np


def mic_pairs(num_mics: int) -> np.ndarray:
    """``(P, 2)`` index pairs ``(p, q)`` with ``p < q``; ``P = M (M - 1) / 2``."""
    p, q = np.triu_indices(num_mics, k=1)
    return np.stack([p, q], axis=1)


def phat_cross_spectra(spec: np.ndarray, pairs: np.ndarray, band: np.ndarray | None = None) -> np.ndarray:
    """PHAT-weighted cross-spectra averaged over snapshots.

    Args:
        spec: ``(mics, F, T)`` STFT.
        pairs: ``(P, 2)`` microphone pairs.
        band: optional ``(F,)`` bool mask of the bins to keep (others are zeroed).
    Returns:
        ``(P, F)`` complex64: ``mean_t  X_q X_p^* / |X_q X_p^*|``.
    """
    xp = spec[pairs[:, 0]]
    xq = spec[pairs[:, 1]]
    c = xq * np.conj(xp)
    c /= np.maximum(np.abs(c), 1e-12)
    r = c.mean(axis=-1)
    if band is not None:
        r = r * band
    return r.astype(np.complex64, copy=False)


def gcc_from_cross_spectra(r: np.ndarray, nfft: int, interp: int = 1) -> np.ndarray:
    """Cross-correlations ``(P, nfft * interp)`` from cross-spectra ``(P, nfft // 2 + 1)``.

    Lag ``k`` (in samples at ``interp`` times the sample rate) lives at index
    ``k mod (nfft * interp)``; a positive lag means the second microphone of the
    pair hears the sound later.
    """
    return np.fft.irfft(r, n=nfft * interp, axis=-1).astype(np.float32, copy=False) * interp


def gcc_phat(x: np.ndarray, y: np.ndarray, fs: float, max_tau: float | None = None, interp: int = 16) -> tuple[float, np.ndarray]:
    """Delay of ``y`` relative to ``x`` in seconds (positive: ``y`` lags ``x``).

    Returns ``(tau, cc)`` where ``cc`` is the centred cross-correlation (lag 0 in the middle).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(x) + len(y)
    nfft = 1 << (n - 1).bit_length()
    X = np.fft.rfft(x, nfft)
    Y = np.fft.rfft(y, nfft)
    r = Y * np.conj(X)
    r /= np.maximum(np.abs(r), 1e-12)
    cc = np.fft.irfft(r, n=nfft * interp)
    max_shift = nfft * interp // 2
    if max_tau is not None:
        max_shift = min(int(interp * fs * max_tau) + 1, max_shift)
    cc = np.concatenate([cc[-max_shift:], cc[: max_shift + 1]])
    k = int(np.argmax(cc))
    # parabolic interpolation around the peak
    if 0 < k < len(cc) - 1:
        a, b, c = cc[k - 1], cc[k], cc[k + 1]
        den = a - 2 * b + c
        frac = 0.5 * (a - c) / den if den != 0 else 0.0
    else:
        frac = 0.0
    return (k + frac - max_shift) / float(interp * fs), cc


def phat_normalize(spec: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Unit-magnitude spectra ``X / |X|`` (the phase transform applied per channel).

    Since ``|X_q X_p^*| = |X_q| |X_p|``, whitening each channel first and then
    multiplying gives exactly the PHAT-weighted cross-spectrum of every pair.

    Args:
        spec: ``(..., T)`` complex STFT values.
    Returns:
        same shape, complex64; bins with ``|X| < eps`` become ~0.
    """
    y = np.asarray(spec)
    if y.dtype != np.complex64:
        y = y.astype(np.complex64)
    m2 = y.real * y.real
    m2 += y.imag * y.imag
    np.maximum(m2, eps * eps, out=m2)
    np.sqrt(m2, out=m2)
    np.reciprocal(m2, out=m2)
    return y * m2


def band_covariance(spec: np.ndarray, band: slice | np.ndarray, phat: bool = False) -> np.ndarray:
    """Spatial covariance (cross-spectral) matrices of the bins in ``band``, averaged over frames.

    Args:
        spec: ``(mics, F, T)`` STFT.
        band: a ``slice`` or integer indices of the bins to keep (``Fb`` of them).
        phat: whiten every channel and snapshot to unit magnitude first (GCC-PHAT / SRP-PHAT).
    Returns:
        ``(Fb, mics, mics)`` complex64, ``R[f, m, n] = mean_t X_m(f, t) X_n(f, t)^*``.
    """
    y = np.asarray(spec)[:, band]
    if phat:
        y = phat_normalize(y)
    elif y.dtype != np.complex64:
        y = y.astype(np.complex64)
    yt = y.transpose(1, 0, 2)  # (Fb, M, T) view
    r = np.matmul(yt, yt.conj().transpose(0, 2, 1))
    r *= np.float32(1.0 / max(y.shape[-1], 1))
    return r


def pair_spectra(cov: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """``(Fb, P)`` cross-spectra ``X_q X_p^*`` of each pair ``(p, q)`` from ``(Fb, M, M)`` covariances."""
    return cov[:, pairs[:, 1], pairs[:, 0]]


def lag_dft_matrix(bins: np.ndarray, nfft: int, lags: np.ndarray, interp: int = 1) -> np.ndarray:
    """Real matrix ``(L, 2 Fb)`` that takes stacked ``[Re r; Im r]`` cross-spectra to correlations.

    ``(D @ np.concatenate([r.real, r.imag]))[l] = sum_k Re(r_k exp(2j pi k lags[l] / (nfft interp)))``:
    the (unnormalised, band-limited) cross-correlation at lag ``lags[l] / interp`` samples,
    with the same sign convention as :func:`gcc_from_cross_spectra`. Evaluating only the
    lags a pair can physically produce is much cheaper than a full inverse FFT.
    """
    ph = 2.0 * np.pi * np.outer(np.asarray(lags, dtype=np.float64), np.asarray(bins, dtype=np.float64)) / (nfft * interp)
    return np.ascontiguousarray(np.concatenate([np.cos(ph), -np.sin(ph)], axis=1), dtype=np.float32)
