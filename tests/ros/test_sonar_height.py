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
