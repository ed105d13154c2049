"""Reduced-precision graphs of a bundle and the check that TensorRT can take a graph.

A bundle may carry, beside ``model.onnx`` (float32, what ONNX Runtime and torch
run by default), ``model_fp16.onnx`` and ``model_int8.onnx``, recorded in
``bundle.json`` under ``graphs``::

    "graphs": {"fp16": {"file": "model_fp16.onnx", "sha256": "...", "how": {...}},
               "int8": {"file": "model_int8.onnx", "sha256": "...", "how": {...}},
               "engine": "fp16"}

They are made here, from the float32 graph: :func:`convert_fp16` (float16 compute,
float32 inputs and outputs, numerically sensitive ops kept in float32) and
:func:`quantize_int8` (explicit QuantizeLinear / DequantizeLinear pairs, symmetric,
calibrated on real windows). Their precision is in the graph itself, so a
strongly typed TensorRT network builds them as they are (no builder precision
flags, no calibrator). :func:`validate_graph` refuses a graph TensorRT would
refuse, naming why. Nothing here imports torch; onnx, onnxruntime and
onnxconverter-common are imported when used.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from .bundle import BUNDLE_JSON, BundleError, ModelBundle, graph_feed, sha256_file

PRECISIONS = ("fp32", "fp16", "int8")
GRAPH_FILES = {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "int8": "model_int8.onnx"}
MIN_OPSET = 17

# The ONNX operators the TensorRT 10.x ONNX parser supports ("Y" in the operator support matrix of
# onnx/onnx-tensorrt, docs/operators.md, release/10.x, commit 96e7811 "ONNX-TensorRT 10.1 GA release"; TensorRT
# 10.0+ parses opsets 9 to 20). Operators listed there as unsupported (e.g. STFT, DFT, the window functions,
# ConvInteger, MatMulInteger, QLinearConv, the Sequence and String ops, Unique) are absent. Restrictions the
# table attaches to a supported op are checked separately where they matter here (Q/DQ zero points).
TRT_ONNX_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike Ceil Celu
Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear
Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU
HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization
LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus
Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1
ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu
Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape
Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan
Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

# float16 keeps these in float32: the logs of the STFT power and of the matched-filter envelope (their epsilon,
# 1e-8, is below float16's smallest number), the exponentials and softmaxes (overflow above 11), the
# log-sum-exp of the layout head (its -t / tau spans thousands) and the square roots of small powers
FP16_BLOCK_OPS = ("Log", "Exp", "Softmax", "ReduceLogSumExp", "Softplus", "Sqrt")
# node-name prefixes kept in float32 as a whole (none: keeping the whole STFT front end in float32 cost 0.23 in
# class mIoU on ONNX Runtime, see docs/jetson.md; the power sums feeding each Log / Sqrt are kept instead)
FP16_BLOCK_PREFIXES: tuple[str, ...] = ()
# the elementwise chain feeding these ops stays float32 too (re*re + im*im + 1e-8: squares of small STFT values
# and the epsilon underflow in float16, and the log of 0 is -inf)
FP16_GUARDED_OPS = ("Log", "Sqrt")
_ELEMENTWISE = ("Add", "Mul", "Sub", "Div", "Pow", "Abs")
# int8 leaves these out of quantization (they stay float between their neighbours' Q/DQ): the front end, whose
# log-magnitudes span 80 dB, and the layout head, whose depth (log-spaced bins, a log-sum-exp over planes) lost
# most: quantized, depth AbsRel went from 0.13 to 0.47 on held-out rooms, 0.20 without it (docs/jetson.md); and the
# matched filter (the sweep correlated with the raw audio, ``matched_iq``: the graph's one top-level Conv), whose
# echoes lie far under the direct sound that sets its int8 scale: quantized, it moved the step-14 model's depth by
# half (median) on synthetic one-wall echoes; kept float, not measurably. A name ending in "/" is a scope (every
# node under it); any other is one node, also with the exporter's "_N" suffix ("/model/Conv_1", not
# "/model/ConvTranspose")
INT8_EXCLUDE_PREFIXES = ("/model/frontend/", "/model/echo/", "/model/layout/", "/model/Conv")
INT8_OP_TYPES = ("Conv", "MatMul", "Gemm")


def excluded_nodes(names: Iterable[str], patterns: Iterable[str]) -> list[str]:
    """The ``names`` that ``patterns`` keep float: a pattern ending in ``/`` takes every node in that scope, any
    other the node of that name or with the ONNX exporter's numeric suffix (``/model/Conv`` takes ``/model/Conv``
    and ``/model/Conv_2``, not ``/model/ConvTranspose``)."""
    scopes = tuple(p for p in patterns if p.endswith("/"))
    nodes = tuple(p for p in patterns if not p.endswith("/"))

    def one(name: str, node: str) -> bool:
        rest = name[len(node):]
        return name.startswith(node) and (rest == "" or (rest[0] == "_" and rest[1:].isdigit()))

    return [n for n in names if (scopes and n.startswith(scopes)) or any(one(n, p) for p in nodes)]


class GraphError(ValueError):
    """A graph that TensorRT (or the runtime) would refuse; the message names every problem."""


# ---------------------------------------------------------------------------------------------- validation


def graph_problems(graph, input_shape: tuple[int, ...] | None = None, min_opset: int = MIN_OPSET,
                   supported_ops: frozenset[str] | None = TRT_ONNX_OPS) -> list[str]:
    """Every reason TensorRT's ONNX parser (10.x) would refuse ``graph`` (an ``onnx.ModelProto`` or a path);
    empty when it would take it.

    Checks: ``onnx.checker`` (full), strict shape inference, the default-domain opset >= ``min_opset``, every
    input and output with a fixed positive shape (and ``input_shape`` when given), every op type in
    ``supported_ops`` (None: not checked), nodes of other domains, and Q/DQ zero points all zero (TensorRT
    quantizes symmetrically).
    """
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(graph)) if not isinstance(graph, onnx.ModelProto) else graph
    name = str(graph) if not isinstance(graph, onnx.ModelProto) else (m.graph.name or "graph")
    problems: list[str] = []
    try:
        onnx.checker.check_model(m, full_check=True)
    except Exception as e:  # noqa: BLE001  (onnx raises its own checker errors)
        problems.append(f"onnx.checker: {str(e).strip().splitlines()[0][:300]}")
    try:
        inferred = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    except Exception as e:  # noqa: BLE001
        problems.append(f"shape inference: {str(e).strip().splitlines()[0][:300]}")
        inferred = m
    opsets = {o.domain or "ai.onnx": o.version for o in m.opset_import}
    opset = opsets.get("ai.onnx", 0)
    if opset < min_opset:
        problems.append(f"opset {opset} < {min_opset} (re-export with opset_version={min_opset} or newer)")

    def dims(v) -> list:
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in v.type.tensor_type.shape.dim]

    for kind, values in (("input", inferred.graph.input), ("output", inferred.graph.output)):
        inits = {t.name for t in m.graph.initializer}
        for v in values:
            if v.name in inits:
                continue
            s = dims(v)
            if not v.type.tensor_type.HasField("shape") or not all(isinstance(d, int) and d > 0 for d in s):
                problems.append(f"{kind} {v.name!r} has a dynamic shape {s} (every dimension must be fixed)")
    if input_shape is not None:
        ins = {v.name: dims(v) for v in inferred.graph.input}
        if tuple(ins.get("audio", ())) != tuple(input_shape):
            problems.append(f"input audio is {ins.get('audio')}, the bundle needs {list(input_shape)}")
    if supported_ops is not None:
        bad: dict[str, list[str]] = {}
        for n in m.graph.node:
            if n.domain not in ("", "ai.onnx"):
                bad.setdefault(f"{n.domain}.{n.op_type}", []).append(n.name)
            elif n.op_type not in supported_ops:
                bad.setdefault(n.op_type, []).append(n.name)
        for op, nodes in sorted(bad.items()):
            problems.append(f"op {op} is not supported by TensorRT's ONNX parser (nodes: {', '.join(nodes[:3])}"
                            + (f" and {len(nodes) - 3} more" if len(nodes) > 3 else "") + ")")
    inits = {t.name: t for t in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits:
            if np.any(numpy_helper.to_array(inits[n.input[2]]) != 0):
                problems.append(f"{n.op_type} {n.name} has a non-zero zero point (TensorRT needs symmetric "
                                "quantization)")
    return [f"{name}: {p}" for p in problems]


def validate_graph(graph, input_shape: tuple[int, ...] | None = None, min_opset: int = MIN_OPSET,
                   supported_ops: frozenset[str] | None = TRT_ONNX_OPS) -> None:
    """Raise :class:`GraphError` naming every problem :func:`graph_problems` finds; None when there is none."""
    problems = graph_problems(graph, input_shape, min_opset, supported_ops)
    if problems:
        raise GraphError("the graph cannot be built by TensorRT: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------- preparing


def expand_half(model):
    """``model`` with every float16 initializer that a ``Cast`` turns into float32 (bundles store weights saved in
    half precision so, ``avperception_train.learn.bundle_writer.store_exact_half``) stored as float32 instead: the same
    values, and a plain float32 graph for the converters."""
    import onnx
    from onnx import numpy_helper

    halves = {t.name: t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    inits = {t.name: t for t in model.graph.initializer}
    keep = []
    for n in model.graph.node:
        if n.op_type == "Cast" and n.input[0] in halves and n.input[0] in inits:
            a = numpy_helper.to_array(halves[n.input[0]]).astype(np.float32)
            inits[n.output[0]] = numpy_helper.from_array(a, n.output[0])
            inits.pop(n.input[0], None)
        else:
            keep.append(n)
    model.graph.ClearField("initializer")
    model.graph.initializer.extend(inits.values())
    model.graph.ClearField("node")
    model.graph.node.extend(keep)
    return model


def isolate_outputs(model):
    """``model`` where no graph output also feeds another node (an ``Identity`` gives it out instead); the float16
    converter, which casts outputs back to float32, mistypes such outputs' other consumers otherwise."""
    import onnx
    from onnx import helper

    outs = {o.name for o in model.graph.output}
    used = {i for n in model.graph.node for i in n.input}
    renamed: dict[str, str] = {}
    for n in model.graph.node:
        for j, o in enumerate(n.output):
            if o in outs and o in used:
                n.output[j] = renamed[o] = o + "__inner"
    for n in model.graph.node:
        for j, i in enumerate(n.input):
            if i in renamed:
                n.input[j] = renamed[i]
    model.graph.node.extend(helper.make_node("Identity", [v], [k], name=k + "__out") for k, v in renamed.items())
    model.graph.ClearField("value_info")
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def guarded_chains(model, ops: Iterable[str] = FP16_GUARDED_OPS, depth: int = 3) -> list[str]:
    """Names of the elementwise nodes (Add, Mul, Sub, Div, Pow, Abs) within ``depth`` steps upstream of every node
    of ``ops`` in ``model``: the sums of squares and epsilons a Log or Sqrt takes."""
    prod = {o: n for n in model.graph.node for o in n.output}
    out: list[str] = []
    front = [n for n in model.graph.node if n.op_type in tuple(ops)]
    for _ in range(depth):
        front = [prod[i] for n in front for i in n.input if i in prod and prod[i].op_type in _ELEMENTWISE]
        out += [n.name for n in front if n.name not in out]
    return out


