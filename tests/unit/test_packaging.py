"""The launch file, parameter files, setup.py and package.xml agree with the code."""

import ast
import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest
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


def console_scripts() -> set[str]:
    return set(re.findall(r'"([a-z_\-]+) = avperception', (ROOT / "setup.py").read_text()))


def test_console_scripts_cover_every_node():
    assert {"perception_node", "sim_audio_node", "capture_node", "bag_player_node", "avperception",
            "avperception-run"} <= console_scripts()


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


def _default_value(expr: ast.expr):
    """A NODE_PARAMS default: a literal, or a constant of avperception.config / avperception.constants."""
    if isinstance(expr, ast.Name):
        import avperception.config as config
        import avperception.constants as constants

        for module in (config, constants):
            if hasattr(module, expr.id):
                return getattr(module, expr.id)
        raise AssertionError(f"NODE_PARAMS default {expr.id} is neither a literal nor a shared constant")
    return ast.literal_eval(expr)


def node_defaults(module: str) -> dict:
    src = (ROOT / "avperception" / "ros" / f"{module}.py").read_text()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "NODE_PARAMS":
            return {k.value: _default_value(v.elts[0]) for k, v in zip(node.value.keys, node.value.values)}
    raise AssertionError(f"no NODE_PARAMS in {module}")


