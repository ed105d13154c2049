"""Shard files: the sample schema, a byte-deterministic writer, a numpy reader.

A dataset directory holds ``manifest.json`` (configuration, array, seeds,
library versions, shard list with SHA-256, splits), ``runs.log`` (one JSON
line per run, the only place with timestamps) and shards
``shard-FIRST-LAST.npz`` (scene indices, LAST inclusive). A shard is a zip of
``.npy`` arrays (``np.load`` reads it), stacked over its scenes; see
:data:`SCHEMA` for every key. Zip entries carry a fixed date, so the same
scenes give the same bytes.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from avperception.constants import SPEED_OF_SOUND
from avperception.inference.bundle import sha256_file  # noqa: F401  (one hash for shards and bundles)

FORMAT = "avperception-scenes"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"
RUNS_LOG = "runs.log"
SHARD_GLOB = "shard-*.npz"

# key -> (shape, dtype, meaning). S = scenes in the shard, M = microphones, N = samples,
# H x W = panorama, He x We = energy grid, K = max sources, P = max floor corners, B = max boxes.
SCHEMA: dict[str, tuple[str, str, str]] = OrderedDict([
    ("scene_index", ("(S,)", "int64", "global scene index (synthetic) or frame index (imported)")),
    ("room_id", ("(S,)", "int64", "room the scene is in; splits are by room (imported: one id per recording)")),
    ("split", ("(S,)", "uint8", "0 train, 1 val, 2 test")),
    ("active", ("(S,)", "bool", "the robot's sweep is in the audio, emitted at sample 0")),
    ("audio", ("(S, M, N)", "float32|int16", "microphone signals, full scale 1.0 (int16: 32767); "
                                            "sample 0 = sweep onset")),
    ("robot_pose", ("(S, 4)", "float64", "array-frame origin in the world x, y, z (m) and yaw (rad); "
                                         "imported: NaN")),
    ("gain_db", ("(S,)", "float32", "overall level applied to the acoustic signal")),
    ("noise_db", ("(S,)", "float32", "sensor noise RMS in dBFS")),
    ("depth", ("(S, H, W)", "float32", "equirectangular range panorama in metres from the array origin; "
                                       "NaN = unknown / no surface")),
    ("semantic", ("(S, H, W)", "uint8", "0 floor, 1 ceiling, 2 wall, 3 obstacle, 255 ignore")),
    ("energy", ("(S, He, We)", "float32", "true source directions splatted on the beamforming grid, "
                                          "loudest = 1, zeros without sources")),
    ("voxels", ("(S, ceil(D*H*W/8))", "uint8", "np.packbits of the (D, H, W) = (z, y, x) occupancy crop")),
    ("voxel_known", ("(S, ceil(D*H*W/8))", "uint8", "packed mask of voxels whose state is known")),
    ("num_sources", ("(S,)", "int64", "ambient sources in the scene (<= K)")),
    ("source_dirs", ("(S, K, 3)", "float32", "unit vectors array -> source, array frame; NaN padding")),
    ("source_azel_deg", ("(S, K, 2)", "float32", "azimuth, elevation in degrees; NaN padding")),
    ("source_distance", ("(S, K)", "float32", "metres from the array origin; NaN padding")),
    ("source_positions", ("(S, K, 3)", "float32", "world positions; NaN padding")),
    ("source_level_db", ("(S, K)", "float32", "RMS dBFS at 1 m from the source; NaN padding")),
    ("source_kind", ("(S, K)", "int8", "0 noise, 1 babble, 2 harmonic, 3 chirps; -1 padding")),
    ("room_shape", ("(S,)", "int8", "0 shoebox, 1 l_shape, 2 t_shape, 3 corridor; -1 unknown")),
    ("room_height", ("(S,)", "float32", "metres; NaN unknown")),
    ("num_floor_vertices", ("(S,)", "int64", "corners of the floor polygon (<= P)")),
    ("floor_polygon", ("(S, P, 2)", "float32", "counter-clockwise world floor plan; NaN padding")),
    ("num_boxes", ("(S,)", "int64", "furniture boxes (<= B)")),
    ("boxes", ("(S, B, 6)", "float32", "cx, cy, sx, sy, height, yaw (rad); NaN padding")),
    ("floor_material", ("(S,)", "int16", "index into manifest materials; -1 unknown")),
    ("ceiling_material", ("(S,)", "int16", "index into manifest materials; -1 unknown")),
    ("wall_materials", ("(S, P)", "int16", "material of wall i (floor corner i -> i+1); -1 padding")),
    ("box_materials", ("(S, B)", "int16", "material of box j; -1 padding")),
    ("stamp", ("(S,)", "float64", "recording time in seconds (imported); NaN for synthetic scenes")),
    ("has_depth", ("(S,)", "bool", "depth holds ground truth")),
    ("has_semantic", ("(S,)", "bool", "semantic holds ground truth")),
    ("has_voxels", ("(S,)", "bool", "voxels hold ground truth")),
    ("has_energy", ("(S,)", "bool", "energy holds ground truth")),
    ("robot_velocity", ("(S, 3)", "float32", "optional: the robot's velocity during the window, world m/s "
                                             "(datasets with robot.speed_mps)")),
    ("pinhole_depth", ("(S, h, w)", "float32", "optional pinhole front view, z-depth in metres (REP 118), NaN unknown")),
    ("pinhole_semantic", ("(S, h, w)", "uint8", "optional pinhole front view labels")),
])

# shard-level constants (same for all scenes of a dataset)
CONSTANTS: dict[str, tuple[str, str, str]] = OrderedDict([
    ("format_version", ("()", "int64", "shard format version")),
    ("sample_rate", ("()", "int64", "Hz")),
    ("array_name", ("()", "str", "microphone array")),
    ("mic_positions", ("(M, 3)", "float64", "microphone positions in the array frame (m)")),
    ("speaker_position", ("(3,)", "float64", "speaker position in the array frame (m)")),
    ("emitted", ("(L,)", "float32", "the sweep as emitted (peak 1); scale by the manifest's active.level_db")),
    ("voxel_shape", ("(3,)", "int64", "D, H, W (z, y, x) of the occupancy crop")),
    ("voxel_origin", ("(3,)", "float64", "array-frame x, y, z of the crop's lower corner")),
    ("voxel_size", ("(3,)", "float64", "voxel edge lengths along x, y, z")),
])

_PAD = {"float32": np.nan, "float64": np.nan, "int8": -1, "int16": -1, "int64": -1}
_VARIABLE = {  # key -> (pad dimension name, count key)
    "source_dirs": ("K", "num_sources"), "source_azel_deg": ("K", "num_sources"),
    "source_distance": ("K", "num_sources"), "source_positions": ("K", "num_sources"),
    "source_level_db": ("K", "num_sources"), "source_kind": ("K", "num_sources"),
    "floor_polygon": ("P", "num_floor_vertices"), "wall_materials": ("P", "num_floor_vertices"),
    "boxes": ("B", "num_boxes"), "box_materials": ("B", "num_boxes"),
}


class DatasetError(RuntimeError):
    """A dataset directory or shard is missing, inconsistent or incomplete."""


def shard_name(first: int, last: int) -> str:
    return f"shard-{first:07d}-{last:07d}.npz"


def shard_ranges(num_scenes: int, per_shard: int) -> list[tuple[int, int]]:
    """``[(first, last_inclusive), ...]`` covering ``num_scenes`` scenes."""
    return [(s, min(s + per_shard, num_scenes) - 1) for s in range(0, num_scenes, per_shard)]


# keys a shard holds only where its dataset has them
OPTIONAL = ("robot_velocity", "pinhole_depth", "pinhole_semantic")


def stack_scenes(scenes: list[dict], pads: dict[str, int], constants: dict[str, Any]) -> "OrderedDict[str, np.ndarray]":
    """Stack per-scene dicts into shard arrays (fixed key order, padded variable-length fields).

    ``pads``: ``{"K": ..., "P": ..., "B": ...}`` padded sizes.
    """
    if not scenes:
        raise ValueError("a shard needs at least one scene")
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for k, (_, dt, _) in CONSTANTS.items():
        v = constants[k]
        out[k] = np.asarray(v) if dt == "str" else np.asarray(v, dtype=dt)
    for s in scenes:
        s.setdefault("num_floor_vertices", np.int64(len(s["floor_polygon"])))
        s.setdefault("num_boxes", np.int64(len(s["boxes"])))
    for key, (_, dt, _) in SCHEMA.items():
        if key not in scenes[0]:
            if key in OPTIONAL:
                continue
            raise KeyError(f"scene is missing key {key!r}")
        dt = dt.split("|")[0] if key != "audio" else np.asarray(scenes[0][key]).dtype.name
        if key in _VARIABLE:
            dim = pads[_VARIABLE[key][0]]
            rows = []
            for s in scenes:
                a = np.asarray(s[key], dtype=dt)
                if a.shape[0] > dim:
                    raise ValueError(f"{key}: {a.shape[0]} entries exceed the padded size {dim}")
                pad = np.full((dim - a.shape[0],) + a.shape[1:], _PAD[dt], dtype=dt)
                rows.append(np.concatenate([a, pad], axis=0))
            out[key] = np.stack(rows)
        else:
            out[key] = np.stack([np.asarray(s[key], dtype=dt) for s in scenes])
    return out


def write_npz(path: str | Path, arrays: "OrderedDict[str, np.ndarray]") -> None:
    """Write arrays as a compressed ``.npz`` whose bytes depend only on the arrays.

    Written to a temporary name and renamed, so a shard file is either complete or absent.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(arr, order="C"), allow_pickle=False)
    os.replace(tmp, path)




