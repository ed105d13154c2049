"""Torch datasets over the data engine's shards (held in memory: a split of 20k scenes is ~3 GB)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..datagen.shards import SPLITS, SceneDataset, unpack_voxels

KEYS = ("audio", "depth", "semantic", "voxels", "energy")


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


class InMemoryScenes(torch.utils.data.Dataset):
    """One split of a dataset directory as tensors.

    Items: ``audio (M, N)`` float32, ``depth (H, W)`` float32 m (NaN unknown),
    ``semantic (H, W)`` int64 (255 ignore), ``voxels (D, H, W)`` float32 0/1,
    ``energy (H, W)`` float32.
    """

    def __init__(self, root: str | Path, split: str, max_samples: int = 0) -> None:
        ds = SceneDataset(root, None)
        self.root = Path(root)
        want = SPLITS.index(split)
        parts: dict[str, list] = {k: [] for k in KEYS}
        consts = None
        n = 0
        for arrays in ds.iter_shards():
            keep = np.nonzero(arrays["split"] == want)[0]
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
            parts["energy"].append(arrays["energy"][keep])
            n += len(keep)
            if max_samples and n >= max_samples:
                break
        if consts is None:
            raise ValueError(f"{root}: no '{split}' scenes (splits are by room; generate more scenes?)")
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
            emitted=np.asarray(consts["emitted"], dtype=np.float32),
        )

    def __len__(self) -> int:
        return len(self.data["audio"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        d = self.data
        return {
            "audio": torch.from_numpy(np.ascontiguousarray(d["audio"][i])),
            "depth": torch.from_numpy(d["depth"][i]),
            "semantic": torch.from_numpy(d["semantic"][i].astype(np.int64)),
            "voxels": torch.from_numpy(unpack_voxels(d["voxels"][i], self.voxel_shape).astype(np.float32)),
            "energy": torch.from_numpy(d["energy"][i]),
        }


def make_datasets(root: str | Path, max_train: int = 0) -> tuple[InMemoryScenes, InMemoryScenes | None, DataInfo]:
    """Train and val splits of a dataset directory, and what the model must fit."""
    train = InMemoryScenes(root, "train", max_train)
    try:
        val = InMemoryScenes(root, "val")
    except ValueError:
        val = None
    return train, val, train.info
