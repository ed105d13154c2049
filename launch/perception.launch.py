"""Launch the avperception nodes.

    ros2 launch avperception perception.launch.py                      # simulated room, robot_8mic, pinging
    ros2 launch avperception perception.launch.py use_sim:=false array:=respeaker_4mic device:=ReSpeaker
    ros2 launch avperception perception.launch.py use_sim:=false emit:=true device:=MyCard   # the robot pings
    ros2 launch avperception perception.launch.py use_sim:=false emit:=true device:=MyCard array_height:=1.45
    ros2 launch avperception perception.launch.py sim_speed:=0 average_pings:=4   # a robot standing still
    ros2 launch avperception perception.launch.py points_confident:=true   # sonar/points without the guesses
    ros2 launch avperception perception.launch.py params_file:=/path/to/my.yaml rviz:=true

Launch arguments (those marked * set node parameters: left empty, the params file's value stands, and
where the file has none, the node's own default):
    params_file  node parameters (sections keyed by node name)   [share/avperception/config/perception.yaml]
    use_sim      true: sim_audio_node (simulated room); false: capture_node                         [true]
    rviz         also start RViz with share/avperception/config/avperception.rviz                   [false]
  * array        array preset name or YAML path, for every node (shipped file: robot_8mic)          ['']
  * model        model bundle directory for the learned outputs (shipped file: default)             ['']
  * sim_mode     active: the simulated robot pings as it drives through a data-engine room (needs the
                 training package); passive: ambient sources only (shipped file: active)            ['']
  * device       capture device name or index, use_sim:=false (shipped file: '' = default input)    ['']
  * emit         use_sim:=false: capture_node plays the sweep and publishes pings (shipped: false)  ['']
  * array_height the array's height above the floor, m (sonar.array_height_m; shipped: 0 = unknown)  ['']
  * floor_frame  a TF frame on the floor: the array's height read from /tf instead (sonar.floor_frame) ['']
  * average_pings  hear up to N pings averaged while the array stands still in odom (sonar.average_pings;
                 shipped: 1 = each ping alone)                                                      ['']
  * sim_speed    the simulated robot's speed, m/s (sim_audio_node speed_m_s; shipped: 0.15; 0 stands) ['']
  * points_confident  true: sonar/points from the confident depth alone (sonar.points_confident; shipped:
                 false = every pixel's depth)                                                       ['']

Without `ros2 launch` (e.g. a venv with the PyPI wheels) the same nodes run with
the same parameter file as:  avperception-run sim_audio perception --ros-args --params-file FILE
"""

from __future__ import annotations

from typing import Mapping

# launch argument -> the (node, parameter) pairs it sets when given
NODE_ARGUMENTS = {
    "array": (("sim_audio_node", "array"), ("capture_node", "array"), ("perception_node", "array")),
    "model": (("sim_audio_node", "model"), ("capture_node", "model"), ("perception_node", "sonar.model")),
    "sim_mode": (("sim_audio_node", "mode"),),
    "device": (("capture_node", "device"),),
    "emit": (("capture_node", "emit"),),
    "array_height": (("perception_node", "sonar.array_height_m"),),
    "floor_frame": (("perception_node", "sonar.floor_frame"),),
    "average_pings": (("perception_node", "sonar.average_pings"),),
    "sim_speed": (("sim_audio_node", "speed_m_s"),),
    "points_confident": (("perception_node", "sonar.points_confident"),),
}
BOOL_ARGUMENTS = ("emit", "points_confident")
FLOAT_ARGUMENTS = {"array_height": "metres", "sim_speed": "m/s"}  # argument -> its unit
INT_ARGUMENTS = ("average_pings",)


def flag(name: str, value: str) -> bool:
    """A true/false launch argument (``1``/``0`` too, any case)."""
    text = value.strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError(f"launch argument {name}:={value!r}: expected true or false")


def number(name: str, value: str, unit: str = "metres") -> float:
    """A launch argument in ``unit``, >= 0."""
    try:
        x = float(value)
    except ValueError:
        raise ValueError(f"launch argument {name}:={value!r}: expected a number of {unit}") from None
    if not x >= 0:
        raise ValueError(f"launch argument {name}:={value!r}: expected a number of {unit} >= 0")
    return x


def count(name: str, value: str) -> int:
    """A launch argument that counts, >= 1."""
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"launch argument {name}:={value!r}: expected a whole number >= 1") from None
    if n < 1:
        raise ValueError(f"launch argument {name}:={value!r}: expected a whole number >= 1")
    return n


