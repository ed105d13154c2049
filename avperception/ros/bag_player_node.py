"""bag_player_node: plays a rosbag2 recording (mcap or sqlite3) into the running graph, in real time.

Every topic of the bag whose message class can be imported is published as recorded: the raw CDR bytes the bag
holds go out unchanged (no decoding, no re-encoding), so header stamps are the ORIGINAL ones and audio of any
message type (``avperception_msgs/AudioFrame``, ``audio_common_msgs/...``) reaches ``perception_node`` exactly as
it was captured. Messages are paced by the bag's log time (``rate`` 1.0 = real time, 2.0 = twice as fast), so
``perception_node`` and RViz run from a recording as they would live::

    bag_player_node --ros-args -p bag:=sim.bag                      # or: avperception-run bag_player perception ...

QoS: sensor data (best effort) for images, compressed images, point clouds and camera infos; reliable
(``audio_qos``) for audio and pings; ``/tf`` reliable; ``/tf_static`` reliable and transient local; anything
else reliable, depth 10. The bag is read with the pure-Python ``rosbags`` library (its rosbag2 reader: raw CDR
bytes) in a background thread, so nodes spinning in the same process are not held up while it waits.

Subscribers need a moment to discover a new publisher, and a reliable publisher does not keep what it sent before
(volatile): the first message goes out ``delay_s`` (1 s) after the publishers are made, and with ``wait_for_topics``
only once each of those topics has a subscriber (``[/audio]``: once ``perception_node`` listens).

At the end of the bag the node stops (``finished``; the runner then exits) unless ``loop`` is true; a loop starts
over with the same stamps, which a subscriber sees as its clock going back (``perception_node`` restarts its
framing). Parameters: see ``NODE_PARAMS``.
"""

from __future__ import annotations

import importlib
import threading
import time
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from ..eval.bagfiles import open_rosbag2
from ..eval.bagio import AUDIO_DECODERS, PING, BagError
from .audio_input import INPUT_TYPES, audio_qos

NODE_PARAMS = {
    "bag": ("", "rosbag2 directory (mcap or sqlite3) to play; required"),
    "topics": ([], "topics to play (default: every topic whose message type can be imported)"),
    "rate": (1.0, "playback speed: 1.0 = real time (the bag's log time), 2.0 = twice as fast"),
    "loop": (False, "start over at the end instead of stopping"),
    "start_offset_s": (0.0, "skip this many seconds of the bag's start"),
    "delay_s": (1.0, "wait this long before the first message: subscribers already running discover the publishers"),
    "wait_for_topics": ([], "play only once each of these topics has a subscriber (e.g. [/audio]); then delay_s"),
}

SENSOR_TYPES = {"sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/PointCloud2",
                "sensor_msgs/msg/CameraInfo"}
AUDIO_TYPES = set(AUDIO_DECODERS) | {v[0] for v in INPUT_TYPES.values()} | {PING}
LINGER_S = 1.0  # after the last message: time for reliable subscribers to get it before the node reports finished


def message_class(msgtype: str):
    """``pkg/msg/Name`` -> the rclpy message class, or None when its package is not installed."""
    parts = msgtype.split("/")
    if len(parts) != 3:
        return None
    try:
        return getattr(importlib.import_module(f"{parts[0]}.{parts[1]}"), parts[2])
    except (ImportError, AttributeError):
        return None


def qos_for(topic: str, msgtype: str) -> QoSProfile:
    """The QoS a topic is published with (see the module docstring)."""
    if msgtype in SENSOR_TYPES:
        return qos_profile_sensor_data
    if msgtype in AUDIO_TYPES:
        return audio_qos()
    if topic == "/tf_static":
        return QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
    if topic == "/tf":
        return QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)


def _norm(topic: str) -> str:
    return "/" + topic.strip().lstrip("/")


