"""Subscribe to an audio topic of any supported message type and hand out decoded chunks.

``input_type`` selects the message: ``avperception`` (avperception_msgs/AudioFrame),
``audio_common`` (audio_common_msgs/AudioDataStamped + AudioInfo on ``info_topic``),
``audio_stamped`` (mgonzs13 audio_common_msgs/AudioStamped), ``odas``
(audio_utils_msgs/AudioFrame), ``float32`` (std_msgs/Float32MultiArray), or
``auto``: wait for the topic to appear and pick by its type.
"""

from __future__ import annotations

import importlib
from typing import Callable

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy

from ..audio import pcm

# input_type -> (ROS type name, module, class, adapter name)
INPUT_TYPES = {
    "avperception": ("avperception_msgs/msg/AudioFrame", "avperception_msgs.msg", "AudioFrame"),
    "audio_common": ("audio_common_msgs/msg/AudioDataStamped", "audio_common_msgs.msg", "AudioDataStamped"),
    "audio_stamped": ("audio_common_msgs/msg/AudioStamped", "audio_common_msgs.msg", "AudioStamped"),
    "odas": ("audio_utils_msgs/msg/AudioFrame", "audio_utils_msgs.msg", "AudioFrame"),
    "float32": ("std_msgs/msg/Float32MultiArray", "std_msgs.msg", "Float32MultiArray"),
}


def audio_qos(depth: int = 50) -> QoSProfile:
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)


def _load(input_type: str):
    type_name, module, cls = INPUT_TYPES[input_type]
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as e:
        raise RuntimeError(f"input_type '{input_type}' needs the {type_name.split('/')[0]} package, which is not installed") from e


class AudioInput:
    """Owns the audio subscription(s) of a node; calls ``on_chunk(AudioChunk)`` per message.

    Decoding errors are logged (throttled) and counted in ``errors``; they never raise into the executor.
    """

    def __init__(self, node: Node, topic: str, input_type: str, on_chunk: Callable[[pcm.AudioChunk], None],
                 float32_sample_rate: int = 16000, float32_channels: int = 0, float32_layout: str = "interleaved",
                 info_topic: str = "audio_info") -> None:
        if input_type != "auto" and input_type not in INPUT_TYPES:
            raise ValueError(f"input_type must be auto or one of {', '.join(INPUT_TYPES)}, got {input_type!r}")
        self.node = node
        self.topic = node.resolve_topic_name(topic)
        self.on_chunk = on_chunk
        self.f32 = (float32_sample_rate, float32_channels, float32_layout)
        self.info_topic = info_topic
        self._info = None
        self.errors = 0
        self.input_type: str | None = None
        self._subs = []
        self._timer = None
        if input_type == "auto":
            self._timer = node.create_timer(0.2, self._detect)
            self._detect()
        else:
            self._subscribe(input_type)
            node.get_logger().info(f"audio input: {self.topic} as {INPUT_TYPES[input_type][0]} "
                                   f"(input_type {input_type})")

    def _detect(self) -> None:
        if self.input_type is not None:
            return
        types = dict(self.node.get_topic_names_and_types())
        found = types.get(self.topic, [])
        for name, (type_name, _, _) in INPUT_TYPES.items():
            if type_name in found:
                try:
                    self._subscribe(name)
                except RuntimeError as e:
                    self.node.get_logger().error(str(e))
                    continue
                self.node.get_logger().info(f"audio input: {self.topic} carries {type_name}")
                if self._timer is not None:
                    self._timer.cancel()
                return

    def _subscribe(self, input_type: str) -> None:
        cls = _load(input_type)
        self.input_type = input_type
        self._subs.append(self.node.create_subscription(cls, self.topic, self._callback, audio_qos()))
        if input_type == "audio_common":
            info_cls = getattr(importlib.import_module("audio_common_msgs.msg"), "AudioInfo")
            self._subs.append(self.node.create_subscription(info_cls, self.info_topic,
                                                            lambda m: setattr(self, "_info", m), audio_qos(1)))

    def decode(self, msg) -> pcm.AudioChunk:
        t = self.input_type
        if t == "avperception":
            return pcm.from_audio_frame(msg)
        if t == "audio_common":
            return pcm.from_audio_common(msg, self._info)
        if t == "audio_stamped":
            return pcm.from_audio_stamped(msg)
        if t == "odas":
            return pcm.from_odas_audio_frame(msg)
        rate, ch, layout = self.f32
        return pcm.from_float32_multiarray(msg, rate, ch, layout)

    def _callback(self, msg) -> None:
        try:
            chunk = self.decode(msg)
        except (pcm.AudioFormatError, ValueError) as e:
            self.errors += 1
            self.node.get_logger().error(f"cannot decode audio on {self.topic}: {e}", throttle_duration_sec=5.0)
            return
        self.on_chunk(chunk)
