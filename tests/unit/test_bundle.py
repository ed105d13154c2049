"""Model bundles: the shipped one's contract, the fit check, corrupt files refused, backends and their fallback."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from avperception.config import ArrayGeometry, load_array
from avperception.dsp.echo import sweep
from avperception.dsp.grid import equirectangular
from avperception.inference import (BundleError, BundleMismatch, FallbackBackend, OnnxRuntimeBackend, check_fits,
                                    decode, fits, load_bundle, make_backend)
from avperception.inference.bundle import sha256_file
from avperception.inference.synthetic import bundle_echo_window

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def bundle():
    return load_bundle("default")


@pytest.fixture(scope="module")
def window(bundle):
    """The sweep's direct path and a wall 2.5 m ahead, at the training level, with sensor noise."""
    return bundle_echo_window(bundle, wall_distance_m=2.5, wall_azimuth_deg=0.0, seed=1)


@pytest.fixture(scope="module")
def ort_out(bundle, window):
    return OnnxRuntimeBackend(bundle).run(window)


def _copy(bundle, tmp_path, with_weights=True):
    dst = tmp_path / "bundle"
    dst.mkdir()
    for name in ("bundle.json", "model.onnx") + (("model.safetensors",) if with_weights else ()):
        shutil.copyfile(bundle.path / name, dst / name)
    return dst


def _set_meta(path, **kw):
    meta = json.loads((path / "bundle.json").read_text())
    meta.update(kw)
    (path / "bundle.json").write_text(json.dumps(meta))


# ------------------------------------------------------------------------------------- the shipped bundle


def test_shipped_bundle_says_what_the_runtime_needs(bundle):
    assert bundle.array.num_mics == 8 and np.allclose(bundle.array.positions, load_array("robot_8mic").positions)
    assert (bundle.sample_rate, bundle.window_samples, bundle.speed_of_sound) == (16000, 2048, 343.0)
    np.testing.assert_allclose(bundle.emitted, sweep(16000, 1000, 7000, 0.032, "linear", 0.25), atol=1e-6)
    assert bundle.sweep_id == "linear-1000-7000Hz-32ms-16k"
    assert bundle.sweep_level_db == -30.0
    np.testing.assert_array_equal(bundle.speaker_position, [0.0, 0.0, -0.05])
    assert bundle.classes == ["floor", "ceiling", "wall", "obstacle"]
    assert bundle.class_colors.shape == (4, 3) and bundle.class_colors.dtype == np.uint8
    assert bundle.pano_shape == (60, 120) and (bundle.el_min_deg, bundle.el_max_deg) == (-90.0, 90.0)
    assert bundle.voxel_resolution == (32, 32, 32)
    np.testing.assert_allclose(bundle.voxel_extent, [2.5, 2.5, 2.0])
    assert bundle.onnx_path.is_file() and bundle.safetensors_path is not None
    outs = bundle.outputs
    assert outs["depth"]["shape"] == [1, 60, 120] and outs["depth"]["units"] == "m"
    assert outs["semantic"]["shape"] == [1, 4, 60, 120] and outs["voxels"]["shape"] == [1, 32, 32, 32]
    assert "latent" not in outs and {"energy", "layout"} <= set(outs)


def test_panorama_convention_is_the_grids_pixel_centres(bundle):
    g = bundle.panorama_grid()
    az, el = g.azimuth_deg.reshape(g.shape), g.elevation_deg.reshape(g.shape)
    ref = equirectangular(-180, 180, -90, 90, 3.0)
    np.testing.assert_allclose(g.vectors, ref.vectors)
    p = bundle.meta["panorama"]
    np.testing.assert_allclose([az[0, 0], az[0, -1]], p["column_az_deg"])
    np.testing.assert_allclose([el[0, 0], el[-1, 0]], p["row_el_deg"])
    assert az[0, 0] == pytest.approx(178.5) and az[0, 1] < az[0, 0]  # decreasing to the right


def test_voxel_centres_fill_the_crop_in_zyx_order(bundle):
    c = bundle.voxel_centers()
    assert c.shape == (32, 32, 32, 3)
    half = bundle.voxel_extent / 2 - bundle.voxel_size / 2
    np.testing.assert_allclose(c[0, 0, 0], bundle.voxel_center - half)
    np.testing.assert_allclose(c[-1, -1, -1], bundle.voxel_center + half)
    assert c[1, 0, 0, 2] > c[0, 0, 0, 2] and c[0, 0, 1, 0] > c[0, 0, 0, 0]  # first index z, last x


def test_bundle_json_round_trip(bundle, tmp_path):
    dst = _copy(bundle, tmp_path)
    again = load_bundle(dst)
    assert again.meta == bundle.meta
    assert again.sweep_id == bundle.sweep_id and np.array_equal(again.emitted, bundle.emitted)
    assert load_bundle(dst / "bundle.json").path == dst


