"""AudioIngest: the policy for incoming audio messages, shared by the live node and the bag replay.

Each decoded :class:`~avperception.audio.pcm.AudioChunk` goes through the same steps wherever it comes from:

1. validation (:func:`validate_chunk`): the declared rate must be the pipeline's, the message must hold samples
   and at most ``max_chunk_seconds`` of them, and its channels must fit the array
   (:meth:`~avperception.config.ArrayGeometry.select_channels`); a message that fails is dropped, counted by kind
   (:data:`DROP_KINDS`) and its sequence number marked seen so the messages around it are not counted as lost;
2. repair (:func:`repair_nonfinite`): NaN/Inf samples become zeros (a NaN would spread through every map and
   window it touches); the message is kept and counted;
3. the stamp (:func:`chunk_stamp`): the message's own stamp, else the sample clock continued while the arrival
   time agrees with it, else the arrival time less the chunk's duration;
4. framing: the chunk goes into an :class:`~avperception.audio.buffer.AudioBuffer`, whose frames are taken all
   (:meth:`AudioIngest.pop_all`, offline replay) or newest only (:meth:`AudioIngest.pop_newest`, the live node
   when it falls behind; the others are counted as dropped frames).

Nothing here imports ROS: the arrival time is passed in (the node's clock, or a bag's log time).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..config import ConfigError
from ..constants import MAX_CHUNK_SECONDS
from .buffer import AudioBuffer
from .pcm import AudioChunk

DROP_KINDS = ("rate", "channels", "format", "empty", "oversized")
"""Why an audio message was dropped: wrong sample rate, channels that do not fit the array, undecodable
(counted by the decoder's caller), no samples, more than ``max_chunk_seconds``."""
STAMP_AGREE_S = 0.5
"""A stamp-less chunk continues the sample clock while its arrival agrees with it within this many seconds."""


class AudioRejected(ValueError):
    """An audio message that cannot be used: ``kind`` is one of :data:`DROP_KINDS`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def validate_chunk(chunk: AudioChunk, array, sample_rate: int,
                   max_chunk_seconds: float = MAX_CHUNK_SECONDS) -> np.ndarray:
    """The array's ``(mics, samples)`` audio of a decoded chunk, or :class:`AudioRejected`.

    ``chunk.data`` is ``(channels, samples)`` as published; checked in this order: rate, empty, oversized,
    channels (``array.select_channels`` picks the array's microphones from the device's channels)."""
    data = np.asarray(chunk.data)
    n = data.shape[1] if data.ndim == 2 else 0
    if int(chunk.sample_rate) != int(sample_rate):
        raise AudioRejected("rate", f"audio at {chunk.sample_rate} Hz but the pipeline expects {sample_rate} Hz; "
                                    f"set sample_rate to match")
    if n == 0:
        raise AudioRejected("empty", "a message without samples")
    if n > float(max_chunk_seconds) * sample_rate:
        raise AudioRejected("oversized", f"{n / sample_rate:.2f} s of audio in one message, more than "
                                         f"max_chunk_seconds ({max_chunk_seconds} s); publish shorter chunks or "
                                         f"raise it")
    try:
        return array.select_channels(data)
    except ConfigError as e:
        raise AudioRejected("channels", str(e)) from e


def repair_nonfinite(block: np.ndarray) -> tuple[np.ndarray, int]:
    """``(mics, samples)`` audio with NaN/Inf samples replaced by zeros, and how many were replaced (the input
    itself when there were none)."""
    bad = ~np.isfinite(block)
    count = int(np.count_nonzero(bad))
    if not count:
        return block, 0
    return np.where(bad, 0.0, block).astype(np.float32), count


def chunk_stamp(stamp: float | None, arrival: float, samples: int, sample_rate: int, expected: float | None,
                agree_s: float = STAMP_AGREE_S) -> float:
    """The capture time (s) of a chunk's first sample.

    ``stamp``: the message's own (None, or 0 from an unset header, when it has none); ``arrival``: when the chunk
    arrived (s, on the stamps' clock); ``samples``: its length; ``expected``: where the sample clock says it starts
    (the previous chunk's stamp plus its duration; None before any). Its own stamp wins; without one the sample
    clock is continued while ``arrival - samples / sample_rate`` agrees with it within ``agree_s``, else that
    arrival-based time starts a new anchor."""
    if stamp:
        return float(stamp)
    start = arrival - samples / sample_rate
    return expected if expected is not None and abs(start - expected) < agree_s else start


def newest_frame(frames: list[tuple[float, np.ndarray]]) -> tuple[tuple[float, np.ndarray] | None, int]:
    """The last of ``[(stamp, (mics, frame_samples)), ...]`` (None when empty) and how many older ones it skips."""
    return (frames[-1] if frames else None), max(len(frames) - 1, 0)


@dataclass
class Ingested:
    """What became of one audio message: ``block`` ``(mics, samples)`` float32 and its ``stamp`` when kept, or
    ``rejected`` (a :data:`DROP_KINDS` kind) and ``message`` (what to do) when dropped; ``nonfinite``: NaN/Inf
    samples replaced by zeros."""

    block: np.ndarray | None
    stamp: float | None
    sequence: int | None
    rejected: str = ""
    message: str = ""
    nonfinite: int = 0

    @property
    def ok(self) -> bool:
        return self.block is not None


class AudioIngest:
    """Validates, repairs, stamps and frames a stream of audio messages.

    Args:
        array: the :class:`~avperception.config.ArrayGeometry` whose microphones are kept.
        sample_rate: the pipeline's rate (Hz); messages at another are dropped.
        buffer: where kept chunks go (None: not framed, e.g. a replay without a beamformer).
        max_chunk_seconds: longer messages are dropped as ``oversized``.

    Counters: ``drops`` (kind -> messages dropped, every kind of :data:`DROP_KINDS` present), ``nonfinite_chunks``
    and ``nonfinite_samples`` (repaired), ``chunks`` (kept).
    """

    def __init__(self, array, sample_rate: int, buffer: AudioBuffer | None = None,
                 max_chunk_seconds: float = MAX_CHUNK_SECONDS) -> None:
        if max_chunk_seconds <= 0:
            raise ValueError(f"max_chunk_seconds must be positive, got {max_chunk_seconds}")
        self.array = array
        self.fs = int(sample_rate)
        self.buffer = buffer
        self.max_chunk_seconds = float(max_chunk_seconds)
        self.drops: Counter[str] = Counter({k: 0 for k in DROP_KINDS})
        self.nonfinite_chunks = 0
        self.nonfinite_samples = 0
        self.chunks = 0
        self._expected: float | None = None  # end of the last kept chunk, without a buffer

    def expected_stamp(self) -> float | None:
        """Where the next chunk should start (s) on the sample clock; None before any."""
        return self.buffer.expected_stamp() if self.buffer is not None else self._expected

    def drop(self, kind: str, sequence: int | None = None) -> None:
        """Count a dropped message (``kind`` from :data:`DROP_KINDS`) and keep its sequence number seen."""
        if kind not in self.drops:
            raise ValueError(f"unknown drop kind {kind!r}; one of {', '.join(DROP_KINDS)}")
        self.drops[kind] += 1
        if self.buffer is not None:
            self.buffer.skip_sequence(sequence)

    def accept(self, chunk: AudioChunk, arrival: float) -> Ingested:
        """Validate, repair, stamp one decoded message and push it into the buffer (if any).

        ``arrival``: when it arrived (s) on the stamps' clock (the node's clock, a bag's log time)."""
        try:
            block = validate_chunk(chunk, self.array, self.fs, self.max_chunk_seconds)
        except AudioRejected as e:
            self.drop(e.kind, chunk.sequence)
            return Ingested(None, None, chunk.sequence, e.kind, str(e))
        block, bad = repair_nonfinite(block)
        if bad:
            self.nonfinite_chunks += 1
            self.nonfinite_samples += bad
        n = block.shape[1]
        stamp = chunk_stamp(chunk.stamp, arrival, n, self.fs, self.expected_stamp())
        self.chunks += 1
        if self.buffer is not None:
            self.buffer.push(block, stamp, chunk.sequence)
        else:
            self._expected = stamp + n / self.fs
        return Ingested(block, stamp, chunk.sequence, nonfinite=bad)

    def pop_all(self) -> list[tuple[float, np.ndarray]]:
        """Every ready frame ``[(stamp_of_first_sample, (mics, frame_samples)), ...]`` (offline: none skipped)."""
        return self.buffer.pop_frames() if self.buffer is not None else []

    def pop_newest(self) -> tuple[float, np.ndarray] | None:
        """The newest ready frame ``(stamp_of_first_sample, (mics, frame_samples))`` or None; older ready frames
        are dropped and counted in the buffer's ``dropped_frames`` (live: work on the newest audio when behind)."""
        if self.buffer is None:
            return None
        frame, skipped = newest_frame(self.buffer.pop_frames())
        self.buffer.count_dropped_frames(skipped)
        return frame
