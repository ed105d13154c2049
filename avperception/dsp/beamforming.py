"""Beamformers over a :class:`~avperception.dsp.grid.DirectionGrid`, in a registry.

Every beamformer is built once for an array, a grid and an STFT size (all
steering tables are precomputed then) and maps an STFT block to one power
value per grid direction::

    bf = make_beamformer("srp_phat", array, grid, sample_rate=16000, nfft=512)
    power = bf.map(spec)            # spec: (mics, nfft // 2 + 1, frames) -> (G,)

``bf.evaluate(spec, directions)`` scores arbitrary directions (used for
coarse-to-fine refinement of peaks); ``bf.evaluate(None, directions)`` reuses
the statistics of the last ``map()`` call.

Registered methods (``BEAMFORMERS``; ``avperception info`` lists them):

``srp_phat``
    Steered response power with phase transform, by lookup in pairwise
    GCC-PHAT at interpolated lags. The fastest and, in reverberant rooms, the
    most accurate; the default.
``srp_phat_c2f``
    The same on a coarse sub-grid first, then only the fine directions around
    the best coarse candidates (for very fine grids).
``das``
    Frequency-domain delay-and-sum (conventional) beamformer power, through the
    same pairwise lookup without the phase transform.
``mvdr``
    Minimum-variance distortionless response (Capon), per frequency, with
    diagonal loading, summed over the band.
``music`` / ``normmusic``
    MUSIC pseudo-spectrum per frequency (signal subspace from the covariance
    eigenvectors), summed over the band; ``normmusic`` normalises each
    frequency's pseudo-spectrum to a maximum of 1 first.
``srp_phat_normmusic``
    SRP-PHAT's map and strongest source, NormMUSIC for further sources: the
    most accurate with several simultaneous sources (``avperception localize``
    uses it).

All share the keyword arguments ``sample_rate``, ``nfft``, ``fmin``, ``fmax``
and ``speed_of_sound``; method-specific ones are listed on each class.
:func:`make_beamformer` drops keyword arguments a method does not take (so a
caller can always pass e.g. ``interp``).
"""

from __future__ import annotations

import inspect
from typing import Callable

import numpy as np

from ..config import ArrayGeometry
from .gcc import band_covariance, gcc_from_cross_spectra, lag_dft_matrix, mic_pairs, pair_spectra, phat_cross_spectra
from .grid import DirectionGrid

BEAMFORMERS: dict[str, type["Beamformer"]] = {}

#: the method the streaming pipeline uses unless told otherwise (fastest, robust)
DEFAULT_METHOD = "srp_phat"
#: the method offline localisation (``avperception localize``) uses unless told otherwise (most accurate)
DEFAULT_LOCALIZE_METHOD = "srp_phat_normmusic"


def register(name: str) -> Callable[[type["Beamformer"]], type["Beamformer"]]:
    def deco(cls: type["Beamformer"]) -> type["Beamformer"]:
        BEAMFORMERS[name] = cls
        cls.name = name
        return cls

    return deco


