"""Active sensing: the matched filter finds a simulated echo at the right range, numpy and torch agree."""

import numpy as np
import pytest
import torch

from avperception.dsp.echo import (beam_envelope, beam_kernels, echo_image, echo_profile, echogram, matched_iq,
                                  quadrature_kernels, sweep, sweep_band)
from avperception.dsp.grid import azel_to_vector, horizon

FS, C = 16000, 343.0


def echo_scene(ranges_m, gains, n=2048, mics=3, seed=0):
    """The sweep straight from the speaker at lag 2, plus one echo per surface at ``2 r / c``."""
    s = sweep(FS, 1000, 7000, 0.008)
    x = np.zeros((mics, n))
    x[:, 2:2 + s.size] += s
    for r, g in zip(ranges_m, gains):
        lag = int(round(2 * r / C * FS))
        x[:, lag:lag + s.size] += g * s[: n - lag]
    x += 0.01 * np.random.default_rng(seed).standard_normal(x.shape)
    return x, s


def test_sweep_is_tapered_unit_peak_and_checks_its_kind():
    s = sweep(FS, 1000, 7000, 0.008)
    assert s.shape == (128,) and np.max(np.abs(s)) == pytest.approx(1.0) and abs(s[0]) < 1e-9
    with pytest.raises(ValueError, match="linear or exponential"):
        sweep(FS, 1000, 7000, 0.008, kind="square")


@pytest.mark.parametrize("r", [0.6, 1.5, 3.2])
def test_chirp_echo_gives_the_right_distance(r):
    x, s = echo_scene([r], [0.3])
    for hop in (1, 4):
        e = echogram(torch.from_numpy(x).float(), torch.from_numpy(quadrature_kernels(s)), hop)[0].numpy()
        skip = (2 + 12) // hop + 1  # past the direct sound's compressed main lobe (about fs / bandwidth wide)
        lag = (skip + int(np.argmax(e[skip:]))) * hop
        found = C * (lag - 2) / FS / 2
        assert abs(found - r) <= 0.02 + C * hop / FS / 2, (hop, found, r)


def test_unit_copy_peaks_at_one_and_torch_matches_numpy():
    x, s = echo_scene([2.0], [0.5])
    k = torch.from_numpy(quadrature_kernels(s))
    assert np.exp(echogram(torch.from_numpy(x[:1]).float(), k, 1)[0].numpy()).max() == pytest.approx(1.0, rel=0.05)
    ref = echo_profile(x, s) / np.sum(s * s)  # numpy envelope, same scale
    got = np.sqrt(np.exp(echogram(torch.from_numpy(x).float(), k, 1).numpy()))
    inner = slice(200, 1800)  # the analytic signal of a finite record differs near its ends
    np.testing.assert_allclose(got[:, inner], ref[:, inner], atol=0.02)


def test_bad_reference_is_refused():
    with pytest.raises(ValueError, match="non-zero 1-D"):
        quadrature_kernels(np.zeros(64))


# ----------------------------------------------------------------------------- echo image

RING = np.array([[0.1 * np.cos(a), 0.1 * np.sin(a), 0.0] for a in 2 * np.pi * np.arange(8) / 8])


def plane_wave_echo(direction, r, n=2048, positions=RING, seed=0):
    """The sweep from the speaker at the origin, reflected at range ``r`` in ``direction``: mic ``m``
    hears it at ``(2 r - u . p_m) / c`` (far field), fractionally delayed in the frequency domain."""
    s = sweep(FS, 1000, 7000, 0.008)
    u = np.asarray(direction, float) / np.linalg.norm(direction)
    lag = (2 * r - positions @ u) / C * FS  # (M,)
    f = np.fft.rfftfreq(2 * n)
    spec = np.fft.rfft(s, 2 * n)[None] * np.exp(-2j * np.pi * f[None] * lag[:, None])
    x = 0.3 * np.fft.irfft(spec, 2 * n, axis=1)[:, :n]
    x[:, :s.size] += s  # the direct sound
    return x + 0.01 * np.random.default_rng(seed).standard_normal(x.shape), s


def directions(azimuths=24, elevations=(0.0, 30.0, 60.0)):
    """``(E * A, 3)``, elevation-major, azimuths evenly spaced from 0."""
    az, el = np.meshgrid(np.arange(azimuths) * 360.0 / azimuths, elevations)
    return azel_to_vector(az, el).reshape(-1, 3)


