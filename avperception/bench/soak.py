"""Soak and overload: perception_node fed for minutes, at real time or faster, with memory and latency watched.

Three processes on an isolated ROS domain: a publisher streams 8-channel audio with the robot's pings (the
shipped bundle's sweep, its direct path and a wall echo at a distance that changes with every ping, ambient
noise) and a Ping per sweep, ``--speed`` times faster than real time, optionally in bursts (``--burst``: a
second of audio at once every five seconds); perception_node (``avperception-run perception``, robot_8mic,
the defaults); and this process listening to ``/diagnostics`` and ``sonar/depth`` while it samples the node's
resident memory. Per minute (or per ``--report-s``) it prints the node's RSS, the map and ping rates, the
latency of maps and pings (median and worst of the diagnostics periods), dropped frames and skipped pings;
then the drift from the first period to the last. Queues are bounded, so an overloaded node drops (and counts)
rather than falling behind. The maps' latency (against the audio's stamps) is shown at real time only; the
pings' latency (from the arrival of the audio that completes a window to the outputs) at any speed.

    avperception bench soak [--minutes 10] [--speed 1] [--burst] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def synthetic_stream(seconds: float = 8.0, ping_rate_hz: float = 4.0, seed: int = 0):
    """``(audio (M, n) float32, onsets (k,))``: the shipped bundle's pings (direct path + a wall echo at a range
    that changes with every ping) over ambient noise, for the soak's publisher (no data engine needed)."""
    from ..inference.bundle import load_bundle
    from ..inference.synthetic import bundle_echo_window

    b = load_bundle()
    fs, n = b.sample_rate, int(seconds * b.sample_rate)
    period = int(round(fs / ping_rate_hz))
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((b.num_mics, n)) * 10 ** (-50 / 20)).astype(np.float32)
    onsets = np.arange(0, n - b.window_samples, period)
    for k, o in enumerate(onsets):
        w = bundle_echo_window(b, wall_distance_m=float(rng.uniform(0.8, 4.0)),
                               wall_azimuth_deg=float(rng.uniform(-180, 180)), noise_db=-200, seed=k)
        x[:, o: o + w.shape[1]] += w
    return x, onsets


