"""Steered response power by lookup in pairwise cross-correlations: the machinery of ``srp_phat`` and ``das``."""

from __future__ import annotations

import numpy as np

from ...config import ArrayGeometry
from ..gcc import band_covariance, lag_dft_matrix, mic_pairs, pair_spectra
from ..grid import DirectionGrid
from .base import Beamformer, tdoa


class PairLagBeamformer(Beamformer):
    """Steered response power by lookup in pairwise cross-correlations.

    For a far-field direction ``u`` every microphone pair ``(p, q)`` sees one
    delay ``tau_pq(u)``, so the steered response power of the whole array is a
    sum over pairs of each pair's cross-correlation at its delay (plus a
    direction-independent diagonal term). Per frame:

    1. one ``(Fb, M, M)`` batch of covariance matrices over the band's bins
       (BLAS), with or without the phase transform;
    2. the band-limited cross-correlation of every pair at the ``L`` lags a
       pair can produce, oversampled ``interp`` times, as one real matrix
       product ``(L, 2 Fb) @ (2 Fb, P)`` (cheaper than ``P`` inverse FFTs);
    3. one sparse ``(G, L P)`` times ``(L P,)`` product: the interpolation
       matrix holds, for every (direction, pair), the two neighbouring lags
       and their linear weights. It is built once in the constructor, so the
       map costs ``2 G P`` multiply-adds with no Python loop over directions.

    The same precomputed correlations serve :meth:`evaluate` for off-grid
    directions (peak refinement).

    The class attribute ``phat`` says whether the phase transform is applied
    (SRP-PHAT) or not (delay-and-sum).

    Args:
        interp: lag oversampling factor (lag step ``1 / (interp fs)``).
        **common: the band settings of :class:`~avperception.dsp.beamforming.base.Beamformer`.
    """

    phat = True
    options = ("interp",)

    def __init__(self, array: ArrayGeometry, grid: DirectionGrid, *, interp: int = 8, **common) -> None:
        super().__init__(array, grid, **common)
        self.interp = int(interp)
        if self.interp < 1:
            raise ValueError("interp must be >= 1")
        self.pairs = mic_pairs(array.num_mics)
        self.max_lag = int(np.ceil(array.aperture / self.c * self.fs * self.interp)) + 2
        self.width = 2 * self.max_lag + 2
        self.lags = np.arange(-self.max_lag, self.max_lag + 2)
        self._lag_per_unit = self._lags(np.eye(3))  # (3, P): a direction's lags = direction @ this (linear)
        self._row_start = (self.max_lag + np.arange(len(self.pairs)) * self.width).astype(np.intp)  # (P,)
        # cc = D @ [Re r; Im r] / Fb: mean over the band's bins of Re(r e^{j w tau})
        self._dft = lag_dft_matrix(self.bins, self.nfft, self.lags, self.interp) * np.float32(1.0 / self.num_bins)
        self.idx, self.w = self._tables(grid.vectors)
        self._matrix = self._sparse(self.idx, self.w)
        self._cc: np.ndarray | None = None  # (L, P) correlations of the last frame
        self._diag: float = 0.0

    # -- tables
    def _lags(self, directions: np.ndarray) -> np.ndarray:
        return tdoa(self.positions, self.pairs, np.asarray(directions, dtype=np.float64), self.c) * self.fs * self.interp

    def _tables(self, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices into the ``(P, width)`` correlation table and interpolation weights, ``(n, P)`` each."""
        lag = np.asarray(directions, dtype=np.float64) @ self._lag_per_unit
        lo = np.floor(lag)
        w = np.subtract(lag, lo, out=lag).astype(np.float32)
        idx = lo.astype(np.intp)
        idx += self._row_start
        return idx, w

    def _sparse(self, idx: np.ndarray, w: np.ndarray):
        """CSR ``(n, L P)`` interpolation matrix acting on the ``(L, P)`` correlation table (row-major)."""
        import scipy.sparse as sp

        n, npair = idx.shape
        lag_i = idx - np.arange(npair)[None] * self.width  # lag index in [0, width - 1)
        col = lag_i * npair + np.arange(npair)[None]  # (n, P) column of the lower lag
        scale = self._pair_scale()
        cols = np.stack([col, col + npair], axis=-1).reshape(n, 2 * npair)
        vals = (np.stack([1.0 - w, w], axis=-1).reshape(n, 2 * npair) * scale).astype(np.float32)
        indptr = np.arange(0, n * 2 * npair + 1, 2 * npair, dtype=np.int64)
        m = sp.csr_matrix((vals.ravel(), cols.ravel().astype(np.int32), indptr), shape=(n, self.width * npair))
        m.has_sorted_indices = False
        m.sort_indices()
        return m

    def _pair_scale(self) -> float:
        return 1.0 / len(self.pairs)

    # -- per frame
    def _statistics(self, spec: np.ndarray) -> tuple[np.ndarray, float]:
        self._check(spec)
        cov = band_covariance(spec, self.band_slice, phat=self.phat)  # (Fb, M, M)
        r = pair_spectra(cov, self.pairs)  # (Fb, P)
        cc = self._dft @ np.concatenate([r.real, r.imag], axis=0)  # (L, P)
        diag = float(np.trace(cov, axis1=1, axis2=2).real.mean())
        return np.ascontiguousarray(cc, dtype=np.float32), diag

    def correlations(self, spec: np.ndarray) -> np.ndarray:
        """``(P, width)`` band-limited cross-correlations, averaged over the band's bins; column ``max_lag`` is lag 0.

        With the phase transform each value is in [-1, 1] (1: the pair is
        perfectly coherent at that lag).
        """
        cc, _ = self._statistics(spec)
        return np.ascontiguousarray(cc.T)

    def _finish(self, values: np.ndarray, diag: float) -> np.ndarray:
        return values

    def map(self, spec: np.ndarray) -> np.ndarray:
        self._cc, self._diag = self._statistics(spec)
        return self._finish(self._matrix @ self._cc.ravel(), self._diag)

    def evaluate(self, spec: np.ndarray | None, directions: np.ndarray) -> np.ndarray:
        if spec is not None:
            cc, diag = self._statistics(spec)
        elif self._cc is None:
            raise ValueError("evaluate(None, ...) needs a previous map() call")
        else:
            cc, diag = self._cc, self._diag
        idx, w = self._tables(np.asarray(directions, dtype=np.float64).reshape(-1, 3))
        flat = np.ascontiguousarray(cc.T).ravel()  # (P, width) layout matches idx
        lo = flat[idx]
        hi = flat[idx + 1]
        v = (lo + w * (hi - lo)).sum(axis=1) * np.float32(self._pair_scale())
        return self._finish(v.astype(np.float32), diag)

