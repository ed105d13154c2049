"""TensorRT engines of a bundle's graph: build once per GPU / TensorRT version / precision / graph, cache, run.

Written for TensorRT 10.x (JetPack 6 ships 10.3) and 11.x. The network is *strongly typed*
(``NetworkDefinitionCreationFlag.STRONGLY_TYPED``): every tensor keeps the type the ONNX graph gives it,
so the precision is the graph's (``model.onnx`` float32, ``model_fp16.onnx`` float16 with float32
islands, ``model_int8.onnx`` explicit Q/DQ), with no FP16 / INT8 builder flags and no calibrator.

Engines are cached under ``~/.cache/avperception/engines`` (or ``SonarConfig.engine_cache_dir``) by
:func:`engine_key`: GPU name, compute capability, TensorRT version, precision and the graph's sha256;
a change of any of them builds a new engine, ``force`` rebuilds. The builder's timing cache is kept
beside the engines (one per GPU and TensorRT version) so a rebuild is quicker.

Device buffers come from torch (CUDA tensors) when torch with CUDA is importable, else from
cuda-python (``cuda.bindings.runtime`` / ``cuda.cudart``). ``import tensorrt`` happens on first use;
without it :class:`~avperception.inference.backends.BackendUnavailable` says what to install.

Not run on a GPU where this was written (no TensorRT there): the control flow is tested with a stand-in
``tensorrt`` module; docs/jetson.md says how to check an engine against ONNX Runtime on the target.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .backends import BackendUnavailable, check_window
from .bundle import ARRAY_HEIGHT_INPUT, ModelBundle, graph_feed
from .graphs import PRECISIONS, bundle_graph, engine_precision

DEFAULT_CACHE_DIR = Path("~/.cache/avperception/engines")
WORKSPACE_BYTES = 1 << 30  # builder memory pool limit (1 GiB: the student needs far less; Jetsons share RAM)
INSTALL_HINT = ("install TensorRT's Python bindings (JetPack 6: `sudo apt install python3-libnvinfer`; desktop: "
                "`pip install tensorrt`), see docs/jetson.md")


def import_tensorrt():
    """The ``tensorrt`` module; :class:`BackendUnavailable` saying what to install when it is missing."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailable(f"tensorrt is not installed ({e}): {INSTALL_HINT}") from None
    return trt


def cache_dir(path: str | Path | None = None) -> Path:
    """The engine cache directory: ``path`` when given (``~`` expanded), else ``$AVPERCEPTION_ENGINE_CACHE``, else
    ``~/.cache/avperception/engines``."""
    p = path or os.environ.get("AVPERCEPTION_ENGINE_CACHE") or DEFAULT_CACHE_DIR
    return Path(p).expanduser()