def _float32_graph(src: str | Path):
    import onnx

    return isolate_outputs(expand_half(onnx.load(str(src))))


def convert_fp16(src: str | Path, dst: str | Path, block_ops: Iterable[str] = FP16_BLOCK_OPS,
                 block_prefixes: Iterable[str] = FP16_BLOCK_PREFIXES) -> dict:
    """Write ``dst``: ``src`` (float32) computing in float16, input and outputs still float32
    (onnxconverter-common's ``convert_float_to_float16``, ``keep_io_types``), the op types ``block_ops`` and the
    nodes named with a prefix in ``block_prefixes`` kept in float32. Returns how it was made (for bundle.json)."""
    import onnx

    try:
        from onnxconverter_common import float16
    except ImportError:
        raise BundleError("making a float16 graph needs onnxconverter-common: pip install onnxconverter-common") from None
    m = _float32_graph(src)
    prefixes = tuple(block_prefixes)
    nodes = [n.name for n in m.graph.node if prefixes and n.name.startswith(prefixes)]
    nodes += [n for n in guarded_chains(m) if n not in nodes]
    ops = sorted(set(block_ops) | set(float16.DEFAULT_OP_BLOCK_LIST))
    m16 = float16.convert_float_to_float16(m, keep_io_types=True, op_block_list=ops, node_block_list=nodes)
    m16 = onnx.shape_inference.infer_shapes(_float_outputs(m16), strict_mode=True)
    onnx.save(m16, str(dst))
    import onnxconverter_common

    return {"tool": f"onnxconverter-common {onnxconverter_common.__version__} convert_float_to_float16",
            "keep_io_types": True, "fp32_ops": sorted(set(block_ops)), "fp32_node_prefixes": list(prefixes),
            "fp32_guarded_ops": list(FP16_GUARDED_OPS), "fp32_nodes": nodes}


