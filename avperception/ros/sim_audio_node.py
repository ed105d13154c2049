"""sim_audio_node: a simulated room around the robot's microphone array, published in real time.

Publishes:
    audio                      avperception_msgs/AudioFrame  (device channel layout of the array)
    sim/true_sources           visualization_msgs/MarkerArray  true source positions (array frame)
    sim/true_source_poses      geometry_msgs/PoseArray          the same as poses
Parameters: see ``NODE_PARAMS``. Sources are given as flat lists, one entry (or
one x, y, z triple) per source, in room coordinates (m; origin in a corner).
"""

from __future__ import annotations


import numpy as np
from geometry_msgs.msg import PoseArray
from rclpy.node import Node
from visualization_msgs.msg import MarkerArray

from ..config import load_array
from ..sim.room import RoomScene, RoomSimulator, SourceSpec
from . import conversions as conv
from .audio_input import audio_qos
from .params import declare

NODE_PARAMS = {
    "array": ("robot_8mic", "array preset name or YAML path"),
    "sample_rate": (16000, "Hz"),
    "chunk_samples": (1024, "samples per published message"),
    "encoding": ("S16LE", "S16LE | S32LE | F32LE"),
    "output_rms": (0.05, "RMS level of the published audio (full scale = 1)"),
    "room_dims": ([6.0, 5.0, 3.0], "shoebox size x, y, z (m)"),
    "rt60": (0.3, "reverberation time (s)"),
    "robot_position": ([3.0, 2.5, 1.0], "array centre in the room (m)"),
    "robot_yaw_deg": (0.0, "robot heading (deg, counter-clockwise from room +x)"),
    "source_positions": ([4.6, 3.7, 1.3, 1.4, 1.2, 1.6], "x, y, z per source (m)"),
    "source_signals": (["noise", "babble"], "noise | babble | harmonic | chirps, per source"),
    "source_orbit_deg_per_s": ([0.0, 15.0], "angular speed around the robot per source (0: static)"),
    "snr_db": (30.0, "sensor-noise SNR (dB)"),
    "seed": (0, "random seed"),
    "truth_period_s": (0.1, "period of the true-source messages"),
}


class SimAudioNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("sim_audio_node", **kwargs)
        p = {k: declare(self, k, v, d) for k, (v, d) in NODE_PARAMS.items()}
        self.p = p
        self.array = load_array(p["array"])
        pos = np.asarray(p["source_positions"], dtype=float)
        if pos.size % 3:
            raise ValueError("source_positions must hold x, y, z triples")
        pos = pos.reshape(-1, 3)
        n = len(pos)
        signals = list(p["source_signals"]) or ["noise"]
        orbit = list(p["source_orbit_deg_per_s"]) or [0.0]
        sources = [SourceSpec(tuple(pos[k]), signals[min(k, len(signals) - 1)], 1.0,
                              float(orbit[min(k, len(orbit) - 1)])) for k in range(n)]
        self.fs = int(p["sample_rate"])
        self.scene = RoomScene(self.array, tuple(p["room_dims"]), float(p["rt60"]), tuple(p["robot_position"]),
                               float(p["robot_yaw_deg"]), sources, self.fs, float(p["snr_db"]), seed=int(p["seed"]))
        self.sim = RoomSimulator(self.scene)
        self.chunk = int(p["chunk_samples"])
        self.gain: float | None = None
        self.pub_audio = self.create_publisher(self._msg_type(), "audio", audio_qos())
        self.pub_markers = self.create_publisher(MarkerArray, "sim/true_sources", 10)
        self.pub_poses = self.create_publisher(PoseArray, "sim/true_source_poses", 10)
        self.sent = 0
        self.t_start: float | None = None
        self._last_truth = -1e9
        self.create_timer(min(0.5 * self.chunk / self.fs, 0.02), self.tick)
        self.get_logger().info(f"simulating {n} source(s) around {self.array.name} in a "
                               f"{'x'.join(f'{d:g}' for d in self.scene.room_dims)} m room, RT60 {self.scene.rt60} s")

    @staticmethod
    def _msg_type():
        from avperception_msgs.msg import AudioFrame

        return AudioFrame

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def tick(self) -> None:
        now = self.now()
        if self.t_start is None:
            self.t_start = now
        due = int((now - self.t_start) * self.fs // self.chunk)  # chunks whose last sample has been "captured"
        while self.sent < due:
            t = self.sent * self.chunk / self.fs
            x = self.sim.chunk(self.chunk)
            if self.gain is None:
                self.gain = float(self.p["output_rms"]) / (float(np.sqrt(np.mean(x**2))) + 1e-12)
            x = self.array.to_device_layout(x * self.gain)
            msg = conv.audio_frame_msg(x, self.fs, self.t_start + t, self.array.frame_id, self.sent, self.p["encoding"])
            self.pub_audio.publish(msg)
            self.sent += 1
        if now - self._last_truth >= float(self.p["truth_period_s"]):
            self._last_truth = now
            t = now - self.t_start
            pts = np.array([self.scene.source_position_in_array(k, t) for k in range(len(self.scene.sources))])
            self.pub_markers.publish(conv.positions_to_markers(pts, now, self.array.frame_id))
            self.pub_poses.publish(conv.positions_to_pose_array(pts, now, self.array.frame_id))


def main(args=None) -> None:
    from .runner import run_nodes

    run_nodes([SimAudioNode], args)


if __name__ == "__main__":
    main()
