"""Score students, teachers and baselines on held-out test rooms with the papers' metrics.

``evaluate(predictor, dataset)`` runs any callable that maps a batch to a dict
of numpy predictions (``depth`` m, ``semantic`` labels, ``voxels`` bool,
``energy``, optionally ``depth_uncertainty`` m) and returns averaged metrics, with
the depth's safety metrics (:mod:`avperception.eval.safety`: false-far rate, near-obstacle
recall, range bands, obstacle delta_1) and, for an uncertainty, its sparsification
(AUSE); ``results_tables`` compares several.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from avperception.bench.common import markdown_table as _table
from avperception.config import SonarConfig
from avperception.eval.metrics import confusion, depth_metrics, segmentation_metrics
from avperception.eval.safety import (kept_counts, kept_metrics, merge_counts, range_band_names, safety_counts,
                                      safety_metrics, sparsification)
from avperception.sonar.products import confident_depth, depth_near_bound

from ..datagen.acoustics import ECHO_FREE_ABSORPTION
from ..datagen.geometry import CEILING, FLOOR
from .metrics import depth_error_by_label, energy_map_metrics, voxel_metrics

Predictor = Callable[[dict], dict]
ARRAY_HEIGHT_EDGES_M = (0.6, 1.2)  # bands of the array's height above the floor (the standard scenes: 0.3-1.2 m)


def run_student(model: torch.nn.Module, batch: dict, device, known_height: bool = False) -> dict:
    """A student's outputs on ``batch``'s audio; with ``known_height`` it is given each scene's array height
    above the floor (:func:`scene_array_heights`)."""
    audio = batch["audio"].to(device)
    if known_height:
        return model(audio, torch.from_numpy(scene_array_heights(batch)).to(device))
    return model(audio)


def torch_predictor(model: torch.nn.Module, kind: str = "student", device: str = "cpu",
                    voxel_threshold: float = 0.5, view: np.ndarray | None = None,
                    known_height: bool = False) -> Predictor:
    """Wrap a student (audio in), a teacher (geometry in; ``view (H, W)`` bool: it sees only the geometry
    there, as a teacher trained on a camera's view), a manifold pair (ATNet, VQ-VAE) or the manifold
    student's network trained end to end (``manifold-e2e``, depth only). ``known_height``: the student is given
    each scene's true array height above the floor (:func:`scene_array_heights`), as a robot that knows where
    its array is mounted gives it."""
    if known_height and kind != "student":
        raise ValueError(f"only a student takes the array's height, not a {kind}")
    from .train import masked_view

    dev = torch.device(device)

    @torch.no_grad()
    def run(batch: dict) -> dict:
        if kind == "teacher":
            v = None if view is None else torch.from_numpy(view).to(dev).expand_as(batch["depth"])
            out = model(*masked_view(batch["depth"].to(dev), batch["semantic"].to(dev), v))
        elif kind == "manifold":
            atnet, vqvae = model
            return {"depth": vqvae.decode(atnet(batch["audio"].to(dev))).float().cpu().numpy()}
        elif kind == "manifold-e2e":
            return {"depth": model(batch["audio"].to(dev)).float().cpu().numpy()}
        else:
            out = run_student(model, batch, dev, known_height)
        res = {"depth": out["depth"].float().cpu().numpy(),
               "semantic": out["semantic"].argmax(1).cpu().numpy().astype(np.uint8),
               "voxels": (torch.sigmoid(out["voxels"].float()) > voxel_threshold).cpu().numpy()}
        if kind != "teacher":
            res["energy"] = out["energy"].float().cpu().numpy()
        if "depth_uncertainty" in out:
            res["depth_uncertainty"] = out["depth_uncertainty"].float().cpu().numpy()
        if "heights" in out:
            res["heights"] = out["heights"].float().cpu().numpy()
        if kind == "student" and "walls" in out and "walls" in batch and "heights" in batch:
            res["layout_oracle"] = layout_oracle(model, out, batch["walls"].to(dev), batch["heights"].to(dev))
        return res

    return run


LAYOUT_ORACLES = (("heights", "the true floor and ceiling"), ("walls", "the true walls"),
                  ("layout", "both: the true room"))


def layout_oracle(model: torch.nn.Module, out: dict, walls: torch.Tensor, heights: torch.Tensor
                  ) -> dict[str, np.ndarray]:
    """What a student's depth would be with the room's true layout in place of its layout head's: for each of
    :data:`LAYOUT_ORACLES`, the depth (``(B, H, W)`` m) rendered with the true ``heights (B, 2)`` (floor below,
    ceiling above the array), the true ``walls (B, W)`` (each column's horizontal distance), or both
    (:func:`~avperception_train.learn.data.room_layout`; where the truth has none, NaN, the head's stays), the
    decoder's obstacles over it as in the student. How far each lifts the depth is what that part of the layout
    head costs."""
    from avperception.models.student import layout_depth, with_obstacles

    cfg = model.cfg
    heard_w, heard_h = out["walls"].float(), out["heights"].float()
    true_w = torch.where(torch.isfinite(walls), walls.float(), heard_w)
    true_h = torch.where(torch.isfinite(heights), heights.float(), heard_h)
    res = {}
    for name, w, h in (("heights", heard_w, true_h), ("walls", true_w, heard_h), ("layout", true_w, true_h)):
        room = layout_depth(w, h, model.sin_el.float(), model.cos_el.float(), cfg.max_depth)
        res[name] = with_obstacles(room, out["semantic"].float(), out["obstacle_depth"].float(),
                                   cfg.obstacle_class).cpu().numpy()
    return res


def scene_array_heights(batch: dict) -> np.ndarray:
    """``(B,)`` float32: each scene's array height above the floor (m), the floor's distance of the scenes'
    ``heights`` (:func:`~avperception_train.learn.data.room_layout`); ``ValueError`` where a scene has none."""
    if "heights" not in batch:
        raise ValueError("the scenes have no floor distance (`heights`) to give as the array's height")
    h = np.asarray(batch["heights"], dtype=np.float32)[:, 0]
    if not np.all(np.isfinite(h) & (h > 0)):
        raise ValueError("some scenes have no floor below the array to give as its height")
    return h


def layout_figure(model: torch.nn.Module, dataset, path: str | Path, scenes: int = 6, device: str = "cpu") -> Path:
    """Top views of ``scenes`` scenes spread over ``dataset``: the walls the ground truth shows
    (:func:`~avperception_train.learn.data.room_layout`) against those a student's layout head hears, the
    array at the origin, floor and ceiling distances in each title. Writes ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .data import room_layout

    if getattr(model, "layout", None) is None:
        raise ValueError("the model has no layout head (model.layout_beams 0): nothing to draw")
    idx = np.unique(np.linspace(0, len(dataset) - 1, scenes).round().astype(int))
    items = [dataset.item(int(i)) for i in idx]
    with torch.no_grad():
        out = model.eval().to(device)(torch.from_numpy(np.stack([it["audio"] for it in items])).to(device))
    walls, heights = out["walls"].float().cpu().numpy(), out["heights"].float().cpu().numpy()
    w = walls.shape[1]
    az = np.deg2rad(180.0 - (np.arange(w + 1) % w + 0.5) * 360.0 / w)  # panorama columns, closed loop
    cols = min(3, len(items))
    rows = -(-len(items) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
    for ax, it, pw, ph, i in zip(axes.ravel(), items, walls, heights, idx):
        tw, th = room_layout(it["depth"], it["semantic"], dataset.info.el_range_deg)
        tw, pw = np.append(tw, tw[0]), np.append(pw, pw[0])
        ax.plot(tw * np.cos(az), tw * np.sin(az), "k-", lw=2, label="ground truth (hidden walls: gaps)")
        ax.plot(pw * np.cos(az), pw * np.sin(az), "-", color="tab:orange", lw=1.5, label="layout head")
        ax.plot([0], [0], "o", color="tab:blue", ms=5)
        ax.arrow(0, 0, 0.4, 0, color="tab:blue", width=0.02)  # the array's +x
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.set_title(f"scene {i}: floor {th[0]:.2f} / {ph[0]:.2f} m, ceiling {th[1]:.2f} / {ph[1]:.2f} m\n"
                     "(true / heard)", fontsize=9)
    for ax in axes.ravel()[len(items):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=8, loc="lower left")
    fig.suptitle("Room layout from the echoes, top view (m, array frame)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _score_without(acc: dict, pred: np.ndarray, gt: np.ndarray, labels: np.ndarray, left_out: np.ndarray) -> None:
    """Add one scene's depth scores without the pixels ``left_out`` to ``acc`` (``rows``, ``safety`` counts, and
    ``quiet``: the known pixels left out, those of them within 1.25x, the known pixels)."""
    left_out = left_out & np.isfinite(gt)
    kept = np.where(left_out, np.nan, gt)
    acc["rows"].append(depth_metrics(pred, kept))
    acc["safety"] = merge_counts(acc["safety"], safety_counts(pred, kept, labels))
    counts = depth_error_by_label(pred, gt, left_out.astype(np.int64), 2)
    acc["quiet"] += (counts[1, 0], counts[1, 2], counts[:, 0].sum())


def evaluate(predict: Predictor, dataset, num_classes: int = 4, voxel_size_m: float = 2.5 / 32,
             batch_size: int = 32, progress: bool = False, sparsification_steps: int = 20,
             near_bound_quantile: float | Sequence[float] | None = None,
             confident_max_rel_std: float | Sequence[float] | None = None) -> dict:
    """Average metrics over ``dataset`` (items: dicts of tensors as the data module yields).

    With depth, ``safety`` pools :func:`avperception.eval.safety.safety_counts` over the scenes that have depth scores;
    with ``depth_uncertainty`` (m) too, ``uncertainty`` averages each scene's sparsification
    (:func:`avperception.eval.safety.sparsification`, ``sparsification_steps`` fractions): for AbsRel ranked by the
    relative uncertainty ``depth_uncertainty / depth``, for RMSE by the uncertainty in metres; AUSE against the
    oracle, and a random order's for reference; and ``uncertainty["near_bound"]`` scores the near bound the node
    publishes (:func:`avperception.sonar.products.depth_near_bound` at ``near_bound_quantile``, None: the node's
    default) as a depth: its false-far rate, near recall and false-near rate, delta_1 and AbsRel (what its caution
    costs), and ``below``, the share of known pixels whose truth is nearer than it (the quantile, if the uncertainty
    is calibrated); given several quantiles, ``near_bound`` is the first's and ``near_bound_by_quantile`` lists each
    one's; ``uncertainty["confident"]`` scores the depth the node publishes where it is sure
    (:func:`avperception.sonar.products.confident_depth` at ``confident_max_rel_std``, None: the node's default;
    :func:`avperception.eval.safety.kept_metrics`): the share of the known pixels it keeps, their delta_1, AbsRel
    and false-far rate; given several thresholds, ``confident`` is the first's and ``confident_by_threshold`` lists
    each one's. With the items' ``heights`` (floor below and ceiling above the array,
    :func:`~avperception_train.learn.data.room_layout`), ``depth_by_array_height`` pools the depth per band of the
    array's height above the floor (:data:`ARRAY_HEIGHT_EDGES_M`): a flat array cannot tell the floor's echo from
    the ceiling's, so the bands where the ceiling can be the nearer show what that costs. With the items'
    ``echo_free`` and ``unreflected`` (``InMemoryScenes(..., echo_free=True)``: pixels
    whose surface returns no echo of the sweep, and those whose surface has no point that reflects it straight back),
    ``heard`` scores the depth again without the first, ``reflected`` without either (AbsRel and delta_1 per scene,
    then averaged; the safety rates pooled), each with the share of the known pixels it leaves out and the delta_1
    pooled on those (``left_out_share``, ``left_out_delta1``). With a predictor's ``layout_oracle`` (a student with a
    layout head, :func:`layout_oracle`), ``layout_oracle`` scores each of its depths as ``depth`` is scored (AbsRel,
    RMSE and delta_1 per scene, then averaged): what the depth would be with the true floor and ceiling, the true
    walls, or both.
    """
    from torch.utils.data import DataLoader

    depth_rows, vox_rows, energy_rows = [], [], []
    safety, sparse = None, {"abs_rel": [], "rmse": []}
    if near_bound_quantile is None:
        near_bound_quantile = SonarConfig().near_bound_quantile
    quantiles = [float(q) for q in np.atleast_1d(near_bound_quantile) if q > 0]
    # the near bound at each quantile: safety counts, the kept-depth counts (its delta_1 and AbsRel), and the
    # pixels whose truth lies below it with the known pixels
    bounds = {q: {"safety": None, "scores": None, "below": np.zeros(2)} for q in quantiles}
    if confident_max_rel_std is None:
        confident_max_rel_std = SonarConfig().confident_max_rel_std
    thresholds = [float(r) for r in np.atleast_1d(confident_max_rel_std) if r > 0]
    kept: dict[float, dict | None] = dict.fromkeys(thresholds)  # the confident depth's pixel counts per threshold
    # the depth without the pixels no first-order echo comes from: per scene rows, pooled safety counts, and the
    # pixels left out, those of them within 1.25x, the known pixels
    silent = {name: {"rows": [], "safety": None, "quiet": np.zeros(3)} for name in ("heard", "reflected")}
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    by_class = np.zeros((num_classes, 3))
    by_height = np.zeros((len(ARRAY_HEIGHT_EDGES_M) + 1, num_classes + 1, 3))  # band, class (last: all), counts
    height_scenes = np.zeros((len(ARRAY_HEIGHT_EDGES_M) + 1, 2))  # band: scenes, those with the ceiling nearer
    # band: scenes with a predicted floor and ceiling, floor within 1.25x, ceiling within 1.25x, the nearer one right
    height_heads = np.zeros((len(ARRAY_HEIGHT_EDGES_M) + 1, 4))
    oracle_rows: dict[str, list] = {name: [] for name, _ in LAYOUT_ORACLES}  # the depth with the true layout
    from .train import _bar

    loader = _bar(DataLoader(dataset, batch_size, num_workers=0), "evaluate", progress)
    for batch in loader:
        pred = predict(batch)
        gt_depth = batch["depth"].numpy()
        for i in range(gt_depth.shape[0]):
            if "depth" in pred:
                depth_rows.append(depth_metrics(pred["depth"][i], gt_depth[i]))
                if np.isfinite(depth_rows[-1]["abs_rel"]):  # the same scenes as the averages
                    labels = batch["semantic"][i].numpy()
                    errs = depth_error_by_label(pred["depth"][i], gt_depth[i], labels, num_classes)
                    by_class += errs
                    h = batch["heights"][i].numpy() if "heights" in batch else np.full(2, np.nan)
                    if np.isfinite(h[0]):
                        band = int(np.searchsorted(ARRAY_HEIGHT_EDGES_M, h[0], side="right"))
                        by_height[band, :num_classes] += errs
                        by_height[band, num_classes] += errs.sum(axis=0)
                        height_scenes[band] += (1, bool(h[1] < h[0]))
                        if "heights" in pred and np.isfinite(h[1]):
                            p = np.maximum(pred["heights"][i], 1e-3)
                            ok = np.maximum(p / h, h / p) < 1.25
                            height_heads[band] += (1, ok[0], ok[1], (p[0] <= p[1]) == (h[0] <= h[1]))
                    safety = merge_counts(safety, safety_counts(pred["depth"][i], gt_depth[i], labels))
                    for name, d in pred.get("layout_oracle", {}).items():
                        oracle_rows[name].append(depth_metrics(d[i], gt_depth[i]))
                    if "echo_free" in batch:
                        quiet = batch["echo_free"][i].numpy()
                        for name, left_out in (("heard", quiet), ("reflected", quiet | batch["unreflected"][i].numpy())):
                            _score_without(silent[name], pred["depth"][i], gt_depth[i], labels, left_out)
                    if "depth_uncertainty" in pred:
                        u, d = pred["depth_uncertainty"][i], pred["depth"][i]
                        for metric, rank in (("abs_rel", u / np.maximum(d, 1e-3)), ("rmse", u)):
                            sparse[metric].append(sparsification(d, gt_depth[i], rank, metric,
                                                                 sparsification_steps))
                        for q, acc in bounds.items():
                            bound = depth_near_bound(d, u, q)
                            acc["safety"] = merge_counts(acc["safety"], safety_counts(bound, gt_depth[i], labels))
                            acc["scores"] = merge_counts(acc["scores"], kept_counts(bound, gt_depth[i]))
                            known = np.isfinite(gt_depth[i]) & np.isfinite(bound)
                            acc["below"] += ((gt_depth[i][known] < bound[known]).sum(), known.sum())
                        for r in thresholds:
                            kept[r] = merge_counts(kept[r], kept_counts(confident_depth(d, u, r), gt_depth[i]))
            if "semantic" in pred:
                conf += confusion(pred["semantic"][i], batch["semantic"][i].numpy(), num_classes)
            if "voxels" in pred:
                vox_rows.append(voxel_metrics(pred["voxels"][i], batch["voxels"][i].numpy() > 0.5, voxel_size_m,
                                              f1_tau=voxel_size_m))
            if "energy" in pred:
                g = batch["energy"][i].numpy()
                if g.max() > 0:
                    energy_rows.append(energy_map_metrics(pred["energy"][i], g))
    out: dict = {"samples": len(depth_rows), "scenes": len(dataset)}
    if depth_rows:
        # a scene without known depth, or with a non-finite prediction, has no depth scores: the averages leave it
        # out, and how many they keep is kept (the table says so when they are not all)
        out["depth"] = {k: _mean_defined([r[k] for r in depth_rows]) for k in depth_rows[0]}
        out["depth"]["scenes"] = int(np.isfinite([r["abs_rel"] for r in depth_rows]).sum())
    if safety is not None:
        out["safety"] = safety_metrics(safety)
    if any(oracle_rows.values()):
        out["layout_oracle"] = {name: {k: _mean_defined([r[k] for r in rows]) for k in ("abs_rel", "rmse", "delta1")}
                                for name, rows in oracle_rows.items() if rows}
    for name, acc in silent.items():
        if acc["safety"] is not None:
            hs, quiet = safety_metrics(acc["safety"]), acc["quiet"]
            out[name] = {"scenes": int(np.isfinite([r["abs_rel"] for r in acc["rows"]]).sum()),
                         "left_out_share": float(quiet[0] / quiet[2]) if quiet[2] else float("nan"),
                         "left_out_delta1": float(quiet[1] / quiet[0]) if quiet[0] else float("nan"),
                         **{k: _mean_defined([r[k] for r in acc["rows"]]) for k in ("abs_rel", "rmse", "delta1")},
                         **{k: hs[k] for k in ("false_far_rate", "near_recall", "obstacle_delta1")}}
    if sparse["abs_rel"]:
        out["uncertainty"] = {"scenes": len(sparse["abs_rel"])}
        for metric, rows in sparse.items():
            out["uncertainty"][metric] = {
                "ause": _mean_defined([r["ause"] for r in rows]),
                "ause_random": _mean_defined([r["ause_random"] for r in rows]),
                "fractions": rows[0]["fractions"],
                **{c: np.nanmean([r[c] for r in rows], axis=0).tolist() for c in ("model", "oracle", "random")}}
        rows = [{"quantile": q, **_bound_metrics(acc)} for q, acc in bounds.items() if acc["safety"] is not None]
        if rows:
            out["uncertainty"]["near_bound"] = rows[0]
            if len(rows) > 1:
                out["uncertainty"]["near_bound_by_quantile"] = rows
        if thresholds:
            rows = [{"max_rel_std": r, **kept_metrics(kept[r])} for r in thresholds]
            out["uncertainty"]["confident"] = rows[0]
            if len(rows) > 1:
                out["uncertainty"]["confident_by_threshold"] = rows
    if by_class[:, 0].sum():
        # pooled over all test pixels of each ground-truth class: where the depth error comes from
        names = class_names(num_classes)
        out["depth_by_class"] = {names[c]: {"share": float(n / by_class[:, 0].sum()), "abs_rel": float(a / n),
                                            "delta1": float(d / n)}
                                 for c, (n, a, d) in enumerate(by_class) if n}
    if height_scenes[:, 0].sum():
        names = class_names(num_classes)
        out["depth_by_array_height"] = {}
        for band, label in enumerate(range_band_names(ARRAY_HEIGHT_EDGES_M)):
            n = by_height[band, :, 0]
            if not height_scenes[band, 0]:
                continue
            row = {"scenes": int(height_scenes[band, 0]), "ceiling_nearer": int(height_scenes[band, 1]),
                   "abs_rel": float(by_height[band, -1, 1] / n[-1]), "delta1": float(by_height[band, -1, 2] / n[-1])}
            for c in (FLOOR, CEILING):
                row[f"{names[c]}_delta1"] = float(by_height[band, c, 2] / n[c]) if n[c] else float("nan")
            k = height_heads[band]
            if k[0]:  # the layout head's own floor and ceiling distances, scene by scene
                row.update(heads_scenes=int(k[0]), floor_ok=float(k[1] / k[0]), ceiling_ok=float(k[2] / k[0]),
                           order_right=float(k[3] / k[0]))
            out["depth_by_array_height"][label] = row
    if conf.sum():
        out["semantic"] = segmentation_metrics(conf)
    if vox_rows:
        # Chamfer-L1 is undefined where exactly one of prediction and truth is empty: it averages the other scenes,
        # and how many those are is kept (the table says so when they are not all)
        out["voxels"] = {k: _mean_defined([r[k] for r in vox_rows]) for k in vox_rows[0]}
        out["voxels"].update(scenes=len(vox_rows),
                             chamfer_scenes=int(np.isfinite([r["chamfer_l1"] for r in vox_rows]).sum()))
    if energy_rows:  # a scene without a sound source has no energy map to find
        out["energy"] = {k: float(np.mean([r[k] for r in energy_rows])) for k in energy_rows[0]}
        out["energy"]["scenes"] = len(energy_rows)
    return out


def _mean_defined(values: list[float]) -> float:
    """Mean of the finite values; NaN (without numpy's empty-slice warning) when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


DEPTH_COLUMNS = [
    ("depth", "abs_rel", "AbsRel ↓"), ("depth", "sq_rel", "SqRel ↓"), ("depth", "rmse", "RMSE m ↓"),
    ("depth", "rmse_log", "RMSE-log ↓"), ("depth", "mae", "MAE m ↓"),
    ("depth", "delta1", "δ1 ↑"), ("depth", "delta2", "δ2 ↑"), ("depth", "delta3", "δ3 ↑"),
]
SCENE_COLUMNS = [
    ("semantic", "pacc", "pAcc ↑"), ("semantic", "macc", "mAcc ↑"), ("semantic", "miou", "mIoU ↑"),
    ("semantic", "layout_iou", "layout IoU ↑"),
    ("voxels", "iou", "voxel IoU ↑"), ("voxels", "chamfer_l1", "Chamfer-L1 m ↓"), ("voxels", "f1", "F1 ↑"),
    ("energy", "iou", "energy IoU ↑"), ("energy", "auc", "energy AUC ↑"),
]


SAFETY_COLUMNS = [
    ("safety", "false_far_rate", "false far ↓ (< 0.5 m seen > 1 m)"),
    ("safety", "near_recall", "near recall ↑ (< 1 m seen < 1.5 m)"),
    ("safety", "false_near_rate", "false near ↓ (> 2 m seen < 1 m)"),
    ("safety", "obstacle_delta1", "obstacle δ1 ↑"),
]
UNCERTAINTY_COLUMNS = [
    ("abs_rel", "ause", "AUSE AbsRel ↓"), ("abs_rel", "ause_random", "random AbsRel"),
    ("rmse", "ause", "AUSE RMSE m ↓"), ("rmse", "ause_random", "random RMSE m"),
    ("near_bound", "false_far_rate", "near bound: false far ↓"), ("near_bound", "near_recall", "near recall ↑"),
    ("near_bound", "false_near_rate", "false near ↓"),
    ("near_bound", "below", "truth below it"),
    ("confident", "kept", "confident depth: kept"), ("confident", "delta1", "its δ1 ↑"),
    ("confident", "abs_rel", "its AbsRel ↓"), ("confident", "false_far_rate", "its false far ↓"),
]


def _bound_metrics(acc: dict) -> dict:
    """The near bound's scores from :func:`evaluate`'s pooled counts for one quantile."""
    b, k, below = safety_metrics(acc["safety"]), kept_metrics(acc["scores"]), acc["below"]
    return {"false_far_rate": b["false_far_rate"], "near_recall": b["near_recall"],
            "false_near_rate": b["false_near_rate"], "delta1": k["delta1"], "abs_rel": k["abs_rel"],
            "below": float(below[0] / below[1]) if below[1] else float("nan")}


def safety_table(results: dict[str, dict]) -> str:
    """False-far rate, near-obstacle recall, false-near rate and obstacle delta_1, then AbsRel / delta_1 per band
    of true range (pooled over pixels; the share of pixels in brackets), one row per method; '' if none has depth."""
    rows = {n: r for n, r in results.items() if r.get("safety")}
    if not rows:
        return ""
    bands = range_band_names()
    first = next(iter(rows.values()))["safety"]["by_range"]
    head = ["method"] + [c[2] for c in SAFETY_COLUMNS]
    for b in bands:
        share = f" ({100 * first[b]['share']:.0f} %)" if b in first else ""
        head += [f"{b}{share} AbsRel ↓", f"{b} δ1 ↑"]
    body = []
    for name, r in rows.items():
        s = r["safety"]
        row = [name] + [_cell(s.get(key)) for _, key, _ in SAFETY_COLUMNS]
        for b in bands:
            v = s["by_range"].get(b)
            row += [_cell(v["abs_rel"]), _cell(v["delta1"])] if v else ["–", "–"]
        body.append(row)
    return _table(head, body)


HEARD_ROWS = (("heard", "the absorbers left out"),
              ("reflected", "also the surfaces with no point that reflects the sweep back"))


def heard_table(results: dict[str, dict]) -> str:
    """The depth on the surfaces that return an echo (``heard`` and ``reflected`` of :func:`evaluate`), two rows per
    method (:data:`HEARD_ROWS`), beside the share of pixels left out and the delta_1 there; '' if none has it."""
    body = [[f"{name}: {what}", _cell(r[key]["left_out_share"]),
             *(_cell(r[key][k]) for k in ("abs_rel", "rmse", "delta1", "false_far_rate", "near_recall",
                                          "obstacle_delta1")),
             _cell(r[key]["left_out_delta1"])]
            for name, r in results.items() for key, what in HEARD_ROWS if r.get(key)]
    if not body:
        return ""
    head = ["method", "pixels left out", "AbsRel ↓", "RMSE m ↓", "δ1 ↑", "false far ↓", "near recall ↑",
            "obstacle δ1 ↑", "δ1 on those left out"]
    return _table(head, body)


def array_height_table(results: dict[str, dict]) -> str:
    """Depth delta_1 (pooled over pixels), and on the floor's and the ceiling's pixels, per band of the array's
    height above the floor, one row per method; the scene counts (and how many have the ceiling nearer than the
    floor) in the header; '' if none has it. Below it, for the methods with a layout head, the share of scenes
    whose floor and whose ceiling distance are within 1.25x, and whose nearer one is right."""
    rows = {n: r["depth_by_array_height"] for n, r in results.items() if r.get("depth_by_array_height")}
    if not rows:
        return ""
    first = next(iter(rows.values()))
    head = ["method"]
    for b, v in first.items():
        what = f"array {b} ({v['scenes']} scenes, {v['ceiling_nearer']} with the ceiling nearer)"
        head += [f"{what} δ1 ↑", "floor δ1 ↑", "ceiling δ1 ↑"]
    body = []
    for name, r in rows.items():
        row = [name]
        for b in first:
            v = r.get(b)
            row += [_cell(v["delta1"]), _cell(v["floor_delta1"]), _cell(v["ceiling_delta1"])] if v else ["–"] * 3
        body.append(row)
    text = _table(head, body)
    heads = {n: r for n, r in rows.items() if any("order_right" in v for v in r.values())}
    if heads:
        head = ["method"]
        for b in first:
            head += [f"array {b}: floor within 1.25x ↑", "ceiling within 1.25x ↑", "nearer one right ↑"]
        body = [[name] + sum(([_cell(v.get("floor_ok")), _cell(v.get("ceiling_ok")), _cell(v.get("order_right"))]
                              for v in (r.get(b, {}) for b in first)), []) for name, r in heads.items()]
        text += "\n\nThe layout head's floor and ceiling distances (share of scenes):\n\n" + _table(head, body)
    return text


def layout_oracle_table(results: dict[str, dict]) -> str:
    """Each student's depth beside the same with the true floor and ceiling, the true walls and both in place of
    its layout head's (``layout_oracle`` of :func:`evaluate`), AbsRel / delta_1; '' if none has them."""
    rows = {n: r for n, r in results.items() if r.get("layout_oracle") and r.get("depth")}
    if not rows:
        return ""
    head = ["method", "as heard: AbsRel ↓", "δ1 ↑"]
    for _, what in LAYOUT_ORACLES:
        head += [f"with {what}: AbsRel ↓", "δ1 ↑"]
    body = []
    for name, r in rows.items():
        row = [name, _cell(r["depth"]["abs_rel"]), _cell(r["depth"]["delta1"])]
        for k, _ in LAYOUT_ORACLES:
            v = r["layout_oracle"].get(k, {})
            row += [_cell(v.get("abs_rel")), _cell(v.get("delta1"))]
        body.append(row)
    return _table(head, body)


def uncertainty_table(results: dict[str, dict]) -> str:
    """AUSE of each method's depth uncertainty for AbsRel and RMSE, beside a random order's (the area between
    the random curve and the oracle's); '' if no method has an uncertainty."""
    rows = {n: r["uncertainty"] for n, r in results.items() if r.get("uncertainty")}
    if not rows:
        return ""
    body = [[name] + [_cell(u.get(m, {}).get(k)) for m, k, _ in UNCERTAINTY_COLUMNS] + [str(u["scenes"])]
            for name, u in rows.items()]
    return _table(["method"] + [c[2] for c in UNCERTAINTY_COLUMNS] + ["scenes"], body)


def _by_setting_table(results: dict[str, dict], key: str, setting: tuple[str, str],
                      columns: tuple[tuple[str, str], ...]) -> str:
    """One row per method and setting from the list ``uncertainty[key]`` of each method's results: the method, the
    ``setting`` ``(field, header)`` and the ``columns`` ``(field, header)``; '' if no method has the list."""
    rows = {n: r["uncertainty"][key] for n, r in results.items() if r.get("uncertainty", {}).get(key)}
    if not rows:
        return ""
    body = [[name, f"{c[setting[0]]:g}"] + [_cell(c[k]) for k, _ in columns] for name, cs in rows.items() for c in cs]
    return _table(["method", setting[1]] + [h for _, h in columns], body)


def confident_table(results: dict[str, dict]) -> str:
    """The confident depth at each threshold ``evaluate`` was given (``confident_by_threshold``): the share of the
    known pixels it keeps, delta_1 and AbsRel over them, the false far over the near pixels it keeps and the share
    of the near pixels it keeps, one row per method and threshold; '' if no method has several."""
    return _by_setting_table(results, "confident_by_threshold", ("max_rel_std", "σ at most (of the range)"),
                             (("kept", "kept"), ("delta1", "δ1 ↑"), ("abs_rel", "AbsRel ↓"),
                              ("false_far_rate", "false far ↓"), ("near_kept", "near pixels kept")))


def near_bound_table(results: dict[str, dict]) -> str:
    """The near bound at each quantile ``evaluate`` was given (``near_bound_by_quantile``) scored as a depth: its
    false far, near recall and false near, delta_1 and AbsRel, and the share of the known pixels whose truth lies
    below it, one row per method and quantile; '' if no method has several."""
    return _by_setting_table(results, "near_bound_by_quantile", ("quantile", "probability"),
                             (("false_far_rate", "false far ↓"), ("near_recall", "near recall ↑"),
                              ("false_near_rate", "false near ↓"), ("delta1", "δ1"), ("abs_rel", "AbsRel"),
                              ("below", "truth below it")))


def _cell(v) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"


def class_names(num_classes: int) -> list[str]:
    from avperception_train.datagen.geometry import CLASS_NAMES

    return list(CLASS_NAMES[:num_classes]) + [f"class {c}" for c in range(len(CLASS_NAMES), num_classes)]


def iou_by_class_table(results: dict[str, dict]) -> str:
    """Segmentation IoU per class, one row per method; '' if none has a segmentation. A class as rare as the
    obstacles can sit near zero while the mean IoU looks sound."""
    rows = {n: r["semantic"]["iou_per_class"] for n, r in results.items() if r.get("semantic")}
    if not rows:
        return ""
    names = class_names(max(len(v) for v in rows.values()))
    body = [[name] + [_cell(x) for x in v] + ["–"] * (len(names) - len(v)) for name, v in rows.items()]
    return _table(["method"] + [f"{c} IoU ↑" for c in names], body)


def depth_by_class_table(results: dict[str, dict]) -> str:
    """Depth AbsRel / delta_1 per ground-truth class (pooled over pixels), one row per method; '' if none has it."""
    rows = {n: r["depth_by_class"] for n, r in results.items() if r.get("depth_by_class")}
    if not rows:
        return ""
    first = next(iter(rows.values()))
    classes = list(first)
    head = ["method"]
    for c in classes:
        head += [f"{c} ({100 * first[c]['share']:.0f} %) AbsRel ↓", f"{c} δ1 ↑"]
    body = []
    for name, r in rows.items():
        row = [name]
        for c in classes:
            row += [f"{r[c]['abs_rel']:.3f}", f"{r[c]['delta1']:.3f}"] if c in r else ["–", "–"]
        body.append(row)
    return _table(head, body)


def markdown_table(results: dict[str, dict], columns: list[tuple[str, str, str]]) -> str:
    """One row per method, one column per ``(group, key, title)`` of ``columns`` ('–' where a method does not
    predict it)."""
    def cell(v) -> str:
        return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"

    body = [[name] + [cell(r.get(group, {}).get(key)) for group, key, _ in columns] for name, r in results.items()]
    return _table(["method"] + [c[2] for c in columns], body)


def results_tables(results: dict[str, dict]) -> str:
    """The papers' metrics in two markdown tables: depth, then segmentation, voxels and energy (with a note
    for each model whose depth leaves out scenes: those without known depth or with a non-finite prediction;
    one for each model whose Chamfer-L1 leaves out scenes: those where exactly one of prediction and truth is
    empty; and one saying how many scenes, those with a sound source, the energy columns average)."""
    text = f"Depth:\n\n{markdown_table(results, DEPTH_COLUMNS)}"
    partial = [f"{name}: {r['depth']['scenes']} of {r['scenes']} scenes"
               for name, r in results.items() if "depth" in r and r["depth"]["scenes"] < r["scenes"]]
    if partial:
        text += ("\n\nDepth leaves out the scenes without known depth or with a non-finite predicted depth "
                 "(there is no distance to score); it averages " + "; ".join(partial) + ".")
    text += f"\n\nSegmentation, voxels and energy:\n\n{markdown_table(results, SCENE_COLUMNS)}"
    partial = [f"{name}: {r['voxels']['chamfer_scenes']} of {r['voxels']['scenes']} scenes"
               for name, r in results.items() if "voxels" in r and r["voxels"]["chamfer_scenes"] < r["voxels"]["scenes"]]
    if partial:
        text += ("\n\nChamfer-L1 leaves out the scenes where exactly one of prediction and truth has no occupied "
                 "voxel (it is undefined there); it averages " + "; ".join(partial) + ".")
    energy = sorted({(r["energy"]["scenes"], r["scenes"]) for r in results.values() if "scenes" in r.get("energy", {})})
    if energy:
        text += ("\n\nEnergy IoU and AUC average the scenes with a sound source: "
                 + "; ".join(f"{n} of {total}" for n, total in energy) + ".")
    return text


def report_text(results: dict[str, dict], title: str = "Results", notes: str = "") -> str:
    """The markdown report: title, notes, :func:`results_tables`, the IoU of each class, depth by ground-truth
    class, the safety table (:func:`safety_table`), the depth on the surfaces that return an echo
    (:func:`heard_table`), depth by the array's height (:func:`array_height_table`), the depth with the true layout
    (:func:`layout_oracle_table`) and,
    for methods with a depth uncertainty, :func:`uncertainty_table`."""
    text = f"# {title}\n\n{notes}\n\n{results_tables(results)}\n"
    iou = iou_by_class_table(results)
    if iou:
        text += "\nSegmentation IoU by class:\n\n" + iou + "\n"
    by_class = depth_by_class_table(results)
    if by_class:
        text += ("\nDepth by ground-truth class (pooled over the test pixels of each class; "
                 "the share of pixels is in brackets):\n\n" + by_class + "\n")
    safety = safety_table(results)
    if safety:
        text += ("\nSafety (pooled over the test pixels): false far = the share of pixels within 0.5 m predicted "
                 "beyond 1 m; near recall = the share of pixels within 1 m predicted within 1.5 m; false near = the "
                 "share of pixels beyond 2 m predicted within 1 m; then depth by band of true range (the share of "
                 "pixels in brackets):\n\n" + safety + "\n")
    heard = heard_table(results)
    if heard:
        text += ("\nDepth on the surfaces that return an echo: the same, without the pixels whose surface absorbs "
                 f"the whole sweep (at least {ECHO_FREE_ABSORPTION:.0%} of its energy in every octave band it "
                 "reaches, a fabric-covered absorber panel): no sonar hears those; then also without the pixels "
                 "whose surface has no point that reflects the sweep straight back to the array (a box's side seen "
                 "from above its top or past its edge, a wall past a corner): the simulator's image-source model "
                 "gives those no first-order echo (at most their edges' weak diffraction, with "
                 "acoustics.edge_diffraction). The depth of either is a guess:\n\n" + heard + "\n")
    heights = array_height_table(results)
    if heights:
        text += ("\nDepth by the array's height above the floor (pooled over pixels; a flat array cannot tell the "
                 "floor's echo from the ceiling's, so where the ceiling is the nearer it can only guess which is "
                 "which):\n\n" + heights + "\n")
    oracle = layout_oracle_table(results)
    if oracle:
        text += ("\nThe depth with the room's true layout in place of the layout head's (the obstacles still the "
                 "decoder's): how much of the depth's error each part of the heard room, its floor and ceiling or "
                 "its walls, makes:\n\n" + oracle + "\n")
    unc = uncertainty_table(results)
    if unc:
        text += ("\nDepth uncertainty (area under the sparsification error: leave out the most uncertain pixels step "
                 "by step, minus the same by the true error; 0 = it ranks the errors perfectly, the random column "
                 "is a random order's; mean over scenes). The near bound is the range each pixel's surface is "
                 "nearer than with the node's probability (`sonar.near_bound_quantile`, or the first of "
                 "`--near-bound`; in `near_bound.quantile` of the results), scored as a depth; 'truth below it' "
                 "should be that probability. The confident depth keeps the pixels whose standard deviation is at "
                 "most a share of their range (the node's `sonar.confident_max_rel_std`, or the first of "
                 "`--confident`; in `confident.max_rel_std`): kept = the share of the known pixels it keeps, scored "
                 "over those; its false far over the near pixels it keeps:\n\n" + unc + "\n")
    bound = near_bound_table(results)
    if bound:
        text += ("\nThe near bound by its probability (`--near-bound`; the node's `sonar.near_bound_quantile`): the "
                 "lower the probability, the fewer near surfaces it reports far, and the nearer it puts the rest; "
                 "the truth should lie below it at about its probability:\n\n" + bound + "\n")
    conf = confident_table(results)
    if conf:
        text += "\nThe confident depth by threshold:\n\n" + conf + "\n"
    return text


def write_report(results: dict[str, dict], path: str | Path, title: str = "Results", notes: str = "") -> Path:
    """:func:`report_text` to ``path`` (markdown), and the results themselves beside it (``.json``)."""
    import json

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(report_text(results, title, notes))
    p.with_suffix(".json").write_text(json.dumps(results, indent=2))
    return p
