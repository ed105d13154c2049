"""Losses: dense prediction, feature alignment (triplet on cosine similarity), symmetric InfoNCE."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from avperception.eval.safety import CLOSE_M
from avperception.models.student import laplace_nll

from ..datagen.geometry import IGNORE, OBSTACLE
from .config import DISTANCE_LOSSES, LossSpec


def distance_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "log",
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Error between predicted and true distances (m), both ``(N,)``; ``weight (N,)`` each pair's share (None:
    equal).

    ``log``: L1 plus L1 of log distance; both are least at the conditional median, whatever the audio leaves
    in doubt. ``relative``: mean ``|p - g| / g``, the AbsRel metric itself, least at the median weighted by
    ``1 / g``: where the audio leaves a wall as likely at 3 m as at 6 m, it answers 3 m (AbsRel 0.25 on
    average; 6 m costs 0.5).
    """
    p, g = pred.clamp_min(1e-3), target.clamp_min(1e-3)
    if kind == "log":
        err = (pred - target).abs() + (torch.log(p) - torch.log(g)).abs()
    elif kind == "relative":
        err = (pred - target).abs() / g
    else:
        raise ValueError(f"distance loss must be one of {DISTANCE_LOSSES}, got {kind!r}")
    if weight is None:
        return err.mean()
    return (err * weight).sum() / weight.sum().clamp_min(1e-12)


def near_overshoot_loss(pred: torch.Tensor, target: torch.Tensor, near_m: float = CLOSE_M,
                        tolerance: float = 1.25) -> torch.Tensor | None:
    """Mean ``relu(p / g - tolerance)`` over the pixels whose true distance ``g`` is under ``near_m``; ``pred`` and
    ``target`` ``(N,)`` metres. None when no pixel is that near.

    The relative loss (:func:`distance_loss`) makes a near wall reported far costly, but pulls every distance the
    audio leaves in doubt nearer, far walls included. This term costs nothing within ``tolerance`` (delta_1's)
    and nothing on pixels farther than ``near_m``, so only what may be a near wall is pulled in: a wall at 0.3 m
    reported at 2 m costs 5.4, one at 3 m reported at 6 m nothing.
    """
    near = target < near_m
    if not near.any():
        return None
    return F.relu(pred[near] / target[near].clamp_min(1e-3) - tolerance).mean()


