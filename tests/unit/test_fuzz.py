"""Property-based tests (hypothesis): whatever arrives, the decoders, the buffers and the config loaders either
do their job or raise the one error type their callers catch, and the streaming state stays bounded."""

from types import SimpleNamespace as NS

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from avperception.audio import pcm
from avperception.audio.buffer import AudioBuffer
from avperception.config import ConfigError, load_array, load_pipeline_config

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ENCODINGS = sorted(pcm.ENCODINGS)


@FAST
@given(st.binary(max_size=400), st.sampled_from(ENCODINGS + ["S24LE", "", "mp3"]), st.integers(-2, 9))
def test_decode_returns_bounded_samples_or_a_format_error(data, encoding, channels):
    try:
        x = pcm.decode_interleaved(data, encoding, channels)
    except pcm.AudioFormatError:
        return
    assert x.dtype == np.float32 and x.shape[0] == channels and x.shape[1] * channels * \
        np.dtype(pcm.ENCODINGS[encoding][0]).itemsize == len(data)
    if pcm.ENCODINGS[encoding][1] != 1.0:  # integer PCM: always finite and within full scale
        assert np.all(np.abs(x) <= 1.0)


@FAST
@given(st.sampled_from([e for e in ENCODINGS if pcm.ENCODINGS[e][1] != 1.0]), st.integers(1, 8),
       st.lists(st.floats(-2, 2, allow_nan=False), min_size=1, max_size=64))
def test_integer_pcm_round_trips_within_one_step(encoding, channels, values):
    x = np.resize(np.asarray(values), (channels, max(1, len(values) // channels)))
    y = pcm.decode_interleaved(pcm.encode_interleaved(x, encoding), encoding, channels)
    assert np.max(np.abs(y - np.clip(x, -1, 1))) <= 1.5 / pcm.ENCODINGS[encoding][1] + 1e-7


@FAST
@given(st.binary(max_size=200), st.text(max_size=6), st.integers(-3, 20), st.integers(-5, 200000),
       st.integers(0, 2**40))
def test_an_audio_frame_with_any_fields_decodes_or_says_why(data, encoding, channels, rate, seq):
    msg = NS(data=data, encoding=encoding, channels=channels, sample_rate=rate, sequence=seq,
             header=NS(stamp=NS(sec=5, nanosec=7), frame_id="a"))
    try:
        chunk = pcm.from_audio_frame(msg)
    except (pcm.AudioFormatError, ValueError):
        return
    assert chunk.data.shape[0] == channels and chunk.sequence == seq


chunks = st.lists(st.tuples(st.integers(0, 700),  # samples
                            st.one_of(st.none(), st.floats(-3.0, 3.0)),  # stamp offset from the nominal one
                            st.one_of(st.none(), st.integers(0, 50))),  # sequence
                  max_size=30)


@FAST
@given(chunks, st.integers(1, 6))
def test_audio_buffer_stays_bounded_and_consistent_whatever_the_stamps(items, max_pending):
    buf = AudioBuffer(3, 1000, 256, 128, capacity_seconds=1.0, max_pending_frames=max_pending)
    ring_bytes = buf._ring.nbytes
    t = 10.0
    for n, jitter, seq in items:
        buf.push(np.ones((3, n), np.float32), None if jitter is None else t + jitter, seq)
        t += n / 1000
        assert buf.pending() <= max_pending
        for stamp, block in buf.pop_frames():
            assert block.shape == (3, 256) and np.isfinite(stamp)
    s = buf.stats
    assert buf._ring.nbytes == ring_bytes  # memory never grows
    assert min(s.gaps, s.overlaps, s.lost_messages, s.dropped_frames, s.clock_resets, s.publisher_restarts) >= 0
    assert s.samples_in <= sum(n for n, _, _ in items)


@FAST
@given(chunks)
def test_ping_aligner_never_raises_and_cuts_whole_windows(items):
    from avperception.dsp.echo import sweep
    from avperception.sonar.align import PingAligner
    from avperception.sonar.onset import DirectPath

    e = sweep(16000, 1000, 7000, 0.008)
    direct = DirectPath.build(e, load_array("robot_8mic").positions, [0, 0, -0.05], 16000)
    al = PingAligner(8, 16000, 512, direct, capacity_s=0.5, ping_period_s=0.05, max_pending=3)
    rng = np.random.default_rng(len(items))
    t = 1.0
    for k, (n, jitter, seq) in enumerate(items):
        if k % 3 == 0:
            al.push_ping(t + (jitter or 0.0), k, bool(k % 2))
        al.push_audio((rng.standard_normal((8, n)) * 0.01).astype(np.float32), None if jitter is None else t + jitter,
                      seq)
        t += n / 16000
        for w in al.pop_windows():
            assert w.audio.shape == (8, 512) and w.audio.dtype == np.float32
    assert al.pending <= 3 and all(v >= 0 for v in al.skipped.values())


yaml_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                                     st.floats(allow_nan=True), st.text(max_size=8)),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)
keys = st.sampled_from(["sample_rate", "speed_of_sound", "frame", "stft", "grid", "beamformer", "sonar", "array",
                        "frame.hop_samples", "grid.kind", "sonar.threads", "nonsense"])


@FAST
@given(st.dictionaries(keys, yaml_values, max_size=4))
def test_pipeline_config_loads_or_raises_a_config_error(data):
    try:
        cfg = load_pipeline_config(data)
    except ConfigError:
        return
    assert cfg.validate() is cfg


@FAST
@given(st.dictionaries(st.sampled_from(["positions", "name", "frame_id", "sample_rate", "channel_map", "channels",
                                        "extra"]), yaml_values, max_size=5))
def test_array_files_load_or_raise_a_config_error(data):
    try:
        arr = load_array(data)
    except ConfigError:
        return
    assert arr.positions.ndim == 2 and arr.positions.shape[1] == 3 and np.all(np.isfinite(arr.positions))


@pytest.mark.parametrize("text", ["positions: [[0, 0, 0], [0.1, 0, 0]", "- just\n- a list", "positions: 7",
                                  "positions: [[nan, 0, 0], [0.1, 0, 0]]", ""])
def test_malformed_array_yaml_files_are_config_errors(tmp_path, text):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError):
        load_array(str(p))