def _accepted_kwargs(cls: type) -> set[str] | None:
    """Keyword names the constructors along ``cls``'s MRO accept (None: anything)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        names.update(p for p in params if p not in ("self", "array", "grid"))
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return names
    return names


def make_beamformer(name: str, array: ArrayGeometry, grid: DirectionGrid, strict: bool = False, **kwargs) -> "Beamformer":
    """Build the beamformer registered as ``name``.

    Keyword arguments the method does not know are ignored (``strict=False``),
    so one set of settings can be passed to any method.
    """
    if name not in BEAMFORMERS:
        raise ValueError(f"unknown beamformer {name!r}; available: {', '.join(sorted(BEAMFORMERS))}")
    cls = BEAMFORMERS[name]
    if not strict:
        ok = _accepted_kwargs(cls)
        inner = kwargs.get("inner") or getattr(cls, "inner_name", None)
        if inner in BEAMFORMERS:  # coarse-to-fine passes the rest on to its inner method
            ok |= _accepted_kwargs(BEAMFORMERS[inner])
        kwargs = {k: v for k, v in kwargs.items() if k in ok}
    return cls(array, grid, **kwargs)


def tdoa(positions: np.ndarray, pairs: np.ndarray, directions: np.ndarray, c: float) -> np.ndarray:
    """Far-field delays ``(n, P)`` in seconds of mic ``q`` relative to mic ``p`` for sources at ``directions`` ``(n, 3)``.

    A plane wave from unit direction ``u`` reaches a microphone at ``r`` at time
    ``-(r . u) / c``, so mic ``q`` lags mic ``p`` by ``(r_p - r_q) . u / c``.
    """
    baselines = positions[pairs[:, 0]] - positions[pairs[:, 1]]  # (P, 3)
    return directions @ baselines.T / c


def steering_vectors(positions: np.ndarray, directions: np.ndarray, freqs: np.ndarray, c: float) -> np.ndarray:
    """Far-field steering vectors ``(F, n, M)`` complex64: ``a_m = exp(2j pi f (r_m . u) / c)``.

    With this convention a plane wave from ``u`` is ``X_m(f) = S(f) a_m(f)``, and
    ``a^H X`` is the delay-and-sum output toward ``u``.
    """
    proj = (np.asarray(directions, dtype=np.float64) @ np.asarray(positions, dtype=np.float64).T) / c  # (n, M) s
    ph = (2.0 * np.pi * np.asarray(freqs, dtype=np.float64))[:, None, None] * proj[None]
    return np.exp(1j * ph).astype(np.complex64)


class Beamformer:
    """Base class: holds the array, grid and band.

    Subclasses implement :meth:`map` (whole grid) and :meth:`evaluate`
    (arbitrary directions; ``spec=None`` reuses what the last ``map`` computed).
    """

    name = "base"

    def __init__(
        self,
        array: ArrayGeometry,
        grid: DirectionGrid,
        sample_rate: float = 16000.0,
        nfft: int = 512,
        fmin: float = 300.0,
        fmax: float = 5000.0,
        speed_of_sound: float = 343.0,
    ) -> None:
        self.array = array
        self.grid = grid
        self.fs = float(sample_rate)
        self.nfft = int(nfft)
        self.c = float(speed_of_sound)
        freqs = np.fft.rfftfreq(self.nfft, 1.0 / self.fs)
        self.freqs = freqs
        self.band = (freqs >= fmin) & (freqs <= fmax)
        if not self.band.any():
            raise ValueError(f"no STFT bin in [{fmin}, {fmax}] Hz at nfft={nfft}, fs={sample_rate}")
        self.bins = np.flatnonzero(self.band)
        # the band is one run of bins: a slice is a view, fancy indexing would copy
        self.band_slice = slice(int(self.bins[0]), int(self.bins[-1]) + 1)
        self.positions = array.centered

    @property
    def num_bins(self) -> int:
        return int(len(self.bins))

    def map(self, spec: np.ndarray) -> np.ndarray:
        """``(mics, F, T)`` STFT -> ``(G,)`` power per grid direction."""
        raise NotImplementedError

    def evaluate(self, spec: np.ndarray | None, directions: np.ndarray) -> np.ndarray:
        """Power ``(n,)`` for arbitrary unit ``directions`` ``(n, 3)``.

        ``spec=None`` reuses the statistics of the last :meth:`map` call.
        """
        raise NotImplementedError

    def _check(self, spec: np.ndarray) -> None:
        if spec.ndim != 3 or spec.shape[0] != self.array.num_mics or spec.shape[1] != self.nfft // 2 + 1:
            raise ValueError(
                f"{self.name}: expected STFT of shape ({self.array.num_mics}, {self.nfft // 2 + 1}, frames), got {spec.shape}"
            )

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, mics={self.array.num_mics}, grid={len(self.grid)}, "
                f"band={self.freqs[self.bins[0]]:.0f}-{self.freqs[self.bins[-1]]:.0f} Hz)")


# --------------------------------------------------------------------------- pairwise lag lookup (SRP family)


class PairLagBeamformer(Beamformer):
    """Steered response power by lookup in pairwise cross-correlations.

    For a far-field direction ``u`` every microphone pair ``(p, q)`` sees one
    delay ``tau_pq(u)``, so the steered response power of the whole array is a
    sum over pairs of each pair's cross-correlation at its delay (plus a
    direction-independent diagonal term). Per frame:

    1. one ``(Fb, M, M)`` batch of covariance matrices over the band's bins
       (BLAS), with or without the phase transform;
    2. the band-limited cross-correlation of every pair at the ``L`` lags a
       pair can produce, oversampled ``interp`` times, as one real matrix
       product ``(L, 2 Fb) @ (2 Fb, P)`` (cheaper than ``P`` inverse FFTs);
    3. one sparse ``(G, L P)`` times ``(L P,)`` product: the interpolation
       matrix holds, for every (direction, pair), the two neighbouring lags
       and their linear weights. It is built once in the constructor, so the
       map costs ``2 G P`` multiply-adds with no Python loop over directions.

    The same precomputed correlations serve :meth:`evaluate` for off-grid
    directions (peak refinement).

    Args:
        interp: lag oversampling factor (lag step ``1 / (interp fs)``).
        phat: apply the phase transform (SRP-PHAT) or not (delay-and-sum).
    """

    phat = True

    def __init__(self, array: ArrayGeometry, grid: DirectionGrid, interp: int = 8, **kw) -> None:
        super().__init__(array, grid, **kw)
        self.interp = int(interp)
        if self.interp < 1:
            raise ValueError("interp must be >= 1")
        self.pairs = mic_pairs(array.num_mics)
        self.max_lag = int(np.ceil(array.aperture / self.c * self.fs * self.interp)) + 2
        self.width = 2 * self.max_lag + 2
        self.lags = np.arange(-self.max_lag, self.max_lag + 2)
        # cc = D @ [Re r; Im r] / Fb: mean over the band's bins of Re(r e^{j w tau})
        self._dft = lag_dft_matrix(self.bins, self.nfft, self.lags, self.interp) * np.float32(1.0 / self.num_bins)
        self.idx, self.w = self._tables(grid.vectors)
        self._matrix = self._sparse(self.idx, self.w)
        self._cc: np.ndarray | None = None  # (L, P) correlations of the last frame
        self._diag: float = 0.0

    # -- tables
    def _lags(self, directions: np.ndarray) -> np.ndarray:
        return tdoa(self.positions, self.pairs, np.asarray(directions, dtype=np.float64), self.c) * self.fs * self.interp

    def _tables(self, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices into the ``(P, width)`` correlation table and interpolation weights, ``(n, P)`` each."""
        lag = self._lags(directions)
        lo = np.floor(lag)
        w = (lag - lo).astype(np.float32)
        idx = (lo.astype(np.int64) + self.max_lag) + np.arange(len(self.pairs))[None] * self.width
        return idx.astype(np.intp), w

    def _sparse(self, idx: np.ndarray, w: np.ndarray):
        """CSR ``(n, L P)`` interpolation matrix acting on the ``(L, P)`` correlation table (row-major)."""
        import scipy.sparse as sp

        n, npair = idx.shape
        lag_i = idx - np.arange(npair)[None] * self.width  # lag index in [0, width - 1)
        col = lag_i * npair + np.arange(npair)[None]  # (n, P) column of the lower lag
        scale = self._pair_scale()
        cols = np.stack([col, col + npair], axis=-1).reshape(n, 2 * npair)
        vals = (np.stack([1.0 - w, w], axis=-1).reshape(n, 2 * npair) * scale).astype(np.float32)
        indptr = np.arange(0, n * 2 * npair + 1, 2 * npair, dtype=np.int64)
        m = sp.csr_matrix((vals.ravel(), cols.ravel().astype(np.int32), indptr), shape=(n, self.width * npair))
        m.has_sorted_indices = False
        m.sort_indices()
        return m

    def _pair_scale(self) -> float:
        return 1.0 / len(self.pairs)

    # -- per frame
    def _statistics(self, spec: np.ndarray) -> tuple[np.ndarray, float]:
        self._check(spec)
        cov = band_covariance(spec, self.band_slice, phat=self.phat)  # (Fb, M, M)
        r = pair_spectra(cov, self.pairs)  # (Fb, P)
        cc = self._dft @ np.concatenate([r.real, r.imag], axis=0)  # (L, P)
        diag = float(np.trace(cov, axis1=1, axis2=2).real.mean())
        return np.ascontiguousarray(cc, dtype=np.float32), diag

    def correlations(self, spec: np.ndarray) -> np.ndarray:
        """``(P, width)`` band-limited cross-correlations, averaged over the band's bins; column ``max_lag`` is lag 0.

        With the phase transform each value is in [-1, 1] (1: the pair is
        perfectly coherent at that lag).
        """
        cc, _ = self._statistics(spec)
        return np.ascontiguousarray(cc.T)

    def _finish(self, values: np.ndarray, diag: float) -> np.ndarray:
        return values

    def map(self, spec: np.ndarray) -> np.ndarray:
        self._cc, self._diag = self._statistics(spec)
        return self._finish(self._matrix @ self._cc.ravel(), self._diag)

    def evaluate(self, spec: np.ndarray | None, directions: np.ndarray) -> np.ndarray:
        if spec is not None:
            cc, diag = self._statistics(spec)
        elif self._cc is None:
            raise ValueError("evaluate(None, ...) needs a previous map() call")
        else:
            cc, diag = self._cc, self._diag
        idx, w = self._tables(np.asarray(directions, dtype=np.float64).reshape(-1, 3))
        flat = np.ascontiguousarray(cc.T).ravel()  # (P, width) layout matches idx
        lo = flat[idx]
        hi = flat[idx + 1]
        v = (lo + w * (hi - lo)).sum(axis=1) * np.float32(self._pair_scale())
        return self._finish(v.astype(np.float32), diag)


