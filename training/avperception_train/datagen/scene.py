"""One synthetic scene: sample it from seeds, simulate its audio, compute its ground truth.

Seeding (numpy ``SeedSequence``, never worker ids):

* room ``r`` (geometry, materials, boxes, split): ``SeedSequence(seed, spawn_key=(1, r))``
* scene ``i`` (pose, sources, levels, noise):     ``SeedSequence(seed, spawn_key=(2, i))``

Scene ``i`` is in room ``i // room.scenes_per_room``. The same (config, seed,
index) gives the same bytes on any worker count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .config import SHAPES, DatagenConfig
from .geometry import Box, RoomGeometry, sample_floor_plan, sample_free_point, box_fits, yaw_matrix

SPLITS = ("train", "val", "test")
MAX_FLOOR_VERTICES = 8  # the T shape has the most corners
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def room_of(cfg: DatagenConfig, index: int) -> int:
    return int(index) // cfg.room.scenes_per_room


def room_split(cfg: DatagenConfig, room_id: int) -> int:
    """Split code (0 train, 1 val, 2 test) of a room.

    A golden-ratio sequence with a seed-dependent offset keeps the fractions
    close to the configured ones for any number of rooms, and a room's split
    never changes when the dataset grows.
    """
    offset = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(3,))).random()
    u = (offset + room_id * _GOLDEN) % 1.0
    if u < cfg.split.train:
        return 0
    if u < cfg.split.train + cfg.split.val:
        return 1
    return 2


@dataclass
class SourceSpec:
    position: np.ndarray  # world (3,)
    kind: str
    level_db: float  # RMS dBFS at 1 m


@dataclass
class SceneSpec:
    """Everything random about a scene, drawn before any simulation."""

    index: int
    room_id: int
    split: int
    room: RoomGeometry
    robot_xy: np.ndarray
    array_height: float
    yaw: float
    active: bool
    gain_db: float
    noise_db: float
    sources: list[SourceSpec] = field(default_factory=list)
    seed: int = 0  # 63-bit seed for the simulators' own generators (signals, noise, ray tracer)
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))  # world m/s during the window (horizontal)

    @property
    def origin(self) -> np.ndarray:
        """Array-frame origin in the world."""
        return np.array([self.robot_xy[0], self.robot_xy[1], self.array_height])

    @property
    def rotation(self) -> np.ndarray:
        """Array frame -> world."""
        return yaw_matrix(self.yaw)

    def to_world(self, p_array: np.ndarray) -> np.ndarray:
        return np.asarray(p_array) @ self.rotation.T + self.origin

    def to_array(self, p_world: np.ndarray) -> np.ndarray:
        return (np.asarray(p_world) - self.origin) @ self.rotation


def _choice(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def robot_clearance(cfg: DatagenConfig, mic_positions: np.ndarray) -> float:
    """Horizontal clearance the robot needs: the configured one, or more for a wide array."""
    pts = np.vstack([mic_positions, np.asarray(cfg.active.speaker_position)[None]])
    return max(cfg.robot.clearance_m, float(np.max(np.linalg.norm(pts[:, :2], axis=1))) + 0.05)


def sample_room(cfg: DatagenConfig, room_id: int, robot_clear: float) -> RoomGeometry:
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(1, int(room_id))))
    rc = cfg.room
    names = [s for s in SHAPES if float(rc.shapes.get(s, 0.0)) > 0]
    w = np.array([float(rc.shapes[s]) for s in names])
    shape = names[int(rng.choice(len(names), p=w / w.sum()))]
    floor = sample_floor_plan(shape, rng, rc.size_m, rc.min_width_m)
    height = float(rng.uniform(*rc.height_m))
    m = rc.materials
    room = RoomGeometry(floor, height, shape, _choice(rng, m.floor), _choice(rng, m.ceiling),
                        [_choice(rng, m.wall) for _ in range(len(floor))])
    bc = cfg.boxes
    n = int(rng.integers(bc.count[0], bc.count[1] + 1))
    lo, hi = room.floor.min(0), room.floor.max(0)
    for _ in range(n):
        for _try in range(60):
            size = tuple(float(v) for v in rng.uniform(*bc.size_m, size=2))
            h = float(rng.uniform(*bc.height_m))
            yaw = 0.0 if rng.random() < bc.axis_aligned_probability else float(rng.uniform(0, np.pi))
            centre = tuple(float(v) for v in rng.uniform(lo, hi))
            box = Box(centre, size, h, yaw, _choice(rng, m.obstacle))
            if box_fits(room, box, bc.wall_clearance_m, bc.gap_m):
                room.boxes.append(box)
                break
    # the robot must still find a place: drop boxes (last first) until it does
    probe = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(4, int(room_id))))
    while room.boxes and sample_free_point(room, probe, robot_clear, (0.5, 0.5), tries=640) is None:
        room.boxes.pop()
    return room


def sample_scene(cfg: DatagenConfig, index: int, mic_positions: np.ndarray) -> SceneSpec:
    """Draw scene ``index``: its room, the robot pose, the chirp switch, ambient sources, levels."""
    room_id = room_of(cfg, index)
    clear = robot_clearance(cfg, mic_positions)
    room = sample_room(cfg, room_id, clear)
    ss = np.random.SeedSequence(cfg.seed, spawn_key=(2, int(index)))
    rng = np.random.default_rng(ss)
    sim_seed = int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))
    z = cfg.robot.array_height_m
    zmin = max(z[0], float(-np.min(mic_positions[:, 2])) + 0.05, -cfg.active.speaker_position[2] + 0.05)
    zmax = min(z[1], room.height - 0.1 - max(0.0, float(np.max(mic_positions[:, 2]))))
    zr = (zmin, max(zmin, zmax))
    p = None
    # near a wall or box: decided on a stream of its own, so that the other scenes stay as they were
    near = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(5, int(index)))).random()
    if near < cfg.robot.near_probability:
        p = sample_free_point(room, rng, clear, zr, max_clearance=max(cfg.robot.near_max_m, clear + 0.05))
    if p is None:
        p = sample_free_point(room, rng, clear, zr)
    if p is None:  # pragma: no cover - sample_room guarantees a place
        raise RuntimeError(f"scene {index}: no free place for the robot in room {room_id}")
    yaw = float(rng.uniform(-np.pi, np.pi))
    active = bool(rng.random() < cfg.active.probability)
    gain_db = float(rng.uniform(*cfg.audio.gain_db))
    noise_db = float(rng.uniform(*cfg.noise.level_db))
    spec = SceneSpec(index, room_id, room_split(cfg, room_id), room, p[:2].copy(), float(p[2]), yaw, active,
                     gain_db, noise_db, seed=sim_seed)
    spec.velocity = sample_velocity(cfg, spec, mic_positions)
    pc = cfg.passive
    k = int(rng.integers(pc.num_sources[0], pc.num_sources[1] + 1))
    for _ in range(k):
        q = sample_free_point(room, rng, pc.wall_clearance_m, (0.2, room.height - 0.2),
                              avoid=[(spec.origin, pc.min_distance_m)])
        if q is None:
            continue
        spec.sources.append(SourceSpec(q, _choice(rng, pc.signals), float(rng.uniform(*pc.level_db))))
    return spec


def sample_velocity(cfg: DatagenConfig, spec: SceneSpec, mic_positions: np.ndarray, tries: int = 16) -> np.ndarray:
    """The robot's velocity ``(3,)`` (world, m/s, horizontal) during scene ``spec``'s window: a speed uniform in
    ``robot.speed_mps`` in a uniform direction, the first of ``tries`` directions that keeps the microphones and
    the speaker in the air (5 cm from walls and boxes) to the window's end; zero if none does. Drawn on a stream
    of its own, so that every other draw of the scene stays as it is without motion."""
    lo, hi = cfg.robot.speed_mps
    if hi <= 0:
        return np.zeros(3)
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(6, int(spec.index))))
    speed = float(rng.uniform(lo, hi))
    pts = np.vstack([mic_positions, np.asarray(cfg.active.speaker_position, dtype=np.float64)[None]])
    span = cfg.audio.num_samples / cfg.audio.sample_rate
    for a in rng.uniform(-np.pi, np.pi, size=tries):
        v = speed * np.array([np.cos(a), np.sin(a), 0.0])
        path = [spec.to_world(pts) + v * t for t in np.linspace(0.0, span, 5)]
        ends = np.vstack(path)
        if np.all(spec.room.contains(ends)) and np.all(spec.room.clearance_2d(ends[:, :2]) >= 0.05):
            return v
    return np.zeros(3)


def motion_poses(cfg: DatagenConfig, spec: SceneSpec) -> tuple[np.ndarray, np.ndarray]:
    """Where the moving robot's recording is simulated: ``times (K,)`` (samples, from 0 to the window's last)
    and ``offsets (K, 3)`` (world m from the pose at sample 0), K poses at most ``robot.motion_step_m`` apart
    (one, at sample 0, for a robot standing still)."""
    fs, n = cfg.audio.sample_rate, cfg.audio.num_samples
    travel = float(np.linalg.norm(spec.velocity)) * (n - 1) / fs
    k = 1 + int(np.ceil(travel / cfg.robot.motion_step_m - 1e-9)) if travel > 0 else 1
    times = np.linspace(0.0, n - 1, k) if k > 1 else np.zeros(1)
    return times, times[:, None] / fs * np.asarray(spec.velocity, dtype=np.float64)[None]


def crossfade_weights(times: np.ndarray, num_samples: int) -> np.ndarray:
    """``(K, num_samples)`` weights that interpolate linearly in time between recordings made at ``times``
    (samples, increasing, the first 0 and the last ``num_samples - 1``); each sample's weights sum to 1."""
    t = np.arange(num_samples, dtype=np.float64)
    return np.stack([np.interp(t, times, np.eye(len(times))[k]) for k in range(len(times))])


