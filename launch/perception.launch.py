"""Launch the avperception nodes.

    ros2 launch avperception perception.launch.py                      # simulated room, robot_8mic, pinging
    ros2 launch avperception perception.launch.py use_sim:=false array:=respeaker_4mic device:=ReSpeaker
    ros2 launch avperception perception.launch.py use_sim:=false emit:=true device:=MyCard   # the robot pings
    ros2 launch avperception perception.launch.py params_file:=/path/to/my.yaml rviz:=true

Launch arguments:
    array        array preset name or YAML path (overrides the params file)     [robot_8mic]
    use_sim      true: sim_audio_node (simulated room); false: capture_node     [true]
    params_file  node parameters (sections keyed by node name)                  [share/avperception/config/perception.yaml]
    device       capture device name or index (use_sim:=false)                   ['']
    rviz         also start RViz with share/avperception/config/avperception.rviz [false]
    sim_mode     active: the simulated robot pings as it drives through a data-engine room (needs the
                 training package); passive: ambient sources only                  [active]
    emit         use_sim:=false: capture_node plays the sweep and publishes pings   [false]
    model        model bundle directory for the learned outputs                     [default]

Without `ros2 launch` (e.g. a venv with the PyPI wheels) the same nodes run with
the same parameter file as:  avperception-run sim_audio perception --ros-args --params-file FILE
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, Shutdown
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("avperception")
    array = LaunchConfiguration("array")
    use_sim = LaunchConfiguration("use_sim")
    params_file = LaunchConfiguration("params_file")
    device = LaunchConfiguration("device")
    rviz = LaunchConfiguration("rviz")
    sim_mode = LaunchConfiguration("sim_mode")
    emit = LaunchConfiguration("emit")
    model = LaunchConfiguration("model")

    def text(value):  # a launch argument YAML must not read as a number or a boolean (device:=2, model:=on)
        return ParameterValue(value, value_type=str)

    return LaunchDescription([
        DeclareLaunchArgument("array", default_value="robot_8mic", description="array preset name or YAML path"),
        DeclareLaunchArgument("use_sim", default_value="true", description="simulated room instead of a sound card"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "perception.yaml"]),
                              description="parameter file for all nodes"),
        DeclareLaunchArgument("device", default_value="", description="capture device name or index"),
        DeclareLaunchArgument("rviz", default_value="false", description="start RViz"),
        DeclareLaunchArgument("sim_mode", default_value="active",
                              description="active: the simulated robot pings; passive: ambient sources only"),
        DeclareLaunchArgument("emit", default_value="false",
                              description="capture_node plays the sweep through the speaker and publishes pings"),
        DeclareLaunchArgument("model", default_value="default", description="model bundle directory"),
        # first: a missing rviz2 stops the launch before any node starts (launch leaves started ones running)
        Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
             arguments=["-d", PathJoinSubstitution([share, "config", "avperception.rviz"])], condition=IfCondition(rviz)),
        # without its audio source the graph has nothing to do: its exit ends the launch
        Node(package="avperception", executable="sim_audio_node", name="sim_audio_node", output="screen",
             parameters=[params_file, {"array": text(array), "mode": text(sim_mode), "model": text(model)}],
             condition=IfCondition(use_sim), on_exit=Shutdown()),
        Node(package="avperception", executable="capture_node", name="capture_node", output="screen",
             parameters=[params_file, {"array": text(array), "device": text(device),
                                       "emit": ParameterValue(emit, value_type=bool), "model": text(model)}],
             condition=UnlessCondition(use_sim), on_exit=Shutdown()),
        Node(package="avperception", executable="perception_node", name="perception_node", output="screen",
             parameters=[params_file, {"array": text(array), "sonar.model": text(model)}]),
    ])
