"""A threaded stand-in for the sounddevice module: a full-duplex sound card whose microphones hear its speaker.

:class:`FakeDuplexDevice` plays what the stream callback writes to ``outdata`` and delivers in ``indata`` what
each microphone hears of it: every acoustic path (the direct one from the speaker, a wall's echo as an image
source) delayed by the device's fixed round trip ``latency`` plus the path's travel time (fractional delays by
windowed sinc), plus white noise. Input index ``i`` hears output index ``i - latency - travel``, so a sweep
written at output index ``k`` leaves the speaker at input index ``k + latency``, as on a real full-duplex card.

Like PortAudio, the stream calls its callback from its own thread every ``blocksize / fs`` seconds of wall time
(catching up when it is late). Its clock is an ideal crystal's: ``time.monotonic()`` at the start plus the
samples captured / fs. In a callback ``stream.time`` is the capture time of the block's last sample and
``time_info.inputBufferAdcTime`` that of its first, ``start + first_index / fs`` (0 with ``adc_times=False``,
as some host APIs report). ``Stream`` is the full-duplex stream
(``callback(indata, outdata, frames, time_info, status)``), ``InputStream`` the capture-only one
(``callback(indata, frames, time_info, status)``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve

HALF_TAPS = 16  # half-length of the fractional-delay filter (samples)


@dataclass
class TimeInfo:
    inputBufferAdcTime: float  # noqa: N815  (PortAudio's names)
    outputBufferDacTime: float  # noqa: N815
    currentTime: float  # noqa: N815


def path_delays(mics: np.ndarray, source, fs: float, c: float = 343.0) -> np.ndarray:
    """``(M,)`` travel time in samples from ``source (3,)`` to each of ``mics (M, 3)``."""
    return np.linalg.norm(np.asarray(mics, float) - np.asarray(source, float)[None], axis=1) / c * fs


class FakeDuplexDevice:
    """One sound card with ``len(mics)`` microphones and a speaker.

    Args:
        mics: ``(M, 3)`` microphone positions (m, array frame).
        speaker: ``(3,)`` speaker position (m).
        fs: sample rate (Hz).
        latency: input index of a sweep's onset minus its output index (samples); more than a block plus
            ``HALF_TAPS`` + 1, so that a block's input only needs output already written.
        gain: direct path's amplitude at the microphones per unit output.
        echoes: ``[(image_source (3,), relative_gain), ...]``: reflections as image sources.
        noise: white noise standard deviation at the inputs.
        name: the device's name (``query_devices``); ``inputs`` / ``outputs``: its channel counts.
        seed: noise seed.
        adc_times: report ``inputBufferAdcTime`` (else 0, as host APIs without it do).
    Attributes:
        opened: ``(kind, device, channels, samplerate, blocksize)`` per stream opened.
        played: ``(n,)`` output channel 0 as written so far; captured: ``(channels, n)`` input delivered.
        errors: exceptions raised by the callback (the stream stops at the first).
    """

    def __init__(self, mics, speaker, fs: int, latency: int, gain: float = 0.2, echoes=(), noise: float = 1e-3,
                 c: float = 343.0, name: str = "Fake Duplex Array: USB Audio", inputs: int | None = None,
                 outputs: int = 2, seed: int = 0, adc_times: bool = True) -> None:
        mics = np.asarray(mics, dtype=np.float64)
        self.fs, self.latency, self.noise, self.seed = int(fs), int(latency), float(noise), seed
        self.adc_times = bool(adc_times)
        self.num_mics = mics.shape[0]
        paths = [(path_delays(mics, speaker, fs, c), gain)]
        paths += [(path_delays(mics, src, fs, c), gain * g) for src, g in echoes]
        lo = min(int(np.floor(d.min())) for d, _ in paths) + self.latency - HALF_TAPS - 1
        hi = max(int(np.ceil(d.max())) for d, _ in paths) + self.latency + HALF_TAPS + 2
        lags = np.arange(lo, hi)
        h = np.zeros((self.num_mics, lags.size))
        for d, g in paths:  # windowed sinc centred on each path's delay: linear phase, exact fractional delay
            u = lags[None] - (self.latency + d[:, None])
            w = np.where(np.abs(u) < HALF_TAPS + 1, 0.5 * (1 + np.cos(np.pi * u / (HALF_TAPS + 1))), 0.0)
            h += g * np.sinc(u) * w
        self.lag0, self.lag1, self.h = lo, hi, h  # input index i hears sum_j h[:, j] * output[i - lo - j]
        self.devices = [{"name": name, "hostapi": 0, "max_input_channels": inputs or self.num_mics,
                         "max_output_channels": outputs, "default_samplerate": float(fs)}]
        self.opened: list[tuple] = []
        self.errors: list[BaseException] = []
        self._out = [np.zeros(self.lag1)]  # output history, lag1 zeros before output index 0
        self._played = 0
        self._captured: list[np.ndarray] = []
        self._rng = np.random.default_rng(seed)

    # ------------------------------------------------------------------ the sounddevice API used
    def query_devices(self, device=None, kind=None):
        return self.devices if device is None else self.devices[self._device_id(device, "input")]

    def Stream(self, device=None, channels=None, samplerate=None, blocksize=None, dtype="float32",  # noqa: N802
               callback=None, **kwargs):
        ch_in, ch_out = channels
        self._open("duplex", device, (ch_in, ch_out), samplerate, blocksize)
        return FakeStream(self, ch_in, ch_out, int(blocksize), callback)

    def InputStream(self, device=None, channels=None, samplerate=None, blocksize=None, dtype="float32",  # noqa: N802
                    callback=None, **kwargs):
        self._open("input", device, channels, samplerate, blocksize)
        return FakeStream(self, int(channels), 0, int(blocksize), callback)

    # ------------------------------------------------------------------ the room
    @property
    def played(self) -> np.ndarray:
        return np.concatenate(self._out)[self.lag1:]

    @property
    def captured(self) -> np.ndarray:
        return np.concatenate(self._captured, axis=1) if self._captured else np.zeros((self.num_mics, 0))

    def hear(self, first: int, n: int) -> np.ndarray:
        """``(M, n)`` what the microphones capture at input indices ``[first, first + n)``."""
        out = np.concatenate(self._out) if len(self._out) > 1 else self._out[0]
        self._out = [out]
        # output indices first - lag1 + 1 ... first + n - 1 - lag0, all written already (lag0 >= n)
        seg = out[first + 1: first + n + self.lag1 - self.lag0]
        x = fftconvolve(seg[None], self.h, mode="valid", axes=1)
        return x + self.noise * self._rng.standard_normal(x.shape)

    def play(self, block: np.ndarray) -> None:
        """Append output channel 0 of ``block (n, channels_out)`` to what the speaker played."""
        self._out.append(np.asarray(block[:, 0], dtype=np.float64).copy())
        self._played += block.shape[0]

    # ------------------------------------------------------------------ internals
    def _device_id(self, device, kind: str) -> int:
        if device is None:
            return 0
        if isinstance(device, int):
            if not 0 <= device < len(self.devices):
                raise ValueError(f"Error querying device {device}")
            return device
        for i, d in enumerate(self.devices):
            pos, name = 0, d["name"].lower()
            for word in str(device).lower().split():
                pos = name.find(word, pos)
                if pos < 0:
                    break
                pos += len(word)
            else:
                return i
        raise ValueError(f"No {kind} device matching {device!r}")

    def _open(self, kind, device, channels, samplerate, blocksize) -> None:
        d = self.devices[self._device_id(device, "input" if kind == "input" else "input/output")]
        ch_in, ch_out = channels if kind == "duplex" else (channels, 0)
        if ch_in > d["max_input_channels"] or ch_out > d["max_output_channels"]:
            raise ValueError(f"Invalid number of channels {channels} for {d['name']!r}")
        if int(samplerate) != self.fs:
            raise ValueError(f"Invalid sample rate {samplerate}: the device runs at {self.fs} Hz")
        if self.lag0 < int(blocksize):
            raise ValueError(f"latency {self.latency} too short for blocks of {blocksize}: make it at least "
                             f"{int(blocksize) + self.latency - self.lag0}")
        self.opened.append((kind, device, channels, int(samplerate), int(blocksize)))


class FakeStream:
    """A running stream: its thread calls the callback every ``blocksize / fs`` s until :meth:`stop`."""

    def __init__(self, dev: FakeDuplexDevice, ch_in: int, ch_out: int, blocksize: int, callback) -> None:
        self.dev, self.ch_in, self.ch_out, self.blocksize, self.callback = dev, ch_in, ch_out, blocksize, callback
        self.latency = dev.latency / dev.fs
        self.blocks = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._now: float | None = None  # the device's clock at the last block
        self.closed = False

    @property
    def time(self) -> float:
        """The stream's clock: in a callback, the capture time of the block's last sample."""
        return self._now if self._now is not None else time.monotonic()

    @property
    def active(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.closed:
            raise RuntimeError("the stream is closed")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fake-portaudio", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10.0)

    def close(self) -> None:
        self.stop()
        self.closed = True

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _run(self) -> None:
        dev, n, fs = self.dev, self.blocksize, self.dev.fs
        t0 = time.monotonic()
        k = 0
        while not self._stop.is_set():
            due = t0 + (k + 1) * n / fs  # the block's last sample has been captured
            wait = due - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                break
            first = k * n
            mics = dev.hear(first, n)
            indata = np.zeros((n, self.ch_in), dtype=np.float32)
            m = min(self.ch_in, dev.num_mics)
            indata[:, :m] = mics[:m].T
            self._now = t0 + (first + n) / fs
            adc = t0 + first / fs if dev.adc_times else 0.0
            dac = t0 + (first + dev.latency) / fs if dev.adc_times else 0.0
            info = TimeInfo(adc, dac, self._now)
            try:
                if self.ch_out:
                    outdata = np.zeros((n, self.ch_out), dtype=np.float32)
                    self.callback(indata, outdata, n, info, 0)
                else:
                    outdata = np.zeros((n, 1), dtype=np.float32)  # capture only: the speaker is silent
                    self.callback(indata, n, info, 0)
            except BaseException as e:  # noqa: BLE001  (PortAudio stops the stream; the test reports it)
                dev.errors.append(e)
                break
            dev.play(outdata)
            dev._captured.append(indata.T.copy())
            self.blocks += 1
            k += 1
