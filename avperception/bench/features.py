"""Timing of the torch feature front-end (STFT, log-mel, MFCC, GCC-PHAT) on CPU and, when present, CUDA.

One batch of multichannel audio goes through :class:`~avperception.dsp.features.FeatureFrontEnd`;
the median time per call is printed for every available device, with the
real-time factor (audio seconds processed per wall second).

    avperception bench features [--mics 8] [--batch 16] [--seconds 1.0] [--device cpu cuda] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from .common import machine, time_call


def run(mics: int = 8, batch: int = 16, seconds: float = 1.0, devices=None, sample_rate: int = 16000,
        min_time: float = 0.5) -> dict:
    import torch

    from ..dsp.features import FeatureFrontEnd, FeatureSpec

    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    x = np.random.default_rng(0).standard_normal((batch, mics, int(seconds * sample_rate))).astype(np.float32)
    rows, notes = [], []
    for dev in devices:
        if dev.startswith("cuda") and not torch.cuda.is_available():
            notes.append(f"{dev}: not available (torch {torch.__version__}, CUDA build: {torch.version.cuda})")
            continue
        fe = FeatureFrontEnd(FeatureSpec(sample_rate=sample_rate), num_mics=mics).to(dev).eval()
        xt = torch.from_numpy(x).to(dev)

        def call():
            with torch.no_grad():
                out = fe(xt)
            if dev.startswith("cuda"):
                torch.cuda.synchronize()
            return out

        t = time_call(call, min_time=min_time, min_reps=3)
        name = torch.cuda.get_device_name(torch.device(dev)) if dev.startswith("cuda") else machine().get("cpu", "cpu")
        rows.append({"device": dev, "device_name": name, "batch": batch, "mics": mics, "seconds": seconds,
                     "ms": round(t["ms"], 3), "ms_min": round(t["ms_min"], 3),
                     "realtime_factor": round(batch * seconds / (t["ms"] / 1e3), 1)})
    return {"rows": rows, "notes": notes, "torch": torch.__version__, "machine": machine()}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--mics", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=1.0, help="audio per batch item (s)")
    ap.add_argument("--device", nargs="+", default=None, help="devices to time (default: cpu and cuda if available)")
    ap.add_argument("--json", action="store_true")


def run_cli(a: argparse.Namespace) -> int:
    res = run(a.mics, a.batch, a.seconds, a.device)
    if a.json:
        print(json.dumps(res))
        return 0
    for r in res["rows"]:
        print(f"{r['device']:6s} {r['device_name'][:40]:40s} batch {r['batch']} x {r['mics']} mics x {r['seconds']} s: "
              f"{r['ms']:.2f} ms per call ({r['realtime_factor']:.0f}x real time)")
    for n in res["notes"]:
        print(n)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="avperception bench features", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run_cli(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
