"""Safety metrics of depth (false far, near-obstacle recall, range bands) and the sparsification curves and AUSE of
a depth uncertainty, on cases whose answers are known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from avperception.eval.safety import (kept_counts, kept_metrics, merge_counts, range_band_names, safety_counts,
                                      safety_metrics, sparsification, sparsification_curve)


def test_false_far_and_near_recall_count_what_a_robot_would_hit():
    # four pixels within 0.5 m: one reported at 2 m (false far), one at 0.9 m (not far), one unknown to the
    # network (NaN: nothing reported, so it counts as far), one right; and two at 0.8 m: one caught, one at 1.6 m
    gt = np.array([0.3, 0.4, 0.2, 0.45, 0.8, 0.8, 3.0, np.nan])
    pred = np.array([2.0, 0.9, np.nan, 0.45, 1.4, 1.6, 3.0, 1.0])
    m = safety_metrics(safety_counts(pred, gt))
    assert m["near_pixels"] == 4 and m["false_far_rate"] == pytest.approx(2 / 4)
    assert m["close_pixels"] == 6 and m["near_recall"] == pytest.approx(3 / 6)  # 0.9, 0.45, 1.4
    assert np.isnan(m["obstacle_delta1"]) and m["obstacle_pixels"] == 0
    # beyond 2 m: one pixel, reported right; reported at 0.9 m instead it is open space seen as near (false near),
    # at 1.0 m not (the same 1 m line as the false far); an unknown prediction is far, never near
    assert m["open_pixels"] == 1 and m["false_near_rate"] == 0.0
    gt = np.array([3.0, 2.5, 5.0, 2.0, 1.5])
    m = safety_metrics(safety_counts(np.array([0.9, 1.0, np.nan, 0.5, 0.5]), gt))
    assert m["open_pixels"] == 3 and m["false_near_rate"] == pytest.approx(1 / 3)  # 2.0 m is not beyond 2 m


def test_a_depth_with_gaps_is_scored_on_what_it_keeps():
    """kept_counts / kept_metrics: a NaN prediction is a pixel left out, not one reported far; delta_1, AbsRel and
    the false far are over the kept pixels, with the shares kept; unknown truths are left out; counts pool."""
    gt = np.array([0.3, 0.4, 0.2, 2.0, 2.0, 4.0, np.nan])
    pred = np.array([2.0, np.nan, 0.2, 2.2, np.nan, 8.0, 1.0])  # kept: 0.3->2.0 (far), 0.2, 2.0->2.2, 4.0->8.0
    m = kept_metrics(kept_counts(pred, gt))
    assert m["kept"] == pytest.approx(4 / 6) and m["delta1"] == pytest.approx(2 / 4)
    assert m["abs_rel"] == pytest.approx((1.7 / 0.3 + 0.0 + 0.1 + 1.0) / 4)
    assert m["false_far_rate"] == pytest.approx(1 / 2) and m["near_kept"] == pytest.approx(2 / 3)
    twice = kept_metrics(merge_counts(kept_counts(pred, gt), kept_counts(gt, gt)))
    assert twice["kept"] == pytest.approx(10 / 12) and twice["false_far_rate"] == pytest.approx(1 / 5)
    none = kept_metrics(kept_counts(np.full(3, np.nan), np.array([0.3, 1.0, 2.0])))
    assert none["kept"] == 0.0 and np.isnan(none["delta1"]) and np.isnan(none["false_far_rate"])
    with pytest.raises(ValueError, match="pixels"):
        kept_counts(pred[:3], gt)


def test_range_bands_pool_abs_rel_and_delta1_by_true_range():
    gt = np.array([0.25, 0.75, 1.5, 3.0, 5.0, 8.0, 8.0])
    pred = gt * np.array([2.0, 1.0, 1.1, 1.3, 1.0, 0.5, 1.0])
    m = safety_metrics(safety_counts(pred, gt))
    names = range_band_names()
    assert names == ["<0.5 m", "0.5-1 m", "1-2 m", "2-4 m", "4-6 m", ">6 m"]
    got = m["by_range"]
    assert list(got) == names
    assert got["<0.5 m"]["abs_rel"] == pytest.approx(1.0) and got["<0.5 m"]["delta1"] == 0.0
    assert got["1-2 m"]["abs_rel"] == pytest.approx(0.1) and got["1-2 m"]["delta1"] == 1.0
    assert got["2-4 m"]["delta1"] == 0.0  # 1.3x is outside 1.25
    assert got[">6 m"]["abs_rel"] == pytest.approx(0.25) and got[">6 m"]["delta1"] == 0.5
    assert got[">6 m"]["share"] == pytest.approx(2 / 7)
    # a pixel exactly on an edge belongs to the band above it
    edge = safety_metrics(safety_counts(np.array([1.0]), np.array([1.0])))["by_range"]
    assert list(edge) == ["1-2 m"]


def test_counts_pool_over_images_and_obstacles_score_delta1():
    gt = np.full((2, 3), 2.0)
    labels = np.array([[3, 3, 2], [3, 0, 0]])
    a = safety_counts(np.array([[2.1, 4.0, 2.0], [2.0, 2.0, 2.0]]), gt, labels)
    b = safety_counts(np.full((2, 3), 2.0), gt, np.full((2, 3), 3))
    m = safety_metrics(merge_counts(merge_counts(None, a), b))
    assert m["obstacle_pixels"] == 3 + 6 and m["obstacle_delta1"] == pytest.approx(8 / 9)
    with pytest.raises(ValueError, match="same panorama"):
        safety_counts(np.zeros(3), np.zeros(4))


def test_perfect_uncertainty_has_zero_ause_and_the_oracle_curve():
    rng = np.random.default_rng(1)
    gt = rng.uniform(0.5, 6.0, (60, 120))
    pred = gt * np.exp(rng.laplace(0.0, 0.2, gt.shape))
    pred[::7, ::5] = np.nan  # unknown predictions are left out
    gt[::11, ::3] = np.nan
    rel = np.abs(pred - gt) / gt
    r = sparsification(pred, gt, rel, "abs_rel", steps=20)
    assert r["ause"] == pytest.approx(0.0, abs=1e-12)
    assert r["model"] == pytest.approx(r["oracle"])
    assert r["oracle"][0] == pytest.approx(np.nanmean(rel))  # nothing removed: the AbsRel of all known pixels
    assert np.all(np.diff(r["oracle"]) <= 1e-12)  # removing the worst never raises the error
    assert r["ause_random"] > 0.05
    # RMSE ranks by squared error: the error in metres is its perfect uncertainty
    rm = sparsification(pred, gt, np.abs(pred - gt), "rmse")
    assert rm["ause"] == pytest.approx(0.0, abs=1e-12)


def test_random_uncertainty_is_about_the_random_curve_and_an_inverted_one_is_worse():
    rng = np.random.default_rng(2)
    gt = rng.uniform(0.5, 6.0, 200_000)
    pred = gt * np.exp(rng.laplace(0.0, 0.2, gt.shape))
    rel = np.abs(pred - gt) / gt
    r = sparsification(pred, gt, rng.random(gt.shape), "abs_rel", seed=3)
    assert r["ause"] == pytest.approx(r["ause_random"], rel=0.02)
    assert np.allclose(r["random"], r["random"][0], rtol=0.02)  # a random removal leaves the mean where it was
    worse = sparsification(pred, gt, -rel, "abs_rel")
    assert worse["ause"] > 1.5 * worse["ause_random"]
    # an uncertainty that knows the error in part lies between
    part = sparsification(pred, gt, rel * np.exp(rng.normal(0.0, 1.0, gt.shape)), "abs_rel")
    assert 0.0 < part["ause"] < 0.6 * part["ause_random"]


def test_curve_leaves_out_the_highest_scores_first():
    errors = np.array([1.0, 2.0, 3.0, 4.0])
    score = np.array([0.0, 10.0, 5.0, 1.0])  # removes 2.0, then 3.0, then 4.0
    got = sparsification_curve(errors, score, np.array([0.0, 0.25, 0.5, 0.75]))
    np.testing.assert_allclose(got, [2.5, 8 / 3, 2.5, 1.0])
    np.testing.assert_allclose(sparsification_curve(errors, score, np.array([0.0, 0.5]), "rmse"),
                               [np.sqrt(2.5), np.sqrt(2.5)])
    with pytest.raises(ValueError, match="one per pixel"):
        sparsification(np.ones(4), np.ones(4), np.ones(3))
    with pytest.raises(ValueError, match="metric"):
        sparsification(np.ones(4), np.ones(4), np.ones(4), "mae")
