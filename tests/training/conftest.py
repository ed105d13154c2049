"""Shared fixtures for the data-engine tests: one small dataset generated once per session."""

from __future__ import annotations

import pytest

from avperception_train.datagen import config_from_dict, run_datagen

# small but real: default physics on a 4-mic array (another array than the shipped student's, and cheap), a pinhole
# view for the bag round trip, 4 scenes per shard
SMALL = {"seed": 11, "array": "respeaker_4mic", "scenes_per_shard": 4, "room": {"scenes_per_room": 2}, "pinhole": {"enabled": True},
         "split": {"train": 0.5, "val": 0.25, "test": 0.25}}


@pytest.fixture(scope="session")
def small_cfg():
    return config_from_dict(SMALL)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory, small_cfg):
    """8 scenes in 4 rooms, 2 shards; returns the directory."""
    out = tmp_path_factory.mktemp("ds")
    run_datagen(small_cfg, out, 8, workers=1, show_progress=False, log=None)
    return out



@pytest.fixture(scope="session")
def ring_dataset(tmp_path_factory):
    """A maker of small robot_8mic datasets (the shipped student's array): ``make(seed, scenes, split)`` writes
    ``scenes`` scenes of ``seed`` to a fresh directory, split by room as ``split`` says (``{"train": .., "val": ..,
    "test": ..}``), and returns it."""
    def make(seed: int, scenes: int, split: dict):
        out = tmp_path_factory.mktemp(f"ring{seed}")
        cfg = config_from_dict({"seed": seed, "array": "robot_8mic", "scenes_per_shard": 4, "split": split})
        run_datagen(cfg, out, scenes, workers=1, show_progress=False, log=None)
        return out

    return make
