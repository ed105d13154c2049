"""Baselines trained or computed on the same data: the mean layout and a classical echo time of flight."""

from __future__ import annotations

import numpy as np
import torch


class MeanLayout:
    """Predicts the training set's average room: per-pixel median depth, per-pixel majority
    class, per-voxel occupancy above the threshold that maximises training IoU, mean energy map."""

    def __init__(self, dataset, num_classes: int = 4, max_samples: int = 2000) -> None:
        n = min(len(dataset), max_samples)
        depths, counts, occ, energy = [], None, None, None
        vox = []
        for i in range(n):
            s = dataset[i]
            depths.append(s["depth"].numpy())
            sem = s["semantic"].numpy().astype(np.int64)
            oh = np.stack([(sem == c) for c in range(num_classes)]).astype(np.int64)
            counts = oh if counts is None else counts + oh
            v = s["voxels"].numpy() > 0.5
            vox.append(v)
            occ = v.astype(np.float64) if occ is None else occ + v
            e = s["energy"].numpy()
            energy = e.astype(np.float64) if energy is None else energy + e
        self.depth = np.nanmedian(np.stack(depths), axis=0).astype(np.float32)
        self.semantic = counts.argmax(0).astype(np.uint8)
        freq = occ / n
        best, best_t = -1.0, 0.5
        for t in np.linspace(0.05, 0.95, 19):
            pred = freq > t
            iou = np.mean([np.logical_and(pred, v).sum() / max(np.logical_or(pred, v).sum(), 1) for v in vox[:300]])
            if iou > best:
                best, best_t = iou, t
        self.voxels = freq > best_t
        self.energy = (energy / n).astype(np.float32)

    def __call__(self, batch: dict) -> dict:
        b = batch["audio"].shape[0]
        return {"depth": np.repeat(self.depth[None], b, 0), "semantic": np.repeat(self.semantic[None], b, 0),
                "voxels": np.repeat(self.voxels[None], b, 0), "energy": np.repeat(self.energy[None], b, 0)}


class EchoTimeOfFlight:
    """Classical active sonar: matched-filter the recording with the emitted sweep, skip the direct
    path, and take the first strong echo as the distance to the nearest surface (``c t / 2``).

    It predicts a constant depth panorama at that distance (depth only): what a single-beam
    ultrasonic range finder would tell a robot.
    """

    def __init__(self, sweep: np.ndarray, sample_rate: int, speed_of_sound: float = 343.0,
                 direct_path_ms: float = 1.5, threshold: float = 0.3, max_depth: float = 10.0) -> None:
        self.sweep = np.asarray(sweep, dtype=np.float64)
        self.fs = sample_rate
        self.c = speed_of_sound
        self.skip = int(direct_path_ms * 1e-3 * sample_rate) + len(self.sweep) // 4
        self.threshold = threshold
        self.max_depth = max_depth

    def distance(self, audio: np.ndarray) -> float:
        """``audio (mics, samples)`` -> distance (m) of the first echo after the direct sound."""
        from avperception.dsp.echo import echo_profile

        env = echo_profile(audio, self.sweep).mean(0)
        direct = int(np.argmax(env[: self.skip + len(self.sweep)]))
        start = direct + self.skip
        tail = env[start:]
        if tail.size == 0 or tail.max() <= 0:
            return self.max_depth
        k = int(np.argmax(tail > self.threshold * tail.max()))
        return float(np.clip(self.c * (start + k - direct) / self.fs / 2, 0.05, self.max_depth))

    def __call__(self, batch: dict) -> dict:
        audio = batch["audio"].numpy() if torch.is_tensor(batch["audio"]) else batch["audio"]
        h, w = batch["depth"].shape[-2:]
        d = np.array([self.distance(a) for a in audio], dtype=np.float32)
        return {"depth": np.broadcast_to(d[:, None, None], (len(d), h, w)).copy()}
