"""Data-engine configuration: typed defaults, YAML overrides, strict validation.

The dataclasses below are the one source of truth for every setting; the
shipped ``datagen.yaml`` (next to this file) spells out the same defaults with
comments, and a test keeps the two equal. A YAML file only needs the keys it
changes; unknown keys are an error that lists the valid ones.

Units: metres, seconds, hertz, degrees, dB. Ranges are ``[low, high]`` pairs
sampled uniformly (integers inclusive).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from avperception.config import DEFAULT_ARRAY, MAX_AVERAGE_PINGS, from_dict
from avperception.constants import SPEED_OF_SOUND
from avperception.sonar.emitter import DEFAULT_SPEAKER, DEFAULT_SWEEP

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "datagen.yaml"
# named distributions of scenes: standard is the shipped datagen.yaml (the dataclass defaults); any other is a
# preset file beside it (datagen_NAME.yaml) whose keys override those defaults, under a user config and --set
DISTRIBUTIONS = ("standard", "wide")

SHAPES = ("shoebox", "l_shape", "t_shape", "corridor")
SIGNALS = ("noise", "babble", "harmonic", "chirps")


class DatagenConfigError(ValueError):
    """A data-engine configuration value is missing, malformed or inconsistent."""


def _range(name: str, r: tuple, lo: float | None = None, hi: float | None = None) -> None:
    if len(r) != 2 or r[0] > r[1]:
        raise DatagenConfigError(f"{name} must be [low, high] with low <= high, got {list(r)}")
    if lo is not None and r[0] < lo:
        raise DatagenConfigError(f"{name} must be >= {lo}, got {list(r)}")
    if hi is not None and r[1] > hi:
        raise DatagenConfigError(f"{name} must be <= {hi}, got {list(r)}")


@dataclass(frozen=True)
class AudioConfig:
    """What the array records: ``num_samples`` at ``sample_rate`` per scene.

    Sample 0 is the onset of the chirp emission (active scenes). 2048 samples at
    16 kHz = 128 ms: one runtime analysis frame, echoes up to ~20 m away.
    """

    sample_rate: int = 16000
    num_samples: int = 2048
    dtype: str = "float32"  # float32 | int16 (full scale = 1.0)
    gain_db: tuple[float, float] = (-3.0, 3.0)  # random overall level per scene
    clip: bool = True  # clip to [-1, 1] like a real ADC
    # each scene heard as the mean of this many pings of it (a robot standing still with sonar.average_pings)
    average_pings: int = 1

    def validate(self) -> None:
        if not 4000 <= self.sample_rate <= 192000:
            raise DatagenConfigError(f"audio.sample_rate must be in [4000, 192000], got {self.sample_rate}")
        if not 256 <= self.num_samples <= 1 << 20:
            raise DatagenConfigError(f"audio.num_samples must be in [256, 1048576], got {self.num_samples}")
        if self.dtype not in ("float32", "int16"):
            raise DatagenConfigError(f"audio.dtype must be float32 or int16, got {self.dtype!r}")
        _range("audio.gain_db", self.gain_db)
        if not 1 <= self.average_pings <= MAX_AVERAGE_PINGS:
            raise DatagenConfigError(f"audio.average_pings must be in [1, {MAX_AVERAGE_PINGS}], got "
                                     f"{self.average_pings}")


@dataclass(frozen=True)
class ActiveConfig:
    """The robot's own sweep, emitted by a speaker next to the array."""

    probability: float = 1.0  # fraction of scenes with the chirp on
    # the sweep's defaults are the runtime's (avperception.sonar.emitter.DEFAULT_SWEEP): 1-7 kHz linear in 32 ms,
    # four times the 8 ms sweep's energy at the same peak level (6 dB over ambient)
    sweep: str = DEFAULT_SWEEP["kind"]  # linear | exponential
    f_start_hz: float = DEFAULT_SWEEP["f0_hz"]
    f_end_hz: float = DEFAULT_SWEEP["f1_hz"]
    duration_s: float = DEFAULT_SWEEP["duration_s"]
    fade: float = DEFAULT_SWEEP["fade"]  # Tukey window taper fraction
    level_db: float = -30.0  # peak level in dBFS at 1 m from the speaker
    speaker_position: tuple[float, float, float] = DEFAULT_SPEAKER  # array frame, metres

    def validate(self, fs: int) -> None:
        if not 0 <= self.probability <= 1:
            raise DatagenConfigError("active.probability must be in [0, 1]")
        if self.sweep not in ("linear", "exponential"):
            raise DatagenConfigError(f"active.sweep must be linear or exponential, got {self.sweep!r}")
        if not 0 < self.f_start_hz < fs / 2 or not 0 < self.f_end_hz <= fs / 2:
            raise DatagenConfigError(f"active.f_start_hz / f_end_hz must be in (0, {fs / 2}] (Nyquist)")
        if not 0 < self.duration_s <= 1.0:
            raise DatagenConfigError("active.duration_s must be in (0, 1]")
        if not 0 <= self.fade <= 1:
            raise DatagenConfigError("active.fade must be in [0, 1]")
        if len(self.speaker_position) != 3:
            raise DatagenConfigError("active.speaker_position must be [x, y, z] in the array frame")