# --------------------------------------------------------------------------- rendering


def grids(cfg: DatagenConfig):
    """The panorama, energy and (optional) pinhole DirectionGrids of a config."""
    from avperception.dsp.grid import equirectangular, pinhole

    pano = equirectangular(-180.0, 180.0, cfg.panorama.el_min_deg, cfg.panorama.el_max_deg,
                           cfg.panorama.resolution_deg)
    energy = equirectangular(-180.0, 180.0, -90.0, 90.0, cfg.energy.resolution_deg)
    ph = None
    if cfg.pinhole.enabled:
        pc = cfg.pinhole
        ph = pinhole(pc.width, pc.height, pc.fx, pc.fy, pc.cx, pc.cy, tuple(pc.rpy_deg))
    return pano, energy, ph


def simulate_audio(cfg: DatagenConfig, spec: SceneSpec, mic_positions: np.ndarray, *, noise: bool = True,
                   sources: bool = True, max_order: int | None = None, ping: int = 0) -> np.ndarray:
    """``(M, num_samples)`` float64 recording of the scene (before clipping and dtype conversion).

    ``noise``/``sources`` switch off sensor noise / ambient sources (for tests);
    ``max_order`` overrides the image order (0 = direct path only). ``ping``: another ping of the same scene (the
    same room, pose, sweep and sources' places; its own stretch of each ambient signal and its own sensor noise).

    A moving robot (``spec.velocity``) is heard from each of :func:`motion_poses`' poses with the same signals
    (the sweep from where the speaker was at its onset, the microphones where they are at that pose's time), and
    the recordings are cross-faded in time (:func:`crossfade_weights`): each echo comes in as the array hears
    it where it is when the echo arrives. The Doppler shift within one pose (0.3 % at 1 m/s) is not modelled.
    """
    return simulate_pings(cfg, spec, mic_positions, (ping,), noise=noise, sources=sources, max_order=max_order)[0]


