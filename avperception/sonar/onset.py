"""Ping onsets: where in a recording the robot's sweep left the speaker.

The speaker sits next to the array, so the sweep's direct path is the strongest
arrival of every ping and reaches microphone ``m`` ``|p_m - s| / c * fs``
samples after the onset. :class:`DirectPath` precomputes, per microphone, the
analytic matched filter of the sweep delayed by that much; correlating the
audio with it and summing the envelopes over the microphones gives a *direct
score* that peaks at the onset itself (sample index of the emission, in the
recording's own indices). On it:

- :func:`refine_onset` moves a nominal onset (a Ping message's stamp) to the
  peak within a few samples (sub-sample peak, rounded), or says there is none;
- :func:`detect_onsets` finds every ping of a recording without Ping messages;
- :func:`estimate_output_latency` measures a full-duplex device's round trip
  (what the emitter must add to an output sample index to get the input index
  of the onset).

Scale: a unit copy of the sweep arriving at every microphone gives a score of 1
(the mean envelope over the microphones), so the score reads as the direct
path's peak amplitude.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..constants import SPEED_OF_SOUND

_PRE = 8  # kernel samples before the onset: room for the fractional delay's ringing
_MAINLOBE = 4  # half-width (samples) of the compressed sweep's peak, left out of the noise estimate


@dataclass(frozen=True)
class DirectPath:
    """The sweep's direct path from the speaker to each microphone.

    Attributes:
        emitted: ``(L,)`` the sweep as emitted (any scale).
        delays: ``(M,)`` float samples from the onset to the direct path's arrival at each microphone.
        kernels: ``(M, K)`` complex128 correlation kernels: the analytic sweep delayed by ``delays[m]``
            (kernel index ``i`` is ``i - pre`` samples after the onset), scaled so that a unit copy of
            ``emitted`` gives an envelope peak of 1.
        pre: kernel samples before the onset.
        fs, c: sample rate (Hz) and speed of sound (m/s).
    """

    emitted: np.ndarray
    delays: np.ndarray
    kernels: np.ndarray
    pre: int
    fs: float
    c: float
    _conj_rev: np.ndarray = field(repr=False, compare=False, default=None)

    @classmethod
    def build(cls, emitted: np.ndarray, mic_positions: np.ndarray, speaker_position, fs: float,
              c: float = SPEED_OF_SOUND) -> "DirectPath":
        """Precompute the per-mic direct delays and kernels.

        Args:
            emitted: ``(L,)`` the emitted sweep (e.g. :func:`avperception.dsp.echo.sweep`).
            mic_positions: ``(M, 3)`` metres, array frame.
            speaker_position: ``(3,)`` metres, array frame.
            fs: sample rate (Hz); c: speed of sound (m/s).
        """
        from scipy.signal import hilbert

        e = np.asarray(emitted, dtype=np.float64)
        if e.ndim != 1 or e.size < 2 or not np.any(e):
            raise ValueError("the emitted sweep must be a non-zero 1-D array of at least 2 samples")
        mics = np.asarray(mic_positions, dtype=np.float64)
        if mics.ndim != 2 or mics.shape[1] != 3:
            raise ValueError(f"mic_positions must be (mics, 3) metres, got shape {mics.shape}")
        spk = np.asarray(speaker_position, dtype=np.float64).reshape(-1)
        if spk.shape != (3,):
            raise ValueError(f"speaker_position must be [x, y, z] metres, got {speaker_position!r}")
        if fs <= 0 or c <= 0:
            raise ValueError("fs and c must be positive")
        delays = np.linalg.norm(mics - spk[None], axis=1) / c * fs
        a = hilbert(e) / np.sum(e * e)  # analytic sweep, unit copy -> envelope 1
        k = e.size + int(np.ceil(delays.max())) + 2 * _PRE
        nfft = 1 << int(np.ceil(np.log2(k + 64)))
        f = np.fft.fftfreq(nfft)
        spec = np.fft.fft(a, nfft)[None] * np.exp(-2j * np.pi * f[None] * (delays[:, None] + _PRE))
        kernels = np.fft.ifft(spec, axis=1)[:, :k]  # kernel index i = onset + i - _PRE
        return cls(e, delays, kernels, _PRE, float(fs), float(c), np.conj(kernels[:, ::-1]).copy())

    @classmethod
    def of_bundle(cls, bundle) -> "DirectPath":
        """The direct path of a model bundle's sweep from its speaker to its array."""
        return cls.build(bundle.emitted, bundle.array.positions, bundle.speaker_position, bundle.sample_rate,
                         bundle.speed_of_sound)

    @property
    def num_mics(self) -> int:
        return self.kernels.shape[0]

    @property
    def length(self) -> int:
        """``K``: samples a kernel spans (the sweep, the largest delay and the ringing margins)."""
        return self.kernels.shape[1]

    @property
    def span(self) -> tuple[int, int]:
        """``(before, after)``: the score at onset ``u`` needs audio ``[u - before, u + after)``."""
        return self.pre, self.length - self.pre


