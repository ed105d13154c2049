"""Scene geometry and ray-cast ground truth: polygons, panoramas, occupancy crops."""

from __future__ import annotations

import numpy as np
import pytest

from avperception.dsp.grid import equirectangular
from avperception_train.datagen.geometry import (CEILING, FLOOR, IGNORE, OBSTACLE, WALL, Box, RoomGeometry,
                                                 points_in_polygon, polygon_area, sample_floor_plan,
                                                 surface_triangles, triangulate_polygon, voxel_grid, yaw_matrix)
from avperception_train.datagen.groundtruth import RayCaster, occupancy, render_view

L_SHAPE = np.array([[0, 0], [6, 0], [6, 3], [3, 3], [3, 5], [0, 5]], dtype=float)


def test_l_shape_inside_test_and_triangulation():
    inside = points_in_polygon(np.array([[1, 1], [5, 1], [1, 4], [5, 4], [-1, 1]]), L_SHAPE)
    assert inside.tolist() == [True, True, True, False, False]
    tris = triangulate_polygon(L_SHAPE)
    assert len(tris) == len(L_SHAPE) - 2
    area = sum(abs(polygon_area(L_SHAPE[t])) for t in tris)
    assert area == pytest.approx(polygon_area(L_SHAPE)) == pytest.approx(6 * 3 + 3 * 2)


@pytest.mark.parametrize("shape", ["shoebox", "l_shape", "t_shape"])
def test_sampled_floor_plans_are_simple_ccw_and_wide_enough(shape):
    rng = np.random.default_rng(0)
    for _ in range(20):
        f = sample_floor_plan(shape, rng, (3.0, 8.0), 1.5)
        assert polygon_area(f) > 0
        v, t, lab = surface_triangles(RoomGeometry(f, 2.5).surfaces())
        assert np.all(np.isin(lab, [FLOOR, CEILING, WALL]))


def test_panorama_orientation_and_labels():
    """A box on the robot's left shows up at azimuth +90 (left half of the picture), floor below, ceiling above."""
    room = RoomGeometry(np.array([[0, 0], [6, 0], [6, 6], [0, 6]], float), 3.0,
                        boxes=[Box((2.0, 4.2), (1.0, 1.0), 2.5, 0.0)])
    origin, yaw = np.array([2.0, 2.0, 1.0]), np.pi / 2  # facing +y of the world; the box is straight ahead
    grid = equirectangular(resolution_deg=3.0)
    caster = RayCaster.for_room(room)
    depth, sem = render_view(caster, origin, yaw_matrix(0.0), grid.vectors, grid.shape)
    # with yaw 0 the box is at the robot's left: azimuth +90 -> column (180 - 90) / 3 = 30
    row_h, col_left = 29, 29  # elevation just above 0, azimuth 91.5
    assert sem[row_h, col_left] == OBSTACLE
    assert depth[row_h, col_left] == pytest.approx(1.7 / np.cos(np.radians(1.5)) / np.cos(np.radians(1.5)), rel=2e-3)
    assert sem[-1].tolist() == [FLOOR] * 120 and sem[0].tolist() == [CEILING] * 120
    assert depth[-1].mean() == pytest.approx(1.0 / np.sin(np.radians(88.5)), rel=1e-3)
    # turning the robot to face the box brings it to azimuth 0 (column 60)
    depth2, sem2 = render_view(caster, origin, yaw_matrix(yaw), grid.vectors, grid.shape)
    assert sem2[row_h, 59] == OBSTACLE and sem2[row_h, 29] == WALL
    assert not np.any(np.isnan(depth)) and IGNORE not in sem


def test_open3d_and_numpy_ray_casters_agree():
    pytest.importorskip("open3d")
    room = RoomGeometry(L_SHAPE, 2.7, boxes=[Box((1.5, 1.5), (0.8, 0.5), 1.0, 0.4)])
    grid = equirectangular(resolution_deg=6.0)
    o = np.array([4.5, 1.5, 0.8])
    a = render_view(RayCaster.for_room(room, "open3d"), o, np.eye(3), grid.vectors, grid.shape)
    b = render_view(RayCaster.for_room(room, "numpy"), o, np.eye(3), grid.vectors, grid.shape)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-5)
    assert np.mean(a[1] == b[1]) > 0.99  # ray hits exactly on an edge may pick either neighbour


def test_voxel_crop_of_a_known_box():
    """Occupancy crop around a robot facing a box: exactly the voxels whose centres are in the box or floor."""
    box = Box((3.0, 2.0), (0.5, 1.0), 0.75, 0.0)
    room = RoomGeometry(np.array([[0, 0], [8, 0], [8, 6], [0, 6]], float), 3.0, boxes=[box])
    origin = np.array([2.0, 2.0, 0.5])  # array 0.5 m above the floor
    rot = yaw_matrix(0.0)
    occ = occupancy(room, origin, rot, (0.0, 0.0, 0.0), (2.5, 2.5, 2.0), (32, 32, 32))
    assert occ.shape == (32, 32, 32)
    centres, lo, size = voxel_grid((0, 0, 0), (2.5, 2.5, 2.0), (32, 32, 32))
    x, y, z = centres[..., 0] + 2.0, centres[..., 1] + 2.0, centres[..., 2] + 0.5
    in_box = (np.abs(x - 3.0) <= 0.25) & (np.abs(y - 2.0) <= 0.5) & (z >= 0) & (z <= 0.75)
    below = z <= 0
    np.testing.assert_array_equal(occ, in_box | below)
    # index order [z, y, x]: the box is ahead (+x), the floor at the low z indices
    zi, yi, xi = np.nonzero(in_box)
    assert xi.min() > 16 and occ[0].all() and not occ[-1].any()
    # rotate the robot by +90 deg: the box is now on its right (-y)
    occ_r = occupancy(room, origin, yaw_matrix(np.pi / 2), (0, 0, 0), (2.5, 2.5, 2.0), (32, 32, 32))
    zi, yi, xi = np.nonzero(occ_r & ~below)
    assert len(yi) == in_box.sum() and yi.max() < 16


def test_box_must_fit():
    from avperception_train.datagen.geometry import box_fits

    room = RoomGeometry(L_SHAPE, 2.7)
    assert box_fits(room, Box((1.0, 1.0), (0.5, 0.5), 1.0), 0.1, 0.2)
    assert not box_fits(room, Box((3.0, 3.0), (0.8, 0.8), 1.0), 0.1, 0.2)  # straddles the inner corner
    assert not box_fits(room, Box((1.0, 1.0), (0.5, 0.5), 2.8), 0.1, 0.2)  # taller than the room
    room.boxes.append(Box((1.0, 1.0), (0.5, 0.5), 1.0))
    assert not box_fits(room, Box((1.5, 1.0), (0.5, 0.5), 1.0), 0.1, 0.2)  # overlaps
