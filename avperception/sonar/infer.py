"""Offline inference on a recording (``avperception infer``): find the pings, run the bundle, write the results.

A recording of exactly one window is taken as one ping whose sample 0 is the sweep's onset (the training
scenes' layout); a longer one is searched for pings on their direct path (the strongest arrival), each refined
to the sample, and every complete window is run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def find_windows(audio: np.ndarray, bundle, min_spacing_s: float = 0.1, threshold_db: float = 20.0,
                 search: int = 64, direct=None) -> list[int]:
    """Onset sample indices of the pings in ``audio (mics, n)`` whose whole window lies inside it.

    Exactly one window's worth of audio is one ping at sample 0. ``direct``: the bundle's
    :class:`~avperception.sonar.onset.DirectPath`, when already built.
    """
    from .onset import DirectPath, detect_onsets, refine_onset

    n = bundle.window_samples
    if audio.shape[1] < n:
        raise ValueError(f"the recording holds {audio.shape[1]} samples, fewer than one {n}-sample window "
                         f"({n / bundle.sample_rate * 1e3:.0f} ms from the sweep's onset)")
    if audio.shape[1] == n:
        return [0]
    direct = direct if direct is not None else DirectPath.of_bundle(bundle)
    found = detect_onsets(audio, direct, int(min_spacing_s * bundle.sample_rate), threshold_db)
    out = []
    for k in found:
        lo = max(0, k - search)
        r = refine_onset(audio[:, lo: k + search + direct.length], k - lo, direct, search)
        k = k if r is None else lo + r
        if 0 <= k and k + n <= audio.shape[1]:
            out.append(int(k))
    return out


def run(audio: np.ndarray, fs: int, bundle, array, backend: str = "auto", threads: int = 1,
        onsets: list[int] | None = None, log=None, array_height_m: float = 0.0,
        average_pings: int = 1) -> list[tuple[int, object]]:
    """Run ``bundle`` on every ping of ``audio (mics, n)`` (channel-mapped): ``[(onset_index, SonarOutputs)]``;
    ``array_height_m``: the array's height above the floor where known (the node's ``sonar.array_height_m``);
    ``average_pings``: each ping heard as the mean of its window and up to ``average_pings - 1`` windows before it
    (the node's ``sonar.average_pings``, for a recording made standing still: no pose is checked)."""
    from ..config import SonarConfig
    from .pipeline import SonarPipeline

    cfg = SonarConfig(backend=backend, threads=threads, array_height_m=array_height_m, average_pings=average_pings,
                      still_frame="")
    sonar = SonarPipeline(array, cfg, fs, bundle=bundle, log=log)  # (which validates cfg)
    x = np.asarray(audio, dtype=np.float32)
    if x.shape[0] != array.num_mics:
        raise ValueError(f"expected ({array.num_mics}, samples) audio for {array.name}, got {x.shape}")
    starts = find_windows(x, bundle, direct=sonar.direct) if onsets is None else list(onsets)
    n = bundle.window_samples
    out = []
    for k in starts:
        audio, count = sonar.stack.push(x[:, k: k + n], k / fs)
        out.append((k, sonar.infer(audio, k / fs, pings_averaged=count)))
    return out


def write(out_dir: str | Path, results: list, bundle, source: str = "",
          near_bound_quantile: float | None = None, array_height_m: float = 0.0,
          confident_max_rel_std: float | None = None) -> dict:
    """Write ``depth.npy`` (H x W float32 m), ``semantic.npy`` (H x W uint8), ``occupancy.npy`` (D x H x W bool),
    PNG previews and ``meta.json``; numbered (``depth_000.npy`` ...) when there are several windows. For a bundle
    with a depth uncertainty also ``depth_uncertainty.npy`` (H x W float32 m, the standard deviation) and
    ``depth_near_bound.npy`` (:func:`~avperception.sonar.products.depth_near_bound` at ``near_bound_quantile``,
    None: the node's ``sonar.near_bound_quantile``; 0: not written) and ``depth_confident.npy``
    (:func:`~avperception.sonar.products.confident_depth` at ``confident_max_rel_std``, None: the node's
    ``sonar.confident_max_rel_std``; 0: not written). ``meta.json`` records ``array_height_m``, the array's height
    the model was given (0: unknown)."""
    from ..config import SonarConfig
    from .products import confident_depth, depth_colors, depth_near_bound, label_colors

    q = SonarConfig().near_bound_quantile if near_bound_quantile is None else near_bound_quantile
    r = SonarConfig().confident_max_rel_std if confident_max_rel_std is None else confident_max_rel_std

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    many = len(results) > 1
    files = []
    for i, (onset, o) in enumerate(results):
        tag = f"_{i:03d}" if many else ""
        np.save(out / f"depth{tag}.npy", o.depth.astype(np.float32))
        np.save(out / f"semantic{tag}.npy", o.labels.astype(np.uint8))
        np.save(out / f"occupancy{tag}.npy", o.occupancy.astype(bool))
        _preview(out / f"preview{tag}.png", o, bundle, depth_colors, label_colors)
        files.append({"onset_sample": int(onset), "onset_s": float(o.stamp), "depth": f"depth{tag}.npy",
                      "semantic": f"semantic{tag}.npy", "occupancy": f"occupancy{tag}.npy",
                      "preview": f"preview{tag}.png", "pings_averaged": int(o.pings_averaged),
                      "infer_ms": round(float(o.infer_ms), 3)})
        if o.depth_uncertainty is not None:
            np.save(out / f"depth_uncertainty{tag}.npy", o.depth_uncertainty.astype(np.float32))
            files[-1]["depth_uncertainty"] = f"depth_uncertainty{tag}.npy"
            if q > 0:
                np.save(out / f"depth_near_bound{tag}.npy", depth_near_bound(o.depth, o.depth_uncertainty, q))
                files[-1]["depth_near_bound"] = f"depth_near_bound{tag}.npy"
            if r > 0:
                np.save(out / f"depth_confident{tag}.npy", confident_depth(o.depth, o.depth_uncertainty, r))
                files[-1]["depth_confident"] = f"depth_confident{tag}.npy"
    h, w = bundle.pano_shape
    meta = {
        "source": source,
        "bundle": str(bundle.path), "sweep_id": bundle.sweep_id, "array": bundle.array.name,
        "array_height_m": float(array_height_m),
        "frame": bundle.array.frame_id + " (x forward, y left, z up, REP 103)",
        "depth": {"shape": [h, w], "units": "m along each pixel's ray, NaN unknown",
                  "grid": "equirectangular: row 0 = elevation el_max, column 0 = azimuth +180 decreasing to the "
                          "right, pixel centres at half-pixel offsets",
                  "el_min_deg": bundle.el_min_deg, "el_max_deg": bundle.el_max_deg},
        "semantic": {"classes": list(bundle.classes), "colors": np.asarray(bundle.class_colors).tolist()},
        **({"depth_uncertainty": {"units": "m, the depth's standard deviation per pixel, NaN unknown"}}
           if bundle.has_depth_uncertainty else {}),
        **({"depth_near_bound": {"units": "m, the range each pixel's surface is nearer than with probability "
                                          "quantile", "quantile": q}}
           if bundle.has_depth_uncertainty and q > 0 else {}),
        **({"depth_confident": {"units": "m, the depth where its standard deviation is at most max_rel_std of it, "
                                         "NaN elsewhere", "max_rel_std": r}}
           if bundle.has_depth_uncertainty and r > 0 else {}),
        "occupancy": {"index": "[z, y, x]", "shape": list(np.asarray(results[0][1].occupancy).shape) if results else [],
                      "center_m_xyz": np.asarray(bundle.voxel_center).tolist(),
                      "extent_m_xyz": np.asarray(bundle.voxel_extent).tolist()},
        "windows": files,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def _preview(path: Path, o, bundle, depth_colors, label_colors) -> None:
    """Depth, classes and a top view of the occupancy side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(14, 3.4), constrained_layout=True,
                           gridspec_kw={"width_ratios": [2, 2, 1]})
    ext = (180, -180, bundle.el_min_deg, bundle.el_max_deg)
    im = ax[0].imshow(o.depth, extent=ext, aspect="auto", cmap="turbo_r", vmin=0, vmax=8)
    fig.colorbar(im, ax=ax[0], label="depth (m)")
    ax[0].set_title("depth")
    ax[1].imshow(label_colors(o.labels, bundle.class_colors), extent=ext, aspect="auto")
    ax[1].set_title("classes: " + ", ".join(bundle.classes))
    for a in ax[:2]:
        a.set_xlabel("azimuth (deg, + = left)")
        a.set_ylabel("elevation (deg)")
    top = o.occupancy.any(axis=0)  # (y, x)
    c, e = np.asarray(bundle.voxel_center), np.asarray(bundle.voxel_extent)
    ax[2].imshow(top, origin="lower", cmap="Greys", extent=(c[0] - e[0] / 2, c[0] + e[0] / 2,
                                                             c[1] - e[1] / 2, c[1] + e[1] / 2))
    ax[2].plot(0, 0, "r^", ms=8)
    ax[2].set_title("occupancy, top view")
    ax[2].set_xlabel("x (m, forward)")
    ax[2].set_ylabel("y (m, left)")
    fig.savefig(path, dpi=90)
    plt.close(fig)
