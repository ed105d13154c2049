"""The live quality bench's rooms: ids as given, or the first rooms of a split of the data engine, so that live
scores can come from rooms no training run has used."""

from __future__ import annotations

import numpy as np
import pytest


def test_test_rooms_are_the_first_rooms_of_the_test_split():
    from avperception.bench.sonar_quality import parse_rooms
    from avperception_train.datagen.config import load_config
    from avperception_train.datagen.scene import room_split

    cfg = load_config(None)
    rooms = parse_rooms("test:6")
    assert len(rooms) == 6
    assert rooms == tuple(r for r in range(rooms[-1] + 1) if room_split(cfg, r) == 2)  # every one, none skipped
    assert not set(parse_rooms("train:20")) & set(rooms)
    assert parse_rooms("0, 3,5") == (0, 3, 5)
    from avperception.bench.sonar_quality import DEFAULT_ROOMS

    assert parse_rooms(DEFAULT_ROOMS) == rooms[:3]  # by default, held-out rooms


@pytest.mark.parametrize("spec, says", [("test:0", "count at least 1"), ("valid:3", "train, val or test"),
                                        ("a,b", "room ids"), ("", "at least one room"), ("-1", "none negative")])
def test_bad_room_specs_are_refused(spec, says, capsys):
    from avperception.bench.sonar_quality import main, parse_rooms

    with pytest.raises(ValueError, match=says):
        parse_rooms(spec)
    assert main(["--rooms", spec]) == 2
    assert says in capsys.readouterr().err


def test_the_live_bench_scores_the_surfaces_that_return_an_echo_apart():
    """Room 1 (a held-out room) has an absorber-panel wall: a depth right everywhere but there scores delta_1 1 on
    the surfaces that return an echo, and less on all of them."""
    from types import SimpleNamespace

    import numpy as np

    from avperception.bench.sonar_quality import heard_scores
    from avperception.demo import active_room
    from avperception.eval.metrics import depth_metrics
    from avperception_train.datagen.groundtruth import RayCaster, render_view
    from avperception_train.datagen.scene import grids, silent_view

    traj = active_room(1, 4.0, 0)
    assert "panel_fabric_covered_6pcf" in traj.room.wall_materials
    pano, caster, records, unheard, full = grids(traj.cfg)[0], RayCaster.for_room(traj.room), [], [], []
    for k in range(0, 40, 10):
        spec = traj.scene_spec(k, sources=False)
        depth, _ = render_view(caster, spec.origin, spec.rotation, pano.vectors, pano.shape)
        quiet, unreflected = silent_view(traj.cfg, traj.room, spec.origin, spec.rotation)
        wrong = np.where(quiet, 3 * depth, depth)
        records.append({"ping": k, "truth": SimpleNamespace(depth=depth), "out": SimpleNamespace(depth=wrong)})
        full.append(depth_metrics(wrong, depth)["delta1"])
        # wrong where no point reflects the sweep back: only the second score leaves those pixels out
        unheard.append({**records[-1], "out": SimpleNamespace(depth=np.where(unreflected & ~quiet, 3 * depth, depth))})
    h = heard_scores(traj, records)
    assert h["heard_depth_delta1_mean"] == 1.0 and h["heard_depth_abs_rel_mean"] == 0.0
    assert 0.0 < h["echo_free_share"] < 0.5 and min(full) < 1.0 and h["heard_delta1_per_ping"] == [1.0] * 4
    assert h["reflected_depth_delta1_mean"] == 1.0 and h["silent_share"] >= h["echo_free_share"]
    u = heard_scores(traj, unheard)
    assert u["reflected_depth_delta1_mean"] == 1.0 and u["reflected_depth_abs_rel_mean"] == 0.0
    assert u["silent_share"] > u["echo_free_share"] and u["heard_depth_delta1_mean"] < 1.0


def test_the_live_bench_averages_pings_only_where_the_robot_stands():
    """``--average-pings 4``: the node's code told the array's pose at each ping (as TF tells the node) averages
    1, 2, 3, then 4 windows of a robot standing still, and none of one driving its loop (3.75 cm a ping)."""
    from avperception.bench.sonar_quality import run

    still = run(rooms=(1,), pings=6, average_pings=4, speed_m_s=0.0, loud=True)
    row = still["rows"][0]
    assert still["speed_m_s"] == 0.0 and still["loud"] and row["scored"] == row["averaged"]["scored"]
    n = row["scored"]
    assert row["averaged"]["pings_averaged_mean"] == pytest.approx(np.mean([min(i + 1, 4) for i in range(n)]))
    assert row["averaged"]["delta1_per_ping"][0] == row["delta1_per_ping"][0]  # the first ping is alone either way
    assert row["averaged"]["delta1_per_ping"][1:] != row["delta1_per_ping"][1:]
    from avperception.bench.sonar_quality import main

    assert main(["--average-pings", "17"]) == 2  # refused by the node's own bound, before any room is rendered
    driving = run(rooms=(1,), pings=6, average_pings=4)
    assert driving["averaged"]["pings_averaged_mean"] == 1.0
    assert driving["rows"][0]["averaged"]["delta1_per_ping"] == driving["rows"][0]["delta1_per_ping"]
