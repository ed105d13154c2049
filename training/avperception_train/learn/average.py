"""Averaging the weights of students ("model soup", Wortsman et al., ICML 2022).

Students fine-tuned from one start on different data stay in one basin of the loss; the weighted mean of their
weights is one network of the same shape, often better than each of them, and costs nothing at run time.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Sequence

import torch


def check_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """``weights`` for ``n`` students (None: equal), each > 0, scaled to sum to 1; ValueError otherwise."""
    if n < 2:
        raise ValueError(f"averaging needs at least two students, got {n}")
    w = [1.0] * n if weights is None else [float(v) for v in weights]
    if len(w) != n:
        raise ValueError(f"{len(w)} weights for {n} students")
    if not all(v > 0 for v in w):  # also refuses nan
        raise ValueError(f"every weight must be positive, got {w}")
    total = sum(w)
    return [v / total for v in w]


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]) -> dict:
    """``sum_i weights[i] * states[i]`` for every floating-point tensor (computed in float32, stored in the first
    state's dtype); integer tensors (BatchNorm's batch counters) are taken from the first state. The states must
    have the same names and shapes (ValueError naming the first that differs)."""
    first = states[0]
    for i, s in enumerate(states[1:], 1):
        if s.keys() != first.keys():
            diff = sorted(set(s) ^ set(first))
            raise ValueError(f"student {i + 1} has other tensors than the first: {diff[:5]}")
        for k, v in first.items():
            if s[k].shape != v.shape:
                raise ValueError(f"{k}: shape {tuple(s[k].shape)} in student {i + 1}, {tuple(v.shape)} in the first")
    out = {}
    for k, v in first.items():
        if v.is_floating_point():
            out[k] = sum(w * s[k].float() for w, s in zip(weights, states)).to(v.dtype)
        else:
            out[k] = v.clone()
    return out


def same_network(cfgs: Sequence) -> None:
    """Refuse (ValueError naming the fields) students whose configs differ in anything but the uncertainty's
    calibration: their weights do not mean the same thing."""
    plain = [asdict(replace(c, uncertainty_calibration=[])) for c in cfgs]
    for i, p in enumerate(plain[1:], 1):
        diff = sorted(k for k in p if p[k] != plain[0][k])
        if diff:
            raise ValueError(f"student {i + 1} is another network than the first (its {', '.join(diff)} differ); "
                             "only students of one config can be averaged")


def average_students(models: Sequence[torch.nn.Module], weights: Sequence[float] | None = None):
    """One ``AudioStudent`` with the weighted mean of the ``models``' weights (:func:`average_state_dicts`;
    ``weights`` None: equal), in float32 and eval mode. A calibration of the depth uncertainty fits the network it
    was fitted on, so the average has none: calibrate it again (``calibrate-uncertainty``)."""
    from avperception.models.student import AudioStudent

    w = check_weights(weights, len(models))
    same_network([m.cfg for m in models])
    cfg = replace(models[0].cfg, uncertainty_calibration=[])
    out = AudioStudent(cfg)
    out.load_state_dict(average_state_dicts([m.state_dict() for m in models], w))
    return out.eval()
