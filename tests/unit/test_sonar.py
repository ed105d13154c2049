"""Ping onsets and windows: a rendered stream's onsets are found to within a sample, windows start there."""

import numpy as np
import pytest

from avperception.config import load_array
from avperception.dsp.echo import sweep
from avperception.sonar import (SKIP_REASONS, DirectPath, PingAligner, detect_onsets, estimate_output_latency,
                                refine_onset)

FS, C = 16000, 343.0
SPEAKER = np.array([0.0, 0.0, -0.05])
SWEEP = sweep(FS, 1000, 7000, 0.008, "linear", 0.25)
MICS = load_array("robot_8mic").positions
LEVEL = 10 ** (-30 / 20)  # sweep peak at 1 m from the speaker, as the data engine renders it


@pytest.fixture(scope="module")
def direct():
    return DirectPath.build(SWEEP, MICS, SPEAKER, FS, C)


def shifted(x, tau, n):
    """``x`` delayed by ``tau`` samples (exact, band-limited), ``n`` samples long."""
    size = 1 << int(np.ceil(np.log2(n + x.size + 64)))
    f = np.fft.rfftfreq(size)
    return np.fft.irfft(np.fft.rfft(x, size) * np.exp(-2j * np.pi * f * tau), size)[:n]


def render_stream(onsets, n, seed=0, echoes=((1.0, 0.7), (1.6, 0.5)), ambient_db=-28.0, tail_db=-45.0,
                  level=LEVEL):
    """``(M, n)``: a ping at each (fractional) onset: the direct path at its delay and level, a wall echo per
    ``(range m, reflection)`` (same delay at every mic: enough for onsets), the previous ping's reverberant
    tail, ambient sound and sensor noise."""
    rng = np.random.default_rng(seed)
    dist = np.linalg.norm(MICS - SPEAKER, axis=1)
    x = np.zeros((len(MICS), n))
    span = SWEEP.size + 256
    for o in onsets:
        i0 = int(np.floor(o))
        for m in range(len(MICS)):
            paths = [(dist[m], level / dist[m])] + [(2 * r, g * level / (2 * r)) for r, g in echoes]
            for d, g in paths:
                j = i0 + int(d / C * FS) - 8
                if j >= n:
                    continue
                seg = g * shifted(SWEEP, o - j + d / C * FS, span)[: n - j]
                x[m, j: j + seg.size] += seg
        # reverberant tail: decaying noise (60 dB in 0.4 s) after each ping
        t = np.arange(int(0.5 * FS))
        tail = 10 ** (tail_db / 20) * rng.standard_normal((len(MICS), t.size)) * 10 ** (-3 * t / (0.4 * FS))
        j = i0 + 200
        if j < n:
            x[:, j: j + t.size] += tail[:, : n - j]
    amb = np.cumsum(rng.standard_normal(n + 64)) * 0.05  # brown-ish ambient sound, same at all mics but shifted
    amb = amb - np.convolve(amb, np.ones(64) / 64, "same")
    amb *= 10 ** (ambient_db / 20) / (amb.std() + 1e-12)
    for m in range(len(MICS)):
        x[m] += amb[m * 3: m * 3 + n]
    x += 10 ** (-65 / 20) * rng.standard_normal(x.shape)
    return x


def test_direct_path_delays_match_the_geometry(direct):
    expected = np.hypot(0.1, 0.05) / C * FS  # every mic of the ring is as far from the speaker
    np.testing.assert_allclose(direct.delays, expected, rtol=1e-4)
    with pytest.raises(ValueError, match=r"\(mics, 3\)"):
        DirectPath.build(SWEEP, MICS[:, :2], SPEAKER, FS)


def test_refine_onset_is_within_a_sample_on_a_rendered_stream(direct):
    rng = np.random.default_rng(1)
    onsets = 1000 + np.arange(6) * 4000 + rng.uniform(0, 1, 6)
    x = render_stream(onsets, 26000, seed=2)
    for o in onsets:
        nominal = int(round(o)) + int(rng.integers(-50, 51))
        u = refine_onset(x, nominal, direct, search=64)
        assert u is not None and abs(u - o) <= 1.0, (u, o, nominal)


