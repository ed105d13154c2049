"""The emitter's bookkeeping: which output samples carry a sweep, and where its onset lands in the input.

In one full-duplex stream the output and input sample counters start together
and run in lockstep, so a sweep written at output index ``k`` leaves the speaker
at input index ``k + output_latency_samples`` (the fixed round trip found by
``avperception calibrate-latency``). :class:`PingSchedule` writes the output
blocks (a sweep every ``fs / ping_rate_hz`` samples, zeros between, a sweep that
spans two blocks continues in the next) and says, per block, the input indices
of the sweeps it began. Pure and device-free: the audio callback calls
:meth:`PingSchedule.fill_output` with the block PortAudio hands it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..constants import SPEED_OF_SOUND


class PingSchedule:
    """Sweeps at output sample indices ``round(k * fs / ping_rate_hz)``, ``k = 0, 1, ...``.

    Args:
        fs: sample rate (Hz).
        ping_rate_hz: pings per second.
        sweep: ``(L,)`` the sweep (peak 1, e.g. :func:`avperception.dsp.echo.sweep`).
        output_latency_samples: input index of an onset minus its output index.
        channels_out: output channels (the sweep goes to all of them).
        gain: peak amplitude written to the output (linear, full scale 1).
    """

    def __init__(self, fs: int, ping_rate_hz: float, sweep: np.ndarray, output_latency_samples: int = 0,
                 channels_out: int = 1, gain: float = 0.5) -> None:
        s = np.asarray(sweep, dtype=np.float64)
        if s.ndim != 1 or s.size == 0:
            raise ValueError("the sweep must be a non-empty 1-D array")
        if fs <= 0 or ping_rate_hz <= 0:
            raise ValueError("fs and ping_rate_hz must be positive")
        if not 0 < gain <= 1:
            raise ValueError(f"gain is the sweep's linear peak at the output, in (0, 1]; got {gain}")
        self.fs = int(fs)
        self.rate = float(ping_rate_hz)
        self.period = self.fs / self.rate  # samples (may be fractional)
        if self.period < s.size:
            raise ValueError(f"ping_rate_hz {ping_rate_hz} leaves less than the sweep ({s.size} samples) between pings")
        self.latency = int(output_latency_samples)
        self.channels_out = int(channels_out)
        self.gain = float(gain)
        self._sweep = (s * gain).astype(np.float32)
        self._pos = 0  # absolute output index of the next sample
        self._k = 0  # first sweep not yet written to the end

    def onset_out(self, k: int) -> int:
        """Output sample index of sweep ``k``."""
        return int(round(k * self.period))

    @property
    def position(self) -> int:
        """Output samples written so far."""
        return self._pos

    def fill_output(self, n: int, out: np.ndarray | None = None) -> tuple[np.ndarray, list[int]]:
        """The next ``n`` output samples and the input indices of the onsets of the sweeps begun in them.

        Args:
            n: samples to write.
            out: ``(n, channels_out)`` float32 buffer to fill in place (PortAudio's ``outdata``); a new one
                when ``None``.
        Returns:
            ``(block (n, channels_out) float32, onsets)``: ``onsets[i] = output index + output_latency_samples``.
        """
        if out is None:
            out = np.zeros((n, self.channels_out), dtype=np.float32)
        else:
            out.fill(0)
        p0, p1 = self._pos, self._pos + n
        L = self._sweep.size
        onsets = []
        k = self._k
        while True:
            o = self.onset_out(k)
            if o >= p1:
                break
            a, b = max(o, p0), min(o + L, p1)  # part of sweep k inside this block
            if b > a:
                out[a - p0: b - p0] = self._sweep[a - o: b - o, None]
            if o >= p0:
                onsets.append(o + self.latency)
            if o + L <= p1:
                self._k = k + 1
            k += 1
        self._pos = p1
        return out, onsets


def onset_stamp(onset_index: int, first_index: int, first_stamp: float, fs: float) -> float:
    """Time of input sample ``onset_index`` given the stamp of sample ``first_index`` (s)."""
    return float(first_stamp) + (int(onset_index) - int(first_index)) / float(fs)


# the default sweep and speaker position: the data engine's ActiveConfig takes its defaults from these
DEFAULT_SWEEP = dict(kind="linear", f0_hz=1000.0, f1_hz=7000.0, duration_s=0.032, fade=0.25)
DEFAULT_SPEAKER = (0.0, 0.0, -0.05)


@dataclass(frozen=True)
class EmitterSweep:
    """What the emitter plays and where from: the one place a model bundle's sweep enters the runtime.

    Attributes:
        samples: ``(L,)`` the sweep, peak 1.
        sweep_id: its name (the bundle's ``sweep_id``; Ping messages carry it).
        speaker_position: ``(3,)`` metres in the array frame.
        fs: sample rate (Hz); speed_of_sound: m/s.
    """

    samples: np.ndarray
    sweep_id: str
    speaker_position: np.ndarray
    fs: int
    speed_of_sound: float = SPEED_OF_SOUND


def load_emitter_sweep(model: str | None = "default", fs: int = 16000, speaker_position=DEFAULT_SPEAKER,
                       array: str | None = None, **sweep_params) -> EmitterSweep:
    """The sweep to emit: from a model bundle (``model`` = bundle directory or ``default``, the shipped bundle for
    the preset ``array``), or when ``model``
    is empty from ``sweep_params`` (``kind``, ``f0_hz``, ``f1_hz``, ``duration_s``, ``fade``; default the data
    engine's) at ``fs`` with the speaker at ``speaker_position``."""
    if model:
        from ..inference.bundle import load_bundle

        b = load_bundle(model, verify=False, array=array)  # the sweep only: model.onnx is checked where it is run
        return EmitterSweep(b.emitted, b.sweep_id, b.speaker_position, b.sample_rate, b.speed_of_sound)
    from ..dsp.echo import sweep
    from ..inference.bundle import sweep_id

    p = {**DEFAULT_SWEEP, **sweep_params}
    s = sweep(int(fs), p["f0_hz"], p["f1_hz"], p["duration_s"], p["kind"], p["fade"])
    sid = sweep_id(p["kind"], p["f0_hz"], p["f1_hz"], p["duration_s"], int(fs))
    return EmitterSweep(s, sid, np.asarray(speaker_position, dtype=np.float64), int(fs))


class PingStamper:
    """Stamps emitted onsets once the audio chunk that holds them is stamped (the capture node's bookkeeping).

    The audio callback adds the input indices of new onsets (:meth:`add_onsets`, from
    :meth:`PingSchedule.fill_output`); the publisher calls :meth:`on_chunk` for each chunk it stamps and
    gets ``(onset_index, stamp)`` of every onset up to that chunk's end: the chunk's stamp + the onset's
    offset in it / fs. An onset in a chunk that was dropped is stamped from the next chunk (the indices
    are absolute, so it is still exact). At most ``max_pending`` onsets wait (the oldest are dropped and
    counted in ``dropped``).
    """

    def __init__(self, fs: float, max_pending: int = 64) -> None:
        from collections import deque

        self.fs = float(fs)
        self._onsets: deque[int] = deque()
        self.max_pending = int(max_pending)
        self.dropped = 0

    def add_onsets(self, onsets) -> None:
        for o in onsets:
            if len(self._onsets) >= self.max_pending:
                self._onsets.popleft()
                self.dropped += 1
            self._onsets.append(int(o))

    def on_chunk(self, first_index: int, n: int, stamp: float) -> list[tuple[int, float]]:
        """``[(onset_index, stamp), ...]`` of the onsets before ``first_index + n``, oldest first."""
        out = []
        end = int(first_index) + int(n)
        while self._onsets and self._onsets[0] < end:
            o = self._onsets.popleft()
            out.append((o, onset_stamp(o, first_index, stamp, self.fs)))
        return out
