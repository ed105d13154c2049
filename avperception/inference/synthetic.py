"""A synthetic ping window: the emitted sweep's direct path and one wall's echo at known distances, plus noise.

For checks that need audio with real structure (export parity, backend tests) without the data engine:
the window is what the array hears in the first ``N`` samples after the sweep's onset (sample 0).
"""

from __future__ import annotations

import numpy as np

from ..constants import SPEED_OF_SOUND


def _fractional_delay(x: np.ndarray, delay: np.ndarray, n: int) -> np.ndarray:
    """``(M, n)``: ``x (L,)`` delayed by ``delay (M,)`` samples (exact, in the frequency domain)."""
    nfft = 1 << int(np.ceil(np.log2(n + len(x) + 1)))
    f = np.fft.rfftfreq(nfft)
    spec = np.fft.rfft(x, nfft)[None] * np.exp(-2j * np.pi * f[None] * delay[:, None])
    return np.fft.irfft(spec, nfft, axis=1)[:, :n]


def echo_window(emitted: np.ndarray, positions: np.ndarray, speaker: np.ndarray, sample_rate: int,
                num_samples: int, wall_distance_m: float = 2.0, wall_azimuth_deg: float = 0.0,
                level_db: float = -30.0, reflection: float = 0.7, noise_db: float = -65.0,
                speed_of_sound: float = SPEED_OF_SOUND, seed: int = 0) -> np.ndarray:
    """``(M, N)`` float32: the sweep from ``speaker (3,)`` reaching mics ``positions (M, 3)`` directly and after
    bouncing off a vertical wall ``wall_distance_m`` from the array origin in direction ``wall_azimuth_deg``
    (image source), spherical spreading from ``level_db`` peak dBFS at 1 m, white noise at ``noise_db`` RMS dBFS."""
    emitted = np.asarray(emitted, dtype=np.float64)
    pos = np.asarray(positions, dtype=np.float64)
    spk = np.asarray(speaker, dtype=np.float64)
    az = np.deg2rad(wall_azimuth_deg)
    normal = np.array([np.cos(az), np.sin(az), 0.0])
    image = spk + 2 * (wall_distance_m - spk @ normal) * normal  # the speaker mirrored in the wall
    amp = 10 ** (level_db / 20)
    out = np.zeros((len(pos), num_samples))
    for src, gain in ((spk, 1.0), (image, reflection)):
        d = np.linalg.norm(pos - src, axis=1)
        out += gain * amp / np.maximum(d, 0.05)[:, None] * _fractional_delay(
            emitted, d / speed_of_sound * sample_rate, num_samples)
    rng = np.random.default_rng(seed)
    out += 10 ** (noise_db / 20) * rng.standard_normal(out.shape)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def bundle_echo_window(bundle, **kw) -> np.ndarray:
    """:func:`echo_window` for a :class:`~avperception.inference.bundle.ModelBundle`'s array, sweep and speaker."""
    kw.setdefault("level_db", bundle.sweep_level_db)
    kw.setdefault("speed_of_sound", bundle.speed_of_sound)
    return echo_window(bundle.emitted, bundle.array.positions, bundle.speaker_position, bundle.sample_rate,
                       bundle.window_samples, **kw)
