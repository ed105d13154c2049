"""Beamformers: every registered method finds a source where it is, and the fast paths equal the slow maths."""

import inspect
import json
import subprocess
import sys

import numpy as np
import pytest

from avperception.config import ArrayGeometry, load_array
from avperception.dsp import grid as grids
from avperception.dsp.beamforming import (BEAMFORMERS, DEFAULT_LOCALIZE_METHOD, DEFAULT_METHOD, Music, make_beamformer, srp_phat_reference,
                                          steering_vectors)
from avperception.dsp.gcc import band_covariance, mic_pairs, phat_cross_spectra
from avperception.dsp.grid import angular_distance_deg, azel_to_vector
from avperception.dsp.peaks import canonical_direction, find_sources
from avperception.dsp.stft import stft
from avperception.sim.room import plane_wave

FS, NFFT = 16000, 512
KW = dict(sample_rate=FS, nfft=NFFT, fmin=300.0, fmax=6000.0)
#: lag oversampling for the methods that take one
INTERP = {m: {"interp": 8} for m in ("srp_phat", "srp_phat_c2f", "das", "srp_phat_normmusic")}


def settings(method, **options):
    """The shared band settings, the method's lag oversampling if it has one, and ``options``."""
    return {**KW, **INTERP.get(method, {}), **options}
CUBE = ArrayGeometry("cube", 0.05 * np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float))


def spec_of(arr, dirs, snr_db=20.0, samples=8448, seed=0):
    x = sum(plane_wave(arr, azel_to_vector(*d), FS, samples, seed=seed + i) for i, d in enumerate(dirs))
    rng = np.random.default_rng(seed + 100)
    x = x + rng.standard_normal(x.shape).astype(np.float32) * np.sqrt(np.mean(x**2) / 10 ** (snr_db / 10))
    return stft(x, NFFT, 256)


@pytest.fixture(scope="module")
def grid642():
    return grids.icosphere(3)


def test_registry_lists_all_methods():
    assert {"srp_phat", "srp_phat_c2f", "das", "mvdr", "music", "normmusic", "srp_phat_normmusic"} <= set(BEAMFORMERS)
    assert DEFAULT_METHOD in BEAMFORMERS and DEFAULT_LOCALIZE_METHOD in BEAMFORMERS
    with pytest.raises(ValueError, match="available: .*srp_phat"):
        make_beamformer("nope", CUBE, grids.icosphere(1))
    bf = make_beamformer("mvdr", CUBE, grids.icosphere(1), diagonal_loading=0.1, **KW)
    assert bf.name == "mvdr" and bf.loading == 0.1
    # an option the method does not take is refused, naming the ones it does
    with pytest.raises(TypeError, match="'mvdr' takes no interp; its own options: diagonal_loading, max_bins"):
        make_beamformer("mvdr", CUBE, grids.icosphere(1), interp=16, **KW)
    with pytest.raises(TypeError, match="takes no fmn"):
        make_beamformer("srp_phat", CUBE, grids.icosphere(1), fmn=100.0)


@pytest.mark.parametrize("method", sorted(BEAMFORMERS))
def test_declared_options_are_the_constructor_keywords(method):
    """``options`` (what make_beamformer lets through) is exactly what the constructor declares."""
    params = inspect.signature(BEAMFORMERS[method].__init__).parameters
    own = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    assert sorted(own) == sorted(BEAMFORMERS[method].options)
    assert BEAMFORMERS[method].name == method


def test_options_reach_the_methods_inside():
    g = grids.icosphere(2)
    assert make_beamformer("srp_phat", CUBE, g, **KW).interp == 4  # SRP-PHAT's own default
    assert make_beamformer("srp_phat_c2f", CUBE, g, **KW).coarse.interp == 4
    c2f = make_beamformer("srp_phat_c2f", CUBE, g, interp=8, candidates=2, **KW)
    assert c2f.coarse.interp == 8 and c2f.candidates == 2 and c2f.coarse.fs == FS
    hy = make_beamformer("srp_phat_normmusic", CUBE, g, interp=8, max_bins=40, **KW)
    assert hy.srp.interp == 8 and len(hy.music.sel_bins) == 40