def _float_outputs(model):
    """Every graph output declared float16 (the converter leaves one so where a kept-float32 node produces it)
    given out through a ``Cast`` to float32, and declared float32: the bundle's outputs are float32."""
    from onnx import TensorProto, helper

    for o in model.graph.output:
        t = o.type.tensor_type
        if t.elem_type != TensorProto.FLOAT16:
            continue
        for n in model.graph.node:
            n.output[:] = [o.name + "__half" if x == o.name else x for x in n.output]
            n.input[:] = [o.name + "__half" if x == o.name else x for x in n.input]
        model.graph.node.append(helper.make_node("Cast", [o.name + "__half"], [o.name], to=TensorProto.FLOAT,
                                                 name=o.name + "__to_float"))
        t.elem_type = TensorProto.FLOAT
    model.graph.ClearField("value_info")
    return model


class WindowReader:
    """An onnxruntime ``CalibrationDataReader`` over windows ``(M, N)`` (fed as ``audio (1, M, N)``, and an unknown
    ``array_height`` where ``input_names`` has it)."""

    def __init__(self, windows: Iterable[np.ndarray], input_names: Iterable[str] = ("audio",)) -> None:
        self._it = iter(windows)
        self.inputs = list(input_names)
        self.count = 0

    def get_next(self):
        w = next(self._it, None)
        if w is None:
            return None
        self.count += 1
        return graph_feed(self.inputs, np.ascontiguousarray(np.asarray(w, dtype=np.float32)[None]))

    def rewind(self) -> None:  # pragma: no cover  (onnxruntime calls it for some methods only)
        pass


