"""Covariance (narrowband) methods: per-bin spectra from the covariance matrices, summed over the band.

The machinery of ``mvdr``, ``music`` and ``normmusic``: grid steering vectors
precomputed when they fit in memory (else stepped bin after bin), and the
quadratic form ``Re(a^H Q a)`` as one real dot product.
"""

from __future__ import annotations

import numpy as np

from ...config import ArrayGeometry
from ..gcc import band_covariance
from ..grid import DirectionGrid
from .base import Beamformer, steering_vectors


class NarrowbandBeamformer(Beamformer):
    """Methods that work on the per-frequency covariance matrix and sum a narrowband spectrum over the band.

    Args:
        max_bins: use at most this many bins, evenly spread over the band
            (None: every bin; fewer bins trade a little accuracy for speed).
        memory_mb: steering vectors of the grid are precomputed when they fit
            in this much memory, else computed per frequency on the fly.
        **common: the band settings of :class:`~avperception.dsp.beamforming.base.Beamformer`.
    """

    options = ("max_bins", "memory_mb")

    def __init__(self, array: ArrayGeometry, grid: DirectionGrid, *, max_bins: int | None = None,
                 memory_mb: float = 256.0, **common) -> None:
        super().__init__(array, grid, **common)
        bins = self.bins
        if max_bins is not None and len(bins) > max_bins:
            bins = bins[np.unique(np.round(np.linspace(0, len(bins) - 1, int(max_bins))).astype(int))]
        self.sel_bins = bins
        self.sel_freqs = self.freqs[bins]
        size = len(bins) * len(grid) * array.num_mics * 8
        self._steer = (steering_vectors(self.positions, grid.vectors, self.sel_freqs, self.c)
                       if size <= memory_mb * 2**20 else None)
        self._state = None

    def covariance(self, spec: np.ndarray) -> np.ndarray:
        """``(Fs, M, M)`` covariance of the selected bins, averaged over frames."""
        self._check(spec)
        return band_covariance(spec, self.sel_bins, phat=False)

    def _prepare(self, cov: np.ndarray, snapshots: int):
        """Per-frame state from the covariances (e.g. inverses, subspaces)."""
        raise NotImplementedError

    def _narrowband(self, state, steer: np.ndarray, fslice: slice) -> np.ndarray:
        """``(Fs_chunk, n)`` narrowband spectra for steering vectors ``(Fs_chunk, n, M)``."""
        raise NotImplementedError

    def _combine(self, nb_sum: np.ndarray, state) -> np.ndarray:
        return nb_sum / len(self.sel_bins)

    def _spectra(self, state, directions: np.ndarray | None, chunk: int = 16) -> np.ndarray:
        """``(Fs, n)`` narrowband spectra on the grid (``directions=None``) or on given directions."""
        n = len(self.grid) if directions is None else len(directions)
        out = np.empty((len(self.sel_bins), n), dtype=np.float32)
        stepper = None
        if directions is None and self._steer is None:
            stepper = _SteeringStepper(self.positions, self.grid.vectors, self.sel_freqs, self.c)
        for s in range(0, len(self.sel_bins), chunk):
            sl = slice(s, min(s + chunk, len(self.sel_bins)))
            if stepper is not None:
                a = stepper.take(sl)
            elif directions is None:
                a = self._steer[sl]
            else:
                a = steering_vectors(self.positions, directions, self.sel_freqs[sl], self.c)
            out[sl] = self._narrowband(state, a, sl)
        return out

    def map(self, spec: np.ndarray) -> np.ndarray:
        cov = self.covariance(spec)
        self._state = self._prepare(cov, spec.shape[-1])
        nb = self._spectra(self._state, None)
        self._state = self._after_map(self._state, nb)
        return self._combine(nb.sum(axis=0), self._state).astype(np.float32)

    def _after_map(self, state, nb: np.ndarray):
        return state

    def evaluate(self, spec: np.ndarray | None, directions: np.ndarray) -> np.ndarray:
        d = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
        if spec is not None:
            self.map(spec)
        if self._state is None:
            raise ValueError("evaluate(None, ...) needs a previous map() call")
        nb = self._spectra(self._state, d)
        return self._combine(self._weight(nb, self._state).sum(axis=0), self._state).astype(np.float32)

    def _weight(self, nb: np.ndarray, state) -> np.ndarray:
        return nb


class _SteeringStepper:
    """Grid steering vectors bin after bin without a table: ``a(f') = a(f) * exp(2j pi (f' - f) r.u / c)``.

    One complex multiply per element instead of an ``exp``; the phasor of each
    distinct bin step is computed once (a contiguous band has a single step).
    The phase is re-anchored with an exact ``exp`` every 64 bins so float32
    rounding cannot accumulate.
    """

    def __init__(self, positions: np.ndarray, directions: np.ndarray, freqs: np.ndarray, c: float) -> None:
        self.proj = (np.asarray(directions, dtype=np.float64) @ np.asarray(positions, dtype=np.float64).T) / c  # (G, M)
        self.freqs = np.asarray(freqs, dtype=np.float64)
        self.steps: dict[float, np.ndarray] = {}
        self.cur: np.ndarray | None = None
        self.k = -1

    def _exact(self, f: float) -> np.ndarray:
        return np.exp((2j * np.pi * f) * self.proj).astype(np.complex64)

    def take(self, sl: slice) -> np.ndarray:
        """``(len(sl), G, M)`` steering vectors for the bins of ``sl`` (called with increasing slices)."""
        out = np.empty((sl.stop - sl.start, *self.proj.shape), dtype=np.complex64)
        for i, k in enumerate(range(sl.start, sl.stop)):
            if self.cur is None or k != self.k + 1 or k % 64 == 0:
                self.cur = self._exact(self.freqs[k])
            else:
                df = round(float(self.freqs[k] - self.freqs[k - 1]), 6)
                if df not in self.steps:
                    self.steps[df] = self._exact(df)
                self.cur = self.cur * self.steps[df]
            self.k = k
            out[i] = self.cur
        return out


def _quadratic(a: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``Re(a^H Q a)`` for steering ``(F, n, M)`` and Hermitian ``(F, M, M)`` -> ``(F, n)``."""
    a = np.ascontiguousarray(a, dtype=np.complex64)
    qa = np.ascontiguousarray(np.matmul(a, np.swapaxes(q, 1, 2)), dtype=np.complex64)  # row g: (Q a_g)^T
    # Re(sum conj(a) * qa) as one real dot product over interleaved (re, im) floats
    return np.einsum("fnk,fnk->fn", a.view(np.float32), qa.view(np.float32))