def test_refine_onset_finds_nothing_without_a_sweep(direct):
    x = render_stream([], 6000, seed=3)
    assert refine_onset(x, 3000, direct) is None
    assert refine_onset(x[:, :100], 50, direct) is None  # too short for the kernel


def test_refine_onset_on_a_simulated_room(direct):
    """The data engine's renderer (pyroomacoustics image sources): direct path, walls, ambient source."""
    pytest.importorskip("pyroomacoustics")
    acoustics = pytest.importorskip("avperception_train.datagen.acoustics")
    from avperception_train.datagen.geometry import RoomGeometry

    room = RoomGeometry(np.array([[0, 0], [4.0, 0], [4.0, 3.0], [0, 3.0]]), 2.6)
    centre = np.array([1.3, 1.1, 1.0])
    sim = acoustics.RoomAcoustics(room, MICS + centre, np.array([centre + SPEAKER, [3.2, 2.4, 1.5]]), FS, C,
                                  max_order_shoebox=6)
    h_speaker, h_ambient = sim.rirs()
    k0 = acoustics.distance_gain(FS, C)
    pad, n = 700, 4096
    x = np.zeros((len(MICS), pad + n))
    x[:, pad:] = acoustics.render_active(h_speaker, SWEEP * LEVEL / k0, n)
    noise = np.random.default_rng(4).standard_normal(pad + n + h_ambient.shape[1])
    x += acoustics.render_passive(h_ambient, noise / noise.std() * 10 ** (-25 / 20) / k0, pad + n)
    for nominal in (pad - 40, pad, pad + 37):
        u = refine_onset(x, nominal, direct)
        assert u is not None and abs(u - pad) <= 1, (u, nominal)


def test_detect_onsets_finds_every_ping_once(direct):
    onsets = 500 + np.arange(8) * 4000 + 0.3
    x = render_stream(onsets, 33000, seed=5)
    found = detect_onsets(x, direct, min_spacing=2000)
    assert len(found) == len(onsets)
    np.testing.assert_allclose(found, onsets, atol=1.0)
    assert detect_onsets(render_stream([], 20000, seed=6), direct, min_spacing=2000) == []


def test_output_latency_is_measured_and_a_muted_speaker_is_an_error(direct):
    played = list(1000 + np.arange(6) * 8000)
    latency = 1234.4
    x = render_stream([p + latency for p in played], 52000, seed=7)
    got, spread = estimate_output_latency(x, played, direct)
    assert abs(got - latency) <= 0.5 and spread < 1.0
    with pytest.raises(RuntimeError, match="direct path was found in 0 of"):
        estimate_output_latency(render_stream([], 52000, seed=8), played, direct)


# ----------------------------------------------------------------------------- PingAligner


def feed(aligner, x, chunks, t0=100.0, gaps=()):
    """Push ``x`` in chunks of the given sizes; ``gaps``: chunk numbers before which that many samples are
    missing (not pushed, the stamps jump)."""
    i, c = 0, 0
    gaps = dict(gaps)
    while i < x.shape[1]:
        if c in gaps:
            i += gaps[c]
        n = chunks[c % len(chunks)]
        if i < x.shape[1]:
            aligner.push_audio(x[:, i: i + n].astype(np.float32), t0 + i / FS, c)
        i += n
        c += 1


def test_windows_start_at_the_onsets(direct):
    rng = np.random.default_rng(9)
    onsets = 3000 + np.arange(10) * 4000 + rng.uniform(0, 1, 10)
    x = render_stream(onsets, 46000, seed=10)
    t0 = 100.0
    al = PingAligner(8, FS, 2048, direct, ping_period_s=0.25)
    out = []
    sizes = [1024, 777, 1500, 64]
    i, c, k = 0, 0, 0
    while i < x.shape[1]:
        n = sizes[c % 4]
        al.push_audio(x[:, i: i + n].astype(np.float32), t0 + i / FS, c)
        i += n
        c += 1
        while k < len(onsets) and onsets[k] < i + 600:  # the Ping message comes about when the ping is heard
            known = k % 2 == 0
            jitter = 0 if known else int(rng.integers(-150, 150))  # scheduled only: off by up to ~10 ms
            al.push_ping(t0 + (round(onsets[k]) + jitter) / FS, k, onset_known=known)
            k += 1
        out += al.pop_windows()
    assert [w.sequence for w in out] == list(range(len(onsets))), al.stats()
    for w in out:
        o = onsets[w.sequence]
        assert abs(w.onset_index - o) <= 1.0
        assert w.stamp == pytest.approx(t0 + w.onset_index / FS, abs=1e-9)
        np.testing.assert_array_equal(w.audio, x[:, w.onset_index: w.onset_index + 2048].astype(np.float32))
        assert w.completed_stamp >= w.stamp + 2047 / FS and not w.detected
    assert al.aligned == len(onsets) and al.detected == 0 and sum(al.skipped.values()) == 0
    assert 0 < al.mean_abs_correction <= 150


