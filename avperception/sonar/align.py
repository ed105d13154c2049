"""From an audio stream and its pings to one window per ping, sample 0 at the sweep's onset.

:class:`PingAligner` keeps the stream in a ring addressed by absolute sample
indices, with each chunk's stamp (the capture time of its first sample), so a
Ping message's stamp maps to a sample index. For each ping whose window is in
the ring it cuts the audio around the nominal onset, moves the onset to the
direct path's peak (:func:`~avperception.sonar.onset.refine_onset`, also for
an exactly known onset: it fixes a few samples of stamp rounding) and returns
the window. Without Ping messages (none yet, or none for two ping periods) it
finds the pings itself (:func:`~avperception.sonar.onset.detect_onsets` over
the new audio). Nothing here waits: what cannot be aligned is skipped and
counted by reason.

Stream timing: a chunk that starts later than the previous one ended (by half a
chunk or more) opens a new segment, and no window straddles two segments;
smaller timing errors are jitter and only move the time anchor. A chunk that
starts before the previous one ended has its head trimmed; a stamp that jumps
back by more than a second is a new clock (a replayed bag looping): the time
anchors restart there and the queued pings are dropped.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..audio.buffer import ring_write
from .onset import DirectPath, direct_score, pick_onsets, refine_onset

SKIP_REASONS = ("no_direct_path", "gap_in_window", "overwritten", "incomplete_timeout", "queue_full", "before_audio",
                "sweep_mismatch")


@dataclass
class AlignedWindow:
    """One ping's window.

    Attributes:
        stamp: time of the (refined) onset, in the audio's clock (s).
        audio: ``(M, window)`` float32, sample 0 = the onset.
        sequence: the Ping message's sequence (detected pings: the aligner's own count).
        onset_index: absolute sample index of the onset in the stream.
        correction: refined minus nominal onset (samples).
        completed_stamp: stamp of the last sample the window needed (for latency).
        detected: found without a Ping message.
    """

    stamp: float
    audio: np.ndarray
    sequence: int
    onset_index: int
    correction: int
    completed_stamp: float
    detected: bool = False


@dataclass
class _Pending:
    stamp: float | None  # Ping stamp (None: detected, index known)
    sequence: int
    onset_known: bool
    index: int | None  # absolute nominal onset, when known
    queued_at: int  # write index when queued (for the timeout)


class PingAligner:
    """Aligns pings to a multichannel stream.

    Args:
        channels: channels per audio chunk (the direct path's microphones).
        fs: sample rate (Hz).
        window: samples per aligned window (e.g. 2048).
        direct: the sweep's direct path (:meth:`DirectPath.build`).
        capacity_s: ring length; older audio is overwritten.
        search: half-width (samples) of the onset refinement for pings with a known onset.
        detect: find pings in the audio when no Ping message comes.
        ping_period_s: the emitter's ping period: detection starts after two periods without a Ping
            message and keeps detected pings at least half a period apart. ``None``: 0.5 s.
        max_pending: pings queued at most (the oldest is dropped and counted as ``queue_full``).
        search_unknown: half-width for pings whose onset is only scheduled (``onset_known`` false);
            default ``4 * search``.
        min_snr_db: a refined onset's direct path must stand this far above the local score median.
        detect_threshold_db: a detected ping's direct path must stand this far above the noise floor.
        require_direct_path: ``False`` keeps a ping with a known onset at its nominal index when its
            direct path is not found (a muted speaker then still gives windows).
        gap_tolerance_s: timing error between chunks taken as jitter (default 2 samples or 1 ms).

    Counters: ``aligned``, ``detected``, ``skipped`` (by reason, :data:`SKIP_REASONS`),
    ``mean_abs_correction``, and stream ones: ``gaps``, ``overlaps``, ``clock_resets``, ``lost_messages``;
    :meth:`stats` gathers them.
    """

    def __init__(self, channels: int, fs: int, window: int, direct: DirectPath, capacity_s: float = 4.0,
                 search: int = 64, detect: bool = True, ping_period_s: float | None = None, max_pending: int = 4,
                 search_unknown: int | None = None, min_snr_db: float = 12.0, detect_threshold_db: float = 20.0,
                 require_direct_path: bool = True, gap_tolerance_s: float | None = None) -> None:
        if channels != direct.num_mics:
            raise ValueError(f"the direct path has {direct.num_mics} microphones but the stream {channels} channels; "
                             "build it from the same array")
        if window <= 0 or fs <= 0 or search < 0:
            raise ValueError("window and fs must be positive and search not negative")
        self.channels, self.fs, self.window = int(channels), int(fs), int(window)
        self.direct = direct
        self.search = int(search)
        self.search_unknown = int(search_unknown) if search_unknown is not None else 4 * self.search
        self.before, self.after = direct.span
        self.need_after = max(self.after, self.window)  # samples needed after the last onset candidate
        self.capacity = max(int(capacity_s * fs), 4 * (self.window + 2 * self.search_unknown + direct.length))
        self.detect = bool(detect)
        self.period = float(ping_period_s) if ping_period_s else 0.5
        self.min_spacing = max(1, int(0.5 * self.period * fs))
        self.max_pending = max(1, int(max_pending))
        self.min_snr_db, self.detect_threshold_db = float(min_snr_db), float(detect_threshold_db)
        self.require_direct_path = bool(require_direct_path)
        self.tol = gap_tolerance_s if gap_tolerance_s is not None else max(2.0 / fs, 1e-3)
        self._ring = np.zeros((self.channels, self.capacity), dtype=np.float32)
        self._lock = threading.Lock()
        self._w = 0  # absolute index of the next sample written
        self._anchor_idx: list[int] = []  # per chunk: absolute index of its first sample ...
        self._anchor_t: list[float] = []  # ... and its stamp
        self._seg_starts: list[int] = [0]  # absolute indices where a segment begins
        self._expected: float | None = None
        self._last_n = 0
        self._seq: int | None = None
        self._first_stamp: float | None = None
        self._pending: deque[_Pending] = deque()
        self._last_ping_stamp: float | None = None
        self._scan: int | None = None  # next onset candidate detection looks at
        self._last_onset: int | None = None  # absolute onset of the last window emitted or detected ping queued
        self._floors: deque[float] = deque(maxlen=16)
        self._peaks: deque[float] = deque(maxlen=8)  # direct-path scores of the last detected pings
        self._last_peak = 0.0
        # counters
        self.aligned = 0
        self.detected = 0
        self.skipped = {k: 0 for k in SKIP_REASONS}
        self.gaps = self.overlaps = self.clock_resets = self.lost_messages = 0
        self._abs_correction_sum = 0

    # ------------------------------------------------------------------ input
    def push_audio(self, block: np.ndarray, stamp: float | None = None, sequence: int | None = None) -> None:
        """Append ``(M, n)`` audio whose first sample was captured at ``stamp`` (s; ``None``: right after the
        previous chunk). ``sequence``: the message's sequence number (jumps are counted as lost)."""
        x = np.asarray(block, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] != self.channels:
            raise ValueError(f"expected ({self.channels}, samples) audio, got {x.shape}")
        n = x.shape[1]
        if n == 0:
            return
        with self._lock:
            if sequence is not None:
                if self._seq is not None and sequence > self._seq + 1:
                    self.lost_messages += sequence - self._seq - 1
                self._seq = int(sequence)
            if stamp is None:
                stamp = self._expected if self._expected is not None else 0.0
            stamp = float(stamp)
            if self._expected is not None:
                dt = stamp - self._expected
                if dt < -1.0:  # the clock went back: a new timeline
                    self.clock_resets += 1
                    self._new_segment()
                    self._anchor_idx.clear()
                    self._anchor_t.clear()
                    self.skipped["overwritten"] += len(self._pending)
                    self._pending.clear()
                    self._first_stamp = stamp
                    self._last_ping_stamp = None
                elif dt > max(self.tol, 0.5 * self._last_n / self.fs):
                    self.gaps += 1
                    self._new_segment()
                elif dt < -self.tol:  # overlap: keep what we have, trim the head
                    trim = int(round(-dt * self.fs))
                    self.overlaps += 1
                    if trim >= n:
                        return
                    x = x[:, trim:]
                    stamp += trim / self.fs
                    n = x.shape[1]
            if self._first_stamp is None:
                self._first_stamp = stamp
            self._anchor_idx.append(self._w)
            self._anchor_t.append(stamp)
            self._expected = stamp + n / self.fs
            self._last_n = n
            self._write(x)
            self._prune()

    def _new_segment(self) -> None:
        if self._seg_starts[-1] != self._w:
            self._seg_starts.append(self._w)

    def _write(self, x: np.ndarray) -> None:
        n = x.shape[1]
        if n > self.capacity:
            x = x[:, -self.capacity:]
            self._anchor_t[-1] += (n - self.capacity) / self.fs
            self._w += n - self.capacity
            self._anchor_idx[-1] = self._w
            n = self.capacity
        ring_write(self._ring, self._w, x)
        self._w += n

    def _prune(self) -> None:
        oldest = self._w - self.capacity
        k = bisect.bisect_right(self._anchor_idx, oldest) - 1  # keep the anchor holding the oldest sample
        if k > 0:
            del self._anchor_idx[:k], self._anchor_t[:k]
        k = bisect.bisect_right(self._seg_starts, oldest) - 1
        if k > 0:
            del self._seg_starts[:k]

    def push_ping(self, stamp: float, sequence: int, onset_known: bool = True) -> None:
        """Queue a ping whose sweep started at ``stamp`` (the audio's clock)."""
        with self._lock:
            self._last_ping_stamp = float(stamp)
            self._scan = None  # Ping messages again: detection stops
            self._enqueue(_Pending(float(stamp), int(sequence), bool(onset_known), None, self._w))

    def _enqueue(self, p: _Pending) -> None:
        if len(self._pending) >= self.max_pending:
            self._pending.popleft()
            self.skipped["queue_full"] += 1
        self._pending.append(p)

    # ------------------------------------------------------------------ time <-> index
    def _index_of(self, t: float) -> tuple[int, int] | None:
        """``(index, anchor)``: the absolute index of time ``t`` and that of the chunk it is counted from."""
        j = bisect.bisect_right(self._anchor_t, t) - 1
        if j < 0:
            return None
        return self._anchor_idx[j] + int(round((t - self._anchor_t[j]) * self.fs)), self._anchor_idx[j]

    def _stamp_of(self, index: int) -> float:
        j = max(0, bisect.bisect_right(self._anchor_idx, index) - 1)
        return self._anchor_t[j] + (index - self._anchor_idx[j]) / self.fs

    def _segment(self, index: int) -> tuple[int, int | None]:
        """``(start, end)`` of the segment holding ``index`` (end ``None``: the one being written)."""
        k = bisect.bisect_right(self._seg_starts, index) - 1
        start = self._seg_starts[max(k, 0)]
        end = self._seg_starts[k + 1] if k + 1 < len(self._seg_starts) else None
        return start, end

    def _read(self, a: int, b: int) -> np.ndarray:
        i, n = a % self.capacity, b - a
        if i + n <= self.capacity:
            return self._ring[:, i: i + n]
        return np.concatenate([self._ring[:, i:], self._ring[:, : i + n - self.capacity]], axis=1)

    # ------------------------------------------------------------------ output
    def detecting(self) -> bool:
        """Whether pings are being found in the audio (no Ping message for two periods, or never)."""
        with self._lock:
            return self._detecting()

    def _detecting(self) -> bool:
        if not self.detect or not self._anchor_t:
            return False
        if self._last_ping_stamp is None:
            return True
        return self._stamp_of(self._w - 1) - self._last_ping_stamp > 2 * self.period

    def pop_windows(self) -> list[AlignedWindow]:
        """The windows of every queued ping whose audio is complete, oldest first; pings still waiting for
        audio stay queued, those that cannot be aligned are dropped and counted in ``skipped``."""
        out = []
        with self._lock:
            if self._detecting():
                self._scan_for_pings()
            keep: deque[_Pending] = deque()
            for p in self._pending:
                r = self._align(p)
                if r is None:
                    keep.append(p)
                elif isinstance(r, str):
                    self.skipped[r] += 1
                else:
                    out.append(r)
            self._pending = keep
        return out

    def _align(self, p: _Pending):
        """An :class:`AlignedWindow`, a skip reason, or ``None`` (wait for more audio)."""
        if p.index is None:
            found = self._index_of(p.stamp)
            if found is None:
                if self._first_stamp is None or p.stamp < self._first_stamp:
                    return "before_audio" if self._anchor_t else None
                return "overwritten"
            idx, anchor = found
        else:
            idx = anchor = p.index
        search = self.search if (p.onset_known or p.index is not None) else self.search_unknown
        a, b = idx - search - self.before, idx + search + self.need_after
        if a < 0:
            return "before_audio"
        if a < self._w - self.capacity:
            return "overwritten"
        start, end = self._segment(anchor)  # the segment of the chunk the stamp was counted from
        if a < start or (end is not None and b > end):
            return "gap_in_window"
        if b > self._w:
            if self._w - p.queued_at > self.capacity:
                return "incomplete_timeout"
            return None
        cut = self._read(a, b)
        u = refine_onset(cut, search + self.before, self.direct, search, self.min_snr_db)
        if u is None:
            if self.require_direct_path or not p.onset_known or p.index is not None:
                return "no_direct_path"
            u = search + self.before
        onset = a + u
        correction = onset - idx
        self.aligned += 1
        self._abs_correction_sum += abs(correction)
        self._last_onset = max(onset, self._last_onset) if self._last_onset is not None else onset
        return AlignedWindow(stamp=self._stamp_of(onset), audio=np.array(cut[:, u: u + self.window], dtype=np.float32),
                             sequence=p.sequence, onset_index=int(onset), correction=int(correction),
                             completed_stamp=self._stamp_of(b - 1), detected=p.index is not None)

    def _scan_for_pings(self) -> None:
        """Detection over the audio not scanned yet (plus the kernel's overlap)."""
        start, _ = self._segment(self._w - 1)
        lo = max(start, self._w - self.capacity) + self.before  # first onset candidate with its audio
        if self._scan is None:  # (re)start: only audio from now on, and nothing near the last window
            self._scan = max(lo, self._w - self.fs // 4)
        if self._last_onset is not None:
            self._scan = max(self._scan, self._last_onset + self.direct.length)  # spacing is checked per peak
        self._scan = max(self._scan, lo)
        guard = self.direct.length  # a peak this close to the end may still grow: look again next time
        last = self._w - self.after - guard  # last candidate decided now
        if last < self._scan:
            return
        audio = self._read(self._scan - self.before, self._w)
        s = direct_score(audio, self.direct)  # entry t: onset self._scan + t
        self._floors.append(float(np.median(s)))
        floor = float(np.median(self._floors))
        decided = last - self._scan + 1
        # a ping is about as loud as the loudest recent ones: a sweep-like ambient sound is far weaker at the mics
        ref = max(self._peaks) if self._peaks else None
        found = [t for t in pick_onsets(s, floor, self.detect_threshold_db, self.min_spacing, ref) if t < decided]
        for t in found:
            onset = self._scan + t
            peak = float(s[min(max(t, 0), len(s) - 1)])
            if (self._last_onset is not None and onset < self._last_onset + self.min_spacing
                    and not peak > self._last_peak * 10 ** (12 / 20)):  # unless the last one was no ping
                continue
            self.detected += 1
            self._peaks.append(peak)
            self._last_onset, self._last_peak = onset, peak
            self._enqueue(_Pending(None, self.detected - 1, False, onset, self._w))
        self._scan = last + 1

    def pending_onsets(self) -> list[float]:
        """Stamps (s) of the pings still waiting for their window: announced or detected, not yet refined."""
        return [p.stamp if p.stamp is not None else self._stamp_of(p.index) for p in self._pending
                if p.stamp is not None or p.index is not None]

    # ------------------------------------------------------------------ diagnostics
    @property
    def mean_abs_correction(self) -> float:
        """Mean |refined - nominal| onset over the aligned pings (samples)."""
        return self._abs_correction_sum / self.aligned if self.aligned else 0.0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def stats(self) -> dict:
        """Counters for diagnostics (flat, ``skipped_<reason>``)."""
        with self._lock:
            d = {"aligned": self.aligned, "detected": self.detected, "pending": len(self._pending),
                 "mean_abs_correction": self.mean_abs_correction, "detecting": self._detecting(),
                 "gaps": self.gaps, "overlaps": self.overlaps, "clock_resets": self.clock_resets,
                 "lost_messages": self.lost_messages}
            d.update({f"skipped_{k}": v for k, v in self.skipped.items()})
        return d
