"""Calibrating the depth uncertainty: the scale (and its slope with depth) that makes the near bound hold, found on
rooms the model did not train on, applied to the weights and carried into the bundle."""

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


def test_the_fitted_slope_recovers_an_uncertainty_that_grows_with_depth():
    """Errors whose Laplace scale is twice the predicted one times sqrt(depth): the fit finds the factor and the
    slope, and its bound then holds at the quantile both where the depth is near and where it is far; one factor
    alone (slope 0) leaves the truth below the bound too often far away and too rarely near."""
    from avperception_train.learn.calibrate import below_share, fit_calibration, quantile_loss

    rng = np.random.default_rng(1)
    n = 400_000
    b, d = rng.uniform(0.05, 0.3, n), np.exp(rng.uniform(np.log(0.3), np.log(8.0), n))
    r = rng.laplace(0.0, 2.0 * b * np.sqrt(d))
    q = 0.02
    c, k = fit_calibration(r, b, d, q)
    assert c == pytest.approx(2.0, rel=0.1) and k == pytest.approx(0.5, abs=0.051)
    assert fit_calibration(r, b, d, q, max_pixels=40_000)[1] == pytest.approx(k, abs=0.11)  # slope on a tenth
    near, far = d < 1.0, d > 3.0
    for part in (near, far):
        assert below_share(r[part], b[part], q, c, d[part], k) == pytest.approx(q, rel=0.15)
    c0, k0 = fit_calibration(r, b, d, q, slopes=[0.0])
    assert k0 == 0.0 and below_share(r, b, q, c0) == pytest.approx(q, abs=1e-4)
    assert below_share(r[near], b[near], q, c0) < 0.5 * q < 2 * q < below_share(r[far], b[far], q, c0)
    log_2q = np.log(2 * q)
    assert quantile_loss(r, c * b * d ** k * log_2q, q) < quantile_loss(r, c0 * b * log_2q, q)


@pytest.fixture(scope="module")
def split_scenes(ring_dataset):
    """12 robot_8mic scenes, half of them in validation rooms."""
    return ring_dataset(9, 12, {"train": 0.0, "val": 0.5, "test": 0.5})