@dataclass(frozen=True)
class PassiveConfig:
    """Ambient sound sources at random places in the room."""

    num_sources: tuple[int, int] = (0, 3)
    signals: tuple[str, ...] = SIGNALS
    level_db: tuple[float, float] = (-45.0, -25.0)  # RMS dBFS at 1 m from the source
    min_distance_m: float = 0.5  # from the array
    wall_clearance_m: float = 0.2

    def validate(self) -> None:
        _range("passive.num_sources", self.num_sources, 0, 16)
        if not self.signals:
            raise DatagenConfigError("passive.signals must list at least one signal kind")
        bad = [s for s in self.signals if s not in SIGNALS]
        if bad:
            raise DatagenConfigError(f"passive.signals: unknown {bad}; valid: {list(SIGNALS)}")
        _range("passive.level_db", self.level_db)


@dataclass(frozen=True)
class NoiseConfig:
    """Sensor self-noise: white, independent per microphone."""

    level_db: tuple[float, float] = (-75.0, -60.0)  # RMS dBFS

    def validate(self) -> None:
        _range("noise.level_db", self.level_db)


@dataclass(frozen=True)
class MaterialsConfig:
    """pyroomacoustics material names (octave-band absorption), drawn per surface."""

    floor: tuple[str, ...] = ("concrete_floor", "linoleum_on_concrete", "marble_floor", "carpet_cotton",
                              "carpet_tufted_9.5mm", "stage_floor", "audience_floor")
    wall: tuple[str, ...] = ("plasterboard", "brickwork", "rough_concrete", "smooth_brickwork_flush_pointing",
                             "ceramic_tiles", "wooden_lining", "glass_window", "curtains_cotton_0.5",
                             "gypsum_board", "panel_fabric_covered_6pcf")
    ceiling: tuple[str, ...] = ("ceiling_plasterboard", "ceiling_fissured_tile", "ceiling_perforated_gypsum_board",
                                "ceiling_metal_panel", "rough_concrete", "plasterboard")
    obstacle: tuple[str, ...] = ("wooden_door", "plywood_thin", "wood_16mm", "chairs_medium_upholstered",
                                 "hard_surface", "curtains_velvet")
    scattering: float = 0.1  # used by the ray tracer

    def validate(self) -> None:
        from pyroomacoustics.parameters import materials_data

        known = {n for cat in materials_data["absorption"].values() for n in cat}
        for k in ("floor", "wall", "ceiling", "obstacle"):
            names = getattr(self, k)
            if not names:
                raise DatagenConfigError(f"room.materials.{k} must list at least one material")
            bad = [n for n in names if n not in known]
            if bad:
                raise DatagenConfigError(f"room.materials.{k}: unknown pyroomacoustics materials {bad}; "
                                         f"known: {sorted(known)}")
        if not 0 <= self.scattering <= 1:
            raise DatagenConfigError("room.materials.scattering must be in [0, 1]")


