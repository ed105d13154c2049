"""Averaging students' weights (a model soup): the weighted mean of every tensor, one network of the same shape,
refused for students of different networks; the command writes a student that the rest of the toolchain reads."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch

from avperception.models.student import AudioStudent, StudentConfig


def tiny(**kw) -> StudentConfig:
    base = dict(num_mics=4, num_samples=1024, dim=32, depth=1, heads=2, latent_h=4, latent_w=8, sam_k=4,
                pano_h=16, pano_w=32, voxel_size=16, decoder_width=16, uncertainty=True)
    base.update(kw)
    return StudentConfig(**base)


def student(seed: int, **kw) -> AudioStudent:
    torch.manual_seed(seed)
    m = AudioStudent(tiny(**kw))
    with torch.no_grad():  # BatchNorm statistics that differ between the students, as after training
        for name, buf in m.named_buffers():
            if buf.is_floating_point() and "running" in name:
                buf.add_(torch.rand_like(buf))
            elif name.endswith("num_batches_tracked"):
                buf.fill_(10 * seed + 10)  # 10 and 20: their mean would be told apart from the first's
    return m.eval()


def test_the_average_is_the_weighted_mean_of_every_tensor():
    from avperception_train.learn.average import average_students

    a, b = student(0), student(1)
    soup = average_students([a, b], [1.0, 3.0])  # scaled to 0.25, 0.75
    sa, sb = a.state_dict(), b.state_dict()
    floats = 0
    for k, v in soup.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.25 * sa[k] + 0.75 * sb[k])
            floats += not torch.equal(sa[k], sb[k])
        else:
            assert torch.equal(v, sa[k])  # batch counters: the first student's
    assert floats > 20  # the students really differ
    x = torch.randn(2, 4, 1024)
    with torch.no_grad():
        same = average_students([a, a, a])(x)
        ref = a(x)
    for k in ("depth", "semantic", "depth_uncertainty"):
        torch.testing.assert_close(same[k], ref[k], rtol=1e-5, atol=1e-5)


def test_students_of_different_networks_or_bad_weights_are_refused():
    from avperception_train.learn.average import average_students

    a = student(0)
    with pytest.raises(ValueError, match="dim"):
        average_students([a, student(1, dim=48)])
    with pytest.raises(ValueError, match="uncertainty"):
        average_students([a, student(1, uncertainty=False)])
    with pytest.raises(ValueError, match="at least two"):
        average_students([a])
    with pytest.raises(ValueError, match="2 weights for 3"):
        average_students([a, a, a], [1.0, 1.0])
    for w in ([1.0, 0.0], [1.0, -1.0], [1.0, float("nan")]):
        with pytest.raises(ValueError, match="positive"):
            average_students([a, a], w)


def test_average_weights_writes_a_student_that_names_its_sources(tmp_path, capsys):
    """A checkpoint and an exported, calibrated student: the command writes their mean, which ``load_student``
    reads; its calibration is dropped (it fitted the other network) and its training config names both sources,
    their weights and their own configs."""
    from avperception_train.cli import main
    from avperception_train.learn.commands import load_student

    a, b = student(0), student(1)
    ck = tmp_path / "run" / "best.pt"
    ck.parent.mkdir()
    torch.save({"model": a.state_dict(), "student_config": asdict(a.cfg), "train_config": {"seed": 3},
                "metrics": {}}, ck)
    b.set_uncertainty_calibration([[0.1, 0.3], [-0.2, 0.5]])
    b.save(tmp_path / "b", {"train_config": {"seed": 4}})
    out = tmp_path / "soup"
    assert main(["average-weights", str(ck), str(tmp_path / "b.safetensors"), "--weights", "3,1",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "0.750 x" in printed and "0.250 x" in printed and "calibration dropped" in printed
    assert "calibrate-uncertainty" in printed
    soup = load_student(str(out) + ".safetensors")
    assert soup.cfg.uncertainty_calibration == [] and not soup.uncertainty.calibrated
    sa, sb = a.state_dict(), b.state_dict()
    for k, v in soup.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.75 * sa[k] + 0.25 * sb[k])
    parts = json.loads((tmp_path / "soup.json").read_text())["train_config"]["average_of"]
    assert [(p["weight"], p["config"]) for p in parts] == [(0.75, {"seed": 3}), (0.25, {"seed": 4})]
    assert parts[0]["source"] == str(ck)
    assert main(["average-weights", str(ck), "--out", str(tmp_path / "one")]) == 2  # an error, not a copy
    assert "at least two students" in capsys.readouterr().err and not (tmp_path / "one.safetensors").exists()
