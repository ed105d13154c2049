"""``avperception calibrate-latency``: the emitter's round trip on a full-duplex sound device.

Plays the sweep for a few seconds through the device's output while recording its
microphones in one full-duplex stream (output and input counters in lockstep),
finds each sweep's direct path in the recording and prints the latency to set as
the capture node's ``output_latency_samples``: the input index of a sweep's onset
minus the output index it was written at.
"""

from __future__ import annotations

import argparse
import threading
from dataclasses import dataclass

import numpy as np

from ..config import DEFAULT_ARRAY
from .emitter import PingSchedule, load_emitter_sweep
from .onset import DirectPath, estimate_output_latency


def import_sounddevice():
    """sounddevice, with a message that says what to install when PortAudio or the module is missing."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:
        raise RuntimeError(f"the emitter needs sounddevice and PortAudio (pip install sounddevice; "
                           f"apt-get install libportaudio2): {e}") from None
    return sd


def duplex_devices(sd) -> list[str]:
    """``"index: name (in / out)"`` of every device with both inputs and outputs."""
    try:
        devices = sd.query_devices()
    except Exception as e:  # PortAudio without any host API
        raise RuntimeError(f"no audio devices found ({e})") from None
    return [f"{i}: {d['name']} ({d['max_input_channels']} in / {d['max_output_channels']} out)"
            for i, d in enumerate(devices) if d["max_input_channels"] > 0 and d["max_output_channels"] > 0]


def device_spec(device):
    """A device name (substring, as PortAudio lists it) or index; ``''``/``None`` = the default."""
    if device in ("", None):
        return None
    return int(device) if str(device).isdigit() else str(device)


def open_duplex_stream(sd, device, channels_in: int, channels_out: int, fs: int, blocksize: int, callback):
    """One full-duplex ``sd.Stream`` (input and output of the same device), errors listing the devices."""
    duplex = duplex_devices(sd)
    if not duplex:
        raise RuntimeError("no audio device with both inputs and outputs found; connect the microphone array "
                           "with its speaker (devices: `python -m sounddevice`)")
    try:
        return sd.Stream(device=device_spec(device), channels=(channels_in, channels_out), samplerate=fs,
                         blocksize=blocksize, dtype="float32", callback=callback)
    except Exception as e:
        raise RuntimeError(f"cannot open {device or 'the default device'!r} full duplex with {channels_in} inputs "
                           f"and {channels_out} outputs at {fs} Hz: {e}. Devices with inputs and outputs: "
                           + "; ".join(duplex)) from None


@dataclass
class CalibrationResult:
    latency_samples: float  # input index of an onset minus its output index (median over the pings)
    spread: float  # standard deviation over the pings (samples)
    pings: int  # pings played
    fs: int

    @property
    def latency_ms(self) -> float:
        return 1e3 * self.latency_samples / self.fs


def calibrate_output_latency(device=None, seconds: float = 3.0, array: str = DEFAULT_ARRAY,
                             model: str | None = "default", ping_rate_hz: float = 2.0, gain: float = 0.5,
                             blocksize: int = 1024, channels: int = 0, channels_out: int = 1,
                             sd=None) -> CalibrationResult:
    """Measure the emitter's round trip on ``device`` (full duplex).

    Args:
        device: name or index of the sound card with the microphones and the speaker.
        seconds: recording length; ``ping_rate_hz``: pings per second (slow enough that the latency is
            less than a period: 2 Hz allows up to about 0.49 s).
        array: the microphone array (its positions find the direct path); ``model``: bundle whose sweep to
            play (``''``: the data engine's default sweep).
        gain: the sweep's linear peak at the output; blocksize: samples per callback;
        channels: input channels to open (0: the array's); channels_out: output channels.
        sd: the sounddevice module (tests pass a stand-in).
    Raises:
        RuntimeError: no device, the stream cannot be opened (the message lists the devices), or the direct
            path is not heard.
    """
    from ..config import load_array

    sd = sd if sd is not None else import_sounddevice()
    arr = load_array(array)
    sw = load_emitter_sweep(model, fs=arr.sample_rate or 16000)
    fs = sw.fs
    ch_in = int(channels) or arr.input_channels
    total = int(round(seconds * fs))
    if total < 2 * fs / ping_rate_hz:
        raise ValueError(f"record at least two ping periods ({2 / ping_rate_hz:g} s)")
    schedule = PingSchedule(fs, ping_rate_hz, sw.samples, 0, channels_out, gain)
    rec = np.zeros((total + blocksize, ch_in), dtype=np.float32)  # preallocated: the callback only copies
    played: list[int] = []
    state = {"pos": 0}
    done = threading.Event()

    def callback(indata, outdata, frames, time_info, status):
        pos = state["pos"]
        if pos < total:
            n = min(frames, rec.shape[0] - pos)
            rec[pos: pos + n] = indata[:n]
            _, onsets = schedule.fill_output(frames, out=outdata)
            played.extend(onsets)
        else:
            outdata.fill(0)
            done.set()
        state["pos"] = pos + frames

    stream = open_duplex_stream(sd, device, ch_in, channels_out, fs, blocksize, callback)
    with stream:
        if not done.wait(seconds + 5.0):
            raise RuntimeError(f"the device delivered {state['pos']} of {total} samples in {seconds + 5:g} s; "
                               "is it running at this sample rate?")
    mics = arr.select_channels(rec[:total].T)
    direct = DirectPath.build(sw.samples, arr.positions, sw.speaker_position, fs, sw.speed_of_sound)
    played = [p for p in played if p < total]
    latency, spread = estimate_output_latency(mics, played, direct)
    return CalibrationResult(latency, spread, len(played), fs)


def add_calibrate_parser(sub) -> argparse.ArgumentParser:
    """Register ``calibrate-latency`` on an ``add_subparsers()`` object."""
    p = sub.add_parser("calibrate-latency", help="measure the emitter's output latency on a full-duplex sound card",
                       description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--device", default="", help="sound card with the microphones and the speaker (name or index)")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds to play and record (default 3)")
    p.add_argument("--array", default=DEFAULT_ARRAY, help=f"array preset or YAML (default {DEFAULT_ARRAY})")
    p.add_argument("--model", default="default", help="bundle whose sweep to play ('' = the default sweep)")
    p.add_argument("--rate", type=float, default=2.0, help="pings per second (default 2)")
    p.add_argument("--gain", type=float, default=0.5, help="sweep peak at the output, linear (default 0.5)")
    p.add_argument("--blocksize", type=int, default=1024, help="samples per audio callback (default 1024)")
    p.add_argument("--channels", type=int, default=0, help="input channels (0: the array's)")
    p.set_defaults(func=cmd_calibrate)
    return p


def cmd_calibrate(args: argparse.Namespace) -> int:
    try:
        r = calibrate_output_latency(args.device, args.seconds, args.array, args.model, args.rate, args.gain,
                                     args.blocksize, args.channels)
    except RuntimeError as e:
        print(f"calibrate-latency: {e}")
        return 1
    print(f"output latency: {r.latency_samples:.1f} samples ({r.latency_ms:.2f} ms), spread {r.spread:.2f} samples "
          f"over {r.pings} pings")
    print(f"set the capture node's parameter: output_latency_samples:={int(round(r.latency_samples))}")
    if r.spread > 2.0:
        print("the latency varies between pings: input and output are not in lockstep (use one full-duplex device)")
    return 0
