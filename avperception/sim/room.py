"""Simulated microphone-array audio: plane waves and pyroomacoustics rooms.

Used by the simulated-audio node, ``avperception demo``, the tests and the
benchmarks. World frame: x, y on the floor, z up, origin in a room corner. The
array sits on the robot at ``robot_position`` with heading ``robot_yaw_deg``;
all directions returned are in the array frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import ArrayGeometry
from ..constants import SPEED_OF_SOUND
from ..dsp.grid import rpy_matrix


def plane_wave(
    array: ArrayGeometry,
    direction: np.ndarray,
    fs: float,
    num_samples: int,
    signal: np.ndarray | None = None,
    c: float = SPEED_OF_SOUND,
    seed: int = 0,
    snr_db: float | None = None,
) -> np.ndarray:
    """A far-field source at unit ``direction`` (array frame) as heard by every microphone.

    Exact fractional delays are applied in the frequency domain.

    Returns:
        ``(mics, num_samples)`` float32.
    """
    rng = np.random.default_rng(seed)
    pad = 256
    n = num_samples + 2 * pad
    s = rng.standard_normal(n) if signal is None else np.pad(np.asarray(signal, float)[:num_samples], pad)
    u = np.asarray(direction, dtype=np.float64)
    u = u / np.linalg.norm(u)
    delays = -(array.centered @ u) / c  # arrival time of each mic relative to the centre
    f = np.fft.rfftfreq(n, 1.0 / fs)
    S = np.fft.rfft(s)
    x = np.fft.irfft(S[None] * np.exp(-2j * np.pi * f[None] * delays[:, None]), n=n)[:, pad:-pad]
    if snr_db is not None:
        p = np.mean(x**2)
        x = x + rng.standard_normal(x.shape) * np.sqrt(p / 10 ** (snr_db / 10))
    return x.astype(np.float32)


def make_signal(kind: str, num_samples: int, fs: float, rng: np.random.Generator) -> np.ndarray:
    """A dry source signal: ``noise`` (white), ``babble`` (speech-like modulated noise),
    ``harmonic`` (a buzzing tone with harmonics) or ``chirps`` (periodic 0.5-6 kHz sweeps)."""
    t = np.arange(num_samples) / fs
    if kind == "noise":
        return rng.standard_normal(num_samples)
    if kind == "babble":
        # pink-ish noise, amplitude-modulated at syllable rates (3-6 Hz)
        w = rng.standard_normal(num_samples)
        spec = np.fft.rfft(w)
        f = np.fft.rfftfreq(num_samples, 1 / fs)
        spec *= 1 / np.sqrt(np.maximum(f, 100.0)) * (f < 4000)
        x = np.fft.irfft(spec, n=num_samples)
        env = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 6.28))
        return x / (x.std() + 1e-12) * env
    if kind == "harmonic":
        f0 = rng.uniform(150, 400)
        x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.28)) / k for k in range(1, 12) if k * f0 < fs / 2.2)
        return x + 0.05 * rng.standard_normal(num_samples)
    if kind == "chirps":
        period = int(0.25 * fs)
        length = int(0.01 * fs)
        tt = np.arange(length) / fs
        f0, f1 = 500.0, 6000.0
        sweep = np.sin(2 * np.pi * (f0 * tt + (f1 - f0) / (2 * tt[-1]) * tt**2)) * np.hanning(length)
        x = np.zeros(num_samples)
        for s in range(0, num_samples, period):
            e = min(num_samples, s + length)
            x[s:e] = sweep[: e - s]
        return x + 0.01 * rng.standard_normal(num_samples)
    raise ValueError(f"unknown signal kind {kind!r} (noise, babble, harmonic, chirps)")


@dataclass
class SourceSpec:
    """A sound source. Static at ``position`` (world, m), or orbiting the robot.

    ``orbit_deg_per_s`` != 0 makes the source circle the robot at its initial
    horizontal distance and height.
    """

    position: tuple[float, float, float]
    signal: str = "noise"
    gain: float = 1.0
    orbit_deg_per_s: float = 0.0


@dataclass
class RoomScene:
    """A shoebox room with the robot's array and a few sources."""

    array: ArrayGeometry
    room_dims: tuple[float, float, float] = (6.0, 5.0, 3.0)
    rt60: float = 0.3
    robot_position: tuple[float, float, float] = (3.0, 2.5, 1.0)
    robot_yaw_deg: float = 0.0
    sources: list[SourceSpec] = field(default_factory=lambda: [SourceSpec((4.5, 3.5, 1.2))])
    fs: int = 16000
    snr_db: float = 30.0
    max_order: int | None = None
    orbit_step_deg: float = 5.0
    c: float = SPEED_OF_SOUND
    seed: int = 0

    def rotation(self) -> np.ndarray:
        return rpy_matrix(0.0, 0.0, self.robot_yaw_deg)

    def mic_positions_world(self) -> np.ndarray:
        """``(mics, 3)`` microphone positions in the room."""
        return np.asarray(self.robot_position) + self.array.positions @ self.rotation().T

    def source_position(self, k: int, t: float) -> np.ndarray:
        s = self.sources[k]
        p = np.asarray(s.position, dtype=np.float64)
        if s.orbit_deg_per_s == 0:
            return p
        c = np.asarray(self.robot_position, dtype=np.float64)
        rel = p - c
        a = np.radians(s.orbit_deg_per_s * t)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        out = p.copy()
        out[:2] = c[:2] + rot @ rel[:2]
        return out

    def source_position_in_array(self, k: int, t: float) -> np.ndarray:
        """Source ``k`` at time ``t`` in the array frame (m)."""
        centre = np.asarray(self.robot_position) + self.array.positions.mean(0) @ self.rotation().T
        return (self.source_position(k, t) - centre) @ self.rotation()

    def true_directions(self, t: float = 0.0) -> np.ndarray:
        """``(sources, 3)`` unit vectors from the array centre to each source, array frame."""
        v = np.array([self.source_position_in_array(k, t) for k in range(len(self.sources))])
        return v / np.linalg.norm(v, axis=1, keepdims=True)


