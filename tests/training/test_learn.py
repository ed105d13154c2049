"""Learning: symmetry augmentation against physics, metrics, baselines, training stages, the shipped model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from avperception.config import ConfigError, load_array
from avperception.dsp.grid import equirectangular
from avperception.eval import metrics
from avperception.pipeline import localize
from avperception_train.datagen import config_from_dict, run_datagen
from avperception_train.learn import metrics as learn_metrics
from avperception_train.learn.baselines import EchoPlanes, EchoTimeOfFlight, MeanLayout
from avperception_train.learn.config import ModelSpec, TrainConfig
from avperception_train.learn.data import InMemoryScenes, _info_differences, make_datasets
from avperception_train.learn.evaluate import depth_by_class_table, evaluate, iou_by_class_table, results_tables


@pytest.fixture(scope="module")
def passive_ds(tmp_path_factory):
    """robot_8mic, no sweep, exactly one white-noise source: the audio says where the source is."""
    cfg = config_from_dict({"seed": 5, "array": "robot_8mic", "scenes_per_shard": 8,
                            "active": {"probability": 0.0},
                            "passive": {"num_sources": [1, 1], "signals": ["noise"], "level_db": [-25, -20],
                                        "min_distance_m": 1.0},
                            "split": {"train": 1.0, "val": 0.0, "test": 0.0}})
    out = tmp_path_factory.mktemp("passive")
    run_datagen(cfg, out, 6, workers=1, show_progress=False, log=None)
    return InMemoryScenes(out, "train", augment=True)


def _tiny_config(seed: int):
    return config_from_dict({"seed": seed, "array": "respeaker_6mic", "scenes_per_shard": 16,
                             "audio": {"num_samples": 1024}, "panorama": {"resolution_deg": 12.0},
                             "energy": {"resolution_deg": 12.0}, "voxels": {"resolution": [8, 8, 8]},
                             "room": {"scenes_per_room": 2}, "split": {"train": 0.6, "val": 0.2, "test": 0.2}})


@pytest.fixture(scope="module")
def tiny_ds(tmp_path_factory):
    """Small panoramas (12 deg), 8^3 voxels and short audio, so training runs in seconds."""
    cfg = _tiny_config(seed=3)
    out = tmp_path_factory.mktemp("tiny")
    run_datagen(cfg, out, 32, workers=1, show_progress=False, log=None)
    return out


def test_robot_ring_admits_eight_exact_symmetries(passive_ds):
    sym = passive_ds.symmetries
    assert len(sym) == 8
    rot90 = [t for t in sym.transforms if t["k"] == 1 and not t["flip"]][0]
    # turning the scene +90 deg: the new front mic hears what the old mic at -90 deg (index 6) heard
    assert rot90["audio"][0] == 6


def test_augmented_audio_and_energy_target_agree(passive_ds):
    """After every symmetry transform, SRP-PHAT on the permuted audio points where the transformed target does."""
    arr = load_array("robot_8mic")
    grid = equirectangular(-180, 180, -90, 90, 3.0)
    for i in range(len(passive_ds)):
        item = passive_ds.item(i)
        for t in range(len(passive_ds.symmetries)):
            a = passive_ds.symmetries.apply(item, t)
            target_az = grid.azimuth_deg[int(np.argmax(a["energy"]))]
            found = localize(a["audio"], arr, 16000, 1)[0].azimuth_deg
            assert abs((found - target_az + 180) % 360 - 180) < 8, (i, t, found, target_az)


def test_augmented_voxels_agree_with_depth(passive_ds):
    """Near horizontal surfaces seen in the depth panorama are occupied voxels, in every transform."""
    grid = equirectangular(-180, 180, -90, 90, 3.0)
    horizon = np.abs(grid.elevation_deg) < 2
    d = passive_ds
    origin = np.asarray(np.load(next(d.root.glob("shard-*.npz")))["voxel_origin"])
    size = np.asarray(np.load(next(d.root.glob("shard-*.npz")))["voxel_size"])
    checked = agree = 0
    for i in range(len(d)):
        item = d.item(i)
        for t in range(len(d.symmetries)):
            a = d.symmetries.apply(item, t)
            depth = a["depth"].reshape(-1)
            for g in np.nonzero(horizon & (depth < 1.0))[0]:
                p = grid.vectors[g] * (depth[g] + 0.02)
                ix, iy, iz = np.floor((p - origin) / size).astype(int)
                v = a["voxels"][max(iz - 1, 0):iz + 2, max(iy - 1, 0):iy + 2, max(ix - 1, 0):ix + 2]
                checked += 1
                agree += bool(v.any())
    assert checked > 20
    assert agree / checked > 0.95


def test_depth_metrics_known_values():
    gt = np.array([[1.0, 2.0], [4.0, np.nan]])
    pred = np.array([[1.0, 2.5], [2.0, 7.0]])
    m = metrics.depth_metrics(pred, gt)
    assert m["mae"] == pytest.approx((0 + 0.5 + 2) / 3)
    assert m["abs_rel"] == pytest.approx((0 + 0.25 + 0.5) / 3)
    # ratios 1, 1.25, 2: 1.25 is not < 1.25; 2 is above 1.25^3 = 1.95
    assert m["delta1"] == pytest.approx(1 / 3)
    assert m["delta2"] == pytest.approx(2 / 3) and m["delta3"] == pytest.approx(2 / 3)
    # the same pixels split by label: floor (0) holds the exact and the 1.25 pixel, wall (2) the 2x one
    by = learn_metrics.depth_error_by_label(pred, gt, np.array([[0, 0], [2, 1]]), 4)
    np.testing.assert_allclose(by, [[2, 0.25, 1], [0, 0, 0], [1, 0.5, 0], [0, 0, 0]])


def test_relative_distance_loss_is_abs_rel_and_answers_nearer_when_in_doubt():
    from avperception_train.learn.config import ConfigError, LossSpec
    from avperception_train.learn.losses import distance_loss

    gt = np.array([[1.0, 2.0], [4.0, np.nan]])
    pred = np.array([[1.0, 2.5], [2.0, 7.0]])
    valid = np.isfinite(gt)
    got = distance_loss(torch.tensor(pred[valid]), torch.tensor(gt[valid]), "relative")
    assert float(got) == pytest.approx(metrics.depth_metrics(pred, gt)["abs_rel"])
    # the same audio, a wall at 6 m in 60 % of rooms and at 3 m in the rest: one answer for all of them.
    # L1 + L1 of log settle on the median, 6 m (AbsRel 0.4); the relative error on 3 m (AbsRel 0.3)
    g = torch.tensor([6.0] * 6 + [3.0] * 4)
    answers = {}
    for kind in ("log", "relative"):
        x = torch.tensor(np.log(4.5), requires_grad=True)
        opt = torch.optim.Adam([x], lr=0.02)
        for _ in range(600):
            opt.zero_grad()
            distance_loss(x.exp().expand(len(g)), g, kind).backward()
            opt.step()
        answers[kind] = float(x.exp())
    assert answers["log"] == pytest.approx(6.0, abs=0.1)
    assert answers["relative"] == pytest.approx(3.0, abs=0.1)
    with pytest.raises(ValueError, match="log or relative|one of"):
        distance_loss(g, g, "l2")
    with pytest.raises(ConfigError, match="loss.distance must be log or relative"):
        TrainConfig(mode="e2e", loss=LossSpec(distance="rel")).validate()


def test_segmentation_and_voxel_metrics_known_values():
    gt = np.array([[0, 0, 1, 2], [3, 3, 255, 2]])
    pred = np.array([[0, 1, 1, 2], [3, 0, 2, 2]])
    s = metrics.segmentation_metrics(metrics.confusion(pred, gt, 4))
    assert s["pacc"] == pytest.approx(5 / 7)
    assert s["iou_per_class"][0] == pytest.approx(1 / 3)
    assert s["layout_iou"] == pytest.approx(np.mean([1 / 3, 1 / 2, 1.0]))
    a = np.zeros((8, 8, 8), bool)
    a[2:4, 2:4, 2:4] = True
    b = np.roll(a, 1, axis=2)
    v = learn_metrics.voxel_metrics(a, b, voxel_size=0.1, f1_tau=0.1)
    assert v["iou"] == pytest.approx(4 / 12)
    assert v["chamfer_l1"] == pytest.approx(0.05)
    assert v["f1"] == pytest.approx(1.0)


def test_energy_map_metrics_known_values():
    gt = np.zeros((4, 6))
    gt[1, 1:3] = 1.0  # two pixels above the mean
    pred = np.zeros((4, 6))
    pred[1, 2:4] = 1.0  # one shared, one not: IoU 1/3
    e = learn_metrics.energy_map_metrics(pred, gt)
    assert e["iou"] == pytest.approx(1 / 3) and e["iou_at_0.5"] == 0.0
    assert e["auc"] == pytest.approx(0.35)  # success at thresholds 0, 0.1, 0.2, 0.3: trapezoid 0.3 + 0.05
    assert learn_metrics.energy_map_metrics(gt, gt)["auc"] == pytest.approx(1.0)


def test_several_datasets_train_together_and_a_misfit_is_named(tiny_ds, dataset, tmp_path_factory):
    """DIR1,DIR2 concatenates both datasets' splits scene for scene; a dataset of another array is refused."""
    cfg = _tiny_config(seed=4)  # the same contract, other rooms
    other = tmp_path_factory.mktemp("tiny_other")
    run_datagen(cfg, other, 16, workers=1, show_progress=False, log=None)
    a, b = InMemoryScenes(tiny_ds, "train"), InMemoryScenes(other, "train")
    train, val, info = make_datasets(f"{tiny_ds},{other}", augment=False)
    assert len(train) == len(a) + len(b) and not _info_differences(info, a.info)
    assert len(val) == len(InMemoryScenes(tiny_ds, "val")) + len(InMemoryScenes(other, "val"))
    np.testing.assert_array_equal(train[len(a)]["audio"], b[0]["audio"])
    np.testing.assert_array_equal(train[0]["depth"], a[0]["depth"])
    with pytest.raises(ValueError, match="num_mics 6 vs 4"):
        make_datasets(f"{tiny_ds},{dataset}")
    with pytest.raises(ValueError, match="empty directory name"):
        make_datasets(f"{tiny_ds},")


