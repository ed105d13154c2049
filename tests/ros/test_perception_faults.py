"""perception_node under bad input, in-process (its callbacks called directly): each fault is counted by kind,
repaired or dropped, reported while it lasts, and the node carries on."""

import os

import numpy as np
import pytest

import rclpy  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from avperception.audio.pcm import AudioChunk  # noqa: E402
from avperception.config import load_array  # noqa: E402
from avperception.ros.perception_node import PerceptionNode  # noqa: E402
from avperception.sim.room import plane_wave  # noqa: E402

FS, N = 16000, 1024


@pytest.fixture()
def node():
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, domain_id=100 + (os.getpid() + 53) % 100)
    n = PerceptionNode(context=ctx, parameter_overrides=[Parameter("array", value="respeaker_4mic"),
                                                          Parameter("input_type", value="avperception"),
                                                          Parameter("sonar.enabled", value=False)])
    yield n
    n.destroy_node()
    rclpy.shutdown(context=ctx)


@pytest.fixture(scope="module")
def audio():
    arr = load_array("respeaker_4mic")
    x = plane_wave(arr, np.array([1.0, 1.0, 0.3]), FS, 40 * N, seed=1) * 0.1
    return arr.to_device_layout(x)


def feed(node, audio, k0, k1, t0=50.0, **kw):
    for k in range(k0, k1):
        chunk = AudioChunk(audio[:, k * N: (k + 1) * N].astype(np.float32), kw.get("rate", FS),
                           None if kw.get("no_stamp") else t0 + k * N / FS, k)
        node.on_chunk(chunk)


def test_faults_are_counted_by_kind_and_the_level_recovers(node, audio, monkeypatch):
    seen = []
    monkeypatch.setattr(node, "status", lambda values, period, f=node.status: seen.append(
        (f(values, period), values)) or seen[-1][0])
    feed(node, audio, 0, 6)
    node.publish_diagnostics()
    assert seen[-1][0][0] == 0 and seen[-1][1]["lost_messages"] == 0
    feed(node, audio, 6, 8, rate=48000)  # two messages at the wrong rate
    node.publish_diagnostics()
    (level, msg), values = seen[-1]
    assert level == 2 and "2 audio message(s) dropped" in msg and values["dropped_rate"] == 2
    feed(node, audio, 8, 14)
    node.publish_diagnostics()
    (level, msg), values = seen[-1]
    assert level == 0 and values["lost_messages"] == 0  # recovered; the dropped ones were not lost
    bad = audio[:, 14 * N: 15 * N].astype(np.float32).copy()
    bad[:, 10:20] = np.nan
    node.on_chunk(AudioChunk(bad, FS, 50.0 + 14 * N / FS, 14))
    feed(node, audio, 15, 18)
    node.publish_diagnostics()
    (level, msg), values = seen[-1]
    assert level == 1 and "NaN/Inf" in msg and values["nonfinite_chunks"] == 1
    big = np.zeros((audio.shape[0], 2 * FS), np.float32)
    node.on_chunk(AudioChunk(big, FS, 60.0, 18))
    node.publish_diagnostics()
    assert seen[-1][1]["dropped_oversized"] == 1 and seen[-1][0][0] == 2


def test_maps_stay_finite_after_nan_samples(node, audio):
    maps = []
    node.process = lambda t, block, f=node.process: maps.append(np.isfinite(block).all()) or f(t, block)
    bad = audio.astype(np.float32).copy()
    bad[:, 3 * N: 4 * N] = np.inf
    feed(node, bad, 0, 8)
    assert maps and all(maps)


def test_audio_without_stamps_runs_on_the_sample_clock(node, audio, monkeypatch):
    t = {"now": 100.0}
    monkeypatch.setattr(node, "now", lambda: t["now"])
    rng = np.random.default_rng(0)
    for k in range(30):  # arrivals jitter by +-8 ms around a perfect 64 ms cadence
        t["now"] = 100.0 + (k + 1) * N / FS + rng.uniform(-0.008, 0.008)
        node.on_chunk(AudioChunk(audio[:, k * N: (k + 1) * N].astype(np.float32), FS, None, None))
    st = node.buffer.stats
    assert st.gaps == 0 and st.overlaps == 0 and not st.rate_mismatch


def test_a_burst_of_stamp_less_audio_re_anchors_without_breaking_the_tracker(node, audio, monkeypatch):
    """Audio without stamps delivered faster than real time (a burst after a stall): the sample clock runs ahead
    of the arrivals, is re-anchored back on them, and the source tracker starts afresh instead of failing."""
    from avperception.dsp.tracking import SourceTracker

    node.tracker = node.tracker or SourceTracker(node.array)
    t = {"now": 100.0}
    monkeypatch.setattr(node, "now", lambda: t["now"])
    published = []
    monkeypatch.setattr(node.pub_tracks, "publish", published.append)
    for k in range(36):  # 36 chunks (2.3 s of audio) arriving within 0.35 s
        t["now"] = 100.0 + 0.01 * k
        node.on_chunk(AudioChunk(audio[:, k * N: (k + 1) * N].astype(np.float32), FS, None, None))
    assert node.ingest.expected_stamp() < 100.0 + 1.0  # re-anchored on the arrivals
    assert len(published) > 20  # a map and its tracks for (nearly) every frame, none lost to an exception
