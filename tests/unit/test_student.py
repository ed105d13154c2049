"""The student network: shapes, ONNX parity, save/load, and that it can learn."""

import numpy as np
import pytest
import torch

from avperception.dsp.echo import beam_envelope, log_envelope, matched_iq, sweep
from avperception.models.student import AudioEncoder, AudioStudent, EchoFrontend, SAMBlock, StudentConfig


def tiny(**kw) -> StudentConfig:
    base = dict(num_mics=4, num_samples=1024, dim=32, depth=1, heads=2, latent_h=4, latent_w=8, sam_k=4,
                pano_h=16, pano_w=32, voxel_size=16, decoder_width=16)
    base.update(kw)
    return StudentConfig(**base)


def test_output_shapes_and_ranges():
    cfg = tiny()
    m = AudioStudent(cfg).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 4, 1024))
    assert out["depth"].shape == (2, 16, 32)
    assert out["semantic"].shape == (2, cfg.num_classes, 16, 32)
    assert out["voxels"].shape == (2, 16, 16, 16)
    assert out["energy"].shape == (2, 16, 32)
    assert out["latent"].shape == (2, 32, 32)
    assert torch.all(out["depth"] > 0) and torch.all(out["depth"] < cfg.max_depth)
    assert torch.all(out["energy"] >= 0)


def test_frontend_matches_numpy_stft_and_phase():
    cfg = tiny(nfft=128, hop=32)
    fe = EchoFrontend(cfg)
    x = np.random.default_rng(0).standard_normal((1, 4, 1024)).astype(np.float32)
    feats = fe(torch.from_numpy(x))[0].numpy()
    from avperception.dsp.stft import stft

    spec = stft(x[0], 128, 32, "hann")  # (M, F, T)
    # both are single-precision transforms: log power agrees to 0.5 % where a bin is near zero
    np.testing.assert_allclose(feats[:4], np.log(np.abs(spec) ** 2 + 1e-8), atol=5e-3, rtol=1e-4)
    rel = spec[1:] * np.conj(spec[:1])
    rel /= np.abs(rel)
    mag = np.abs(spec[1:] * spec[:1]) > 1e-2  # phase is meaningful where there is energy
    np.testing.assert_allclose(feats[4:7][mag], rel.real[mag], atol=2e-3)
    np.testing.assert_allclose(feats[7:10][mag], rel.imag[mag], atol=2e-3)


