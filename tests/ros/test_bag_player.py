"""A recording played into the running graph over real DDS: bag_player_node in one process, perception_node in
another, this test as the subscriber. The node's outputs carry the recorded pings' stamps (the onset refined on the
direct path, so within a sample or two) and the truth comes out with its original stamps, exactly."""

import sys

import numpy as np
import pytest

import rclpy  # noqa: F401,E402
import avperception_msgs.msg  # noqa: E402,F401  (built by make install)

from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from avperception.eval.bagfiles import open_rosbag2  # noqa: E402
from avperception.eval.bagio import depth_to_metres, stamp_to_sec, typestore  # noqa: E402
from avperception.ros.conversions import image_to_array  # noqa: E402

from dds import logs, spin_until  # noqa: E402  (ros_env: tests/ros/conftest.py)

FS = 16000


def bag_stamps(bag, topic):
    ts = typestore()
    out = {}
    with open_rosbag2(bag) as r:
        for c, _, raw in r.messages(connections=[c for c in r.connections if c.topic == topic]):
            m = ts.deserialize_cdr(raw, c.msgtype)
            out[stamp_to_sec(m.header.stamp)] = m
    return out


def test_played_bag_drives_perception_node_with_the_recorded_stamps(ros_env):
    sim_bag = pytest.importorskip("avperception_train.datagen.sim_bag",
                                  reason="recording the simulated room needs the training package")
    start, node, ctx, tmp = ros_env
    bag = tmp / "sim.bag"  # a rosbag2 directory, whatever its name
    sim_bag.record_sim(bag, pings=10, room=0)
    pings = sorted(bag_stamps(bag, "/sonar/pings"))
    truth = bag_stamps(bag, "/sim/depth")
    assert len(pings) == 10 and len(truth) == 10

    depth, sim_depth = {}, {}
    node.create_subscription(Image, "sonar/depth", lambda m: depth.__setitem__(stamp_to_sec(m.header.stamp), m),
                             qos_profile_sensor_data)
    node.create_subscription(Image, "/sim/depth", lambda m: sim_depth.__setitem__(stamp_to_sec(m.header.stamp), m),
                             qos_profile_sensor_data)
    start(sys.executable, "-m", "avperception.ros.runner", "perception", "--ros-args", "-p", "array:=robot_8mic",
          "-p", "input_type:=avperception")
    # play once perception_node listens to the audio and the pings and this test to both depth topics
    ready = lambda: (node.count_subscribers("/audio") >= 1 and node.count_subscribers("/sonar/pings") >= 1  # noqa: E731
                     and node.count_publishers("/sonar/depth") >= 1)
    assert spin_until(node, ctx, ready, 60), "perception_node did not come up\n" + logs(tmp)
    player = start(sys.executable, "-m", "avperception.ros.runner", "bag_player", "--ros-args", "-p", f"bag:={bag}",
                   "-p", "wait_for_topics:=[/audio, /sonar/pings, /sim/depth]", "-p", "delay_s:=0.5")
    ok = spin_until(node, ctx, lambda: player.poll() is not None and len(depth) >= 6, 40)
    assert ok, (f"player exit {player.poll()}, {len(depth)} depth images, {len(sim_depth)} truth images\n"
                + logs(tmp))
    assert player.returncode == 0
    # every learned depth is stamped at one of the recorded pings' onsets, within the refinement's sample or two
    for t in depth:
        assert np.min(np.abs(np.array(pings) - t)) <= 2.0 / FS, (t, pings)
    # the truth is republished as recorded: the very stamps, the very pixels
    assert sim_depth and set(sim_depth) <= set(truth)
    for t, m in sim_depth.items():
        assert m.header.frame_id == truth[t].header.frame_id
        assert (m.height, m.width, m.encoding) == (truth[t].height, truth[t].width, truth[t].encoding)
        assert bytes(m.data) == bytes(truth[t].data)
    # and the learned depth is the room's, not noise: most of it within 25 % of the truth of its ping
    t = sorted(depth)[len(depth) // 2]
    near = min(truth, key=lambda s: abs(s - t))
    pred, gt = image_to_array(depth[t]), depth_to_metres(truth[near])
    both = np.isfinite(pred) & np.isfinite(gt)
    assert np.mean(np.maximum(pred[both] / gt[both], gt[both] / pred[both]) < 1.25) > 0.5