def test_skips_are_counted_by_reason(direct):
    onsets = [3000.0, 7000.0, 11000.0, 15000.0]
    x = render_stream(onsets, 19000, seed=11)
    t0 = 50.0
    al = PingAligner(8, FS, 2048, direct, capacity_s=1.0, ping_period_s=0.25, max_pending=2, detect=False)
    al.push_ping(t0 - 1.0, 0, True)  # before any audio
    feed(al, x[:, :9000], [1000], t0)
    assert al.pop_windows() == [] and al.skipped["before_audio"] == 1
    al.push_ping(t0 + 7000 / FS, 1, True)
    al.push_ping(t0 + 5000 / FS, 2, True)  # a stamp without a sweep
    al.push_ping(t0 + 8500 / FS, 3, True)  # queue of 2: ping 1 is dropped
    assert al.pop_windows() == [] and al.skipped["queue_full"] == 1
    assert al.skipped["no_direct_path"] == 1 and al.pending == 1  # ping 3 waits for its audio
    # 0.3 s go missing: ping 3's window straddles the gap, ping 4's onset lies in it
    al.push_ping(t0 + 10000 / FS, 4, True)
    feed(al, x[:, 13800:], [1000], t0 + 13800 / FS)
    assert al.gaps == 1 and al.pop_windows() == [] and al.skipped["gap_in_window"] == 2
    al.push_ping(t0 + 15000 / FS, 5, True)
    assert [w.sequence for w in al.pop_windows()] == [5]
    feed(al, x, [1000], t0 + x.shape[1] / FS)  # 1.2 s more: the start is overwritten (1 s ring)
    al.push_ping(t0 + 3000 / FS, 6, True)
    al.pop_windows()
    assert al.skipped["overwritten"] == 1 and set(al.skipped) == set(SKIP_REASONS)


def test_a_ping_whose_audio_never_comes_times_out(direct):
    x = render_stream([], 40000, seed=15)
    al = PingAligner(8, FS, 2048, direct, capacity_s=1.0, detect=False)
    al.push_audio(x[:, :1000], 0.0)
    al.push_ping(100.0, 0, True)  # a clock far ahead of the audio's
    feed(al, x[:, 1000:], [1000], 1000 / FS)
    assert al.pop_windows() == [] and al.skipped["incomplete_timeout"] == 1 and al.pending == 0


def test_overlapping_chunks_are_trimmed_and_the_clock_can_restart(direct):
    onsets = [3000.3]
    x = render_stream(onsets, 8000, seed=12)
    al = PingAligner(8, FS, 2048, direct, detect=False)
    t0 = 10.0
    al.push_audio(x[:, :4000], t0)
    al.push_audio(x[:, 3900:], t0 + 3900 / FS)  # 100 samples again
    al.push_ping(t0 + 3000 / FS, 0, True)
    (w,) = al.pop_windows()
    assert al.overlaps == 1 and abs(w.onset_index - 3000.3) <= 1
    np.testing.assert_array_equal(w.audio, x[:, w.onset_index: w.onset_index + 2048].astype(np.float32))
    al.push_audio(x[:, :4000], 2.0)  # a replayed bag starts over
    assert al.clock_resets == 1
    al.push_audio(x[:, 4000:], 2.0 + 4000 / FS)
    al.push_ping(2.0 + 3000 / FS, 1, True)
    (w,) = al.pop_windows()
    assert abs(w.stamp - (2.0 + 3000.3 / FS)) <= 1.0 / FS