def test_sam_block_maps_any_token_count_to_the_layout():
    sam = SAMBlock(dim=16, positions=12, k=4, heads=2).eval()
    for tokens in (3, 17):
        audio = torch.randn(2, tokens, 16)
        with torch.no_grad():
            got = sam(audio)
            # the docstring's pooling: T_k(l) = max_j p_k(l) . W a_j, softmax over k, sum_k softmax_k(l) p_k(l)
            sim = torch.einsum("kvd,bld->bkvl", sam.embed, sam.w(audio)).amax(-1) / 16 ** 0.5
            pooled = (torch.softmax(sim, 1)[..., None] * sam.embed[None]).sum(1)
            want = sam.refine(pooled, audio)
        assert got.shape == (2, 12, 16)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_voxel_decoder_layers_are_the_3d_convolutions(bias):
    from avperception.models.student import SliceConv3d, UpConv3d, conv3d_k3, conv_transpose3d_x2

    torch.manual_seed(0)
    ref = torch.nn.ConvTranspose3d(5, 3, 4, stride=2, padding=1, bias=bias)
    x = torch.randn(2, 5, 3, 4, 6, requires_grad=True)
    got = conv_transpose3d_x2(x, ref.weight, ref.bias)
    want = ref(x)
    assert got.shape == (2, 3, 6, 8, 12)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(want)
    torch.testing.assert_close(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0], atol=1e-5, rtol=1e-5)
    # the decoder's last layer: a 3x3x3 convolution as 2-D convolutions of the depth slices
    ref3 = torch.nn.Conv3d(5, 2, 3, padding=1, bias=bias)
    got, want = conv3d_k3(x, ref3.weight, ref3.bias), ref3(x)
    assert got.shape == (2, 2, 3, 4, 6)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(want)
    torch.testing.assert_close(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0], atol=1e-5, rtol=1e-5)
    full = torch.nn.Conv3d(5, 2, 3, padding=1)
    sc = SliceConv3d(5, 2)
    sc.load_state_dict(full.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(sc(x), full(x), atol=1e-5, rtol=1e-5)
    # same parameters as nn.ConvTranspose3d: checkpoints written with it load unchanged
    up = UpConv3d(5, 3)
    up.load_state_dict(torch.nn.ConvTranspose3d(5, 3, 4, stride=2, padding=1).state_dict())
    with torch.no_grad():
        torch.testing.assert_close(up(x), torch.nn.functional.conv_transpose3d(x, up.weight, up.bias, 2, 1),
                                   atol=1e-5, rtol=1e-5)


def box_room_voxels(s: int, wall_lo: int, wall_hi: int, floor: int) -> torch.Tensor:
    """``(S, S, S)`` (z, y, x) occupancy of a square room: a floor at height ``floor`` and four walls from it up."""
    v = torch.zeros(s, s, s)
    v[floor] = 1.0
    for a in (wall_lo, wall_hi):
        v[floor:, a, :] = 1.0
        v[floor:, :, a] = 1.0
    return v


def test_plan_voxel_decoder_gives_heights_as_the_first_axis_and_fits_rooms():
    from avperception.models.student import PlanDecoder

    torch.manual_seed(0)
    cfg = tiny(voxel_decoder="plan")
    m = AudioStudent(cfg).eval()
    assert isinstance(m.voxels, PlanDecoder)
    dec = m.voxels
    with torch.no_grad():  # the last convolution's channels are the heights: one channel on is one level on
        head = dec.body[-1]
        head.weight.zero_()
        head.bias.fill_(-5.0)
        head.bias[3] = 5.0
        occ = dec(torch.randn(2, 32, 32)) > 0
    assert occ.shape == (2, 16, 16, 16) and occ[:, 3].all() and occ.sum() == 2 * 16 * 16
    # two latents -> two rooms (other walls, other floor): vertical walls and a floor plane are easy for it
    dec = PlanDecoder(32, 32, 16).train()
    z = torch.randn(2, 32, 32)
    target = torch.stack([box_room_voxels(16, 2, 13, 1), box_room_voxels(16, 5, 10, 4)])
    opt = torch.optim.Adam(dec.parameters(), lr=3e-3)
    for _ in range(150):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(dec(z), target, pos_weight=torch.tensor(4.0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = dec.eval()(z) > 0
    iou = (pred & (target > 0)).sum((1, 2, 3)) / (pred | (target > 0)).sum((1, 2, 3))
    assert torch.all(iou > 0.95), iou
    with pytest.raises(ValueError, match="voxel_decoder '2d' is not one of 3d, plan"):
        tiny(voxel_decoder="2d")
    with pytest.raises(ValueError, match="voxel size 12"):
        AudioStudent(tiny(voxel_decoder="plan", voxel_size=12))


def echo_cfg(**kw) -> StudentConfig:
    return tiny(**{"echo_hop": 4, "echo_patch": 64, "emitted": sweep(16000, 1000, 7000, 0.008).tolist(), **kw})


def test_the_students_audio_half_is_an_audio_encoder():
    """``AudioEncoder`` holds the token streams and the transformer, nothing else; the student's weights of those
    parts load into one as they are, and it then gives the student's tokens (and, through the SAM block, latent)."""
    m = AudioStudent(echo_cfg(echo_beams=8, array_positions=RING4, layout_beams=8, pano_w=32)).eval()
    enc = AudioEncoder(m.cfg).eval()
    assert {k.split(".")[0] for k in enc.state_dict()} <= {"frontend", "embed", "echo", "encoder"}
    enc.load_state_dict({k: v for k, v in m.state_dict().items() if k in enc.state_dict()})
    x = torch.randn(2, 4, 1024)
    with torch.no_grad():
        tokens = enc.tokens(x)
        assert tokens.shape == (2, m.cfg.num_tokens + m.cfg.num_echo_tokens, 32)
        assert torch.equal(tokens, m.tokens(x)) and torch.equal(m.sam(tokens), m(x)["latent"])


def test_echogram_tokens_join_the_sequence_and_config_is_checked():
    m = AudioStudent(echo_cfg()).eval()
    x = torch.randn(2, 4, 1024)
    assert m.echo(matched_iq(x, m.sweep)).shape == (2, 1024 // 64, 32)
    with torch.no_grad():
        assert m(x)["depth"].shape == (2, 16, 32)
    # an echo moved to another delay changes the echogram tokens (the STFT-only model has no such tokens)
    s = torch.from_numpy(sweep(16000, 1000, 7000, 0.008)).float()
    a, b = torch.zeros(1, 4, 1024), torch.zeros(1, 4, 1024)
    a[..., 300:428] += s
    b[..., 500:628] += s
    assert not torch.allclose(m.echo(matched_iq(a, m.sweep)), m.echo(matched_iq(b, m.sweep)))
    with pytest.raises(ValueError, match="emitted sweep"):
        tiny(echo_hop=4)
    with pytest.raises(ValueError, match="multiple of echo_hop"):
        echo_cfg(echo_hop=5)
    with pytest.raises(ValueError, match="needs echo_hop"):
        tiny(echo_beams=8, array_positions=RING4)
    with pytest.raises(ValueError, match="array_positions for 4 mics"):
        echo_cfg(echo_beams=8)


RING4 = [[0.05, 0.0, 0.0], [0.0, 0.05, 0.0], [-0.05, 0.0, 0.0], [0.0, -0.05, 0.0]]


def test_echo_beams_widen_the_echogram_tokens_and_see_direction():
    m = AudioStudent(echo_cfg(echo_beams=8, array_positions=RING4)).eval()
    assert m.echo.proj.in_channels == 4 + 8
    # the same echo from two directions a quarter turn apart
    s = sweep(16000, 1000, 7000, 0.008)
    f = np.fft.rfftfreq(2048, 1 / 16000)

    def echo_from(az):
        u = np.array([np.cos(az), np.sin(az), 0.0])
        lead = np.asarray(RING4) @ u / 343.0  # mic m hears it this much earlier
        spec = np.fft.rfft(np.pad(s, (400, 2048 - 400 - s.size)))[None] * np.exp(2j * np.pi * f * lead[:, None])
        return torch.from_numpy(np.fft.irfft(spec, 2048, axis=1)[:, :1024]).float()[None]

    a, b = matched_iq(echo_from(0.3), m.sweep), matched_iq(echo_from(0.3 + np.pi / 2), m.sweep)
    ea, eb = log_envelope(a, 4)[0, :, 100:110].amax(-1), log_envelope(b, 4)[0, :, 100:110].amax(-1)  # (M,)
    # a quarter turn on a square of mics only swaps which mic hears what
    np.testing.assert_allclose(np.sort(ea.numpy()), np.sort(eb.numpy()), atol=0.05)
    pa = beam_envelope(a, m.echo.beams, 4)[0, :, 100:110].amax(-1)  # (beams,)
    pb = beam_envelope(b, m.echo.beams, 4)[0, :, 100:110].amax(-1)
    assert int(pa.argmax()) != int(pb.argmax())
    # a quarter turn of the echo moves the loudest beam by a quarter of the 8 beams (grid.horizon runs
    # clockwise: azimuth falls with the index)
    assert (int(pb.argmax()) - int(pa.argmax())) % 8 == 6


@pytest.mark.parametrize("echo", ["off", "echogram", "beams", "layout", "layout planes", "plan voxels",
                                  "ordered heights"])
def test_onnx_export_matches_torch(tmp_path, echo):
    ort = pytest.importorskip("onnxruntime")
    cfg = {"off": tiny, "echogram": echo_cfg,
           "beams": lambda: echo_cfg(echo_beams=8, array_positions=RING4),
           "layout": lambda: echo_cfg(layout_beams=8, array_positions=RING4),
           "layout planes": lambda: echo_cfg(layout_beams=8, layout_planes=True, array_positions=RING4),
           "plan voxels": lambda: tiny(voxel_decoder="plan"),
           "ordered heights": lambda: echo_cfg(layout_beams=8, layout_planes=True, layout_heights="ordered",
                                               uncertainty=True, array_positions=RING4)}[echo]()
    m = AudioStudent(cfg).eval()
    x = torch.randn(1, 4, 1024)
    with torch.no_grad():
        ref = m(x)
    path = tmp_path / "student.onnx"
    torch.onnx.export(m, (x,), str(path), input_names=["audio"], output_names=list(ref), opset_version=17,
                      dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"audio": x.numpy()})
    for (name, r), g in zip(ref.items(), got):
        np.testing.assert_allclose(g, r.numpy(), atol=1e-4, rtol=1e-3, err_msg=name)


def test_save_load_round_trip_keeps_config_and_outputs(tmp_path):
    m = AudioStudent(tiny(array="robot_8mic")).eval()
    m.save(tmp_path / "model", {"note": "test"})
    assert (tmp_path / "model.json").exists()
    m2 = AudioStudent.load(tmp_path / "model")
    assert m2.cfg == m.cfg
    x = torch.randn(1, 4, 1024)
    with torch.no_grad():
        torch.testing.assert_close(m2(x)["depth"], m(x)["depth"])
    with pytest.raises(FileNotFoundError):
        AudioStudent.load(tmp_path / "missing")
    # a model saved by a newer version (a config field this one does not know) is refused by name
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = tmp_path / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    config = json.loads(meta["config"])
    save_file(load_file(str(path)), str(tmp_path / "newer.safetensors"),
              {**meta, "config": json.dumps({**config, "head_from_the_future": True})})
    with pytest.raises(ValueError, match="does not know .head_from_the_future.*newer"):
        AudioStudent.load(tmp_path / "newer")
    older = {k: v for k, v in config.items() if k != "uncertainty_calibration"}  # saved before a field existed
    save_file(load_file(str(path)), str(tmp_path / "older.safetensors"), {**meta, "config": json.dumps(older)})
    assert AudioStudent.load(tmp_path / "older").cfg == m.cfg


def test_student_learns_direction_dependent_depth():
    """Audio whose inter-channel delay encodes a 'wall side' -> a depth map that depends on it."""
    torch.manual_seed(0)
    cfg = tiny(num_mics=2, num_samples=512, nfft=64, hop=32)
    m = AudioStudent(cfg)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    rng = np.random.default_rng(0)

    def batch(n=16):
        side = rng.integers(0, 2, n)
        s = rng.standard_normal((n, 520)).astype(np.float32)
        a = np.stack([s[:, 4:516], np.where(side[:, None] == 1, s[:, 0:512], s[:, 8:520])], 1)
        depth = np.where(side[:, None, None] == 1, 2.0, 5.0) * np.ones((n, 16, 32), np.float32)
        return torch.from_numpy(a), torch.from_numpy(depth.astype(np.float32))

    for _ in range(60):
        a, d = batch()
        loss = torch.nn.functional.l1_loss(m(a)["depth"], d)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    a, d = batch(64)
    with torch.no_grad():
        err = torch.nn.functional.l1_loss(m(a)["depth"], d).item()
    assert err < 0.6  # a constant guess is off by 1.5 m on average


def test_small_and_large_variants():
    from avperception.models.student import large_config, small_config

    small, large = AudioStudent(small_config()), AudioStudent(large_config())
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(large) > 2 * count(small)
    with torch.no_grad():
        out = large.eval()(torch.zeros(1, 8, large.cfg.num_samples))
    assert out["depth"].shape == (1, large.cfg.pano_h, large.cfg.pano_w)


def test_student_benchmark_runs_and_onnx_matches_the_shipped_model():
    pytest.importorskip("onnxruntime")
    from avperception.bench.student import run

    res = run(threads=1, min_time=0.05)
    assert res["array"] == "robot_8mic" and res["input"] == [1, 8, 2048]
    ort_row = [r for r in res["rows"] if r["runtime"] == "onnxruntime"][0]
    assert ort_row["max_abs_diff_vs_torch"] < 1e-3 and ort_row["ms"] > 0


def test_layout_depth_renders_a_shoebox_room_like_ray_casting():
    from avperception.dsp.grid import equirectangular
    from avperception.models.student import layout_depth, panorama_elevations

    grid = equirectangular(-180, 180, -90, 90, 6.0)
    h, w = grid.shape
    # walls 1.2 m ahead (+x), 3 m behind, 0.8 m to the left (+y), 2.5 m to the right; floor 0.6 m below,
    # ceiling 1.9 m above the array
    planes = [((1, 0, 0), 1.2), ((-1, 0, 0), 3.0), ((0, 1, 0), 0.8), ((0, -1, 0), 2.5),
              ((0, 0, -1), 0.6), ((0, 0, 1), 1.9)]

    def cast(v):  # (n, 3) rays -> distance to the nearest plane in front
        t = np.full(len(v), np.inf)
        for n, d in planes:
            c = v @ np.asarray(n, float)
            t = np.minimum(t, np.where(c > 1e-9, d / np.where(c > 1e-9, c, 1.0), np.inf))
        return t

    az = np.deg2rad(grid.as_image(grid.azimuth_deg)[0])
    walls = cast(np.stack([np.cos(az), np.sin(az), np.zeros_like(az)], 1))  # horizontal, per column
    el = np.deg2rad(grid.as_image(grid.elevation_deg)[:, 0])
    np.testing.assert_allclose(panorama_elevations(h, -90, 90), el, atol=1e-12)  # the model's rows are the grid's
    got = layout_depth(torch.tensor(walls[None], dtype=torch.float32), torch.tensor([[0.6, 1.9]]),
                       torch.tensor(np.sin(el), dtype=torch.float32), torch.tensor(np.cos(el), dtype=torch.float32),
                       max_depth=10.0)[0].numpy()
    want = np.minimum(cast(grid.vectors).reshape(h, w), 10.0)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    np.testing.assert_allclose(got[-1], 0.6 / np.sin(-el[-1]), rtol=1e-5)  # the lowest row sees the floor


def test_beams_interpolate_to_panorama_columns_around_the_full_turn():
    from avperception.models.student import _circular_interp

    n, w = 8, 32
    beam_az = 180 - (np.arange(n) + 0.5) * 360 / n  # grid.horizon's order and cell centres
    col_az = 180 - (np.arange(w) + 0.5) * 360 / w
    m = _circular_interp(n, w)
    np.testing.assert_allclose(m.sum(0), 1.0, atol=1e-6)  # a constant stays constant
    got = np.cos(np.deg2rad(beam_az)) @ m
    np.testing.assert_allclose(got, np.cos(np.deg2rad(col_az)), atol=0.08)  # linear between 45 deg beams
    assert m[0, -1] > 0 and m[-1, 0] > 0  # the columns at +-180 deg mix the first and the last beam


def test_wall_planes_render_a_turned_shoebox_room_like_ray_casting():
    from avperception.models.student import _circular_interp, _plane_log_cos, plane_walls

    beams, w = 60, 120
    beam_az = np.deg2rad(180 - (np.arange(beams) + 0.5) * 360 / beams)
    col_az = np.deg2rad(180 - (np.arange(w) + 0.5) * 360 / w)
    rng = np.random.default_rng(0)
    errors = []
    for _ in range(50):
        yaw = rng.uniform(0, np.pi / 2)
        (x0, y0), (x1, y1) = -rng.uniform(0.5, 4, 2), rng.uniform(0.5, 4, 2)
        turn = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
        corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) @ turn.T
        support = (corners @ np.stack([np.cos(beam_az), np.sin(beam_az)])).max(0)  # how far the room reaches
        u = np.stack([np.cos(col_az), np.sin(col_az)], 1) @ turn  # each column's ray in the room's frame
        with np.errstate(divide="ignore"):
            want = np.minimum(np.abs(np.where(u[:, 0] > 0, x1, x0) / u[:, 0]),
                              np.abs(np.where(u[:, 1] > 0, y1, y0) / u[:, 1]))
        got = plane_walls(torch.tensor(support[None], dtype=torch.float32),
                          torch.from_numpy(_circular_interp(beams, 4 * beams)),
                          torch.from_numpy(_plane_log_cos(4 * beams, w)))[0].numpy()
        errors.append(np.abs(np.log(got / want)))
    errors = np.concatenate(errors)
    # 60 sampled normals against walls at any angle: a few percent, more in the corners
    assert np.median(errors) < 0.04 and np.percentile(errors, 90) < 0.12 and errors.max() < 0.35
    m = AudioStudent(echo_cfg(layout_beams=8, layout_planes=True, array_positions=RING4)).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 4, 1024) * 0.05)
    assert out["walls"].shape == (2, 32) and torch.all(out["walls"] > 0)


