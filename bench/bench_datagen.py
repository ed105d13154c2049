#!/usr/bin/env python3
"""Throughput of the synthetic data engine (avperception-train datagen).

    python bench/bench_datagen.py [--scenes 64] [--workers 1,2] [--array respeaker_4mic] [--ray-tracing] [--json]

Two measurements:

1. Per-stage cost of one scene in this process (one BLAS thread): sampling,
   acoustic simulation (pyroomacoustics), ray-cast panoramas (open3d),
   occupancy crop, energy target -- the mean over the scenes.
2. End-to-end ``run_datagen`` throughput (scenes/s) for each worker count,
   worker start-up, shard compression and writing included, into a temporary
   directory; the shards of every worker count are checked to be identical.

Not a test: it prints numbers (and asserts nothing but the byte identity).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def stage_times(cfg, n: int) -> dict:
    from threadpoolctl import threadpool_limits

    from avperception_train.datagen.groundtruth import RayCaster, energy_target, occupancy, render_view
    from avperception_train.datagen.scene import grids, sample_scene, simulate_audio, source_table

    arr = cfg.array_geometry()
    pano, egrid, _ = grids(cfg)
    t = {"sample": 0.0, "acoustics": 0.0, "raycast": 0.0, "voxels": 0.0, "energy": 0.0}
    with threadpool_limits(1):
        sample_scene(cfg, 0, arr.positions)  # warm-up: imports, caches
        spec = sample_scene(cfg, 0, arr.positions)
        simulate_audio(cfg, spec, arr.positions)
        RayCaster.for_room(spec.room)
        for i in range(n):
            t0 = time.perf_counter()
            spec = sample_scene(cfg, i, arr.positions)
            t1 = time.perf_counter()
            simulate_audio(cfg, spec, arr.positions)
            t2 = time.perf_counter()
            caster = RayCaster.for_room(spec.room)
            render_view(caster, spec.origin, spec.rotation, pano.vectors, pano.shape)
            t3 = time.perf_counter()
            occupancy(spec.room, spec.origin, spec.rotation, cfg.voxels.center_m, cfg.voxels.extent_m,
                      cfg.voxels.resolution)
            t4 = time.perf_counter()
            src = source_table(spec)
            energy_target(egrid.vectors, egrid.shape, src["directions"], np.ones(len(spec.sources)),
                          cfg.energy.sigma_deg)
            t5 = time.perf_counter()
            for k, (a, b) in zip(t, [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)]):
                t[k] += b - a
    return {k: v / n * 1000 for k, v in t.items()} | {"backend": caster.backend}


def _cpu() -> float:
    """CPU seconds of this process and its finished children (workers)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return sum(r.ru_utime + r.ru_stime for r in ru)


def end_to_end(cfg, n: int, workers: list[int]) -> list[dict]:
    from avperception_train.datagen import run_datagen

    rows, digests = [], {}
    for w in workers:
        with tempfile.TemporaryDirectory() as d:
            c0 = _cpu()
            t0 = time.perf_counter()
            run_datagen(cfg, d, n, workers=w, show_progress=False, log=None)
            dt = time.perf_counter() - t0
            cpu = _cpu() - c0
            files = sorted(Path(d).glob("shard-*.npz"))
            digests[w] = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
            size = sum(f.stat().st_size for f in files)
        rows.append({"workers": w, "scenes": n, "seconds": round(dt, 2), "scenes_per_s": round(n / dt, 2),
                     "cpu_ms_per_scene": round(cpu / n * 1000, 1), "bytes_per_scene": int(size / n),
                     "load_avg_1min": round(os.getloadavg()[0], 2)})
    same = len({tuple(v) for v in digests.values()}) == 1
    for r in rows:
        r["identical_to_others"] = same
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", type=int, default=64, help="scenes per end-to-end run (default 64)")
    ap.add_argument("--stage-scenes", type=int, default=24, help="scenes for the per-stage timing (default 24)")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    ap.add_argument("--array", default=None, help="array preset (default: the shipped config's)")
    ap.add_argument("--ray-tracing", action="store_true", help="hybrid ISM + ray tracing")
    ap.add_argument("--config", help="datagen YAML (default: shipped)")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    a = ap.parse_args(argv)

    from avperception_train.datagen import load_config

    over = {}
    if a.array:
        over["array"] = a.array
    if a.ray_tracing:
        over["acoustics"] = {"ray_tracing": True}
    cfg = load_config(a.config, over)
    workers = [int(w) for w in a.workers.split(",")]
    res = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
        "config": {"array": cfg.array, "mics": cfg.array_geometry().num_mics, "ray_tracing": cfg.acoustics.ray_tracing,
                   "panorama_deg": cfg.panorama.resolution_deg, "voxels": list(cfg.voxels.resolution),
                   "samples": cfg.audio.num_samples},
        "stage_ms": stage_times(cfg, a.stage_scenes),
        "end_to_end": end_to_end(cfg, a.scenes, workers),
    }
    if a.json:
        print(json.dumps(res, indent=1))
        return 0
    c = res["config"]
    print(f"datagen throughput -- {c['array']} ({c['mics']} mics), {c['samples']} samples, panorama "
          f"{c['panorama_deg']} deg, voxels {c['voxels']}, ray tracing {c['ray_tracing']}, "
          f"{res['machine']['cpus']} CPUs")
    st = res["stage_ms"]
    print("per scene, one process (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in st.items() if k != "backend")
          + f"  (ray caster: {st['backend']}; total {sum(v for k, v in st.items() if k != 'backend'):.1f})")
    print(f"{'workers':>8} {'scenes':>7} {'seconds':>8} {'scenes/s':>9} {'CPU ms/scene':>13} {'KB/scene':>9} "
          f"{'load':>5}  identical")
    for r in res["end_to_end"]:
        print(f"{r['workers']:>8} {r['scenes']:>7} {r['seconds']:>8.2f} {r['scenes_per_s']:>9.2f} "
              f"{r['cpu_ms_per_scene']:>13.1f} {r['bytes_per_scene'] / 1024:>9.1f} {r['load_avg_1min']:>5.2f}  "
              f"{r['identical_to_others']}")
    print("(CPU ms/scene includes worker start-up; load = 1-minute load average after the run, other processes "
          "included: scenes/s only scales with workers on idle cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
