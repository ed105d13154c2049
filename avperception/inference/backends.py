"""Inference backends behind one interface: TensorRT engines, ONNX Runtime (TensorRT / CUDA / CPU) and torch.

Every backend takes one window ``audio (M, N)`` float32 (sample 0 = the sweep's
onset), and the array's height above the floor where the robot knows it and the bundle takes it
(``array_height``, m; 0: unknown), and returns the bundle's outputs without the batch dimension
(``depth (H, W)``, ``semantic (C, H, W)``, ``voxels (D, H, W)``, ...).
:func:`make_backend` builds a :class:`FallbackBackend`: a chain tried in order,
which logs why each skipped one was skipped and, when the running one fails,
switches to the next and runs the window again. A TensorRT engine not yet built is
built in a background thread (:class:`DeferredBackend`) while the next backend runs.

    bundle = load_bundle("default")
    backend = make_backend(bundle, "auto", threads=1, log=print)
    out = decode(bundle, backend.run(window), infer_ms=backend.last_ms)
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from .bundle import BundleError, ModelBundle, graph_feed

KINDS = ("auto", "tensorrt", "onnxruntime", "torch")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS")


class BackendUnavailable(BundleError):
    """A backend that cannot run here (missing package, weights or device); the message says what to do."""


@runtime_checkable
class Backend(Protocol):
    name: str

    def run(self, audio: np.ndarray, array_height: float = 0.0) -> dict[str, np.ndarray]:
        """``audio (M, N)`` float32 and ``array_height`` (m; 0: unknown) -> the bundle's outputs, batch dimension
        removed."""

    def describe(self) -> str:
        """One line: what runs where."""


def pin_threads(n: int = 1) -> None:
    """Keep this process to ``n`` compute threads: the OpenMP / BLAS environment variables (only where unset, and
    only libraries loaded later read them), a threadpoolctl limit on the loaded ones, and torch's intra-op
    threads when torch is already imported. For nodes and benchmarks that share a small CPU."""
    for v in _THREAD_VARS:
        os.environ.setdefault(v, str(n))
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


def check_window(bundle: ModelBundle, audio: np.ndarray) -> np.ndarray:
    """``audio (M, N)`` -> ``(1, M, N)`` contiguous float32; ``ValueError`` saying what is wrong otherwise."""
    a = np.asarray(audio)
    want = (bundle.num_mics, bundle.window_samples)
    if a.shape != want:
        raise ValueError(f"audio window has shape {a.shape}, the bundle needs (mics, samples) = {want}: "
                         f"{bundle.num_mics} microphones in the array's order, {bundle.window_samples} samples "
                         f"at {bundle.sample_rate} Hz starting at the sweep's onset")
    return np.ascontiguousarray(a, dtype=np.float32)[None]


def require_height_input(bundle: ModelBundle) -> None:
    """``ValueError`` saying what to do unless ``bundle``'s graph takes the array's height (``array_height``): for
    every setting that would give it one (a height, a TF floor frame, evaluation with the scenes' heights)."""
    if not bundle.takes_array_height:
        raise ValueError(f"the bundle {bundle.path} does not take the array's height (its graph has no array_height "
                         "input: it was exported before the input existed, or its model has no layout head); "
                         "re-export it with `avperception-train export-bundle`, or leave the height unknown")


def check_array_height(bundle: ModelBundle, array_height: float) -> None:
    """``ValueError`` saying what to do when ``array_height`` (m) is not a height ``bundle`` can take: negative, not
    finite, or given (above 0) to a bundle whose graph has no ``array_height`` input (:func:`require_height_input`)."""
    if not np.isfinite(array_height) or array_height < 0:
        raise ValueError(f"the array's height above the floor must be a finite number of metres >= 0 (0: unknown), "
                         f"got {array_height}")
    if array_height > 0:
        require_height_input(bundle)


class OnnxRuntimeBackend:
    """``model.onnx`` in ONNX Runtime. ``providers``: execution providers in order of preference (None: TensorRT
    and CUDA where this onnxruntime has them, then CPU); ``threads``: intra-op threads (inter-op 1, sequential
    execution, all graph optimisations)."""

    def __init__(self, bundle: ModelBundle, threads: int = 1, providers: list[str] | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime "
                                     "(or onnxruntime-gpu)") from None
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in GPU_PROVIDERS if p in available] + ["CPUExecutionProvider"]
        missing = [p for p in providers if p not in available]
        if missing:
            raise BackendUnavailable(f"onnxruntime {ort.__version__} here has no {', '.join(missing)} "
                                     f"(available: {', '.join(available)})")
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(bundle.onnx_path), so, providers=list(providers))
        except Exception as e:  # noqa: BLE001  (onnxruntime raises its own exception types)
            raise BackendUnavailable(f"onnxruntime cannot load {bundle.onnx_path}: {type(e).__name__}: "
                                     f"{str(e).strip()[:300]}") from None
        self.bundle = bundle
        self.threads = int(threads)
        self.providers = self.session.get_providers()
        self.names = [o.name for o in self.session.get_outputs()]
        self.inputs = [i.name for i in self.session.get_inputs()]
        short = self.providers[0].removesuffix("ExecutionProvider")
        self.name = f"onnxruntime-{short.lower()}"

    def run(self, audio: np.ndarray, array_height: float = 0.0) -> dict[str, np.ndarray]:
        x = check_window(self.bundle, audio)
        feed = graph_feed(self.inputs, x, array_height)
        return {k: v[0] for k, v in zip(self.names, self.session.run(self.names, feed))}

    def describe(self) -> str:
        return (f"{self.name}: {self.bundle.onnx_path.name} on {', '.join(self.providers)}, "
                f"{self.threads} thread(s)")


