"""Bundles from training: export-bundle takes the data's contract, refuses a model made for another array, and
the shipped model is checked against a dataset before it is evaluated or fine-tuned."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avperception.inference import BundleMismatch, OnnxRuntimeBackend, TorchBackend, check_fits, load_bundle
from avperception.models.student import AudioStudent
from avperception_train.cli import main
from avperception_train.datagen.shards import read_manifest
from avperception_train.learn.commands import export_bundle
from avperception_train.learn.config import ModelSpec, TrainConfig
from avperception_train.learn.data import InMemoryScenes
from avperception_train.learn.train import student_config


@pytest.fixture(scope="module")
def small_student(dataset, tmp_path_factory):
    """An (untrained) small student for the 4-mic test dataset, saved as the runtime's weights."""
    info = InMemoryScenes(dataset, "train", max_samples=1).info
    cfg = student_config(TrainConfig(data=str(dataset), mode="e2e",
                                     model=ModelSpec(dim=32, depth=1, decoder_width=16, layout_beams=0)), info)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("student") / "student"
    AudioStudent(cfg).save(path, {"train_config": {"mode": "e2e", "seed": 0}})
    return path.with_suffix(".safetensors")


def test_evaluate_default_on_another_array_names_the_mismatch(dataset, capsys):
    assert main(["evaluate", "--data", str(dataset), "--default"]) == 2
    err = capsys.readouterr().err
    assert "does not fit array 'respeaker_4mic'" in err and "microphone count" in err and "8 mics" in err
    assert "running_mean" not in err and "avperception-train recipe" in err


