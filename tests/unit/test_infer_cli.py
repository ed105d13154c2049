"""``avperception infer``: one window or a longer recording in, the learned outputs and their description out."""

import json

import numpy as np
import pytest

from avperception.cli import main, write_wav
from avperception.inference.bundle import load_bundle
from avperception.inference.synthetic import bundle_echo_window


@pytest.fixture(scope="module")
def bundle():
    return load_bundle()


def test_one_window_gives_every_output(tmp_path, bundle, capsys):
    x = bundle_echo_window(bundle, wall_distance_m=1.5)
    wav = tmp_path / "ping.wav"
    write_wav(wav, bundle.array.to_device_layout(x), bundle.sample_rate)
    assert main(["infer", str(wav), "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    depth, sem, occ = (np.load(out / f) for f in ("depth.npy", "semantic.npy", "occupancy.npy"))
    assert depth.shape == tuple(bundle.pano_shape) and depth.dtype == np.float32
    assert sem.shape == depth.shape and sem.dtype == np.uint8 and sem.max() < len(bundle.classes)
    assert occ.shape == tuple(bundle.voxel_resolution[::-1]) and occ.dtype == bool
    meta = json.loads((out / "meta.json").read_text())
    assert meta["semantic"]["classes"] == list(bundle.classes) and meta["windows"][0]["onset_sample"] == 0
    assert (out / "preview.png").stat().st_size > 10_000
    # the shipped bundle has a depth uncertainty: it, the node's near bound and confident depth are written too
    from avperception.config import SonarConfig
    from avperception.sonar.products import confident_depth, depth_near_bound

    unc, bound = np.load(out / "depth_uncertainty.npy"), np.load(out / "depth_near_bound.npy")
    known = np.isfinite(depth)
    assert unc.shape == depth.shape and unc.dtype == np.float32 and (unc[known] > 0).all()
    q = SonarConfig().near_bound_quantile
    np.testing.assert_array_equal(bound, depth_near_bound(depth, unc, q))
    assert (bound[known] < depth[known]).all() and meta["depth_near_bound"]["quantile"] == q
    assert meta["windows"][0]["depth_near_bound"] == "depth_near_bound.npy"
    r = SonarConfig().confident_max_rel_std
    conf = np.load(out / "depth_confident.npy")
    np.testing.assert_array_equal(conf, confident_depth(depth, unc, r))
    assert meta["depth_confident"]["max_rel_std"] == r and meta["windows"][0]["depth_confident"] == "depth_confident.npy"
    assert "depth_near_bound*.npy, depth_confident*.npy" in capsys.readouterr().out


def test_pings_in_a_longer_recording_are_found_at_their_onsets(tmp_path, bundle):
    n, fs = bundle.window_samples, bundle.sample_rate
    onsets = [1000, 5000, 9137]
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((bundle.num_mics, 9137 + n + 500)) * 10 ** (-65 / 20)).astype(np.float32)
    for k, d in zip(onsets, (1.2, 2.5, 3.3)):
        x[:, k: k + n] += bundle_echo_window(bundle, wall_distance_m=d, noise_db=-200, seed=k)
    wav = tmp_path / "rec.wav"
    write_wav(wav, bundle.array.to_device_layout(x), fs)
    assert main(["infer", str(wav), "--out", str(tmp_path / "out")]) == 0
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    found = [w["onset_sample"] for w in meta["windows"]]
    assert len(found) == 3 and np.max(np.abs(np.array(found) - onsets)) <= 1
    assert (tmp_path / "out" / "depth_002.npy").exists()


def test_a_recording_of_another_array_is_refused_naming_the_difference(tmp_path, bundle, capsys):
    from avperception.config import load_array

    wav = tmp_path / "four.wav"
    channels = load_array("respeaker_4mic").input_channels
    write_wav(wav, np.zeros((channels, bundle.window_samples), np.float32), bundle.sample_rate)
    assert main(["infer", str(wav), "--array", "respeaker_4mic", "--model", "default:robot_8mic",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "4" in err and "8" in err and "mic" in err


def test_too_short_a_recording_says_how_long_a_window_is(tmp_path, bundle, capsys):
    wav = tmp_path / "short.wav"
    write_wav(wav, np.zeros((bundle.num_mics, 100), np.float32), bundle.sample_rate)
    assert main(["infer", str(wav), "--out", str(tmp_path / "o")]) == 2
    assert "2048" in capsys.readouterr().err


def test_the_array_height_reaches_the_model(tmp_path, bundle, capsys):
    """``--array-height`` is the node's ``sonar.array_height_m``: the model renders the floor that far below; a
    bundle that cannot take it is refused with what to do."""
    from avperception.inference import OnnxRuntimeBackend

    x = bundle_echo_window(bundle, wall_distance_m=1.5)
    wav = tmp_path / "ping.wav"
    write_wav(wav, bundle.array.to_device_layout(x), bundle.sample_rate)
    assert main(["infer", str(wav), "--array-height", "1.3", "--out", str(tmp_path / "out")]) == 0
    depth = np.load(tmp_path / "out" / "depth.npy")
    want = OnnxRuntimeBackend(bundle).run(x, 1.3)["depth"]
    np.testing.assert_allclose(depth, want, atol=1e-5)
    assert not np.allclose(want, OnnxRuntimeBackend(bundle).run(x)["depth"])
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["array_height_m"] == 1.3
    assert main(["infer", str(wav), "--array-height", "-2", "--out", str(tmp_path / "bad")]) != 0
    assert "array_height_m must be in [0, 10]" in capsys.readouterr().err


def test_pings_of_a_recording_made_standing_still_can_be_averaged(tmp_path, bundle, capsys):
    """``--average-pings 3``: each ping is heard as the mean of its window and up to two before it (the node's
    sonar.average_pings), so the third ping's depth is the network's on the mean of the three windows."""
    from avperception.inference import OnnxRuntimeBackend

    n, fs = bundle.window_samples, bundle.sample_rate
    onsets = [1000, 5000, 9000, 13000]
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((bundle.num_mics, 13000 + n + 500)) * 10 ** (-40 / 20)).astype(np.float32)  # loud noise
    for k in onsets:
        x[:, k: k + n] += bundle_echo_window(bundle, wall_distance_m=1.8, noise_db=-200)
    wav = tmp_path / "still.wav"
    write_wav(wav, bundle.array.to_device_layout(x), fs)
    assert main(["infer", str(wav), "--average-pings", "3", "--out", str(tmp_path / "out")]) == 0
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    found = [w["onset_sample"] for w in meta["windows"]]
    assert [w["pings_averaged"] for w in meta["windows"]] == [1, 2, 3, 3]
    windows = [x[:, k: k + n] for k in found[:3]]
    want = OnnxRuntimeBackend(bundle).run(np.mean(windows, axis=0).astype(np.float32))["depth"]
    np.testing.assert_allclose(np.load(tmp_path / "out" / "depth_002.npy"), want, atol=1e-5)
    assert main(["infer", str(wav), "--average-pings", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "average_pings must be in [1, 16]" in capsys.readouterr().err