@FAST
@given(st.binary(max_size=120), st.sampled_from(["signed_16", "float", "unsigned_8", "bogus", ""]),
       st.integers(-2, 6), st.integers(-1, 50000), st.integers(-1, 400),
       st.sampled_from(["S16LE", "F32LE", "U8", "MP3", ""]), st.sampled_from(["wave", "mp3", "", "raw"]),
       st.sampled_from([1, 2, 8, 16, 32, 7]),
       st.lists(st.one_of(st.floats(-3, 3), st.just(float("nan"))), max_size=40),
       st.sampled_from(["interleaved", "planar", "zig"]))
def test_every_driver_message_decodes_or_says_why(data, odas_fmt, channels, rate, count, fmt, coding, pa_format,
                                                   values, layout):
    hdr = NS(stamp=NS(sec=1, nanosec=2), frame_id="f")
    msgs = [
        lambda: pcm.from_odas_audio_frame(NS(header=hdr, format=odas_fmt, channel_count=channels,
                                             sampling_frequency=rate, frame_sample_count=count, data=data)),
        lambda: pcm.from_audio_common(NS(header=hdr, audio=NS(data=data)),
                                      NS(channels=channels, sample_rate=rate, sample_format=fmt, coding_format=coding)),
        lambda: pcm.from_audio_stamped(NS(header=hdr, audio=NS(
            info=NS(format=pa_format, channels=channels, rate=rate),
            audio_data=NS(float32_data=values, int32_data=[int(v * 1000) for v in values if v == v],
                          int16_data=[int(v * 100) for v in values if v == v], int8_data=[], uint8_data=[])))),
        lambda: pcm.from_float32_multiarray(NS(data=values, layout=NS(dim=[])), rate, channels, layout),
    ]
    for make in msgs:
        try:
            chunk = make()
        except (pcm.AudioFormatError, ValueError):
            continue
        assert chunk.data.ndim == 2 and chunk.data.dtype == np.float32
