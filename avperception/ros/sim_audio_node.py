"""sim_audio_node: a simulated room around the robot's microphone array, published in real time.

Two modes (parameter ``mode``):

``passive`` (default): ambient sources in a shoebox room (:mod:`avperception.sim.room`). Publishes
    audio                      avperception_msgs/AudioFrame  (device channel layout of the array)
    sim/true_sources           visualization_msgs/MarkerArray  true source positions (array frame)
    sim/true_source_poses      geometry_msgs/PoseArray          the same as poses
Sources are given as flat lists, one entry (or one x, y, z triple) per source, in
room coordinates (m; origin in a corner).

``active``: the robot pings while it drives a loop through a data-engine room
(the training package's ``datagen.trajectory``), at the levels the student was
trained on; the sweep, its level and the speaker position are the model bundle's
(``model``). Publishes ``audio`` as above and, per ping, stamped at its onset
(the time of that audio sample), in the array frame unless said:
    sonar/pings                avperception_msgs/Ping (``publish_pings``; onset_known = true)
    sim/depth                  sensor_msgs/Image 32FC1, metres, NaN where no surface (the engine's panorama)
    sim/semantic               sensor_msgs/Image mono8 labels (floor, ceiling, wall, obstacle; 255 none)
    sim/occupancy              sensor_msgs/PointCloud2 centres of the occupied voxels of the engine's crop
    sim/true_sources, sim/true_source_poses   the ambient sources
    /tf                        odom -> base_link (the pose; base_link on the floor under the array)
    /tf_static                 base_link -> mic_array (the array height)
    sim/room                   visualization_msgs/Marker TRIANGLE_LIST of floor, walls, boxes in odom (latched)
Parameters: see ``NODE_PARAMS``.
"""

from __future__ import annotations


import time
from collections import deque

import numpy as np
from geometry_msgs.msg import PoseArray
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from visualization_msgs.msg import Marker, MarkerArray

from ..config import DEFAULT_ARRAY, load_array
from ..sim.room import RoomScene, RoomSimulator, SourceSpec
from . import conversions as conv
from . import sim_truth
from .audio_input import audio_qos
from .params import declare

NODE_PARAMS = {
    "mode": ("passive", "passive: ambient sources in a shoebox | active: a robot pinging along a loop through a "
                        "data-engine room (needs the training package)"),
    "array": (DEFAULT_ARRAY, "array preset name or YAML path"),
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
    "truth_period_s": (0.1, "period of the true-source messages (passive)"),
    # active mode
    "model": ("default", "active: model bundle whose sweep, level and speaker position are emitted "
                         "(default: the shipped one)"),
    "room_seed": (0, "active: which data-engine room (the engine's room id)"),
    "ping_rate_hz": (4.0, "active: pings per second"),
    "speed_m_s": (0.15, "active: robot speed along its loop (0: standing still)"),
    "ambient_sources": (2, "active: number of ambient sources (kinds and levels as the data engine draws them)"),
    "moving_sources": (True, "active: ambient sources circle slowly"),
    "publish_pings": (True, "active: publish sonar/pings with the exact onsets (false: the receiver must detect)"),
    "prefill_s": (-1.0, "active: seconds of audio rendered before publishing starts (< 0: as much as the "
                        "first lap needs to play in real time at the measured render speed)"),
    "render_processes": (2, "active: processes computing impulse responses and truth during the first lap "
                            "(1: the background renderer alone)"),
    "odom_frame": ("odom", "active: the room's frame"),
    "base_frame": ("base_link", "active: the robot's frame on the floor under the array"),
    "room_ceiling": (False, "active: include the ceiling in sim/room"),
}


