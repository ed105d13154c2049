"""Pure conversions between numpy data and ROS 2 messages (no node, no I/O)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Pose, PoseArray, Quaternion, Transform, TransformStamped, Vector3
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from ..audio.pcm import stamp_to_sec  # noqa: F401  (Time -> seconds; re-exported for the nodes and tests)
from ..eval.bagio import cloud_fields as cloud_to_arrays  # noqa: F401  (re-exported: the decoders of both worlds)
from ..eval.bagio import image_to_array  # noqa: F401
from ..dsp.peaks import SourceDirection


def sec_to_stamp(t: float) -> Time:
    sec = math.floor(t)
    return Time(sec=int(sec), nanosec=min(int(round((t - sec) * 1e9)), 999_999_999))


def header(stamp: float, frame_id: str) -> Header:
    return Header(stamp=sec_to_stamp(stamp), frame_id=frame_id)


# ---------------------------------------------------------------------------- images


def array_to_image(a: np.ndarray, stamp: float, frame_id: str) -> Image:
    """``(H, W)`` float32 -> 32FC1, ``(H, W)`` uint8 -> mono8, ``(H, W, 3)`` uint8 -> rgb8."""
    a = np.ascontiguousarray(a)
    if a.ndim == 2 and a.dtype == np.float32:
        enc, step = "32FC1", a.shape[1] * 4
    elif a.ndim == 2 and a.dtype == np.uint8:
        enc, step = "mono8", a.shape[1]
    elif a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8:
        enc, step = "rgb8", a.shape[1] * 3
    else:
        raise ValueError(f"cannot convert array of shape {a.shape} and dtype {a.dtype} to an Image")
    msg = Image(header=header(stamp, frame_id), height=a.shape[0], width=a.shape[1], encoding=enc,
                is_bigendian=0, step=step)
    msg.data = a.tobytes()
    return msg


# ---------------------------------------------------------------------------- point clouds, grids, cameras

_POINT_TYPES = {np.dtype(np.float32): (PointField.FLOAT32, 4), np.dtype(np.uint8): (PointField.UINT8, 1),
                np.dtype(np.uint16): (PointField.UINT16, 2), np.dtype(np.uint32): (PointField.UINT32, 4),
                np.dtype(np.int32): (PointField.INT32, 4)}


def points_to_cloud(points: np.ndarray, stamp: float, frame_id: str,
                    fields: dict[str, np.ndarray] | None = None) -> PointCloud2:
    """``(N, 3)`` points (x, y, z) plus optional per-point ``fields`` (name -> ``(N,)`` float32, uint8, uint16,
    uint32 or int32) -> an unordered ``PointCloud2`` (height 1, little-endian, packed)."""
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    cols = [("x", pts[:, 0]), ("y", pts[:, 1]), ("z", pts[:, 2])]
    for name, v in (fields or {}).items():
        v = np.asarray(v)
        if v.shape != (len(pts),) or v.dtype not in _POINT_TYPES:
            raise ValueError(f"field {name!r} must be ({len(pts)},) of one of {[str(d) for d in _POINT_TYPES]}, "
                             f"got {v.shape} {v.dtype}")
        cols.append((name, v))
    dtype = np.dtype([(n, v.dtype.newbyteorder("<")) for n, v in cols])
    rec = np.empty(len(pts), dtype=dtype)
    for n, v in cols:
        rec[n] = v
    msg = PointCloud2(header=header(stamp, frame_id), height=1, width=len(pts), is_bigendian=False,
                      point_step=dtype.itemsize, row_step=dtype.itemsize * len(pts), is_dense=True)
    msg.fields = [PointField(name=n, offset=dtype.fields[n][1], datatype=_POINT_TYPES[v.dtype][0], count=1)
                  for n, v in cols]
    msg.data = rec.tobytes()
    return msg


def occupancy_grid_msg(data: np.ndarray, origin: Sequence[float], resolution: float, stamp: float,
                       frame_id: str) -> OccupancyGrid:
    """``(rows, cols)`` int8 cells (100 occupied, 0 free, -1 unknown; row 0 at the lowest y) whose cell (0, 0)
    has its outer corner at ``origin (x, y, z)`` -> ``nav_msgs/OccupancyGrid``."""
    d = np.asarray(data, dtype=np.int8)
    msg = OccupancyGrid(header=header(stamp, frame_id))
    msg.info.map_load_time = sec_to_stamp(stamp)
    msg.info.resolution = float(resolution)
    msg.info.height, msg.info.width = int(d.shape[0]), int(d.shape[1])
    msg.info.origin.position = Point(x=float(origin[0]), y=float(origin[1]), z=float(origin[2]))
    msg.info.origin.orientation.w = 1.0
    msg.data = d.ravel().tolist()
    return msg


def camera_info_msg(width: int, height: int, fx: float, fy: float, cx: float, cy: float, stamp: float,
                    frame_id: str) -> CameraInfo:
    """A distortion-free pinhole ``CameraInfo`` (plumb_bob with zero coefficients)."""
    msg = CameraInfo(header=header(stamp, frame_id), width=int(width), height=int(height),
                     distortion_model="plumb_bob")
    msg.d = [0.0] * 5
    msg.k = [float(fx), 0.0, float(cx), 0.0, float(fy), float(cy), 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [float(fx), 0.0, float(cx), 0.0, 0.0, float(fy), float(cy), 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def cube_markers(centres: np.ndarray, size: Sequence[float], stamp: float, frame_id: str, ns: str = "occupancy",
                 color: tuple[float, float, float, float] = (0.9, 0.3, 0.1, 0.6),
                 lifetime_s: float = 0.0) -> MarkerArray:
    """One ``CUBE_LIST`` marker with a cube of ``size (x, y, z)`` at each of ``(K, 3)`` centres (DELETEALL
    first, so an empty list clears the last one)."""
    out = MarkerArray()
    out.markers.append(Marker(header=header(stamp, frame_id), ns=ns, action=Marker.DELETEALL))
    m = Marker(header=header(stamp, frame_id), ns=ns, id=0, type=Marker.CUBE_LIST, action=Marker.ADD,
               scale=Vector3(x=float(size[0]), y=float(size[1]), z=float(size[2])),
               color=ColorRGBA(r=color[0], g=color[1], b=color[2], a=color[3]))
    m.pose.orientation.w = 1.0
    m.points = [Point(x=x, y=y, z=z) for x, y, z in np.asarray(centres, dtype=np.float64).reshape(-1, 3).tolist()]
    lt = sec_to_stamp(lifetime_s)
    m.lifetime.sec, m.lifetime.nanosec = lt.sec, lt.nanosec
    out.markers.append(m)
    return out


def quaternion_from_matrix(r: np.ndarray) -> Quaternion:
    """The unit quaternion of a ``(3, 3)`` rotation matrix."""
    from ..eval.bagio import matrix_quat

    x, y, z, w = matrix_quat(r)
    return Quaternion(x=x, y=y, z=z, w=w)


def transform_msg(parent: str, child: str, translation: Sequence[float], rotation: np.ndarray,
                  stamp: float) -> TransformStamped:
    """``child`` in ``parent``: ``translation (3,)`` metres and ``rotation (3, 3)`` (child axes in parent)."""
    x, y, z = (float(a) for a in translation)
    return TransformStamped(header=header(stamp, parent), child_frame_id=child,
                            transform=Transform(translation=Vector3(x=x, y=y, z=z),
                                                rotation=quaternion_from_matrix(rotation)))


def tf_message(transforms):
    """``tf2_msgs/TFMessage`` of TransformStamped; raises ImportError where tf2_msgs is not installed."""
    from tf2_msgs.msg import TFMessage

    return TFMessage(transforms=list(transforms))


# ---------------------------------------------------------------------------- directions


def quaternion_from_direction(v: Sequence[float]) -> Quaternion:
    """Quaternion rotating +x onto direction ``v`` (no roll)."""
    x, y, z = np.asarray(v, dtype=np.float64) / np.linalg.norm(v)
    yaw = math.atan2(y, x)
    pitch = -math.asin(max(-1.0, min(1.0, z)))
    cy, sy, cp, sp = math.cos(yaw / 2), math.sin(yaw / 2), math.cos(pitch / 2), math.sin(pitch / 2)
    return Quaternion(x=-sy * sp, y=cy * sp, z=sy * cp, w=cy * cp)


def direction_from_quaternion(q: Quaternion) -> np.ndarray:
    """The +x axis rotated by ``q`` (inverse of :func:`quaternion_from_direction`)."""
    x, y, z, w = q.x, q.y, q.z, q.w
    return np.array([1 - 2 * (y * y + z * z), 2 * (x * y + w * z), 2 * (x * z - w * y)])


def sources_to_pose_array(sources: Sequence[SourceDirection], stamp: float, frame_id: str,
                          distance: float = 1.0) -> PoseArray:
    """One pose per source, ``distance`` metres out along its direction, +x pointing at it."""
    msg = PoseArray(header=header(stamp, frame_id))
    for s in sources:
        v = np.asarray(s.vector)
        msg.poses.append(Pose(position=Point(x=float(v[0] * distance), y=float(v[1] * distance), z=float(v[2] * distance)),
                              orientation=quaternion_from_direction(v)))
    return msg


def pose_array_to_directions(msg: PoseArray) -> np.ndarray:
    """``(n, 3)`` unit vectors of a PoseArray from :func:`sources_to_pose_array`."""
    return np.array([direction_from_quaternion(p.orientation) for p in msg.poses]).reshape(-1, 3)


def direction_markers(vectors, alphas, labels, stamp: float, frame_id: str, ns: str,
                      color: tuple[float, float, float] = (1.0, 0.4, 0.0), length: float = 1.0,
                      lifetime_s: float = 0.5) -> MarkerArray:
    """Arrows from the array centre along unit ``vectors`` with text ``labels``; DELETEALL first."""
    out = MarkerArray()
    out.markers.append(Marker(header=header(stamp, frame_id), ns=ns, action=Marker.DELETEALL))
    lifetime = sec_to_stamp(lifetime_s)
    for i, (vec, alpha, label) in enumerate(zip(vectors, alphas, labels)):
        v = np.asarray(vec, dtype=np.float64) * length
        arrow = Marker(header=header(stamp, frame_id), ns=ns, id=2 * i, type=Marker.ARROW, action=Marker.ADD,
                       scale=Vector3(x=0.03, y=0.06, z=0.08),
                       color=ColorRGBA(r=color[0], g=color[1], b=color[2], a=float(alpha)))
        arrow.pose.orientation.w = 1.0
        arrow.points = [Point(), Point(x=float(v[0]), y=float(v[1]), z=float(v[2]))]
        arrow.lifetime.sec, arrow.lifetime.nanosec = lifetime.sec, lifetime.nanosec
        text = Marker(header=header(stamp, frame_id), ns=ns + "_labels", id=2 * i + 1, type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD, scale=Vector3(z=0.08), color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0),
                      text=label)
        text.pose.position = Point(x=float(v[0] * 1.1), y=float(v[1] * 1.1), z=float(v[2] * 1.1 + 0.05))
        text.pose.orientation.w = 1.0
        text.lifetime.sec, text.lifetime.nanosec = lifetime.sec, lifetime.nanosec
        out.markers += [arrow, text]
    return out


def sources_to_markers(sources: Sequence[SourceDirection], stamp: float, frame_id: str, ns: str = "sources",
                       color: tuple[float, float, float] = (1.0, 0.4, 0.0), length: float = 1.0,
                       lifetime_s: float = 0.5) -> MarkerArray:
    """Arrows toward each detected source (opacity grows with power), labelled azimuth/elevation."""
    return direction_markers([s.vector for s in sources], [float(np.clip(0.4 + 0.6 * s.power, 0.4, 1.0)) for s in sources],
                             [f"{s.azimuth_deg:.0f}°/{s.elevation_deg:.0f}°" for s in sources],
                             stamp, frame_id, ns, color, length, lifetime_s)


def tracks_to_markers(tracks, stamp: float, frame_id: str, ns: str = "tracks",
                      color: tuple[float, float, float] = (0.2, 0.6, 1.0), length: float = 1.2,
                      lifetime_s: float = 0.5) -> MarkerArray:
    """Arrows along each confirmed track (opacity = activity), labelled ``#id az/el``."""
    return direction_markers([t.vector for t in tracks], [float(np.clip(t.activity, 0.2, 1.0)) for t in tracks],
                             [f"#{t.id} {t.azimuth_deg:.0f}°/{t.elevation_deg:.0f}°" for t in tracks],
                             stamp, frame_id, ns, color, length, lifetime_s)