def test_layout_head_outputs_render_the_depth_and_config_is_checked():
    from avperception.models.student import layout_depth

    cfg = echo_cfg(layout_beams=8, array_positions=RING4)
    m = AudioStudent(cfg).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 4, 1024) * 0.05)
    assert out["walls"].shape == (2, 32) and out["heights"].shape == (2, 2)
    assert torch.all(out["walls"] > 0) and torch.all(out["heights"] > 0)
    assert torch.allclose(out["layout"], layout_depth(out["walls"], out["heights"], m.sin_el, m.cos_el, cfg.max_depth))
    # depth is the room except where the semantic head hears an obstacle: between the room and the decoder,
    # and never beyond the room (an obstacle stands in front of what it hides)
    audio = torch.randn(2, 4, 1024) * 0.05
    with torch.no_grad():
        m.pano.head.bias[0] = 10.0  # the decoder's depth at max_depth, behind every wall: the room alone
        out = m(audio)
        assert torch.allclose(out["depth"], out["layout"])
        m.pano.head.bias[0] = -10.0  # the decoder's depth near 0: a blend, weighted by the obstacle probability
        out = m(audio)
        dec = m.decode(out["latent"])["depth"]
    p = torch.softmax(out["semantic"], 1)[:, cfg.obstacle_class]
    assert torch.all(dec < out["layout"]) and torch.allclose(out["depth"], out["layout"] + p * (dec - out["layout"]))
    with pytest.raises(ValueError, match="needs echo_hop"):
        tiny(layout_beams=8, array_positions=RING4)
    with pytest.raises(ValueError, match="must divide pano_w"):
        echo_cfg(layout_beams=5, array_positions=RING4)
    with pytest.raises(ValueError, match="array_positions for 4 mics"):
        echo_cfg(layout_beams=8)