def simulate_pings(cfg: DatagenConfig, spec: SceneSpec, mic_positions: np.ndarray, pings, *, noise: bool = True,
                   sources: bool = True, max_order: int | None = None) -> list[np.ndarray]:
    """:func:`simulate_audio` of each ping in ``pings`` of the scene, the impulse responses computed once for all
    (each ping draws its ambient stretches and noise from ``SeedSequence(spec.seed, spawn_key=(7[, ping]))``)."""
    from avperception.sim.room import make_signal

    from .acoustics import RoomAcoustics, distance_gain, render_active, render_passive, sweep

    fs = cfg.audio.sample_rate
    n = cfg.audio.num_samples
    ac = cfg.acoustics
    times, offsets = motion_poses(cfg, spec)
    pts = []
    if spec.active:
        pts.append(spec.to_world(np.asarray(cfg.active.speaker_position, dtype=np.float64)))
    amb = spec.sources if sources else []
    pts += [s.position for s in amb]
    if pts:
        poses = []  # per pose, per source: (M, L) impulse responses
        for off in offsets:
            sim = RoomAcoustics.for_config(cfg, spec.room, spec.to_world(mic_positions) + off, np.array(pts),
                                           spec.seed, n / fs + 0.05, max_order)
            poses.append(sim.rirs())
        # one length per source over the poses, so that every pose hears the same stretch of each signal
        lengths = [max(hs[j].shape[1] for hs in poses) for j in range(len(pts))]
        poses = [[np.pad(h, ((0, 0), (0, L - h.shape[1]))) for h, L in zip(hs, lengths)] for hs in poses]
        k0 = distance_gain(fs, ac.speed_of_sound)
        j = 0
        emitted = None
        if spec.active:
            a = cfg.active
            emitted = sweep(fs, a.f_start_hz, a.f_end_hz, a.duration_s, a.sweep, a.fade) * 10 ** (a.level_db / 20) / k0
            j = 1
        weights = crossfade_weights(times, n)
    recordings = []
    for ping in pings:
        rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(7,) + ((int(ping),) if ping else ())))
        out = np.zeros((len(mic_positions), n))
        if pts:
            signals = []
            for s, L in zip(amb, lengths[j:]):
                extra = int(0.25 * fs)
                sig = make_signal(s.kind, n + L + extra, fs, rng)
                off = int(rng.integers(0, extra + 1))
                sig = sig[off:]
                signals.append(sig / (np.sqrt(np.mean(sig**2)) + 1e-12) * 10 ** (s.level_db / 20) / k0)
            for w, hs in zip(weights, poses):
                rec = render_active(hs[0], emitted, n) if emitted is not None else np.zeros_like(out)
                for sig, h in zip(signals, hs[j:]):
                    rec += render_passive(h, sig, n)
                out += w[None] * rec  # a weight of exactly 1 for a robot standing still
        out *= 10 ** (spec.gain_db / 20)
        if noise:
            out += rng.standard_normal(out.shape) * 10 ** (spec.noise_db / 20)
        recordings.append(out)
    return recordings


