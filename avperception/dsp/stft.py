"""Short-time Fourier transform of multichannel blocks (numpy reference path)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft


@lru_cache(maxsize=16)
def window(name: str, n: int) -> np.ndarray:
    """Periodic analysis window ``(n,)`` (float32)."""
    if name == "hann":
        w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    elif name == "hamming":
        w = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(n) / n)
    elif name == "rect":
        w = np.ones(n)
    else:
        raise ValueError(f"unknown window {name!r} (hann, hamming, rect)")
    w = w.astype(np.float32)
    w.setflags(write=False)
    return w


def num_frames(samples: int, nfft: int, hop: int) -> int:
    """Number of full STFT frames in ``samples`` samples (no padding)."""
    return 0 if samples < nfft else 1 + (samples - nfft) // hop


def stft_frames(blocks: np.ndarray, nfft: int = 512, hop: int = 256, win: str = "hann") -> np.ndarray:
    """STFTs of ``N`` frames at once: ``blocks (N, channels, samples)`` -> ``(N, channels, nfft // 2 + 1, T)``
    complex64, each ``[n]`` equal to ``stft(blocks[n], nfft, hop, win)``."""
    x = np.asarray(blocks, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"stft_frames expects (frames, channels, samples), got shape {x.shape}")
    t = num_frames(x.shape[2], nfft, hop)
    if t == 0:
        raise ValueError(f"need at least nfft={nfft} samples per frame, got {x.shape[2]}")
    frames = np.lib.stride_tricks.sliding_window_view(x, nfft, axis=2)[:, :, ::hop][:, :, :t]  # (N, C, T, nfft)
    # scipy's FFT keeps float32 in single precision (complex64 out): numpy's computes in float64, 5x slower here
    spec = scipy.fft.rfft(frames * window(win, nfft), axis=-1)  # (N, C, T, F)
    return np.ascontiguousarray(spec.transpose(0, 1, 3, 2)).astype(np.complex64, copy=False)


def stft(x: np.ndarray, nfft: int = 512, hop: int = 256, win: str = "hann") -> np.ndarray:
    """STFT without padding.

    Args:
        x: ``(channels, samples)`` real signal.
    Returns:
        ``(channels, nfft // 2 + 1, frames)`` complex64 spectra.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"stft expects (channels, samples), got shape {x.shape}")
    return stft_frames(x[None], nfft, hop, win)[0]
