"""``music`` and ``normmusic``: the MUSIC pseudo-spectrum per bin, summed over the band."""

from __future__ import annotations

import numpy as np

from ...config import ArrayGeometry
from ..grid import DirectionGrid
from .narrowband import NarrowbandBeamformer


class Music(NarrowbandBeamformer):
    """MUSIC pseudo-spectrum ``1 / ||E_n^H a||^2`` per bin, summed over the band.

    ``||E_n^H a||^2 = M - ||E_s^H a||^2`` for unit-modulus steering vectors, so
    only the ``K`` signal-subspace eigenvectors are needed per bin.

    Args:
        num_sources: signal subspace dimension ``K``; None estimates it per
            frame from the band-averaged eigenvalues (minimum description
            length), between 1 and ``M - 1``.
        max_bins, memory_mb: see :class:`NarrowbandBeamformer`.
        **common: the band settings of :class:`~avperception.dsp.beamforming.base.Beamformer`.
    """

    name = "music"
    options = ("num_sources", "max_bins", "memory_mb")
    normalize = False

    def __init__(self, array: ArrayGeometry, grid: DirectionGrid, *, num_sources: int | None = None,
                 max_bins: int | None = None, memory_mb: float = 256.0, **common) -> None:
        super().__init__(array, grid, max_bins=max_bins, memory_mb=memory_mb, **common)
        if num_sources is not None and not 1 <= int(num_sources) < array.num_mics:
            raise ValueError(f"num_sources must be in [1, {array.num_mics - 1}] for {array.num_mics} microphones")
        self.num_sources = None if num_sources is None else int(num_sources)

    @staticmethod
    def estimate_num_sources(eigvals: np.ndarray, snapshots: int) -> int:
        """Minimum description length estimate from ``(F, M)`` ascending eigenvalues."""
        lam = np.mean(eigvals / np.maximum(eigvals.sum(axis=1, keepdims=True), 1e-20), axis=0)[::-1]  # descending
        m = len(lam)
        lam = np.maximum(lam, 1e-12)
        n = max(snapshots, 2)
        best, best_k = np.inf, 1
        for k in range(0, m - 1):
            tail = lam[k:]
            ratio = np.exp(np.mean(np.log(tail))) / np.mean(tail)
            mdl = -n * (m - k) * np.log(ratio) + 0.5 * k * (2 * m - k) * np.log(n)
            if mdl < best:
                best, best_k = mdl, k
        return int(min(max(best_k, 1), m - 1))

    def _prepare(self, cov: np.ndarray, snapshots: int):
        w, v = np.linalg.eigh(cov)
        k = self.num_sources or self.estimate_num_sources(w, snapshots)
        return {"es": np.ascontiguousarray(v[..., -k:]).astype(np.complex64), "k": k, "max": None}

    def _narrowband(self, state, steer: np.ndarray, fslice: slice) -> np.ndarray:
        b = np.matmul(steer, state["es"][fslice].conj())  # (F, n, K) = (E_s^H a)^T
        proj = (b.real**2 + b.imag**2).sum(axis=-1)
        m = steer.shape[-1]
        return 1.0 / np.maximum(m - proj, 1e-6 * m)

    def _after_map(self, state, nb: np.ndarray):
        if self.normalize:
            state["max"] = nb.max(axis=1, keepdims=True)
            nb /= state["max"]
        return state

    def _weight(self, nb: np.ndarray, state) -> np.ndarray:
        return nb / state["max"] if self.normalize else nb


class NormMusic(Music):
    """MUSIC with frequency normalisation: each bin's pseudo-spectrum is scaled to a maximum of 1
    over the grid before the sum, so no single bin dominates (Salvati et al.). Off-grid
    :meth:`evaluate` uses the grid maxima of the last map. Arguments as :class:`Music`."""

    name = "normmusic"
    normalize = True