@pytest.mark.parametrize("method", sorted(BEAMFORMERS))
@pytest.mark.parametrize("array", ["robot_8mic", "cube", "tetra_4mic"])
def test_source_found_at_known_direction(method, array, grid642):
    arr = CUBE if array == "cube" else load_array(array)
    az, el = 57.0, 23.0
    X = spec_of(arr, [(az, el)], seed=3)
    bf = make_beamformer(method, arr, grid642, **settings(method))
    power = bf.map(X)
    assert power.shape == (len(grid642),) and np.all(np.isfinite(power))
    truth = canonical_direction(azel_to_vector(az, el), arr)
    peak = grid642.vectors[int(np.argmax(np.where(grid642.search_mask(arr), power, -np.inf)))]
    assert angular_distance_deg(canonical_direction(peak, arr), truth) < 1.5 * grid642.resolution_deg
    s = find_sources(bf, None, power, num=1)[0]  # off-grid refinement through evaluate(None, ...)
    assert angular_distance_deg(np.array(s.vector), truth) < 1.0, (method, array, s)


@pytest.mark.parametrize("method", sorted(BEAMFORMERS))
def test_evaluate_matches_map_on_grid_points(method, grid642):
    arr = load_array("respeaker_6mic")
    X = spec_of(arr, [(-30.0, 40.0)], seed=5)
    bf = make_beamformer(method, arr, grid642, **settings(method))
    power = bf.map(X)
    if method.endswith("_c2f"):  # exact only where the coarse-to-fine pass refined; peak is exact
        i = int(np.argmax(power))
        assert bf.evaluate(None, grid642.vectors[i:i + 1])[0] == pytest.approx(power[i], rel=1e-4, abs=1e-6)
        return
    idx = np.arange(0, len(grid642), 7)
    np.testing.assert_allclose(bf.evaluate(None, grid642.vectors[idx]), power[idx], rtol=1e-4, atol=1e-6)
    # with a spectrum it recomputes its statistics
    np.testing.assert_allclose(bf.evaluate(X, grid642.vectors[idx]), power[idx], rtol=1e-4, atol=1e-6)


def test_evaluate_none_needs_a_map_first():
    bf = make_beamformer("srp_phat", CUBE, grids.icosphere(1), **settings("srp_phat"))
    with pytest.raises(ValueError, match="previous map"):
        bf.evaluate(None, np.array([[1.0, 0, 0]]))


def test_srp_phat_lookup_equals_brute_force(grid642):
    arr = load_array("minidsp_uma16")
    X = spec_of(arr, [(120.0, 30.0)], snr_db=5, seed=2)
    bf = make_beamformer("srp_phat", arr, grid642, **settings("srp_phat"))
    ref = srp_phat_reference(X, arr, grid642.vectors, FS, NFFT, 300.0, 6000.0)
    np.testing.assert_allclose(bf.map(X), ref, atol=5e-3)
    # the pairwise correlation table is GCC-PHAT: lag 0 column of a broadside pair holds its coherence
    cc = bf.correlations(X)
    assert cc.shape == (len(mic_pairs(arr.num_mics)), bf.width)
    assert np.all(np.abs(cc) <= 1.0 + 1e-5)


