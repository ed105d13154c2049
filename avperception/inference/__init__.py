"""Model bundles and inference backends (no torch needed: ONNX Runtime runs the bundle's graph).

    from avperception.inference import load_bundle, check_fits, make_backend, decode

    bundle = load_bundle("default")                 # or a bundle directory
    check_fits(bundle, array, sample_rate)          # BundleMismatch naming every difference
    backend = make_backend(bundle, "auto", threads=1, log=print)
    out = decode(bundle, backend.run(window))       # window: (mics, samples) float32, sample 0 = sweep onset
"""

from .backends import (Backend, BackendUnavailable, FallbackBackend, OnnxRuntimeBackend, TorchBackend,
                       make_backend, pin_threads)
from .bundle import (BundleError, BundleMismatch, ModelBundle, check_fits, default_bundle_path, fits,
                     load_bundle)
from .outputs import SonarOutputs, decode

__all__ = ["Backend", "BackendUnavailable", "BundleError", "BundleMismatch", "FallbackBackend", "ModelBundle",
           "OnnxRuntimeBackend", "SonarOutputs", "TorchBackend", "check_fits", "decode", "default_bundle_path",
           "fits", "load_bundle", "make_backend", "pin_threads"]
