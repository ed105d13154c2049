"""Room acoustics with pyroomacoustics: impulse responses, the robot's sweep, ambient sources.

Empty rectangular rooms use pyroomacoustics' fast shoebox image-source model;
polygonal rooms and rooms with boxes are built wall by wall (boxes become
inner walls that reflect and occlude), with a lower image order. The hybrid
ray tracer is an option for a realistic reverberant tail.

Levels: a source's level is given in dBFS at 1 m; pyroomacoustics' distance law
is measured once per process (:func:`distance_gain`) so levels stay right
whatever its convention.
"""

from __future__ import annotations

import functools

import numpy as np

from avperception.constants import SPEED_OF_SOUND
from avperception.dsp.echo import echo_profile, sweep  # noqa: F401  (re-exported for the data engine)

from .geometry import RoomGeometry


def _pra():
    try:
        import pyroomacoustics as pra
    except ImportError as e:  # pragma: no cover
        raise ImportError("the data engine needs pyroomacoustics: pip install pyroomacoustics") from e
    return pra


def rir_latency() -> int:
    """Samples by which pyroomacoustics delays every impulse response (half its fractional-delay filter)."""
    return int(_pra().constants.get("frac_delay_length")) // 2


@functools.lru_cache(maxsize=8)
def distance_gain(fs: int, c: float) -> float:
    """Sum of a direct-path impulse response at 1 m: the amplitude pyroomacoustics gives a unit source there."""
    pra = _pra()
    room = pra.ShoeBox([20.0, 20.0, 20.0], fs=fs, max_order=0)
    room.set_sound_speed(c)
    room.add_source([10.0, 10.0, 10.0])
    room.add_microphone_array(np.array([[11.0, 10.0, 10.0]]).T)
    room.compute_rir()
    h = np.asarray(room.rir[0][0], dtype=np.float64)
    lat = rir_latency()
    k = int(round(fs / c)) + lat
    return float(np.sum(h[max(0, k - lat): k + lat + 1]))


# a surface that absorbs at least this share of the energy in every octave band of the sweep reflects at most a
# tenth of its amplitude (-20 dB): pyroomacoustics' fabric-covered panel absorbs all of it (1.0 from 500 Hz up)
ECHO_FREE_ABSORPTION = 0.99


@functools.lru_cache(maxsize=256)
def band_absorption(material: str, f_lo: float, f_hi: float, fs: int) -> float:
    """The least energy absorption of a pyroomacoustics material over the octave bands that ``[f_lo, f_hi]`` Hz
    reaches, as the simulator resamples it at ``fs``: how much of a sweep in that band the surface can return."""
    pra = _pra()
    bands = pra.acoustics.AntoniOctaveFilterBank(fs=fs, n_fft=pra.constants.get("octave_bands_n_fft"),
                                                 base_frequency=pra.constants.get("octave_bands_base_freq"))
    m = pra.Material(material)
    m.resample(bands)
    edges = np.asarray(bands.bands, dtype=np.float64)
    hit = (edges[:, 1] > f_lo) & (edges[:, 0] < f_hi)
    if not hit.any():
        raise ValueError(f"the band {f_lo:g}-{f_hi:g} Hz reaches no octave band of the simulator at {fs} Hz")
    return float(np.min(np.asarray(m.absorption_coeffs, dtype=np.float64)[hit]))


