"""Generate a dataset: parallel, resumable, byte-deterministic.

Workers (spawned processes, one BLAS thread each) render scenes by index; the
parent collects them in index order and writes each shard as soon as it is
complete. A shard that exists under its expected name is done, so an
interrupted run picks up where it stopped when started again with the same
command. The seed of scene ``i`` comes from (seed, i) only, so the bytes do not
depend on the number of workers.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .config import DatagenConfig, DatagenConfigError, config_from_dict
from .progress import progress
from .scene import MAX_FLOOR_VERTICES, generate_scene, material_table, room_of, room_split, grids
from .shards import (CONSTANTS, FORMAT, FORMAT_VERSION, MANIFEST, RUNS_LOG, SCHEMA, SHARD_GLOB, SPLITS,
                     library_versions, sha256_file, shard_name, shard_ranges, stack_scenes, write_json, write_npz)

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS")

# identity of a dataset: a resumed run must agree on all of these (``only_splits`` is absent from a full dataset)
_IDENTITY = ("format", "format_version", "source", "config", "array", "only_splits")


def dataset_constants(cfg: DatagenConfig, array) -> dict:
    from .acoustics import sweep
    from .geometry import voxel_grid

    a = cfg.active
    _, lo, size = voxel_grid(cfg.voxels.center_m, cfg.voxels.extent_m, cfg.voxels.resolution)
    r = cfg.voxels.resolution
    return {
        "format_version": FORMAT_VERSION,
        "sample_rate": cfg.audio.sample_rate,
        "array_name": array.name,
        "mic_positions": array.positions,
        "speaker_position": np.asarray(a.speaker_position, dtype=np.float64),
        "emitted": sweep(cfg.audio.sample_rate, a.f_start_hz, a.f_end_hz, a.duration_s, a.sweep, a.fade),
        "voxel_shape": np.array([r[2], r[1], r[0]], dtype=np.int64),
        "voxel_origin": lo,
        "voxel_size": size,
    }


def pad_sizes(cfg: DatagenConfig) -> dict[str, int]:
    return {"K": int(cfg.passive.num_sources[1]), "P": MAX_FLOOR_VERTICES, "B": int(cfg.boxes.count[1])}


def check_splits(only_splits) -> tuple[str, ...] | None:
    """``only_splits`` (names of :data:`SPLITS`, or None / empty for all) in their canonical order; an unknown or
    repeated name is an error naming the valid ones."""
    if not only_splits:
        return None
    names = list(only_splits)
    bad = [s for s in names if s not in SPLITS]
    if bad:
        raise DatagenConfigError(f"unknown split {', '.join(map(repr, bad))}: give some of {', '.join(SPLITS)}")
    if len(set(names)) != len(names):
        raise DatagenConfigError(f"a split is named twice in {names}")
    return tuple(s for s in SPLITS if s in names)


def scene_indices(cfg: DatagenConfig, num_scenes: int, only_splits=None) -> list[int]:
    """Indices of the scenes among the first ``num_scenes`` whose room is in ``only_splits`` (None: all)."""
    only = check_splits(only_splits)
    if only is None:
        return list(range(num_scenes))
    codes = {SPLITS.index(s) for s in only}
    return [i for i in range(num_scenes) if room_split(cfg, room_of(cfg, i)) in codes]


def build_manifest(cfg: DatagenConfig, array, num_scenes: int, only_splits=None) -> dict:
    """The deterministic manifest of a synthetic dataset (shards filled in when they are written). With
    ``only_splits``, it holds only those splits' scenes of the ``num_scenes``-scene dataset (the other splits
    list no rooms and no scenes) and records the names as ``only_splits``."""
    only = check_splits(only_splits)
    pano, egrid, ph = grids(cfg)
    rooms = sorted({room_of(cfg, i) for i in range(num_scenes)})
    split_rooms = {s: [] for s in SPLITS}
    split_scenes = {s: 0 for s in SPLITS}
    for r in rooms:
        split_rooms[SPLITS[room_split(cfg, r)]].append(r)
    for i in range(num_scenes):
        split_scenes[SPLITS[room_split(cfg, room_of(cfg, i))]] += 1
    if only is not None:
        for s in SPLITS:
            if s not in only:
                split_rooms[s], split_scenes[s] = [], 0
    grids_info = {
        "panorama": {"kind": "equirectangular", "shape": list(pano.shape), "resolution_deg": pano.resolution_deg,
                     "az_deg": [180.0, -180.0], "el_deg": [cfg.panorama.el_max_deg, cfg.panorama.el_min_deg],
                     "note": "column 0 = azimuth +180 decreasing to the right, row 0 = highest elevation; "
                             "avperception.dsp.grid.equirectangular"},
        "energy": {"kind": "equirectangular", "shape": list(egrid.shape), "resolution_deg": egrid.resolution_deg,
                   "sigma_deg": cfg.energy.sigma_deg},
        "voxels": {"index": "[z, y, x]", "shape_dhw": [cfg.voxels.resolution[2], cfg.voxels.resolution[1],
                                                         cfg.voxels.resolution[0]],
                   "extent_m_xyz": list(cfg.voxels.extent_m), "center_m_xyz": list(cfg.voxels.center_m),
                   "frame": "array frame (x forward, y left, z up)"},
    }
    if ph is not None:
        grids_info["pinhole"] = {"shape": list(ph.shape), **{k: getattr(cfg.pinhole, k) for k in
                                                             ("fx", "fy", "cx", "cy")},
                                 "rpy_deg": list(cfg.pinhole.rpy_deg)}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source": "synthetic",
        "config": cfg.to_dict(),
        "config_digest": cfg.digest(),
        "array": array.to_dict(),
        "seed": int(cfg.seed),
        "seeding": {"room": "numpy SeedSequence(seed, spawn_key=(1, room_id))",
                    "scene": "numpy SeedSequence(seed, spawn_key=(2, scene_index))",
                    "room_of_scene": f"scene_index // {cfg.room.scenes_per_room}",
                    "split": "golden-ratio sequence over room ids, offset by SeedSequence(seed, spawn_key=(3,))"},
        "num_scenes": int(num_scenes),
        "scenes_per_shard": int(cfg.scenes_per_shard),
        "pads": pad_sizes(cfg),
        "classes": {"0": "floor", "1": "ceiling", "2": "wall", "3": "obstacle", "255": "ignore"},
        "signals": ["noise", "babble", "harmonic", "chirps"],
        "materials": material_table(cfg),
        "grids": grids_info,
        "splits": {s: {"rooms": split_rooms[s], "scenes": split_scenes[s]} for s in SPLITS},
        **({"only_splits": list(only)} if only is not None else {}),
        "schema": {k: {"shape": v[0], "dtype": v[1], "meaning": v[2]} for k, v in SCHEMA.items()},
        "constants": {k: {"shape": v[0], "dtype": v[1], "meaning": v[2]} for k, v in CONSTANTS.items()},
        "libraries": library_versions(),
        "complete": False,
        "shards": [],
    }


# --------------------------------------------------------------------------- workers

_W: dict = {}


def limit_threads() -> None:
    """One BLAS/OpenMP thread in this process (the parallelism is across processes)."""
    for v in _THREAD_VARS:
        os.environ.setdefault(v, "1")
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover
        pass


def _single_thread():
    """Context: one BLAS thread in this process, restored afterwards."""
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1)
    except ImportError:  # pragma: no cover
        import contextlib

        return contextlib.nullcontext()


def _init_worker(cfg_dict: dict, array_dict: dict, backend: str) -> None:
    from avperception.config import ArrayGeometry

    from .config import config_from_dict

    limit_threads()
    _W["cfg"] = config_from_dict(cfg_dict)
    _W["array"] = ArrayGeometry.from_dict(array_dict)
    _W["backend"] = backend


def _work(index: int) -> dict:
    return generate_scene(_W["cfg"], index, _W["array"], _W["backend"])


# --------------------------------------------------------------------------- driver


def _check_resume(out: Path, manifest: dict, overwrite: bool) -> None:
    old_path = out / MANIFEST
    if not old_path.exists():
        if any(out.glob(SHARD_GLOB)) and not overwrite:
            raise DatagenConfigError(f"{out} holds shards but no {MANIFEST}; use an empty directory or --overwrite")
        return
    if overwrite:
        for p in out.glob(SHARD_GLOB):
            p.unlink()
        old_path.unlink()
        return
    try:
        old = json.loads(old_path.read_text())
    except json.JSONDecodeError:
        raise DatagenConfigError(f"{old_path} is not valid JSON; use --overwrite to start again") from None
    old["config"] = _with_defaults(old.get("config"))
    diff = [k for k in _IDENTITY if old.get(k) != manifest.get(k)]
    if diff:
        detail = ""
        if "config" in diff:
            a, b = old.get("config", {}), manifest["config"]
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            detail = f" (config sections that differ: {keys})"
        raise DatagenConfigError(
            f"{out} already holds a dataset made with a different {', '.join(diff)}{detail}; "
            "resume with the same config and seed, pick another --out, or pass --overwrite")


def _with_defaults(config):
    """A manifest's config with the keys added since it was written at their defaults (which leave the scenes as
    they were), so that an older dataset resumes and grows; as it is where it no longer loads."""
    if not isinstance(config, dict):
        return config
    try:
        return config_from_dict(config).to_dict()
    except (DatagenConfigError, TypeError, ValueError):
        return config


def run_datagen(cfg: DatagenConfig, out: str | Path, num_scenes: int, workers: int = 1, *,
                overwrite: bool = False, show_progress: bool = True, backend: str = "auto",
                log: Callable[[str], None] | None = print, only_splits=None) -> dict:
    """Generate ``num_scenes`` scenes into ``out``; returns the final manifest.

    Resumes an interrupted run in the same directory (same config and seed);
    ``overwrite`` deletes an existing dataset there first. ``only_splits`` (e.g. ``["test"]``) generates only
    the scenes of those splits, byte for byte as the full dataset holds them, in the shards that would hold them
    (a shard without one is not written): a dataset's held-out rooms in a tenth of the time.
    """
    if num_scenes < 1:
        raise DatagenConfigError("num_scenes must be >= 1")
    if workers < 1:
        raise DatagenConfigError("workers must be >= 1")
    cfg.validate()
    array = cfg.array_geometry()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DatagenConfigError(f"--out {out} exists and is not a directory")
    only = check_splits(only_splits)
    selected = set(scene_indices(cfg, num_scenes, only))
    ranges = [(a, b, [i for i in range(a, b + 1) if i in selected])
              for a, b in shard_ranges(num_scenes, cfg.scenes_per_shard)]
    ranges = [r for r in ranges if r[2]]
    if not ranges:
        raise DatagenConfigError(f"none of the {num_scenes} scenes is in split {', '.join(only)}; give more scenes")
    out.mkdir(parents=True, exist_ok=True)
    manifest = build_manifest(cfg, array, num_scenes, only)
    _check_resume(out, manifest, overwrite)
    write_json(out / MANIFEST, manifest)

    wanted = {shard_name(a, b) for a, b, _ in ranges}
    for p in out.glob(SHARD_GLOB):  # shards of another num_scenes / left-over temporaries
        if p.name not in wanted:
            p.unlink()
    for p in out.glob("*.tmp"):
        p.unlink()
    todo = [r for r in ranges if not (out / shard_name(r[0], r[1])).exists()]
    indices = [i for _, _, idx in todo for i in idx]
    total = len(selected)
    done_before = total - len(indices)
    if log and done_before:
        log(f"resuming: {done_before} of {total} scenes already in {out}")

    if log and array.sample_rate is not None and int(array.sample_rate) != cfg.audio.sample_rate:
        log(f"note: array '{array.name}' runs at {array.sample_rate} Hz but the data is made at "
            f"{cfg.audio.sample_rate} Hz (audio.sample_rate); the runtime must resample to match")
    constants = dataset_constants(cfg, array)
    pads = pad_sizes(cfg)
    started = time.time()
    t0 = time.perf_counter()
    bar = progress(total=len(indices), desc="datagen", unit="scene", disable=not show_progress)
    try:
        if indices:
            if workers == 1:
                with _single_thread():
                    results = (generate_scene(cfg, i, array, backend) for i in indices)
                    _collect(results, todo, out, constants, pads, bar)
            else:
                ctx = mp.get_context("spawn")
                saved = {v: os.environ.get(v) for v in _THREAD_VARS}
                for v in _THREAD_VARS:
                    os.environ[v] = "1"
                try:
                    with ctx.Pool(workers, initializer=_init_worker,
                                  initargs=(cfg.to_dict(), array.to_dict(), backend)) as pool:
                        _collect(pool.imap(_work, indices, chunksize=1), todo, out, constants, pads, bar)
                finally:
                    for v, val in saved.items():
                        if val is None:
                            os.environ.pop(v, None)
                        else:
                            os.environ[v] = val
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0

    manifest["shards"] = []
    for a, b, idx in ranges:
        name = shard_name(a, b)
        with np.load(out / name, allow_pickle=False) as z:
            sp = z["split"]
        manifest["shards"].append({"file": name, "first": a, "last": b, "count": len(idx),
                                   "splits": {s: int(np.sum(sp == k)) for k, s in enumerate(SPLITS)},
                                   "sha256": sha256_file(out / name)})
    manifest["complete"] = True
    write_json(out / MANIFEST, manifest)
    rate = len(indices) / elapsed if elapsed > 0 and indices else float("nan")
    with open(out / RUNS_LOG, "a") as f:
        f.write(json.dumps({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                            "seconds": round(elapsed, 3), "scenes_generated": len(indices),
                            "scenes_total": total, "workers": workers, "scenes_per_second": round(rate, 3),
                            "cpu_count": os.cpu_count(), "config_digest": manifest["config_digest"]}) + "\n")
    if log:
        of = f" (the {', '.join(only)} scenes of {num_scenes})" if total < num_scenes else ""
        log(f"{total} scenes{of} in {len(ranges)} shards in {out} "
            f"({len(indices)} generated in {elapsed:.1f} s, {rate:.2f} scenes/s with {workers} worker(s)); "
            f"splits: " + ", ".join(f"{s} {manifest['splits'][s]['scenes']}" for s in SPLITS))
    return manifest


def _collect(results, todo, out: Path, constants: dict, pads: dict, bar) -> None:
    it = iter(results)
    for a, b, idx in todo:
        scenes = []
        for _ in idx:
            scenes.append(next(it))
            bar.update(1)
        write_npz(out / shard_name(a, b), stack_scenes(scenes, pads, constants))
