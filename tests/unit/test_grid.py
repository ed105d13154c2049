import numpy as np
import pytest

from avperception.config import ConfigError, GridConfig, PipelineConfig, load_array
from avperception.dsp import grid as grids
from avperception.dsp.grid import angular_distance_deg, azel_to_vector, vector_to_azel
from avperception.pipeline import Pipeline
from avperception.sim.room import plane_wave


def test_azel_round_trip():
    az = np.array([0, 90, -135, 179])
    el = np.array([0, 45, -30, 80])
    a, e = vector_to_azel(azel_to_vector(az, el))
    np.testing.assert_allclose(a, az, atol=1e-9)
    np.testing.assert_allclose(e, el, atol=1e-9)


def test_equirectangular_image_orientation():
    g = grids.equirectangular(resolution_deg=10)
    assert g.shape == (18, 36)
    img_az = g.as_image(g.azimuth_deg)
    img_el = g.as_image(g.elevation_deg)
    assert img_az[0, 0] > img_az[0, -1]  # +azimuth (robot's left) on the picture's left
    assert img_el[0, 0] > img_el[-1, 0]  # up is up
    r, c = g.pixel_of(azel_to_vector(90, 45))
    assert c < g.shape[1] / 2 and r < g.shape[0] / 2
    assert g.vectors[g.nearest(azel_to_vector(90, 45))] @ azel_to_vector(90, 45) > np.cos(np.radians(8))


def test_icosphere_is_uniform():
    g = grids.icosphere(4)
    assert len(g) == 2562
    nn = np.sort(g.vectors @ g.vectors.T, axis=1)[:, -2]
    spacing = np.degrees(np.arccos(nn))
    assert spacing.max() / spacing.min() < 1.4


def test_pinhole_grid_centre_ray_and_pixel_mapping():
    g = grids.pinhole(64, 48, 50.0, 50.0, 31.5, 23.5)
    centre = g.vectors.reshape(48, 64, 3)
    # the optical axis is the array's +x; image right is the robot's right (-y), image down is -z
    assert angular_distance_deg(0.5 * (centre[23, 31] + centre[24, 32]), [1, 0, 0]) < 1.0
    assert centre[24, 63][1] < 0 and centre[47, 32][2] < 0
    v = azel_to_vector(-10, 5)
    r, c = g.pixel_of(v)
    assert g.vectors[int(round(r)) * 64 + int(round(c))] @ v > np.cos(np.radians(1.5))
    assert g.pixel_of(azel_to_vector(180, 0)) is None  # behind the camera
    yawed = grids.pinhole(64, 48, 50.0, 50.0, 31.5, 23.5, (0, 0, 90))
    assert angular_distance_deg(yawed.vectors.reshape(48, 64, 3)[24, 32], [0, 1, 0]) < 2.0


def test_pinhole_energy_map_peaks_at_the_source_pixel():
    cfg = PipelineConfig(array="minidsp_uma16", grid=GridConfig(kind="pinhole", width=40, height=30, fx=30, fy=30,
                                                                cx=19.5, cy=14.5, camera_rpy_deg=(0, -90, 0)))
    # camera pitched to look straight up, like the UMA-16's face
    pipe = Pipeline(cfg)
    target = pipe.grid.vectors[10 * 40 + 28]
    x = plane_wave(pipe.array, target, 16000, pipe.frame_samples, seed=3, snr_db=25)
    e = pipe.process(x).energy
    r, c = np.unravel_index(np.argmax(e), e.shape)
    assert abs(r - 10) <= 2 and abs(c - 28) <= 2


def test_grid_config_errors():
    with pytest.raises(ConfigError, match="equirectangular' or 'pinhole"):
        grids.from_config(GridConfig(kind="fisheye"))
    with pytest.raises(ConfigError, match="az_min_deg < az_max_deg"):
        grids.from_config(GridConfig(az_min_deg=10, az_max_deg=-10))


def test_search_mask_per_array_kind():
    g = grids.equirectangular(resolution_deg=5)
    planar = g.search_mask(load_array("robot_8mic"))
    assert np.all(g.elevation_deg[planar] >= 0) and planar.sum() < len(g)
    assert g.search_mask(load_array("tetra_4mic")).all()
