"""Message-agnostic PCM decoding/encoding and adapters for existing audio message layouts.

The adapters read message objects by attribute only (no ROS import), so they
work on real ROS messages, on ``rosbags`` deserialised messages and on simple
test doubles alike. Each returns an :class:`AudioChunk`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# encoding name -> (numpy dtype, full-scale value used to map to [-1, 1])
ENCODINGS: dict[str, tuple[str, float]] = {
    "S16LE": ("<i2", 32768.0),
    "S32LE": ("<i4", 2147483648.0),
    "F32LE": ("<f4", 1.0),
    "F64LE": ("<f8", 1.0),
    "S8": ("i1", 128.0),
    "U8": ("u1", 128.0),
}

# odas_ros / audio_utils format strings
_AUDIO_UTILS = {"signed_8": "S8", "unsigned_8": "U8", "signed_16": "S16LE", "signed_32": "S32LE",
                "float": "F32LE", "double": "F64LE"}
# audio_common (ros-drivers) sample_format strings
_AUDIO_COMMON = {"S16LE": "S16LE", "S32LE": "S32LE", "F32LE": "F32LE", "S8": "S8", "U8": "U8",
                 "S16": "S16LE", "S32": "S32LE", "F32": "F32LE"}
# PyAudio format constants used by mgonzs13/audio_common
_PYAUDIO = {1: "float32_data", 2: "int32_data", 8: "int16_data", 16: "int8_data", 32: "uint8_data"}
_PYAUDIO_SCALE = {"float32_data": 1.0, "int32_data": 2147483648.0, "int16_data": 32768.0,
                  "int8_data": 128.0, "uint8_data": 128.0}


class AudioFormatError(ValueError):
    """Audio data that cannot be decoded as declared."""


@dataclass
class AudioChunk:
    """Decoded audio: ``data`` is ``(channels, samples)`` float32 in [-1, 1]."""

    data: np.ndarray
    sample_rate: int
    stamp: float | None = None
    sequence: int | None = None
    frame_id: str = ""


def decode_interleaved(data: bytes | bytearray | memoryview | np.ndarray, encoding: str, channels: int) -> np.ndarray:
    """Interleaved PCM bytes -> ``(channels, samples)`` float32 in [-1, 1]."""
    if encoding not in ENCODINGS:
        raise AudioFormatError(f"unsupported encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    if channels <= 0:
        raise AudioFormatError(f"channels must be positive, got {channels}")
    dtype, scale = ENCODINGS[encoding]
    buf = np.asarray(data, dtype=np.uint8) if not isinstance(data, (bytes, bytearray, memoryview)) else data
    raw = np.frombuffer(buf, dtype=np.uint8)
    width = np.dtype(dtype).itemsize
    if raw.size % (width * channels):
        raise AudioFormatError(
            f"{raw.size} bytes is not a whole number of {channels}-channel {encoding} samples ({width * channels} bytes each)"
        )
    x = raw.view(dtype).reshape(-1, channels).T.astype(np.float32)
    if encoding == "U8":
        x -= 128.0
    return x / scale if scale != 1.0 else x


def encode_interleaved(x: np.ndarray, encoding: str = "S16LE") -> bytes:
    """``(channels, samples)`` float in [-1, 1] -> interleaved PCM bytes (clipped)."""
    if encoding not in ENCODINGS:
        raise AudioFormatError(f"unsupported encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    dtype, scale = ENCODINGS[encoding]
    x = np.asarray(x, dtype=np.float64).T
    if scale == 1.0:
        return np.ascontiguousarray(x.astype(dtype)).tobytes()
    if encoding == "U8":
        return np.clip(np.round(x * scale + 128), 0, 255).astype(dtype).tobytes()
    return np.clip(np.round(x * scale), -scale, scale - 1).astype(dtype).tobytes()


def stamp_to_sec(stamp: Any) -> float:
    """``builtin_interfaces/Time``-like object -> seconds."""
    return float(stamp.sec) + float(getattr(stamp, "nanosec", 0)) * 1e-9


# ---------------------------------------------------------------------------- adapters


def from_audio_frame(msg: Any) -> AudioChunk:
    """avperception_msgs/AudioFrame."""
    x = decode_interleaved(bytes(msg.data), msg.encoding, int(msg.channels))
    return AudioChunk(x, int(msg.sample_rate), stamp_to_sec(msg.header.stamp), int(msg.sequence), msg.header.frame_id)


def from_odas_audio_frame(msg: Any) -> AudioChunk:
    """odas_ros audio_utils_msgs/AudioFrame (header, format, channel_count, sampling_frequency, frame_sample_count, data)."""
    fmt = _AUDIO_UTILS.get(msg.format)
    if fmt is None:
        raise AudioFormatError(f"unsupported audio_utils format {msg.format!r}; supported: {', '.join(_AUDIO_UTILS)}")
    x = decode_interleaved(bytes(msg.data), fmt, int(msg.channel_count))
    n = int(getattr(msg, "frame_sample_count", x.shape[1]) or x.shape[1])
    if n != x.shape[1]:
        raise AudioFormatError(f"frame_sample_count says {n} samples but data holds {x.shape[1]}")
    return AudioChunk(x, int(msg.sampling_frequency), stamp_to_sec(msg.header.stamp), None, msg.header.frame_id)


def from_audio_common(msg: Any, info: Any) -> AudioChunk:
    """audio_common_msgs/AudioDataStamped (header, audio.data) with the stream's AudioInfo
    (channels, sample_rate, sample_format, coding_format)."""
    if info is None:
        raise AudioFormatError("audio_common audio needs its AudioInfo message (audio_info topic) first")
    coding = getattr(info, "coding_format", "wave") or "wave"
    if coding.lower() not in ("wave", "raw", "pcm", "s16le", "s32le", "f32le"):
        raise AudioFormatError(f"audio_common coding_format {coding!r} is compressed; publish raw PCM ('wave')")
    fmt = _AUDIO_COMMON.get(str(info.sample_format).upper())
    if fmt is None:
        raise AudioFormatError(f"unsupported audio_common sample_format {info.sample_format!r}")
    x = decode_interleaved(bytes(msg.audio.data), fmt, int(info.channels))
    return AudioChunk(x, int(info.sample_rate), stamp_to_sec(msg.header.stamp), None, msg.header.frame_id)


def from_audio_stamped(msg: Any) -> AudioChunk:
    """mgonzs13 audio_common_msgs/AudioStamped (header, audio.audio_data.*_data, audio.info.{format, channels, rate})."""
    info = msg.audio.info
    field = _PYAUDIO.get(int(info.format))
    if field is None:
        raise AudioFormatError(f"unsupported PyAudio format {info.format}; supported: {sorted(_PYAUDIO)}")
    raw = np.asarray(getattr(msg.audio.audio_data, field), dtype=np.float64)
    ch = int(info.channels)
    if ch <= 0:
        raise AudioFormatError(f"channels must be positive, got {ch}")
    if raw.size % ch:
        raise AudioFormatError(f"{raw.size} samples do not split into {ch} channels")
    x = raw.reshape(-1, ch).T
    if field == "uint8_data":
        x = x - 128.0
    x = (x / _PYAUDIO_SCALE[field]).astype(np.float32)
    return AudioChunk(x, int(info.rate), stamp_to_sec(msg.header.stamp), None, msg.header.frame_id)


def from_float32_multiarray(msg: Any, sample_rate: int, channels: int, layout: str = "interleaved",
                            stamp: float | None = None) -> AudioChunk:
    """std_msgs/Float32MultiArray, last resort: no stamp and no rate in the message.

    ``layout``: ``interleaved`` (s0c0 s0c1 ...) or ``planar`` (all of channel 0, then channel 1 ...).
    When ``layout.dim`` is filled with two dimensions, a dimension labelled
    ``channels`` decides the layout instead.
    """
    raw = np.asarray(msg.data, dtype=np.float32)
    dims = list(getattr(getattr(msg, "layout", None), "dim", []) or [])
    if len(dims) == 2:
        labels = [d.label for d in dims]
        sizes = [int(d.size) for d in dims]
        if "channels" in labels:
            ci = labels.index("channels")
            channels = sizes[ci]
            layout = "planar" if ci == 0 else "interleaved"
    if channels <= 0 or raw.size % channels:
        raise AudioFormatError(f"{raw.size} values do not split into {channels} channels")
    if layout == "interleaved":
        x = raw.reshape(-1, channels).T
    elif layout == "planar":
        x = raw.reshape(channels, -1)
    else:
        raise AudioFormatError(f"layout must be 'interleaved' or 'planar', got {layout!r}")
    return AudioChunk(np.ascontiguousarray(x), int(sample_rate), stamp, None, "")