class RoomAcoustics:
    """Impulse responses from sources to microphones in one room.

    Args:
        room: the geometry (materials named per surface).
        mics: ``(M, 3)`` microphone positions, world frame.
        sources: ``(S, 3)`` source positions, world frame.
        fs, c: sample rate and speed of sound.
        max_order_shoebox, max_order: image-source orders (rectangle without boxes / otherwise).
        air_absorption, ray_tracing, rt_num_rays, rt_receiver_radius, scattering: simulator options.
        seed: seeds pyroomacoustics' own random generators (ray tracer, inside tests), for determinism.
        duration_s: longest impulse response needed; the ray tracer stops there.
        edge_diffraction: add each source's first-order diffraction at box edges and outer wall corners
            (:mod:`.diffraction`), each edge scaled by its faces' least absorption over ``band_hz`` (Hz; None: every
            octave band of the simulator).
    """

    def __init__(self, room: RoomGeometry, mics: np.ndarray, sources: np.ndarray, fs: int, c: float = SPEED_OF_SOUND,
                 max_order_shoebox: int = 10, max_order: int = 3, air_absorption: bool = True,
                 ray_tracing: bool = False, rt_num_rays: int = 5000, rt_receiver_radius: float = 0.5,
                 scattering: float = 0.1, seed: int = 0, duration_s: float = 0.5, edge_diffraction: bool = False,
                 band_hz: tuple[float, float] | None = None) -> None:
        pra = _pra()
        self.fs = int(fs)
        mics = np.asarray(mics, dtype=np.float64).reshape(-1, 3)
        sources = np.asarray(sources, dtype=np.float64).reshape(-1, 3)
        for name, pts in (("microphone", mics), ("source", sources)):
            bad = ~room.contains(pts)
            if np.any(bad):
                raise ValueError(f"{name} at {np.round(pts[np.argmax(bad)], 3).tolist()} is not in the room's air")
        seed = int(seed) % (2**63)
        pra.random.seed(numpy=seed, libroom=seed ^ 0x5DEECE66D)
        # its impulse-response builder sums per-thread partial sums: one thread keeps the bytes
        # independent of the machine (the data engine runs in parallel across processes instead)
        pra.constants.set("num_threads", 1)
        kw = dict(fs=self.fs, air_absorption=air_absorption)

        def material(name: str):
            return pra.Material(name, scattering if ray_tracing else None)

        if room.is_rectangle and not room.boxes:
            w, l = room.floor.max(0)
            # our wall i runs from corner i to corner i+1 of [(0,0), (w,0), (w,l), (0,l)]
            mats = {"south": material(room.wall_materials[0]), "east": material(room.wall_materials[1]),
                    "north": material(room.wall_materials[2]), "west": material(room.wall_materials[3]),
                    "floor": material(room.floor_material), "ceiling": material(room.ceiling_material)}
            self.room = pra.ShoeBox([w, l, room.height], materials=mats, max_order=int(max_order_shoebox), **kw)
            self.order = int(max_order_shoebox)
        else:
            bands = pra.acoustics.AntoniOctaveFilterBank(
                fs=self.fs, n_fft=pra.constants.get("octave_bands_n_fft"),
                base_frequency=pra.constants.get("octave_bands_base_freq"))
            cache: dict = {}
            walls = []
            for s in room.surfaces(box_bottoms=True):  # closed boxes keep its inside test right
                if s.material not in cache:
                    m = material(s.material)
                    m.resample(bands)
                    cache[s.material] = m
                m = cache[s.material]
                walls.append(pra.wall_factory(np.ascontiguousarray(s.corners.T), m.absorption_coeffs,
                                              m.scattering_coeffs, name=s.name))
            self.room = pra.Room(walls, max_order=int(max_order), **kw)
            self.order = int(max_order)
        self.room.set_sound_speed(float(c))
        if ray_tracing:
            self.room.set_ray_tracing(n_rays=int(rt_num_rays), receiver_radius=float(rt_receiver_radius),
                                      time_thres=float(duration_s))
        for p in sources:
            self.room.add_source(p)
        self.room.add_microphone_array(mics.T)
        self.num_sources = len(sources)
        self.num_mics = len(mics)
        self._geometry, self._mics, self._sources = room, mics, sources
        self._options = dict(fs=fs, c=c, max_order_shoebox=max_order_shoebox, max_order=max_order,
                             air_absorption=air_absorption, ray_tracing=ray_tracing, rt_num_rays=rt_num_rays,
                             rt_receiver_radius=rt_receiver_radius, scattering=scattering, seed=seed,
                             duration_s=duration_s, edge_diffraction=edge_diffraction, band_hz=band_hz)

    @classmethod
    def for_config(cls, cfg, room: RoomGeometry, mics: np.ndarray, sources: np.ndarray, seed: int, duration_s: float,
                   max_order: int | None = None) -> "RoomAcoustics":
        """The simulator a data engine config (:class:`~.config.DatagenConfig`) asks for, its sweep's band scaling
        the edges' diffraction; ``max_order`` overrides both image orders (0: the direct path only)."""
        ac = cfg.acoustics
        orders = (ac.max_order_shoebox, ac.max_order) if max_order is None else (max_order, max_order)
        return cls(room, mics, sources, cfg.audio.sample_rate, ac.speed_of_sound, *orders, ac.air_absorption,
                   ac.ray_tracing, ac.rt_num_rays, ac.rt_receiver_radius_m, cfg.room.materials.scattering, seed,
                   duration_s=duration_s, edge_diffraction=ac.edge_diffraction,
                   band_hz=(cfg.active.f_start_hz, cfg.active.f_end_hz))

    def rirs(self) -> list[np.ndarray]:
        """Per source: ``(M, L)`` float64 impulse responses, advanced by :func:`rir_latency`.

        Index 0 is the emission time: a path of length ``d`` peaks at ``d / c * fs``.
        """
        lat = rir_latency()
        out = []
        for s, per_mic in enumerate(self._raw_rirs()):
            length = max(len(r) for r in per_mic)
            h = np.zeros((self.num_mics, max(1, length - lat)))
            for m, r in enumerate(per_mic):
                r = np.asarray(r, dtype=np.float64)[lat:]
                h[m, : len(r)] = r
            if self._options["edge_diffraction"]:
                h = _add(h, self._diffraction(self._sources[s]))
            out.append(h)
        return out

    def _diffraction(self, source: np.ndarray) -> np.ndarray:
        from .diffraction import edge_diffraction

        o = self._options
        lo, hi = o["band_hz"] or (0.0, self.fs / 2)
        return edge_diffraction(self._geometry, source, self._mics, self.fs, o["c"],
                                gain=distance_gain(self.fs, o["c"]),
                                reflection=lambda m: float(np.sqrt(1 - band_absorption(m, lo, hi, self.fs))))

    def _raw_rirs(self) -> list[list[np.ndarray]]:
        """Per source, per microphone: pyroomacoustics' impulse response.

        A source that the image-source model joins to some microphone by no path at all (a box hides it and no
        reflection up to the image order gets round) would have no response; pyroomacoustics fails on it. Sound
        does get round an obstacle, so such a source is heard as in the same room with its boxes acoustically
        transparent (rare: one of the first 14000 scenes of the default config).
        """
        if self.num_sources == 0:
            return []
        self.room.image_source_model()
        hidden = [s for s, v in enumerate(self.room.visibility) if not np.all(np.any(np.asarray(v), axis=1))]
        if hidden and not self._geometry.boxes:  # also where the boxes were already taken away
            s = hidden[0]
            raise ValueError(f"the source at {np.round(self._sources[s], 3).tolist()} reaches a microphone by no "
                             f"path of the image-source model (order {self.order}) and no box hides it (the room's "
                             "own walls do); move it or raise the image order")
        for s in reversed(hidden):  # out of this room's simulation
            del self.room.sources[s]
            del self.room.visibility[s]
        out: list = [None] * self.num_sources
        heard = [s for s in range(self.num_sources) if s not in hidden]
        if heard:
            self.room.compute_rir()
            for j, s in enumerate(heard):
                out[s] = [self.room.rir[m][j] for m in range(self.num_mics)]
        if hidden:
            from dataclasses import replace

            open_room = RoomAcoustics(replace(self._geometry, boxes=[]), self._mics, self._sources[hidden],
                                      **self._options)
            for s, per_mic in zip(hidden, open_room._raw_rirs()):
                out[s] = per_mic
        return out


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The sum of two ``(M, L)`` impulse responses of different lengths."""
    out = np.zeros((a.shape[0], max(a.shape[1], b.shape[1])))
    out[:, : a.shape[1]] += a
    out[:, : b.shape[1]] += b
    return out


def render_active(h: np.ndarray, emitted: np.ndarray, num_samples: int) -> np.ndarray:
    """The array's recording of a sweep emitted at sample 0: ``(M, num_samples)``."""
    from scipy.signal import oaconvolve

    y = oaconvolve(emitted[None], h, axes=1)
    out = np.zeros((h.shape[0], num_samples))
    n = min(num_samples, y.shape[1])
    out[:, :n] = y[:, :n]
    return out


