"""Integration over real DDS on loopback: three processes (audio publisher, perception node, this test)."""

import sys
from pathlib import Path

import numpy as np
import pytest

import rclpy  # noqa: E402
import avperception_msgs.msg  # noqa: E402,F401  (built by make install)

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseArray  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from avperception.config import PipelineConfig, load_array  # noqa: E402
from avperception.dsp import grid as grids  # noqa: E402
from avperception.dsp.grid import angular_distance_deg, azel_to_vector  # noqa: E402
from avperception.dsp.peaks import canonical_direction  # noqa: E402
from avperception.ros.conversions import image_to_array, pose_array_to_directions  # noqa: E402

HERE = Path(__file__).resolve().parent

from dds import logs, spin_until  # noqa: E402  (ros_env: tests/ros/conftest.py)


def peak_direction(img: np.ndarray, grid) -> np.ndarray:
    return grid.vectors[int(np.argmax(img))]


@pytest.mark.parametrize("kind", ["avperception", "float32"])
def test_energy_map_peak_points_at_published_plane_wave(ros_env, kind):
    start, node, ctx, tmp = ros_env
    array, az, el = "respeaker_6mic", 60.0, 25.0
    start(sys.executable, "-m", "avperception.ros.runner", "perception", "--ros-args", "-p", f"array:={array}",
          "-p", "grid.resolution_deg:=2.0", "-p", f"input_type:={'auto' if kind == 'avperception' else 'float32'}")
    maps, sources, diags = [], [], []
    node.create_subscription(Image, "acoustic/energy", lambda m: maps.append(m), qos_profile_sensor_data)
    node.create_subscription(PoseArray, "acoustic/source_poses", lambda m: sources.append(m), 10)
    node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diags.append(m), 10)
    start(sys.executable, str(HERE / "publish_plane_wave.py"), array, str(az), str(el), "4", kind)
    ok = spin_until(node, ctx, lambda: len(maps) >= 20 and len(diags) >= 2, 90)
    assert ok, f"received {len(maps)} maps, {len(diags)} diagnostics, {len(sources)} source poses\n" + logs(tmp)
    grid = grids.equirectangular(resolution_deg=2.0)
    arr = load_array(array)
    true = azel_to_vector(az, el)
    img = image_to_array(maps[-1])
    assert maps[-1].encoding == "32FC1" and img.shape == grid.shape
    assert angular_distance_deg(canonical_direction(peak_direction(img, grid), arr), true) < 6
    best = pose_array_to_directions(sources[-1])[0]
    assert angular_distance_deg(best, true) < 5
    values = {kv.key: kv.value for kv in diags[-1].status[0].values}
    assert float(values["map_rate_hz"]) > 5
    assert int(values["rejected_chunks"]) == 0


def test_sim_audio_node_room_source_is_found(ros_env):
    start, node, ctx, tmp = ros_env
    common = ["-p", "array:=robot_8mic"]
    start(sys.executable, "-m", "avperception.ros.runner", "perception", "--ros-args", *common)
    start(sys.executable, "-m", "avperception.ros.runner", "sim_audio", "--ros-args", *common,
          "-p", "source_positions:=[4.8, 1.6, 1.4]", "-p", "source_signals:=[noise]",
          "-p", "source_orbit_deg_per_s:=[0.0]")
    maps, truth, tracks = [], [], []
    node.create_subscription(Image, "acoustic/energy", lambda m: maps.append(m), qos_profile_sensor_data)
    node.create_subscription(PoseArray, "sim/true_source_poses", lambda m: truth.append(m), 10)
    node.create_subscription(MarkerArray, "acoustic/tracks", lambda m: tracks.append(m), 10)
    assert spin_until(node, ctx, lambda: len(maps) >= 15 and truth, 60), logs(tmp)
    grid = grids.from_config(PipelineConfig().grid)
    arr = load_array("robot_8mic")
    true = pose_array_to_directions(truth[-1])[0]
    errs = [angular_distance_deg(canonical_direction(peak_direction(image_to_array(m), grid), arr),
                                 canonical_direction(true, arr)) for m in maps[-10:]]
    assert np.median(errs) < 8, errs
    # the tracker keeps one stable id on the static source
    ids = [[m.text.split()[0] for m in t.markers if m.type == m.TEXT_VIEW_FACING] for t in tracks[-5:]]
    assert all(i and i[0] == ids[0][0] for i in ids), ids