@register("srp_phat")
class SrpPhat(PairLagBeamformer):
    """Steered response power with phase transform, by lookup in pairwise GCC-PHAT.

    The map is the mean over pairs and band bins of the PHAT-weighted
    cross-spectrum steered to each direction, in [-1, 1] (1: every pair
    perfectly coherent at that direction). See :class:`PairLagBeamformer` for
    how it is computed.

    Args:
        interp: lag oversampling factor (default 4; the pipeline uses
            ``beamformer.interp``, 8 by default).
    """

    phat = True

    def __init__(self, array: ArrayGeometry, grid: DirectionGrid, interp: int = 4, **kw) -> None:
        super().__init__(array, grid, interp=interp, **kw)


@register("das")
class DelayAndSum(PairLagBeamformer):
    """Frequency-domain delay-and-sum (conventional, Bartlett) beamformer.

    Power toward ``u`` averaged over the band's bins and frames:
    ``mean_f a^H R_f a / M^2`` with unit-modulus steering ``a``. The quadratic
    form splits into the diagonal (the same for every direction) and the pairs'
    cross-spectra steered to their delays, so it is computed with the same
    lag lookup as SRP-PHAT, without the phase transform. The result is the
    mean power of the beamformer output per bin (signal units squared).
    """

    phat = False

    def __init__(self, array: ArrayGeometry, grid: DirectionGrid, interp: int = 8, **kw) -> None:
        super().__init__(array, grid, interp=interp, **kw)

    def _pair_scale(self) -> float:
        return 2.0 / self.array.num_mics**2

    def _finish(self, values: np.ndarray, diag: float) -> np.ndarray:
        return (values + np.float32(diag / self.array.num_mics**2)).astype(np.float32)


