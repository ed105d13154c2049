"""``das``: frequency-domain delay-and-sum power through the pairwise lag lookup."""

from __future__ import annotations

import numpy as np

from ...config import ArrayGeometry
from ..grid import DirectionGrid
from .pair_lag import PairLagBeamformer


class DelayAndSum(PairLagBeamformer):
    """Frequency-domain delay-and-sum (conventional, Bartlett) beamformer.

    Power toward ``u`` averaged over the band's bins and frames:
    ``mean_f a^H R_f a / M^2`` with unit-modulus steering ``a``. The quadratic
    form splits into the diagonal (the same for every direction) and the pairs'
    cross-spectra steered to their delays, so it is computed with the same
    lag lookup as SRP-PHAT, without the phase transform. The result is the
    mean power of the beamformer output per bin (signal units squared).

    Args:
        interp: lag oversampling factor.
        **common: the band settings of :class:`~avperception.dsp.beamforming.base.Beamformer`.
    """

    name = "das"
    phat = False
    options = ("interp",)

    def __init__(self, array: ArrayGeometry, grid: DirectionGrid, *, interp: int = 8, **common) -> None:
        super().__init__(array, grid, interp=interp, **common)

    def _pair_scale(self) -> float:
        return 2.0 / self.array.num_mics**2

    def _finish(self, values: np.ndarray, diag: float) -> np.ndarray:
        return (values + np.float32(diag / self.array.num_mics**2)).astype(np.float32)
