"""``srp_phat_c2f``: a method on a coarse sub-grid first, then only the fine directions near its best peaks."""

from __future__ import annotations

import numpy as np

from ...config import ArrayGeometry
from ..grid import DirectionGrid, icosphere
from .base import Beamformer

#: coarse peaks refined per frame
CANDIDATES = 4
#: coarse grid spacing over fine grid spacing
COARSE_FACTOR = 4.0


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
        inner_options: the inner method's own keyword arguments (its ``options``).
        **common: the band settings of :class:`~avperception.dsp.beamforming.base.Beamformer`,
            used by the inner method too.
    """

    name = "coarse_to_fine"
    options = ("inner", "candidates", "coarse_factor", "inner_options")

    def __init__(self, array: ArrayGeometry, grid: DirectionGrid, *, inner: str = "srp_phat",
                 candidates: int = CANDIDATES, coarse_factor: float = COARSE_FACTOR,
                 inner_options: dict | None = None, **common) -> None:
        from scipy.spatial import cKDTree

        from . import make_beamformer  # the registry imports this module: look the inner method up at call time

        super().__init__(array, grid, **common)
        self.inner_name = inner
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
        self.coarse = make_beamformer(inner, array, self.coarse_grid, **common, **(inner_options or {}))
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


class SrpPhatCoarseToFine(CoarseToFine):
    """:class:`CoarseToFine` around SRP-PHAT (:class:`~avperception.dsp.beamforming.srp_phat.SrpPhat`).

    Args:
        interp: SRP-PHAT's lag oversampling (None: SRP-PHAT's default).
        candidates: coarse peaks to refine.
        coarse_factor: coarse spacing over fine spacing.
        **common: the band settings of :class:`~avperception.dsp.beamforming.base.Beamformer`.
    """

    name = "srp_phat_c2f"
    options = ("interp", "candidates", "coarse_factor")

    def __init__(self, array: ArrayGeometry, grid: DirectionGrid, *, interp: int | None = None,
                 candidates: int = CANDIDATES, coarse_factor: float = COARSE_FACTOR, **common) -> None:
        super().__init__(array, grid, inner="srp_phat", candidates=candidates, coarse_factor=coarse_factor,
                         inner_options={} if interp is None else {"interp": interp}, **common)
