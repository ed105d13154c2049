"""A node that cannot start as configured ends with one line that names it and says what to change, exit status 2,
and no traceback: what `ros2 launch` shows under the node's name when a parameter, a device or a file is wrong."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def start(module, *params, nodes=(), timeout=90):
    """``python -m avperception.ros.MODULE [NODES...] --ros-args -p PARAM ...`` on a domain of its own."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(150 + os.getpid() % 50), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    args = [a for p in params for a in ("-p", p)]
    return subprocess.run([sys.executable, "-m", f"avperception.ros.{module}", *nodes, "--ros-args", *args],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("module, params, says", [
    ("sim_audio_node", ["array:=nosuch"], "sim_audio_node cannot start: unknown array preset 'nosuch'"),
    ("sim_audio_node", ["mode:=bogus"], "sim_audio_node cannot start: mode must be passive or active, got 'bogus'"),
    ("perception_node", ["sonar.average_pings:=0"], "perception_node cannot start: sonar.average_pings must be in"),
    ("perception_node", ["sonar.average_pings:=many"], "expected an integer, got 'many'"),
    ("perception_node", ["sonar.model:=/no/such/bundle"], "perception_node cannot start: model bundle not found"),
    ("bag_player_node", [], "bag_player_node cannot start: parameter 'bag' is required"),
    # no sound card here, or none named so: either way the node cannot open it
    ("capture_node", ["device:=no_such_card_4242"], "capture_node cannot start: "),
])
def test_a_node_that_cannot_start_says_why_in_one_line(module, params, says):
    r = start(module, *params)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and says in lines[0], r.stderr[-2000:]


def test_a_node_started_after_one_that_failed_is_not_left_running():
    """`avperception-run` builds the nodes in order: when the second cannot start, the first is destroyed and the
    process ends (no node keeps publishing without its partner)."""
    r = start("runner", "mode:=passive", "sonar.average_pings:=17", nodes=("sim_audio", "perception"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "error: perception_node cannot start: sonar.average_pings must be in [1, 16]" in r.stderr


def test_a_shutdown_during_a_callback_is_a_clean_stop():
    """Ctrl-C shuts the context down from the signal handler, possibly while a callback runs; its next publish
    then fails. run_nodes returns as for any stop (and destroys the node) instead of raising."""
    import rclpy
    from rclpy.node import Node
    from std_msgs.msg import String

    from avperception.ros.runner import run_nodes

    class Talker(Node):
        destroyed = False

        def __init__(self):
            super().__init__("talker")
            self.pub = self.create_publisher(String, "chatter", 10)
            self.create_timer(0.01, self.tick)

        def tick(self):
            rclpy.try_shutdown()  # what the SIGINT handler does
            self.pub.publish(String(data="after shutdown"))

        def destroy_node(self):
            Talker.destroyed = True
            return super().destroy_node()

    run_nodes([Talker], ["talker"], duration=10.0)
    assert Talker.destroyed and not rclpy.ok()