def direct_score(audio: np.ndarray, direct: DirectPath) -> np.ndarray:
    """The direct score of ``audio (M, n)``: ``(n - K + 1,)``, entry ``t`` for an onset at sample ``t + pre``.

    The mean over microphones of the matched-filter envelope read at each one's direct delay.
    """
    from scipy.signal import oaconvolve

    x = np.asarray(audio)
    if x.ndim != 2 or x.shape[0] != direct.num_mics:
        raise ValueError(f"expected ({direct.num_mics}, samples) audio for this direct path, got {x.shape}")
    k = direct.length
    if x.shape[1] < k:
        return np.zeros(0)
    y = oaconvolve(x.astype(np.float64, copy=False), direct._conj_rev, mode="valid", axes=1)
    return np.abs(y).mean(axis=0)


def _parabolic(s: np.ndarray, i: int) -> float:
    """Sub-sample position of the peak at ``s[i]`` (parabola through its neighbours)."""
    if 0 < i < len(s) - 1:
        a, b, c = s[i - 1], s[i], s[i + 1]
        den = a - 2 * b + c
        if den < 0:
            return i + float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))
    return float(i)


def _noise_floor(s: np.ndarray, peak: int) -> float:
    """Median of the score away from the peak's main lobe."""
    mask = np.ones(len(s), dtype=bool)
    mask[max(0, peak - _MAINLOBE): peak + _MAINLOBE + 1] = False
    rest = s[mask]
    return float(np.median(rest)) if rest.size else 0.0


def refine_onset(audio: np.ndarray, nominal: int, direct: DirectPath, search: int = 64,
                 min_snr_db: float = 12.0) -> int | None:
    """The onset nearest ``nominal`` (within ``+-search``) at which the direct path peaks.

    Args:
        audio: ``(M, n)`` recording; indices are its own.
        nominal: expected onset sample index within ``audio``.
        direct: the direct path (:meth:`DirectPath.build`).
        search: half-width of the search in samples.
        min_snr_db: the score's peak must stand this far above its median over the search span.
    Returns:
        The onset sample index (sub-sample peak, rounded, within ``nominal +- search``), or ``None`` when
        no direct path stands out (or the search span is not in ``audio``).
    """
    before, after = direct.span
    nominal = int(nominal)
    lo = max(nominal - search, before)
    hi = min(nominal + search, audio.shape[1] - after)  # last onset candidate
    if hi < lo:
        return None
    s = direct_score(audio[:, lo - before: hi + after], direct)  # entry j: onset lo + j
    if s.size == 0:
        return None
    i = int(np.argmax(s))
    floor = _noise_floor(s, i)
    if not s[i] > 0 or (floor > 0 and 20 * np.log10(s[i] / floor) < min_snr_db):
        return None
    u = lo + int(np.round(_parabolic(s, i)))
    return int(np.clip(u, nominal - search, nominal + search))


def pick_onsets(score: np.ndarray, floor: float, threshold_db: float, min_spacing: int,
                reference: float | None = None, within_db: float = 12.0) -> list[int]:
    """Peaks of a direct score ``(n,)`` at least ``threshold_db`` above ``floor`` and at most ``within_db`` below
    ``reference`` (default: the strongest peak here), at least ``min_spacing`` apart (the stronger one wins):
    sub-sample positions rounded, in score indices, ascending.

    The robot's own pings reach the microphones at one level, well above any other sound that resembles the
    sweep (another robot's chirps, a bird): those stay below ``reference - within_db`` and are not pings.
    """
    s = np.asarray(score, dtype=np.float64)
    if s.size < 3:
        return []
    level = max(floor, 1e-12) * 10 ** (threshold_db / 20)
    inner = s[1:-1]
    cand = np.flatnonzero((inner >= s[:-2]) & (inner > s[2:]) & (inner > level)) + 1
    if cand.size == 0:
        return []
    ref = float(s[cand].max()) if reference is None else max(float(reference), 1e-12)
    cand = cand[s[cand] >= ref * 10 ** (-within_db / 20)]
    if cand.size == 0:
        return []
    order = cand[np.argsort(-s[cand], kind="stable")]
    kept: list[int] = []
    for i in order:  # few candidates: the peaks of pings and of their strongest echoes
        if all(abs(i - j) >= min_spacing for j in kept):
            kept.append(int(i))
    return sorted(int(np.round(_parabolic(s, i))) for i in kept)