def source_table(spec: SceneSpec) -> dict[str, np.ndarray]:
    """Ambient sources in the array frame: directions, azimuth/elevation, distances, levels at the array."""
    from avperception.dsp.grid import vector_to_azel

    k = len(spec.sources)
    pos_w = np.array([s.position for s in spec.sources]).reshape(k, 3)
    rel = spec.to_array(pos_w).reshape(k, 3)
    dist = np.linalg.norm(rel, axis=1)
    dirs = rel / np.maximum(dist[:, None], 1e-12)
    az, el = vector_to_azel(dirs) if k else (np.zeros(0), np.zeros(0))
    level = np.array([s.level_db for s in spec.sources]) + spec.gain_db - 20 * np.log10(np.maximum(dist, 1e-3))
    return {"directions": dirs, "azel_deg": np.c_[az, el].reshape(k, 2), "distance": dist, "positions": pos_w,
            "level_db": np.array([s.level_db for s in spec.sources]), "array_level_db": level,
            "kind": np.array([SIGNAL_CODES[s.kind] for s in spec.sources], dtype=np.int8)}


SIGNAL_CODES = {"noise": 0, "babble": 1, "harmonic": 2, "chirps": 3}


def material_table(cfg: DatagenConfig) -> list[str]:
    """All material names a config can draw, sorted: the shards store indices into this list."""
    m = cfg.room.materials
    return sorted(set(m.floor) | set(m.wall) | set(m.ceiling) | set(m.obstacle))


