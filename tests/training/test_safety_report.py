"""Training's evaluation reports the safety metrics and the depth uncertainty's AUSE
(:mod:`avperception.eval.safety`) for any predictor, here one whose errors are known by construction."""

from __future__ import annotations

import numpy as np
import pytest


def far_when_near(batch):
    """A predictor whose errors are known: everything within 1 m reported at 3 m, the rest 10 % far; its uncertainty
    is its error (relative 0.09 where it is right, (3 - g) / 3 where it reports 3 m)."""
    g = batch["depth"].numpy()
    d = np.where(g < 1.0, 3.0, g * 1.1)
    return {"depth": d, "depth_uncertainty": np.abs(d - g)}


def test_evaluate_reports_safety_and_the_uncertaintys_ause(dataset):
    from avperception_train.learn.data import InMemoryScenes
    from avperception_train.learn.evaluate import report_text, evaluate

    test = InMemoryScenes(dataset, "train")

    r = evaluate(far_when_near, test)
    s = r["safety"]
    assert s["false_far_rate"] == 1.0 and s["near_recall"] == 0.0 and s["close_pixels"] > 0
    assert s["by_range"]["2-4 m"]["abs_rel"] == pytest.approx(0.1) and s["by_range"]["2-4 m"]["delta1"] == 1.0
    u = r["uncertainty"]
    assert u["scenes"] == len(test) and u["rmse"]["ause"] == pytest.approx(0.0, abs=1e-9)
    assert u["rmse"]["ause_random"] > 0.01
    text = report_text({"far when near": r})
    assert "| far when near | 1.000 | 0.000 |" in text and "AUSE AbsRel" in text and "<0.5 m" in text
    # the near bound pulls the 3 m reports, whose uncertainty is 2-3 m, within 1 m, and only the nearest truths
    # (within about 0.45 m) lie under it; with no uncertainty it is the depth itself
    b = u["near_bound"]
    assert b["quantile"] == 0.02 and 0 < b["below"] < 0.1 and b["false_far_rate"] < 0.5 and b["near_recall"] > 0.5
    assert "near bound: false far" in text
    exact = evaluate(lambda batch: {"depth": batch["depth"].numpy(),
                                    "depth_uncertainty": np.zeros_like(batch["depth"].numpy())}, test,
                     near_bound_quantile=0.1)
    assert exact["uncertainty"]["near_bound"] == {"quantile": 0.1, "false_far_rate": 0.0, "near_recall": 1.0,
                                                  "false_near_rate": 0.0, "delta1": 1.0, "abs_rel": 0.0, "below": 0.0}
    assert "near_bound" not in evaluate(far_when_near, test, near_bound_quantile=0.0)["uncertainty"]
    # the confident depth (sigma within 0.3 of the range: the node's default) drops the 3 m reports, whose
    # uncertainty is most of their range, and keeps the others, 10 % far with 9 % uncertainty
    c = u["confident"]
    g = np.stack([test[i]["depth"].numpy() for i in range(len(test))])
    known = np.isfinite(g) & (g > 1e-3)
    assert c["max_rel_std"] == 0.3 and c["kept"] == pytest.approx((known & (g >= 1.0)).sum() / known.sum())
    assert c["delta1"] == 1.0 and c["abs_rel"] == pytest.approx(0.1) and c["near_kept"] == 0.0
    assert np.isnan(c["false_far_rate"]) and "confident depth: kept" in text
    loose = evaluate(far_when_near, test, confident_max_rel_std=1.0)["uncertainty"]["confident"]
    assert loose["kept"] > c["kept"] and loose["near_kept"] > 0.5 and loose["false_far_rate"] == 1.0
    assert "confident" not in evaluate(far_when_near, test, confident_max_rel_std=0.0)["uncertainty"]