def test_calibrate_uncertainty_scales_every_pixel_and_the_bundle_records_it(split_scenes, tmp_path, capsys):
    """The calibrated student gives the same depth and, per pixel, the head's scale times ``c d^k``: one ``(c, k)``
    with the array's height heard, another with it given; the ONNX bundle carries both and bundle.json records
    them."""
    from avperception.inference.backends import OnnxRuntimeBackend
    from avperception.inference.bundle import load_bundle
    from avperception_train.cli import main
    from avperception_train.learn.commands import default_model_path, load_student
    from avperception_train.learn.data import InMemoryScenes
    from avperception_train.learn.evaluate import scene_array_heights

    src = str(default_model_path().with_suffix(".safetensors"))
    out = tmp_path / "calibrated"
    assert main(["calibrate-uncertainty", src, "--data", str(split_scenes), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "height heard: scale x" in printed and "height given: scale x" in printed
    before, after = load_student(src).float().eval(), load_student(str(out) + ".safetensors").float().eval()
    before.set_uncertainty_calibration(None)  # the head as trained
    info = json.loads(out.with_suffix(".json").read_text())["uncertainty_calibration"]
    assert info["split"] == "val" and info["scenes"] == len(InMemoryScenes(split_scenes, "val"))
    assert info["quantile"] == 0.02
    for mode in ("heard", "given"):
        assert info[mode]["below_after"] == pytest.approx(0.02, abs=0.002)
    assert after.cfg.uncertainty_calibration == [[np.log(info[m]["scale"]), info[m]["depth_slope"]]
                                                 for m in ("heard", "given")]
    test = [InMemoryScenes(split_scenes, "test")[i] for i in range(2)]
    audio = torch.stack([t["audio"] for t in test])
    heights = torch.from_numpy(scene_array_heights({"heights": np.stack([t["heights"] for t in test])}))
    for mode, h in (("heard", None), ("given", heights)):
        with torch.no_grad():
            a, b = before(audio, h), after(audio, h)
        torch.testing.assert_close(a["depth"], b["depth"])  # only the uncertainty changes
        inside = (a["depth_log_scale"] > -5.9) & (a["depth_log_scale"] < 1.9)  # away from the head's clamp
        inside &= (b["depth_log_scale"] > -5.9) & (b["depth_log_scale"] < 1.9)
        ratio = (b["depth_uncertainty"] / a["depth_uncertainty"])[inside]
        expect = info[mode]["scale"] * a["depth"][inside] ** info[mode]["depth_slope"]
        np.testing.assert_allclose(ratio.numpy(), expect.numpy(), rtol=1e-3)
    assert main(["export-bundle", str(out) + ".safetensors", "--data", str(split_scenes), "--out",
                 str(tmp_path / "bundle"), "--no-weights"]) == 0
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.meta["uncertainty_calibration"] == info
    backend = OnnxRuntimeBackend(bundle)  # the graph the node runs, against the calibrated torch student
    for h in (0.0, float(heights[0])):
        got = backend.run(audio[0].numpy(), h)["depth_uncertainty"]
        with torch.no_grad():
            ref = after(audio[:1], torch.tensor([h]) if h else None)["depth_uncertainty"][0].numpy()
        np.testing.assert_allclose(got, ref, rtol=2e-2, atol=2e-3)
    assert main(["calibrate-uncertainty", src, "--data", str(split_scenes), "--split", "train", "--out",
                 str(tmp_path / "x")]) != 0  # no training rooms in this dataset: said, not a crash


def test_calibrating_on_several_datasets_pools_their_rooms(split_scenes, ring_dataset, tmp_path):
    """``--data A,B``: the calibration is fitted on both datasets' validation rooms at once (its scenes and pixels
    are theirs together, and its bound holds on them together); a dataset named twice counts once."""
    from avperception_train.learn.commands import calibrate_student, default_model_path

    other = ring_dataset(13, 8, {"train": 0.0, "val": 0.5, "test": 0.5})
    src = str(default_model_path().with_suffix(".safetensors"))
    info = {}
    for name, data in (("a", str(split_scenes)), ("b", str(other)), ("ab", f"{split_scenes},{other},{other}")):
        out = calibrate_student(src, data, tmp_path / name, log=lambda *_: None)
        info[name] = json.loads(out.with_suffix(".json").read_text())["uncertainty_calibration"]
    assert info["ab"]["scenes"] == info["a"]["scenes"] + info["b"]["scenes"]
    for mode in ("heard", "given"):
        assert info["ab"][mode]["pixels"] == info["a"][mode]["pixels"] + info["b"][mode]["pixels"]
        assert info["ab"][mode]["below_after"] == pytest.approx(0.02, abs=0.002)


def test_a_dataset_without_validation_rooms_is_left_out_and_said(split_scenes, ring_dataset, tmp_path):
    """``--data A,B`` where B has no validation rooms (too few scenes: splits are by room): the calibration is A's
    alone, its record names A only, and the log says why; with no validation rooms anywhere it is refused."""
    from avperception_train.learn.commands import calibrate_student, default_model_path

    train_only = ring_dataset(17, 6, {"train": 1.0, "val": 0.0, "test": 0.0})
    src = str(default_model_path().with_suffix(".safetensors"))
    logs = []
    alone = calibrate_student(src, str(split_scenes), tmp_path / "a", log=lambda *_: None)
    both = calibrate_student(src, f"{split_scenes},{train_only}", tmp_path / "ab", log=logs.append)
    a, ab = (json.loads(p.with_suffix(".json").read_text())["uncertainty_calibration"] for p in (alone, both))
    assert ab["data"] == str(split_scenes) and ab["scenes"] == a["scenes"] and ab["heard"] == a["heard"]
    assert any(f"{train_only} has no validation rooms" in line for line in logs)
    with pytest.raises(ValueError, match="no validation rooms"):
        calibrate_student(src, str(train_only), tmp_path / "b", log=lambda *_: None)


def test_training_from_a_calibrated_student_starts_from_the_head_as_trained(split_scenes):
    """The calibration fits the network it was fitted on: ``train --init`` (the same array) and ``--transfer`` give
    a student whose uncertainty is the head's own, to be calibrated again after training."""
    from avperception.models import default_model
    from avperception.models.student import AudioStudent
    from avperception_train.learn.config import load_train_config
    from avperception_train.learn.data import InMemoryScenes
    from avperception_train.learn.train import initial_student, student_config, transfer_student

    shipped = AudioStudent.load(default_model()).float().eval()
    assert shipped.cfg.uncertainty_calibration  # the shipped student is calibrated
    cfg = load_train_config("training/configs/uncertainty_cpu.yaml", data=str(split_scenes))
    info = InMemoryScenes(split_scenes, "val").info
    audio = InMemoryScenes(split_scenes, "test")[0]["audio"][None]
    with torch.no_grad():
        calibrated = shipped(audio)["depth_log_scale"]
        shipped.set_uncertainty_calibration(None)
        raw = shipped(audio)["depth_log_scale"]
    assert not torch.allclose(calibrated, raw)
    for start in (lambda: initial_student("default", student_config(cfg, info), info.emitted),
                  lambda: transfer_student("default", student_config(cfg, info), info.emitted, log=None)):
        model, sc = start()[:2]
        assert sc.uncertainty_calibration == [] and not model.uncertainty.calibrated
        with torch.no_grad():
            torch.testing.assert_close(model.float().eval()(audio)["depth_log_scale"], raw)
    from dataclasses import replace

    for bad in ([[0.1, 0.3]], [[0.1, 0.3], [float("nan"), 0.0]]):  # one row; not finite
        with pytest.raises(ValueError, match="uncertainty_calibration"):
            replace(sc, uncertainty_calibration=bad)
    with pytest.raises(ValueError, match="uncertainty head"):  # a model without the head has nothing to calibrate
        replace(sc, uncertainty=False, uncertainty_calibration=[[0.1, 0.3], [0.0, 0.5]])