class TorchBackend:
    """``model.safetensors`` in PyTorch (``AudioStudent.load``); ``device``: ``cpu`` or ``cuda``."""

    def __init__(self, bundle: ModelBundle, threads: int = 1, device: str = "cpu") -> None:
        if bundle.safetensors_path is None:
            raise BackendUnavailable(f"{bundle.path} has no model.safetensors (torch weights); re-export the bundle "
                                     "with weights or use onnxruntime")
        try:
            import torch
            import safetensors  # noqa: F401
        except ImportError as e:
            raise BackendUnavailable(f"the torch backend needs torch and safetensors ({e}): "
                                     "pip install torch safetensors") from None
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable("torch here has no CUDA device")
        from ..models.student import AudioStudent

        torch.set_num_threads(int(threads))
        self.torch = torch
        self.model = AudioStudent.load(bundle.safetensors_path, map_location=device).float().eval().to(device)
        self.bundle = bundle
        self.device = device
        self.threads = int(threads)
        self.names = [k for k in bundle.outputs]
        self.name = "torch" if device == "cpu" else f"torch-{device}"

    def run(self, audio: np.ndarray, array_height: float = 0.0) -> dict[str, np.ndarray]:
        x = self.torch.from_numpy(check_window(self.bundle, audio)).to(self.device)
        h = self.torch.tensor([float(array_height)], device=self.device) if array_height > 0 else None
        with self.torch.inference_mode():
            out = self.model(x, h)
        return {k: out[k][0].detach().cpu().numpy() for k in self.names}

    def describe(self) -> str:
        return f"{self.name}: {self.bundle.safetensors_path.name} on {self.device}, {self.threads} thread(s)"


