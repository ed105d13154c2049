"""perception_node publishes sonar/depth_uncertainty (32FC1, metres), the near bound and the confident depth it gives
beside sonar/depth when its bundle's model has an uncertainty head, and none of them when it has none; the bound's
quantile and the confident depth's largest relative standard deviation are parameters (0: not published)."""

import json

import numpy as np
import rclpy  # noqa: F401
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, PointCloud2

from avperception.inference import OnnxRuntimeBackend, decode, load_bundle
from avperception.inference.synthetic import bundle_echo_window
from avperception.ros.conversions import cloud_to_arrays, image_to_array
from avperception.ros.perception_node import PerceptionNode
from avperception.sonar.products import confident_depth, depth_colors, depth_near_bound

from dds import spin_until  # noqa: E402  (tests/ros)


def test_depth_uncertainty_is_published_beside_the_depth(ctx, uncertainty_bundle):
    node = PerceptionNode(context=ctx, parameter_overrides=[Parameter("array", value="robot_8mic"),
                                                            Parameter("sonar.model", value=str(uncertainty_bundle)),
                                                            Parameter("sonar.near_bound_quantile", value=0.05)])
    listener = Node("listener", context=ctx)
    got: dict[str, Image] = {}
    topics = ("sonar/depth", "sonar/depth_uncertainty", "sonar/depth_near_bound")
    for topic in topics:
        listener.create_subscription(Image, topic, lambda m, t=topic: got.__setitem__(t, m), qos_profile_sensor_data)
    try:
        b = load_bundle(uncertainty_bundle)
        out = decode(b, OnnxRuntimeBackend(b).run(bundle_echo_window(b, wall_distance_m=1.5, seed=2)), stamp=12.5)

        def published() -> bool:
            node.sonar_pub.publish(out, everything=True)
            return len(got) == len(topics)

        assert spin_until(listener, ctx, published, 10.0)
        for topic in topics[1:]:
            msg = got[topic]
            assert msg.encoding == "32FC1" and (msg.height, msg.width) == b.pano_shape
            assert msg.header.frame_id == got["sonar/depth"].header.frame_id
            assert msg.header.stamp == got["sonar/depth"].header.stamp
        np.testing.assert_array_equal(image_to_array(got["sonar/depth_uncertainty"]), out.depth_uncertainty)
        bound = image_to_array(got["sonar/depth_near_bound"])
        np.testing.assert_array_equal(bound, depth_near_bound(out.depth, out.depth_uncertainty, 0.05))
        known = np.isfinite(out.depth)
        assert np.isfinite(bound[known]).all() and (bound[known] < out.depth[known]).all()
    finally:
        listener.destroy_node()
        node.destroy_node()


def test_no_uncertainty_topic_for_a_bundle_without_one(ctx, tmp_path):
    src = load_bundle("default").path  # the same bundle without the output
    for name in ("model.onnx", "model.safetensors", "model.json"):
        (tmp_path / name).symlink_to(src / name)
    meta = json.loads((src / "bundle.json").read_text())
    del meta["outputs"]["depth_uncertainty"]
    (tmp_path / "bundle.json").write_text(json.dumps(meta))
    node = PerceptionNode(context=ctx, parameter_overrides=[Parameter("array", value="robot_8mic"),
                                                            Parameter("sonar.model", value=str(tmp_path))])
    try:
        assert not node.sonar.bundle.has_depth_uncertainty and node.sonar_pub.depth_uncertainty is None
        topics = {name for name, _ in node.get_topic_names_and_types()}
        assert "/sonar/depth" in topics
        assert not {"/sonar/depth_uncertainty", "/sonar/depth_near_bound", "/sonar/depth_confident",
                    "/sonar/depth_confident_color"} & topics
    finally:
        node.destroy_node()


