"""Training: teacher, VQ-VAE, and the audio student (distilled, end-to-end or through the manifold).

One loop serves every stage. Checkpoints carry the full training config and the
model config; ``--resume`` continues from the last one. Logs go to TensorBoard
(when installed) and to ``log.jsonl``. On CUDA it uses bf16 autocast; launched by
``torchrun --nproc_per_node N`` it trains with DistributedDataParallel.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from avperception.models.student import AudioStudent, StudentConfig, config_from_saved, large_config, small_config

from ..datagen.geometry import IGNORE, OBSTACLE
from .config import TrainConfig, dump
from .data import DataInfo, make_datasets
from .losses import info_nce, prediction_loss, triplet_feature_loss
from .teachers import AlignmentHeads, ATNet, DepthATNet, VisualTeacher, VQVAE


# ----------------------------------------------------------------------------- helpers


def student_config(cfg: TrainConfig, info: DataInfo) -> StudentConfig:
    m = cfg.model
    make = small_config if m.variant == "small" else large_config
    kw = dict(num_mics=info.num_mics, sample_rate=info.sample_rate, num_samples=info.num_samples,
              latent_h=m.latent_h, latent_w=m.latent_w, pano_h=info.pano_shape[0], pano_w=info.pano_shape[1],
              num_classes=m.num_classes, voxel_size=info.voxel_size, max_depth=m.max_depth, array=info.array,
              array_positions=info.array_positions, dropout=m.dropout, speed_of_sound=info.speed_of_sound)
    if m.voxel_decoder:
        kw["voxel_decoder"] = m.voxel_decoder
    if m.uncertainty:
        kw["uncertainty"] = True
    if m.layout_min_m:
        kw["layout_min_m"] = m.layout_min_m
    if m.layout_heights:
        kw["layout_heights"] = m.layout_heights
    if m.decoder_width:
        kw["decoder_width"] = m.decoder_width
    if m.dim:
        kw["dim"] = m.dim
    if m.depth:
        kw["depth"] = m.depth
    if m.echo_hop:
        if info.emitted is None or not np.any(info.emitted):
            raise ValueError("model.echo_hop needs a dataset with the robot's sweep (active.probability > 0)")
        kw.update(echo_hop=m.echo_hop, echo_patch=m.echo_patch, echo_beams=m.echo_beams,
                  layout_beams=m.layout_beams, layout_planes=m.layout_planes, emitted=[float(v) for v in info.emitted])
    elif m.layout_beams:
        raise ValueError("model.layout_beams needs model.echo_hop > 0 (the layout head beamforms the matched filter)")
    kw.update(el_min_deg=info.el_range_deg[0], el_max_deg=info.el_range_deg[1], obstacle_class=OBSTACLE)
    sc = make(**kw)
    if sc.pano_h % sc.latent_h or sc.pano_w % sc.latent_w or sc.pano_h // sc.latent_h != sc.pano_w // sc.latent_w:
        raise ValueError(f"panorama {sc.pano_h}x{sc.pano_w} must be the latent {sc.latent_h}x{sc.latent_w} "
                         "times a power of two")
    return sc


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda requested but no CUDA device is available")
    return torch.device(name)


def build_model(mode: str, sc: StudentConfig) -> nn.Module:
    if mode == "teacher":
        return VisualTeacher(sc)
    if mode == "vqvae":
        return VQVAE(sc)
    if mode == "manifold":
        return ATNet(sc, VQVAE(sc).vq_cfg.code_dim)
    if mode == "manifold-e2e":
        return DepthATNet(sc)
    return AudioStudent(sc)


def unwrap(model: nn.Module | None) -> nn.Module | None:
    """The module inside a DistributedDataParallel wrapper, or the module (or None) itself."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def save_checkpoint(path: Path, model: nn.Module, opt, epoch: int, step: int, cfg: TrainConfig,
                    sc: StudentConfig, metrics: dict | None = None, align: nn.Module | None = None) -> None:
    """``align``: the training-only alignment heads, kept for ``--resume`` under their own key."""
    from dataclasses import asdict

    raw = unwrap(model)
    tmp = path.with_suffix(".tmp")
    ck = {"model": raw.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "step": step,
          "train_config": dump(cfg), "student_config": asdict(sc), "metrics": metrics or {}}
    if align is not None:
        ck["align"] = unwrap(align).state_dict()
    torch.save(ck, tmp)
    os.replace(tmp, path)


