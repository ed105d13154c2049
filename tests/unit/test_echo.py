"""Active sensing: the matched filter finds a simulated echo at the right range, numpy and torch agree."""

import numpy as np
import pytest
import torch

from avperception.dsp.echo import echo_profile, echogram, quadrature_kernels, sweep

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
