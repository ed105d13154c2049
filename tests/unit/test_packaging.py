"""The launch file, parameter files, setup.py and package.xml agree with the code."""

import ast
import re
from pathlib import Path

import yaml

from avperception.config import PipelineConfig, flatten

ROOT = Path(__file__).resolve().parents[2]


def node_params(module: str) -> set[str]:
    src = (ROOT / "avperception" / "ros" / f"{module}.py").read_text()
    tree = ast.parse(src)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "NODE_PARAMS":
            return {k.value for k in node.value.keys}
    raise AssertionError(f"no NODE_PARAMS in {module}")


def test_console_scripts_cover_every_node_and_launch_file():
    setup = (ROOT / "setup.py").read_text()
    scripts = set(re.findall(r'"([a-z_\-]+) = avperception', setup))
    assert {"perception_node", "sim_audio_node", "capture_node", "bag_player_node", "avperception",
            "avperception-run"} <= scripts
    launch = (ROOT / "launch" / "perception.launch.py").read_text()
    for exe in re.findall(r'package="avperception", executable="([a-z_]+)"', launch):
        assert exe in scripts


def test_params_files_only_use_declared_parameters():
    declared = {
        "perception_node": node_params("perception_node") | set(flatten(PipelineConfig())),
        "sim_audio_node": node_params("sim_audio_node"),
        "capture_node": node_params("capture_node"),
        "bag_player_node": node_params("bag_player_node"),
    }
    for f in sorted((ROOT / "config").glob("*.yaml")):
        data = yaml.safe_load(f.read_text())
        if not isinstance(data, dict) or not any("ros__parameters" in (v or {}) for v in data.values()):
            continue
        for node, section in data.items():
            assert node in declared, f"{f.name}: unknown node {node}"
            unknown = set(section["ros__parameters"]) - declared[node]
            assert not unknown, f"{f.name}: {node} has no parameters {unknown}"


def node_defaults(module: str) -> dict:
    src = (ROOT / "avperception" / "ros" / f"{module}.py").read_text()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "NODE_PARAMS":
            return {k.value: ast.literal_eval(v.elts[0]) for k, v in zip(node.value.keys, node.value.values)}
    raise AssertionError(f"no NODE_PARAMS in {module}")


# where perception.yaml deliberately chooses another value than the code's default (each says so in a comment)
CHOSEN = {("sim_audio_node", "mode"): "active"}


def test_perception_yaml_lists_every_parameter_with_its_default():
    data = yaml.safe_load((ROOT / "config" / "perception.yaml").read_text())
    pipeline = {k: list(v) if isinstance(v, tuple) else v for k, v in flatten(PipelineConfig()).items()}
    for node in ("perception_node", "sim_audio_node", "capture_node", "bag_player_node"):
        defaults = node_defaults(node)
        if node == "perception_node":
            defaults.update(pipeline)
        listed = data[node]["ros__parameters"]
        for key, default in defaults.items():
            if default == []:  # an empty list has no ROS type in YAML: documented as a comment
                continue
            assert key in listed, f"perception.yaml: {node} does not list {key} (default {default!r})"
            want = CHOSEN.get((node, key), default)
            assert listed[key] == want, f"perception.yaml: {node}.{key} is {listed[key]!r}, the default is {want!r}"


def test_launch_file_sets_only_declared_parameters():
    declared = {
        "perception_node": node_params("perception_node") | set(flatten(PipelineConfig())),
        "sim_audio_node": node_params("sim_audio_node"),
        "capture_node": node_params("capture_node"),
    }
    launch = (ROOT / "launch" / "perception.launch.py").read_text()
    for name, params in re.findall(r'name="([a-z_]+)", output="screen",\s*parameters=\[params_file, \{([^}]*)\}',
                                   launch):
        keys = set(re.findall(r'"([a-z_.]+)":', params))
        assert keys and keys <= declared[name], f"{name}: {keys - declared[name]} not declared"


def test_package_xml_declares_message_dependencies():
    xml = (ROOT / "package.xml").read_text()
    for dep in ("rclpy", "sensor_msgs", "geometry_msgs", "visualization_msgs", "diagnostic_msgs", "nav_msgs",
                "tf2_msgs", "avperception_msgs"):
        assert f"<depend>{dep}</depend>" in xml
    assert "<build_type>ament_python</build_type>" in xml