# the fields a model must share with the data it is fine-tuned on
_DATA_FIELDS = ("num_mics", "sample_rate", "num_samples", "pano_h", "pano_w", "voxel_size", "num_classes",
                "el_min_deg", "el_max_deg")


def same_sweep(a, b) -> bool:
    """Whether two emitted sweeps' samples are the same (same length, within 1e-4: one sweep written twice)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and not np.abs(a - b).max() > 1e-4


def initial_student(spec: str, data_sc: StudentConfig, emitted: np.ndarray | None = None, voxel_decoder: str = ""
                    ) -> tuple[AudioStudent, StudentConfig]:
    """The student to fine-tune: ``spec`` is a student checkpoint (``.pt``), an exported model
    (``.safetensors``) or ``default`` (the shipped model for the data's array).

    The architecture is the saved one; its inputs and outputs must match the data (``data_sc``):
    same microphone count, positions (within 1 mm) and order, audio length and rate, panorama
    and voxel shapes, classes, and (for a model with echogram tokens) the same emitted sweep as
    ``emitted``. A mismatch raises ``ValueError`` naming every difference.
    Dropout is taken from the data's config, so fine-tuning can change it. When ``data_sc`` asks for
    a layout head (``layout_beams``) and the model has none, it gains a freshly initialised one; a model with one
    takes the data config's ``layout_planes`` (how its distances become walls: no weights of its own). A
    ``voxel_decoder`` kind other than the model's gives it a freshly initialised voxel decoder of that kind
    (train it with ``train_only: [voxels]``); empty keeps the model's. A data config whose ``layout_min_m`` is
    nearer than the model's extends its layout head's bins (:func:`extend_layout_bins`), and one with ordered
    heights converts a layout head with direct ones (:func:`order_layout_heights`). A calibrated depth uncertainty
    starts as trained: its calibration fits the network it was fitted on, not the one training makes
    (``calibrate-uncertainty`` again afterwards).
    """
    from avperception.models import default_model

    if spec == "default":
        model = AudioStudent.load(default_model(data_sc.array))
    elif spec.endswith(".pt"):
        if not Path(spec).exists():
            raise FileNotFoundError(f"init: no checkpoint at {spec}")
        model, _ = load_stage(spec, "distill", torch.device("cpu"))
    else:
        model = AudioStudent.load(spec)
    sc = model.cfg
    diffs = [f"{k}: model {getattr(sc, k)} vs data {getattr(data_sc, k)}"
             for k in _DATA_FIELDS if getattr(sc, k) != getattr(data_sc, k)]
    a, b = np.asarray(sc.array_positions, float), np.asarray(data_sc.array_positions, float)
    if a.shape != b.shape or (a.size and np.abs(a - b).max() > 1e-3):
        diffs.append(f"array_positions: model ({sc.array}) {a.tolist()} vs data ({data_sc.array}) {b.tolist()}")
    if sc.echo_hop and emitted is not None:
        if not same_sweep(emitted, sc.emitted):
            diffs.append("emitted sweep: the model's echogram tokens were trained with another sweep than this dataset's")
    if (sc.echo_beams or sc.layout_beams) and abs(sc.speed_of_sound - data_sc.speed_of_sound) > 1.0:
        diffs.append(f"speed_of_sound: model {sc.speed_of_sound} vs data {data_sc.speed_of_sound} m/s "
                     "(the beams' delays)")
    add_layout = bool(data_sc.layout_beams and not sc.layout_beams)
    if add_layout and not sc.echo_hop:
        diffs.append("layout_beams: the model has no echogram (echo_hop 0), which a layout head needs")
    if diffs:
        raise ValueError(f"init {spec}: the model does not fit this dataset: " + "; ".join(diffs))
    sc = replace(sc, dropout=data_sc.dropout, uncertainty_calibration=[])
    if sc.layout_beams and data_sc.layout_beams:  # how the head's distances become walls has no weights of its own
        sc = replace(sc, layout_planes=data_sc.layout_planes)
    if add_layout:
        sc = replace(sc, layout_beams=data_sc.layout_beams, layout_bins=data_sc.layout_bins,
                     layout_min_m=data_sc.layout_min_m, obstacle_class=data_sc.obstacle_class,
                     speed_of_sound=data_sc.speed_of_sound)
    new_voxels = bool(voxel_decoder) and voxel_decoder != sc.voxel_decoder
    if new_voxels:
        sc = replace(sc, voxel_decoder=voxel_decoder)
    add_uncertainty = bool(data_sc.uncertainty and not sc.uncertainty)  # a fresh depth uncertainty head
    if add_uncertainty:
        sc = replace(sc, uncertainty=True)
    weights = {k: v.float() for k, v in model.state_dict().items() if not (new_voxels and k.startswith("voxels."))}
    if sc.layout_beams and data_sc.layout_min_m < sc.layout_min_m:  # nearer walls: more bins at the same spacing
        sc = extend_layout_bins(sc, weights, data_sc.layout_min_m)
    if sc.layout_beams and data_sc.layout_heights == "ordered" and sc.layout_heights != "ordered":
        sc = order_layout_heights(sc, weights)
    fresh = AudioStudent(sc)
    missing, unexpected = fresh.load_state_dict(weights, strict=False)
    new_parts = tuple(p for p, new in (("layout.", add_layout), ("voxels.", new_voxels),
                                       ("uncertainty.", add_uncertainty)) if new)
    if unexpected or any(not k.startswith(new_parts) for k in missing):
        raise ValueError(f"init {spec}: weights do not fit the model: missing {missing}, unexpected {unexpected}")
    return fresh, sc


def extend_layout_bins(sc: StudentConfig, weights: dict, nearest_m: float) -> StudentConfig:
    """The layout head's distance bins reaching down to ``nearest_m`` (or just below it) at the same log spacing:
    new bins go before the first, so every old bin keeps its distance and its weights (``weights``, a state
    dict, is changed in place). A new bin starts as a copy of the first with its logit 3 lower, so the head
    answers as before until training moves mass onto them. Returns the config with the new range and count."""
    step = (math.log(sc.max_depth) - math.log(sc.layout_min_m)) / (sc.layout_bins - 1)
    extra = math.ceil(math.log(sc.layout_min_m / nearest_m) / step - 1e-9)
    w, b = weights["layout.bins.weight"], weights["layout.bins.bias"]
    weights["layout.bins.weight"] = torch.cat([w[:1].expand(extra, -1), w])
    weights["layout.bins.bias"] = torch.cat([(b[:1] - 3.0).expand(extra), b])
    return replace(sc, layout_bins=sc.layout_bins + extra,
                   layout_min_m=math.exp(math.log(sc.layout_min_m) - extra * step))


def order_layout_heights(sc: StudentConfig, weights: dict) -> StudentConfig:
    """The layout head's direct floor and ceiling turned into ordered heights (``layout_heights: ordered``):
    the two rows become the pair (sorted in the forward pass) and a third row, the logit that the floor is the
    nearer, starts at +3 with no weights, so the model answers as before wherever it put the floor nearer. An
    uncertainty head gains a zero-weighted input for the order's doubt (its output is unchanged). ``weights``,
    a state dict, is changed in place. Returns the config with ordered heights."""
    w, b = weights["layout.heights.weight"], weights["layout.heights.bias"]
    weights["layout.heights.weight"] = torch.cat([w, torch.zeros_like(w[:1])])
    weights["layout.heights.bias"] = torch.cat([b, torch.full_like(b[:1], 3.0)])
    if sc.uncertainty:
        k = "uncertainty.body.0.weight"  # (width, inputs, 1, 1): the doubt is the last input
        weights[k] = torch.cat([weights[k], torch.zeros_like(weights[k][:, :1])], dim=1)
    return replace(sc, layout_heights="ordered")


# what a transferred model takes from the data rather than from the model it starts from
_TRANSFER_FIELDS = _DATA_FIELDS + ("array", "array_positions", "speed_of_sound", "dropout", "obstacle_class")


def transfer_source(spec: str, array: str) -> Path | str:
    """The weights ``spec`` names for :func:`transfer_student`: ``default`` is the shipped model for ``array``,
    else the shipped robot_8mic one (the network learnt the echoes; most of it does not depend on the array)."""
    from avperception.models import default_model

    if spec != "default":
        return spec
    try:
        return default_model(array)
    except FileNotFoundError:
        return default_model()


def transfer_student(spec: str, data_sc: StudentConfig, emitted: np.ndarray | None = None, voxel_decoder: str = "",
                     log=print) -> tuple[AudioStudent, StudentConfig, list[str]]:
    """Start a student for another array (or rate, window, grids) from trained weights ``spec`` (a student
    ``.pt``, an exported ``.safetensors`` or ``default``: see :func:`transfer_source`).

    The architecture is the saved model's (width, layers, echogram, layout head, voxel decoder), its inputs and
    outputs the data's (``data_sc``: microphones and their positions, rate, window, grids, speed of sound, and
    the sweep ``emitted (N,)`` for the matched filter). Every tensor whose name and shape match is loaded; the
    others (for another microphone count: the input projections of both token streams and their
    normalisations) keep their fresh initialisation. A ``voxel_decoder`` kind other than the model's gives a
    fresh one of that kind; a calibrated depth uncertainty starts as trained (as :func:`initial_student`). Returns
    the model, its config and the names of the re-initialised tensors (also printed through ``log``)."""
    src = transfer_source(spec, data_sc.array)
    if str(src).endswith(".pt"):
        if not Path(src).exists():
            raise FileNotFoundError(f"init: no checkpoint at {src}")
        model, _ = load_stage(src, "distill", torch.device("cpu"))
    else:
        model = AudioStudent.load(src)
    sc = replace(model.cfg, uncertainty_calibration=[], **{k: getattr(data_sc, k) for k in _TRANSFER_FIELDS})
    if data_sc.layout_beams:
        sc = replace(sc, layout_planes=data_sc.layout_planes)
    if sc.echo_hop or sc.echo_beams or sc.layout_beams:
        if emitted is None or not np.any(emitted):
            raise ValueError(f"init {spec}: the model hears its sweep through the echogram, but the dataset has "
                             "none (generate it with active.probability > 0)")
        sc = replace(sc, emitted=[float(v) for v in np.asarray(emitted, float)])
    if voxel_decoder:
        sc = replace(sc, voxel_decoder=voxel_decoder)
    fresh = AudioStudent(sc)
    own = fresh.state_dict()
    loaded = {k: v.float() for k, v in model.state_dict().items() if k in own and v.shape == own[k].shape}
    fresh.load_state_dict(loaded, strict=False)
    reinit = [k for k in own if k not in loaded]
    if log is not None:
        n = sum(own[k].numel() for k in reinit)
        log(f"init {spec} ({src}): {len(loaded)} of {len(own)} tensors loaded; re-initialised {len(reinit)} "
            f"({n} values): {', '.join(reinit) or 'none'}")
    return fresh, sc, reinit


def _trainable(model: nn.Module, only: tuple[str, ...]) -> list[nn.Parameter]:
    """The parameters to optimise: all, or those of the top-level parts named in ``only`` (the others are
    frozen). Unknown names raise ``ValueError`` listing the model's parts."""
    if not only:
        return list(model.parameters())
    parts = {n: m for n, m in model.named_children() if next(m.parameters(), None) is not None}  # with weights
    unknown = [n for n in only if n not in parts]
    if unknown:
        raise ValueError(f"train_only: {unknown} not part(s) of this model with weights; it has: {', '.join(parts)}")
    for name, part in parts.items():
        part.requires_grad_(name in only)
    return [p for n in only for p in parts[n].parameters()]


