"""capture_node pinging through a simulated full-duplex sound card, in-process over DDS.

The card (fake_sounddevice) runs its callback from its own thread in real time; its 8 robot_8mic microphones
hear the speaker's output after a fixed round trip plus each one's direct delay, a wall's echo 20 dB weaker and
noise. The node plays the bundle's sweep and publishes audio and sonar/pings; a subscriber in the same
executor receives them. Every Ping must be stamped where the sweep's direct path starts in the published audio,
and the receiving pipeline must align every ping on it with no correction beyond a sample.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy

from avperception.audio.pcm import from_audio_frame
from avperception.config import SonarConfig, load_array
from avperception.inference import load_bundle
from avperception.ros.audio_input import audio_qos
from avperception.sonar import DirectPath, detect_onsets, refine_onset

from fake_sounddevice import FakeDuplexDevice

FS, CHUNK, RATE = 16000, 1024, 5.0
PERIOD = int(FS / RATE)  # 3200 samples between onsets
LATENCY = 1700  # the card's round trip (samples): more than a block, so input hears output already written
WALL_X = 2.0  # a wall 2 m in front of the array: the speaker's image source
SECONDS = 2.6  # audio to receive


@pytest.fixture(scope="module")
def bundle():
    return load_bundle()


def make_device(bundle, **kw) -> FakeDuplexDevice:
    """The card: robot_8mic's microphones, the bundle's speaker, a wall's echo 20 dB below the direct path."""
    spk = bundle.speaker_position
    image = np.array([2 * WALL_X - spk[0], spk[1], spk[2]])
    return FakeDuplexDevice(load_array("robot_8mic").positions, spk, FS, LATENCY, gain=0.2, echoes=[(image, 0.1)],
                            noise=1e-3, **kw)


@pytest.fixture()
def ros_ctx(monkeypatch):
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, domain_id=100 + (os.getpid() + 41) % 100)  # isolated from anything else running here
    yield ctx
    rclpy.shutdown(context=ctx)