def test_evaluate_perfect_and_mean_layout(tiny_ds):
    test = InMemoryScenes(tiny_ds, "test")

    def oracle(batch):
        return {"depth": batch["depth"].numpy(), "semantic": batch["semantic"].numpy(),
                "voxels": batch["voxels"].numpy() > 0.5}

    perfect = evaluate(oracle, test, voxel_size_m=test.info.voxel_size_m)
    assert perfect["depth"]["delta1"] == 1.0 and perfect["depth"]["abs_rel"] == 0.0
    assert perfect["semantic"]["miou"] == 1.0 and perfect["voxels"]["iou"] == 1.0
    mean = evaluate(MeanLayout(InMemoryScenes(tiny_ds, "train")), test, voxel_size_m=test.info.voxel_size_m)
    assert 0 < mean["depth"]["delta1"] < 1
    table = results_tables({"oracle": perfect, "mean layout": mean})
    # every metric of the papers, in a depth table and a segmentation/voxel/energy table
    depth, scene = table.split("Segmentation, voxels and energy:")
    for name in ("MAE", "RMSE", "AbsRel", "SqRel", "RMSE-log", "δ1", "δ2", "δ3"):
        assert f"| {name} " in depth
    for name in ("pAcc", "mAcc", "mIoU", "layout IoU", "voxel IoU", "Chamfer-L1", "F1", "energy IoU", "energy AUC"):
        assert f"| {name} " in scene
    oracle_depth = next(line for line in depth.splitlines() if line.startswith("| oracle |"))
    assert oracle_depth == "| oracle | 0.000 | 0.000 | 0.000 | 0.000 | 0.000 | 1.000 | 1.000 | 1.000 |"
    assert all(c["delta1"] == 1.0 for c in perfect["depth_by_class"].values())
    shares = {k: c["share"] for k, c in mean["depth_by_class"].items()}
    assert set(shares) <= {"floor", "ceiling", "wall", "obstacle"} and sum(shares.values()) == pytest.approx(1.0)
    assert "| oracle | " in depth_by_class_table({"oracle": perfect, "mean layout": mean})
    iou = iou_by_class_table({"oracle": perfect, "mean layout": mean}).splitlines()
    assert iou[0] == "| method | floor IoU ↑ | ceiling IoU ↑ | wall IoU ↑ | obstacle IoU ↑ |"
    assert iou[2] == "| oracle | " + " | ".join(f"{x:.3f}" for x in perfect["semantic"]["iou_per_class"]) + " |"
    assert iou[3].startswith("| mean layout | ") and iou[3] != iou[2]


def test_chamfer_leaves_out_scenes_without_predicted_voxels_and_says_so(tiny_ds):
    test = InMemoryScenes(tiny_ds, "test")
    seen = []

    def half_empty(batch):  # the truth, but no occupied voxel in every other scene
        vox = batch["voxels"].numpy() > 0.5
        for i in range(vox.shape[0]):
            if (len(seen) + i) % 2:
                vox[i] = False
        seen.extend(range(vox.shape[0]))
        return {"voxels": vox}

    res = evaluate(half_empty, test, voxel_size_m=test.info.voxel_size_m)
    occupied = sum(bool((test[i]["voxels"].numpy() > 0.5).any()) for i in range(len(test)))
    kept = sum(bool((test[i]["voxels"].numpy() > 0.5).any()) for i in range(0, len(test), 2))
    assert res["voxels"]["scenes"] == len(test) and 0 < kept < occupied
    assert res["voxels"]["chamfer_scenes"] == kept + (len(test) - occupied)  # empty truth: both empty, Chamfer 0
    assert res["voxels"]["chamfer_l1"] == 0.0  # the kept scenes are exact
    assert res["voxels"]["f1"] < 1.0  # the emptied scenes count there
    table = results_tables({"half empty": res, "exact": evaluate(lambda b: {"voxels": b["voxels"].numpy() > 0.5},
                                                                 test, voxel_size_m=test.info.voxel_size_m)})
    assert f"half empty: {res['voxels']['chamfer_scenes']} of {len(test)} scenes" in table
    assert "exact:" not in table


def test_depth_leaves_out_scenes_with_a_non_finite_prediction_and_says_so(tiny_ds):
    test = InMemoryScenes(tiny_ds, "test")
    seen = []

    def half_nan(batch):  # the truth, with one NaN pixel where the truth is known in every other scene
        depth = batch["depth"].numpy().copy()
        for i in range(depth.shape[0]):
            if (len(seen) + i) % 2:
                depth[i][np.unravel_index(np.nanargmax(depth[i]), depth[i].shape)] = np.nan
        seen.extend(range(depth.shape[0]))
        return {"depth": depth}

    res = evaluate(half_nan, test)
    assert res["depth"]["scenes"] == (len(test) + 1) // 2 < len(test)
    assert res["depth"]["abs_rel"] == 0.0 and res["depth"]["delta1"] == 1.0  # the kept scenes are exact
    assert all(c["abs_rel"] == 0.0 for c in res["depth_by_class"].values())  # pooled over the same scenes
    exact = evaluate(lambda b: {"depth": b["depth"].numpy()}, test)
    assert exact["depth"]["scenes"] == len(test)
    table = results_tables({"half NaN": res, "exact": exact})
    assert f"half NaN: {res['depth']['scenes']} of {len(test)} scenes" in table and "exact:" not in table
    assert np.isnan(metrics.depth_metrics(np.full((2, 2), np.nan), np.ones((2, 2)))["delta1"])  # not scored a miss


def test_energy_scores_average_the_scenes_with_a_source_and_say_how_many(tiny_ds):
    test = InMemoryScenes(tiny_ds, "test")
    res = evaluate(lambda b: {"energy": b["energy"].numpy()}, test)
    with_source = sum(bool(test[i]["energy"].max() > 0) for i in range(len(test)))
    assert 0 < with_source < len(test)  # the split has both kinds
    assert res["energy"]["scenes"] == with_source and res["scenes"] == len(test)
    assert res["energy"]["iou"] == 1.0  # the truth finds itself
    assert f"average the scenes with a sound source: {with_source} of {len(test)}." in results_tables({"truth": res})


def test_echo_time_of_flight_finds_the_wall():
    fs, c = 16000, 343.0
    t = np.arange(int(0.008 * fs)) / fs
    sweep = np.sin(2 * np.pi * (1000 * t + (6000 / (2 * t[-1])) * t ** 2)) * np.hanning(len(t))
    audio = np.zeros((2, 2048))
    audio[:, :len(sweep)] += sweep  # direct sound
    delay = int(round(2 * 1.7 / c * fs))  # a wall 1.7 m away
    audio[:, delay:delay + len(sweep)] += 0.3 * sweep
    audio += 0.001 * np.random.default_rng(0).standard_normal(audio.shape)
    assert EchoTimeOfFlight(sweep, fs).distance(audio) == pytest.approx(1.7, abs=0.05)


