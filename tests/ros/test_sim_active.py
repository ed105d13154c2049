"""The simulator's active mode over real DDS: audio, pings at audio sample times, and the engine's truth."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("avperception_train", reason="the simulator's active mode needs the training package")

import rclpy  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image, PointCloud2  # noqa: E402

from avperception.ros.conversions import cloud_to_arrays, image_to_array, stamp_to_sec  # noqa: E402

from dds import logs, spin_until  # noqa: E402  (ros_env: tests/ros/conftest.py)

ROOM = 5  # a 3.6 x 5.7 m room with two boxes, quick to render
SIM = ["-p", "mode:=active", "-p", "array:=robot_8mic", "-p", f"room_seed:={ROOM}", "-p", "prefill_s:=1.0",
       "-p", "speed_m_s:=0.3"]


def test_active_sim_publishes_pings_at_audio_samples_with_the_rooms_depth(ros_env):
    from avperception_msgs.msg import AudioFrame, Ping

    from avperception_train.datagen.config import load_config
    from avperception_train.datagen.groundtruth import RayCaster, render_view
    from avperception_train.datagen.scene import grids
    from avperception_train.datagen.trajectory import ActiveTrajectory

    start, node, ctx, tmp = ros_env
    audio, pings, depth, occ = [], [], [], []
    node.create_subscription(AudioFrame, "audio", audio.append,
                             QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE))
    node.create_subscription(Ping, "sonar/pings", pings.append, 50)
    node.create_subscription(Image, "sim/depth", depth.append, 50)
    node.create_subscription(PointCloud2, "sim/occupancy", occ.append, 50)
    tf = []
    try:
        from tf2_msgs.msg import TFMessage
    except ImportError:  # not installed: the node warns and publishes no transforms (the test below)
        TFMessage = None
    else:
        node.create_subscription(TFMessage, "/tf", tf.append, 100)
    start(sys.executable, "-m", "avperception.ros.runner", "sim_audio", "--ros-args", *SIM)
    ok = spin_until(node, ctx, lambda: len(pings) >= 6 and len(depth) >= 6 and len(audio) >= 20, 90)
    assert ok, f"{len(audio)} audio, {len(pings)} pings, {len(depth)} depth\n" + logs(tmp)

    fs, chunk = audio[0].sample_rate, len(audio[0].data) // (2 * audio[0].channels)  # S16LE
    assert audio[0].channels == 8 and fs == 16000
    seqs = np.array([a.sequence for a in audio])
    t_audio = np.array([stamp_to_sec(a.header.stamp) for a in audio])
    t0 = t_audio - seqs * chunk / fs  # every frame's stamp is the time of its first sample on one sample clock
    assert np.ptp(t0) < 1e-6
    traj = ActiveTrajectory(load_config(overrides={"array": "robot_8mic"}), room_id=ROOM, speed_m_s=0.3)
    caster = RayCaster.for_room(traj.room)
    pano = grids(traj.cfg)[0]
    by_stamp = {(m.header.stamp.sec, m.header.stamp.nanosec): m for m in depth}
    checked = 0
    for p in pings:
        assert p.onset_known and p.header.frame_id == "mic_array"
        assert p.sweep_id.startswith("linear-1000-7000Hz")
        onset = (stamp_to_sec(p.header.stamp) - t0[0]) * fs
        assert abs(onset - p.sequence * traj.period) < 0.01  # ping k starts at audio sample k * period
        d = by_stamp.get((p.header.stamp.sec, p.header.stamp.nanosec))
        if d is None:
            continue
        img = image_to_array(d)
        assert d.encoding == "32FC1" and img.shape == (60, 120) and d.header.frame_id == "mic_array"
        spec = traj.scene_spec(p.sequence, sources=False)
        ref, _ = render_view(caster, spec.origin, spec.rotation, pano.vectors, pano.shape)
        assert np.all(np.isfinite(img)) and img.min() > 0.2 and img.max() < np.linalg.norm(np.ptp(traj.room.bbox, 0))
        np.testing.assert_allclose(img, ref, atol=1e-4)  # the panorama seen from this ping's pose
        checked += 1
    assert checked >= 4
    if TFMessage is not None:  # odom -> base_link is the ping's pose, at its stamp
        got = {(t.header.stamp.sec, t.header.stamp.nanosec): t for m in tf for t in m.transforms
               if t.header.frame_id == "odom" and t.child_frame_id == "base_link"}
        p = pings[-2]
        t = got[(p.header.stamp.sec, p.header.stamp.nanosec)].transform
        x, y, _, yaw = traj.pose(p.sequence)
        np.testing.assert_allclose([t.translation.x, t.translation.y, t.translation.z], [x, y, 0.0], atol=1e-6)
        assert abs(2 * np.arctan2(t.rotation.z, t.rotation.w) - yaw) < 1e-6 or abs(abs(yaw) - np.pi) < 1e-3
    pts = cloud_to_arrays(occ[-1])
    assert len(pts["x"]) > 0 and occ[-1].header.frame_id == "mic_array"
    assert np.all(np.abs(pts["z"]) <= 1.0 + 1e-6)  # inside the engine's 2 m tall crop around the array


class _Log:
    def __init__(self):
        self.records = []

    def __getattr__(self, level):
        return lambda msg, *a, **k: self.records.append((level, str(msg)))


def test_active_sim_without_tf2_msgs_warns_once_and_publishes_no_tf(monkeypatch):
    """Where tf2_msgs is not installed the node still runs: one warning, no /tf publishers."""
    from rclpy.parameter import Parameter

    from avperception.ros.sim_audio_node import SimAudioNode

    monkeypatch.setitem(sys.modules, "tf2_msgs", None)
    monkeypatch.setitem(sys.modules, "tf2_msgs.msg", None)
    log = _Log()
    monkeypatch.setattr(SimAudioNode, "get_logger", lambda self: log)
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, domain_id=(hash("sim_active") % 100) + 100)
    try:
        params = [Parameter("mode", value="active"), Parameter("room_seed", value=ROOM),
                  Parameter("ambient_sources", value=0), Parameter("render_processes", value=1)]
        node = SimAudioNode(context=ctx, parameter_overrides=params)
        try:
            assert node.pub_tf is None and node.pub_tf_static is None
            warnings = [m for lv, m in log.records if lv in ("warning", "warn")]
            assert len(warnings) == 1 and "tf2_msgs" in warnings[0], log.records
            assert node.traj.room_id == ROOM and node.pub_pings is not None
            seg = node.renderer.get(timeout=60.0)  # the background renderer delivers the stream's first ping
            assert seg is not None and seg.index == 0 and seg.audio.shape == (8, node.period)
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_room_mesh_marker_and_robot_transforms():
    from avperception.ros import sim_truth
    from avperception_train.datagen.config import config_from_dict
    from avperception_train.datagen.trajectory import ActiveTrajectory

    traj = ActiveTrajectory(config_from_dict({"array": "robot_8mic"}), room_id=ROOM, num_sources=0)
    v, tri, lab = traj.room_mesh()
    m = sim_truth.room_mesh_marker(v, tri, lab, 0.0, "odom")
    assert m.type == m.TRIANGLE_LIST and len(m.points) == len(m.colors) == 3 * len(tri)
    z = np.array([p.z for p in m.points])
    assert z.min() == 0.0 and np.isclose(z.max(), traj.room.height)
    floor = np.isclose(z.reshape(-1, 3), 0).all(1)
    assert floor.sum() >= len(traj.room.floor) - 2  # the floor polygon's triangles (and the boxes' bottoms are not)
    alpha = np.array([c.a for c in m.colors]).reshape(-1, 3)[:, 0]
    np.testing.assert_allclose(alpha, sim_truth.LABEL_COLORS[lab, 3])  # coloured by class
    with_ceiling = sim_truth.room_mesh_marker(*traj.room_mesh(ceiling=True), 0.0, "odom")
    assert len(with_ceiling.points) == len(m.points) + 3 * (len(traj.room.floor) - 2)
    # odom -> base_link -> mic_array puts the array's +x (forward) where the pose says
    x, y, h, yaw = traj.pose(7)
    odom, base = sim_truth.robot_transforms(traj.pose(7), 1.5, "odom", "base_link", "mic_array")
    assert (odom.header.frame_id, odom.child_frame_id, base.child_frame_id) == ("odom", "base_link", "mic_array")
    q = odom.transform.rotation
    rot = np.array([[1 - 2 * q.z**2, -2 * q.w * q.z], [2 * q.w * q.z, 1 - 2 * q.z**2]])
    forward = rot @ np.array([1.0, 0.0])
    np.testing.assert_allclose(forward, [np.cos(yaw), np.sin(yaw)], atol=1e-12)
    t = odom.transform.translation
    np.testing.assert_allclose([t.x, t.y, t.z + base.transform.translation.z], [x, y, h])
    assert odom.header.stamp.sec == 1 and odom.header.stamp.nanosec == 500_000_000


def test_active_mode_without_the_training_package_says_what_to_install(monkeypatch):
    from rclpy.parameter import Parameter

    from avperception.ros.sim_audio_node import SimAudioNode

    for name in [m for m in sys.modules if m.startswith("avperception_train")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "avperception_train", None)
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, domain_id=(hash("sim_active_missing") % 100) + 100)
    try:
        with pytest.raises(RuntimeError, match="pip install -e training"):
            SimAudioNode(context=ctx, parameter_overrides=[Parameter("mode", value="active")])
    finally:
        rclpy.shutdown(context=ctx)


def test_every_topic_rviz_shows_is_published_by_the_demo(ctx):
    """config/avperception.rviz shows only topics that the demo's two nodes (the active simulator and
    perception_node with the shipped bundle) publish: a display on a topic nobody publishes stays empty."""
    import re
    from pathlib import Path

    from rclpy.parameter import Parameter

    from avperception.ros.perception_node import PerceptionNode
    from avperception.ros.sim_audio_node import SimAudioNode

    rviz = (Path(__file__).resolve().parents[2] / "config" / "avperception.rviz").read_text()
    shown = set(re.findall(r"^\s+Value: (/\S+)$", rviz, flags=re.M))
    assert {"/sonar/depth_color", "/sonar/depth_confident_color", "/sim/depth"} <= shown
    sim = SimAudioNode(context=ctx, parameter_overrides=[Parameter("mode", value="active"),
                                                          Parameter("room_seed", value=ROOM),
                                                          Parameter("render_processes", value=1)])
    perception = PerceptionNode(context=ctx, parameter_overrides=[Parameter("array", value="robot_8mic")])
    try:
        published = {name for node in (sim, perception)
                     for name, _ in node.get_publisher_names_and_types_by_node(node.get_name(), node.get_namespace())}
        assert shown <= published, f"RViz shows topics nobody publishes: {sorted(shown - published)}"
    finally:
        perception.destroy_node()
        sim.destroy_node()