def test_detection_without_ping_messages_finds_each_ping_once(direct):
    onsets = 2500 + np.arange(12) * 4000 + 0.6
    x = render_stream(onsets, 52000, seed=13)
    al = PingAligner(8, FS, 2048, direct, ping_period_s=0.25)
    rng = np.random.default_rng(14)
    out, i = [], 0
    while i < x.shape[1]:
        n = int(rng.integers(100, 1500))
        al.push_audio(x[:, i: i + n], 7.0 + i / FS)
        i += n
        out += al.pop_windows()
    assert al.detecting()
    got = [w.onset_index for w in out]
    assert len(got) == len(onsets) and len(set(got)) == len(got) and all(w.detected for w in out)
    for g in got:
        assert np.min(np.abs(onsets - g)) <= 1.0
    assert al.detected == len(got)
    # a Ping message stops detection
    al.push_ping(7.0 + (x.shape[1] - 3000) / FS, 0, True)
    assert not al.detecting()


def test_aligner_checks_its_direct_path(direct):
    with pytest.raises(ValueError, match="same array"):
        PingAligner(4, FS, 2048, direct)


def chirper(x, starts, level_db=-26.0, seed=21):
    """Another sweep-like sound 2 m away (a far plane wave, 30 deg to the side) at ``starts``: as loud at the
    microphones as the room's sources, far below the robot's own direct path."""
    out = x.copy()
    u = np.array([np.cos(0.5), np.sin(0.5), 0.0])
    delays = -(MICS @ u) / C * FS  # plane-wave arrival per mic
    for s in starts:
        for m in range(len(MICS)):
            seg = 10 ** (level_db / 20) * shifted(SWEEP, 40 + delays[m], SWEEP.size + 80)
            out[m, s - 40: s - 40 + seg.size] += seg[: x.shape[1] - s + 40]
    return out


def test_a_sweep_like_ambient_sound_is_not_a_ping(direct):
    """Pings once a second, and between them another sweep-like sound, 15 dB weaker at the microphones (a far
    source): farther from every ping than the spacing rule reaches, so only its level tells it apart."""
    onsets = 3000 + np.arange(6) * 16000 + 0.4
    chirps = [int(o) + k for o in onsets[:-1] for k in (6000, 11000)] + [1000]
    x = chirper(render_stream(onsets, 3000 + 6 * 16000, seed=22, ambient_db=-40.0), chirps)
    found = detect_onsets(x, direct, min_spacing=8000)
    assert len(found) == len(onsets) and np.max(np.abs(np.array(found) - onsets)) <= 1.0
    al = PingAligner(8, FS, 2048, direct, ping_period_s=1.0)
    out = []
    for i in range(0, x.shape[1], 1024):
        al.push_audio(x[:, i: i + 1024].astype(np.float32), 3.0 + i / FS)
        out += al.pop_windows()
    got = np.array([w.onset_index for w in out])
    # every ping, and no chirp after the first ping (the one before it could pass for one: nothing to compare yet)
    real = got[np.min(np.abs(got[:, None] - onsets[None]), axis=1) <= 1.0]
    assert len(real) == len(onsets) and np.all(got[got > onsets[0]] == real[real > onsets[0]])


def test_a_ping_of_another_sweep_is_not_run():
    """A Ping naming another sweep than the bundle's is not queued (the model hears only its own sweep) and is
    counted for the diagnostics; the bundle's own sweep, or none named, is queued."""
    from avperception.config import SonarConfig, load_array
    from avperception.sonar.pipeline import SonarPipeline

    p = SonarPipeline(load_array("robot_8mic"), SonarConfig())
    assert not p.push_ping(1.0, 1, True, "linear-1000-7000Hz-8ms-16k")
    assert p.aligner.pending == 0 and p.stats()["pings_skipped_sweep_mismatch"] == 1
    assert p.push_ping(1.25, 2, True, p.bundle.sweep_id) and p.push_ping(1.5, 3, True)
    assert p.aligner.pending == 2 and p.stats()["pings_skipped_sweep_mismatch"] == 1
