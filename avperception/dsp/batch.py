"""Many analysis frames at once: the beamformer's map and its peak search as array operations over frames.

Offline work (replaying a bag) has every frame up front, so the per-frame steps of
:meth:`avperception.pipeline.Pipeline.process` are done for ``N`` frames together:

1. :func:`~avperception.dsp.stft.stft_frames`: one FFT call for all frames' STFTs;
2. :func:`pair_lag_maps`: the phase-transformed covariances and pair correlations as stacked matrix products and
   the whole grid of every frame as one sparse matrix times an ``(L P, N)`` matrix (pair-lag beamformers:
   ``srp_phat``, ``das``);
3. :func:`pick_peaks_batch` and :func:`refine_batch`: the greedy peak picking with its separation rule, and the
   two coarse-to-fine patches around every peak of every frame, evaluated together.

Each step does the same arithmetic as its per-frame counterpart (:func:`~avperception.dsp.stft.stft`,
the beamformer's ``map`` / ``evaluate``, :func:`~avperception.dsp.peaks.find_sources`); results agree to float
rounding (the tests compare them on a simulated recording).
"""

from __future__ import annotations

import numpy as np

from .gcc import phat_normalize
from .grid import DirectionGrid, _patch_tangents, vector_to_azel
from .peaks import SourceDirection, canonical_directions
from .stft import stft_frames

__all__ = ["stft_frames", "canonical_directions", "supports_batch", "pair_lag_statistics", "pair_lag_maps",
           "evaluate_batch", "pick_peaks_batch", "local_patches", "refine_batch", "find_sources_batch"]


def supports_batch(beamformer) -> bool:
    """Whether ``beamformer`` is a pair-lag beamformer (``srp_phat``, ``das``) computing its map and off-grid values
    the pair-lag way (what this module repeats over frames) without a source search of its own."""
    from .beamforming import PairLagBeamformer

    cls = type(beamformer)
    return (isinstance(beamformer, PairLagBeamformer) and getattr(beamformer, "find_sources", None) is None
            and all(getattr(cls, f) is getattr(PairLagBeamformer, f) for f in ("map", "evaluate", "_statistics")))