def scene_room(arrays: dict, i: int, materials: list[str]) -> tuple[RoomGeometry, np.ndarray, np.ndarray] | None:
    """Scene ``i`` of a shard's ``arrays`` rebuilt from what it stores: ``(room, origin, rotation)`` (the array's
    frame at the sweep's onset, as its depth was cast), with the names of ``materials`` (:func:`material_table` of
    the dataset's config); None for a scene that stores no room (an imported recording)."""
    n = int(arrays["num_floor_vertices"][i])
    if n < 3 or int(arrays["wall_materials"][i][0]) < 0:
        return None
    boxes = [Box((float(b[0]), float(b[1])), (float(b[2]), float(b[3])), float(b[4]), float(b[5]), materials[int(m)])
             for b, m in zip(arrays["boxes"][i][: int(arrays["num_boxes"][i])], arrays["box_materials"][i])]
    room = RoomGeometry(np.asarray(arrays["floor_polygon"][i][:n], dtype=np.float64), float(arrays["room_height"][i]),
                        SHAPES[int(arrays["room_shape"][i])], materials[int(arrays["floor_material"][i])],
                        materials[int(arrays["ceiling_material"][i])],
                        [materials[int(m)] for m in arrays["wall_materials"][i][:n]], boxes)
    x, y, z, yaw = (float(v) for v in arrays["robot_pose"][i])
    return room, np.array([x, y, z]), yaw_matrix(yaw)


def echo_free_materials(cfg: DatagenConfig) -> set[str]:
    """The materials of ``cfg`` that return no echo of its sweep: at least
    :data:`~.acoustics.ECHO_FREE_ABSORPTION` of the energy absorbed in every octave band the sweep reaches."""
    from .acoustics import ECHO_FREE_ABSORPTION, band_absorption

    lo, hi = sorted((cfg.active.f_start_hz, cfg.active.f_end_hz))
    return {m for m in material_table(cfg)
            if band_absorption(m, lo, hi, cfg.audio.sample_rate) >= ECHO_FREE_ABSORPTION}


