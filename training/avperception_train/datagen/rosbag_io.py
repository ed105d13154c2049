"""rosbag2 both ways, with the pure-Python ``rosbags`` library (no ROS install needed).

Export: dataset scenes -> a bag a robot stack can replay::

    /audio                             avperception_msgs/msg/AudioFrame  (chunks, stamp = first sample)
    /avperception/gt/depth             sensor_msgs/msg/Image 32FC1 range panorama, metres, NaN unknown
    /avperception/gt/semantic          sensor_msgs/msg/Image mono8 labels
    /avperception/gt/energy            sensor_msgs/msg/Image 32FC1 energy target
    /avperception/gt/voxels            sensor_msgs/msg/PointCloud2 occupied voxel centres (x, y, z float32)
    /avperception/gt/sources           visualization_msgs/msg/MarkerArray spheres + labels at the sources
    /tf                                tf2_msgs/msg/TFMessage world -> array frame (the robot pose)
    /camera/depth/image_raw, /camera/depth/camera_info   the pinhole view (when the dataset has one)

Every scene starts at ``start + k * period`` (the stamp of audio sample 0 and
of its ground truth). Import: a recording with an audio topic and an RGB-D
camera's depth image + camera info -> shards in the dataset format, so real
data can feed distillation (see :func:`import_bag`).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avperception.config import DEFAULT_ARRAY
from avperception.eval.bagio import (AUDIO_DECODERS as _AUDIO_DECODERS, BagError,  # noqa: F401 (re-exported)
                                     depth_to_metres, make_msg, matrix_quat, msg_text,
                                     storage_plugin as _storage)

from .shards import MANIFEST, SceneDataset

AUDIO_FRAME = "avperception_msgs/msg/AudioFrame"
TOPICS = {
    "audio": "/audio",
    "depth": "/avperception/gt/depth",
    "semantic": "/avperception/gt/semantic",
    "energy": "/avperception/gt/energy",
    "voxels": "/avperception/gt/voxels",
    "sources": "/avperception/gt/sources",
    "tf": "/tf",
    "tf_static": "/tf_static",
    "camera_depth": "/camera/depth/image_raw",
    "camera_info": "/camera/depth/camera_info",
}


# --------------------------------------------------------------------------- types


def audio_frame_msg_text() -> str:
    """The text of ``AudioFrame.msg``, from the source tree or an installed ``avperception_msgs``."""
    return msg_text("AudioFrame")


def typestore():
    """A ROS 2 typestore with the ``avperception_msgs`` types (AudioFrame, Ping) registered from their .msg files."""
    from avperception.eval.bagio import typestore as _typestore

    return _typestore()


def _stamp(ts, t: float):
    sec = math.floor(t)
    return make_msg(ts, "builtin_interfaces/msg/Time", sec=int(sec),
                    nanosec=min(int(round((t - sec) * 1e9)), 999_999_999))


def _header(ts, t: float, frame_id: str):
    return make_msg(ts, "std_msgs/msg/Header", stamp=_stamp(ts, t), frame_id=frame_id)


def _image(ts, a: np.ndarray, t: float, frame_id: str):
    a = np.ascontiguousarray(a)
    if a.dtype == np.float32:
        enc, step = "32FC1", a.shape[1] * 4
    elif a.dtype == np.uint8:
        enc, step = "mono8", a.shape[1]
    else:
        raise BagError(f"no image encoding for {a.dtype}")
    return make_msg(ts, "sensor_msgs/msg/Image", header=_header(ts, t, frame_id), height=a.shape[0],
                    width=a.shape[1], encoding=enc, is_bigendian=0, step=step,
                    data=np.frombuffer(a.astype(a.dtype.newbyteorder("<")).tobytes(), dtype=np.uint8))


def _quat_yaw(ts, yaw: float):
    return make_msg(ts, "geometry_msgs/msg/Quaternion", x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2))


def _quat_matrix(ts, R: np.ndarray):
    x, y, z, w = matrix_quat(R)
    return make_msg(ts, "geometry_msgs/msg/Quaternion", x=x, y=y, z=z, w=w)


# --------------------------------------------------------------------------- export


def export_bag(root: str | Path, bag: str | Path, scenes: list[int] | None = None, storage: str = "sqlite3",
               chunk_samples: int = 512, encoding: str = "F32LE", period_s: float = 1.0, start_s: float = 1.0e9,
               world_frame: str = "map", camera_delay_s: float = 0.0) -> dict:
    """Write dataset scenes (positions in the dataset, default all) to a new rosbag2 directory ``bag``.

    ``encoding``: audio PCM encoding (``F32LE`` is lossless, ``S16LE`` is what most drivers send).
    ``camera_delay_s`` stamps the pinhole camera messages that much after the scene start, like a
    camera whose frames are not synchronised with the sweep.
    Returns a summary: topics and message counts.
    """
    from rosbags.rosbag2 import Writer

    from avperception.audio.pcm import encode_interleaved
    from avperception.config import ArrayGeometry

    ds = SceneDataset(root)
    bag = Path(bag)
    if bag.exists():
        raise BagError(f"{bag} exists; rosbag2 writes a new directory")
    if period_s * 1.0 <= 0:
        raise BagError("period_s must be positive")
    picks = list(range(len(ds))) if scenes is None else list(scenes)
    if not picks:
        raise BagError("no scenes to export")
    ts = typestore()
    array = ArrayGeometry.from_dict(ds.manifest["array"])
    frame = array.frame_id
    counts: dict[str, int] = {}
    seq = 0
    with Writer(bag, version=9, storage_plugin=_storage(storage)) as w:
        conns = {}

        def conn(key: str, msgtype: str):
            if key not in conns:
                conns[key] = w.add_connection(TOPICS[key], msgtype, typestore=ts)
            return conns[key]

        def put(key: str, msgtype: str, msg, t: float):
            w.write(conn(key, msgtype), int(round(t * 1e9)), ts.serialize_cdr(msg, msgtype))
            counts[TOPICS[key]] = counts.get(TOPICS[key], 0) + 1

        for k, pos in enumerate(picks):
            if not 0 <= pos < len(ds):
                raise BagError(f"scene position {pos} out of range (0..{len(ds) - 1})")
            s = ds[pos]
            t0 = start_s + k * period_s
            fs = int(s["sample_rate"])
            if s["audio"].shape[1] / fs > period_s:
                raise BagError(f"period_s {period_s} is shorter than a scene's audio ({s['audio'].shape[1] / fs} s)")
            dev = array.to_device_layout(np.asarray(s["audio"], dtype=np.float32))
            if k == 0 and "pinhole_depth" in s:
                g = ds.manifest["grids"]["pinhole"]
                R = _camera_rotation(g["rpy_deg"])
                tf = make_msg(ts, "geometry_msgs/msg/TransformStamped",
                              header=_header(ts, t0, frame), child_frame_id="camera_depth_optical_frame",
                              transform=make_msg(ts, "geometry_msgs/msg/Transform",
                                                 translation=make_msg(ts, "geometry_msgs/msg/Vector3"),
                                                 rotation=_quat_matrix(ts, R)))
                put("tf_static", "tf2_msgs/msg/TFMessage", make_msg(ts, "tf2_msgs/msg/TFMessage", transforms=[tf]), t0)
            for c in range(0, dev.shape[1], chunk_samples):
                block = dev[:, c: c + chunk_samples]
                t = t0 + c / fs
                msg = make_msg(ts, AUDIO_FRAME, header=_header(ts, t, frame), sample_rate=fs,
                               channels=int(block.shape[0]), encoding=encoding, sequence=seq,
                               data=np.frombuffer(encode_interleaved(block, encoding), dtype=np.uint8))
                put("audio", AUDIO_FRAME, msg, t)
                seq += 1
            put("depth", "sensor_msgs/msg/Image", _image(ts, s["depth"], t0, frame), t0)
            put("semantic", "sensor_msgs/msg/Image", _image(ts, s["semantic"], t0, frame), t0)
            put("energy", "sensor_msgs/msg/Image", _image(ts, s["energy"], t0, frame), t0)
            put("voxels", "sensor_msgs/msg/PointCloud2", _voxel_cloud(ts, s, t0, frame), t0)
            put("sources", "visualization_msgs/msg/MarkerArray", _source_markers(ts, s, t0, frame), t0)
            pose = s["robot_pose"]
            if np.all(np.isfinite(pose)):
                tf = make_msg(ts, "geometry_msgs/msg/TransformStamped", header=_header(ts, t0, world_frame),
                              child_frame_id=frame,
                              transform=make_msg(ts, "geometry_msgs/msg/Transform",
                                                 translation=make_msg(ts, "geometry_msgs/msg/Vector3",
                                                                      x=float(pose[0]), y=float(pose[1]),
                                                                      z=float(pose[2])),
                                                 rotation=_quat_yaw(ts, float(pose[3]))))
                put("tf", "tf2_msgs/msg/TFMessage", make_msg(ts, "tf2_msgs/msg/TFMessage", transforms=[tf]), t0)
            if "pinhole_depth" in s:
                g = ds.manifest["grids"]["pinhole"]
                h, wd = g["shape"]
                tc = t0 + camera_delay_s
                put("camera_depth", "sensor_msgs/msg/Image",
                    _image(ts, s["pinhole_depth"], tc, "camera_depth_optical_frame"), tc)
                K = np.array([g["fx"], 0, g["cx"], 0, g["fy"], g["cy"], 0, 0, 1], dtype=np.float64)
                P = np.array([g["fx"], 0, g["cx"], 0, 0, g["fy"], g["cy"], 0, 0, 0, 1, 0], dtype=np.float64)
                info = make_msg(ts, "sensor_msgs/msg/CameraInfo",
                                header=_header(ts, tc, "camera_depth_optical_frame"), height=h, width=wd,
                                distortion_model="plumb_bob", d=np.zeros(5), k=K, r=np.eye(3).ravel(), p=P)
                put("camera_info", "sensor_msgs/msg/CameraInfo", info, tc)
    return {"bag": str(bag), "scenes": len(picks), "storage": storage, "messages": counts}


def _camera_rotation(rpy_deg) -> np.ndarray:
    """Camera optical frame -> array frame, as :func:`avperception.dsp.grid.pinhole` defines it."""
    from avperception.dsp.grid import OPTICAL_TO_BODY, rpy_matrix

    return rpy_matrix(*rpy_deg) @ OPTICAL_TO_BODY


def _voxel_cloud(ts, s: dict, t: float, frame: str):
    vox = s["voxels"] & s["voxel_known"]
    zi, yi, xi = np.nonzero(vox)
    o, size = s["voxel_origin"], s["voxel_size"]
    pts = np.c_[o[0] + (xi + 0.5) * size[0], o[1] + (yi + 0.5) * size[1], o[2] + (zi + 0.5) * size[2]]
    pts = pts.astype("<f4")
    fields = [make_msg(ts, "sensor_msgs/msg/PointField", name=n, offset=4 * i, datatype=7, count=1)
              for i, n in enumerate("xyz")]
    return make_msg(ts, "sensor_msgs/msg/PointCloud2", header=_header(ts, t, frame), height=1, width=len(pts),
                    fields=fields, is_bigendian=False, point_step=12, row_step=12 * len(pts),
                    data=np.frombuffer(pts.tobytes(), dtype=np.uint8), is_dense=True)


def _source_markers(ts, s: dict, t: float, frame: str):
    markers = [make_msg(ts, "visualization_msgs/msg/Marker", header=_header(ts, t, frame), ns="sources",
                        id=0, action=3)]  # DELETEALL first: sources change from scene to scene
    names = ("noise", "babble", "harmonic", "chirps")
    for k in range(int(s["num_sources"])):
        p = s["source_dirs"][k] * s["source_distance"][k]
        pose = make_msg(ts, "geometry_msgs/msg/Pose",
                        position=make_msg(ts, "geometry_msgs/msg/Point", x=float(p[0]), y=float(p[1]), z=float(p[2])),
                        orientation=make_msg(ts, "geometry_msgs/msg/Quaternion", w=1.0))
        color = make_msg(ts, "std_msgs/msg/ColorRGBA", r=1.0, g=0.2, b=0.1, a=0.9)
        markers.append(make_msg(ts, "visualization_msgs/msg/Marker", header=_header(ts, t, frame), ns="sources",
                                id=2 * k + 1, type=2, action=0, pose=pose, color=color,
                                scale=make_msg(ts, "geometry_msgs/msg/Vector3", x=0.2, y=0.2, z=0.2)))
        kind = int(s["source_kind"][k])
        pose_t = make_msg(ts, "geometry_msgs/msg/Pose",
                          position=make_msg(ts, "geometry_msgs/msg/Point", x=float(p[0]), y=float(p[1]),
                                            z=float(p[2]) + 0.25),
                          orientation=make_msg(ts, "geometry_msgs/msg/Quaternion", w=1.0))
        markers.append(make_msg(ts, "visualization_msgs/msg/Marker", header=_header(ts, t, frame), ns="sources",
                                id=2 * k + 2, type=9, action=0, pose=pose_t, color=color,
                                scale=make_msg(ts, "geometry_msgs/msg/Vector3", z=0.15),
                                text=f"s{k} {names[kind] if 0 <= kind < 4 else '?'}"))
    return make_msg(ts, "visualization_msgs/msg/MarkerArray", markers=markers)


# --------------------------------------------------------------------------- import


@dataclass
class AudioTimeline:
    """Audio chunks placed on a continuous sample axis by their stamps.

    Chunks are laid end to end; a stamp jump larger than ``gap_tolerance``
    chunk durations inserts zeros (and is counted in ``gaps``). ``time_of``
    and ``sample_at`` map between seconds and samples by interpolating the
    chunk stamps, which absorbs stamp jitter.
    """

    sample_rate: int
    gap_tolerance: float = 0.5
    chunks: list[np.ndarray] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    stamps: list[float] = field(default_factory=list)
    gaps: int = 0
    _n: int = 0

    def add(self, x: np.ndarray, stamp: float) -> None:
        if self.stamps:
            expected = self.stamps[-1] + (self._n - self.starts[-1]) / self.sample_rate
            jump = stamp - expected
            if jump > self.gap_tolerance * max(x.shape[1], 1) / self.sample_rate:
                pad = int(round(jump * self.sample_rate))
                self.chunks.append(np.zeros((x.shape[0], pad), dtype=np.float32))
                self._n += pad
                self.gaps += 1
        self.starts.append(self._n)
        self.stamps.append(float(stamp))
        self.chunks.append(np.asarray(x, dtype=np.float32))
        self._n += x.shape[1]

    def finish(self) -> np.ndarray:
        self.data = np.concatenate(self.chunks, axis=1) if self.chunks else np.zeros((0, 0), np.float32)
        self._st = np.asarray(self.stamps)
        self._sa = np.asarray(self.starts, dtype=np.float64)
        return self.data

    def sample_at(self, t: float) -> float:
        """Sample position (fractional) of time ``t``."""
        st, sa = self._st, self._sa
        i = int(np.clip(bisect.bisect_right(st.tolist(), t) - 1, 0, len(st) - 1))
        return float(sa[i] + (t - st[i]) * self.sample_rate)


def _camera_points(depth: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Back-project a depth image (z-depth, metres, NaN invalid) to ``(n, 3)`` points in the array frame."""
    h, w = depth.shape
    v, u = np.nonzero(np.isfinite(depth))
    z = depth[v, u].astype(np.float64)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    p = np.c_[(u - cx) * z / fx, (v - cy) * z / fy, z]
    return p @ R.T + t


