"""The moving, pinging robot's continuous stream: training-scene windows, overlapping tails, path, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from avperception_train.datagen.config import config_from_dict
from avperception_train.datagen.scene import simulate_audio
from avperception_train.datagen.trajectory import ActiveTrajectory, BackgroundRenderer

# small rooms keep the image-source model fast; room 1 is an L with boxes (order 3), room 2 an empty shoebox (order 10)
CFG = config_from_dict({"array": "robot_8mic", "room": {"size_m": [3.0, 4.5]}})
DIFFRACTION = config_from_dict({"array": "robot_8mic", "room": {"size_m": [3.0, 4.5]},
                                "acoustics": {"edge_diffraction": True}})


@pytest.mark.parametrize("room_id,cfg", [(1, CFG), (2, CFG), (1, DIFFRACTION)])
def test_window_cut_at_an_onset_is_the_training_scene(room_id, cfg):
    # a robot standing still, no ambient sources, no sensor noise, pings far enough apart that no tail overlaps
    traj = ActiveTrajectory(cfg, room_id=room_id, ping_rate_hz=2.0, speed_m_s=0.0, num_sources=0, noise=False)
    k = 2
    window = traj.window_at(k)
    spec = traj.scene_spec(k, sources=False)
    ref = simulate_audio(cfg, spec, traj.mics, noise=False, sources=False)
    if cfg is DIFFRACTION:  # the box edges and the L's outer corner are heard in the stream as in the scenes
        plain = simulate_audio(CFG, spec, traj.mics, noise=False, sources=False)
        assert np.abs(ref - plain).max() > 1e-3 * np.abs(ref).max()
    ref = np.clip(ref, -1.0, 1.0).astype(np.float32)
    assert window.shape == ref.shape == (8, CFG.audio.num_samples)
    assert np.abs(ref).max() > 0.05  # the direct path of a -30 dBFS-at-1-m sweep from 5 cm away
    np.testing.assert_allclose(window, ref, atol=2e-6 * np.abs(ref).max())
    # and the streamed segment of that ping starts with the same samples
    seg = list(traj.segments(0, k + 1))[-1]
    assert seg.onset_sample == k * traj.period
    np.testing.assert_allclose(seg.audio[:, : CFG.audio.num_samples], window, atol=1e-7)


def test_tail_of_a_ping_rings_into_the_next_segment():
    # 16 pings a second: a 1000-sample period, shorter than the empty shoebox's impulse response
    traj = ActiveTrajectory(CFG, room_id=2, ping_rate_hz=16.0, speed_m_s=0.0, num_sources=0, noise=False)
    P = traj.period
    s0, s1 = list(traj.segments(0, 2))
    h = traj._position_data(0)["rirs"][0]
    assert h.shape[1] > P
    one = np.convolve(traj.emitted, h[0].astype(np.float64)) * 10 ** (traj.gain_db / 20)  # mic 0, one ping
    one = np.pad(one, (0, 3 * P))
    tail = one[P: 2 * P]
    assert np.sqrt(np.mean(tail**2)) > 10 ** (CFG.noise.level_db[1] / 20)  # late echoes above the sensor noise
    np.testing.assert_allclose(s0.audio[0], one[:P], atol=1e-6)
    np.testing.assert_allclose(s1.audio[0], one[:P] + tail, atol=1e-6)  # ping 1 plus ping 0's tail


@pytest.mark.parametrize("room_id", [0, 1, 4])
def test_loop_stays_in_free_space_and_closes(room_id):
    traj = ActiveTrajectory(CFG, room_id=room_id, num_sources=2)
    assert traj.loop_pings > 10 and traj.loop_length > 1.0
    assert abs(traj.speed_m_s - 0.15) < 0.01
    poses = np.array([traj.pose(k) for k in range(traj.loop_pings)])
    assert np.all(traj.room.clearance_2d(poses[:, :2]) >= traj.clearance)
    steps = np.linalg.norm(np.diff(poses[:, :2], axis=0), axis=1)
    assert steps.max() < 2 * traj.speed_m_s / traj.ping_rate_hz  # no jumps
    np.testing.assert_allclose(traj.pose(traj.loop_pings), traj.pose(0))
    dyaw = np.angle(np.exp(1j * np.diff(poses[:, 3])))
    assert np.abs(dyaw).max() < np.radians(45)  # it turns gradually
    for k in range(0, traj.loop_pings, 7):
        spec = traj.scene_spec(k)
        assert np.all(traj.room.contains(spec.to_world(traj.mics)))
        src = traj.source_positions_world(k)
        assert np.all(traj.room.contains(src))
        assert np.all(np.linalg.norm(src - spec.origin, axis=1) >= CFG.passive.min_distance_m)


def test_stream_is_deterministic_and_its_truth_follows_the_pose():
    kw = dict(cfg=CFG, room_id=5, num_sources=2, speed_m_s=0.3)
    a = list(ActiveTrajectory(**kw).segments(0, 3))
    b = list(ActiveTrajectory(**kw).segments(0, 3))
    c = list(ActiveTrajectory(**kw, seed=1).segments(0, 3))
    for x, y in zip(a, b):
        assert np.array_equal(x.audio, y.audio)
        assert np.array_equal(x.depth, y.depth, equal_nan=True)
        assert np.array_equal(x.pose, y.pose) and np.array_equal(x.source_positions, y.source_positions)
    assert not np.array_equal(a[2].audio, c[2].audio)
    assert a[1].audio.dtype == np.float32 and a[1].audio.shape == (8, 4000)
    assert not np.array_equal(a[0].pose, a[2].pose)  # it moves
    # straight down the panorama sees the floor at the array height
    down = a[2].depth[-1]
    np.testing.assert_allclose(down, a[2].pose[2], atol=0.02)
    assert np.all(a[2].semantic[-1] == 0)
    traj = ActiveTrajectory(**kw)
    traj.render_ping(4)
    with pytest.raises(ValueError, match="out of order"):
        traj.render_ping(6)


def test_background_renderer_with_a_pool_streams_the_same_segments():
    kw = dict(cfg=CFG, room_id=6, num_sources=1, speed_m_s=0.3)
    ref = list(ActiveTrajectory(**kw).segments(0, 5))
    bg = BackgroundRenderer(kw, processes=2, queue_pings=8)
    try:
        got = [bg.get(timeout=60.0) for _ in range(5)]
    finally:
        bg.close()
    assert [s.index for s in got] == list(range(5))
    for a, b in zip(ref, got):
        assert np.array_equal(a.audio, b.audio) and np.array_equal(a.occupancy, b.occupancy)
