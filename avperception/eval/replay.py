"""Replaying a rosbag2 recording through the node's code and scoring every ping against the truth the bag holds.

:func:`replay_eval` reads a bag with ``rosbags`` (no ROS install needed), decodes the audio of any supported type
(:mod:`avperception.audio.pcm`), and feeds the same code ``perception_node`` runs: the
:class:`~avperception.sonar.pipeline.SonarPipeline` (pings from the bag's ``Ping`` messages, or found on the direct
path) and the beamformer :class:`~avperception.pipeline.Pipeline` on the stream's frames (the pings blanked as the
node does). Each ping's outputs are scored against what the bag holds:

- the simulator's truth (``sim/depth``, ``sim/semantic``, ``sim/occupancy``), matched by stamp within 1.5 samples;
- or an RGB-D camera's depth image and its ``CameraInfo``: the predicted panorama is reprojected into the camera
  (:class:`~avperception.sonar.products.PinholeReprojection` from the camera's K and its rotation from TF, else
  looking along the array's +x) and scored only where the camera measured a depth;
- the ambient sources (``sim/true_source_poses``): the beamformer's directions, as a DOA error per source.

Against either depth truth it also pools the safety metrics (:mod:`.safety`: the false-far rate, near-obstacle
recall) and, for a bundle with a depth uncertainty, scores how well it ranks the errors (AUSE per ping).

Clock jumps (stamps going back more than a second: the aligner restarts), gaps, missing truth frames, undecodable
messages and topics nobody reads are counted by reason. :func:`write_report` writes ``metrics.json``,
``summary.md``, PNG plots and a self-contained ``index.html``.
"""

from __future__ import annotations

import bisect
import json
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..constants import MAX_CHUNK_SECONDS
from .bagio import AUDIO_DECODERS, PING, BagError, TransformTree, cloud_xyz, depth_to_metres, image_to_array, \
    pose_positions, stamp_to_sec, typestore
from .metrics import class_accuracy, confusion, depth_metrics, segmentation_metrics, voxel_iou
from .safety import CONFIDENT_RATES, kept_counts, kept_metrics, named_rates, pooled_metrics, safety_counts, \
    sparsification

AUDIO_COMMON = "audio_common_msgs/msg/AudioDataStamped"
AUDIO_INFO = "audio_common_msgs/msg/AudioInfo"
SIM_TRUTH = {"depth": "sim/depth", "semantic": "sim/semantic", "occupancy": "sim/occupancy",
             "sources": "sim/true_source_poses"}
AUDIO_SKIP = {"rate": "audio_wrong_rate", "channels": "audio_wrong_channels", "empty": "audio_empty",
              "oversized": "audio_oversized"}  # AudioIngest's drop kind -> skip reason
SKIP_TEXT = {
    "ping_no_direct_path": "the sweep's direct path was not found around the ping's stamp",
    "ping_gap_in_window": "the ping's window straddles a gap in the audio",
    "ping_overwritten": "the ping's audio was overwritten before it came, or a clock jump dropped the queued ping",
    "ping_incomplete_timeout": "the ping's window never completed",
    "ping_queue_full": "too many pings waited for their audio",
    "ping_before_audio": "the ping is older than the first audio",
    "ping_sweep_mismatch": "the Ping names another sweep than the model hears (its window is not run)",
    "ping_behind": "the replay ran only the newest window",
    "ping_no_truth": "no truth of any kind at the ping's stamp (nothing to score)",
    "ping_no_depth_truth": "no depth truth (sim/depth within 1.5 samples, or camera frame) for the ping",
    "ping_no_semantic_truth": "no sim/semantic frame for the ping",
    "ping_no_occupancy_truth": "no sim/occupancy frame for the ping",
    "truth_without_ping": "truth frames that no scored ping matched",
    "audio_wrong_rate": "audio messages at another sample rate than the model's",
    "audio_wrong_channels": "audio messages whose channels do not fit the array",
    "audio_empty": "audio messages without samples",
    "audio_oversized": f"audio messages longer than {MAX_CHUNK_SECONDS:g} s",
    "decode_error": "messages that could not be decoded",
    "doa_no_source_truth": "beamformer frames without a source-pose truth within 0.5 s",
    "camera_no_info": "camera depth frames before any CameraInfo",
}


@dataclass
class ReplaySettings:
    """What :func:`replay_eval` runs.

    ``threads``: inference threads (ONNX Runtime / torch) per network run; ``workers``: background threads that run
    the network (one ping each) and the beamformer (``beam_batch`` frames each) while the bag is read on (the same
    windows and frames, the same results; 0: everything inline in the stream's order, as the node);
    ``beam_batch``: frames the beamformer and its peak search run at once as array operations
    (:meth:`~avperception.pipeline.Pipeline.process_batch`; 1: frame by frame with the node's
    :meth:`~avperception.pipeline.Pipeline.process`); ``beamformer_every``: run the beamformer on every N-th
    frame (1: every frame, as the node does; 0: not at all); ``segment_s``: per-segment metrics over this much of the
    bag's clock (a clock jump also starts a segment); ``match_samples``: truth matched to a ping within this many
    samples of its stamp; ``camera_tolerance_s``: a camera frame within this of a ping's stamp scores it.
    ``workers=0, beam_batch=1`` replays exactly the node's order and code. ``array_height_m``: the array's height
    above the floor given to the model, as the node's ``sonar.array_height_m`` (0: unknown); ``floor_frame``: read
    it from the bag's TF instead, as the node's ``sonar.floor_frame``. ``average_pings``, ``still_frame``: as the
    node's ``sonar.average_pings`` and ``sonar.still_frame`` (the array's pose read from the bag's TF).
    """

    model: str = "default"
    backend: str = "auto"
    threads: int = 1
    audio_topic: str | None = None
    ping_topic: str | None = None
    depth_topic: str | None = None
    info_topic: str | None = None
    realtime: bool = False
    beamformer_every: int = 1
    segment_s: float = 10.0
    match_samples: float = 1.5
    camera_tolerance_s: float = 0.05
    sample_pings: int = 4
    detect: bool = True
    array_height_m: float = 0.0
    floor_frame: str = ""
    average_pings: int = 1
    still_frame: str = "odom"
    workers: int = 2
    beam_batch: int = 16


