"""Reading and writing rosbag2 files with the pure-Python ``rosbags`` library (no ROS install needed).

Shared by the replay evaluator, the recorder and the training package's bag import / export: a typestore with
the ``avperception_msgs`` types registered from their .msg files, and decoders of the message types the
evaluator scores against (images, point clouds, poses, transforms). Decoders read attributes only, so they work
on ``rosbags`` messages and on ROS 2 messages alike. ``rosbags`` is imported lazily.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np

from ..audio.pcm import stamp_to_sec

AUDIO_FRAME = "avperception_msgs/msg/AudioFrame"
PING = "avperception_msgs/msg/Ping"
OUR_MESSAGES = ("AudioFrame", "Ping")

# audio message type -> decoder in avperception.audio.pcm (those that need nothing but the message)
AUDIO_DECODERS = {
    AUDIO_FRAME: "from_audio_frame",
    "audio_utils_msgs/msg/AudioFrame": "from_odas_audio_frame",
    "audio_common_msgs/msg/AudioStamped": "from_audio_stamped",
}


class BagError(RuntimeError):
    """A bag cannot be read or written as asked."""


class MessageFormatError(BagError, ValueError):
    """A message a decoder cannot read (an image encoding, a point cloud's fields)."""


def _require_rosbags():
    try:
        import rosbags  # noqa: F401
    except ImportError as e:
        raise BagError("reading and writing bags needs the rosbags library: pip install 'rosbags>=0.10'") from e


def msg_file(msgtype: str) -> Path | None:
    """The ``.msg`` definition of ``pkg/msg/Name``: this source tree's (``msgs/``) or an installed package's (``share/``
    under AMENT_PREFIX_PATH and this Python's prefix); None when there is none."""
    from ..config import PACKAGE_ROOT

    rel = Path(*msgtype.split("/")).with_suffix(".msg")
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    for c in [PACKAGE_ROOT.parent / "msgs" / rel] + [Path(p) / "share" / rel for p in prefixes]:
        if c.is_file():
            return c
    return None


def msg_text(name: str) -> str:
    """The text of ``avperception_msgs/msg/<name>.msg``, from the source tree or an installed package."""
    f = msg_file(f"avperception_msgs/msg/{name}")
    if f is None:
        raise BagError(f"cannot find {name}.msg; install avperception_msgs or run from the source tree")
    return f.read_text()


def typestore():
    """A ROS 2 typestore (Kilted where rosbags knows it, else Humble) with ``avperception_msgs`` registered."""
    _require_rosbags()
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = getattr(Stores, "ROS2_KILTED", None) or getattr(Stores, "ROS2_JAZZY", None) or Stores.ROS2_HUMBLE
    ts = get_typestore(store)
    types = {}
    for name in OUR_MESSAGES:
        types.update(get_types_from_msg(msg_text(name), f"avperception_msgs/msg/{name}"))
    ts.register(types)
    return ts


def storage_plugin(storage: str):
    """``mcap`` | ``sqlite3`` -> the rosbags writer's storage plugin."""
    _require_rosbags()
    from rosbags.rosbag2 import StoragePlugin

    try:
        return {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
    except KeyError:
        raise BagError(f"storage must be sqlite3 or mcap, got {storage!r}") from None


# --------------------------------------------------------------------------- building messages

_NUMPY = {"bool": np.bool_, "byte": np.uint8, "char": np.uint8, "octet": np.uint8, "uint8": np.uint8,
          "int8": np.int8, "uint16": np.uint16, "int16": np.int16, "uint32": np.uint32, "int32": np.int32,
          "uint64": np.uint64, "int64": np.int64, "float32": np.float32, "float64": np.float64}


def make_msg(ts, msgtype: str, **values):
    """An instance of ``msgtype`` with every field defaulted (zeros, empty strings and sequences), then ``values``."""
    from rosbags.typesys.base import Nodetype

    def default(desc):
        kind, arg = desc
        if kind == Nodetype.BASE:
            name = arg[0]
            return "" if name in ("string", "wstring") else (False if name == "bool" else 0)
        if kind == Nodetype.NAME:
            return make_msg(ts, arg)
        sub, n = arg
        if sub[0] == Nodetype.BASE and sub[1][0] in _NUMPY:
            return np.zeros(n if kind == Nodetype.ARRAY else 0, dtype=_NUMPY[sub[1][0]])
        return [default(sub) for _ in range(n)] if kind == Nodetype.ARRAY else []

    _, fields = ts.fielddefs[msgtype]
    kw = {name: default(desc) for name, desc in fields}
    unknown = set(values) - set(kw)
    if unknown:
        raise BagError(f"{msgtype} has no fields {sorted(unknown)}")
    kw.update(values)
    return ts.types[msgtype](**kw)


def stamp_msg(ts, t: float):
    sec = math.floor(t)
    return make_msg(ts, "builtin_interfaces/msg/Time", sec=int(sec), nanosec=min(int(round((t - sec) * 1e9)), 999_999_999))


def header_msg(ts, t: float, frame_id: str):
    return make_msg(ts, "std_msgs/msg/Header", stamp=stamp_msg(ts, t), frame_id=frame_id)


# --------------------------------------------------------------------------- decoding messages


def image_to_array(msg) -> np.ndarray:
    """sensor_msgs/Image -> ``(H, W)`` (32FC1, 16UC1 / mono16, mono8 / 8UC1) or ``(H, W, 3)`` (rgb8, bgr8)."""
    dtypes = {"32FC1": (np.float32, 1), "16UC1": (np.uint16, 1), "mono16": (np.uint16, 1), "mono8": (np.uint8, 1),
              "8UC1": (np.uint8, 1), "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3)}
    if msg.encoding not in dtypes:
        raise MessageFormatError(f"unsupported image encoding {msg.encoding!r} (need one of {sorted(dtypes)})")
    dt, ch = dtypes[msg.encoding]
    dt = np.dtype(dt).newbyteorder(">" if msg.is_bigendian else "<")
    raw = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.step)
    a = raw[:, : msg.width * ch * dt.itemsize].copy().view(dt).reshape(msg.height, msg.width, ch)
    return a[..., 0].astype(dt.newbyteorder("=")) if ch == 1 else a


def depth_to_metres(msg) -> np.ndarray:
    """A depth Image (32FC1 metres or 16UC1 millimetres, REP 118) -> float32 metres, NaN where invalid."""
    a = image_to_array(msg)
    d = a.astype(np.float32) / 1000.0 if a.dtype == np.uint16 else a.astype(np.float32)
    d[~np.isfinite(d) | (d <= 0)] = np.nan
    return d


_FIELD_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}


def cloud_fields(msg) -> dict[str, np.ndarray]:
    """sensor_msgs/PointCloud2 -> field name -> ``(N,)`` array in native byte order."""
    end = ">" if msg.is_bigendian else "<"
    dtype = np.dtype({"names": [f.name for f in msg.fields],
                      "formats": [end + _FIELD_DTYPES[f.datatype] for f in msg.fields],
                      "offsets": [f.offset for f in msg.fields], "itemsize": msg.point_step})
    rec = np.frombuffer(bytes(msg.data), dtype=dtype, count=int(msg.width) * int(msg.height))
    return {f.name: rec[f.name].astype(rec[f.name].dtype.newbyteorder("=")) for f in msg.fields}


def cloud_xyz(msg) -> np.ndarray:
    """sensor_msgs/PointCloud2 -> ``(N, 3)`` float32 x, y, z."""
    names = [f.name for f in msg.fields]
    if not all(k in names for k in "xyz"):
        raise MessageFormatError(f"point cloud without x, y, z fields (has {sorted(names)})")
    f = cloud_fields(msg)
    return np.stack([f[k].astype(np.float32) for k in "xyz"], axis=1).reshape(-1, 3)


def pose_positions(msg) -> np.ndarray:
    """geometry_msgs/PoseArray -> ``(N, 3)`` positions."""
    return np.array([[p.position.x, p.position.y, p.position.z] for p in msg.poses], dtype=np.float64).reshape(-1, 3)


def quat_matrix(q) -> np.ndarray:
    """A ``geometry_msgs/Quaternion``-like (x, y, z, w) -> ``(3, 3)`` rotation matrix."""
    x, y, z, w = float(q.x), float(q.y), float(q.z), float(q.w)
    n = x * x + y * y + z * z + w * w
    if n < 1e-12:
        return np.eye(3)
    s = 2.0 / n
    return np.array([[1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)],
                     [s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w)],
                     [s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)]])


