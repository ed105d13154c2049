"""Speed of the beamformers: our maps against pyroomacoustics and acoular on the same inputs and grids.

For every array size M in {4, 8, 16} (respeaker_4mic, robot_8mic, minidsp_uma16)
and grid size G in {360 (horizon, 1 deg), 2562 (icosphere level 4), 16200
(equirectangular, 2 deg)}, one STFT block (nfft 512, 32 snapshots, a plane
wave at azimuth 41.3 deg, elevation 23.7 deg, SNR 10 dB) is mapped by each method.
Times are medians of repeated calls, for the map only (no peak search), over
the 300-6000 Hz band. The peer libraries are given their fastest settings
(pyroomacoustics with its mode-vector table precomputed; acoular with caching
off, float32 results and the cross-spectral matrix handed to it, not timed).

Ratios are against pyroomacoustics' SRP measured in the same run. "peak_deg" is
the angle between a method's map maximum and pyroomacoustics SRP's (both folded
to the array's resolvable side): 0 means the same grid direction.

    avperception bench beamforming [--json] [--mics 8] [--grids 2562] [--skip-peers]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from ..config import load_array
from ..dsp import grid as grids
from ..dsp.beamforming import BEAMFORMERS, make_beamformer
from ..dsp.grid import angular_distance_deg, azel_to_vector
from ..dsp.peaks import canonical_direction
from ..dsp.stft import stft
from ..sim.room import plane_wave
from .common import machine, markdown_table, time_call
from .peers import AcoularBase, PraMethod, available

ARRAYS = {4: "respeaker_4mic", 8: "robot_8mic", 16: "minidsp_uma16"}
GRIDS = {360: lambda: grids.horizon(1.0), 2562: lambda: grids.icosphere(4), 16200: lambda: grids.equirectangular(resolution_deg=2.0)}
OURS = ["srp_phat", "srp_phat_c2f", "das", "mvdr", "normmusic"]
PEERS = ["pyroomacoustics.SRP", "pyroomacoustics.NormMUSIC", "acoular.BeamformerBase"]
FS, NFFT, HOP, FMIN, FMAX = 16000, 512, 256, 300.0, 6000.0
SOURCE_AZEL = (41.3, 23.7)


def make_input(array, snapshots: int = 32, seed: int = 0) -> np.ndarray:
    """``(M, nfft // 2 + 1, snapshots)`` STFT of a plane wave from :data:`SOURCE_AZEL` at SNR 10 dB."""
    u = azel_to_vector(*SOURCE_AZEL)
    x = plane_wave(array, u, FS, NFFT + (snapshots - 1) * HOP, seed=seed, snr_db=10.0)
    return stft(x, NFFT, HOP)


def _peak(values: np.ndarray, grid, array) -> np.ndarray:
    v = np.where(grid.search_mask(array), values, -np.inf)
    return canonical_direction(grid.vectors[int(np.argmax(v))], array)


def run(mics=(4, 8, 16), grid_sizes=(360, 2562, 16200), methods=None, peers: bool = True, snapshots: int = 32,
        min_time: float = 0.3, progress=None) -> dict:
    """Time every method on every (M, G) case; return ``{"rows": [...], "machine": ..., ...}``."""
    methods = list(methods or OURS)
    have = available() if peers else {"pyroomacoustics": None, "acoular": None}
    rows = []
    notes = []
    if peers and have["acoular"] is None:
        notes.append("acoular is not installed (pip install acoular): its rows are missing")
    for m in mics:
        array = load_array(ARRAYS[m])
        X = make_input(array, snapshots)
        for g in grid_sizes:
            grid = GRIDS[g]()
            case = []
            ref_peak = None
            if have.get("pyroomacoustics"):
                for name in ("SRP", "NormMUSIC"):
                    pm = PraMethod(name, array, grid, FS, NFFT, FMIN, FMAX)
                    pm.map(X)
                    # slow methods: a few calls are enough
                    t = time_call(lambda: pm.map(X), min_time=min_time, min_reps=2, max_reps=20)
                    peak = _peak(pm.map(X), grid, array)
                    if name == "SRP":
                        ref_peak = peak
                    case.append({"method": f"pyroomacoustics.{name}", "peak": peak, **t})
                    del pm
            if have.get("acoular"):
                ab = AcoularBase(array, grid, FS, NFFT, FMIN, FMAX)
                csm = ab.csm(X)
                ab.map_from_csm(csm)  # compile numba kernels
                t = time_call(lambda: ab.map_from_csm(csm), min_time=min_time, min_reps=2, max_reps=50)
                case.append({"method": "acoular.BeamformerBase", "peak": _peak(ab.map_from_csm(csm), grid, array), **t})
            for name in methods:
                lags = name in BEAMFORMERS and "interp" in BEAMFORMERS[name].options  # the lag-lookup methods
                bf = make_beamformer(name, array, grid, sample_rate=FS, nfft=NFFT, fmin=FMIN, fmax=FMAX,
                                     **({"interp": 8} if lags else {}))
                t = time_call(lambda: bf.map(X), min_time=min_time, min_reps=5, max_reps=2000)
                case.append({"method": f"avperception.{name}", "peak": _peak(bf.map(X), grid, array), **t})
            base = next((r["ms"] for r in case if r["method"] == "pyroomacoustics.SRP"), None)
            for r in case:
                peak = r.pop("peak")
                az, el = grids.vector_to_azel(peak)
                row = {"method": r["method"], "mics": m, "grid": g, "ms": round(r["ms"], 4),
                       "ms_min": round(r["ms_min"], 4), "reps": r["reps"],
                       "speedup_vs_pyroomacoustics_srp": None if base is None else round(base / r["ms"], 2),
                       "peak_azimuth_deg": round(float(az), 2), "peak_elevation_deg": round(float(el), 2),
                       "peak_deg_vs_pyroomacoustics_srp": None if ref_peak is None else
                       round(float(angular_distance_deg(peak, ref_peak)), 2)}
                rows.append(row)
                if progress:
                    progress(row)
    return {"rows": rows, "nfft": NFFT, "snapshots": snapshots, "band_hz": [FMIN, FMAX], "source_azel_deg": SOURCE_AZEL,
            "arrays": {str(k): v for k, v in ARRAYS.items() if k in mics}, "peers": have, "machine": machine(),
            "notes": notes}


def summary_table(result: dict) -> str:
    """Markdown table: one row per (M, G, method)."""
    head = ["M", "G", "method", "ms (median)", "speed-up vs pra SRP", "peak vs pra SRP (deg)"]
    rows = []
    for r in result["rows"]:
        sp = r["speedup_vs_pyroomacoustics_srp"]
        pk = r["peak_deg_vs_pyroomacoustics_srp"]
        rows.append([r["mics"], r["grid"], r["method"], f"{r['ms']:.3f}", "-" if sp is None else f"{sp:g}x",
                     "-" if pk is None else f"{pk:.1f}"])
    return markdown_table(head, rows)


def checks(result: dict) -> list[str]:
    """The targets, checked on this run's numbers: lines starting with PASS or MISS."""
    out = []
    rows = result["rows"]

    def get(method, m, g):
        return next((r for r in rows if r["method"] == method and r["mics"] == m and r["grid"] == g), None)

    ours = get("avperception.srp_phat", 8, 2562)
    if ours is not None:
        out.append(f"{'PASS' if ours['ms'] < 1.0 else 'MISS'}: 8-mic 2562-direction SRP-PHAT map in {ours['ms']:.3f} ms (< 1 ms)")
        if ours["speedup_vs_pyroomacoustics_srp"] is not None:
            ok = ours["speedup_vs_pyroomacoustics_srp"] >= 100 and ours["peak_deg_vs_pyroomacoustics_srp"] == 0
            out.append(f"{'PASS' if ok else 'MISS'}: {ours['speedup_vs_pyroomacoustics_srp']:g}x faster than "
                       f"pyroomacoustics SRP at M=8, G=2562 (>= 100x), peak {ours['peak_deg_vs_pyroomacoustics_srp']:.1f} deg from its peak")
    slower = []
    for r in rows:
        if r["method"] != "avperception.srp_phat":
            continue
        a = get("acoular.BeamformerBase", r["mics"], r["grid"])
        if a is not None and r["ms"] >= a["ms"]:
            slower.append(f"M={r['mics']} G={r['grid']}")
    if any(r["method"] == "acoular.BeamformerBase" for r in rows):
        out.append(("PASS: faster than acoular BeamformerBase in every case" if not slower else
                    f"MISS: not faster than acoular in {', '.join(slower)}"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="avperception bench beamforming", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run_cli(ap.parse_args(argv))


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--json", action="store_true", help='print {"rows": [{method, mics, grid, ms, speedup_vs_pyroomacoustics_srp, ...}]}')
    ap.add_argument("--mics", type=int, nargs="+", default=[4, 8, 16], choices=sorted(ARRAYS))
    ap.add_argument("--grids", type=int, nargs="+", default=[360, 2562, 16200], choices=sorted(GRIDS))
    ap.add_argument("--methods", nargs="+", default=OURS, help=f"our methods to time (default: {' '.join(OURS)})")
    ap.add_argument("--skip-peers", action="store_true", help="time only our methods")
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds of repeated calls per timing (default 0.3)")


def run_cli(a: argparse.Namespace) -> int:
    def progress(row):
        if not a.json:
            sp = row["speedup_vs_pyroomacoustics_srp"]
            print(f"M={row['mics']:2d} G={row['grid']:5d} {row['method']:28s} {row['ms']:10.3f} ms"
                  + ("" if sp is None else f"  {sp:9.1f}x vs pra SRP")
                  + ("" if row["peak_deg_vs_pyroomacoustics_srp"] is None else
                     f"  peak {row['peak_deg_vs_pyroomacoustics_srp']:.1f} deg from pra SRP's"), flush=True)

    res = run(a.mics, a.grids, a.methods, not a.skip_peers, min_time=a.min_time, progress=progress)
    if a.json:
        print(json.dumps(res))
        return 0
    print()
    print(summary_table(res))
    print()
    for line in res["notes"] + checks(res):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