def test_srp_phat_cross_spectra_are_the_phat_cross_spectra():
    arr = load_array("respeaker_4mic")
    X = spec_of(arr, [(10.0, 10.0)], seed=1)
    pairs = mic_pairs(arr.num_mics)
    band = np.zeros(NFFT // 2 + 1, bool)
    band[10:190] = True
    cov = band_covariance(X, slice(10, 190), phat=True)
    np.testing.assert_allclose(cov[:, pairs[:, 1], pairs[:, 0]], phat_cross_spectra(X, pairs, band)[:, band].T,
                               atol=1e-5)


def test_das_and_mvdr_equal_their_textbook_formulas():
    arr = load_array("respeaker_6mic")
    X = spec_of(arr, [(75.0, 20.0)], seed=4)
    dirs = grids.icosphere(2).vectors[:40]
    # the lookup interpolates linearly between lags 1 / (interp fs) apart: fine lags make it exact
    das = make_beamformer("das", arr, grids.icosphere(2), **settings("das", interp=32))
    das.map(X)
    bins = das.bins
    a = steering_vectors(arr.centered, dirs, das.freqs[bins], 343.0)  # (F, n, M)
    r = band_covariance(X, bins)
    quad = np.einsum("fnm,fmk,fnk->fn", a.conj(), r, a).real  # a^H R a
    np.testing.assert_allclose(das.evaluate(None, dirs), quad.mean(0) / arr.num_mics**2, rtol=2e-3)

    mv = make_beamformer("mvdr", arr, grids.icosphere(2), diagonal_loading=0.01, **KW)
    mv.map(X)
    tr = np.trace(r, axis1=1, axis2=2).real / arr.num_mics
    rl = r / tr[:, None, None] + 0.01 * np.eye(arr.num_mics)
    q = np.einsum("fnm,fmk,fnk->fn", a.conj(), np.linalg.inv(rl), a).real
    np.testing.assert_allclose(mv.evaluate(None, dirs), (1 / q).mean(0), rtol=2e-3)


@pytest.mark.parametrize("method,options", [("srp_phat", {}), ("normmusic", {"num_sources": 2}), ("mvdr", {}),
                                            ("srp_phat_normmusic", {})])
def test_two_sources_resolved_with_min_separation(method, options, grid642):
    arr = load_array("robot_8mic")
    truth = [(40.0, 15.0), (-100.0, 25.0)]
    X = spec_of(arr, truth, snr_db=20, samples=16000, seed=7)
    bf = make_beamformer(method, arr, grid642, **settings(method, **options))
    found = find_sources(bf, None, bf.map(X), num=2, min_separation_deg=20, min_relative_power=0.0)
    assert len(found) == 2
    for az, el in truth:
        err = min(angular_distance_deg(np.array(s.vector), azel_to_vector(az, el)) for s in found)
        assert err < 3.0, (method, az, el, found)


def test_hybrid_finds_a_weak_second_source_that_srp_phat_misses():
    """Two white sources, one 12 dB weaker: every bin's PHAT phase belongs to the loud one."""
    arr = load_array("robot_8mic")
    loud, weak = (30.0, 10.0), (-150.0, 40.0)
    x = plane_wave(arr, azel_to_vector(*loud), FS, 16000, seed=1) + 0.25 * plane_wave(arr, azel_to_vector(*weak), FS,
                                                                                      16000, seed=2)
    rng = np.random.default_rng(0)
    x = x + 0.02 * rng.standard_normal(x.shape).astype(np.float32)
    X = stft(x, NFFT, 256)
    g = grids.icosphere(3)
    srp = make_beamformer("srp_phat", arr, g, **settings("srp_phat"))
    alone = find_sources(srp, None, srp.map(X), num=2, min_separation_deg=20, min_relative_power=0.0)
    assert min(angular_distance_deg(np.array(s.vector), azel_to_vector(*weak)) for s in alone) > 10
    hy = make_beamformer("srp_phat_normmusic", arr, g, **settings("srp_phat_normmusic"))
    found = find_sources(hy, None, hy.map(X), num=2, min_separation_deg=20, min_relative_power=0.0)
    errs = [min(angular_distance_deg(np.array(s.vector), azel_to_vector(*d)) for s in found) for d in (loud, weak)]
    assert max(errs) < 3.0, (found, errs)
    assert angular_distance_deg(np.array(found[0].vector), azel_to_vector(*loud)) < 2.0  # strongest first
    # with min_relative_power the weak one must also have SRP-PHAT support
    assert len(find_sources(hy, None, hy.map(X), num=2, min_relative_power=0.99)) == 1


def test_steering_without_table_equals_table():
    arr = load_array("respeaker_6mic")
    X = spec_of(arr, [(20.0, 30.0)], seed=6)
    g = grids.icosphere(3)
    for method in ("normmusic", "mvdr"):
        table = make_beamformer(method, arr, g, **KW)
        stepped = make_beamformer(method, arr, g, memory_mb=0, **KW)  # too little memory for a table
        assert table._steer is not None and stepped._steer is None
        np.testing.assert_allclose(stepped.map(X), table.map(X), rtol=1e-3)


def test_music_estimates_the_number_of_sources():
    arr = CUBE
    X = spec_of(arr, [(40.0, 15.0), (-100.0, 25.0)], snr_db=25, samples=16000, seed=8)
    bf = make_beamformer("music", arr, grids.icosphere(2), **KW)
    w = np.linalg.eigvalsh(band_covariance(X, bf.sel_bins))
    assert Music.estimate_num_sources(w, X.shape[-1]) == 2
    with pytest.raises(ValueError, match="num_sources"):
        make_beamformer("music", arr, grids.icosphere(2), num_sources=8)


def test_coarse_to_fine_finds_the_dense_peak():
    arr = load_array("minidsp_uma16")
    fine = grids.equirectangular(resolution_deg=1.5)
    X = spec_of(arr, [(-140.0, 35.0)], seed=9)
    dense = make_beamformer("srp_phat", arr, fine, **settings("srp_phat"))
    c2f = make_beamformer("srp_phat_c2f", arr, fine, **settings("srp_phat_c2f"))
    assert len(c2f.coarse_grid) < len(fine) / 10
    pd, pc = dense.map(X), c2f.map(X)
    mask = fine.search_mask(arr)
    i = int(np.argmax(np.where(mask, pd, -np.inf)))
    j = int(np.argmax(np.where(mask, pc, -np.inf)))
    assert i == j
    assert pc[j] == pytest.approx(pd[i], rel=1e-5)


def test_pipeline_accepts_every_method():
    from dataclasses import replace

    from avperception.config import PipelineConfig
    from avperception.pipeline import Pipeline

    arr = load_array("respeaker_6mic")
    for method in sorted(BEAMFORMERS):
        cfg = PipelineConfig(array="respeaker_6mic")
        cfg = replace(cfg, grid=replace(cfg.grid, resolution_deg=6.0), beamformer=replace(cfg.beamformer, method=method))
        pipe = Pipeline(cfg, arr)
        x = plane_wave(arr, azel_to_vector(-45, 30), FS, pipe.frame_samples, seed=4, snr_db=20)
        out = pipe.process(x)
        assert out.energy.shape == pipe.grid.shape
        assert abs((out.sources[0].azimuth_deg + 45 + 180) % 360 - 180) < 4, (method, out.sources[0])


def test_speed_bench_runs_and_reports_rows():
    from avperception.bench.beamforming import run

    res = run(mics=(4,), grid_sizes=(360,), methods=["srp_phat", "das"], peers=False, min_time=0.0)
    assert [r["method"] for r in res["rows"]] == ["avperception.srp_phat", "avperception.das"]
    r = res["rows"][0]
    assert {"method", "mics", "grid", "ms", "speedup_vs_pyroomacoustics_srp"} <= set(r)
    assert r["mics"] == 4 and r["grid"] == 360 and r["ms"] > 0
    assert abs((r["peak_azimuth_deg"] - 41.3 + 180) % 360 - 180) <= 1.0


def test_bench_cli_json():
    r = subprocess.run([sys.executable, "-m", "avperception.cli", "bench", "beamforming", "--json", "--mics", "4",
                        "--grids", "360", "--methods", "srp_phat", "--skip-peers", "--min-time", "0"],
                       capture_output=True, text=True, check=True)
    rows = json.loads(r.stdout)["rows"]
    assert rows[0]["method"] == "avperception.srp_phat" and rows[0]["grid"] == 360
