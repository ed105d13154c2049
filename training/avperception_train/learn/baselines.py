"""Baselines trained or computed on the same data: the mean layout, a classical echo time of flight,
and classical echo planes (walls from the beamformed echoes)."""

from __future__ import annotations

import numpy as np
import torch

from avperception.constants import SPEED_OF_SOUND


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

    def __init__(self, sweep: np.ndarray, sample_rate: int, speed_of_sound: float = SPEED_OF_SOUND,
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


class EchoPlanes:
    """Classical echo geometry: a plane wall returns the sweep along its normal, so the matched filters
    beamformed towards azimuths in the array's plane (:func:`avperception.dsp.echo.echo_image`) show each
    wall as an echo in the beam facing it, at its distance.

    Per scene: an echo louder in the vertical beam (all mics in phase) than in every horizontal beam
    comes from straight below or above; the strongest such within ``floor_m`` is the floor, the
    strongest at least 1 m beyond it the ceiling. Every horizontal beam's strongest other echo,
    weighted by ``range ** spreading``, is a wall candidate where it beats both neighbouring beams;
    the ``max_walls`` strongest become vertical planes. Each panorama pixel takes the nearest of the
    planes, the floor and the ceiling along its ray (rays no plane faces see the farthest wall
    heard). Depth only, no training; the parameters were chosen on the validation split.
    """

    def __init__(self, sweep: np.ndarray, sample_rate: int, positions: np.ndarray, panorama,
                 speed_of_sound: float = SPEED_OF_SOUND, azimuth_step_deg: float = 5.0, max_walls: int = 6,
                 spreading: float = 1.0, floor_m: tuple[float, float] = (0.25, 1.4), max_depth: float = 10.0) -> None:
        """``panorama``: the dataset's panorama :class:`~avperception.dsp.grid.DirectionGrid`
        (:func:`avperception_train.datagen.shards.panorama_grid`), the pixels :meth:`depth` fills."""
        from avperception.dsp.grid import horizon

        self.sweep = np.asarray(sweep, dtype=np.float64)
        self.fs, self.c = sample_rate, speed_of_sound
        self.positions = np.asarray(positions, dtype=np.float64)
        beams = horizon(azimuth_step_deg)
        self.azimuths = np.deg2rad(beams.azimuth_deg)
        self.directions = np.vstack([beams.vectors, [[0.0, 0.0, 1.0]]])  # the last: broadside (floor and ceiling)
        self.max_walls, self.spreading, self.floor_m, self.max_depth = max_walls, spreading, floor_m, max_depth
        self.shape = tuple(panorama.shape)
        self.pixel_az = np.deg2rad(panorama.as_image(panorama.azimuth_deg))  # (H, W)
        self.pixel_el = np.deg2rad(panorama.as_image(panorama.elevation_deg))

    def planes(self, audio: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
        """``audio (M, N)`` -> floor distance, ceiling distance (m), wall normal azimuths (rad) and distances (m)."""
        from avperception.dsp.echo import echo_image

        img = echo_image(audio, self.sweep, self.positions, self.directions, self.fs, self.c)  # (A + 1, N)
        r = np.arange(img.shape[1]) * self.c / self.fs / 2
        vertical, beams = img[-1], img[:-1]
        # the ring is planar: an echo from straight below or above is louder in the vertical beam than in
        # any horizontal one, an echo from a wall louder in the beam towards it
        flat = vertical > beams.max(axis=0)

        def strongest(where: np.ndarray, default: float) -> float:
            pick = where & flat if np.any(where & flat) else where
            return float(r[pick][np.argmax(vertical[pick])]) if pick.any() else default

        floor = strongest((r > self.floor_m[0]) & (r < self.floor_m[1]), self.floor_m[1])
        ceiling = strongest((r > floor + 1.0) & (r < self.max_depth), self.max_depth)
        free = (r > 0.3) & (np.abs(r - floor) > 0.1) & (np.abs(r - ceiling) > 0.1) & (r < self.max_depth) & ~flat
        best = np.argmax(np.where(free[None], beams, 0.0), axis=1)  # each beam's strongest echo
        power = beams[np.arange(len(beams)), best] * r[best] ** self.spreading
        a = np.array([b for b in range(len(beams)) if power[b] >= max(power[b - 1], power[(b + 1) % len(beams)])],
                     dtype=int)
        walls = a[np.argsort(-power[a])[: self.max_walls]]
        return floor, ceiling, self.azimuths[walls], r[best[walls]]

    def depth(self, audio: np.ndarray) -> np.ndarray:
        """``audio (M, N)`` -> ``(H, W)`` depth panorama on the dataset's panorama grid."""
        floor, ceiling, normals, dists = self.planes(np.asarray(audio, dtype=np.float64))
        horizontal = np.full(self.shape, float(dists.max(initial=2.5)))
        for a, d in zip(normals, dists):
            cos = np.cos(self.pixel_az - a)  # a vertical plane at distance d along a is d / cos away at azimuth az
            horizontal = np.where(cos > 0.15, np.minimum(horizontal, d / np.maximum(cos, 0.15)), horizontal)
        sin = np.sin(self.pixel_el)
        depth = horizontal / np.maximum(np.cos(self.pixel_el), 1e-3)
        depth = np.where(sin < -1e-3, np.minimum(depth, floor / np.maximum(-sin, 1e-3)), depth)
        depth = np.where(sin > 1e-3, np.minimum(depth, ceiling / np.maximum(sin, 1e-3)), depth)
        return np.clip(depth, 0.05, self.max_depth).astype(np.float32)

    def __call__(self, batch: dict) -> dict:
        audio = batch["audio"].numpy() if torch.is_tensor(batch["audio"]) else batch["audio"]
        if tuple(batch["depth"].shape[-2:]) != self.shape:
            raise ValueError(f"panorama {tuple(batch['depth'].shape[-2:])} is not the grid's {self.shape}")
        return {"depth": np.stack([self.depth(a) for a in audio])}