def engine_key(gpu_name: str, compute_capability: tuple[int, int] | str, trt_version: str, precision: str,
               onnx_sha256: str) -> str:
    """The cache name of an engine: readable parts (precision, compute capability, TensorRT version, GPU) and a hash
    of all five inputs, so that any change of GPU, compute capability, TensorRT version, precision or graph gives
    another key. Pure: no TensorRT, no GPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    cc = compute_capability if isinstance(compute_capability, str) else f"{compute_capability[0]}{compute_capability[1]}"
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower()[:32] or "gpu"
    digest = hashlib.sha256("\n".join([gpu_name, cc, trt_version, precision, onnx_sha256]).encode()).hexdigest()[:16]
    return f"{precision}-sm{cc}-trt{trt_version}-{gpu}-{digest}"


@dataclass(frozen=True)
class Device:
    """The GPU an engine is built for."""

    name: str
    compute_capability: tuple[int, int]


class CudaBuffers:
    """Device memory and a stream for one engine's inputs and outputs: torch CUDA tensors when torch has CUDA,
    else cuda-python. ``kind`` says which."""

    def __init__(self) -> None:
        self.kind = ""
        try:
            import torch

            if torch.cuda.is_available():
                self.torch = torch
                self.kind = "torch"
                self.stream = torch.cuda.Stream()
                return
        except ImportError:
            pass
        try:
            try:
                from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
            except ImportError:
                from cuda import cudart  # older cuda-python
        except ImportError:
            raise BackendUnavailable("TensorRT needs device buffers from torch with CUDA or from cuda-python: "
                                     "pip install cuda-python (or a CUDA build of torch)") from None
        self.cudart = cudart
        self.kind = "cuda-python"
        self.stream = self._check(cudart.cudaStreamCreate())

    def _check(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise RuntimeError(f"CUDA error {err}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def device(self) -> Device:
        if self.kind == "torch":
            return Device(self.torch.cuda.get_device_name(0), tuple(self.torch.cuda.get_device_capability(0)))
        prop = self._check(self.cudart.cudaGetDeviceProperties(0))
        name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
        return Device(name, (int(prop.major), int(prop.minor)))

    def empty(self, shape: tuple[int, ...], dtype: np.dtype):
        """A device buffer; returns ``(handle, address)``."""
        if self.kind == "torch":
            t = self.torch.empty(tuple(shape), dtype=getattr(self.torch, np.dtype(dtype).name), device="cuda")
            return t, t.data_ptr()
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        ptr = self._check(self.cudart.cudaMalloc(nbytes))
        return (ptr, tuple(shape), np.dtype(dtype)), int(ptr)

    def stream_handle(self) -> int:
        return self.stream.cuda_stream if self.kind == "torch" else int(self.stream)

    def upload(self, buf, host: np.ndarray) -> None:
        if self.kind == "torch":
            with self.torch.cuda.stream(self.stream):
                buf.copy_(self.torch.from_numpy(host), non_blocking=False)
            return
        ptr, _, _ = buf
        self._check(self.cudart.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes,
                                                self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))

    def download(self, buf) -> np.ndarray:
        if self.kind == "torch":
            with self.torch.cuda.stream(self.stream):
                out = buf.cpu()
            return out.numpy()
        ptr, shape, dtype = buf
        host = np.empty(shape, dtype)
        self._check(self.cudart.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes,
                                                self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
        return host

    def synchronize(self) -> None:
        if self.kind == "torch":
            self.stream.synchronize()
        else:
            self._check(self.cudart.cudaStreamSynchronize(self.stream))


def build_serialized(trt, onnx_path: str | Path, timing_cache: Path | None = None,
                     workspace_bytes: int = WORKSPACE_BYTES, log: Callable[[str], None] | None = None) -> bytes:
    """Parse ``onnx_path`` into a strongly typed network and build it; returns the serialized engine. Raises
    ``RuntimeError`` with the parser's errors or when the builder returns nothing. ``timing_cache``: read before
    and written after the build."""
    log = log or (lambda _m: None)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT's ONNX parser refused {onnx_path}: " + "; ".join(errors or ["no reason given"]))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    cache_bytes = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, False)  # ignore_mismatch=False: a cache of another device is not used
    t = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine of {onnx_path} (the builder returned none; its log "
                           "above says why)")
    log(f"TensorRT {trt.__version__} built {Path(onnx_path).name} in {time.perf_counter() - t:.1f} s")
    if timing_cache is not None:
        _atomic_write(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


class EngineCache:
    """Engines on disk, ``<dir>/<engine_key>.engine`` with a ``.json`` beside it saying what it was built from, and
    a timing cache per GPU and TensorRT version."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.dir = cache_dir(directory)

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.engine"

    def timing_cache(self, device: Device, trt_version: str) -> Path:
        gpu = re.sub(r"[^A-Za-z0-9]+", "-", device.name).strip("-").lower()[:32]
        cc = f"{device.compute_capability[0]}{device.compute_capability[1]}"
        return self.dir / f"timing-sm{cc}-trt{trt_version}-{gpu}.cache"

    def get_or_build(self, trt, onnx_path: Path, onnx_sha256: str, precision: str, device: Device,
                     force: bool = False, log: Callable[[str], None] | None = None) -> tuple[bytes, Path, bool]:
        """The serialized engine of ``onnx_path`` for ``device``: read from the cache, or (missing, or ``force``)
        built and stored. Returns ``(engine bytes, its path, whether it was built now)``."""
        log = log or (lambda _m: None)
        key = engine_key(device.name, device.compute_capability, trt.__version__, precision, onnx_sha256)
        path = self.path(key)
        if path.is_file() and not force:
            return path.read_bytes(), path, False
        log(f"building the TensorRT {precision} engine of {onnx_path.name} for {device.name} "
            f"(sm{device.compute_capability[0]}{device.compute_capability[1]}, TensorRT {trt.__version__}): "
            f"{'forced' if force else 'none cached'} at {path}")
        t = time.perf_counter()
        data = build_serialized(trt, onnx_path, self.timing_cache(device, trt.__version__), log=log)
        _atomic_write(path, data)
        _atomic_write(path.with_suffix(".json"), json.dumps({
            "onnx": str(onnx_path), "onnx_sha256": onnx_sha256, "precision": precision, "gpu": device.name,
            "compute_capability": list(device.compute_capability), "tensorrt": trt.__version__,
            "build_s": round(time.perf_counter() - t, 2), "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }, indent=1).encode())
        return data, path, True


def _graph_sha(bundle: ModelBundle, precision: str) -> str:
    if precision == "fp32":
        return str(bundle.meta["model"]["onnx_sha256"])
    return str(bundle.meta["graphs"][precision]["sha256"])


def engine_cached(bundle: ModelBundle, precision: str | None = None, cache: str | Path | None = None,
                  device: Device | None = None, trt_version: str | None = None) -> bool:
    """Whether the engine of ``bundle`` (``precision``: default :func:`~avperception.inference.graphs.engine_precision`)
    for ``device`` and ``trt_version`` (default: this machine's) is in the cache."""
    precision = precision or engine_precision(bundle)
    if trt_version is None:
        trt_version = import_tensorrt().__version__
    if device is None:
        device = CudaBuffers().device()
    key = engine_key(device.name, device.compute_capability, trt_version, precision, _graph_sha(bundle, precision))
    return EngineCache(cache).path(key).is_file()


_NP = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64, "INT8": np.int8,
       "BOOL": np.bool_, "UINT8": np.uint8}


class TensorRTBackend:
    """The bundle's graph of ``precision`` (default :func:`~avperception.inference.graphs.engine_precision`) as a
    TensorRT engine, cached in ``cache_dir`` (``force``: rebuilt). Runs one window per ``execute_async_v3``."""

    def __init__(self, bundle: ModelBundle, precision: str | None = None, cache_dir: str | Path | None = None,
                 force: bool = False, log: Callable[[str], None] | None = None) -> None:
        trt = import_tensorrt()
        self.bundle = bundle
        self.precision = precision or engine_precision(bundle)
        onnx_path = bundle_graph(bundle, self.precision)
        self.buffers = CudaBuffers()
        self.device = self.buffers.device()
        self.cache = EngineCache(cache_dir)
        data, self.engine_path, built = self.cache.get_or_build(trt, onnx_path, _graph_sha(bundle, self.precision),
                                                                self.precision, self.device, force, log)
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None and not built:  # a stale or damaged cached file: build it again once
            data, self.engine_path, built = self.cache.get_or_build(trt, onnx_path, _graph_sha(bundle, self.precision),
                                                                    self.precision, self.device, True, log)
            self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {self.engine_path}")
        self.context = self.engine.create_execution_context()
        self.inputs, self.outputs, self._bufs = [], [], {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(int(d) for d in self.engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"engine tensor {name} has a dynamic shape {shape}; rebuild the graph with fixed "
                                   "shapes")
            dtype = _NP[str(self.engine.get_tensor_dtype(name)).rsplit(".", 1)[-1]]
            buf, addr = self.buffers.empty(shape, dtype)
            self.context.set_tensor_address(name, addr)
            self._bufs[name] = buf
            (self.inputs if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else self.outputs).append(name)
        if self.inputs not in (["audio"], ["audio", ARRAY_HEIGHT_INPUT]):
            raise RuntimeError(f"engine inputs {self.inputs}, expected ['audio'] or ['audio', '{ARRAY_HEIGHT_INPUT}']")
        self.trt_version = trt.__version__
        self.name = f"tensorrt-{self.precision}"

    def run(self, audio: np.ndarray, array_height: float = 0.0) -> dict[str, np.ndarray]:
        x = check_window(self.bundle, audio)
        for k, v in graph_feed(self.inputs, x, array_height).items():
            self.buffers.upload(self._bufs[k], v)
        if not self.context.execute_async_v3(self.buffers.stream_handle()):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        out = {k: self.buffers.download(self._bufs[k]) for k in self.outputs}
        self.buffers.synchronize()
        return {k: v[0].astype(np.float32, copy=False) for k, v in out.items()}

    def describe(self) -> str:
        return (f"{self.name}: {self.engine_path.name} on {self.device.name} (TensorRT {self.trt_version}, buffers "
                f"from {self.buffers.kind})")


def build_engine_for(bundle: ModelBundle, precision: str | None = None, cache_dir: str | Path | None = None,
                     force: bool = False, log: Callable[[str], None] | None = print) -> Path:
    """Build (or find) the engine of ``bundle``'s ``precision`` graph on this machine's GPU; returns its path.
    ``ImportError`` (a :class:`BackendUnavailable`) when TensorRT or a CUDA device is missing."""
    try:
        be = TensorRTBackend(bundle, precision, cache_dir, force, log)
    except BackendUnavailable as e:
        raise ImportError(str(e)) from None
    return be.engine_path
