"""Render dataset scenes to PNG: floor plan, panoramas, energy map, voxels, waveforms and echo profile."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .shards import SceneDataset, panorama_grid, speed_of_sound

SEM_COLORS = {0: (0.55, 0.42, 0.25), 1: (0.6, 0.8, 1.0), 2: (0.85, 0.85, 0.8), 3: (0.9, 0.3, 0.2)}
SEM_NAMES = {0: "floor", 1: "ceiling", 2: "wall", 3: "obstacle"}


def semantic_rgb(sem: np.ndarray) -> np.ndarray:
    """``(H, W)`` labels -> ``(H, W, 3)`` float colours (ignore = black)."""
    out = np.zeros(sem.shape + (3,))
    for k, c in SEM_COLORS.items():
        out[sem == k] = c
    return out


def _pano_extent(shape_el: tuple[float, float]) -> list[float]:
    return [180.0, -180.0, shape_el[1], shape_el[0]]


def render_scene_png(scene: dict, manifest: dict, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon as MplPolygon

    from .acoustics import echo_profile

    path = Path(path)
    fig = plt.figure(figsize=(15, 13.5))
    gs = fig.add_gridspec(4, 3, height_ratios=[1.0, 1.0, 0.9, 0.9])
    c = speed_of_sound(manifest)
    fs = int(scene["sample_rate"])
    pose = scene["robot_pose"]
    title = (f"scene {int(scene['scene_index'])}  room {int(scene['room_id'])}  split {scene['split_name']}  "
             f"array {scene['array_name']}  active={bool(scene['active'])}  sources={int(scene['num_sources'])}")
    fig.suptitle(title)

    # floor plan
    ax = fig.add_subplot(gs[0, 0])
    if int(scene["num_floor_vertices"]) > 0 and np.all(np.isfinite(pose)):
        fp = scene["floor_polygon"]
        ax.add_patch(MplPolygon(fp, closed=True, fill=True, fc=(0.95, 0.95, 0.92), ec="k", lw=1.5))
        for b in scene["boxes"]:
            cx, cy, sx, sy, _, yaw = b
            loc = np.array([[-sx, -sy], [sx, -sy], [sx, sy], [-sx, sy]]) / 2
            R = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
            ax.add_patch(MplPolygon(loc @ R.T + [cx, cy], closed=True, fc=SEM_COLORS[3], ec="k", alpha=0.7))
        x, y, _, yaw = pose
        R = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
        ext = np.asarray(manifest["grids"]["voxels"]["extent_m_xyz"][:2]) / 2
        cen = np.asarray(manifest["grids"]["voxels"]["center_m_xyz"][:2])
        crop = (np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * ext + cen) @ R.T + [x, y]
        ax.add_patch(MplPolygon(crop, closed=True, fill=False, ec="tab:green", ls="--", lw=1, label="voxel crop"))
        mics = scene["mic_positions"][:, :2] @ R.T + [x, y]
        ax.plot(mics[:, 0], mics[:, 1], ".", color="tab:blue", ms=3)
        ax.arrow(x, y, 0.5 * np.cos(yaw), 0.5 * np.sin(yaw), width=0.04, color="tab:blue", label="robot (+x)")
        for k in range(int(scene["num_sources"])):
            p = scene["source_positions"][k]
            ax.plot(p[0], p[1], "*", color="tab:red", ms=14)
            ax.annotate(f"s{k}", p[:2], textcoords="offset points", xytext=(5, 5))
        ax.set_xlim(np.nanmin(fp[:, 0]) - 0.3, np.nanmax(fp[:, 0]) + 0.3)
        ax.set_ylim(np.nanmin(fp[:, 1]) - 0.3, np.nanmax(fp[:, 1]) + 0.3)
        ax.set_aspect("equal")
        ax.legend(loc="upper right", fontsize=7)
        ax.set_title(f"floor plan (h = {float(scene['room_height']):.2f} m)")
    else:
        ax.text(0.5, 0.5, "no floor plan\n(recorded data)", ha="center", va="center")
        ax.set_axis_off()

    pano = manifest["grids"]["panorama"]
    el = pano["el_deg"]
    ext = [180.0, -180.0, el[1], el[0]]
    src_azel = scene["source_azel_deg"]

    ax = fig.add_subplot(gs[0, 1:])
    im = ax.imshow(scene["depth"], extent=ext, aspect="auto", cmap="viridis")
    fig.colorbar(im, ax=ax, label="range (m)")
    ax.plot(src_azel[:, 0], src_azel[:, 1], "r*", ms=12)
    ax.set_title("depth panorama (NaN = white)")
    ax.set_xlabel("azimuth (deg, left = +180)")
    ax.set_ylabel("elevation (deg)")

    ax = fig.add_subplot(gs[1, 0])
    ax.imshow(semantic_rgb(scene["semantic"]), extent=ext, aspect="auto")
    for k, col in SEM_COLORS.items():
        ax.plot([], [], "s", color=col, label=SEM_NAMES[k])
    ax.legend(loc="lower right", fontsize=7)
    ax.set_title("semantic panorama" + ("" if bool(scene["has_semantic"]) else " (no ground truth)"))

    ax = fig.add_subplot(gs[1, 1])
    eg = manifest["grids"]["energy"]
    ax.imshow(scene["energy"], extent=[180, -180, -90, 90], aspect="auto", cmap="inferno", vmin=0, vmax=1)
    ax.plot(src_azel[:, 0], src_azel[:, 1], "c+", ms=12)
    ax.set_title(f"energy target ({eg['shape'][0]}x{eg['shape'][1]}, sigma {eg.get('sigma_deg', '?')} deg)")

    ax = fig.add_subplot(gs[1, 2], projection="3d")
    vox = scene["voxels"] & scene["voxel_known"]
    zi, yi, xi = np.nonzero(vox)
    o, s = scene["voxel_origin"], scene["voxel_size"]
    if len(xi):
        step = max(1, len(xi) // 6000)
        ax.scatter(o[0] + (xi[::step] + 0.5) * s[0], o[1] + (yi[::step] + 0.5) * s[1],
                   o[2] + (zi[::step] + 0.5) * s[2], c=zi[::step], s=2, cmap="terrain")
    ax.scatter([0], [0], [0], c="tab:blue", s=30)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_zlabel("z")
    ax.set_title(f"occupancy crop {tuple(int(v) for v in scene['voxel_shape'])} (array frame)")

    ax = fig.add_subplot(gs[2, :2])
    a = np.asarray(scene["audio"], dtype=np.float64)
    t = np.arange(a.shape[1]) / fs * 1000
    span = max(float(np.max(np.abs(a))), 1e-6)
    for m in range(a.shape[0]):
        ax.plot(t, a[m] / span * 0.45 + m, lw=0.5)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("microphone")
    ax.set_title("waveforms (normalised)")

    ax = fig.add_subplot(gs[2, 2])
    if bool(scene["active"]):
        env = echo_profile(a, scene["emitted"])
        prof = 20 * np.log10(env.mean(0) / env.max() + 1e-6)
        dist = np.arange(a.shape[1]) / fs * c / 2
        ax.plot(dist, prof, lw=0.8)
        d = scene["depth"]
        if np.any(np.isfinite(d)):
            ax.axvline(float(np.nanmin(d)), color="r", ls="--", label="nearest surface (ray cast)")
            ax.legend(fontsize=7)
        ax.set_xlim(0, min(dist[-1], 8))
        ax.set_ylim(-60, 3)
        ax.set_xlabel("echo distance c*t/2 (m)")
        ax.set_ylabel("dB")
        ax.set_title("echo profile (matched filter)")
    else:
        ax.text(0.5, 0.5, "passive scene (no sweep)", ha="center", va="center")
        ax.set_axis_off()

    ax = fig.add_subplot(gs[3, :2])
    if bool(scene["active"]):
        _echo_image_panel(ax, fig, a, scene, fs, c, panorama_grid(manifest))
    else:
        ax.text(0.5, 0.5, "passive scene (no sweep): no echo image", ha="center", va="center")
        ax.set_axis_off()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _echo_image_panel(ax, fig, audio: np.ndarray, scene: dict, fs: int, c: float, grid) -> None:
    """The matched filters beamformed in the horizontal plane (azimuth x echo distance), with the
    ray-cast range at the horizon on top: a wall lights up where it faces the array squarely."""
    from avperception.dsp.echo import echo_image
    from avperception.dsp.grid import horizon

    ring = horizon(5.0)  # 72 azimuths, left = +180 as in the panoramas
    img = echo_image(audio, scene["emitted"], scene["mic_positions"], ring.vectors, fs, c)  # (A, N)
    img = 10 * np.log10(img / img[:, 40:].max() + 1e-6)  # past the direct sound
    dist = np.arange(img.shape[1]) / fs * c / 2
    far = min(float(dist[-1]), 8.0)
    az = ring.azimuth_deg
    im = ax.imshow(img[:, dist <= far].T, origin="lower", aspect="auto", cmap="magma", vmin=-30, vmax=0,
                   extent=[float(az[0]), float(az[-1]), 0, far])
    fig.colorbar(im, ax=ax, label="dB")
    row = int(np.argmin(np.abs(grid.as_image(grid.elevation_deg)[:, 0])))
    ax.plot(grid.as_image(grid.azimuth_deg)[row], scene["depth"][row], "c.", ms=3,
            label="ray-cast range at elevation 0")
    ax.legend(loc="upper right", fontsize=7)
    ax.set_xlim(180, -180)
    ax.set_ylim(0, far)
    ax.set_xlabel("azimuth (deg, left = +180)")
    ax.set_ylabel("echo distance c*t/2 (m)")
    ax.set_title("echo image at elevation 0 (matched filters, delay-and-sum)")


def preview(root: str | Path, out: str | Path | None = None, num: int = 4, split: str | None = None,
            indices: list[int] | None = None) -> list[Path]:
    """Render ``num`` scenes (or the given dataset positions) of a dataset to ``out`` (default ``ROOT/preview``)."""
    ds = SceneDataset(root, split, allow_incomplete=True)
    if len(ds) == 0:
        raise ValueError(f"{root}: no scenes" + (f" in split {split!r}" if split else ""))
    out = Path(out) if out is not None else Path(root) / "preview"
    picks = indices if indices is not None else list(np.unique(np.linspace(0, len(ds) - 1, min(num, len(ds))).astype(int)))
    paths = []
    for i in picks:
        if not 0 <= i < len(ds):
            raise IndexError(f"scene position {i} out of range (0..{len(ds) - 1})")
        s = ds[int(i)]
        paths.append(render_scene_png(s, ds.manifest, out / f"scene_{int(s['scene_index']):07d}.png"))
    return paths
