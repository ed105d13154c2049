"""Acoustic images: per-direction band spectra, MFCC compression and the energy map recovered from it."""

import numpy as np
import pytest

from avperception.config import load_array
from avperception.dsp import grid as grids
from avperception.dsp.acoustic_image import (AcousticImager, energy_from_mfcc, log_bands_from_mfcc, rank_correlation,
                                             to_mfcc)
from avperception.dsp.beamforming import make_beamformer
from avperception.dsp.grid import angular_distance_deg, azel_to_vector
from avperception.dsp.stft import stft
from avperception.sim.room import plane_wave

FS = 16000


@pytest.fixture(scope="module")
def scene():
    arr = load_array("minidsp_uma16")
    grid = grids.equirectangular(-180, 180, 0, 90, 6.0)  # upper hemisphere: the side a planar array resolves
    u = azel_to_vector(-50.0, 35.0)
    x = plane_wave(arr, u, FS, 8448, seed=2, snr_db=10)
    return arr, grid, u, stft(x, 512, 256)


def _peak_dir(grid, values):
    return grid.vectors[int(np.argmax(np.ravel(values)))]


def test_image_shape_and_peak_at_source(scene):
    arr, grid, u, spec = scene
    im = AcousticImager(arr, grid, FS, 512, n_bands=32, fmin=100)
    img = im.image(spec)
    assert img.shape == (*grid.shape, 32) and img.dtype == np.float32 and np.all(img >= 0)
    assert angular_distance_deg(_peak_dir(grid, img.sum(-1)), u) < grid.resolution_deg
    # in every band with enough resolution the loudest pixel is the source's
    hi = im.band_centers_hz > 1500
    peaks = [angular_distance_deg(_peak_dir(grid, img[..., b]), u) for b in np.flatnonzero(hi)]
    assert np.median(peaks) < grid.resolution_deg


def test_pinhole_image(scene):
    arr, _, _, _ = scene
    cam = grids.pinhole(48, 36, 40.0, 40.0, 23.5, 17.5, camera_rpy_deg=(0.0, -30.0, 20.0))  # looks up-left
    u = cam.vectors[cam.shape[1] * 10 + 30]  # the ray of pixel (row 10, col 30)
    x = plane_wave(arr, u, FS, 8448, seed=3, snr_db=15)
    img = AcousticImager(arr, cam, FS, 512, n_bands=24, fmin=300).image(stft(x, 512, 256))
    assert img.shape == (36, 48, 24)
    r, c = np.unravel_index(np.argmax(img.sum(-1)), (36, 48))
    assert abs(r - 10) <= 2 and abs(c - 30) <= 2


def test_band_energies_add_up_to_delay_and_sum_power(scene):
    arr, grid, _, spec = scene
    im = AcousticImager(arr, grid, FS, 512, n_bands=40, fmin=0.0)
    total = im.image(spec).sum(-1).ravel()
    w = im.fb.sum(0)  # peak-1 mel triangles: every bin's weight ~1 except at the band edges
    expect = (w[:, None] * im.bin_power(spec)).sum(0)
    np.testing.assert_allclose(total, expect, rtol=1e-4)
    # and that is the registry's delay-and-sum beamformer over the same bins, up to those edge weights
    das = make_beamformer("das", arr, grid, sample_rate=FS, nfft=512, fmin=0.0, fmax=FS / 2).map(spec)
    assert rank_correlation(total, das) > 0.99


def test_few_frames_path_equals_covariance_path(scene):
    arr, grid, _, spec = scene
    im = AcousticImager(arr, grid, FS, 512, n_bands=16)
    few = spec[:, :, :5]  # 5 frames < 16 mics: beamforms the frames directly
    a = im.bin_power(few)
    from avperception.dsp.beamforming.narrowband import _quadratic
    from avperception.dsp.gcc import band_covariance

    b = _quadratic(im._steer, band_covariance(few, im.bins)) / arr.num_mics**2
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6 * b.max())


def test_mfcc_roundtrip_with_all_coefficients_is_exact(scene):
    arr, grid, _, spec = scene
    img = AcousticImager(arr, grid, FS, 512, n_bands=24).image(spec)
    cep = to_mfcc(img, n_mfcc=24, eps=1e-12)
    np.testing.assert_allclose(np.exp(log_bands_from_mfcc(cep, 24)), img, rtol=1e-3, atol=1e-9)
    np.testing.assert_allclose(energy_from_mfcc(cep, 24), img.sum(-1), rtol=1e-3)


def test_mfcc_energy_map_ranks_like_beamformed_power(scene):
    arr, grid, u, spec = scene
    im = AcousticImager(arr, grid, FS, 512, n_bands=40, fmin=100)
    img = im.image(spec)
    cep = to_mfcc(img, n_mfcc=12)  # 12 of 40: the spectral envelope only, as in the paper's data
    assert cep.shape == (*grid.shape, 12)
    energy = energy_from_mfcc(cep, 40)
    das = make_beamformer("das", arr, grid, sample_rate=FS, nfft=512, fmin=100, fmax=FS / 2).map(spec)
    assert rank_correlation(energy, das) > 0.95
    assert angular_distance_deg(_peak_dir(grid, energy), _peak_dir(grid, das)) < 1e-6
    assert angular_distance_deg(_peak_dir(grid, energy), u) < grid.resolution_deg


def test_mfcc_without_c0_reciprocal_points_at_the_source(scene):
    arr, grid, u, spec = scene
    # unit-area mel bands: a white source has a flat band spectrum, off-source pixels a coloured one
    im = AcousticImager(arr, grid, FS, 512, n_bands=40, fmin=100, band_norm="slaney")
    img = im.image(spec)
    cep = to_mfcc(img, n_mfcc=12, include_c0=False)
    recip = energy_from_mfcc(cep, 40, has_c0=False)
    assert angular_distance_deg(_peak_dir(grid, recip), u) < 2 * grid.resolution_deg
    # the value itself (before the reciprocal) is lowest at the source: inversely related to energy
    near = (grid.vectors @ u) > np.cos(np.radians(15))
    e = img.sum(-1).ravel()
    assert recip.ravel()[near].mean() > np.percentile(recip, 90)
    assert rank_correlation(recip.ravel()[near], e[near]) > 0.5


def test_bad_arguments():
    arr = load_array("robot_8mic")
    g = grids.icosphere(1)
    with pytest.raises(ValueError, match="bands"):
        AcousticImager(arr, g, n_bands=300, nfft=128)
    with pytest.raises(ValueError, match="mel"):
        AcousticImager(arr, g, bands="bark")
    with pytest.raises(ValueError, match="expected STFT"):
        AcousticImager(arr, g, n_bands=8).image(np.zeros((3, 257, 4), np.complex64))
    with pytest.raises(ValueError):
        to_mfcc(np.ones((4, 10)), n_mfcc=10, include_c0=False)