def pair_lag_statistics(beamformer, spec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pair correlations of ``N`` frames: ``spec (N, mics, F, T)`` -> ``cc (N, L, P)`` float32 (``L`` lags,
    ``P`` pairs) and ``diag (N,)`` (the covariances' mean trace), as the beamformer computes them per frame."""
    bf = beamformer
    if spec.ndim != 4 or spec.shape[1] != bf.array.num_mics or spec.shape[2] != bf.nfft // 2 + 1:
        raise ValueError(f"expected STFTs (frames, {bf.array.num_mics}, {bf.nfft // 2 + 1}, T), got {spec.shape}")
    y = spec[:, :, bf.band_slice]
    y = phat_normalize(y) if bf.phat else y.astype(np.complex64, copy=False)
    yt = y.transpose(0, 2, 1, 3)  # (N, Fb, M, T)
    cov = np.matmul(yt, yt.conj().swapaxes(-1, -2))  # (N, Fb, M, M)
    cov *= np.float32(1.0 / max(y.shape[-1], 1))
    r = cov[:, :, bf.pairs[:, 1], bf.pairs[:, 0]]  # (N, Fb, P)
    cc = np.matmul(bf._dft, np.concatenate([r.real, r.imag], axis=1))  # (N, L, P)
    diag = np.trace(cov, axis1=2, axis2=3).real.mean(axis=1)
    return np.ascontiguousarray(cc, dtype=np.float32), diag


def pair_lag_maps(beamformer, spec: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``spec (N, mics, F, T)`` -> ``power (N, G)`` (each row the beamformer's ``map`` of that frame), with the
    statistics ``cc (N, L, P)`` and ``diag (N,)`` that :func:`evaluate_batch` reads."""
    bf = beamformer
    cc, diag = pair_lag_statistics(bf, spec)
    n = cc.shape[0]
    values = np.ascontiguousarray((bf._matrix @ cc.reshape(n, -1).T).T)  # (N, G)
    return _finish(bf, values, diag), cc, diag


def evaluate_batch(beamformer, cc: np.ndarray, diag: np.ndarray, frame: np.ndarray,
                   directions: np.ndarray) -> np.ndarray:
    """The beamformer's power at ``directions (K, n, 3)``, row ``k`` from the statistics of frame ``frame[k]``
    (what ``evaluate(None, directions[k])`` gives after that frame's ``map``) -> ``(K, n)`` float32."""
    bf = beamformer
    k, n = directions.shape[:2]
    idx, w = bf._tables(directions.reshape(-1, 3))
    npair = idx.shape[1]
    idx, w = idx.reshape(k, n, npair), w.reshape(k, n, npair)
    flat = np.ascontiguousarray(cc.transpose(0, 2, 1)).ravel()  # (N * P * width): frame, pair, lag
    at = idx + (np.asarray(frame, dtype=np.intp) * (cc.shape[1] * cc.shape[2]))[:, None, None]
    lo = flat[at]
    d = flat[1:][at]  # the next lag's value, then lo + w (hi - lo) in place
    d -= lo
    d *= w
    d += lo
    v = (d.sum(axis=2) * np.float32(bf._pair_scale())).astype(np.float32)
    return _finish(bf, v, diag[np.asarray(frame)])


def _finish(beamformer, values: np.ndarray, diag: np.ndarray) -> np.ndarray:
    """The beamformer's per-frame ``_finish`` on each row of ``values (K, n)`` with ``diag (K,)`` (none: an
    identity)."""
    probe = np.zeros(1, dtype=np.float32)
    if beamformer._finish(probe, 1.0) is probe:
        return values
    if not len(values):
        return values
    return np.stack([beamformer._finish(values[i], float(diag[i])) for i in range(len(values))])


def pick_peaks_batch(power: np.ndarray, grid: DirectionGrid, num: int = 3, min_separation_deg: float = 20.0,
                     min_relative_power: float = 0.5, mask: np.ndarray | None = None) -> np.ndarray:
    """:func:`~avperception.dsp.peaks.pick_peaks` of every row of ``power (N, G)`` -> ``(N, num)`` grid indices,
    strongest first, ``-1`` past the last peak of a row."""
    power = np.asarray(power)
    p = np.array(power, dtype=np.float64)
    n = p.shape[0]
    nb = grid.neighbors()
    if nb.shape[1]:  # grid.local_maxima of every row: the neighbours' maximum, one neighbour column at a time
        pt = np.ascontiguousarray(power.T)  # (G, N)
        top = pt[nb[:, 0]]
        for j in range(1, nb.shape[1]):
            np.maximum(top, pt[nb[:, j]], out=top)
        p[~(pt >= top).T] = -np.inf
    if mask is not None:
        p[:, ~mask] = -np.inf
    cos_sep = np.cos(np.radians(min_separation_deg))
    out = np.full((n, num), -1, dtype=np.intp)
    rows = np.arange(n)
    alive = np.ones(n, dtype=bool)
    best = np.zeros(n)
    for j in range(num):
        i = np.argmax(p, axis=1) if p.shape[1] else np.zeros(n, dtype=np.intp)
        v = p[rows, i]
        ok = alive & np.isfinite(v) & (v > 0)
        if j == 0:
            best = v
        else:
            ok &= v >= min_relative_power * best
        alive = ok
        if not alive.any():
            break
        out[alive, j] = i[alive]
        if j + 1 < num:  # rows already done are left as they are: they stay done
            p[(grid.vectors @ grid.vectors[i].T).T >= cos_sep] = -np.inf  # (N, G): too close to this peak
            p[rows, i] = -np.inf
    return out


def local_patches(centers: np.ndarray, radius_deg: float, step_deg: float) -> np.ndarray:
    """:func:`~avperception.dsp.grid.local_patch` around each of ``centers (K, 3)`` -> ``(K, n, 3)``."""
    c = np.asarray(centers, dtype=np.float64)
    c = c / np.linalg.norm(c, axis=1, keepdims=True)
    x, y, z = c[:, 0], c[:, 1], c[:, 2]
    zero = np.zeros_like(x)
    polar = np.abs(z) >= 0.9
    e1 = np.where(polar[:, None], np.stack([zero, -z, y], axis=1), np.stack([-y, x, zero], axis=1))
    e1 = e1 / np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.stack([y * e1[:, 2] - z * e1[:, 1], z * e1[:, 0] - x * e1[:, 2], x * e1[:, 1] - y * e1[:, 0]], axis=1)
    ta, tb = _patch_tangents(float(radius_deg), float(step_deg))  # (n, 1) each
    v = c[:, None] + ta[None] * e1[:, None] + tb[None] * e2[:, None]
    return v / np.linalg.norm(v, axis=2, keepdims=True)


def refine_batch(beamformer, cc: np.ndarray, diag: np.ndarray, frame: np.ndarray, vectors: np.ndarray,
                 power: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two coarse-to-fine patches of :func:`~avperception.dsp.peaks.find_sources` around ``K`` peaks at once:
    ``vectors (K, 3)`` of frames ``frame (K,)`` with powers ``power (K,)`` -> refined ``(K, 3)`` and ``(K,)``."""
    v = np.array(vectors, dtype=np.float64)
    pw = np.array(power, dtype=np.float64)
    if not len(v):
        return v, pw
    radius = max(beamformer.grid.resolution_deg, 0.5)
    rows = np.arange(len(v))
    for _ in range(2):
        cand = local_patches(v, radius, radius / 8)  # (K, n, 3)
        vals = evaluate_batch(beamformer, cc, diag, frame, cand)
        j = np.argmax(vals, axis=1)
        best = vals[rows, j]
        up = best > pw
        v[up] = cand[rows[up], j[up]]
        pw[up] = best[up]
        radius /= 4
    return v, pw


def find_sources_batch(beamformer, power: np.ndarray, cc: np.ndarray, diag: np.ndarray, num: int = 3,
                       min_separation_deg: float = 20.0, min_relative_power: float = 0.5, refine: bool = True,
                       mask: np.ndarray | None = None) -> list[list[SourceDirection]]:
    """:func:`~avperception.dsp.peaks.find_sources` of ``N`` frames from :func:`pair_lag_maps`'s ``power (N, G)``,
    ``cc`` and ``diag`` -> one list of sources per frame, strongest first."""
    grid: DirectionGrid = beamformer.grid
    if mask is None:
        mask = grid.search_mask(beamformer.array)
    picks = pick_peaks_batch(power, grid, num, min_separation_deg, min_relative_power, mask)
    frame, slot = np.nonzero(picks >= 0)  # row-major: by frame, then strongest first
    idx = picks[frame, slot]
    v = grid.vectors[idx].astype(np.float64)
    pw = power[frame, idx].astype(np.float64)
    if refine:
        v, pw = refine_batch(beamformer, cc, diag, frame, v, pw)
    v = canonical_directions(v, beamformer.array)
    az, el = vector_to_azel(v)
    out: list[list[SourceDirection]] = [[] for _ in range(power.shape[0])]
    for k in range(len(frame)):
        out[frame[k]].append(SourceDirection(float(az[k]), float(el[k]), float(pw[k]),
                                             tuple(float(x) for x in v[k])))
    return out