def run_capture(ctx, params: dict, enough, timeout: float = 30.0, backlog_s: float = 0.0):
    """Run CaptureNode with ``params`` beside a listener until ``enough(audio, pings)``, the executor first
    ``backlog_s`` late (the chunks captured meanwhile wait in the node's queue); returns
    ``(node stats, audio messages, ping messages, events in arrival order)``."""
    from avperception_msgs.msg import AudioFrame, Ping

    from avperception.ros.capture_node import CaptureNode

    listener = rclpy.create_node("capture_listener", context=ctx)
    events: list[tuple[str, object]] = []
    listener.create_subscription(AudioFrame, "audio", lambda m: events.append(("audio", m)), audio_qos(500))
    listener.create_subscription(Ping, "sonar/pings", lambda m: events.append(("ping", m)),
                                 QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    node = CaptureNode(context=ctx, parameter_overrides=overrides)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(listener)
    ex.add_node(node)

    def split():
        return [m for k, m in events if k == "audio"], [m for k, m in events if k == "ping"]

    try:
        time.sleep(backlog_s)
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end and not enough(*split()):
            ex.spin_once(timeout_sec=0.02)
        node.stream.stop()  # the card stops; what it captured is published and received
        t_end, n, last = time.monotonic() + timeout, -1, time.monotonic()
        while time.monotonic() < t_end and (time.monotonic() - last < 0.5 or not node.queue.empty()):
            if len(events) != n:
                n, last = len(events), time.monotonic()
            ex.spin_once(timeout_sec=0.05)
        stats = {"dropped": node.dropped, "has_ping_publisher": hasattr(node, "ping_pub"),
                 "ping_publishers": listener.count_publishers("/sonar/pings")}
    finally:
        ex.shutdown()
        node.destroy_node()  # stops and closes the stream
        listener.destroy_node()
    return stats, *split(), events


def reassemble(chunks):
    """``(x (M, n), t0)``: decoded chunks placed by their stamps (sample 0 at ``t0``, the first chunk's stamp)."""
    t0 = chunks[0].stamp
    pos = np.array([(c.stamp - t0) * FS for c in chunks])
    idx = np.round(pos).astype(int)
    assert np.max(np.abs(pos - idx)) < 0.01  # every chunk stamped on the capture's sample clock
    n = idx[-1] + chunks[-1].data.shape[1]
    x = np.zeros((chunks[0].data.shape[0], n), dtype=np.float32)
    for i, c in zip(idx, chunks):
        x[:, i: i + c.data.shape[1]] = c.data
    return x, t0


def stamp_index(stamp: float, t0: float) -> float:
    return (stamp - t0) * FS


def params(**kw):
    p = {"array": "robot_8mic", "device": "fake duplex", "chunk_samples": CHUNK, "sample_rate": FS,
         "queue_chunks": 256, "emit": True, "ping_rate_hz": RATE, "output_latency_samples": LATENCY}
    p.update(kw)
    return p


@pytest.mark.parametrize("adc_times", [True, False], ids=["adc_times", "no_adc_times"])
def test_pings_are_stamped_at_the_sweeps_onset_in_the_published_audio(monkeypatch, ros_ctx, bundle, adc_times):
    """Also where the host API reports no ADC times (the chunks are then stamped by the stream's clock at the
    callback) and with a backlog of chunks waiting for the publisher."""
    import avperception.sonar.calibrate as cal
    from avperception.ros.conversions import stamp_to_sec
    from avperception.sonar.pipeline import SonarPipeline

    device = make_device(bundle, adc_times=adc_times)
    monkeypatch.setattr(cal, "import_sounddevice", lambda: device)

    def enough(audio, pings):
        return len(pings) >= 8 and len(audio) >= int(SECONDS * FS / CHUNK)

    stats, audio, pings, events = run_capture(ros_ctx, params(), enough, backlog_s=0.5)
    assert not device.errors, device.errors
    assert enough(audio, pings), f"{len(audio)} audio frames and {len(pings)} pings received"
    assert device.opened[0] == ("duplex", "fake duplex", (8, 1), FS, CHUNK)
    assert stats["has_ping_publisher"] and stats["ping_publishers"] == 1
    assert stats["dropped"] == 0  # the queue holds more chunks than the test captures

    # the audio: every frame on one sample clock, none lost after the first received
    chunks = [from_audio_frame(m) for m in audio]
    assert all(c.data.shape == (8, CHUNK) and c.sample_rate == FS and c.frame_id == "mic_array" for c in chunks)
    seqs = np.array([c.sequence for c in chunks])
    assert np.all(np.diff(seqs) == 1)
    x, t0 = reassemble(chunks)
    assert x.shape[1] == len(chunks) * CHUNK

    # the pings: one per period, in order, exact, the bundle's sweep
    assert all(p.onset_known and p.sweep_id == bundle.sweep_id and p.header.frame_id == "mic_array" for p in pings)
    assert np.all(np.diff([p.sequence for p in pings]) == 1)
    at = np.array([stamp_index(stamp_to_sec(p.header.stamp), t0) for p in pings])  # input index in x
    np.testing.assert_allclose(np.diff(at), PERIOD, atol=0.01)

    # the truth: where the sweep was written to the output, plus the card's round trip
    played = device.played
    sweep = 0.5 * bundle.emitted  # sweep_gain's default
    corr = np.correlate(played, sweep, "valid")
    out_onsets = np.flatnonzero(corr > 0.99 * np.dot(sweep, sweep))
    assert out_onsets[0] == 0 and np.all(np.diff(out_onsets) == PERIOD)
    first_index = seqs[0] * CHUNK  # the node's input index of x[:, 0] (no chunk was dropped)
    truth_x = out_onsets + LATENCY - first_index  # every ping at a played sweep's onset, the round trip later
    truth = set(truth_x.tolist())
    assert all(int(round(a)) in truth for a in at), (at, truth_x[:12])
    # and every sweep heard in the received audio from the first received ping on has its Ping
    assert [t for t in truth_x if at[0] - 1 <= t < x.shape[1]] == [int(round(a)) for a in at]

    # the published audio itself: the direct path starts where each Ping says, to a sample
    direct = DirectPath.build(bundle.emitted, bundle.array.positions, bundle.speaker_position, FS,
                              bundle.speed_of_sound)
    before, after = direct.span
    inside = [a for a in at if a - 64 - before >= 0 and a + 64 + after <= x.shape[1]]
    assert len(inside) >= 6
    for a in inside:
        u = refine_onset(x, int(round(a)), direct, search=64)
        assert u is not None and abs(u - a) <= 1, (a, u)
    found = [o for o in detect_onsets(x, direct, min_spacing=PERIOD // 2) if o >= at[0] - 1]
    for o in found:  # nothing but the pings (the echo is no onset) and every ping where the audio holds it
        assert np.min(np.abs(at - o)) <= 1, (o, at)
    for a in inside:
        assert np.min(np.abs(np.asarray(found) - a)) <= 1, (a, found)

    # the receiver: the sonar pipeline aligns every ping whose window the audio holds, without correction
    arr = load_array("robot_8mic")
    pipe = SonarPipeline(arr, SonarConfig(), sample_rate=FS, ping_period_s=1 / RATE, bundle=bundle)
    # in the order the node published them (each chunk, then the pings whose onsets it holds), as a receiver
    # that keeps up gets them; one executor's alternating takes of a backlog can reorder them by more than the
    # aligner's pending pings hold, and that is the receiver's matter, not the emitter's
    def published(e):
        kind, m = e
        if kind == "audio":
            return m.sequence, 0
        return (int(round(stamp_index(stamp_to_sec(m.header.stamp), t0))) + first_index) // CHUNK, 1

    windows = []
    for kind, m in sorted(events, key=published):
        if kind == "audio":
            c = from_audio_frame(m)
            pipe.push_audio(arr.select_channels(c.data), c.stamp, c.sequence)
        else:
            pipe.push_ping(stamp_to_sec(m.header.stamp), m.sequence, m.onset_known)
        windows += pipe.aligner.pop_windows()
    by_seq = {w.sequence: w for w in windows if not w.detected}
    complete = [(p, a) for p, a in zip(pings, at)
                if a - 64 - before >= 0 and a + 64 + max(after, pipe.window_samples) <= x.shape[1]]
    assert len(complete) >= 6
    for p, a in complete:
        w = by_seq.get(p.sequence)
        assert w is not None, f"ping {p.sequence} not aligned: {pipe.stats()}"
        assert abs(w.correction) <= 1
        assert abs(w.stamp - stamp_to_sec(p.header.stamp)) <= 1.0 / FS
        i = int(round(stamp_index(w.stamp, t0)))
        np.testing.assert_array_equal(w.audio, x[:, i: i + pipe.window_samples])  # the published audio from there
    for w in windows:  # also those the aligner found itself before the first Ping message arrived
        assert np.min(np.abs(truth_x - stamp_index(w.stamp, t0))) <= 1, (w.detected, w.stamp)
    s = pipe.stats()
    assert s["pings_skipped_no_direct_path"] == 0 and s["pings_skipped_gap_in_window"] == 0


def test_without_emit_the_node_captures_only(monkeypatch, ros_ctx, bundle):
    import sys

    import avperception.sonar.calibrate as cal

    device = make_device(bundle)

    def no_duplex():
        raise AssertionError("capture without emit must not open the emitter's full-duplex stream")

    monkeypatch.setattr(cal, "import_sounddevice", no_duplex)
    monkeypatch.setitem(sys.modules, "sounddevice", device)

    n_frames = 16
    stats, audio, pings, _ = run_capture(ros_ctx, params(emit=False), lambda a, p: len(a) >= n_frames)
    assert not device.errors, device.errors
    assert len(audio) >= n_frames and not pings
    assert device.opened == [("input", "fake duplex", 8, FS, CHUNK)]
    assert not stats["has_ping_publisher"] and stats["ping_publishers"] == 0
    chunks = [from_audio_frame(m) for m in audio]
    x, t0 = reassemble(chunks)
    seqs = np.array([c.sequence for c in chunks])
    assert np.all(np.diff(seqs) == 1) and stats["dropped"] == 0
    # published what the card captured (S16LE), frame by frame
    cap = device.captured
    first = seqs[0] * CHUNK
    np.testing.assert_allclose(x, cap[:, first: first + x.shape[1]], atol=1.0 / 32767)
