"""perception_node's ``sonar.array_height_m`` reaches the model: the published depth renders the floor that far
below the array; a bundle that cannot take a height stops the node with what to do."""

import json

import numpy as np
import pytest
import rclpy  # noqa: F401
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from avperception.config import ConfigError
from avperception.inference import OnnxRuntimeBackend, load_bundle
from avperception.inference.synthetic import bundle_echo_window
from avperception.ros.conversions import image_to_array
from avperception.ros.perception_node import PerceptionNode

from dds import spin_until  # noqa: E402  (tests/ros)


def test_the_arrays_height_reaches_the_published_depth(ctx):
    node = PerceptionNode(context=ctx, parameter_overrides=[Parameter("array", value="robot_8mic"),
                                                            Parameter("sonar.array_height_m", value=1.4)])
    listener = Node("listener", context=ctx)
    got: list[Image] = []
    listener.create_subscription(Image, "sonar/depth", got.append, qos_profile_sensor_data)
    try:
        b = node.sonar.bundle
        w = bundle_echo_window(b, wall_distance_m=1.5, seed=2)
        out = node.sonar.infer(w, stamp=3.0)
        assert out.layout is not None

        def published() -> bool:
            node.sonar_pub.publish(out, everything=True)
            return bool(got)

        assert spin_until(listener, ctx, published, 10.0)
        want = OnnxRuntimeBackend(b).run(w, 1.4)["depth"]
        np.testing.assert_allclose(image_to_array(got[-1]), want, atol=1e-5)
        assert not np.allclose(want, OnnxRuntimeBackend(b).run(w)["depth"])
    finally:
        listener.destroy_node()
        node.destroy_node()


def test_a_bundle_without_the_height_input_is_refused(ctx, tmp_path):
    src = load_bundle("default").path
    for name in ("model.onnx", "model.safetensors", "model.json"):
        (tmp_path / name).symlink_to(src / name)
    meta = json.loads((src / "bundle.json").read_text())
    del meta["inputs"]
    (tmp_path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="sonar.array_height_m: .*does not take the array's height"):
        PerceptionNode(context=ctx, parameter_overrides=[Parameter("array", value="robot_8mic"),
                                                         Parameter("sonar.model", value=str(tmp_path)),
                                                         Parameter("sonar.array_height_m", value=1.4)])
    with pytest.raises(ConfigError, match="sonar.floor_frame: .*does not take the array's height"):
        PerceptionNode(context=ctx, parameter_overrides=[Parameter("array", value="robot_8mic"),
                                                         Parameter("sonar.model", value=str(tmp_path)),
                                                         Parameter("sonar.floor_frame", value="base_footprint")])


def test_the_height_follows_tf_from_the_floor_frame(ctx):
    """sonar.floor_frame: the array's height above it is read from /tf_static and /tf (a chain, rotations
    composed) before each window, sonar.array_height_m standing until a transform arrives."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage

    from avperception.ros import conversions as conv

    node = PerceptionNode(context=ctx, parameter_overrides=[Parameter("array", value="robot_8mic"),
                                                            Parameter("sonar.floor_frame", value="base_footprint"),
                                                            Parameter("sonar.array_height_m", value=0.8)])
    talker = Node("talker", context=ctx)
    latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    static = talker.create_publisher(TFMessage, "/tf_static", latched)
    moving = talker.create_publisher(TFMessage, "/tf", 10)
    try:
        assert node.sonar.height_from_tf(node.tf_tree) == "no transform from base_footprint to mic_array yet"
        assert node.sonar.array_height_m == 0.8 and node.sonar.stats()["array_height_m"] == 0.8
        tilt = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # 90 deg about x: +y up becomes +z
        static.publish(conv.tf_message([conv.transform_msg("base_footprint", "base_link", [0.1, 0.0, 0.2],
                                                           np.eye(3), 0.0),
                                        conv.transform_msg("head", "mic_array", [0.0, 0.3, 0.0], tilt.T, 0.0)]))
        moving.publish(conv.tf_message([conv.transform_msg("base_link", "head", [0.0, 0.0, 0.9], tilt, 0.0)]))

        def heard() -> bool:
            moving.publish(conv.tf_message([conv.transform_msg("base_link", "head", [0.0, 0.0, 0.9], tilt, 0.0)]))
            return node.sonar.height_from_tf(node.tf_tree) is None

        assert spin_until(node, ctx, heard, 10.0)
        # base_link 0.2 up, head 0.9 above it, the array 0.3 along the head's y, which the tilt turns up
        assert node.sonar.array_height_m == pytest.approx(0.2 + 0.9 + 0.3)
        assert node.sonar.stats()["array_height_m"] == pytest.approx(1.4)
    finally:
        talker.destroy_node()
        node.destroy_node()