def quantize_int8(src: str | Path, dst: str | Path, windows: Iterable[np.ndarray],
                  exclude_prefixes: Iterable[str] = INT8_EXCLUDE_PREFIXES,
                  op_types: Iterable[str] = INT8_OP_TYPES, method: str = "percentile") -> dict:
    """Write ``dst``: ``src`` with explicit int8 QuantizeLinear / DequantizeLinear pairs (QDQ format, symmetric
    activations and per-channel weights, zero points 0 as TensorRT needs) around its ``op_types`` nodes,
    calibrated on ``windows`` (each ``(M, N)`` float32, sample 0 = the sweep's onset); the nodes that
    ``exclude_prefixes`` name (:func:`excluded_nodes`) stay float. ``method``: ``percentile`` (99.999 %),
    ``minmax`` or ``entropy``.
    Returns how it was made (for bundle.json)."""
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    m = _float32_graph(src)
    prefixes = tuple(exclude_prefixes)
    excluded = excluded_nodes((n.name for n in m.graph.node), prefixes)
    reader = WindowReader(windows, [i.name for i in m.graph.input])
    methods = {"percentile": CalibrationMethod.Percentile, "minmax": CalibrationMethod.MinMax,
               "entropy": CalibrationMethod.Entropy}
    with tempfile.TemporaryDirectory() as tmp:
        f32 = Path(tmp) / "float32.onnx"
        onnx.save(m, str(f32))
        quantize_static(str(f32), str(dst), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=list(op_types),
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=excluded, calibrate_method=methods[method],
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                       "CalibPercentile": 99.999, "CalibTensorRangeSymmetric": True})
    if reader.count == 0:
        raise ValueError("int8 calibration needs at least one window")
    import onnxruntime

    return {"tool": f"onnxruntime {onnxruntime.__version__} quantize_static", "format": "QDQ",
            "activations": "int8 symmetric", "weights": "int8 symmetric per channel", "op_types": list(op_types),
            "calibration": method, "calibration_windows": reader.count, "float_node_prefixes": list(prefixes)}


