"""AudioIngest: the policy the node and replay-eval share for incoming audio (validation by kind, NaN/Inf repair,
the stamp of stamp-less chunks, framing all or newest-only)."""

import numpy as np
import pytest

from avperception.audio.buffer import AudioBuffer
from avperception.audio.ingest import (DROP_KINDS, AudioIngest, AudioRejected, chunk_stamp, newest_frame,
                                       repair_nonfinite, validate_chunk)
from avperception.audio.pcm import AudioChunk
from avperception.config import load_array

FS, N = 16000, 1024


@pytest.fixture(scope="module")
def array():
    return load_array("respeaker_4mic")  # 6 device channels, microphones on channels 1-4


def device_audio(array, n=N, seed=0):
    """``(mics, n)`` audio and the same as the device publishes it ``(input_channels, n)``."""
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, (array.num_mics, n)).astype(np.float32)
    return x, array.to_device_layout(x)


def ingest(array, frame=512, hop=256, pending=1 << 10):
    buf = AudioBuffer(array.num_mics, FS, frame, hop, 4.0, max_pending_frames=pending)
    return AudioIngest(array, FS, buf)


def test_validate_picks_the_array_channels(array):
    x, dev = device_audio(array)
    np.testing.assert_array_equal(validate_chunk(AudioChunk(dev, FS, 1.0, 0), array, FS), x)


@pytest.mark.parametrize("kind,data,rate", [
    ("rate", np.zeros((6, N), np.float32), 48000),
    ("empty", np.zeros((6, 0), np.float32), FS),
    ("empty", np.zeros(0, np.float32), FS),
    ("oversized", np.zeros((6, int(1.5 * FS)), np.float32), FS),
    ("channels", np.zeros((3, N), np.float32), FS),
])
def test_validate_kinds(array, kind, data, rate):
    with pytest.raises(AudioRejected) as e:
        validate_chunk(AudioChunk(data, rate, 1.0, 0), array, FS, max_chunk_seconds=1.0)
    assert e.value.kind == kind and kind in DROP_KINDS and str(e.value)


def test_max_chunk_seconds_is_the_limit(array):
    dev = np.zeros((6, 2 * FS), np.float32)
    assert validate_chunk(AudioChunk(dev, FS, 1.0, 0), array, FS, max_chunk_seconds=2.0).shape == (4, 2 * FS)
    with pytest.raises(AudioRejected, match="max_chunk_seconds"):
        validate_chunk(AudioChunk(dev, FS, 1.0, 0), array, FS, max_chunk_seconds=1.99)


def test_drops_are_counted_by_kind_and_their_sequence_is_not_lost(array):
    ing = ingest(array)
    _, dev = device_audio(array)
    bad = {2: dict(sample_rate=48000), 3: dict(data=dev[:3]), 4: dict(data=dev[:, :0]),
           5: dict(data=np.zeros((6, 2 * FS), np.float32))}
    for k in range(8):
        kw = {"data": dev, "sample_rate": FS, **bad.get(k, {})}
        got = ing.accept(AudioChunk(kw["data"], kw["sample_rate"], 10.0 + k * N / FS, k), arrival=0.0)
        assert got.ok == (k not in bad)
    assert dict(ing.drops) == {"rate": 1, "channels": 1, "format": 0, "empty": 1, "oversized": 1}
    assert ing.chunks == 4 and ing.buffer.stats.lost_messages == 0
    ing.accept(AudioChunk(dev, FS, 10.0 + 8 * N / FS, 9), arrival=0.0)  # message 8 never came
    assert ing.buffer.stats.lost_messages == 1


def test_repair_nonfinite():
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 12
    y, n = repair_nonfinite(x)
    assert n == 0 and y is x
    bad = x.copy()
    bad[0, 1], bad[1, 2], bad[2, 3] = np.nan, np.inf, -np.inf
    y, n = repair_nonfinite(bad)
    assert n == 3 and y.dtype == np.float32 and np.isfinite(y).all()
    assert y[0, 1] == y[1, 2] == y[2, 3] == 0.0
    keep = np.isfinite(bad)
    np.testing.assert_array_equal(y[keep], x[keep])