def _sample_depth(depth: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Depth at fractional pixels: bilinear in inverse depth (exact on planes), nearest across depth edges.

    NaN outside the hull of the pixel centres (no extrapolation).
    """
    h, w = depth.shape
    out = np.full(u.shape, np.nan)
    inside = (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    uu, vv = np.clip(u[inside], 0, w - 1), np.clip(v[inside], 0, h - 1)
    u0, v0 = np.minimum(np.floor(uu).astype(np.int64), w - 2 if w > 1 else 0), \
        np.minimum(np.floor(vv).astype(np.int64), h - 2 if h > 1 else 0)
    u1, v1 = np.minimum(u0 + 1, w - 1), np.minimum(v0 + 1, h - 1)
    fu, fv = uu - u0, vv - v0
    q = np.stack([depth[v0, u0], depth[v0, u1], depth[v1, u0], depth[v1, u1]])
    wts = np.stack([(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv])
    with np.errstate(invalid="ignore", divide="ignore"):
        smooth = np.all(np.isfinite(q), axis=0) & (np.nanmax(q, axis=0) <= 1.25 * np.nanmin(q, axis=0))
        bil = 1.0 / np.sum(wts / q, axis=0)
    near = depth[np.clip(np.round(vv).astype(np.int64), 0, h - 1), np.clip(np.round(uu).astype(np.int64), 0, w - 1)]
    out[inside] = np.where(smooth, bil, near)
    return out


def depth_to_panorama(depth: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray, grid,
                      iterations: int = 3) -> np.ndarray:
    """Range panorama ``(H, W)`` (array origin) from a camera's z-depth image; NaN outside its view.

    Each panorama ray is projected into the camera and the depth there is
    turned back into a point; a few fixed-point steps along the panorama ray
    absorb the parallax of a camera that is not at the array origin.
    """
    d = grid.vectors  # (G, 3) array frame
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    r = np.full(len(d), 3.0)  # initial guess of the range, metres
    pt = np.full((len(d), 3), np.nan)
    for _ in range(max(1, iterations)):
        c = (r[:, None] * d - t) @ R  # the guessed point in the camera optical frame
        front = c[:, 2] > 1e-6
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(front, fx * c[:, 0] / c[:, 2] + cx, -1e9)
            v = np.where(front, fy * c[:, 1] / c[:, 2] + cy, -1e9)
        z = _sample_depth(depth, u, v)
        with np.errstate(invalid="ignore"):
            ray = np.c_[(u - cx) / fx, (v - cy) / fy, np.ones(len(u))]
            pt = (ray * z[:, None]) @ R.T + t
            r_new = np.linalg.norm(pt, axis=1)
        r = np.where(np.isfinite(r_new), r_new, r)
        valid = np.isfinite(r_new)
    out = np.where(valid, r, np.nan).astype(np.float32)
    return out.reshape(grid.shape)


def voxels_from_points(points: np.ndarray, depth: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray,
                       center, extent, resolution) -> tuple[np.ndarray, np.ndarray]:
    """Occupancy ``(D, H, W)`` and known mask from a depth camera's points (crop in the array frame).

    Occupied: a surface point falls in the voxel. Known: occupied, or the voxel
    centre is seen by the camera in front of the measured surface (free space).
    Everything behind surfaces or outside the view stays unknown.
    """
    from .geometry import voxel_grid

    centres, lo, size = voxel_grid(center, extent, resolution)
    n = np.asarray(resolution)
    occ = np.zeros(centres.shape[:3], dtype=bool)
    if len(points):
        idx = np.floor((points - lo) / size).astype(np.int64)
        ok = np.all((idx >= 0) & (idx < n), axis=1)
        idx = idx[ok]
        occ[idx[:, 2], idx[:, 1], idx[:, 0]] = True
    c = (centres.reshape(-1, 3) - t) @ R  # array frame -> camera optical frame
    z = c[:, 2]
    hgt, wid = depth.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.round(K[0, 0] * c[:, 0] / z + K[0, 2]).astype(np.int64)
        v = np.round(K[1, 1] * c[:, 1] / z + K[1, 2]).astype(np.int64)
    vis = (z > 1e-6) & (u >= 0) & (u < wid) & (v >= 0) & (v < hgt)
    d = np.full(len(z), np.nan)
    d[vis] = depth[v[vis], u[vis]]
    free = vis & np.isfinite(d) & (z < d - 0.5 * float(np.max(size)))
    known = free.reshape(occ.shape) | occ
    return occ, known


def import_bag(bag: str | Path, out: str | Path, *, array: str | Path = DEFAULT_ARRAY,
               config: str | Path | None = None, audio_topic: str = "/audio",
               depth_topic: str = "/camera/depth/image_raw", info_topic: str = "/camera/depth/camera_info",
               camera_xyz: tuple[float, float, float] = (0.0, 0.0, 0.0),
               camera_rpy_deg: tuple[float, float, float] = (0.0, 0.0, 0.0), align: str = "start",
               min_interval_s: float = 0.0, split: str = "train", room_id: int = 0, active: bool | None = None,
               scenes_per_shard: int | None = None, overwrite: bool = False, show_progress: bool = True) -> dict:
    """Turn a real recording into shards in the dataset format.

    For each depth image (at least ``min_interval_s`` apart) the audio window of
    ``audio.num_samples`` is cut at the image time (``align``: ``start`` = the
    window starts at the image stamp, ``center``, ``end``, or ``chirp`` = it
    starts at the emission of the robot's sweep nearest to the image time,
    found by matched filtering). The depth image is projected into the
    equirectangular range panorama (NaN outside the camera's view) and into the
    occupancy crop (with a known-voxel mask); there are no semantic or energy
    labels (``has_semantic``/``has_energy`` false). ``active`` says whether the
    robot's sweep is in the audio (default: only with ``align="chirp"``). The camera pose in the
    array frame is ``camera_xyz`` and ``camera_rpy_deg`` (roll, pitch, yaw of
    the camera body, x forward, as in :func:`avperception.dsp.grid.pinhole`).

    Returns the manifest.
    """
    from rosbags.highlevel import AnyReader

    from avperception.audio import pcm
    from avperception.config import ConfigError, load_array

    from .acoustics import echo_profile
    from .config import DatagenConfigError, load_config
    from .engine import _check_resume, pad_sizes
    from .progress import progress
    from .scene import grids
    from .engine import build_manifest, dataset_constants
    from .shards import (SHARD_GLOB, SPLITS, sha256_file, shard_name, shard_ranges, stack_scenes,
                         write_json, write_npz)

    if align not in ("start", "center", "end", "chirp"):
        raise BagError(f"align must be start, center, end or chirp, got {align!r}")
    if split not in SPLITS:
        raise BagError(f"split must be one of {SPLITS}, got {split!r}")
    cfg = load_config(config, {"array": str(array)} if array is not None else None)
    try:
        geom = load_array(cfg.array)
    except ConfigError as e:
        raise DatagenConfigError(f"array: {e}") from None
    bag = Path(bag)
    if not bag.exists():
        raise BagError(f"bag not found: {bag}")
    if (Path(out) / MANIFEST).exists() and not overwrite:
        raise BagError(f"{out} already holds a dataset; pick another --out or pass --overwrite")
    fs = cfg.audio.sample_rate
    n = cfg.audio.num_samples
    ts = typestore()
    R = _camera_rotation(camera_rpy_deg)
    tcam = np.asarray(camera_xyz, dtype=np.float64)
    pano, egrid, _ = grids(cfg)

    timeline: AudioTimeline | None = None
    src_rate = None
    depth_msgs: list[tuple[float, np.ndarray]] = []
    infos: list[tuple[float, np.ndarray, tuple[int, int]]] = []
    with AnyReader([bag], default_typestore=ts) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        for need in (audio_topic, depth_topic, info_topic):
            if need not in topics:
                raise BagError(f"{bag}: no topic {need!r}; topics: {sorted(topics)}")
        mtype = topics[audio_topic]
        if mtype not in _AUDIO_DECODERS:
            raise BagError(f"{audio_topic} has type {mtype}; supported audio types: {sorted(_AUDIO_DECODERS)}")
        decode = getattr(pcm, _AUDIO_DECODERS[mtype])
        conns = [c for c in reader.connections if c.topic in (audio_topic, depth_topic, info_topic)]
        for c, t_ns, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, c.msgtype)
            if c.topic == audio_topic:
                chunk = decode(msg)
                stamp = chunk.stamp if chunk.stamp else t_ns * 1e-9
                if timeline is None:
                    src_rate = chunk.sample_rate
                    timeline = AudioTimeline(src_rate)
                elif chunk.sample_rate != src_rate:
                    raise BagError(f"{audio_topic}: sample rate changes from {src_rate} to {chunk.sample_rate}")
                try:
                    x = geom.select_channels(chunk.data)
                except ConfigError as e:
                    raise BagError(f"{audio_topic}: {e}") from None
                timeline.add(x, stamp)
            elif c.topic == depth_topic:
                depth_msgs.append((pcm.stamp_to_sec(msg.header.stamp), depth_to_metres(msg)))
            else:
                K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
                infos.append((pcm.stamp_to_sec(msg.header.stamp), K, (int(msg.height), int(msg.width))))
    if timeline is None or not depth_msgs or not infos:
        raise BagError(f"{bag}: need audio, depth images and camera info; got {0 if timeline is None else len(timeline.stamps)} "
                       f"audio, {len(depth_msgs)} depth, {len(infos)} camera-info messages")
    audio = timeline.finish()
    if src_rate != fs:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(src_rate), int(fs))
        audio = resample_poly(audio, fs // g, src_rate // g, axis=1).astype(np.float32)
    ratio = fs / src_rate

    consts = dataset_constants(cfg, geom)
    emitted = consts["emitted"]
    direct = float(np.mean(np.linalg.norm(geom.positions - np.asarray(cfg.active.speaker_position), axis=1)))
    direct_lag = direct / cfg.acoustics.speed_of_sound * fs
    info_t = [i[0] for i in infos]

    scenes = []
    skipped = {"no_audio": 0, "no_chirp": 0, "interval": 0, "size": 0}
    last_t = -np.inf
    bar = progress(total=len(depth_msgs), desc="import", unit="frame", disable=not show_progress)
    for t_img, depth in depth_msgs:
        bar.update(1)
        if t_img - last_t < min_interval_s:
            skipped["interval"] += 1
            continue
        pos = timeline.sample_at(t_img) * ratio
        if align == "start":
            s0 = pos
        elif align == "center":
            s0 = pos - n / 2
        elif align == "end":
            s0 = pos - n
        else:
            lo = int(max(0, pos - n))
            seg = audio[:, lo: int(pos + n)]
            if seg.shape[1] < len(emitted) * 2:
                skipped["no_chirp"] += 1
                continue
            prof = echo_profile(seg, emitted).mean(axis=0)
            peaks = np.nonzero((prof >= 0.5 * prof.max()) & (prof >= np.roll(prof, 1)) & (prof >= np.roll(prof, -1)))[0]
            if not len(peaks):
                skipped["no_chirp"] += 1
                continue
            # the direct path is the first strong arrival of each emission
            onset = lo + peaks[np.argmin(np.abs(lo + peaks - pos))]
            s0 = onset - direct_lag
        s0 = int(round(s0))
        if s0 < 0 or s0 + n > audio.shape[1]:
            skipped["no_audio"] += 1
            continue
        j = int(np.clip(bisect.bisect_right(info_t, t_img) - 1, 0, len(infos) - 1))
        _, K, (ih, iw) = infos[j]
        if depth.shape != (ih, iw):
            skipped["size"] += 1
            continue
        last_t = t_img
        pts = _camera_points(depth, K, R, tcam)
        dpano = depth_to_panorama(depth, K, R, tcam, pano)
        occ, known = voxels_from_points(pts, depth, K, R, tcam, cfg.voxels.center_m, cfg.voxels.extent_m,
                                        cfg.voxels.resolution)
        scenes.append({
            "scene_index": np.int64(len(scenes)), "room_id": np.int64(room_id), "split": np.uint8(SPLITS.index(split)),
            "active": np.bool_(align == "chirp" if active is None else active),
            "audio": audio[:, s0: s0 + n].astype(np.float32) if cfg.audio.dtype == "float32"
            else np.clip(np.round(audio[:, s0: s0 + n] * 32767), -32768, 32767).astype(np.int16),
            "robot_pose": np.full(4, np.nan), "gain_db": np.float32(0), "noise_db": np.float32(np.nan),
            "depth": dpano, "semantic": np.full(pano.shape, 255, dtype=np.uint8),
            "energy": np.zeros(egrid.shape, dtype=np.float32),
            "voxels": np.packbits(occ.ravel()), "voxel_known": np.packbits(known.ravel()),
            "num_sources": np.int64(0), "source_dirs": np.zeros((0, 3)), "source_azel_deg": np.zeros((0, 2)),
            "source_distance": np.zeros(0), "source_positions": np.zeros((0, 3)), "source_level_db": np.zeros(0),
            "source_kind": np.zeros(0, dtype=np.int8), "room_shape": np.int8(-1), "room_height": np.float32(np.nan),
            "floor_polygon": np.zeros((0, 2)), "boxes": np.zeros((0, 6)), "floor_material": np.int16(-1),
            "ceiling_material": np.int16(-1), "wall_materials": np.zeros(0, dtype=np.int16),
            "box_materials": np.zeros(0, dtype=np.int16), "stamp": np.float64(t_img),
            "has_depth": np.bool_(True), "has_semantic": np.bool_(False), "has_voxels": np.bool_(True),
            "has_energy": np.bool_(False),
        })
    bar.close()
    if not scenes:
        raise BagError(f"{bag}: no depth frame had a full audio window (skipped: {skipped})")

    out = Path(out)
    if (out / MANIFEST).exists() and not overwrite:
        raise BagError(f"{out} already holds a dataset; pick another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    manifest = build_manifest(cfg, geom, len(scenes))
    manifest.update({"source": "rosbag", "num_scenes": len(scenes),
                     "import": {"bag": str(bag), "audio_topic": audio_topic, "audio_type": mtype,
                                "depth_topic": depth_topic, "info_topic": info_topic,
                                "camera_xyz": list(camera_xyz), "camera_rpy_deg": list(camera_rpy_deg),
                                "align": align, "min_interval_s": min_interval_s, "audio_gaps": timeline.gaps,
                                "source_sample_rate": int(src_rate), "skipped": skipped},
                     "splits": {s: {"rooms": [room_id] if s == split else [], "scenes": len(scenes) if s == split else 0}
                                for s in SPLITS}})
    per = scenes_per_shard or cfg.scenes_per_shard
    manifest["scenes_per_shard"] = per
    _check_resume(out, manifest, overwrite)
    for p in out.glob(SHARD_GLOB):
        p.unlink()
    manifest["shards"] = []
    pads = pad_sizes(cfg)
    for a, b in shard_ranges(len(scenes), per):
        name = shard_name(a, b)
        write_npz(out / name, stack_scenes(scenes[a: b + 1], pads, consts))
        manifest["shards"].append({"file": name, "first": a, "last": b, "count": b - a + 1,
                                   "splits": {s: (b - a + 1 if s == split else 0) for s in SPLITS},
                                   "sha256": sha256_file(out / name)})
    manifest["complete"] = True
    write_json(out / MANIFEST, manifest)
    return manifest