def node_overrides(args: Mapping[str, str]) -> dict[str, dict[str, str | bool | float | int]]:
    """The parameters the launch arguments set, per node: only arguments given (non-empty) appear.

    Values stay text (``device:=2`` is the device named "2", not an integer) except the booleans
    (``emit``, ``points_confident``) and the numbers (``array_height``, ``sim_speed``, ``average_pings``). Arguments absent from ``args``
    count as not given.
    """
    out: dict[str, dict[str, str | bool | float | int]] = {
        node: {} for pairs in NODE_ARGUMENTS.values() for node, _ in pairs}
    for arg, pairs in NODE_ARGUMENTS.items():
        value = args.get(arg, "")
        if value == "":
            continue
        typed: str | bool | float | int = value
        if arg in BOOL_ARGUMENTS:
            typed = flag(arg, value)
        elif arg in FLOAT_ARGUMENTS:
            typed = number(arg, value, FLOAT_ARGUMENTS[arg])
        elif arg in INT_ARGUMENTS:
            typed = count(arg, value)
        for node, param in pairs:
            out[node][param] = typed
    return out


def launch_setup(context, *_, **__):
    """The nodes, once the launch arguments are known (an OpaqueFunction: empty arguments are left out)."""
    from launch.actions import Shutdown
    from launch.substitutions import PathJoinSubstitution
    from launch_ros.actions import Node
    from launch_ros.parameter_descriptions import ParameterValue
    from launch_ros.substitutions import FindPackageShare

    args = {name: context.launch_configurations.get(name, "") for name in (*NODE_ARGUMENTS, "use_sim", "rviz")}
    params_file = context.launch_configurations["params_file"]
    overrides = node_overrides(args)

    def parameters(node: str) -> list:
        # text values typed as strings: the YAML reading of device:=2 or model:=on would be a number or a bool
        given = {k: v if isinstance(v, bool) else ParameterValue(v, value_type=type(v))
                 for k, v in overrides[node].items()}
        return [params_file, given] if given else [params_file]

    actions = []
    if flag("rviz", args["rviz"]):
        # checked first: a missing rviz2 stops the launch before any node starts (launch leaves started ones running)
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            get_package_share_directory("rviz2")
        except PackageNotFoundError:
            raise RuntimeError("rviz:=true needs RViz 2 (sudo apt install ros-$ROS_DISTRO-rviz2); "
                               "or leave rviz:=false and start it elsewhere") from None
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
                            arguments=["-d", PathJoinSubstitution([FindPackageShare("avperception"), "config",
                                                                   "avperception.rviz"])]))
    # the audio source and perception_node need each other: the exit of either (a node that cannot start as
    # configured prints why and exits with 2) ends the launch
    source = "sim_audio_node" if flag("use_sim", args["use_sim"]) else "capture_node"
    actions.append(Node(package="avperception", executable=source, name=source, output="screen",
                        parameters=parameters(source), on_exit=Shutdown()))
    actions.append(Node(package="avperception", executable="perception_node", name="perception_node",
                        output="screen", parameters=parameters("perception_node"), on_exit=Shutdown()))
    return actions


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import PathJoinSubstitution
    from launch_ros.substitutions import FindPackageShare

    share = FindPackageShare("avperception")
    keep = " ('': the params file's)"
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "perception.yaml"]),
                              description="parameter file for all nodes"),
        DeclareLaunchArgument("use_sim", default_value="true", description="simulated room instead of a sound card"),
        DeclareLaunchArgument("rviz", default_value="false", description="start RViz"),
        DeclareLaunchArgument("array", default_value="", description="array preset name or YAML path" + keep),
        DeclareLaunchArgument("model", default_value="", description="model bundle directory" + keep),
        DeclareLaunchArgument("sim_mode", default_value="",
                              description="active: the simulated robot pings; passive: ambient sources only" + keep),
        DeclareLaunchArgument("device", default_value="", description="capture device name or index" + keep),
        DeclareLaunchArgument("emit", default_value="",
                              description="capture_node plays the sweep through the speaker and publishes pings"
                                          + keep),
        DeclareLaunchArgument("array_height", default_value="",
                              description="the array's height above the floor in metres (sonar.array_height_m; 0: "
                                          "unknown)" + keep),
        DeclareLaunchArgument("floor_frame", default_value="",
                              description="a TF frame on the floor (base_footprint): the array's height read from "
                                          "/tf (sonar.floor_frame)" + keep),
        DeclareLaunchArgument("average_pings", default_value="",
                              description="hear up to N pings averaged while the array stands still in odom "
                                          "(sonar.average_pings; 1: each ping alone)" + keep),
        DeclareLaunchArgument("sim_speed", default_value="",
                              description="the simulated robot's speed in m/s (sim_audio_node speed_m_s; 0: it "
                                          "stands still)" + keep),
        DeclareLaunchArgument("points_confident", default_value="",
                              description="true: sonar/points from the confident depth alone, the pixels the model "
                                          "is sure of (sonar.points_confident)" + keep),
        OpaqueFunction(function=launch_setup),
    ])