def test_ingest_repairs_and_counts_nonfinite(array):
    ing = ingest(array)
    x, dev = device_audio(array)
    dev = dev.copy()
    dev[1, 10:20] = np.nan  # a microphone channel
    dev[0, :] = np.inf  # a channel the array does not use: not counted
    got = ing.accept(AudioChunk(dev, FS, 5.0, 0), arrival=0.0)
    assert got.ok and got.nonfinite == 10 and ing.nonfinite_chunks == 1 and ing.nonfinite_samples == 10
    assert np.isfinite(got.block).all() and (got.block[0, 10:20] == 0).all()
    np.testing.assert_array_equal(got.block[1:], x[1:])
    got = ing.accept(AudioChunk(array.to_device_layout(x), FS, 5.0 + N / FS, 1), arrival=0.0)
    assert got.nonfinite == 0 and ing.nonfinite_chunks == 1


def test_stamp_rule():
    dur = N / FS
    assert chunk_stamp(7.25, 100.0, N, FS, 3.0) == 7.25  # its own stamp, whatever the arrival
    assert chunk_stamp(None, 100.0, N, FS, None) == pytest.approx(100.0 - dur)  # first: arrival less duration
    assert chunk_stamp(0.0, 100.0, N, FS, None) == pytest.approx(100.0 - dur)  # an unset header stamp
    assert chunk_stamp(None, 100.0 + 0.3, N, FS, 100.0 - dur) == 100.0 - dur  # the sample clock goes on
    assert chunk_stamp(None, 100.0 - 0.3, N, FS, 100.0 - dur) == 100.0 - dur
    assert chunk_stamp(None, 100.6, N, FS, 100.0 - dur) == pytest.approx(100.6 - dur)  # too far: new anchor
    assert chunk_stamp(None, 99.0, N, FS, 100.0) == pytest.approx(99.0 - dur)


@pytest.mark.parametrize("framed", [True, False])
def test_stampless_chunks_follow_the_sample_clock(array, framed):
    """Arrivals jitter by +-20 ms; the stamps run exactly on the sample clock, and a 2 s stall re-anchors."""
    ing = ingest(array) if framed else AudioIngest(array, FS)
    _, dev = device_audio(array)
    rng = np.random.default_rng(1)
    stamps = []
    for k in range(20):
        arrival = 50.0 + (k + 1) * N / FS + rng.uniform(-0.02, 0.02)
        stamps.append(ing.accept(AudioChunk(dev, FS, None, k), arrival).stamp)
    np.testing.assert_allclose(np.diff(stamps), N / FS, atol=1e-9)
    assert abs(stamps[0] - 50.0) < 0.021
    late = 50.0 + 21 * N / FS + 2.0
    assert ing.accept(AudioChunk(dev, FS, None, 20), late).stamp == pytest.approx(late - N / FS)
    if framed:
        assert ing.buffer.stats.gaps == 1 and ing.buffer.stats.overlaps == 0


def test_newest_frame():
    frames = [(float(k), np.full((2, 4), k, np.float32)) for k in range(3)]
    (t, f), skipped = newest_frame(frames)
    assert t == 2.0 and (f == 2).all() and skipped == 2
    assert newest_frame([]) == (None, 0)


def test_pop_newest_counts_the_older_frames_as_dropped(array):
    x = np.random.default_rng(2).uniform(-0.5, 0.5, (array.num_mics, 8 * N)).astype(np.float32)
    both = [ingest(array), ingest(array)]
    for ing in both:
        for k in range(8):
            ing.accept(AudioChunk(array.to_device_layout(x[:, k * N:(k + 1) * N]), FS, 1.0 + k * N / FS, k), 0.0)
    every = both[0].pop_all()
    assert len(every) == 1 + (8 * N - 512) // 256 and both[0].buffer.stats.dropped_frames == 0
    t, frame = both[1].pop_newest()
    assert t == every[-1][0] and np.array_equal(frame, every[-1][1])
    assert both[1].buffer.stats.dropped_frames == len(every) - 1
    assert both[1].pop_newest() is None and both[1].buffer.stats.dropped_frames == len(every) - 1
    np.testing.assert_array_equal(frame, x[:, t_index(t): t_index(t) + 512])


def t_index(t: float) -> int:
    return int(round((t - 1.0) * FS))


def test_without_a_buffer_nothing_is_framed(array):
    ing = AudioIngest(array, FS)
    _, dev = device_audio(array)
    assert ing.accept(AudioChunk(dev, FS, 1.0, 0), 0.0).ok
    assert ing.pop_all() == [] and ing.pop_newest() is None
    with pytest.raises(ValueError, match="max_chunk_seconds"):
        AudioIngest(array, FS, max_chunk_seconds=0)