def publish(speed: float, burst: bool, seconds: float) -> None:  # pragma: no cover - runs in a child process
    """The soak's audio source: chunks of 1024 samples and a Ping per sweep, ``speed`` x real time."""
    import rclpy

    from ..config import load_array
    from ..ros import conversions as conv
    from ..ros.audio_input import audio_qos
    from ..ros.runner import _prepare_env

    _prepare_env()
    from avperception_msgs.msg import AudioFrame, Ping

    rclpy.init()
    node = rclpy.create_node("soak_publisher")
    pub_a = node.create_publisher(AudioFrame, "audio", audio_qos())
    pub_p = node.create_publisher(Ping, "sonar/pings", audio_qos())
    arr = load_array("robot_8mic")
    x, onsets = synthetic_stream()
    fs, chunk, lap = 16000, 1024, x.shape[1]
    t0, sent, seq, ping = time.monotonic(), 0, 0, 0
    stamp0 = time.time()  # the node's clock: at 1x, its latencies are real
    while time.monotonic() - t0 < seconds:
        due = (time.monotonic() - t0) * speed * fs
        if burst and int(time.monotonic() - t0) % 5 == 4:
            due += fs  # a second of audio ahead, all at once
        while sent + chunk <= due:
            while True:
                lap_i, i = divmod(ping, len(onsets))
                onset = lap_i * lap + int(onsets[i])
                if onset >= sent + chunk:
                    break
                pub_p.publish(conv.ping_msg(stamp0 + onset / fs, arr.frame_id, ping, "soak"))
                ping += 1
            j = sent % lap
            block = x[:, j: j + chunk] if j + chunk <= lap else np.concatenate([x[:, j:], x[:, : j + chunk - lap]], 1)
            pub_a.publish(conv.audio_frame_msg(arr.to_device_layout(block), fs, stamp0 + sent / fs, arr.frame_id,
                                               seq, "S16LE"))
            sent += chunk
            seq += 1
        rclpy.spin_once(node, timeout_sec=0.002)
    node.destroy_node()
    rclpy.shutdown()


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run(minutes: float = 10.0, speed: float = 1.0, burst: bool = False, report_s: float = 60.0,
        warmup_s: float = 8.0) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from ..ros.runner import _prepare_env

    _prepare_env()
    domain = 160 + os.getpid() % 40
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    seconds = minutes * 60.0
    node_p = subprocess.Popen([sys.executable, "-m", "avperception.ros.runner", "perception", "--ros-args", "-p",
                               "array:=robot_8mic"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pub_p = subprocess.Popen([sys.executable, "-m", "avperception.bench.soak", "--publish", "--speed", str(speed),
                              "--seconds", str(seconds + warmup_s + 2)] + (["--burst"] if burst else []), env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, domain_id=domain)
    lis = rclpy.create_node("soak_listener", context=ctx)
    diags, depth = [], [0]
    lis.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diags.append(
        (time.monotonic(), {kv.key: kv.value for kv in m.status[0].values}, int.from_bytes(m.status[0].level, "little"),
         m.status[0].message)), 10)
    lis.create_subscription(Image, "sonar/depth", lambda m: depth.__setitem__(0, depth[0] + 1), qos_profile_sensor_data)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(lis)
    rss: list[tuple[float, float]] = []
    t_start = time.monotonic()
    try:
        while time.monotonic() - t_start < warmup_s + seconds:
            ex.spin_once(timeout_sec=0.1)
            if node_p.poll() is not None:
                raise RuntimeError(f"perception_node exited with code {node_p.returncode}")
            if not rss or time.monotonic() - rss[-1][0] >= 1.0:
                rss.append((time.monotonic(), _rss_mb(node_p.pid)))
    finally:
        for p in (pub_p, node_p):
            p.terminate()
        for p in (pub_p, node_p):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        lis.destroy_node()
        rclpy.shutdown(context=ctx)

    def num(d, k):
        try:
            return float(d.get(k, "nan"))
        except ValueError:
            return float("nan")

    t0 = t_start + warmup_s
    periods = []
    for a in np.arange(t0, t0 + seconds - 1e-6, report_s):
        ds = [d for t, d, _, _ in diags if a <= t < a + report_s]
        rs = [r for t, r in rss if a <= t < a + report_s]
        if not ds:
            continue
        last = ds[-1]
        periods.append({
            "t_s": round(a - t0, 1), "rss_mb": round(float(np.max(rs)), 1) if rs else float("nan"),
            "map_rate_hz": round(float(np.nanmean([num(d, "map_rate_hz") for d in ds])), 2),
            "ping_rate_hz": round(float(np.nanmean([num(d, "ping_rate_hz") for d in ds])), 2),
            # the maps' latency is against the audio's stamps: meaningful at real time only
            "map_latency_ms_median": round(float(np.nanmedian([num(d, "latency_ms_median") for d in ds])), 1)
            if speed == 1 else float("nan"),
            "map_latency_ms_worst": round(float(np.nanmax([num(d, "latency_ms_max") for d in ds])), 1)
            if speed == 1 else float("nan"),
            "ping_latency_ms_median": round(float(np.nanmedian([num(d, "sonar_latency_ms_median") for d in ds])), 1),
            "ping_latency_ms_worst": round(float(np.nanmax([num(d, "sonar_latency_ms_max") for d in ds])), 1),
            "dropped_frames": int(num(last, "dropped_frames")), "pings_aligned": int(num(last, "pings_aligned")),
            "pings_skipped": int(sum(num(last, k) for k in last if k.startswith("pings_skipped_"))),
        })
    levels = [lv for t, _, lv, _ in diags if t >= t0]
    return {"minutes": minutes, "speed": speed, "burst": burst, "periods": periods, "depth_images": depth[0],
            "diagnostic_levels": {str(k): levels.count(k) for k in sorted(set(levels))},
            "rss_growth_mb": (periods[-1]["rss_mb"] - periods[0]["rss_mb"]) if len(periods) > 1 else float("nan")}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--minutes", type=float, default=10.0, help="soak length (default 10)")
    ap.add_argument("--speed", type=float, default=1.0, help="audio rate in multiples of real time (default 1)")
    ap.add_argument("--burst", action="store_true", help="a second of audio at once every five seconds")
    ap.add_argument("--report-s", type=float, default=60.0, help="reporting period (default 60 s)")
    ap.add_argument("--json", action="store_true")


def run_cli(a: argparse.Namespace) -> int:
    res = run(a.minutes, a.speed, a.burst, a.report_s)
    if a.json:
        print(json.dumps(res))
        return 0
    print(f"soak: {a.minutes:g} min at {a.speed:g}x real time{' in bursts' if a.burst else ''}; "
          f"{res['depth_images']} depth images received; diagnostic levels {res['diagnostic_levels']}")
    keys = ["t_s", "rss_mb", "map_rate_hz", "ping_rate_hz", "map_latency_ms_median", "map_latency_ms_worst",
            "ping_latency_ms_median", "ping_latency_ms_worst", "dropped_frames", "pings_aligned", "pings_skipped"]
    print(" ".join(f"{k:>22s}" if i > 1 else f"{k:>7s}" for i, k in enumerate(keys)))
    for p in res["periods"]:
        print(" ".join(f"{p[k]:>22}" if i > 1 else f"{p[k]:>7}" for i, k in enumerate(keys)))
    print(f"resident memory drift, first to last period: {res['rss_growth_mb']:+.1f} MB")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="avperception bench soak", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    ap.add_argument("--publish", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=60.0, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.publish:
        publish(a.speed, a.burst, a.seconds)
        return 0
    return run_cli(a)


if __name__ == "__main__":
    sys.exit(main())
