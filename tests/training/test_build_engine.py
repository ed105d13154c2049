"""avperception-train build-engine: the fp16 / int8 graphs written into a bundle, recorded, valid for TensorRT,
within tolerances of fp32 on held-out data-engine rooms; a bundle without them loads as before."""

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("onnxconverter_common")
pytest.importorskip("onnxruntime")

from avperception.inference import load_bundle  # noqa: E402
from avperception.inference.bundle import graph_feed, sha256_file  # noqa: E402
from avperception.inference.graphs import bundle_graph, graph_problems  # noqa: E402
from avperception_train.cli import main  # noqa: E402
from avperception_train.learn.engine import build_graph, ort_session  # noqa: E402


@pytest.fixture(scope="module")
def scenes():
    """Robot_8mic data-engine scenes as the shipped student was trained on: 6 to calibrate, 3 held out."""
    from avperception_train.datagen.config import load_config
    from avperception_train.datagen.scene import generate_scene

    cfg = load_config(None, {"array": "robot_8mic", "seed": 7})
    return [generate_scene(cfg, i) for i in (0, 1, 2, 3, 4, 5, 900, 901, 902)]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    src = load_bundle("default")
    dst = tmp_path_factory.mktemp("b") / "bundle"
    shutil.copytree(src.path, dst, ignore=shutil.ignore_patterns("model.safetensors", "model.json"))
    meta = json.loads((dst / "bundle.json").read_text())
    meta["model"].pop("safetensors", None)
    (dst / "bundle.json").write_text(json.dumps(meta))
    return dst


def test_build_engine_fp16_cli(bundle_dir, capsys):
    before = sha256_file(bundle_dir / "model.onnx")
    assert main(["build-engine", str(bundle_dir), "--precision", "fp16"]) == 0
    out = capsys.readouterr().out
    assert "model_fp16.onnx" in out and "valid for TensorRT" in out
    b = load_bundle(bundle_dir)
    g = b.meta["graphs"]
    assert g["engine"] == "fp16" and g["fp16"]["sha256"] == sha256_file(bundle_dir / "model_fp16.onnx")
    assert g["fp16"]["from_onnx_sha256"] == before == sha256_file(b.onnx_path) and b.onnx_path.name == "model.onnx"
    assert graph_problems(bundle_graph(b, "fp16")) == []
    assert main(["build-engine", str(bundle_dir), "--precision", "fp16"]) == 0  # already there: kept
    assert "present and valid" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="needs --calib"):
        main(["build-engine", str(bundle_dir), "--precision", "int8", "--force"])


def _depth_absrel(pred, gt):
    m = np.isfinite(gt) & (gt > 0)
    return float(np.mean(np.abs(pred[m] - gt[m]) / gt[m]))


def test_reduced_graphs_within_tolerance_on_held_out_rooms(bundle_dir, scenes, monkeypatch):
    """fp16 and int8 against fp32 on 3 rooms the calibration never saw: depth AbsRel to the truth within 0.02
    (fp16) / 0.12 (int8) of fp32's, class labels and occupancy mostly the same as fp32's."""
    import avperception_train.learn.engine as E

    monkeypatch.setattr(E, "calibration_windows", lambda data, n=64: [s["audio"].astype(np.float32)
                                                                      for s in scenes[:6]])
    build_graph(bundle_dir, "fp16", log=lambda m: None)
    build_graph(bundle_dir, "int8", calib="scenes", log=lambda m: None)
    b = load_bundle(bundle_dir)
    assert b.meta["graphs"]["engine"] == "int8" and b.meta["graphs"]["int8"]["how"]["calibration_windows"] == 6
    held = scenes[6:]
    runs = {}
    for p in ("fp32", "fp16", "int8"):
        s = ort_session(bundle_graph(b, p))
        names = [o.name for o in s.get_outputs()]
        inputs = [i.name for i in s.get_inputs()]
        runs[p] = [dict(zip(names, s.run(None, graph_feed(inputs, sc["audio"].astype(np.float32)[None]))))
                   for sc in held]
    for p, depth_tol, agree in (("fp16", 0.02, 0.9), ("int8", 0.12, 0.9)):
        for sc, ref, got in zip(held, runs["fp32"], runs[p]):
            gt = sc["depth"]
            assert abs(_depth_absrel(got["depth"][0], gt) - _depth_absrel(ref["depth"][0], gt)) < depth_tol, p
            assert (got["semantic"].argmax(1) == ref["semantic"].argmax(1)).mean() >= agree, p
            assert ((got["voxels"] > 0) == (ref["voxels"] > 0)).mean() >= agree, p
