"""Source tracking: stable IDs through noise, misses, false alarms and crossings; activity; planar folding."""

import numpy as np
import pytest

from avperception.config import load_array
from avperception.dsp.grid import angular_distance_deg, azel_to_vector
from avperception.dsp.tracking import SourceTracker

RATE = 15.0  # frames per second


def noisy(rng, az, el, sigma_deg=1.5):
    return azel_to_vector(az + rng.normal(0, sigma_deg), el + rng.normal(0, sigma_deg))


def run_sequence(tracker, frames, seed=0, p_miss=0.1, p_false=0.3):
    """frames: list of [(az, el), ...] true directions per frame. Returns per frame {true index: track id}."""
    rng = np.random.default_rng(seed)
    assigned = []
    for k, truth in enumerate(frames):
        det = [noisy(rng, az, el) for az, el in truth if rng.random() > p_miss]
        if rng.random() < p_false:  # a one-frame reflection somewhere else
            det.append(azel_to_vector(rng.uniform(-180, 180), rng.uniform(0, 60)))
        tracks = tracker.update(np.array(det).reshape(-1, 3), k / RATE)
        ids = {}
        for j, (az, el) in enumerate(truth):
            u = azel_to_vector(az, el)
            best = min(tracks, key=lambda t: angular_distance_deg(t.vector, u), default=None)
            if best is not None and angular_distance_deg(best.vector, u) < 6:
                ids[j] = best.id
        assigned.append((ids, tracks))
    return assigned


def test_static_and_moving_sources_keep_their_ids():
    tr = SourceTracker()
    frames = [[(30.0, 10.0), (-120.0 + 40.0 * k / RATE, 20.0)] for k in range(int(6 * RATE))]  # 40 deg/s orbit
    out = run_sequence(tr, frames, seed=1)
    late = out[5:]
    ids0 = {o[0].get(0) for o in late} - {None}
    ids1 = {o[0].get(1) for o in late} - {None}
    assert len(ids0) == 1 and len(ids1) == 1 and ids0 != ids1
    # each source is matched by a track in nearly every frame, no false alarm survives
    assert sum(0 in o[0] for o in late) >= 0.95 * len(late)
    assert sum(1 in o[0] for o in late) >= 0.95 * len(late)
    assert max(len(o[1]) for o in late) == 2
    # the moving track learned its angular speed (40 deg/s of azimuth at 20 deg elevation), the static one did not move
    moving = next(t for t in out[-1][1] if t.id in ids1)
    static = next(t for t in out[-1][1] if t.id in ids0)
    assert moving.speed_deg_s == pytest.approx(40 * np.cos(np.radians(20)), abs=10)
    assert static.speed_deg_s < 10


def test_crossing_sources_do_not_swap():
    tr = SourceTracker()
    n = int(6 * RATE)
    frames = [[(-60.0 + 20.0 * k / RATE, 15.0), (60.0 - 20.0 * k / RATE, 15.0)] for k in range(n)]  # cross at t=3 s
    out = run_sequence(tr, frames, seed=2, p_false=0.0, p_miss=0.05)
    before = out[int(2 * RATE)][0]
    after = out[int(5 * RATE)][0]
    assert before[0] != before[1]
    assert before == after


def test_false_alarms_never_confirmed_and_ids_not_reused():
    tr = SourceTracker()
    rng = np.random.default_rng(3)
    for k in range(60):  # clutter only: a new random direction every frame
        tracks = tr.update(azel_to_vector(rng.uniform(-180, 180), rng.uniform(0, 60))[None], k / RATE)
        assert tracks == []
    # a real source appears, stops, and another one appears later
    t0 = 60 / RATE
    first = None
    for k in range(30):
        tracks = tr.update(azel_to_vector(10, 5)[None], t0 + k / RATE)
    first = tracks[0]
    assert first.id == 0 and first.activity > 0.9
    activity = []
    for k in range(30, 30 + int(3 * RATE)):  # silence: activity decays, then the track is dropped
        tracks = tr.update(np.zeros((0, 3)), t0 + k / RATE)
        activity.append(tracks[0].activity if tracks else 0.0)
    assert activity[int(RATE)] < 0.2 and tracks == []
    t1 = t0 + (30 + 3 * RATE) / RATE
    for k in range(10):
        tracks = tr.update(azel_to_vector(10, 5)[None], t1 + k / RATE)
    assert tracks[0].id == 1  # a new source, a new ID


def test_planar_array_mirror_detections_stay_one_track():
    arr = load_array("robot_8mic")
    tr = SourceTracker(array=arr)
    for k in range(30):  # the same source, reported above or below the plane at random
        el = 20.0 if k % 3 else -20.0
        tracks = tr.update(azel_to_vector(45, el)[None], k / RATE)
    assert len(tracks) == 1 and tracks[0].elevation_deg == pytest.approx(20, abs=0.5)


def test_accepts_source_directions_and_rejects_time_going_back():
    from avperception.dsp.peaks import SourceDirection

    tr = SourceTracker(confirm_hits=2)
    v = azel_to_vector(-30, 0)
    s = SourceDirection(-30.0, 0.0, 0.8, tuple(v))
    tr.update([s], 0.0)
    tracks = tr.update([s], 0.1)
    assert tracks[0].power == pytest.approx(0.8) and set(tracks[0].to_dict()) >= {"id", "azimuth_deg", "activity"}
    with pytest.raises(ValueError, match="backwards"):
        tr.update([s], 0.05)