def test_evaluate_reports_depth_by_the_arrays_height(dataset):
    """Bands of the array's height above the floor: the scenes in each (and those with the ceiling the nearer) as
    the items' heights say, and pooled delta_1 overall, on the floor and on the ceiling; here a predictor right
    everywhere but on the ceiling, which it puts twice as far."""
    from avperception_train.learn.data import InMemoryScenes
    from avperception_train.learn.evaluate import ARRAY_HEIGHT_EDGES_M, evaluate, report_text

    test = InMemoryScenes(dataset, "train")

    def wrong_ceiling(batch):
        g, lab = batch["depth"].numpy(), batch["semantic"].numpy()
        return {"depth": np.where(lab == 1, 2.0 * g, g)}

    r = evaluate(wrong_ceiling, test)
    bands = r["depth_by_array_height"]
    heights = np.stack([test[i]["heights"].numpy() for i in range(len(test))])
    band = np.searchsorted(ARRAY_HEIGHT_EDGES_M, heights[:, 0], side="right")
    assert sum(v["scenes"] for v in bands.values()) == len(test)
    for k, (name, v) in zip(sorted(set(band)), bands.items()):
        assert v["scenes"] == int((band == k).sum())
        assert v["ceiling_nearer"] == int(((band == k) & (heights[:, 1] < heights[:, 0])).sum())
        assert v["floor_delta1"] == 1.0 and v["ceiling_delta1"] == 0.0 and 0.0 < v["delta1"] < 1.0
    text = report_text({"wrong ceiling": r})
    assert "Depth by the array's height above the floor" in text and "with the ceiling nearer" in text


def test_evaluate_scores_the_layout_heads_floor_and_ceiling_by_the_arrays_height(dataset):
    """A layout head's floor and ceiling distances, scene by scene: right, both 10 % long (still within 1.25x),
    or swapped (the order wrong wherever they differ; each within 1.25x only where they nearly agree)."""
    from avperception_train.learn.data import InMemoryScenes
    from avperception_train.learn.evaluate import evaluate, report_text

    test = InMemoryScenes(dataset, "train")

    def heads(f):
        return lambda batch: {"depth": batch["depth"].numpy(), "heights": f(batch["heights"].numpy())}

    right = evaluate(heads(lambda h: 1.1 * h), test)["depth_by_array_height"]
    assert sum(v["heads_scenes"] for v in right.values()) == len(test)
    assert all(v["floor_ok"] == v["ceiling_ok"] == v["order_right"] == 1.0 for v in right.values())
    swapped = evaluate(heads(lambda h: h[:, ::-1].copy()), test)["depth_by_array_height"]
    h = np.stack([test[i]["heights"].numpy() for i in range(len(test))])
    assert sum(v["order_right"] * v["heads_scenes"] for v in swapped.values()) == pytest.approx(
        float(np.sum(h[:, 0] == h[:, 1])))
    close = np.maximum(h[:, 0] / h[:, 1], h[:, 1] / h[:, 0]) < 1.25
    assert sum(v["floor_ok"] * v["heads_scenes"] for v in swapped.values()) == pytest.approx(float(close.sum()))
    text = report_text({"swapped": {"depth_by_array_height": swapped}})
    assert "The layout head's floor and ceiling distances" in text and "nearer one right" in text
    none = evaluate(lambda b: {"depth": b["depth"].numpy()}, test)["depth_by_array_height"]
    assert not any("order_right" in v for v in none.values())  # no layout head, no such scores


@pytest.fixture(scope="module")
def ring_scenes(ring_dataset):
    """4 robot_8mic scenes (the shipped bundle's array), all in the test split."""
    return ring_dataset(5, 4, {"train": 0.0, "val": 0.0, "test": 1.0})


def test_evaluate_scores_a_bundles_onnx_graph_with_its_uncertainty(ring_scenes):
    """``bundle:DIR`` runs the bundle's model.onnx as the node does: its depth and uncertainty equal the torch
    student's, so evaluate scores the uncertainty and the near bound of ONNX-only (recipe) bundles too; a bundle
    for another array is refused naming the difference."""
    import torch

    from avperception.inference.bundle import BundleMismatch
    from avperception_train.learn.commands import default_model_path, load_predictor
    from avperception_train.learn.data import InMemoryScenes
    from avperception_train.learn.evaluate import evaluate

    test = InMemoryScenes(ring_scenes, "test")
    assert len(test) == 4
    onnx = load_predictor("bundle:default", ring_scenes)
    torch_pred = load_predictor(f"student:{default_model_path()}", ring_scenes)
    batch = {"audio": torch.stack([test[i]["audio"] for i in range(len(test))])}
    a, b = onnx(batch), torch_pred(batch)
    for k in ("depth", "depth_uncertainty"):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-3, atol=1e-3)
    r = evaluate(onnx, test)
    assert r["uncertainty"]["scenes"] == 4 and 0 <= r["uncertainty"]["near_bound"]["below"] < 0.2
    assert np.isfinite(r["depth"]["delta1"]) and r["depth"]["delta1"] > 0.5
    with pytest.raises(BundleMismatch, match="mic"):
        load_predictor("bundle:default:respeaker_4mic", ring_scenes)