def same_typed(a, b) -> bool:
    """Equal and of the same YAML/ROS type: a parameter declared 4.0 rejects a file's 4 (and True is not 1)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_typed(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


# where perception.yaml deliberately chooses another value than the code's default (each says so in a comment)
CHOSEN = {("sim_audio_node", "mode"): "active"}


def perception_yaml_mismatches(text: str) -> list[str]:
    """Every way ``text`` (a perception.yaml) differs from the code's defaults: missing keys, other values or
    types, keys no node declares. Empty lists have no ROS type in YAML: they must appear as a comment."""
    data = yaml.safe_load(text)
    pipeline = {k: list(v) if isinstance(v, tuple) else v for k, v in flatten(PipelineConfig()).items()}
    wrong = []
    for node in ("perception_node", "sim_audio_node", "capture_node", "bag_player_node"):
        defaults = node_defaults(node)
        if node == "perception_node":
            defaults.update(pipeline)
        listed = (data.get(node) or {}).get("ros__parameters") or {}
        wrong += [f"{node}.{key}: no such parameter" for key in sorted(set(listed) - set(defaults))]
        for key, default in defaults.items():
            if default == []:
                if not re.search(rf"^\s*#\s*{re.escape(key)}:", text, re.M):
                    wrong.append(f"{node}.{key}: not shown (as a comment: an empty list has no ROS type)")
                continue
            want = CHOSEN.get((node, key), default)
            if key not in listed:
                wrong.append(f"{node}.{key}: missing (default {want!r})")
            elif not same_typed(listed[key], want):
                wrong.append(f"{node}.{key}: {listed[key]!r} but the default is {want!r}")
    return wrong


def test_perception_yaml_lists_every_parameter_with_its_default():
    assert perception_yaml_mismatches((ROOT / "config" / "perception.yaml").read_text()) == []


def test_perception_yaml_check_finds_a_changed_value_a_missing_key_and_a_wrong_type():
    text = (ROOT / "config" / "perception.yaml").read_text()
    for old, new, found in [("    frame.buffer_seconds: 4.0", "    frame.buffer_seconds: 5.0", "frame.buffer_seconds"),
                            ("    beamformer.interp: 8 ", "    beamformer.interp: 4 ", "beamformer.interp"),
                            ("    diagnostics_period_s: 1.0\n", "", "diagnostics_period_s: missing"),
                            ("    color_max: 0.0 ", "    color_max: 0 ", "color_max"),
                            ("    array: robot_8mic ", "    array: respeaker_4mic ", "perception_node.array"),
                            ("    # topics: [", "    # (no topics) [", "bag_player_node.topics")]:
        assert old in text, old
        wrong = perception_yaml_mismatches(text.replace(old, new, 1))
        assert len(wrong) == 1 and found in wrong[0], (old, wrong)


# system (non-ROS-package) rosdep keys, each looked up in ros/rosdistro's rosdep/base.yaml or python.yaml: a key
# missing there stops `rosdep install` for the whole workspace (python3-sounddevice is not one: the -pip key is)
ROSDEP_SYSTEM_KEYS = {"python3-numpy", "python3-scipy", "python3-yaml", "python3-matplotlib", "python3-pytest",
                      "python3-sounddevice-pip"}


def test_package_xml_system_dependencies_are_rosdep_keys():
    xml = (ROOT / "package.xml").read_text()
    keys = set(re.findall(r"<(?:exec_|test_|build_)?depend>([^<]+)</", xml))
    system = {k for k in keys if k.startswith(("python3-", "lib"))}
    assert system <= ROSDEP_SYSTEM_KEYS, f"check {system - ROSDEP_SYSTEM_KEYS} in rosdistro's rosdep yaml first"


def test_package_xml_declares_message_dependencies():
    xml = (ROOT / "package.xml").read_text()
    for dep in ("rclpy", "sensor_msgs", "geometry_msgs", "visualization_msgs", "diagnostic_msgs", "nav_msgs",
                "tf2_msgs", "avperception_msgs"):
        assert f"<depend>{dep}</depend>" in xml
    assert "<build_type>ament_python</build_type>" in xml


# ---------------------------------------------------------------- the launch file, without ROS 2's launch installed


def load_launch_file():
    spec = importlib.util.spec_from_file_location("perception_launch", ROOT / "launch" / "perception.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the launch modules are imported only when the launch runs
    return module


class _Action:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _fake_launch_modules(monkeypatch, rviz2_installed: bool) -> None:
    """Stand-ins for launch, launch_ros and ament_index_python that record what the launch file builds."""
    class PackageNotFoundError(KeyError):
        pass

    def get_package_share_directory(name):
        if name == "rviz2" and not rviz2_installed:
            raise PackageNotFoundError(name)
        return f"/opt/share/{name}"

    names = {
        "launch": {"LaunchDescription": lambda entities: list(entities)},
        "launch.actions": {n: type(n, (_Action,), {}) for n in ("DeclareLaunchArgument", "OpaqueFunction", "Shutdown")},
        "launch.substitutions": {"PathJoinSubstitution": type("PathJoinSubstitution", (_Action,), {})},
        "launch_ros": {},
        "launch_ros.actions": {"Node": type("Node", (_Action,), {})},
        "launch_ros.parameter_descriptions": {"ParameterValue": type("ParameterValue", (_Action,), {})},
        "launch_ros.substitutions": {"FindPackageShare": type("FindPackageShare", (_Action,), {})},
        "ament_index_python": {},
        "ament_index_python.packages": {"PackageNotFoundError": PackageNotFoundError,
                                        "get_package_share_directory": get_package_share_directory},
    }
    for name, attrs in names.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))


PARAMS_FILE = "/opt/share/avperception/config/perception.yaml"


def run_launch(monkeypatch, rviz2_installed: bool = False, **given: str) -> list[_Action]:
    """The nodes the launch file starts for ``given`` launch arguments (the others at their defaults)."""
    _fake_launch_modules(monkeypatch, rviz2_installed)
    entities = load_launch_file().generate_launch_description()
    configs = {a.args[0]: a.kwargs["default_value"] for a in entities if type(a).__name__ == "DeclareLaunchArgument"}
    assert set(given) <= set(configs), f"undeclared launch arguments {set(given) - set(configs)}"
    configs.update({"params_file": PARAMS_FILE, **given})
    (setup,) = [a for a in entities if type(a).__name__ == "OpaqueFunction"]
    return setup.kwargs["function"](types.SimpleNamespace(launch_configurations=configs))


def parameters(node: _Action) -> list:
    """A node's parameters with each ParameterValue as (value, value_type)."""
    def plain(v):
        return (v.args[0], v.kwargs["value_type"]) if type(v).__name__ == "ParameterValue" else v

    return [p if isinstance(p, str) else {k: plain(v) for k, v in p.items()} for p in node.kwargs["parameters"]]


def by_name(nodes: list[_Action]) -> dict[str, _Action]:
    return {n.kwargs["name"]: n for n in nodes}


def test_launch_arguments_leave_the_params_file_alone_unless_given(monkeypatch):
    # the params file's array (or model, mode, device, emit) stands: no launch default sits on top of it
    nodes = by_name(run_launch(monkeypatch))
    assert list(nodes) == ["sim_audio_node", "perception_node"]
    for node in nodes.values():
        assert parameters(node) == [PARAMS_FILE]
    nodes = by_name(run_launch(monkeypatch, params_file="/my.yaml", use_sim="false"))
    assert list(nodes) == ["capture_node", "perception_node"]
    assert all(parameters(n) == ["/my.yaml"] for n in nodes.values())