class FallbackBackend:
    """A chain of backends tried in order: one that fails to load is skipped (logged with why), and when the
    active one raises while running, the next one loads and runs the same window again.

    ``chain``: ``(name, factory)`` pairs, each factory building a backend (raising when it cannot).
    Diagnostics: ``active`` (the running backend's name), ``fallbacks`` (every switch, with its reason),
    ``skipped`` (backends that did not load, with why), ``last_ms`` (the last run's time).
    """

    def __init__(self, bundle: ModelBundle, chain: list[tuple[str, Callable[[], Backend]]],
                 log: Callable[[str], None] | None = None) -> None:
        if not chain:
            raise ValueError("FallbackBackend needs at least one backend")
        self.bundle = bundle
        self._chain = list(chain)
        self._log = log or (lambda _msg: None)
        self.fallbacks: list[str] = []
        self.skipped: list[str] = []
        self.last_ms = float("nan")
        self.backend: Backend | None = None
        self._next = 0
        self._advance()

    def _advance(self) -> None:
        """Load the next backend of the chain that loads; raise BackendUnavailable when none is left."""
        while self._next < len(self._chain):
            name, factory = self._chain[self._next]
            self._next += 1
            try:
                self.backend = factory()
            except Exception as e:  # noqa: BLE001  (any failure to load means: try the next one)
                why = f"{name} skipped: {e}"
                self.skipped.append(why)
                self._log(why)
                continue
            rest = [n for n, _ in self._chain[self._next:]]
            self._log(f"inference backend: {self.backend.describe()}" + (f" (next: {', '.join(rest)})" if rest else ""))
            return
        self.backend = None
        reasons = "; ".join(self.skipped + self.fallbacks) or "none was given"
        raise BackendUnavailable(f"no inference backend could run this bundle: {reasons}")

    @property
    def name(self) -> str:
        return self.backend.name if self.backend is not None else "none"

    @property
    def active(self) -> str:
        return self.name

    def run(self, audio: np.ndarray, array_height: float = 0.0) -> dict[str, np.ndarray]:
        check_window(self.bundle, audio)  # a wrong window or height is the caller's error, not the backend's
        check_array_height(self.bundle, array_height)
        while True:
            if self.backend is None:
                raise BackendUnavailable("no inference backend left: " + "; ".join(self.fallbacks))
            t = time.perf_counter()
            try:
                out = self.backend.run(audio, array_height)
            except Exception as e:  # noqa: BLE001  (whatever failed, the next backend gets the window)
                why = f"{self.backend.name} failed while running ({type(e).__name__}: {str(e).strip()[:200]})"
                self.fallbacks.append(why)
                self._log(why + ": switching to the next backend")
                self._advance()
                continue
            self.last_ms = (time.perf_counter() - t) * 1e3
            return out

    def describe(self) -> str:
        s = self.backend.describe() if self.backend is not None else "no backend"
        if self.fallbacks:
            s += f" (after {len(self.fallbacks)} fallback(s): {self.fallbacks[-1]})"
        return s

    def diagnostics(self) -> dict:
        return {"backend": self.name, "description": self.describe(), "fallbacks": list(self.fallbacks),
                "skipped": list(self.skipped), "last_ms": self.last_ms}


class DeferredBackend:
    """A backend that takes long to make (a TensorRT engine build: minutes on a Jetson), made in a background thread
    while ``interim`` (e.g. a :class:`FallbackBackend` over ONNX Runtime) runs the windows; the first window after
    it is ready switches to it (logged). When making it fails, ``interim`` goes on running and the reason is kept
    (``failed``) and logged. Failures of the ready backend while running propagate (the enclosing
    :class:`FallbackBackend` moves on)."""

    def __init__(self, name: str, factory: Callable[[], Backend], interim: Backend,
                 log: Callable[[str], None] | None = None, start: bool = True) -> None:
        self.target = name
        self.interim = interim
        self._factory = factory
        self._log = log or (lambda _msg: None)
        self._ready: Backend | None = None
        self.backend: Backend | None = None  # the one in use once switched
        self.failed: str | None = None
        self.build_s = float("nan")
        self._thread = threading.Thread(target=self._make, name=f"build-{name}", daemon=True)
        if start:
            self._thread.start()

    def _make(self) -> None:
        t = time.perf_counter()
        try:
            self._ready = self._factory()
        except Exception as e:  # noqa: BLE001  (whatever failed, the interim backend keeps running)
            self.failed = f"{self.target} could not be made ({type(e).__name__}: {str(e).strip()[:300]})"
            self._log(self.failed + f": staying on {self.interim.name}")
        self.build_s = time.perf_counter() - t

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background build; True when it has ended (made or failed)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def pending(self) -> bool:
        return self._thread.is_alive()

    @property
    def name(self) -> str:
        return self.backend.name if self.backend is not None else self.interim.name

    def run(self, audio: np.ndarray, array_height: float = 0.0) -> dict[str, np.ndarray]:
        if self.backend is None and self._ready is not None:
            self.backend = self._ready
            self._log(f"inference backend: {self.backend.describe()} (ready after {self.build_s:.1f} s; was "
                      f"{self.interim.name})")
        return (self.backend or self.interim).run(audio, array_height)

    def describe(self) -> str:
        if self.backend is not None:
            return self.backend.describe()
        state = f"failed: {self.failed}" if self.failed else "being built"
        return f"{self.interim.describe()} ({self.target} {state})"