def test_evaluate_scores_the_depth_with_the_rooms_true_layout(ring_scenes):
    """``layout_oracle``: the shipped student's depth rendered with the true floor and ceiling, the true walls, or
    both in place of its layout head's. Without obstacles the true room alone gives back the ground truth of the
    walls, floor and ceiling (the truth's layout renders in the panorama's own rows and columns); with the decoder's
    obstacles over it, it scores at least as well as the heard depth, and the report shows it."""
    import torch

    from avperception.models.student import AudioStudent
    from avperception_train.datagen.geometry import CEILING, FLOOR, WALL
    from avperception_train.learn.commands import default_model_path, load_predictor
    from avperception_train.learn.data import InMemoryScenes
    from avperception_train.learn.evaluate import evaluate, layout_oracle, report_text

    test = InMemoryScenes(ring_scenes, "test")
    batch = {k: torch.stack([test[i][k] for i in range(len(test))]) for k in ("audio", "walls", "heights")}
    gt = np.stack([test[i]["depth"].numpy() for i in range(len(test))])
    sem = np.stack([test[i]["semantic"].numpy() for i in range(len(test))])
    model = AudioStudent.load(default_model_path()).float().eval()
    with torch.no_grad():
        out = model(batch["audio"])
    no_obstacles = {**out, "semantic": out["semantic"].clone()}
    no_obstacles["semantic"][:, model.cfg.obstacle_class] = -1e4
    room = layout_oracle(model, no_obstacles, batch["walls"], batch["heights"])["layout"]
    surface = np.isin(sem, (FLOOR, CEILING, WALL)) & np.isfinite(gt)
    ratio = np.maximum(room[surface] / gt[surface], gt[surface] / room[surface])
    assert (ratio < 1.25).mean() > 0.97 and np.median(ratio) < 1.02, np.percentile(ratio, [50, 90, 99])

    r = evaluate(load_predictor(f"student:{default_model_path()}", ring_scenes), test)
    o = r["layout_oracle"]
    assert set(o) == {"heights", "walls", "layout"}
    assert o["layout"]["delta1"] >= r["depth"]["delta1"] and o["layout"]["delta1"] > 0.9, (o, r["depth"])
    text = report_text({"shipped": r})
    assert "true layout" in text and f"| shipped | {r['depth']['abs_rel']:.3f} |" in text