def _train_mode(model: nn.Module, only: tuple[str, ...]) -> None:
    """Train mode for the trained parts; frozen parts stay in eval mode (BatchNorm statistics, dropout)."""
    model.train()
    if only:
        for name, part in model.named_children():
            if name not in only:
                part.eval()


def load_stage(path: str | Path, mode: str, device: torch.device) -> tuple[nn.Module, StudentConfig]:
    """A trained teacher / VQ-VAE / student from its checkpoint, frozen, in eval mode."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    sc = config_from_saved(ck["student_config"], path)
    model = build_model(mode, sc)
    model.load_state_dict(ck["model"])
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, sc


def teacher_view(path: str | Path) -> tuple[float, ...]:
    """The camera field of view a teacher checkpoint was trained to see (``()``: the whole panorama)."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    return tuple(float(f) for f in ck["train_config"].get("camera_fov_deg", ()))


def check_teacher_view(path: str | Path, camera_fov_deg) -> None:
    """A distilled student's labels must be what its teacher learnt to see: the whole panorama for a teacher
    trained on it, a camera's view of the same field for a teacher trained with ``camera_fov_deg``."""
    from avperception.config import ConfigError

    seen, want = teacher_view(path), tuple(float(f) for f in camera_fov_deg)
    if seen != want:
        show = lambda v: f"a camera's {v[0]:g} x {v[1]:g} deg view" if v else "the whole panorama"  # noqa: E731
        raise ConfigError(f"teacher {path} learnt from {show(seen)}, but the labels here are {show(want)}; "
                          f"train the teacher with the same camera_fov_deg")


