"""Physics checks: the audio agrees with the ray-cast geometry it is paired with."""

from __future__ import annotations

import numpy as np
import pytest

from avperception.dsp.grid import equirectangular
from avperception_train.datagen import config_from_dict
from avperception_train.datagen.acoustics import echo_profile, first_arrival, sweep
from avperception_train.datagen.geometry import Box, RoomGeometry
from avperception_train.datagen.groundtruth import RayCaster, render_view
from avperception_train.datagen.scene import SceneSpec, SourceSpec, sample_scene, simulate_audio

HARD = {"floor": ["hard_surface"], "wall": ["hard_surface"], "ceiling": ["hard_surface"],
        "obstacle": ["hard_surface"]}
FINE = equirectangular(resolution_deg=1.0)
# a small array (3 cm radius): each microphone's delays and levels stay close to the array centre's
SMALL_ARRAY = "respeaker_4mic"


def _cfg(**over):
    base = {"array": SMALL_ARRAY, "active": {"speaker_position": [0.0, 0.0, 0.0]},
            "passive": {"num_sources": [0, 0]}, "room": {"materials": HARD}}
    for k, v in over.items():
        base.setdefault(k, {}).update(v)
    return config_from_dict(base)


def _spec(room, xy, z, yaw, active=True, sources=()):
    return SceneSpec(0, 0, 0, room, np.asarray(xy, float), z, yaw, active, 0.0, -80.0, list(sources), seed=1)


def _first_echo_error(cfg, spec):
    """Per microphone: detected first-echo lag minus 2 x (ray-cast distance to the nearest surface) / c, in samples."""
    arr = cfg.array_geometry()
    fs, c = cfg.audio.sample_rate, cfg.acoustics.speed_of_sound
    full = simulate_audio(cfg, spec, arr.positions, noise=False)
    direct = simulate_audio(cfg, spec, arr.positions, noise=False, max_order=0)
    a = cfg.active
    env = echo_profile(full - direct, sweep(fs, a.f_start_hz, a.f_end_hz, a.duration_s, a.sweep, a.fade))
    lag = first_arrival(env, threshold=0.3)
    depth, _ = render_view(RayCaster.for_room(spec.room), spec.origin, spec.rotation, FINE.vectors, FINE.shape)
    nearest = float(np.nanmin(depth))
    return lag - 2 * nearest / c * fs, nearest