def test_given_launch_arguments_override_the_params_file(monkeypatch):
    nodes = by_name(run_launch(monkeypatch, array="respeaker_4mic", model="/models/b", sim_mode="passive"))
    assert parameters(nodes["sim_audio_node"]) == [PARAMS_FILE, {"array": ("respeaker_4mic", str),
                                                                 "model": ("/models/b", str), "mode": ("passive", str)}]
    assert parameters(nodes["perception_node"]) == [PARAMS_FILE, {"array": ("respeaker_4mic", str),
                                                                  "sonar.model": ("/models/b", str)}]
    # device:=2 is the device named "2" (text, not an integer); emit is a boolean
    nodes = by_name(run_launch(monkeypatch, use_sim="False", device="2", emit="true"))
    assert parameters(nodes["capture_node"]) == [PARAMS_FILE, {"device": ("2", str), "emit": True}]
    assert parameters(nodes["perception_node"]) == [PARAMS_FILE]
    # the audio source or perception_node ending ends the launch
    assert "on_exit" in nodes["capture_node"].kwargs and "on_exit" in nodes["perception_node"].kwargs
    with pytest.raises(ValueError, match="emit:='maybe': expected true or false"):
        run_launch(monkeypatch, use_sim="false", emit="maybe")
    # array_height is a number of metres, for perception_node's sonar.array_height_m
    nodes = by_name(run_launch(monkeypatch, array_height="1.45", floor_frame="base_footprint"))
    assert parameters(nodes["perception_node"]) == [PARAMS_FILE, {"sonar.array_height_m": (1.45, float),
                                                                  "sonar.floor_frame": ("base_footprint", str)}]
    for bad in ("high", "-1"):
        with pytest.raises(ValueError, match=f"array_height:='{bad}': expected a number of metres"):
            run_launch(monkeypatch, array_height=bad)
    # average_pings counts pings (an integer >= 1); sim_speed is the simulated robot's m/s (0: standing still)
    nodes = by_name(run_launch(monkeypatch, average_pings="4", sim_speed="0"))
    assert parameters(nodes["perception_node"]) == [PARAMS_FILE, {"sonar.average_pings": (4, int)}]
    assert parameters(nodes["sim_audio_node"]) == [PARAMS_FILE, {"speed_m_s": (0.0, float)}]
    for bad in ("0", "2.5", "many"):
        with pytest.raises(ValueError, match=f"average_pings:='{bad}': expected a whole number >= 1"):
            run_launch(monkeypatch, average_pings=bad)
    with pytest.raises(ValueError, match="sim_speed:='-1': expected a number of m/s >= 0"):
        run_launch(monkeypatch, sim_speed="-1")
    # points_confident is a boolean, for perception_node alone
    nodes = by_name(run_launch(monkeypatch, points_confident="True"))
    assert parameters(nodes["perception_node"]) == [PARAMS_FILE, {"sonar.points_confident": True}]
    assert parameters(nodes["sim_audio_node"]) == [PARAMS_FILE]
    with pytest.raises(ValueError, match="points_confident:='yes': expected true or false"):
        run_launch(monkeypatch, points_confident="yes")


def test_rviz_without_rviz2_starts_nothing(monkeypatch):
    with pytest.raises(RuntimeError, match="rviz:=true needs RViz 2"):
        run_launch(monkeypatch, rviz="true")
    nodes = run_launch(monkeypatch, rviz2_installed=True, rviz="true")
    assert [n.kwargs["name"] for n in nodes] == ["rviz2", "sim_audio_node", "perception_node"]


def test_launch_file_sets_only_declared_parameters_of_installed_nodes(monkeypatch):
    declared = {
        "perception_node": node_params("perception_node") | set(flatten(PipelineConfig())),
        "sim_audio_node": node_params("sim_audio_node"),
        "capture_node": node_params("capture_node"),
    }
    launch = load_launch_file()
    for argument, pairs in launch.NODE_ARGUMENTS.items():
        for node, param in pairs:
            assert param in declared[node], f"launch argument {argument} sets {node}.{param}, which it does not declare"
    every = {argument: "x" for argument in launch.NODE_ARGUMENTS} | {"emit": "false", "array_height": "1.2",
                                                                     "average_pings": "4", "sim_speed": "0.2",
                                                                     "points_confident": "false"}
    for use_sim in ("true", "false"):
        for node in run_launch(monkeypatch, use_sim=use_sim, **every):
            assert node.kwargs["executable"] in console_scripts()
            assert set(parameters(node)[1]) <= declared[node.kwargs["name"]]
