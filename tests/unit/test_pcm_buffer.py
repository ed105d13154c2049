from types import SimpleNamespace as NS

import numpy as np
import pytest

from avperception.audio import pcm
from avperception.audio.buffer import AudioBuffer


@pytest.mark.parametrize("enc,tol", [("S16LE", 1 / 32768), ("S32LE", 1e-7), ("F32LE", 0.0), ("U8", 1 / 128)])
def test_pcm_round_trip(enc, tol):
    x = np.random.default_rng(0).uniform(-0.9, 0.9, (3, 50)).astype(np.float32)
    y = pcm.decode_interleaved(pcm.encode_interleaved(x, enc), enc, 3)
    assert y.shape == (3, 50)
    assert np.max(np.abs(y - x)) <= tol + 1e-7


def test_pcm_interleaving_order():
    raw = np.array([1, 2, 3, 4, 5, 6], dtype="<i2").tobytes()  # s0c0 s0c1 s1c0 s1c1 ...
    x = pcm.decode_interleaved(raw, "S16LE", 2) * 32768
    assert x[0].tolist() == [1, 3, 5] and x[1].tolist() == [2, 4, 6]


def test_pcm_errors():
    with pytest.raises(pcm.AudioFormatError, match="whole number"):
        pcm.decode_interleaved(b"\x00" * 5, "S16LE", 2)
    with pytest.raises(pcm.AudioFormatError, match="unsupported encoding"):
        pcm.decode_interleaved(b"\x00" * 4, "MP3", 1)


def _stamp(t):
    return NS(sec=int(t), nanosec=int(round((t - int(t)) * 1e9)))


def test_adapters_decode_the_same_audio():
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (4, 32)).astype(np.float32)
    s16 = pcm.encode_interleaved(x, "S16LE")
    hdr = NS(stamp=_stamp(12.5), frame_id="mic")
    ours = pcm.from_audio_frame(NS(header=hdr, sample_rate=16000, channels=4, encoding="S16LE", sequence=7, data=s16))
    odas = pcm.from_odas_audio_frame(NS(header=hdr, format="signed_16", channel_count=4, sampling_frequency=16000,
                                        frame_sample_count=32, data=s16))
    info = NS(channels=4, sample_rate=16000, sample_format="S16LE", coding_format="wave")
    common = pcm.from_audio_common(NS(header=hdr, audio=NS(data=s16)), info)
    ints = np.frombuffer(s16, dtype="<i2").tolist()
    stamped = pcm.from_audio_stamped(NS(header=hdr, audio=NS(info=NS(format=8, channels=4, rate=16000, chunk=32),
                                                             audio_data=NS(int16_data=ints))))
    f32 = pcm.from_float32_multiarray(NS(data=x.T.ravel().tolist(), layout=NS(dim=[])), 16000, 4)
    for c in (ours, odas, common, stamped):
        assert c.sample_rate == 16000 and c.stamp == pytest.approx(12.5)
        np.testing.assert_allclose(c.data, x, atol=1 / 32768)
    np.testing.assert_allclose(f32.data, x, atol=1e-7)
    assert ours.sequence == 7
    with pytest.raises(pcm.AudioFormatError, match="AudioInfo"):
        pcm.from_audio_common(NS(header=hdr, audio=NS(data=s16)), None)
    with pytest.raises(pcm.AudioFormatError, match="compressed"):
        pcm.from_audio_common(NS(header=hdr, audio=NS(data=s16)), NS(**{**vars(info), "coding_format": "mp3"}))


def _feed(buf, x, chunk, t0=100.0, fs=16000, skip=(), seq_skip=()):
    for i, s in enumerate(range(0, x.shape[1], chunk)):
        if i in skip:
            continue
        buf.push(x[:, s:s + chunk], t0 + s / fs, sequence=i + (1 if i in seq_skip else 0))


def test_buffer_frames_are_exact_slices_with_stamps():
    fs, frame, hop = 16000, 512, 256
    x = np.arange(2 * 4000, dtype=np.float32).reshape(2, 4000)
    buf = AudioBuffer(2, fs, frame, hop, max_pending_frames=100)
    _feed(buf, x, 300)
    frames = buf.pop_frames()
    assert len(frames) == 1 + (4000 - frame) // hop
    for k, (t, f) in enumerate(frames):
        assert np.array_equal(f, x[:, k * hop:k * hop + frame])
        assert t == pytest.approx(100.0 + k * hop / fs)
    assert buf.stats.gaps == 0 and buf.stats.dropped_frames == 0


