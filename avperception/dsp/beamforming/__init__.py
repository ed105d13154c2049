"""Beamformers over a :class:`~avperception.dsp.grid.DirectionGrid`, in a registry.

Every beamformer is built once for an array, a grid and an STFT size (all
steering tables are precomputed then) and maps an STFT block to one power
value per grid direction::

    bf = make_beamformer("srp_phat", array, grid, sample_rate=16000, nfft=512)
    power = bf.map(spec)            # spec: (mics, nfft // 2 + 1, frames) -> (G,)

``bf.evaluate(spec, directions)`` scores arbitrary directions (used for
coarse-to-fine refinement of peaks); ``bf.evaluate(None, directions)`` reuses
the statistics of the last ``map()`` call.

One module per method (``BEAMFORMERS``; ``avperception info`` lists them):

``srp_phat`` (:mod:`.srp_phat`)
    Steered response power with phase transform, by lookup in pairwise
    GCC-PHAT at interpolated lags (:mod:`.pair_lag`). The fastest and, in
    reverberant rooms, the most accurate; the default.
``srp_phat_c2f`` (:mod:`.coarse_to_fine`)
    The same on a coarse sub-grid first, then only the fine directions around
    the best coarse candidates (for very fine grids).
``das`` (:mod:`.das`)
    Frequency-domain delay-and-sum (conventional) beamformer power, through the
    same pairwise lookup without the phase transform.
``mvdr`` (:mod:`.mvdr`)
    Minimum-variance distortionless response (Capon), per frequency, with
    diagonal loading, summed over the band (covariance machinery:
    :mod:`.narrowband`).
``music`` / ``normmusic`` (:mod:`.music`)
    MUSIC pseudo-spectrum per frequency (signal subspace from the covariance
    eigenvectors), summed over the band; ``normmusic`` normalises each
    frequency's pseudo-spectrum to a maximum of 1 first.
``srp_phat_normmusic`` (:mod:`.srp_phat_normmusic`)
    SRP-PHAT's map and strongest source, NormMUSIC for further sources: the
    most accurate with several simultaneous sources (``avperception localize``
    uses it).

All take the keyword arguments ``sample_rate``, ``nfft``, ``fmin``, ``fmax``
and ``speed_of_sound`` (``COMMON_OPTIONS``, defaults on
:class:`~.base.Beamformer`); each class lists its own in ``options`` and
declares them in its constructor. :func:`make_beamformer` refuses an option
the method does not take, naming the ones it does.
"""

from __future__ import annotations

from typing import Callable

from ...config import ArrayGeometry
from ..gcc import gcc_from_cross_spectra
from ..grid import DirectionGrid
from .base import COMMON_OPTIONS, Beamformer, steering_vectors, tdoa
from .coarse_to_fine import CoarseToFine, SrpPhatCoarseToFine
from .das import DelayAndSum
from .music import Music, NormMusic
from .mvdr import Mvdr
from .narrowband import NarrowbandBeamformer
from .pair_lag import PairLagBeamformer
from .srp_phat import SrpPhat, srp_phat_reference
from .srp_phat_normmusic import SrpPhatNormMusic

#: registered methods by name
BEAMFORMERS: dict[str, type[Beamformer]] = {
    cls.name: cls for cls in (SrpPhat, DelayAndSum, Mvdr, Music, NormMusic, SrpPhatCoarseToFine, SrpPhatNormMusic)
}

#: the method the streaming pipeline uses unless told otherwise (fastest, robust)
DEFAULT_METHOD = "srp_phat"
#: the method offline localisation (``avperception localize``) uses unless told otherwise (most accurate)
DEFAULT_LOCALIZE_METHOD = "srp_phat_normmusic"


def register(name: str) -> Callable[[type[Beamformer]], type[Beamformer]]:
    """Class decorator adding a :class:`Beamformer` subclass to ``BEAMFORMERS`` as ``name``."""

    def deco(cls: type[Beamformer]) -> type[Beamformer]:
        BEAMFORMERS[name] = cls
        cls.name = name
        return cls

    return deco


def make_beamformer(name: str, array: ArrayGeometry, grid: DirectionGrid, **settings) -> Beamformer:
    """Build the beamformer registered as ``name``.

    Args:
        name: a key of ``BEAMFORMERS``.
        array, grid: the microphones and the directions to scan.
        **settings: ``COMMON_OPTIONS`` (``sample_rate``, ``nfft``, ``fmin``, ``fmax``,
            ``speed_of_sound``) and the method's own ``options`` (e.g. ``interp`` for
            ``srp_phat``, ``diagonal_loading`` for ``mvdr``); omitted ones take the class defaults.

    Raises:
        ValueError: unknown method.
        TypeError: a setting the method does not take.
    """
    if name not in BEAMFORMERS:
        raise ValueError(f"unknown beamformer {name!r}; available: {', '.join(sorted(BEAMFORMERS))}")
    cls = BEAMFORMERS[name]
    unknown = sorted(set(settings) - set(COMMON_OPTIONS) - set(cls.options))
    if unknown:
        own = ", ".join(cls.options) or "none"
        raise TypeError(f"beamformer {name!r} takes no {', '.join(unknown)}; its own options: {own}; "
                        f"every method takes: {', '.join(COMMON_OPTIONS)}")
    return cls(array, grid, **settings)


__all__ = [
    "BEAMFORMERS", "COMMON_OPTIONS", "DEFAULT_LOCALIZE_METHOD", "DEFAULT_METHOD", "Beamformer", "CoarseToFine",
    "DelayAndSum", "Music", "Mvdr", "NarrowbandBeamformer", "NormMusic", "PairLagBeamformer", "SrpPhat",
    "SrpPhatCoarseToFine", "SrpPhatNormMusic", "gcc_from_cross_spectra", "make_beamformer", "register",
    "srp_phat_reference", "steering_vectors", "tdoa",
]