# --------------------------------------------------------------------------- narrowband (covariance) methods


class NarrowbandBeamformer(Beamformer):
    """Methods that work on the per-frequency covariance matrix and sum a narrowband spectrum over the band.

    Args:
        max_bins: use at most this many bins, evenly spread over the band
            (None: every bin; fewer bins trade a little accuracy for speed).
        memory_mb: steering vectors of the grid are precomputed when they fit
            in this much memory, else computed per frequency on the fly.
    """

    def __init__(self, array: ArrayGeometry, grid: DirectionGrid, max_bins: int | None = None,
                 memory_mb: float = 256.0, **kw) -> None:
        super().__init__(array, grid, **kw)
        bins = self.bins
        if max_bins is not None and len(bins) > max_bins:
            bins = bins[np.unique(np.round(np.linspace(0, len(bins) - 1, int(max_bins))).astype(int))]
        self.sel_bins = bins
        self.sel_freqs = self.freqs[bins]
        size = len(bins) * len(grid) * array.num_mics * 8
        self._steer = (steering_vectors(self.positions, grid.vectors, self.sel_freqs, self.c)
                       if size <= memory_mb * 2**20 else None)
        self._state = None

    def covariance(self, spec: np.ndarray) -> np.ndarray:
        """``(Fs, M, M)`` covariance of the selected bins, averaged over frames."""
        self._check(spec)
        return band_covariance(spec, self.sel_bins, phat=False)

    def _prepare(self, cov: np.ndarray, snapshots: int):
        """Per-frame state from the covariances (e.g. inverses, subspaces)."""
        raise NotImplementedError

    def _narrowband(self, state, steer: np.ndarray, fslice: slice) -> np.ndarray:
        """``(Fs_chunk, n)`` narrowband spectra for steering vectors ``(Fs_chunk, n, M)``."""
        raise NotImplementedError

    def _combine(self, nb_sum: np.ndarray, state) -> np.ndarray:
        return nb_sum / len(self.sel_bins)

    def _spectra(self, state, directions: np.ndarray | None, chunk: int = 16) -> np.ndarray:
        """``(Fs, n)`` narrowband spectra on the grid (``directions=None``) or on given directions."""
        n = len(self.grid) if directions is None else len(directions)
        out = np.empty((len(self.sel_bins), n), dtype=np.float32)
        stepper = None
        if directions is None and self._steer is None:
            stepper = _SteeringStepper(self.positions, self.grid.vectors, self.sel_freqs, self.c)
        for s in range(0, len(self.sel_bins), chunk):
            sl = slice(s, min(s + chunk, len(self.sel_bins)))
            if stepper is not None:
                a = stepper.take(sl)
            elif directions is None:
                a = self._steer[sl]
            else:
                a = steering_vectors(self.positions, directions, self.sel_freqs[sl], self.c)
            out[sl] = self._narrowband(state, a, sl)
        return out

    def map(self, spec: np.ndarray) -> np.ndarray:
        cov = self.covariance(spec)
        self._state = self._prepare(cov, spec.shape[-1])
        nb = self._spectra(self._state, None)
        self._state = self._after_map(self._state, nb)
        return self._combine(nb.sum(axis=0), self._state).astype(np.float32)

    def _after_map(self, state, nb: np.ndarray):
        return state

    def evaluate(self, spec: np.ndarray | None, directions: np.ndarray) -> np.ndarray:
        d = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
        if spec is not None:
            self.map(spec)
        if self._state is None:
            raise ValueError("evaluate(None, ...) needs a previous map() call")
        nb = self._spectra(self._state, d)
        return self._combine(self._weight(nb, self._state).sum(axis=0), self._state).astype(np.float32)

    def _weight(self, nb: np.ndarray, state) -> np.ndarray:
        return nb


