"""Averaging consecutive pings while the array stands still (avperception.sonar.stack)."""

import numpy as np
import pytest

from avperception.config import ConfigError, SonarConfig
from avperception.dsp.grid import rpy_matrix
from avperception.sonar.stack import PingStack, pose_change


def pose(x=0.0, y=0.0, yaw_deg=0.0):
    return rpy_matrix(0.0, 0.0, yaw_deg), np.array([x, y, 0.5])


def echo_and_noise(k, rng, shape=(8, 2048)):
    """The same echoes in every window, fresh ambient noise ten times their power."""
    echo = np.sin(np.linspace(0, 300, shape[1]))[None] * np.linspace(1, 0.2, shape[0])[:, None]
    return echo, [echo + rng.standard_normal(shape) * np.sqrt(10 * np.mean(echo**2)) for _ in range(k)]


def test_the_mean_keeps_the_echoes_and_leaves_a_quarter_of_the_noise_power():
    rng = np.random.default_rng(0)
    echo, windows = echo_and_noise(6, rng)
    stack = PingStack(4, max_age_s=2.0, max_motion_m=0.005, max_turn_deg=1.0)
    counts = []
    for i, w in enumerate(windows):
        mean, n = stack.push(w, 0.25 * i, pose())
        counts.append(n)
    assert counts == [1, 2, 3, 4, 4, 4]
    np.testing.assert_allclose(mean, np.mean(windows[-4:], axis=0), atol=1e-6)  # the last four
    single = np.mean((windows[-1] - echo) ** 2)
    assert 0.22 < np.mean((mean - echo) ** 2) / single < 0.28  # 1/4: 6 dB
    assert mean.dtype == np.float32 and stack.resets == {"moved": 0, "no_pose": 0, "gap": 0, "shape": 0}


def test_a_window_taken_elsewhere_is_not_averaged_with_the_ones_before():
    rng = np.random.default_rng(1)
    _, w = echo_and_noise(8, rng)
    stack = PingStack(4, max_age_s=2.0, max_motion_m=0.005, max_turn_deg=1.0)
    assert [stack.push(w[i], 0.25 * i, pose(x=0.002 * i))[1] for i in range(3)] == [1, 2, 3]  # 2 mm a ping: still
    assert stack.push(w[3], 0.75, pose(x=0.02))[1] == 1 and stack.resets["moved"] == 1  # 2 cm: the robot moved
    assert stack.push(w[4], 1.0, pose(x=0.02, yaw_deg=0.5))[1] == 2  # half a degree: still
    assert stack.push(w[5], 1.25, pose(x=0.02, yaw_deg=3.0))[1] == 1 and stack.resets["moved"] == 2  # turned
    mean, n = stack.push(w[6], 1.5, pose(x=0.02, yaw_deg=3.0))
    assert n == 2
    np.testing.assert_allclose(mean, (w[5] + w[6]) / 2, atol=1e-6)


def test_without_a_pose_each_window_is_alone_unless_the_array_is_fixed():
    rng = np.random.default_rng(2)
    _, w = echo_and_noise(4, rng)
    stack = PingStack(4, max_age_s=2.0, max_motion_m=0.005, max_turn_deg=1.0)
    stack.push(w[0], 0.0, pose())
    out, n = stack.push(w[1], 0.25, None)
    assert n == 1 and stack.resets["no_pose"] == 1
    np.testing.assert_array_equal(out, w[1].astype(np.float32))
    fixed = PingStack(4, max_age_s=2.0, max_motion_m=0.005, max_turn_deg=1.0, needs_pose=False)
    assert [fixed.push(x, 0.25 * i)[1] for i, x in enumerate(w)] == [1, 2, 3, 4]