@pytest.mark.parametrize("heights", ["ordered", "direct"])
def test_a_known_array_height_is_rendered_as_the_floor(tmp_path, heights):
    """Given the array's height, the floor is that far below it in every row under the horizon that the floor
    bounds; with ordered heights the ceiling is the heard distance farther from it (the heard order's doubt still
    reaches the uncertainty head); a height of 0 (unknown) changes nothing; the ONNX graph's ``array_height`` input
    does the same as torch."""
    from avperception.models.export import export_onnx, output_names
    from avperception.models.student import layout_depth

    m = AudioStudent(echo_cfg(layout_beams=8, layout_planes=True, layout_heights=heights, uncertainty=True,
                              array_positions=RING4)).eval()
    audio = torch.randn(2, 4, 1024) * 0.05
    with torch.no_grad():
        heard = m(audio)
        known = m(audio, torch.tensor([0.0, 1.7]))
    for k in ("depth", "heights", "depth_uncertainty", "layout"):  # scene 0: unknown, as heard
        torch.testing.assert_close(known[k][0], heard[k][0], msg=k)
    assert float(known["heights"][1, 0]) == pytest.approx(1.7)
    if heights == "ordered":
        pair = heard["height_pair"][1]
        farther = pair[1] if abs(np.log(float(pair[0]) / 1.7)) <= abs(np.log(float(pair[1]) / 1.7)) else pair[0]
        assert float(known["heights"][1, 1]) == pytest.approx(float(farther))
        torch.testing.assert_close(known["floor_nearer"], heard["floor_nearer"])  # its doubt still goes on
    else:
        assert float(known["heights"][1, 1]) == pytest.approx(float(heard["heights"][1, 1]))
    room = layout_depth(known["walls"], known["heights"], m.sin_el, m.cos_el, m.cfg.max_depth)[1]
    torch.testing.assert_close(known["layout"][1], room)
    below = m.sin_el < -0.3  # rows well under the horizon: bounded by the floor wherever it is nearer than a wall
    floor = 1.7 / -m.sin_el[below]
    assert torch.all(room[below] <= floor[:, None] + 1e-4)
    assert torch.any(torch.isclose(room[below], floor[:, None].expand_as(room[below]), rtol=1e-5))
    path, err = export_onnx(m, tmp_path / "m.onnx", outputs=output_names(m), fixed=True, array_height=True)
    assert err < 1e-4  # both unknown and 1.5 m up
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["audio", "array_height"]
    got = dict(zip(output_names(m), sess.run(None, {"audio": audio[1:].numpy(), "array_height": np.array([1.7],
                                                                                                      np.float32)})))
    np.testing.assert_allclose(got["depth"][0], known["depth"][1].numpy(), atol=1e-4)
    np.testing.assert_allclose(got["heights"][0], known["heights"][1].numpy(), atol=1e-5)
