"""Reduced-precision graphs and TensorRT engines: validation for TensorRT, fp16 / int8 against fp32, the engine
cache's keys, and the backend chain with TensorRT missing, failing, or building in the background.

No TensorRT or GPU here: a stand-in ``tensorrt`` module (its engine runs the graph in ONNX Runtime) and host
buffers drive the real control flow of avperception.inference.tensorrt."""

import shutil
import sys
import threading
import types

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from avperception.inference import BackendUnavailable, load_bundle, make_backend  # noqa: E402
from avperception.inference import graphs as G  # noqa: E402
from avperception.inference import tensorrt as T  # noqa: E402
from avperception.inference.backends import DeferredBackend, OnnxRuntimeBackend  # noqa: E402
from avperception.inference.bundle import graph_feed  # noqa: E402
from avperception.inference.synthetic import bundle_echo_window  # noqa: E402


@pytest.fixture(scope="module")
def bundle():
    return load_bundle("default")


# ---------------------------------------------------------------------------------------------- validation


def _tiny(op="Relu", shape=(1, 4), opset=17, **attrs):
    x = helper.make_tensor_value_info("audio", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))
    g = helper.make_graph([helper.make_node(op, ["audio"], ["y"], name=f"n_{op}", **attrs)], "tiny", [x], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_shipped_graph_is_valid_for_tensorrt(bundle):
    assert G.graph_problems(bundle.onnx_path, (1, bundle.num_mics, bundle.window_samples)) == []
    G.validate_graph(bundle.onnx_path)


def test_validation_names_each_problem():
    assert G.graph_problems(_tiny()) == []
    with pytest.raises(G.GraphError, match=r"input 'audio' has a dynamic shape \['batch', 4\]"):
        G.validate_graph(_tiny(shape=("batch", 4)))
    with pytest.raises(G.GraphError, match=r"opset 13 < 17"):
        G.validate_graph(_tiny(opset=13))
    with pytest.raises(G.GraphError, match=r"op Bernoulli is not supported by TensorRT's ONNX parser"):
        G.validate_graph(_tiny("Bernoulli"))
    problems = G.graph_problems(_tiny("Bernoulli"))
    assert len(problems) == 1 and "(nodes: n_Bernoulli)" in problems[0]
    assert G.graph_problems(_tiny(), input_shape=(1, 8)) and "the bundle needs [1, 8]" in G.graph_problems(
        _tiny(), input_shape=(1, 8))[0]
    # the list is the parser's: the shipped graph's ops are in it, ONNX's STFT and DFT are not
    assert {"LayerNormalization", "Erf", "Mod", "ReduceLogSumExp"} <= G.TRT_ONNX_OPS
    assert not {"STFT", "DFT", "HannWindow", "QLinearConv", "Unique"} & G.TRT_ONNX_OPS


# ---------------------------------------------------------------------------------------------- fp16 / int8


def _windows(bundle, n, seed):
    rng = np.random.default_rng(seed)
    return [bundle_echo_window(bundle, wall_distance_m=float(rng.uniform(1.0, 4.0)),
                               wall_azimuth_deg=float(rng.uniform(-180, 180)), seed=int(rng.integers(1 << 30)))
            for _ in range(n)]


@pytest.fixture(scope="module")
def reduced(bundle, tmp_path_factory):
    d = tmp_path_factory.mktemp("graphs")
    how16 = G.convert_fp16(bundle.onnx_path, d / "fp16.onnx")
    how8 = G.quantize_int8(bundle.onnx_path, d / "int8.onnx", _windows(bundle, 8, 0))
    return {"fp16": (d / "fp16.onnx", how16), "int8": (d / "int8.onnx", how8)}


def _run(path, windows):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    inputs = [i.name for i in s.get_inputs()]
    return [dict(zip(names, s.run(None, graph_feed(inputs, w[None])))) for w in windows]


def test_int8_float_nodes_are_scopes_or_single_nodes(bundle):
    """A pattern ending in "/" keeps a whole scope float, any other one node (with the exporter's "_N" suffix):
    "/model/Conv" is the matched filter, not a later "/model/ConvTranspose"; on the shipped graph it takes exactly
    the one top-level Conv, the matched filter."""
    names = ["/model/frontend/Log", "/model/frontendx/Add", "/model/Conv", "/model/Conv_1", "/model/ConvTranspose",
             "/model/Conv_x", "/model/blocks.0/Conv", "/model/echo/Conv"]
    assert G.excluded_nodes(names, ("/model/frontend/", "/model/Conv")) == [
        "/model/frontend/Log", "/model/Conv", "/model/Conv_1"]
    assert G.excluded_nodes(names, ()) == []
    graph = onnx.load(str(bundle.onnx_path)).graph
    top = [n for n in graph.node if n.name.count("/") == 2 and n.op_type == "Conv"]
    taken = G.excluded_nodes([n.name for n in top], G.INT8_EXCLUDE_PREFIXES)
    assert len(top) == 1 and taken == [top[0].name]


# bounds on one-wall synthetic echoes, far from the rooms the student knows (measured: fp16 depth 0.05-0.14, labels
# 0.91-0.97, voxels 0.83-0.92; int8, its matched filter kept float, 0.00, 0.99-1.00, 0.99-1.00; with the matched
# filter quantized the step-14 model's depth moved by 0.08-0.50); the tolerances on real held-out rooms are tested in
# tests/training/test_build_engine.py
@pytest.mark.parametrize("precision, depth_tol, label_min, voxel_min", [("fp16", 0.25, 0.85, 0.75),
                                                                       ("int8", 0.40, 0.90, 0.85)])
def test_reduced_graphs_agree_with_fp32(bundle, reduced, precision, depth_tol, label_min, voxel_min):
    """On windows the calibration did not see: median relative depth difference, share of equal class labels and of
    equal occupancy (voxel logit > 0) against the float32 graph; inputs and outputs stay float32; valid for TRT."""
    path, how = reduced[precision]
    G.validate_graph(path, (1, bundle.num_mics, bundle.window_samples))
    m = onnx.load(str(path))
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert all(o.type.tensor_type.elem_type == TensorProto.FLOAT for o in m.graph.output)
    ops = {n.op_type for n in m.graph.node}
    if precision == "int8":
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops and how["calibration_windows"] == 8
    else:
        assert any(i.data_type == TensorProto.FLOAT16 for i in m.graph.initializer)
        assert how["keep_io_types"] and "Log" in how["fp32_ops"] and how["fp32_nodes"]
    windows = _windows(bundle, 3, 1)
    for ref, got in zip(_run(bundle.onnx_path, windows), _run(path, windows)):
        assert all(np.isfinite(got[k]).all() for k in ("depth", "semantic", "voxels"))
        rel = np.abs(got["depth"] - ref["depth"]) / np.maximum(ref["depth"], 0.1)
        assert np.median(rel) < depth_tol, (precision, float(np.median(rel)))
        assert (got["semantic"].argmax(1) == ref["semantic"].argmax(1)).mean() >= label_min
        assert ((got["voxels"] > 0) == (ref["voxels"] > 0)).mean() >= voxel_min


def test_graphs_recorded_in_the_bundle(bundle, reduced, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(bundle.path, dst, ignore=shutil.ignore_patterns("model.safetensors"))
    b = load_bundle(dst)
    assert G.bundle_graphs(b) == {"fp32": b.onnx_path} and G.engine_precision(b) == "fp32"
    with pytest.raises(Exception, match="build-engine .* --precision fp16"):
        G.bundle_graph(b, "fp16")
    shutil.copyfile(reduced["fp16"][0], dst / G.GRAPH_FILES["fp16"])
    G.record_graph(dst, "fp16", reduced["fp16"][1], engine=True)
    b = load_bundle(dst)  # the float32 graph's hash and the format version are unchanged: it still loads
    assert b.onnx_path.name == "model.onnx" and b.meta["format_version"] == bundle.meta["format_version"]
    assert G.bundle_graph(b, "fp16").name == "model_fp16.onnx" and G.engine_precision(b) == "fp16"
    (dst / "model_fp16.onnx").write_bytes(b"not a graph")
    with pytest.raises(Exception, match="corrupt or was replaced"):
        G.bundle_graph(load_bundle(dst), "fp16")


# ---------------------------------------------------------------------------------------------- engine cache


def test_engine_key_changes_with_each_input():
    base = ("NVIDIA Orin", (8, 7), "10.3.0", "fp16", "a" * 64)
    k = T.engine_key(*base)
    assert k == T.engine_key(*base) and k.startswith("fp16-sm87-trt10.3.0-nvidia-orin-")
    for i, other in enumerate(["NVIDIA RTX 4090", (8, 9), "10.4.0", "int8", "b" * 64]):
        changed = list(base)
        changed[i] = other
        assert T.engine_key(*changed) != k, i
    with pytest.raises(ValueError, match="precision"):
        T.engine_key("g", (8, 7), "10", "fp8", "x")


# a stand-in TensorRT: the parser takes any file, the builder "serializes" the graph's path, the engine runs the
# graph in ONNX Runtime on host buffers addressed by id; `fail_build` makes the builder return None
_HOST: dict[int, np.ndarray] = {}


def _fake_trt(version="10.3.0", fail_build=False, builds=None):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class Logger:
        WARNING = 2

        def __init__(self, *_):
            pass

    class Flag:
        STRONGLY_TYPED = 5

    class Pool:
        WORKSPACE = 0

    class Mode:
        INPUT, OUTPUT = "input", "output"

    class Network:
        path = None

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            self.network.path = path
            return True

    class Cache:
        def serialize(self):
            return b"timing"

    class Config:
        def __init__(self):
            self.pool = None

        def set_memory_pool_limit(self, pool, size):
            self.pool = size

        def create_timing_cache(self, data):
            return Cache()

        def set_timing_cache(self, cache, ignore_mismatch):
            pass

        def get_timing_cache(self):
            return Cache()

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            assert flags == 1 << Flag.STRONGLY_TYPED
            return Network()

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            assert config.pool == T.WORKSPACE_BYTES
            if builds is not None:
                builds.append(network.path)
            return None if fail_build else ("ENGINE:" + network.path).encode()

    class DType:
        def __init__(self, name):
            self.name = name

        def __str__(self):
            return f"DataType.{self.name}"

    class Context:
        def __init__(self, engine):
            self.engine, self.addr = engine, {}

        def set_tensor_address(self, name, addr):
            self.addr[name] = addr

        def execute_async_v3(self, stream):
            outs = self.engine.sess.run(None, {i.name: _HOST[self.addr[i.name]] for i in self.engine.sess.get_inputs()})
            for name, v in zip(self.engine.outs, outs):
                _HOST[self.addr[name]][...] = v
            return True

    class Engine:
        def __init__(self, path):
            import onnxruntime as ort

            self.sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            self.outs = [o.name for o in self.sess.get_outputs()]
            self.io = [(i.name, i.shape, "input") for i in self.sess.get_inputs()] + \
                      [(o.name, o.shape, "output") for o in self.sess.get_outputs()]
            self.num_io_tensors = len(self.io)

        def get_tensor_name(self, i):
            return self.io[i][0]

        def _find(self, name):
            return next(t for t in self.io if t[0] == name)

        def get_tensor_shape(self, name):
            return self._find(name)[1]

        def get_tensor_dtype(self, name):
            return DType("FLOAT")

        def get_tensor_mode(self, name):
            return self._find(name)[2]

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            data = bytes(data)
            return Engine(data[len(b"ENGINE:"):].decode()) if data.startswith(b"ENGINE:") else None

    trt.Logger, trt.NetworkDefinitionCreationFlag, trt.MemoryPoolType, trt.TensorIOMode = Logger, Flag, Pool, Mode
    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, Parser, Runtime
    return trt


class _HostBuffers:
    kind = "host (test)"

    def __init__(self):
        pass

    def device(self):
        return T.Device("Fake GPU", (8, 7))

    def empty(self, shape, dtype):
        a = np.zeros(shape, dtype)
        _HOST[id(a)] = a
        return a, id(a)

    def stream_handle(self):
        return 0

    def upload(self, buf, host):
        np.copyto(buf, host)

    def download(self, buf):
        return buf.copy()

    def synchronize(self):
        pass


@pytest.fixture
def fake_trt(monkeypatch):
    def install(**kw):
        trt = _fake_trt(**kw)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(T, "CudaBuffers", _HostBuffers)
        return trt

    return install


def test_cache_builds_once_reuses_and_rebuilds(bundle, fake_trt, tmp_path):
    builds = []
    fake_trt(builds=builds)
    logs = []
    be = T.TensorRTBackend(bundle, "fp32", cache_dir=tmp_path, log=logs.append)
    assert builds == [str(bundle.onnx_path)] and be.engine_path.is_file() and be.name == "tensorrt-fp32"
    assert be.engine_path.with_suffix(".json").is_file() and list(tmp_path.glob("timing-sm87-trt10.3.0-*.cache"))
    assert any("built model.onnx in" in m for m in logs) and any("none cached" in m for m in logs)
    w = bundle_echo_window(bundle, wall_distance_m=2.5)
    np.testing.assert_allclose(be.run(w)["depth"], OnnxRuntimeBackend(bundle).run(w)["depth"], atol=1e-5)
    assert be.inputs == ["audio", "array_height"]  # the array's height goes to the engine as to ONNX Runtime
    np.testing.assert_allclose(be.run(w, 1.4)["depth"], OnnxRuntimeBackend(bundle).run(w, 1.4)["depth"], atol=1e-5)
    assert be.run(w, 1.4)["heights"][0] == pytest.approx(1.4)
    assert T.engine_cached(bundle, "fp32", tmp_path, T.Device("Fake GPU", (8, 7)), "10.3.0")
    T.TensorRTBackend(bundle, "fp32", cache_dir=tmp_path)  # cached: no build
    assert len(builds) == 1
    T.TensorRTBackend(bundle, "fp32", cache_dir=tmp_path, force=True)  # force_engine_update
    assert len(builds) == 2
    fake_trt(version="10.4.0", builds=builds)  # another TensorRT: another key, built again
    assert not T.engine_cached(bundle, "fp32", tmp_path, T.Device("Fake GPU", (8, 7)), "10.4.0")
    T.TensorRTBackend(bundle, "fp32", cache_dir=tmp_path)
    assert len(builds) == 3 and len(list(tmp_path.glob("*.engine"))) == 2
    be.engine_path.write_bytes(b"garbage")  # a damaged cached engine is rebuilt
    fake_trt(builds=builds)
    T.TensorRTBackend(bundle, "fp32", cache_dir=tmp_path)
    assert len(builds) == 4


# ---------------------------------------------------------------------------------------------- the chain


def test_auto_skips_missing_tensorrt_with_the_reason(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails as when it is not installed
    logs = []
    be = make_backend(bundle, "auto", log=logs.append)
    assert be.active == "onnxruntime-cpu"
    assert any(m.startswith("tensorrt skipped: tensorrt is not installed") and "docs/jetson.md" in m for m in logs)
    with pytest.raises(BackendUnavailable, match="tensorrt is not installed"):
        make_backend(bundle, "tensorrt")


def test_failed_build_falls_back_and_is_logged(bundle, fake_trt, tmp_path):
    fake_trt(fail_build=True)
    with pytest.raises(BackendUnavailable, match="the builder returned none"):
        make_backend(bundle, "tensorrt", engine_cache_dir=tmp_path)
    logs = []
    be = make_backend(bundle, "auto", log=logs.append, engine_cache_dir=tmp_path)  # built in the background
    assert isinstance(be.backend, DeferredBackend)
    assert be.backend.wait(60) and be.backend.failed and "builder returned none" in be.backend.failed
    out = be.run(bundle_echo_window(bundle))
    assert be.active == "onnxruntime-cpu" and out["depth"].shape == (60, 120)
    assert any("tensorrt could not be made" in m and "staying on onnxruntime-cpu" in m for m in logs), logs
    assert not list(tmp_path.glob("*.engine"))


def test_engine_built_in_background_then_switched_to(bundle, fake_trt, tmp_path):
    fake_trt()
    logs = []
    be = make_backend(bundle, "auto", log=logs.append, engine_cache_dir=tmp_path)
    assert isinstance(be.backend, DeferredBackend)
    be.backend.wait(60)
    be.run(bundle_echo_window(bundle))
    assert be.active == "tensorrt-fp32" and any("ready after" in m for m in logs)
    logs.clear()  # now cached: the next start loads it directly
    be = make_backend(bundle, "auto", log=logs.append, engine_cache_dir=tmp_path)
    assert be.active == "tensorrt-fp32" and not isinstance(be.backend, DeferredBackend)


class _Stub:
    def __init__(self, name):
        self.name = name

    def run(self, audio, array_height=0.0):
        return {"who": self.name}

    def describe(self):
        return self.name


def test_deferred_backend_runs_interim_until_ready():
    gate = threading.Event()

    def slow():
        gate.wait(10)
        return _Stub("fast")

    logs = []
    d = DeferredBackend("fast", slow, _Stub("interim"), log=logs.append)
    assert d.run(None) == {"who": "interim"} and d.pending and "being built" in d.describe()
    gate.set()
    assert d.wait(10)
    assert d.run(None) == {"who": "fast"} and d.name == "fast" and any("ready after" in m for m in logs)