class BagPlayerNode(Node):
    """Publishes a bag's messages with their original timing and stamps; ``finished`` is true after the end."""

    def __init__(self, **kwargs) -> None:
        super().__init__("bag_player_node", **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        p = {k: self._declare(k, v, d) for k, (v, d) in NODE_PARAMS.items()}
        log = self.get_logger()
        self.finished = False
        self.published = 0
        self.loops = 0
        self.rate = float(p["rate"])
        self.loop = bool(p["loop"])
        self.offset_ns = int(round(float(p["start_offset_s"]) * 1e9))
        if not self.rate > 0:
            raise BagError(f"rate must be positive (1.0 = real time), got {p['rate']}")
        if self.offset_ns < 0:
            raise BagError(f"start_offset_s must be >= 0, got {p['start_offset_s']}")
        bag = str(p["bag"] or "").strip()
        if not bag:
            raise BagError("parameter 'bag' is required: the rosbag2 directory to play "
                           "(--ros-args -p bag:=path/to/bag)")
        self.bag = Path(bag).expanduser()
        topics = p["topics"]
        if isinstance(topics, str):
            topics = [t for t in topics.split(",") if t.strip()]
        wanted = {_norm(t) for t in (topics or []) if str(t).strip()}
        wait_for = p["wait_for_topics"]
        if isinstance(wait_for, str):
            wait_for = [t for t in wait_for.split(",") if t.strip()]
        self.wait_for = sorted({_norm(t) for t in (wait_for or []) if str(t).strip()})
        self.delay_s = max(0.0, float(p["delay_s"]))

        with open_rosbag2(self.bag) as reader:  # a bag it cannot open raises BagError, which the runner reports
            conns = {}
            for c in reader.connections:
                conns.setdefault(c.topic, c.msgtype)
            self.start_ns, self.end_ns = int(reader.start_time), int(reader.end_time)
        missing = sorted(wanted - set(conns))
        if missing:
            log.warning(f"not in the bag: {', '.join(missing)} (it has {', '.join(sorted(conns))})")
        self.pubs: dict[str, object] = {}
        skipped = []
        for topic, msgtype in sorted(conns.items()):
            if wanted and topic not in wanted:
                continue
            cls = message_class(msgtype)
            if cls is None:
                skipped.append(f"{topic} ({msgtype})")
                continue
            self.pubs[topic] = self.create_publisher(cls, topic, qos_for(topic, msgtype))
        if skipped:
            log.warning(f"skipped, message types not importable here: {', '.join(skipped)}")
        not_played = [t for t in self.wait_for if t not in self.pubs]
        if not_played:
            raise BagError(f"wait_for_topics names topics this bag does not play: {', '.join(not_played)}")
        if not self.pubs:
            raise BagError(f"nothing to play from {self.bag}: topics {sorted(conns)}"
                           + (f", asked for {sorted(wanted)}" if wanted else ""))
        duration = (self.end_ns - self.start_ns) * 1e-9
        log.info(f"playing {self.bag} ({duration:.1f} s, from {self.offset_ns * 1e-9:g} s) at {self.rate:g}x"
                 f"{', looping' if self.loop else ''}: {', '.join(f'{t} ({conns[t]})' for t in self.pubs)}")
        self._thread = threading.Thread(target=self._run, name="bag_player", daemon=True)
        self._thread.start()

    def _declare(self, name: str, default, description: str):
        from rcl_interfaces.msg import ParameterDescriptor

        if not self.has_parameter(name):  # dynamic typing: -p rate:=2 (an int) is as good as 2.0
            self.declare_parameter(name, default, ParameterDescriptor(description=description, dynamic_typing=True))
        return self.get_parameter(name).value

    # ------------------------------------------------------------------ playing
    def _wait_ready(self) -> bool:
        """Wait for a subscriber on each of ``wait_for_topics``, then ``delay_s``; False when stopped meanwhile."""
        t_log = time.monotonic()
        while not all(self.pubs[t].get_subscription_count() > 0 for t in self.wait_for):
            if self._stop.wait(0.05):
                return False
            if time.monotonic() - t_log > 5.0:
                t_log = time.monotonic()
                missing = [t for t in self.wait_for if self.pubs[t].get_subscription_count() == 0]
                self.get_logger().info(f"waiting for a subscriber on {', '.join(missing)}")
        return not self._stop.wait(self.delay_s)

    def _run(self) -> None:
        try:
            if not self._wait_ready():
                return
            while not self._stop.is_set():
                n = self._play_once()
                self.loops += 1
                if n == 0:
                    self.get_logger().warning(f"no message after start_offset_s ({self.offset_ns * 1e-9:g} s)")
                if not self.loop or n == 0:
                    break
            if not self._stop.is_set():
                self.get_logger().info(f"end of {self.bag}: {self.published} messages published")
                self._stop.wait(LINGER_S)
        except Exception as e:  # a bag that breaks half way: say so and stop, never a silent thread death
            self.get_logger().error(f"playing {self.bag} failed after {self.published} messages: {e}")
        finally:
            self.finished = True

    def _play_once(self) -> int:
        n = 0
        with open_rosbag2(self.bag) as reader:
            conns = [c for c in reader.connections if c.topic in self.pubs]
            t0 = self.start_ns + self.offset_ns
            wall0 = time.monotonic()
            for c, t_ns, raw in reader.messages(connections=conns, start=t0):
                wait = wall0 + (t_ns - t0) * 1e-9 / self.rate - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    break
                if self._stop.is_set():
                    break
                self.pubs[c.topic].publish(bytes(raw))
                n += 1
                self.published += 1
        return n

    def destroy_node(self):
        self._stop.set()
        if self._thread is not None and self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)
        return super().destroy_node()


def main(args=None) -> None:
    from .runner import console_main

    console_main([BagPlayerNode], args)


if __name__ == "__main__":
    main()
