"""The geometry the node derives from learned outputs: points, voxel centres, the Nav2 slice, the pinhole view."""

import numpy as np
import pytest

from avperception.dsp.grid import equirectangular, pinhole
from avperception.sonar import products


def box_room_depth(grid, half=(2.0, 1.5), floor=0.8, ceiling=1.6):
    """Range along each ray to the walls of a box room around the array (x in +-half[0], y in +-half[1])."""
    v = grid.vectors
    with np.errstate(divide="ignore"):
        tx = np.where(np.abs(v[:, 0]) > 1e-9, half[0] / np.abs(v[:, 0]), np.inf)
        ty = np.where(np.abs(v[:, 1]) > 1e-9, half[1] / np.abs(v[:, 1]), np.inf)
        tz = np.where(v[:, 2] < -1e-9, floor / -v[:, 2], np.where(v[:, 2] > 1e-9, ceiling / v[:, 2], np.inf))
    return np.minimum(np.minimum(tx, ty), tz).reshape(grid.shape).astype(np.float32)


def test_points_land_on_the_surfaces_they_came_from():
    grid = equirectangular(resolution_deg=3.0)  # the bundles' 60 x 120 panorama
    depth = box_room_depth(grid)
    depth[0, :5] = np.nan  # unknown pixels give no point
    labels = np.full(depth.shape, 2, np.uint8)
    pts, lab = products.depth_points(depth, grid.vectors, labels)
    assert len(pts) == depth.size - 5 and lab.shape == (len(pts),)
    on_wall = np.isclose(np.abs(pts[:, 0]), 2.0, atol=1e-4) | np.isclose(np.abs(pts[:, 1]), 1.5, atol=1e-4)
    on_floor_or_ceiling = np.isclose(pts[:, 2], -0.8, atol=1e-4) | np.isclose(pts[:, 2], 1.6, atol=1e-4)
    assert np.all(on_wall | on_floor_or_ceiling)
    near, _ = products.depth_points(depth, grid.vectors, None, max_range=1.0)
    assert np.all(np.linalg.norm(near, axis=1) <= 1.0 + 1e-5) and len(near) < len(pts)


def test_voxel_centres_follow_the_zyx_crop():
    occ = np.zeros((4, 8, 16), bool)  # z, y, x over a 2 x 1 x 0.5 m crop centred at (0.5, 0, -0.25)
    occ[0, 0, 0] = occ[3, 7, 15] = True
    c = products.voxel_centres(occ, (0.5, 0.0, -0.25), (2.0, 1.0, 0.5))
    np.testing.assert_allclose(c, [[-0.5 + 0.0625, -0.5 + 0.0625, -0.5 + 0.0625],
                                   [1.5 - 0.0625, 0.5 - 0.0625, 0.0 - 0.0625]], atol=1e-6)


def test_occupancy_slice_keeps_only_the_height_band():
    occ = np.zeros((32, 32, 32), bool)  # 2.5 x 2.5 x 2 m centred on the array
    occ[:4] = True  # a floor 0.875 m and more below the array
    occ[10:20, 5, 20] = True  # a post in the band, at x index 20, y index 5
    plan = products.occupancy_slice(occ, (0, 0, 0), (2.5, 2.5, 2.0), -0.25, 0.5)
    assert plan.data.shape == (32, 32) and plan.data.dtype == np.int8
    assert plan.data[5, 20] == 100 and np.count_nonzero(plan.data) == 1  # the floor is not an obstacle
    assert plan.resolution == pytest.approx(2.5 / 32) and plan.origin[:2] == pytest.approx((-1.25, -1.25))
    with pytest.raises(ValueError, match="square"):
        products.occupancy_slice(occ[:, :16], (0, 0, 0), (2.5, 2.5, 2.0), -0.25, 0.5)


def test_pinhole_reprojection_gives_z_depth_of_a_wall_ahead():
    grid = equirectangular(resolution_deg=1.5)
    depth = box_room_depth(grid, half=(3.0, 3.0), floor=1.0, ceiling=2.0)
    cam = products.PinholeReprojection((120, 240), 64, 48, 50.0, 50.0, 31.5, 23.5)
    z = cam(depth)
    assert z.shape == (48, 64)
    # a wall 3 m ahead, square to the optical axis, has z-depth 3 in every pixel that sees it
    rays = pinhole(64, 48, 50.0, 50.0, 31.5, 23.5).vectors.reshape(48, 64, 3)
    sees_wall = (np.abs(rays[..., 1] / rays[..., 0]) < 0.9) & (np.abs(rays[..., 2] / rays[..., 0]) < 0.3)
    assert np.nanmedian(np.abs(z[sees_wall] - 3.0)) < 0.05
    assert np.all(np.isfinite(z))


def test_label_and_depth_colours():
    colors = np.array([[10, 20, 30], [200, 0, 0]], np.uint8)
    img = products.label_colors(np.array([[0, 1], [1, 7]], np.uint8), colors)
    np.testing.assert_array_equal(img[0, 1], [200, 0, 0])
    np.testing.assert_array_equal(img[1, 1], [0, 0, 0])
    d = products.depth_colors(np.array([[0.5, np.nan]], np.float32))
    assert d.shape == (1, 2, 3) and d[0, 1].sum() == 0 and d[0, 0].sum() > 0


def test_blanking_zeroes_only_the_samples_after_each_onset():
    from avperception.sonar.pipeline import blank_pings

    x = np.ones((2, 100), np.float32)
    y = blank_pings(x, 10.0, [9.999, 10.004, 20.0], 0.002, 1000)  # onsets 1 sample before, and 4 samples in
    assert np.all(x == 1)  # the input is left as it was
    np.testing.assert_array_equal(np.flatnonzero(y[0] == 0), [0, 4, 5])
    assert blank_pings(x, 10.0, [], 0.002, 1000) is x


def test_surface_voxels_keep_what_can_be_seen():
    occ = np.zeros((6, 6, 6), bool)
    occ[:3] = True  # a floor slab three voxels thick
    occ[3:, 2:4, 2:4] = True  # a 2 x 2 post standing on it
    shell = products.surface_voxels(occ)
    assert np.all(shell <= occ)
    assert not shell[:2].any()  # inside the slab (the crop's edge counts as occupied)
    assert shell[2].sum() == 36 - 4  # the slab's top, less what the post covers
    assert shell[3:, 2:4, 2:4].all()  # a post two voxels wide is all surface
