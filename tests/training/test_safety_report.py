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
