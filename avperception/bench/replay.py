"""replay-eval speed: a bag replayed under several settings, each a few times, with the CPU seconds per stage.

Real-time factor = the bag's audio seconds / the replay's wall seconds (reading, the network, the beamformer and
the scoring; not the start-up or the report). On a shared machine the wall time is noisy: every run reports the
load average before it, and the CPU seconds per stage (network, beamformer, reading and scoring) show the work
itself. Make a bag with ``avperception-train record-sim --out BAG --pings 240`` (60 s).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from .common import machine, markdown_table

# (name, ReplaySettings fields): the node's order and code, the former default, the batched default
SETTINGS = {
    "node": {"workers": 0, "beam_batch": 1},
    "thread": {"workers": 1, "beam_batch": 1},
    "batched": {},
}


def run(bag: str, settings: list[str] | None = None, repeats: int = 3, threads: int = 1, model: str = "default",
        progress=None) -> dict:
    """Replay ``bag`` ``repeats`` times under each of ``settings`` (keys of :data:`SETTINGS`, default all).

    Returns ``{"machine", "rows": [{setting, x_real_time (median), x_best, wall_s, cpu_s {stage: median},
    load (1-min load average before each run)}]}``.
    """
    from ..eval.replay import ReplaySettings, replay_eval

    names = settings or list(SETTINGS)
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown settings {unknown}; choose from {', '.join(SETTINGS)}")
    rows = []
    for name in names:
        runs = []
        for _ in range(max(1, int(repeats))):
            load = os.getloadavg()[0]
            s = ReplaySettings(model=model, threads=threads, **SETTINGS[name])
            sp = replay_eval(bag, None, s, progress=False)["speed"]
            runs.append({**sp, "load": load})
            if progress is not None:
                progress(f"{name}: {sp['x_real_time']:.1f}x real time (load {load:.2f})")
        s = ReplaySettings(**SETTINGS[name])
        x = np.array([r["x_real_time"] for r in runs])
        rows.append({"setting": name, "workers": s.workers, "beam_batch": s.beam_batch,
                     "x_real_time": float(np.median(x)), "x_best": float(x.max()),
                     "wall_s": float(np.median([r["wall_s"] for r in runs])), "audio_s": runs[0]["audio_s"],
                     "cpu_s": {k: float(np.median([r["cpu_s"][k] for r in runs])) for k in runs[0]["cpu_s"]},
                     "load": [round(r["load"], 2) for r in runs]})
    return {"machine": machine(), "bag": str(bag), "threads": threads, "rows": rows}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("bag", help="rosbag2 directory (e.g. avperception-train record-sim --out BAG --pings 240)")
    ap.add_argument("--settings", nargs="+", choices=list(SETTINGS), help="default: all")
    ap.add_argument("--repeats", type=int, default=3, help="runs per setting (default 3; the median is reported)")
    ap.add_argument("--threads", type=int, default=1, help="inference threads per network run (default 1)")
    ap.add_argument("--model", default="default", help="model bundle directory (default: the shipped one)")
    ap.add_argument("--json", action="store_true")


def run_cli(a: argparse.Namespace) -> int:
    import sys

    res = run(a.bag, a.settings, a.repeats, a.threads, a.model, progress=lambda m: print(m, file=sys.stderr))
    if a.json:
        print(json.dumps(res))
        return 0
    m = res["machine"]
    print(f"{res['bag']}: {res['rows'][0]['audio_s']:.1f} s of audio; {m.get('cpu', '?')}, {m['cpus']} CPUs")
    rows = [[r["setting"], r["workers"], r["beam_batch"], f"{r['x_real_time']:.1f}", f"{r['x_best']:.1f}",
             f"{r['cpu_s']['total']:.2f}", f"{r['cpu_s']['network']:.2f}", f"{r['cpu_s']['beamformer']:.2f}",
             f"{r['cpu_s']['reading_scoring']:.2f}", ", ".join(f"{v:.1f}" for v in r["load"])] for r in res["rows"]]
    print(markdown_table(["setting", "workers", "beam batch", "x real time (median)", "best", "CPU s",
                          "network", "beamformer", "reading, scoring", "load before each run"], rows))
    return 0
