"""Export a student to ONNX: one graph, raw audio in, every output out.

:func:`export_onnx` writes the graph (optionally with every output's shape
fixed, :func:`fix_shapes`) and checks it against torch; :func:`output_names`
says which bundle outputs a student has. Writing a whole model bundle
(``model.onnx`` + ``bundle.json`` + weights) that
:func:`avperception.inference.bundle.load_bundle` reads is training's job:
``avperception_train.learn.bundle_writer.write_bundle``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..inference.bundle import ARRAY_HEIGHT_INPUT, graph_feed

OUTPUTS = ("depth", "semantic", "energy", "voxels", "latent")
# what a bundle's graph gives: every head, no latent (only distillation needs it)
BUNDLE_OUTPUTS = ("depth", "semantic", "energy", "voxels", "layout", "walls", "heights", "depth_uncertainty")
MIN_OPSET = 17


class _Outputs(torch.nn.Module):
    """Tuple outputs in a fixed order (ONNX has no dicts); the array's height as a second input where given."""

    def __init__(self, model: torch.nn.Module, names: tuple[str, ...] = OUTPUTS) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(names)

    def forward(self, audio: torch.Tensor, array_height: torch.Tensor | None = None):
        out = self.model(audio) if array_height is None else self.model(audio, array_height)
        return tuple(out[k] for k in self.names)


def output_names(model: torch.nn.Module) -> tuple[str, ...]:
    """The bundle outputs ``model`` has (layout, walls, heights only with a layout head, depth_uncertainty only with
    an uncertainty head)."""
    has = {"layout": model.layout is not None, "walls": model.layout is not None,
           "heights": model.layout is not None, "depth_uncertainty": getattr(model, "uncertainty", None) is not None}
    return tuple(k for k in BUNDLE_OUTPUTS if has.get(k, True))


def export_onnx(model: torch.nn.Module, path: str | Path, opset: int = 17, check: bool = True,
                seed: int = 0, outputs: tuple[str, ...] = OUTPUTS, fixed: bool = False,
                array_height: bool = False) -> tuple[Path, float]:
    """Write ``path`` with input ``audio (1, M, N)`` float32 and ``outputs`` (default :data:`OUTPUTS`);
    ``fixed``: every output's shape fixed in the graph (:func:`fix_shapes`); ``array_height``: a second input
    ``array_height (1,)`` float32, the array's height above the floor (m; 0 or less: unknown), which a model with
    a layout head renders as the floor (:func:`~avperception.models.student.known_floor`).

    Returns the path and the largest absolute difference between onnxruntime and
    torch on random audio (NaN when ``check`` is off or onnxruntime is missing), with the height unknown and
    (``array_height``) at 1.5 m.
    """
    cfg = model.cfg
    model = model.float().eval()
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((1, cfg.num_mics, cfg.num_samples)).astype(np.float32) * 0.05)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _Outputs(model, outputs).eval()
    args = (x, torch.zeros(1)) if array_height else (x,)
    names = ["audio", ARRAY_HEIGHT_INPUT] if array_height else ["audio"]
    with torch.no_grad():
        torch.onnx.export(wrapper, args, str(path), input_names=names, output_names=list(outputs),
                          opset_version=opset, dynamo=False)
        if fixed:
            fix_shapes(path, {k: tuple(v.shape) for k, v in zip(outputs, wrapper(*args))})
    if not check:
        return path, float("nan")
    try:
        import onnxruntime as ort
    except ImportError:
        return path, float("nan")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    err = 0.0
    for h in ((0.0, 1.5) if array_height else (0.0,)):
        got = sess.run(None, graph_feed(names, x.numpy(), h))
        with torch.no_grad():
            ref = wrapper(x, torch.tensor([h])) if array_height else wrapper(x)
        err = max([err] + [float(np.max(np.abs(g - r.numpy()))) for g, r in zip(got, ref)])
    return path, err


def fix_shapes(path: str | Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """Give ``path``'s outputs the fixed ``shapes`` (the tracer leaves a symbolic batch dimension on some) and
    re-infer the intermediate shapes from the fixed input."""
    import onnx

    m = onnx.load(str(path))
    m.graph.ClearField("value_info")
    for v in m.graph.output:
        dims = v.type.tensor_type.shape.dim
        want = shapes[v.name]
        if len(dims) != len(want):
            raise ValueError(f"output {v.name}: rank {len(dims)} in the graph vs {len(want)} in torch")
        for d, n in zip(dims, want):
            d.ClearField("dim_param")
            d.dim_value = int(n)
    m = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    onnx.save(m, str(path))