# ------------------------------------------------------------------------------------- fit


def test_fits_its_own_array(bundle):
    assert fits(bundle, "robot_8mic") == []
    check_fits(bundle, load_array("robot_8mic"), 16000, 343.4)


def test_audio_made_with_another_sweep_or_speaker_does_not_fit(bundle):
    """Recorded audio (a dataset, a bag) must have been made with the bundle's sweep and speaker: both are named
    when they differ, and nothing is compared when they are not given (a live node emits the bundle's own)."""
    from avperception.inference.bundle import sweep_id

    own = {"sweep": bundle.sweep_id, "speaker_position": bundle.speaker_position.tolist()}
    assert fits(bundle, "robot_8mic", 16000, 343.4, **own) == []
    p = bundle.sweep_params
    other = sweep_id(p["kind"], p["f0_hz"], p["f1_hz"], p["duration_s"] / 4, bundle.sample_rate)
    moved = (bundle.speaker_position + [0.0, 0.0, 0.03]).tolist()
    with pytest.raises(BundleMismatch) as e:
        check_fits(bundle, "robot_8mic", sweep=other, speaker_position=moved)
    d = e.value.differences
    assert len(d) == 2 and bundle.sweep_id in d[0] and other in d[0] and d[1].startswith("speaker position")
    assert "sweep" in str(e.value).split("What to do:")[1]


def test_refuses_another_array_naming_the_mic_count(bundle):
    with pytest.raises(BundleMismatch) as e:
        check_fits(bundle, "respeaker_4mic")
    msg = str(e.value)
    assert "microphone count" in msg and "8 mics" in msg and "has 4" in msg
    assert "avperception-train recipe" in msg


def test_names_a_moved_mic_the_rate_and_the_speed_of_sound(bundle):
    pos = load_array("robot_8mic").positions.copy()
    pos[3, 0] += 0.05
    pos[5, 1] += 0.0005  # half a millimetre: the same microphone
    moved = ArrayGeometry("robot_8mic_moved", pos)
    with pytest.raises(BundleMismatch) as e:
        check_fits(bundle, moved, sample_rate=48000, speed_of_sound=350.0)
    d = e.value.differences
    assert len(d) == 3
    assert "microphone 3 position" in d[0] and "50.0 mm" in d[0]
    assert "sample rate" in d[1] and "48000" in d[1]
    assert "speed of sound" in d[2] and "350" in d[2]
    assert all(x in str(e.value) for x in d)


# ------------------------------------------------------------------------------------- broken bundles


def test_corrupt_onnx_is_refused(bundle, tmp_path):
    dst = _copy(bundle, tmp_path, with_weights=False)
    data = bytearray((dst / "model.onnx").read_bytes())
    data[len(data) // 2: len(data) // 2 + 8] = bytes(b ^ 0xFF for b in data[len(data) // 2: len(data) // 2 + 8])
    (dst / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="corrupt or was replaced.*sha256"):
        load_bundle(dst)


def test_clear_errors_for_missing_or_bad_files(bundle, tmp_path):
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(tmp_path / "nowhere")
    with pytest.raises(BundleError, match="no bundle.json"):
        load_bundle(tmp_path)
    dst = _copy(bundle, tmp_path, with_weights=False)
    _set_meta(dst, format_version=99)
    with pytest.raises(BundleError, match="format version 99"):
        load_bundle(dst)
    (dst / "bundle.json").write_text("{ not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(dst)
    shutil.copyfile(bundle.path / "bundle.json", dst / "bundle.json")
    (dst / "model.onnx").unlink()
    with pytest.raises(BundleError, match="model.onnx is missing"):
        load_bundle(dst)
    with pytest.raises(BundleError, match="no shipped model bundle for array 'binaural'"):
        load_bundle("default:binaural")


# ------------------------------------------------------------------------------------- backends


def test_onnx_matches_torch_on_every_head(bundle, window, ort_out):
    pytest.importorskip("torch")
    from avperception.inference import TorchBackend

    ref = TorchBackend(bundle).run(window)
    assert set(ort_out) == set(ref) == set(bundle.outputs)
    for k in ref:
        assert ort_out[k].shape == ref[k].shape == tuple(bundle.outputs[k]["shape"][1:]), k
        np.testing.assert_allclose(ort_out[k], ref[k], atol=1e-3, rtol=0, err_msg=k)


def test_decode(bundle, ort_out):
    raw = dict(ort_out)
    raw["depth"] = raw["depth"].copy()
    raw["depth"][0, :3] = [np.inf, -np.inf, np.nan]
    out = decode(bundle, raw, stamp=12.5, with_prob=True)
    assert out.depth.dtype == np.float32 and np.isnan(out.depth[0, :3]).all()
    np.testing.assert_array_equal(out.depth[1:], ort_out["depth"][1:])
    np.testing.assert_array_equal(out.labels, ort_out["semantic"].argmax(axis=0))
    p = np.exp(ort_out["semantic"]) / np.exp(ort_out["semantic"]).sum(axis=0)
    np.testing.assert_allclose(out.confidence, p.max(axis=0), rtol=1e-5)
    np.testing.assert_array_equal(out.occupancy, ort_out["voxels"] > 0)
    np.testing.assert_array_equal(out.occupancy_prob > 0.5, out.occupancy)
    assert out.layout.shape == (60, 120) and out.stamp == 12.5
    with pytest.raises(ValueError, match="voxels"):
        decode(bundle, {**ort_out, "voxels": ort_out["voxels"][:16]})


def test_wrong_window_is_the_callers_error(bundle, window):
    be = make_backend(bundle, "onnxruntime")
    with pytest.raises(ValueError, match=r"\(mics, samples\) = \(8, 2048\)"):
        be.run(window[:4])
    assert be.fallbacks == []


def test_broken_onnx_falls_back_to_torch(bundle, window, ort_out, tmp_path):
    pytest.importorskip("torch")
    dst = _copy(bundle, tmp_path)
    onnx = dst / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:4096])  # truncated, with a matching hash: it loads, onnxruntime cannot
    _set_meta(dst, model={**bundle.meta["model"], "onnx_sha256": sha256_file(onnx)})
    logs = []
    be = make_backend(load_bundle(dst), "auto", log=logs.append)
    assert be.active == "torch"
    assert any("onnxruntime-cpu skipped" in m and "cannot load" in m for m in logs), logs
    assert any("inference backend: torch" in m for m in logs)
    np.testing.assert_allclose(be.run(window)["depth"], ort_out["depth"], atol=1e-3)


