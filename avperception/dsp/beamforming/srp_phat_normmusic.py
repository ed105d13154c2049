"""``srp_phat_normmusic``: SRP-PHAT's map and strongest source, NormMUSIC for further sources."""

from __future__ import annotations

import numpy as np

from ...config import ArrayGeometry
from ..grid import DirectionGrid
from .base import Beamformer
from .music import NormMusic
from .srp_phat import SrpPhat


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
        **common: the band settings of :class:`~avperception.dsp.beamforming.base.Beamformer`.
    """

    name = "srp_phat_normmusic"
    options = ("interp", "max_bins")

    def __init__(self, array: ArrayGeometry, grid: DirectionGrid, *, interp: int = 16, max_bins: int | None = 96,
                 **common) -> None:
        super().__init__(array, grid, **common)
        self.srp = SrpPhat(array, grid, interp=interp, **common)
        self.music = NormMusic(array, grid, max_bins=max_bins, **common)
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
        from ..peaks import find_sources

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
