"""Typed configuration: one source of truth for the pipeline, the nodes and the CLI.

Every block is a frozen dataclass with defaults. YAML files override the
defaults (:func:`load_pipeline_config`), and the ROS parameters of the nodes are
generated from the same dataclasses (``avperception/ros/params.py``), so there
is exactly one list of settings.

Microphone arrays live in their own YAML files (``config/arrays/*.yaml``)::

    name: respeaker_4mic
    frame_id: mic_array
    sample_rate: 16000          # optional: the rate the hardware runs at
    channels: 6                 # optional: channels the device delivers
    channel_map: [1, 2, 3, 4]   # optional: input channel of each microphone
    positions:                  # metres, array frame: x forward, y left, z up (REP 103)
      - [0.0229, 0.0229, 0.0]
      - ...
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from .constants import SPEED_OF_SOUND

PACKAGE_ROOT = Path(__file__).resolve().parent

#: The array preset every default uses (pipeline, nodes, launch file, data engine, student, CLIs): the one
#: the shipped model bundle was trained for. Parameter files spell it out (a test keeps them equal).
DEFAULT_ARRAY = "robot_8mic"


class ConfigError(ValueError):
    """A configuration value is missing, malformed or inconsistent."""


def config_dir() -> Path:
    """The shipped ``config/`` directory: the source tree's, or the installed share dir."""
    import os
    import sys

    candidates = [PACKAGE_ROOT.parent / "config", Path(sys.prefix) / "share" / "avperception" / "config"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "avperception" / "config")
    for c in candidates:
        if (c / "arrays").is_dir():
            return c
    raise ConfigError(f"cannot find the avperception config directory (looked in {[str(c) for c in candidates]})")


# --------------------------------------------------------------------------- arrays


