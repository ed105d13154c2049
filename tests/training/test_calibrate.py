"""Calibrating the depth uncertainty: the scale that makes the near bound hold, found on rooms the model did not
train on, applied to the weights and carried into the bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


def test_the_fitted_scale_recovers_an_overconfident_laplace():
    """Errors drawn from a Laplace twice as wide as the predicted scale: the fit finds about 2, and the bound then
    holds at the quantile; at the right scale the truth lies below it at about the quantile already."""
    from avperception_train.learn.calibrate import below_share, fit_scale

    rng = np.random.default_rng(0)
    b = rng.uniform(0.05, 0.3, 200_000)
    r = rng.laplace(0.0, 2.0 * b)
    q = 0.02
    assert below_share(r, b, q) == pytest.approx(2 * q * (2 * q) ** -0.5 / 2, rel=0.05)  # P(L < 0.5 b log 2q)
    c = fit_scale(r, b, q)
    assert c == pytest.approx(2.0, rel=0.05)
    assert below_share(r, b, q, c) == pytest.approx(q, abs=1e-4)
    assert below_share(r, 2 * b, q) == pytest.approx(q, rel=0.05)
    with pytest.raises(ValueError, match="quantile"):
        fit_scale(r, b, 0.6)
    with pytest.raises(ValueError, match="nearer than the truth"):
        fit_scale(np.full(100, 1.0), np.full(100, 0.1), q)  # the truth always far beyond: no scale helps


@pytest.fixture(scope="module")
def split_scenes(ring_dataset):
    """12 robot_8mic scenes, half of them in validation rooms."""
    return ring_dataset(9, 12, {"train": 0.0, "val": 0.5, "test": 0.5})


def test_calibrate_uncertainty_scales_every_pixel_and_the_bundle_records_it(split_scenes, tmp_path, capsys):
    from avperception.inference.bundle import load_bundle
    from avperception_train.cli import main
    from avperception_train.learn.commands import default_model_path, load_student
    from avperception_train.learn.data import InMemoryScenes

    src = str(default_model_path().with_suffix(".safetensors"))
    out = tmp_path / "calibrated"
    assert main(["calibrate-uncertainty", src, "--data", str(split_scenes), "--out", str(out)]) == 0
    assert "uncertainty scale x" in capsys.readouterr().out
    before, after = load_student(src).float().eval(), load_student(str(out) + ".safetensors").float().eval()
    info = json.loads(out.with_suffix(".json").read_text())["uncertainty_calibration"]
    assert info["split"] == "val" and info["scenes"] == len(InMemoryScenes(split_scenes, "val"))
    assert info["quantile"] == 0.02 and info["below_after"] == pytest.approx(0.02, abs=0.002)
    audio = torch.stack([InMemoryScenes(split_scenes, "test")[i]["audio"] for i in range(2)])
    with torch.no_grad():
        a, b = before(audio), after(audio)
    torch.testing.assert_close(a["depth"], b["depth"])  # only the uncertainty changes, by the one factor
    inside = (a["depth_log_scale"] > -5.9) & (a["depth_log_scale"] < 1.9)  # away from the head's clamp
    ratio = (b["depth_uncertainty"] / a["depth_uncertainty"])[inside]
    np.testing.assert_allclose(ratio.numpy(), info["scale"], rtol=1e-4)
    assert main(["export-bundle", str(out) + ".safetensors", "--data", str(split_scenes), "--out",
                 str(tmp_path / "bundle"), "--no-weights"]) == 0
    assert load_bundle(tmp_path / "bundle").meta["uncertainty_calibration"] == info
    assert main(["calibrate-uncertainty", src, "--data", str(split_scenes), "--split", "train", "--out",
                 str(tmp_path / "x")]) != 0  # no training rooms in this dataset: said, not a crash


def test_calibrating_on_several_datasets_pools_their_rooms(split_scenes, ring_dataset, tmp_path):
    """``--data A,B``: the scale is fitted on both datasets' validation rooms at once, so it lies between the scales
    each one alone gives (the pooled quantile lies between theirs); a dataset named twice counts once."""
    from avperception_train.learn.commands import calibrate_student, default_model_path

    other = ring_dataset(13, 8, {"train": 0.0, "val": 0.5, "test": 0.5})
    src = str(default_model_path().with_suffix(".safetensors"))
    info = {}
    for name, data in (("a", str(split_scenes)), ("b", str(other)), ("ab", f"{split_scenes},{other},{other}")):
        out = calibrate_student(src, data, tmp_path / name, log=lambda *_: None)
        info[name] = json.loads(out.with_suffix(".json").read_text())["uncertainty_calibration"]
    assert info["ab"]["scenes"] == info["a"]["scenes"] + info["b"]["scenes"]
    assert info["ab"]["pixels"] == info["a"]["pixels"] + info["b"]["pixels"]
    lo, hi = sorted((info["a"]["scale"], info["b"]["scale"]))
    assert lo < hi and lo <= info["ab"]["scale"] <= hi
