"""A robot moving through a data-engine room and pinging: one continuous multichannel stream with its truth.

The data engine renders independent scenes: a 2048-sample window whose sample 0
is the sweep's onset (:func:`.scene.simulate_audio`). :class:`ActiveTrajectory`
renders the same physics as one continuous recording: the robot drives a closed
loop through the free space of a room drawn by :func:`.scene.sample_room`,
emits the sweep every ``1 / ping_rate_hz`` seconds, and every ping's impulse
responses (speaker and ambient sources to the microphones at that pose) come
from the engine's :class:`.acoustics.RoomAcoustics`. The sweeps are
overlap-added at their onsets (earlier pings' tails reach into later
segments), the ambient sources play continuously (each segment convolved with
its pose's responses, cross-faded from the previous pose's), and the engine's
gain, sensor noise and clipping are applied, at the engine's levels: a window cut
at an onset looks like a training scene (a test checks it against
``simulate_audio``).

Per ping the truth comes from the engine's functions: depth and semantic
panoramas (:func:`.groundtruth.render_view`), occupancy voxels
(:func:`.groundtruth.occupancy`), the pose and the sources in the array frame.

The loop takes a whole number of pings and moving sources circle with a period
that divides it, so ping ``k`` and ping ``k + loop_pings`` share their poses:
impulse responses and truth are computed once per loop position and reused on
later laps, where a ping costs only its convolutions. Where the first lap is
slower than real time, :class:`BackgroundRenderer` renders ahead in another
process.

Frames: room (= odom) x, y on the floor, z up; array frame x forward, y left, z up.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .config import DatagenConfig
from .geometry import RoomGeometry, sample_free_point, voxel_grid
from .scene import SceneSpec, SourceSpec, robot_clearance, room_split, sample_room

_PATH_STEP_M = 0.01  # arc-length resolution of the planned loop
_CHECK_STEP_M = 0.02  # clearance is checked every this many metres along a path


@dataclass
class PingSegment:
    """One ping period of the stream and the truth at that ping.

    ``audio`` ``(M, period)`` float32: stream samples ``[onset_sample, onset_sample + period)`` with every earlier
    ping's tail added, gain, noise and clipping applied (the array's own microphone order).
    ``depth`` ``(H, W)`` float32 metres (NaN where no surface), ``semantic`` ``(H, W)`` uint8 labels
    (:data:`.geometry.CLASS_NAMES`, 255 none), ``occupancy`` ``(D, H, W)`` bool ``[z, y, x]`` in the array frame,
    ``occupied_points`` ``(K, 3)`` float32 centres of the occupied voxels (array frame),
    ``pose`` ``(4,)`` x, y, z (array height), yaw of the array in the room (= odom) frame,
    ``source_positions`` ``(S, 3)`` the ambient sources in the array frame, ``source_kinds`` their signal kinds.
    """

    index: int
    onset_sample: int
    audio: np.ndarray
    depth: np.ndarray
    semantic: np.ndarray
    occupancy: np.ndarray
    occupied_points: np.ndarray
    pose: np.ndarray
    source_positions: np.ndarray
    source_kinds: tuple[str, ...] = ()
    render_s: float = 0.0  # wall time this ping took to render


@dataclass
class AmbientSource:
    """An ambient source: ``anchor`` (world, m) and, when moving, a horizontal circle around it."""

    anchor: np.ndarray
    kind: str
    level_db: float  # RMS dBFS at 1 m, as the engine's passive sources
    radius: float = 0.0
    turns: int = 0  # full circles per loop (0: static)
    phase: float = 0.0

    def position(self, frac: float) -> np.ndarray:
        """World position at loop fraction ``frac`` in [0, 1)."""
        if self.turns == 0 or self.radius == 0:
            return self.anchor.copy()
        a = self.phase + 2 * np.pi * self.turns * frac
        return self.anchor + self.radius * np.array([np.cos(a), np.sin(a), 0.0])


@dataclass
class _State:
    """Where a stream stands: the next ping to render and the overlap-add buffer from its onset on."""

    next_ping: int
    acc: np.ndarray  # (M, len) contributions already made to samples next_ping * period + [0, len)
    prev_rirs: list | None = None  # the previous ping's ambient responses (cross-fade)


# --------------------------------------------------------------------------- path planning


def _resample_loop(points: np.ndarray, step: float) -> tuple[np.ndarray, float]:
    """Closed polyline ``(P, 2)`` -> points every ``step`` metres along it ``(Q, 2)`` (first not repeated), length."""
    closed = np.vstack([points, points[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    s = np.r_[0.0, np.cumsum(seg)]
    length = float(s[-1])
    q = np.arange(0.0, length, step) if length > 0 else np.zeros(1)
    return np.c_[np.interp(q, s, closed[:, 0]), np.interp(q, s, closed[:, 1])], length


def _loop_clear(room: RoomGeometry, points: np.ndarray, clearance: float) -> bool:
    dense, length = _resample_loop(points, _CHECK_STEP_M)
    return length > 0 and bool(np.all(room.clearance_2d(dense) >= clearance))


def _chaikin(points: np.ndarray, iterations: int = 2) -> np.ndarray:
    """Corner cutting of a closed polyline ``(P, 2)`` (smooths the turns)."""
    p = np.asarray(points, dtype=np.float64)
    for _ in range(iterations):
        nxt = np.roll(p, -1, axis=0)
        p = np.stack([0.75 * p + 0.25 * nxt, 0.25 * p + 0.75 * nxt], axis=1).reshape(-1, 2)
    return p


def plan_loop(room: RoomGeometry, rng: np.random.Generator, clearance: float, tries: int = 300,
              length_m: tuple[float, float] = (3.0, 14.0)) -> np.ndarray | None:
    """A closed polyline ``(P, 2)`` through the free space keeping ``clearance`` from walls and boxes.

    Waypoints are free points (:func:`.geometry.sample_free_point`) taken in angular order around their centroid;
    the loop is kept when every point along it is ``clearance`` away from every wall and box side, then smoothed
    by corner cutting where that stays clear. When no loop of 3-6 waypoints fits, a back-and-forth between two free
    points; None when not even that fits (the robot then stands still).
    """
    best, best_len = None, 0.0
    for _ in range(tries):
        k = int(rng.integers(3, 7))
        pts = [sample_free_point(room, rng, clearance, (0.0, 0.0), tries=256) for _ in range(k)]
        if any(p is None for p in pts):
            continue
        xy = np.array([p[:2] for p in pts])
        c = xy.mean(0)
        xy = xy[np.argsort(np.arctan2(xy[:, 1] - c[1], xy[:, 0] - c[0]))]
        if not _loop_clear(room, xy, clearance):
            continue
        length = _resample_loop(xy, _CHECK_STEP_M)[1]
        if length_m[0] <= length <= length_m[1]:
            best = xy
            break
        if length > best_len and length <= length_m[1]:
            best, best_len = xy, length
    if best is None:  # a back-and-forth
        for _ in range(tries):
            a = sample_free_point(room, rng, clearance, (0.0, 0.0), tries=256)
            b = sample_free_point(room, rng, clearance, (0.0, 0.0), tries=256)
            if a is None or b is None or np.linalg.norm(a[:2] - b[:2]) < 0.5:
                continue
            xy = np.array([a[:2], b[:2]])
            if _loop_clear(room, xy, clearance):
                best = xy
                break
    if best is None:
        return None
    smooth = _chaikin(best)
    return smooth if _loop_clear(room, smooth, clearance) else best


# --------------------------------------------------------------------------- the trajectory


class ActiveTrajectory:
    """A robot pinging while it drives a loop through one data-engine room (see the module docstring).

    Args:
        cfg: the data-engine config (default: the shipped one, whose array is robot_8mic). Its ``active``
            section is the sweep, its level and the speaker position; ``passive`` the ambient sources' kinds and
            levels; ``noise`` and ``audio.gain_db`` the ranges the sensor noise and gain are drawn from.
        room_id: which room of ``cfg`` (:func:`.scene.sample_room`, the engine's room ``room_id``).
        active: fields of ``cfg.active`` to change (``sweep``, ``f_start_hz``, ``f_end_hz``, ``duration_s``,
            ``fade``, ``level_db``, ``speaker_position``), e.g. a model bundle's sweep.
        ping_rate_hz: pings per second; the period is ``round(fs / ping_rate_hz)`` samples.
        speed_m_s: the robot's speed along its loop (0: it stands at the loop's start).
        num_sources: ambient sources (kinds and levels drawn as the engine's passive section does).
        moving_sources: ambient sources circle slowly (radius ``source_radius_m``, ~``source_speed_m_s``).
        noise: add sensor noise (level drawn from ``cfg.noise.level_db`` unless ``noise_db``).
        gain_db, noise_db, array_height: fixed values instead of draws.
        seed: trajectory seed (path, sources, levels, signals, noise) next to ``cfg.seed`` and ``room_id``.
        static_period_s: the repeat period of moving sources when the robot stands still.
        cache_mb: memory for the impulse responses and truth of loop positions already rendered (0: none); a
            loop that fits is rendered once and its later laps cost only the convolutions.
        backend: ray-caster backend of the truth (``auto``, ``open3d``, ``numpy``).

    Raises ValueError when the room has no free place for the robot.
    """

    def __init__(self, cfg: DatagenConfig | None = None, room_id: int = 0, ping_rate_hz: float = 4.0,
                 active: dict | None = None,
                 speed_m_s: float = 0.15, num_sources: int = 2, moving_sources: bool = True, noise: bool = True,
                 gain_db: float | None = None, noise_db: float | None = None, array_height: float | None = None,
                 seed: int = 0, source_radius_m: float = 0.5, source_speed_m_s: float = 0.1,
                 static_period_s: float = 60.0, cache_mb: float = 512.0, backend: str = "auto") -> None:
        from .acoustics import distance_gain, sweep
        from .config import load_config

        self.cfg = cfg if cfg is not None else load_config()
        if active:
            import dataclasses

            sp = active.get("speaker_position")
            fields = {**active, **({"speaker_position": tuple(float(v) for v in sp)} if sp is not None else {})}
            self.cfg = dataclasses.replace(self.cfg, active=dataclasses.replace(self.cfg.active, **fields)).validate()
        c = self.cfg
        self.array = c.array_geometry()
        self.mics = self.array.positions
        self.fs = int(c.audio.sample_rate)
        if ping_rate_hz <= 0:
            raise ValueError(f"ping_rate_hz must be positive, got {ping_rate_hz}")
        self.period = int(round(self.fs / float(ping_rate_hz)))
        if self.period < int(round(c.active.duration_s * self.fs)):
            raise ValueError(f"ping_rate_hz {ping_rate_hz} leaves less than one sweep between pings")
        self.ping_rate_hz = self.fs / self.period
        self.window = int(c.audio.num_samples)
        self.room_id = int(room_id)
        self.seed = int(seed)
        self.noise = bool(noise)
        self.backend = backend
        self.cache_bytes = int(float(cache_mb) * 2**20)
        clear = robot_clearance(c, self.mics)
        self.clearance = clear
        self.room = sample_room(c, self.room_id, clear)
        ss = np.random.SeedSequence(c.seed, spawn_key=(9, self.room_id, self.seed))
        rng = np.random.default_rng(ss)
        self._sim_seed = int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))

        # the path: a loop of a whole number of pings
        z = c.robot.array_height_m
        zmin = max(z[0], float(-np.min(self.mics[:, 2])) + 0.05, -c.active.speaker_position[2] + 0.05)
        zmax = min(z[1], self.room.height - 0.1 - max(0.0, float(np.max(self.mics[:, 2]))))
        self.array_height = float(rng.uniform(zmin, max(zmin, zmax))) if array_height is None else float(array_height)
        loop = plan_loop(self.room, rng, clear + 0.02) if speed_m_s > 0 else None
        if loop is None:
            start = sample_free_point(self.room, rng, clear, (0.0, 0.0))
            if start is None:
                raise ValueError(f"room {room_id}: no free place for the robot")
            loop = start[None, :2]
        self.waypoints = loop
        if len(loop) > 1:
            dense, self.loop_length = _resample_loop(loop, _PATH_STEP_M)
            self.loop_pings = max(1, int(round(self.loop_length / (speed_m_s / self.ping_rate_hz))))
            self.speed_m_s = self.loop_length * self.ping_rate_hz / self.loop_pings
            # yaw along the path, its direction vectors averaged over +-0.3 m so that the robot turns smoothly
            d = np.roll(dense, -1, axis=0) - np.roll(dense, 1, axis=0)
            d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
            w = max(1, int(round(0.3 / _PATH_STEP_M)))
            kern = np.ones(2 * w + 1)
            pad = np.concatenate([d[-w:], d, d[:w]]) if len(d) > w else np.tile(d, (3, 1))[len(d) - w: 2 * len(d) + w]
            sm = np.stack([np.convolve(pad[:, i], kern, mode="valid") for i in range(2)], axis=1)
            self._dense, self._yaw = dense, np.arctan2(sm[:, 1], sm[:, 0])
        else:
            self.loop_length, self.speed_m_s = 0.0, 0.0
            self._dense, self._yaw = loop.copy(), np.array([float(rng.uniform(-np.pi, np.pi))])
            self.loop_pings = 1
        self.gain_db = float(rng.uniform(*c.audio.gain_db)) if gain_db is None else float(gain_db)
        self.noise_db = float(rng.uniform(*c.noise.level_db)) if noise_db is None else float(noise_db)

        # ambient sources (kinds, levels, clearances as the engine's passive section)
        pc = c.passive
        robot_xyz = np.c_[self._dense, np.full(len(self._dense), self.array_height)]
        self.sources: list[AmbientSource] = []
        moving = bool(moving_sources) and num_sources > 0
        if moving and self.loop_pings == 1:
            self.loop_pings = max(1, int(round(static_period_s * self.ping_rate_hz)))
        t_loop = self.loop_pings / self.ping_rate_hz
        for _ in range(int(num_sources)):
            kind = pc.signals[int(rng.integers(len(pc.signals)))]
            level = float(rng.uniform(*pc.level_db))
            for _try in range(200):
                q = sample_free_point(self.room, rng, pc.wall_clearance_m, (0.2, self.room.height - 0.2))
                if q is None:
                    break
                src = AmbientSource(q, kind, level)
                if moving:
                    src.radius = float(source_radius_m)
                    src.turns = max(1, int(round(source_speed_m_s * t_loop / (2 * np.pi * src.radius))))
                    src.phase = float(rng.uniform(0, 2 * np.pi))
                if self._source_ok(src, robot_xyz):
                    self.sources.append(src)
                    break
        self.k0 = distance_gain(self.fs, c.acoustics.speed_of_sound)
        a = c.active
        self.emitted = sweep(self.fs, a.f_start_hz, a.f_end_hz, a.duration_s, a.sweep, a.fade) \
            * 10 ** (a.level_db / 20) / self.k0
        self._signals = [self._make_signal(j, s) for j, s in enumerate(self.sources)]
        self._cache: OrderedDict = OrderedDict()
        self._cache_used = 0
        self._handed: dict = {}
        self._caster = None
        self._state: _State | None = None

    # ------------------------------------------------------------------ geometry

    def _source_ok(self, src: AmbientSource, robot_xyz: np.ndarray) -> bool:
        """Clear of walls/boxes and ``passive.min_distance_m`` from the robot at all times."""
        pc = self.cfg.passive
        n = self.loop_pings
        fr = np.arange(n) / n
        pos = np.array([src.position(f) for f in fr])
        if not np.all(self.room.clearance_2d(pos[:, :2]) >= pc.wall_clearance_m):
            return False
        if not np.all(self.room.contains(pos)):
            return False
        robot = np.array([self.pose(k)[:3] for k in range(n)])
        if not np.all(np.linalg.norm(pos - robot, axis=1) >= pc.min_distance_m + 0.05):
            return False
        # also against the whole path when the robot stands still or the source does
        return src.turns > 0 or bool(np.all(np.linalg.norm(robot_xyz - src.anchor, axis=1) >= pc.min_distance_m))

    def pose(self, k: int) -> np.ndarray:
        """``(4,)`` x, y, array height, yaw at ping ``k`` (room = odom frame)."""
        j = k % self.loop_pings
        if len(self._dense) == 1:
            xy, yaw = self._dense[0], self._yaw[0]
        else:
            s = j / self.loop_pings * len(self._dense)
            i0 = int(np.floor(s)) % len(self._dense)
            i1 = (i0 + 1) % len(self._dense)
            f = s - np.floor(s)
            xy = (1 - f) * self._dense[i0] + f * self._dense[i1]
            yaw = math.atan2((1 - f) * np.sin(self._yaw[i0]) + f * np.sin(self._yaw[i1]),
                             (1 - f) * np.cos(self._yaw[i0]) + f * np.cos(self._yaw[i1]))
        return np.array([xy[0], xy[1], self.array_height, yaw])

    def source_positions_world(self, k: int) -> np.ndarray:
        """``(S, 3)`` the ambient sources at ping ``k`` (room frame)."""
        frac = (k % self.loop_pings) / self.loop_pings
        return np.array([s.position(frac) for s in self.sources]).reshape(-1, 3)

    def scene_spec(self, k: int, sources: bool = True) -> SceneSpec:
        """The engine's :class:`.scene.SceneSpec` of ping ``k``: this pose, room, gain, noise, the sweep on."""
        x, y, z, yaw = self.pose(k)
        spec = SceneSpec(int(k), self.room_id, room_split(self.cfg, self.room_id), self.room, np.array([x, y]),
                         float(z), float(yaw), True, self.gain_db, self.noise_db, seed=self._sim_seed)
        if sources:
            spec.sources = [SourceSpec(p, s.kind, s.level_db)
                            for p, s in zip(self.source_positions_world(k), self.sources)]
        return spec

    def room_mesh(self, ceiling: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The room's triangulated surfaces (room frame): vertices ``(V, 3)``, triangles ``(T, 3)``, labels ``(T,)``."""
        from .geometry import CEILING, surface_triangles

        surf = [s for s in self.room.surfaces() if ceiling or s.label != CEILING]
        return surface_triangles(surf)

    # ------------------------------------------------------------------ per ping physics

    def _make_signal(self, j: int, src: AmbientSource, seconds: float = 8.0) -> np.ndarray:
        """A looped dry signal at the source's level (RMS ``level_db`` at 1 m), seamless at its seam."""
        from avperception.sim.room import make_signal

        rng = np.random.default_rng(np.random.SeedSequence(self._sim_seed, spawn_key=(1, j)))
        n = int(seconds * self.fs)
        fade = int(0.05 * self.fs)
        if src.kind == "chirps":
            # its chirps come every 0.25 s: at a 4 Hz ping rate they would sit at the same place of every window (a
            # training scene takes them at a random offset), so the stream spaces them 0.15-0.35 s apart
            parts, total = [], 0
            while total < n + fade:
                parts.append(make_signal("chirps", int(rng.uniform(0.15, 0.35) * self.fs), self.fs, rng))
                total += len(parts[-1])
            x = np.concatenate(parts)
        else:
            x = make_signal(src.kind, n + fade, self.fs, rng)
        ramp = np.linspace(0.0, 1.0, fade)
        x[:fade] = x[:fade] * ramp + x[n: n + fade] * (1 - ramp)
        x = x[:n]
        return x / (np.sqrt(np.mean(x**2)) + 1e-12) * 10 ** (src.level_db / 20) / self.k0

    def _dry(self, j: int, start: int, n: int) -> np.ndarray:
        """Samples ``[start, start + n)`` of source ``j``'s looped dry signal."""
        sig = self._signals[j]
        return sig[np.arange(start, start + n) % len(sig)]

    def _position_data(self, k: int) -> dict:
        """Impulse responses and truth of loop position ``k % loop_pings`` (cached)."""
        key = k % self.loop_pings
        hit = self._handed.pop(key, None)
        if hit is not None:
            self._remember(key, hit)
            return hit
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        from .acoustics import RoomAcoustics
        from .groundtruth import RayCaster, occupancy, render_view
        from .scene import grids

        c = self.cfg
        spec = self.scene_spec(k)
        pts = np.vstack([spec.to_world(np.asarray(c.active.speaker_position, dtype=np.float64))[None],
                         self.source_positions_world(k)])
        sim = RoomAcoustics.for_config(c, self.room, spec.to_world(self.mics), pts, spec.seed,
                                       c.audio.num_samples / self.fs + 0.05)
        hs = [h.astype(np.float32) for h in sim.rirs()]  # float32 whether cached or not: the same bytes either way
        if self._caster is None:
            self._caster = RayCaster.for_room(self.room, self.backend)
            self._pano = grids(c)[0]
            self._voxel_centres = voxel_grid(c.voxels.center_m, c.voxels.extent_m, c.voxels.resolution)[0]
        depth, sem = render_view(self._caster, spec.origin, spec.rotation, self._pano.vectors, self._pano.shape)
        vox = occupancy(self.room, spec.origin, spec.rotation, c.voxels.center_m, c.voxels.extent_m,
                        c.voxels.resolution)
        data = {"rirs": hs, "depth": depth, "semantic": sem, "occupancy": vox,
                "occupied_points": self._voxel_centres[vox].astype(np.float32),
                "pose": self.pose(k), "sources": spec.to_array(self.source_positions_world(k)).reshape(-1, 3)}
        data["bytes"] = sum(v.nbytes for v in (*hs, depth, sem, vox, data["occupied_points"]))
        self._remember(key, data)
        return data

    def _remember(self, key: int, data: dict) -> None:
        if data["bytes"] <= self.cache_bytes and key not in self._cache:
            self._cache[key] = data
            self._cache_used += data["bytes"]
            while self._cache_used > self.cache_bytes:
                self._cache_used -= self._cache.popitem(last=False)[1]["bytes"]

    def hand_over(self, k: int, data: dict) -> None:
        """Give the position data of ping ``k`` computed elsewhere (another process) for its next render."""
        self._handed[k % self.loop_pings] = data

    def has_position(self, k: int) -> bool:
        """Whether ping ``k``'s impulse responses and truth are at hand (cached or handed over)."""
        key = k % self.loop_pings
        return key in self._cache or key in self._handed

    def position_data(self, k: int) -> dict:
        """Impulse responses (speaker first, then the ambient sources, each ``(M, L)`` float32) and truth of ping
        ``k``'s loop position: ``rirs``, ``depth``, ``semantic``, ``occupancy``, ``occupied_points``, ``pose``,
        ``sources`` (array frame). Computed once per loop position when the cache holds it."""
        return self._position_data(k)

    def _new_state(self, start_ping: int) -> _State:
        """An empty stream at ping ``start_ping``, the ambient sources already playing (steady state)."""
        data = self._position_data(start_ping)
        hs = data["rirs"]
        length = max([self.period] + [h.shape[1] for h in hs])
        acc = np.zeros((len(self.mics), self.period + length))
        onset = start_ping * self.period
        for j, h in enumerate(hs[1:]):
            L = h.shape[1]
            pre = self._dry(j, onset - L, L)  # what played before the start still rings
            y = _conv(pre, h)[:, L:]
            acc[:, : y.shape[1]] += y
        return _State(start_ping, acc, [h for h in hs[1:]])

    def _advance(self, st: _State) -> PingSegment:
        """Render ping ``st.next_ping`` into the stream state; returns its segment."""
        import time

        t0 = time.perf_counter()
        k, P = st.next_ping, self.period
        data = self._position_data(k)
        hs = data["rirs"]
        need = P + max(h.shape[1] for h in hs) + len(self.emitted)
        if st.acc.shape[1] < need:
            st.acc = np.pad(st.acc, ((0, 0), (0, need - st.acc.shape[1])))
        y = _conv(self.emitted, hs[0])
        st.acc[:, : y.shape[1]] += y
        ramp = (np.arange(P) + 0.5) / P
        for j, h in enumerate(hs[1:]):
            dry = self._dry(j, k * P, P)
            prev = st.prev_rirs[j] if st.prev_rirs is not None else h
            if prev is h:
                y = _conv(dry, h)
            else:  # cross-fade the input from the previous pose's responses to this pose's
                y = _conv(dry * ramp, h)
                y2 = _conv(dry * (1 - ramp), prev)
                if y2.shape[1] > y.shape[1]:
                    y, y2 = y2, y
                y[:, : y2.shape[1]] += y2
            st.acc[:, : y.shape[1]] += y
        st.prev_rirs = list(hs[1:])
        out = st.acc[:, :P] * 10 ** (self.gain_db / 20)
        st.acc = np.concatenate([st.acc[:, P:], np.zeros((len(self.mics), P))], axis=1)
        st.next_ping = k + 1
        if self.noise:
            rng = np.random.default_rng(np.random.SeedSequence(self._sim_seed, spawn_key=(2, k)))
            out = out + rng.standard_normal(out.shape) * 10 ** (self.noise_db / 20)
        if self.cfg.audio.clip:
            out = np.clip(out, -1.0, 1.0)
        return PingSegment(k, k * P, out.astype(np.float32), data["depth"], data["semantic"], data["occupancy"],
                           data["occupied_points"], data["pose"].copy(), data["sources"].astype(np.float32),
                           tuple(s.kind for s in self.sources), time.perf_counter() - t0)

    # ------------------------------------------------------------------ public API

    def reset(self, start_ping: int = 0) -> None:
        """Restart the stream at ping ``start_ping`` (nothing before it rings, the ambient sources are playing)."""
        self._state = self._new_state(int(start_ping))

    def render_ping(self, k: int) -> PingSegment:
        """The stream's segment of ping ``k``; pings are rendered in order (the first call may start anywhere)."""
        if self._state is None:
            self.reset(k)
        if k != self._state.next_ping:
            raise ValueError(f"ping {k} out of order: the stream is at ping {self._state.next_ping}; render pings "
                             "in order or call reset(k) first")
        return self._advance(self._state)

    def segments(self, start_ping: int = 0, count: int | None = None):
        """Yield :class:`PingSegment` from ``start_ping`` on (``count`` of them, or forever)."""
        self.reset(start_ping)
        k = int(start_ping)
        while count is None or k < start_ping + count:
            yield self.render_ping(k)
            k += 1

    def window_at(self, k: int) -> np.ndarray:
        """``(M, num_samples)`` float32: the stream cut at ping ``k``'s onset, as a training scene's audio.

        Rendered from enough pings before ``k`` that every tail reaching into the window is there (the streaming
        state is left as it was).
        """
        back = int(np.ceil(self._max_rir_len() / self.period)) + 1
        st = self._new_state(max(0, k - back))
        parts = []
        while st.next_ping <= k or sum(p.shape[1] for p in parts) < self.window:
            seg = self._advance(st)
            if seg.index >= k:
                parts.append(seg.audio)
        return np.concatenate(parts, axis=1)[:, : self.window]

    def _max_rir_len(self) -> int:
        return max(h.shape[1] for h in self._position_data(0)["rirs"])

    @property
    def sweep_samples(self) -> int:
        return len(self.emitted)

    def describe(self) -> str:
        r = self.room
        moving = sum(1 for s in self.sources if s.turns)
        return (f"room {self.room_id} ({r.shape}, {np.ptp(r.floor[:, 0]):.1f} x {np.ptp(r.floor[:, 1]):.1f} x "
                f"{r.height:.1f} m, {len(r.boxes)} boxes), loop {self.loop_length:.1f} m = {self.loop_pings} pings "
                f"at {self.speed_m_s:.2f} m/s, array at {self.array_height:.2f} m, {len(self.sources)} ambient "
                f"source(s) ({moving} moving), ping every {self.period} samples ({self.ping_rate_hz:g} Hz), "
                f"gain {self.gain_db:+.1f} dB, noise {self.noise_db:.0f} dBFS")


def _conv(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``(M, len(x) + L - 1)``: signal ``(n,)`` through impulse responses ``(M, L)``."""
    from scipy.signal import oaconvolve

    return oaconvolve(np.asarray(x)[None], h, axes=1)


# --------------------------------------------------------------------------- rendering ahead


@dataclass
class RenderFailure:
    """Put on the queue instead of a segment when the background renderer fails."""

    message: str


_POOL_TRAJ: ActiveTrajectory | None = None


def _exit_with_parent(parent: int) -> None:  # pragma: no cover - runs in a pool process
    """End this process when ``parent`` is gone (a terminated renderer cannot shut its pool down)."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _pool_init(kwargs: dict, parent: int) -> None:  # pragma: no cover - runs in a pool process
    import signal

    global _POOL_TRAJ
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(parent)
    _POOL_TRAJ = ActiveTrajectory(**{**kwargs, "cache_mb": 0})


def _pool_position(k: int) -> dict:  # pragma: no cover - runs in a pool process
    return _POOL_TRAJ.position_data(k)


def _render_worker(kwargs: dict, start_ping: int, queue, stop, processes: int = 1,
                   parent: int | None = None) -> None:  # pragma: no cover - runs in a child
    """The background renderer's process: segments in order onto ``queue``; with ``processes`` > 1 a pool of that
    many processes computes the impulse responses and truth of the pings ahead (the costly part) while this one
    overlap-adds, until every loop position is cached."""
    import queue as _q
    import signal
    import time

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent stops us
    queue.cancel_join_thread()  # never hang at exit on segments nobody reads any more
    pool = None

    def stopped() -> bool:  # asked to, or the parent is gone (this process is not a daemon: it may have a pool)
        return stop.is_set() or (parent is not None and os.getppid() != parent)

    try:
        traj = ActiveTrajectory(**kwargs)
        n = traj.loop_pings
        if processes > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            pool = ProcessPoolExecutor(int(processes), mp_context=mp.get_context("spawn"), initializer=_pool_init,
                                       initargs=(kwargs, os.getpid()))
        pending: dict = {}
        traj.reset(start_ping)
        k = int(start_ping)
        while not stopped():
            t0 = time.perf_counter()
            if pool is not None:
                for j in range(k + 1, k + 1 + 2 * int(processes)):
                    if j % n not in pending and not traj.has_position(j):
                        pending[j % n] = pool.submit(_pool_position, j)
                fut = pending.pop(k % n, None)
                if fut is not None and not traj.has_position(k):
                    traj.hand_over(k, fut.result())
                if not pending and len(traj._cache) == n:  # the whole loop is cached: the pool has done its work
                    pool.shutdown(wait=False)
                    pool = None
            seg = traj.render_ping(k)
            seg.render_s = time.perf_counter() - t0  # this process's time per ping, waiting for the pool included
            k += 1
            while not stopped():
                try:
                    queue.put(seg, timeout=0.2)
                    break
                except _q.Full:
                    continue
    except BaseException as e:  # noqa: BLE001 - reported to the consumer
        try:
            queue.put(RenderFailure(f"{type(e).__name__}: {e}"), timeout=1.0)
        except Exception:
            pass
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


_ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                 "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")}


@dataclass
class BackgroundRenderer:
    """Renders an :class:`ActiveTrajectory`'s segments ahead in a separate process (spawned, one BLAS thread).

    ``kwargs`` are :class:`ActiveTrajectory`'s arguments; the child builds its own copy (the same stream: it is
    deterministic). ``queue_pings`` bounds the segments rendered ahead: the child waits when the queue is full.
    ``processes`` > 1: that many more processes compute the pings' impulse responses and truth in parallel
    during the first lap (the loop's later laps come from the cache).
    :meth:`get` returns the next :class:`PingSegment`, None when none is ready within ``timeout``, and raises
    RuntimeError with the child's message when it failed.
    """

    kwargs: dict
    start_ping: int = 0
    queue_pings: int = 64
    processes: int = 1
    _proc: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._closed = False
        self._queue = ctx.Queue(maxsize=max(1, int(self.queue_pings)))
        self._stop = ctx.Event()
        self._proc = ctx.Process(target=_render_worker, args=(self.kwargs, int(self.start_ping), self._queue,
                                                              self._stop, int(self.processes), os.getpid()),
                                 daemon=False, name="ping-renderer")  # a daemon could not start the pool
        saved = {k: os.environ.get(k) for k in _ONE_THREAD}
        os.environ.update(_ONE_THREAD)  # the child inherits the environment at spawn
        try:
            self._proc.start()
            import atexit

            atexit.register(self.close)  # before multiprocessing joins its non-daemon children at exit
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def get(self, timeout: float | None = 0.0) -> PingSegment | None:
        import queue as _q

        try:
            item = self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait()
        except _q.Empty:
            if not self._proc.is_alive() and self._proc.exitcode not in (0, None):
                raise RuntimeError(f"the ping renderer exited with code {self._proc.exitcode}") from None
            return None
        if isinstance(item, RenderFailure):
            raise RuntimeError(f"the ping renderer failed: {item.message}")
        return item

    def close(self) -> None:
        """Stop the child (it notices within 0.2 s, or is terminated) without reading what it left queued."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._proc.join(timeout=5.0)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=2.0)
        self._queue.close()
        self._queue.cancel_join_thread()