def write_json(path: str | Path, data: dict) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def library_versions() -> dict[str, str]:
    import platform
    import sys
    from importlib import metadata

    out = {"python": sys.version.split()[0], "platform": platform.machine()}
    for name in ("numpy", "scipy", "pyroomacoustics", "open3d", "rosbags", "avperception", "avperception-train"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


# --------------------------------------------------------------------------- reading


def read_manifest(root: str | Path) -> dict:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset directory not found: {root}")
    p = root / MANIFEST
    if not p.is_file():
        raise DatasetError(f"{root} has no {MANIFEST}; is it a dataset made by `avperception-train datagen`?")
    m = json.loads(p.read_text())
    if m.get("format") != FORMAT:
        raise DatasetError(f"{p}: not an {FORMAT} manifest")
    if int(m.get("format_version", 0)) > FORMAT_VERSION:
        raise DatasetError(f"{p}: format version {m['format_version']} is newer than this reader ({FORMAT_VERSION})")
    return m


def speed_of_sound(manifest: dict) -> float:
    """The speed of sound (m/s) the dataset was simulated with (``SPEED_OF_SOUND`` when its manifest does not say)."""
    return float(manifest.get("config", {}).get("acoustics", {}).get("speed_of_sound", SPEED_OF_SOUND))


def panorama_grid(manifest: dict):
    """The :class:`~avperception.dsp.grid.DirectionGrid` of the dataset's depth / semantic panoramas."""
    from avperception.dsp.grid import equirectangular

    g = manifest["grids"]["panorama"]
    el_max, el_min = g["el_deg"]
    return equirectangular(-180.0, 180.0, el_min, el_max, g["resolution_deg"])


def unpack_voxels(packed: np.ndarray, shape) -> np.ndarray:
    """``(..., nbytes)`` packed bits -> ``(..., D, H, W)`` bool."""
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape))
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=-1, count=n)
    return bits.astype(bool).reshape(*np.shape(packed)[:-1], *shape)


