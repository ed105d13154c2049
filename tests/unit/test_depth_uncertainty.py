"""The depth uncertainty head: off by default (the shipped weights load), never changes the other outputs, learns
the scale its loss asks for, and travels through ONNX and the bundle to the decoded outputs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from avperception.inference import OnnxRuntimeBackend, decode, load_bundle
from avperception.inference.synthetic import bundle_echo_window
from avperception.models import default_model
from avperception.models.student import AudioStudent, depth_std, laplace_nll


@pytest.fixture(scope="module")
def shipped():
    """The shipped student without its uncertainty head (the network the head was trained on)."""
    model = AudioStudent.load(default_model("robot_8mic")).float()
    assert model.cfg.uncertainty  # the shipped bundle has one
    bare = AudioStudent(replace(model.cfg, uncertainty=False, uncertainty_calibration=[]))  # nor its calibration
    bare.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("uncertainty.")})
    return bare.eval()


def test_off_by_default_and_a_head_leaves_every_other_output_bit_for_bit(shipped):
    from avperception.models.student import StudentConfig

    assert StudentConfig().uncertainty is False and shipped.uncertainty is None
    with_head = AudioStudent(replace(shipped.cfg, uncertainty=True)).eval()
    missing, unexpected = with_head.load_state_dict(shipped.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("uncertainty.") for k in missing)
    x = torch.from_numpy(np.stack([bundle_echo_window(load_bundle("default"), wall_distance_m=d, seed=i)
                                   for i, d in enumerate((1.0, 3.0))]))
    with torch.no_grad():
        a, b = shipped(x), with_head(x)
    assert set(b) - set(a) == {"depth_log_scale", "depth_uncertainty"}
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert b["depth_uncertainty"].shape == a["depth"].shape
    torch.testing.assert_close(b["depth_uncertainty"], depth_std(a["depth"], b["depth_log_scale"]))
    assert torch.all(b["depth_uncertainty"] > 0)


def test_the_head_reads_detached_inputs_so_its_loss_trains_only_itself(shipped):
    model = AudioStudent(replace(shipped.cfg, uncertainty=True)).train()
    model.load_state_dict(shipped.state_dict(), strict=False)
    x = 0.05 * torch.randn(2, shipped.cfg.num_mics, shipped.cfg.num_samples)
    out = model(x)
    g = out["depth"].detach() * 1.2
    laplace_nll(out["depth"].flatten(), g.flatten(), out["depth_log_scale"].flatten()).backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads and all(n.startswith("uncertainty.") for n in grads)


def test_laplace_nll_is_least_at_the_mean_absolute_log_error():
    rng = np.random.default_rng(0)
    g = torch.from_numpy(rng.uniform(0.5, 5.0, 20_000))
    p = g * torch.from_numpy(np.exp(rng.laplace(0.0, 0.3, g.shape)))
    s = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([s], lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        laplace_nll(p, g, s.expand_as(g)).backward()
        opt.step()
    assert float(s.detach().exp()) == pytest.approx(float((p.log() - g.log()).abs().mean()), rel=0.02)


def test_bundle_exports_the_uncertainty_and_decode_gives_it_in_metres(uncertainty_bundle):
    b = load_bundle(uncertainty_bundle)
    assert b.has_depth_uncertainty and load_bundle("default").has_depth_uncertainty
    spec = b.outputs["depth_uncertainty"]
    assert spec["shape"] == [1, *b.pano_shape] and spec["units"] == "m"
    window = bundle_echo_window(b, wall_distance_m=2.0, seed=3)
    raw = OnnxRuntimeBackend(b).run(window)
    model = AudioStudent.load(b.safetensors_path).float().eval()
    with torch.no_grad():
        ref = model(torch.from_numpy(window[None]))
    np.testing.assert_allclose(raw["depth_uncertainty"].squeeze(), ref["depth_uncertainty"][0].numpy(), rtol=1e-4,
                               atol=1e-5)
    raw["depth"] = raw["depth"].copy()
    raw["depth"].reshape(-1)[:5] = np.nan  # unknown depth: unknown uncertainty
    out = decode(b, raw)
    assert out.depth_uncertainty.shape == b.pano_shape and out.depth_uncertainty.dtype == np.float32
    flat = out.depth_uncertainty.reshape(-1)
    assert np.isnan(flat[:5]).all() and np.isfinite(flat[5:]).all()
    with pytest.raises(ValueError, match="depth_uncertainty"):
        decode(b, {**raw, "depth_uncertainty": np.zeros((3, 4), np.float32)})
    assert decode(b, {k: v for k, v in raw.items() if k != "depth_uncertainty"}).depth_uncertainty is None



def test_near_bound_is_the_quantile_of_the_laplace_the_head_predicts():
    """depth_near_bound inverts depth_std: for a pixel whose log depth is Laplace around log p with scale s, the
    truth lies below the bound in the asked share of draws; 0.5 gives the depth; unknown stays unknown."""
    from avperception.sonar.products import depth_near_bound

    rng = np.random.default_rng(0)
    p = np.array([[0.3, 1.0, 2.5, 7.0]], dtype=np.float32)
    s = np.array([[0.05, 0.2, 0.4, 0.8]], dtype=np.float32)
    sigma = depth_std(torch.from_numpy(p), torch.from_numpy(np.log(s))).numpy()
    truth = p[..., None] * np.exp(rng.laplace(0.0, s[..., None], size=p.shape + (200_000,)))
    for q in (0.02, 0.1, 0.3):
        bound = depth_near_bound(p, sigma, q)
        assert bound.dtype == np.float32 and (bound < p).all()
        np.testing.assert_allclose((truth < bound[..., None]).mean(axis=-1), q, atol=0.004)
    np.testing.assert_allclose(depth_near_bound(p, sigma, 0.5), p, rtol=1e-6)
    unknown = depth_near_bound(np.array([np.nan, 1.0, 2.0]), np.array([0.1, np.nan, 0.2]), 0.02)
    assert np.isnan(unknown[:2]).all() and 0 < unknown[2] < 2.0
    for bad in (0.0, 0.6):
        with pytest.raises(ValueError, match="quantile"):
            depth_near_bound(p, sigma, bad)
    with pytest.raises(ValueError, match="shape"):
        depth_near_bound(p, sigma[:, :2], 0.02)


def test_confident_depth_keeps_the_pixels_the_head_is_sure_of():
    """confident_depth keeps a pixel whose standard deviation is at most the given share of its range, exactly at
    the edge too, and gives NaN elsewhere and where the depth or the uncertainty is unknown."""
    from avperception.sonar.products import confident_depth

    d = np.array([[1.0, 2.0, 4.0, np.nan, 3.0, 0.5]], dtype=np.float32)
    u = np.array([[0.1, 0.75, 1.2, 0.1, np.nan, 0.1]], dtype=np.float32)  # relative: 0.1, 0.375, 0.3, -, -, 0.2
    c = confident_depth(d, u, 0.3)
    assert c.dtype == np.float32 and c.shape == d.shape
    np.testing.assert_array_equal(c, [[1.0, np.nan, 4.0, np.nan, np.nan, 0.5]])
    np.testing.assert_array_equal(confident_depth(d, u, 0.15), [[1.0] + [np.nan] * 5])
    np.testing.assert_array_equal(confident_depth(d, u, 10.0)[0, :3], d[0, :3])
    for bad in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="positive"):
            confident_depth(d, u, bad)
    with pytest.raises(ValueError, match="shape"):
        confident_depth(d, u[:, :2], 0.3)
