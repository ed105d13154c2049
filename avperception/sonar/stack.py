"""Averaging the windows of consecutive pings while the array stands still.

Each ping's window (sample 0 = the sweep's onset) holds the room's echoes, which repeat from ping to ping while
nothing moves, and ambient sound and sensor noise, which do not. The mean of ``K`` aligned windows keeps the echoes
and leaves ``1/K`` of the uncorrelated power (10 log10 K dB: 6 dB for four pings), as stacking does in seismics and
sonar. It holds only while every echo path stays within a fraction of a wavelength (4.9 cm at 7 kHz): a window
taken elsewhere would blur the echoes, so :class:`PingStack` only averages windows taken at the same pose, within a
few millimetres and a degree of the newest one. The network is then run on the mean, unchanged.

    stack = PingStack(pings=4, max_age_s=2.0, max_motion_m=0.005, max_turn_deg=1.0)
    audio, n = stack.push(window, stamp, pose)   # pose (R, t) from TF; n: how many windows the mean holds (1-4)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

RESET_REASONS = ("moved", "no_pose", "gap", "shape")


def pose_change(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[float, float]:
    """How far apart two poses ``(R (3, 3), t (3,))`` of the array in a fixed frame are: ``(metres, degrees)``,
    the distance between the origins and the angle of the rotation from one to the other."""
    (ra, ta), (rb, tb) = a, b
    cos = (np.trace(np.asarray(ra).T @ np.asarray(rb)) - 1.0) / 2.0
    return float(np.linalg.norm(np.asarray(ta) - np.asarray(tb))), float(np.degrees(np.arccos(np.clip(cos, -1, 1))))


@dataclass
class _Window:
    audio: np.ndarray
    stamp: float
    pose: tuple[np.ndarray, np.ndarray] | None


class PingStack:
    """The mean of the last ``pings`` aligned windows taken at the newest window's pose.

    Args:
        pings: at most this many windows in the mean (1: every window alone).
        max_age_s: windows whose onset is more than this before the newest one's are left out (a pause in the
            pings, or a room that may have changed meanwhile).
        max_motion_m, max_turn_deg: windows taken farther than this from the newest one's pose are left out.
        needs_pose: a window without a pose is taken alone (and the ones before it are dropped); False: the
            caller vouches that the array does not move (a fixed array, a recording made standing still).

    ``resets`` counts, by reason, the pushes that dropped earlier windows: ``moved`` (the pose changed), ``no_pose``
    (a pose is needed and none came), ``gap`` (too old, or a stamp before the last), ``shape`` (another window
    size).
    """

    def __init__(self, pings: int, max_age_s: float, max_motion_m: float, max_turn_deg: float,
                 needs_pose: bool = True) -> None:
        if int(pings) < 1:
            raise ValueError(f"pings must be at least 1, got {pings}")
        if not max_age_s > 0 or max_motion_m < 0 or max_turn_deg < 0:
            raise ValueError("max_age_s must be positive, max_motion_m and max_turn_deg not negative")
        self.pings = int(pings)
        self.max_age_s = float(max_age_s)
        self.max_motion_m = float(max_motion_m)
        self.max_turn_deg = float(max_turn_deg)
        self.needs_pose = bool(needs_pose)
        self._windows: deque[_Window] = deque()
        self.resets = dict.fromkeys(RESET_REASONS, 0)
        self.last_count = 0

    def _drop(self, keep, reason: str) -> None:
        kept = deque(w for w in self._windows if keep(w))
        if len(kept) < len(self._windows):
            self.resets[reason] += 1
        self._windows = kept

    def push(self, audio: np.ndarray, stamp: float, pose: tuple[np.ndarray, np.ndarray] | None = None
             ) -> tuple[np.ndarray, int]:
        """Add the window ``audio (M, N)`` whose onset is at ``stamp`` (s), taken at ``pose`` (``(R, t)``: the
        array frame in a fixed frame; None: unknown). Returns the mean of the windows kept with it (float32, the
        window itself when alone) and their number."""
        x = np.asarray(audio, dtype=np.float32)
        stamp = float(stamp)
        if self.pings == 1:
            self.last_count = 1
            return x, 1
        self._drop(lambda w: w.audio.shape == x.shape, "shape")
        if self._windows and self._windows[-1].stamp >= stamp:  # the clock went back (a bag looped): start again
            self._drop(lambda w: False, "gap")
        self._drop(lambda w: w.stamp >= stamp - self.max_age_s, "gap")
        if self.needs_pose:  # a window without a pose is heard alone, and none is kept with it
            self._drop(lambda w: pose is not None and w.pose is not None, "no_pose")
        if pose is not None:
            def still(w: _Window) -> bool:
                if w.pose is None:
                    return True  # (an array that never moves: no pose needed)
                moved, turned = pose_change(w.pose, pose)
                return moved <= self.max_motion_m and turned <= self.max_turn_deg

            self._drop(still, "moved")
        self._windows.append(_Window(x, stamp, pose))
        while len(self._windows) > self.pings:
            self._windows.popleft()
        self.last_count = len(self._windows)
        if self.last_count == 1:
            return x, 1
        return np.mean(np.stack([w.audio for w in self._windows]), axis=0, dtype=np.float32), self.last_count

    def clear(self) -> None:
        """Forget every window (the counters stay)."""
        self._windows.clear()
        self.last_count = 0
