"""Network input features in torch: STFT, magnitude / phase, log-mel, MFCC and GCC-PHAT stacks.

One implementation for every place a network runs: the same functions run on
CPU and CUDA tensors and export to ONNX (opset 17) as plain convolutions,
matrix products and element-wise ops, so a feature computed in training, in an
ONNX graph and on a robot is the same feature. Everything is real-valued
(complex spectra travel as a ``(real, imag)`` pair): ONNX has no complex type.

Functional core (torchaudio-like) plus thin ``nn.Module`` wrappers that hold
the precomputed bases as buffers (so ``.to("cuda")`` moves them)::

    fe = FeatureFrontEnd(FeatureSpec(sample_rate=16000, nfft=512, hop=256, n_mels=64), num_mics=8)
    feats = fe(audio)            # audio (batch, mics, samples) -> dict of tensors

Conventions match the numpy reference path (:func:`avperception.dsp.stft.stft`):
frames are not padded (``T = 1 + (samples - nfft) // hop``), a periodic window,
``X_k = sum_n w_n x_n exp(-2j pi k n / nfft)``. Mel filters are Slaney-style
(HTK optional), log is natural log, MFCC is the orthonormal DCT-II of the
log-mel energies (``scipy.fft.dct(type=2, norm="ortho")``).

Numpy builders of the bases (:func:`mel_filterbank`, :func:`dct_matrix`,
:func:`stft_basis`, :func:`lag_basis`) are shared with the numpy features
(:mod:`avperception.dsp.acoustic_image`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..constants import SPEED_OF_SOUND
from .gcc import mic_pairs
from .stft import window as np_window

# --------------------------------------------------------------------------- numpy bases


def hz_to_mel(f: np.ndarray | float, htk: bool = False) -> np.ndarray:
    """Mel scale: HTK ``2595 log10(1 + f / 700)`` or Slaney (linear below 1 kHz, log above)."""
    f = np.asarray(f, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    f_sp = 200.0 / 3
    mel = f / f_sp
    brk = 1000.0 / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(f >= 1000.0, brk + np.log(np.maximum(f, 1e-12) / 1000.0) / logstep, mel)


def mel_to_hz(m: np.ndarray | float, htk: bool = False) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(m, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    brk = 1000.0 / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= brk, 1000.0 * np.exp(logstep * (m - brk)), f_sp * m)


def mel_filterbank(n_mels: int, nfft: int, sample_rate: float, fmin: float = 0.0, fmax: float | None = None,
                   htk: bool = False, norm: str | None = "slaney") -> np.ndarray:
    """Triangular mel filters ``(n_mels, nfft // 2 + 1)`` float32.

    ``norm="slaney"`` scales each filter to unit area (constant energy per
    band); ``None`` leaves peak height 1.
    """
    fmax = sample_rate / 2 if fmax is None else fmax
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= sample_rate / 2, got {fmin}, {fmax}")
    freqs = np.fft.rfftfreq(nfft, 1.0 / sample_rate)
    pts = mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2), htk)
    lower = (freqs[None] - pts[:-2, None]) / np.maximum(pts[1:-1] - pts[:-2], 1e-12)[:, None]
    upper = (pts[2:, None] - freqs[None]) / np.maximum(pts[2:] - pts[1:-1], 1e-12)[:, None]
    fb = np.maximum(0.0, np.minimum(lower, upper))
    if norm == "slaney":
        fb *= (2.0 / (pts[2:] - pts[:-2]))[:, None]
    elif norm is not None:
        raise ValueError(f"norm must be 'slaney' or None, got {norm!r}")
    return fb.astype(np.float32)


def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Orthonormal DCT-II ``(n_out, n_in)``: ``dct_matrix(k, n) @ x == scipy.fft.dct(x, norm="ortho")[:k]``."""
    n = np.arange(n_in)
    k = np.arange(n_out)[:, None]
    m = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float32)