def test_no_near_bound_when_its_quantile_is_zero(ctx, uncertainty_bundle):
    node = PerceptionNode(context=ctx, parameter_overrides=[Parameter("array", value="robot_8mic"),
                                                            Parameter("sonar.model", value=str(uncertainty_bundle)),
                                                            Parameter("sonar.near_bound_quantile", value=0.0),
                                                            Parameter("sonar.confident_max_rel_std", value=0.0)])
    try:
        assert node.sonar_pub.depth_uncertainty is not None and node.sonar_pub.depth_near_bound is None
        assert node.sonar_pub.depth_confident is None and node.sonar_pub.depth_confident_color is None
        topics = {name for name, _ in node.get_topic_names_and_types()}
        assert "/sonar/depth_uncertainty" in topics
        assert not {"/sonar/depth_near_bound", "/sonar/depth_confident", "/sonar/depth_confident_color"} & topics
    finally:
        node.destroy_node()


def test_confident_depth_is_the_depth_where_the_head_is_sure(ctx, uncertainty_bundle):
    """sonar/depth_confident: the depth where its standard deviation is at most sonar.confident_max_rel_std of it,
    NaN elsewhere; the parameter set at the median relative uncertainty of the ping keeps about half the pixels.
    sonar/depth_confident_color colours those pixels as sonar/depth_color does and leaves the rest black. With
    sonar.points_confident, sonar/points carries those pixels only."""
    b = load_bundle(uncertainty_bundle)
    out = decode(b, OnnxRuntimeBackend(b).run(bundle_echo_window(b, wall_distance_m=1.5, seed=3)), stamp=3.0)
    known = np.isfinite(out.depth)
    r = float(np.median(out.depth_uncertainty[known] / out.depth[known]))
    node = PerceptionNode(context=ctx, parameter_overrides=[Parameter("array", value="robot_8mic"),
                                                            Parameter("sonar.model", value=str(uncertainty_bundle)),
                                                            Parameter("sonar.confident_max_rel_std", value=r),
                                                            Parameter("sonar.points_confident", value=True)])
    listener = Node("listener", context=ctx)
    got: dict = {}
    listener.create_subscription(Image, "sonar/depth_confident", lambda m: got.__setitem__("c", m),
                                 qos_profile_sensor_data)
    listener.create_subscription(Image, "sonar/depth_confident_color", lambda m: got.__setitem__("rgb", m),
                                 qos_profile_sensor_data)
    listener.create_subscription(PointCloud2, "sonar/points", lambda m: got.__setitem__("p", m),
                                 qos_profile_sensor_data)
    try:
        def published() -> bool:
            node.sonar_pub.publish(out, everything=True)
            return len(got) == 3

        assert spin_until(listener, ctx, published, 10.0)
        msg = got["c"]
        assert msg.encoding == "32FC1" and (msg.height, msg.width) == b.pano_shape
        conf = image_to_array(msg)
        np.testing.assert_array_equal(conf, confident_depth(out.depth, out.depth_uncertainty, r))
        kept = np.isfinite(conf)
        assert 0.3 < kept.sum() / known.sum() < 0.7 and (conf[kept] == out.depth[kept]).all()
        rgb = image_to_array(got["rgb"])
        assert got["rgb"].encoding == "rgb8" and rgb.shape == (*b.pano_shape, 3)
        np.testing.assert_array_equal(rgb, depth_colors(conf))
        np.testing.assert_array_equal(rgb[kept], depth_colors(out.depth)[kept])
        assert not rgb[~kept].any() and rgb[kept].any(axis=-1).all()
        cloud = cloud_to_arrays(got["p"])
        ranges = np.sqrt(cloud["x"] ** 2 + cloud["y"] ** 2 + cloud["z"] ** 2)
        in_range = kept & (conf <= node.sonar_pub.cfg.points_max_range_m)
        assert len(ranges) == in_range.sum() > 0
        np.testing.assert_allclose(np.sort(ranges), np.sort(conf[in_range]), rtol=1e-5)
    finally:
        listener.destroy_node()
        node.destroy_node()
