"""Acoustic images: the spectrum of the sound arriving from every pixel's direction.

An acoustic image (as in the audio-visual localisation work summarised in
SEEDS.md, paper 2) is a volume ``H x W x B``: for every pixel of a direction
grid (an equirectangular panorama or a camera's pinhole grid) the energy in
``B`` frequency bands of a filter-and-sum beamformer steered there. It can be
compressed to MFCCs per pixel, and an energy map recovered from the MFCCs::

    imager = AcousticImager(array, grids.pinhole(48, 36, 40, 40, 23.5, 17.5), n_bands=40)
    img = imager.image(spec)                      # (36, 48, 40) band energies
    cep = to_mfcc(img, n_mfcc=12)                 # (36, 48, 12)
    energy = energy_from_mfcc(cep, n_bands=40)    # (36, 48), ranks pixels like img.sum(-1)

Energy from MFCCs: inverse DCT of the coefficients (missing ones taken as
zero) gives the log band energies, ``exp`` and a sum over bands give the
energy. Without the 0th coefficient the per-pixel level is lost and what is
left measures how *uneven* a pixel's spectrum is (the mean of ``exp`` of a
zero-mean log spectrum, >= 1): pixels off the source see a beam pattern that
colours the spectrum, the source's own pixel sees its spectrum undistorted,
so that value falls where the energy rises; its reciprocal is used as the map.
"""

from __future__ import annotations

import numpy as np

from ..config import ArrayGeometry
from ..constants import SPEED_OF_SOUND
from .beamforming.base import steering_vectors
from .beamforming.narrowband import _quadratic
from .features import dct_matrix, mel_filterbank
from .gcc import band_covariance
from .grid import DirectionGrid


class AcousticImager:
    """Per-direction band energies by frequency-domain filter-and-sum (delay-and-sum) beamforming.

    Args:
        array: the microphone array.
        grid: the directions (pixels); ``grid.shape`` is the image shape.
        n_bands: number of frequency bands ``B``.
        bands: ``"mel"`` (triangular mel bands of peak 1: neighbouring bands
            overlap so that every bin's energy is counted once in total) or
            ``"linear"`` (equal-width rectangular bands, energies summed).
        fmin, fmax: band edges in Hz (``fmax`` None: Nyquist).
        band_norm: None (default; band energies add up to the total energy) or
            ``"slaney"`` (mel bands scaled to unit area: energy per Hz, so a
            white source has a flat band spectrum; the MFCC-without-c0 energy
            map relies on that).
        memory_mb: grid steering vectors are precomputed when they fit.
    """

    def __init__(self, array: ArrayGeometry, grid: DirectionGrid, sample_rate: float = 16000.0, nfft: int = 512,
                 n_bands: int = 40, bands: str = "mel", fmin: float = 100.0, fmax: float | None = None,
                 speed_of_sound: float = SPEED_OF_SOUND, memory_mb: float = 256.0,
                 band_norm: str | None = None) -> None:
        self.array, self.grid = array, grid
        self.fs, self.nfft, self.c = float(sample_rate), int(nfft), float(speed_of_sound)
        fmax = self.fs / 2 if fmax is None else float(fmax)
        freqs = np.fft.rfftfreq(self.nfft, 1.0 / self.fs)
        if band_norm not in (None, "slaney"):
            raise ValueError(f"band_norm must be None or 'slaney', got {band_norm!r}")
        if bands == "mel":
            fb = mel_filterbank(n_bands, self.nfft, self.fs, fmin, fmax, norm=None)
            if band_norm == "slaney":  # energy density per band (unit-area filters), as in many MFCC front-ends
                fb = mel_filterbank(n_bands, self.nfft, self.fs, fmin, fmax, norm="slaney")
        elif bands == "linear":
            edges = np.linspace(fmin, fmax, n_bands + 1)
            fb = ((freqs[None] >= edges[:-1, None]) & (freqs[None] < edges[1:, None])).astype(np.float32)
        else:
            raise ValueError(f"bands must be 'mel' or 'linear', got {bands!r}")
        used = np.flatnonzero(fb.sum(axis=0) > 0)
        if len(used) == 0 or np.any(fb.sum(axis=1) == 0):
            raise ValueError(f"{n_bands} bands between {fmin} and {fmax} Hz are too narrow for nfft={nfft}; "
                             "use fewer bands or a larger nfft")
        self.bins = used
        self.freqs = freqs[used]
        self.fb = np.ascontiguousarray(fb[:, used])  # (B, Fb)
        self.n_bands = int(n_bands)
        self.band_centers_hz = (self.fb * self.freqs[None]).sum(1) / self.fb.sum(1)
        size = len(used) * len(grid) * array.num_mics * 8
        self._steer = (steering_vectors(array.centered, grid.vectors, self.freqs, self.c)
                       if size <= memory_mb * 2**20 else None)

    def bin_power(self, spec: np.ndarray, chunk: int = 32) -> np.ndarray:
        """``(Fb, G)`` delay-and-sum output power per bin and direction, averaged over frames.

        Args:
            spec: ``(mics, nfft // 2 + 1, T)`` STFT.
        """
        if spec.ndim != 3 or spec.shape[0] != self.array.num_mics or spec.shape[1] != self.nfft // 2 + 1:
            raise ValueError(f"expected STFT ({self.array.num_mics}, {self.nfft // 2 + 1}, frames), got {spec.shape}")
        m, t = spec.shape[0], spec.shape[2]
        direct = t < m  # few frames: beamform the frames themselves, cheaper than the covariance
        if direct:
            # |a^H x|^2 = |a^T x^*|^2: conjugate the small frames, not the big steering table
            y = np.ascontiguousarray(spec[:, self.bins].transpose(1, 0, 2).conj()).astype(np.complex64)  # (Fb, M, T)
        else:
            cov = band_covariance(spec, self.bins)
        out = np.empty((len(self.bins), len(self.grid)), dtype=np.float32)
        for s in range(0, len(self.bins), chunk):
            sl = slice(s, min(s + chunk, len(self.bins)))
            a = self._steer[sl] if self._steer is not None else steering_vectors(
                self.array.centered, self.grid.vectors, self.freqs[sl], self.c)
            if direct:
                z = np.ascontiguousarray(np.matmul(a, y[sl]), dtype=np.complex64)  # (F, G, T) = conj(a^H x)
                zf = z.view(np.float32)
                out[sl] = np.einsum("fgk,fgk->fg", zf, zf) / t
            else:
                out[sl] = _quadratic(a, cov[sl])
        return out / np.float32(m * m)

    def image(self, spec: np.ndarray, flat: bool = False) -> np.ndarray:
        """Band energies per direction: ``(H, W, B)`` for an image grid (``(G, B)`` when ``flat``)."""
        e = (self.fb @ self.bin_power(spec)).T  # (G, B)
        e = np.maximum(e, 0.0).astype(np.float32)
        return e if flat else e.reshape(*self.grid.shape, self.n_bands)

    def energy(self, spec: np.ndarray) -> np.ndarray:
        """Total energy per direction, ``(H, W)``: the image summed over bands."""
        return self.image(spec).sum(axis=-1)


