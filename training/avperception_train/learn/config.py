"""Training configuration (YAML -> dataclass, unknown keys rejected)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from avperception.config import ConfigError, from_dict, to_dict
from avperception.constants import LAYOUT_HEIGHTS

MODES = ("distill", "e2e", "manifold", "manifold-e2e", "teacher", "vqvae")
DISTANCE_LOSSES = ("log", "relative")  # learn.losses.distance_loss


@dataclass(frozen=True)
class ModelSpec:
    """Student size and layout; the data decides mics, samples, panorama and voxel shapes."""

    variant: str = "small"          # small | large
    dim: int = 0                    # 0: the variant's default
    depth: int = 0
    latent_h: int = 15
    latent_w: int = 30
    num_classes: int = 4
    max_depth: float = 10.0
    dropout: float = 0.1
    decoder_width: int = 0          # 0: the variant's default
    echo_hop: int = 4               # > 0: add echogram tokens (matched filter with the dataset's sweep),
    echo_patch: int = 128           #      envelope max-pooled over echo_hop samples, a token per echo_patch;
                                    #      0: spectrogram tokens only (the first shipped model's layout)
    echo_beams: int = 0             # > 0: echogram tokens also carry the matched filters beamformed towards
                                    #      that many azimuths in the array's plane (where echoes come from)
    layout_beams: int = 0           # > 0: a layout head reads each azimuth's wall distance and the floor and
                                    #      ceiling from the echoes beamformed towards that many azimuths, and
                                    #      renders them as the depth (must divide the panorama's width)
    layout_min_m: float = 0.0       # > 0: the layout head's nearest wall distance (0: 0.2 m, or with init the
                                    #      initial model's; a nearer one extends its bins at the same spacing)
    layout_planes: bool = False     # the layout head's distances are the wall planes facing each azimuth (sharp
                                    #      corners); false: each azimuth's distance along its own direction
    voxel_decoder: str = ""         # 3d: transposed 3-D convolutions; plan: 2-D over the floor plan with the
                                    #      heights as channels (faster in ONNX Runtime); empty: 3d, or with
                                    #      init the initial model's (another kind replaces its voxel decoder)
    layout_heights: str = ""        # ordered: the layout head gives the nearer and the farther of floor and
                                    #      ceiling and which is the floor (models.student.StudentConfig); with init,
                                    #      a model with direct heights is converted (it answers as before until
                                    #      trained); empty: direct, or with init the initial model's
    uncertainty: bool = False       # a depth uncertainty head (models.student.UncertaintyHead: each pixel's
                                    #      log Laplace scale of log depth); with init, a model without one gains
                                    #      a fresh one (train it alone: train_only: [uncertainty])


@dataclass(frozen=True)
class LossSpec:
    gt: float = 1.0                 # prediction loss against the ground truth
    teacher: float = 0.5            # prediction loss against the teacher's output (distill)
    feature: float = 1.0            # lambda for the triplet feature-alignment loss (distill)
    feature_margin: float = 0.3
    feature_layers: int = 1         # layers the triplet loss aligns (distill, 1 to 3): the SAM latent, plus the
                                    # encoder blocks before it through training-only SAM blocks (the paper: up to 4)
    info_nce: float = 0.0           # symmetric InfoNCE between pooled latents (distill, optional)
    depth: float = 1.0
    semantic: float = 1.0
    voxels: float = 1.0
    energy: float = 1.0
    layout: float = 1.0             # the layout head's walls, floor and ceiling against the room the ground
                                    # truth shows (learn.data.room_layout)
    distance: str = "log"           # how depth and layout distances are compared: log (L1 plus L1 of log:
                                    # the conditional median) or relative (|p - g| / g, the AbsRel metric
                                    # itself: nearer where the audio leaves the distance in doubt)
    obstacle_depth: float = 0.0     # with a layout head: the decoder's own depth (which obstacle pixels keep)
                                    # against the truth on the obstacle pixels (else it learns only as much
                                    # as the semantic head already hears an obstacle)
    obstacle_semantic: float = 1.0  # the obstacle class's weight in the semantic cross-entropy (a few percent
                                    # of the pixels: at 1 the head seldom gives it more than even odds)
    depth_obstacle: float = 1.0     # the obstacle pixels' weight in the depth loss (0: left out; training the
                                    # layout head alone, whose room cannot hold a box: else a box pulls the
                                    # wall behind it nearer)
    near_overshoot: float = 0.0     # the depth on pixels truly nearer than eval.safety.CLOSE_M (1 m), by how far
                                    # beyond 1.25x it overshoots (learn.losses.near_overshoot_loss): pulls what
                                    # may be a near wall nearer without the relative loss's pull on far ones
    uncertainty: float = 1.0        # the uncertainty head's Laplace NLL of log depth against the ground truth
                                    # (learn.losses; only for a model with one; never moves the depth)

    def weights(self) -> dict[str, float]:
        """The per-output weights :func:`~avperception_train.learn.losses.prediction_loss` takes."""
        return {k: getattr(self, k) for k in ("depth", "semantic", "voxels", "energy", "layout", "uncertainty",
                                              "obstacle_depth", "obstacle_semantic", "depth_obstacle", "near_overshoot")}


@dataclass(frozen=True)
class TrainConfig:
    mode: str = "distill"           # distill | e2e | manifold | manifold-e2e | teacher | vqvae
    data: str = "data"              # folder written by `avperception-train datagen`
    out: str = "runs/student"
    teacher: str = ""               # teacher checkpoint (distill) or VQ-VAE checkpoint (manifold)
    init: str = ""                  # distill/e2e: start from these weights (a student .pt, an exported
                                    # .safetensors, or "default" for the shipped model); fine-tuning
    transfer: bool = False          # with init: load only the tensors whose shapes fit the data's model and
                                    # re-initialise the rest (another array: the input projections); the
                                    # architecture stays init's. false: init must fit the data exactly
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    grad_clip: float = 1.0
    workers: int = 2
    device: str = "auto"            # auto | cpu | cuda
    amp: bool = True                # bf16 autocast on CUDA
    seed: int = 0
    eval_every: int = 1             # validate (and maybe save best.pt) every this many epochs, and after the last
    max_train_samples: int = 0      # 0: all
    skip_train_samples: int = 0     # leave out the first training scenes (a teacher on other rooms than the students')
    camera_fov_deg: tuple[float, ...] = ()  # [horizontal, vertical]: the labels are what a forward depth camera
                                    # at the array sees (learn.data.CameraLabels): distill/e2e learn from that
                                    # only; a teacher sees only that and learns the whole room; []: whole labels
    augment: bool = True            # exact rotations/mirrors the array's symmetry allows
    train_only: tuple[str, ...] = ()  # student parts to train (e.g. [layout]); the rest stays frozen
                                    # (eval mode: fixed BatchNorm statistics, no dropout); []: all
    model: ModelSpec = field(default_factory=ModelSpec)
    loss: LossSpec = field(default_factory=LossSpec)

    def validate(self) -> "TrainConfig":
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode in ("distill", "manifold") and not self.teacher:
            raise ConfigError(f"mode {self.mode} needs `teacher:` (a checkpoint from the "
                              f"{'teacher' if self.mode == 'distill' else 'vqvae'} stage)")
        if self.epochs <= 0 or self.batch_size <= 0 or self.lr <= 0:
            raise ConfigError("epochs, batch_size and lr must be positive")
        if self.eval_every <= 0:
            raise ConfigError(f"eval_every must be a positive number of epochs, got {self.eval_every}")
        if self.init and self.mode not in ("distill", "e2e"):
            raise ConfigError(f"init (start from trained weights) applies to the distill and e2e students, not {self.mode}")
        if self.transfer and not self.init:
            raise ConfigError("transfer needs init: the weights to start from (a student .pt, .safetensors or default)")
        if self.train_only and self.mode not in ("distill", "e2e"):
            raise ConfigError(f"train_only (train part of the student) applies to distill and e2e, not {self.mode}")
        if self.max_train_samples < 0 or self.skip_train_samples < 0:
            raise ConfigError("max_train_samples and skip_train_samples must not be negative")
        if self.camera_fov_deg:
            if self.mode not in ("teacher", "distill", "e2e"):
                raise ConfigError(f"camera_fov_deg applies to the teacher, distill and e2e, not {self.mode}")
            if len(self.camera_fov_deg) != 2 or not all(0 < float(f) < 180 for f in self.camera_fov_deg):
                raise ConfigError(f"camera_fov_deg must be [horizontal, vertical] degrees, each in (0, 180), "
                                  f"got {list(self.camera_fov_deg)}")
        if self.model.variant not in ("small", "large"):
            raise ConfigError("model.variant must be small or large")
        from avperception.models.student import VOXEL_DECODERS  # imports torch: here, not when the module loads

        if self.model.voxel_decoder and self.model.voxel_decoder not in VOXEL_DECODERS:
            raise ConfigError(f"model.voxel_decoder must be {' or '.join(VOXEL_DECODERS)} (or empty), "
                              f"got {self.model.voxel_decoder!r}")
        if self.model.layout_heights not in ("",) + LAYOUT_HEIGHTS:
            raise ConfigError(f"model.layout_heights must be one of {', '.join(LAYOUT_HEIGHTS)} (or empty), got "
                              f"{self.model.layout_heights!r}")
        if not 0 <= self.model.layout_min_m < self.model.max_depth:
            raise ConfigError(f"model.layout_min_m must be in [0, model.max_depth {self.model.max_depth}) m "
                              f"(0: the default, 0.2 m), got {self.model.layout_min_m}")
        if not 1 <= self.loss.feature_layers <= 3:
            raise ConfigError(f"loss.feature_layers must be 1, 2 or 3 (the teacher has 3 feature maps), "
                              f"got {self.loss.feature_layers}")
        if self.loss.distance not in DISTANCE_LOSSES:
            raise ConfigError(f"loss.distance must be {' or '.join(DISTANCE_LOSSES)}, got {self.loss.distance!r}")
        return self


def load_train_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"training config not found: {p}")
        data = yaml.safe_load(p.read_text()) or {}
    cfg = from_dict(TrainConfig, data, where=str(path or "config"))
    if overrides:
        cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    return cfg.validate()


def dump(cfg: TrainConfig) -> dict:
    return to_dict(cfg)