class _SteeringStepper:
    """Grid steering vectors bin after bin without a table: ``a(f') = a(f) * exp(2j pi (f' - f) r.u / c)``.

    One complex multiply per element instead of an ``exp``; the phasor of each
    distinct bin step is computed once (a contiguous band has a single step).
    The phase is re-anchored with an exact ``exp`` every 64 bins so float32
    rounding cannot accumulate.
    """

    def __init__(self, positions: np.ndarray, directions: np.ndarray, freqs: np.ndarray, c: float) -> None:
        self.proj = (np.asarray(directions, dtype=np.float64) @ np.asarray(positions, dtype=np.float64).T) / c  # (G, M)
        self.freqs = np.asarray(freqs, dtype=np.float64)
        self.steps: dict[float, np.ndarray] = {}
        self.cur: np.ndarray | None = None
        self.k = -1

    def _exact(self, f: float) -> np.ndarray:
        return np.exp((2j * np.pi * f) * self.proj).astype(np.complex64)

    def take(self, sl: slice) -> np.ndarray:
        """``(len(sl), G, M)`` steering vectors for the bins of ``sl`` (called with increasing slices)."""
        out = np.empty((sl.stop - sl.start, *self.proj.shape), dtype=np.complex64)
        for i, k in enumerate(range(sl.start, sl.stop)):
            if self.cur is None or k != self.k + 1 or k % 64 == 0:
                self.cur = self._exact(self.freqs[k])
            else:
                df = round(float(self.freqs[k] - self.freqs[k - 1]), 6)
                if df not in self.steps:
                    self.steps[df] = self._exact(df)
                self.cur = self.cur * self.steps[df]
            self.k = k
            out[i] = self.cur
        return out