@dataclass(frozen=True)
class RoomConfig:
    """Room geometry: floor plans extruded to a height."""

    shapes: Mapping[str, float] = field(default_factory=lambda: {"shoebox": 0.5, "l_shape": 0.3, "t_shape": 0.2})
    size_m: tuple[float, float] = (3.0, 8.0)  # bounding-box side lengths
    height_m: tuple[float, float] = (2.4, 3.5)
    min_width_m: float = 1.5  # narrowest corridor / arm of a polygonal room
    scenes_per_room: int = 4  # consecutive scenes share one room (different poses and sources)
    materials: MaterialsConfig = field(default_factory=MaterialsConfig)

    def validate(self) -> None:
        if not self.shapes:
            raise DatagenConfigError("room.shapes needs at least one shape with a weight")
        bad = [s for s in self.shapes if s not in SHAPES]
        if bad:
            raise DatagenConfigError(f"room.shapes: unknown {bad}; valid: {list(SHAPES)}")
        if any(float(w) < 0 for w in self.shapes.values()) or sum(float(w) for w in self.shapes.values()) <= 0:
            raise DatagenConfigError("room.shapes weights must be >= 0 and not all zero")
        _range("room.size_m", self.size_m, 1.0, 50.0)
        _range("room.height_m", self.height_m, 1.5, 20.0)
        if not 0.8 <= self.min_width_m <= self.size_m[0] / 1.5:
            raise DatagenConfigError("room.min_width_m must be >= 0.8 and leave room in the smallest room")
        if self.scenes_per_room < 1:
            raise DatagenConfigError("room.scenes_per_room must be >= 1")
        self.materials.validate()


@dataclass(frozen=True)
class BoxesConfig:
    """Furniture-like boxes standing on the floor (acoustic walls and ground truth)."""

    count: tuple[int, int] = (0, 3)
    size_m: tuple[float, float] = (0.3, 1.5)  # footprint side lengths
    height_m: tuple[float, float] = (0.4, 1.8)
    axis_aligned_probability: float = 0.5  # else a random yaw
    wall_clearance_m: float = 0.1
    gap_m: float = 0.2  # between boxes

    def validate(self) -> None:
        _range("boxes.count", self.count, 0, 12)
        _range("boxes.size_m", self.size_m, 0.05)
        _range("boxes.height_m", self.height_m, 0.05)
        if not 0 <= self.axis_aligned_probability <= 1:
            raise DatagenConfigError("boxes.axis_aligned_probability must be in [0, 1]")
        if self.wall_clearance_m < 0.02 or self.gap_m < 0.02:
            raise DatagenConfigError("boxes.wall_clearance_m and boxes.gap_m must be >= 0.02 "
                                     "(touching surfaces confuse the acoustic simulator)")


@dataclass(frozen=True)
class RobotConfig:
    """Robot pose: array-frame origin at (x, y, array height), heading yaw."""

    array_height_m: tuple[float, float] = (0.3, 1.2)
    clearance_m: float = 0.35  # from walls and boxes (robot footprint radius)
    near_probability: float = 0.0  # share of scenes placed close to a wall or box ...
    near_max_m: float = 0.6  # ... at most this far from the nearest one (and at least clearance_m)
    speed_mps: tuple[float, float] = (0.0, 0.0)  # the robot moving straight during the window (0: standing)
    motion_step_m: float = 0.01  # a moving robot's recording is simulated at poses this far apart

    def validate(self) -> None:
        _range("robot.array_height_m", self.array_height_m, 0.05)
        if self.clearance_m < 0.05:
            raise DatagenConfigError("robot.clearance_m must be >= 0.05")
        if not 0 <= self.near_probability <= 1:
            raise DatagenConfigError("robot.near_probability must be in [0, 1]")
        if self.near_max_m <= self.clearance_m:
            raise DatagenConfigError("robot.near_max_m must be greater than robot.clearance_m")
        _range("robot.speed_mps", self.speed_mps, 0.0, 5.0)
        if not 0.001 <= self.motion_step_m <= 0.1:
            raise DatagenConfigError(f"robot.motion_step_m must be in [0.001, 0.1], got {self.motion_step_m}")


