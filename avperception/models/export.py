"""Export a student to ONNX (one graph: raw audio in, every output out) and check it with onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

OUTPUTS = ("depth", "semantic", "energy", "voxels", "latent")


class _Outputs(torch.nn.Module):
    """Tuple outputs in a fixed order (ONNX has no dicts)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, audio: torch.Tensor):
        out = self.model(audio)
        return tuple(out[k] for k in OUTPUTS)


def export_onnx(model: torch.nn.Module, path: str | Path, opset: int = 17, check: bool = True,
                seed: int = 0) -> tuple[Path, float]:
    """Write ``path`` with input ``audio (1, M, N)`` float32 and outputs :data:`OUTPUTS`.

    Returns the path and the largest absolute difference between onnxruntime and
    torch on random audio (NaN when ``check`` is off or onnxruntime is missing).
    """
    cfg = model.cfg
    model = model.float().eval()
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((1, cfg.num_mics, cfg.num_samples)).astype(np.float32) * 0.05)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _Outputs(model).eval()
    torch.onnx.export(wrapper, (x,), str(path), input_names=["audio"], output_names=list(OUTPUTS),
                      opset_version=opset, dynamo=False)
    if not check:
        return path, float("nan")
    try:
        import onnxruntime as ort
    except ImportError:
        return path, float("nan")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"audio": x.numpy()})
    with torch.no_grad():
        ref = wrapper(x)
    err = max(float(np.max(np.abs(g - r.numpy()))) for g, r in zip(got, ref))
    return path, err
