"""``avperception demo --ros``: the simulated room and the perception node over real DDS, in one process.

A third node listens like any user would (energy maps, source poses, true
source poses, the learned depth beside the simulator's true depth, diagnostics) and prints a line per second
and a summary. With the simulator in its active mode (the default here) the robot pings as it drives through a
data-engine room, and each ping's learned depth is scored against the truth published with it.
"""

from __future__ import annotations

import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from ..config import DEFAULT_ARRAY, load_array
from ..eval.localization import match_errors, summarize
from . import conversions as conv
from .perception_node import PerceptionNode
from .runner import run_nodes
from .sim_audio_node import SimAudioNode


class DemoListener(Node):
    def __init__(self, array_name: str) -> None:
        super().__init__("demo_listener")
        self.array = load_array(array_name)
        self.maps = 0
        self.shape = None
        self.truth: np.ndarray | None = None
        self.errors: list[np.ndarray] = []
        self.diag: dict = {}
        self.create_subscription(Image, "acoustic/energy", self.on_map, qos_profile_sensor_data)
        self.create_subscription(PoseArray, "acoustic/source_poses", self.on_sources, 10)
        self.create_subscription(PoseArray, "sim/true_source_poses", self.on_truth, 10)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.on_diag, 10)
        self.true_depth: dict[int, np.ndarray] = {}  # by onset stamp (ns)
        self.pred_depth: dict[int, np.ndarray] = {}
        self.depth_scores: list[dict] = []
        self.create_subscription(Image, "sonar/depth", self.on_depth, qos_profile_sensor_data)
        self.create_subscription(Image, "sim/depth", self.on_true_depth, qos_profile_sensor_data)
        self.t0 = time.monotonic()
        self.create_timer(1.0, self.report)

    def on_map(self, msg: Image) -> None:
        self.maps += 1
        self.shape = (msg.height, msg.width)

    @staticmethod
    def _key(msg) -> int:
        return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec

    def on_depth(self, msg: Image) -> None:
        self.pred_depth[self._key(msg)] = conv.image_to_array(msg)
        self._match()

    def on_true_depth(self, msg: Image) -> None:
        self.true_depth[self._key(msg)] = conv.image_to_array(msg)
        self._match()

    def _match(self) -> None:
        """Score every prediction whose ping's truth has arrived (the same onset stamp, to the microsecond:
        the node refines the onset on the direct path, so its stamp may differ by a sample or two)."""
        from ..eval.metrics import depth_metrics

        for k in list(self.pred_depth):
            near = [t for t in self.true_depth if abs(t - k) <= 200_000]  # 0.2 ms = 3 samples at 16 kHz
            if near:
                d = depth_metrics(self.pred_depth.pop(k), self.true_depth[near[0]])
                self.depth_scores.append({"stamp": k * 1e-9, **d})
        for t in [t for t in self.true_depth if t < max(self.true_depth) - 5_000_000_000]:
            del self.true_depth[t]  # keep five seconds of truth

    def on_truth(self, msg: PoseArray) -> None:
        self.truth = conv.pose_array_to_directions(msg)

    def on_sources(self, msg: PoseArray) -> None:
        if self.truth is not None:
            self.errors.append(match_errors(conv.pose_array_to_directions(msg), self.truth, self.array))

    def on_diag(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            if "perception_node" in st.name:
                self.diag = {kv.key: kv.value for kv in st.values}
                self.diag["_message"] = st.message

    def report(self) -> None:
        t = time.monotonic() - self.t0
        last = self.errors[-1] if self.errors else []
        err = ", ".join("missed" if not np.isfinite(e) else f"{e:.1f}" for e in last)
        d = self.diag
        print(f"t={t:4.1f}s maps={self.maps} ({self.shape}) rate={d.get('map_rate_hz', '?')} Hz "
              f"latency={d.get('latency_ms_median', '?')} ms compute={d.get('compute_ms_median', '?')} ms "
              f"drops={d.get('dropped_frames', '?')} | error per true source: [{err}] deg", flush=True)
        if "ping_rate_hz" in d:
            last = self.depth_scores[-1] if self.depth_scores else None
            score = (f"last ping's depth delta1 {last['delta1']:.2f}, AbsRel {last['abs_rel']:.2f}"
                     if last else "no ping scored yet")
            print(f"         pings {d.get('ping_rate_hz')} Hz ({d.get('backend')}, inference "
                  f"{d.get('inference_ms_median')} ms, aligned {d.get('pings_aligned')}) | {score}", flush=True)


def run_ros_demo(array: str = DEFAULT_ARRAY, duration: float = 8.0, mode: str = "active") -> int:
    import sys

    args = [sys.argv[0], "--ros-args", "-p", f"array:={array}", "-p", f"mode:={mode}"]
    holder: dict = {}

    class Listener(DemoListener):
        def __init__(self) -> None:
            super().__init__(array)
            holder["node"] = self

    run_nodes([SimAudioNode, PerceptionNode, Listener], args, duration)
    node = holder.get("node")
    if node is None or node.maps == 0:
        print("no energy map received: check the log above")
        return 1
    errs = np.array(node.errors[len(node.errors) // 5:])  # skip the first second or so
    print(f"received {node.maps} energy maps over real DDS")
    if mode == "active":
        print("(the active room's ambient sources are drawn as the data engine draws them, often quiet, harmonic and "
              "far: their directions are harder than the passive demo's)")
    for j in range(errs.shape[1] if errs.size else 0):
        s = summarize(errs[:, j])
        print(f"true source {j}: median error {s['median_deg']:.1f} deg, found within {s['threshold_deg']:.0f} deg "
              f"in {100 * s['within_threshold']:.0f}% of maps")
    if mode == "active":
        sc = node.depth_scores
        if not sc:
            print("no learned depth was scored against the simulator's truth: check the log above")
            return 1
        d1 = np.array([x["delta1"] for x in sc])
        ar = np.array([x["abs_rel"] for x in sc])
        print(f"learned depth over real DDS: {len(sc)} pings scored against sim/depth, delta1 mean {np.nanmean(d1):.3f} "
              f"(min {np.nanmin(d1):.3f}), AbsRel mean {np.nanmean(ar):.3f}")
    return 0
