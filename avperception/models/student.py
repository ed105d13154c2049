"""The audio student: multichannel echoes in, depth / semantics / occupancy / energy out.

Read top to bottom:

1. ``EchoFrontend``   raw audio ``(B, M, N)`` -> spectrogram stack ``(B, 3M-2, F, T)``:
   log-magnitude of every microphone plus cos/sin of each microphone's phase
   relative to microphone 0 (inter-channel phase carries direction). The STFT
   is a strided convolution with a fixed DFT basis, so the whole model exports
   to ONNX / TensorRT as one graph.
2. ``TimePatchEmbed`` slices the stack into time patches (all frequencies of
   ``patch_frames`` frames) -> tokens ``(B, T', D)`` (the dense-prediction
   paper's best input slicing). With ``echo_hop`` set, ``EchogramEmbed`` adds
   tokens of the matched-filter envelopes (the echoes' delays at a few samples'
   resolution) and, with ``echo_beams``, the same echoes beamformed towards
   azimuths in the array's plane (which direction each echo comes from). A
   small transformer encodes all tokens. These token streams and the transformer
   are ``AudioEncoder`` (``tokens``): the student is one with heads on top, and so
   is the manifold's AT-net in the training package.
   With ``layout_beams``, ``LayoutHead`` reads the room's layout straight from the
   echoes: the matched filters beamformed towards that many azimuths form a
   (azimuth, range) image; convolutions over it and attention across azimuths
   give each azimuth's horizontal wall distance plus the floor's and ceiling's
   distances below and above the array, and :func:`layout_depth` renders them
   into the depth panorama.
3. ``SAMBlock`` (spatial alignment via matching) maps the audio tokens onto the
   visual layout ``(B, V, D)`` with ``V = latent_h * latent_w``: K learnable
   spatial embeddings, similarity pooling, and multi-head attention refinement.
4. Heads: a 2-D decoder to the panoramas (depth in metres, semantic logits,
   energy map) and a 3-D decoder to occupancy logits (or, with ``voxel_decoder="plan"``,
   a 2-D decoder over the floor plan with the heights as channels). With a layout head, the
   depth is the rendered layout except where the semantic head hears an
   obstacle, where the decoder's own depth takes over (never beyond the layout).
   :func:`decode_latent` is the latent-to-panorama part, shared with the visual
   teacher of the training package.

Fixed input shape, no Python control flow depending on data in ``forward``.
The config is saved with the weights (``save`` / ``load``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import DEFAULT_ARRAY
from ..constants import LAYOUT_HEIGHTS, SPEED_OF_SOUND
from ..dsp.echo import beam_envelope, beam_kernels, log_envelope, matched_iq, quadrature_kernels, sweep_band
from ..dsp.grid import horizon
from ..dsp.features import stft, stft_basis


@dataclass
class StudentConfig:
    """Everything needed to rebuild the network (saved beside the weights)."""

    num_mics: int = 8
    sample_rate: int = 16000
    num_samples: int = 2048          # audio per inference (128 ms at 16 kHz)
    nfft: int = 256
    hop: int = 64
    patch_frames: int = 2
    dim: int = 128
    depth: int = 4                   # transformer layers
    heads: int = 4
    latent_h: int = 15
    latent_w: int = 30
    sam_k: int = 16
    pano_h: int = 60
    pano_w: int = 120
    num_classes: int = 4
    voxel_size: int = 32
    decoder_width: int = 48
    # "3d": 3-D transposed convolutions up from a 4^3 grid; "plan": 2-D convolutions over the floor plan (y, x)
    # whose last layer gives the voxel_size heights (z) as channels: a fifth of the 3-D one's time in ONNX Runtime
    voxel_decoder: str = "3d"
    max_depth: float = 10.0
    dropout: float = 0.0
    array: str = DEFAULT_ARRAY
    array_positions: list = field(default_factory=list)
    # echogram tokens (0: off): the matched filter of every mic with the emitted sweep, its log envelope
    # power max-pooled over echo_hop samples, one token per echo_patch samples (sample 0 = sweep onset)
    echo_hop: int = 0
    echo_patch: int = 128
    emitted: list = field(default_factory=list)
    # echo beams (0: off; needs echo_hop): the echogram tokens also carry the matched filters beamformed
    # towards echo_beams azimuths in the array's plane, where a vertical wall's first echo comes from
    echo_beams: int = 0
    speed_of_sound: float = SPEED_OF_SOUND
    # layout head (0: off; needs echo_hop): the matched filters beamformed towards layout_beams azimuths in the
    # array's plane give each azimuth's wall distance, rendered with the floor and ceiling into the depth
    # panorama (rows from el_max_deg down to el_min_deg, columns from azimuth 180 down to -180 deg)
    layout_beams: int = 0
    layout_bins: int = 96            # log-spaced distance bins per azimuth, layout_min_m .. max_depth
    layout_min_m: float = 0.2        # the layout head's nearest wall distance (its first bin)
    # False: each beam's distance is the wall's along its azimuth, interpolated to the columns; True: it is the
    # distance of the wall plane facing it (the room's support function), and each column takes the nearest
    # plane along its ray (sharp corners, exact for a convex room)
    layout_planes: bool = False
    # "direct": the summary token gives the floor's and the ceiling's distance; "ordered": it gives the nearer and
    # the farther of the two and whether the floor is the nearer (a planar array hears both straight along its
    # axis and cannot tell them apart by their echoes: regressing each directly hedges between the two when the
    # array is above half the room's height, the order keeps both distances sharp and says how sure it is)
    layout_heights: str = "direct"
    el_min_deg: float = -90.0
    el_max_deg: float = 90.0
    obstacle_class: int = 3          # semantic class whose pixels keep the decoder's depth
    # depth uncertainty head (off: the outputs and weights of a model without one): a small convolutional head on
    # the detached decoder features, depth, classes (and the layout head's spread) predicts each pixel's Laplace
    # scale of log depth; outputs depth_log_scale and depth_uncertainty (standard deviation, m)
    uncertainty: bool = False
    # its calibration (empty: as trained): [[log c, k] with the array's height heard, [log c, k] with it given]; the
    # log scale moves by log c + k log(depth / 1 m), fitted on validation rooms so that the near bound holds at its
    # quantile (avperception_train.learn.calibrate)
    uncertainty_calibration: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.voxel_decoder not in VOXEL_DECODERS:
            raise ValueError(f"voxel_decoder {self.voxel_decoder!r} is not one of {', '.join(VOXEL_DECODERS)}")
        # both beamform the matched filter: they need the echogram and the microphones' positions
        for name, why in (("echo_beams", "the beams steer the matched filter"),
                          ("layout_beams", "the layout head beamforms the matched filter")):
            if not getattr(self, name):
                continue
            if not self.echo_hop:
                raise ValueError(f"{name} > 0 needs echo_hop > 0 ({why})")
            if np.shape(self.array_positions) != (self.num_mics, 3):
                raise ValueError(f"{name} > 0 needs array_positions for {self.num_mics} mics, "
                                 f"got shape {np.shape(self.array_positions)}")
        if self.layout_beams:
            if self.pano_w % self.layout_beams:
                raise ValueError(f"layout_beams ({self.layout_beams}) must divide pano_w ({self.pano_w})")
            if not 0 <= self.obstacle_class < self.num_classes:
                raise ValueError(f"obstacle_class {self.obstacle_class} is not one of {self.num_classes} classes")
        if self.layout_heights not in LAYOUT_HEIGHTS:
            raise ValueError(f"layout_heights {self.layout_heights!r} is not one of {', '.join(LAYOUT_HEIGHTS)}")
        if self.uncertainty_calibration:
            cal = np.asarray(self.uncertainty_calibration, dtype=float)
            if not self.uncertainty or cal.shape != (2, 2) or not np.all(np.isfinite(cal)):
                raise ValueError("uncertainty_calibration must be [[log c, k] heard, [log c, k] given] (finite) of a "
                                 f"model with an uncertainty head, got {self.uncertainty_calibration!r}")
        if self.echo_hop:
            if not self.emitted:
                raise ValueError("echo_hop > 0 needs the emitted sweep (StudentConfig.emitted)")
            if self.echo_patch % self.echo_hop or self.num_samples < self.echo_patch:
                raise ValueError(f"echo_patch ({self.echo_patch}) must be a multiple of echo_hop ({self.echo_hop}) "
                                 f"and at most num_samples ({self.num_samples})")

    @property
    def num_frames(self) -> int:
        return 1 + (self.num_samples - self.nfft) // self.hop

    @property
    def in_channels(self) -> int:
        return 3 * self.num_mics - 2

    @property
    def num_tokens(self) -> int:
        """Spectrogram tokens: one per ``patch_frames`` STFT frames."""
        return self.num_frames // self.patch_frames

    @property
    def num_echo_tokens(self) -> int:
        """Echogram tokens: one per ``echo_patch`` samples, none when ``echo_hop`` is 0."""
        return self.num_samples // self.echo_patch if self.echo_hop else 0


def config_from_saved(saved: dict, source) -> StudentConfig:
    """The :class:`StudentConfig` saved with a model (``source`` names it in errors). Fields this version does not
    know are refused by name (a model from a newer version, whose network this one cannot build); fields it
    added since take their defaults."""
    known = {f.name for f in fields(StudentConfig)}
    unknown = sorted(set(saved) - known)
    if unknown:
        raise ValueError(f"{source}: its config has fields this version of avperception does not know "
                         f"({', '.join(unknown)}): it was saved by a newer one; update avperception to load it")
    return StudentConfig(**saved)


def small_config(**kw) -> StudentConfig:
    """Real time on 2 CPU cores."""
    return StudentConfig(**kw)


def large_config(**kw) -> StudentConfig:
    """For GPUs."""
    base = dict(dim=256, depth=8, heads=8, sam_k=64, decoder_width=128)
    base.update(kw)
    return StudentConfig(**base)


# ----------------------------------------------------------------------------- front end


class EchoFrontend(nn.Module):
    """``(B, M, N)`` audio -> ``(B, 3M-2, F, T)`` log-magnitude + relative-phase stack.

    The STFT is the feature module's exportable one (a strided convolution with
    a fixed Hann-windowed DFT basis, :func:`avperception.dsp.features.stft`).
    """

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.register_buffer("basis", torch.from_numpy(stft_basis(cfg.nfft, "hann")), persistent=False)
        self.hop = cfg.hop

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        re, im = stft(audio, self.basis, self.hop)  # (B, M, F, T) each
        logmag = torch.log(re * re + im * im + 1e-8)
        # phase of each mic relative to mic 0: X_m X_0^* / |.|
        cr = re[:, 1:] * re[:, :1] + im[:, 1:] * im[:, :1]
        ci = im[:, 1:] * re[:, :1] - re[:, 1:] * im[:, :1]
        norm = torch.sqrt(cr * cr + ci * ci + 1e-12)
        return torch.cat([logmag, cr / norm, ci / norm], dim=1)


class EchogramEmbed(nn.Module):
    """``(B, M, 2, N)`` matched filters -> ``(B, N // echo_patch, D)``: one token per ``echo_patch`` samples of the
    matched-filter envelopes of all mics (:func:`avperception.dsp.echo.echogram`, ``echo_hop`` resolution)
    and, with ``echo_beams``, of the matched filters beamformed towards that many azimuths
    (:func:`avperception.dsp.echo.beam_envelope`).

    Where the STFT tokens blur an echo's delay over a 16 ms window, these keep it to
    ``echo_hop`` samples (4 samples = 4.3 cm of range at 16 kHz); the beams add its direction.
    """

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        emitted = np.asarray(cfg.emitted)
        self.hop = cfg.echo_hop
        beams = None
        if cfg.echo_beams:
            dirs = horizon(360.0 / cfg.echo_beams).vectors  # (beams, 3), in the array's plane
            beams = torch.from_numpy(beam_kernels(np.asarray(cfg.array_positions), dirs, cfg.sample_rate,
                                                  sweep_band(emitted), cfg.speed_of_sound))
        self.register_buffer("beams", beams, persistent=False)
        channels = cfg.num_mics + cfg.echo_beams
        self.norm = nn.BatchNorm1d(channels)
        k = cfg.echo_patch // cfg.echo_hop
        self.proj = nn.Conv1d(channels, cfg.dim, kernel_size=k, stride=k)
        self.pos = nn.Parameter(torch.zeros(1, cfg.num_echo_tokens, cfg.dim))
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, iq: torch.Tensor) -> torch.Tensor:
        """``iq (B, M, 2, N)``: every mic's analytic matched filter (:func:`~avperception.dsp.echo.matched_iq`)."""
        e = log_envelope(iq, self.hop)  # (B, M, N // hop)
        if self.beams is not None:  # fixed by the config
            e = torch.cat([e, beam_envelope(iq, self.beams, self.hop)], dim=1)  # (B, M + beams, N // hop)
        return self.proj(self.norm(e)).transpose(1, 2) + self.pos


# ----------------------------------------------------------------------------- encoder


class TimePatchEmbed(nn.Module):
    """``(B, C, F, T)`` -> ``(B, T // p, D)``: one token per time patch of all frequencies."""

    def __init__(self, cfg: StudentConfig, num_freq: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(cfg.in_channels)
        self.proj = nn.Conv2d(cfg.in_channels, cfg.dim, kernel_size=(num_freq, cfg.patch_frames),
                              stride=(num_freq, cfg.patch_frames))
        self.pos = nn.Parameter(torch.zeros(1, cfg.num_tokens, cfg.dim))
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.norm(feats))  # (B, D, 1, T')
        return x.flatten(2).transpose(1, 2) + self.pos


class Attention(nn.Module):
    """Multi-head attention with explicit matmuls (exports cleanly)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = 1.0 / math.sqrt(dim // heads)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, lq, d = query.shape
        lk = context.shape[1]
        h, hd = self.heads, self.head_dim
        q = self.q(query).reshape(b, lq, h, hd).transpose(1, 2)
        k, v = self.kv(context).reshape(b, lk, 2, h, hd).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)
        y = (self.drop(att) @ v).transpose(1, 2).reshape(b, lq, d)
        return self.out(y)


class Block(nn.Module):
    """Pre-norm transformer block (self- or cross-attention + MLP)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n1 = nn.LayerNorm(dim)
        self.nc = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.n2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        q = self.n1(x)
        c = q if context is None else self.nc(context)
        x = x + self.attn(q, c)
        return x + self.mlp(self.n2(x))


class SAMBlock(nn.Module):
    """Spatial alignment via matching: audio tokens ``(B, L, D)`` -> visual layout ``(B, V, D)``.

    ``K`` learnable spatial embeddings ``p_k`` of shape ``(V, D)``. For each
    position ``l``: similarity ``T_k(l) = max_j p_k(l) . W a_j``, softmax over
    ``k``, pooled embedding ``sum_k softmax_k(l) p_k(l)``; then multi-head
    attention with the pooled embedding as queries and the audio tokens as
    keys/values, plus a residual and an MLP.
    """

    def __init__(self, dim: int, positions: int, k: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Parameter(torch.randn(k, positions, dim) * 0.02)
        self.w = nn.Linear(dim, dim, bias=False)
        self.scale = 1.0 / math.sqrt(dim)
        self.refine = Block(dim, heads, dropout)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        k, v, d = self.embed.shape
        a = self.w(audio)  # (B, L, D)
        # plain matrix products: ONNX Runtime runs them faster than the same einsums
        sim = (self.embed.reshape(k * v, d) @ a.transpose(1, 2)).amax(dim=-1) * self.scale  # (B, K * V)
        weights = torch.softmax(sim.reshape(-1, k, v), dim=1)  # (B, K, V)
        pooled = (weights.permute(2, 0, 1) @ self.embed.transpose(0, 1)).transpose(0, 1)  # (B, V, D)
        return self.refine(pooled, audio)


# ----------------------------------------------------------------------------- heads


def up2d(cin: int, cout: int) -> nn.Sequential:
    """x2 upsampling block; circular padding in width (the panorama wraps around in azimuth)."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(cin, cout, 3, padding=1, padding_mode="circular"),
        nn.BatchNorm2d(cout),
        nn.GELU(),
    )


class PanoramaDecoder(nn.Module):
    """Latent ``(B, D, h, w)`` -> ``(B, out, H, W)`` with ``H / h`` a power of two.

    A 1x1 projection to ``width`` channels, then x2 upsampling blocks halving the
    channels (at least 16), then a 3x3 output convolution.
    """

    def __init__(self, dim: int, out: int, scale: int, width: int = 48) -> None:
        super().__init__()
        layers, c = [nn.Conv2d(dim, width, 1), nn.GELU()], width
        for _ in range(int(round(math.log2(scale)))):
            layers.append(up2d(c, max(c // 2, 16)))
            c = max(c // 2, 16)
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(c, out, 3, padding=1, padding_mode="circular")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(z))


def conv_transpose3d_x2(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv_transpose3d(x, weight, bias, stride=2, padding=1)`` for a 4x4x4 kernel, computed as one stride-1
    convolution with a 2x2x2 kernel per output phase (which of the two outputs per input step, along each axis),
    then interleaved: the same numbers, but ONNX Runtime runs this in about two thirds of the time.

    Args:
        x: ``(B, Cin, D, H, W)``.
        weight: ``(Cin, Cout, 4, 4, 4)``, as in ``nn.ConvTranspose3d``.
        bias: ``(Cout,)`` or None.
    Returns:
        ``(B, Cout, 2D, 2H, 2W)``.
    """
    b, _, d, h, w = x.shape
    cout = weight.shape[1]
    # along one axis, output 2m is x[m - 1] w[3] + x[m] w[1] and output 2m + 1 is x[m] w[2] + x[m + 1] w[0]:
    # over the input padded by one, a 2-tap convolution whose window starts at m (phase 0) or at m + 1 (phase 1)
    taps = ([3, 1], [2, 0])
    phases = [(pz, py, px) for pz in (0, 1) for py in (0, 1) for px in (0, 1)]
    k = torch.cat([weight[:, :, taps[pz]][:, :, :, taps[py]][:, :, :, :, taps[px]] for pz, py, px in phases], dim=1)
    y = F.conv3d(F.pad(x, (1, 1, 1, 1, 1, 1)), k.transpose(0, 1))  # (B, 8 Cout, D + 1, H + 1, W + 1)
    layers = []
    for pz in (0, 1):  # interleave y and x with a 2-D pixel shuffle, then z by stacking
        s = [y[:, i * cout:(i + 1) * cout, pz:pz + d, py:py + h, px:px + w]
             for i, (qz, py, px) in enumerate(phases) if qz == pz]  # 4 x (B, Cout, D, H, W)
        s = torch.stack(s, dim=3).reshape(b, cout * d * 4, h, w)  # channels (Cout, D, py, px)
        layers.append(F.pixel_shuffle(s, 2).reshape(b, cout, d, 2 * h, 2 * w))
    y = torch.stack(layers, dim=3).reshape(b, cout, 2 * d, 2 * h, 2 * w)
    return y if bias is None else y + bias[:, None, None, None]


class UpConv3d(nn.ConvTranspose3d):
    """x2 upsampling ``nn.ConvTranspose3d(cin, cout, 4, stride=2, padding=1)`` (same parameters) that runs as
    :func:`conv_transpose3d_x2`."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_transpose3d_x2(x, self.weight, self.bias)


def conv3d_k3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv3d(x, weight, bias, padding=1)`` for a 3x3x3 kernel, computed as a 2-D convolution of every depth
    slice with the kernel's three planes, then summed over neighbouring slices: the same numbers, but ONNX
    Runtime's 2-D convolutions are faster than its 3-D ones.

    Args:
        x: ``(B, Cin, D, H, W)``.
        weight: ``(Cout, Cin, 3, 3, 3)``, as in ``nn.Conv3d``.
        bias: ``(Cout,)`` or None.
    Returns:
        ``(B, Cout, D, H, W)``.
    """
    b, cin, d, h, w = x.shape
    cout = weight.shape[0]
    planes = weight.permute(2, 0, 1, 3, 4).reshape(3 * cout, cin, 3, 3)  # (plane dz, Cout) x Cin x 3 x 3
    y = F.conv2d(x.transpose(1, 2).reshape(b * d, cin, h, w), planes, padding=1).reshape(b, d, 3, cout, h, w)
    y = F.pad(y, (0, 0, 0, 0, 0, 0, 0, 0, 1, 1))  # a zero slice before the first and after the last
    # output slice z takes slice z - 1 through plane 0, slice z through plane 1 and slice z + 1 through plane 2
    y = y[:, :-2, 0] + y[:, 1:-1, 1] + y[:, 2:, 2]  # (B, D, Cout, H, W)
    y = y.transpose(1, 2)
    return y if bias is None else y + bias[:, None, None, None]


class SliceConv3d(nn.Conv3d):
    """``nn.Conv3d(cin, cout, 3, padding=1)`` (same parameters) that runs as :func:`conv3d_k3`."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv3d_k3(x, self.weight, self.bias)


class VoxelDecoder(nn.Module):
    """Latent ``(B, V, D)`` -> occupancy logits ``(B, S, S, S)`` (z, y, x): a fully connected layer to a
    ``48 x 4^3`` grid, then x2 transposed 3-D convolutions halving the channels, then a 3x3x3 convolution."""

    def __init__(self, dim: int, positions: int, size: int) -> None:
        super().__init__()
        self.base = 4
        self.ch = 48
        self.squeeze = nn.Linear(dim, 2)
        self.fc = nn.Linear(2 * positions, self.ch * self.base**3)
        layers, c = [], self.ch
        for _ in range(int(round(math.log2(size // self.base)))):
            layers += [UpConv3d(c, c // 2), nn.BatchNorm3d(c // 2), nn.GELU()]
            c //= 2
        layers.append(SliceConv3d(c, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b = z.shape[0]
        x = self.fc(self.squeeze(z).reshape(b, -1)).reshape(b, self.ch, self.base, self.base, self.base)
        return self.body(F.gelu(x))[:, 0]


class PlanDecoder(nn.Module):
    """Latent ``(B, V, D)`` -> occupancy logits ``(B, S, S, S)`` (z, y, x), decoded over the floor plan.

    A fully connected layer to a ``96 x 4 x 4`` plan, x2 upsampling blocks (3x3 convolution to four times the
    next width, 64 then 32, pixel shuffle, BatchNorm, GELU) up to ``S x S``, and a 3x3 convolution whose ``S``
    output channels are the heights. Rooms are mostly vertical (walls, boxes standing on the floor) and
    horizontal (floor, ceiling) planes, which this factorisation holds with 2-D convolutions only.
    """

    def __init__(self, dim: int, positions: int, size: int) -> None:
        super().__init__()
        self.base = 4
        stages = int(round(math.log2(max(size, 1) / self.base)))
        if stages < 1 or self.base * 2 ** stages != size:
            raise ValueError(f"PlanDecoder: voxel size {size} is not {self.base} x a power of two")
        widths = ([96, 64] + [32] * stages)[:stages + 1]
        self.ch = widths[0]
        self.squeeze = nn.Linear(dim, 2)
        self.fc = nn.Linear(2 * positions, self.ch * self.base ** 2)
        layers = []
        for a, b in zip(widths, widths[1:]):
            layers += [nn.Conv2d(a, 4 * b, 3, padding=1), nn.PixelShuffle(2), nn.BatchNorm2d(b), nn.GELU()]
        layers.append(nn.Conv2d(widths[-1], size, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b = z.shape[0]
        x = self.fc(self.squeeze(z).reshape(b, -1)).reshape(b, self.ch, self.base, self.base)
        return self.body(F.gelu(x))


VOXEL_DECODERS = {"3d": VoxelDecoder, "plan": PlanDecoder}


# ----------------------------------------------------------------------------- room layout


def layout_depth(walls: torch.Tensor, heights: torch.Tensor, sin_el: torch.Tensor, cos_el: torch.Tensor,
                 max_depth: float) -> torch.Tensor:
    """Render a room layout into a depth panorama.

    Args:
        walls: ``(B, W)`` horizontal distance (m) to the wall seen in each panorama column.
        heights: ``(B, 2)`` distance (m) of the floor below and of the ceiling above the array.
        sin_el, cos_el: ``(H,)`` sine and cosine of each panorama row's elevation.
        max_depth: the farthest depth returned.
    Returns:
        ``(B, H, W)`` range along each pixel's ray to the nearest of the column's wall
        (``walls / cos el``), the floor (``h_floor / -sin el``, below the horizon) and the
        ceiling (``h_ceiling / sin el``, above it), at most ``max_depth``.
    """
    far = torch.full_like(sin_el, 1e4)
    wall = walls[:, None, :] / cos_el.clamp_min(1e-4)[None, :, None]
    floor = torch.where(sin_el < 0, heights[:, :1] / (-sin_el).clamp_min(1e-4), far)  # (B, H)
    ceiling = torch.where(sin_el > 0, heights[:, 1:] / sin_el.clamp_min(1e-4), far)
    planes = torch.minimum(floor, ceiling)[:, :, None]
    return torch.minimum(wall, planes).clamp_max(max_depth)


def with_obstacles(room: torch.Tensor, semantic: torch.Tensor, obstacle_depth: torch.Tensor, obstacle_class: int
                   ) -> torch.Tensor:
    """The depth: the room's ``(B, H, W)`` (m, :func:`layout_depth`), and the decoder's ``obstacle_depth (B, H, W)``
    where the semantic head (``semantic (B, C, H, W)`` logits) hears an obstacle, weighed by its probability.

    No depth gradient goes into the semantic head, and an obstacle never lies behind the room's surface: it stands
    in front of the wall, floor or ceiling it hides. (The obstacle's softmax probability is taken as
    ``1 / sum_c exp(l_c - l_obstacle)``: ONNX Runtime is slow to softmax over channels.)"""
    sem = semantic.detach()
    obstacle = 1.0 / torch.exp(sem - sem[:, obstacle_class:obstacle_class + 1]).sum(dim=1)
    return room + obstacle * (torch.minimum(obstacle_depth, room) - room)


def plane_walls(support: torch.Tensor, interp: torch.Tensor, log_cos: torch.Tensor, tau: float = 0.02
                ) -> torch.Tensor:
    """Walls of a room given as planes: each column's distance to the nearest plane along its ray.

    Args:
        support: ``(B, A)`` distance (m) of the wall plane facing each of ``A`` equally spaced azimuths
            (the room's support function: for a convex room, how far it reaches in that direction).
        interp: ``(A, K)`` interpolation to ``K`` finer plane normals (:func:`_circular_interp`).
        log_cos: ``(K, W)`` log cosine between each plane's normal and each column's azimuth, ``-inf``-like
            (very negative) where the plane faces away (:func:`_plane_log_cos`).
        tau: softness of the minimum, in log distance (0.02: within about 2 %).
    Returns:
        ``(B, W)`` horizontal distance per column: the soft minimum over planes of ``support / cos``.
    """
    t = torch.log(support.clamp_min(1e-3) @ interp)[:, :, None] - log_cos  # (B, K, W) log distance to each plane
    return torch.exp(-tau * torch.logsumexp(-t / tau, dim=1))


def known_floor(heard: dict[str, torch.Tensor], array_height: torch.Tensor) -> torch.Tensor:
    """The layout head's ``heights (B, 2)`` (floor, ceiling) with the floor the robot knows: where ``array_height
    (B,)`` is positive (m) the floor is that far below the array, and with ordered heights (``height_pair`` in
    ``heard``) the ceiling is whichever of the heard pair lies farther from it in log distance. A planar ring hears
    the floor and the ceiling as mirror images, so above half the room's height it can only guess which is which
    (:class:`LayoutHead`); a robot knows where its array is mounted. Elsewhere (0 or less: unknown) as heard.

    The heard ``floor_nearer`` stays as it is: its doubt goes on to the uncertainty head, which was trained with it
    and whose near bound stays as cautious as without the height (in the rooms the ring hears as mirror images,
    the walls are doubtful too)."""
    h = array_height.reshape(-1)
    if h.dtype != heard["heights"].dtype:  # (no Cast in the graph where none is needed: float16 converters lose it)
        h = h.to(heard["heights"].dtype)
    known = h > 0
    floor = torch.where(known, h, heard["heights"][:, 0])
    ceiling = heard["heights"][:, 1]
    if "height_pair" in heard:
        pair = heard["height_pair"]
        gap = (torch.log(pair) - torch.log(h.clamp_min(1e-3))[:, None]).abs()
        ceiling = torch.where(known, torch.where(gap[:, 0] <= gap[:, 1], pair[:, 1], pair[:, 0]), ceiling)
    return torch.stack([floor, ceiling], dim=1)


def _plane_log_cos(k: int, w: int, min_cos: float = 0.1) -> np.ndarray:
    """``(k, w)`` log cosine between ``k`` plane normals and ``w`` column azimuths, both at cell centres of the
    same full turn; -30 (a plane e^30 times farther than its distance) where the cosine is below ``min_cos``."""
    d = 2 * np.pi * ((np.arange(w)[None, :] + 0.5) / w - (np.arange(k)[:, None] + 0.5) / k)
    c = np.cos(d)
    return np.where(c >= min_cos, np.log(np.maximum(c, min_cos)), -30.0).astype(np.float32)


def panorama_elevations(h: int, el_min_deg: float, el_max_deg: float) -> np.ndarray:
    """``(h,)`` elevation (rad) of each panorama row's centre, from the top row (``el_max_deg``) down."""
    return np.deg2rad(el_max_deg - (np.arange(h) + 0.5) * (el_max_deg - el_min_deg) / h)


def _circular_interp(n: int, w: int) -> np.ndarray:
    """``(n, w)`` weights: values at ``n`` equally spaced azimuths -> ``w`` columns (``w`` a multiple of ``n``),
    linear and wrapping around; both sit at cell centres of the same full turn."""
    x = (np.arange(w) + 0.5) * n / w - 0.5  # each column's position in beam units
    lo = np.floor(x).astype(int)
    frac = x - lo
    m = np.zeros((n, w))
    m[lo % n, np.arange(w)] += 1.0 - frac
    m[(lo + 1) % n, np.arange(w)] += frac
    return m.astype(np.float32)


class PolarConv(nn.Module):
    """Convolution over an ``(azimuth, range)`` image ``(B, C, A, R)``: wraps around in azimuth, zero-padded and
    strided by 2 in range; BatchNorm and GELU."""

    def __init__(self, cin: int, cout: int, k_range: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, (3, k_range), stride=(1, 2), padding=(0, k_range // 2))
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[:, :, -1:], x, x[:, :, :1]], dim=2)
        return F.gelu(self.norm(self.conv(x)))


class LayoutHead(nn.Module):
    """Matched filters ``(B, M, 2, N)`` -> ``walls (B, W)`` horizontal wall distance (m) per panorama column and
    ``heights (B, 2)`` floor below / ceiling above the array (m).

    A vertical wall returns its first echo along its normal, so the matched filters beamformed towards
    ``layout_beams`` azimuths in the array's plane form an (azimuth, range) image in which each wall is a
    peak at its normal and distance; the upward (broadside) beam, which a planar ring cannot tell from the
    downward one, carries the floor and ceiling echoes and joins every azimuth as a second channel.
    Five polar convolutions reduce range 32-fold; each azimuth becomes a token, and attention across the
    azimuths (plus one summary token) turns the walls' normals into the distance at every azimuth: a soft
    choice among ``layout_bins`` log-spaced distances, interpolated to the panorama's columns. The summary
    token gives the two heights: directly, or (``layout_heights: ordered``) as the nearer and the farther of
    the two plus a logit that the floor is the nearer, which picks the floor. A planar array cannot tell the
    floor's echo from the ceiling's, so when the array is above half the room's height the order is a guess;
    the two distances stay sharp, and the logit's doubt goes to the uncertainty head.
    """

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        emitted = np.asarray(cfg.emitted)
        dirs = np.concatenate([horizon(360.0 / cfg.layout_beams).vectors, [[0.0, 0.0, 1.0]]])
        self.register_buffer("beams", torch.from_numpy(beam_kernels(np.asarray(cfg.array_positions), dirs,
                                                                    cfg.sample_rate, sweep_band(emitted),
                                                                    cfg.speed_of_sound)), persistent=False)
        self.hop = cfg.echo_hop
        self.norm = nn.BatchNorm2d(2)
        chans, r = [2, 8, 16, 24, 32, 32], cfg.num_samples // cfg.echo_hop
        self.cnn = nn.Sequential(*[PolarConv(a, b, k) for a, b, k in zip(chans, chans[1:], (7, 5, 5, 5, 3))])
        for _ in range(5):
            r = (r + 1) // 2
        self.tokens = nn.Linear(chans[-1] * r, cfg.dim)
        self.pos = nn.Parameter(torch.zeros(1, cfg.layout_beams + 1, cfg.dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.summary = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.blocks = nn.ModuleList([Block(cfg.dim, cfg.heads, cfg.dropout) for _ in range(3)])
        self.bins = nn.Linear(cfg.dim, cfg.layout_bins)
        self.register_buffer("log_bins", torch.linspace(math.log(cfg.layout_min_m), math.log(cfg.max_depth),
                                                        cfg.layout_bins), persistent=False)
        self.planes = cfg.layout_planes
        # the beams' distances go to the columns, or to four plane normals per beam (each column at its nearest)
        k = 4 * cfg.layout_beams if self.planes else cfg.pano_w
        self.register_buffer("to_columns", torch.from_numpy(_circular_interp(cfg.layout_beams, k)), persistent=False)
        if self.planes:
            self.register_buffer("log_cos", torch.from_numpy(_plane_log_cos(k, cfg.pano_w)), persistent=False)
        self.ordered = cfg.layout_heights == "ordered"
        self.heights = nn.Linear(cfg.dim, 3 if self.ordered else 2)
        with torch.no_grad():  # start near a typical robot: array 0.75 m up, ceiling 2 m above it, the floor nearer
            self.heights.weight.mul_(0.1)
            self.heights.bias.copy_(torch.tensor([math.log(0.75), math.log(2.0)] + ([2.0] if self.ordered else [])))

    def forward(self, iq: torch.Tensor, with_spread: bool = False,
                array_height: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``iq (B, M, 2, N)`` -> ``walls (B, W)``, ``heights (B, 2)`` (floor, ceiling) and, with ``with_spread``,
        ``spread (B, A)``: the standard deviation of log distance under each azimuth's soft choice of bins (how
        sure it is); with ordered heights also ``height_pair (B, 2)`` (the nearer and the farther, m) and
        ``floor_nearer (B,)`` (the logit that the floor is the nearer).

        ``array_height (B,)``: the array's height above the floor where the robot knows it (m; 0 or less: unknown),
        which :func:`known_floor` puts in place of the heard floor."""
        e = beam_envelope(iq, self.beams, self.hop)  # (B, A + 1, R)
        horiz, up = e[:, :-1], e[:, -1:].expand(-1, e.shape[1] - 1, -1)
        x = self.cnn(self.norm(torch.stack([horiz, up], dim=1)))  # (B, C, A, R')
        x = self.tokens(x.permute(0, 2, 1, 3).flatten(2))  # (B, A, D)
        x = torch.cat([self.summary.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        for blk in self.blocks:
            x = blk(x)
        probs = torch.softmax(self.bins(x[:, 1:]), dim=-1)  # (B, A, bins)
        log_dist = (probs * self.log_bins).sum(-1)  # (B, A)
        dist = log_dist.exp()
        h = self.heights(x[:, 0])
        if self.ordered:
            a, b = h[:, :1].clamp(-3.0, 3.0).exp(), h[:, 1:2].clamp(-3.0, 3.0).exp()
            pair = torch.cat([torch.minimum(a, b), torch.maximum(a, b)], dim=1)  # (B, 2): nearer, farther
            floor_nearer = h[:, 2]
            out = {"heights": torch.where(floor_nearer[:, None] >= 0, pair, torch.cat([pair[:, 1:], pair[:, :1]], 1)),
                   "height_pair": pair, "floor_nearer": floor_nearer}
        else:
            out = {"heights": h.clamp(-3.0, 3.0).exp()}
        if array_height is not None:
            out["heights"] = known_floor(out, array_height)
        out["walls"] = plane_walls(dist, self.to_columns, self.log_cos) if self.planes else dist @ self.to_columns
        if with_spread:  # fixed by the caller's config, not by the data
            out["spread"] = ((probs * (self.log_bins - log_dist[..., None]) ** 2).sum(-1) + 1e-8).sqrt()
        return out


# ----------------------------------------------------------------------------- depth uncertainty


class UncertaintyHead(nn.Module):
    """Per-pixel uncertainty of the depth: ``(B, H, W)`` log Laplace scale ``s`` of log depth, trained with
    :func:`laplace_nll` (``|log p - log g| exp(-s) + s``, least where ``exp(s)`` is the expected ``|log p - log g|``).

    It reads, all detached (it never changes the other outputs, and trains alone on a frozen network): the
    panorama decoder's last features ``(B, F, H, W)``, log depth, the classes' log-probabilities, each row's
    elevation and, with a layout head, the log room depth, its difference from the depth and the layout head's
    spread over its distance bins at each column (how sure each azimuth's wall is) and, with ordered heights,
    its doubt that the floor is the nearer of floor and ceiling (``1 - |2 p - 1|``). A 1x1 convolution, a 3x3
    one (circular padding, as the decoder's) and a 1x1 one; about 1.6 k parameters, 11 M multiply-adds.

    A calibrated head (``cfg.uncertainty_calibration``, :meth:`calibrate`) adds ``log c + k log d`` to the log scale,
    one ``(log c, k)`` where the array's height is heard and one where it is given.
    """

    def __init__(self, cfg: StudentConfig, features: int, width: int = 16) -> None:
        super().__init__()
        self.layout = bool(cfg.layout_beams)
        self.order = self.layout and cfg.layout_heights == "ordered"
        cin = features + 2 + cfg.num_classes + (3 if self.layout else 0) + (1 if self.order else 0)
        self.body = nn.Sequential(nn.Conv2d(cin, width, 1), nn.GELU(),
                                  nn.Conv2d(width, width // 2, 3, padding=1, padding_mode="circular"), nn.GELU(),
                                  nn.Conv2d(width // 2, 1, 1))
        with torch.no_grad():  # start at a relative error of about 15 % everywhere
            self.body[-1].weight.mul_(0.1)
            self.body[-1].bias.fill_(math.log(0.15))
        el = panorama_elevations(cfg.pano_h, cfg.el_min_deg, cfg.el_max_deg)
        self.register_buffer("sin_el", torch.from_numpy(np.sin(el).astype(np.float32))[None, None, :, None],
                             persistent=False)
        spread_cols = _circular_interp(cfg.layout_beams, cfg.pano_w) if self.layout else np.zeros((0, 0), np.float32)
        self.register_buffer("spread_columns", torch.from_numpy(spread_cols), persistent=False)
        self.register_buffer("calibration", torch.zeros(2, 2), persistent=False)
        self.calibrated = False
        self.calibrate(cfg.uncertainty_calibration)

    def calibrate(self, rows) -> None:
        """Use ``rows`` ``[[log c, k] heard, [log c, k] given]`` (empty or None: none) from now on."""
        self.calibrated = bool(rows)
        with torch.no_grad():
            self.calibration.copy_(torch.as_tensor(rows if rows else [[0.0, 0.0]] * 2, dtype=torch.float32))

    def forward(self, features: torch.Tensor, depth: torch.Tensor, semantic: torch.Tensor,
                room: torch.Tensor | None = None, spread: torch.Tensor | None = None,
                floor_nearer: torch.Tensor | None = None, array_height: torch.Tensor | None = None) -> torch.Tensor:
        """``features (B, F, H, W)``, ``depth (B, H, W)`` m, ``semantic (B, C, H, W)`` logits; with a layout head
        ``room (B, H, W)`` m and ``spread (B, A)``, with ordered heights ``floor_nearer (B,)`` (logit);
        ``array_height (B,)`` m, 0 or less: heard (which calibration row applies) -> ``(B, H, W)`` log scale,
        in [-6, 2]."""
        log_d = torch.log(depth.detach().clamp_min(1e-3))[:, None]
        sem = semantic.detach()
        parts = [features.detach(), log_d, sem - torch.logsumexp(sem, dim=1, keepdim=True),
                 self.sin_el.expand(depth.shape[0], 1, -1, depth.shape[-1])]
        if self.layout:
            log_room = torch.log(room.detach().clamp_min(1e-3))[:, None]
            cols = (spread.detach() @ self.spread_columns)[:, None, None, :].expand(-1, 1, depth.shape[1], -1)
            parts += [log_room, log_room - log_d, cols]
        if self.order:
            doubt = 1.0 - torch.tanh(0.5 * floor_nearer.detach()).abs()  # 1 - |2 sigmoid - 1|
            parts.append(doubt[:, None, None, None].expand(-1, 1, depth.shape[1], depth.shape[2]))
        s = self.body(torch.cat(parts, dim=1))[:, 0]
        if self.calibrated:
            cal = self.calibration.to(s.dtype)
            row = cal[0].expand(s.shape[0], 2)
            if array_height is not None:
                given = (array_height.reshape(-1) > 0)[:, None]
                row = torch.where(given, cal[1], row)
            s = s + row[:, 0, None, None] + row[:, 1, None, None] * log_d[:, 0]
        return s.clamp(-6.0, 2.0)


def depth_std(depth: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Standard deviation (m) of the depth from the Laplace scale ``exp(log_scale)`` of its log, to first order:
    ``depth * sqrt(2) * exp(log_scale)`` (a Laplace's standard deviation is sqrt(2) times its scale)."""
    return depth * (math.sqrt(2.0) * torch.exp(log_scale))


def laplace_nll(pred: torch.Tensor, target: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood (without its constant log 2) of ``log target`` under a Laplace centred on
    ``log pred`` with scale ``exp(log_scale)``: ``|log p - log g| exp(-s) + s``; all ``(N,)``, ``pred`` detached
    (the uncertainty learns how far the depth is off, never moves the depth)."""
    err = (torch.log(pred.detach().clamp_min(1e-3)) - torch.log(target.clamp_min(1e-3))).abs()
    return (err * torch.exp(-log_scale) + log_scale).mean()


# ----------------------------------------------------------------------------- the model


def sweep_kernels(cfg: StudentConfig) -> torch.Tensor | None:
    """The emitted sweep's quadrature matched-filter kernels (:func:`~avperception.dsp.echo.quadrature_kernels`)
    when the config has echogram tokens, else None."""
    return torch.from_numpy(quadrature_kernels(np.asarray(cfg.emitted))) if cfg.echo_hop else None


class AudioEncoder(nn.Module):
    """``audio (B, M, N)`` -> encoded tokens ``(B, T, D)``, the audio half every audio network here shares: the
    spectrogram tokens (``frontend``, ``embed``), the echogram tokens (``echo``, with ``cfg.echo_hop``), then the
    transformer (``encoder``). :class:`AudioStudent` and the manifold's AT-net
    (``avperception_train.learn.teachers.ATNet``) are subclasses that add their own heads; the shared parts keep
    these names at the top of their state dicts (``frontend.*``, ``embed.*``, ``echo.*``, ``encoder.*``)."""

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.frontend = EchoFrontend(cfg)
        self.embed = TimePatchEmbed(cfg, cfg.nfft // 2 + 1)
        self.register_buffer("sweep", sweep_kernels(cfg), persistent=False)  # (2, 1, L) or None
        self.echo = EchogramEmbed(cfg) if cfg.echo_hop else None
        self.build_iq_heads(cfg)
        self.encoder = nn.ModuleList([Block(cfg.dim, cfg.heads, cfg.dropout) for _ in range(cfg.depth)])

    def build_iq_heads(self, cfg: StudentConfig) -> None:
        """Where a subclass builds its heads that read the matched filters beside the tokens (the student's layout
        head); none here. They are built after the token streams and before the transformer: the order of
        construction fixes which random numbers each weight draws from a seed, and the state dict's order."""

    def matched_filters(self, audio: torch.Tensor) -> torch.Tensor | None:
        """``audio (B, M, N)`` -> the matched filters ``(B, M, 2, N)`` with the emitted sweep, or None without
        echogram tokens (fixed by the config, not by the data: one graph either way)."""
        return matched_iq(audio, self.sweep) if self.cfg.echo_hop else None

    def tokens(self, audio: torch.Tensor, iq: torch.Tensor | None = None) -> torch.Tensor:
        """``audio (B, M, N)`` -> encoded tokens ``(B, T, D)``, ``T = cfg.num_tokens + cfg.num_echo_tokens``: the
        spectrogram tokens, then the echogram tokens when the config has them, through the transformer;
        ``iq``: the matched filters ``(B, M, 2, N)``, when already computed."""
        x = self.embed(self.frontend(audio))  # (B, T', D)
        if self.echo is not None:
            x = torch.cat([x, self.echo(self.matched_filters(audio) if iq is None else iq)], dim=1)
        for blk in self.encoder:
            x = blk(x)
        return x


def decode_latent(latent: torch.Tensor, cfg: StudentConfig, pano: PanoramaDecoder, voxels: nn.Module
                  ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Latent ``(B, V, D)``, ``V = latent_h * latent_w``, through a panorama decoder (``1 + C + 1`` channels) and a
    voxel decoder -> (``depth (B, H, W)`` m, ``semantic (B, C, H, W)`` logits, ``energy (B, H, W)``,
    ``voxels (B, S, S, S)`` logits; the panorama decoder's last features ``(B, F, H, W)``). The student and the
    visual teacher decode with this: the same heads give the same output conventions."""
    b = latent.shape[0]
    grid = latent.transpose(1, 2).reshape(b, cfg.dim, cfg.latent_h, cfg.latent_w)
    features = pano.body(grid)
    p = pano.head(features)
    out = {
        "depth": torch.sigmoid(p[:, 0]) * cfg.max_depth,
        "semantic": p[:, 1: 1 + cfg.num_classes],
        "energy": F.softplus(p[:, 1 + cfg.num_classes]),
        "voxels": voxels(latent),
    }
    return out, features


class AudioStudent(AudioEncoder):
    """``audio (B, M, N)`` -> dict of ``depth (B, H, W)`` m, ``semantic (B, C, H, W)`` logits,
    ``voxels (B, S, S, S)`` logits, ``energy (B, H, W)``, ``latent (B, V, D)`` (for distillation) and,
    with a layout head, ``layout (B, H, W)``: the room's depth without obstacles, rendered from
    ``walls (B, W)`` (each column's horizontal wall distance) and ``heights (B, 2)`` (floor, ceiling),
    ``obstacle_depth (B, H, W)`` (the decoder's own depth, which ``depth`` takes where the semantic head hears an
    obstacle), and with ordered heights ``height_pair (B, 2)`` (nearer, farther) and ``floor_nearer (B,)`` (logit); with
    ``cfg.uncertainty``, ``depth_log_scale (B, H, W)`` (:class:`UncertaintyHead`) and ``depth_uncertainty (B, H, W)``
    (the depth's standard deviation, m, :func:`depth_std`).

    Its audio half (token streams and transformer, :meth:`tokens`) is :class:`AudioEncoder`'s."""

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__(cfg)  # frontend, embed, echo, then build_iq_heads (the layout head), then encoder
        positions = cfg.latent_h * cfg.latent_w
        self.sam = SAMBlock(cfg.dim, positions, cfg.sam_k, cfg.heads, cfg.dropout)
        scale = cfg.pano_h // cfg.latent_h
        self.pano = PanoramaDecoder(cfg.dim, 1 + cfg.num_classes + 1, scale, cfg.decoder_width)
        self.voxels = VOXEL_DECODERS[cfg.voxel_decoder](cfg.dim, positions, cfg.voxel_size)
        self.uncertainty = UncertaintyHead(cfg, self.pano.head.in_channels) if cfg.uncertainty else None

    def build_iq_heads(self, cfg: StudentConfig) -> None:
        """The layout head, which reads the matched filters, and the panorama rows' elevations it renders with."""
        self.layout = LayoutHead(cfg) if cfg.layout_beams else None
        el = panorama_elevations(cfg.pano_h, cfg.el_min_deg, cfg.el_max_deg)
        self.register_buffer("sin_el", torch.from_numpy(np.sin(el).astype(np.float32)), persistent=False)
        self.register_buffer("cos_el", torch.from_numpy(np.cos(el).astype(np.float32)), persistent=False)

    def encode(self, audio: torch.Tensor, iq: torch.Tensor | None = None) -> torch.Tensor:
        """Audio -> spatially aligned latent ``(B, V, D)``; ``iq``: its matched filters, when already computed."""
        return self.sam(self.tokens(audio, iq))

    def decode(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        """Latent ``(B, V, D)`` -> ``depth``, ``semantic``, ``energy``, ``voxels`` (:func:`decode_latent`) and,
        with an uncertainty head, ``pano_features (B, F, H, W)`` for it to read."""
        out, features = decode_latent(latent, self.cfg, self.pano, self.voxels)
        if self.uncertainty is not None:
            out["pano_features"] = features
        return out

    def forward(self, audio: torch.Tensor, array_height: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``audio (B, M, N)``; ``array_height (B,)``: the array's height above the floor where known (m; 0 or
        less: unknown), rendered as the floor's distance (:func:`known_floor`; ignored without a layout head)."""
        cfg = self.cfg
        iq = self.matched_filters(audio)  # (B, M, 2, N) or None
        latent = self.encode(audio, iq)
        out = self.decode(latent)
        out["latent"] = latent
        lay: dict[str, torch.Tensor] = {}
        if self.layout is not None:
            lay = self.layout(iq, with_spread=self.uncertainty is not None, array_height=array_height)
            walls, heights = lay["walls"], lay["heights"]
            room = layout_depth(walls, heights, self.sin_el, self.cos_el, cfg.max_depth)
            out["obstacle_depth"] = out["depth"]
            out["depth"] = with_obstacles(room, out["semantic"], out["obstacle_depth"], cfg.obstacle_class)
            out.update(layout=room, walls=walls, heights=heights)
            if "floor_nearer" in lay:
                out.update(height_pair=lay["height_pair"], floor_nearer=lay["floor_nearer"])
        if self.uncertainty is not None:
            s = self.uncertainty(out.pop("pano_features"), out["depth"], out["semantic"], out.get("layout"),
                                 lay.get("spread"), lay.get("floor_nearer"),
                                 array_height if self.layout is not None else None)
            out.update(depth_log_scale=s, depth_uncertainty=depth_std(out["depth"].detach(), s))
        return out

    def set_uncertainty_calibration(self, rows) -> None:
        """Calibrate the depth uncertainty with ``rows`` (``StudentConfig.uncertainty_calibration``; empty or None:
        as trained), in the config saved with the weights and in the head."""
        if self.uncertainty is None:
            raise ValueError("the student has no uncertainty head to calibrate")
        rows = [[float(v) for v in row] for row in rows] if rows else []
        self.cfg = replace(self.cfg, uncertainty_calibration=rows)  # validated there
        self.uncertainty.calibrate(rows)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, extra: dict | None = None) -> None:
        """Weights as safetensors plus the config (and ``extra`` metadata) as JSON beside them."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {"config": json.dumps(asdict(self.cfg)), "extra": json.dumps(extra or {})}
        save_file(state, str(path.with_suffix(".safetensors")), metadata=meta)
        path.with_suffix(".json").write_text(json.dumps({"config": asdict(self.cfg), **(extra or {})}, indent=2))

    @classmethod
    def load(cls, path: str | Path, map_location: str = "cpu") -> "AudioStudent":
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path).with_suffix(".safetensors")
        if not path.exists():
            raise FileNotFoundError(f"no model weights at {path}")
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if "config" not in meta:
            raise ValueError(f"{path} carries no model config; it was not written by AudioStudent.save")
        model = cls(config_from_saved(json.loads(meta["config"]), path))
        model.load_state_dict(load_file(str(path), device=map_location))
        return model.eval()
