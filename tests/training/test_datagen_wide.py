"""The data engine's named scene distributions: standard is the shipped config unchanged; wide reaches the robots
and rooms the standard one leaves out (arrays low, high and close to walls, big rooms and corridors, loud and near
sources), and its ground truth is right at a wall a few centimetres from the microphones."""

from __future__ import annotations

import numpy as np
import pytest

from avperception.config import load_array
from avperception_train.cli import main
from avperception_train.datagen.config import (DISTRIBUTIONS, DatagenConfig, DatagenConfigError, distribution_path,
                                               load_config)
from avperception_train.datagen.geometry import polygon_edge_distance
from avperception_train.datagen.scene import generate_scene, robot_clearance, sample_scene


@pytest.fixture(scope="module")
def wide():
    return load_config(distribution="wide")


@pytest.fixture(scope="module")
def wide_specs(wide):
    mics = load_array(wide.array).positions
    return [sample_scene(wide, i, mics) for i in range(240)]


def test_standard_is_the_shipped_config_and_wide_overrides_only_its_keys(wide, tmp_path):
    assert DISTRIBUTIONS[0] == "standard" and distribution_path("wide").is_file()
    assert load_config(distribution="standard").digest() == load_config().digest() == DatagenConfig().digest()
    assert wide.robot.array_height_m == (0.1, 2.0) and wide.room.size_m[1] == 12.0
    assert wide.room.shapes["corridor"] > 0 and wide.passive.level_db[1] > DatagenConfig().passive.level_db[1]
    assert wide.audio == DatagenConfig().audio and wide.active == DatagenConfig().active  # the same robot and sweep
    user = tmp_path / "user.yaml"
    user.write_text("robot:\n  array_height_m: [0.2, 0.4]\n")
    mine = load_config(user, {"seed": 3}, distribution="wide")
    assert mine.robot.array_height_m == (0.2, 0.4) and mine.seed == 3 and mine.room.size_m == (3.0, 12.0)
    with pytest.raises(DatagenConfigError, match="standard, wide"):
        load_config(distribution="huge")


def test_wide_scenes_reach_beyond_the_standard_ranges(wide, wide_specs):
    std = DatagenConfig()
    mics = load_array(wide.array).positions
    heights = np.array([s.array_height for s in wide_specs])
    assert heights.min() < std.robot.array_height_m[0] and heights.max() > std.robot.array_height_m[1]
    assert heights.min() >= 0.1 - 1e-9 and heights.max() <= 2.0 + 1e-9
    clear = np.array([s.room.clearance_2d(s.robot_xy[None])[0] for s in wide_specs])
    assert (clear < std.robot.clearance_m).mean() > 0.03  # closer to a wall or box than any standard scene
    assert clear.min() >= robot_clearance(wide, mics) - 1e-9  # the microphones stay inside the room
    spans = np.array([np.ptp(s.room.floor, axis=0).max() for s in wide_specs])
    assert spans.max() > std.room.size_m[1]
    corridors = [s for s in wide_specs if s.room.shape == "corridor"]
    assert corridors and all(np.ptp(s.room.floor, axis=0).min() <= 2 * wide.room.min_width_m for s in corridors)
    assert all(np.ptp(s.room.floor, axis=0).max() >= 7.5 for s in corridors)
    near = [np.linalg.norm(src.position - s.origin) for s in wide_specs for src in s.sources]
    loud = [src.level_db for s in wide_specs for src in s.sources]
    assert min(near) < std.passive.min_distance_m and max(loud) > std.passive.level_db[1]
    assert max(len(s.sources) for s in wide_specs) > std.passive.num_sources[1]


def test_near_placement_puts_the_robot_close_to_a_wall_or_box_and_leaves_other_scenes_alone(wide, wide_specs):
    mics = load_array(wide.array).positions
    near = load_config(None, {"robot": {"near_probability": 1.0, "near_max_m": 0.5}}, distribution="wide")
    specs = [sample_scene(near, i, mics) for i in range(60)]
    clear = np.array([s.room.clearance_2d(s.robot_xy[None])[0] for s in specs])
    assert clear.max() <= 0.5 + 1e-9 and clear.min() >= robot_clearance(near, mics) - 1e-9
    before = np.array([s.room.clearance_2d(s.robot_xy[None])[0] for s in wide_specs[:60]])
    assert (before > 0.5).mean() > 0.3  # without it, most robots stand farther out
    half = load_config(None, {"robot": {"near_probability": 0.5}}, distribution="wide")
    moved = [not np.allclose(sample_scene(half, i, mics).robot_xy, wide_specs[i].robot_xy) for i in range(60)]
    assert 0.2 < np.mean(moved) < 0.8  # about half the scenes are drawn near, the rest exactly as before
    same = load_config(None, {"robot": {"near_probability": 0.0}}, distribution="wide")
    assert all(np.array_equal(sample_scene(same, i, mics).robot_xy, wide_specs[i].robot_xy) for i in range(20))


def test_wide_ground_truth_is_right_at_a_close_wall(wide, wide_specs):
    """A scene whose nearest surface is a wall within 25 cm of the array's origin: the horizon's nearest pixel is
    that wall at its perpendicular distance (to the half pixel's angle), labelled wall, and no ray is shorter."""
    def wall_gap(s):
        d_wall = polygon_edge_distance(s.robot_xy[None], s.room.floor)[0]
        return d_wall if np.isclose(s.room.clearance_2d(s.robot_xy[None])[0], d_wall) else np.inf

    spec = min(wide_specs, key=wall_gap)
    d = wall_gap(spec)
    assert d < 0.25
    scene = generate_scene(wide, spec.index)
    np.testing.assert_allclose(scene["robot_pose"][:2], spec.robot_xy)
    assert np.isfinite(scene["audio"]).all() and np.abs(scene["audio"]).max() > 0
    depth, sem = scene["depth"], scene["semantic"]
    h = depth.shape[0]
    horizon = depth[h // 2 - 1: h // 2 + 1]  # the two rows 1.5 deg above and below the horizon
    half = np.deg2rad(1.5)
    i = np.unravel_index(np.nanargmin(horizon), horizon.shape)
    assert d <= horizon[i] <= d / np.cos(half) ** 2 + 1e-6
    assert sem[h // 2 - 1 + i[0], i[1]] == 2  # wall
    nearest_3d = min(d, spec.array_height, spec.room.height - spec.array_height)
    assert np.nanmin(depth) >= nearest_3d - 1e-6


def test_datagen_cli_takes_the_distribution(tmp_path, capsys):
    assert main(["datagen", "--distribution", "wide", "--print-config", "--set", "boxes.count=[0, 1]"]) == 0
    out = capsys.readouterr().out
    assert "corridor: 0.3" in out and "- 12.0" in out and "- 0\n  - 1\n" in out
