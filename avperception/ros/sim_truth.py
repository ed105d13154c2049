"""Message conversions for the simulator's truth: the room as a mesh marker, TF.

Pure functions from numpy data to ROS 2 messages (no node, no I/O). ``tf2_msgs``
is imported only by :func:`.conversions.tf_message`, so the rest works where it is missing.
"""

from __future__ import annotations

import math

import numpy as np
from geometry_msgs.msg import Point, TransformStamped, Vector3
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker

from .conversions import header, transform_msg

# RGBA per semantic label of the data engine's surfaces: floor, ceiling, wall, obstacle
LABEL_COLORS = np.array([[0.55, 0.55, 0.55, 1.0], [0.85, 0.85, 0.95, 0.15], [0.75, 0.72, 0.65, 0.35],
                         [0.85, 0.45, 0.15, 0.9]], dtype=np.float32)


def room_mesh_marker(vertices: np.ndarray, triangles: np.ndarray, labels: np.ndarray, stamp: float, frame_id: str,
                     ns: str = "room", colors: np.ndarray = LABEL_COLORS) -> Marker:
    """A TRIANGLE_LIST Marker of triangles ``(T, 3)`` indexing ``vertices (V, 3)``, coloured per label ``(T,)``.

    Every triangle gets its label's RGBA (``colors (classes, 4)``); the marker's own colour alpha is 1 so that
    the per-vertex alphas hold (RViz multiplies them).
    """
    v = np.asarray(vertices, dtype=np.float64)
    tri = np.asarray(triangles, dtype=np.int64).reshape(-1, 3)
    lab = np.asarray(labels, dtype=np.int64).reshape(-1)
    m = Marker(header=header(stamp, frame_id), ns=ns, id=0, type=Marker.TRIANGLE_LIST, action=Marker.ADD,
               scale=Vector3(x=1.0, y=1.0, z=1.0), color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0))
    m.pose.orientation.w = 1.0
    pts = v[tri.ravel()]
    m.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in pts]
    rgba = np.asarray(colors, dtype=np.float64)[np.clip(lab, 0, len(colors) - 1)]
    m.colors = [ColorRGBA(r=float(c[0]), g=float(c[1]), b=float(c[2]), a=float(c[3])) for c in np.repeat(rgba, 3, 0)]
    return m


def transform_stamped(parent: str, child: str, translation, yaw: float, stamp: float):
    """``child`` in ``parent``: translation ``(3,)`` metres and a rotation ``yaw`` (rad) about z."""
    c, s_ = math.cos(yaw), math.sin(yaw)
    return transform_msg(parent, child, translation, np.array([[c, -s_, 0.0], [s_, c, 0.0], [0.0, 0.0, 1.0]]), stamp)


def robot_transforms(pose: np.ndarray, stamp: float, odom: str = "odom", base: str = "base_link",
                     array_frame: str = "mic_array") -> tuple[TransformStamped, TransformStamped]:
    """``odom -> base`` (x, y on the floor, yaw) and ``base -> array`` (straight up to the array height).

    ``pose`` ``(4,)``: x, y, array height, yaw of the array in ``odom``.
    """
    x, y, z, yaw = (float(a) for a in np.asarray(pose).ravel()[:4])
    return (transform_stamped(odom, base, (x, y, 0.0), yaw, stamp),
            transform_stamped(base, array_frame, (0.0, 0.0, z), 0.0, stamp))


__all__ = ["LABEL_COLORS", "room_mesh_marker", "transform_stamped",
           "robot_transforms"]