def test_buffer_detects_gaps_and_never_straddles_them():
    fs = 16000
    x = np.arange(10 * 1000, dtype=np.float32)[None]
    buf = AudioBuffer(1, fs, 512, 256, max_pending_frames=100)
    _feed(buf, x, 1000, skip={3}, seq_skip=set())
    frames = buf.pop_frames()
    assert buf.stats.gaps == 1
    assert buf.stats.gap_seconds == pytest.approx(1000 / fs, abs=1e-6)
    for t, f in frames:  # every frame is contiguous audio (values step by one) and stamped correctly
        assert np.all(np.diff(f[0]) == 1)
        assert t == pytest.approx(100.0 + f[0, 0] / fs, abs=1e-9)


def test_buffer_counts_lost_messages_overlaps_and_overruns():
    fs = 16000
    buf = AudioBuffer(1, fs, 256, 128, capacity_seconds=0.05, max_pending_frames=3)
    x = np.arange(4000, dtype=np.float32)[None]
    for i, s in enumerate(range(0, 4000, 500)):
        buf.push(x[:, s:s + 500], 10.0 + s / fs, sequence=i if i < 3 else i + 2)
    assert buf.stats.lost_messages == 2
    assert buf.stats.dropped_frames > 0  # consumer never read: oldest frames dropped and counted
    frames = buf.pop_frames()
    assert len(frames) == 3
    assert frames[-1][1][0, -1] >= 3999 - 128  # the newest complete frame is kept
    # overlap: a chunk re-sending 100 already-seen samples is trimmed
    buf.push(np.arange(4000, 4100, dtype=np.float32)[None] , 10.0 + 4000 / fs)
    buf.push(np.arange(4050, 4200, dtype=np.float32)[None], 10.0 + 4050 / fs)
    assert buf.stats.overlaps == 1 and buf.stats.overlap_samples == 50


def test_buffer_flags_rate_mismatch():
    buf = AudioBuffer(1, 16000, 256, 128)
    for i in range(40):  # stamps say 1000 samples every 0.0625 s * 1.1 -> 10 % slow
        buf.push(np.zeros((1, 1000), np.float32), i * 0.0625 * 1.1)
        buf.pop_frames()
    assert buf.stats.rate_mismatch
    assert buf.stats.gaps > 0 or buf.stats.measured_rate == pytest.approx(16000 / 1.1, rel=0.02)


def test_buffer_rejects_wrong_channel_count():
    buf = AudioBuffer(2, 16000, 256, 128)
    with pytest.raises(ValueError, match=r"expected \(2, samples\)"):
        buf.push(np.zeros((3, 10)), 0.0)
    assert buf.stats.rejected_chunks == 1


def test_a_clock_that_steps_back_restarts_framing_instead_of_blinding_the_buffer():
    fs, n = 16000, 1024
    buf = AudioBuffer(2, fs, 2048, 1024, max_pending_frames=100)
    x = np.ones((2, n), np.float32)
    t = 100.0
    for k in range(8):
        buf.push(x, t + k * n / fs, k)
    before = len(buf.pop_frames())
    t2 = t + 8 * n / fs - 3.0  # the publisher's clock goes back 3 s
    for k in range(4):
        buf.push(x * 2, t2 + k * n / fs, 8 + k)
    frames = buf.pop_frames()
    assert before > 0 and buf.stats.clock_resets == 1 and buf.stats.overlaps == 0
    assert len(frames) == 3 and all(np.all(b == 2) for _, b in frames)  # framing restarted at the new audio
    assert frames[0][0] == pytest.approx(t2)
    # a small overlap (a resent chunk) is still trimmed, not a reset
    buf.push(x, t2 + 3.5 * n / fs, 12)
    assert buf.stats.overlaps == 1 and buf.stats.clock_resets == 1


def test_rejected_messages_are_not_lost_and_a_publisher_restart_is_no_loss():
    buf = AudioBuffer(1, 16000, 256, 128)
    x = np.zeros((1, 128), np.float32)
    buf.push(x, 0.0, 10)
    buf.skip_sequence(11)  # the consumer rejected message 11
    buf.push(x, 128 / 16000, 12)
    assert buf.stats.lost_messages == 0
    buf.push(x, 256 / 16000, 15)  # 13 and 14 never came
    assert buf.stats.lost_messages == 2
    buf.push(x, 384 / 16000, 0)  # the publisher restarted
    assert buf.stats.publisher_restarts == 1 and buf.stats.lost_messages == 2
    assert buf.expected_stamp() == pytest.approx(512 / 16000)
