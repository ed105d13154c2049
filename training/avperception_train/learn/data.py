"""Torch datasets over the data engine's shards (held in memory: a split of 20k scenes is ~3 GB)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from avperception.constants import SPEED_OF_SOUND

from ..datagen.geometry import CEILING, FLOOR, IGNORE, WALL
from ..datagen.shards import SPLITS, SceneDataset, speed_of_sound, unpack_voxels

KEYS = ("audio", "depth", "semantic", "voxels", "voxel_known", "energy", "has_energy")


@dataclass
class DataInfo:
    """What the network must fit: taken from the dataset's constants."""

    num_mics: int
    sample_rate: int
    num_samples: int
    pano_shape: tuple[int, int]
    voxel_size: int
    voxel_size_m: float
    array: str
    array_positions: list = field(default_factory=list)
    emitted: np.ndarray | None = None
    speed_of_sound: float = SPEED_OF_SOUND
    el_range_deg: tuple[float, float] = (-90.0, 90.0)  # the panorama's lowest and highest elevation


def room_layout(depth: np.ndarray, semantic: np.ndarray, el_range_deg: tuple[float, float]
                ) -> tuple[np.ndarray, np.ndarray]:
    """The room a depth panorama shows, as a layout head predicts it.

    Args:
        depth: ``(H, W)`` m along each pixel's ray (NaN unknown); rows from the highest elevation down.
        semantic: ``(H, W)`` class of each pixel.
        el_range_deg: the panorama's lowest and highest elevation.
    Returns:
        ``walls (W,)``: median horizontal distance of each column's wall pixels (NaN where the column
        shows no wall); ``heights (2,)``: median distance of the floor below and of the ceiling above
        the array (NaN where none is seen). float32.
    """
    import warnings

    from avperception.models.student import panorama_elevations

    el = panorama_elevations(depth.shape[0], *el_range_deg)[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: no wall seen there
        walls = np.nanmedian(np.where(semantic == WALL, depth * np.cos(el), np.nan), axis=0)
        heights = [np.nanmedian(np.where(semantic == cls, depth * sign * np.sin(el), np.nan))
                   for cls, sign in ((FLOOR, -1.0), (CEILING, 1.0))]
    return walls.astype(np.float32), np.asarray(heights, dtype=np.float32)


def _rz(k: int) -> np.ndarray:
    c, s = [(1, 0), (0, 1), (-1, 0), (0, -1)][k % 4]
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


def voxel_centres(voxel_shape, voxel_origin, voxel_size) -> np.ndarray:
    """``(D*H*W, 3)`` array-frame x, y, z of the voxel centres, in the order of a flattened ``(D, H, W)`` grid
    (D along z, H along y, W along x)."""
    d, hh, ww = (int(v) for v in voxel_shape)
    zz, yy, xx = np.meshgrid(np.arange(d), np.arange(hh), np.arange(ww), indexing="ij")
    return np.asarray(voxel_origin) + (np.stack([xx, yy, zz], -1).reshape(-1, 3) + 0.5) * np.asarray(voxel_size)


def in_camera(directions: np.ndarray, fov_deg) -> np.ndarray:
    """Whether each direction ``(..., 3)`` (array frame) lies in the view of a pinhole camera at the array's
    origin looking along +x with ``fov_deg = (horizontal, vertical)`` full angles."""
    th, tv = (np.tan(np.deg2rad(float(f)) / 2) for f in fov_deg)
    x, y, z = directions[..., 0], directions[..., 1], directions[..., 2]
    return (x > 0) & (np.abs(y) <= th * x) & (np.abs(z) <= tv * x)


class CameraLabels:
    """The labels a forward depth camera would give, cut from a full synthetic scene.

    A pinhole camera at the array's origin looks along +x (``fov_deg``: horizontal and vertical full angles,
    e.g. 87 x 58 for a RealSense D435). Depth and classes stay where its view reaches (NaN and ``IGNORE``
    elsewhere); a voxel stays known where its centre is in view and not behind the surface the camera sees
    there (free space before it, the surface itself), NaN elsewhere; there is no energy map (NaN). This is
    what ``import-bag`` makes of a real recording with a depth camera at the origin (which has no classes
    either, unless a segmentation network labels the camera's image).
    """

    def __init__(self, fov_deg, pano_shape, el_range_deg, voxel_shape, voxel_origin, voxel_size) -> None:
        from scipy.spatial import cKDTree

        from avperception.dsp.grid import equirectangular

        if len(fov_deg) != 2 or not all(0 < float(f) < 180 for f in fov_deg):
            raise ValueError(f"camera field of view must be [horizontal, vertical] degrees in (0, 180), got {fov_deg}")
        h, w = pano_shape
        grid = equirectangular(-180, 180, el_range_deg[0], el_range_deg[1], 360.0 / w)
        if grid.shape != (h, w):
            raise ValueError(f"panorama {h}x{w} is not the equirectangular grid over elevations {el_range_deg}")
        self.view = in_camera(grid.vectors, fov_deg).reshape(h, w)
        c = voxel_centres(voxel_shape, voxel_origin, voxel_size)
        self.vox_range = np.linalg.norm(c, axis=1)
        dirs = c / np.maximum(self.vox_range, 1e-9)[:, None]
        self.vox_in = in_camera(dirs, fov_deg)  # a centre at the origin has no direction: not in view
        self.vox_pixel = cKDTree(grid.vectors).query(dirs)[1]  # the panorama pixel along each voxel's ray
        self.tol = 0.5 * float(np.linalg.norm(voxel_size))  # half a voxel's diagonal: the surface is seen
        self.voxel_shape = tuple(int(v) for v in voxel_shape)

    def apply(self, item: dict) -> dict:
        """One scene's full labels -> what the camera sees (audio untouched)."""
        out = dict(item)
        depth = item["depth"]
        with np.errstate(invalid="ignore"):
            d = depth.reshape(-1)[self.vox_pixel]
            seen = self.vox_in & (self.vox_range <= d + self.tol)  # NaN depth: nothing seen there
        out["depth"] = np.where(self.view, depth, np.nan).astype(np.float32)
        out["semantic"] = np.where(self.view, item["semantic"], IGNORE).astype(item["semantic"].dtype)
        out["voxels"] = np.where(seen.reshape(self.voxel_shape), item["voxels"], np.nan).astype(np.float32)
        out["energy"] = np.full_like(item["energy"], np.nan)
        return out


def _match(points: np.ndarray, targets: np.ndarray, tol: float) -> np.ndarray | None:
    """Index of the target each point lands on, or None when one does not land on any."""
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(targets).query(points)
    return idx if dist.max() <= tol else None


class Symmetries:
    """Exact data augmentation from the array's own symmetry.

    A rotation of the scene by a multiple of 90 deg about z, or a mirror y -> -y,
    that maps the microphones (and the speaker) onto themselves turns one
    recording into another valid one: permute the channels, roll/flip the
    panoramas, rotate/flip the voxel crop. Only the transforms the array admits
    are used (all 8 for a ring of 4k microphones around a centred speaker; just
    the identity for an asymmetric array).
    """

    def __init__(self, mic_positions, speaker_position, pano_shape, voxel_shape, voxel_origin, voxel_size) -> None:
        from avperception.dsp.grid import equirectangular

        mics = np.asarray(mic_positions, dtype=np.float64)
        spk = np.asarray(speaker_position, dtype=np.float64).reshape(1, 3)
        h, w = pano_shape
        grid = equirectangular(-180, 180, -90, 90, 360.0 / w)
        pano_ok = grid.shape == (h, w)
        centres = voxel_centres(voxel_shape, voxel_origin, voxel_size)
        self.transforms = []
        for flip in (False, True):
            for k in range(4):
                t = _rz(k) @ np.diag([1.0, -1.0 if flip else 1.0, 1.0])
                inv = t.T  # orthogonal
                audio = _match(mics @ inv.T, mics, 1e-3)  # new mic j hears old mic audio[j]
                if audio is None or _match(spk @ t.T, spk, 1e-3) is None or not pano_ok:
                    continue
                pano = _match(grid.vectors @ inv.T, grid.vectors, 1e-6)
                vox = _match(centres @ inv.T, centres, 1e-6 + 1e-3 * float(np.min(voxel_size)))
                if pano is None or vox is None:
                    continue
                self.transforms.append({"k": k, "flip": flip, "audio": audio, "pano": pano, "voxels": vox})

    def __len__(self) -> int:
        return len(self.transforms)

    def apply(self, item: dict, i: int) -> dict:
        t = self.transforms[i]
        h, w = item["depth"].shape
        out = dict(item)
        out["audio"] = item["audio"][t["audio"]]
        for key in ("depth", "semantic", "energy", "view"):
            if key in item:
                out[key] = item[key].reshape(-1)[t["pano"]].reshape(h, w)
        shape = item["voxels"].shape
        out["voxels"] = item["voxels"].reshape(-1)[t["voxels"]].reshape(shape)
        return out


class InMemoryScenes(torch.utils.data.Dataset):
    """One split of a dataset directory as tensors.

    Items: ``audio (M, N)`` float32, ``depth (H, W)`` float32 m (NaN unknown),
    ``semantic (H, W)`` int64 (255 ignore), ``voxels (D, H, W)`` float32 0/1 (NaN where the scene's
    ``voxel_known`` mask says unknown), ``energy (H, W)`` float32 (NaN where the scene has no energy
    ground truth), and the room's layout from the depth (:func:`room_layout`): ``walls (W,)`` and
    ``heights (2,)`` float32 m (NaN unknown).

    ``skip_samples`` leaves out the split's first scenes (then ``max_samples`` counts from there).
    ``camera_fov_deg`` (horizontal, vertical) cuts the labels to what a forward depth camera sees
    (:class:`CameraLabels`) and adds its view ``view (H, W)`` bool, rotated with the scene by the
    augmentation; with ``full_labels`` the labels stay whole and only ``view`` is added (a teacher that
    sees the camera's view and learns the whole room).
    ``echo_free`` adds ``echo_free (H, W)`` bool: the pixels whose surface returns no echo of the sweep, and
    ``unreflected (H, W)`` bool: those whose surface has no point that reflects the sweep straight back to the array
    (:func:`~avperception_train.datagen.scene.silent_pixels`, cast again from the rooms the shards store), for
    scoring what can be heard apart from what cannot; not with ``augment``. An imported recording stores no room
    and gets no mask: what its surfaces return is not known.
    """

    def __init__(self, root: str | Path, split: str, max_samples: int = 0, augment: bool = False,
                 skip_samples: int = 0, camera_fov_deg=(), full_labels: bool = False, echo_free: bool = False) -> None:
        if echo_free and augment:
            raise ValueError("echo_free masks are for evaluation: they are not turned with the augmentation")
        ds = SceneDataset(root, None)
        cfg = None
        if echo_free and ds.manifest.get("source") == "synthetic":
            from ..datagen.config import config_from_dict
            from ..datagen.scene import silent_pixels

            cfg = config_from_dict(ds.manifest["config"])
        self.root = Path(root)
        want = SPLITS.index(split)
        parts: dict[str, list] = {k: [] for k in KEYS + (("echo_free", "unreflected") if cfg is not None else ())}
        consts = None
        n, skipped = 0, 0
        for arrays in ds.iter_shards():
            keep = np.nonzero(arrays["split"] == want)[0]
            if skipped < skip_samples:
                drop = min(len(keep), skip_samples - skipped)
                keep, skipped = keep[drop:], skipped + drop
            if max_samples:
                keep = keep[: max(0, max_samples - n)]
            if len(keep) == 0:
                continue
            consts = arrays
            audio = arrays["audio"][keep]
            parts["audio"].append(audio.astype(np.float32) / 32767.0 if audio.dtype == np.int16 else audio)
            parts["depth"].append(arrays["depth"][keep])
            parts["semantic"].append(arrays["semantic"][keep])
            parts["voxels"].append(arrays["voxels"][keep])  # packed; unpacked per item
            parts["voxel_known"].append(arrays["voxel_known"][keep])
            parts["energy"].append(arrays["energy"][keep])
            parts["has_energy"].append(arrays["has_energy"][keep])
            if cfg is not None:
                quiet, unreflected = silent_pixels(cfg, arrays, keep)
                parts["echo_free"].append(quiet)
                parts["unreflected"].append(unreflected)
            n += len(keep)
            if max_samples and n >= max_samples:
                break
        if consts is None:
            skip = f" after the first {skip_samples}" if skip_samples else ""
            only = ds.manifest.get("only_splits")
            why = (f"it holds only the {', '.join(only)} scenes, made with datagen --splits"
                   if only and split not in only else "splits are by room; generate more scenes?")
            raise ValueError(f"{root}: no '{split}' scenes{skip} ({why})")
        self.data = {k: np.concatenate(v) for k, v in parts.items()}
        self.voxel_shape = tuple(int(s) for s in consts["voxel_shape"])
        pano = self.data["depth"].shape[1:]
        if self.data["energy"].shape[1:] != pano:
            raise ValueError(f"energy grid {self.data['energy'].shape[1:]} differs from the panorama {pano}; "
                             "generate with energy.resolution_deg equal to panorama.resolution_deg")
        if len(set(self.voxel_shape)) != 1:
            raise ValueError(f"the student needs a cubic voxel grid, got {self.voxel_shape}")
        self.info = DataInfo(
            num_mics=int(self.data["audio"].shape[1]), sample_rate=int(np.asarray(consts["sample_rate"]).reshape(-1)[0]),
            num_samples=int(self.data["audio"].shape[2]), pano_shape=(int(pano[0]), int(pano[1])),
            voxel_size=self.voxel_shape[0], voxel_size_m=float(np.mean(consts["voxel_size"])),
            array=str(np.asarray(consts["array_name"]).reshape(-1)[0]), array_positions=np.asarray(consts["mic_positions"]).tolist(),
            emitted=np.asarray(consts["emitted"], dtype=np.float32), speed_of_sound=speed_of_sound(ds.manifest),
            el_range_deg=tuple(sorted(float(e) for e in ds.manifest["grids"]["panorama"]["el_deg"])),
        )
        self.symmetries = Symmetries(consts["mic_positions"], consts["speaker_position"], pano, self.voxel_shape,
                                     consts["voxel_origin"], consts["voxel_size"]) if augment else None
        self.camera = (CameraLabels(camera_fov_deg, pano, self.info.el_range_deg, self.voxel_shape,
                                    consts["voxel_origin"], consts["voxel_size"]) if len(camera_fov_deg) else None)
        self.full_labels = full_labels

    def __len__(self) -> int:
        return len(self.data["audio"])

    def item(self, i: int) -> dict[str, np.ndarray]:
        """Scene ``i`` as numpy arrays (no augmentation; cut to the camera's view when there is one)."""
        d = self.data
        known = unpack_voxels(d["voxel_known"][i], self.voxel_shape)
        voxels = np.where(known, unpack_voxels(d["voxels"][i], self.voxel_shape), np.nan).astype(np.float32)
        energy = d["energy"][i] if d["has_energy"][i] else np.full_like(d["energy"][i], np.nan)
        item = {"audio": d["audio"][i], "depth": d["depth"][i], "semantic": d["semantic"][i].astype(np.int64),
                "voxels": voxels, "energy": energy}
        if "echo_free" in d:
            item["echo_free"], item["unreflected"] = d["echo_free"][i], d["unreflected"][i]
        if self.camera is not None:
            if not self.full_labels:
                item = self.camera.apply(item)
            item["view"] = self.camera.view
        return item

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = self.item(i)
        if self.symmetries is not None and len(self.symmetries) > 1:
            item = self.symmetries.apply(item, int(np.random.randint(len(self.symmetries))))
        item["walls"], item["heights"] = room_layout(item["depth"], item["semantic"], self.info.el_range_deg)
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in item.items()}


