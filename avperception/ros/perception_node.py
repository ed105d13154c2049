"""perception_node: microphone-array audio -> acoustic energy map, source directions, diagnostics.

Subscribes:
    audio (avperception_msgs/AudioFrame, or any type ``input_type`` selects)
Publishes:
    acoustic/energy          sensor_msgs/Image 32FC1   SRP-PHAT power per grid direction
    acoustic/energy_color    sensor_msgs/Image rgb8    the same as a heat map (``publish_color``)
    acoustic/sources         visualization_msgs/MarkerArray  arrows toward the detected sources
    acoustic/source_poses    geometry_msgs/PoseArray   one pose per source, +x toward it
    acoustic/tracks          visualization_msgs/MarkerArray  tracked sources with stable IDs (``tracking``)
    sonar/*                  the learned outputs, one set per aligned ping (avperception/ros/sonar_outputs.py)
    /diagnostics             diagnostic_msgs/DiagnosticArray  rate, latency, drops, gaps, pings, backend
Subscribes (``sonar.enabled``):
    sonar/pings (avperception_msgs/Ping)  each sweep's onset; without any, pings are found on their direct path
Subscribes (``sonar.floor_frame`` set, or ``sonar.average_pings`` above 1 with ``sonar.still_frame``):
    /tf, /tf_static (tf2_msgs/TFMessage)  the array's height above that frame, given to the model; whether the
                                          array stood still in still_frame between the pings it averages
Parameters: every field of PipelineConfig (``array``, ``sample_rate``, ``frame.*``,
``stft.*``, ``grid.*``, ``beamformer.*``, ``sonar.*``) plus the node's own (see ``NODE_PARAMS``).
Beamformer output stamps are the centre of the analysed audio frame; learned outputs are stamped with the
ping's onset.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from visualization_msgs.msg import MarkerArray

from ..audio.buffer import AudioBuffer
from ..audio.ingest import DROP_KINDS, AudioIngest
from ..audio.pcm import AudioChunk
from ..config import ConfigError, PipelineConfig, load_array
from ..constants import MAX_CHUNK_SECONDS
from ..dsp.tracking import SourceTracker
from ..pipeline import Pipeline
from ..sonar.pipeline import blank_pings
from ..viz import heatmap_rgb
from . import conversions as conv
from .audio_input import AudioInput, audio_qos
from .params import declare, declare_dataclass, read_dataclass

NODE_PARAMS = {
    "audio_topic": ("audio", "audio topic to subscribe to"),
    "input_type": ("auto", "auto | avperception | audio_common | audio_stamped | odas | float32"),
    "float32_channels": (0, "Float32MultiArray input: channel count (0: the array's input channels)"),
    "float32_layout": ("interleaved", "Float32MultiArray input: interleaved | planar"),
    "max_pending_frames": (2, "frames kept waiting before the oldest are dropped"),
    "publish_color": (True, "also publish the rgb8 heat map"),
    "color_max": (0.0, "heat-map value shown as full scale (0: each map's own maximum)"),
    "marker_length": (1.0, "length of the source arrows (m)"),
    "tracking": (True, "track sources over time (stable IDs) and publish acoustic/tracks"),
    "diagnostics_period_s": (1.0, "period of /diagnostics messages"),
    "ping_topic": ("sonar/pings", "avperception_msgs/Ping topic (sonar.enabled)"),
    "max_chunk_seconds": (MAX_CHUNK_SECONDS, "longer audio messages are rejected (counted as oversized)"),
}


class PerceptionNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("perception_node", **kwargs)
        declare_dataclass(self, PipelineConfig())
        p = {k: declare(self, k, v, d) for k, (v, d) in NODE_PARAMS.items()}
        self.p = p
        cfg = read_dataclass(self, PipelineConfig).validate()
        self.array = load_array(cfg.array)
        self.pipeline = Pipeline(cfg, self.array)
        self.frame_id = (cfg.grid.camera_frame_id if cfg.grid.kind == "pinhole" else self.array.frame_id)
        f = cfg.frame
        self.buffer = AudioBuffer(self.array.num_mics, cfg.sample_rate, f.frame_samples, f.hop_samples,
                                  f.buffer_seconds, int(p["max_pending_frames"]))
        self.ingest = AudioIngest(self.array, cfg.sample_rate, self.buffer, float(p["max_chunk_seconds"]))
        self.pub_energy = self.create_publisher(Image, "acoustic/energy", qos_profile_sensor_data)
        self.pub_color = self.create_publisher(Image, "acoustic/energy_color", qos_profile_sensor_data)
        self.pub_markers = self.create_publisher(MarkerArray, "acoustic/sources", 10)
        self.pub_poses = self.create_publisher(PoseArray, "acoustic/source_poses", 10)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.tracker = SourceTracker(self.array) if p["tracking"] else None
        self.pub_tracks = self.create_publisher(MarkerArray, "acoustic/tracks", 10)
        self.input = AudioInput(self, p["audio_topic"], p["input_type"], self.on_chunk,
                                float32_sample_rate=cfg.sample_rate,
                                float32_channels=int(p["float32_channels"]) or self.array.input_channels,
                                float32_layout=p["float32_layout"])
        self._last_audio: float | None = None
        self._last_counts: dict[str, int] = {}
        self.sonar_errors = 0
        self._published = 0
        self._latency: list[float] = []
        self._compute: list[float] = []
        self._last_diag = time.monotonic()
        self.sonar = None
        self.tf_tree = None  # /tf and /tf_static: the array's height (sonar.floor_frame), its pose (still_frame)
        self._onsets: deque[float] = deque(maxlen=8)  # recent refined ping onsets (s), blanked for the beamformer
        self._sonar_note = "off (sonar.enabled is false)"
        self._pings_published = 0
        self._sonar_latency: list[float] = []
        if cfg.sonar.enabled:
            self._start_sonar(cfg, p["ping_topic"])
        self.create_timer(float(p["diagnostics_period_s"]), self.publish_diagnostics)
        self.get_logger().info(
            f"array {self.array.name} ({self.array.num_mics} mics), {cfg.grid.kind} grid {self.pipeline.grid.shape}, "
            f"{cfg.beamformer.method}, frame {f.frame_samples}/{f.hop_samples} samples at {cfg.sample_rate} Hz"
        )

    def _start_sonar(self, cfg: PipelineConfig, ping_topic: str) -> None:
        """Load the model bundle, check it fits, create the ping subscription and the sonar/* publishers.

        ``default`` is the bundle shipped for this array; where none ships, the node runs on beamforming alone
        (said in the log and in /diagnostics); an explicitly named bundle that does not fit stops the node."""
        from ..inference.bundle import BundleError
        from ..sonar.pipeline import SonarPipeline
        from .sonar_outputs import SonarPublishers

        log = self.get_logger()
        try:
            self.sonar = SonarPipeline(self.array, cfg.sonar, cfg.sample_rate, cfg.speed_of_sound,
                                       capacity_s=cfg.frame.buffer_seconds, log=log.info)
        except BundleError as e:
            if cfg.sonar.model not in ("", "default"):
                raise
            self._sonar_note = f"off: no shipped model for this array ({e})"
            log.warning(f"learned outputs {self._sonar_note}")
            return
        self._sonar_note = "on"
        self.sonar_pub = SonarPublishers(self, self.sonar.bundle, cfg.sonar, cfg.grid, self.array.frame_id)
        from avperception_msgs.msg import Ping

        self.create_subscription(Ping, ping_topic, self.on_ping, audio_qos())
        averaging = cfg.sonar.average_pings > 1
        if cfg.sonar.floor_frame or (averaging and cfg.sonar.still_frame):
            self._follow_tf()
        b = self.sonar.bundle
        log.info(f"sonar: model {b.path} ({b.sweep_id}), backend {self.sonar.stats()['backend']}, "
                 f"{b.window_samples}-sample windows aligned on {self.resolve_topic_name(ping_topic)} "
                 f"{'or on the direct path when no ping arrives' if cfg.sonar.detect else '(no detection)'}"
                 + (f"; the array {cfg.sonar.array_height_m:g} m above the floor" if cfg.sonar.array_height_m else "")
                 + (f"; its height above {cfg.sonar.floor_frame} from TF" if cfg.sonar.floor_frame else "")
                 + (f"; up to {cfg.sonar.average_pings} pings averaged while the array stands still"
                    + (f" in {cfg.sonar.still_frame}" if cfg.sonar.still_frame else " (a fixed array)")
                    if averaging else ""))

    def _follow_tf(self) -> None:
        """Keep every transform of /tf and /tf_static (the array's height above sonar.floor_frame, its pose in
        sonar.still_frame)."""
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        from ..eval.bagio import TransformTree

        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            raise ConfigError("sonar.floor_frame and sonar.still_frame need tf2_msgs (install ros-<distro>-tf2-msgs "
                              "or the tf2_msgs Python package), or leave them empty (sonar.array_height_m gives the "
                              "height; an empty still_frame says the array never moves)") from None
        self.tf_tree = TransformTree()
        static = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(TFMessage, "/tf", self.tf_tree.add, 100)
        self.create_subscription(TFMessage, "/tf_static", self.tf_tree.add_static, static)

    def on_ping(self, msg) -> None:
        if not self.sonar.push_ping(conv.stamp_to_sec(msg.header.stamp), int(msg.sequence), bool(msg.onset_known),
                                    str(msg.sweep_id)):
            self.get_logger().warning(f"sonar: a Ping of sweep {msg.sweep_id}, but the model hears "
                                      f"{self.sonar.bundle.sweep_id}: its window is not run "
                                      "(pings_skipped_sweep_mismatch); emit the bundle's sweep or load a bundle for "
                                      "this one", throttle_duration_sec=10.0)

    def run_sonar(self, t_received: float) -> None:
        if self.tf_tree is not None:
            why = self.sonar.height_from_tf(self.tf_tree)
            if why:
                self.get_logger().warning(f"sonar.floor_frame: {why}; the model is given "
                                          f"{self.sonar.array_height_m:g} m (0: unknown)", throttle_duration_sec=10.0)
            why = self.sonar.pose_from_tf(self.tf_tree)
            if why:
                self.get_logger().warning(f"sonar.still_frame: {why}; each ping is heard alone",
                                          throttle_duration_sec=10.0)
        try:
            results = self.sonar.pop()
        except Exception as e:  # every backend failed: keep the beamformer running, say why
            self.get_logger().error(f"sonar inference failed: {e}", throttle_duration_sec=5.0)
            self.sonar_errors += 1
            return
        for w, out in results:
            self._onsets.append(w.stamp)
            self.sonar_pub.publish(out)
            self._pings_published += 1
            self._sonar_latency.append((time.monotonic() - t_received) * 1e3)

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def on_chunk(self, chunk: AudioChunk) -> None:
        """One decoded audio message: validated, repaired and stamped by :class:`AudioIngest` (dropped ones are
        counted by kind and logged), fed to the sonar, and the newest ready frame beamformed (older ones are
        dropped when the node falls behind). Stamp-less audio is anchored on the node's clock."""
        cfg = self.pipeline.config
        got = self.ingest.accept(chunk, self.now())
        if not got.ok:
            self.get_logger().error(f"audio message dropped ({got.rejected}): {got.message}",
                                    throttle_duration_sec=5.0)
            return
        if got.nonfinite:  # repaired, not dropped: a NaN would spread through every map and window it touches
            self.get_logger().warning(f"{got.nonfinite} NaN/Inf samples in an audio message, replaced by zeros "
                                      f"({self.ingest.nonfinite_chunks} messages so far)", throttle_duration_sec=5.0)
        t_received = time.monotonic()
        self._last_audio = t_received
        if self.sonar is not None:
            self.sonar.push_audio(got.block, got.stamp, chunk.sequence)
            self.run_sonar(t_received)
        newest = self.ingest.pop_newest()
        if newest is None:
            return
        t_first, block = newest
        blank_s = self.sonar.blank_s if self.sonar is not None else 0.0
        if blank_s > 0:
            onsets = list(self._onsets) + self.sonar.aligner.pending_onsets()
            block = blank_pings(block, t_first, onsets, blank_s, cfg.sample_rate)
        self.process(t_first, block)

    def process(self, t_first: float, block: np.ndarray) -> None:
        cfg = self.pipeline.config
        out = self.pipeline.process(block, t_first)
        stamp = t_first + 0.5 * cfg.frame.frame_samples / cfg.sample_rate
        self.pub_energy.publish(conv.array_to_image(out.energy, stamp, self.frame_id))
        if self.p["publish_color"]:
            vmax = float(self.p["color_max"]) or None
            self.pub_color.publish(conv.array_to_image(heatmap_rgb(out.energy, 0.0, vmax), stamp, self.frame_id))
        af = self.array.frame_id
        self.pub_markers.publish(conv.sources_to_markers(out.sources, stamp, af, length=float(self.p["marker_length"])))
        self.pub_poses.publish(conv.sources_to_pose_array(out.sources, stamp, af))
        if self.tracker is not None:
            if self.tracker.stamp is not None and stamp < self.tracker.stamp:  # stamps went back: a new clock
                self.tracker.reset()
            tracks = self.tracker.update(out.sources, stamp)
            self.pub_tracks.publish(conv.tracks_to_markers(tracks, stamp, af))
        self._published += 1
        self._compute.append(out.compute_ms)
        self._latency.append((self.now() - (t_first + cfg.frame.frame_samples / cfg.sample_rate)) * 1e3)

    def publish_diagnostics(self) -> None:
        now = time.monotonic()
        dt = max(now - self._last_diag, 1e-6)
        st = self.buffer.stats
        lat = np.array(self._latency) if self._latency else np.array([np.nan])
        comp = np.array(self._compute) if self._compute else np.array([np.nan])
        values = {
            "map_rate_hz": self._published / dt,
            "latency_ms_median": float(np.median(lat)),
            "latency_ms_max": float(np.max(lat)),
            "compute_ms_median": float(np.median(comp)),
            "input_type": self.input.input_type or "waiting for topic",
            "dropped_frames": st.dropped_frames,
            "lost_messages": st.lost_messages,
            "gaps": st.gaps,
            "overlaps": st.overlaps,
            "rejected_chunks": sum(self.ingest.drops.values()) + self.input.errors,
            **{f"dropped_{k}": v for k, v in self.ingest.drops.items()},
            "dropped_format": self.ingest.drops["format"] + self.input.errors,
            "nonfinite_chunks": self.ingest.nonfinite_chunks,
            "clock_resets": st.clock_resets,
            "publisher_restarts": st.publisher_restarts,
            "measured_rate_hz": st.measured_rate,
            "beamformer": "numpy/" + self.pipeline.config.beamformer.method,
            "tracks": len(self.tracker.confirmed()) if self.tracker is not None else 0,
            "sonar": self._sonar_note,
        }
        if self.sonar is not None:
            inf = np.array(self.sonar.infer_ms) if self.sonar.infer_ms else np.array([np.nan])
            slat = np.array(self._sonar_latency) if self._sonar_latency else np.array([np.nan])
            values.update({"ping_rate_hz": self._pings_published / dt, "inference_ms_median": float(np.median(inf)),
                           "inference_ms_max": float(np.max(inf)), "sonar_latency_ms_median": float(np.median(slat)),
                           "sonar_latency_ms_max": float(np.max(slat)), "sonar_errors": self.sonar_errors,
                           **self.sonar.stats()})
            self.sonar.infer_ms.clear()
            self._sonar_latency.clear()
            self._pings_published = 0
        level, message = self.status(values, dt)
        self.pub_diag.publish(conv.diagnostics("avperception: perception_node", self.array.name, values, self.now(),
                                               level, message))
        self._published = 0
        self._latency.clear()
        self._compute.clear()
        self._last_diag = now


    def status(self, values: dict, period: float) -> tuple[int, str]:
        """The diagnostic level and message from what happened since the last report (a fault clears once it
        stops): 2 for audio dropped, 1 for no audio, a clock reset, repaired samples or stamps at another rate."""
        counts = {k: int(values[k]) for k in ("rejected_chunks", "nonfinite_chunks", "clock_resets")}
        recent = {k: v - self._last_counts.get(k, 0) for k, v in counts.items()}
        self._last_counts = counts
        silent = None if self._last_audio is None else time.monotonic() - self._last_audio
        if recent["rejected_chunks"]:
            kinds = ", ".join(k for k in DROP_KINDS if values.get(f"dropped_{k}")) or "format"
            return 2, f"{recent['rejected_chunks']} audio message(s) dropped in the last {period:.1f} s ({kinds})"
        if self.input.input_type is None or self._last_audio is None:
            return 1, "no audio received"
        if silent > max(period, 0.5):
            return 1, f"no audio for {silent:.1f} s"
        if recent["clock_resets"]:
            return 1, "the audio stamps jumped back: framing restarted"
        if recent["nonfinite_chunks"]:
            return 1, f"NaN/Inf samples replaced in {recent['nonfinite_chunks']} message(s)"
        if self.buffer.stats.rate_mismatch:
            return 1, (f"audio stamps run at {self.buffer.stats.measured_rate:.0f} Hz, "
                       f"declared {self.pipeline.config.sample_rate}")
        return 0, "ok"


def main(args=None) -> None:
    from .runner import console_main

    console_main([PerceptionNode], args)


if __name__ == "__main__":
    main()
