"""AudioBuffer: a bounded ring that turns a stream of audio chunks into analysis frames.

The subscriber callback calls :meth:`AudioBuffer.push` (a copy into a
preallocated ring under a short lock: it never waits for the consumer); the
processing side calls :meth:`AudioBuffer.pop_frames`. Everything that goes wrong
in a live stream is detected and counted rather than silently absorbed:

- gaps (a chunk starts at least half a chunk later than the previous one
  ended): framing restarts after the gap so no frame straddles it; smaller
  timing errors are jitter or clock drift and only move the time anchor;
- overlaps (a chunk starts before the previous one ended, by less than
  ``reset_s``): the overlapping head is trimmed;
- clock resets (a chunk starts ``reset_s`` or more before the previous one
  ended: a publisher restarted, a bag looped, the clock was set): framing
  restarts at the chunk instead of discarding audio until the stamps catch up;
- lost messages (the publisher's sequence number jumps; messages the consumer
  rejected are not lost, :meth:`AudioBuffer.skip_sequence`) and publisher
  restarts (the sequence number goes back);
- rate mismatch (the stamps say the stream runs at another rate than declared);
- overruns (the consumer fell behind by more than the ring holds, or more than
  ``max_pending_frames``): the oldest frames are dropped.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class BufferStats:
    chunks: int = 0
    samples_in: int = 0
    frames_out: int = 0
    gaps: int = 0
    gap_seconds: float = 0.0
    overlaps: int = 0
    overlap_samples: int = 0
    lost_messages: int = 0
    dropped_frames: int = 0
    dropped_samples: int = 0
    rejected_chunks: int = 0
    clock_resets: int = 0
    publisher_restarts: int = 0
    measured_rate: float = 0.0
    rate_mismatch: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def ring_write(ring: np.ndarray, index: int, x: np.ndarray) -> None:
    """Write ``x (channels, n)`` into ``ring (channels, capacity)`` at absolute sample ``index`` (wrapping);
    ``n`` must not exceed the capacity."""
    cap, n = ring.shape[1], x.shape[1]
    i = index % cap
    first = min(n, cap - i)
    ring[:, i: i + first] = x[:, :first]
    if first < n:
        ring[:, : n - first] = x[:, first:]


class AudioBuffer:
    """Frames a multichannel stream.

    Args:
        channels: channels per chunk.
        sample_rate: declared rate (Hz).
        frame_samples: samples per analysis frame.
        hop_samples: samples between consecutive frame starts.
        capacity_seconds: ring size; older unread audio is overwritten (and counted).
        max_pending_frames: keep at most this many ready frames; older ones are
            dropped (and counted) so the consumer always works on recent audio.
        gap_tolerance_s: timing error accepted between consecutive chunks
            (default: 2 samples or 1 ms, whichever is larger).
        rate_tolerance: relative rate error that raises ``rate_mismatch``.
        reset_s: a chunk starting this much or more before the previous one ended is a clock reset.
    """

    def __init__(
        self,
        channels: int,
        sample_rate: int,
        frame_samples: int,
        hop_samples: int,
        capacity_seconds: float = 4.0,
        max_pending_frames: int = 4,
        gap_tolerance_s: float | None = None,
        rate_tolerance: float = 0.02,
        reset_s: float = 0.5,
    ) -> None:
        if channels <= 0 or sample_rate <= 0 or frame_samples <= 0 or hop_samples <= 0:
            raise ValueError("channels, sample_rate, frame_samples and hop_samples must be positive")
        self.channels = int(channels)
        self.fs = int(sample_rate)
        self.frame = int(frame_samples)
        self.hop = int(hop_samples)
        self.capacity = max(int(capacity_seconds * sample_rate), 2 * self.frame)
        self.max_pending = max(1, int(max_pending_frames))
        self.tol = gap_tolerance_s if gap_tolerance_s is not None else max(2.0 / sample_rate, 1e-3)
        self.rate_tol = rate_tolerance
        self.reset_s = float(reset_s)
        self._ring = np.zeros((self.channels, self.capacity), dtype=np.float32)
        self._lock = threading.Lock()
        self.stats = BufferStats()
        self._w = 0  # absolute index of the next sample to write
        self._r = 0  # absolute index of the next frame start
        self._t0: float | None = None  # stamp of absolute sample _s0
        self._s0 = 0
        self._expected: float | None = None  # stamp the next chunk should have
        self._seq: int | None = None
        self._last_n = 0
        self._rate_ref: tuple[float, int] | None = None  # (stamp, samples) at the start of rate estimation

    # ------------------------------------------------------------------ producer side
    def push(self, chunk: np.ndarray, stamp: float | None = None, sequence: int | None = None) -> None:
        """Append ``(channels, n)`` audio whose first sample was captured at ``stamp`` (s)."""
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim != 2 or chunk.shape[0] != self.channels:
            with self._lock:
                self.stats.rejected_chunks += 1
            raise ValueError(f"expected ({self.channels}, samples) audio, got {chunk.shape}")
        n = chunk.shape[1]
        if n == 0:
            return
        with self._lock:
            st = self.stats
            st.chunks += 1
            self._note_sequence(sequence)
            if stamp is None:
                stamp = self._expected if self._expected is not None else 0.0
            if self._expected is not None:
                dt = stamp - self._expected
                # a late chunk is a gap when at least half a chunk is missing; less is clock jitter or
                # drift (re-anchored below and seen by the rate estimate)
                if dt > max(self.tol, 0.5 * self._last_n / self.fs):  # gap: restart framing at this chunk
                    st.gaps += 1
                    st.gap_seconds += dt
                    self._r = self._w
                    self._rate_ref = None
                elif dt <= -self.reset_s:  # the clock went back: start again here rather than wait for it
                    st.clock_resets += 1
                    self._r = self._w
                    self._rate_ref = None
                elif dt < -self.tol:  # overlap: trim what we already have
                    trim = int(round(-dt * self.fs))
                    st.overlaps += 1
                    st.overlap_samples += min(trim, n)
                    if trim >= n:
                        return
                    chunk = chunk[:, trim:]
                    stamp = stamp + trim / self.fs
                    n = chunk.shape[1]
            # anchor the timeline at this chunk
            self._t0, self._s0 = stamp, self._w
            self._expected = stamp + n / self.fs
            self._last_n = n
            self._update_rate(stamp, n)
            self._write(chunk)
            st.samples_in += n
            self._enforce_limits()

    def _note_sequence(self, sequence: int | None) -> None:
        if sequence is None:
            return
        if self._seq is not None:
            if sequence > self._seq + 1:
                self.stats.lost_messages += sequence - self._seq - 1
            elif sequence < self._seq:
                self.stats.publisher_restarts += 1  # the count started again: nothing was lost
        self._seq = sequence

    def skip_sequence(self, sequence: int | None) -> None:
        """A message the consumer rejected (wrong rate, channels, format): its sequence number was seen, so the
        messages around it are not counted as lost."""
        with self._lock:
            self._note_sequence(sequence)

    def count_dropped_frames(self, n: int) -> None:
        """Frames the consumer took but did not use (it worked on newer ones): counted as dropped."""
        if n > 0:
            with self._lock:
                self.stats.dropped_frames += int(n)

    def expected_stamp(self) -> float | None:
        """Where the next chunk should start (s), from the last one's stamp and length; None before any."""
        with self._lock:
            return self._expected

    def _write(self, chunk: np.ndarray) -> None:
        n = chunk.shape[1]
        if n > self.capacity:
            self.stats.dropped_samples += n - self.capacity
            chunk = chunk[:, -self.capacity:]
            self._w += n - self.capacity
            n = self.capacity
        ring_write(self._ring, self._w, chunk)
        self._w += n

    def _update_rate(self, stamp: float, n: int) -> None:
        if self._rate_ref is None:
            self._rate_ref = (stamp, 0)
            self._rate_samples = n
            return
        span = stamp - self._rate_ref[0]
        if span > 1.0:
            rate = self._rate_samples / span
            self.stats.measured_rate = rate
            self.stats.rate_mismatch = abs(rate - self.fs) > self.rate_tol * self.fs
        self._rate_samples += n

    def _enforce_limits(self) -> None:
        # frames whose start was overwritten are lost
        oldest = self._w - self.capacity
        if self._r < oldest:
            skip = -(-(oldest - self._r) // self.hop)
            self.stats.dropped_frames += skip
            self._r += skip * self.hop
        ready = self._ready()
        if ready > self.max_pending:
            skip = ready - self.max_pending
            self.stats.dropped_frames += skip
            self._r += skip * self.hop

    def _ready(self) -> int:
        avail = self._w - self._r
        return 0 if avail < self.frame else 1 + (avail - self.frame) // self.hop

    # ------------------------------------------------------------------ consumer side
    def pending(self) -> int:
        with self._lock:
            return self._ready()

    def pop_frames(self, max_frames: int | None = None) -> list[tuple[float, np.ndarray]]:
        """Take the ready frames: ``[(stamp_of_first_sample, (channels, frame_samples)), ...]``."""
        out = []
        with self._lock:
            k = self._ready()
            if max_frames is not None:
                k = min(k, max_frames)
            for _ in range(k):
                i = self._r % self.capacity
                if i + self.frame <= self.capacity:
                    block = self._ring[:, i: i + self.frame].copy()
                else:
                    block = np.concatenate([self._ring[:, i:], self._ring[:, : i + self.frame - self.capacity]], axis=1)
                t = (self._t0 or 0.0) + (self._r - self._s0) / self.fs
                out.append((t, block))
                self._r += self.hop
            self.stats.frames_out += len(out)
        return out
