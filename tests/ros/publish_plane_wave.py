"""Test helper process: publish a plane wave from a known direction as AudioFrame (or Float32MultiArray).

usage: publish_plane_wave.py ARRAY AZ EL SECONDS [avperception|float32]
Waits for a subscriber before sending, then publishes in real time.
"""

import sys
import time

import numpy as np
import rclpy
from std_msgs.msg import Float32MultiArray

from avperception.config import load_array
from avperception.dsp.grid import azel_to_vector
from avperception.ros import conversions as conv
from avperception.ros.audio_input import audio_qos
from avperception.sim.room import plane_wave


def main() -> None:
    array, az, el, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    kind = sys.argv[5] if len(sys.argv) > 5 else "avperception"
    arr = load_array(array)
    fs, chunk = 16000, 1024
    x = plane_wave(arr, azel_to_vector(az, el), fs, int(seconds * fs), seed=0, snr_db=20)
    x = arr.to_device_layout(0.1 * x / np.abs(x).max())
    rclpy.init()
    node = rclpy.create_node("test_audio_publisher")
    if kind == "float32":
        pub = node.create_publisher(Float32MultiArray, "audio", audio_qos())
    else:
        from avperception_msgs.msg import AudioFrame

        pub = node.create_publisher(AudioFrame, "audio", audio_qos())
    t_wait = time.monotonic() + 30
    while pub.get_subscription_count() == 0 and time.monotonic() < t_wait:
        rclpy.spin_once(node, timeout_sec=0.05)
    t0 = time.monotonic()
    stamp0 = node.get_clock().now().nanoseconds * 1e-9
    for i, s in enumerate(range(0, x.shape[1] - chunk + 1, chunk)):
        while time.monotonic() < t0 + (s + chunk) / fs:
            time.sleep(0.001)
        block = x[:, s:s + chunk]
        if kind == "float32":
            pub.publish(Float32MultiArray(data=block.T.ravel().tolist()))
        else:
            pub.publish(conv.audio_frame_msg(block, fs, stamp0 + s / fs, arr.frame_id, i, "S16LE"))
    time.sleep(0.5)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
