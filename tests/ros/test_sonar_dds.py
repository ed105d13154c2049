"""The learned half live over real DDS: the simulator pings as its robot drives through a data-engine room (one
process), perception_node aligns each ping and runs the shipped bundle (another process), and this test, as a
user's subscriber, scores the published depth against the truth the simulator publishes for the same ping."""

import sys

import numpy as np
import pytest

import rclpy  # noqa: F401,E402

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import OccupancyGrid  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402

from avperception.eval.metrics import depth_metrics  # noqa: E402
from avperception.ros.conversions import cloud_to_arrays, image_to_array, stamp_to_sec  # noqa: E402

pytest.importorskip("avperception_train", reason="the simulator's active mode needs the training package")

from dds import logs, spin_until  # noqa: E402  (ros_env: tests/ros/conftest.py)


@pytest.mark.parametrize("pings", ["published", "detected"])
def test_published_depth_matches_the_simulated_room(ros_env, pings):
    start, node, ctx, tmp = ros_env
    common = ["-p", "array:=robot_8mic"]
    start(sys.executable, "-m", "avperception.ros.runner", "perception", "--ros-args", *common)
    start(sys.executable, "-m", "avperception.ros.runner", "sim_audio", "--ros-args", *common, "-p", "mode:=active",
          "-p", f"publish_pings:={'true' if pings == 'published' else 'false'}", "-p", "room_seed:=3")
    depth, truth, points, plan, info, diags = {}, {}, [], [], [], []
    node.create_subscription(Image, "sonar/depth", lambda m: depth.__setitem__(stamp_to_sec(m.header.stamp), m),
                             qos_profile_sensor_data)
    node.create_subscription(Image, "sim/depth", lambda m: truth.__setitem__(stamp_to_sec(m.header.stamp), m),
                             qos_profile_sensor_data)
    node.create_subscription(PointCloud2, "sonar/points", points.append, qos_profile_sensor_data)
    node.create_subscription(OccupancyGrid, "sonar/occupancy_grid", plan.append, 10)
    node.create_subscription(CameraInfo, "sonar/pinhole/camera_info", info.append, qos_profile_sensor_data)
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)

    def pairs():  # each prediction with the truth of its ping: the onset refined to a sample of the true one
        out = []
        for t, m in depth.items():
            near = [s for s in truth if abs(s - t) <= 1.5 / 16000]
            if near:
                out.append((m, truth[near[0]]))
        return out

    ok = spin_until(node, ctx, lambda: len(pairs()) >= 10 and points and plan and info and diags, 120)
    assert ok, f"{len(depth)} depth images, {len(truth)} truths, {len(pairs())} matched\n" + logs(tmp)
    scores = [depth_metrics(image_to_array(p), image_to_array(t)) for p, t in pairs()]
    d1 = np.array([s["delta1"] for s in scores])
    assert np.mean(d1) > 0.7, d1
    m = next(iter(depth.values()))
    assert m.encoding == "32FC1" and (m.height, m.width) == (60, 120) and m.header.frame_id == "mic_array"
    cloud = cloud_to_arrays(points[-1])
    r = np.sqrt(cloud["x"] ** 2 + cloud["y"] ** 2 + cloud["z"] ** 2)
    assert len(r) > 1000 and r.max() <= 8.0 + 1e-3 and cloud["label"].max() <= 3
    assert plan[-1].info.width == 32 and len(plan[-1].data) == 32 * 32
    assert info[-1].k[0] > 0
    status = {kv.key: kv.value for kv in diags[-1].status[0].values}
    assert status["sonar"] == "on" and int(status["pings_aligned"]) > 0
    if pings == "detected":
        assert int(status["pings_detected"]) > 0


def test_a_robot_standing_still_is_heard_over_averaged_pings(ros_env):
    """``sonar.average_pings: 4`` with the simulated robot standing (``speed_m_s: 0``): the node reads the array's
    pose in odom from the simulator's /tf, averages up to four pings, and the depth it publishes still matches the
    room; no window is left out for moving."""
    start, node, ctx, tmp = ros_env
    common = ["-p", "array:=robot_8mic"]
    start(sys.executable, "-m", "avperception.ros.runner", "perception", "--ros-args", *common,
          "-p", "sonar.average_pings:=4", "-p", "diagnostics_period_s:=0.5")
    start(sys.executable, "-m", "avperception.ros.runner", "sim_audio", "--ros-args", *common, "-p", "mode:=active",
          "-p", "room_seed:=3", "-p", "speed_m_s:=0.0")
    depth, truth, diags = {}, {}, []
    node.create_subscription(Image, "sonar/depth", lambda m: depth.__setitem__(stamp_to_sec(m.header.stamp), m),
                             qos_profile_sensor_data)
    node.create_subscription(Image, "sim/depth", lambda m: truth.__setitem__(stamp_to_sec(m.header.stamp), m),
                             qos_profile_sensor_data)
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)

    def averaged() -> dict | None:
        for d in reversed(diags):
            status = {kv.key: kv.value for kv in d.status[0].values}
            if status.get("pings_averaged") == "4":
                return status
        return None

    ok = spin_until(node, ctx, lambda: averaged() is not None and len(depth) >= 6, 120)
    assert ok, f"{len(depth)} depth images, {len(diags)} diagnostics\n" + logs(tmp)
    status = averaged()
    assert status["average_resets_moved"] == "0" and int(status["pings_aligned"]) >= 4
    pairs = [(m, truth[s]) for t, m in depth.items() for s in truth if abs(s - t) <= 1.5 / 16000]
    d1 = [depth_metrics(image_to_array(p), image_to_array(t))["delta1"] for p, t in pairs]
    assert len(d1) >= 4 and np.mean(d1) > 0.7, d1
