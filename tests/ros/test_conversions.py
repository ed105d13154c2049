import numpy as np
import pytest

import rclpy  # noqa: E402

from rclpy.parameter import Parameter  # noqa: E402

from avperception.config import PipelineConfig  # noqa: E402
from avperception.dsp.grid import azel_to_vector  # noqa: E402
from avperception.dsp.peaks import SourceDirection  # noqa: E402
from avperception.ros import conversions as conv  # noqa: E402
from avperception.ros.params import declare_dataclass, read_dataclass  # noqa: E402


@pytest.mark.parametrize("a", [np.random.default_rng(0).random((5, 7), dtype=np.float32),
                               np.arange(12, dtype=np.uint8).reshape(3, 4),
                               np.arange(36, dtype=np.uint8).reshape(3, 4, 3)])
def test_image_round_trip(a):
    msg = conv.array_to_image(a, 12.25, "mic_array")
    assert msg.header.frame_id == "mic_array" and conv.stamp_to_sec(msg.header.stamp) == pytest.approx(12.25)
    np.testing.assert_array_equal(conv.image_to_array(msg), a)


def test_direction_quaternion_round_trip():
    for az, el in [(0, 0), (90, 0), (-135, 30), (45, -60), (180, 89)]:
        v = azel_to_vector(az, el)
        np.testing.assert_allclose(conv.direction_from_quaternion(conv.quaternion_from_direction(v)), v, atol=1e-9)


def test_markers_and_poses_point_at_sources():
    v = azel_to_vector(30, 20)
    src = [SourceDirection(30.0, 20.0, 0.8, tuple(v))]
    poses = conv.sources_to_pose_array(src, 1.0, "mic_array", distance=2.0)
    np.testing.assert_allclose(conv.pose_array_to_directions(poses)[0], v, atol=1e-9)
    assert poses.poses[0].position.x == pytest.approx(2 * v[0])
    markers = conv.sources_to_markers(src, 1.0, "mic_array")
    assert markers.markers[0].action == markers.markers[0].DELETEALL
    arrow = [m for m in markers.markers if m.type == m.ARROW and m.action == m.ADD][0]
    np.testing.assert_allclose([arrow.points[1].x, arrow.points[1].y, arrow.points[1].z], v, atol=1e-6)


def test_parameters_come_from_the_config_dataclass():
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    try:
        node = rclpy.create_node("p", context=ctx, parameter_overrides=[
            Parameter("grid.resolution_deg", value=5), Parameter("array", value="robot_8mic")])
        declare_dataclass(node, PipelineConfig())
        cfg = read_dataclass(node, PipelineConfig)
        assert cfg.grid.resolution_deg == 5.0 and cfg.array == "robot_8mic"
        assert cfg.frame == PipelineConfig().frame
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_point_cloud_round_trip_with_fields():
    rng = np.random.default_rng(1)
    pts = rng.standard_normal((50, 3)).astype(np.float32)
    label = rng.integers(0, 4, 50).astype(np.uint8)
    msg = conv.points_to_cloud(pts, 3.5, "mic_array", {"label": label})
    assert msg.width == 50 and msg.height == 1 and msg.point_step == 13 and len(msg.data) == 50 * 13
    back = conv.cloud_to_arrays(msg)
    np.testing.assert_array_equal(np.stack([back["x"], back["y"], back["z"]], 1), pts)
    np.testing.assert_array_equal(back["label"], label)
    with pytest.raises(ValueError, match="label"):
        conv.points_to_cloud(pts, 0.0, "a", {"label": label[:10]})
    assert conv.points_to_cloud(np.zeros((0, 3)), 0.0, "a").width == 0


def test_rgb_field_packs_as_rviz_reads_it():
    from avperception.ros.sonar_outputs import pack_rgb

    v = pack_rgb(np.array([[255, 128, 1]], np.uint8)).view(np.uint32)
    assert v[0] == 0xFF8001


def test_occupancy_grid_and_camera_info():
    grid = conv.occupancy_grid_msg(np.array([[0, 100, 0], [-1, 0, 100]], np.int8), (-1.0, -2.0, 0.1), 0.05, 7.0, "a")
    assert (grid.info.width, grid.info.height) == (3, 2) and grid.info.resolution == pytest.approx(0.05)
    assert list(grid.data) == [0, 100, 0, -1, 0, 100] and grid.info.origin.position.y == -2.0
    info = conv.camera_info_msg(64, 48, 50.0, 51.0, 31.5, 23.5, 7.0, "cam")
    assert info.k[0] == 50.0 and info.k[4] == 51.0 and info.k[2] == 31.5 and info.p[6] == 23.5
    assert info.header.frame_id == "cam" and info.width == 64


def test_cube_markers_clear_then_draw():
    m = conv.cube_markers(np.array([[0.1, 0.2, 0.3], [1, 1, 1]]), (0.1, 0.1, 0.1), 1.0, "a")
    assert m.markers[0].action == m.markers[0].DELETEALL and len(m.markers[1].points) == 2


def test_transform_quaternion_rotates_like_its_matrix():
    from avperception.dsp.grid import OPTICAL_TO_BODY, rpy_matrix

    half_turn = np.array([[0.0, -1, 0], [-1, 0, 0], [0, 0, -1]])  # 180 deg about (1, -1, 0) / sqrt(2)
    for r in [rpy_matrix(*rpy) @ OPTICAL_TO_BODY for rpy in [(0, 0, 0), (0, 0, 90), (10, -20, 135), (0, 0, 180),
                                                              (180, 0, 0)]] + [half_turn, np.eye(3)]:
        q = conv.transform_msg("a", "b", (1, 2, 3), r, 0.0).transform.rotation
        x, y, z, w = q.x, q.y, q.z, q.w
        back = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                         [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                         [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
        np.testing.assert_allclose(back, r, atol=1e-9)
