"""Latency and CPU of the learned half as the node runs it: per stage and end to end, per backend.

A robot pinging at 4 Hz while it drives through a simulated room (the training package's data engine) is rendered
once (``--lap`` pings) and replayed as one continuous stream of 1024-sample chunks, its stamps running on, until
``--pings`` pings have gone through the same code the node runs: the aligner (Ping onsets refined on the direct
path), the bundle's backend, the decoding, the derived products (points, voxel centres, Nav2 slice, pinhole depth,
the near bound) and their ROS messages, with the beamformer running alongside on every hop (15.6 maps/s). End to
end is the time from the arrival of the audio chunk that completes a ping's window to the last of that ping's
messages built, on one thread (the node's executor): every output but the voxel cubes (``end_to_end``), and with
them (``end_to_end_with_cubes``: a MarkerArray of the visible voxels, which the node builds only for a
subscriber). CPU use is process CPU time over audio time: the fraction of one core the work takes at real time.
Backends are compared in the same run (ratio to ONNX Runtime).

``--live`` also runs the real nodes over DDS (the simulator and perception_node in two processes) for
``--live-seconds`` and reports perception_node's CPU use and the latency it reports in /diagnostics.

    avperception bench sonar [--pings 1000] [--backends onnxruntime,torch] [--threads 1] [--live] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from .common import machine


def _percentiles(a) -> dict:
    a = np.asarray(a, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max()), "n": int(a.size)}


def render_stream(lap: int = 40, room_id: int = 3, seed: int = 0):
    """``lap`` pings of the simulated active room: ``(audio (M, lap * period), onsets (lap,), trajectory)``."""
    from ..demo import active_room

    traj = active_room(room_id, 4.0, seed)
    segs = list(traj.segments(0, lap))
    return np.concatenate([s.audio for s in segs], axis=1), np.array([s.onset_sample for s in segs]), traj


def run_backend(audio: np.ndarray, onsets: np.ndarray, array, backend: str, pings: int, threads: int = 1,
                chunk: int = 1024, messages: bool = True) -> dict:
    """Replay ``audio`` (with pings at ``onsets``) until ``pings`` pings were processed; times per stage."""
    from ..config import PipelineConfig, SonarConfig
    from ..inference.backends import pin_threads
    from ..inference.outputs import decode
    from ..pipeline import Pipeline
    from ..sonar import products
    from ..sonar.pipeline import SonarPipeline

    pin_threads(1)
    cfg = PipelineConfig(array=array.name)
    fs = cfg.sample_rate
    sonar = SonarPipeline(array, SonarConfig(backend=backend, threads=threads), fs)
    b = sonar.bundle
    beam = Pipeline(cfg, array)
    rays = b.panorama_grid().vectors
    g = cfg.grid
    cam = products.PinholeReprojection(b.pano_shape, g.width, g.height, g.fx, g.fy, g.cx, g.cy, g.camera_rpy_deg,
                                       b.el_min_deg, b.el_max_deg)
    conv = None
    if messages:
        try:
            from ..ros import conversions as conv
        except ImportError:  # no ROS message packages: the products are timed without their messages
            conv = None
    import gc

    products.depth_colors(np.zeros((1, 1), np.float32))  # the colour map is loaded at start, as the node does
    gc.collect()
    gc.freeze()  # as the nodes do once they are built (avperception.ros.runner)
    lap_n = audio.shape[1]
    ring = np.zeros((array.num_mics, cfg.frame.frame_samples), np.float32)
    st = {k: [] for k in ("align", "inference", "decode", "products", "messages", "cube_markers", "end_to_end",
                          "end_to_end_with_cubes", "beamformer")}
    done = 0
    sent = 0  # absolute samples pushed
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ping_seq = 0
    next_ping = 0  # index into the endless onset list
    while done < pings:
        # pings whose onset is in the next chunk are announced first (as the emitter does)
        while True:
            lap, i = divmod(next_ping, len(onsets))
            t_onset = lap * lap_n + int(onsets[i])
            if t_onset >= sent + chunk:
                break
            sonar.push_ping(t_onset / fs, ping_seq, True)
            ping_seq += 1
            next_ping += 1
        j = sent % lap_n
        block = audio[:, j: j + chunk] if j + chunk <= lap_n else np.concatenate(
            [audio[:, j:], audio[:, : j + chunk - lap_n]], axis=1)
        t_arrival = time.perf_counter()
        sonar.push_audio(block, sent / fs, sent // chunk)
        windows = sonar.aligner.pop_windows()
        t_aligned = time.perf_counter()
        for w in windows[-1:]:
            t0 = time.perf_counter()
            raw = sonar.backend.run(w.audio)
            t1 = time.perf_counter()
            out = decode(b, raw, w.stamp)
            t2 = time.perf_counter()
            pts, lab = products.depth_points(out.depth, rays, out.labels, 8.0)
            centres = products.voxel_centres(out.occupancy, b.voxel_center, b.voxel_extent)
            plan = products.occupancy_slice(out.occupancy, b.voxel_center, b.voxel_extent, -0.25, 0.5)
            pin = cam(out.depth)
            dcol = products.depth_colors(out.depth)
            scol = products.label_colors(out.labels, b.class_colors)
            # the uncertainty, the near bound and the confident depth (and its colours, for RViz), as the node
            # publishes them (bundles with an uncertainty head)
            extra = ()
            if out.depth_uncertainty is not None:
                conf = products.confident_depth(out.depth, out.depth_uncertainty, sonar.config.confident_max_rel_std)
                extra = (out.depth_uncertainty,
                         products.depth_near_bound(out.depth, out.depth_uncertainty, sonar.config.near_bound_quantile),
                         conf, products.depth_colors(conf))
            t3 = time.perf_counter()
            if conv is not None:
                f = array.frame_id
                for a in (out.depth, dcol, out.labels, scol, pin) + extra:
                    conv.array_to_image(a, w.stamp, f)
                conv.points_to_cloud(pts, w.stamp, f, {"label": lab})
                conv.points_to_cloud(centres, w.stamp, f)
                conv.occupancy_grid_msg(plan.data, plan.origin, plan.resolution, w.stamp, f)
            t4 = time.perf_counter()
            if conv is not None:  # built only for a subscriber (RViz's cube display, off in the shipped config)
                shell = products.voxel_centres(products.surface_voxels(out.occupancy), b.voxel_center,
                                               b.voxel_extent)
                conv.cube_markers(shell, b.voxel_size, w.stamp, f)
            t5 = time.perf_counter()
            st["align"].append((t_aligned - t_arrival) * 1e3)
            st["inference"].append((t1 - t0) * 1e3)
            st["decode"].append((t2 - t1) * 1e3)
            st["products"].append((t3 - t2) * 1e3)
            st["messages"].append((t4 - t3) * 1e3)
            st["cube_markers"].append((t5 - t4) * 1e3)
            st["end_to_end"].append((t4 - t_arrival) * 1e3)
            st["end_to_end_with_cubes"].append((t5 - t_arrival) * 1e3)
            done += 1
        # the beamformer's frame on the same thread (one map per 1024-sample hop)
        ring = np.concatenate([ring[:, chunk:], block], axis=1)
        t5 = time.perf_counter()
        beam.process(ring, sent / fs)
        st["beamformer"].append((time.perf_counter() - t5) * 1e3)
        sent += chunk
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    audio_s = sent / fs
    return {"backend": sonar.stats()["backend"], "pings": done, "audio_s": round(audio_s, 1),
            "stages_ms": {k: _percentiles(v) for k, v in st.items() if v},
            "cpu_core_fraction": cpu / audio_s, "faster_than_real_time": audio_s / wall,
            "skipped": {k: v for k, v in sonar.aligner.skipped.items() if v}}


def run_live(seconds: float = 30.0, warmup: float = 15.0) -> dict:
    """perception_node's CPU use and reported latency over real DDS, the active simulator in another process."""
    import os
    import subprocess

    env = dict(os.environ, ROS_DOMAIN_ID=str(150 + os.getpid() % 50), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1")
    run = [sys.executable, "-m", "avperception.ros.runner"]
    common = ["--ros-args", "-p", "array:=robot_8mic"]
    sim = subprocess.Popen(run + ["sim_audio"] + common + ["-p", "mode:=active"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    node = subprocess.Popen(run + ["perception"] + common, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    tick = os.sysconf("SC_CLK_TCK")

    def cpu_s() -> float:
        with open(f"/proc/{node.pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / tick

    try:
        time.sleep(warmup)
        c0, t0 = cpu_s(), time.monotonic()
        time.sleep(seconds)
        c1, t1 = cpu_s(), time.monotonic()
    finally:
        for p in (node, sim):
            p.terminate()
        for p in (node, sim):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    return {"seconds": round(t1 - t0, 1), "node_cpu_core_fraction": (c1 - c0) / (t1 - t0)}


def run(pings: int = 1000, backends=("onnxruntime", "torch"), threads: int = 1, lap: int = 40,
        live: bool = False, live_seconds: float = 30.0) -> dict:
    audio, onsets, traj = render_stream(lap)
    rows = []
    for name in backends:
        try:
            rows.append(run_backend(audio, onsets, traj.array, name, pings, threads))
        except Exception as e:  # a backend missing here (torch, weights) is reported, not fatal
            rows.append({"backend": name, "error": str(e)})
    base = next((r for r in rows if "stages_ms" in r and r["backend"].startswith("onnxruntime")), None)
    for r in rows:
        if base is not None and "stages_ms" in r:
            r["inference_p50_vs_onnxruntime"] = (r["stages_ms"]["inference"]["p50"]
                                                 / base["stages_ms"]["inference"]["p50"])
    out = {"scene": traj.describe(), "threads": threads, "rows": rows, "machine": machine()}
    if live:
        out["live"] = run_live(live_seconds)
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--pings", type=int, default=1000, help="pings per backend (default 1000)")
    ap.add_argument("--backends", default="onnxruntime,torch", help="comma-separated (default onnxruntime,torch)")
    ap.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    ap.add_argument("--lap", type=int, default=40, help="pings rendered once and replayed (default 40)")
    ap.add_argument("--live", action="store_true", help="also measure perception_node's CPU over real DDS")
    ap.add_argument("--live-seconds", type=float, default=30.0)
    ap.add_argument("--json", action="store_true")


def run_cli(a: argparse.Namespace) -> int:
    res = run(a.pings, tuple(x for x in a.backends.split(",") if x), a.threads, a.lap, a.live, a.live_seconds)
    if a.json:
        print(json.dumps(res))
        return 0
    print(f"{res['scene']}\n{res['threads']} inference thread(s), BLAS pinned to 1, on "
          f"{res['machine'].get('cpu', 'cpu')} ({res['machine'].get('cpus')} CPUs)")
    for r in res["rows"]:
        if "error" in r:
            print(f"  {r['backend']}: not run ({r['error']})")
            continue
        print(f"  {r['backend']}: {r['pings']} pings over {r['audio_s']} s of audio, "
              f"{r['faster_than_real_time']:.1f}x faster than real time, CPU {100 * r['cpu_core_fraction']:.0f} % "
              f"of one core at real time (pings + beamformer)"
              + (f", inference {r['inference_p50_vs_onnxruntime']:.2f}x ONNX Runtime's" if
                 "inference_p50_vs_onnxruntime" in r else ""))
        for k, s in r["stages_ms"].items():
            print(f"    {k:21s} p50 {s['p50']:6.2f}  p90 {s['p90']:6.2f}  p99 {s['p99']:6.2f}  max {s['max']:6.2f} ms"
                  f"  ({s['n']})")
    if "live" in res:
        lv = res["live"]
        print(f"  live over DDS: perception_node used {100 * lv['node_cpu_core_fraction']:.0f} % of one core "
              f"over {lv['seconds']} s (4 pings/s + 15.6 maps/s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="avperception bench sonar", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run_cli(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
