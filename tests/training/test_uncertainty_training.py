"""The depth uncertainty head trains alone on the frozen shipped student (training/configs/uncertainty_cpu.yaml):
a fresh head is added, every other weight and BatchNorm statistic stays as shipped, and the loss is its NLL."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from avperception.models import default_model
from avperception.models.student import AudioStudent
from avperception_train.learn.config import load_train_config
from avperception_train.learn.train import load_stage, train

CONFIG = Path(__file__).resolve().parents[2] / "training" / "configs" / "uncertainty_cpu.yaml"


def test_uncertainty_head_trains_alone_on_the_shipped_model(dataset, tmp_path):
    cfg = load_train_config(CONFIG, data=str(dataset), out=str(tmp_path / "run"), init="default", epochs=2,
                            batch_size=2, warmup_steps=1)
    assert cfg.train_only == ("uncertainty",) and cfg.model.uncertainty
    best = train(cfg, progress=False)
    model, sc = load_stage(best, "distill", torch.device("cpu"))
    assert sc.uncertainty and model.uncertainty is not None
    shipped = AudioStudent.load(default_model()).float().state_dict()
    state = model.state_dict()
    assert set(state) - set(shipped) == {k for k in state if k.startswith("uncertainty.")}
    for k, v in shipped.items():  # weights and BatchNorm statistics as shipped
        assert torch.equal(state[k].float(), v), k
    fresh = AudioStudent(sc).uncertainty.state_dict()
    assert any(not torch.equal(state[f"uncertainty.{k}"], v) for k, v in fresh.items())  # the head learnt
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(abs(r["val_loss"]) < 10 for r in log)  # the NLL alone (the other losses are off)