def matrix_quat(R: np.ndarray) -> tuple[float, float, float, float]:
    """``(3, 3)`` rotation -> quaternion (x, y, z, w)."""
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_quat()
    return float(x), float(y), float(z), float(w)


class TransformTree:
    """The latest transform of every parent -> child edge seen on ``/tf`` and ``/tf_static``; looks up the
    rotation of one frame in another along the tree (either direction), and says whether the moving edges between
    two frames have been published again since an earlier look (:meth:`version`)."""

    def __init__(self) -> None:
        self.edges: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self.updates: dict[tuple[str, str], int] = {}  # moving edges (/tf): how many times each was published
        self.static: set[tuple[str, str]] = set()  # edges from /tf_static

    def add(self, msg, static: bool = False) -> None:
        """A ``tf2_msgs/TFMessage`` (``static``: from ``/tf_static``)."""
        for t in msg.transforms:
            tr = t.transform
            edge = (t.header.frame_id.lstrip("/"), t.child_frame_id.lstrip("/"))
            self.edges[edge] = (quat_matrix(tr.rotation), np.array([tr.translation.x, tr.translation.y,
                                                                     tr.translation.z]))
            if static:
                self.static.add(edge)
            else:
                self.updates[edge] = self.updates.get(edge, 0) + 1

    def add_static(self, msg) -> None:
        """A ``tf2_msgs/TFMessage`` from ``/tf_static``."""
        self.add(msg, static=True)

    def version(self, target: str, source: str) -> tuple | None:
        """How many times each moving edge between ``target`` and ``source`` has been published (``()``: all
        static), or None when they are not connected: equal versions mean nothing moved the chain in between."""
        path = self._path(target, source)
        if path is None:
            return None
        return tuple(self.updates.get(e, 0) for e in path if e not in self.static)

    def lookup(self, target: str, source: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(R, t)`` mapping points of ``source`` into ``target`` (``p_target = R @ p_source + t``), or None
        when the two frames are not connected."""
        path = self._path(target, source)
        if path is None:
            return None
        R, t = np.eye(3), np.zeros(3)
        frame = target.lstrip("/")
        for p, c in path:  # compose from target outwards
            if p == frame:  # p is the parent: p_p = R p_c + t
                Re, te = self.edges[(p, c)]
                frame = c
            else:  # the current frame is c, the next its parent p: p_p = R0 p_c + t0, so p_c = R0^T (p_p - t0)
                R0, t0 = self.edges[(p, c)]
                Re, te = R0.T, -R0.T @ t0
                frame = p
            R, t = R @ Re, R @ te + t
        return R, t

    def _path(self, target: str, source: str) -> list[tuple[str, str]] | None:
        """The edges from ``target`` to ``source``, in order, or None when they are not connected."""
        target, source = target.lstrip("/"), source.lstrip("/")
        neighbours: dict[str, list[str]] = {}
        for p, c in self.edges:
            neighbours.setdefault(p, []).append(c)
            neighbours.setdefault(c, []).append(p)
        came: dict[str, tuple[str, str] | None] = {target: None}  # frame -> the edge it was reached by
        queue = [target]
        while queue and source not in came:
            f = queue.pop(0)
            for g in neighbours.get(f, []):
                if g not in came:
                    came[g] = (f, g) if (f, g) in self.edges else (g, f)
                    queue.append(g)
        if source not in came:
            return None
        path, frame = [], source
        while came[frame] is not None:
            edge = came[frame]
            path.append(edge)
            frame = edge[0] if edge[1] == frame else edge[1]
        return path[::-1]


__all__ = ["AUDIO_FRAME", "PING", "AUDIO_DECODERS", "BagError", "msg_text", "typestore", "storage_plugin",
           "make_msg", "stamp_msg", "header_msg", "image_to_array", "depth_to_metres", "cloud_xyz",
           "pose_positions", "quat_matrix", "matrix_quat", "TransformTree", "stamp_to_sec"]