CASES = {
    "shoebox_floor_nearest": (RoomGeometry(np.array([[0, 0], [5, 0], [5, 4], [0, 4]], float), 2.8), (2.5, 2.0), 0.6, 0.3),
    "shoebox_wall_nearest": (RoomGeometry(np.array([[0, 0], [5, 0], [5, 4], [0, 4]], float), 2.8), (0.7, 2.2), 1.2, 2.0),
    "l_shape": (RoomGeometry(np.array([[0, 0], [6, 0], [6, 3], [3, 3], [3, 5], [0, 5]], float), 2.6), (2.2, 3.9), 1.1, -0.7),
    "box_in_front": (RoomGeometry(np.array([[0, 0], [6, 0], [6, 5], [0, 5]], float), 3.0,
                                  boxes=[Box((3.1, 2.5), (0.4, 1.2), 1.6, 0.0)]), (2.35, 2.5), 1.0, 0.0),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_first_echo_delay_matches_raycast_nearest_surface(name):
    room, xy, z, yaw = CASES[name]
    cfg = _cfg()
    err, nearest = _first_echo_error(cfg, _spec(room, xy, z, yaw))
    assert 0.3 < nearest < 1.0
    # within two samples (0.7 cm of round trip per sample at 16 kHz), on average and per microphone
    assert abs(float(np.mean(err))) <= 2.0, (name, err)
    assert np.all(np.abs(err) <= 3.0), (name, err)


def test_first_echo_in_random_generated_scenes():
    """Same check on scenes the sampler draws (L and T rooms, boxes), hard surfaces so the nearest echo is strongest."""
    cfg = _cfg(room={"shapes": {"l_shape": 1.0, "t_shape": 1.0}}, boxes={"count": [1, 3]})
    arr = cfg.array_geometry()
    for i in (0, 5, 9):
        spec = sample_scene(cfg, i, arr.positions)
        err, _ = _first_echo_error(cfg, spec)
        assert abs(float(np.mean(err))) <= 2.0, (i, err)


def test_box_occludes_and_reflects():
    """A box between the robot and a wall replaces the wall's echo by an earlier one."""
    cfg = _cfg()
    walls = np.array([[0, 0], [8, 0], [8, 8], [0, 8]], float)
    spec_free = _spec(RoomGeometry(walls, 6.0), (6.5, 4.0), 3.0, 0.0)  # nearest: the +x wall at 1.5 m
    spec_box = _spec(RoomGeometry(walls, 6.0, boxes=[Box((7.1, 4.0), (0.2, 3.0), 5.0)]), (6.5, 4.0), 3.0, 0.0)
    e_free, d_free = _first_echo_error(cfg, spec_free)
    e_box, d_box = _first_echo_error(cfg, spec_box)
    assert d_free == pytest.approx(1.5, abs=1e-3) and d_box == pytest.approx(0.5, abs=1e-3)
    assert abs(np.mean(e_free)) <= 2 and abs(np.mean(e_box)) <= 2


def test_levels_follow_the_configured_calibration():
    """The direct sound of a passive source at distance r has the configured RMS level minus 20 log10(r)."""
    cfg = config_from_dict({"array": SMALL_ARRAY, "passive": {"signals": ["noise"]},
                            "acoustics": {"max_order_shoebox": 0}})
    arr = cfg.array_geometry()
    room = RoomGeometry(np.array([[0, 0], [20, 0], [20, 20], [0, 20]], float), 10.0)
    src = SourceSpec(np.array([12.0, 10.0, 5.0]), "noise", -30.0)
    spec = _spec(room, (10.0, 10.0), 5.0, 0.0, active=False, sources=[src])
    x = simulate_audio(cfg, spec, arr.positions, noise=False)
    level = 20 * np.log10(np.sqrt(np.mean(x**2)))
    assert level == pytest.approx(-30.0 - 20 * np.log10(2.0), abs=0.5)
    # and the sweep peaks near its configured level at 1 m (direct path only, speaker 1 m from the array)
    cfg2 = config_from_dict({"array": SMALL_ARRAY, "active": {"speaker_position": [1.0, 0.0, 0.0]},
                             "acoustics": {"max_order_shoebox": 0}})
    y = simulate_audio(cfg2, _spec(room, (10.0, 10.0), 5.0, 0.0), arr.positions, noise=False)
    assert 20 * np.log10(np.abs(y).max()) == pytest.approx(cfg2.active.level_db, abs=1.0)


def test_sensor_noise_level():
    cfg = config_from_dict({"passive": {"num_sources": [0, 0]}})
    arr = cfg.array_geometry()
    room = RoomGeometry(np.array([[0, 0], [5, 0], [5, 5], [0, 5]], float), 3.0)
    spec = _spec(room, (2.5, 2.5), 1.0, 0.0, active=False)
    spec.noise_db = -60.0
    x = simulate_audio(cfg, spec, arr.positions)
    assert 20 * np.log10(np.std(x)) == pytest.approx(-60.0, abs=0.2)


def test_energy_target_peaks_at_the_true_source_direction():
    from avperception_train.datagen import generate_scene
    from avperception_train.datagen.scene import grids

    cfg = config_from_dict({"passive": {"num_sources": [2, 3]}, "seed": 3})
    _, egrid, _ = grids(cfg)
    for i in range(3):
        s = generate_scene(cfg, i)
        k = int(s["num_sources"])
        assert k >= 2 and 0.9 < s["energy"].max() <= 1.0  # the loudest peaks at 1 (less between grid cells)
        peak = egrid.vectors[int(np.argmax(s["energy"]))]
        ang = np.degrees(np.arccos(np.clip(s["source_dirs"][:k] @ peak, -1, 1)))
        assert ang.min() < 3.0  # within a grid cell of one of the sources (the loudest at the array)


def test_a_source_hidden_from_every_path_is_heard_round_its_box():
    """The image-source model finds no path from a source behind a box at order 0; the source is then heard
    as if the boxes were not there (instead of failing), and a room that hides it even so is an error."""
    from avperception_train.datagen.acoustics import RoomAcoustics

    walls = np.array([[0, 0], [8, 0], [8, 8], [0, 8]], float)
    box = RoomGeometry(walls, 4.0, boxes=[Box((4.0, 4.0), (1.0, 1.0), 3.5)])
    mic, src = np.array([[2.0, 4.0, 1.0]]), np.array([[6.0, 4.0, 1.0], [2.0, 6.0, 1.0]])  # hidden, in view

    def rirs(room, order):
        return RoomAcoustics(room, mic, src, 16000, max_order_shoebox=order, max_order=order,
                             air_absorption=False).rirs()

    hidden, seen = rirs(box, 0)
    open_hidden, open_seen = rirs(RoomGeometry(walls, 4.0), 0)
    np.testing.assert_allclose(hidden, open_hidden[:, : hidden.shape[1]], atol=1e-12)
    assert np.argmax(np.abs(hidden[0])) == pytest.approx(4.0 / 343.0 * 16000, abs=1)  # the 4 m straight line
    np.testing.assert_allclose(seen, open_seen[:, : seen.shape[1]], atol=1e-12)  # the other source is untouched
    # with reflections the model finds a way round itself: no direct sound, the box stays in
    d = int(round(4.0 / 343.0 * 16000))
    hidden1, _ = rirs(box, 1)
    open1, _ = rirs(RoomGeometry(walls, 4.0), 1)
    assert np.abs(hidden1[0, d - 2: d + 3]).max() < 0.02 * np.abs(open1[0, d - 2: d + 3]).max()
    # an L-shaped room hides the source round its corner from the direct path, with no box to take away
    ell = RoomGeometry(np.array([[0, 0], [8, 0], [8, 3], [3, 3], [3, 8], [0, 8]], float), 4.0)
    with pytest.raises(ValueError, match="by no path"):
        RoomAcoustics(ell, np.array([[1.5, 7.0, 1.0]]), np.array([[7.0, 1.5, 1.0]]), 16000, max_order=0).rirs()


def _peak_lag(env: np.ndarray, near: float, half: int = 12) -> float:
    """Sub-sample lag of the envelope's largest peak within ``half`` samples of ``near`` (parabolic)."""
    lo = int(round(near)) - half
    k = lo + int(np.argmax(env[lo: lo + 2 * half + 1]))
    a, b, c = env[k - 1], env[k], env[k + 1]
    return k + 0.5 * (a - c) / (a - 2 * b + c)


def test_a_moving_robot_hears_each_wall_echo_where_it_is_when_the_echo_arrives():
    """Driving at 5 m/s towards one wall and away from the opposite one, the first-order echoes arrive several
    samples earlier and later than standing still, where a moving receiver hears them: the same matched-filter
    peak as the sweep delayed exactly by the path from the speaker's image (where the speaker was at the sweep's
    onset) to each microphone at every instant (which compresses or stretches the sweep; a linear sweep's peak
    moves with that Doppler shift too, by about a sample here)."""
    from scipy.signal import chirp
    from scipy.signal.windows import tukey

    # an 8 ms sweep: the reference keeps the speaker's image where the speaker was at the onset, which holds
    # while the sweep is short (4 cm of travel at 5 m/s)
    cfg = _cfg(robot={"motion_step_m": 0.005}, active={"duration_s": 0.008})
    arr = cfg.array_geometry()
    fs, c, n = cfg.audio.sample_rate, cfg.acoustics.speed_of_sound, cfg.audio.num_samples
    room = RoomGeometry(np.array([[0, 0], [6, 0], [6, 20], [0, 20]], float), 20.0)
    a = cfg.active
    emitted = sweep(fs, a.f_start_hz, a.f_end_hz, a.duration_s, a.sweep, a.fade)
    ts = np.arange(len(emitted)) / fs
    taper = tukey(len(emitted), a.fade)
    peak = np.max(np.abs(chirp(ts, f0=a.f_start_hz, t1=ts[-1], f1=a.f_end_hz) * taper))  # sweep() scales by it

    def exact(t):  # the sweep at any instant (0 outside it), as sweep() samples it
        x = chirp(np.clip(t, 0, ts[-1]), f0=a.f_start_hz, t1=ts[-1], f1=a.f_end_hz) * np.interp(t, ts, taper)
        return np.where((t >= 0) & (t <= ts[-1]), x, 0.0) / peak

    def lags(v):
        spec = _spec(room, (2.5, 10.0), 10.0, 0.0)
        spec.velocity = np.array([v, 0.0, 0.0])
        env = echo_profile(simulate_audio(cfg, spec, arr.positions, noise=False, max_order=1), emitted)
        speaker = spec.to_world(np.asarray(a.speaker_position, float))
        t = np.arange(n) / fs
        out = []
        for wall_x in (6.0, 0.0):  # east 3.5 m ahead, west 2.5 m behind
            image = speaker.copy()
            image[0] = 2 * wall_x - image[0]
            mics = spec.to_world(arr.positions)
            ref = np.stack([exact(t - np.linalg.norm(p + spec.velocity * t[:, None] - image, axis=1) / c)
                            for p in mics])
            env_ref = echo_profile(ref, emitted)
            near = [np.linalg.norm(p - image) / c * fs for p in mics]
            out.append((np.array([_peak_lag(e, k) for e, k in zip(env, near)]),
                        np.array([_peak_lag(e, k) for e, k in zip(env_ref, near)]), np.array(near)))
        return out

    still, moving = lags(0.0), lags(5.0)
    for (g0, r0, d), (g1, r1, _), sign in zip(still, moving, (-1, 1)):
        np.testing.assert_allclose(g0, d, atol=0.5)  # standing: at the path's length
        np.testing.assert_allclose(r0, d, atol=0.25)
        assert np.all(sign * (g1 - g0) > 3.0)  # moving: several samples off ...
        np.testing.assert_allclose(g1, r1, atol=0.3)  # ... where the exactly delayed sweep peaks


def test_motion_changes_only_the_audio_and_is_recorded():
    cfg = config_from_dict({"seed": 3, "array": SMALL_ARRAY})
    moving = config_from_dict({"seed": 3, "array": SMALL_ARRAY, "robot": {"speed_mps": [0.5, 1.0]}})
    arr = cfg.array_geometry()
    for index in range(3):
        s0, s1 = sample_scene(cfg, index, arr.positions), sample_scene(moving, index, arr.positions)
        assert np.all(s0.velocity == 0)
        speed = np.linalg.norm(s1.velocity)
        assert 0.5 <= speed <= 1.0 and s1.velocity[2] == 0
        np.testing.assert_array_equal(s0.robot_xy, s1.robot_xy)
        assert (s0.yaw, s0.array_height, s0.active, len(s0.sources)) == (s1.yaw, s1.array_height, s1.active,
                                                                          len(s1.sources))
        # the robot stays 5 cm clear of every wall and box to the window's end
        end = s1.to_world(arr.positions) + s1.velocity * moving.audio.num_samples / moving.audio.sample_rate
        assert np.all(s1.room.clearance_2d(end[:, :2]) >= 0.05)
        a0 = simulate_audio(cfg, s0, arr.positions, noise=False)
        a1 = simulate_audio(moving, s1, arr.positions, noise=False)
        assert a0.shape == a1.shape and not np.allclose(a0, a1)
        # the sweep's direct path (the first 40 samples, 2.5 ms) is heard from about the same place
        d0 = simulate_audio(cfg, s0, arr.positions, noise=False, sources=False)[:, :40]
        d1 = simulate_audio(moving, s1, arr.positions, noise=False, sources=False)[:, :40]
        if s0.active:
            assert np.sum(d0 * d1) / np.sqrt(np.sum(d0**2) * np.sum(d1**2)) > 0.99
