"""docs/your_robot.md runs: every command of the guide's bash blocks is run in order in a scratch directory (with
tiny sizes), or, where it needs hardware, a ROS graph or hours, parsed by the very parser that would run it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "your_robot.md"


def fenced(text: str, lang: str) -> list[str]:
    """The bodies of the ```lang blocks of a markdown text, in order."""
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def commands(text: str) -> list[list[str]]:
    """Each command line of the bash blocks as argv: continuation lines joined, comments and anything after
    ``&&``, ``|`` or a redirection dropped (the guide's shell glue)."""
    out = []
    for block in fenced(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            for i, tok in enumerate(argv):
                if tok in ("&&", "|", ">", "2>", ">>"):
                    argv = argv[:i]
                    break
            if argv:
                out.append(argv)
    return out


def _launch_arguments() -> set[str]:
    return set(re.findall(r'DeclareLaunchArgument\("(\w+)"', (ROOT / "launch" / "perception.launch.py").read_text()))


# what is parsed, not run: hardware (sound card, ROS graph), or hours of training
def parse_only(argv: list[str]) -> bool:
    sub = argv[1] if len(argv) > 1 else ""
    return (argv[0] == "ros2" or sub in ("calibrate-latency", "record")
            or (sub == "recipe" and "quick" not in argv))


# tiny sizes for what is run (the guide's own sizes are for real use)
def shrink(argv: list[str]) -> list[str]:
    # the full recipe's work directory is the quick one's, which has the same layout
    argv = [a.replace("work/respeaker/", "work/quick/") for a in argv]
    sub = argv[1]
    if sub == "recipe":
        return argv + ["--scenes", "40", "--workers", "1"]
    if sub == "train":
        return argv + ["--batch-size", "4"]
    if sub == "datagen" and "--num-scenes" in argv:  # 24 scenes: each split gets some
        i = argv.index("--num-scenes") + 1
        argv[i] = str(min(int(argv[i]), 24))
    return argv


def parse(argv: list[str]) -> None:
    """``argv`` through the parser of its program, without running it; fails on anything argparse refuses."""
    if argv[0] == "ros2":
        assert argv[1:3] == ["launch", "avperception"] and argv[3] == "perception.launch.py", argv
        given = {a.split(":=")[0] for a in argv[4:]}
        assert given <= _launch_arguments(), f"not launch arguments: {given - _launch_arguments()}"
        return
    if argv[0] == "avperception":
        from avperception.cli import build_parser
    else:
        from avperception_train.cli import build_parser
    try:
        build_parser().parse_args(argv[1:])
    except SystemExit as e:
        pytest.fail(f"{shlex.join(argv)}: refused by argparse ({e})")


def run(argv: list[str]) -> int:
    if argv[0] == "avperception":
        from avperception.cli import main
    else:
        from avperception_train.cli import main
    return main(argv[1:])


def test_the_guides_array_is_the_preset_it_names():
    from avperception.config import load_array

    (yaml_block,) = fenced(GUIDE.read_text(), "yaml")
    import yaml

    mine = yaml.safe_load(yaml_block)
    preset = load_array("respeaker_4mic")
    assert mine["positions"] == preset.positions.tolist()
    assert tuple(mine["channel_map"]) == preset.channel_map and mine["channels"] == preset.input_channels


def test_every_command_of_the_guide_runs_or_parses(tmp_path, monkeypatch):
    text = GUIDE.read_text()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "training").symlink_to(ROOT / "training")  # --config training/configs/...
    (tmp_path / "my_array.yaml").write_text(fenced(text, "yaml")[0])
    # the robot's recording of section 9 and 10: simulated scenes of the same array with a pinhole depth camera
    assert run(["avperception-train", "datagen", "--array", "my_array.yaml", "--set", "pinhole.enabled=true",
                "--num-scenes", "8", "--workers", "1", "--quiet", "--out", "robot_scenes"]) == 0
    assert run(["avperception-train", "export-bag", "robot_scenes", "--out", "drive1"]) == 0

    cmds = commands(text)
    assert {c[0] for c in cmds} <= {"avperception", "avperception-train", "ros2"}
    ran, parsed = [], []
    for argv in cmds:
        if parse_only(argv):
            parse(argv)
            parsed.append(argv[1])
            continue
        parse(argv)
        assert run(shrink(argv)) == 0, shlex.join(argv)
        ran.append(argv[1])
    # what the guide promises exists: the quick recipe's bundle and report, the fine-tuned bundle
    from avperception.inference.bundle import load_bundle

    quick = load_bundle(tmp_path / "work" / "quick" / "bundle")
    assert quick.array.num_mics == 4 and list(quick.speaker_position) == pytest.approx([0, 0, -0.05])
    assert "δ1" in (tmp_path / "work" / "quick" / "report.md").read_text()
    # the transferred uncertainty head was calibrated on the validation rooms, and the bundle says so
    calibration = quick.meta["uncertainty_calibration"]
    assert calibration["split"] == "val" and calibration["heard"]["scale"] > 0 and calibration["quantile"] == 0.02
    assert (tmp_path / "work" / "real_bundle" / "model.onnx").exists()
    # the bundle fine-tuned on rooms heard driving: the driving rooms' robots moved
    from avperception_train.datagen.shards import read_manifest

    assert read_manifest("work/driving")["config"]["robot"]["speed_mps"] == [0.0, 2.0]
    speeds = np.concatenate([np.linalg.norm(np.load(f)["robot_velocity"], axis=1)
                             for f in sorted(Path("work/driving").glob("shard-*.npz"))])
    assert len(speeds) == 24 and speeds.max() > 0.5
    driving = load_bundle(tmp_path / "work" / "driving_bundle")
    assert driving.array.num_mics == 4 and driving.meta["uncertainty_calibration"]["split"] == "val"
    assert {"recipe", "evaluate", "export-bundle", "import-bag", "train", "replay-eval", "preview"} <= set(ran)
    assert {"calibrate-latency", "record", "launch"} <= set(parsed)

    # --resume on the finished quick run: every stage is skipped, nothing retrained
    from avperception_train.learn.recipe import run_recipe

    logs, log = [], tmp_path / "work" / "quick" / "whole" / "log.jsonl"
    before = log.read_text()
    s = run_recipe("my_array.yaml", [0, 0, -0.05], "work/quick", "quick", resume=True, workers=1, scenes=40,
                   log=logs.append)
    assert [line.split(":")[1].strip()[:4] for line in logs] == ["done"] * 4 and log.read_text() == before
    assert s["scores"]["student (this recipe)"]["delta1"] > 0
    # a run finished before the calibration stage existed, resumed: calibrated, then scored and bundled again
    import json
    import shutil

    summary = tmp_path / "work" / "quick" / "recipe.json"
    old = json.loads(summary.read_text())
    del old["times_s"]["calibrate"]
    summary.write_text(json.dumps(old))
    shutil.rmtree(tmp_path / "work" / "quick" / "calibrated")
    (tmp_path / "work" / "quick" / "bundle" / "bundle.json").write_text(json.dumps({}))  # stale: must be redone
    logs.clear()
    run_recipe("my_array.yaml", [0, 0, -0.05], "work/quick", "quick", resume=True, workers=1, scenes=40,
               log=logs.append)
    assert any("calibrate:" in line for line in logs) and any("evaluate:" in line for line in logs)
    assert load_bundle(tmp_path / "work" / "quick" / "bundle").meta["uncertainty_calibration"] == calibration
    assert log.read_text() == before  # nothing retrained

