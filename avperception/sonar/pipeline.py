"""The learned half of the pipeline: audio and pings in, one set of learned outputs per aligned ping out.

No ROS here: the perception node, ``avperception infer``, the replay evaluator and the benchmarks all drive
:class:`SonarPipeline`. It loads a model bundle, checks that it fits the array (the one
:func:`~avperception.inference.bundle.check_fits`), aligns each ping's window on its direct path
(:class:`~avperception.sonar.align.PingAligner`), runs the bundle's backend and decodes the outputs.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ..config import MAX_ARRAY_HEIGHT_M, ArrayGeometry, ConfigError, SonarConfig


def blank_pings(block: np.ndarray, t_first: float, onsets, blank_s: float, fs: int) -> np.ndarray:
    """``block (mics, n)`` starting at ``t_first`` with ``blank_s`` seconds after each onset in ``onsets`` zeroed
    (a copy where anything is)."""
    n = block.shape[1]
    out = block
    for t in onsets:
        a = int(round((t - t_first) * fs))
        b = a + int(round(blank_s * fs))
        if b > 0 and a < n:
            if out is block:
                out = block.copy()
            out[:, max(a, 0): min(b, n)] = 0.0
    return out


class SonarPipeline:
    """Pings and audio -> :class:`~avperception.inference.outputs.SonarOutputs`.

    Args:
        array: the microphone array (must fit the bundle).
        config: :class:`~avperception.config.SonarConfig` (model, backend, threads, detection, search span).
        sample_rate, speed_of_sound: the stream's (checked against the bundle).
        capacity_s: audio kept for alignment.
        ping_period_s: expected time between pings (helps detection; None: unknown).
        log: where backend choices and fallbacks are reported.
        bundle: an already loaded bundle (else ``config.model`` is loaded).
    """

    def __init__(self, array: ArrayGeometry, config: SonarConfig | None = None, sample_rate: int = 16000,
                 speed_of_sound: float | None = None, capacity_s: float = 4.0, ping_period_s: float | None = None,
                 log: Callable[[str], None] | None = None, bundle=None) -> None:
        from ..inference.backends import check_array_height, make_backend, require_height_input
        from ..inference.bundle import check_fits, load_bundle
        from .align import PingAligner
        from .onset import DirectPath
        from .stack import PingStack

        self.config = config or SonarConfig()
        self.config.validate()
        self.bundle = bundle if bundle is not None else load_bundle(self.config.model, array=array.name)
        check_fits(self.bundle, array, sample_rate=sample_rate, speed_of_sound=speed_of_sound)
        try:
            check_array_height(self.bundle, self.config.array_height_m)
        except ValueError as e:
            raise ConfigError(f"sonar.array_height_m: {e}") from None
        if self.config.floor_frame:
            try:
                require_height_input(self.bundle)
            except ValueError as e:
                raise ConfigError(f"sonar.floor_frame: {e}") from None
        # the height the model is given (m; 0: unknown): sonar.array_height_m, or the one read from TF
        self.array_height_m = float(self.config.array_height_m)
        self.array = array
        b = self.bundle
        self.direct = DirectPath.of_bundle(b)
        self.aligner = PingAligner(array.num_mics, b.sample_rate, b.window_samples, self.direct,
                                   capacity_s=capacity_s, search=self.config.search_samples,
                                   detect=self.config.detect, ping_period_s=ping_period_s,
                                   max_pending=self.config.max_pending_pings)
        self.backend = make_backend(b, self.config.backend, threads=self.config.threads, log=log,
                                    engine_cache_dir=self.config.engine_cache_dir or None,
                                    force_engine_update=self.config.force_engine_update)
        self.infer_ms: list[float] = []
        c = self.config
        # sonar.average_pings: the windows of consecutive pings averaged while the array stands still in still_frame
        self.stack = PingStack(c.average_pings, c.average_max_age_s, c.still_motion_m, c.still_turn_deg,
                               needs_pose=bool(c.still_frame))
        self.pose: tuple[np.ndarray, np.ndarray] | None = None  # the array in still_frame, read from TF
        self._pose_version: tuple | None = None  # the TF chain's version behind self.pose (None: not from TF)
        self._window_version: tuple | None = None  # ... when the last window took it
        self.stale_poses = 0  # windows heard alone because no transform had come since the window before

    @property
    def blank_s(self) -> float:
        """Seconds the beamformer leaves out after each onset: the sweep and ``config.blank_ms`` after it (0: none)."""
        if self.config.blank_ms <= 0:
            return 0.0
        return len(self.direct.emitted) / self.direct.fs + self.config.blank_ms * 1e-3

    @property
    def window_samples(self) -> int:
        return self.bundle.window_samples

    def push_audio(self, block: np.ndarray, stamp: float | None, sequence: int | None = None) -> None:
        """``(mics, n)`` channel-mapped audio whose first sample was captured at ``stamp`` (s)."""
        self.aligner.push_audio(np.asarray(block, dtype=np.float32), stamp, sequence)

    def push_ping(self, stamp: float, sequence: int, onset_known: bool = True, sweep_id: str = "") -> bool:
        """A ping whose sweep left the speaker at ``stamp`` (the audio's clock). ``sweep_id``: the sweep it names
        (a Ping message's; "": not said). A ping of another sweep than the bundle's is not run (the model hears
        only its own) and counted as ``skipped['sweep_mismatch']``; returns whether it was queued."""
        if sweep_id and sweep_id != self.bundle.sweep_id:
            self.aligner.skipped["sweep_mismatch"] += 1
            return False
        self.aligner.push_ping(stamp, sequence, onset_known)
        return True

    def infer(self, audio: np.ndarray, stamp: float = 0.0, array_height: float | None = None,
              pings_averaged: int = 1):
        """Run the bundle on one aligned window ``(mics, window_samples)`` (sample 0 = the sweep's onset), given the
        array's height ``array_height`` (m; None: :attr:`array_height_m`, the configured or TF-read one);
        ``pings_averaged``: how many pings' windows ``audio`` is the mean of (:meth:`stack_window`), recorded on
        the outputs."""
        from ..inference.outputs import decode

        x = np.asarray(audio, dtype=np.float32)
        want = (self.array.num_mics, self.window_samples)
        if x.shape != want:
            raise ValueError(f"expected a {want} window (mics, samples; sample 0 = the sweep's onset), got {x.shape}")
        t0 = time.perf_counter()
        raw = self.backend.run(x, self.array_height_m if array_height is None else array_height)
        out = decode(self.bundle, raw)
        out.stamp = float(stamp)
        out.pings_averaged = int(pings_averaged)
        out.infer_ms = (time.perf_counter() - t0) * 1e3
        self.infer_ms.append(out.infer_ms)
        return out

    def height_from_tf(self, tree) -> str | None:
        """With ``config.floor_frame``: the array's height above that frame, read from ``tree`` (an
        :class:`~avperception.eval.bagio.TransformTree` fed with ``/tf`` and ``/tf_static``: the z of the array
        frame's origin in the floor frame), becomes the height the model is given. Returns why it did not, when it
        could not (no such transform yet, or a height outside (0, ``MAX_ARRAY_HEIGHT_M``] m): the last one stands."""
        floor = self.config.floor_frame
        if not floor:
            return None
        got = tree.lookup(floor, self.array.frame_id)
        if got is None:
            return f"no transform from {floor} to {self.array.frame_id} yet"
        z = float(got[1][2])
        if not 0 < z <= MAX_ARRAY_HEIGHT_M:
            return f"the array is {z:.3f} m above {floor}: not a height in (0, {MAX_ARRAY_HEIGHT_M:g}] m"
        self.array_height_m = z
        return None

    def pose_from_tf(self, tree) -> str | None:
        """With ``config.average_pings`` above 1 and ``config.still_frame``: the array's pose in that frame, read
        from ``tree`` (a :class:`~avperception.eval.bagio.TransformTree`), becomes the pose the next windows are
        taken at (:meth:`stack_window`). Returns why there is none, when there is none (the window is then taken
        alone)."""
        frame = self.config.still_frame
        if self.config.average_pings == 1 or not frame:
            return None
        self.pose = tree.lookup(frame, self.array.frame_id)
        self._pose_version = tree.version(frame, self.array.frame_id)
        return None if self.pose is not None else f"no transform from {frame} to {self.array.frame_id} yet"

    def stack_window(self, window) -> tuple[np.ndarray, int]:
        """The audio to run for an :class:`~avperception.sonar.align.AlignedWindow`: the mean of it and the
        windows before it taken at the same pose (``config.average_pings``; :attr:`pose`), and how many. A pose
        read from TF counts only when a moving transform of its chain was published again since the window before
        (an odometry that stopped would say the robot stands wherever it went); else the window is heard alone."""
        pose, version = self.pose, self._pose_version
        if version and version == self._window_version:  # () : a chain of static transforms, never stale
            pose = None
            self.stale_poses += 1
        self._window_version = version
        return self.stack.push(window.audio, window.stamp, pose)

    def pop(self, newest_only: bool = True) -> list:
        """Run the model on the windows that are ready: ``[(AlignedWindow, SonarOutputs), ...]``.

        With ``newest_only`` (a node behind real time) only the newest ready window is run and the older ones
        are counted as ``skipped['behind']`` (they still enter the mean of ``config.average_pings``).
        """
        windows = self.aligner.pop_windows()
        stacked = [self.stack_window(w) for w in windows]
        if newest_only and len(windows) > 1:
            self.aligner.skipped["behind"] = self.aligner.skipped.get("behind", 0) + len(windows) - 1
            windows, stacked = windows[-1:], stacked[-1:]
        return [(w, self.infer(audio, w.stamp, pings_averaged=n)) for w, (audio, n) in zip(windows, stacked)]

    def stats(self) -> dict:
        """Counters for diagnostics: aligned / detected / skipped pings by reason, the backend in use."""
        a = self.aligner
        out = {"backend": getattr(self.backend, "active", None) or self.backend.name,
               "pings_aligned": a.aligned, "pings_detected": a.detected, "array_height_m": self.array_height_m}
        for reason, n in sorted(a.skipped.items()):
            out[f"pings_skipped_{reason}"] = n
        if self.config.average_pings > 1:
            out["pings_averaged"] = self.stack.last_count
            out["average_stale_poses"] = self.stale_poses
            for reason, n in self.stack.resets.items():
                out[f"average_resets_{reason}"] = n
        fb = getattr(self.backend, "fallbacks", None)
        if fb:
            out["backend_fallbacks"] = len(fb)
            out["backend_last_fallback"] = fb[-1]
        return out