def positions_to_markers(points: np.ndarray, stamp: float, frame_id: str, ns: str = "true_sources",
                         color: tuple[float, float, float] = (0.1, 0.8, 0.2)) -> MarkerArray:
    """Spheres at ``(n, 3)`` positions (e.g. simulated true sources)."""
    out = MarkerArray()
    for i, p in enumerate(np.asarray(points, dtype=np.float64).reshape(-1, 3)):
        m = Marker(header=header(stamp, frame_id), ns=ns, id=i, type=Marker.SPHERE, action=Marker.ADD,
                   scale=Vector3(x=0.15, y=0.15, z=0.15), color=ColorRGBA(r=color[0], g=color[1], b=color[2], a=0.9))
        m.pose.position = Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))
        m.pose.orientation.w = 1.0
        out.markers.append(m)
    return out


def positions_to_pose_array(points: np.ndarray, stamp: float, frame_id: str) -> PoseArray:
    """Poses at ``(n, 3)`` positions, +x pointing away from the frame origin."""
    msg = PoseArray(header=header(stamp, frame_id))
    for p in np.asarray(points, dtype=np.float64).reshape(-1, 3):
        msg.poses.append(Pose(position=Point(x=float(p[0]), y=float(p[1]), z=float(p[2])),
                              orientation=quaternion_from_direction(p)))
    return msg


