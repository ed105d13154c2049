"""Test helper process: publish a plane wave from a known direction as AudioFrame (or Float32MultiArray).

usage: publish_plane_wave.py ARRAY AZ EL SECONDS [avperception|float32]
Waits for a subscriber before sending, then publishes in real time, repeating the SECONDS-long signal with
continuous stamps until terminated (at most 120 s), so a slow discovery on a loaded machine cannot starve the test.
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
    t_start = time.monotonic()
    while pub.get_subscription_count() == 0 and time.monotonic() < t_start + 60:
        rclpy.spin_once(node, timeout_sec=0.05)
    print(f"subscribers: {pub.get_subscription_count()} after {time.monotonic() - t_start:.1f} s", flush=True)
    t0 = time.monotonic()
    stamp0 = node.get_clock().now().nanoseconds * 1e-9
    n_chunks = x.shape[1] // chunk
    i = 0
    while time.monotonic() < t0 + 120:
        s = i * chunk
        while time.monotonic() < t0 + (s + chunk) / fs:
            time.sleep(0.001)
        block = x[:, (i % n_chunks) * chunk:(i % n_chunks + 1) * chunk]
        if kind == "float32":
            pub.publish(Float32MultiArray(data=block.T.ravel().tolist()))
        else:
            pub.publish(conv.audio_frame_msg(block, fs, stamp0 + s / fs, arr.frame_id, i, "S16LE"))
        i += 1
        if i % 50 == 0:
            print(f"published {i} chunks", flush=True)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
