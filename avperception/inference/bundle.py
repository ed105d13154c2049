"""Model bundles: the one contract between training and the runtime.

A bundle is a directory::

    bundle.json         everything the runtime needs (array, rate, window, sweep, outputs, grids, classes, ...)
    model.onnx          raw audio ``audio (1, M, N)`` float32 in (sample 0 = sweep onset), every head out
    model.safetensors   optional: the torch weights + config (``AudioStudent.save``) for the torch backend

:func:`load_bundle` reads and verifies one (the ONNX file's sha256 is checked);
:func:`check_fits` is the one test of whether a bundle fits an array, a sample
rate and a speed of sound: the node, ``infer``, replay, export and training all
call it. This module imports neither torch nor onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import DEFAULT_ARRAY, ArrayGeometry, ConfigError, load_array
from ..models import BUNDLES_DIR

FORMAT = "avperception-bundle"
FORMAT_VERSION = 1
BUNDLE_JSON = "bundle.json"
ONNX_NAME = "model.onnx"
SAFETENSORS_NAME = "model.safetensors"
# the graph's optional second input: the array's height above the floor (m, shape (1,); 0 or less: unknown)
ARRAY_HEIGHT_INPUT = "array_height"

# positions closer than this (m) count as the same microphone; speeds of sound within this (m/s) as the same
POSITION_TOL_M = 1e-3
SPEED_TOL_MS = 1.0

FIT_HINT = ("use a bundle trained for this array, sample rate and sweep (train one with `avperception-train recipe "
            "--array NAME`, then `avperception-train export-bundle`), or fix the array file")


class BundleError(ValueError):
    """A bundle that cannot be used: missing, corrupt, or of an unknown format."""


class BundleMismatch(BundleError):
    """A bundle that does not fit the array / audio it is given; ``differences`` lists every one."""

    def __init__(self, message: str, differences: list[str]) -> None:
        super().__init__(message)
        self.differences = list(differences)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sweep_id(kind: str, f0: float, f1: float, duration_s: float, sample_rate: int) -> str:
    """A short name of a sweep, e.g. ``linear-1000-7000Hz-8ms-16k``."""
    ms = duration_s * 1e3
    ms_s = f"{ms:g}"
    khz = sample_rate / 1e3
    return f"{kind}-{f0:g}-{f1:g}Hz-{ms_s}ms-{khz:g}k"


@dataclass
class ModelBundle:
    """A loaded bundle: ``meta`` is ``bundle.json``; the accessors give its fields typed."""

    path: Path
    meta: dict = field(repr=False)

    # ------------------------------------------------------------------ files
    @property
    def onnx_path(self) -> Path:
        return self.path / self.meta["model"]["onnx"]

    @property
    def safetensors_path(self) -> Path | None:
        name = self.meta["model"].get("safetensors")
        p = self.path / name if name else None
        return p if p is not None and p.is_file() else None

    # ------------------------------------------------------------------ audio contract
    @property
    def array(self) -> ArrayGeometry:
        return ArrayGeometry.from_dict(self.meta["array"], source=f"{self.path / BUNDLE_JSON}: array")

    @property
    def num_mics(self) -> int:
        return len(self.meta["array"]["positions"])

    @property
    def sample_rate(self) -> int:
        return int(self.meta["sample_rate"])

    @property
    def window_samples(self) -> int:
        """Samples per inference window (``N`` of ``audio (M, N)``); sample 0 = the sweep's onset."""
        return int(self.meta["window"]["num_samples"])

    @property
    def speed_of_sound(self) -> float:
        return float(self.meta["speed_of_sound"])

    @property
    def emitted(self) -> np.ndarray:
        """``(L,)`` float64: the emitted sweep's samples (peak 1)."""
        return np.asarray(self.meta["sweep"]["samples"], dtype=np.float64)

    @property
    def sweep_id(self) -> str:
        return str(self.meta["sweep"]["sweep_id"])

    @property
    def sweep_params(self) -> dict:
        return {k: self.meta["sweep"][k] for k in ("kind", "f0_hz", "f1_hz", "duration_s", "fade")}

    @property
    def sweep_level_db(self) -> float:
        """The sweep's peak level in dBFS at 1 m from the speaker."""
        return float(self.meta["sweep"]["level_db"])

    @property
    def speaker_position(self) -> np.ndarray:
        """``(3,)`` the speaker in the array frame (m)."""
        return np.asarray(self.meta["sweep"]["speaker_position"], dtype=np.float64)

    # ------------------------------------------------------------------ outputs
    @property
    def outputs(self) -> dict:
        return self.meta["outputs"]

    @property
    def has_depth_uncertainty(self) -> bool:
        """Whether the graph gives ``depth_uncertainty``: each depth pixel's standard deviation (m), from a model
        trained with an uncertainty head (``model.uncertainty``)."""
        return "depth_uncertainty" in self.outputs

    @property
    def takes_array_height(self) -> bool:
        """Whether the graph takes the array's height above the floor (input ``array_height``, m; 0: unknown),
        which a model with a layout head renders as the floor's distance instead of telling the floor's echo from
        the ceiling's (a planar ring hears them as mirror images)."""
        return ARRAY_HEIGHT_INPUT in self.meta.get("inputs", {})

    @property
    def pano_shape(self) -> tuple[int, int]:
        h, w = self.meta["panorama"]["shape"]
        return int(h), int(w)

    @property
    def el_min_deg(self) -> float:
        return float(self.meta["panorama"]["el_min_deg"])

    @property
    def el_max_deg(self) -> float:
        return float(self.meta["panorama"]["el_max_deg"])

    def panorama_grid(self):
        """The :class:`~avperception.dsp.grid.DirectionGrid` of the depth / semantic panoramas."""
        from ..dsp.grid import equirectangular

        p = self.meta["panorama"]
        return equirectangular(-180.0, 180.0, p["el_min_deg"], p["el_max_deg"], p["resolution_deg"])

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"]["names"])

    @property
    def class_colors(self) -> np.ndarray:
        """``(C, 3)`` uint8 RGB colour of each class."""
        return np.asarray(self.meta["classes"]["colors"], dtype=np.uint8).reshape(-1, 3)

    @property
    def voxel_center(self) -> np.ndarray:
        """``(3,)`` xyz centre of the voxel crop in the array frame (m)."""
        return np.asarray(self.meta["voxels"]["center_m"], dtype=np.float64)

    @property
    def voxel_extent(self) -> np.ndarray:
        """``(3,)`` xyz side lengths of the voxel crop (m)."""
        return np.asarray(self.meta["voxels"]["extent_m"], dtype=np.float64)

    @property
    def voxel_resolution(self) -> tuple[int, int, int]:
        """Voxels along x, y, z (the output is indexed ``[z, y, x]``)."""
        x, y, z = self.meta["voxels"]["resolution"]
        return int(x), int(y), int(z)

    @property
    def voxel_size(self) -> np.ndarray:
        """``(3,)`` xyz edge length of one voxel (m)."""
        return self.voxel_extent / np.asarray(self.voxel_resolution, dtype=np.float64)

    def voxel_centers(self) -> np.ndarray:
        """``(D, H, W, 3)`` xyz centre of every voxel ``[z, y, x]`` in the array frame (m)."""
        lo = self.voxel_center - self.voxel_extent / 2
        size = self.voxel_size
        nx, ny, nz = self.voxel_resolution
        z, y, x = np.meshgrid(*((np.arange(n) + 0.5) * s + o for n, s, o in
                                zip((nz, ny, nx), size[::-1], lo[::-1])), indexing="ij")
        return np.stack([x, y, z], axis=-1)

    def describe(self) -> str:
        return (f"bundle {self.path} ({self.meta.get('name', '?')}): array {self.meta['array']['name']} "
                f"({self.num_mics} mics), {self.sample_rate} Hz, window {self.window_samples} samples, "
                f"sweep {self.sweep_id} at {self.sweep_level_db:g} dBFS @ 1 m, panorama {self.pano_shape}, "
                f"classes {self.classes}, voxels {self.voxel_resolution}")