def test_old_windows_a_clock_going_back_and_another_size_start_again():
    rng = np.random.default_rng(3)
    _, w = echo_and_noise(5, rng)
    stack = PingStack(4, max_age_s=1.0, max_motion_m=0.005, max_turn_deg=1.0, needs_pose=False)
    stack.push(w[0], 0.0)
    stack.push(w[1], 0.25)
    assert stack.push(w[2], 1.1)[1] == 2  # the window at 0.0 s is more than 1 s older
    assert stack.push(w[3], 0.5)[1] == 1 and stack.resets["gap"] == 2  # the clock went back
    assert stack.push(w[4][:, :1024], 0.75)[1] == 1 and stack.resets["shape"] == 1


def test_one_ping_passes_through_and_bad_settings_are_refused():
    x = np.ones((2, 8), np.float64)
    out, n = PingStack(1, 2.0, 0.005, 1.0).push(x, 0.0, None)
    assert n == 1 and out.dtype == np.float32 and np.array_equal(out, x)
    for bad in ({"pings": 0}, {"max_age_s": 0.0}, {"max_motion_m": -1.0}):
        with pytest.raises(ValueError):
            PingStack(**{"pings": 2, "max_age_s": 2.0, "max_motion_m": 0.005, "max_turn_deg": 1.0, **bad})
    for field, value, words in (("average_pings", 0, "average_pings must be in"),
                                ("average_pings", 17, "average_pings must be in"),
                                ("still_motion_m", 0.5, "still_motion_m"), ("still_turn_deg", -1.0, "still_turn_deg"),
                                ("average_max_age_s", 0.0, "average_max_age_s")):
        with pytest.raises(ConfigError, match=words):
            SonarConfig(**{field: value}).validate()


def test_pose_change_is_the_distance_and_the_angle_between_two_poses():
    moved, turned = pose_change(pose(1.0, 2.0, 10.0), pose(1.03, 2.04, -20.0))
    assert moved == pytest.approx(0.05) and turned == pytest.approx(30.0)
    tilt = (rpy_matrix(0.0, 4.0, 0.0), np.zeros(3))
    assert pose_change(tilt, (np.eye(3), np.zeros(3))) == pytest.approx((0.0, 4.0))


def tf(parent, child, xyz, yaw_deg=0.0):
    """A one-transform TFMessage as TransformTree reads it."""
    from types import SimpleNamespace as N

    h = np.radians(yaw_deg) / 2
    return N(transforms=[N(header=N(frame_id=parent), child_frame_id=child,
                           transform=N(translation=N(x=xyz[0], y=xyz[1], z=xyz[2]),
                                       rotation=N(x=0.0, y=0.0, z=np.sin(h), w=np.cos(h))))])


def test_the_transform_tree_composes_a_chain_and_says_when_its_moving_part_was_published_again():
    from avperception.eval.bagio import TransformTree

    tree = TransformTree()
    assert tree.lookup("odom", "mic_array") is None and tree.version("odom", "mic_array") is None
    tree.add(tf("odom", "base_link", (2.0, 1.0, 0.0), 90.0))
    tree.add_static(tf("base_link", "mic_array", (0.1, 0.0, 0.6)))
    R, t = tree.lookup("odom", "mic_array")
    np.testing.assert_allclose(t, [2.0, 1.1, 0.6], atol=1e-12)  # 0.1 m forward of a base turned to +y
    np.testing.assert_allclose(R, rpy_matrix(0, 0, 90), atol=1e-12)
    Ri, ti = tree.lookup("mic_array", "odom")  # the other way: the inverse
    np.testing.assert_allclose(Ri @ t + ti, 0.0, atol=1e-12)
    v = tree.version("odom", "mic_array")
    tree.add_static(tf("base_link", "mic_array", (0.1, 0.0, 0.6)))
    assert tree.version("odom", "mic_array") == v  # static edges do not count
    tree.add(tf("odom", "base_link", (2.0, 1.0, 0.0), 90.0))
    assert tree.version("odom", "mic_array") != v
    assert tree.version("base_link", "mic_array") == ()  # a static chain: never stale