def stft_basis(nfft: int, window: str = "hann") -> np.ndarray:
    """Windowed DFT kernels ``(2 F, 1, nfft)`` float32: rows ``w cos`` then ``-w sin`` for ``F = nfft // 2 + 1`` bins."""
    n = np.arange(nfft)
    k = np.arange(nfft // 2 + 1)[:, None]
    ph = 2 * np.pi * k * n / nfft
    w = np_window(window, nfft).astype(np.float64)
    return np.concatenate([np.cos(ph) * w, -np.sin(ph) * w])[:, None, :].astype(np.float32)


def lag_basis(nfft: int, bins: np.ndarray, lags: np.ndarray, interp: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(cos, sin)`` matrices ``(Fb, L)`` that take band cross-spectra to correlations at ``lags / interp`` samples.

    ``cc[l] = mean_k (Re r_k cos - Im r_k sin)`` is the GCC at that lag, in the
    sign convention of :func:`avperception.dsp.gcc.gcc_from_cross_spectra`.
    """
    ph = 2 * np.pi * np.outer(np.asarray(bins, float), np.asarray(lags, float)) / (nfft * interp)
    scale = 1.0 / max(len(bins), 1)
    return (np.cos(ph) * scale).astype(np.float32), (np.sin(ph) * scale).astype(np.float32)


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class FeatureSpec:
    """Settings of the feature front-end (travel with a trained model).

    Attributes:
        gcc_max_lag_samples: GCC lags kept, +- this many samples (None: from the
            array aperture when given, else 16).
        gcc_interp: lag oversampling of the GCC stack.
    """

    sample_rate: int = 16000
    nfft: int = 512
    hop: int = 256
    window: str = "hann"
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float | None = None
    htk: bool = False
    n_mfcc: int = 20
    log_eps: float = 1e-6
    gcc_fmin: float = 300.0
    gcc_fmax: float | None = None
    gcc_max_lag_samples: float | None = None
    gcc_interp: int = 2

    def validate(self) -> "FeatureSpec":
        if self.nfft < 16 or self.nfft & (self.nfft - 1):
            raise ValueError(f"nfft must be a power of two >= 16, got {self.nfft}")
        if not 0 < self.hop <= self.nfft:
            raise ValueError(f"hop must be in (0, nfft], got {self.hop}")
        if not 0 < self.n_mfcc <= self.n_mels:
            raise ValueError(f"need 0 < n_mfcc <= n_mels, got {self.n_mfcc}, {self.n_mels}")
        return self


# --------------------------------------------------------------------------- torch functional core


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover
        raise ImportError("the feature front-end needs torch (pip install torch)") from e
    return torch


def num_frames(samples: int, nfft: int, hop: int) -> int:
    return 0 if samples < nfft else 1 + (samples - nfft) // hop


def stft(x, basis, hop: int):
    """STFT of ``x`` ``(..., samples)`` with a :func:`stft_basis` tensor ``(2F, 1, nfft)``, no padding.

    Returns:
        ``(real, imag)``, each ``(..., F, T)`` with ``T = 1 + (samples - nfft) // hop``.
    """
    torch = _torch()
    lead = x.shape[:-1]
    y = torch.nn.functional.conv1d(x.reshape(-1, 1, x.shape[-1]), basis, stride=hop)  # (B, 2F, T)
    f = basis.shape[0] // 2
    y = y.reshape(lead + (2 * f, y.shape[-1]))
    return y[..., :f, :], y[..., f:, :]


def stft_fft(x, window, hop: int):
    """The same STFT by framing and ``torch.fft.rfft`` (faster on CPU; not exportable to ONNX).

    Args:
        x: ``(..., samples)``; window: ``(nfft,)`` tensor.
    """
    torch = _torch()
    frames = x.unfold(-1, window.shape[0], hop) * window  # (..., T, nfft)
    spec = torch.fft.rfft(frames, dim=-1).transpose(-1, -2)  # (..., F, T)
    return spec.real, spec.imag


def power(re, im):
    """``|X|^2``."""
    return re * re + im * im


def magnitude(re, im, eps: float = 0.0):
    """``|X|`` (``eps`` inside the square root keeps the gradient finite at 0)."""
    torch = _torch()
    return torch.sqrt(re * re + im * im + eps)


def phase(re, im):
    """``angle(X)`` in ``(-pi, pi]``."""
    torch = _torch()
    return torch.atan2(im, re)


def log_mel(pw, fb, eps: float = 1e-6):
    """Natural-log mel energies ``log(fb @ |X|^2 + eps)``: ``(..., F, T)`` -> ``(..., n_mels, T)``."""
    torch = _torch()
    return torch.log(torch.matmul(fb, pw) + eps)


def mfcc(logmel, dct):
    """MFCC ``(..., n_mfcc, T)`` from log-mel ``(..., n_mels, T)`` and a :func:`dct_matrix` tensor."""
    torch = _torch()
    return torch.matmul(dct, logmel)


def gcc_phat(re, im, pairs, cos, sin, eps: float = 1e-8):
    """Per-frame GCC-PHAT stack.

    Args:
        re, im: ``(..., mics, Fb, T)`` band STFT.
        pairs: ``(P, 2)`` long tensor of microphone pairs ``(p, q)``.
        cos, sin: ``(Fb, L)`` :func:`lag_basis` tensors.
    Returns:
        ``(..., P, L, T)``: for each pair and frame the phase-transformed
        cross-correlation at the basis' lags (1 = perfectly coherent), positive
        lags meaning mic ``q`` hears the sound later.
    """
    torch = _torch()
    # phase transform per channel: |X_q X_p^*| = |X_q| |X_p|, so whitening M channels replaces P normalisations
    n = torch.rsqrt(re * re + im * im + eps * eps)
    wr, wi = re * n, im * n
    pr, pi = wr.index_select(-3, pairs[:, 0]), wi.index_select(-3, pairs[:, 0])
    qr, qi = wr.index_select(-3, pairs[:, 1]), wi.index_select(-3, pairs[:, 1])
    cr = qr * pr + qi * pi  # Re(X_q X_p^*) / |X_q X_p^*|
    ci = qi * pr - qr * pi  # Im(...)
    # (L, Fb) @ (..., P, Fb, T) -> (..., P, L, T)
    return torch.matmul(cos.transpose(0, 1), cr) - torch.matmul(sin.transpose(0, 1), ci)


# --------------------------------------------------------------------------- modules


def _module_classes():
    torch = _torch()
    nn = torch.nn

    class Stft(nn.Module):
        """``(..., samples)`` -> ``(real, imag)`` each ``(..., F, T)`` (no padding, periodic window).

        Runs as framing + FFT; inside ``torch.onnx.export`` it switches to the
        equivalent windowed-DFT convolution (ONNX has no complex FFT output).
        """

        def __init__(self, nfft: int = 512, hop: int = 256, window: str = "hann") -> None:
            super().__init__()
            self.nfft, self.hop = int(nfft), int(hop)
            self.register_buffer("basis", torch.from_numpy(stft_basis(nfft, window)))
            self.register_buffer("window", torch.from_numpy(np_window(window, nfft).copy()))
            self.use_fft = True  # FFT when running, DFT-as-convolution inside an ONNX export

        def forward(self, x):
            if self.use_fft and not torch.onnx.is_in_onnx_export():
                return stft_fft(x, self.window, self.hop)
            return stft(x, self.basis, self.hop)

    class LogMel(nn.Module):
        """``(..., samples)`` -> natural-log mel energies ``(..., n_mels, T)``."""

        def __init__(self, sample_rate: int = 16000, nfft: int = 512, hop: int = 256, n_mels: int = 64,
                     fmin: float = 50.0, fmax: float | None = None, window: str = "hann", htk: bool = False,
                     eps: float = 1e-6) -> None:
            super().__init__()
            self.stft = Stft(nfft, hop, window)
            self.eps = float(eps)
            self.register_buffer("fb", torch.from_numpy(mel_filterbank(n_mels, nfft, sample_rate, fmin, fmax, htk)))

        def forward(self, x):
            re, im = self.stft(x)
            return log_mel(power(re, im), self.fb, self.eps)

    class Mfcc(nn.Module):
        """``(..., samples)`` -> MFCC ``(..., n_mfcc, T)``."""

        def __init__(self, n_mfcc: int = 20, **logmel_kwargs) -> None:
            super().__init__()
            self.logmel = LogMel(**logmel_kwargs)
            self.register_buffer("dct", torch.from_numpy(dct_matrix(n_mfcc, self.logmel.fb.shape[0])))

        def forward(self, x):
            return mfcc(self.logmel(x), self.dct)

    class GccPhat(nn.Module):
        """``(..., mics, samples)`` -> GCC-PHAT stack ``(..., P, L, T)`` over all microphone pairs."""

        def __init__(self, num_mics: int, sample_rate: int = 16000, nfft: int = 512, hop: int = 256,
                     max_lag_samples: float = 16.0, interp: int = 2, fmin: float = 300.0, fmax: float | None = None,
                     window: str = "hann") -> None:
            super().__init__()
            self.stft = Stft(nfft, hop, window)
            freqs = np.fft.rfftfreq(nfft, 1.0 / sample_rate)
            fmax = sample_rate / 2 if fmax is None else fmax
            bins = np.flatnonzero((freqs >= fmin) & (freqs <= fmax))
            self.lo, self.hi = int(bins[0]), int(bins[-1]) + 1
            m = int(np.ceil(max_lag_samples * interp))
            self.lags = np.arange(-m, m + 1)
            c, s = lag_basis(nfft, bins, self.lags, interp)
            self.register_buffer("cos", torch.from_numpy(c))
            self.register_buffer("sin", torch.from_numpy(s))
            self.register_buffer("pairs", torch.from_numpy(mic_pairs(num_mics).astype(np.int64)))

        def forward(self, x):
            re, im = self.stft(x)
            return gcc_phat(re[..., self.lo:self.hi, :], im[..., self.lo:self.hi, :], self.pairs, self.cos, self.sin)

    class FeatureFrontEnd(nn.Module):
        """Every feature of a multichannel block at once, sharing one STFT.

        ``forward(audio)`` with audio ``(batch, mics, samples)`` returns a dict:
        ``stft_mag`` / ``stft_phase`` ``(batch, mics, F, T)``, ``logmel``
        ``(batch, mics, n_mels, T)``, ``mfcc`` ``(batch, mics, n_mfcc, T)`` and
        ``gcc`` ``(batch, P, L, T)``. :meth:`stacked` concatenates chosen ones
        along the channel axis for a CNN.
        """

        def __init__(self, spec: FeatureSpec | None = None, num_mics: int = 4, aperture_m: float | None = None,
                     speed_of_sound: float = SPEED_OF_SOUND) -> None:
            super().__init__()
            s = (spec or FeatureSpec()).validate()
            self.spec, self.num_mics = s, int(num_mics)
            self.stft = Stft(s.nfft, s.hop, s.window)
            self.register_buffer("fb", torch.from_numpy(mel_filterbank(s.n_mels, s.nfft, s.sample_rate, s.fmin, s.fmax, s.htk)))
            self.register_buffer("dct", torch.from_numpy(dct_matrix(s.n_mfcc, s.n_mels)))
            max_lag = s.gcc_max_lag_samples
            if max_lag is None:
                max_lag = aperture_m / speed_of_sound * s.sample_rate + 1 if aperture_m else 16.0
            freqs = np.fft.rfftfreq(s.nfft, 1.0 / s.sample_rate)
            gmax = s.sample_rate / 2 if s.gcc_fmax is None else s.gcc_fmax
            bins = np.flatnonzero((freqs >= s.gcc_fmin) & (freqs <= gmax))
            self.lo, self.hi = int(bins[0]), int(bins[-1]) + 1
            m = int(np.ceil(max_lag * s.gcc_interp))
            c, sn = lag_basis(s.nfft, bins, np.arange(-m, m + 1), s.gcc_interp)
            self.register_buffer("cos", torch.from_numpy(c))
            self.register_buffer("sin", torch.from_numpy(sn))
            self.register_buffer("pairs", torch.from_numpy(mic_pairs(num_mics).astype(np.int64)))

        def forward(self, audio):
            re, im = self.stft(audio)
            pw = power(re, im)
            lm = log_mel(pw, self.fb, self.spec.log_eps)
            out = {
                "stft_mag": torch.sqrt(pw),
                "stft_phase": phase(re, im),
                "logmel": lm,
                "mfcc": mfcc(lm, self.dct),
            }
            if self.num_mics > 1:
                out["gcc"] = gcc_phat(re[..., self.lo:self.hi, :], im[..., self.lo:self.hi, :], self.pairs,
                                      self.cos, self.sin)
            return out

        def stacked(self, audio, keys: tuple[str, ...] = ("logmel",)):
            """Chosen features as one ``(batch, channels, rows, T)`` tensor (rows must agree)."""
            f = self.forward(audio)
            return torch.cat([f[k] for k in keys], dim=1)

    return Stft, LogMel, Mfcc, GccPhat, FeatureFrontEnd


_CLASSES: dict[str, type] = {}


def __getattr__(name: str):
    """The ``nn.Module`` classes are built on first use so importing this module does not import torch."""
    if name in ("Stft", "LogMel", "Mfcc", "GccPhat", "FeatureFrontEnd"):
        if not _CLASSES:
            for cls in _module_classes():
                cls.__module__ = __name__
                cls.__qualname__ = cls.__name__  # picklable as avperception.dsp.features.<name>
                _CLASSES[cls.__name__] = cls
        return _CLASSES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- numpy references


def np_log_mel(spec: np.ndarray, fb: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Numpy reference: natural-log mel energies of a complex STFT ``(..., F, T)`` -> ``(..., n_mels, T)``."""
    return np.log(np.einsum("mf,...ft->...mt", fb.astype(np.float64), np.abs(spec) ** 2) + eps)


def np_mfcc(logmel: np.ndarray, n_mfcc: int) -> np.ndarray:
    """Numpy reference MFCC via ``scipy.fft.dct`` along the mel axis (``-2``)."""
    from scipy.fft import dct

    return dct(logmel, type=2, norm="ortho", axis=-2)[..., :n_mfcc, :]
