"""``torch.utils.data`` access to the shards (torch is imported here only).

    from avperception_train.datagen.torch_dataset import SceneTorchDataset, ShardGroupedSampler
    ds = SceneTorchDataset("data/scenes", split="train")
    loader = DataLoader(ds, batch_size=32, sampler=ShardGroupedSampler(ds, seed=0), num_workers=2)

Each item is a dict of tensors with fixed shapes, so the default collate
stacks them: ``audio (M, N)`` float32, ``depth (H, W)`` float32 (NaN unknown),
``depth_mask (H, W)`` bool, ``semantic (H, W)`` int64 (255 ignore),
``energy (He, We)`` float32, ``voxels (D, H, W)`` float32 0/1,
``voxel_known (D, H, W)`` bool, ``sources (K, 3)`` float32 NaN-padded,
``num_sources``, ``robot_pose (4,)``, ``room_id``, ``scene_index``, ``split``,
``active`` and the ``has_*`` flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from .shards import SceneDataset

try:
    import torch
    from torch.utils.data import Dataset, Sampler
except ImportError as e:  # pragma: no cover
    raise ImportError("avperception_train.datagen.torch_dataset needs torch (pip install torch)") from e




class SceneTorchDataset(Dataset):
    """A map-style dataset over a shard directory (see :class:`~.shards.SceneDataset`).

    Args:
        root: dataset directory.
        split: ``train``, ``val``, ``test`` or None for all.
        transform: optional callable on the item dict (e.g. spectrograms, augmentation).
        cache_shards: decoded shards kept per worker process.
    """

    def __init__(self, root: str | Path, split: str | None = None, transform: Callable | None = None,
                 cache_shards: int = 4) -> None:
        self.reader = SceneDataset(root, split, cache_shards=cache_shards)
        self.transform = transform
        self.max_sources = int(self.reader.manifest["pads"]["K"])

    def __len__(self) -> int:
        return len(self.reader)

    @property
    def manifest(self) -> dict:
        return self.reader.manifest

    def __getitem__(self, i: int) -> dict:
        s = self.reader[i]
        src = np.full((self.max_sources, 3), np.nan, dtype=np.float32)
        k = int(s["num_sources"])
        src[:k] = s["source_dirs"]
        item = {
            "audio": torch.from_numpy(np.asarray(s["audio"], dtype=np.float32)),
            "depth": torch.from_numpy(np.asarray(s["depth"], dtype=np.float32)),
            "depth_mask": torch.from_numpy(np.isfinite(s["depth"])),
            "semantic": torch.from_numpy(np.asarray(s["semantic"], dtype=np.int64)),
            "energy": torch.from_numpy(np.asarray(s["energy"], dtype=np.float32)),
            "voxels": torch.from_numpy(s["voxels"].astype(np.float32)),
            "voxel_known": torch.from_numpy(s["voxel_known"]),
            "sources": torch.from_numpy(src),
            "num_sources": torch.tensor(k),
            "robot_pose": torch.from_numpy(np.asarray(s["robot_pose"], dtype=np.float32)),
            "room_id": torch.tensor(int(s["room_id"])),
            "scene_index": torch.tensor(int(s["scene_index"])),
            "split": torch.tensor(int(s["split"])),
            "active": torch.tensor(bool(s["active"])),
        }
        for key in ("has_depth", "has_semantic", "has_voxels", "has_energy"):
            item[key] = torch.tensor(bool(s[key]))
        if "pinhole_depth" in s:
            item["pinhole_depth"] = torch.from_numpy(np.asarray(s["pinhole_depth"], dtype=np.float32))
            item["pinhole_semantic"] = torch.from_numpy(np.asarray(s["pinhole_semantic"], dtype=np.int64))
        return self.transform(item) if self.transform is not None else item


class ShardGroupedSampler(Sampler):
    """Shuffles shards, then scenes within each shard: random order, few shard decodes.

    Deterministic for a given ``seed`` and :meth:`set_epoch` value.
    """

    def __init__(self, dataset: SceneTorchDataset, seed: int = 0) -> None:
        self.index = dataset.reader.index
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.index)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        by_shard: dict[int, list[int]] = {}
        for pos, (k, _) in enumerate(self.index):
            by_shard.setdefault(k, []).append(pos)
        order = []
        for k in rng.permutation(sorted(by_shard)):
            order += list(rng.permutation(by_shard[int(k)]))
        return iter(int(i) for i in order)