def render_passive(h: np.ndarray, signal: np.ndarray, num_samples: int) -> np.ndarray:
    """Steady-state recording of a continuous source: ``signal`` must hold ``num_samples + L`` samples.

    The window starts after the impulse response length, so the reverberation
    has built up as it would for a sound that was already playing.
    """
    from scipy.signal import oaconvolve

    L = h.shape[1]
    if len(signal) < num_samples + L:
        raise ValueError(f"signal needs {num_samples + L} samples, got {len(signal)}")
    y = oaconvolve(signal[None, : num_samples + L], h, axes=1)
    return y[:, L: L + num_samples]


def first_arrival(envelope: np.ndarray, threshold: float = 0.3, start: int = 0, mainlobe: int = 6) -> np.ndarray:
    """``(M,)`` lag of the first envelope peak above ``threshold`` x the channel's maximum (from ``start`` on).

    After the first crossing, the peak is the maximum within ``mainlobe`` samples
    (the compressed sweep's main lobe), which skips the low ramp in front of it.
    """
    env = np.atleast_2d(np.asarray(envelope, dtype=np.float64))[:, start:]
    out = np.zeros(len(env), dtype=np.int64)
    for m, ch in enumerate(env):
        k0 = int(np.argmax(ch > threshold * ch.max()))
        out[m] = start + k0 + int(np.argmax(ch[k0: k0 + mainlobe]))
    return out