def detect_onsets(audio: np.ndarray, direct: DirectPath, min_spacing: int, threshold_db: float = 20.0,
                  floor: float | None = None) -> list[int]:
    """Onsets of every ping in ``audio (M, n)`` (no Ping messages needed).

    Args:
        min_spacing: samples between two pings at least (e.g. half the ping period); of two peaks closer
            than that the stronger one, the direct path, is kept.
        threshold_db: a ping's score must stand this far above the noise floor.
        floor: the noise floor of the score; default its median over ``audio``.
    Returns:
        Ascending onset sample indices within ``audio``.
    """
    s = direct_score(audio, direct)
    if s.size == 0:
        return []
    f = float(np.median(s)) if floor is None else float(floor)
    return [i + direct.pre for i in pick_onsets(s, f, threshold_db, max(1, int(min_spacing)))]


def estimate_output_latency(recording: np.ndarray, played_onsets, direct: DirectPath,
                            max_latency: int | None = None, search: int = 8, min_snr_db: float = 12.0,
                            min_found: float = 0.5) -> tuple[float, float]:
    """A full-duplex stream's round trip: input index of a sweep's onset minus its output index.

    The sweep was written to the output at sample indices ``played_onsets`` of a full-duplex stream whose
    input is ``recording (M, n)`` (both counters start together). The recording shows each direct path
    later by the output latency + the input latency + its acoustic delay; the acoustic part is known
    (``direct``), so what is left is the fixed latency the emitter adds to its output indices.

    The scores after all pings are summed to find the common latency (robust to a weak speaker), then
    each ping is refined near it (``+-search``).

    Args:
        max_latency: longest latency considered (samples); default the shortest spacing of the pings
            less the kernel (a latency longer than the ping period is ambiguous).
        min_found: fraction of the pings in which the direct path must be found.
    Returns:
        ``(latency_samples, spread)``: the median over the pings and their standard deviation (samples).
    Raises:
        RuntimeError: when the direct path is not found in enough pings (speaker muted or too quiet, wrong
            device, microphones not recording the speaker).
    """
    x = np.asarray(recording)
    played = np.sort(np.asarray(list(played_onsets), dtype=np.int64))
    before, after = direct.span
    if played.size == 0:
        raise ValueError("no pings were played")
    if max_latency is None:
        gaps = np.diff(played)
        max_latency = int(gaps.min()) - direct.length if gaps.size else x.shape[1] - int(played[0]) - after
    max_latency = int(max_latency)
    if max_latency <= 0:
        raise ValueError("max_latency must be positive: play the pings further apart")
    s = direct_score(x, direct)  # entry t: onset t + pre
    usable = played[played + max_latency + 1 <= len(s) + before]
    usable = usable[usable - before >= 0]
    if usable.size == 0:
        raise RuntimeError("the recording is too short for the played pings: record longer")
    rows = usable[:, None] - before + np.arange(max_latency + 1)[None]
    total = s[rows].sum(axis=0)  # (max_latency + 1,): summed score per candidate latency
    lat0 = int(np.argmax(total))
    lags = []
    for p in usable:
        u = refine_onset(x, int(p) + lat0, direct, search=search, min_snr_db=min_snr_db)
        if u is not None:
            # sub-sample position for the median: the parabola around the rounded peak
            seg = direct_score(x[:, u - 1 - before: u + 2 + after - 1], direct) if u - 1 - before >= 0 else None
            frac = _parabolic(seg, 1) - 1 if seg is not None and seg.size == 3 else 0.0
            lags.append(u + frac - int(p))
    need = max(2, int(np.ceil(min_found * usable.size))) if usable.size > 1 else 1
    if len(lags) < need:
        raise RuntimeError(
            f"the sweep's direct path was found in {len(lags)} of {usable.size} pings: is the speaker on, loud "
            "enough and next to the microphones, and are input and output the same device? Raise the sweep "
            "gain or check the output device")
    lags = np.asarray(lags)
    return float(np.median(lags)), float(np.std(lags))