def prediction_loss(out: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                    weights: dict[str, float] | None = None, distance: str = "log"
                    ) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum of the per-output losses against ``target`` (ground truth or a teacher's pseudo ground truth).

    depth: :func:`distance_loss` (``distance``) on valid pixels (NaN = unknown); semantic: cross-entropy
    (``IGNORE`` skipped; soft targets ``(B, C, H, W)`` allowed); voxels: BCE with logits
    (float targets in [0, 1], NaN = unknown); energy: MSE (NaN = unknown); layout (a student with a
    layout head, against :func:`~avperception_train.learn.data.room_layout` targets): :func:`distance_loss`
    over the known walls and heights, of log distance only for ``log`` (with ordered heights, the nearer and the
    farther of floor and ceiling against the true ones sorted, and ``height_order``: the cross-entropy of the
    logit that the floor is the nearer, weighted as the layout unless given); uncertainty (a student with a depth
    uncertainty head): :func:`~avperception.models.student.laplace_nll` of log depth on the valid pixels, the
    depth detached; obstacle_depth (a student with a layout head, weight 0 unless given): :func:`distance_loss`
    of the decoder's own depth on the obstacle pixels; ``depth_obstacle`` weighs the obstacle pixels (hard labels)
    in the depth loss (0: left out, for the layout head alone); near_overshoot (weight 0 unless given):
    :func:`near_overshoot_loss` of the depth; ``obstacle_semantic`` weighs the obstacle class in the
    semantic cross-entropy (hard labels). An output whose targets are all
    unknown in the batch adds nothing (and has no entry in the scalars).
    """
    w = LossSpec().weights()
    w.update(weights or {})
    w.setdefault("height_order", w["layout"])
    parts: dict[str, torch.Tensor] = {}
    g = target.get("depth")
    valid = torch.isfinite(g) if g is not None else None  # the pixels whose true depth is known
    if g is not None and w["depth"]:
        share = None
        if w["depth_obstacle"] != 1.0 and "semantic" in target and not target["semantic"].dtype.is_floating_point:
            share = torch.where(target["semantic"] == OBSTACLE, w["depth_obstacle"], 1.0)[valid]
        if valid.any() and (share is None or share.sum() > 0):
            parts["depth"] = distance_loss(out["depth"][valid], g[valid], distance, share)
    if g is not None and w["near_overshoot"]:
        over = near_overshoot_loss(out["depth"][valid], g[valid])
        if over is not None:
            parts["near_overshoot"] = over
    if "depth_log_scale" in out and g is not None and w["uncertainty"]:
        if valid.any():
            parts["uncertainty"] = laplace_nll(out["depth"][valid], g[valid], out["depth_log_scale"][valid])
    if "semantic" in target and w["semantic"]:
        t = target["semantic"]
        if t.dtype.is_floating_point and t.dim() == 4:
            parts["semantic"] = -(t * F.log_softmax(out["semantic"], 1)).sum(1).mean()
        elif (t != IGNORE).any():
            cw = None
            if w["obstacle_semantic"] != 1.0:
                cw = torch.ones(out["semantic"].shape[1], device=t.device)
                cw[OBSTACLE] = w["obstacle_semantic"]
            parts["semantic"] = F.cross_entropy(out["semantic"], t.long(), weight=cw, ignore_index=IGNORE)
    if "obstacle_depth" in out and g is not None and "semantic" in target and w["obstacle_depth"]:
        t = target["semantic"]
        if not t.dtype.is_floating_point:
            m = (t == OBSTACLE) & valid
            if m.any():
                parts["obstacle_depth"] = distance_loss(out["obstacle_depth"][m], g[m], distance)
    if "voxels" in target and w["voxels"]:
        t = target["voxels"].float()
        known = torch.isfinite(t)
        if known.any():
            t = t[known]
            pos = t.mean().clamp(0.01, 0.5)
            parts["voxels"] = F.binary_cross_entropy_with_logits(out["voxels"][known], t, pos_weight=(1 - pos) / pos)
    if "walls" in out and "walls" in target and w["layout"]:
        th = target["heights"]
        if "height_pair" in out:  # ordered heights: the nearer and the farther, and which of them is the floor
            both = torch.isfinite(th).all(dim=1)
            pair = torch.sort(torch.where(both[:, None], th, torch.zeros_like(th)), dim=1).values
            th = torch.where(both[:, None], pair, torch.full_like(th, float("nan")))
            if both.any():
                parts["height_order"] = F.binary_cross_entropy_with_logits(
                    out["floor_nearer"][both], (target["heights"][both, 0] <= target["heights"][both, 1]).float())
        got = torch.cat([out["walls"], out.get("height_pair", out["heights"])], dim=1)
        want = torch.cat([target["walls"], th], dim=1)
        known = torch.isfinite(want)
        if known.any():
            got, want = got[known].clamp_min(1e-3), want[known].clamp_min(1e-3)
            parts["layout"] = (F.l1_loss(torch.log(got), torch.log(want)) if distance == "log"
                               else distance_loss(got, want, distance))
    if "energy" in target and w["energy"]:
        known = torch.isfinite(target["energy"])
        if known.any():
            parts["energy"] = F.mse_loss(out["energy"][known], target["energy"][known])
    if not parts:  # nothing known in this batch: a zero that still backpropagates
        return next(v for v in out.values() if torch.is_tensor(v)).sum() * 0.0, {}
    total = sum(w[k] * v for k, v in parts.items())
    return total, {k: float(v.detach()) for k, v in parts.items()}


def triplet_feature_loss(student: torch.Tensor, teacher: torch.Tensor, margin: float = 0.3,
                         negatives: int = 16) -> torch.Tensor:
    """Triplet margin loss on cosine similarity between aligned feature maps ``(B, V, D)``.

    For every teacher feature ``v(j)`` the positive is the student feature at the
    same position ``j`` (the SAM block put it there), the negatives are student
    features at random other positions of the same sample:
    ``max(0, margin - cos(v_j, s_j) + cos(v_j, s_neg))``.
    """
    s = F.normalize(student, dim=-1)
    t = F.normalize(teacher.detach(), dim=-1)
    b, v, _ = s.shape
    pos = (s * t).sum(-1)  # (B, V)
    idx = torch.randint(1, v, (b, v, negatives), device=s.device)
    idx = (torch.arange(v, device=s.device)[None, :, None] + idx) % v  # never the position itself
    neg = torch.einsum("bvd,bvnd->bvn", t, s[torch.arange(b, device=s.device)[:, None, None], idx])
    return F.relu(margin - pos[..., None] + neg).mean()


def info_nce(audio: torch.Tensor, visual: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE with distance ``||a - b||_2`` between unit-norm features ``(B, D)``.

    ``logits = -d(a_i, v_j) / temperature``; audio->visual and visual->audio cross-entropies averaged.
    """
    a = F.normalize(audio, dim=-1)
    v = F.normalize(visual.detach(), dim=-1)
    logits = -torch.cdist(a, v) / temperature
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