def _quadratic(a: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``Re(a^H Q a)`` for steering ``(F, n, M)`` and Hermitian ``(F, M, M)`` -> ``(F, n)``."""
    a = np.ascontiguousarray(a, dtype=np.complex64)
    qa = np.ascontiguousarray(np.matmul(a, np.swapaxes(q, 1, 2)), dtype=np.complex64)  # row g: (Q a_g)^T
    # Re(sum conj(a) * qa) as one real dot product over interleaved (re, im) floats
    return np.einsum("fnk,fnk->fn", a.view(np.float32), qa.view(np.float32))


@register("mvdr")
class Mvdr(NarrowbandBeamformer):
    """Minimum-variance distortionless response (Capon) beamformer.

    Per bin: ``1 / (a^H R^-1 a)`` with the covariance normalised to unit mean
    eigenvalue and loaded by ``diagonal_loading`` (robust to few snapshots and
    steering errors); the map is the mean over the band's bins.

    Args:
        diagonal_loading: added to the normalised covariance's diagonal.
    """

    def __init__(self, array: ArrayGeometry, grid: DirectionGrid, diagonal_loading: float = 1e-2, **kw) -> None:
        super().__init__(array, grid, **kw)
        self.loading = float(diagonal_loading)

    def _prepare(self, cov: np.ndarray, snapshots: int):
        m = cov.shape[-1]
        tr = np.trace(cov, axis1=1, axis2=2).real / m
        r = cov / np.maximum(tr, 1e-20)[:, None, None].astype(np.float32)
        r = r + self.loading * np.eye(m, dtype=np.float32)[None]
        return np.linalg.inv(r).astype(np.complex64)

    def _narrowband(self, state, steer: np.ndarray, fslice: slice) -> np.ndarray:
        return 1.0 / np.maximum(_quadratic(steer, state[fslice]), 1e-12)


class _Music(NarrowbandBeamformer):
    """MUSIC pseudo-spectrum ``1 / ||E_n^H a||^2`` per bin, summed over the band.

    ``||E_n^H a||^2 = M - ||E_s^H a||^2`` for unit-modulus steering vectors, so
    only the ``K`` signal-subspace eigenvectors are needed per bin.

    Args:
        num_sources: signal subspace dimension ``K``; None estimates it per
            frame from the band-averaged eigenvalues (minimum description
            length), between 1 and ``M - 1``.
    """

    normalize = False

    def __init__(self, array: ArrayGeometry, grid: DirectionGrid, num_sources: int | None = None, **kw) -> None:
        super().__init__(array, grid, **kw)
        if num_sources is not None and not 1 <= int(num_sources) < array.num_mics:
            raise ValueError(f"num_sources must be in [1, {array.num_mics - 1}] for {array.num_mics} microphones")
        self.num_sources = None if num_sources is None else int(num_sources)

    @staticmethod
    def estimate_num_sources(eigvals: np.ndarray, snapshots: int) -> int:
        """Minimum description length estimate from ``(F, M)`` ascending eigenvalues."""
        lam = np.mean(eigvals / np.maximum(eigvals.sum(axis=1, keepdims=True), 1e-20), axis=0)[::-1]  # descending
        m = len(lam)
        lam = np.maximum(lam, 1e-12)
        n = max(snapshots, 2)
        best, best_k = np.inf, 1
        for k in range(0, m - 1):
            tail = lam[k:]
            ratio = np.exp(np.mean(np.log(tail))) / np.mean(tail)
            mdl = -n * (m - k) * np.log(ratio) + 0.5 * k * (2 * m - k) * np.log(n)
            if mdl < best:
                best, best_k = mdl, k
        return int(min(max(best_k, 1), m - 1))

    def _prepare(self, cov: np.ndarray, snapshots: int):
        w, v = np.linalg.eigh(cov)
        k = self.num_sources or self.estimate_num_sources(w, snapshots)
        return {"es": np.ascontiguousarray(v[..., -k:]).astype(np.complex64), "k": k, "max": None}

    def _narrowband(self, state, steer: np.ndarray, fslice: slice) -> np.ndarray:
        b = np.matmul(steer, state["es"][fslice].conj())  # (F, n, K) = (E_s^H a)^T
        proj = (b.real**2 + b.imag**2).sum(axis=-1)
        m = steer.shape[-1]
        return 1.0 / np.maximum(m - proj, 1e-6 * m)

    def _after_map(self, state, nb: np.ndarray):
        if self.normalize:
            state["max"] = nb.max(axis=1, keepdims=True)
            nb /= state["max"]
        return state

    def _weight(self, nb: np.ndarray, state) -> np.ndarray:
        return nb / state["max"] if self.normalize else nb


@register("music")
class Music(_Music):
    __doc__ = _Music.__doc__
    normalize = False


@register("normmusic")
class NormMusic(_Music):
    """MUSIC with frequency normalisation: each bin's pseudo-spectrum is scaled to a maximum of 1
    over the grid before the sum, so no single bin dominates (Salvati et al.). Off-grid
    :meth:`evaluate` uses the grid maxima of the last map."""

    normalize = True


# --------------------------------------------------------------------------- coarse-to-fine


class CoarseToFine(Beamformer):
    """Scan a coarse sub-grid, then only the fine directions near the best coarse candidates.

    The coarse grid is the subset of fine-grid directions closest to an
    icosphere about ``coarse_factor`` times coarser than the fine grid. Per
    frame the inner method maps the coarse grid, its ``candidates`` strongest
    local maxima (inside the array's search mask) are chosen, and the fine
    directions within ``1.5`` coarse spacings of them are evaluated. Every other
    fine direction gets the value of its nearest coarse direction, so the
    result is still a full ``(G,)`` map whose peaks are exact.

    Args:
        inner: registered name of the method to run (not ``*_c2f``).
        candidates: coarse peaks to refine.
        coarse_factor: coarse spacing over fine spacing.
    """

    inner_name = "srp_phat"

    def __init__(self, array: ArrayGeometry, grid: DirectionGrid, inner: str | None = None, candidates: int = 4,
                 coarse_factor: float = 4.0, **kw) -> None:
        from scipy.spatial import cKDTree

        from .grid import icosphere

        base = {k: kw[k] for k in ("sample_rate", "nfft", "fmin", "fmax", "speed_of_sound") if k in kw}
        super().__init__(array, grid, **base)
        self.inner_name = inner or self.inner_name
        target = max(grid.resolution_deg * coarse_factor, 2.0)
        s = int(np.clip(np.ceil(np.log2(63.4 / target)), 1, 6))
        ico = icosphere(s).vectors
        tree = cKDTree(grid.vectors)
        _, near = tree.query(ico)
        coarse_idx = np.unique(near)
        if len(coarse_idx) >= len(grid):  # grid is already coarse: refine nothing
            coarse_idx = np.arange(len(grid))
        self.coarse_idx = coarse_idx
        cvec = grid.vectors[coarse_idx]
        spacing = max(63.4 / 2**s, grid.resolution_deg)
        self.coarse_grid = DirectionGrid(cvec, (len(cvec),), "custom", spacing)
        self.coarse = make_beamformer(self.inner_name, array, self.coarse_grid, **kw)
        _, self.owner = cKDTree(cvec).query(grid.vectors)
        radius = np.radians(1.5 * spacing)
        self.members = tree.query_ball_point(cvec, 2 * np.sin(radius / 2))
        self.members = [np.asarray(m, dtype=np.intp) for m in self.members]
        self.candidates = int(candidates)
        self.coarse_mask = self.coarse_grid.search_mask(array)

    def map(self, spec: np.ndarray) -> np.ndarray:
        pc = self.coarse.map(spec)
        out = pc[self.owner].astype(np.float32)
        score = np.where(self.coarse_grid.local_maxima(pc) & self.coarse_mask, pc, -np.inf)
        k = min(self.candidates, len(score))
        best = np.argpartition(-score, k - 1)[:k]
        best = best[np.isfinite(score[best])]
        if len(best):
            sel = np.unique(np.concatenate([self.members[b] for b in best]))
            out[sel] = self.coarse.evaluate(None, self.grid.vectors[sel])
        return out

    def evaluate(self, spec: np.ndarray | None, directions: np.ndarray) -> np.ndarray:
        return self.coarse.evaluate(spec, directions)


@register("srp_phat_c2f")
class SrpPhatCoarseToFine(CoarseToFine):
    __doc__ = CoarseToFine.__doc__
    inner_name = "srp_phat"


# --------------------------------------------------------------------------- hybrid


@register("srp_phat_normmusic")
class SrpPhatNormMusic(Beamformer):
    """SRP-PHAT for the map and the strongest source, NormMUSIC for the further ones.

    SRP-PHAT is the most robust single-source estimator in reverberant rooms,
    but with several simultaneous broadband sources the phase of every
    time-frequency bin belongs to the louder one, so a weaker source's peak can
    sink below the louder one's reflections. A subspace method keeps every
    source in its signal subspace whatever their levels. So: the map (and
    :meth:`evaluate`) is SRP-PHAT's and the first source is SRP-PHAT's peak; when
    more sources are asked for, a NormMUSIC map (signal subspace of the number
    of sources asked for, capped at ``M - 1``) provides the others, away from
    the ones already found, and each is kept only if SRP-PHAT there is at least
    ``min_relative_power`` of the first source's.

    Args:
        interp: SRP-PHAT lag oversampling.
        max_bins: frequency bins NormMUSIC uses (evenly spread over the band).
    """

    def __init__(self, array: ArrayGeometry, grid: DirectionGrid, interp: int = 16, max_bins: int | None = 96,
                 **kw) -> None:
        super().__init__(array, grid, **kw)
        self.srp = SrpPhat(array, grid, interp=interp, **kw)
        self.music = NormMusic(array, grid, max_bins=max_bins, **kw)
        self._spec: np.ndarray | None = None

    def map(self, spec: np.ndarray) -> np.ndarray:
        self._spec = spec
        return self.srp.map(spec)

    def evaluate(self, spec: np.ndarray | None, directions: np.ndarray) -> np.ndarray:
        if spec is not None:
            self._spec = spec
        return self.srp.evaluate(spec, directions)

    def find_sources(self, power: np.ndarray, num: int, min_separation_deg: float, min_relative_power: float,
                     refine: bool, mask: np.ndarray | None):
        """Sources strongest first (see the class notes); called by :func:`~avperception.dsp.peaks.find_sources`."""
        from .peaks import find_sources

        first = find_sources(self.srp, None, power, 1, min_separation_deg, min_relative_power, refine, mask)
        if num <= 1 or not first or self._spec is None:
            return first
        self.music.num_sources = int(min(num, self.array.num_mics - 1))
        pm = self.music.map(self._spec)
        cos_sep = np.cos(np.radians(min_separation_deg))
        found = list(first)
        away = np.ones(len(self.grid), bool)
        for s in found:
            away &= self.grid.vectors @ np.asarray(s.vector) < cos_sep
        cands = find_sources(self.music, None, np.where(away, pm, 0.0), num + 2, min_separation_deg, 0.0, refine,
                             None if mask is None else mask & away)
        for c in cands:
            if len(found) >= num:
                break
            v = np.asarray(c.vector)
            if any(v @ np.asarray(s.vector) >= cos_sep for s in found):
                continue
            p = float(self.srp.evaluate(None, v[None])[0])
            if p <= 0 or p < min_relative_power * first[0].power:
                continue
            found.append(type(c)(c.azimuth_deg, c.elevation_deg, p, c.vector))
        return found


# --------------------------------------------------------------------------- reference


def srp_phat_reference(spec: np.ndarray, array: ArrayGeometry, directions: np.ndarray, sample_rate: float,
                       nfft: int, fmin: float, fmax: float, c: float = 343.0) -> np.ndarray:
    """Exact SRP-PHAT ``(n,)`` by brute force (every direction, pair and bin): the ground truth the
    fast lookup is tested against. Slow; for tests and small grids only."""
    freqs = np.fft.rfftfreq(nfft, 1.0 / sample_rate)
    band = (freqs >= fmin) & (freqs <= fmax)
    pairs = mic_pairs(array.num_mics)
    r = phat_cross_spectra(spec, pairs, band)[:, band]  # (P, Fb)
    tau = tdoa(array.centered, pairs, np.asarray(directions, dtype=np.float64), c)  # (n, P)
    ph = np.exp(2j * np.pi * freqs[band][None, None] * tau[..., None])  # (n, P, Fb)
    return (r[None] * ph).real.mean(axis=(1, 2))


__all__ = [
    "BEAMFORMERS", "DEFAULT_LOCALIZE_METHOD", "DEFAULT_METHOD", "Beamformer", "CoarseToFine", "DelayAndSum", "Music", "Mvdr", "NormMusic",
    "PairLagBeamformer", "SrpPhat", "SrpPhatCoarseToFine", "SrpPhatNormMusic", "gcc_from_cross_spectra", "make_beamformer", "register",
    "srp_phat_reference", "steering_vectors", "tdoa",
]
