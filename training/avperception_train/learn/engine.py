"""``avperception-train build-engine``: a bundle's reduced-precision graphs (and, where TensorRT is installed, its
engine), and scoring every graph of a bundle on a dataset with ONNX Runtime.

    avperception-train build-engine BUNDLE --precision fp16
    avperception-train build-engine BUNDLE --precision int8 --calib DATASET
    avperception-train build-engine BUNDLE --score DATASET      # fp32 / fp16 / int8 on its test + val rooms
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from avperception.inference.bundle import graph_feed


def calibration_windows(data: str | Path, n: int = 64, splits: tuple[str, ...] = ("train",)) -> list[np.ndarray]:
    """``n`` windows ``(M, N)`` float32 of the dataset ``data`` (from ``splits``, spread over its scenes), for int8
    calibration. The train split by default: the rooms scored later stay unseen."""
    from .data import InMemoryScenes

    out: list[np.ndarray] = []
    for split in splits:
        try:
            ds = InMemoryScenes(data, split)
        except Exception:  # noqa: BLE001  (an empty split)
            continue
        idx = np.linspace(0, len(ds) - 1, min(n - len(out), len(ds))).round().astype(int) if len(ds) else []
        out += [np.asarray(ds.item(int(i))["audio"], dtype=np.float32) for i in idx]
        if len(out) >= n:
            break
    if not out:
        raise ValueError(f"{data} has no scenes in {', '.join(splits)} to calibrate on")
    return out


def ort_session(path: str | Path, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def onnx_predictor(path: str | Path, threads: int = 1, voxel_threshold: float = 0.5, known_height: bool = False):
    """A predictor for :func:`~avperception_train.learn.evaluate.evaluate` running the ONNX graph ``path`` in ONNX
    Runtime on the CPU, one window at a time (with the depth uncertainty when the graph gives it); ``times``
    collects each window's seconds. ``known_height``: each scene's true array height is fed to the graph's
    ``array_height`` input (:func:`~avperception_train.learn.evaluate.scene_array_heights`); else it is unknown."""
    from .evaluate import scene_array_heights

    sess = ort_session(path, threads)
    names = [o.name for o in sess.get_outputs()]
    inputs = [i.name for i in sess.get_inputs()]
    times: list[float] = []

    def run(batch: dict) -> dict:
        audio = batch["audio"].numpy().astype(np.float32)
        heights = scene_array_heights(batch) if known_height else np.zeros(len(audio), np.float32)
        rows = []
        for a, h in zip(audio, heights):
            t = time.perf_counter()
            rows.append(dict(zip(names, sess.run(None, graph_feed(inputs, a[None], float(h))))))
            times.append(time.perf_counter() - t)
        cat = {k: np.concatenate([r[k] for r in rows]).astype(np.float32)
               for k in ("depth", "semantic", "voxels", "energy", "depth_uncertainty") if k in names}
        out = {"depth": cat["depth"], "semantic": cat["semantic"].argmax(1).astype(np.uint8),
               "voxels": 1 / (1 + np.exp(-cat["voxels"])) > voxel_threshold, "energy": cat["energy"]}
        if "depth_uncertainty" in cat:
            out["depth_uncertainty"] = cat["depth_uncertainty"]
        return out

    run.times = times
    return run


def score_graphs(bundle, data: str | Path, splits: tuple[str, ...] = ("test", "val"), threads: int = 1,
                 log=print) -> dict[str, dict]:
    """Every graph of ``bundle`` scored on the ``splits`` scenes of ``data`` (the same scenes for each):
    ``{precision: {abs_rel, delta1, miou, pixel_acc, voxel_iou, ms_median, ms_p90, scenes}}``."""
    from torch.utils.data import ConcatDataset

    from avperception.inference.graphs import bundle_graphs

    from .data import InMemoryScenes
    from .evaluate import evaluate

    parts = [InMemoryScenes(data, s) for s in splits]
    ds = ConcatDataset(parts)
    voxel_m = parts[0].info.voxel_size_m
    out = {}
    for precision, path in bundle_graphs(bundle).items():
        pred = onnx_predictor(path, threads)
        r = evaluate(pred, ds, num_classes=len(bundle.classes), voxel_size_m=voxel_m, batch_size=8)
        t = np.asarray(pred.times[1:]) * 1e3  # the first run warms up
        out[precision] = {"abs_rel": r["depth"]["abs_rel"], "delta1": r["depth"]["delta1"],
                          "miou": r["semantic"]["miou"], "pixel_acc": r["semantic"]["pacc"],
                          "voxel_iou": r["voxels"]["iou"], "ms_median": float(np.median(t)),
                          "ms_p90": float(np.percentile(t, 90)), "scenes": len(ds), "file": path.name,
                          "mb": path.stat().st_size / 1e6}
        log(f"{precision}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in out[precision].items()))
    return out


def scores_table(scores: dict[str, dict]) -> str:
    rows = ["| graph | file (MB) | depth AbsRel | depth δ1 | class mIoU | pixel acc. | voxel IoU | ORT CPU ms/window "
            "(median, p90) |", "|---|---|---|---|---|---|---|---|"]
    for p, s in scores.items():
        rows.append(f"| {p} | {s['file']} ({s['mb']:.1f}) | {s['abs_rel']:.4f} | {s['delta1']:.4f} | {s['miou']:.4f} | "
                    f"{s['pixel_acc']:.4f} | {s['voxel_iou']:.4f} | {s['ms_median']:.1f}, {s['ms_p90']:.1f} |")
    return "\n".join(rows)


def build_graph(bundle_dir: str | Path, precision: str, calib: str | None = None, force: bool = False,
                calib_windows: int = 64, log=print) -> Path:
    """Make (unless present and valid, or ``force``) the ``precision`` graph of the bundle ``bundle_dir``, validate it
    for TensorRT (:func:`~avperception.inference.graphs.validate_graph`), check it against the float32 graph on
    a synthetic echo and record it in bundle.json; returns its path. int8 needs ``calib`` (a dataset)."""
    from avperception.inference.bundle import BundleError, load_bundle
    from avperception.inference.graphs import (GRAPH_FILES, bundle_graph, convert_fp16, quantize_int8, record_graph,
                                               set_engine_precision, validate_graph)

    bundle = load_bundle(bundle_dir)
    shape = (1, bundle.num_mics, bundle.window_samples)
    if precision == "fp32":
        validate_graph(bundle.onnx_path, shape)
        set_engine_precision(bundle.path, "fp32")
        return bundle.onnx_path
    if not force:
        try:
            path = bundle_graph(bundle, precision)
            if bundle.meta["graphs"][precision].get("from_onnx_sha256") == bundle.meta["model"].get("onnx_sha256"):
                validate_graph(path, shape)
                set_engine_precision(bundle.path, precision)
                log(f"{path.name}: present and valid (--force makes it again)")
                return path
        except BundleError:
            pass
    dst = bundle.path / GRAPH_FILES[precision]
    tmp = dst.with_suffix(".tmp.onnx")
    t = time.perf_counter()
    if precision == "fp16":
        how = convert_fp16(bundle.onnx_path, tmp)
    else:
        if not calib:
            raise SystemExit("--precision int8 needs --calib DATASET (windows to calibrate the activations on)")
        how = quantize_int8(bundle.onnx_path, tmp, calibration_windows(calib, calib_windows))
        how["calibration_data"] = str(calib)
    try:
        validate_graph(tmp, shape)
        err = _check_against_fp32(bundle, tmp)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    how["synthetic_echo_max_abs_diff"] = err
    tmp.replace(dst)
    record_graph(bundle.path, precision, how, engine=True)
    log(f"{dst.name}: {dst.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t:.1f} s, valid for TensorRT; "
        "largest |difference| from fp32 on a synthetic echo: " + ", ".join(f"{k} {v:.3g}" for k, v in err.items()))
    return dst


def _check_against_fp32(bundle, path: Path) -> dict[str, float]:
    from avperception.inference.synthetic import bundle_echo_window

    x = bundle_echo_window(bundle)[None]
    ref = ort_session(bundle.onnx_path)
    got = ort_session(path)
    names = [o.name for o in ref.get_outputs()]
    r = dict(zip(names, ref.run(None, graph_feed([i.name for i in ref.get_inputs()], x))))
    g = dict(zip(names, got.run(None, graph_feed([i.name for i in got.get_inputs()], x))))
    bad = [k for k in names if not np.isfinite(g[k]).all() and np.isfinite(r[k]).all()]
    if bad:
        raise ValueError(f"{path.name} gives non-finite {', '.join(bad)} where the float32 graph does not")
    return {k: float(np.max(np.abs(g[k].astype(np.float32) - r[k]))) for k in ("depth", "semantic", "voxels")}


def cmd_build_engine(a: argparse.Namespace) -> int:
    from avperception.inference.bundle import load_bundle

    path = build_graph(a.bundle, a.precision, a.calib, a.force, a.calib_windows)
    bundle = load_bundle(a.bundle)
    try:
        from avperception.inference.tensorrt import build_engine_for

        engine = build_engine_for(bundle, a.precision, cache_dir=a.cache_dir, force=a.force, log=print)
        print(f"engine: {engine}")
    except ImportError as e:
        print(f"graph: {path} (no TensorRT engine built: {e}; the target builds it on first use, or run this "
              "command there)")
    if a.score:
        print(scores_table(score_graphs(bundle, a.score, tuple(a.splits.split(",")))))
    return 0


def add_command(sub) -> None:
    p = sub.add_parser("build-engine", help="a bundle's fp16 / int8 graph (validated for TensorRT) and, where "
                                            "TensorRT is installed, its engine")
    p.add_argument("bundle", help="bundle directory (the graph and bundle.json are written into it)")
    p.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "int8"])
    p.add_argument("--calib", metavar="DATA", help="int8: the dataset whose train scenes calibrate the activations")
    p.add_argument("--calib-windows", dest="calib_windows", type=int, default=64)
    p.add_argument("--force", action="store_true", help="make the graph and the engine again")
    p.add_argument("--cache-dir", dest="cache_dir", help="engine cache (default ~/.cache/avperception/engines)")
    p.add_argument("--score", metavar="DATA", help="also score every graph of the bundle on DATA with ONNX Runtime "
                                                  "(CPU, 1 thread)")
    p.add_argument("--splits", default="test,val", help="with --score: the splits scored (default test,val)")
    p.set_defaults(func=cmd_build_engine)