def data_dirs(root: str | Path) -> list[Path]:
    """The dataset directories a ``--data`` value names: one directory, or several joined by commas."""
    parts = [p.strip() for p in str(root).split(",")]
    if not all(parts):
        raise ValueError(f"--data {root!r}: an empty directory name (give DIR or DIR1,DIR2,...)")
    return [Path(p) for p in parts]


def split_scenes(data: str | Path, split: str) -> list[tuple[Path, int]]:
    """``(dataset, scenes of split)`` for each dataset a ``--data`` value names (from their manifests)."""
    from ..datagen.shards import read_manifest

    return [(d, int(read_manifest(d)["splits"][split]["scenes"])) for d in data_dirs(str(data))]


def _info_differences(a: DataInfo, b: DataInfo) -> list[str]:
    """The fields in which two datasets' contracts differ (what one network cannot fit at once)."""
    out = []
    for f in fields(DataInfo):
        x, y = getattr(a, f.name), getattr(b, f.name)
        same = (x is None) == (y is None) and (x is None or np.array_equal(np.asarray(x), np.asarray(y)))
        if not same:
            out.append(f.name if f.name == "emitted" else f"{f.name} {x} vs {y}")
    return out


def make_datasets(root: str | Path, max_train: int = 0, augment: bool = True, skip_train: int = 0,
                  camera_fov_deg=(), full_labels: bool = False):
    """Train (augmented by the array's symmetries) and val splits of a dataset directory, and what the model
    must fit. ``camera_fov_deg`` and ``full_labels`` apply to both splits (:class:`InMemoryScenes`).

    ``root`` may name several directories joined by commas (e.g. the standard and the wide distribution):
    their splits are concatenated, ``max_train`` and ``skip_train`` apply to each, and they must share the
    array, sweep, audio length and grids (a :class:`ValueError` names every difference)."""
    from torch.utils.data import ConcatDataset

    trains, vals = [], []
    for d in data_dirs(root):
        trains.append(InMemoryScenes(d, "train", max_train, augment, skip_train, camera_fov_deg, full_labels))
        try:
            vals.append(InMemoryScenes(d, "val", camera_fov_deg=camera_fov_deg, full_labels=full_labels))
        except ValueError:
            pass
        diff = _info_differences(trains[0].info, trains[-1].info)
        if diff:
            raise ValueError(f"datasets {trains[0].root} and {d} cannot train one network: they differ in "
                             + "; ".join(diff))
    if len(trains) == 1:
        return trains[0], (vals[0] if vals else None), trains[0].info
    return ConcatDataset(trains), (ConcatDataset(vals) if vals else None), trains[0].info