# ---------------------------------------------------------------------------------------------- loading


def default_bundle_path(array: str = DEFAULT_ARRAY) -> Path:
    """The directory of the shipped bundle for ``array``; raises :class:`BundleError` when none is shipped."""
    p = BUNDLES_DIR / array
    if not (p / BUNDLE_JSON).is_file():
        shipped = sorted(x.parent.name for x in BUNDLES_DIR.glob(f"*/{BUNDLE_JSON}"))
        raise BundleError(f"no shipped model bundle for array '{array}' (shipped: {shipped or 'none'}); "
                          "train one with `avperception-train recipe --array NAME` and write it with "
                          "`avperception-train export-bundle`")
    return p


_REQUIRED = ("array", "sample_rate", "window", "speed_of_sound", "sweep", "outputs", "panorama", "classes",
             "voxels", "model")


def load_bundle(spec: str | Path | None = None, verify: bool = True, array: str | None = None) -> ModelBundle:
    """Load a bundle: ``None`` or ``"default"`` -> the shipped bundle for ``array`` (a preset name; default
    robot_8mic), ``"default:ARRAY"`` -> the shipped one for ARRAY, else a bundle directory (or its ``bundle.json``).

    ``verify``: check ``model.onnx``'s sha256 against ``bundle.json`` (a corrupt or replaced file is refused).
    Raises :class:`BundleError` with what to do for a missing directory, a missing or corrupt ``bundle.json``,
    an unknown format version, or a missing or altered ``model.onnx``.
    """
    if spec is None or str(spec) == "default":
        path = default_bundle_path(array or DEFAULT_ARRAY)
    elif str(spec).startswith("default:"):
        path = default_bundle_path(str(spec).split(":", 1)[1])
    else:
        path = Path(spec)
        if path.name == BUNDLE_JSON:
            path = path.parent
    if not path.is_dir():
        raise BundleError(f"model bundle not found: {path} is not a directory (give a directory holding "
                          f"{BUNDLE_JSON} and {ONNX_NAME}, or 'default' for the shipped one)")
    jp = path / BUNDLE_JSON
    if not jp.is_file():
        raise BundleError(f"{path} is not a model bundle: it has no {BUNDLE_JSON} (write one with "
                          "`avperception-train export-bundle`)")
    try:
        meta = json.loads(jp.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{jp} is corrupt (not valid JSON: {e}); re-export the bundle") from None
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt != FORMAT:
        raise BundleError(f"{jp} is not an {FORMAT} file (format {fmt!r})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{jp}: format version {version!r} is not the one this avperception reads "
                          f"({FORMAT_VERSION}); re-export the bundle with this version's `avperception-train "
                          "export-bundle` or upgrade avperception")
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise BundleError(f"{jp} is incomplete: missing {', '.join(missing)}; re-export the bundle")
    bundle = ModelBundle(path=path, meta=meta)
    try:
        bundle.array  # noqa: B018  (validates the geometry)
    except ConfigError as e:
        raise BundleError(str(e)) from None
    onnx = bundle.onnx_path
    if not onnx.is_file():
        raise BundleError(f"{path}: {onnx.name} is missing; re-export the bundle")
    if verify:
        want = meta["model"].get("onnx_sha256")
        got = sha256_file(onnx)
        if want != got:
            raise BundleError(f"{onnx} is corrupt or was replaced: its sha256 {got[:16]}... is not the "
                              f"{str(want)[:16]}... recorded in {BUNDLE_JSON}; re-export the bundle "
                              "(or restore the file)")
    return bundle


def graph_feed(input_names, audio: np.ndarray, array_height: float = 0.0) -> dict[str, np.ndarray]:
    """The inputs of a bundle graph whose inputs are ``input_names``: ``audio (1, M, N)`` float32 and, where the
    graph takes it, ``array_height (1,)`` (m; 0 or less: unknown). A height given to a graph that cannot take it
    is a ``ValueError`` (the caller says what to do), never silently dropped."""
    feed = {"audio": audio}
    if ARRAY_HEIGHT_INPUT in input_names:
        feed[ARRAY_HEIGHT_INPUT] = np.array([array_height], dtype=np.float32)
    elif array_height > 0:
        raise ValueError(f"the graph takes no {ARRAY_HEIGHT_INPUT} input (its inputs: {', '.join(input_names)}); "
                         "re-export the bundle with this version's `avperception-train export-bundle`, or leave "
                         "the array's height unset")
    return feed


# ---------------------------------------------------------------------------------------------- fit


def fits(bundle: ModelBundle, array: ArrayGeometry | str | Path, sample_rate: int | None = None,
         speed_of_sound: float | None = None, sweep: str | None = None, speaker_position=None) -> list[str]:
    """Every difference between what ``bundle`` was trained for and ``array`` / ``sample_rate`` /
    ``speed_of_sound`` and, for audio already recorded (a dataset, a bag), the ``sweep`` it was made with (its
    :func:`sweep_id`) and the speaker's ``speaker_position`` (array frame, m) (empty: it fits).

    The microphones must be the same in number and order, each within 1 mm, and so must the speaker; ``sample_rate``
    defaults to the array's own (when it has one); speeds of sound may differ by up to 1 m/s. The sweep and the
    speaker are compared where both are known (a bundle carries them; a student's own contract does not).
    """
    if not isinstance(array, ArrayGeometry):
        array = load_array(array)
    diffs: list[str] = []
    b_pos = np.asarray(bundle.meta["array"]["positions"], dtype=np.float64)
    a_pos = array.positions
    b_name = bundle.meta["array"].get("name", "?")
    if len(b_pos) != len(a_pos):
        diffs.append(f"microphone count: the bundle was trained for {len(b_pos)} mics ({b_name}), "
                     f"the array '{array.name}' has {len(a_pos)}")
    else:
        err = np.linalg.norm(a_pos - b_pos, axis=1)
        for i in np.flatnonzero(err > POSITION_TOL_M):
            diffs.append(f"microphone {i} position: bundle {np.round(b_pos[i], 4).tolist()} vs array "
                         f"{np.round(a_pos[i], 4).tolist()} m ({err[i] * 1e3:.1f} mm apart, more than "
                         f"{POSITION_TOL_M * 1e3:g} mm)")
    rate = sample_rate if sample_rate is not None else array.sample_rate
    if rate is not None and int(rate) != bundle.sample_rate:
        diffs.append(f"sample rate: bundle {bundle.sample_rate} Hz vs {int(rate)} Hz (resample the audio to "
                     f"{bundle.sample_rate} Hz or use a bundle for {int(rate)} Hz)")
    if speed_of_sound is not None and abs(float(speed_of_sound) - bundle.speed_of_sound) > SPEED_TOL_MS:
        diffs.append(f"speed of sound: bundle {bundle.speed_of_sound:g} m/s vs {float(speed_of_sound):g} m/s "
                     f"(more than {SPEED_TOL_MS:g} m/s apart)")
    if "sweep" in bundle.meta:
        if sweep is not None and sweep != bundle.sweep_id:
            diffs.append(f"sweep: the bundle's model hears {bundle.sweep_id}, the audio was made with {sweep} (make it "
                         f"with the bundle's sweep, e.g. datagen --set active.duration_s=..., or use a bundle "
                         f"trained on this one)")
        if speaker_position is not None:
            s = np.asarray(speaker_position, dtype=np.float64)
            if s.shape != (3,) or np.linalg.norm(s - bundle.speaker_position) > POSITION_TOL_M:
                diffs.append(f"speaker position: bundle {np.round(bundle.speaker_position, 4).tolist()} vs "
                             f"{np.round(s, 4).tolist()} m")
    return diffs


def check_fits(bundle: ModelBundle, array: ArrayGeometry | str | Path, sample_rate: int | None = None,
               speed_of_sound: float | None = None, sweep: str | None = None, speaker_position=None) -> None:
    """Raise :class:`BundleMismatch` naming every difference (see :func:`fits`) and what to do; None when it fits."""
    diffs = fits(bundle, array, sample_rate, speed_of_sound, sweep, speaker_position)
    if diffs:
        name = array.name if isinstance(array, ArrayGeometry) else str(array)
        raise BundleMismatch(f"the model bundle {bundle.path} does not fit array '{name}': " + "; ".join(diffs)
                             + f". What to do: {FIT_HINT}", diffs)