def _tensorrt_entry(bundle: ModelBundle, interim: list[tuple[str, Callable[[], Backend]]], cache_dir,
                    force: bool, defer: bool, log: Callable[[str], None] | None) -> Callable[[], Backend]:
    """The factory of the chain's TensorRT entry: the engine directly when it is cached (or ``defer`` is off: the
    build blocks), else a :class:`DeferredBackend` building it behind a :class:`FallbackBackend` over ``interim``."""

    def factory() -> Backend:
        from .tensorrt import CudaBuffers, TensorRTBackend, engine_cached, import_tensorrt

        import_tensorrt()  # BackendUnavailable (skipped, with why) when missing
        build = lambda: TensorRTBackend(bundle, cache_dir=cache_dir, force=force, log=log)  # noqa: E731
        if not defer or (not force and engine_cached(bundle, cache=cache_dir, device=CudaBuffers().device())):
            return build()
        if not interim:
            return build()
        return DeferredBackend("tensorrt", build, FallbackBackend(bundle, interim, log), log)

    return factory


def backend_chain(bundle: ModelBundle, kind: str = "auto", threads: int = 1, engine_cache_dir=None,
                  force_engine_update: bool = False, defer_engine_build: bool = True,
                  log: Callable[[str], None] | None = None) -> list[tuple[str, Callable[[], Backend]]]:
    """The ``(name, factory)`` chain :func:`make_backend` tries for ``kind``: a TensorRT engine (``auto``,
    ``tensorrt``), ONNX Runtime on TensorRT, CUDA (where this onnxruntime has them) and CPU, then torch (CUDA
    where it has a device, then CPU). Under ``auto`` an engine not yet cached is built in the background
    (``defer_engine_build``) while the rest of the chain runs."""
    if kind not in KINDS:
        raise ValueError(f"backend kind {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "tensorrt":
        return [("tensorrt", _tensorrt_entry(bundle, [], engine_cache_dir, force_engine_update, False, log))]
    chain: list[tuple[str, Callable[[], Backend]]] = []
    if kind in ("auto", "onnxruntime"):
        try:
            import onnxruntime as ort

            gpus = [p for p in GPU_PROVIDERS if p in ort.get_available_providers()]
        except ImportError:
            gpus = []
        for p in gpus:
            chain.append((f"onnxruntime-{p.removesuffix('ExecutionProvider').lower()}",
                          lambda p=p: OnnxRuntimeBackend(bundle, threads, [p, "CPUExecutionProvider"])))
        chain.append(("onnxruntime-cpu", lambda: OnnxRuntimeBackend(bundle, threads, ["CPUExecutionProvider"])))
    if kind in ("auto", "torch"):
        torch = sys.modules.get("torch")
        if kind == "torch" or torch is not None:  # only look for CUDA where torch is loaded or asked for
            try:
                import torch  # noqa: F811

                if torch.cuda.is_available():
                    chain.append(("torch-cuda", lambda: TorchBackend(bundle, threads, "cuda")))
            except ImportError:
                pass
        chain.append(("torch", lambda: TorchBackend(bundle, threads, "cpu")))
    if kind == "auto":
        chain.insert(0, ("tensorrt", _tensorrt_entry(bundle, list(chain), engine_cache_dir, force_engine_update,
                                                     defer_engine_build, log)))
    return chain


def make_backend(bundle: ModelBundle, kind: str = "auto", threads: int = 1,
                 log: Callable[[str], None] | None = None, engine_cache_dir=None, force_engine_update: bool = False,
                 defer_engine_build: bool = True) -> FallbackBackend:
    """The backend that runs ``bundle`` here: ``kind`` ``auto`` (a TensorRT engine, then ONNX Runtime with its GPU
    execution providers first, then torch), ``tensorrt``, ``onnxruntime`` or ``torch``. ``log`` hears which one
    runs and why each skipped one was skipped. ``engine_cache_dir`` (None: ``~/.cache/avperception/engines``) and
    ``force_engine_update`` (rebuild the engine) are the TensorRT engine cache's; under ``auto`` an engine not yet
    built is built in the background while the next backend runs (``defer_engine_build``).
    Raises :class:`BackendUnavailable` (with every reason) when none can."""
    return FallbackBackend(bundle, backend_chain(bundle, kind, threads, engine_cache_dir, force_engine_update,
                                                 defer_engine_build, log), log)
