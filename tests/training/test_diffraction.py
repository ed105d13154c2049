"""Edge diffraction in the data engine: a box's edge and a wall's outer corner send the sweep back from where the
image-source model returns nothing, at the edge's distance, weaker than a face seen square on, and the echo of a face
fades out smoothly as the array moves past the face's end instead of vanishing at once."""

from __future__ import annotations

import numpy as np

from avperception_train.datagen import config_from_dict
from avperception_train.datagen.config import load_config
from avperception_train.datagen.acoustics import distance_gain, echo_profile, sweep
from avperception_train.datagen.diffraction import _clear, diffracting_edges, edge_diffraction
from avperception_train.datagen.geometry import Box, RoomGeometry
from avperception_train.datagen.groundtruth import RayCaster
from avperception_train.datagen.scene import SceneSpec, sample_scene, simulate_audio

HARD = "hard_surface"
PANEL = "panel_fabric_covered_6pcf"
FS, C = 16000, 343.0


def _cfg(diffraction: bool):
    return config_from_dict({"array": "respeaker_4mic", "active": {"speaker_position": [0.0, 0.0, 0.0]},
                             "passive": {"num_sources": [0, 0]}, "acoustics": {"edge_diffraction": diffraction}})


def _box_room(material=HARD, boxes=True):
    """A 6 x 5 m shoebox; one 1 m high box over x 1-3, y 1.3-2.3 (its south side at y = 1.3)."""
    floor = np.array([[0, 0], [6, 0], [6, 5], [0, 5]], float)
    box = [Box((2.0, 1.8), (2.0, 1.0), 1.0, 0.0, material)] if boxes else []
    return RoomGeometry(floor, 3.0, wall_materials=[HARD] * 4, floor_material=HARD, ceiling_material=HARD, boxes=box)


def _echo(room, xy, height, diffraction, max_order=1):
    """The echo profile (mean over the microphones) of the array at ``xy``, ``height`` facing +y, direct sound out."""
    cfg = _cfg(diffraction)
    arr = cfg.array_geometry()
    a = cfg.active
    emitted = sweep(FS, a.f_start_hz, a.f_end_hz, a.duration_s, a.sweep, a.fade)
    spec = SceneSpec(0, 0, 0, room, np.asarray(xy, float), height, np.pi / 2, True, 0.0, -80.0, [], seed=1)
    full = simulate_audio(cfg, spec, arr.positions, noise=False, max_order=max_order)
    direct = simulate_audio(_cfg(False), spec, arr.positions, noise=False, max_order=0)
    return echo_profile(full - direct, emitted).mean(axis=0)


def test_the_edges_that_diffract_are_box_edges_and_outer_corners():
    """A box has four upright and four top edges, each a right-angled solid (270 degrees of air); an L-shaped room
    adds its one outer corner; a plain shoebox has none."""
    edges = diffracting_edges(_box_room())
    assert sorted(e.name for e in edges) == sorted([f"box0_upright{i}" for i in range(4)] +
                                                   [f"box0_top{i}" for i in range(4)])
    assert all(np.isclose(e.angle, 1.5 * np.pi) for e in edges)
    assert diffracting_edges(_box_room(boxes=False)) == []
    ell = RoomGeometry(np.array([[0, 0], [5, 0], [5, 2], [2, 2], [2, 5], [0, 5]], float), 2.8)
    (corner,) = diffracting_edges(ell)
    assert np.allclose(corner.start[:2], [2, 2]) and np.isclose(corner.length, 2.8)
    assert np.isclose(corner.angle, 1.5 * np.pi)
    # the air lies at angles (0, 270 degrees) from the first face, the notch outside the room beyond
    _, r, theta = corner.cylindrical(np.array([[1.5, 1.5, 1.0], [3.0, 1.0, 1.0], [3.0, 3.0, 1.0]]))
    assert np.allclose(r, [np.sqrt(0.5), np.sqrt(2), np.sqrt(2)])
    assert 0 < theta[0] < corner.angle and 0 < theta[1] < corner.angle and theta[2] > corner.angle


