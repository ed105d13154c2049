"""``avperception record``: record topics of the running graph into a rosbag2 (mcap or sqlite3), no ROS install.

:class:`RecorderNode` subscribes to each topic as soon as it appears in the graph, with the message type the graph
reports, takes the serialized (CDR) bytes the subscription receives and hands them to
:class:`~avperception.eval.bagfiles.BagRecorder`, logged at their arrival time (the node's clock). The QoS follows
the publishers: reliable only when every publisher is reliable (else best effort, which receives from both),
transient local when every publisher is (``/tf_static``, latched topics).

:func:`record` is what the command runs: ``avperception record --out BAG [--topics T ...] [--duration S]
[--storage mcap|sqlite3]``; without ``--topics`` it records ``perception_node``'s outputs (:data:`DEFAULT_TOPICS`).
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from ..eval.bagfiles import BagRecorder
from ..eval.bagio import BagError
from .bag_player_node import message_class

DEFAULT_TOPICS = ("sonar/depth", "sonar/semantic", "sonar/points", "sonar/occupancy", "sonar/occupancy_grid",
                  "acoustic/energy", "acoustic/source_poses", "/diagnostics")


class RecorderNode(Node):
    """Subscribes to ``topics`` (relative names resolve in the node's namespace) as they appear and writes every
    message to ``recorder``. ``counts`` = ``recorder.counts``; ``waiting``: topics not seen in the graph yet."""

    def __init__(self, recorder: BagRecorder, topics=DEFAULT_TOPICS, name: str = "avperception_recorder",
                 **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.recorder = recorder
        self.topics = list(dict.fromkeys(self.resolve_topic_name(t) for t in topics))
        self.waiting = set(self.topics)
        self.subs: dict[str, object] = {}
        self.errors = 0
        self.create_timer(0.2, self.discover)
        self.discover()

    def discover(self) -> None:
        if not self.waiting:
            return
        types = dict(self.get_topic_names_and_types())
        log = self.get_logger()
        for topic in sorted(self.waiting & set(types)):
            names = types[topic]
            if len(names) > 1:
                log.warning(f"{topic} carries several types {names}; recording {names[0]}")
            msgtype = names[0]
            self.waiting.discard(topic)
            cls = message_class(msgtype)
            if cls is None:
                log.error(f"not recording {topic}: its type {msgtype} cannot be imported here")
                continue
            self.subs[topic] = self.create_subscription(cls, topic, partial(self._on_message, topic, msgtype),
                                                        self.qos_for(topic), raw=True)
            log.info(f"recording {topic} ({msgtype})")

    def qos_for(self, topic: str) -> QoSProfile:
        infos = self.get_publishers_info_by_topic(topic)
        reliable = bool(infos) and all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
        latched = bool(infos) and all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
        return QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                          reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)

    def _on_message(self, topic: str, msgtype: str, data: bytes) -> None:
        try:
            self.recorder.add(topic, msgtype, self.get_clock().now().nanoseconds, data)
        except BagError as e:
            self.errors += 1
            self.get_logger().error(f"cannot record {topic}: {e}", throttle_duration_sec=5.0)

    @property
    def counts(self) -> dict[str, int]:
        return self.recorder.counts


def record(out: str | Path, topics=None, duration: float | None = None, storage: str = "mcap", args=None,
           log=print) -> dict:
    """Record ``topics`` (default :data:`DEFAULT_TOPICS`) into the new rosbag2 ``out`` until ``duration`` seconds
    have passed or Ctrl-C. Returns ``{"bag", "storage", "duration_s", "messages": {topic: count}, "never_seen":
    [topics]}``."""
    from ..ros.runner import _prepare_env

    _prepare_env()
    topics = list(topics or DEFAULT_TOPICS)
    rec = BagRecorder(out, storage)  # first: a bag that cannot be written is an error before anything starts
    ctx = rclpy.context.Context()
    rclpy.init(args=args, context=ctx)
    node = None
    t0 = time.monotonic()
    try:
        from rclpy.executors import SingleThreadedExecutor

        node = RecorderNode(rec, topics, context=ctx)
        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(node)
        log(f"recording {', '.join(node.topics)} into {out} ({storage})"
            + (f" for {duration:g} s" if duration else "; Ctrl-C stops"))
        t_end = None if duration is None else t0 + float(duration)
        while ctx.ok() and (t_end is None or time.monotonic() < t_end):
            ex.spin_once(timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        counts = rec.close()
        waiting = sorted(node.waiting) if node is not None else []
        if node is not None:
            node.destroy_node()
        if ctx.ok():
            rclpy.shutdown(context=ctx)
    summary = {"bag": str(out), "storage": storage, "duration_s": round(time.monotonic() - t0, 3),
               "messages": counts, "never_seen": waiting}
    log(f"wrote {sum(counts.values())} messages on {len(counts)} topics to {out}"
        + "".join(f"\n  {t}: {n}" for t, n in sorted(counts.items()))
        + (f"\n  never published: {', '.join(waiting)}" if waiting else ""))
    return summary


__all__ = ["DEFAULT_TOPICS", "RecorderNode", "record"]