def silent_view(cfg: DatagenConfig, room: RoomGeometry, origin: np.ndarray, rotation: np.ndarray,
                backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """``(echo_free, unreflected)``, each ``(H, W)`` bool over the panorama pixels (``cfg``'s grid) seen from
    ``origin`` / ``rotation``: those whose surface returns no echo of the sweep (:func:`echo_free_materials`), and
    those whose surface has no point that reflects a sound from ``origin`` straight back
    (:func:`~.geometry.specular_point_on`: a box's side seen from above its top or past its edge, a wall past a
    corner), to which the simulator's image-source model gives no first-order echo. A sonar cannot hear the first;
    the second it hears at most through later reflections. Either way their depth is a guess."""
    from .geometry import specular_point_on
    from .groundtruth import surface_view

    pano = grids(cfg)[0]
    silent = echo_free_materials(cfg)
    surfaces = room.surfaces(box_bottoms=True)
    hit = surface_view(room, origin, rotation, pano.vectors, pano.shape, backend)  # -1: nothing hit
    quiet = np.array([s.material in silent for s in surfaces] + [False])
    unreflected = np.array([not specular_point_on(s.corners, origin) for s in surfaces] + [False])
    return quiet[hit], unreflected[hit]


def silent_pixels(cfg: DatagenConfig, arrays: dict, keep, backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """``(echo_free, unreflected)``, each ``(K, H, W)`` bool: :func:`silent_view` of the scenes ``keep`` of a shard's
    ``arrays``, rebuilt from what they store (:func:`scene_room`); all False for a scene that stores no room."""
    names = material_table(cfg)
    out = np.zeros((2, len(keep), *grids(cfg)[0].shape), dtype=bool)
    for k, i in enumerate(keep):
        scene = scene_room(arrays, int(i), names)
        if scene is not None:
            out[:, k] = silent_view(cfg, *scene, backend=backend)
    return out[0], out[1]


def scene_audio(cfg: DatagenConfig, spec: SceneSpec, mic_positions: np.ndarray) -> np.ndarray:
    """``(M, num_samples)`` float64 recording of the scene as the array delivers it (clipped per ``audio.clip``);
    with ``audio.average_pings`` above 1 the mean of that many pings of it (:func:`simulate_pings`),
    taken by the node's :class:`~avperception.sonar.stack.PingStack` as a robot standing still."""
    from avperception.sonar.stack import PingStack

    k = cfg.audio.average_pings
    pings = [np.clip(x, -1.0, 1.0) if cfg.audio.clip else x for x in simulate_pings(cfg, spec, mic_positions, range(k))]
    if k == 1:
        return pings[0]
    stack = PingStack(k, max_age_s=float(k), max_motion_m=0.0, max_turn_deg=0.0, needs_pose=False)
    for ping, x in enumerate(pings):
        mean, _ = stack.push(x, stamp=float(ping))
    return mean.astype(np.float64)


def render_scene(cfg: DatagenConfig, spec: SceneSpec, mic_positions: np.ndarray, backend: str = "auto") -> dict:
    """Simulate and annotate one scene: a dict of per-scene arrays (see :mod:`.shards` for the schema)."""
    from .groundtruth import RayCaster, energy_target, occupancy, render_view

    audio = scene_audio(cfg, spec, mic_positions)
    if cfg.audio.dtype == "int16":
        audio = np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)
    else:
        audio = audio.astype(np.float32)

    pano, egrid, ph = grids(cfg)
    caster = RayCaster.for_room(spec.room, backend)
    depth, sem = render_view(caster, spec.origin, spec.rotation, pano.vectors, pano.shape)
    vox = occupancy(spec.room, spec.origin, spec.rotation, cfg.voxels.center_m, cfg.voxels.extent_m,
                    cfg.voxels.resolution)
    src = source_table(spec)
    if len(spec.sources):
        lv = src["array_level_db"]
        weights = 10 ** ((lv - lv.max()) / 10)
    else:
        weights = np.zeros(0)
    energy = energy_target(egrid.vectors, egrid.shape, src["directions"], weights, cfg.energy.sigma_deg)

    mat = {m: i for i, m in enumerate(material_table(cfg))}
    out = {
        "scene_index": np.int64(spec.index),
        "room_id": np.int64(spec.room_id),
        "split": np.uint8(spec.split),
        "active": np.bool_(spec.active),
        "audio": audio,
        "robot_pose": np.array([spec.robot_xy[0], spec.robot_xy[1], spec.array_height, spec.yaw]),
        "gain_db": np.float32(spec.gain_db),
        "noise_db": np.float32(spec.noise_db),
        "depth": depth,
        "semantic": sem,
        "energy": energy,
        "voxels": np.packbits(vox.ravel()),
        "voxel_known": np.packbits(np.ones(vox.size, dtype=bool)),
        "num_sources": np.int64(len(spec.sources)),
        "source_dirs": src["directions"].astype(np.float32),
        "source_azel_deg": src["azel_deg"].astype(np.float32),
        "source_distance": src["distance"].astype(np.float32),
        "source_positions": src["positions"].astype(np.float32),
        "source_level_db": src["level_db"].astype(np.float32),
        "source_kind": src["kind"],
        "room_shape": np.int8(SHAPES.index(spec.room.shape)),
        "room_height": np.float32(spec.room.height),
        "floor_polygon": spec.room.floor.astype(np.float32),
        "boxes": np.array([b.as_array() for b in spec.room.boxes], dtype=np.float32).reshape(-1, 6),
        "floor_material": np.int16(mat[spec.room.floor_material]),
        "ceiling_material": np.int16(mat[spec.room.ceiling_material]),
        "wall_materials": np.array([mat[m] for m in spec.room.wall_materials], dtype=np.int16),
        "box_materials": np.array([mat[b.material] for b in spec.room.boxes], dtype=np.int16),
        "stamp": np.float64(np.nan),
        "has_depth": np.bool_(True),
        "has_semantic": np.bool_(True),
        "has_voxels": np.bool_(True),
        "has_energy": np.bool_(True),
    }
    if cfg.robot.speed_mps[1] > 0:
        out["robot_velocity"] = np.asarray(spec.velocity, dtype=np.float32)
    if ph is not None:
        rng_d, lab = render_view(caster, spec.origin, spec.rotation, ph.vectors, ph.shape)
        axis = ph.meta["R_cam_to_array"][:, 2]
        out["pinhole_depth"] = (rng_d * (ph.vectors @ axis).reshape(ph.shape)).astype(np.float32)
        out["pinhole_semantic"] = lab
    return out


def generate_scene(cfg: DatagenConfig, index: int, array=None, backend: str = "auto") -> dict:
    """Sample and render scene ``index`` of the dataset ``cfg`` describes."""
    array = array if array is not None else cfg.array_geometry()
    spec = sample_scene(cfg, index, array.positions)
    return render_scene(cfg, spec, array.positions, backend)
