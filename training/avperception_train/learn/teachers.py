"""Teachers that see the geometry, for the audio student to learn from.

- ``VisualTeacher``: reads the ground-truth views (depth + semantic panorama),
  encodes them to the same latent layout ``(B, V, D)`` the student's SAM block
  produces, and decodes them with decoders shaped like the student's
  (``decode_latent``, the same output conventions). Trained on the
  labels; its latent features are what the student aligns to, and its outputs
  are the student's pseudo ground truth (the dense-prediction paper's recipe).
- ``VQVAE`` + ``ATNet``: the manifold paper's two stages. The VQ-VAE learns the
  manifold of one visual modality (depth panoramas); the audio transformation
  network (the student's ``AudioEncoder`` with its own MLP and up-convolutions)
  regresses the continuous, unquantised latent from audio with plain L2,
  and the frozen decoder turns it into a depth map. ``DepthATNet`` is the same
  network trained end to end on the depth labels, without the VQ-VAE.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from avperception.models.student import (AudioEncoder, Block, PanoramaDecoder, SAMBlock, StudentConfig, VoxelDecoder,
                                         decode_latent)


def down2d(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, padding_mode="circular"),
                         nn.BatchNorm2d(cout), nn.GELU(),
                         nn.Conv2d(cout, cout, 3, padding=1, padding_mode="circular"), nn.BatchNorm2d(cout), nn.GELU())


def geometry_input(depth: torch.Tensor, semantic: torch.Tensor, num_classes: int, max_depth: float) -> torch.Tensor:
    """``depth (B, H, W)`` m (NaN unknown) and ``semantic (B, H, W)`` labels -> ``(B, 2 + C, H, W)``:
    normalised depth, a validity mask, and one-hot classes (the ignore label becomes all zeros)."""
    valid = torch.isfinite(depth)
    d = torch.where(valid, depth, torch.zeros_like(depth)) / max_depth
    onehot = F.one_hot(semantic.long().clamp(0, num_classes), num_classes + 1)[..., :num_classes]
    onehot = onehot.permute(0, 3, 1, 2).float()
    return torch.cat([d[:, None], valid[:, None].float(), onehot], dim=1)


class VisualTeacher(nn.Module):
    """Geometry views -> latent ``(B, V, D)`` -> the student's decoders."""

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        scale = cfg.pano_h // cfg.latent_h
        c, layers = 2 + cfg.num_classes, []
        width = 32
        for _ in range(int(round(math.log2(scale)))):
            layers.append(down2d(c, width))
            c, width = width, width * 2
        layers.append(nn.Conv2d(c, cfg.dim, 1))
        self.encoder = nn.Sequential(*layers)
        self.pos = nn.Parameter(torch.zeros(1, cfg.latent_h * cfg.latent_w, cfg.dim))
        self.mix = nn.ModuleList([Block(cfg.dim, cfg.heads) for _ in range(2)])
        self.pano = PanoramaDecoder(cfg.dim, 1 + cfg.num_classes + 1, scale, cfg.decoder_width)
        self.voxels = VoxelDecoder(cfg.dim, cfg.latent_h * cfg.latent_w, cfg.voxel_size)

    def features(self, depth: torch.Tensor, semantic: torch.Tensor) -> list[torch.Tensor]:
        """Its feature maps at the latent layout, ``(B, V, D)`` each: the convolutions' output, then each
        attention layer's; the last is the latent."""
        x = self.encoder(geometry_input(depth, semantic, self.cfg.num_classes, self.cfg.max_depth))
        xs = [x.flatten(2).transpose(1, 2) + self.pos]
        for blk in self.mix:
            xs.append(blk(xs[-1]))
        return xs

    def encode(self, depth: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        return self.features(depth, semantic)[-1]

    def forward(self, depth: torch.Tensor, semantic: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.features(depth, semantic)
        out, _ = decode_latent(feats[-1], self.cfg, self.pano, self.voxels)  # the student's heads and conventions
        out.update(latent=feats[-1], features=feats)
        return out


class AlignmentHeads(nn.Module):
    """Training-only SAM blocks for alignment in more than one layer (the dense-prediction paper aligns up to
    four): head ``j`` (1, 2, ...) maps the tokens after the student's encoder block ``depth - 1 - j`` onto
    the layout of the teacher's feature map ``-1 - j`` (:meth:`VisualTeacher.features`), with ``sam_k / 4**j``
    spatial embeddings (at least one). The last layer needs no head: the student's own SAM block aligns it.
    Nothing here is part of the exported student."""

    def __init__(self, cfg: StudentConfig, layers: int) -> None:
        super().__init__()
        if not 1 <= layers <= min(cfg.depth, 3):  # the teacher has three feature maps
            raise ValueError(f"feature alignment in {layers} layers: the student's {cfg.depth} encoder blocks and "
                             f"the teacher's 3 feature maps allow 1 to {min(cfg.depth, 3)}")
        positions = cfg.latent_h * cfg.latent_w
        self.blocks = [cfg.depth - 1 - j for j in range(1, layers)]  # the student's encoder blocks they read
        self.heads = nn.ModuleList([SAMBlock(cfg.dim, positions, max(1, cfg.sam_k // 4 ** j), cfg.heads, cfg.dropout)
                                    for j in range(1, layers)])

    def forward(self, tokens: dict[int, torch.Tensor]) -> list[torch.Tensor]:
        """``tokens``: the output ``(B, T, D)`` of each encoder block in ``self.blocks`` -> one ``(B, V, D)``
        per head, aligned with teacher features ``-2, -3, ...``."""
        return [head(tokens[i]) for head, i in zip(self.heads, self.blocks)]


# ----------------------------------------------------------------------------- manifold (VQ-VAE + AT-net)


@dataclass
class VQConfig:
    codes: int = 256
    code_dim: int = 32
    beta: float = 0.25


def code_depth(decoder: PanoramaDecoder, z: torch.Tensor, max_depth: float) -> torch.Tensor:
    """Manifold latent ``(B, code_dim, h, w)`` through a one-channel panorama decoder -> depth ``(B, H, W)`` m in
    ``(0, max_depth)``: the VQ-VAE's and ``DepthATNet``'s output convention."""
    return torch.sigmoid(decoder(z)[:, 0]) * max_depth


class VectorQuantizer(nn.Module):
    """Nearest-codebook quantisation with a straight-through gradient and the usual commitment loss."""

    def __init__(self, codes: int, dim: int, beta: float) -> None:
        super().__init__()
        self.codebook = nn.Embedding(codes, dim)
        self.codebook.weight.data.uniform_(-1 / codes, 1 / codes)
        self.beta = beta

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``z (B, D, h, w)`` unit vectors -> quantised (same shape), loss, code indices ``(B, h, w)``.

        Codes live on the unit sphere too (cosine-similarity lookup), which keeps
        the encoder from drifting away from the codebook.
        """
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        codes = F.normalize(self.codebook.weight, dim=1)
        idx = (flat @ codes.t()).argmax(1)
        q = codes[idx].reshape(b, h, w, d).permute(0, 3, 1, 2)
        loss = F.mse_loss(q, z.detach()) + self.beta * F.mse_loss(z, q.detach())
        return z + (q - z).detach(), loss, idx.reshape(b, h, w)


class VQVAE(nn.Module):
    """Depth panorama ``(B, H, W)`` <-> manifold latent ``(B, code_dim, h, w)``."""

    def __init__(self, cfg: StudentConfig, vq: VQConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.vq_cfg = vq or VQConfig()
        scale = cfg.pano_h // cfg.latent_h
        c, width, layers = 2, 32, []
        for _ in range(int(round(math.log2(scale)))):
            layers.append(down2d(c, width))
            c, width = width, width * 2
        layers.append(nn.Conv2d(c, self.vq_cfg.code_dim, 1))
        self.encoder = nn.Sequential(*layers)
        self.quantizer = VectorQuantizer(self.vq_cfg.codes, self.vq_cfg.code_dim, self.vq_cfg.beta)
        self.decoder = PanoramaDecoder(self.vq_cfg.code_dim, 1, scale, cfg.decoder_width)

    def encode(self, depth: torch.Tensor) -> torch.Tensor:
        """Continuous (unquantised) latent, unit-norm per position."""
        valid = torch.isfinite(depth)
        d = torch.where(valid, depth, torch.zeros_like(depth)) / self.cfg.max_depth
        return F.normalize(self.encoder(torch.stack([d, valid.float()], 1)), dim=1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent ``(B, code_dim, h, w)`` -> depth ``(B, H, W)`` m."""
        return code_depth(self.decoder, z, self.cfg.max_depth)

    def forward(self, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, vq_loss, _ = self.quantizer(self.encode(depth))
        return self.decode(q), vq_loss


class ATNet(AudioEncoder):
    """Audio transformation network: ``audio (B, M, N)`` -> the VQ-VAE's continuous latent
    ``(B, code_dim, latent_h, latent_w)``, unit vectors.

    The student's audio encoder (:class:`~avperception.models.student.AudioEncoder`: front end, echogram tokens
    when ``cfg.echo_hop`` is set, transformer; tokens ``(B, T, D)``), a 3-layer MLP over all tokens (domain
    transformation) to a ``(B, 64, h0, w0)`` grid, then strided transposed convolutions up to the manifold's size.
    """

    def __init__(self, cfg: StudentConfig, code_dim: int) -> None:
        super().__init__(cfg)  # frontend, embed, echo, encoder: the student's names and shapes
        self.h0, self.w0 = max(cfg.latent_h // 4, 1), max(cfg.latent_w // 4, 1)
        tokens = cfg.num_tokens + cfg.num_echo_tokens
        self.mlp = nn.Sequential(nn.Linear(cfg.dim * tokens, 512), nn.GELU(), nn.Linear(512, 512), nn.GELU(),
                                 nn.Linear(512, 64 * self.h0 * self.w0))
        self.up = nn.Sequential(nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.GELU(), nn.ConvTranspose2d(64, 64, 4, 2, 1),
                                nn.GELU(), nn.Conv2d(64, code_dim, 3, padding=1))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = self.tokens(audio)  # (B, T, D)
        z = self.mlp(x.flatten(1)).reshape(-1, 64, self.h0, self.w0)
        z = self.up(z)
        z = F.interpolate(z, size=(self.cfg.latent_h, self.cfg.latent_w), mode="bilinear", align_corners=False)
        return F.normalize(z, dim=1)  # the manifold's latents are unit vectors


class DepthATNet(nn.Module):
    """The manifold student's network without its teacher: the AT-net, then a decoder shaped like the
    VQ-VAE's, both learned from the depth labels (``--mode manifold-e2e``). ``audio (B, M, N)`` ->
    ``depth (B, H, W)`` m. Against ``--mode manifold`` it tells what the VQ-VAE's manifold adds."""

    def __init__(self, cfg: StudentConfig, vq: VQConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        code_dim = (vq or VQConfig()).code_dim
        self.atnet = ATNet(cfg, code_dim)
        self.decoder = PanoramaDecoder(code_dim, 1, cfg.pano_h // cfg.latent_h, cfg.decoder_width)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return code_depth(self.decoder, self.atnet(audio), self.cfg.max_depth)  # the VQ-VAE's output convention


def vq_config_dict(vq: VQConfig) -> dict:
    return asdict(vq)