@dataclass(frozen=True)
class AcousticsConfig:
    """pyroomacoustics: image-source method, optionally hybrid with its ray tracer."""

    speed_of_sound: float = SPEED_OF_SOUND
    max_order_shoebox: int = 10  # image order for empty rectangular rooms (fast path)
    max_order: int = 3  # image order for polygonal rooms and rooms with boxes
    air_absorption: bool = True
    ray_tracing: bool = False  # hybrid ISM + ray tracing (reverberant tail; slower)
    rt_num_rays: int = 5000
    rt_receiver_radius_m: float = 0.5
    edge_diffraction: bool = False  # add the sweep's first-order diffraction at box edges and outer corners

    def validate(self) -> None:
        if not 300 <= self.speed_of_sound <= 400:
            raise DatagenConfigError("acoustics.speed_of_sound must be in [300, 400] m/s")
        if not 0 <= self.max_order_shoebox <= 40 or not 0 <= self.max_order <= 10:
            raise DatagenConfigError("acoustics.max_order_shoebox must be in [0, 40] and max_order in [0, 10]")
        if self.rt_num_rays < 100 or self.rt_receiver_radius_m <= 0:
            raise DatagenConfigError("acoustics.rt_num_rays must be >= 100 and rt_receiver_radius_m > 0")


@dataclass(frozen=True)
class PanoramaConfig:
    """Equirectangular depth/semantic panoramas (avperception.dsp.grid.equirectangular).

    3 degrees gives 60 x 120, the same grid as the runtime's default beamforming
    map, so depth, semantics and energy line up pixel for pixel.
    """

    resolution_deg: float = 3.0
    el_min_deg: float = -90.0
    el_max_deg: float = 90.0

    def validate(self) -> None:
        if not 0.5 <= self.resolution_deg <= 30:
            raise DatagenConfigError("panorama.resolution_deg must be in [0.5, 30]")
        if not -90 <= self.el_min_deg < self.el_max_deg <= 90:
            raise DatagenConfigError("panorama: need -90 <= el_min_deg < el_max_deg <= 90")


@dataclass(frozen=True)
class PinholeConfig:
    """Optional pinhole front view (depth = z along the optical axis, REP 118)."""

    enabled: bool = False
    width: int = 64
    height: int = 48
    fx: float = 40.0
    fy: float = 40.0
    cx: float = 31.5
    cy: float = 23.5
    rpy_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)  # camera rotation relative to the array's +x

    def validate(self) -> None:
        if self.width <= 0 or self.height <= 0 or self.fx <= 0 or self.fy <= 0:
            raise DatagenConfigError("pinhole: width, height, fx, fy must be positive")
        if len(self.rpy_deg) != 3:
            raise DatagenConfigError("pinhole.rpy_deg must be [roll, pitch, yaw]")


@dataclass(frozen=True)
class VoxelConfig:
    """Occupancy crop around the robot, axis-aligned in the array frame."""

    extent_m: tuple[float, float, float] = (2.5, 2.5, 2.0)  # x, y, z
    center_m: tuple[float, float, float] = (0.0, 0.0, 0.0)  # crop centre in the array frame
    resolution: tuple[int, int, int] = (32, 32, 32)  # voxels along x, y, z

    def validate(self) -> None:
        if len(self.extent_m) != 3 or min(self.extent_m) <= 0:
            raise DatagenConfigError("voxels.extent_m must be three positive lengths [x, y, z]")
        if len(self.center_m) != 3:
            raise DatagenConfigError("voxels.center_m must be [x, y, z]")
        if len(self.resolution) != 3 or min(self.resolution) < 1 or max(self.resolution) > 256:
            raise DatagenConfigError("voxels.resolution must be three integers in [1, 256]")


