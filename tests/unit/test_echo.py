"""Active sensing: the matched filter finds a simulated echo at the right range, numpy and torch agree."""

import numpy as np
import pytest
import torch

from avperception.dsp.echo import (echo_directions, echo_image, echo_image_reference, echo_profile, echogram,
                                   fractional_delay_kernels, quadrature_kernels, steering_delays, sweep)

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


def image_modules(azimuths=24, elevations=(0.0, 30.0, 60.0), taps=17):
    dirs = echo_directions(azimuths, elevations)
    fd = fractional_delay_kernels(steering_delays(RING, dirs, FS, C), taps, (800 / FS, 7200 / FS))
    return dirs, torch.from_numpy(fd)


@pytest.mark.parametrize("az_deg,el_deg,r", [(0.0, 0.0, 1.5), (105.0, 0.0, 2.4), (-60.0, 30.0, 3.1), (200.0, 60.0, 0.9)])
def test_echo_image_finds_the_reflector_in_direction_and_range(az_deg, el_deg, r):
    a, e = np.radians(az_deg), np.radians(el_deg)
    u = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    x, s = plane_wave_echo(u, r)
    dirs, fd = image_modules()
    hop = 4
    img = echo_image(torch.from_numpy(x[None]).float(), torch.from_numpy(quadrature_kernels(s)), fd, hop, 1024)[0]
    skip = 16 // hop + 1  # past the direct sound
    d, t = np.unravel_index(int(torch.argmax(img[:, skip:])), img[:, skip:].shape)
    found_r = C * (t + skip) * hop / FS / 2
    assert abs(found_r - r) <= 0.02 + C * hop / FS / 2, (found_r, r)
    # the brightest direction is the grid direction nearest the reflector (grid spacing 15 deg), up to the
    # ring's up/down mirror (a planar array hears +el and -el alike)
    mirrored = u * np.array([1, 1, -1])
    err = np.degrees(np.arccos(np.clip(max(dirs[d] @ u, dirs[d] @ mirrored), -1, 1)))
    grid = np.degrees(np.arccos(np.clip(max((dirs @ u).max(), (dirs @ mirrored).max()), -1, 1)))
    assert err <= grid + 8.0, (err, grid)


def test_echo_image_matches_the_numpy_reference():
    x, s = plane_wave_echo([0.3, 0.8, 0.2], 3.0)
    dirs, fd = image_modules(azimuths=16, elevations=(0.0, 45.0))
    got = np.exp(echo_image(torch.from_numpy(x[None]).float(), torch.from_numpy(quadrature_kernels(s)), fd, 1,
                            2048)[0].numpy())
    ref = echo_image_reference(x, s, RING, dirs, FS, C)
    inner = slice(200, 1800)
    scale = ref[:, inner].max()
    assert np.abs(got[:, inner] - ref[:, inner]).max() / scale < 0.02
    # and both differ a lot between directions (the steering does something)
    echo = ref[:, 270:290].max(axis=1)  # the echo at lag 2 r / c fs = 280
    assert echo.max() > 3 * echo.min()


def test_fractional_delay_kernels_check_their_length():
    with pytest.raises(ValueError, match="odd"):
        fractional_delay_kernels(np.zeros((2, 3)), 24)
    with pytest.raises(ValueError, match="more than 9 taps"):
        fractional_delay_kernels(np.full((2, 3), 5.0), 9)
    with pytest.raises(ValueError, match="band"):
        fractional_delay_kernels(np.zeros((2, 3)), 9, (0.3, 0.7))


def test_fractional_delay_holds_in_band_for_the_fit_and_below_for_the_sinc():
    delay = 2.37
    f = np.linspace(0.06, 0.44, 50)
    j = np.arange(17) - 8
    for band, tol in (((0.05, 0.45), 0.05), (None, 0.1)):
        w = fractional_delay_kernels(np.array([[delay]]), 17, band)[0, 0].astype(float)
        h = (w[None] * np.exp(2j * np.pi * f[:, None] * j[None])).sum(1)
        want = np.exp(-2j * np.pi * f * delay)
        sel = f < (0.45 if band else 0.35)
        assert np.abs(h - want)[sel].max() < tol, (band, np.abs(h - want).max())


def test_turning_the_ring_turns_the_echo_image():
    """Mic ``m`` hearing what mic ``m - 1`` heard is the scene turned by 45 deg: the image turns by 3 of 24 azimuths."""
    x, s = plane_wave_echo([np.cos(1.0), np.sin(1.0), 0.3], 2.2)
    _, fd = image_modules()
    k = torch.from_numpy(quadrature_kernels(s))
    a = torch.from_numpy(x[None]).float()
    img = echo_image(a, k, fd, 4, 1024).reshape(3, 24, 256)
    turned = echo_image(torch.roll(a, 1, dims=1), k, fd, 4, 1024).reshape(3, 24, 256)
    torch.testing.assert_close(turned, torch.roll(img, 3, dims=1), atol=1e-3, rtol=1e-3)
    assert not torch.allclose(turned, img, atol=0.1)
