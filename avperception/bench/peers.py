"""Other libraries' DOA / beamforming methods, wrapped to run on our inputs and grids.

* pyroomacoustics (``pra.doa.algorithms``): SRP, MUSIC, NormMUSIC, TOPS, ... on a
  ``GridSphere`` holding exactly our grid's directions (a ``GridCircle`` for
  horizon-only grids), with the mode-vector table precomputed (its fastest
  setting).
* acoular: ``BeamformerBase`` (frequency-domain delay-and-sum) on the same
  cross-spectral matrices, with far-field focus points 100 m away along our
  grid's directions. Result caching is switched off.

Both are optional: :func:`available` says which can be imported.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..config import ArrayGeometry
from ..constants import SPEED_OF_SOUND
from ..dsp.gcc import band_covariance
from ..dsp.grid import DirectionGrid


def available() -> dict[str, str | None]:
    """``{"pyroomacoustics": version or None, "acoular": version or None}``."""
    out: dict[str, str | None] = {}
    for mod in ("pyroomacoustics", "acoular"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = __import__(mod)
            out[mod] = str(getattr(m, "__version__", "?"))
        except Exception:  # noqa: BLE001 - any import failure means "not available"
            out[mod] = None
    return out


def _is_horizon(grid: DirectionGrid) -> bool:
    return bool(np.all(np.abs(grid.vectors[:, 2]) < 1e-9))


class PraMethod:
    """A pyroomacoustics DOA algorithm on our array and grid.

    Args:
        method: key of ``pra.doa.algorithms`` (``SRP``, ``MUSIC``, ``NormMUSIC``, ``TOPS``, ``CSSM``, ``WAVES``).
        num_src: sources to look for.
        precompute: precompute the mode-vector table (pyroomacoustics' fastest mode; it
            needs ``F * M * G * 16`` bytes).
    """

    def __init__(self, method: str, array: ArrayGeometry, grid: DirectionGrid, sample_rate: int = 16000,
                 nfft: int = 512, fmin: float = 300.0, fmax: float = 6000.0, c: float = SPEED_OF_SOUND,
                 num_src: int = 1, precompute: bool = True) -> None:
        import pyroomacoustics as pra
        from pyroomacoustics.doa.doa import ModeVector
        from pyroomacoustics.doa.grid import GridCircle, GridSphere

        self.method = method
        self.grid = grid
        self.freq_range = [float(fmin), float(fmax)]
        L = array.centered.T.copy()
        self.horizon = _is_horizon(grid)
        cls = pra.doa.algorithms[method]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.horizon:
                az = np.arctan2(grid.vectors[:, 1], grid.vectors[:, 0])
                self.doa = cls(L, sample_rate, nfft, c=c, num_src=num_src, dim=2, azimuth=az)
                pgrid = GridCircle(azimuth=az)
            else:
                self.doa = cls(L, sample_rate, nfft, c=c, num_src=num_src, dim=3, n_grid=32)
                pgrid = GridSphere(cartesian_points=grid.vectors.T.copy())
        self.doa.grid = pgrid
        self.doa.mode_vec = ModeVector(L, sample_rate, nfft, c, pgrid, precompute=precompute)
        # pyroomacoustics orders a GridCircle by azimuth: map its points back to ours
        self.order = np.argsort(np.arctan2(grid.vectors[:, 1], grid.vectors[:, 0])) if self.horizon else None
        self._num_src = num_src

    def locate(self, X: np.ndarray, num_src: int | None = None) -> np.ndarray:
        """Run ``locate_sources``; return ``(k, 3)`` unit vectors of the sources found."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.doa.locate_sources(np.asarray(X, dtype=np.complex128), num_src=num_src or self._num_src,
                                    freq_range=self.freq_range)
        az = np.atleast_1d(self.doa.azimuth_recon)
        if self.horizon or self.doa.colatitude_recon is None:
            col = np.full_like(az, np.pi / 2)
        else:
            col = np.atleast_1d(self.doa.colatitude_recon)
        v = np.stack([np.sin(col) * np.cos(az), np.sin(col) * np.sin(az), np.cos(col)], axis=-1)
        return v.reshape(-1, 3)

    def map(self, X: np.ndarray) -> np.ndarray:
        """The method's spatial spectrum on our grid ``(G,)`` (its ``_process`` step only, no peak search)."""
        d = self.doa
        if d.freq_bins is None:  # first call: let locate_sources set the band and sizes up
            self.locate(X)
        d.num_snap = X.shape[2]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d.grid.set_values(0.0)
            d._process(np.asarray(X, dtype=np.complex128))
        v = np.asarray(d.grid.values, dtype=np.float64)
        if self.order is not None:
            out = np.empty_like(v)
            out[self.order] = v
            v = out
        return v


class AcoularBase:
    """acoular's ``BeamformerBase`` (delay-and-sum, ``classic`` steering) on our grid.

    The cross-spectral matrices of the band are computed from the same STFT
    with :func:`~avperception.dsp.gcc.band_covariance` (PHAT-weighted by
    default, so the map is comparable to SRP-PHAT) and injected through
    ``PowerSpectraImport``; :meth:`map` times only acoular's beamforming and
    sums it over the band's bins.
    """

    def __init__(self, array: ArrayGeometry, grid: DirectionGrid, sample_rate: int = 16000, nfft: int = 512,
                 fmin: float = 300.0, fmax: float = 6000.0, c: float = SPEED_OF_SOUND, phat: bool = True,
                 precision: str = "float32") -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import acoular as ac
        ac.config.global_caching = "none"
        self.ac = ac
        freqs = np.fft.rfftfreq(nfft, 1.0 / sample_rate)
        self.bins = np.flatnonzero((freqs >= fmin) & (freqs <= fmax))
        self.freqs = freqs[self.bins]
        self.phat = phat
        self.precision = precision
        mics = ac.MicGeom(pos_total=array.centered.T.copy())
        pts = ac.ImportGrid(pos=(grid.vectors * 100.0).T.copy())
        self.steer = ac.SteeringVector(grid=pts, mics=mics, steer_type="classic", ref=np.zeros(3),
                                       env=ac.Environment(c=c))

    def csm(self, X: np.ndarray) -> np.ndarray:
        return band_covariance(X, self.bins, phat=self.phat).astype(np.complex128)

    def map_from_csm(self, csm: np.ndarray) -> np.ndarray:
        ac = self.ac
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ps = ac.PowerSpectraImport(csm=csm, frequencies=self.freqs)
            bf = ac.BeamformerBase(freq_data=ps, steer=self.steer, r_diag=False, precision=self.precision)
            res = np.asarray(bf.result[:])
        return res.sum(axis=0)

    def map(self, X: np.ndarray) -> np.ndarray:
        return self.map_from_csm(self.csm(X))