def test_an_edge_hidden_behind_a_box_or_a_wall_is_not_heard():
    room = _box_room()
    origin = np.array([3.5, 0.5, 1.2])
    ends = np.array([[2.0, 2.3, 0.5],    # the box's far side, low: through the box
                     [3.5, 2.3, 0.5],    # beside the box
                     [2.0, 2.3, 1.5]])   # the far side's height, high: over the box's top
    np.testing.assert_array_equal(_clear(room, origin, ends), [False, True, True])
    ell = RoomGeometry(np.array([[0, 0], [5, 0], [5, 2], [2, 2], [2, 5], [0, 5]], float), 2.8)
    np.testing.assert_array_equal(_clear(ell, np.array([4.0, 1.0, 1.0]), np.array([[1.0, 4.0, 1.0],
                                                                                   [1.0, 1.5, 1.0]])), [False, True])


def test_the_edges_hidden_are_those_the_ground_truth_ray_caster_finds_hidden():
    """Over the edges of wide rooms, the quick visibility test gives what the ground truth's exact ray caster gives
    for the segment from the speaker to each element (the first hit no nearer than the element)."""
    cfg = load_config(distribution="wide")
    mics = cfg.array_geometry().positions
    seen = hidden = 0
    for i in range(12):
        spec = sample_scene(cfg, i, mics)
        source = spec.to_world(np.asarray(cfg.active.speaker_position, dtype=np.float64))
        pts = np.vstack([e.start + np.linspace(0.01, e.length - 0.01, 40)[:, None] * e.direction
                         for e in diffracting_edges(spec.room)] or [np.zeros((0, 3))])
        if not len(pts):
            continue
        d = pts - source
        length = np.linalg.norm(d, axis=1)
        t, _ = RayCaster.for_room(spec.room, "numpy").cast(source, d / length[:, None])
        clear = _clear(spec.room, source, pts)
        np.testing.assert_array_equal(clear, t >= length - 2e-3)
        seen, hidden = seen + int(clear.sum()), hidden + int((~clear).sum())
    assert seen > 100 and hidden > 100  # both kinds were tested


def test_a_box_edge_returns_an_echo_where_no_face_reflects_straight_back():
    """The array 0.8 m in front of the box's south side and 0.4 m past its east end: no face has a point that sends
    the sweep straight back. With diffraction an echo comes back from the upright edge at its distance, between a
    thirtieth and a half of the echo of the same side seen square on from as far."""
    room = _box_room()
    edge = np.hypot(0.4, 0.8)
    at = int(round(2 * edge / C * FS))
    off = _echo(room, [3.4, 0.5], 0.5, False)
    on = _echo(room, [3.4, 0.5], 0.5, True)
    heard = on - off  # the diffraction alone
    assert abs(int(np.argmax(heard)) - at) <= 2
    square = _echo(room, [2.0, 1.3 - edge], 0.5, False)
    ratio = heard.max() / square[at - 3: at + 4].max()
    assert 1 / 30 < ratio < 0.5, ratio
    # without diffraction nothing comes back from there
    assert off[at - 3: at + 4].max() < 0.5 * heard.max()


def test_the_echo_of_a_side_fades_out_past_its_end_instead_of_vanishing():
    """The array 0.8 m in front of the south side, 5 cm inside or 5 cm past its east end (x = 3). The image-source
    model's echo drops to almost nothing across that end; with the edge's diffraction it changes far less."""
    room = _box_room()
    at = int(round(2 * 0.8 / C * FS))
    near = slice(at - 3, at + 4)
    peaks = {d: [_echo(room, [x, 0.5], 0.5, d)[near].max() for x in (2.95, 3.05)] for d in (False, True)}
    assert peaks[False][1] < 0.15 * peaks[False][0]
    assert peaks[True][1] > 0.3 * peaks[True][0]


def test_absorbing_edges_and_rooms_without_edges_add_nothing():
    """An absorber panel's edges send nothing back; a shoebox without boxes sounds the same with and without the
    option; diffraction adds to every microphone within the recording."""
    mics = np.array([[3.4, 0.5, 0.5], [3.45, 0.5, 0.5]])
    g = distance_gain(FS, C)
    assert np.abs(edge_diffraction(_box_room(), mics[0], mics, FS, C, gain=g)).max() > 0
    assert not np.any(edge_diffraction(_box_room(PANEL), mics[0], mics, FS, C, gain=g, reflection=lambda m: 0.0))
    empty = _box_room(boxes=False)
    np.testing.assert_array_equal(_echo(empty, [3.4, 0.5], 0.5, True, max_order=None),
                                  _echo(empty, [3.4, 0.5], 0.5, False, max_order=None))
