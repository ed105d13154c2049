"""The emitter: its output is the scheduled sweeps whatever the block sizes, each onset lands where it says in
the input, and calibration on a (simulated) full-duplex device measures the latency it was given."""

import argparse

import numpy as np
import pytest

from avperception.config import load_array
from avperception.dsp.echo import sweep
from avperception.sonar import DirectPath, PingAligner, PingSchedule, onset_stamp
from avperception.sonar.calibrate import add_calibrate_parser, calibrate_output_latency, cmd_calibrate
from avperception.sonar.emitter import PingStamper, load_emitter_sweep

FS = 16000
SWEEP = sweep(FS, 1000, 7000, 0.008, "linear", 0.25)
MICS = load_array("robot_8mic").positions
SPEAKER = np.array([0.0, 0.0, -0.05])


@pytest.mark.parametrize("rate, latency", [(4.0, 1536), (3.0, 0), (7.3, 77)])
def test_schedule_matches_offline_reference_over_random_blocks(rate, latency):
    rng = np.random.default_rng(int(rate * 10))
    sched = PingSchedule(FS, rate, SWEEP, latency, channels_out=2, gain=0.4)
    blocks, onsets, pos = [], [], 0
    while pos < 3 * FS:
        n = int(rng.choice([1, 17, 64, 100, 127, 128, 500, 1024, 2048]))  # many shorter than the sweep
        block, got = sched.fill_output(n)
        assert block.shape == (n, 2) and block.dtype == np.float32
        assert all(pos <= o - latency < pos + n for o in got)  # begun in this block
        blocks.append(block)
        onsets += got
        pos += n
    out = np.concatenate(blocks)
    starts = [s for s in (int(round(k * FS / rate)) for k in range(int(pos * rate / FS) + 2)) if s < pos]
    ref = np.zeros(pos + SWEEP.size)
    for s in starts:
        ref[s: s + SWEEP.size] += 0.4 * SWEEP
    np.testing.assert_allclose(out[:, 0], ref[:pos], atol=1e-6)
    np.testing.assert_array_equal(out[:, 0], out[:, 1])
    assert onsets == [s + latency for s in starts] and len(starts) >= 3 * rate


def test_schedule_fills_the_callers_buffer_and_checks_its_arguments():
    sched = PingSchedule(FS, 4.0, SWEEP, 10)
    buf = np.full((256, 1), 7.0, dtype=np.float32)
    block, onsets = sched.fill_output(256, out=buf)
    assert block is buf and onsets == [10]
    np.testing.assert_allclose(buf[:128, 0], 0.5 * SWEEP, atol=1e-6)
    assert not np.any(buf[128:])
    with pytest.raises(ValueError, match="gain"):
        PingSchedule(FS, 4.0, SWEEP, 0, gain=2.0)
    with pytest.raises(ValueError, match="less than the sweep"):
        PingSchedule(FS, 200.0, SWEEP, 0)


def test_stamper_stamps_each_onset_from_the_chunk_holding_it():
    t0, chunk = 1000.0, 1024
    stamper = PingStamper(FS)
    stamper.add_onsets([100, 5000, 9000])
    got = []
    for first in range(0, 12 * chunk, chunk):
        if first == 4 * chunk:  # the chunk holding onset 5000 was dropped: the next one stamps it
            continue
        got += stamper.on_chunk(first, chunk, t0 + first / FS + 1e-5)
    assert [o for o, _ in got] == [100, 5000, 9000]
    for o, t in got:
        assert t == pytest.approx(t0 + o / FS + 1e-5, abs=1e-9)
    assert onset_stamp(48, 16, 2.0, FS) == pytest.approx(2.0 + 32 / FS)


def test_default_sweep_is_the_bundles():
    b = load_emitter_sweep("default")
    plain = load_emitter_sweep("")
    assert plain.sweep_id == b.sweep_id and b.fs == FS
    np.testing.assert_allclose(plain.samples, b.samples, atol=1e-6)
    np.testing.assert_allclose(b.speaker_position, SPEAKER)


# ----------------------------------------------------------------------------- a simulated duplex device


def frac_delay_fir(tau, taps=33):
    j = np.arange(taps)
    h = np.sinc(j - tau) * np.hanning(taps + 2)[1:-1] if taps > 1 else np.ones(1)
    return h


class FakeSoundDevice:
    """A stand-in for the sounddevice module: a duplex stream whose microphones hear the output
    ``latency`` samples late plus each mic's direct delay from the speaker, with some noise."""

    def __init__(self, latency, gain=0.1, duplex=True, seed=0):
        self.latency, self.gain, self.seed = int(latency), gain, seed
        self.devices = [{"name": "robot array", "max_input_channels": 8, "max_output_channels": 2 if duplex else 0}]
        delays = np.linalg.norm(MICS - SPEAKER, axis=1) / 343.0 * FS
        self.h = np.stack([frac_delay_fir(d) for d in delays])  # (M, 33)
        self.opened = []

    def query_devices(self):
        return self.devices

    def Stream(self, device, channels, samplerate, blocksize, dtype, callback, blocks=60):  # noqa: N802
        if device not in (None, "robot array", 0):
            raise ValueError(f"no device {device!r}")
        self.opened.append((device, channels, samplerate, blocksize))
        return FakeStream(self, channels, blocksize, callback, blocks)