def masked_view(depth: torch.Tensor, semantic: torch.Tensor, view: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth and classes ``(B, H, W)`` where ``view (B, H, W)`` is true, unknown (NaN, ``IGNORE``) elsewhere;
    unchanged without a view."""
    if view is None:
        return depth, semantic
    return (torch.where(view, depth, torch.full_like(depth, float("nan"))),
            torch.where(view, semantic, torch.full_like(semantic, IGNORE)))


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


# ----------------------------------------------------------------------------- one step per mode


class Stage:
    """What one training step computes for a mode; returns (loss, scalars)."""

    def __init__(self, cfg: TrainConfig, model: nn.Module, teacher: nn.Module | None,
                 align: nn.Module | None = None) -> None:
        self.cfg, self.model, self.teacher, self.align = cfg, model, teacher, align
        lw = cfg.loss
        self.w = lw.weights()

    def __call__(self, b: dict) -> tuple[torch.Tensor, dict]:
        mode, lw = self.cfg.mode, self.cfg.loss
        if mode == "teacher":  # with a camera, it sees the camera's view and learns the whole room
            out = self.model(*masked_view(b["depth"], b["semantic"], b.get("view")))
            return prediction_loss(out, b, {**self.w, "energy": 0.0}, lw.distance)
        if mode == "vqvae":
            rec, vq = self.model(b["depth"])
            loss, parts = prediction_loss({"depth": rec}, {"depth": b["depth"]})
            return loss + vq, {**parts, "vq": float(vq.detach())}
        if mode == "manifold":
            with torch.no_grad():
                target = self.teacher.encode(b["depth"])
            pred = self.model(b["audio"])
            loss = F.mse_loss(pred, target)
            return loss, {"latent_l2": float(loss.detach())}
        if mode == "manifold-e2e":  # the VQ-VAE's reconstruction loss, on the labels
            return prediction_loss({"depth": self.model(b["audio"])}, {"depth": b["depth"]}, distance=lw.distance)
        out, tokens = self._student(b["audio"])
        loss, parts = prediction_loss(out, b, self.w, lw.distance)
        loss = lw.gt * loss
        if mode == "distill":
            with torch.no_grad():
                t = self.teacher(b["depth"], b["semantic"])
            pseudo = {"depth": t["depth"], "semantic": torch.softmax(t["semantic"].float(), 1),
                      "voxels": torch.sigmoid(t["voxels"].float())}
            lt, tparts = prediction_loss(out, pseudo, {**self.w, "energy": 0.0, "uncertainty": 0.0}, lw.distance)
            lf = triplet_feature_loss(out["latent"], t["latent"], lw.feature_margin)
            parts.update({f"teacher_{k}": v for k, v in tparts.items()}, feature=float(lf.detach()))
            if self.align is not None:  # earlier layers, each against the teacher's feature map that far back
                for j, s in enumerate(self.align(tokens), start=2):
                    lj = triplet_feature_loss(s, t["features"][-j], lw.feature_margin)
                    parts[f"feature_{j}"] = float(lj.detach())
                    lf = lf + lj
            loss = loss + lw.teacher * lt + lw.feature * lf
            if lw.info_nce:
                ln = info_nce(out["latent"].mean(1), t["latent"].mean(1))
                loss = loss + lw.info_nce * ln
                parts["info_nce"] = float(ln.detach())
        return loss, parts

    def _student(self, audio: torch.Tensor) -> tuple[dict, dict[int, torch.Tensor]]:
        """The student's outputs, and the tokens after the encoder blocks the alignment heads read (none
        without them), taken from the same forward pass."""
        if self.align is None:
            return self.model(audio), {}
        tokens: dict[int, torch.Tensor] = {}
        hooks = [unwrap(self.model).encoder[i].register_forward_hook(lambda _m, _a, y, i=i: tokens.__setitem__(i, y))
                 for i in unwrap(self.align).blocks]
        try:
            return self.model(audio), tokens
        finally:
            for h in hooks:
                h.remove()


# ----------------------------------------------------------------------------- the loop


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train one stage; returns the path of the best checkpoint (``best.pt`` in ``cfg.out``)."""
    from torch.utils.data import DataLoader

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = int(os.environ.get("RANK", "0"))
    if distributed:
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
        device = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    else:
        device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed + rank)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.mode == "distill":  # before the data load: a teacher that saw other labels is refused at once
        check_teacher_view(cfg.teacher, cfg.camera_fov_deg)
    train_ds, val_ds, info = make_datasets(cfg.data, cfg.max_train_samples, cfg.augment, cfg.skip_train_samples,
                                           cfg.camera_fov_deg, full_labels=cfg.mode == "teacher")
    sc = student_config(cfg, info)
    if cfg.init and cfg.transfer:
        model, sc, _ = transfer_student(cfg.init, sc, info.emitted, cfg.model.voxel_decoder,
                                        log=print if rank == 0 and progress else None)
        model = model.to(device)
    elif cfg.init:
        model, sc = initial_student(cfg.init, sc, info.emitted, cfg.model.voxel_decoder)
        model = model.to(device)
    else:
        model = build_model(cfg.mode, sc).to(device)
    teacher = None
    if cfg.mode == "distill":
        teacher, _ = load_stage(cfg.teacher, "teacher", device)
    elif cfg.mode == "manifold":
        teacher, _ = load_stage(cfg.teacher, "vqvae", device)
    sampler = torch.utils.data.DistributedSampler(train_ds, seed=cfg.seed) if distributed else None
    loader = DataLoader(train_ds, cfg.batch_size, shuffle=sampler is None, sampler=sampler, drop_last=True,
                        num_workers=cfg.workers, pin_memory=device.type == "cuda", persistent_workers=cfg.workers > 0)
    if len(loader) == 0:
        raise ValueError(f"{len(train_ds)} training samples are fewer than one batch of {cfg.batch_size}")
    trained = _trainable(model, cfg.train_only)
    align = None
    if cfg.mode == "distill" and cfg.loss.feature_layers > 1:
        align = AlignmentHeads(sc, cfg.loss.feature_layers).to(device)
        trained = trained + list(align.parameters())
    opt = torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * len(loader)
    if cfg.warmup_steps >= total and rank == 0:
        warnings.warn(f"warmup_steps {cfg.warmup_steps} are not fewer than the run's {total} steps "
                      f"({cfg.epochs} epochs x {len(loader)} batches): the learning rate never reaches lr {cfg.lr}",
                      stacklevel=2)
    start_epoch, step, best = 0, 0, float("inf")
    last = out / "last.pt"
    if resume and last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        if align is not None:
            align.load_state_dict(ck["align"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, step = ck["epoch"] + 1, ck["step"]
        best = ck.get("metrics", {}).get("best_val", best)
    # linear warmup, then cosine decay; a resumed run picks the schedule up at its step
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(cfg.warmup_steps, 1)) * 0.5 * (1 + math.cos(math.pi * min(s / total, 1))),
        last_epoch=step - 1)
    if distributed:
        ids = [device.index] if device.type == "cuda" else None
        # some parameters sit out a stage (e.g. the energy head for the teacher): let DDP skip them
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
        if align is not None:
            align = nn.parallel.DistributedDataParallel(align, device_ids=ids)
    stage = Stage(cfg, model, teacher, align)
    writer = _writer(out) if rank == 0 else None
    amp = cfg.amp and device.type == "cuda"
    (out / "config.json").write_text(json.dumps({"train": dump(cfg), "student": sc.__dict__}, indent=2, default=str))
    for epoch in range(start_epoch, cfg.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        _train_mode(unwrap(model), cfg.train_only)  # DDP wraps the parts
        if align is not None:
            align.train()
        t0 = time.time()
        bar = _bar(loader, f"{cfg.mode} epoch {epoch + 1}/{cfg.epochs}", progress and rank == 0)
        running = 0.0
        for i, batch in enumerate(bar):
            b = to_device(batch, device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                loss, parts = stage(b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            running += float(loss.detach())
            if writer is not None and step % 10 == 0:
                writer.add_scalar("train/loss", float(loss.detach()), step)
                for k, v in parts.items():
                    writer.add_scalar(f"train/{k}", v, step)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{running / (i + 1):.4f}")
        if rank == 0:  # validation, logs and checkpoints on one process
            due = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs
            val = validate(cfg, unwrap(model), stage, val_ds, device, amp) if due else None
            record = {"epoch": epoch + 1, "step": step, "train_loss": running / len(loader), "val_loss": val,
                      "lr": sched.get_last_lr()[0], "seconds": time.time() - t0}
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            if writer is not None and due:
                writer.add_scalar("val/loss", val, step)
            if progress:
                shown = f" val {val:.4f}" if due else ""
                print(f"epoch {epoch + 1}: train {record['train_loss']:.4f}{shown} ({record['seconds']:.0f} s)", flush=True)
            if due:
                best = min(best, val)
            save_checkpoint(last, model, opt, epoch, step, cfg, sc, {"val_loss": val, "best_val": best}, align)
            # without a validation split (one imported recording) the last validated epoch is the best there is
            if due and (val <= best or math.isnan(val)):
                save_checkpoint(out / "best.pt", model, opt, epoch, step, cfg, sc, {"val_loss": val, "best_val": best},
                                align)
        if distributed:
            torch.distributed.barrier()
    if writer is not None:
        writer.close()
    if distributed:
        torch.distributed.destroy_process_group()
    return out / "best.pt"


@torch.no_grad()
def validate(cfg: TrainConfig, model: nn.Module, stage: Stage, ds, device, amp: bool) -> float:
    from torch.utils.data import DataLoader

    if ds is None or len(ds) == 0:
        return float("nan")
    model.eval()
    align = unwrap(stage.align)
    if align is not None:
        align.eval()
    stage = Stage(cfg, model, stage.teacher, align)  # the unwrapped models; training keeps its own (DDP) stage
    total, n = 0.0, 0
    for batch in DataLoader(ds, cfg.batch_size, num_workers=0):
        b = to_device(batch, device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            loss, _ = stage(b)
        total += float(loss) * b["audio"].shape[0]
        n += b["audio"].shape[0]
    return total / max(n, 1)


def _writer(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(out / "tb"))
    except ImportError:
        return None


def _bar(it, desc: str, enabled: bool):
    if not enabled:
        return it
    try:
        from tqdm import tqdm

        return tqdm(it, desc=desc, leave=False, dynamic_ncols=True, disable=None)  # off when not a terminal
    except ImportError:
        return it


def export_student(checkpoint: str | Path, dest: str | Path, extra: dict | None = None, half: bool = False) -> Path:
    """Write a student checkpoint as ``dest.safetensors`` + ``dest.json`` (the runtime's model format)."""
    model, sc = load_stage(checkpoint, "distill", torch.device("cpu"))
    if half:
        model = model.half()
    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    meta = {"train_config": ck["train_config"], "metrics": ck.get("metrics", {}), **(extra or {})}
    model.save(dest, meta)
    return Path(dest).with_suffix(".safetensors")


def replace_cfg(cfg: TrainConfig, **kw) -> TrainConfig:
    return replace(cfg, **kw).validate()
