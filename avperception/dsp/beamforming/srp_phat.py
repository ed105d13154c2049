"""``srp_phat``: steered response power with phase transform, and its brute-force reference."""

from __future__ import annotations

import numpy as np

from ...config import ArrayGeometry
from ...constants import SPEED_OF_SOUND
from ..gcc import mic_pairs, phat_cross_spectra
from ..grid import DirectionGrid
from .base import tdoa
from .pair_lag import PairLagBeamformer


class SrpPhat(PairLagBeamformer):
    """Steered response power with phase transform, by lookup in pairwise GCC-PHAT.

    The map is the mean over pairs and band bins of the PHAT-weighted
    cross-spectrum steered to each direction, in [-1, 1] (1: every pair
    perfectly coherent at that direction). See :class:`PairLagBeamformer` for
    how it is computed.

    Args:
        interp: lag oversampling factor (default 4; the pipeline uses
            ``beamformer.interp``, 8 by default).
        **common: the band settings of :class:`~avperception.dsp.beamforming.base.Beamformer`.
    """

    name = "srp_phat"
    phat = True
    options = ("interp",)

    def __init__(self, array: ArrayGeometry, grid: DirectionGrid, *, interp: int = 4, **common) -> None:
        super().__init__(array, grid, interp=interp, **common)


def srp_phat_reference(spec: np.ndarray, array: ArrayGeometry, directions: np.ndarray, sample_rate: float,
                       nfft: int, fmin: float, fmax: float, c: float = SPEED_OF_SOUND) -> np.ndarray:
    """Exact SRP-PHAT ``(n,)`` by brute force (every direction, pair and bin): the ground truth the
    fast lookup is tested against. Slow; for tests and small grids only."""
    freqs = np.fft.rfftfreq(nfft, 1.0 / sample_rate)
    band = (freqs >= fmin) & (freqs <= fmax)
    pairs = mic_pairs(array.num_mics)
    r = phat_cross_spectra(spec, pairs, band)[:, band]  # (P, Fb)
    tau = tdoa(array.centered, pairs, np.asarray(directions, dtype=np.float64), c)  # (n, P)
    ph = np.exp(2j * np.pi * freqs[band][None, None] * tau[..., None])  # (n, P, Fb)
    return (r[None] * ph).real.mean(axis=(1, 2))
