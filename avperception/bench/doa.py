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
ours use the same grid and then refine each peak off the grid. ``localize``
is exactly what ``avperception localize`` runs (its default method,
``srp_phat_normmusic``, on the pipeline's 3-degree equirectangular grid);
``srp_phat_grid`` is our SRP-PHAT without off-grid refinement, to separate the
method from the refinement.

Two error measures are reported: the 3-D angle, and the *resolvable* angle
(azimuth for planar arrays, the 3-D angle for the others). A planar array
measures only the in-plane component of the direction, so its elevation
follows from ``cos(el)`` and is ill-conditioned near the plane; in a room the
floor and ceiling reflections of a source lie at the same azimuth and, folded
to the upper side, at higher elevations, which pulls a planar array's
elevation up by several degrees (see docs/dsp.md).

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

from ..config import ArrayGeometry, load_array
from ..dsp import grid as grids
from ..dsp.beamforming import BEAMFORMERS, make_beamformer
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
OUR_METHODS = ["localize", "srp_phat", "srp_phat_grid", "das", "mvdr", "music", "normmusic"]
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


def azimuth_errors(estimated: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Azimuth error (deg) of each true direction to its matched estimate (Hungarian); 180 when unmatched."""
    from scipy.optimize import linear_sum_assignment

    est = np.asarray(estimated, dtype=np.float64).reshape(-1, 3)
    out = np.full(len(true), 180.0)
    if len(est) == 0:
        return out
    ae = np.degrees(np.arctan2(est[:, 1], est[:, 0]))
    at = np.degrees(np.arctan2(true[:, 1], true[:, 0]))
    cost = np.abs((ae[None] - at[:, None] + 180.0) % 360.0 - 180.0)
    r, c = linear_sum_assignment(cost)
    out[r] = cost[r, c]
    return out


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
            kw = dict(sample_rate=FS, nfft=NFFT, fmin=FMIN, fmax=FMAX)
            bfs = {}
            for m in self.ours:
                name = "srp_phat" if m == "srp_phat_grid" else m
                if m == "localize":
                    continue
                lags = name in BEAMFORMERS and "interp" in BEAMFORMERS[name].options  # the lag-lookup methods
                bfs[m] = make_beamformer(name, arr, grid, **kw, **({"interp": 16} if lags else {}))
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
               "snr_db": scene.snr_db, "sources": k, "errors": {}, "errors_resolvable": {}, "ms": {}}

        def record(name, est, dt):
            est = np.asarray(est).reshape(-1, 3)
            e = match_errors(est, scene.directions, arr)
            out["errors"][name] = [180.0 if not np.isfinite(v) else float(v) for v in e]
            if arr.is_planar:  # what a planar array resolves: azimuth
                out["errors_resolvable"][name] = azimuth_errors(est, scene.directions).tolist()
            else:
                out["errors_resolvable"][name] = out["errors"][name]
            out["ms"][name] = dt * 1e3

        for m in self.ours:
            t = time.perf_counter()
            if m == "localize":
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
            try:
                est = pm.locate(X, num_src=k)
            except (np.linalg.LinAlgError, ValueError, FloatingPointError) as e:  # e.g. CSSM / WAVES: singular matrix
                est = np.zeros((0, 3))
                out.setdefault("failures", {})[f"pyroomacoustics.{m}"] = str(e)
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
    return {"scenes": results, "summary": summarize(results, methods),
            "summary_resolvable": summarize(results, methods, "errors_resolvable"), "methods": methods,
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


def summarize(results: list[dict], methods: list[str], key: str = "errors") -> dict:
    """Median / p90 error per method: overall, single sources, single sources at SNR >= 10 dB, per SNR bucket,
    per source count, per array, and single sources at SNR >= 10 dB on non-planar arrays."""
    out = {}
    for m in methods:
        def errs(pred):
            return [e for r in results if pred(r) for e in r[key].get(m, [])]

        s = {"all": _stats(errs(lambda r: True)),
             "single": _stats(errs(lambda r: r["sources"] == 1)),
             "single_snr_ge_10": _stats(errs(lambda r: r["sources"] == 1 and r["snr_db"] >= 10)),
             "single_snr_ge_10_nonplanar": _stats(errs(lambda r: r["sources"] == 1 and r["snr_db"] >= 10
                                                        and not r["planar"])),
             "snr": {f"{lo:g}-{min(hi, 30):g}": _stats(errs(lambda r, lo=lo, hi=hi: lo <= r["snr_db"] < hi))
                     for lo, hi in SNR_BUCKETS},
             "sources": {str(k): _stats(errs(lambda r, k=k: r["sources"] == k)) for k in (1, 2, 3)},
             "arrays": {a: _stats(errs(lambda r, a=a: r["array"] == a)) for a in ARRAYS},
             "ms_median": float(np.median([r["ms"][m] for r in results if m in r["ms"]])) if results else None}
        out[m] = s
    return out


def _f(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def _tables(summ: dict) -> tuple[str, str]:
    buckets = list(next(iter(summ.values()))["snr"]) if summ else []
    head = (["method", "all: median / p90", "1 source: median / p90", "1 source, SNR >= 10 dB: median"]
            + [f"SNR {b} dB: median / p90" for b in buckets] + ["ms / scene"])
    rows = []
    for m, s in summ.items():
        rows.append([m, f"{_f(s['all']['median'])} / {_f(s['all']['p90'])}",
                     f"{_f(s['single']['median'])} / {_f(s['single']['p90'])}", _f(s["single_snr_ge_10"]["median"])]
                    + [f"{_f(s['snr'][b]['median'])} / {_f(s['snr'][b]['p90'])}" for b in buckets]
                    + [f"{s['ms_median']:.1f}"])
    head2 = ["method"] + list(ARRAYS) + ["2 sources", "3 sources"]
    rows2 = [[m] + [_f(s["arrays"][a]["median"]) for a in ARRAYS]
             + [_f(s["sources"]["2"]["median"]), _f(s["sources"]["3"]["median"])] for m, s in summ.items()]
    return markdown_table(head, rows), markdown_table(head2, rows2)


def markdown(result: dict) -> str:
    """The summaries as markdown tables."""
    n = len(result["scenes"])
    counts = {k: sum(r["sources"] == k for r in result["scenes"]) for k in (1, 2, 3)}
    fails: dict[str, int] = {}
    for r in result["scenes"]:
        for m in r.get("failures", {}):
            fails[m] = fails.get(m, 0) + 1
    failed = "".join(f"{m} raised an error on {c} scene(s) (counted as missed sources). " for m, c in fails.items())
    a1, a2 = _tables(result["summary"])
    b1, b2 = _tables(result["summary_resolvable"])
    return (f"{n} scenes ({counts[1]} with 1 source, {counts[2]} with 2, {counts[3]} with 3). Errors in degrees, "
            f"median / 90th percentile over all sources; a missed source counts as 180. {failed}\n\n"
            f"**3-D angle** between true and estimated direction (planar arrays: both folded to the upper side):\n\n"
            f"{a1}\n\nMedian 3-D error per array and per source count:\n\n{a2}\n\n"
            f"**Resolvable angle**: azimuth error for the planar arrays (which cannot measure elevation well, see the "
            f"notes), 3-D angle for the non-planar ones:\n\n{b1}\n\nMedian per array and per source count:\n\n{b2}\n")


def checks(result: dict, method: str = "localize") -> list[str]:
    out = []
    for label, key in (("3-D", "summary"), ("resolvable", "summary_resolvable")):
        summ = result[key]
        if method not in summ:
            return out
        ours = summ[method]
        med = ours["single_snr_ge_10"]["median"]
        if med is not None:
            out.append(f"{'PASS' if med <= 2.0 else 'MISS'}: {label} error, {method}: median for single sources at "
                       f"SNR >= 10 dB = {med:.2f} deg (<= 2 deg)")
        npl = ours["single_snr_ge_10_nonplanar"]["median"]
        if label == "3-D" and npl is not None:
            out.append(f"{'PASS' if npl <= 2.0 else 'MISS'}: 3-D error, {method}, non-planar arrays only: median for "
                       f"single sources at SNR >= 10 dB = {npl:.2f} deg (<= 2 deg)")
        peers = [m for m in summ if m.startswith("pyroomacoustics.")]
        for b in ours["snr"]:
            vals = {m: summ[m]["snr"][b]["median"] for m in peers if summ[m]["snr"][b]["median"] is not None}
            if not vals or ours["snr"][b]["median"] is None:
                continue
            best = min(vals, key=vals.get)
            ob = ours["snr"][b]["median"]
            out.append(f"{'PASS' if ob <= vals[best] else 'MISS'}: {label} error, SNR {b} dB: {method} median "
                       f"{ob:.2f} deg vs best pyroomacoustics ({best.split('.', 1)[1]}) {vals[best]:.2f} deg")
    return out


def plot(result: dict, path: str, methods: list[str] | None = None) -> None:
    """Cumulative distributions of the errors (3-D and resolvable, single and multiple sources) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = methods or [m for m in result["methods"] if m not in ("music", "pyroomacoustics.MUSIC")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for ax, key, title in ((axes[0], "errors", "3-D angle"), (axes[1], "errors_resolvable",
                                                                "resolvable angle (azimuth for planar arrays)")):
        for m in methods:
            e = np.sort([v for r in result["scenes"] for v in r[key].get(m, [])])
            if e.size == 0:
                continue
            style = "-" if not m.startswith("pyroomacoustics") else "--"
            ax.plot(e, np.arange(1, e.size + 1) / e.size, style, lw=1.6 if m == "localize" else 1.0,
                    label=m.replace("pyroomacoustics.", "pra."))
        ax.set_xscale("log")
        ax.set_xlim(0.2, 180)
        ax.set_ylim(0, 1)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xlabel("error (deg)")
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel("fraction of sources")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"DOA error CDF, {len(result['scenes'])} simulated rooms", fontsize=10)
    fig.savefig(path, dpi=80)
    plt.close(fig)


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
    ap.add_argument("--plot", help="also draw the error distributions into this PNG")
    ap.add_argument("--load", help="do not simulate: report a result saved with --save")


def run_cli(a: argparse.Namespace) -> int:
    quiet = a.json or a.markdown

    def progress(i, n):
        if not quiet and sys.stderr.isatty():
            print(f"\rscene {i}/{n}", end="", file=sys.stderr, flush=True)

    if a.load:
        with open(a.load) as f:
            res = json.load(f)
    else:
        res = run(a.scenes, a.seed, a.jobs, a.methods, a.pra, progress)
        if not quiet and sys.stderr.isatty():
            print(file=sys.stderr)
    if a.plot:
        plot(res, a.plot)
    if a.save:
        with open(a.save, "w") as f:
            json.dump(res, f)
    if a.json:
        print(json.dumps(res))
        return 0
    print(markdown(res))
    if not a.markdown:
        if not a.load:
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
