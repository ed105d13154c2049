"""The wall-echo check: a wall is heard where its echo is the strongest in its beam, masked where another is."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avperception.config import load_array
from avperception.dsp.echo import echo_image
from avperception.dsp.grid import horizon
from avperception.sonar.emitter import load_emitter_sweep
from avperception_train.cli import main
from avperception_train.datagen import config_from_dict, run_datagen
from avperception_train.learn.wall_echoes import band_table, specular_columns, wall_echoes

FS, C, N, W = 16000, 343.0, 2048, 120


def test_a_specular_column_is_the_nearest_of_its_neighbours_and_the_panorama_wraps():
    walls = np.full(12, np.nan)
    walls[[0, 1, 2]] = [2.5, 2.0, 2.2]
    walls[11] = 3.0   # its neighbours 0, 1, 2 (across the seam) are nearer
    walls[6] = 1.0    # alone: no neighbour shows a wall
    assert np.flatnonzero(specular_columns(walls)).tolist() == [1, 6]


def _echoes(paths, noise: float = 1e-4, seed: int = 0):
    """``(M, N)`` audio of the shipped array hearing the default sweep come back as plane waves: ``paths`` is a
    list of (azimuth deg, range m, amplitude); the echo of a surface at range r arrives 2 r / c after the onset."""
    positions = np.asarray(load_array("robot_8mic").positions, dtype=np.float64)
    sweep = np.asarray(load_emitter_sweep("default").samples, dtype=np.float64)
    f = np.fft.rfftfreq(2 * N, 1 / FS)
    spec = np.fft.rfft(sweep, 2 * N)
    out = np.zeros((len(positions), N + 1), dtype=complex)  # rfft of 2 N samples
    for az, r, a in paths:
        u = np.array([np.cos(np.radians(az)), np.sin(np.radians(az)), 0.0])
        delay = 2 * r / C - positions @ u / C  # mic m hears a wave from u that much earlier than the origin
        out += a * spec[None] * np.exp(-2j * np.pi * f[None] * delay[:, None])
    audio = np.fft.irfft(out, 2 * N, axis=1)[:, :N]
    return audio + noise * np.random.default_rng(seed).standard_normal(audio.shape), positions, sweep


def _check(paths, walls):
    audio, positions, sweep = _echoes(paths)
    power = echo_image(audio, sweep, positions, horizon(360.0 / W).vectors.reshape(-1, 3), FS, C)
    return wall_echoes(power, walls, FS, C)


def test_a_wall_whose_echo_is_the_strongest_in_its_beam_is_heard_and_a_louder_one_there_masks_it():
    col = 20
    az = float(horizon(360.0 / W).azimuth_deg.ravel()[col])
    walls = np.full(W, np.nan)
    walls[col] = 2.0
    # a louder echo from behind the array at 1.5 m: the beam towards the wall turns it down
    rows = _check([(az, 2.0, 1.0), (az + 180.0, 1.5, 1.5)], walls)
    assert rows.shape == (1, 3)
    assert rows[0].tolist() == [2.0, 1.0, 0.0]
    # the same louder echo from the wall's own direction: masked, by an earlier echo
    rows = _check([(az, 2.0, 1.0), (az, 1.5, 1.5)], walls)
    assert rows[0].tolist() == [2.0, 0.0, 1.0]
    # a wall whose echo would come after the recording's end is not checked
    walls[col] = 20.0
    assert _check([(az, 2.0, 1.0)], walls).shape == (0, 3)


def test_the_bands_pool_the_walls_by_range():
    rows = np.array([[0.3, 1, 0], [1.5, 1, 0], [1.8, 0, 1], [5.0, 0, 0]], dtype=float)
    table = {b["band"]: b for b in band_table(rows)}
    assert table["1-2 m"] == {"band": "1-2 m", "walls": 2, "heard": 0.5, "early": 0.5}
    assert table["<0.5 m"]["heard"] == 1.0 and table["4-6 m"]["heard"] == 0.0
    assert table["2-4 m"]["walls"] == 0 and np.isnan(table["2-4 m"]["heard"])
    assert table["all"]["walls"] == 4 and table["all"]["heard"] == 0.5


@pytest.fixture(scope="module")
def quiet_rooms(tmp_path_factory):
    """Eight test scenes of the shipped array's rooms without ambient sources."""
    out = tmp_path_factory.mktemp("quiet")
    cfg = config_from_dict({"seed": 5, "array": "robot_8mic", "scenes_per_shard": 4, "passive": {"num_sources": [0, 0]},
                            "split": {"train": 0.0, "val": 0.0, "test": 1.0}})
    run_datagen(cfg, out, 8, workers=1, show_progress=False, log=None)
    return out


def test_the_command_hears_most_walls_of_quiet_rooms(quiet_rooms, tmp_path, capsys):
    out = tmp_path / "walls.json"
    assert main(["wall-echoes", "--data", str(quiet_rooms), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    bands = {b["band"]: b for b in result["bands"]}
    assert result["scenes"] == 8 and result["array"] == "robot_8mic"
    assert bands["all"]["walls"] == result["walls"] == sum(b["walls"] for b in result["bands"][:-1]) > 8
    assert bands["all"]["heard"] > 0.6  # quiet rooms of the standard sizes: most first echoes stand out
    assert "| all |" in capsys.readouterr().out


def test_the_command_refuses_a_split_the_data_lacks(quiet_rooms, capsys):
    assert main(["wall-echoes", "--data", str(quiet_rooms), "--split", "train"]) == 2
    assert "no 'train' scenes" in capsys.readouterr().err