def to_mfcc(image: np.ndarray, n_mfcc: int = 12, include_c0: bool = True, eps: float = 1e-10) -> np.ndarray:
    """Compress the band axis (last) of an acoustic image to MFCCs.

    ``log(energy + eps)`` then an orthonormal DCT-II over the bands; keeps
    coefficients ``0 .. n_mfcc - 1`` (``include_c0``) or ``1 .. n_mfcc``.

    Returns:
        ``(..., n_mfcc)`` float32.
    """
    b = image.shape[-1]
    start = 0 if include_c0 else 1
    if start + n_mfcc > b:
        raise ValueError(f"{n_mfcc} coefficients{'' if include_c0 else ' after c0'} need more than {b} bands")
    d = dct_matrix(start + n_mfcc, b)[start:]
    return (np.log(np.asarray(image, dtype=np.float64) + eps) @ d.T.astype(np.float64)).astype(np.float32)


def log_bands_from_mfcc(mfcc: np.ndarray, n_bands: int, has_c0: bool = True) -> np.ndarray:
    """Inverse DCT (DCT-III, orthonormal) of MFCCs ``(..., K)`` to log band energies ``(..., n_bands)``;
    the coefficients not given (c0 when ``has_c0`` is False, and those above K) are taken as zero."""
    start = 0 if has_c0 else 1
    k = mfcc.shape[-1]
    if start + k > n_bands:
        raise ValueError(f"{k} coefficients do not fit {n_bands} bands")
    d = dct_matrix(start + k, n_bands)[start:].astype(np.float64)  # (K, B)
    return np.asarray(mfcc, dtype=np.float64) @ d


def energy_from_mfcc(mfcc: np.ndarray, n_bands: int, has_c0: bool = True) -> np.ndarray:
    """Energy map from an MFCC acoustic image ``(..., K)`` -> ``(...)``.

    Inverse DCT to log band energies, ``exp``, sum over bands. When the 0th
    coefficient is absent the sum is inversely related to the energy (see the
    module notes), so its reciprocal is returned instead.
    """
    e = np.exp(log_bands_from_mfcc(mfcc, n_bands, has_c0)).sum(axis=-1)
    return (e if has_c0 else 1.0 / e).astype(np.float32)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (any shape, same size)."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.ravel(a), np.ravel(b)).statistic)