class _FailsOnSecondRun:
    name = "flaky"

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def run(self, audio, array_height=0.0):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("device lost")
        return self.inner.run(audio, array_height)

    def describe(self):
        return "flaky"


def test_failure_while_running_switches_and_is_recorded(bundle, window, ort_out):
    logs = []
    be = FallbackBackend(bundle, [("flaky", lambda: _FailsOnSecondRun(OnnxRuntimeBackend(bundle))),
                                  ("onnxruntime-cpu", lambda: OnnxRuntimeBackend(bundle))], log=logs.append)
    be.run(window)
    assert be.active == "flaky" and be.fallbacks == []
    out = be.run(window)  # fails in flaky, runs again in the next one
    assert be.active == "onnxruntime-cpu"
    assert len(be.fallbacks) == 1 and "flaky failed while running (RuntimeError: device lost)" in be.fallbacks[0]
    assert any("switching to the next backend" in m for m in logs)
    np.testing.assert_array_equal(out["depth"], ort_out["depth"])
    assert be.diagnostics()["fallbacks"] == be.fallbacks and be.last_ms > 0


def test_runtime_needs_no_torch():
    code = ("import sys; import avperception.inference as i; b = i.load_bundle(); i.check_fits(b, 'robot_8mic'); "
            "from avperception.inference.synthetic import bundle_echo_window as w; "
            "be = i.make_backend(b, threads=1); o = i.decode(b, be.run(w(b))); "
            "assert be.active == 'onnxruntime-cpu', be.active; assert o.depth.shape == (60, 120); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr


def test_the_array_height_reaches_the_graph_and_a_bundle_without_it_says_so(bundle, window, ort_out, tmp_path):
    """The shipped graph takes the array's height: ONNX Runtime renders the floor that far below, as torch does;
    0 is unknown (the heard floor). A bundle that cannot take it refuses a height with what to do, before any
    backend runs (no fallback), and a negative one is refused too."""
    pytest.importorskip("torch")
    from avperception.inference import TorchBackend

    assert bundle.takes_array_height
    be = make_backend(bundle, "onnxruntime")
    np.testing.assert_array_equal(be.run(window, 0.0)["depth"], ort_out["depth"])
    got = be.run(window, 1.6)
    assert got["heights"][0] == pytest.approx(1.6)
    assert not np.allclose(got["depth"], ort_out["depth"])
    ref = TorchBackend(bundle).run(window, 1.6)
    for k in ("depth", "heights", "layout", "depth_uncertainty"):
        np.testing.assert_allclose(got[k], ref[k], atol=1e-3, rtol=0, err_msg=k)
    with pytest.raises(ValueError, match="finite number of metres"):
        be.run(window, -1.0)
    dst = _copy(bundle, tmp_path)
    meta = json.loads((dst / "bundle.json").read_text())
    del meta["inputs"]
    (dst / "bundle.json").write_text(json.dumps(meta))
    old = make_backend(load_bundle(dst), "onnxruntime")
    assert not old.bundle.takes_array_height
    with pytest.raises(ValueError, match="does not take the array's height.*export-bundle"):
        old.run(window, 1.6)
    assert old.fallbacks == []
