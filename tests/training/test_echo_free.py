"""Surfaces that return no echo of the sweep: the simulator's fabric-covered absorber panel absorbs all of it, so no
sonar can hear such a wall; and surfaces with no point that reflects the sweep straight back (a box's side seen from
above its top, a wall past a corner), to which the image-source model gives no first-order echo. The evaluation finds
those pixels again from the rooms the shards store and scores the depth without them."""

from __future__ import annotations

import numpy as np
import pytest

from avperception_train.datagen import config_from_dict, run_datagen
from avperception_train.datagen.acoustics import band_absorption, echo_profile, sweep
from avperception_train.datagen.geometry import CEILING, FLOOR, OBSTACLE, WALL, Box, RoomGeometry, specular_point_on
from avperception_train.datagen.groundtruth import RayCaster, render_view, surface_view
from avperception_train.datagen.scene import (SceneSpec, echo_free_materials, grids, material_table, scene_room,
                                              silent_pixels, simulate_audio)
from avperception_train.datagen.shards import SceneDataset

PANEL = "panel_fabric_covered_6pcf"
HARD = "hard_surface"


def test_an_absorber_panel_wall_returns_no_echo_of_the_sweep():
    """The same room twice, its nearest wall hard or an absorber panel: the panel's first-order echo is gone (under a
    tenth of the hard wall's), the floor's is unchanged."""
    cfg = config_from_dict({"array": "respeaker_4mic", "active": {"speaker_position": [0.0, 0.0, 0.0]},
                            "passive": {"num_sources": [0, 0]}})
    arr = cfg.array_geometry()
    fs, c, a = cfg.audio.sample_rate, cfg.acoustics.speed_of_sound, cfg.active
    emitted = sweep(fs, a.f_start_hz, a.f_end_hz, a.duration_s, a.sweep, a.fade)
    floor = np.array([[0, 0], [5, 0], [5, 4], [0, 4]], float)

    def envelope(south):  # the robot 0.8 m from the south wall, 1.6 m above the floor
        room = RoomGeometry(floor, 3.5, wall_materials=[south, HARD, HARD, HARD], floor_material=HARD,
                            ceiling_material=HARD)
        spec = SceneSpec(0, 0, 0, room, np.array([2.5, 0.8]), 1.6, 0.0, True, 0.0, -80.0, [], seed=1)
        full = simulate_audio(cfg, spec, arr.positions, noise=False, max_order=1)
        direct = simulate_audio(cfg, spec, arr.positions, noise=False, max_order=0)
        return echo_profile(full - direct, emitted).mean(axis=0)

    hard, panel = envelope(HARD), envelope(PANEL)
    wall, ground = (int(round(2 * d / c * fs)) for d in (0.8, 1.6))
    around = slice(wall - 4, wall + 5)
    assert panel[around].max() < 0.1 * hard[around].max()
    np.testing.assert_allclose(panel[ground - 4: ground + 5].max(), hard[ground - 4: ground + 5].max(), rtol=0.02)
    assert band_absorption(PANEL, a.f_start_hz, a.f_end_hz, fs) == 1.0
    assert band_absorption("plasterboard", a.f_start_hz, a.f_end_hz, fs) < 0.1
    with pytest.raises(ValueError, match="reaches no octave band"):
        band_absorption(PANEL, 10.0, 50.0, 16000)


@pytest.fixture(scope="module")
def panel_rooms(tmp_path_factory):
    """Six test scenes in three rooms (L and T shapes, boxes) whose walls are absorber panels or plasterboard."""
    cfg = config_from_dict({
        "seed": 5, "array": "respeaker_4mic", "scenes_per_shard": 4, "passive": {"num_sources": [0, 0]},
        "room": {"scenes_per_room": 2, "shapes": {"l_shape": 1.0, "t_shape": 1.0, "shoebox": 1.0},
                 "materials": {"wall": [PANEL, "plasterboard"]}},
        "boxes": {"count": [1, 2]}, "split": {"train": 0.0, "val": 0.0, "test": 1.0}})
    out = tmp_path_factory.mktemp("panels")
    run_datagen(cfg, out, 6, workers=1, show_progress=False, log=None)
    return cfg, out


def _walls_hit(room, origin, rotation, depth, vectors):
    """Index of the wall each pixel's hit point lies on (-1: none)."""
    p = (origin + (vectors @ rotation.T) * depth.reshape(-1, 1))[:, :2]
    f = room.floor
    out = np.full(len(p), -1)
    for k in range(len(f)):
        a, b = f[k], f[(k + 1) % len(f)]
        t = np.clip((p - a) @ (b - a) / np.dot(b - a, b - a), 0, 1)
        out[np.linalg.norm(a + t[:, None] * (b - a) - p, axis=1) < 1e-4] = k
    return out