def test_fine_tuning_the_default_on_another_array_says_how_to_start(dataset, tmp_path, capsys, monkeypatch):
    import avperception.inference.bundle as bundle_mod
    import avperception.models as models_mod

    # the shipped bundle for the data's array hears another sweep (8 ms; the data engine's default is 32 ms): named,
    # with --transfer as the way to start from it anyway
    assert main(["train", "--mode", "e2e", "--data", str(dataset), "--out", str(tmp_path / "run"),
                 "--init", "default", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "sweep: the bundle's model hears linear-1000-7000Hz-8ms-16k" in err and "add --transfer" in err
    # rooms made with its sweep: it fits, but has no torch weights (ONNX only): say where weights come from
    from avperception_train.datagen.config import config_from_dict
    from avperception_train.datagen.engine import run_datagen

    short = tmp_path / "short_sweep"
    run_datagen(config_from_dict({"seed": 6, "array": "respeaker_4mic", "active": {"duration_s": 0.008}}), short, 4,
                workers=1, show_progress=False, log=None)
    assert (bundle_mod.BUNDLES_DIR / "respeaker_4mic" / "bundle.json").is_file()
    assert not (bundle_mod.BUNDLES_DIR / "respeaker_4mic" / "model.safetensors").exists()
    assert main(["train", "--mode", "e2e", "--data", str(short), "--out", str(tmp_path / "run"),
                 "--init", "default", "--epochs", "1", "--batch-size", "2"]) == 2
    err = capsys.readouterr().err
    assert "only its ONNX graph" in err and "--transfer" in err
    # no bundle for the data's array: the shipped robot_8mic model is checked against it, every difference named
    only_8mic = tmp_path / "bundles"
    only_8mic.mkdir()
    (only_8mic / "robot_8mic").symlink_to(bundle_mod.BUNDLES_DIR / "robot_8mic")
    monkeypatch.setattr(bundle_mod, "BUNDLES_DIR", only_8mic)
    monkeypatch.setattr(models_mod, "BUNDLES_DIR", only_8mic)
    assert main(["train", "--mode", "e2e", "--data", str(dataset), "--out", str(tmp_path / "run"),
                 "--init", "default", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "microphone count" in err and "--transfer" in err
    assert not (tmp_path / "run" / "best.pt").exists()
    # a part the model does not have: the parts it has, as an error (no traceback)
    assert main(["train", "--mode", "e2e", "--data", str(dataset), "--out", str(tmp_path / "run"),
                 "--train-only", "walls", "--epochs", "1", "--batch-size", "2"]) == 2
    err = capsys.readouterr().err
    assert "avperception-train train: error: train_only: ['walls'] not part" in err
    assert "it has: embed, echo, encoder" in err


def test_export_bundle_takes_the_datasets_contract(dataset, small_student, tmp_path, capsys):
    out = tmp_path / "bundle"
    assert main(["export-bundle", str(small_student), "--data", str(dataset), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "onnx vs torch (check audio 0)" in printed  # checked on a real scene of the dataset
    b = load_bundle(out)
    m = read_manifest(dataset)
    check_fits(b, "respeaker_4mic", 16000, 343.0)
    assert b.meta["array"] == m["array"]
    act = m["config"]["active"]
    np.testing.assert_array_equal(b.speaker_position, act["speaker_position"])
    assert b.sweep_level_db == act["level_db"] and b.sweep_params["f1_hz"] == act["f_end_hz"]
    np.testing.assert_allclose(b.voxel_extent, m["config"]["voxels"]["extent_m"])
    assert b.meta["training"]["config_hash"] and b.meta["training"]["config"] == {"mode": "e2e", "seed": 0}
    assert "layout" not in b.outputs and "latent" not in b.outputs
    assert b.safetensors_path.read_bytes() == small_student.read_bytes()  # the weights as they were
    # the graph and the weights give the same outputs on a scene of the dataset
    audio = InMemoryScenes(dataset, "test", max_samples=1).item(0)["audio"]
    got, ref = OnnxRuntimeBackend(b).run(audio), TorchBackend(b).run(audio)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], atol=1e-3, err_msg=k)


def test_export_bundle_refuses_data_of_another_array(small_student, tmp_path):
    cfg = tmp_path / "robot.yaml"
    cfg.write_text("array: robot_8mic\n")
    with pytest.raises(BundleMismatch, match="microphone count"):
        export_bundle(str(small_student), tmp_path / "bundle", datagen_config=str(cfg))
    assert not (tmp_path / "bundle").exists()


def test_the_shipped_bundle_regenerates_identically(tmp_path):
    """`export-bundle default` (the shipped weights with the default datagen config for their array) writes
    the graph that is shipped, byte for byte, and the same contract."""
    shipped = load_bundle("default")
    out = export_bundle("default", tmp_path / "b", log=lambda _m: None)
    again = load_bundle(out)
    if again.meta["versions"]["torch"] == shipped.meta["versions"]["torch"]:  # another exporter may order nodes
        assert again.meta["model"]["onnx_sha256"] == shipped.meta["model"]["onnx_sha256"]
    strip = ("versions", "model")
    assert {k: v for k, v in again.meta["model"].items() if "onnx" not in k} == \
        {k: v for k, v in shipped.meta["model"].items() if "onnx" not in k}
    assert {k: v for k, v in again.meta.items() if k not in strip} == \
        {k: v for k, v in shipped.meta.items() if k not in strip}
    assert json.loads((out / "bundle.json").read_text())["training"]["config_hash"]


def test_evaluating_on_audio_of_another_sweep_is_refused(tmp_path, capsys):
    """The shipped robot_8mic bundle hears the 32 ms sweep: rooms made with the 8 ms one are refused, naming both
    sweeps, by `evaluate --model bundle:...`, `--default` and `--model student:...` alike, and by the calibration,
    instead of scored as if they fit."""
    from avperception_train.datagen.config import config_from_dict
    from avperception_train.datagen.engine import run_datagen

    data = tmp_path / "short_sweep"
    cfg = config_from_dict({"seed": 5, "array": "robot_8mic", "active": {"duration_s": 0.008}})
    run_datagen(cfg, data, 4, workers=1, show_progress=False, log=None)
    for how in (["--model", "bundle:default:robot_8mic"], ["--default"]):
        assert main(["evaluate", "--data", str(data), "--split", "train", *how]) == 2
        err = capsys.readouterr().err
        assert "sweep: the bundle's model hears linear-1000-7000Hz-32ms-16k" in err
        assert "made with linear-1000-7000Hz-8ms-16k" in err
    # a student's weights (here the shipped one's, outside its bundle) are checked by the sweep they hear
    from avperception_train.learn.commands import calibrate_student, default_model_path

    weights = str(default_model_path().with_suffix(".safetensors"))
    assert main(["evaluate", "--data", str(data), "--split", "train", "--model", f"student:{weights}"]) == 2
    err = capsys.readouterr().err
    assert "hears a 32 ms sweep" in err and "made with linear-1000-7000Hz-8ms-16k" in err
    with pytest.raises(ValueError, match="hears a 32 ms sweep"):
        calibrate_student(weights, str(data), tmp_path / "cal", split="train", log=lambda *_: None)