def log_image(x, s, dirs, hop=4, length=1024):
    """The echo image as log power, the strongest lag in each ``hop``: ``(D, length // hop)``."""
    img = echo_image(x, s, RING, dirs, FS, C)[:, :length]
    return np.log(img.reshape(len(dirs), length // hop, hop).max(-1) + 1e-8)


@pytest.mark.parametrize("az_deg,el_deg,r", [(0.0, 0.0, 1.5), (105.0, 0.0, 2.4), (-60.0, 30.0, 3.1), (200.0, 60.0, 0.9)])
def test_echo_image_finds_the_reflector_in_direction_and_range(az_deg, el_deg, r):
    u = azel_to_vector(az_deg, el_deg)
    x, s = plane_wave_echo(u, r)
    dirs = directions()
    hop = 4
    img = log_image(x, s, dirs, hop)
    skip = 16 // hop + 1  # past the direct sound
    d, t = np.unravel_index(int(np.argmax(img[:, skip:])), img[:, skip:].shape)
    found_r = C * (t + skip) * hop / FS / 2
    assert abs(found_r - r) <= 0.02 + C * hop / FS / 2, (found_r, r)
    # the brightest direction is the grid direction nearest the reflector (grid spacing 15 deg), up to the
    # ring's up/down mirror (a planar array hears +el and -el alike)
    mirrored = u * np.array([1, 1, -1])
    err = np.degrees(np.arccos(np.clip(max(dirs[d] @ u, dirs[d] @ mirrored), -1, 1)))
    grid = np.degrees(np.arccos(np.clip(max((dirs @ u).max(), (dirs @ mirrored).max()), -1, 1)))
    assert err <= grid + 8.0, (err, grid)


def test_echo_image_peaks_at_the_mic_count_squared_and_only_in_one_direction():
    x, s = plane_wave_echo([0.3, 0.8, 0.2], 3.0)
    ref = echo_image(x, s, RING, directions(16, (0.0, 45.0)), FS, C)
    echo = ref[:, 270:290].max(axis=1)  # the echo at lag 2 r / c fs = 280
    # eight mics in phase: (8 x 0.3)^2 = 5.76 (the grid misses the direction by a few degrees)
    assert 0.8 * 5.76 < echo.max() < 1.05 * 5.76
    assert echo.max() > 3 * echo.min()  # the steering does something


def test_turning_the_ring_turns_the_echo_image():
    """Mic ``m`` hearing what mic ``m - 1`` heard is the scene turned by 45 deg: the image turns by 3 of 24 azimuths."""
    x, s = plane_wave_echo([np.cos(1.0), np.sin(1.0), 0.3], 2.2)
    dirs = directions()
    img = log_image(x, s, dirs).reshape(3, 24, 256)
    turned = log_image(np.roll(x, 1, axis=0), s, dirs).reshape(3, 24, 256)
    np.testing.assert_allclose(turned, np.roll(img, 3, axis=1), atol=1e-3, rtol=1e-3)
    assert not np.allclose(turned, img, atol=0.1)


# ----------------------------------------------------------------------------- beams inside the network


@pytest.mark.parametrize("n,length", [(2048, 128), (1000, 37), (5, 9)])
def test_matched_iq_is_the_plain_correlation_with_each_kernel(n, length):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((2, 3, n))
    k = rng.standard_normal((2, 1, length))
    got = matched_iq(torch.from_numpy(x).float(), torch.from_numpy(k).float()).numpy()
    assert got.shape == (2, 3, 2, n)
    padded = np.concatenate([x, np.zeros((2, 3, length - 1))], axis=-1)
    for c in range(2):  # output t = sum_j k[j] x[t + j], zeros past the record's end
        want = np.stack([[np.correlate(padded[b, m], k[c, 0], "valid") for m in range(3)] for b in range(2)])
        np.testing.assert_allclose(got[:, :, c], want, atol=1e-4, rtol=1e-4)


def test_sweep_band_is_where_the_sweep_has_energy():
    lo, hi = sweep_band(sweep(FS, 1000, 7000, 0.008))
    assert 0.02 < lo < 1000 / FS and 7000 / FS < hi < 0.48
    with pytest.raises(ValueError, match="band"):
        beam_kernels(RING, horizon(90.0).vectors, FS, (0.3, 0.1))


@pytest.mark.parametrize("az_deg,r", [(40.0, 1.7), (-100.0, 2.9), (170.0, 0.8)])
def test_beams_match_the_echo_image_and_find_the_wall_echo(az_deg, r):
    """The network's beams (band-fitted fractional-delay filters, strided) against the exact numpy echo image."""
    x, s = plane_wave_echo(azel_to_vector(az_deg, 0.0), r)
    dirs = horizon(22.5).vectors  # 16 azimuths
    hop = 4
    iq = matched_iq(torch.from_numpy(x).float()[None], torch.from_numpy(quadrature_kernels(s)))
    got = beam_envelope(iq, torch.from_numpy(beam_kernels(RING, dirs, FS, sweep_band(s), C)), hop)[0].numpy()
    ref = log_image(x, s, dirs, hop, length=x.shape[1])
    strong = ref > ref.max() - np.log(100.0)  # within 20 dB of the peak
    inner = np.zeros_like(strong)
    inner[:, 16 // hop + 1: 1800 // hop] = True  # past the direct sound, away from the record's end
    np.testing.assert_allclose(got[strong & inner], ref[strong & inner], atol=0.25)  # within about 1 dB
    skip = 16 // hop + 1
    d, t = np.unravel_index(int(np.argmax(got[:, skip:])), got[:, skip:].shape)
    assert abs(C * (t + skip) * hop / FS / 2 - r) <= 0.02 + C * hop / FS / 2
    beam_az = np.degrees(np.arctan2(dirs[d, 1], dirs[d, 0]))
    assert abs((beam_az - az_deg + 180) % 360 - 180) <= 11.25 + 1e-6  # the nearest of 16 beams