def test_echo_free_pixels_are_the_absorber_walls_pixels(panel_rooms):
    cfg, out = panel_rooms
    assert echo_free_materials(cfg) == {PANEL}
    pano = grids(cfg)[0]
    names = material_table(cfg)
    seen = 0
    for arrays in SceneDataset(out, None).iter_shards():
        keep = np.arange(len(arrays["split"]))
        masks, _ = silent_pixels(cfg, arrays, keep)
        for i, mask in zip(keep, masks):
            room, origin, rotation = scene_room(arrays, i, names)
            # the room rebuilt from the shard casts the depth and classes the shard holds
            depth, sem = render_view(RayCaster.for_room(room), origin, rotation, pano.vectors, pano.shape)
            # (to the float32 rounding of the stored floor plan and boxes)
            np.testing.assert_allclose(depth, arrays["depth"][i], rtol=1e-5, equal_nan=True)
            np.testing.assert_array_equal(sem, arrays["semantic"][i])
            wall = _walls_hit(room, origin, rotation, np.nan_to_num(depth, nan=0.0), pano.vectors).reshape(pano.shape)
            panel = np.array([m == PANEL for m in room.wall_materials] + [False])[wall] & (sem == WALL)
            np.testing.assert_array_equal(mask, panel)
            seen += int(mask.any())
    assert seen >= 2


def test_a_scene_without_a_stored_room_has_no_echo_free_pixels(panel_rooms):
    cfg, out = panel_rooms
    arrays = dict(next(SceneDataset(out, None).iter_shards()))
    arrays["num_floor_vertices"] = np.zeros_like(arrays["num_floor_vertices"])  # as an imported recording stores it
    assert scene_room(arrays, 0, material_table(cfg)) is None
    assert not any(m.any() for m in silent_pixels(cfg, arrays, [0, 1]))


def test_evaluate_scores_the_heard_surfaces_apart(panel_rooms):
    """A prediction right everywhere but on the absorber walls, where it is three times too far: on the heard
    surfaces it is perfect, and the report says how many pixels are echo-free and how wrong it is there."""
    from avperception_train.learn.data import InMemoryScenes
    from avperception_train.learn.evaluate import evaluate, report_text

    _, out = panel_rooms
    with pytest.raises(ValueError, match="augmentation"):
        InMemoryScenes(out, "test", augment=True, echo_free=True)
    test = InMemoryScenes(out, "test", echo_free=True)
    quiet = np.stack([test[i]["echo_free"].numpy() for i in range(len(test))])
    known = np.isfinite(np.stack([test[i]["depth"].numpy() for i in range(len(test))]))

    def wrong_on_panels(batch):
        g = batch["depth"].numpy()
        return {"depth": np.where(batch["echo_free"].numpy(), 3 * g, g)}

    r = evaluate(wrong_on_panels, test)
    h = r["heard"]
    assert h["scenes"] == len(test) and h["delta1"] == 1.0 and h["abs_rel"] == 0.0 and h["false_far_rate"] == 0.0
    assert h["left_out_delta1"] == 0.0 and h["left_out_share"] == pytest.approx((quiet & known).sum() / known.sum())
    assert 0.0 < h["left_out_share"] < 0.5 and r["depth"]["delta1"] < 1.0
    assert r["reflected"]["delta1"] == 1.0 and r["reflected"]["left_out_share"] >= h["left_out_share"]
    assert "| wrong | " in report_text({"wrong": r}) and "return an echo" in report_text({"wrong": r})
    assert "heard" not in evaluate(lambda batch: {"depth": batch["depth"].numpy()}, InMemoryScenes(out, "test"))


def test_the_specular_point_is_where_the_perpendicular_meets_the_surface():
    side = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # a box side 1 m high
    assert specular_point_on(side, np.array([0.5, -0.8, 0.5]))  # in front of it, below its top
    assert not specular_point_on(side, np.array([0.5, -0.8, 1.4]))  # above its top
    assert not specular_point_on(side, np.array([1.3, -0.2, 0.5]))  # past its edge
    assert specular_point_on(side, np.array([0.5, 0.8, 0.5]))  # from behind: the plane's other side, same foot
    floor = np.array([[0, 0, 0], [4, 0, 0], [4, 1, 0], [1, 1, 0], [1, 3, 0], [0, 3, 0]], float)  # an L
    assert specular_point_on(floor, np.array([0.5, 2.5, 1.0])) and not specular_point_on(floor, np.array([3, 2, 1.0]))


