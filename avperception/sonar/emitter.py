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

import numpy as np


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
