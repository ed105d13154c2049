"""The depth uncertainty head trains alone on the frozen shipped student (training/configs/uncertainty_cpu.yaml):
a fresh head is added, every other weight and BatchNorm statistic stays as shipped, and the loss is its NLL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from avperception.models import default_model
from avperception.models.student import AudioStudent
from avperception_train.learn.config import load_train_config
from avperception_train.learn.train import load_stage, train

CONFIG = Path(__file__).resolve().parents[2] / "training" / "configs" / "uncertainty_cpu.yaml"


@pytest.fixture(scope="module")
def ring_data(tmp_path_factory):
    """8 scenes in 4 rooms heard by the shipped student's array (robot_8mic), none of them its training rooms."""
    from avperception_train.datagen import config_from_dict, run_datagen

    out = tmp_path_factory.mktemp("ring")
    cfg = config_from_dict({"seed": 11, "array": "robot_8mic", "scenes_per_shard": 4, "room": {"scenes_per_room": 2},
                            "split": {"train": 0.5, "val": 0.25, "test": 0.25}})
    run_datagen(cfg, out, 8, workers=1, show_progress=False, log=None)
    return out


def test_uncertainty_head_trains_alone_on_the_shipped_model(ring_data, tmp_path):
    from dataclasses import replace

    shipped = AudioStudent.load(default_model()).float()
    # the network the shipped head was trained on (without a head, no calibration of it)
    bare = AudioStudent(replace(shipped.cfg, uncertainty=False, uncertainty_calibration=[]))
    bare.load_state_dict({k: v for k, v in shipped.state_dict().items() if not k.startswith("uncertainty.")})
    bare.save(tmp_path / "bare")
    cfg = load_train_config(CONFIG, data=str(ring_data), out=str(tmp_path / "run"),
                            init=str(tmp_path / "bare.safetensors"), epochs=2, batch_size=2, warmup_steps=1)
    assert cfg.train_only == ("uncertainty",) and cfg.model.uncertainty
    best = train(cfg, progress=False)
    model, sc = load_stage(best, "distill", torch.device("cpu"))
    assert sc.uncertainty and model.uncertainty is not None  # a fresh head
    before = bare.state_dict()
    state = model.state_dict()
    assert set(state) - set(before) == {k for k in state if k.startswith("uncertainty.")}
    for k, v in before.items():  # weights and BatchNorm statistics as they were
        assert torch.equal(state[k].float(), v), k
    fresh = AudioStudent(sc).uncertainty.state_dict()
    assert any(not torch.equal(state[f"uncertainty.{k}"], v) for k, v in fresh.items())  # the head learnt
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(abs(r["val_loss"]) < 10 for r in log)  # the NLL alone (the other losses are off)


def test_the_shipped_bundles_uncertainty_ranks_its_errors_on_rooms_it_never_heard(ring_data):
    """The shipped bundle as the runtime runs it (ONNX Runtime): leaving out its most uncertain pixels first
    lowers the error of the rest far faster than a random order does (AUSE under half the random one's)."""
    import numpy as np

    from avperception.inference import OnnxRuntimeBackend, decode, load_bundle
    from avperception_train.learn.data import InMemoryScenes
    from avperception_train.learn.evaluate import evaluate

    b = load_bundle("default")
    backend = OnnxRuntimeBackend(b)

    def run(batch):
        outs = [decode(b, backend.run(a)) for a in batch["audio"].numpy()]
        return {"depth": np.stack([o.depth for o in outs]), "depth_uncertainty": np.stack([o.depth_uncertainty
                                                                                           for o in outs])}

    scenes = InMemoryScenes(ring_data, "train")
    u = evaluate(run, scenes)["uncertainty"]
    assert u["scenes"] == len(scenes)
    for metric in ("abs_rel", "rmse"):
        assert 0 <= u[metric]["ause"] < 0.5 * u[metric]["ause_random"], metric