def emitter_overrides(model: str, array: str | None = None) -> tuple[dict, str, str]:
    """The sweep the simulated robot emits: data-engine ``active`` overrides, the sweep id, where they came from.

    ``model``: a bundle directory, or ``default`` for the shipped bundle of the preset ``array`` (the datagen config's own ``active``
    section where no bundle can be loaded; the shipped bundle was trained with it).
    """
    try:
        from ..inference.bundle import BundleError, load_bundle
    except ImportError as e:  # pragma: no cover - the bundle reader ships with the runtime
        if model != "default":
            raise RuntimeError(f"cannot read the model bundle {model!r}: {e}") from e
        return {}, "", "the data engine's defaults"
    try:
        b = load_bundle(model, verify=False, array=array)
    except BundleError:
        if model != "default":
            raise
        return {}, "", "the data engine's defaults"
    sp = b.sweep_params
    over = {"sweep": sp["kind"], "f_start_hz": float(sp["f0_hz"]), "f_end_hz": float(sp["f1_hz"]),
            "duration_s": float(sp["duration_s"]), "fade": float(sp["fade"]), "level_db": b.sweep_level_db,
            "speaker_position": [float(v) for v in b.speaker_position]}
    return over, b.sweep_id, f"the model bundle {b.path}"


def _sweep_id(active, fs: int) -> str:
    """The data engine's ``active`` settings' sweep, named as a bundle names its own."""
    from ..inference.bundle import sweep_id

    return sweep_id(active.sweep, active.f_start_hz, active.f_end_hz, active.duration_s, fs)