@dataclass
class _Store:
    """Truth frames of one kind, by stamp (one clock epoch at a time)."""

    stamps: list = field(default_factory=list)
    items: list = field(default_factory=list)
    used: list = field(default_factory=list)

    def add(self, t: float, item) -> None:
        k = bisect.bisect_right(self.stamps, t)
        self.stamps.insert(k, t)
        self.items.insert(k, item)
        self.used.insert(k, False)

    def nearest(self, t: float, tol: float):
        if not self.stamps:
            return None
        k = bisect.bisect_left(self.stamps, t)
        best = None
        for j in (k - 1, k):
            if 0 <= j < len(self.stamps) and abs(self.stamps[j] - t) <= tol:
                if best is None or abs(self.stamps[j] - t) < abs(self.stamps[best] - t):
                    best = j
        if best is None:
            return None
        self.used[best] = True
        return self.items[best]

    def prune(self, before: float) -> int:
        """Drop frames older than ``before``; returns how many of them no ping used."""
        k = bisect.bisect_left(self.stamps, before)
        unused = k - sum(self.used[:k])
        del self.stamps[:k], self.items[:k], self.used[:k]
        return unused

    def clear(self) -> int:
        return self.prune(math.inf)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angles (deg) between unit vectors ``a (n, 3)`` and ``b (m, 3)`` -> ``(n, m)``."""
    return np.degrees(np.arccos(np.clip(a @ b.T, -1.0, 1.0)))


def _rpy_from_matrix(R: np.ndarray) -> tuple[float, float, float]:
    """Inverse of :func:`avperception.dsp.grid.rpy_matrix` (roll, pitch, yaw in degrees)."""
    from scipy.spatial.transform import Rotation

    yaw, pitch, roll = Rotation.from_matrix(R).as_euler("ZYX", degrees=True)
    return float(roll), float(pitch), float(yaw)


def summarize(pings: list[dict], num_classes: int, doa_errors=None) -> dict:
    """Means over the scored pings (NaN-free: pings without that truth are left out), pooled class IoU, the safety
    metrics pooled over the depth pixels (:mod:`.safety`: false-far rate, near-obstacle recall, obstacle delta_1;
    None without such pixels; the false-far rate and near recall of the near bound too, ``near_bound_*``, and the
    confident depth's :func:`~.safety.kept_metrics`, ``confident_*``), the
    depth uncertainty's AUSE (AbsRel) and a random order's, latency and inference
    percentiles, DOA error percentiles."""
    def mean(key):
        v = np.array([p[key] for p in pings if p.get(key) is not None], dtype=float)
        v = v[np.isfinite(v)]
        return (float(v.mean()) if v.size else None), int(v.size)

    out: dict = {"pings": len(pings)}
    for key in ("delta1", "abs_rel", "rmse", "class_acc", "voxel_iou", "ause", "ause_random"):
        out[f"{key}_mean"], out[f"{key}_pings"] = mean(key)
    sm = pooled_metrics(pings, "_safety")
    out.update(named_rates(sm, ("false_far_rate", "near_recall", "false_near_rate", "obstacle_delta1")))
    out["near_pixels"] = sm.get("near_pixels", 0)
    out.update(named_rates(pooled_metrics(pings, "_bound_safety"), ("false_far_rate", "near_recall", "false_near_rate"),
                           "near_bound_"))
    out.update(named_rates(pooled_metrics(pings, "_kept", kept_metrics), CONFIDENT_RATES, "confident_"))
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    for p in pings:
        if p.get("_confusion") is not None:
            conf += p["_confusion"]
    if conf.sum():
        seg = segmentation_metrics(conf)
        out["miou"] = seg["miou"]
        out["iou_per_class"] = seg["iou_per_class"]
    else:
        out["miou"], out["iou_per_class"] = None, [None] * num_classes
    for key in ("infer_ms", "latency_ms"):
        v = np.array([p[key] for p in pings if p.get(key) is not None], dtype=float)
        out[f"{key}_median"] = float(np.median(v)) if v.size else None
        out[f"{key}_p99"] = float(np.percentile(v, 99)) if v.size else None
    if doa_errors is not None:
        e = np.asarray(doa_errors, dtype=float)
        out["doa_errors"] = int(e.size)
        out["doa_error_deg_median"] = float(np.median(e)) if e.size else None
        out["doa_error_deg_p90"] = float(np.percentile(e, 90)) if e.size else None
    return out


class _Replay:
    def __init__(self, bag: Path, s: ReplaySettings, log=None) -> None:
        from ..config import PipelineConfig, SonarConfig
        from ..inference.bundle import load_bundle

        self.bag, self.s = bag, s
        self.log = log or (lambda m: None)
        self.bundle = load_bundle(s.model)
        # the class whose pixels the safety metrics score as obstacles (-1: the bundle has none)
        self.obstacle = self.bundle.classes.index("obstacle") if "obstacle" in self.bundle.classes else -1
        self.array = self.bundle.array
        self.fs = self.bundle.sample_rate
        self.sonar_cfg = SonarConfig(model=s.model, backend=s.backend, threads=int(s.threads), detect=s.detect,
                                     array_height_m=float(s.array_height_m), floor_frame=s.floor_frame,
                                     average_pings=int(s.average_pings), still_frame=s.still_frame)
        self.pipe_cfg = PipelineConfig(array=self.array.name, sample_rate=self.fs,
                                       speed_of_sound=self.bundle.speed_of_sound, sonar=self.sonar_cfg)
        self.skipped: dict[str, int] = {}
        self.unknown_topics: dict[str, int] = {}
        self.events: list[dict] = []
        self.notes: list[str] = []
        self.pings: list[dict] = []
        self.samples: list[dict] = []  # arrays of a few pings for the pictures
        self.doa: list[dict] = []
        self.pending: list[dict] = []
        self.store = {k: _Store() for k in ("depth", "semantic", "occupancy", "sources", "camera")}
        self.ping_stamps: dict[int, float] = {}
        self.tf = TransformTree()
        self.height_missing = 0  # floor_frame: windows without a usable transform (given the last height known)
        self.pose_missing = 0  # average_pings with still_frame: windows without a pose (heard alone)
        self.camera_info = None
        self.reproj: dict = {}
        self.epoch = 0
        self.epoch_t0: float | None = None
        self.max_stamp: float | None = None
        self.segment_keys: dict[tuple[int, int], int] = {}
        self.segment_info: list[dict] = []
        self.t_log0: int | None = None
        self.audio_seconds = 0.0
        self.frames_run = 0
        self.frame_count = 0
        self.onsets: list[float] = []
        self.ingest = None  # AudioIngest, made when the bag's topics are known

    def skip(self, reason: str, n: int = 1) -> None:
        if n:
            self.skipped[reason] = self.skipped.get(reason, 0) + int(n)

    # ------------------------------------------------------------------ topics
    def pick_topics(self, conns: dict[str, str]) -> None:
        s = self.s
        audio_types = set(AUDIO_DECODERS) | {AUDIO_COMMON}
        if s.audio_topic is not None:
            if s.audio_topic not in conns:
                raise BagError(f"{self.bag}: no topic {s.audio_topic!r}; topics: {sorted(conns)}")
            if conns[s.audio_topic] not in audio_types:
                raise BagError(f"{s.audio_topic} has type {conns[s.audio_topic]}; supported audio types: "
                               f"{sorted(audio_types)}")
            self.audio_topic = s.audio_topic
        else:
            cands = [t for t, m in conns.items() if m in audio_types]
            if not cands:
                raise BagError(f"{self.bag}: no audio topic (types {sorted(audio_types)}); topics: {sorted(conns)}")
            self.audio_topic = "/audio" if "/audio" in cands else sorted(cands)[0]
            if len(cands) > 1:
                self.notes.append(f"several audio topics ({', '.join(sorted(cands))}); replayed {self.audio_topic} "
                                  "(--audio-topic picks another)")
        self.audio_type = conns[self.audio_topic]
        self.info_audio_topic = next((t for t, m in conns.items() if m == AUDIO_INFO), None)
        if self.audio_type == AUDIO_COMMON and self.info_audio_topic is None:
            raise BagError(f"{self.audio_topic} is audio_common audio, which needs its AudioInfo topic; none in the bag")
        if s.ping_topic is not None:
            if s.ping_topic not in conns:
                raise BagError(f"{self.bag}: no topic {s.ping_topic!r}; topics: {sorted(conns)}")
            self.ping_topic = s.ping_topic
        else:
            pts = [t for t, m in conns.items() if m == PING]
            self.ping_topic = "/sonar/pings" if "/sonar/pings" in pts else (sorted(pts)[0] if pts else None)
        if self.ping_topic is None:
            self.notes.append("no Ping topic: every ping was found on its direct path")
        self.truth_topics = {}
        for kind, suffix in SIM_TRUTH.items():
            hits = sorted(t for t in conns if t.rstrip("/").endswith(suffix))
            if hits:
                self.truth_topics[hits[0]] = kind
        self.camera_topic = self.camera_info_topic = None
        if s.depth_topic is not None:
            if s.depth_topic not in conns:
                raise BagError(f"{self.bag}: no topic {s.depth_topic!r}; topics: {sorted(conns)}")
            if s.depth_topic not in self.truth_topics:
                self.camera_topic = s.depth_topic
        else:
            cams = sorted(t for t, m in conns.items() if m == "sensor_msgs/msg/Image" and "depth" in t
                          and t not in self.truth_topics and "sonar/" not in t)
            self.camera_topic = cams[0] if cams else None
        if self.camera_topic is not None:
            infos = sorted(t for t, m in conns.items() if m == "sensor_msgs/msg/CameraInfo")
            if s.info_topic is not None:
                if s.info_topic not in conns:
                    raise BagError(f"{self.bag}: no topic {s.info_topic!r}; topics: {sorted(conns)}")
                self.camera_info_topic = s.info_topic
            else:
                ns = self.camera_topic.rsplit("/", 1)[0]
                same = [t for t in infos if t.rsplit("/", 1)[0] == ns]
                self.camera_info_topic = (same or infos or [None])[0]
            if self.camera_info_topic is None:
                raise BagError(f"camera depth {self.camera_topic} needs a CameraInfo topic (--info-topic); none in the bag")
        self.tf_topics = [t for t, m in conns.items() if m == "tf2_msgs/msg/TFMessage"]
        used = {self.audio_topic, self.ping_topic, self.camera_topic, self.camera_info_topic, self.info_audio_topic,
                *self.truth_topics, *self.tf_topics} - {None}
        self.used_topics = used

    # ------------------------------------------------------------------ the clock
    def _clock(self, stamp: float, t_log: int) -> None:
        """Epochs: a stamp more than a second behind the newest one starts a new clock."""
        if self.max_stamp is not None and stamp < self.max_stamp - 1.0:
            self._collect(wait=True)
            self.events.append({"kind": "clock_jump", "t": self._t(t_log), "from_stamp": self.max_stamp,
                                "to_stamp": stamp})
            self._score_pending(final=True)
            for k, st in self.store.items():
                if k != "sources":
                    self.skip("truth_without_ping", st.clear())
                else:
                    st.clear()
            self.epoch += 1
            self.epoch_t0 = stamp
            self.max_stamp = stamp
            return
        if self.epoch_t0 is None:
            self.epoch_t0 = stamp
        self.max_stamp = stamp if self.max_stamp is None else max(self.max_stamp, stamp)

    def _t(self, t_log: int) -> float:
        return (t_log - self.t_log0) * 1e-9

    def _segment(self, stamp: float, t: float) -> int:
        key = (self.epoch, int((stamp - self.epoch_t0) // self.s.segment_s))
        if key not in self.segment_keys:
            self.segment_keys[key] = len(self.segment_info)
            self.segment_info.append({"segment": len(self.segment_info), "epoch": self.epoch, "t_start": t,
                                      "stamp_start": stamp})
        return self.segment_keys[key]

    # ------------------------------------------------------------------ run
    def run(self, progress: bool | None = None) -> dict:
        from .bagfiles import open_rosbag2

        from ..audio import pcm
        from ..audio.buffer import AudioBuffer
        from ..audio.ingest import AudioIngest
        from ..pipeline import Pipeline
        from ..sonar.pipeline import SonarPipeline

        if not self.bag.exists():
            raise BagError(f"bag not found: {self.bag}")
        ts = typestore()
        self.sonar = SonarPipeline(self.array, self.sonar_cfg, self.fs, self.bundle.speed_of_sound,
                                   log=self.log, bundle=self.bundle)
        every = int(self.s.beamformer_every)
        self.beam = Pipeline(self.pipe_cfg, self.array) if every > 0 else None
        f = self.pipe_cfg.frame
        buf = AudioBuffer(self.array.num_mics, self.fs, f.frame_samples, f.hop_samples, f.buffer_seconds,
                          max_pending_frames=1 << 20) if self.beam is not None else None
        blank_s = self.sonar.blank_s
        if int(self.s.workers) < 0 or int(self.s.beam_batch) < 1:
            raise ValueError(f"workers must be >= 0 and beam_batch >= 1, got {self.s.workers} and {self.s.beam_batch}")
        self.executor = None
        if int(self.s.workers) > 0:
            from concurrent.futures import ThreadPoolExecutor

            self.executor = ThreadPoolExecutor(int(self.s.workers), thread_name_prefix="replay-work")
        self.cpu = {"network": 0.0, "beamformer": 0.0}  # CPU seconds in each stage, whichever thread ran it
        self.cpu_lock = threading.Lock()
        self.inflight: list = []
        self.frames: list = []  # frames waiting for a beamformer batch: (block, t_first, stamp, t_ns, truth)
        self.beam_inflight: list = []  # (frames, future or outputs), in the stream's order
        wall0, cpu0 = time.perf_counter(), time.process_time()
        with open_rosbag2(self.bag) as reader:  # any directory name (AnyReader takes x.bag for a ROS 1 bag)
            conns = {c.topic: c.msgtype for c in reader.connections}
            self.pick_topics(conns)
            for c in reader.connections:
                if c.topic not in self.used_topics:
                    self.unknown_topics[c.topic] = self.unknown_topics.get(c.topic, 0) + int(c.msgcount)
            if "sources" not in self.truth_topics.values():
                self.beam = buf = None  # nothing to score the beamformer's directions against
                if every > 0:
                    self.notes.append("no source truth: the beamformer was not run (no DOA to score)")
            self.ingest = AudioIngest(self.array, self.fs, buf)  # the node's validation, repair and stamps
            wanted = [c for c in reader.connections if c.topic in self.used_topics]
            decode = getattr(pcm, AUDIO_DECODERS[self.audio_type]) if self.audio_type in AUDIO_DECODERS else None
            audio_info = None
            total = sum(int(c.msgcount) for c in wanted)
            self.bag_duration_s = reader.duration * 1e-9 if reader.duration else 0.0
            self.stride = max(1, int(self.bag_duration_s * 4 / max(self.s.sample_pings, 1)))
            show = progress if progress is not None else sys.stderr.isatty()
            bar = None
            if show:
                try:
                    from tqdm import tqdm

                    bar = tqdm(total=total, desc="replay", unit="msg", disable=not sys.stderr.isatty(),
                               mininterval=0.5)
                except ImportError:
                    bar = None
            for c, t_ns, raw in reader.messages(connections=wanted):
                if bar is not None:
                    bar.update(1)
                if self.t_log0 is None:
                    self.t_log0 = t_ns
                if self.s.realtime:
                    delay = wall0 + self._t(t_ns) - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                try:
                    msg = ts.deserialize_cdr(raw, c.msgtype)
                except Exception:  # noqa: BLE001 - a broken message is counted, the replay goes on
                    self.skip("decode_error")
                    continue
                topic = c.topic
                if topic == self.audio_topic:
                    try:
                        chunk = decode(msg) if decode is not None else pcm.from_audio_common(msg, audio_info)
                    except (pcm.AudioFormatError, ValueError):
                        self.skip("decode_error")
                        continue
                    self._on_audio(chunk, t_ns, buf, blank_s, every)
                elif topic == self.info_audio_topic:
                    audio_info = msg
                elif topic == self.ping_topic:
                    stamp = stamp_to_sec(msg.header.stamp)
                    self._clock(stamp, t_ns)
                    self.ping_stamps[int(msg.sequence)] = stamp
                    self.sonar.push_ping(stamp, int(msg.sequence), bool(msg.onset_known), str(msg.sweep_id))
                elif topic in self.truth_topics:
                    self._on_truth(self.truth_topics[topic], msg, t_ns)
                elif topic == self.camera_topic:
                    stamp = stamp_to_sec(msg.header.stamp)
                    self._clock(stamp, t_ns)
                    try:
                        d = depth_to_metres(msg)
                    except BagError:
                        self.skip("decode_error")
                        continue
                    if d.shape == tuple(self.bundle.pano_shape):
                        self.store["depth"].add(stamp, d)  # a panorama: scored as the simulator's depth
                    else:
                        self.store["camera"].add(stamp, (d, msg.header.frame_id))
                elif topic == self.camera_info_topic:
                    self.camera_info = msg
                elif topic in self.tf_topics:
                    self.tf.add(msg, static=topic.rstrip("/").endswith("tf_static"))
            if bar is not None:
                bar.close()
        self._collect(wait=True)
        self._beam_flush()
        self._beam_collect(wait=True)
        if self.executor is not None:
            self.executor.shutdown()
        self._score_pending(final=True)
        for k, st in self.store.items():
            if k not in ("sources", "camera"):
                self.skip("truth_without_ping", st.clear())
        for reason, n in self.sonar.aligner.skipped.items():
            self.skip(f"ping_{reason}", n)
        self.wall_s = time.perf_counter() - wall0
        self.cpu["total"] = time.process_time() - cpu0
        self.cpu["reading_scoring"] = self.cpu["total"] - self.cpu["network"] - self.cpu["beamformer"]
        return self.result()

    def _on_audio(self, chunk, t_ns: int, buf, blank_s: float, every: int) -> None:
        """One audio message through :class:`~avperception.audio.ingest.AudioIngest` as in the node (a dropped one
        is counted under its skip reason, NaN/Inf samples are zeroed and counted, a stamp-less one is stamped from
        the bag's log time), then to the sonar and, with a beamformer (``buf``), every ready frame."""
        from ..sonar.pipeline import blank_pings

        expected = self.ingest.expected_stamp()  # where this chunk should start, from the chunks before it
        got = self.ingest.accept(chunk, t_ns * 1e-9)
        if not got.ok:
            self.skip(AUDIO_SKIP[got.rejected])
            return
        if got.nonfinite and self.ingest.nonfinite_chunks == 1:
            self.notes.append("NaN/Inf audio samples were replaced by zeros (stream.nonfinite_chunks: the messages)")
        block, stamp = got.block, got.stamp
        self._clock(stamp, t_ns)
        n = block.shape[1]
        if expected is not None and stamp - expected > max(0.5 * n / self.fs, 1e-3):  # after a clock jump: < 0
            self.events.append({"kind": "gap", "t": self._t(t_ns), "stamp": expected, "seconds": stamp - expected})
        self.audio_seconds += n / self.fs
        t0 = time.perf_counter()
        self.sonar.push_audio(block, stamp, chunk.sequence)
        for w in self.sonar.aligner.pop_windows():  # what SonarPipeline.pop does, the network maybe in a thread
            if self.sonar.height_from_tf(self.tf):  # None without floor_frame or with a usable transform
                self.height_missing += 1
            height = self.sonar.array_height_m  # fixed with the window: the network may run later, in a thread
            if self.sonar.pose_from_tf(self.tf):  # None unless averaging in still_frame without a transform yet
                self.pose_missing += 1
            audio, averaged = self.sonar.stack_window(w)
            self.onsets.append(w.stamp)
            nominal = self.ping_stamps.get(w.sequence, w.stamp) if not w.detected else w.stamp
            p = {"w": w, "nominal": nominal, "t": self._t(t_ns), "segment": self._segment(w.stamp, self._t(t_ns)),
                 "epoch": self.epoch, "t0": t0}
            if self.executor is not None:
                ahead = 2 * int(self.s.workers)
                if len(self.inflight) >= ahead:  # the network sets the pace: read ahead a few windows at most
                    self._collect(wait=True, keep=ahead - 1)
                p["future"] = self.executor.submit(self._infer, w, audio, averaged, height)
            else:
                p["o"], p["done"] = self._infer(w, audio, averaged, height)
            self.inflight.append(p)
        self._collect(wait=False)
        self.onsets = self.onsets[-8:]
        self._score_pending(final=False)
        if buf is not None:
            for t_first, frame in self.ingest.pop_all():
                self.frame_count += 1
                if (self.frame_count - 1) % every:
                    continue
                if blank_s > 0:
                    frame = blank_pings(frame, t_first, self.onsets + self.sonar.aligner.pending_onsets(), blank_s,
                                        self.fs)
                self._frame(frame, t_first, t_ns)
            self._beam_collect(wait=False)

    def _frame(self, frame: np.ndarray, t_first: float, t_ns: int) -> None:
        """One beamformer frame: run now (``beam_batch`` 1, no workers) or queued for a batch. Its source truth is
        looked up now, as when it is run inline; a frame without one is counted and not run (nothing to score)."""
        stamp = t_first + 0.5 * frame.shape[1] / self.fs
        if int(self.s.beam_batch) <= 1 and self.executor is None:
            c0 = time.thread_time()
            out = self.beam.process(frame, t_first)
            self._charge("beamformer", c0)
            self._doa(out, stamp, t_ns)
            return
        truth = self.store["sources"].nearest(stamp, 0.5)
        if truth is None:
            self.skip("doa_no_source_truth")
            return
        self.frames.append((frame, t_first, stamp, t_ns, truth))
        if len(self.frames) >= int(self.s.beam_batch):
            self._beam_flush()

    def _beam_run(self, frames: list) -> list:
        c0 = time.thread_time()
        if int(self.s.beam_batch) <= 1:
            out = [self.beam.process(f[0], f[1]) for f in frames]
        else:
            out = self.beam.process_batch(np.stack([f[0] for f in frames]), np.array([f[1] for f in frames]))
        self._charge("beamformer", c0)
        return out

    def _beam_flush(self) -> None:
        """Start the queued frames' batch (in a worker when there are workers)."""
        if not self.frames:
            return
        frames, self.frames = self.frames, []
        if self.executor is None:
            self.beam_inflight.append((frames, self._beam_run(frames)))
        else:
            if len(self.beam_inflight) >= 2 * int(self.s.workers):
                self._beam_collect(wait=True, keep=2 * int(self.s.workers) - 1)
            self.beam_inflight.append((frames, self.executor.submit(self._beam_run, frames)))
        self._beam_collect(wait=False)

    def _beam_collect(self, wait: bool, keep: int = 0) -> None:
        """Score the finished beamformer batches, in order (with ``wait``: all but ``keep``)."""
        while len(self.beam_inflight) > keep:
            frames, res = self.beam_inflight[0]
            if not isinstance(res, list):
                if not wait and not res.done():
                    break
                res = res.result()
            self.beam_inflight.pop(0)
            for (_, _, stamp, t_ns, truth), out in zip(frames, res):
                self._doa(out, stamp, t_ns, truth)

    def _infer(self, w, audio: np.ndarray, averaged: int, array_height: float):
        c0 = time.thread_time()
        o = self.sonar.infer(audio, w.stamp, array_height, pings_averaged=averaged)
        self._charge("network", c0)
        return o, time.perf_counter()

    def _charge(self, stage: str, c0: float) -> None:
        """Add this thread's CPU time since ``c0`` (``time.thread_time``) to ``stage``."""
        dt = time.thread_time() - c0
        with self.cpu_lock:
            self.cpu[stage] += dt

    def _collect(self, wait: bool, keep: int = 0) -> None:
        """Move the windows whose outputs are ready (with ``wait``: all but ``keep``) to the scoring queue, in order."""
        while len(self.inflight) > keep:
            p = self.inflight[0]
            fut = p.pop("future", None)
            if fut is not None:
                if not wait and not fut.done():
                    p["future"] = fut
                    break
                p["o"], p["done"] = fut.result()
            self.inflight.pop(0)
            p["latency_ms"] = (p.pop("done") - p.pop("t0")) * 1e3
            self.pending.append(p)

    def _on_truth(self, kind: str, msg, t_ns: int) -> None:
        stamp = stamp_to_sec(msg.header.stamp)
        self._clock(stamp, t_ns)
        try:
            if kind == "depth":
                item = depth_to_metres(msg)
            elif kind == "semantic":
                item = image_to_array(msg).astype(np.uint8)
            elif kind == "occupancy":
                item = self._voxels(cloud_xyz(msg))
            else:
                item = pose_positions(msg)
        except (BagError, ValueError, KeyError):
            self.skip("decode_error")
            return
        self.store[kind].add(stamp, item)

    def _voxels(self, pts: np.ndarray) -> np.ndarray:
        b = self.bundle
        nx, ny, nz = b.voxel_resolution
        lo = b.voxel_center - b.voxel_extent / 2
        idx = np.floor((pts.astype(np.float64) - lo) / b.voxel_size).astype(np.int64)
        ok = np.all((idx >= 0) & (idx < np.array([nx, ny, nz])), axis=1)
        occ = np.zeros((nz, ny, nx), dtype=bool)
        occ[idx[ok, 2], idx[ok, 1], idx[ok, 0]] = True
        return occ

    # ------------------------------------------------------------------ scoring
    def _score_pending(self, final: bool) -> None:
        """Score the outputs whose truth has had time to arrive (a second of the bag's clock, or all)."""
        keep = []
        for p in self.pending:
            if final or (self.max_stamp is not None and p["w"].stamp < self.max_stamp - 1.0):
                self._score(p)
            else:
                keep.append(p)
        self.pending = keep
        if self.max_stamp is not None and not final:
            horizon = min([self.max_stamp - 3.0] + [p["w"].stamp - 1.0 for p in self.inflight[:1] + self.pending[:1]])
            for k, st in self.store.items():
                n = st.prune(horizon if k != "camera" else self.max_stamp - 2.0)
                if k not in ("sources", "camera"):
                    self.skip("truth_without_ping", n)

    def _score(self, p: dict) -> None:
        w, o = p["w"], p["o"]
        tol = self.s.match_samples / self.fs
        t = p["nominal"]
        depth = self.store["depth"].nearest(t, tol)
        sem = self.store["semantic"].nearest(t, tol)
        occ = self.store["occupancy"].nearest(t, tol)
        rec = {"ping": int(w.sequence), "stamp": float(w.stamp), "t": p["t"], "epoch": p["epoch"],
               "segment": p["segment"],
               "detected": bool(w.detected), "correction": int(w.correction), "pings_averaged": int(o.pings_averaged),
               "infer_ms": float(o.infer_ms),
               "latency_ms": float(p["latency_ms"]), "truth": None, "delta1": None, "abs_rel": None, "rmse": None,
               "class_acc": None, "voxel_iou": None, "ause": None, "ause_random": None, "_confusion": None,
               "_safety": None, "_bound_safety": None, "_kept": None}
        cam = None
        if depth is None and self.camera_topic is not None:
            cam = self._camera_depth(o, t)
        has_truth_topics = bool({"depth", "semantic", "occupancy"} & set(self.truth_topics.values()))
        if depth is None and sem is None and occ is None and cam is None:
            if has_truth_topics or self.camera_topic is not None:
                self.skip("ping_no_truth")
            self.pings.append(rec)
            return
        if depth is not None:
            d = depth_metrics(o.depth, depth)
            rec.update(truth="sim", delta1=d["delta1"], abs_rel=d["abs_rel"], rmse=d["rmse"])
            self._score_safety(rec, o.depth, depth, o.depth_uncertainty, sem)
        elif cam is not None:
            rec.update(truth="camera", delta1=cam["delta1"], abs_rel=cam["abs_rel"], rmse=cam["rmse"],
                       camera_pixels=cam["pixels"])
            self._score_safety(rec, cam["pred"], cam["truth"], cam["uncertainty"], None)
        else:
            self.skip("ping_no_depth_truth")
        if sem is not None:
            acc = class_accuracy(o.labels, sem)
            rec["class_acc"] = acc if np.isfinite(acc) else None
            rec["_confusion"] = confusion(o.labels, sem, len(self.bundle.classes))
            rec["truth"] = rec["truth"] or "sim"
        elif "semantic" in self.truth_topics.values():
            self.skip("ping_no_semantic_truth")
        if occ is not None:
            rec["voxel_iou"] = voxel_iou(o.occupancy, occ)
            rec["truth"] = rec["truth"] or "sim"
        elif "occupancy" in self.truth_topics.values():
            self.skip("ping_no_occupancy_truth")
        for k in ("delta1", "abs_rel", "rmse", "ause", "ause_random"):
            if rec[k] is not None and not np.isfinite(rec[k]):
                rec[k] = None
        self.pings.append(rec)
        if (len(self.pings) - 1) % self.stride == 0 and len(self.samples) < self.s.sample_pings:
            self.samples.append({"ping": rec["ping"], "t": rec["t"], "depth": o.depth, "labels": o.labels,
                                 "true_depth": depth if depth is not None else (cam["truth"] if cam else None),
                                 "pred_camera": cam["pred"] if cam else None, "true_labels": sem,
                                 "delta1": rec["delta1"]})

    def _score_safety(self, rec: dict, pred: np.ndarray, truth: np.ndarray, uncertainty, labels) -> None:
        """The ping's safety pixel counts (pooled by :func:`summarize`) and, when the model gives a depth
        uncertainty, its AUSE for AbsRel against the truth, a random order's, and the safety counts of the near
        bound the node publishes (``sonar.near_bound_quantile``) and the pixel counts of its confident depth
        (``sonar.confident_max_rel_std``)."""
        from ..sonar.products import confident_depth, depth_near_bound

        labels = labels if self.obstacle >= 0 else None
        rec["_safety"] = safety_counts(pred, truth, labels, obstacle=self.obstacle)
        if uncertainty is not None:
            sp = sparsification(pred, truth, uncertainty)
            rec.update(ause=sp["ause"], ause_random=sp["ause_random"])
            q = self.sonar_cfg.near_bound_quantile
            if q > 0:
                rec["_bound_safety"] = safety_counts(depth_near_bound(pred, uncertainty, q), truth, labels,
                                                     obstacle=self.obstacle)
            r = self.sonar_cfg.confident_max_rel_std
            if r > 0:
                rec["_kept"] = kept_counts(confident_depth(pred, uncertainty, r), truth)

    def _camera_depth(self, o, t: float):
        """Scores of the panorama reprojected into the camera frame nearest in time, where the camera sees."""
        from ..sonar.products import PinholeReprojection

        frame = self.store["camera"].nearest(t, self.s.camera_tolerance_s)
        if frame is None:
            return None
        truth, cam_frame = frame
        info = self.camera_info
        if info is None:
            self.skip("camera_no_info")
            return None
        K = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
        h, w = truth.shape
        looked = self.tf.lookup(self.array.frame_id, cam_frame or info.header.frame_id)
        if looked is not None:
            from ..dsp.grid import OPTICAL_TO_BODY

            rpy = _rpy_from_matrix(looked[0] @ OPTICAL_TO_BODY.T)
            note = f"camera rotation from TF {self.array.frame_id} -> {cam_frame} (rpy {np.round(rpy, 1).tolist()} deg; " \
                   "its offset from the array is not corrected)"
        else:
            rpy = (0.0, 0.0, 0.0)
            note = (f"no TF between {self.array.frame_id} and {cam_frame or info.header.frame_id}: the camera was "
                    "assumed to look along the array's +x")
        if note not in self.notes:
            self.notes.append(note)
        key = (w, h, K[0, 0], K[1, 1], K[0, 2], K[1, 2], tuple(np.round(rpy, 3)))
        if key not in self.reproj:
            self.reproj[key] = PinholeReprojection(self.bundle.pano_shape, w, h, K[0, 0], K[1, 1], K[0, 2], K[1, 2],
                                                   rpy, self.bundle.el_min_deg, self.bundle.el_max_deg)
        pred = self.reproj[key](o.depth)
        d = depth_metrics(pred, truth)
        unc = None if o.depth_uncertainty is None else self.reproj[key](o.depth_uncertainty)
        return {**d, "pixels": int(np.isfinite(truth).sum()), "pred": pred, "truth": truth, "uncertainty": unc}

    def _doa(self, out, stamp: float, t_ns: int, truth=None) -> None:
        """Score one frame's directions against the source truth (looked up now when not given)."""
        if truth is None:
            truth = self.store["sources"].nearest(stamp, 0.5)
        if truth is None:
            self.skip("doa_no_source_truth")
            return
        self.frames_run += 1
        tv = truth / np.maximum(np.linalg.norm(truth, axis=1, keepdims=True), 1e-9)
        if not len(tv):
            return
        est = np.array([s.vector for s in out.sources], dtype=np.float64).reshape(-1, 3)
        errs = _angle_deg(tv, est).min(axis=1) if len(est) else np.full(len(tv), 180.0)
        self.doa.append({"t": self._t(t_ns), "stamp": stamp, "errors": errs.tolist(), "found": len(est)})

    # ------------------------------------------------------------------ result
    def result(self) -> dict:
        nc = len(self.bundle.classes)
        doa_all = [e for d in self.doa for e in d["errors"]]
        overall = summarize(self.pings, nc, doa_all if self.doa or self.beam is not None else None)
        segments = []
        for info in self.segment_info:
            sid = info["segment"]
            ps = [p for p in self.pings if p["segment"] == sid]
            t_end = max((p["t"] for p in ps), default=info["t_start"])
            segments.append({**info, "t_end": t_end, **summarize(ps, nc)})
        st = self.sonar.aligner.stats()
        stream = {k: st[k] for k in ("aligned", "detected", "gaps", "overlaps", "clock_resets", "lost_messages")}
        stream["nonfinite_chunks"] = self.ingest.nonfinite_chunks if self.ingest is not None else 0
        real = self.audio_seconds / self.wall_s if self.wall_s > 0 else None
        pings = [{k: v for k, v in p.items() if not k.startswith("_")} for p in self.pings]
        if self.height_missing:
            self.notes.append(f"floor_frame {self.s.floor_frame}: no usable transform to {self.array.frame_id} for "
                              f"{self.height_missing} window(s); they were given the last height read, or "
                              f"{self.s.array_height_m:g} m (0: unknown) before the first")
        if self.pose_missing:
            self.notes.append(f"still_frame {self.s.still_frame}: no transform to {self.array.frame_id} for "
                              f"{self.pose_missing} window(s); they were heard alone")
        return {
            "bag": str(self.bag), "model": str(self.bundle.path), "backend": self.sonar.stats()["backend"],
            "classes": self.bundle.classes,
            "topics": {"audio": self.audio_topic, "audio_type": self.audio_type, "pings": self.ping_topic,
                       "truth": self.truth_topics, "camera_depth": self.camera_topic,
                       "camera_info": self.camera_info_topic, "tf": self.tf_topics},
            "settings": {"threads": self.s.threads, "workers": self.s.workers, "beam_batch": self.s.beam_batch,
                         "beamformer_every": self.s.beamformer_every,
                         "segment_s": self.s.segment_s, "match_samples": self.s.match_samples,
                         "realtime": self.s.realtime, "array_height_m": self.s.array_height_m,
                         "floor_frame": self.s.floor_frame, "average_pings": self.s.average_pings,
                         "still_frame": self.s.still_frame},
            "overall": overall, "segments": segments, "pings": pings, "skipped": dict(sorted(self.skipped.items())),
            "unknown_topics": dict(sorted(self.unknown_topics.items())), "events": self.events, "stream": stream,
            "notes": self.notes, "doa_frames": self.frames_run, "beamformer_frames": self.frame_count,
            "speed": {"audio_s": self.audio_seconds, "wall_s": self.wall_s, "x_real_time": real,
                      "cpu_s": dict(self.cpu)},
        }


def replay_eval(bag: str | Path, out: str | Path | None = None, settings: ReplaySettings | None = None,
                progress: bool | None = None, log=None, **kw) -> dict:
    """Replay ``bag`` through the node's code, score every ping, and write the report to ``out`` (when given).

    ``settings`` (or keyword arguments of :class:`ReplaySettings`) pick the model, topics and speed options.
    Returns the metrics (what ``metrics.json`` holds); the pictures' arrays are under the key ``_samples`` and the
    per-frame DOA errors under ``_doa``.
    """
    s = settings or ReplaySettings(**kw)
    r = _Replay(Path(bag), s, log)
    m = r.run(progress)
    m["_samples"], m["_doa"] = r.samples, r.doa
    if out is not None:
        from .report import write_report

        write_report(m, out)
    return m


def jsonable(m: dict) -> dict:
    """The metrics without the private arrays, ready for ``json.dumps``."""
    return {k: v for k, v in m.items() if not k.startswith("_")}


def dumps(m: dict) -> str:
    def fix(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): fix(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [fix(x) for x in v]
        if isinstance(v, np.generic):
            return fix(v.item())
        return v

    return json.dumps(fix(jsonable(m)), indent=1)
