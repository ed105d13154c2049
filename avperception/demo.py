"""The offline demo: a simulated room streamed through the pipeline, with pictures and an error summary."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .config import DEFAULT_ARRAY, PipelineConfig, load_array
from .dsp.grid import vector_to_azel
from .eval.localization import match_errors, summarize
from .pipeline import Pipeline
from .sim.room import RoomScene, RoomSimulator, SourceSpec


def default_scene(array_name: str = DEFAULT_ARRAY, seed: int = 0) -> RoomScene:
    """Two sources around the robot: white noise standing still, speech-like babble walking around it."""
    return RoomScene(
        load_array(array_name), room_dims=(6.0, 5.0, 3.0), rt60=0.3, robot_position=(3.0, 2.5, 1.0),
        sources=[SourceSpec((4.6, 3.7, 1.3), "noise"), SourceSpec((1.4, 1.2, 1.6), "babble", 1.0, 30.0)],
        snr_db=25.0, seed=seed,
    )


def run(out_dir: str | Path = "demo_out", array: str = DEFAULT_ARRAY, seconds: float = 6.0, seed: int = 0,
        config: PipelineConfig | None = None, plots: bool = True, progress: bool = True) -> dict:
    """Simulate, localise frame by frame, write pictures + ``summary.json``; return the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scene = default_scene(array, seed)
    cfg = config or PipelineConfig(array=array)
    cfg = replace(cfg, array=array, beamformer=replace(cfg.beamformer, num_sources=len(scene.sources)))
    pipe = Pipeline(cfg)
    sim = RoomSimulator(scene)
    audio = sim.render(seconds)
    fs = cfg.sample_rate
    records = []
    frames = list(pipe.frames(audio))
    import sys

    progress = progress and sys.stdout.isatty()
    t0 = time.perf_counter()
    for k, (start, block) in enumerate(frames):
        o = pipe.process(block, start / fs)
        t_mid = (start + cfg.frame.frame_samples / 2) / fs
        true = scene.true_directions(t_mid)
        est = np.array([s.vector for s in o.sources]).reshape(-1, 3)
        records.append({"t": t_mid, "out": o, "true": true, "est": est,
                        "err": match_errors(est, true, pipe.array)})
        if progress:
            print(f"\rframe {k + 1}/{len(frames)}", end="", flush=True)
    if progress:
        print()
    wall = time.perf_counter() - t0
    errs = np.array([r["err"] for r in records])
    per_source = [summarize(errs[:, j]) for j in range(errs.shape[1])]
    comp = np.array([r["out"].compute_ms for r in records])
    hop_ms = cfg.frame.hop_samples / fs * 1e3
    summary = {
        "array": array,
        "seconds": seconds,
        "frames": len(records),
        "map_shape": list(records[0]["out"].energy.shape),
        "overall": summarize(errs),
        "per_source": [dict(signal=s.signal, moving=bool(s.orbit_deg_per_s), **st)
                       for s, st in zip(scene.sources, per_source)],
        "compute_ms_median": float(np.median(comp)),
        "real_time_factor": float(np.median(comp) / hop_ms),
        "wall_s": wall,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if plots:
        _plots(out, records, pipe, scene)
    return summary


def _plots(out: Path, records: list, pipe: Pipeline, scene: RoomScene) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = pipe.grid
    picks = np.linspace(0, len(records) - 1, 3).astype(int)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), constrained_layout=True)
    for ax, i in zip(axes, picks):
        r = records[i]
        m = grid.meta
        extent = (m["az_max"], m["az_max"] - grid.shape[1] * m["daz"], m["el_max"] - grid.shape[0] * m["del"], m["el_max"])
        im = ax.imshow(r["out"].energy, extent=extent, aspect="auto", cmap="inferno")
        for j, v in enumerate(r["true"]):
            az, el = vector_to_azel(v)
            ax.plot(az, abs(el), "o", mfc="none", mec="lime", ms=14, mew=2, label="true" if j == 0 else None)
        for j, s in enumerate(r["out"].sources):
            ax.plot(s.azimuth_deg, s.elevation_deg, "x", color="cyan", ms=12, mew=2, label="estimated" if j == 0 else None)
        ax.set_title(f"t = {r['t']:.2f} s")
        ax.set_xlabel("azimuth (deg, + = left)")
        ax.set_ylabel("elevation (deg)")
        ax.legend(loc="lower left", fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.8, label="SRP-PHAT")
    fig.suptitle(f"Acoustic energy map, {pipe.array.name}, RT60 {scene.rt60} s")
    fig.savefig(out / "energy_maps.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 4), constrained_layout=True)
    t = np.array([r["t"] for r in records])
    for j in range(len(scene.sources)):
        az = np.array([vector_to_azel(r["true"][j])[0] for r in records])
        ax.plot(t, az, "-", lw=3, alpha=0.5, label=f"true source {j} ({scene.sources[j].signal})")
    for r in records:
        for s in r["out"].sources:
            ax.plot(r["t"], s.azimuth_deg, ".", color="k", ms=4)
    ax.plot([], [], ".", color="k", label="estimated")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("azimuth (deg)")
    ax.set_ylim(-180, 180)
    ax.legend(fontsize=8)
    ax.set_title("Source azimuth over time")
    fig.savefig(out / "tracks.png", dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- learned outputs


def active_room(room_id: int, ping_rate_hz: float, seed: int, num_sources: int = 2, speed_m_s: float = 0.15,
                level_db: tuple[float, float] | None = None):
    """The simulator's active stream (needs the training package's data engine): the robot at ``speed_m_s`` (0:
    standing still), its ambient sources drawn at ``level_db`` (RMS dBFS at 1 m; None: the data engine's range)."""
    try:
        from avperception_train.datagen.config import load_config
        from avperception_train.datagen.trajectory import ActiveTrajectory
    except ImportError as e:
        raise RuntimeError("the simulated active room needs the training package (pip install -e training): "
                           f"{e}") from None
    cfg = None if level_db is None else load_config(None, {"passive": {"level_db": list(level_db)}})
    return ActiveTrajectory(cfg, room_id=room_id, ping_rate_hz=ping_rate_hz, seed=seed, num_sources=num_sources,
                            speed_m_s=speed_m_s)


def run_sonar(out_dir: str | Path = "demo_out", pings: int = 24, room_id: int = 0, seed: int = 0,
              ping_rate_hz: float = 4.0, model: str = "default", backend: str = "auto", plots: bool = True,
              progress: bool = True) -> dict:
    """A robot pinging as it drives through a simulated room: the stream goes through the same sonar code the node
    runs (:func:`avperception.eval.live.score_stream`), each ping's prediction is scored against the room's truth,
    and ``sonar.png`` shows prediction beside truth.

    Returns the summary also written to ``sonar_summary.json``.
    """
    import sys

    from .config import SonarConfig
    from .eval.live import score_stream, summarize_scores

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    traj = active_room(room_id, ping_rate_hz, seed)
    t0 = time.perf_counter()
    records, sonar = score_stream(traj, pings, SonarConfig(model=model, backend=backend),
                                  progress=progress and sys.stdout.isatty())
    summary = {"scene": traj.describe(), "pings": pings, **summarize_scores(records), **sonar.stats(),
               "wall_s": time.perf_counter() - t0}
    (out / "sonar_summary.json").write_text(json.dumps(summary, indent=2))
    if plots:
        _sonar_plot(out / "sonar.png", records, sonar.bundle, sonar.config.confident_max_rel_std)
    return summary


def _sonar_plot(path: Path, records: list, bundle, confident_max_rel_std: float = 0.0) -> None:
    """Prediction beside truth for the median-scoring ping: depth, classes, occupancy from above; for a bundle with a
    depth uncertainty also the confident depth (at ``confident_max_rel_std``) and the standard deviation as a share
    of the range; delta1 per ping."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .sonar.products import confident_depth, label_colors

    d1 = np.array([r["delta1"] for r in records])
    r = records[int(np.argsort(d1)[len(d1) // 2])]
    o, t = r["out"], r["truth"]
    ext = (180, -180, bundle.el_min_deg, bundle.el_max_deg)
    c, e = np.asarray(bundle.voxel_center), np.asarray(bundle.voxel_extent)
    vext = (c[0] - e[0] / 2, c[0] + e[0] / 2, c[1] - e[1] / 2, c[1] + e[1] / 2)
    sem_truth = np.where(t.semantic == 255, 0, t.semantic).astype(np.uint8)
    doubt = o.depth_uncertainty is not None and confident_max_rel_std > 0
    cols = 4 if doubt else 3
    fig, ax = plt.subplots(3, cols, figsize=(5 * cols, 9.5), constrained_layout=True,
                           gridspec_kw={"width_ratios": [2, 2, 1, 2][:cols]})
    for row, (name, depth, labels, occ) in enumerate((("predicted", o.depth, o.labels, o.occupancy),
                                                      ("true", t.depth, sem_truth, t.occupancy))):
        im = ax[row, 0].imshow(depth, extent=ext, aspect="auto", cmap="turbo_r", vmin=0, vmax=8)
        ax[row, 0].set_title(f"{name} depth (ping {r['ping']})")
        fig.colorbar(im, ax=ax[row, 0], label="m")
        ax[row, 1].imshow(label_colors(labels, bundle.class_colors), extent=ext, aspect="auto")
        ax[row, 1].set_title(f"{name} classes ({', '.join(bundle.classes)})")
        ax[row, 2].imshow(occ.any(axis=0), origin="lower", cmap="Greys", extent=vext)
        ax[row, 2].plot(0, 0, "r^", ms=8)
        ax[row, 2].set_title(f"{name} occupancy, top view")
    if doubt:
        im = ax[0, 3].imshow(confident_depth(o.depth, o.depth_uncertainty, confident_max_rel_std), extent=ext,
                             aspect="auto", cmap="turbo_r", vmin=0, vmax=8)
        ax[0, 3].set_facecolor("black")
        ax[0, 3].set_title(f"confident depth (σ ≤ {confident_max_rel_std:g} of the range; "
                           f"{100 * r['confident_kept']:.0f} % kept, δ1 {r['confident_delta1']:.2f})")
        fig.colorbar(im, ax=ax[0, 3], label="m")
        im = ax[1, 3].imshow(o.depth_uncertainty / o.depth, extent=ext, aspect="auto", cmap="magma", vmin=0,
                             vmax=2 * confident_max_rel_std)
        ax[1, 3].set_title("predicted σ / range")
        fig.colorbar(im, ax=ax[1, 3])
    gs = ax[2, 0].get_gridspec()
    for a in ax[2]:
        a.remove()
    big = fig.add_subplot(gs[2, :])
    pings = [x["ping"] for x in records]
    big.plot(pings, d1, "o-", label="depth delta1")
    big.plot(pings, [x["abs_rel"] for x in records], "s-", label="depth AbsRel")
    big.plot(pings, [x["voxel_iou"] for x in records], "^-", label="voxel IoU")
    if doubt:
        big.plot(pings, [x["confident_kept"] for x in records], "--", label="confident depth: share kept")
        big.plot(pings, [x["confident_delta1"] for x in records], ":", label="confident depth: delta1")
    big.set_xlabel("ping")
    big.set_ylim(0, 1)
    big.legend()
    big.set_title("per ping, against the simulator's truth")
    fig.savefig(path, dpi=90)
    plt.close(fig)
