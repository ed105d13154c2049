"""Training's evaluation reports the safety metrics and the depth uncertainty's AUSE
(:mod:`avperception.eval.safety`) for any predictor, here one whose errors are known by construction."""

from __future__ import annotations

import numpy as np
import pytest


def test_evaluate_reports_safety_and_the_uncertaintys_ause(dataset):
    from avperception_train.learn.data import InMemoryScenes
    from avperception_train.learn.evaluate import report_text, evaluate

    test = InMemoryScenes(dataset, "train")

    def far_when_near(batch):  # everything within 1 m is reported at 3 m; the uncertainty knows its error
        g = batch["depth"].numpy()
        d = np.where(g < 1.0, 3.0, g * 1.1)
        return {"depth": d, "depth_uncertainty": np.abs(d - g)}

    r = evaluate(far_when_near, test)
    s = r["safety"]
    assert s["false_far_rate"] == 1.0 and s["near_recall"] == 0.0 and s["close_pixels"] > 0
    assert s["by_range"]["2-4 m"]["abs_rel"] == pytest.approx(0.1) and s["by_range"]["2-4 m"]["delta1"] == 1.0
    u = r["uncertainty"]
    assert u["scenes"] == len(test) and u["rmse"]["ause"] == pytest.approx(0.0, abs=1e-9)
    assert u["rmse"]["ause_random"] > 0.01
    text = report_text({"far when near": r})
    assert "| far when near | 1.000 | 0.000 |" in text and "AUSE AbsRel" in text and "<0.5 m" in text


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
