"""A recording of the simulated active room: a robot pinging as it drives through a data-engine room, as a rosbag2.

:func:`record_sim` writes what ``sim_audio_node`` (``mode: active``) publishes, with the same stamps a live run
would have, so that a bag replays through the node or ``avperception replay-eval`` exactly like the simulator::

    /audio                   avperception_msgs/msg/AudioFrame  chunks of ``chunk`` samples, stamp = first sample
    /sonar/pings             avperception_msgs/msg/Ping        stamp = the sweep's onset
    /tf                      tf2_msgs/msg/TFMessage            odom -> base_link -> mic_array, per ping
    /sim/depth               sensor_msgs/msg/Image 32FC1       per ping: the depth panorama (m, NaN no surface)
    /sim/semantic            sensor_msgs/msg/Image mono8       per ping: classes (255 none)
    /sim/occupancy           sensor_msgs/msg/PointCloud2       per ping: occupied voxel centres (array frame)
    /sim/true_source_poses   geometry_msgs/msg/PoseArray       per ping: the ambient sources (array frame, +x at them)

Truth and pings are stamped at their ping's onset. Each message is logged when a live subscriber would receive it:
an audio chunk when its last sample is captured, a ping and its truth with the chunk that holds the onset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avperception.eval.bagio import (AUDIO_FRAME, PING, BagError, header_msg, make_msg, matrix_quat,
                                     storage_plugin, typestore)

SIM_TOPICS = {
    "audio": "/audio",
    "pings": "/sonar/pings",
    "tf": "/tf",
    "depth": "/sim/depth",
    "semantic": "/sim/semantic",
    "occupancy": "/sim/occupancy",
    "sources": "/sim/true_source_poses",
}


def bundle_emitter(model: str = "default", cfg=None) -> tuple[dict, str]:
    """The sweep a robot running ``model`` emits: ``ActiveTrajectory(active=...)`` overrides and the sweep id.

    With ``cfg`` (a data-engine config), ``default`` is the shipped bundle for its array, and a bundle that does not
    fit that array raises :class:`~avperception.inference.bundle.BundleMismatch` naming every difference."""
    from avperception.inference.bundle import check_fits, load_bundle

    if cfg is None:
        b = load_bundle(model, verify=False)
    else:
        b = load_bundle(model, verify=False, array=cfg.array_geometry().name)
        check_fits(b, cfg.array_geometry(), int(cfg.audio.sample_rate), float(cfg.acoustics.speed_of_sound))
    sp = b.sweep_params
    over = {"sweep": sp["kind"], "f_start_hz": float(sp["f0_hz"]), "f_end_hz": float(sp["f1_hz"]),
            "duration_s": float(sp["duration_s"]), "fade": float(sp["fade"]), "level_db": b.sweep_level_db,
            "speaker_position": [float(v) for v in b.speaker_position]}
    return over, b.sweep_id


def _image(ts, a: np.ndarray, t: float, frame_id: str):
    a = np.ascontiguousarray(a)
    enc, width = {np.dtype(np.float32): ("32FC1", 4), np.dtype(np.uint8): ("mono8", 1)}[a.dtype]
    return make_msg(ts, "sensor_msgs/msg/Image", header=header_msg(ts, t, frame_id), height=a.shape[0],
                    width=a.shape[1], encoding=enc, is_bigendian=0, step=a.shape[1] * width,
                    data=np.frombuffer(a.astype(a.dtype.newbyteorder("<")).tobytes(), dtype=np.uint8))


def _cloud(ts, pts: np.ndarray, t: float, frame_id: str):
    p = np.ascontiguousarray(np.asarray(pts, dtype="<f4").reshape(-1, 3))
    fields = [make_msg(ts, "sensor_msgs/msg/PointField", name=n, offset=4 * i, datatype=7, count=1)
              for i, n in enumerate("xyz")]
    return make_msg(ts, "sensor_msgs/msg/PointCloud2", header=header_msg(ts, t, frame_id), height=1, width=len(p),
                    fields=fields, is_bigendian=False, point_step=12, row_step=12 * len(p),
                    data=np.frombuffer(p.tobytes(), dtype=np.uint8), is_dense=True)


def _pose(ts, position, R: np.ndarray):
    x, y, z, w = matrix_quat(R)
    return make_msg(ts, "geometry_msgs/msg/Pose",
                    position=make_msg(ts, "geometry_msgs/msg/Point", x=float(position[0]), y=float(position[1]),
                                      z=float(position[2])),
                    orientation=make_msg(ts, "geometry_msgs/msg/Quaternion", x=x, y=y, z=z, w=w))


def _yaw(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _toward(v) -> np.ndarray:
    """Rotation taking +x onto the direction of ``v`` (no roll)."""
    v = np.asarray(v, dtype=np.float64)
    v = v / max(np.linalg.norm(v), 1e-12)
    yaw, pitch = np.arctan2(v[1], v[0]), -np.arcsin(np.clip(v[2], -1, 1))
    cp, sp = np.cos(pitch), np.sin(pitch)
    return _yaw(yaw) @ np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])


def _tf(ts, parent: str, child: str, translation, R: np.ndarray, t: float):
    x, y, z, w = matrix_quat(R)
    return make_msg(ts, "geometry_msgs/msg/TransformStamped", header=header_msg(ts, t, parent), child_frame_id=child,
                    transform=make_msg(ts, "geometry_msgs/msg/Transform",
                                       translation=make_msg(ts, "geometry_msgs/msg/Vector3", x=float(translation[0]),
                                                            y=float(translation[1]), z=float(translation[2])),
                                       rotation=make_msg(ts, "geometry_msgs/msg/Quaternion", x=x, y=y, z=z, w=w)))


def record_sim(out: str | Path, pings: int = 40, room: int = 0, storage: str = "mcap", model: str = "default",
               seed: int = 0, ping_rate_hz: float = 4.0, chunk: int = 1024, encoding: str = "F32LE",
               start_s: float = 1.7e9, publish_pings: bool = True, num_sources: int = 2,
               frames: tuple[str, str] = ("odom", "base_link"), trajectory=None, progress: bool = False,
               array: str | None = None) -> dict:
    """Write ``pings`` pings of a robot pinging through data-engine room ``room`` to a new bag directory ``out``.

    ``array``: the microphone array (a preset name or an array YAML; default the data engine's, robot_8mic). The
    sweep, its level and the speaker position are ``model``'s (a bundle directory, or ``default``: the shipped
    bundle for the array), which must fit the array.
    ``encoding``: the audio's PCM (``F32LE`` keeps the simulated samples exactly; ``S16LE`` is what most drivers
    send). ``start_s``: the stamp of the first audio sample. ``publish_pings`` false leaves ``/sonar/pings`` out
    (the pings must then be found on their direct path). ``trajectory``: an ``ActiveTrajectory`` to record instead
    of building one (its array must fit ``model`` as well). Returns a summary: topics and message counts, the
    scene, the duration.
    """
    from rosbags.rosbag2 import Writer

    from avperception.audio.pcm import encode_interleaved

    from .trajectory import ActiveTrajectory

    out = Path(out)
    if out.exists():
        raise BagError(f"{out} exists; a bag is written to a new directory")
    if pings < 1 or chunk < 1:
        raise BagError("pings and chunk must be positive")
    plugin = storage_plugin(storage)
    if trajectory is None:
        from .config import load_config

        cfg = load_config(None, {"array": array} if array else {})
        over, sweep_id = bundle_emitter(model, cfg)
        trajectory = ActiveTrajectory(cfg, room_id=room, ping_rate_hz=ping_rate_hz, seed=seed,
                                      num_sources=num_sources, active=over)
    else:  # the trajectory's array must fit the model too
        sweep_id = bundle_emitter(model, trajectory.cfg)[1]
    traj = trajectory
    ts = typestore()
    fs, frame = traj.fs, traj.array.frame_id
    counts: dict[str, int] = {}
    bar = None
    if progress:
        from .progress import progress as _progress

        bar = _progress(total=pings, desc="record", unit="ping")
    with Writer(out, version=9, storage_plugin=plugin) as w:
        conns: dict[str, object] = {}

        def put(key: str, msgtype: str, msg, t_log: float) -> None:
            if key not in conns:
                conns[key] = w.add_connection(SIM_TOPICS[key], msgtype, typestore=ts)
            w.write(conns[key], int(round(t_log * 1e9)), ts.serialize_cdr(msg, msgtype))
            counts[SIM_TOPICS[key]] = counts.get(SIM_TOPICS[key], 0) + 1

        pending = np.zeros((traj.array.num_mics, 0), np.float32)
        sent = 0  # stream samples published
        truth = []
        for seg in traj.segments(0, pings):
            pending = np.concatenate([pending, seg.audio], axis=1)
            truth.append(seg)
            while pending.shape[1] >= chunk:
                t = start_s + sent / fs
                t_log = start_s + (sent + chunk) / fs  # received when its last sample is captured
                msg = make_msg(ts, AUDIO_FRAME, header=header_msg(ts, t, frame), sample_rate=fs,
                               channels=int(traj.array.input_channels), encoding=encoding, sequence=sent // chunk,
                               data=np.frombuffer(encode_interleaved(traj.array.to_device_layout(pending[:, :chunk]),
                                                                     encoding), dtype=np.uint8))
                put("audio", AUDIO_FRAME, msg, t_log)
                pending, sent = pending[:, chunk:], sent + chunk
                while truth and truth[0].onset_sample < sent:
                    _write_ping(ts, put, truth.pop(0), start_s, fs, frame, sweep_id, publish_pings, frames, t_log)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return {"bag": str(out), "storage": storage, "pings": int(pings), "scene": traj.describe(),
            "duration_s": sent / fs, "encoding": encoding, "chunk": int(chunk), "messages": counts}


def _write_ping(ts, put, seg, start_s: float, fs: int, frame: str, sweep_id: str, publish_pings: bool,
                frames: tuple[str, str], t_log: float) -> None:
    t = start_s + seg.onset_sample / fs
    if publish_pings:
        put("pings", PING, make_msg(ts, PING, header=header_msg(ts, t, frame), sequence=int(seg.index),
                                    sweep_id=sweep_id, onset_known=True), t_log)
    put("depth", "sensor_msgs/msg/Image", _image(ts, seg.depth.astype(np.float32), t, frame), t_log)
    put("semantic", "sensor_msgs/msg/Image", _image(ts, seg.semantic.astype(np.uint8), t, frame), t_log)
    put("occupancy", "sensor_msgs/msg/PointCloud2", _cloud(ts, seg.occupied_points, t, frame), t_log)
    poses = [_pose(ts, p, _toward(p)) for p in np.asarray(seg.source_positions).reshape(-1, 3)]
    put("sources", "geometry_msgs/msg/PoseArray",
        make_msg(ts, "geometry_msgs/msg/PoseArray", header=header_msg(ts, t, frame), poses=poses), t_log)
    x, y, z, yaw = (float(v) for v in seg.pose[:4])
    odom, base = frames
    tfs = [_tf(ts, odom, base, (x, y, 0.0), _yaw(yaw), t), _tf(ts, base, frame, (0.0, 0.0, z), np.eye(3), t)]
    put("tf", "tf2_msgs/msg/TFMessage", make_msg(ts, "tf2_msgs/msg/TFMessage", transforms=tfs), t_log)
