"""Run one or more avperception nodes in one process on a SingleThreadedExecutor.

This is what the console scripts call, and, on machines without ``ros2 launch``,
the direct way to run what ``perception.launch.py`` starts::

    avperception-run sim_audio perception --ros-args --params-file config/perception.yaml

Every node reads its parameters from the same ``--params-file`` (sections are
keyed by node name, as for ``ros2 launch``).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

NODES = {
    "sim_audio": ("avperception.ros.sim_audio_node", "SimAudioNode"),
    "capture": ("avperception.ros.capture_node", "CaptureNode"),
    "perception": ("avperception.ros.perception_node", "PerceptionNode"),
    "bag_player": ("avperception.ros.bag_player_node", "BagPlayerNode"),
}


# what a node's constructor raises for parameters, devices, files or packages it cannot use (the message says what
# to change); anything else is a bug and keeps its traceback
STARTUP_ERRORS = (ValueError, RuntimeError, ImportError, OSError, ParameterException)


class NodeStartError(RuntimeError):
    """A node that cannot start as configured: ``node`` its ROS name, the cause chained."""

    def __init__(self, node: str, error: BaseException) -> None:
        super().__init__(f"{node} cannot start: {error}")
        self.node = node


def node_name(cls) -> str:
    """The ROS name of one of :data:`NODES`' classes (``SimAudioNode`` -> ``sim_audio_node``)."""
    for key, (_, name) in NODES.items():
        if cls.__name__ == name:
            return f"{key}_node"
    return cls.__name__


def _prepare_env() -> None:
    # find our own packages (message types, share dir) when run from a venv without a ROS setup.bash
    prefix = sys.prefix
    paths = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if prefix not in paths:
        os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join(paths + [prefix])


def run_nodes(classes, args=None, duration: float | None = None, on_spin=None) -> None:
    """Create the nodes, spin them until Ctrl-C (or ``duration`` seconds, or a node's ``finished`` turns true:
    ``bag_player`` at the end of its bag), shut down cleanly.

    BLAS / OpenMP pools are pinned to one thread first: spinning OpenBLAS threads would take a whole core at real
    time for nothing (the nodes' arrays are small); ONNX Runtime's threads are set by ``sonar.threads``."""
    from ..inference.backends import pin_threads

    pin_threads(1)
    _prepare_env()
    rclpy.init(args=args)
    nodes = []
    try:
        for cls in classes:
            try:
                nodes.append(cls())
            except STARTUP_ERRORS as e:
                raise NodeStartError(node_name(cls), e) from e
        executor = SingleThreadedExecutor()
        for n in nodes:
            executor.add_node(n)
        # everything built so far (modules, models, lookup tables) lives as long as the process: out of the
        # collector's way, so that its full passes over the messages built per ping stay short
        gc.collect()
        gc.freeze()
        t_end = None if duration is None else time.monotonic() + duration
        while rclpy.ok() and (t_end is None or time.monotonic() < t_end):
            executor.spin_once(timeout_sec=0.1)
            if on_spin is not None:
                on_spin(nodes)
            if any(getattr(n, "finished", False) for n in nodes):
                break
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # Ctrl-C (or ros2 launch's SIGINT) shuts the context down from the signal handler, possibly while a
        # callback runs: its next publish then fails. That is a clean stop, not an error.
        if rclpy.ok():
            raise
    finally:
        for n in nodes:
            n.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


def console_main(classes, args=None, duration: float | None = None) -> None:
    """:func:`run_nodes` for a console script: a node that cannot start, or a bag that cannot be played, ends the
    process with one line on stderr and exit status 2 instead of a traceback (``ros2 launch`` shows the line under
    the node's name)."""
    from ..eval.bagio import BagError

    try:
        run_nodes(classes, args, duration)
    except (NodeStartError, BagError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args = []
    if "--ros-args" in argv:
        i = argv.index("--ros-args")
        argv, ros_args = argv[:i], argv[i:]
    ap = argparse.ArgumentParser(prog="avperception-run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("nodes", nargs="+", choices=sorted(NODES), help="nodes to run in this process")
    ap.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    a = ap.parse_args(argv)
    import importlib

    classes = [getattr(importlib.import_module(NODES[n][0]), NODES[n][1]) for n in a.nodes]
    console_main(classes, [sys.argv[0]] + ros_args, a.duration)


if __name__ == "__main__":
    main()
