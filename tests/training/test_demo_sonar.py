"""The offline sonar demo (`avperception demo`'s learned half): a robot pinging through a data-engine room, each
ping scored, the picture written, and the safety and confident-depth figures in its summary."""

import json

import pytest

pytest.importorskip("avperception_train", reason="the demo's room comes from the training package")


def test_sonar_demo_scores_the_confident_depth_and_draws_it(tmp_path):
    from avperception.config import SonarConfig
    from avperception.demo import run_sonar
    from avperception.eval.live import describe_safety

    s = run_sonar(tmp_path, pings=5, room_id=5, progress=False)
    assert json.loads((tmp_path / "sonar_summary.json").read_text()) == s
    assert (tmp_path / "sonar.png").stat().st_size > 10_000
    assert s["scored"] == 4  # the first ping's window starts with the stream
    # the shipped bundle has an uncertainty head: the confident depth keeps part of the view, and it is the part
    # the model is sure of (this room's walls are near, its depth good)
    assert 0.2 < s["confident_kept"] < 1.0
    assert s["confident_delta1"] >= s["depth_delta1_mean"] and s["confident_abs_rel"] <= s["depth_abs_rel_mean"]
    assert s["near_pixels"] >= 0 and (s["false_far_rate"] is None) == (s["near_pixels"] == 0)
    line = describe_safety(s)
    assert f"{100 * s['confident_kept']:.1f} % of the view kept" in line
    # with the confident depth turned off there is nothing to report about it
    from avperception.eval.live import score_stream, summarize_scores
    from avperception.demo import active_room

    records, _ = score_stream(active_room(5, 4.0, 0), 3, SonarConfig(confident_max_rel_std=0.0))
    off = summarize_scores(records)
    assert "confident_kept" not in off and "confident_kept" not in records[0]
    assert "confident depth" not in describe_safety(off)
