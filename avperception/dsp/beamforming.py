"""Beamformers over a :class:`~avperception.dsp.grid.DirectionGrid`, in a registry.

Every beamformer is built once for an array, a grid and an STFT size (all
steering tables are precomputed then) and maps an STFT block to one power
value per grid direction::

    bf = make_beamformer("srp_phat", array, grid, sample_rate=16000, nfft=512)
    power = bf.map(spec)            # spec: (mics, nfft // 2 + 1, frames) -> (G,)

``bf.evaluate(spec, directions)`` scores arbitrary directions (used for
coarse-to-fine refinement of peaks).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..config import ArrayGeometry
from .gcc import gcc_from_cross_spectra, mic_pairs, phat_cross_spectra
from .grid import DirectionGrid

BEAMFORMERS: dict[str, type["Beamformer"]] = {}


def register(name: str) -> Callable[[type["Beamformer"]], type["Beamformer"]]:
    def deco(cls: type["Beamformer"]) -> type["Beamformer"]:
        BEAMFORMERS[name] = cls
        cls.name = name
        return cls

    return deco


def make_beamformer(name: str, array: ArrayGeometry, grid: DirectionGrid, **kwargs) -> "Beamformer":
    """Build the beamformer registered as ``name``."""
    if name not in BEAMFORMERS:
        raise ValueError(f"unknown beamformer {name!r}; available: {', '.join(sorted(BEAMFORMERS))}")
    return BEAMFORMERS[name](array, grid, **kwargs)


def tdoa(positions: np.ndarray, pairs: np.ndarray, directions: np.ndarray, c: float) -> np.ndarray:
    """Far-field delays ``(n, P)`` in seconds of mic ``q`` relative to mic ``p`` for sources at ``directions`` ``(n, 3)``.

    A plane wave from unit direction ``u`` reaches a microphone at ``r`` at time
    ``-(r . u) / c``, so mic ``q`` lags mic ``p`` by ``(r_p - r_q) . u / c``.
    """
    baselines = positions[pairs[:, 0]] - positions[pairs[:, 1]]  # (P, 3)
    return directions @ baselines.T / c


class Beamformer:
    """Base class: holds the array, grid and band."""

    name = "base"

    def __init__(
        self,
        array: ArrayGeometry,
        grid: DirectionGrid,
        sample_rate: float = 16000.0,
        nfft: int = 512,
        fmin: float = 300.0,
        fmax: float = 5000.0,
        speed_of_sound: float = 343.0,
    ) -> None:
        self.array = array
        self.grid = grid
        self.fs = float(sample_rate)
        self.nfft = int(nfft)
        self.c = float(speed_of_sound)
        freqs = np.fft.rfftfreq(self.nfft, 1.0 / self.fs)
        self.freqs = freqs
        self.band = (freqs >= fmin) & (freqs <= fmax)
        if not self.band.any():
            raise ValueError(f"no STFT bin in [{fmin}, {fmax}] Hz at nfft={nfft}, fs={sample_rate}")
        self.positions = array.centered

    def map(self, spec: np.ndarray) -> np.ndarray:
        """``(mics, F, T)`` STFT -> ``(G,)`` power per grid direction."""
        raise NotImplementedError

    def evaluate(self, spec: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """Power ``(n,)`` for arbitrary unit ``directions`` ``(n, 3)``."""
        raise NotImplementedError

    def _check(self, spec: np.ndarray) -> None:
        if spec.ndim != 3 or spec.shape[0] != self.array.num_mics or spec.shape[1] != self.nfft // 2 + 1:
            raise ValueError(
                f"{self.name}: expected STFT of shape ({self.array.num_mics}, {self.nfft // 2 + 1}, frames), got {spec.shape}"
            )


@register("srp_phat")
class SrpPhat(Beamformer):
    """Steered response power with phase transform, by lookup in pairwise GCC-PHAT.

    Per frame: one PHAT cross-spectrum per microphone pair, one inverse FFT
    (oversampled ``interp`` times) per pair, then for every direction the sum
    over pairs of the correlation at that direction's delay, linearly
    interpolated between lags. The lag index and weight of every (direction,
    pair) are computed once in the constructor, so a frame costs
    ``P`` FFTs plus a ``(G, P)`` gather. The map is the mean over pairs, in
    [-1, 1] (1: every pair perfectly coherent at that direction).
    """

    def __init__(self, array: ArrayGeometry, grid: DirectionGrid, interp: int = 4, **kw) -> None:
        super().__init__(array, grid, **kw)
        self.interp = int(interp)
        self.pairs = mic_pairs(array.num_mics)
        self.max_lag = int(np.ceil(array.aperture / self.c * self.fs * self.interp)) + 2
        self.width = 2 * self.max_lag + 2
        self.idx, self.w = self._tables(grid.vectors)
        self._cc: np.ndarray | None = None

    def _tables(self, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lag = tdoa(self.positions, self.pairs, directions, self.c) * self.fs * self.interp  # (n, P)
        lo = np.floor(lag)
        w = (lag - lo).astype(np.float32)
        idx = (lo.astype(np.int64) + self.max_lag) + np.arange(len(self.pairs))[None] * self.width
        return idx.astype(np.intp), w

    def correlations(self, spec: np.ndarray) -> np.ndarray:
        """``(P, width)`` windowed GCC-PHAT; column ``max_lag`` is lag 0."""
        self._check(spec)
        r = phat_cross_spectra(spec, self.pairs, self.band)
        cc = gcc_from_cross_spectra(r, self.nfft, self.interp) / max(int(self.band.sum()), 1) * (self.nfft // 2)
        n = cc.shape[1]
        m = self.max_lag
        win = np.concatenate([cc[:, n - m:], cc[:, : m + 2]], axis=1)
        return np.ascontiguousarray(win, dtype=np.float32)

    def _lookup(self, cc: np.ndarray, idx: np.ndarray, w: np.ndarray) -> np.ndarray:
        flat = cc.ravel()
        lo = flat[idx]
        hi = flat[idx + 1]
        return ((lo + w * (hi - lo)).sum(axis=1) / len(self.pairs)).astype(np.float32)

    def map(self, spec: np.ndarray) -> np.ndarray:
        self._cc = self.correlations(spec)
        return self._lookup(self._cc, self.idx, self.w)

    def evaluate(self, spec: np.ndarray | None, directions: np.ndarray) -> np.ndarray:
        cc = self.correlations(spec) if spec is not None else self._cc
        if cc is None:
            raise ValueError("evaluate(None, ...) needs a previous map() call")
        idx, w = self._tables(np.asarray(directions, dtype=np.float64))
        return self._lookup(cc, idx, w)
