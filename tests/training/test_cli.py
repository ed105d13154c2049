"""The ``avperception-train`` command line: datagen + preview smoke test and error messages."""

from __future__ import annotations

import json

from avperception_train.cli import main


def test_datagen_and_preview_smoke(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["datagen", "--out", str(out), "--num-scenes", "4", "--workers", "1", "--seed", "7",
                 "--set", "room.scenes_per_room=1", "--quiet"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["num_scenes"] == 4 and m["seed"] == 7 and m["complete"]
    assert main(["preview", str(out), "--num", "2", "--out", str(tmp_path / "png")]) == 0
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert len(pngs) == 2 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 20000 for p in pngs)
    assert main(["dataset-info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "4 scenes" in info
    quiet = "return no echo of the sweep: panel_fabric_covered_6pcf (of the materials drawn: floor 0 of 7, wall 1 of 10"
    assert quiet in info


def test_print_config_is_valid_yaml(capsys):
    import yaml

    assert main(["datagen", "--print-config", "--seed", "3"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["seed"] == 3 and cfg["panorama"]["resolution_deg"] == 3.0


def test_clear_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("audio:\n  samplerate: 8000\n")
    assert main(["datagen", "--config", str(bad), "--out", str(tmp_path / "o"), "--num-scenes", "1"]) == 2
    err = capsys.readouterr().err
    assert "unknown keys ['samplerate']" in err and "sample_rate" in err
    assert main(["datagen", "--out", str(tmp_path / "o"), "--num-scenes", "1", "--array", "nope"]) == 2
    assert "unknown array preset 'nope'" in capsys.readouterr().err
    assert main(["preview", str(tmp_path / "missing")]) == 2
    assert "dataset directory not found" in capsys.readouterr().err
    assert main(["import-bag", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "bag not found" in capsys.readouterr().err


def test_train_options_override_the_yaml(tmp_path, monkeypatch):
    """--seed and the other train options reach the config the run gets; the YAML gives the rest."""
    from pathlib import Path

    import avperception_train.learn.train as train_mod

    seen = {}
    monkeypatch.setattr(train_mod, "train", lambda cfg, resume=False: seen.setdefault("cfg", cfg) and tmp_path)
    yaml_path = Path(__file__).parents[2] / "training" / "configs" / "distill_camera_cpu.yaml"
    assert main(["train", "--config", str(yaml_path), "--mode", "e2e", "--seed", "2", "--data", "D",
                 "--out", str(tmp_path)]) == 0
    cfg = seen["cfg"]
    assert (cfg.seed, cfg.mode, cfg.data) == (2, "e2e", "D")
    assert cfg.camera_fov_deg == (87, 58) and cfg.max_train_samples == 1000  # from the YAML


def test_corrupt_bag_and_wav_are_clear_errors(tmp_path, capsys):
    from avperception.cli import main as runtime_main
    from avperception_train.cli import main

    bag = tmp_path / "bag"
    bag.mkdir()
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information:\n  version: 9\n")
    (bag / "bag_0.mcap").write_bytes(b"\x00not an mcap file" * 50)
    assert main(["import-bag", str(bag), "--out", str(tmp_path / "ds")]) == 2
    assert "cannot read the bag" in capsys.readouterr().err
    wav = tmp_path / "x.wav"
    wav.write_bytes(b"RIFX garbage" * 30)
    assert runtime_main(["localize", str(wav), "--array", "robot_8mic"]) == 2
    assert "not a readable WAV file" in capsys.readouterr().err
