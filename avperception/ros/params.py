"""ROS parameters generated from the configuration dataclasses (one source of truth).

``declare_dataclass(node, PipelineConfig())`` declares ``sample_rate``,
``frame.frame_samples``, ``grid.kind``, ``beamformer.method`` ... with the
dataclass defaults (overridden by a ``--params-file``), and
``read_dataclass(node, PipelineConfig)`` reads them back into a validated
dataclass.
"""

from __future__ import annotations

from typing import Any

from rclpy.node import Node

from ..config import flatten, from_dict, unflatten


def _ros_value(v: Any) -> Any:
    if isinstance(v, tuple):
        return [float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x for x in v]
    return v


def declare_dataclass(node: Node, instance: Any, prefix: str = "") -> list[str]:
    """Declare one parameter per leaf field of ``instance``; returns the names."""
    from rcl_interfaces.msg import ParameterDescriptor

    names = []
    for name, value in flatten(instance).items():
        full = prefix + name
        if not node.has_parameter(full):
            # dynamic typing: a params file may write 343 for a float; from_dict checks the type
            node.declare_parameter(full, _ros_value(value), ParameterDescriptor(dynamic_typing=True))
        names.append(full)
    return names


def read_dataclass(node: Node, cls: type, prefix: str = "") -> Any:
    """Read the parameters declared by :func:`declare_dataclass` back into ``cls``."""
    flat = {}
    for name in flatten(cls()).keys():
        v = node.get_parameter(prefix + name).value
        if isinstance(v, list):
            v = tuple(v)
        flat[name] = v
    return from_dict(cls, unflatten(flat), where=node.get_name())


def declare(node: Node, name: str, default: Any, description: str = "") -> Any:
    """Declare one plain parameter and return its value."""
    from rcl_interfaces.msg import ParameterDescriptor

    if not node.has_parameter(name):
        node.declare_parameter(name, default, ParameterDescriptor(description=description))
    return node.get_parameter(name).value