# ---------------------------------------------------------------------------------------------- bundles


def bundle_graphs(bundle: ModelBundle) -> dict[str, Path]:
    """``{precision: path}`` of the graphs ``bundle`` has: always ``fp32`` (``model.onnx``), and those recorded
    under ``graphs`` whose file is present."""
    out = {"fp32": bundle.onnx_path}
    for p, g in (bundle.meta.get("graphs") or {}).items():
        if isinstance(g, dict) and (bundle.path / g["file"]).is_file():
            out[p] = bundle.path / g["file"]
    return out


def bundle_graph(bundle: ModelBundle, precision: str = "fp32", verify: bool = True) -> Path:
    """The graph of ``precision`` in ``bundle`` (its sha256 checked against bundle.json); :class:`BundleError` saying
    how to make it when it is not there."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return bundle.onnx_path
    g = (bundle.meta.get("graphs") or {}).get(precision)
    if not isinstance(g, dict) or not (bundle.path / g.get("file", "")).is_file():
        raise BundleError(f"{bundle.path} has no {precision} graph; make it with `avperception-train build-engine "
                          f"{bundle.path} --precision {precision}`")
    path = bundle.path / g["file"]
    if verify and sha256_file(path) != g.get("sha256"):
        raise BundleError(f"{path} is corrupt or was replaced (its sha256 is not the one in {BUNDLE_JSON}); make it "
                          f"again with `avperception-train build-engine {bundle.path} --precision {precision} --force`")
    return path


def engine_precision(bundle: ModelBundle) -> str:
    """The precision a TensorRT engine of ``bundle`` is built in: ``graphs.engine`` when recorded (``build-engine``
    sets it), else fp16 when the bundle has that graph, else fp32."""
    graphs = bundle.meta.get("graphs") or {}
    want = graphs.get("engine")
    have = bundle_graphs(bundle)
    if want in have:
        return want
    return "fp16" if "fp16" in have else "fp32"


def record_graph(bundle_dir: str | Path, precision: str, how: dict, engine: bool = False) -> dict:
    """Record ``bundle_dir``'s graph file of ``precision`` in its bundle.json (``graphs``: file, sha256, bytes, how
    it was made, when); ``engine``: also make it the precision TensorRT engines are built in. The float32
    ``model.onnx`` entry and the format version stay as they are. Returns the entry."""
    if precision not in ("fp16", "int8"):
        raise ValueError(f"only the fp16 and int8 graphs are recorded, not {precision!r}")
    d = Path(bundle_dir)
    jp = d / BUNDLE_JSON
    meta = json.loads(jp.read_text())
    f = d / GRAPH_FILES[precision]
    entry = {"file": f.name, "sha256": sha256_file(f), "bytes": f.stat().st_size, "how": how,
             "from_onnx_sha256": meta["model"].get("onnx_sha256"),
             "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    graphs = meta.setdefault("graphs", {})
    graphs[precision] = entry
    if engine:
        graphs["engine"] = precision
    tmp = jp.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    tmp.replace(jp)
    return entry


def set_engine_precision(bundle_dir: str | Path, precision: str) -> None:
    """Make ``precision`` the one TensorRT engines of the bundle are built in (``graphs.engine``)."""
    jp = Path(bundle_dir) / BUNDLE_JSON
    meta = json.loads(jp.read_text())
    meta.setdefault("graphs", {})["engine"] = precision
    tmp = jp.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    tmp.replace(jp)