def test_evaluate_gives_students_and_bundles_the_scenes_array_height(ring_scenes, tmp_path):
    """``--known-height``: the student and the bundle's graph are given each scene's true array height, render
    the floor there (the same in ONNX Runtime as in torch) and score the floor better than when they hear it;
    predictors that cannot take a height, and bundles exported before the input, are refused."""
    import json
    import shutil

    import torch

    from avperception_train.learn.commands import default_model_path, load_predictor
    from avperception_train.learn.data import InMemoryScenes
    from avperception_train.learn.evaluate import evaluate

    test = InMemoryScenes(ring_scenes, "test")
    batch = {k: torch.stack([test[i][k] for i in range(len(test))]) for k in ("audio", "heights")}
    student = f"student:{default_model_path()}"
    known = load_predictor(student, ring_scenes, known_height=True)
    a, b = known(batch), load_predictor("bundle:default", ring_scenes, known_height=True)(batch)
    np.testing.assert_allclose(a["heights"][:, 0], batch["heights"][:, 0].numpy(), rtol=1e-6)
    for k in ("depth", "depth_uncertainty"):
        np.testing.assert_allclose(b[k], a[k], rtol=1e-3, atol=1e-3)
    heard = load_predictor(student, ring_scenes)(batch)
    assert not np.allclose(a["depth"], heard["depth"])
    floor = {name: evaluate(p, test)["depth_by_class"]["floor"]["delta1"]
             for name, p in (("known", known), ("heard", load_predictor(student, ring_scenes)))}
    assert floor["known"] >= floor["heard"] and floor["known"] > 0.9, floor
    with pytest.raises(ValueError, match="cannot take the array's height"):
        load_predictor("mean-layout", ring_scenes, known_height=True)
    old = tmp_path / "old"
    shutil.copytree(default_model_path().parent, old)
    meta = json.loads((old / "bundle.json").read_text())
    del meta["inputs"]
    (old / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not take the array's height"):
        load_predictor(f"bundle:{old}", ring_scenes, known_height=True)


def test_the_confident_depth_is_scored_at_each_threshold_asked(dataset):
    """``confident_max_rel_std`` with several thresholds: ``confident`` is the first's, ``confident_by_threshold``
    lists each, the share kept grows with the threshold, and the report has a table of them; ``evaluate
    --confident`` takes the list and refuses what the node would."""
    import argparse

    from avperception_train.learn.commands import _thresholds
    from avperception_train.learn.data import InMemoryScenes
    from avperception_train.learn.evaluate import evaluate, report_text

    test = InMemoryScenes(dataset, "train")

    r = evaluate(far_when_near, test, confident_max_rel_std=[0.05, 0.3, 1.0])["uncertainty"]
    rows = r["confident_by_threshold"]
    assert [c["max_rel_std"] for c in rows] == [0.05, 0.3, 1.0] and r["confident"] == rows[0]
    assert rows[0]["kept"] == 0.0 and rows[1]["delta1"] == 1.0 and rows[1]["kept"] < rows[2]["kept"]
    text = report_text({"far when near": {"uncertainty": r}})
    assert "The confident depth by threshold" in text and "| far when near | 0.3 |" in text
    assert "confident_by_threshold" not in evaluate(far_when_near, test)["uncertainty"]
    assert _thresholds("0.2,0.3") == [0.2, 0.3]
    for bad in ("0,0.3", "11", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            _thresholds(bad)


def test_the_near_bound_is_scored_at_each_probability_asked(dataset):
    """``near_bound_quantile`` with several probabilities: ``near_bound`` is the first's, ``near_bound_by_quantile``
    lists each, scored as a depth (false far and near, delta_1, AbsRel, the truth below it) as the bound itself
    computes, and the report has a table of them; ``evaluate --near-bound`` takes the list and refuses what the node
    would."""
    import argparse

    from avperception.sonar.products import depth_near_bound
    from avperception_train.learn.commands import _probabilities
    from avperception_train.learn.data import InMemoryScenes
    from avperception_train.learn.evaluate import evaluate, report_text

    test = InMemoryScenes(dataset, "train")

    r = evaluate(far_when_near, test, near_bound_quantile=[0.1, 0.02])["uncertainty"]
    rows = r["near_bound_by_quantile"]
    assert [b["quantile"] for b in rows] == [0.1, 0.02] and r["near_bound"] == rows[0]
    g = np.stack([test[i]["depth"].numpy() for i in range(len(test))])
    known = np.isfinite(g) & (g > 1e-3)
    d = np.where(g < 1.0, 3.0, g * 1.1)
    for row in rows:
        b = depth_near_bound(d, np.abs(d - g), row["quantile"])[known]
        t = g[known]
        assert row["delta1"] == pytest.approx((np.maximum(b / t, t / b) < 1.25).mean())
        assert row["abs_rel"] == pytest.approx((np.abs(b - t) / t).mean())
        assert row["below"] == pytest.approx((t < b).mean())
        assert row["false_far_rate"] == pytest.approx((b[t < 0.5] > 1.0).mean())
        assert row["false_near_rate"] == pytest.approx((b[t > 2.0] < 1.0).mean())
    # the lower the probability, the nearer the bound: fewer near surfaces reported far, fewer truths below it
    assert rows[1]["false_far_rate"] < rows[0]["false_far_rate"] and rows[1]["below"] < rows[0]["below"]
    text = report_text({"far when near": {"uncertainty": r}})
    assert "The near bound by its probability" in text and "| far when near | 0.02 |" in text
    assert "near_bound_by_quantile" not in evaluate(far_when_near, test)["uncertainty"]
    assert _probabilities("0.05,0.02") == [0.05, 0.02]
    for bad in ("0,0.02", "0.6", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            _probabilities(bad)