def scene_from_shard(arrays: dict[str, np.ndarray], j: int, audio_float: bool = True) -> dict[str, Any]:
    """Scene ``j`` of loaded shard arrays as a dict, padding trimmed, voxels unpacked."""
    s: dict[str, Any] = {}
    for key in SCHEMA:
        if key in arrays:
            s[key] = arrays[key][j]
    for key, (_, count) in _VARIABLE.items():
        if key in s:
            s[key] = s[key][: int(s[count])]
    shape = arrays["voxel_shape"]
    s["voxels"] = unpack_voxels(s["voxels"], shape)
    s["voxel_known"] = unpack_voxels(s["voxel_known"], shape)
    if audio_float and s["audio"].dtype == np.int16:
        s["audio"] = s["audio"].astype(np.float32) / 32767.0
    s["split_name"] = SPLITS[int(s["split"])]
    for key in CONSTANTS:
        s[key] = arrays[key][()] if arrays[key].ndim == 0 else arrays[key]
    s["array_name"] = str(s["array_name"])
    s["sample_rate"] = int(s["sample_rate"])
    return s


class SceneDataset:
    """Numpy reader of a dataset directory (no torch needed).

    ``ds[i]`` is a dict of one scene (see :data:`SCHEMA`; padding trimmed, voxels
    unpacked to ``(D, H, W)`` bool, audio as float32). ``split`` keeps only
    ``train``, ``val`` or ``test`` scenes. Decoded shards are kept in a small LRU
    cache (``cache_shards``), so read in shard order for speed
    (:meth:`iter_shards`, or a sampler that shuffles within shards).
    """

    def __init__(self, root: str | Path, split: str | None = None, cache_shards: int = 4,
                 allow_incomplete: bool = False) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        if not self.manifest.get("complete", False) and not allow_incomplete:
            raise DatasetError(f"{self.root}: the dataset is incomplete (an interrupted run?); "
                               "run the same datagen command again to finish it, or pass allow_incomplete=True")
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        self.split = split
        files = [sh["file"] for sh in self.manifest.get("shards", [])]
        if allow_incomplete and not self.manifest.get("complete", False):
            files = sorted(p.name for p in self.root.glob(SHARD_GLOB))
        self.files = files
        self._cache: OrderedDict[int, dict] = OrderedDict()
        self._cache_size = max(1, int(cache_shards))
        index = []
        for k, name in enumerate(files):
            path = self.root / name
            if not path.is_file():
                raise DatasetError(f"{path} is listed in the manifest but missing")
            with np.load(path, allow_pickle=False) as z:
                sp = z["split"]
            for j in range(len(sp)):
                if split is None or SPLITS[int(sp[j])] == split:
                    index.append((k, j))
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def shard(self, k: int) -> dict[str, np.ndarray]:
        """All arrays of shard ``k`` (cached)."""
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        with np.load(self.root / self.files[k], allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
        self._cache[k] = arrays
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return arrays

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"scene {i} out of range ({len(self)} scenes)")
        k, j = self.index[i]
        return scene_from_shard(self.shard(k), j)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def iter_shards(self) -> Iterator[dict[str, np.ndarray]]:
        """Raw stacked arrays shard by shard (all splits; filter with ``arrays['split']``)."""
        for k in range(len(self.files)):
            yield self.shard(k)

    @property
    def room_ids(self) -> np.ndarray:
        """Sorted unique room ids of the selected scenes."""
        rooms = set()
        for k, name in enumerate(self.files):
            with np.load(self.root / name, allow_pickle=False) as z:
                r, sp = z["room_id"], z["split"]
            for j in range(len(r)):
                if self.split is None or SPLITS[int(sp[j])] == self.split:
                    rooms.add(int(r[j]))
        return np.array(sorted(rooms), dtype=np.int64)


def open_dataset(root: str | Path, split: str | None = None, **kw) -> SceneDataset:
    """Open a dataset directory for reading (see :class:`SceneDataset`)."""
    return SceneDataset(root, split, **kw)
