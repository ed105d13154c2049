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