def _box_room(array_height):
    """A shoebox with one 1 m high box whose side faces the robot 0.8 m away."""
    floor = np.array([[0, 0], [6, 0], [6, 5], [0, 5]], float)
    box = Box((2.0, 1.8), (2.0, 1.0), 1.0, 0.0, HARD)  # x 1-3, y 1.3-2.3: its south side at y = 1.3
    room = RoomGeometry(floor, 3.0, wall_materials=[HARD] * 4, floor_material=HARD, ceiling_material=HARD,
                        boxes=[box])
    return room, np.array([2.0, 0.5, array_height])


def test_a_box_side_seen_from_above_its_top_returns_no_first_order_echo():
    """The same box side 0.8 m away, the array 0.5 m up (below the box's top) or 1.5 m up (above it): only from
    below does its first-order echo arrive; from above there is no point on the side to reflect it back, and the
    mask says so."""
    cfg = config_from_dict({"array": "respeaker_4mic", "active": {"speaker_position": [0.0, 0.0, 0.0]},
                            "passive": {"num_sources": [0, 0]}})
    arr = cfg.array_geometry()
    fs, c, a = cfg.audio.sample_rate, cfg.acoustics.speed_of_sound, cfg.active
    emitted = sweep(fs, a.f_start_hz, a.f_end_hz, a.duration_s, a.sweep, a.fade)
    at = int(round(2 * 0.8 / c * fs))
    around = slice(at - 4, at + 5)
    peaks = {}
    for h in (0.5, 1.5):
        room, origin = _box_room(h)
        spec = SceneSpec(0, 0, 0, room, origin[:2], h, np.pi / 2, True, 0.0, -80.0, [], seed=1)
        full = simulate_audio(cfg, spec, arr.positions, noise=False, max_order=1)
        direct = simulate_audio(cfg, spec, arr.positions, noise=False, max_order=0)
        peaks[h] = echo_profile(full - direct, emitted).mean(axis=0)[around].max()
        side = next(s for s in room.surfaces() if s.name == "box0_side0")
        assert np.allclose(side.corners[:, 1], 1.3)  # the side facing the robot
        assert specular_point_on(side.corners, origin) == (h < 1.0)
    assert peaks[1.5] < 0.1 * peaks[0.5]


def test_unreflected_pixels_are_the_surfaces_without_a_specular_point(panel_rooms):
    """Floors and ceilings always reflect straight back (the array stands over the floor, under the ceiling); a
    box's sides never do when the array is above its top; and the mask marks exactly the pixels of the surfaces
    that have no specular point."""
    cfg, out = panel_rooms
    pano = grids(cfg)[0]
    names = material_table(cfg)
    above_boxes = some = 0
    for arrays in SceneDataset(out, None).iter_shards():
        keep = np.arange(len(arrays["split"]))
        _, masks = silent_pixels(cfg, arrays, keep)
        for i, mask in zip(keep, masks):
            room, origin, rotation = scene_room(arrays, i, names)
            hit = surface_view(room, origin, rotation, pano.vectors, pano.shape)
            surfaces = room.surfaces(box_bottoms=True)
            labels = np.array([s.label for s in surfaces] + [-1])[hit]
            assert not mask[(labels == FLOOR) | (labels == CEILING) | (hit < 0)].any()
            for k, s in enumerate(surfaces):
                np.testing.assert_array_equal(mask[hit == k], not specular_point_on(s.corners, origin))
                if s.label == OBSTACLE and "side" in s.name and origin[2] > s.corners[:, 2].max() and (hit == k).any():
                    above_boxes += 1
                    assert mask[hit == k].all()
            some += int(mask.any())
    assert some >= 2 and above_boxes >= 1


def test_an_imported_recording_gets_no_echo_free_mask(dataset, tmp_path, small_cfg):
    """A recording stores no room, so what its surfaces return is unknown: no mask, and no such table."""
    from avperception_train.datagen.rosbag_io import export_bag, import_bag
    from avperception_train.learn.data import InMemoryScenes
    from avperception_train.learn.evaluate import evaluate

    export_bag(dataset, tmp_path / "bag", [0, 1], storage="sqlite3", encoding="F32LE")
    import_bag(tmp_path / "bag", tmp_path / "imported", array=small_cfg.array, show_progress=False)
    ds = InMemoryScenes(tmp_path / "imported", "train", echo_free=True)
    assert "echo_free" not in ds[0] and "echo_free" in InMemoryScenes(dataset, "train", echo_free=True)[0]
    assert "heard" not in evaluate(lambda batch: {"depth": batch["depth"].numpy()}, ds)
