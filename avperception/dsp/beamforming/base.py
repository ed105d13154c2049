"""What every beamformer shares: the band settings, far-field delays and steering vectors.

A beamformer is built once for an array, a grid and an STFT size and maps an
STFT block ``(mics, nfft // 2 + 1, frames)`` to one power value per grid
direction ``(G,)`` (:meth:`Beamformer.map`), or for any directions
(:meth:`Beamformer.evaluate`).
"""

from __future__ import annotations

import numpy as np

from ...config import ArrayGeometry
from ...constants import SPEED_OF_SOUND
from ..grid import DirectionGrid

#: keyword arguments every method takes (the STFT and the band); the method-specific ones are each class's ``options``
COMMON_OPTIONS = ("sample_rate", "nfft", "fmin", "fmax", "speed_of_sound")


def tdoa(positions: np.ndarray, pairs: np.ndarray, directions: np.ndarray, c: float) -> np.ndarray:
    """Far-field delays ``(n, P)`` in seconds of mic ``q`` relative to mic ``p`` for sources at ``directions`` ``(n, 3)``.

    A plane wave from unit direction ``u`` reaches a microphone at ``r`` at time
    ``-(r . u) / c``, so mic ``q`` lags mic ``p`` by ``(r_p - r_q) . u / c``.
    """
    baselines = positions[pairs[:, 0]] - positions[pairs[:, 1]]  # (P, 3)
    return directions @ baselines.T / c


def steering_vectors(positions: np.ndarray, directions: np.ndarray, freqs: np.ndarray, c: float) -> np.ndarray:
    """Far-field steering vectors ``(F, n, M)`` complex64: ``a_m = exp(2j pi f (r_m . u) / c)``.

    With this convention a plane wave from ``u`` is ``X_m(f) = S(f) a_m(f)``, and
    ``a^H X`` is the delay-and-sum output toward ``u``.
    """
    proj = (np.asarray(directions, dtype=np.float64) @ np.asarray(positions, dtype=np.float64).T) / c  # (n, M) s
    ph = (2.0 * np.pi * np.asarray(freqs, dtype=np.float64))[:, None, None] * proj[None]
    return np.exp(1j * ph).astype(np.complex64)


class Beamformer:
    """Base class: holds the array, grid and band.

    Subclasses implement :meth:`map` (whole grid) and :meth:`evaluate`
    (arbitrary directions; ``spec=None`` reuses what the last ``map`` computed),
    set ``name`` (the registry's key) and list their own keyword arguments in
    ``options`` (:func:`~avperception.dsp.beamforming.make_beamformer` refuses
    any other).

    Args:
        sample_rate: Hz.
        nfft: STFT size; spectra have ``nfft // 2 + 1`` bins.
        fmin, fmax: the band (Hz) the method uses.
        speed_of_sound: m/s.
    """

    name = "base"
    options: tuple[str, ...] = ()

    def __init__(
        self,
        array: ArrayGeometry,
        grid: DirectionGrid,
        *,
        sample_rate: float = 16000.0,
        nfft: int = 512,
        fmin: float = 300.0,
        fmax: float = 5000.0,
        speed_of_sound: float = SPEED_OF_SOUND,
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
        self.bins = np.flatnonzero(self.band)
        # the band is one run of bins: a slice is a view, fancy indexing would copy
        self.band_slice = slice(int(self.bins[0]), int(self.bins[-1]) + 1)
        self.positions = array.centered

    @property
    def num_bins(self) -> int:
        return int(len(self.bins))

    def map(self, spec: np.ndarray) -> np.ndarray:
        """``(mics, F, T)`` STFT -> ``(G,)`` power per grid direction."""
        raise NotImplementedError

    def evaluate(self, spec: np.ndarray | None, directions: np.ndarray) -> np.ndarray:
        """Power ``(n,)`` for arbitrary unit ``directions`` ``(n, 3)``.

        ``spec=None`` reuses the statistics of the last :meth:`map` call.
        """
        raise NotImplementedError

    def _check(self, spec: np.ndarray) -> None:
        if spec.ndim != 3 or spec.shape[0] != self.array.num_mics or spec.shape[1] != self.nfft // 2 + 1:
            raise ValueError(
                f"{self.name}: expected STFT of shape ({self.array.num_mics}, {self.nfft // 2 + 1}, frames), got {spec.shape}"
            )

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, mics={self.array.num_mics}, grid={len(self.grid)}, "
                f"band={self.freqs[self.bins[0]]:.0f}-{self.freqs[self.bins[-1]]:.0f} Hz)")