# ---------------------------------------------------------------------------- diagnostics


def diagnostics(name: str, hardware_id: str, values: dict, stamp: float, level: int = 0,
                message: str = "ok") -> DiagnosticArray:
    """One DiagnosticStatus with ``values`` as key/value strings."""
    st = DiagnosticStatus(level=bytes([level]), name=name, message=message, hardware_id=hardware_id)
    st.values = [KeyValue(key=str(k), value=(f"{v:.3f}" if isinstance(v, float) else str(v))) for k, v in values.items()]
    return DiagnosticArray(header=header(stamp, ""), status=[st])


# ---------------------------------------------------------------------------- audio


def audio_frame_msg(x: np.ndarray, sample_rate: int, stamp: float, frame_id: str, sequence: int,
                    encoding: str = "S16LE"):
    """``(channels, samples)`` float audio -> avperception_msgs/AudioFrame."""
    from avperception_msgs.msg import AudioFrame

    from ..audio.pcm import encode_interleaved

    msg = AudioFrame(header=header(stamp, frame_id), sample_rate=int(sample_rate), channels=int(x.shape[0]),
                     encoding=encoding, sequence=int(sequence))
    msg.data = encode_interleaved(x, encoding)
    return msg


def ping_msg(stamp: float, frame_id: str, sequence: int, sweep_id: str, onset_known: bool = True):
    """avperception_msgs/Ping of a sweep whose onset is at ``stamp`` (the audio's clock)."""
    from avperception_msgs.msg import Ping

    return Ping(header=header(stamp, frame_id), sequence=int(sequence), sweep_id=str(sweep_id),
                onset_known=bool(onset_known))
