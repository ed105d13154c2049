"""Dataset generation: byte determinism across worker counts, resume, splits by room, the numpy reader."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from avperception_train.datagen import DatagenConfigError, DatasetError, config_from_dict, open_dataset, run_datagen
from avperception_train.datagen.engine import build_manifest
from avperception_train.datagen.shards import MANIFEST, RUNS_LOG, SCHEMA, SPLITS

CFG = {"seed": 5, "scenes_per_shard": 3, "room": {"scenes_per_room": 2}}


def _digests(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.glob("shard-*.npz"))} | \
        {MANIFEST: hashlib.sha256((d / MANIFEST).read_bytes()).hexdigest()}


def test_same_seed_same_bytes_whatever_the_worker_count(tmp_path):
    cfg = config_from_dict(CFG)
    run_datagen(cfg, tmp_path / "w1", 7, workers=1, show_progress=False, log=None)
    run_datagen(cfg, tmp_path / "w2", 7, workers=2, show_progress=False, log=None)
    a, b = _digests(tmp_path / "w1"), _digests(tmp_path / "w2")
    assert list(a) == ["shard-0000000-0000002.npz", "shard-0000003-0000005.npz", "shard-0000006-0000006.npz",
                       MANIFEST]
    assert a == b
    # a different seed gives different data
    run_datagen(config_from_dict({**CFG, "seed": 6}), tmp_path / "s6", 3, show_progress=False, log=None)
    assert _digests(tmp_path / "s6")["shard-0000000-0000002.npz"] != a["shard-0000000-0000002.npz"]
    # the run log (with timestamps) lives outside the shards and the manifest
    log = [json.loads(line) for line in (tmp_path / "w2" / RUNS_LOG).read_text().splitlines()]
    assert log[0]["workers"] == 2 and log[0]["scenes_generated"] == 7


def test_resume_regenerates_only_missing_shards_identically(tmp_path):
    cfg = config_from_dict(CFG)
    out = tmp_path / "ds"
    run_datagen(cfg, out, 6, show_progress=False, log=None)
    before = _digests(out)
    victim = out / "shard-0000003-0000005.npz"
    victim.unlink()
    keep = out / "shard-0000000-0000002.npz"
    mtime = keep.stat().st_mtime_ns
    m = run_datagen(cfg, out, 6, show_progress=False, log=None)
    assert _digests(out) == before and keep.stat().st_mtime_ns == mtime
    assert m["complete"] and len(m["shards"]) == 2
    log = [json.loads(line) for line in (out / RUNS_LOG).read_text().splitlines()]
    assert [r["scenes_generated"] for r in log] == [6, 3]
    # growing the dataset keeps the old shards and their rooms' splits
    m2 = run_datagen(cfg, out, 9, show_progress=False, log=None)
    assert _digests(out)["shard-0000000-0000002.npz"] == before["shard-0000000-0000002.npz"]
    assert m2["num_scenes"] == 9 and len(m2["shards"]) == 3


def test_resume_refuses_a_different_config(tmp_path):
    out = tmp_path / "ds"
    run_datagen(config_from_dict(CFG), out, 3, show_progress=False, log=None)
    with pytest.raises(DatagenConfigError, match="different config.*seed"):
        run_datagen(config_from_dict({**CFG, "seed": 99}), out, 3, show_progress=False, log=None)
    run_datagen(config_from_dict({**CFG, "seed": 99}), out, 3, overwrite=True, show_progress=False, log=None)
    assert json.loads((out / MANIFEST).read_text())["seed"] == 99


def test_an_older_dataset_resumes_and_a_moving_one_records_its_velocities(tmp_path):
    out = tmp_path / "ds"
    run_datagen(config_from_dict(CFG), out, 3, show_progress=False, log=None)
    m = json.loads((out / MANIFEST).read_text())
    for key in ("speed_mps", "motion_step_m"):  # written before the robot could move
        del m["config"]["robot"][key]
    (out / MANIFEST).write_text(json.dumps(m))
    grown = run_datagen(config_from_dict(CFG), out, 6, show_progress=False, log=None)
    assert grown["complete"] and len(open_dataset(out)) == 6
    moving = run_datagen(config_from_dict({**CFG, "robot": {"speed_mps": [0.3, 0.6]}}), tmp_path / "mv", 3,
                         show_progress=False, log=None)
    ds = open_dataset(tmp_path / "mv")
    speeds = [float(np.linalg.norm(s["robot_velocity"])) for s in ds]
    assert all(0.3 <= v <= 0.6 for v in speeds) and len(set(speeds)) == 3, speeds
    assert moving["config"]["robot"]["speed_mps"] == [0.3, 0.6]
    ref = open_dataset(out)
    for a, b in zip(ds, ref):  # the same rooms and poses as standing still; other sound
        np.testing.assert_array_equal(a["robot_pose"], b["robot_pose"])
        np.testing.assert_array_equal(a["depth"], b["depth"])
        assert not np.array_equal(a["audio"], b["audio"])


def test_incomplete_dataset_is_reported(tmp_path):
    out = tmp_path / "ds"
    run_datagen(config_from_dict(CFG), out, 3, show_progress=False, log=None)
    m = json.loads((out / MANIFEST).read_text())
    m["complete"] = False
    (out / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(DatasetError, match="incomplete"):
        open_dataset(out)
    assert len(open_dataset(out, allow_incomplete=True)) == 3
    with pytest.raises(DatasetError, match="no manifest.json"):
        open_dataset(tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        open_dataset(tmp_path / "missing")


def test_test_rooms_are_never_in_train():
    cfg = config_from_dict({"room": {"scenes_per_room": 3}, "seed": 2})
    arr = cfg.array_geometry()
    m = build_manifest(cfg, arr, 3000)
    rooms = {s: set(m["splits"][s]["rooms"]) for s in SPLITS}
    assert not rooms["train"] & rooms["test"] and not rooms["train"] & rooms["val"] and not rooms["val"] & rooms["test"]
    assert len(rooms["train"]) + len(rooms["val"]) + len(rooms["test"]) == 1000
    frac = {s: len(rooms[s]) / 1000 for s in SPLITS}
    assert frac["train"] == pytest.approx(0.8, abs=0.01) and frac["test"] == pytest.approx(0.1, abs=0.01)
    # a room keeps its split when the dataset grows
    m_small = build_manifest(cfg, arr, 300)
    for s in SPLITS:
        assert set(m_small["splits"][s]["rooms"]) <= rooms[s]


def test_reader_and_split_disjointness_on_generated_data(dataset, small_cfg):
    ds = open_dataset(dataset)
    assert len(ds) == 8
    train, test = open_dataset(dataset, "train"), open_dataset(dataset, "test")
    assert len(train) + len(test) + len(open_dataset(dataset, "val")) == 8
    assert len(train) and len(test)
    assert not set(train.room_ids) & set(test.room_ids)
    for s in test:
        assert s["split_name"] == "test"
    s = ds[0]
    arr = small_cfg.array_geometry()
    assert s["audio"].shape == (arr.num_mics, 2048) and s["audio"].dtype == np.float32
    assert s["depth"].shape == s["semantic"].shape == s["energy"].shape == (60, 120)
    assert s["voxels"].shape == (32, 32, 32) and s["voxels"].dtype == bool and s["voxel_known"].all()
    assert s["pinhole_depth"].shape == (48, 64)
    assert s["sample_rate"] == 16000 and s["array_name"] == arr.name
    np.testing.assert_allclose(s["mic_positions"], arr.positions)
    assert s["source_dirs"].shape == (int(s["num_sources"]), 3)
    assert int(s["room_id"]) == int(s["scene_index"]) // 2
    m = ds.manifest
    assert m["complete"] and m["config"]["seed"] == 11 and m["array"]["name"] == arr.name
    assert set(m["schema"]) == set(SCHEMA) and m["libraries"]["pyroomacoustics"] != "not installed"
    for key in SCHEMA:
        if key.startswith("pinhole"):
            continue
        assert (key in s) == (key != "robot_velocity")  # a dataset of standing robots has no velocities


def test_only_some_splits_are_the_full_datasets_scenes(dataset, small_cfg, tmp_path):
    full = open_dataset(dataset)
    want = {int(s["scene_index"]): s for s in full if s["split_name"] in ("val", "test")}
    assert want and len(want) < len(full)
    out = tmp_path / "held_out"
    m = run_datagen(small_cfg, out, 8, show_progress=False, log=None, only_splits=["test", "val"])
    assert m["only_splits"] == ["val", "test"] and m["num_scenes"] == 8
    assert m["splits"]["train"] == {"rooms": [], "scenes": 0}
    assert {s: m["splits"][s] for s in ("val", "test")} == {s: full.manifest["splits"][s] for s in ("val", "test")}
    assert sum(sh["count"] for sh in m["shards"]) == len(want)
    got = open_dataset(out)
    assert sorted(int(s["scene_index"]) for s in got) == sorted(want)
    for s in got:  # the same scenes, bit for bit
        ref = want[int(s["scene_index"])]
        for key in ("audio", "depth", "semantic", "voxels", "robot_pose", "room_id"):
            np.testing.assert_array_equal(s[key], ref[key], err_msg=key)
    assert len(open_dataset(out, "train")) == 0
    from avperception_train.learn.data import InMemoryScenes

    with pytest.raises(ValueError, match="no 'train' scenes .it holds only the val, test scenes, made with datagen "
                                         "--splits"):
        InMemoryScenes(out, "train")
    # a held-out set resumes as itself, never into the full dataset or another selection
    log = [json.loads(line) for line in (out / RUNS_LOG).read_text().splitlines()]
    assert log[0]["scenes_generated"] == log[0]["scenes_total"] == len(want)
    run_datagen(small_cfg, out, 8, show_progress=False, log=None, only_splits=["val", "test"])
    assert json.loads((out / RUNS_LOG).read_text().splitlines()[-1])["scenes_generated"] == 0
    with pytest.raises(DatagenConfigError, match="only_splits"):
        run_datagen(small_cfg, out, 8, show_progress=False, log=None)
    with pytest.raises(DatagenConfigError, match="only_splits"):
        run_datagen(small_cfg, dataset, 8, show_progress=False, log=None, only_splits=["test"])
    with pytest.raises(DatagenConfigError, match="unknown split 'tests'.*train, val, test"):
        run_datagen(small_cfg, tmp_path / "bad", 8, show_progress=False, log=None, only_splits=["tests"])
    with pytest.raises(DatagenConfigError, match="none of the 1 scenes"):
        run_datagen(small_cfg, tmp_path / "none", 1, show_progress=False, log=None,
                    only_splits=[s for s in SPLITS if s != full[0]["split_name"]])
    assert not (tmp_path / "bad").exists() and not (tmp_path / "none").exists()  # nothing written


def test_depth_and_semantics_are_consistent(dataset):
    """Floor pixels lie below the horizon and ceiling pixels above; depth is finite inside a closed room."""
    from avperception.dsp.grid import equirectangular

    g = equirectangular(resolution_deg=3.0)
    el = g.elevation_deg.reshape(60, 120)
    for s in open_dataset(dataset):
        assert np.all(np.isfinite(s["depth"])) and np.all(s["depth"] > 0.05)
        assert np.all(el[s["semantic"] == 0] < 0) and np.all(el[s["semantic"] == 1] > 0)
        # the floor straight down is at the array height
        assert s["depth"][-1].mean() == pytest.approx(s["robot_pose"][2] / np.sin(np.radians(88.5)), rel=1e-3)


def test_torch_dataset_batches(dataset):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from avperception_train.datagen.torch_dataset import SceneTorchDataset, ShardGroupedSampler

    ds = SceneTorchDataset(dataset)
    sampler = ShardGroupedSampler(ds, seed=0)
    order = list(sampler)
    assert sorted(order) == list(range(8)) and order == list(ShardGroupedSampler(ds, seed=0))
    batch = next(iter(DataLoader(ds, batch_size=4, sampler=sampler)))
    assert batch["audio"].shape[0] == 4 and batch["audio"].dtype == torch.float32
    assert batch["depth"].shape == (4, 60, 120) and batch["semantic"].dtype == torch.int64
    assert batch["voxels"].shape == (4, 32, 32, 32) and batch["sources"].shape == (4, 3, 3)
    assert batch["depth_mask"].all()
