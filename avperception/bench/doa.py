"""DOA accuracy over simulated rooms: our methods against pyroomacoustics' on the same scenes.

Each scene is a shoebox room (pyroomacoustics image-source method) with
random size (4-9 x 3.5-7 x 2.5-3.5 m), RT60 uniform in 0.2-0.9 s, one of
several arrays (planar and non-planar) at a random place, height and heading,
1-3 sources (white noise or speech-like babble, 1-3 m away, elevation -25 to
+60 deg, at least 30 deg apart) and white sensor noise at an SNR uniform in
0-30 dB (relative to the reverberant signal power at the microphones). One
second of audio after a 0.3 s lead-in is localised as a whole
(``avperception localize``-style: all STFT frames pooled), with the true
number of sources given to every method.

Errors are great-circle angles between each true direction and its matched
estimate (Hungarian assignment); a source left without an estimate counts as
180 deg. Planar arrays cannot tell up from down, so for them both truth and
estimates are folded to the upper side first. pyroomacoustics' methods search
the same 2562-direction icosphere grid (the upper half for planar arrays,
where a full sphere would return mirror images) with their own peak finder;
ours use the same grid and then refine each peak off the grid, except
``srp_phat`` (default), which is exactly what ``avperception localize`` runs.
``srp_phat_grid`` is our SRP-PHAT without off-grid refinement, to separate the
method from the refinement.

    avperception bench doa [--scenes 200] [--jobs 2] [--json] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np

from ..config import ArrayGeometry, PipelineConfig, load_array
from ..dsp import grid as grids
from ..dsp.beamforming import make_beamformer
from ..dsp.grid import DirectionGrid, rpy_matrix
from ..dsp.peaks import find_sources
from ..dsp.stft import stft
from ..eval.localization import match_errors
from .common import machine, markdown_table

FS, NFFT, HOP = 16000, 512, 256
FMIN, FMAX = 300.0, 7200.0
DURATION, LEAD_IN = 1.0, 0.3
MAX_ORDER = 40

#: arrays of the bench: shipped presets plus a non-planar 8-mic cube (10 cm edge)
ARRAYS = ["respeaker_4mic", "respeaker_6mic", "robot_8mic", "minidsp_uma16", "tetra_4mic", "cube_8mic"]
OUR_METHODS = ["srp_phat", "srp_phat_grid", "das", "mvdr", "music", "normmusic"]
PRA_METHODS = ["SRP", "MUSIC", "NormMUSIC"]
PRA_SLOW = ["TOPS", "CSSM", "WAVES"]
SNR_BUCKETS = [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0001)]


def bench_array(name: str) -> ArrayGeometry:
    if name == "cube_8mic":
        c = 0.05 * np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=float)
        return ArrayGeometry("cube_8mic", c)
    return load_array(name)


@dataclass
class Scene:
    index: int
    array: str
    room: tuple
    rt60: float
    snr_db: float
    robot: tuple
    yaw_deg: float
    sources: list  # world positions
    signals: list
    directions: np.ndarray  # (k, 3) array frame


def make_scene(index: int, seed: int = 0) -> Scene:
    """Scene ``index`` (deterministic in ``seed``)."""
    rng = np.random.default_rng([seed, index])
    array = ARRAYS[index % len(ARRAYS)]
    arr = bench_array(array)
    k = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    while True:
        room = (rng.uniform(4, 9), rng.uniform(3.5, 7), rng.uniform(2.5, 3.5))
        rt60 = float(rng.uniform(0.2, 0.9))
        robot = (rng.uniform(1.2, room[0] - 1.2), rng.uniform(1.2, room[1] - 1.2), rng.uniform(0.4, 1.5))
        yaw = float(rng.uniform(-180, 180))
        rot = rpy_matrix(0, 0, yaw)
        srcs, dirs = [], []
        for _ in range(200):
            if len(srcs) == k:
                break
            d = rng.uniform(1.0, 3.0)
            az, el = rng.uniform(-180, 180), rng.uniform(-25, 60)
            u = grids.azel_to_vector(az, el)  # array frame
            p = np.asarray(robot) + d * (rot @ u)
            if np.any(p < 0.3) or np.any(p > np.asarray(room) - 0.3):
                continue
            if any(np.degrees(np.arccos(np.clip(u @ v, -1, 1))) < 30 for v in dirs):
                continue
            srcs.append(tuple(p))
            dirs.append(u)
        if len(srcs) == k:
            break
    signals = [str(rng.choice(["noise", "babble"])) for _ in range(k)]
    return Scene(index, array, tuple(room), rt60, float(rng.uniform(0, 30)), tuple(robot), yaw, srcs, signals,
                 np.array(dirs))


def render(scene: Scene, seed: int = 0) -> np.ndarray:
    """``(mics, samples)`` audio of a scene: reverberant sources plus white noise at the scene's SNR."""
    import pyroomacoustics as pra

    from ..sim.room import make_signal

    rng = np.random.default_rng([seed, scene.index, 1])
    arr = bench_array(scene.array)
    absorption, order = pra.inverse_sabine(scene.rt60, scene.room)
    room = pra.ShoeBox(scene.room, fs=FS, materials=pra.Material(absorption), max_order=int(min(order, MAX_ORDER)))
    n = int((DURATION + LEAD_IN) * FS)
    for p, kind in zip(scene.sources, scene.signals):
        s = make_signal(kind, n, FS, rng)
        room.add_source(p, signal=s / (np.std(s) + 1e-12) * 10 ** (rng.uniform(-3, 3) / 20))
    mics = np.asarray(scene.robot) + arr.positions @ rpy_matrix(0, 0, scene.yaw_deg).T
    room.add_microphone_array(mics.T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        room.simulate()
    x = room.mic_array.signals[:, int(LEAD_IN * FS): n]
    p = np.mean(x**2)
    x = x + rng.standard_normal(x.shape) * np.sqrt(p / 10 ** (scene.snr_db / 10))
    return x.astype(np.float32)


def _search_grid(arr: ArrayGeometry) -> DirectionGrid:
    g = grids.icosphere(4)
    m = g.search_mask(arr)
    return DirectionGrid(g.vectors[m], (int(m.sum()),), "sphere", g.resolution_deg)


class _Worker:
    """Per-process cache of grids, beamformers and pyroomacoustics objects."""

    def __init__(self, ours: list[str], pra: list[str]) -> None:
        self.ours, self.pra = ours, pra
        self.cache: dict = {}

    def _for(self, array: str):
        if array not in self.cache:
            arr = bench_array(array)
            grid = _search_grid(arr)
            kw = dict(sample_rate=FS, nfft=NFFT, fmin=FMIN, fmax=FMAX, interp=16)
            bfs = {m: make_beamformer("srp_phat" if m == "srp_phat_grid" else m, arr, grid, **kw)
                   for m in self.ours if m != "srp_phat"}
            pras = {}
            if self.pra:
                from .peers import PraMethod

                shared = None
                for m in self.pra:
                    pm = PraMethod(m, arr, grid, FS, NFFT, FMIN, FMAX, precompute=shared is None)
                    if shared is None:
                        shared = pm.doa.mode_vec
                    else:
                        pm.doa.mode_vec = shared
                    pras[m] = pm
            self.cache[array] = (arr, grid, bfs, pras)
        return self.cache[array]

    def __call__(self, args) -> dict:
        index, seed = args
        scene = make_scene(index, seed)
        x = render(scene, seed)
        arr, grid, bfs, pras = self._for(scene.array)
        k = len(scene.sources)
        X = stft(x, NFFT, HOP)
        out = {"index": index, "array": scene.array, "planar": bool(arr.is_planar), "rt60": scene.rt60,
               "snr_db": scene.snr_db, "sources": k, "errors": {}, "ms": {}}

        def record(name, est, dt):
            e = match_errors(np.asarray(est).reshape(-1, 3), scene.directions, arr)
            out["errors"][name] = [180.0 if not np.isfinite(v) else float(v) for v in e]
            out["ms"][name] = dt * 1e3

        for m in self.ours:
            t = time.perf_counter()
            if m == "srp_phat":
                from ..pipeline import localize

                found = localize(x, arr, FS, k)
            else:
                bf = bfs[m]
                if hasattr(bf, "num_sources"):
                    bf.num_sources = k
                power = bf.map(X)
                found = find_sources(bf, None, power, k, 20.0, 0.0, refine=(m != "srp_phat_grid"),
                                     mask=np.ones(len(grid), bool))
            record(m, [s.vector for s in found], time.perf_counter() - t)
        for m, pm in pras.items():
            t = time.perf_counter()
            est = pm.locate(X, num_src=k)
            record(f"pyroomacoustics.{m}", est, time.perf_counter() - t)
        return out


def run(scenes: int = 200, seed: int = 0, jobs: int = 2, ours=None, pra=None, progress=None) -> dict:
    """Simulate ``scenes`` scenes and localise them with every method; return per-scene results and a summary."""
    ours = list(OUR_METHODS if ours is None else ours)
    pra = list(PRA_METHODS if pra is None else pra)
    work = _Worker(ours, pra)
    tasks = [(i, seed) for i in range(scenes)]
    results = []
    t0 = time.perf_counter()
    if jobs > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(jobs, initializer=_limit_threads) as pool:
            for r in pool.imap_unordered(work, tasks, chunksize=2):
                results.append(r)
                if progress:
                    progress(len(results), scenes)
    else:
        for t in tasks:
            results.append(work(t))
            if progress:
                progress(len(results), scenes)
    results.sort(key=lambda r: r["index"])
    methods = ours + [f"pyroomacoustics.{m}" for m in pra]
    return {"scenes": results, "summary": summarize(results, methods), "methods": methods,
            "settings": {"scenes": scenes, "seed": seed, "fs": FS, "nfft": NFFT, "band_hz": [FMIN, FMAX],
                         "duration_s": DURATION, "max_image_order": MAX_ORDER, "arrays": ARRAYS},
            "wall_s": time.perf_counter() - t0, "machine": machine()}


def _limit_threads() -> None:
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover
        pass


def _stats(e: list[float]) -> dict:
    a = np.asarray(e, dtype=np.float64)
    if a.size == 0:
        return {"n": 0, "median": None, "p90": None}
    return {"n": int(a.size), "median": float(np.median(a)), "p90": float(np.percentile(a, 90))}


def summarize(results: list[dict], methods: list[str]) -> dict:
    """Median / p90 error per method: overall, single sources, single sources at SNR >= 10 dB, per SNR bucket,
    per source count and per array."""
    out = {}
    for m in methods:
        def errs(pred):
            return [e for r in results if pred(r) for e in r["errors"].get(m, [])]

        s = {"all": _stats(errs(lambda r: True)),
             "single": _stats(errs(lambda r: r["sources"] == 1)),
             "single_snr_ge_10": _stats(errs(lambda r: r["sources"] == 1 and r["snr_db"] >= 10)),
             "snr": {f"{lo:g}-{min(hi, 30):g}": _stats(errs(lambda r, lo=lo, hi=hi: lo <= r["snr_db"] < hi))
                     for lo, hi in SNR_BUCKETS},
             "sources": {str(k): _stats(errs(lambda r, k=k: r["sources"] == k)) for k in (1, 2, 3)},
             "arrays": {a: _stats(errs(lambda r, a=a: r["array"] == a)) for a in ARRAYS},
             "ms_median": float(np.median([r["ms"][m] for r in results if m in r["ms"]])) if results else None}
        out[m] = s
    return out


def _f(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def markdown(result: dict) -> str:
    """The summary as markdown tables."""
    summ = result["summary"]
    buckets = list(next(iter(summ.values()))["snr"]) if summ else []
    head = (["method", "all: median / p90", "1 source: median / p90", "1 source, SNR >= 10 dB: median"]
            + [f"SNR {b} dB: median / p90" for b in buckets] + ["ms / scene"])
    rows = []
    for m, s in summ.items():
        rows.append([m, f"{_f(s['all']['median'])} / {_f(s['all']['p90'])}",
                     f"{_f(s['single']['median'])} / {_f(s['single']['p90'])}", _f(s["single_snr_ge_10"]["median"])]
                    + [f"{_f(s['snr'][b]['median'])} / {_f(s['snr'][b]['p90'])}" for b in buckets]
                    + [f"{s['ms_median']:.1f}"])
    t1 = markdown_table(head, rows)
    head2 = ["method"] + [f"{a}" for a in ARRAYS] + ["2 sources", "3 sources"]
    rows2 = [[m] + [_f(s["arrays"][a]["median"]) for a in ARRAYS]
             + [_f(s["sources"]["2"]["median"]), _f(s["sources"]["3"]["median"])] for m, s in summ.items()]
    t2 = markdown_table(head2, rows2)
    n = len(result["scenes"])
    counts = {k: sum(r["sources"] == k for r in result["scenes"]) for k in (1, 2, 3)}
    return (f"{n} scenes ({counts[1]} with 1 source, {counts[2]} with 2, {counts[3]} with 3); errors in degrees "
            f"(median / 90th percentile over all sources).\n\n{t1}\n\nMedian error per array and per source count:\n\n{t2}\n")


def checks(result: dict) -> list[str]:
    summ = result["summary"]
    out = []
    if "srp_phat" not in summ:
        return out
    ours = summ["srp_phat"]
    med = ours["single_snr_ge_10"]["median"]
    if med is not None:
        out.append(f"{'PASS' if med <= 2.0 else 'MISS'}: srp_phat median error for single sources at SNR >= 10 dB "
                   f"= {med:.2f} deg (<= 2 deg)")
    peers = [m for m in summ if m.startswith("pyroomacoustics.")]
    for b in ours["snr"]:
        if not peers:
            break
        best = min(peers, key=lambda m: summ[m]["snr"][b]["median"] if summ[m]["snr"][b]["median"] is not None else 1e9)
        pb, ob = summ[best]["snr"][b]["median"], ours["snr"][b]["median"]
        if pb is None or ob is None:
            continue
        out.append(f"{'PASS' if ob <= pb else 'MISS'}: SNR {b} dB: srp_phat median {ob:.2f} deg vs best "
                   f"pyroomacoustics ({best.split('.')[1]}) {pb:.2f} deg")
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--scenes", type=int, default=200, help="number of simulated scenes (default 200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--methods", nargs="+", default=OUR_METHODS, help=f"our methods (default: {' '.join(OUR_METHODS)})")
    ap.add_argument("--pra", nargs="*", default=PRA_METHODS,
                    help=f"pyroomacoustics methods (default: {' '.join(PRA_METHODS)}; also {' '.join(PRA_SLOW)}, "
                         "which take seconds per scene)")
    ap.add_argument("--json", action="store_true", help="print the full result as JSON")
    ap.add_argument("--markdown", action="store_true", help="print only the markdown tables")
    ap.add_argument("--save", help="also write the full JSON result to this file")


def run_cli(a: argparse.Namespace) -> int:
    quiet = a.json or a.markdown

    def progress(i, n):
        if not quiet and sys.stderr.isatty():
            print(f"\rscene {i}/{n}", end="", file=sys.stderr, flush=True)

    res = run(a.scenes, a.seed, a.jobs, a.methods, a.pra, progress)
    if not quiet and sys.stderr.isatty():
        print(file=sys.stderr)
    if a.save:
        with open(a.save, "w") as f:
            json.dump(res, f)
    if a.json:
        print(json.dumps(res))
        return 0
    print(markdown(res))
    if not a.markdown:
        print(f"wall time {res['wall_s']:.0f} s with {a.jobs} worker(s)")
        for line in checks(res):
            print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="avperception bench doa", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run_cli(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
