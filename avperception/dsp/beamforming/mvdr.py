"""``mvdr``: minimum-variance distortionless response (Capon), per bin, summed over the band."""

from __future__ import annotations

import numpy as np

from ...config import ArrayGeometry
from ..grid import DirectionGrid
from .narrowband import NarrowbandBeamformer, _quadratic


class Mvdr(NarrowbandBeamformer):
    """Minimum-variance distortionless response (Capon) beamformer.

    Per bin: ``1 / (a^H R^-1 a)`` with the covariance normalised to unit mean
    eigenvalue and loaded by ``diagonal_loading`` (robust to few snapshots and
    steering errors); the map is the mean over the band's bins.

    Args:
        diagonal_loading: added to the normalised covariance's diagonal.
        max_bins, memory_mb: see :class:`NarrowbandBeamformer`.
        **common: the band settings of :class:`~avperception.dsp.beamforming.base.Beamformer`.
    """

    name = "mvdr"
    options = ("diagonal_loading", "max_bins", "memory_mb")

    def __init__(self, array: ArrayGeometry, grid: DirectionGrid, *, diagonal_loading: float = 1e-2,
                 max_bins: int | None = None, memory_mb: float = 256.0, **common) -> None:
        super().__init__(array, grid, max_bins=max_bins, memory_mb=memory_mb, **common)
        self.loading = float(diagonal_loading)

    def _prepare(self, cov: np.ndarray, snapshots: int):
        m = cov.shape[-1]
        tr = np.trace(cov, axis1=1, axis2=2).real / m
        r = cov / np.maximum(tr, 1e-20)[:, None, None].astype(np.float32)
        r = r + self.loading * np.eye(m, dtype=np.float32)[None]
        return np.linalg.inv(r).astype(np.complex64)

    def _narrowband(self, state, steer: np.ndarray, fslice: slice) -> np.ndarray:
        return 1.0 / np.maximum(_quadratic(steer, state[fslice]), 1e-12)
