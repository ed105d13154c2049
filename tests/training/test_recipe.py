"""The recipe's pieces: moving the shipped student to another array, the command's refusals, and a run with a
share of its rooms heard driving. (The whole recipe runs, end to end and resumed, in tests/docs/test_your_robot.py.)"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from avperception.config import ConfigError, load_array


@pytest.fixture(scope="module")
def shipped():
    from avperception.models import default_model
    from avperception.models.student import AudioStudent

    return AudioStudent.load(default_model())


def four_mic_config(shipped):
    """The shipped model's config with the ReSpeaker 4-mic array's microphones: what a 4-mic dataset asks for."""
    g = load_array("respeaker_4mic")
    return replace(shipped.cfg, num_mics=4, array="respeaker_4mic", array_positions=g.positions.tolist())


def test_transfer_loads_every_tensor_that_fits_and_names_the_rest(shipped):
    from avperception_train.learn.train import initial_student, transfer_student

    sc = four_mic_config(shipped)
    from avperception.models import default_model

    with pytest.raises(ValueError, match="num_mics: model 8 vs data 4"):  # the exact fine-tune refuses
        initial_student(str(default_model()) + ".safetensors", sc, np.asarray(shipped.cfg.emitted))
    lines = []  # the 8-mic weights by path: `default` would take a bundle shipped for the 4-mic array, if any
    eight = str(default_model("robot_8mic")) + ".safetensors"
    model, cfg, fresh = transfer_student(eight, sc, np.asarray(shipped.cfg.emitted), log=lines.append)
    # only the microphone-count-dependent inputs start fresh: both token streams' projections and normalisations
    assert set(fresh) == {f"{s}.{t}" for s in ("embed", "echo") for t in
                          ("proj.weight", "norm.weight", "norm.bias", "norm.running_mean", "norm.running_var")}
    assert "re-initialised 10" in lines[0] and "echo.proj.weight" in lines[0]
    old = shipped.state_dict()
    for k, v in model.state_dict().items():
        if k not in fresh:
            assert torch.equal(v, old[k].float()), k
    assert cfg.num_mics == 4 and cfg.layout_beams == shipped.cfg.layout_beams
    assert cfg.voxel_decoder == shipped.cfg.voxel_decoder  # the architecture is the shipped one
    # it runs on 4-mic audio, and what it learnt (the layout head, the decoders) still shapes its output:
    # the same audio through the fresh-initialised network gives another depth
    audio = torch.randn(1, 4, cfg.num_samples) * 0.01
    with torch.no_grad():
        depth = model.eval()(audio)["depth"]
        torch.manual_seed(0)
        scratch = type(model)(cfg).eval()(audio)["depth"]
    assert depth.shape == (1, cfg.pano_h, cfg.pano_w) and torch.isfinite(depth).all()
    assert not torch.allclose(depth, scratch)


def test_transfer_needs_a_sweep_for_the_echogram(shipped):
    from avperception_train.learn.train import transfer_student

    from avperception.models import default_model

    with pytest.raises(ValueError, match="active.probability"):
        transfer_student(str(default_model("robot_8mic")) + ".safetensors", four_mic_config(shipped), np.zeros(8),
                         log=None)


def test_recipe_refusals_say_what_to_do(tmp_path):
    from avperception_train.learn.recipe import parse_speaker, run_recipe

    assert parse_speaker("0.1,-0.02,-0.05") == [0.1, -0.02, -0.05]
    with pytest.raises(ValueError, match="X,Y,Z in metres"):
        parse_speaker("0,0")
    with pytest.raises(ConfigError, match="--budget must be one of quick, cpu, gpu"):
        run_recipe("respeaker_4mic", [0, 0, -0.05], tmp_path / "w", budget="huge")
    with pytest.raises(ConfigError, match="--stage-epochs"):
        run_recipe("respeaker_4mic", [0, 0, -0.05], tmp_path / "w", budget="quick", stage_epochs=(0, 0, 0))
    with pytest.raises(ConfigError, match="--driving: the share"):
        run_recipe("respeaker_4mic", [0, 0, -0.05], tmp_path / "w", budget="quick", driving=1.0)
    with pytest.raises(ConfigError, match="--driving-speed"):
        run_recipe("respeaker_4mic", [0, 0, -0.05], tmp_path / "w", budget="quick", driving=0.2, driving_speed=0.0)
    with pytest.raises(ConfigError, match="needs --driving SHARE"):
        run_recipe("respeaker_4mic", [0, 0, -0.05], tmp_path / "w", budget="quick", driving_speed=1.0)
    with pytest.raises(ConfigError, match="leaves no driving scenes"):
        run_recipe("respeaker_4mic", [0, 0, -0.05], tmp_path / "w", budget="quick", driving=0.001)
    with pytest.raises(ConfigError):  # an unknown array fails before anything runs
        run_recipe("no_such_array", [0, 0, -0.05], tmp_path / "w", budget="quick")
    assert not (tmp_path / "w").exists()
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty: add --resume"):
        run_recipe("respeaker_4mic", [0, 0, -0.05], tmp_path / "w", budget="quick")


def test_recipe_with_rooms_heard_driving(tmp_path):
    """A quick run with half of its 48 scenes heard driving: the driving rooms are other rooms than the standing
    ones, their robots move, every training stage and the calibration take both datasets, and the student is
    scored on the driving rooms apart."""
    import json

    from avperception.inference.bundle import load_bundle

    from avperception_train.datagen.shards import read_manifest
    from avperception_train.learn.recipe import DRIVING_ROW, run_recipe

    logs: list[str] = []
    s = run_recipe("respeaker_4mic", [0, 0, -0.05], tmp_path / "w", budget="quick", workers=1, scenes=48,
                   driving=0.5, driving_speed=1.5, log=logs.append)
    w = tmp_path / "w"
    standing, driving = read_manifest(w / "data"), read_manifest(w / "data_driving")
    assert standing["num_scenes"] == 24 and driving["num_scenes"] == 24
    assert driving["config"]["robot"]["speed_mps"] == [0.0, 1.5] and driving["config"]["seed"] != standing["config"]["seed"]
    speeds = np.concatenate([np.linalg.norm(np.load(f)["robot_velocity"], axis=1)
                             for f in sorted((w / "data_driving").glob("shard-*.npz"))])
    assert len(speeds) == 24 and 0.1 < speeds.max() <= 1.5 + 1e-6
    for stage in ("whole", "layout"):
        data = json.loads((w / stage / "config.json").read_text())["train"]["data"]
        assert data == f"{w / 'data'},{w / 'data_driving'}"
    # calibrated on the validation rooms of both, or of the standing ones where the driving rooms have none, said
    with_val = [str(w / d) for d, m in (("data", standing), ("data_driving", driving)) if m["splits"]["val"]["scenes"]]
    assert load_bundle(w / "bundle").meta["uncertainty_calibration"]["data"] == ",".join(with_val)
    assert (len(with_val) == 1) == any("has no validation rooms" in line for line in logs)
    assert s["settings"]["driving"] == 0.5 and s["settings"]["driving_speed_mps"] == 1.5
    assert s["times_s"]["data_driving"] > 0
    report = (w / "report.md").read_text()
    assert "heard with the robot driving at 0-1.5 m/s" in report
    # scored apart on the driving rooms' own test split (as a row of the results beside the baselines)
    assert 0 < s["scores"][DRIVING_ROW]["delta1"] <= 1 and "with the robot driving δ1" in report
    assert DRIVING_ROW in (w / "results.md").read_text()


def test_recipe_command_line_keeps_the_papers_flags_apart(tmp_path, capsys):
    from avperception_train.cli import main

    assert main(["recipe", "--array", "respeaker_4mic", "--speaker", "0,0,-0.05", "--out", str(tmp_path / "w"),
                 "--epochs", "3"]) == 2
    assert "add --paper" in capsys.readouterr().err
    assert main(["recipe", "--paper", "--driving", "0.2", "--out", str(tmp_path / "w")]) == 2
    assert "--driving is for a bundle for your array" in capsys.readouterr().err
    assert main(["recipe", "--array", "respeaker_4mic", "--speaker", "0,0,-0.05", "--driving", "1.5", "--out",
                 str(tmp_path / "w")]) == 2
    assert "--driving: the share" in capsys.readouterr().err
    assert main(["recipe", "--array", "respeaker_4mic", "--out", str(tmp_path / "w")]) == 2
    assert "--speaker X,Y,Z" in capsys.readouterr().err
    assert main(["recipe", "--array", "respeaker_4mic", "--speaker", "0,0", "--out", str(tmp_path / "w")]) == 2
    assert "X,Y,Z in metres" in capsys.readouterr().err


def test_fine_tuning_the_shipped_model_on_another_array_points_to_transfer(tmp_path, capsys):
    from avperception_train.cli import main
    from avperception_train.datagen.config import config_from_dict
    from avperception_train.datagen.engine import run_datagen

    # an array no bundle is shipped for: three microphones on a 4 cm triangle
    (tmp_path / "tri.yaml").write_text("name: test_triangle\nframe_id: mic_array\nsample_rate: 16000\npositions:\n"
                                       "- [0.02, 0.0, 0.0]\n- [-0.01, 0.01732, 0.0]\n- [-0.01, -0.01732, 0.0]\n")
    run_datagen(config_from_dict({"array": str(tmp_path / "tri.yaml")}), tmp_path / "d", 2, show_progress=False,
                log=None)
    assert main(["train", "--mode", "e2e", "--data", str(tmp_path / "d"), "--init", "default",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "8 mics" in err and "add --transfer" in err