class RoomSimulator:
    """Streams the audio of a :class:`RoomScene` chunk by chunk.

    Room impulse responses come from pyroomacoustics' image-source method,
    computed once per source position (orbiting sources: one every
    ``orbit_step_deg``). Each chunk of each source's dry signal is convolved
    with the impulse response of its current position (overlap-add keeps the
    reverberant tails across chunks; a change of position is cross-faded).
    """

    def __init__(self, scene: RoomScene) -> None:
        try:
            import pyroomacoustics as pra
        except ImportError as e:  # pragma: no cover
            raise ImportError("the room simulator needs pyroomacoustics: pip install pyroomacoustics") from e
        self.scene = scene
        self.rng = np.random.default_rng(scene.seed)
        dims = np.asarray(scene.room_dims, dtype=np.float64)
        mics = scene.mic_positions_world()
        if np.any(mics <= 0) or np.any(mics >= dims):
            raise ValueError("the array is outside the room; move robot_position inside room_dims")
        absorption, order = pra.inverse_sabine(scene.rt60, dims)
        if scene.max_order is not None:
            order = scene.max_order
        order = int(min(order, 17))
        self._positions: list[list[np.ndarray]] = []
        all_pos = []
        for k, s in enumerate(scene.sources):
            if s.orbit_deg_per_s == 0:
                pts = [scene.source_position(k, 0.0)]
            else:
                n = int(round(360.0 / scene.orbit_step_deg))
                pts = [scene.source_position(k, (i * scene.orbit_step_deg) / s.orbit_deg_per_s) for i in range(n)]
            for p in pts:
                if np.any(p <= 0) or np.any(p >= dims):
                    raise ValueError(f"source {k} at {np.round(p, 2).tolist()} is outside the room {dims.tolist()}")
            self._positions.append(pts)
            all_pos += pts
        room = pra.ShoeBox(dims, fs=scene.fs, materials=pra.Material(absorption), max_order=order)
        for p in all_pos:
            room.add_source(p)
        room.add_microphone_array(mics.T)
        room.compute_rir()
        length = max(len(r) for mic in room.rir for r in mic)
        rirs = np.zeros((len(all_pos), len(mics), length), dtype=np.float32)
        for m, per_mic in enumerate(room.rir):
            for j, r in enumerate(per_mic):
                rirs[j, m, : len(r)] = r
        self._rirs = []
        j = 0
        for pts in self._positions:
            self._rirs.append(rirs[j: j + len(pts)])
            j += len(pts)
        self.rir_length = length
        self._tail = np.zeros((len(mics), length), dtype=np.float64)
        self._signals = [self._signal_stream(s) for s in scene.sources]
        self._last_rir = [0] * len(scene.sources)
        self.time = 0.0
        self._noise_ref: float | None = None

    def _signal_stream(self, s: SourceSpec):
        seconds = 8
        block = make_signal(s.signal, seconds * self.scene.fs, self.scene.fs, self.rng) * s.gain
        block = block / (np.std(block) + 1e-12) * s.gain
        pos = 0
        while True:
            n = yield
            out = np.empty(n)
            filled = 0
            while filled < n:
                take = min(n - filled, len(block) - pos)
                out[filled: filled + take] = block[pos: pos + take]
                filled += take
                pos = (pos + take) % len(block)
            yield out

    def _rir_index(self, k: int, t: float) -> int:
        s = self.scene.sources[k]
        if s.orbit_deg_per_s == 0:
            return 0
        n = len(self._positions[k])
        return int(round((s.orbit_deg_per_s * t) / self.scene.orbit_step_deg)) % n

    def chunk(self, n: int) -> np.ndarray:
        """The next ``n`` samples of every microphone: ``(mics, n)`` float32."""
        from scipy.signal import oaconvolve

        mics = self._tail.shape[0]
        acc = np.zeros((mics, n + self.rir_length), dtype=np.float64)
        t_mid = self.time + 0.5 * n / self.scene.fs
        for k, gen in enumerate(self._signals):
            next(gen)
            dry = gen.send(n)
            j = self._rir_index(k, t_mid)
            wet = oaconvolve(dry[None], self._rirs[k][j], axes=1)  # (mics, n + L - 1)
            if j != self._last_rir[k]:
                old = oaconvolve(dry[None], self._rirs[k][self._last_rir[k]], axes=1)
                fade = np.ones(wet.shape[1])
                fade[:n] = np.linspace(0, 1, n)
                wet = fade * wet + (1 - fade) * old
                self._last_rir[k] = j
            acc[:, : wet.shape[1]] += wet
        acc[:, : self.rir_length] += self._tail
        out = acc[:, :n]
        self._tail = acc[:, n: n + self.rir_length].copy()
        if self._noise_ref is None:
            self._noise_ref = float(np.sqrt(np.mean(out**2)) + 1e-9)
        noise_std = self._noise_ref / 10 ** (self.scene.snr_db / 20)
        out = out + self.rng.standard_normal(out.shape) * noise_std
        self.time += n / self.scene.fs
        return out.astype(np.float32)

    def render(self, seconds: float, chunk: int = 1024) -> np.ndarray:
        """``(mics, samples)`` of ``seconds`` audio (from the current time on)."""
        total = int(round(seconds * self.scene.fs))
        parts = [self.chunk(min(chunk, total - i)) for i in range(0, total, chunk)]
        return np.concatenate(parts, axis=1)