@dataclass(frozen=True)
class EnergyConfig:
    """Energy-map target: true source directions splatted on the beamforming grid."""

    resolution_deg: float = 3.0  # equirectangular, like avperception's default GridConfig
    sigma_deg: float = 6.0  # angular Gaussian width of each splat

    def validate(self) -> None:
        if not 0.5 <= self.resolution_deg <= 30:
            raise DatagenConfigError("energy.resolution_deg must be in [0.5, 30]")
        if self.sigma_deg <= 0:
            raise DatagenConfigError("energy.sigma_deg must be positive")


@dataclass(frozen=True)
class SplitConfig:
    """Fractions of *rooms* per split; a room's scenes all land in the same split."""

    train: float = 0.8
    val: float = 0.1
    test: float = 0.1

    def validate(self) -> None:
        f = (self.train, self.val, self.test)
        if min(f) < 0 or abs(sum(f) - 1.0) > 1e-6:
            raise DatagenConfigError(f"split fractions must be >= 0 and sum to 1, got {f}")


@dataclass(frozen=True)
class DatagenConfig:
    """Everything that decides the generated data (with the seed and the scene index)."""

    seed: int = 0
    array: str = DEFAULT_ARRAY  # preset name or YAML path (avperception.config.load_array)
    scenes_per_shard: int = 64
    audio: AudioConfig = field(default_factory=AudioConfig)
    active: ActiveConfig = field(default_factory=ActiveConfig)
    passive: PassiveConfig = field(default_factory=PassiveConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    room: RoomConfig = field(default_factory=RoomConfig)
    boxes: BoxesConfig = field(default_factory=BoxesConfig)
    robot: RobotConfig = field(default_factory=RobotConfig)
    acoustics: AcousticsConfig = field(default_factory=AcousticsConfig)
    panorama: PanoramaConfig = field(default_factory=PanoramaConfig)
    pinhole: PinholeConfig = field(default_factory=PinholeConfig)
    voxels: VoxelConfig = field(default_factory=VoxelConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    split: SplitConfig = field(default_factory=SplitConfig)

    def validate(self) -> "DatagenConfig":
        if not 0 <= int(self.seed) < 2**63:
            raise DatagenConfigError("seed must be in [0, 2**63)")
        if not 1 <= self.scenes_per_shard <= 100000:
            raise DatagenConfigError("scenes_per_shard must be in [1, 100000]")
        self.audio.validate()
        self.active.validate(self.audio.sample_rate)
        self.passive.validate()
        self.noise.validate()
        self.room.validate()
        self.boxes.validate()
        self.robot.validate()
        self.acoustics.validate()
        self.panorama.validate()
        self.pinhole.validate()
        self.voxels.validate()
        self.energy.validate()
        self.split.validate()
        if self.robot.array_height_m[1] >= self.room.height_m[0] - 0.1:
            raise DatagenConfigError("robot.array_height_m must stay at least 0.1 m below the lowest ceiling "
                                     "(room.height_m)")
        if self.active.duration_s * self.audio.sample_rate >= self.audio.num_samples:
            raise DatagenConfigError("active.duration_s is longer than the recording (audio.num_samples)")
        if self.audio.average_pings > 1 and self.robot.speed_mps[1] > 0:
            raise DatagenConfigError("audio.average_pings averages the pings of a robot standing still: set "
                                     "robot.speed_mps to [0, 0]")
        return self

    def array_geometry(self):
        from avperception.config import ConfigError, load_array

        try:
            return load_array(self.array)
        except ConfigError as e:
            raise DatagenConfigError(f"array: {e}") from None

    def to_dict(self) -> dict:
        return _to_plain(self)

    def digest(self) -> str:
        """Short hash of the configuration (stable across runs and machines)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- YAML <-> dataclasses


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return [_to_plain(v) for v in obj]
    return obj


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    """``cls`` from a nested mapping, strictly typed (the runtime's config loader, with this module's error)."""
    return from_dict(cls, data, where, DatagenConfigError)


def config_from_dict(data: Mapping[str, Any] | None) -> DatagenConfig:
    """Defaults overridden by ``data`` (nested mapping), validated."""
    return _build(DatagenConfig, data or {}, "").validate()


def _deep_merge(base: dict, over: Mapping) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) and k != "shapes":
            out[k] = _deep_merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def parse_xyz(text: str, meaning: str = "three comma-separated numbers") -> list[float]:
    """``"X,Y,Z"`` -> ``[x, y, z]``; ValueError saying what is expected (``meaning``) otherwise."""
    try:
        v = [float(x) for x in text.split(",")]
    except ValueError:
        v = []
    if len(v) != 3:
        raise ValueError(f"expected {meaning}, got {text!r}")
    return v


def parse_set(items: list[str]) -> dict:
    """``["room.size_m=[3, 5]", "seed=4"]`` -> nested override mapping (values are YAML)."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise DatagenConfigError(f"--set expects KEY=VALUE (dotted key), got {item!r}")
        key, val = item.split("=", 1)
        try:
            value = yaml.safe_load(val)
        except yaml.YAMLError as e:
            raise DatagenConfigError(f"--set {key}: value is not valid YAML: {e}") from None
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def distribution_path(name: str) -> Path:
    """The preset file of the named scene distribution (:data:`DISTRIBUTIONS`): ``standard`` is the shipped
    ``datagen.yaml``, ``wide`` the ``datagen_wide.yaml`` beside it."""
    if name not in DISTRIBUTIONS:
        raise DatagenConfigError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {name!r}")
    return DEFAULT_CONFIG_PATH if name == "standard" else DEFAULT_CONFIG_PATH.with_name(f"datagen_{name}.yaml")


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                distribution: str = "standard") -> DatagenConfig:
    """Load a data-engine config: the shipped default when ``path`` is None.

    ``distribution`` (:data:`DISTRIBUTIONS`) picks the scenes' distribution: ``standard`` (the defaults) or a
    preset such as ``wide`` (:func:`distribution_path`), whose keys override the defaults. A user file
    overrides those key by key; ``overrides`` (nested mapping, e.g. from ``--set``) win over all.
    """
    preset = distribution_path(distribution)
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise DatagenConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise DatagenConfigError(f"{p}: invalid YAML: {e}") from None
        if loaded is not None and not isinstance(loaded, Mapping):
            raise DatagenConfigError(f"{p}: a datagen config must be a mapping of sections")
        data = dict(loaded or {})
    else:
        data = dict(yaml.safe_load(DEFAULT_CONFIG_PATH.read_text()) or {})
    if preset != DEFAULT_CONFIG_PATH:
        data = _deep_merge(dict(yaml.safe_load(preset.read_text()) or {}), data if path is not None else {})
    if overrides:
        data = _deep_merge(data, overrides)
    try:
        return config_from_dict(data)
    except DatagenConfigError as e:
        src = str(path) if path is not None else str(preset)
        if overrides:  # the value may be one of them
            src += " with --set " + ", ".join(sorted(_flat_keys(overrides)))
        raise DatagenConfigError(f"{src}: {e}") from None


def _flat_keys(tree: Mapping, prefix: str = "") -> list[str]:
    """Dotted keys of a nested mapping's leaves."""
    out = []
    for k, v in tree.items():
        key = f"{prefix}{k}"
        out += _flat_keys(v, key + ".") if isinstance(v, Mapping) and v else [key]
    return out
