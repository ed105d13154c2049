"""The recorder: topics published by a node in this process are written to a rosbag2 as received, with the types
the graph reports and QoS following the publishers (best effort images, reliable pings, a latched /tf_static
published before the recorder came), and read back with rosbags unchanged."""

import time

import numpy as np
import pytest

import rclpy
from avperception_msgs.msg import Ping
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import TransformStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from tf2_msgs.msg import TFMessage

from avperception.eval.bagfiles import BagRecorder, open_rosbag2
from avperception.eval.bagio import BagError, image_to_array, stamp_to_sec, typestore
from avperception.ros.conversions import array_to_image, header
from avperception.ros.recorder import RecorderNode, record

N = 5




@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_recorded_messages_read_back_unchanged(ctx, tmp_path, storage):
    pub = rclpy.create_node("test_publisher", context=ctx)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    p_depth = pub.create_publisher(Image, "sonar/depth", qos_profile_sensor_data)
    p_ping = pub.create_publisher(Ping, "sonar/pings", 10)
    p_diag = pub.create_publisher(DiagnosticArray, "/diagnostics", 10)
    p_static = pub.create_publisher(TFMessage, "/tf_static", latched)
    p_static.publish(TFMessage(transforms=[TransformStamped(header=header(5.0, "base_link"),
                                                            child_frame_id="mic_array")]))
    rng = np.random.default_rng(0)
    depths = [rng.uniform(0.5, 6.0, (6, 8)).astype(np.float32) for _ in range(N)]

    rec = BagRecorder(tmp_path / "out", storage)
    node = RecorderNode(rec, ["sonar/depth", "sonar/pings", "/diagnostics", "/tf_static", "never/published"],
                        context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(pub)
    ex.add_node(node)

    def spin_until(cond, timeout=20.0):
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end and not cond():
            ex.spin_once(timeout_sec=0.05)
        return cond()

    # subscribed once each topic appears, and the publishers matched to those subscriptions
    assert spin_until(lambda: node.waiting == {"/never/published"} and all(
        p.get_subscription_count() > 0 for p in (p_depth, p_ping, p_diag)))
    for i in range(N):
        t = 100.0 + 0.25 * i
        p_depth.publish(array_to_image(depths[i], t, "mic_array"))
        p_ping.publish(Ping(header=header(t, "mic_array"), sequence=i, sweep_id="sweep-x", onset_known=True))
        p_diag.publish(DiagnosticArray(header=header(t, ""), status=[DiagnosticStatus(name=f"d{i}")]))
        spin_until(lambda: False, 0.05)
    assert spin_until(lambda: all(node.counts.get(t, 0) >= n for t, n in
                                  (("/sonar/depth", N), ("/sonar/pings", N), ("/diagnostics", N), ("/tf_static", 1))))
    node.destroy_node()
    pub.destroy_node()
    counts = rec.close()
    assert counts == {"/sonar/depth": N, "/sonar/pings": N, "/diagnostics": N, "/tf_static": 1}

    ts = typestore()
    got: dict[str, list] = {}
    with open_rosbag2(tmp_path / "out") as r:
        types = {c.topic: c.msgtype for c in r.connections}
        for c, _, raw in r.messages():
            got.setdefault(c.topic, []).append(ts.deserialize_cdr(raw, c.msgtype))
    assert types == {"/sonar/depth": "sensor_msgs/msg/Image", "/sonar/pings": "avperception_msgs/msg/Ping",
                     "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray", "/tf_static": "tf2_msgs/msg/TFMessage"}
    for i, m in enumerate(got["/sonar/depth"]):
        assert stamp_to_sec(m.header.stamp) == pytest.approx(100.0 + 0.25 * i, abs=1e-9)
        np.testing.assert_array_equal(image_to_array(m), depths[i])
    assert [(m.sequence, m.sweep_id, m.onset_known) for m in got["/sonar/pings"]] == [(i, "sweep-x", True)
                                                                                      for i in range(N)]
    assert [m.status[0].name for m in got["/diagnostics"]] == [f"d{i}" for i in range(N)]
    assert got["/tf_static"][0].transforms[0].child_frame_id == "mic_array"


def test_record_refuses_an_existing_bag_before_starting(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(BagError, match="exists"):
        record(tmp_path / "out", ["sonar/depth"], duration=0.1)
