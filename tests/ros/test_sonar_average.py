"""perception_node's ``sonar.average_pings``: the array's pose in ``sonar.still_frame`` is read from /tf, and windows
are averaged only while it stays put and the odometry keeps publishing it."""

import numpy as np
import pytest
import rclpy  # noqa: F401
from rclpy.node import Node
from rclpy.parameter import Parameter

from avperception.inference.synthetic import bundle_echo_window
from avperception.ros.perception_node import PerceptionNode

from dds import spin_until  # noqa: E402  (tests/ros)


def test_pings_are_averaged_while_tf_says_the_array_stands_still(ctx):
    from tf2_msgs.msg import TFMessage

    from avperception.ros import conversions as conv
    from avperception.sonar.align import AlignedWindow

    node = PerceptionNode(context=ctx, parameter_overrides=[Parameter("array", value="robot_8mic"),
                                                            Parameter("sonar.average_pings", value=3)])
    talker = Node("talker", context=ctx)
    tf = talker.create_publisher(TFMessage, "/tf", 10)
    try:
        assert node.tf_tree is not None  # averaging in still_frame (odom, the default) follows TF
        b = node.sonar.bundle
        windows = [AlignedWindow(stamp=0.25 * i, audio=bundle_echo_window(b, wall_distance_m=1.5, seed=i), sequence=i,
                                 onset_index=4000 * i, correction=0, completed_stamp=0.25 * i + 0.13)
                   for i in range(6)]
        assert node.sonar.pose_from_tf(node.tf_tree) == "no transform from odom to mic_array yet"
        assert node.sonar.stack_window(windows[0])[1] == 1  # no pose: alone

        def at(x: float):  # odometry publishes the robot at x again, and the node reads it
            msgs = [conv.transform_msg("odom", "base_link", [x, 1.0, 0.0], np.eye(3), 0.0),
                    conv.transform_msg("base_link", "mic_array", [0.0, 0.0, 0.6], np.eye(3), 0.0)]
            before = node.tf_tree.version("odom", "mic_array")

            def heard() -> bool:
                tf.publish(conv.tf_message(msgs))
                return (node.sonar.pose_from_tf(node.tf_tree) is None and node.sonar.pose[1][0] == pytest.approx(x)
                        and node.tf_tree.version("odom", "mic_array") != before)

            assert spin_until(node, ctx, heard, 10.0)

        at(2.0)
        np.testing.assert_allclose(node.sonar.pose[1], [2.0, 1.0, 0.6])
        assert node.sonar.stack_window(windows[1])[1] == 1  # the window before had no pose
        at(2.0)
        audio, n = node.sonar.stack_window(windows[2])
        assert n == 2
        np.testing.assert_allclose(audio, (windows[1].audio + windows[2].audio) / 2, atol=1e-6)
        # no transform since: the odometry may have stopped while the robot drives on, so the window is alone
        assert node.sonar.stack_window(windows[3])[1] == 1 and node.sonar.stats()["average_stale_poses"] == 1
        at(2.0)
        assert node.sonar.stack_window(windows[4])[1] == 1  # the window before had no pose
        at(2.05)  # 5 cm on: the robot moved
        assert node.sonar.stack_window(windows[5])[1] == 1
        assert node.sonar.stats()["average_resets_moved"] == 1 and node.sonar.stats()["pings_averaged"] == 1
    finally:
        talker.destroy_node()
        node.destroy_node()