class SimAudioNode(Node):
    renderer = None  # the active mode's background renderer (destroy_node closes it, even after a failed start)

    def __init__(self, **kwargs) -> None:
        super().__init__("sim_audio_node", **kwargs)
        p = {k: declare(self, k, v, d) for k, (v, d) in NODE_PARAMS.items()}
        self.p = p
        self.array = load_array(p["array"])
        self.fs = int(p["sample_rate"])
        self.chunk = int(p["chunk_samples"])
        self.pub_audio = self.create_publisher(self._msg_type(), "audio", audio_qos())
        self.pub_markers = self.create_publisher(MarkerArray, "sim/true_sources", 10)
        self.pub_poses = self.create_publisher(PoseArray, "sim/true_source_poses", 10)
        self.sent = 0
        self.t_start: float | None = None
        if p["mode"] == "passive":
            self._init_passive(p)
            tick = self.tick
        elif p["mode"] == "active":
            self._init_active(p)
            tick = self.tick_active
        else:
            raise ValueError(f"mode must be passive or active, got {p['mode']!r}")
        self.create_timer(min(0.5 * self.chunk / self.fs, 0.02), tick)

    def _init_passive(self, p: dict) -> None:
        pos = np.asarray(p["source_positions"], dtype=float)
        if pos.size % 3:
            raise ValueError("source_positions must hold x, y, z triples")
        pos = pos.reshape(-1, 3)
        n = len(pos)
        signals = list(p["source_signals"]) or ["noise"]
        orbit = list(p["source_orbit_deg_per_s"]) or [0.0]
        sources = [SourceSpec(tuple(pos[k]), signals[min(k, len(signals) - 1)], 1.0,
                              float(orbit[min(k, len(orbit) - 1)])) for k in range(n)]
        self.scene = RoomScene(self.array, tuple(p["room_dims"]), float(p["rt60"]), tuple(p["robot_position"]),
                               float(p["robot_yaw_deg"]), sources, self.fs, float(p["snr_db"]), seed=int(p["seed"]))
        self.sim = RoomSimulator(self.scene)
        self.gain: float | None = None
        self._last_truth = -1e9
        self.get_logger().info(f"simulating {n} source(s) around {self.array.name} in a "
                               f"{'x'.join(f'{d:g}' for d in self.scene.room_dims)} m room, RT60 {self.scene.rt60} s")

    # ------------------------------------------------------------------ active mode

    def _init_active(self, p: dict) -> None:
        try:
            from avperception_train.datagen.config import load_config
            from avperception_train.datagen.trajectory import ActiveTrajectory, BackgroundRenderer
        except ImportError as e:
            raise RuntimeError("the simulator's active mode needs the training package: pip install -e training "
                               f"({e})") from e
        log = self.get_logger()
        over, sweep_id, source = emitter_overrides(str(p["model"]), self.array.name)
        cfg = load_config(overrides={"array": str(p["array"]), "active": over} if over else {"array": str(p["array"])})
        if cfg.audio.sample_rate != self.fs:
            raise ValueError(f"sample_rate {self.fs} differs from the data engine's {cfg.audio.sample_rate} Hz the "
                             "student was trained at; set sample_rate to it")
        self.sweep_id = sweep_id or _sweep_id(cfg.active, self.fs)
        kwargs = dict(cfg=cfg, room_id=int(p["room_seed"]), ping_rate_hz=float(p["ping_rate_hz"]),
                      speed_m_s=float(p["speed_m_s"]), num_sources=int(p["ambient_sources"]),
                      moving_sources=bool(p["moving_sources"]), seed=int(p["seed"]))
        self.traj = ActiveTrajectory(**kwargs)  # the plan (room, loop): the renderer process builds the same
        self.period = self.traj.period
        self.renderer = BackgroundRenderer(kwargs, queue_pings=32, processes=max(1, int(p["render_processes"])))
        self.frames = (str(p["odom_frame"]), str(p["base_frame"]), self.array.frame_id)
        self.prefill_s = float(p["prefill_s"])
        self._segs: deque = deque()  # rendered, not yet in the sample buffer
        self._truth: deque = deque()  # segments in the sample buffer whose ping and truth are not yet published
        self._buf = np.zeros((len(self.array.positions), 0), dtype=np.float32)
        self._buf_start = 0  # stream sample index of self._buf[:, 0]
        self._render_times: deque = deque(maxlen=200)
        self._t_created = time.monotonic()
        self._last_log = self._t_created
        self._last_stats = self._t_created
        self.underruns = 0
        self.pub_pings = None
        if bool(p["publish_pings"]):
            from avperception_msgs.msg import Ping

            self.pub_pings = self.create_publisher(Ping, "sonar/pings", 50)
        self.pub_depth = self.create_publisher(Image, "sim/depth", 10)
        self.pub_semantic = self.create_publisher(Image, "sim/semantic", 10)
        self.pub_occupancy = self.create_publisher(PointCloud2, "sim/occupancy", 10)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_room = self.create_publisher(Marker, "sim/room", latched)
        self.pub_tf = self.pub_tf_static = None
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            log.warning("tf2_msgs is not installed: no odom -> base_link -> mic_array transforms on /tf "
                        "(install ros-<distro>-tf2-msgs or the tf2_msgs Python package)")
        else:
            self.pub_tf = self.create_publisher(TFMessage, "/tf", 100)
            self.pub_tf_static = self.create_publisher(TFMessage, "/tf_static", latched)
        v, t, lab = self.traj.room_mesh(ceiling=bool(p["room_ceiling"]))
        self.pub_room.publish(sim_truth.room_mesh_marker(v, t, lab, 0.0, self.frames[0]))  # stamp 0: any time
        log.info(f"active simulation: {self.traj.describe()}; sweep {self.sweep_id} from {source}; "
                 f"rendering ahead in {int(p['render_processes'])} background process(es)")

    def _drain(self) -> None:
        """Move rendered segments from the renderer into ``_segs`` while less than the buffer cap is waiting."""
        cap = max(self._prefill_pings() if self.t_start is None else 0, 8) + 32
        while len(self._segs) < cap:
            seg = self.renderer.get()
            if seg is None:
                return
            if seg.index > 0:  # the first one also built the ray caster
                self._render_times.append(seg.render_s)
            self._segs.append(seg)

    def _prefill_pings(self) -> int:
        """Pings to hold before publishing starts (``prefill_s``, or what the first lap needs at the render speed)."""
        if self.prefill_s >= 0:
            return int(np.ceil(self.prefill_s * self.fs / self.period))
        if len(self._render_times) < 6:
            return 1 << 30  # not measured yet
        r = float(np.median(self._render_times))
        t = self.period / self.fs
        n = self.traj.loop_pings
        return int(min(n, np.ceil(1.2 * n * max(0.0, 1.0 - t / r)))) + 2

    def tick_active(self) -> None:
        self._drain()
        now = self.now()
        if self.t_start is None:
            need = self._prefill_pings()
            if len(self._segs) < need:
                if time.monotonic() - self._last_log > 5.0:
                    self._last_log = time.monotonic()
                    r = np.median(self._render_times) if self._render_times else float("nan")
                    self.get_logger().info(f"rendering ahead: {len(self._segs)} ping(s) ready, {r:.3f} s per ping "
                                           f"(period {self.period / self.fs:.3f} s), waiting for "
                                           f"{need if need < 1 << 30 else 'a speed estimate'}")
                return
            self.t_start = now
            r = np.median(self._render_times) if self._render_times else float("nan")
            self.get_logger().info(f"publishing after {time.monotonic() - self._t_created:.1f} s with "
                                   f"{len(self._segs)} ping(s) rendered ahead ({r:.3f} s per ping for a "
                                   f"{self.period / self.fs:.3f} s period)")
            if self.pub_tf_static is not None:
                _, base = sim_truth.robot_transforms(self.traj.pose(0), now, *self.frames)
                self.pub_tf_static.publish(conv.tf_message([base]))
        due = int((now - self.t_start) * self.fs // self.chunk)
        late = False
        while self.sent < due:
            end = (self.sent + 1) * self.chunk
            while self._buf_start + self._buf.shape[1] < end and self._segs:
                seg = self._segs.popleft()
                self._buf = np.concatenate([self._buf, seg.audio], axis=1)
                self._truth.append(seg)
            if self._buf_start + self._buf.shape[1] < end:
                late = True
                break
            i0 = self.sent * self.chunk - self._buf_start
            x = self._buf[:, i0: i0 + self.chunk]
            msg = conv.audio_frame_msg(self.array.to_device_layout(x), self.fs,
                                       self.t_start + self.sent * self.chunk / self.fs, self.array.frame_id, self.sent,
                                       self.p["encoding"])
            self.pub_audio.publish(msg)
            self.sent += 1
            self._buf = self._buf[:, i0 + self.chunk:]
            self._buf_start = self.sent * self.chunk
            while self._truth and self._truth[0].onset_sample < self._buf_start:
                self._publish_ping(self._truth.popleft())
        if time.monotonic() - self._last_stats > 30.0:
            self._last_stats = time.monotonic()
            self.get_logger().info(f"{self.sent * self.chunk / self.fs:.0f} s streamed, {len(self._segs)} ping(s) "
                                   f"rendered ahead, {np.median(self._render_times):.3f} s per ping lately, "
                                   f"{self.underruns} late tick(s)")
        if late:
            self.underruns += 1
            if time.monotonic() - self._last_log > 5.0:
                self._last_log = time.monotonic()
                self.get_logger().warning(f"the renderer is behind real time ({self.underruns} late tick(s)); "
                                          "raise prefill_s, lower ping_rate_hz or ambient_sources")

    def _publish_ping(self, seg) -> None:
        """The ping's onset and truth, stamped at the onset's audio sample time."""
        stamp = self.t_start + seg.onset_sample / self.fs
        frame = self.array.frame_id
        if self.pub_pings is not None:
            self.pub_pings.publish(conv.ping_msg(stamp, frame, seg.index, self.sweep_id, True))
        self.pub_depth.publish(conv.array_to_image(seg.depth, stamp, frame))
        self.pub_semantic.publish(conv.array_to_image(seg.semantic, stamp, frame))
        self.pub_occupancy.publish(conv.points_to_cloud(seg.occupied_points, stamp, frame))
        self.pub_markers.publish(conv.positions_to_markers(seg.source_positions, stamp, frame))
        self.pub_poses.publish(conv.positions_to_pose_array(seg.source_positions, stamp, frame))
        if self.pub_tf is not None:
            odom, _ = sim_truth.robot_transforms(seg.pose, stamp, *self.frames)
            self.pub_tf.publish(conv.tf_message([odom]))

    def destroy_node(self):
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None
        return super().destroy_node()

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
    from .runner import console_main

    console_main([SimAudioNode], args)


if __name__ == "__main__":
    main()
