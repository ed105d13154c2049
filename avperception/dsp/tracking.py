"""Tracking sound-source directions over time: stable IDs, smoothed directions, activity.

Frame-by-frame peaks of a beamformed map flicker: a source is missed in a
frame, a reflection pops up for one frame, two sources swap order. The
:class:`SourceTracker` turns the per-frame detections (``SourceDirection``
lists from :func:`~avperception.dsp.peaks.find_sources`, or ``(n, 3)`` unit
vectors) into tracks::

    tracker = SourceTracker(array=array)
    for stamp, block in frames:
        out = pipeline.process(block, stamp)
        for t in tracker.update(out.sources, stamp):
            print(t.id, t.azimuth_deg, t.elevation_deg, t.activity)

Each track is an alpha-beta filter on the unit sphere: the state is a unit
direction and an angular velocity in the tangent plane (rad/s); prediction
rotates the direction by the velocity over the elapsed time. Detections are
assigned to predicted tracks by minimum total angle (Hungarian) inside a gate
that widens with the time since a track was last seen. A detection no track
claims starts a *tentative* track, which is confirmed (and only then given an
ID and reported) after ``confirm_hits`` hits within ``confirm_window_s``, so a
one-off reflection never becomes a track. IDs are never reused. ``activity``
in [0, 1] rises while a track is detected and decays when it is not (time
constant ``activity_time_s``); a track not seen for ``forget_after_s`` is
dropped. Directions are folded into the half-space the array resolves (planar
arrays: the side the normal points to) so a planar array's mirror ambiguity
never splits a track.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import ArrayGeometry
from .grid import vector_to_azel
from .peaks import canonical_direction


@dataclass
class Track:
    """One tracked source (array frame)."""

    id: int
    vector: np.ndarray
    velocity: np.ndarray  # tangent angular velocity, rad/s
    power: float
    activity: float
    first_stamp: float
    last_seen: float
    hits: int = 1
    misses: int = 0
    confirmed: bool = False
    history: list = field(default_factory=list, repr=False)

    @property
    def azimuth_deg(self) -> float:
        return float(vector_to_azel(self.vector)[0])

    @property
    def elevation_deg(self) -> float:
        return float(vector_to_azel(self.vector)[1])

    @property
    def speed_deg_s(self) -> float:
        return float(np.degrees(np.linalg.norm(self.velocity)))

    def to_dict(self) -> dict:
        return {"id": self.id, "azimuth_deg": round(self.azimuth_deg, 3), "elevation_deg": round(self.elevation_deg, 3),
                "speed_deg_s": round(self.speed_deg_s, 3), "activity": round(float(self.activity), 4),
                "power": round(float(self.power), 6)}


def _angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angles (rad) between unit vectors ``(n, 3)`` and ``(m, 3)`` -> ``(n, m)``."""
    return np.arccos(np.clip(a @ b.T, -1.0, 1.0))