@dataclass(frozen=True)
class ArrayGeometry:
    """A microphone array.

    Attributes:
        positions: ``(mics, 3)`` microphone positions in metres in the array frame
            (x forward, y left, z up).
        channel_map: input channel of each microphone, or ``None`` when input
            channel ``i`` is microphone ``i`` and the input has exactly ``mics`` channels.
    """

    name: str
    positions: np.ndarray
    frame_id: str = "mic_array"
    sample_rate: int | None = None
    channel_map: tuple[int, ...] | None = None
    channels: int | None = None

    def __post_init__(self) -> None:
        pos = np.asarray(self.positions, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != 3:
            raise ConfigError(
                f"array '{self.name}': positions must be a list of [x, y, z] in metres, got shape {pos.shape}"
            )
        if pos.shape[0] < 2:
            raise ConfigError(f"array '{self.name}': needs at least 2 microphones, got {pos.shape[0]}")
        if not np.all(np.isfinite(pos)):
            raise ConfigError(f"array '{self.name}': positions contain NaN or inf")
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(len(pos))
        if d.min() < 1e-4:
            raise ConfigError(f"array '{self.name}': two microphones are closer than 0.1 mm (duplicate position?)")
        object.__setattr__(self, "positions", pos)
        if self.channel_map is not None:
            cm = tuple(int(c) for c in self.channel_map)
            if len(cm) != pos.shape[0]:
                raise ConfigError(
                    f"array '{self.name}': channel_map has {len(cm)} entries but there are {pos.shape[0]} microphones"
                )
            if min(cm) < 0 or len(set(cm)) != len(cm):
                raise ConfigError(f"array '{self.name}': channel_map must hold distinct non-negative indices, got {cm}")
            object.__setattr__(self, "channel_map", cm)
        if self.channels is not None:
            need = max(self.channel_map) + 1 if self.channel_map is not None else pos.shape[0]
            if int(self.channels) < need:
                raise ConfigError(f"array '{self.name}': channels = {self.channels} but the microphones need {need}")
            if self.channel_map is None and int(self.channels) != pos.shape[0]:
                raise ConfigError(f"array '{self.name}': {self.channels} channels for {pos.shape[0]} microphones "
                                  "needs a channel_map")
        if self.sample_rate is not None and int(self.sample_rate) <= 0:
            raise ConfigError(f"array '{self.name}': sample_rate must be positive, got {self.sample_rate}")

    @property
    def num_mics(self) -> int:
        return int(self.positions.shape[0])

    @property
    def centered(self) -> np.ndarray:
        """``(mics, 3)`` positions relative to the array centroid."""
        return self.positions - self.positions.mean(axis=0)

    @property
    def rank(self) -> int:
        """Dimension spanned by the microphones: 1 linear, 2 planar, 3 volumetric."""
        s = np.linalg.svd(self.centered, compute_uv=False)
        return int(np.sum(s > 1e-3 * s[0]))

    @property
    def is_planar(self) -> bool:
        return self.rank <= 2

    @property
    def normal(self) -> np.ndarray | None:
        """Unit normal of a planar array (sign chosen so that its z >= 0), else None."""
        if self.rank != 2:
            return None
        n = np.linalg.svd(self.centered)[2][-1]
        return n if n[2] >= 0 else -n

    @property
    def axis(self) -> np.ndarray | None:
        """Unit axis of a linear array, else None."""
        if self.rank != 1:
            return None
        return np.linalg.svd(self.centered)[2][0]

    @property
    def aperture(self) -> float:
        """Largest distance between two microphones (m)."""
        return float(np.max(np.linalg.norm(self.positions[:, None] - self.positions[None], axis=-1)))

    @property
    def input_channels(self) -> int:
        """Channels the device delivers: ``channels``, else ``max(channel_map) + 1``, else ``mics``."""
        if self.channels is not None:
            return int(self.channels)
        return self.num_mics if self.channel_map is None else max(self.channel_map) + 1

    def to_device_layout(self, mics_block: np.ndarray) -> np.ndarray:
        """Place ``(mics, samples)`` into ``(input_channels, samples)``; unmapped channels are zero."""
        if self.channel_map is None:
            return mics_block
        out = np.zeros((self.input_channels, mics_block.shape[1]), dtype=mics_block.dtype)
        out[list(self.channel_map)] = mics_block
        return out

    def select_channels(self, block: np.ndarray) -> np.ndarray:
        """Pick the microphone channels out of a ``(channels, samples)`` block.

        Returns ``(mics, samples)``. Raises ConfigError when the channel count does not fit.
        """
        channels = block.shape[0]
        if self.channels is not None and channels != self.channels:
            raise ConfigError(
                f"array '{self.name}' expects {self.channels} input channels but the audio has {channels}; "
                "pick the matching array file or fix its 'channels'"
            )
        if self.channel_map is None:
            if channels != self.num_mics:
                raise ConfigError(
                    f"array '{self.name}' has {self.num_mics} microphones but the audio has {channels} channels; "
                    "pick the matching array file or add a channel_map to it"
                )
            return block
        if max(self.channel_map) >= channels:
            raise ConfigError(
                f"array '{self.name}': channel_map uses input channel {max(self.channel_map)} "
                f"but the audio has only {channels} channels"
            )
        return block[list(self.channel_map)]

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"name": self.name, "frame_id": self.frame_id, "positions": self.positions.tolist()}
        if self.sample_rate is not None:
            d["sample_rate"] = int(self.sample_rate)
        if self.channel_map is not None:
            d["channel_map"] = list(self.channel_map)
        if self.channels is not None:
            d["channels"] = int(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "<dict>") -> "ArrayGeometry":
        if not isinstance(d, Mapping):
            raise ConfigError(f"{source}: an array file must be a mapping with 'positions', got {type(d).__name__}")
        known = {"name", "positions", "frame_id", "sample_rate", "channel_map", "channels", "description"}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"{source}: unknown keys {sorted(unknown)}; valid keys are {sorted(known)}")
        if "positions" not in d:
            raise ConfigError(f"{source}: 'positions' is required (list of [x, y, z] in metres)")
        try:
            pos = np.asarray(d["positions"], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{source}: positions must be a list of [x, y, z] numbers ({e})") from None
        def integer(key: str) -> int | None:
            v = d.get(key)
            if v is None:
                return None
            try:
                if isinstance(v, bool):
                    raise TypeError(key)
                f = float(v)
                if f != int(f):
                    raise ValueError(key)
                return int(f)
            except (TypeError, ValueError, OverflowError):
                raise ConfigError(f"{source}: {key} must be a whole number, got {v!r}") from None

        cmap = d.get("channel_map")
        if cmap is not None:
            if not isinstance(cmap, (list, tuple)) or any(isinstance(c, bool) or not isinstance(c, int) for c in cmap):
                raise ConfigError(f"{source}: channel_map must be a list of channel indices, got {cmap!r}")
            cmap = tuple(cmap)
        return cls(
            name=str(d.get("name", Path(source).stem)),
            positions=pos,
            frame_id=str(d.get("frame_id", "mic_array")),
            sample_rate=integer("sample_rate"),
            channel_map=cmap,
            channels=integer("channels"),
        )


def array_presets() -> list[str]:
    """Names of the shipped array presets."""
    return sorted(p.stem for p in (config_dir() / "arrays").glob("*.yaml"))


def load_array(spec: str | Path | Mapping | ArrayGeometry) -> ArrayGeometry:
    """Load an array from a preset name, a YAML path, a mapping or pass one through."""
    if isinstance(spec, ArrayGeometry):
        return spec
    if isinstance(spec, Mapping):
        return ArrayGeometry.from_dict(spec)
    p = Path(spec)
    if not p.suffix and not p.exists():
        p = config_dir() / "arrays" / f"{spec}.yaml"
        if not p.exists():
            raise ConfigError(f"unknown array preset '{spec}'; presets: {', '.join(array_presets())}, "
                              "or give a YAML path")
    if not p.exists():
        raise ConfigError(f"array file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from None
    return ArrayGeometry.from_dict(data, source=str(p))


# --------------------------------------------------------------------------- pipeline blocks


@dataclass(frozen=True)
class FrameConfig:
    """How the audio stream is cut into analysis frames (in samples)."""

    frame_samples: int = 2048
    hop_samples: int = 1024
    buffer_seconds: float = 4.0

    def validate(self) -> None:
        if self.frame_samples <= 0 or self.hop_samples <= 0:
            raise ConfigError("frame.frame_samples and frame.hop_samples must be positive")
        if self.buffer_seconds <= 0:
            raise ConfigError("frame.buffer_seconds must be positive")


@dataclass(frozen=True)
class StftConfig:
    """Short-time Fourier transform inside a frame."""

    nfft: int = 512
    hop: int = 256
    window: str = "hann"

    def validate(self) -> None:
        if self.nfft < 16 or self.nfft & (self.nfft - 1):
            raise ConfigError(f"stft.nfft must be a power of two >= 16, got {self.nfft}")
        if not 0 < self.hop <= self.nfft:
            raise ConfigError(f"stft.hop must be in (0, nfft], got {self.hop}")
        if self.window not in ("hann", "hamming", "rect"):
            raise ConfigError(f"stft.window must be hann, hamming or rect, got {self.window!r}")


@dataclass(frozen=True)
class GridConfig:
    """Directions the beamformer scans.

    ``equirectangular``: azimuth x elevation in degrees (azimuth counter-clockwise
    from +x toward +y, elevation up from the xy-plane). ``pinhole``: the pixels of
    a camera with the given intrinsics whose optical axis is rotated from the
    array's +x by ``camera_rpy_deg`` (roll, pitch, yaw).
    """

    kind: str = "equirectangular"
    az_min_deg: float = -180.0
    az_max_deg: float = 180.0
    el_min_deg: float = -90.0
    el_max_deg: float = 90.0
    resolution_deg: float = 3.0
    width: int = 64
    height: int = 48
    fx: float = 50.0
    fy: float = 50.0
    cx: float = 31.5
    cy: float = 23.5
    camera_rpy_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    camera_frame_id: str = "camera_optical_frame"

    def validate(self) -> None:
        if self.kind not in ("equirectangular", "pinhole"):
            raise ConfigError(f"grid.kind must be 'equirectangular' or 'pinhole', got {self.kind!r}")
        if self.kind == "equirectangular":
            if not -180 <= self.az_min_deg < self.az_max_deg <= 180:
                raise ConfigError("grid: need -180 <= az_min_deg < az_max_deg <= 180")
            if not -90 <= self.el_min_deg <= self.el_max_deg <= 90:
                raise ConfigError("grid: need -90 <= el_min_deg <= el_max_deg <= 90")
            if not 0.1 <= self.resolution_deg <= 45:
                raise ConfigError(f"grid.resolution_deg must be in [0.1, 45], got {self.resolution_deg}")
        else:
            if self.width <= 0 or self.height <= 0 or self.fx <= 0 or self.fy <= 0:
                raise ConfigError("grid: pinhole width, height, fx, fy must be positive")
        if len(self.camera_rpy_deg) != 3:
            raise ConfigError("grid.camera_rpy_deg must have three values (roll, pitch, yaw)")


@dataclass(frozen=True)
class BeamformerConfig:
    """Beamforming and peak picking."""

    method: str = "srp_phat"
    fmin_hz: float = 300.0
    fmax_hz: float = 6000.0
    interp: int = 8
    num_sources: int = 3
    min_separation_deg: float = 20.0
    min_relative_power: float = 0.5
    refine: bool = True

    def validate(self) -> None:
        if not 0 <= self.fmin_hz < self.fmax_hz:
            raise ConfigError("beamformer: need 0 <= fmin_hz < fmax_hz")
        if self.interp < 1 or self.interp > 32:
            raise ConfigError("beamformer.interp must be in [1, 32]")
        if self.num_sources < 1:
            raise ConfigError("beamformer.num_sources must be >= 1")
        if not 0 <= self.min_relative_power <= 1:
            raise ConfigError("beamformer.min_relative_power must be in [0, 1]")


SONAR_BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")


# the highest array above the floor a height may say (m): sonar.array_height_m, or one read from TF
MAX_ARRAY_HEIGHT_M = 10.0
# the most pings' windows sonar.average_pings may average
MAX_AVERAGE_PINGS = 16


@dataclass(frozen=True)
class SonarConfig:
    """Active echo sensing: the learned half (a model bundle run on each ping's echoes).

    ``model``: a bundle directory or ``default`` (the one shipped for the array); the bundle must fit the array
    (:func:`avperception.inference.bundle.check_fits`). ``backend``: ``auto`` (the best available, falling back
    on failure: a TensorRT engine, ONNX Runtime, torch), ``tensorrt``, ``onnxruntime`` or ``torch``;
    ``engine_cache_dir`` / ``force_engine_update``: where TensorRT engines are cached ("": the default) and
    whether to rebuild one. ``detect``: find pings by matched-filtering the direct path when no Ping message
    arrives. ``plan_z_min_m`` / ``plan_z_max_m``: the height band (array frame) collapsed into
    the occupancy grid for Nav2. ``pinhole``: also publish the depth reprojected on the ``grid.width`` x
    ``grid.height`` camera (``grid.fx`` ... ``grid.camera_rpy_deg``) with its CameraInfo. ``blank_ms``: the
    beamformer leaves out each ping's sweep and this long after it (the sweep's direct path and first echoes are
    louder than the room's sources and would pull every map toward the speaker; 22 ms after the sweep's end they
    are 11 dB below them); 0 keeps it all.
    ``near_bound_quantile``: for a bundle with a depth uncertainty, also publish the range each pixel's surface is
    nearer than with this probability (:func:`avperception.sonar.products.depth_near_bound`); 0: not published.
    ``confident_max_rel_std``: for such a bundle, also publish the depth only where its standard deviation is at
    most this share of its range (:func:`avperception.sonar.products.confident_depth`), NaN elsewhere; 0: not
    published. ``points_confident``: ``sonar/points`` carries the confident depth's pixels only (such bundles, with
    ``confident_max_rel_std`` above 0), not every pixel's best guess.
    ``array_height_m``: the array's height above the floor where the robot knows it (its mount, from the URDF); a
    bundle that takes it (:attr:`~avperception.inference.bundle.ModelBundle.takes_array_height`) renders the floor
    that far below instead of telling the floor's echo from the ceiling's, which a planar ring hears as mirror
    images; 0: unknown. ``floor_frame``: a TF frame on the floor under the array (``base_footprint`` by REP 120);
    when set, the height is read from ``/tf`` and ``/tf_static`` instead (the z of the array frame's origin in
    it, before each window: a lift or a torso may move the array), ``array_height_m`` standing until it is known.
    ``average_pings``: run the network on the mean of up to this many consecutive pings' windows taken while the
    array stands still (:class:`avperception.sonar.stack.PingStack`: the echoes repeat, ambient sound and noise do
    not, so four pings hear the room 6 dB above them); 1: each ping alone. ``still_frame``: a fixed TF frame
    (``odom``, ``map``) in which the array must stay within ``still_motion_m`` and ``still_turn_deg`` of the newest
    window's pose for a window to be averaged; "": the array never moves (a fixed installation).
    ``average_max_age_s``: older windows are left out.
    """

    enabled: bool = True
    model: str = "default"
    backend: str = "auto"
    threads: int = 1
    detect: bool = True
    search_samples: int = 64
    max_pending_pings: int = 16
    points_max_range_m: float = 8.0
    plan_z_min_m: float = -0.25
    plan_z_max_m: float = 0.5
    pinhole: bool = True
    blank_ms: float = 22.0
    near_bound_quantile: float = 0.02
    confident_max_rel_std: float = 0.3
    points_confident: bool = False
    array_height_m: float = 0.0
    floor_frame: str = ""
    average_pings: int = 1
    still_frame: str = "odom"
    still_motion_m: float = 0.005
    still_turn_deg: float = 1.0
    average_max_age_s: float = 2.0
    engine_cache_dir: str = ""          # TensorRT engines ("": ~/.cache/avperception/engines)
    force_engine_update: bool = False   # rebuild the TensorRT engine even when one is cached

    def validate(self) -> None:
        if not 0 <= self.blank_ms <= 1000:
            raise ConfigError(f"sonar.blank_ms must be in [0, 1000], got {self.blank_ms}")
        if self.backend not in SONAR_BACKENDS:
            raise ConfigError(f"sonar.backend must be one of {', '.join(SONAR_BACKENDS)}, got {self.backend!r}")
        if not 1 <= self.threads <= 64:
            raise ConfigError(f"sonar.threads must be in [1, 64], got {self.threads}")
        if not 1 <= self.search_samples <= 4096:
            raise ConfigError(f"sonar.search_samples must be in [1, 4096], got {self.search_samples}")
        if self.max_pending_pings < 1:
            raise ConfigError("sonar.max_pending_pings must be >= 1")
        if self.points_max_range_m <= 0:
            raise ConfigError("sonar.points_max_range_m must be positive")
        if self.plan_z_min_m > self.plan_z_max_m:
            raise ConfigError("sonar: plan_z_min_m must not exceed plan_z_max_m")
        if not 0 <= self.near_bound_quantile <= 0.5:
            raise ConfigError(f"sonar.near_bound_quantile must be in [0, 0.5] (0: off), got {self.near_bound_quantile}")
        if not 0 <= self.confident_max_rel_std <= 10:
            raise ConfigError(f"sonar.confident_max_rel_std must be in [0, 10] (0: off), got "
                              f"{self.confident_max_rel_std}")
        if self.points_confident and self.confident_max_rel_std == 0:
            raise ConfigError("sonar.points_confident takes the confident depth's pixels, which "
                              "sonar.confident_max_rel_std 0 turns off: set it above 0 (0.3) or points_confident false")
        if not 0 <= self.array_height_m <= MAX_ARRAY_HEIGHT_M:
            raise ConfigError(f"sonar.array_height_m must be in [0, {MAX_ARRAY_HEIGHT_M:g}] m (0: unknown), got "
                              f"{self.array_height_m}")
        if not 1 <= self.average_pings <= MAX_AVERAGE_PINGS:
            raise ConfigError(f"sonar.average_pings must be in [1, {MAX_AVERAGE_PINGS}] (1: each ping alone), got "
                              f"{self.average_pings}")
        if not 0 <= self.still_motion_m <= 0.1:
            raise ConfigError(f"sonar.still_motion_m must be in [0, 0.1] m (echoes blur beyond a few mm), got "
                              f"{self.still_motion_m}")
        if not 0 <= self.still_turn_deg <= 10:
            raise ConfigError(f"sonar.still_turn_deg must be in [0, 10] degrees, got {self.still_turn_deg}")
        if not 0 < self.average_max_age_s <= 60:
            raise ConfigError(f"sonar.average_max_age_s must be in (0, 60] s, got {self.average_max_age_s}")


@dataclass(frozen=True)
class PipelineConfig:
    """Everything the pipeline needs besides the array."""

    array: str = DEFAULT_ARRAY
    sample_rate: int = 16000
    speed_of_sound: float = SPEED_OF_SOUND
    frame: FrameConfig = field(default_factory=FrameConfig)
    stft: StftConfig = field(default_factory=StftConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    beamformer: BeamformerConfig = field(default_factory=BeamformerConfig)
    sonar: SonarConfig = field(default_factory=SonarConfig)

    def validate(self) -> "PipelineConfig":
        if self.sample_rate <= 0:
            raise ConfigError("sample_rate must be positive")
        if not 200 < self.speed_of_sound < 2000:
            raise ConfigError("speed_of_sound must be in m/s (e.g. 343)")
        for block in (self.frame, self.stft, self.grid, self.beamformer, self.sonar):
            block.validate()
        if self.stft.nfft > self.frame.frame_samples:
            raise ConfigError(
                f"stft.nfft ({self.stft.nfft}) must not exceed frame.frame_samples ({self.frame.frame_samples})"
            )
        if self.beamformer.fmax_hz > self.sample_rate / 2:
            raise ConfigError(
                f"beamformer.fmax_hz ({self.beamformer.fmax_hz}) is above Nyquist ({self.sample_rate / 2})"
            )
        return self


# --------------------------------------------------------------------------- dict <-> dataclass


def _coerce(tp: Any, value: Any, where: str, error: type[Exception]) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value or {}, where, error)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _coerce(next(a for a in args if a is not type(None)), value, where, error)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise error(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]", error) for i, v in enumerate(value))
        if len(value) != len(args):
            raise error(f"{where}: expected {len(args)} values, got {len(value)} ({list(value)})")
        return tuple(_coerce(a, v, f"{where}[{i}]", error) for i, (a, v) in enumerate(zip(args, value)))
    if origin in (collections.abc.Mapping, dict) or tp in (collections.abc.Mapping, dict):
        if not isinstance(value, Mapping):
            raise error(f"{where}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(vt, v, f"{where}.{k}", error) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise error(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise error(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise error(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, Path)):
            raise error(f"{where}: expected a string, got {value!r}")
        return str(value)
    if tp is Any:
        return value
    raise error(f"{where}: unsupported type {tp}")  # pragma: no cover


def from_dict(cls: type, data: Mapping[str, Any] | None, where: str = "config",
              error: type[Exception] = ConfigError) -> Any:
    """Build dataclass ``cls`` from a (possibly partial) nested mapping.

    Unknown keys and values of the wrong type raise ``error`` naming the dotted
    key (``where`` is the prefix; empty for none) and what was expected.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise error(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise error(f"{where or 'config'}: unknown keys {unknown}; valid keys are {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}" if where else k, error) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> dict:
    """Nested plain-Python dict of a config dataclass (tuples become lists)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, np.ndarray):
            return v.tolist()
        return v

    return conv(obj)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"frame.hop_samples": 1024, ...}``: dotted names for every leaf field."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(v):
            out.update(flatten(v, name + "."))
        else:
            out[name] = v
    return out


def unflatten(flat: Mapping[str, Any]) -> dict:
    """Inverse of :func:`flatten` (dotted names to a nested dict)."""
    out: dict[str, Any] = {}
    for k, v in flat.items():
        d = out
        parts = k.split(".")
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = v
    return out


def load_pipeline_config(spec: str | Path | Mapping | None = None, **overrides: Any) -> PipelineConfig:
    """Load and validate a :class:`PipelineConfig` from YAML / mapping, then apply dotted overrides."""
    if spec is None:
        data: dict = {}
    elif isinstance(spec, Mapping):
        data = dict(spec)
    else:
        p = Path(spec)
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML: {e}") from None
        if "pipeline" in data:
            data = data["pipeline"]
    flat = flatten(from_dict(PipelineConfig, data))
    for k, v in overrides.items():
        k = k.replace("__", ".")
        if k not in flat:
            raise ConfigError(f"unknown setting '{k}'")
        flat[k] = v
    return from_dict(PipelineConfig, unflatten(flat)).validate()