class FakeStream:
    def __init__(self, sd, channels, blocksize, callback, blocks=60):
        self.sd, self.channels, self.blocksize, self.callback = sd, channels, blocksize, callback
        self.blocks = blocks

    def __enter__(self):  # runs the whole session synchronously: the callback sets its event when done
        rng = np.random.default_rng(self.sd.seed)
        m_in, n, pad = self.channels[0], self.blocksize, self.sd.latency + 40
        played = np.zeros(pad + self.blocks * n)  # played[pad + k] = output sample k
        for k in range(self.blocks):
            first = k * n
            src = played[first: first + n + 32]
            # heard[t] = sum_j h[j] played[first + t + 32 - j]: output index first + t - latency - 8 - delay
            heard = np.stack([np.convolve(src, h, "valid") for h in self.sd.h])
            indata = (self.sd.gain * heard + 1e-3 * rng.standard_normal((m_in, n))).T.astype(np.float32)
            outdata = np.zeros((n, self.channels[1]), dtype=np.float32)
            self.callback(indata, outdata, n, None, None)
            played[pad + first: pad + first + n] = outdata[:, 0]
        return self

    def __exit__(self, *exc):
        return False


def test_calibration_measures_the_latency_of_a_simulated_duplex_device():
    latency = 2500
    sd = FakeSoundDevice(latency)
    r = calibrate_output_latency("robot array", seconds=3.0, model="", sd=sd)
    # the fake's input lags the output by latency + 40 - 32 samples before each mic's direct delay
    assert abs(r.latency_samples - (latency + 8)) <= 0.5 and r.spread < 0.5 and r.pings == 6
    assert sd.opened[0][1] == (8, 1)


def test_calibration_of_a_muted_speaker_or_without_a_device_says_what_to_do(capsys):
    with pytest.raises(RuntimeError, match="direct path was found in 0 of"):
        calibrate_output_latency(None, seconds=2.0, model="", sd=FakeSoundDevice(1000, gain=0.0))
    with pytest.raises(RuntimeError, match="cannot open 'usb mic'.*Devices with inputs and outputs: 0: robot array"):
        calibrate_output_latency("usb mic", seconds=2.0, model="", sd=FakeSoundDevice(1000))
    with pytest.raises(RuntimeError, match="no audio device with both inputs and outputs"):
        calibrate_output_latency(None, seconds=2.0, model="", sd=FakeSoundDevice(1000, duplex=False))
    ap = argparse.ArgumentParser()
    add_calibrate_parser(ap.add_subparsers())
    args = ap.parse_args(["calibrate-latency", "--device", "robot array", "--seconds", "2", "--model", ""])
    import avperception.sonar.calibrate as cal

    real = cal.import_sounddevice
    cal.import_sounddevice = lambda: FakeSoundDevice(1000, gain=0.0)
    try:
        assert args.func(args) == 1
    finally:
        cal.import_sounddevice = real
    assert "direct path was found in 0 of" in capsys.readouterr().out
    assert cmd_calibrate is args.func


def test_duplex_onsets_give_windows_that_start_at_the_sweep():
    """The capture node's path without a device: schedule -> stamped onsets -> aligner; every window's
    onset is where the sweep left the speaker, with no correction beyond the sub-sample delay."""
    latency, n, t0 = 1500, 1024, 20.0
    sd = FakeSoundDevice(latency - 8, gain=0.1, seed=3)  # the fake adds 8 samples: the onset is latency
    sched = PingSchedule(FS, 4.0, SWEEP, latency)
    stamper = PingStamper(FS)
    direct = DirectPath.build(SWEEP, MICS, SPEAKER, FS)
    aligner = PingAligner(8, FS, 2048, direct, ping_period_s=0.25)
    state = {"i": 0, "windows": [], "pings": []}

    def callback(indata, outdata, frames, time_info, status):  # what the node does, across both threads
        _, onsets = sched.fill_output(frames, out=outdata)
        stamper.add_onsets(onsets)
        first = state["i"]
        stamp = t0 + first / FS
        aligner.push_audio(indata.T, stamp, first // n)
        for o, t in stamper.on_chunk(first, frames, stamp):
            state["pings"].append(o)
            aligner.push_ping(t, len(state["pings"]) - 1, True)
        state["windows"] += aligner.pop_windows()
        state["i"] += frames

    with sd.Stream(None, (8, 1), FS, n, "float32", callback, blocks=120):
        pass
    windows = state["windows"]
    assert len(windows) >= len(state["pings"]) - 2 >= 20 and aligner.detected == 0
    for w in windows:
        truth = state["pings"][w.sequence]
        assert abs(w.onset_index - truth) <= 1 and abs(w.correction) <= 1
        assert w.stamp == pytest.approx(t0 + w.onset_index / FS)