def test_teacher_distill_and_manifold_stages_run_and_learn(tiny_ds, tmp_path):
    from avperception_train.learn.train import load_stage, train

    base = TrainConfig(data=str(tiny_ds), batch_size=8, workers=0, device="cpu", lr=3e-3, warmup_steps=1,
                       model=ModelSpec(dim=32, depth=1, latent_h=15, latent_w=30, decoder_width=16))
    teacher = train(TrainConfig(**{**base.__dict__, "mode": "teacher", "epochs": 4, "out": str(tmp_path / "t")}),
                    progress=False)
    log = [__import__("json").loads(x) for x in (tmp_path / "t" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    student = train(TrainConfig(**{**base.__dict__, "mode": "distill", "epochs": 1, "teacher": str(teacher),
                                   "out": str(tmp_path / "s")}), progress=False)
    model, sc = load_stage(student, "distill", torch.device("cpu"))
    assert sc.num_mics == 6 and sc.pano_h == 15 and sc.voxel_size == 8
    vq = train(TrainConfig(**{**base.__dict__, "mode": "vqvae", "epochs": 1, "out": str(tmp_path / "v")}),
               progress=False)
    train(TrainConfig(**{**base.__dict__, "mode": "manifold", "epochs": 1, "teacher": str(vq),
                         "out": str(tmp_path / "m")}), progress=False)
    assert (tmp_path / "m" / "best.pt").exists()


def test_feature_alignment_in_three_layers_trains_heads_the_student_does_not_keep(tiny_ds, tmp_path):
    from avperception_train.learn.data import make_datasets
    from avperception_train.learn.teachers import AlignmentHeads
    from avperception_train.learn.train import Stage, load_stage, train

    model = ModelSpec(dim=32, depth=3, decoder_width=16)
    base = TrainConfig(data=str(tiny_ds), batch_size=8, workers=0, device="cpu", lr=3e-3, warmup_steps=1, model=model)
    teacher = train(replace(base, mode="teacher", epochs=3, out=str(tmp_path / "t")), progress=False)
    t, sc = load_stage(teacher, "teacher", torch.device("cpu"))
    val = next(iter(torch.utils.data.DataLoader(make_datasets(str(tiny_ds), 0, False)[1], 8)))
    feats = t.features(val["depth"], val["semantic"])
    assert len(feats) == 3 and all(f.shape == (8, sc.latent_h * sc.latent_w, 32) for f in feats)
    assert torch.equal(feats[-1], t.encode(val["depth"], val["semantic"]))

    cfg = replace(base, mode="distill", epochs=4, teacher=str(teacher), out=str(tmp_path / "s"),
                  loss=replace(base.loss, feature_layers=3))
    student = train(cfg, progress=False)
    ck = torch.load(student, map_location="cpu", weights_only=False)
    heads = AlignmentHeads(sc, 3)
    assert heads.blocks == [1, 0] and [h.embed.shape[0] for h in heads.heads] == [sc.sam_k // 4, max(1, sc.sam_k // 16)]
    untrained = {k: v.clone() for k, v in heads.state_dict().items()}
    heads.load_state_dict(ck["align"])
    assert not any(k.startswith("align") for k in ck["model"])  # the student loads strictly without them
    s, _ = load_stage(student, "distill", torch.device("cpu"))

    def feature_parts(h):
        torch.manual_seed(0)  # the same random negatives for both
        return Stage(cfg, s, t, h.eval())(val)[1]

    trained = feature_parts(heads)
    heads.load_state_dict(untrained)
    fresh = feature_parts(heads)
    assert trained["feature_2"] < fresh["feature_2"] and trained["feature_3"] < fresh["feature_3"]
    assert trained["feature"] == fresh["feature"]  # the last layer is the student's own SAM block
    # resume restores the heads too: shifted by 0.5 in last.pt, they are still shifted after one more epoch
    last = tmp_path / "s" / "last.pt"
    ck = torch.load(last, map_location="cpu", weights_only=False)
    shifted = {k: v + 0.5 if v.is_floating_point() else v for k, v in ck["align"].items()}
    torch.save({**ck, "align": shifted}, last)
    train(replace(cfg, epochs=5), resume=True, progress=False)
    assert len((tmp_path / "s" / "log.jsonl").read_text().splitlines()) == 5
    resumed = torch.load(last, map_location="cpu", weights_only=False)["align"]
    for k, v in shifted.items():
        if v.is_floating_point():  # one epoch's few small steps move them far less than the shift
            assert (resumed[k] - v).abs().mean() < 0.05 < (resumed[k] - ck["align"][k]).abs().mean(), k
    with pytest.raises(ValueError, match="allow 1 to 1"):
        AlignmentHeads(replace(sc, depth=1), 2)


def test_manifold_student_hears_the_echogram_and_learns_the_latent(tiny_ds, tmp_path):
    from avperception_train.learn.train import load_stage, train

    spec = ModelSpec(dim=32, depth=1, latent_h=15, latent_w=30, decoder_width=16, echo_hop=4, echo_patch=64)
    base = TrainConfig(data=str(tiny_ds), batch_size=8, workers=0, device="cpu", lr=3e-3, warmup_steps=1, model=spec)
    vq = train(TrainConfig(**{**base.__dict__, "mode": "vqvae", "epochs": 1, "out": str(tmp_path / "v")}),
               progress=False)
    at = train(TrainConfig(**{**base.__dict__, "mode": "manifold", "epochs": 4, "teacher": str(vq),
                              "out": str(tmp_path / "m")}), progress=False)
    log = [__import__("json").loads(x) for x in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    atnet, sc = load_stage(at, "manifold", torch.device("cpu"))
    vqvae, _ = load_stage(vq, "vqvae", torch.device("cpu"))
    assert atnet.echo is not None and atnet.echo.pos.shape[1] == 1024 // 64
    audio = next(iter(torch.utils.data.DataLoader(InMemoryScenes(tiny_ds, "test"), 2)))["audio"]
    with torch.no_grad():
        z = atnet(audio)
        depth = vqvae.decode(z)
        atnet.echo.proj.weight.zero_()  # silence the echogram tokens: the latent changes
        deaf = atnet(audio)
    assert z.shape == (2, vqvae.vq_cfg.code_dim, 15, 30)
    assert torch.allclose(z.norm(dim=1), torch.ones(2, 15, 30), atol=1e-5)  # on the manifold's unit sphere
    assert not torch.allclose(deaf, z, atol=1e-4)
    assert depth.shape == (2, sc.pano_h, sc.pano_w) and bool((depth > 0).all())


def test_the_atnet_hears_with_the_students_audio_encoder():
    """The AT-net is the student's ``AudioEncoder`` (front end, echogram tokens, transformer) with its own MLP and
    up-convolutions, under the same parameter names: a student's audio half loads into it as it is (AT-net
    checkpoints keep these keys) and then encodes audio exactly as the student does."""
    from avperception.dsp.echo import sweep
    from avperception.models.student import AudioStudent, StudentConfig
    from avperception_train.learn.teachers import ATNet

    cfg = StudentConfig(num_mics=4, num_samples=1024, dim=32, depth=2, heads=2, latent_h=4, latent_w=8, sam_k=4,
                        pano_h=16, pano_w=32, voxel_size=16, decoder_width=16, echo_hop=4, echo_patch=64,
                        emitted=sweep(16000, 1000, 7000, 0.008).tolist())
    torch.manual_seed(0)
    student, atnet = AudioStudent(cfg).eval(), ATNet(cfg, 32).eval()
    audio = torch.randn(2, 4, 1024)
    shared = {k: v for k, v in student.state_dict().items()
              if k.split(".")[0] in ("frontend", "embed", "echo", "encoder")}
    assert any(k.startswith("echo.") for k in shared) and any(k.startswith("encoder.1.") for k in shared)
    with torch.no_grad():
        assert not torch.allclose(atnet.tokens(audio), student.tokens(audio))  # two random inits
        missing, unexpected = atnet.load_state_dict(shared, strict=False)
        assert not unexpected and {k.split(".")[0] for k in missing} == {"mlp", "up"}
        tokens = atnet.tokens(audio)
        assert torch.equal(tokens, student.tokens(audio))
        assert tokens.shape == (2, cfg.num_tokens + cfg.num_echo_tokens, 32)
        z = atnet(audio)
    assert z.shape == (2, 32, 4, 8) and torch.allclose(z.norm(dim=1), torch.ones(2, 4, 8), atol=1e-5)


def test_manifold_control_learns_depth_from_the_labels_and_is_scored(tiny_ds, tmp_path):
    from avperception_train.learn.commands import load_predictor
    from avperception_train.learn.train import train

    spec = ModelSpec(dim=32, depth=1, latent_h=15, latent_w=30, decoder_width=16, echo_hop=4, echo_patch=64)
    cfg = TrainConfig(data=str(tiny_ds), batch_size=8, workers=0, device="cpu", lr=3e-3, warmup_steps=1, model=spec,
                      mode="manifold-e2e", epochs=4, out=str(tmp_path / "c"))
    ck = train(cfg.validate(), progress=False)  # no teacher needed
    log = [__import__("json").loads(x) for x in (tmp_path / "c" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["val_loss"] < 0.9 * log[0]["val_loss"] and log[-1]["train_loss"] < 0.9 * log[0]["train_loss"]
    test = InMemoryScenes(tiny_ds, "test")
    scores = evaluate(load_predictor(f"manifold-e2e:{ck}", str(tiny_ds)), test)
    assert set(scores) >= {"depth"} and "semantic" not in scores  # depth only
    assert 0 < scores["depth"]["delta1"] <= 1 and np.isfinite(scores["depth"]["abs_rel"])


def test_recipe_compares_every_student_with_its_control_and_the_baselines(tiny_ds, tmp_path):
    import shutil

    from avperception_train.cli import main

    shutil.copytree(tiny_ds, tmp_path / "work" / "data")  # a complete dataset: the recipe skips datagen
    assert main(["recipe", "--paper", "--out", str(tmp_path / "work"), "--epochs", "1", "--batch-size", "8", "--device", "cpu",
                 "--workers", "0"]) == 0
    report = (tmp_path / "work" / "results.md").read_text()
    depth = report.split("Segmentation, voxels and energy:")[0]
    rows = {line.split(" | ")[0][2:]: line for line in depth.splitlines() if line.startswith("| ") and "---" not in line}
    for name in ("student (SAM distillation)", "student (end-to-end, no teacher)",
                 "student (VQ-VAE manifold + AT-net, depth)", "student (the same AT-net end to end, no VQ-VAE, depth)",
                 "teacher (sees the geometry)", "mean layout", "echo time of flight", "echo planes"):
        cells = rows[name].strip("| ").split(" | ")[1:]
        assert len(cells) == 8 and all(0 <= float(c) for c in cells), name  # every depth metric, a number
    assert (tmp_path / "work" / "export" / "student.safetensors").exists()
    assert (tmp_path / "work" / "student_manifold_e2e" / "best.pt").exists()


def test_echogram_student_carries_the_dataset_sweep(tiny_ds, tmp_path):
    from avperception_train.learn.train import load_stage, train

    cfg = TrainConfig(data=str(tiny_ds), batch_size=8, workers=0, device="cpu", mode="e2e", epochs=1,
                      out=str(tmp_path / "echo"), model=ModelSpec(dim=32, depth=1, decoder_width=16, echo_hop=4,
                                                                  echo_patch=64))
    model, sc = load_stage(train(cfg, progress=False), "e2e", torch.device("cpu"))
    emitted = InMemoryScenes(tiny_ds, "train").info.emitted
    np.testing.assert_allclose(sc.emitted, emitted, atol=1e-6)
    assert model.echo is not None and model.echo.pos.shape[1] == 1024 // 64


def test_shipped_default_model_loads_and_runs():
    from avperception.models import default_model
    from avperception.models.student import AudioStudent

    model = AudioStudent.load(default_model("robot_8mic"))
    cfg = model.cfg
    assert cfg.array == "robot_8mic" and cfg.num_mics == 8
    np.testing.assert_allclose(np.asarray(cfg.array_positions), load_array("robot_8mic").positions, atol=1e-6)
    with torch.no_grad():
        out = model(torch.zeros(1, cfg.num_mics, cfg.num_samples))
    assert out["depth"].shape == (1, cfg.pano_h, cfg.pano_w) and torch.isfinite(out["depth"]).all()
    with pytest.raises(FileNotFoundError, match="no shipped student model for array 'binaural'"):
        default_model("binaural")


def test_resume_continues_the_schedule(tiny_ds, tmp_path):
    import json

    from avperception_train.learn.train import train

    cfg = TrainConfig(data=str(tiny_ds), batch_size=8, workers=0, device="cpu", mode="teacher", epochs=1,
                      out=str(tmp_path / "r"), model=ModelSpec(dim=32, depth=1, decoder_width=16))
    with pytest.warns(UserWarning, match="never reaches lr"):  # 200 warmup steps in a 2-step run
        train(cfg, progress=False)
    train(TrainConfig(**{**cfg.__dict__, "epochs": 3}), resume=True, progress=False)
    log = [json.loads(x) for x in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert log[1]["step"] == 2 * log[0]["step"] and log[2]["step"] == 3 * log[0]["step"]
    steps, total = log[1]["step"], log[2]["step"]  # the resumed run's cosine spans its 3 epochs
    assert log[1]["lr"] == pytest.approx(1e-3 * (steps + 1) / 200 * 0.5 * (1 + np.cos(np.pi * steps / total)))


def test_eval_every_validates_on_its_epochs_and_after_the_last(tiny_ds, tmp_path):
    import json

    from avperception_train.learn.train import train

    cfg = TrainConfig(data=str(tiny_ds), batch_size=8, workers=0, device="cpu", mode="teacher", epochs=5, eval_every=2,
                      warmup_steps=1, out=str(tmp_path / "v"), model=ModelSpec(dim=32, depth=1, decoder_width=16))
    best = train(cfg.validate(), progress=False)
    log = [json.loads(x) for x in (tmp_path / "v" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5]  # every epoch logs its training loss
    assert [r["val_loss"] is not None for r in log] == [False, True, False, True, True]
    ck = torch.load(best, map_location="cpu", weights_only=False)
    vals = [r["val_loss"] for r in log if r["val_loss"] is not None]
    assert ck["metrics"]["best_val"] == min(vals) and ck["metrics"]["val_loss"] == min(vals)
    assert ck["epoch"] + 1 in (2, 4, 5)  # best.pt comes from a validated epoch
    with pytest.raises(ConfigError, match="eval_every"):
        replace(cfg, eval_every=0).validate()


def test_echo_planes_put_the_walls_and_the_floor_at_their_distances():
    """Two walls (plane-wave echoes from their normals) and the floor (from straight below, all mics in phase)."""
    from avperception.dsp.echo import sweep as make_sweep
    from avperception.dsp.grid import equirectangular

    fs, c, n = 16000, 343.0, 2048
    ring = np.array([[0.1 * np.cos(a), 0.1 * np.sin(a), 0.0] for a in 2 * np.pi * np.arange(8) / 8])
    s = make_sweep(fs, 1000, 7000, 0.008)
    f = np.fft.rfftfreq(2 * n)
    audio = np.zeros((8, n))
    audio[:, :s.size] += s  # the direct sound
    for az_deg, el_deg, r, gain in [(30.0, 0.0, 1.2, 0.3), (120.0, 0.0, 2.0, 0.2), (0.0, -90.0, 0.6, 0.5)]:
        az, el = np.radians(az_deg), np.radians(el_deg)
        u = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        lag = (2 * r - ring @ u) / c * fs  # (M,) mic m hears the echo u . p_m / c early
        spec = np.fft.rfft(s, 2 * n)[None] * np.exp(-2j * np.pi * f[None] * lag[:, None])
        audio += gain * np.fft.irfft(spec, 2 * n, axis=1)[:, :n]
    audio += 0.001 * np.random.default_rng(0).standard_normal(audio.shape)
    planes = EchoPlanes(s, fs, ring, equirectangular(resolution_deg=3.0), c)
    floor, _, normals, dists = planes.planes(audio)
    assert floor == pytest.approx(0.6, abs=0.05)
    for az_deg, r in [(30.0, 1.2), (120.0, 2.0)]:
        k = int(np.argmin(np.abs(np.angle(np.exp(1j * (normals - np.radians(az_deg)))))))
        assert abs(np.degrees(np.angle(np.exp(1j * (normals[k] - np.radians(az_deg)))))) <= 2.5 + 1e-6
        assert dists[k] == pytest.approx(r, abs=0.05)
    depth = planes.depth(audio)  # 3-degree pixels, azimuth 180 at the left, elevation 90 at the top
    col = lambda az: int((180 - az) / 3)  # noqa: E731
    assert depth[30, col(30.0)] == pytest.approx(1.2, rel=0.1)  # just above the horizon, facing the wall
    assert depth[-1, 0] == pytest.approx(0.6, rel=0.1)  # straight down


def test_fine_tuning_starts_from_the_given_weights(tiny_ds, tmp_path):
    import json

    from avperception_train.learn.config import ConfigError
    from avperception_train.learn.train import export_student, initial_student, student_config, train
    from avperception_train.learn.data import make_datasets

    base = TrainConfig(data=str(tiny_ds), batch_size=8, workers=0, device="cpu", lr=3e-3, warmup_steps=1, mode="e2e",
                       model=ModelSpec(dim=32, depth=1, decoder_width=16))
    src = train(TrainConfig(**{**base.__dict__, "epochs": 4, "out": str(tmp_path / "src")}), progress=False)
    exported = export_student(src, tmp_path / "exported")
    info = make_datasets(str(tiny_ds), 0, False)[2]
    model, sc = initial_student(str(exported), student_config(base, info), info.emitted)
    with pytest.raises(ValueError, match="emitted sweep"):  # a robot with another sweep cannot reuse the echo tokens
        initial_student(str(exported), student_config(base, info), info.emitted[::-1].copy())
    source = torch.load(src, map_location="cpu", weights_only=False)["model"]
    assert all(torch.equal(v, source[k]) for k, v in model.state_dict().items())
    # a fine-tuned first epoch starts where the source ended, far below a fresh model's first epoch
    train(TrainConfig(**{**base.__dict__, "epochs": 1, "lr": 1e-5, "init": str(src), "out": str(tmp_path / "ft")}),
          progress=False)
    train(TrainConfig(**{**base.__dict__, "epochs": 1, "out": str(tmp_path / "fresh")}), progress=False)
    val = {n: [json.loads(x)["val_loss"] for x in (tmp_path / n / "log.jsonl").read_text().splitlines()]
           for n in ("src", "ft", "fresh")}
    assert val["ft"][0] == pytest.approx(val["src"][-1], rel=0.05) and val["ft"][0] < val["fresh"][0]
    # the shipped robot_8mic model does not fit this 6-mic dataset: every difference is named
    from avperception.models import default_model

    with pytest.raises(ValueError, match="num_mics: model 8 vs data 6.*array_positions"):
        initial_student(str(default_model("robot_8mic")) + ".safetensors", student_config(base, info))
    with pytest.raises(FileNotFoundError, match="respeaker_6mic"):  # `default` is the shipped model for the data's array
        initial_student("default", student_config(base, info))
    with pytest.raises(ConfigError, match="init"):
        TrainConfig(**{**base.__dict__, "mode": "teacher", "init": "default"}).validate()


def test_train_only_trains_the_named_part_and_leaves_the_rest_as_it_was(tiny_ds, tmp_path):
    from avperception_train.learn.config import ConfigError, LossSpec
    from avperception_train.learn.train import train

    base = TrainConfig(data=str(tiny_ds), batch_size=8, workers=0, device="cpu", lr=3e-3, warmup_steps=1, mode="e2e",
                       model=ModelSpec(dim=32, depth=1, decoder_width=16, layout_beams=15))
    src = train(TrainConfig(**{**base.__dict__, "epochs": 1, "out": str(tmp_path / "src")}), progress=False)
    ft = train(TrainConfig(**{**base.__dict__, "epochs": 2, "init": str(src), "train_only": ("layout",),
                              "loss": LossSpec(distance="relative"), "out": str(tmp_path / "ft")}), progress=False)
    assert torch.load(ft, map_location="cpu", weights_only=False)["train_config"]["loss"]["distance"] == "relative"
    before, after = (torch.load(p, map_location="cpu", weights_only=False)["model"] for p in (src, ft))
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("layout.") for k in moved)  # BatchNorm statistics of the rest included
    assert any(k.startswith("layout.") and k.endswith("running_mean") for k in moved)
    with pytest.raises(ValueError, match="not part.*it has: .*layout"):
        train(TrainConfig(**{**base.__dict__, "epochs": 1, "init": str(src), "train_only": ("walls",),
                             "out": str(tmp_path / "bad")}), progress=False)
    with pytest.raises(ConfigError, match="train_only"):
        TrainConfig(**{**base.__dict__, "mode": "teacher", "train_only": ("layout",)}).validate()


def test_init_with_another_voxel_decoder_replaces_only_the_voxel_decoder(tiny_ds, tmp_path):
    from avperception.models.student import PlanDecoder, VoxelDecoder
    from avperception_train.learn.config import ConfigError
    from avperception_train.learn.data import make_datasets
    from avperception_train.learn.train import initial_student, student_config, train

    base = TrainConfig(data=str(tiny_ds), batch_size=8, workers=0, device="cpu", lr=3e-3, warmup_steps=1, mode="e2e",
                       model=ModelSpec(dim=32, depth=1, decoder_width=16))
    src = train(TrainConfig(**{**base.__dict__, "epochs": 1, "out": str(tmp_path / "src")}), progress=False)
    info = make_datasets(str(tiny_ds), 0, False)[2]
    source = torch.load(src, map_location="cpu", weights_only=False)["model"]
    kept, sc = initial_student(str(src), student_config(base, info), info.emitted)  # empty: the model's own kind
    assert sc.voxel_decoder == "3d" and isinstance(kept.voxels, VoxelDecoder)
    assert all(torch.equal(v, source[k]) for k, v in kept.state_dict().items())
    plan = ModelSpec(dim=32, depth=1, decoder_width=16, voxel_decoder="plan")
    swapped, sc = initial_student(str(src), student_config(replace(base, model=plan), info), info.emitted, "plan")
    assert sc.voxel_decoder == "plan" and isinstance(swapped.voxels, PlanDecoder)
    assert all(torch.equal(v, source[k]) for k, v in swapped.state_dict().items() if not k.startswith("voxels."))
    ft = train(replace(base, model=plan, epochs=2, init=str(src), train_only=("voxels",), out=str(tmp_path / "ft")),
               progress=False)
    after = torch.load(ft, map_location="cpu", weights_only=False)
    assert after["student_config"]["voxel_decoder"] == "plan"
    assert all(torch.equal(v, source[k]) for k, v in after["model"].items() if not k.startswith("voxels."))
    assert after["model"]["voxels.body.0.weight"].dim() == 4 and source["voxels.body.0.weight"].dim() == 5  # 2-D, 3-D
    with pytest.raises(ConfigError, match="voxel_decoder must be 3d or plan"):
        replace(base, model=ModelSpec(voxel_decoder="2d")).validate()
    with pytest.raises(ConfigError, match="layout_min_m must be in"):
        replace(base, model=ModelSpec(layout_min_m=-0.1)).validate()


CONFIGS = Path(__file__).parents[2] / "training" / "configs"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_example_training_configs_load(name):
    import yaml

    from avperception_train.learn.config import load_train_config

    path = CONFIGS / name
    needs_teacher = yaml.safe_load(path.read_text()).get("mode") in ("distill", "manifold")  # given with --teacher
    cfg = load_train_config(path, teacher="runs/teacher/best.pt" if needs_teacher else None)
    assert cfg.epochs > 0 and cfg.model.variant in ("small", "large")
    if cfg.model.layout_planes:  # the planes read the layout head's distances
        assert cfg.model.layout_beams > 0


def test_echo_beams_take_the_datasets_speed_of_sound(tiny_ds, tmp_path):
    from dataclasses import replace

    from avperception.models.student import AudioStudent
    from avperception_train.datagen.shards import read_manifest
    from avperception_train.learn.data import make_datasets
    from avperception_train.learn.train import initial_student, student_config

    info = make_datasets(str(tiny_ds), 0, False)[2]
    assert info.speed_of_sound == read_manifest(tiny_ds)["config"]["acoustics"]["speed_of_sound"]
    cfg = TrainConfig(data=str(tiny_ds), mode="e2e", model=ModelSpec(dim=32, depth=1, decoder_width=16, echo_beams=4))
    sc = student_config(cfg, info)
    assert sc.echo_beams == 4 and sc.speed_of_sound == info.speed_of_sound
    AudioStudent(sc).save(tmp_path / "beams")
    initial_student(str(tmp_path / "beams"), sc, info.emitted)  # fits its own data
    with pytest.raises(ValueError, match="speed_of_sound: model .* vs data 330.0"):  # the beams' delays would be off
        initial_student(str(tmp_path / "beams"), replace(sc, speed_of_sound=330.0), info.emitted)


def test_a_nearer_layout_range_extends_the_bins_and_keeps_every_old_one(tiny_ds, tmp_path):
    """layout_min_m below the model's: bins before the first at the same spacing; the old bins keep their distances
    and weights, the head answers about as before, and the new bins can answer nearer walls."""
    from avperception.models.student import AudioStudent
    from avperception_train.learn.data import make_datasets
    from avperception_train.learn.train import initial_student, student_config

    info = make_datasets(str(tiny_ds), 0, False)[2]
    spec = ModelSpec(dim=32, depth=1, decoder_width=16, layout_beams=6)
    sc = student_config(TrainConfig(data=str(tiny_ds), mode="e2e", model=spec), info)
    old = AudioStudent(sc).eval()
    old.save(tmp_path / "m")
    near = student_config(TrainConfig(data=str(tiny_ds), mode="e2e", model=replace(spec, layout_min_m=0.1)), info)
    new, nsc = initial_student(str(tmp_path / "m"), near, info.emitted)
    new.eval()
    extra = nsc.layout_bins - sc.layout_bins
    assert extra == 17 and 0.095 < nsc.layout_min_m <= 0.1  # 96 bins over 0.2-10 m: 4.2 % apart
    torch.testing.assert_close(new.layout.log_bins[extra:], old.layout.log_bins, rtol=0, atol=1e-5)
    assert torch.equal(new.layout.bins.weight[extra:], old.layout.bins.weight)
    audio = torch.from_numpy(InMemoryScenes(tiny_ds, "test").item(0)["audio"])[None]
    with torch.no_grad():
        a, b = old(audio), new(audio)
        assert torch.allclose(b["walls"], a["walls"], rtol=0.05)
        assert torch.equal(b["semantic"], a["semantic"])
        new.layout.bins.bias[0] = 50.0  # all mass on the first bin: a wall nearer than the old range allows
        assert float(new(audio)["walls"].max()) < 0.2 * 0.97
    # a model without a layout head gains a fresh one with the data config's range as it is (nothing to extend)
    AudioStudent(student_config(TrainConfig(data=str(tiny_ds), mode="e2e", model=replace(spec, layout_beams=0)),
                                info)).save(tmp_path / "plain")
    fresh, fsc = initial_student(str(tmp_path / "plain"), near, info.emitted)
    assert (fsc.layout_bins, fsc.layout_min_m) == (near.layout_bins, 0.1) == (fresh.layout.bins.out_features, 0.1)


def test_ordered_heights_convert_a_model_and_learn_which_is_the_floor(tiny_ds, tmp_path):
    """layout_heights: ordered on a model with direct heights: where it put the floor nearer it answers exactly as
    before (depth, uncertainty); the order logit decides which of the pair is the floor; the loss scores the pair
    against the sorted truth and the order by cross-entropy, and a few steps on a room whose ceiling is the
    nearer teach the logit to say so."""
    import torch.nn.functional as F

    from avperception.models.student import AudioStudent
    from avperception_train.learn.data import make_datasets
    from avperception_train.learn.losses import prediction_loss
    from avperception_train.learn.train import initial_student, student_config

    info = make_datasets(str(tiny_ds), 0, False)[2]
    spec = ModelSpec(dim=32, depth=1, decoder_width=16, layout_beams=6, uncertainty=True)
    old = AudioStudent(student_config(TrainConfig(data=str(tiny_ds), mode="e2e", model=spec), info)).eval()
    old.save(tmp_path / "m")
    osc = student_config(TrainConfig(data=str(tiny_ds), mode="e2e", model=replace(spec, layout_heights="ordered")),
                         info)
    new, nsc = initial_student(str(tmp_path / "m"), osc, info.emitted)
    new.eval()
    assert nsc.layout_heights == "ordered" and new.layout.heights.out_features == 3
    audio = torch.from_numpy(InMemoryScenes(tiny_ds, "test").item(0)["audio"])[None]
    with torch.no_grad():
        a, b = old(audio), new(audio)
        assert float(a["heights"][0, 0]) < float(a["heights"][0, 1])  # the old head puts the floor nearer
        for k in ("heights", "depth", "depth_uncertainty"):
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)
        torch.testing.assert_close(b["height_pair"], a["heights"])
        new.layout.heights.bias[2] = -50.0  # sure the ceiling is the nearer: the pair swaps
        torch.testing.assert_close(new(audio)["heights"], a["heights"].flip(1))
    # the loss: the pair against the sorted truth, the order by cross-entropy
    out = {k: v for k, v in b.items()}
    target = {"walls": torch.full_like(b["walls"], float("nan")), "heights": torch.tensor([[2.0, 0.5]])}
    _, parts = prediction_loss(out, target, {"depth": 0, "semantic": 0, "voxels": 0, "energy": 0, "uncertainty": 0},
                               "log")
    want = F.l1_loss(torch.log(b["height_pair"][0]), torch.log(torch.tensor([0.5, 2.0])))
    assert parts["layout"] == pytest.approx(float(want), rel=1e-5)
    assert parts["height_order"] == pytest.approx(float(F.softplus(b["floor_nearer"][0])), rel=1e-5)  # label 0
    with torch.no_grad():
        new.layout.heights.bias[2] = 3.0  # back to the floor nearer, as converted
    new.train()
    opt = torch.optim.Adam([new.layout.heights.bias], 0.1)
    for _ in range(60):
        loss, _ = prediction_loss(new(audio), target, {"depth": 0, "semantic": 0, "voxels": 0, "energy": 0,
                                                       "uncertainty": 0}, "log")
        opt.zero_grad()
        loss.backward()
        opt.step()
    new.eval()
    with torch.no_grad():
        h = new(audio)["heights"][0]
    assert float(new.layout.heights.bias[2]) < 0 and float(h[0]) > float(h[1])  # the floor is now the farther
    with pytest.raises(ConfigError, match="layout_heights must be one of direct, ordered"):
        replace(TrainConfig(data=str(tiny_ds), mode="e2e"), model=ModelSpec(layout_heights="sorted")).validate()


def test_two_process_distributed_training(tiny_ds, tmp_path):
    """torchrun with 2 CPU processes (gloo): DistributedDataParallel trains and rank 0 writes the checkpoints."""
    import os
    import subprocess
    import sys

    cfg = tmp_path / "ddp.yaml"
    cfg.write_text("mode: teacher\nepochs: 2\nbatch_size: 4\nworkers: 0\ndevice: cpu\n"
                   "model: {dim: 32, depth: 1, decoder_width: 16}\n")
    out = tmp_path / "ddp"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m",
                        "avperception_train.cli", "train", "--config", str(cfg), "--data", str(tiny_ds),
                        "--out", str(out)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert (out / "best.pt").exists() and r.stdout.count("best checkpoint:") == 1
    assert len((out / "log.jsonl").read_text().splitlines()) == 2  # one line per epoch, from rank 0 only


def test_room_layout_reads_walls_floor_and_ceiling_from_a_ray_cast_room():
    from avperception_train.datagen.geometry import Box, RoomGeometry
    from avperception_train.datagen.groundtruth import RayCaster, render_view
    from avperception_train.learn.data import room_layout

    # a 5 x 4 m room, 2.8 m high, the array at (1.5, 3.0) 0.7 m up; a low box hides the bottom of the +x wall
    grid = equirectangular(-180, 180, -90, 90, 3.0)
    origin = np.array([1.5, 3.0, 0.7])
    az = np.deg2rad(grid.as_image(grid.azimuth_deg)[0])
    u = np.stack([np.cos(az), np.sin(az)], 1)
    with np.errstate(divide="ignore"):
        want = np.min(np.where(u > 1e-9, (np.array([5, 4]) - origin[:2]) / u,
                               np.where(u < -1e-9, -origin[:2] / u, np.inf)), axis=1)

    def layout(box_height):
        room = RoomGeometry(floor=np.array([[0, 0], [5, 0], [5, 4], [0, 4]], float), height=2.8,
                            boxes=[Box(center=(2.5, 3.0), size=(0.4, 0.4), height=box_height)])
        caster = RayCaster.for_room(room, backend="numpy")
        depth, labels = render_view(caster, origin, np.eye(3), grid.vectors, grid.shape)
        return room_layout(depth, labels.astype(np.int64), (-90.0, 90.0))

    walls, heights = layout(0.6)
    np.testing.assert_allclose(heights, [0.7, 2.1], rtol=1e-4)
    np.testing.assert_allclose(walls, want, rtol=1e-3)  # the wall above the box still shows in its columns
    walls, _ = layout(1.8)  # a tall box hides the whole wall behind it: those columns are unknown
    hidden = np.abs(np.rad2deg(az)) < 10
    assert np.isnan(walls[hidden]).all()
    np.testing.assert_allclose(walls[np.abs(np.rad2deg(az)) > 40], want[np.abs(np.rad2deg(az)) > 40], rtol=1e-3)


def test_layout_head_joins_a_trained_model_and_learns_from_room_targets(tiny_ds, tmp_path):
    from avperception.models.student import AudioStudent
    from avperception_train.learn.data import make_datasets
    from avperception_train.learn.losses import prediction_loss
    from avperception_train.learn.train import initial_student, student_config

    train_ds, _, info = make_datasets(str(tiny_ds), 0, False)
    base = TrainConfig(data=str(tiny_ds), mode="e2e", model=ModelSpec(dim=32, depth=1, decoder_width=16))
    with_layout = TrainConfig(**{**base.__dict__, "model": ModelSpec(dim=32, depth=1, decoder_width=16, layout_beams=15)})
    old = AudioStudent(student_config(base, info))
    old.save(tmp_path / "old")
    model, sc = initial_student(str(tmp_path / "old"), student_config(with_layout, info), info.emitted)
    assert sc.layout_beams == 15 and model.layout is not None
    kept = old.state_dict()
    assert all(torch.equal(v, kept[k]) for k, v in model.state_dict().items() if not k.startswith("layout."))
    with pytest.raises(ValueError, match="layout_beams needs model.echo_hop"):
        student_config(TrainConfig(model=ModelSpec(echo_hop=0, layout_beams=15)), info)
    # the loss compares the head's walls and heights with the room the ground truth shows (unknown ones skipped)
    batch = torch.utils.data.default_collate([train_ds[i] for i in range(4)])
    assert batch["walls"].shape == (4, info.pano_shape[1]) and batch["heights"].shape == (4, 2)
    assert torch.isfinite(batch["heights"]).all() and torch.isfinite(batch["walls"]).float().mean() > 0.5
    perfect = {"walls": torch.nan_to_num(batch["walls"], nan=1.0), "heights": batch["heights"]}
    for distance in ("log", "relative"):
        parts = prediction_loss(perfect, batch, {"depth": 0, "semantic": 0, "voxels": 0, "energy": 0}, distance)[1]
        assert parts["layout"] == 0.0
    model.train()
    opt = torch.optim.Adam(model.layout.parameters(), 3e-3)
    first = None
    for _ in range(30):
        loss = prediction_loss(model(batch["audio"]), batch, {"depth": 0, "semantic": 0, "voxels": 0, "energy": 0})[0]
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first
    # the evaluation's top-view figure of heard against true walls
    from avperception_train.learn.evaluate import layout_figure

    png = layout_figure(model, train_ds, tmp_path / "layout.png", scenes=2)
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no layout head"):
        layout_figure(old, train_ds, tmp_path / "none.png")


def test_evaluate_gives_every_model_its_own_row():
    from avperception_train.learn.commands import row_names

    vq = "/runs/shared/vqvae/best.pt"
    specs = [f"manifold:/work/experiments/first/best.pt,{vq}", f"manifold:/work/experiments/second/best.pt,{vq}",
             "mean-layout", "mean-layout", "student:/a/very/long/path/to/an/exported/model/student.safetensors"]
    names = row_names(specs)
    assert len(set(names)) == len(specs)
    assert names[:2] == specs[:2]  # shortened, both would read "manifold:/work/exper…/runs/shared/vqvae/best.pt"
    assert names[2:4] == ["mean-layout (1)", "mean-layout (2)"]
    assert names[4] == "student:/a/very/long…odel/student.safetensors"


def test_evaluate_draws_the_layout_of_the_student_given_not_the_shipped_one(tiny_ds, tmp_path, monkeypatch, capsys):
    from avperception.models.student import AudioStudent
    from avperception_train.cli import main
    from avperception_train.learn import commands, evaluate as evaluate_mod
    from avperception_train.learn.train import student_config

    info = InMemoryScenes(tiny_ds, "train", max_samples=1).info
    cfg = student_config(TrainConfig(data=str(tiny_ds), mode="e2e",
                                     model=ModelSpec(dim=32, depth=1, decoder_width=16, layout_beams=15)), info)
    torch.manual_seed(0)
    AudioStudent(cfg).save(tmp_path / "shipped")
    given = AudioStudent(cfg)
    given.save(tmp_path / "given")
    monkeypatch.setattr(commands, "default_model_path", lambda: tmp_path / "shipped.safetensors")
    drawn = []
    monkeypatch.setattr(evaluate_mod, "layout_figure", lambda model, *a, **k: drawn.append(model) or Path(a[1]))
    assert main(["evaluate", "--data", str(tiny_ds), "--default", "--model", f"student:{tmp_path / 'given.safetensors'}",
                 "--layout-figure", str(tmp_path / "layout.png"), "--out", str(tmp_path / "report.md")]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "Depth by ground-truth class" in report and report in capsys.readouterr().out  # the same report, printed
    assert "Segmentation IoU by class:" in report
    w = "layout.bins.weight"
    assert len(drawn) == 1 and torch.equal(drawn[0].state_dict()[w], given.state_dict()[w])
    assert not torch.equal(drawn[0].state_dict()[w], AudioStudent.load(tmp_path / "shipped").state_dict()[w])


def test_camera_labels_keep_what_a_forward_camera_sees(passive_ds):
    """`camera_fov_deg`: depth and classes only in the camera's view, voxels known only in view up to the
    surface it sees, no energy; the augmentation turns the view with the scene."""
    root = passive_ds.root
    full = InMemoryScenes(root, "train")
    cam = InMemoryScenes(root, "train", augment=True, camera_fov_deg=(90, 60))
    grid = equirectangular(-180, 180, -90, 90, 3.0)
    az, el = grid.azimuth_deg.reshape(60, 120), grid.elevation_deg.reshape(60, 120)
    view = cam.camera.view
    assert view[(np.abs(az) < 40) & (np.abs(el) < 5)].all()  # ahead
    assert not view[(np.abs(az) > 50) | (np.abs(el) > 35)].any()  # beside, behind, above, below
    a, b = full.item(0), cam.item(0)
    np.testing.assert_array_equal(np.isfinite(b["depth"]), view & np.isfinite(a["depth"]))
    np.testing.assert_array_equal(b["depth"][view], a["depth"][view])
    assert np.all(b["semantic"][~view] == 255) and np.isnan(b["energy"]).all()
    known = np.isfinite(b["voxels"])
    np.testing.assert_array_equal(b["voxels"][known], a["voxels"][known])
    # along +x: voxels before the surface the camera sees are known (free), those well behind it unknown
    origin = np.asarray(np.load(next(root.glob("shard-*.npz")))["voxel_origin"])
    size = np.asarray(np.load(next(root.glob("shard-*.npz")))["voxel_size"])
    ahead = a["depth"][(np.abs(az) < 2) & (np.abs(el) < 2)].min()
    iy, iz = np.floor((0.0 - origin[1:]) / size[1:]).astype(int)
    xs = origin[0] + (np.arange(b["voxels"].shape[2]) + 0.5) * size[0]
    line = known[iz, iy]
    assert line[(xs > 0.3) & (xs < ahead - 0.2)].all()
    assert not line[xs > ahead + 0.3].any() and not line[xs < 0].any()
    assert 0.01 < known.mean() < 0.5
    # turned by the augmentation: the view is rolled with the depth, and still marks exactly what is known
    assert np.isfinite(a["depth"]).all()  # a closed room: every ray hits
    for _ in range(20):
        t = cam[0]
        np.testing.assert_array_equal(np.isfinite(t["depth"].numpy()), t["view"].numpy())
    rolled = {cam[0]["view"].numpy().tobytes() for _ in range(40)}
    assert len(rolled) >= 3  # four rotations (a mirror keeps a centred view as it is)


def test_losses_leave_unknown_targets_out():
    from avperception_train.learn.losses import prediction_loss

    torch.manual_seed(0)
    out = {"depth": (torch.rand(2, 4, 6) + 1).requires_grad_(), "semantic": torch.randn(2, 3, 4, 6, requires_grad=True),
           "voxels": torch.randn(2, 3, 3, 3, requires_grad=True), "energy": torch.rand(2, 4, 6, requires_grad=True)}
    vox = (torch.rand(2, 3, 3, 3) > 0.5).float()
    unknown = torch.rand(2, 3, 3, 3) > 0.6
    nan = torch.where(unknown, torch.full_like(vox, float("nan")), vox)
    energy = torch.rand(2, 4, 6)
    energy[0] = float("nan")
    target = {"voxels": nan, "energy": energy}
    _, parts = prediction_loss(out, target)
    k = ~unknown
    vk = vox[k]
    pos = vk.mean().clamp(0.01, 0.5)
    want = torch.nn.functional.binary_cross_entropy_with_logits(out["voxels"][k], vk, pos_weight=(1 - pos) / pos)
    assert parts["voxels"] == pytest.approx(float(want.detach()), rel=1e-6)
    assert parts["energy"] == pytest.approx(float(((out["energy"][1] - energy[1]) ** 2).mean().detach()), rel=1e-6)
    # nothing known: no entry, and a zero loss that still backpropagates
    none = {"depth": torch.full((2, 4, 6), float("nan")), "semantic": torch.full((2, 4, 6), 255),
            "voxels": torch.full((2, 3, 3, 3), float("nan")), "energy": torch.full((2, 4, 6), float("nan"))}
    loss, parts = prediction_loss(out, none)
    assert parts == {} and float(loss) == 0.0
    loss.backward()


def test_obstacle_losses_train_the_decoders_depth_on_obstacles_and_weigh_their_class():
    from avperception_train.datagen.geometry import OBSTACLE, WALL
    from avperception_train.learn.losses import distance_loss, prediction_loss

    torch.manual_seed(0)
    own = (torch.rand(2, 4, 6) + 0.5).requires_grad_()
    out = {"depth": torch.rand(2, 4, 6) + 1, "obstacle_depth": own, "semantic": torch.randn(2, 4, 4, 6)}
    sem = torch.full((2, 4, 6), WALL, dtype=torch.uint8)
    sem[0, 1:3, 2:5] = OBSTACLE
    sem[1, 0, 0] = 255  # unknown
    depth = torch.rand(2, 4, 6) + 0.3
    depth[0, 1, 2] = float("nan")
    target = {"depth": depth, "semantic": sem}
    assert "obstacle_depth" not in prediction_loss(out, target)[1]  # off unless asked for
    loss, parts = prediction_loss(out, target, {"depth": 0, "semantic": 0, "obstacle_depth": 1.0})
    m = (sem == OBSTACLE) & torch.isfinite(depth)
    assert int(m.sum()) == 5
    assert parts["obstacle_depth"] == pytest.approx(float(distance_loss(own[m], depth[m]).detach()), rel=1e-6)
    loss.backward()
    assert torch.equal(own.grad != 0, m)  # only the obstacle pixels with a known depth teach it
    w = torch.ones(4)
    w[OBSTACLE] = 3.0
    want = torch.nn.functional.cross_entropy(out["semantic"], sem.long(), weight=w, ignore_index=255)
    assert prediction_loss(out, target, {"depth": 0, "obstacle_semantic": 3.0})[1]["semantic"] == pytest.approx(
        float(want), rel=1e-6)

    def pull(weight):  # how hard an obstacle pixel pulls its logits, against a wall pixel
        logits = out["semantic"].clone().requires_grad_()
        prediction_loss({**out, "semantic": logits}, target, {"depth": 0, "obstacle_semantic": weight})[0].backward()
        return float(logits.grad[0, :, 1, 2].norm() / logits.grad[0, :, 0, 0].norm())
    assert pull(3.0) == pytest.approx(3 * pull(1.0), rel=1e-5)


def test_camera_teacher_sees_only_the_view_and_its_students_must_share_it(tiny_ds, tmp_path):
    from avperception_train.learn.commands import load_predictor
    from avperception_train.learn.train import train

    base = TrainConfig(data=str(tiny_ds), batch_size=8, workers=0, device="cpu", lr=3e-3, warmup_steps=1,
                       camera_fov_deg=(90.0, 60.0),
                       model=ModelSpec(dim=32, depth=1, latent_h=15, latent_w=30, decoder_width=16, echo_hop=0))
    teacher = train(replace(base, mode="teacher", epochs=2, out=str(tmp_path / "t")), progress=False)
    # the evaluated teacher sees only the camera's view of the test rooms: the rest of the truth changes nothing
    test = InMemoryScenes(tiny_ds, "test")
    view = InMemoryScenes(tiny_ds, "test", camera_fov_deg=(90, 60)).camera.view
    b = torch.utils.data.default_collate([test[0], test[1]])
    other = dict(b, depth=torch.where(torch.from_numpy(view), b["depth"], b["depth"] * 0.5 + 1.0),
                 semantic=torch.where(torch.from_numpy(view), b["semantic"], torch.zeros_like(b["semantic"])))
    predict = load_predictor(f"teacher:{teacher}", str(tiny_ds))
    np.testing.assert_array_equal(predict(b)["depth"], predict(other)["depth"])
    # a student distilled from it learns from the same camera's labels; whole-panorama labels are refused
    train(replace(base, mode="distill", epochs=1, teacher=str(teacher), out=str(tmp_path / "s")), progress=False)
    with pytest.raises(ConfigError, match="camera's 90 x 60 deg view.*whole panorama"):
        train(replace(base, mode="distill", epochs=1, teacher=str(teacher), camera_fov_deg=(),
                      out=str(tmp_path / "x")), progress=False)


def test_skip_train_samples_and_camera_fov_are_checked(tiny_ds):
    whole = InMemoryScenes(tiny_ds, "train")
    later = InMemoryScenes(tiny_ds, "train", skip_samples=3, max_samples=2)
    assert len(later) == 2
    np.testing.assert_array_equal(later.item(0)["audio"], whole.item(3)["audio"])
    with pytest.raises(ValueError, match="after the first"):
        InMemoryScenes(tiny_ds, "train", skip_samples=len(whole))
    for bad in ((90,), (0, 60), (90, 180)):
        with pytest.raises(ConfigError, match="camera_fov_deg"):
            TrainConfig(camera_fov_deg=bad, mode="e2e").validate()
    with pytest.raises(ConfigError, match="camera_fov_deg applies"):
        TrainConfig(camera_fov_deg=(90, 60), mode="vqvae").validate()


def test_near_overshoot_loss_pulls_in_only_near_pixels_reported_too_far():
    from avperception_train.learn.losses import near_overshoot_loss, prediction_loss

    g = torch.tensor([0.3, 0.3, 0.8, 3.0, float("nan")])
    p = torch.tensor([2.0, 0.35, 0.5, 6.0, 1.0], requires_grad=True)
    target, out = {"depth": g[None]}, {"depth": p[None]}
    assert "near_overshoot" not in prediction_loss(out, target)[1]  # off unless asked for
    loss, parts = prediction_loss(out, target, {"depth": 0, "near_overshoot": 2.0})
    # of the three pixels truly within 1 m only the wall at 0.3 m seen at 2 m overshoots 1.25x: (2 / 0.3 - 1.25) / 3
    assert parts["near_overshoot"] == pytest.approx((2.0 / 0.3 - 1.25) / 3, rel=1e-6)
    assert float(loss) == pytest.approx(2.0 * parts["near_overshoot"], rel=1e-6)
    loss.backward()
    assert p.grad[0] > 0 and torch.all(p.grad[1:] == 0)  # nearer, and nothing else moves (the far wall at 6 m)
    assert near_overshoot_loss(torch.tensor([5.0]), torch.tensor([3.0])) is None


def test_depth_obstacle_weight_leaves_the_obstacle_pixels_out_of_the_depth_loss():
    from avperception_train.datagen.geometry import OBSTACLE, WALL
    from avperception_train.learn.losses import distance_loss, prediction_loss

    torch.manual_seed(1)
    depth = torch.rand(2, 4, 6) + 0.5
    sem = torch.full((2, 4, 6), WALL, dtype=torch.uint8)
    sem[0, :2, :3] = OBSTACLE
    pred = (torch.rand(2, 4, 6) + 0.5).requires_grad_()
    target, out = {"depth": depth, "semantic": sem}, {"depth": pred}
    every = prediction_loss(out, target, {"semantic": 0})[1]["depth"]
    assert every == pytest.approx(float(distance_loss(pred.flatten(), depth.flatten())), rel=1e-6)
    loss, parts = prediction_loss(out, target, {"semantic": 0, "depth_obstacle": 0.0}, "relative")
    room = sem != OBSTACLE
    assert parts["depth"] == pytest.approx(float(distance_loss(pred[room], depth[room], "relative")), rel=1e-6)
    loss.backward()
    assert torch.equal(pred.grad != 0, room)  # a box teaches the room nothing
    half = prediction_loss(out, target, {"semantic": 0, "depth_obstacle": 0.5})[1]["depth"]
    err = (pred - depth).abs() + (pred.log() - depth.log()).abs()
    share = torch.where(room, 1.0, 0.5)
    assert half == pytest.approx(float((err * share).sum() / share.sum()), rel=1e-6)