def _tangent(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Component of ``w`` perpendicular to unit ``v``."""
    return w - (w @ v) * v


def _transport(w: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Carry tangent vector ``w`` at unit ``a`` to unit ``b`` along the great circle (rotation about ``a x b``)."""
    axis = np.cross(a, b)
    s = np.linalg.norm(axis)
    if s < 1e-12:
        return _tangent(b, w)
    k = axis / s
    c = float(np.clip(a @ b, -1.0, 1.0))
    w = w * c + np.cross(k, w) * s + k * (k @ w) * (1 - c)  # Rodrigues
    return _tangent(b, w)


class SourceTracker:
    """Multi-source direction tracker (see the module notes).

    Args:
        array: when given, directions are folded into what the array resolves.
        gate_deg: largest angle between a prediction and its detection.
        gate_growth_deg_s: the gate widens by this much per second unseen.
        alpha, beta: alpha-beta gains for direction and angular velocity.
        max_speed_deg_s: angular velocities are clipped to this.
        confirm_hits, confirm_window_s: hits a tentative track needs, and the
            time it has to get them.
        activity_time_s: time constant of ``activity``.
        forget_after_s: confirmed tracks unseen for this long are dropped.
        max_tracks: upper bound on live tracks (weakest tentative dropped first).
        tentative_misses: a tentative track missed more often than this in a row is dropped.
    """

    def __init__(self, array: ArrayGeometry | None = None, gate_deg: float = 15.0, gate_growth_deg_s: float = 20.0,
                 alpha: float = 0.5, beta: float = 0.1, max_speed_deg_s: float = 180.0, confirm_hits: int = 3,
                 confirm_window_s: float = 1.0, activity_time_s: float = 0.4, forget_after_s: float = 2.0,
                 max_tracks: int = 16, tentative_misses: int = 2) -> None:
        self.array = array
        self.gate = np.radians(gate_deg)
        self.gate_growth = np.radians(gate_growth_deg_s)
        self.alpha, self.beta = float(alpha), float(beta)
        self.max_speed = np.radians(max_speed_deg_s)
        self.confirm_hits, self.confirm_window = int(confirm_hits), float(confirm_window_s)
        self.tau, self.forget = float(activity_time_s), float(forget_after_s)
        self.max_tracks = int(max_tracks)
        self.tentative_misses = int(tentative_misses)
        self.tracks: list[Track] = []
        self.stamp: float | None = None
        self._next_id = 0

    def reset(self) -> None:
        """Forget every track (IDs keep counting up)."""
        self.tracks = []
        self.stamp = None

    def _fold(self, v: np.ndarray) -> np.ndarray:
        v = v / np.linalg.norm(v)
        return canonical_direction(v, self.array) if self.array is not None else v

    def update(self, detections, stamp: float, powers=None) -> list[Track]:
        """Feed one frame's detections; return the confirmed tracks, strongest activity first.

        Args:
            detections: list of objects with ``.vector`` (and ``.power``), or ``(n, 3)`` directions.
            stamp: time of the frame (s); must not go backwards.
            powers: ``(n,)`` detection powers when ``detections`` is an array.
        """
        vecs, pw = self._parse(detections, powers)
        vecs = np.array([self._fold(v) for v in vecs]).reshape(-1, 3)
        if self.stamp is not None and stamp < self.stamp:
            raise ValueError(f"time went backwards ({stamp} < {self.stamp}); call reset() after a jump")
        dt = 0.0 if self.stamp is None else float(stamp - self.stamp)
        self.stamp = float(stamp)
        decay = np.exp(-dt / self.tau) if self.tau > 0 else 0.0

        # predict
        for t in self.tracks:
            if dt > 0 and np.any(t.velocity):
                v = self._fold(t.vector + t.velocity * dt)
                t.velocity = _transport(t.velocity, t.vector, v)
                t.vector = v

        # associate
        matched_t: set[int] = set()
        matched_d: set[int] = set()
        if self.tracks and len(vecs):
            pred = np.array([t.vector for t in self.tracks])
            cost = _angle(pred, vecs)
            # confirmed tracks' gates widen while unseen; tentative ones must be re-hit where they were
            gates = np.array([self.gate + self.gate_growth * max(stamp - t.last_seen, 0.0) if t.confirmed
                              else self.gate for t in self.tracks])
            big = 1e6
            c = np.where(cost <= gates[:, None], cost, big)
            # confirmed tracks get first pick: a small bias makes them cheaper than tentative ones
            c = c - np.array([0.01 if t.confirmed else 0.0 for t in self.tracks])[:, None] * (c < big)
            from scipy.optimize import linear_sum_assignment

            rows, cols = linear_sum_assignment(c)
            for i, j in zip(rows, cols):
                if c[i, j] >= big / 2:
                    continue
                self._correct(self.tracks[i], vecs[j], pw[j], dt, stamp, decay)
                matched_t.add(i)
                matched_d.add(j)

        # unmatched tracks: decay, maybe drop
        keep = []
        for i, t in enumerate(self.tracks):
            if i not in matched_t:
                t.misses += 1
                t.activity *= decay
                if t.confirmed and stamp - t.last_seen > self.forget:
                    continue
                if not t.confirmed and (stamp - t.first_stamp > self.confirm_window
                                        or t.misses > self.tentative_misses):
                    continue
            keep.append(t)
        self.tracks = keep

        # unmatched detections: tentative tracks
        for j in range(len(vecs)):
            if j in matched_d:
                continue
            self.tracks.append(Track(-1, vecs[j], np.zeros(3), float(pw[j]), 1.0 - decay if dt > 0 else 0.5,
                                     float(stamp), float(stamp)))
        if len(self.tracks) > self.max_tracks:
            self.tracks.sort(key=lambda t: (not t.confirmed, -t.activity))
            self.tracks = self.tracks[: self.max_tracks]

        for t in self.tracks:
            if t.confirmed:
                t.history.append((float(stamp), t.vector.copy()))
                if len(t.history) > 256:
                    del t.history[:-256]
        return self.confirmed()

    def confirmed(self) -> list[Track]:
        """Confirmed live tracks, most active first."""
        return sorted((t for t in self.tracks if t.confirmed), key=lambda t: -t.activity)

    def _correct(self, t: Track, z: np.ndarray, power: float, dt: float, stamp: float, decay: float) -> None:
        r = _tangent(t.vector, z - t.vector)  # innovation in the tangent plane (~ radians)
        v = self._fold(t.vector + self.alpha * r)
        w = t.velocity + self.beta * r / dt if dt > 0 else t.velocity
        sp = np.linalg.norm(w)
        if sp > self.max_speed:
            w = w * (self.max_speed / sp)
        t.velocity = _transport(w, t.vector, v)
        t.vector = v
        t.power = 0.7 * t.power + 0.3 * float(power)
        t.activity = 1.0 - (1.0 - t.activity) * decay
        t.hits += 1
        t.misses = 0
        t.last_seen = float(stamp)
        if not t.confirmed and t.hits >= self.confirm_hits:
            t.confirmed = True
            t.id = self._next_id
            self._next_id += 1

    @staticmethod
    def _parse(detections, powers) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(detections, np.ndarray):
            v = np.asarray(detections, dtype=np.float64).reshape(-1, 3)
            p = np.ones(len(v)) if powers is None else np.asarray(powers, dtype=np.float64)
        else:
            det = list(detections)
            v = np.array([d.vector for d in det], dtype=np.float64).reshape(-1, 3)
            p = np.array([getattr(d, "power", 1.0) for d in det], dtype=np.float64)
        n = np.linalg.norm(v, axis=1, keepdims=True)
        if np.any(n < 1e-12):
            raise ValueError("detections must be non-zero direction vectors")
        return v / n, p
