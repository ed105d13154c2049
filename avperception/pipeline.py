"""The perception pipeline: one block of multichannel audio in, plain numpy outputs out.

No ROS here: the perception node, the CLI, the replay evaluator and the
benchmarks all call :meth:`Pipeline.process`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .config import ArrayGeometry, ConfigError, PipelineConfig, load_array
from .dsp import grid as grids
from .dsp.beamforming import make_beamformer
from .dsp.peaks import SourceDirection, find_sources
from .dsp.stft import stft


@dataclass
class Outputs:
    """What one frame of audio yields.

    Attributes:
        energy: ``(H, W)`` float32 beamformed power per grid direction (SRP-PHAT:
            mean pairwise phase coherence, clipped at 0).
        sources: detected source directions, strongest first.
        stamp: time of the frame's first sample (s), as given to ``process``.
        compute_ms: wall time spent in ``process``.
    """

    energy: np.ndarray
    sources: list[SourceDirection]
    stamp: float = 0.0
    compute_ms: float = 0.0
    extras: dict = field(default_factory=dict)


class Pipeline:
    """Audio frames to energy maps and source directions.

    Args:
        config: pipeline settings (the array is ``config.array`` unless ``array`` is given).
        array: an :class:`ArrayGeometry`, preset name or YAML path overriding ``config.array``.
    """

    def __init__(self, config: PipelineConfig | None = None, array: ArrayGeometry | str | None = None) -> None:
        self.config = (config or PipelineConfig()).validate()
        self.array = load_array(array if array is not None else self.config.array)
        if self.array.sample_rate is not None and self.array.sample_rate != self.config.sample_rate:
            raise ConfigError(
                f"array '{self.array.name}' runs at {self.array.sample_rate} Hz but the pipeline is set to "
                f"{self.config.sample_rate} Hz; set sample_rate to match"
            )
        self.grid = grids.from_config(self.config.grid)
        b = self.config.beamformer
        self.beamformer = make_beamformer(
            b.method, self.array, self.grid, sample_rate=self.config.sample_rate, nfft=self.config.stft.nfft,
            fmin=b.fmin_hz, fmax=b.fmax_hz, speed_of_sound=self.config.speed_of_sound,
            **({"interp": b.interp} if b.method == "srp_phat" else {}),
        )
        self.mask = self.grid.search_mask(self.array)

    @property
    def frame_samples(self) -> int:
        return self.config.frame.frame_samples

    def process(self, block: np.ndarray, stamp: float = 0.0) -> Outputs:
        """Run one frame.

        Args:
            block: ``(mics, frame_samples)`` audio (already channel-mapped).
            stamp: time of the first sample, carried through.
        """
        t0 = time.perf_counter()
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[0] != self.array.num_mics:
            raise ValueError(f"expected ({self.array.num_mics}, samples) audio, got {block.shape}")
        s = self.config.stft
        spec = stft(block, s.nfft, s.hop, s.window)
        power = self.beamformer.map(spec)
        b = self.config.beamformer
        sources = find_sources(
            self.beamformer, None, power, b.num_sources, b.min_separation_deg, b.min_relative_power, b.refine, self.mask
        )
        energy = self.grid.as_image(np.maximum(power, 0.0)).astype(np.float32)
        return Outputs(energy, sources, stamp, (time.perf_counter() - t0) * 1e3)

    def process_batch(self, blocks, stamps=None) -> list[Outputs]:
        """Run ``N`` frames at once (offline work): ``blocks (N, mics, frame_samples)`` (or a list of them) ->
        what :meth:`process` gives for each, equal to float rounding.

        The STFTs, the maps and the peak search of all frames are array operations over the frames
        (:mod:`avperception.dsp.batch`); a beamformer that is not a pair-lag one (or has its own source
        search) runs frame by frame. ``compute_ms`` is the batch's time divided among its frames.
        """
        from .dsp import batch

        t0 = time.perf_counter()
        x = np.asarray(blocks, dtype=np.float32)
        if x.ndim != 3 or x.shape[1] != self.array.num_mics:
            raise ValueError(f"expected (frames, {self.array.num_mics}, samples) audio, got {x.shape}")
        n = x.shape[0]
        stamps = np.zeros(n) if stamps is None else np.asarray(stamps, dtype=np.float64)
        if stamps.shape != (n,):
            raise ValueError(f"expected {n} stamps, got shape {stamps.shape}")
        if not n:
            return []
        if not batch.supports_batch(self.beamformer):
            return [self.process(x[k], float(stamps[k])) for k in range(n)]
        s, b = self.config.stft, self.config.beamformer
        power, cc, diag = batch.pair_lag_maps(self.beamformer, batch.stft_frames(x, s.nfft, s.hop, s.window))
        sources = batch.find_sources_batch(self.beamformer, power, cc, diag, b.num_sources, b.min_separation_deg,
                                           b.min_relative_power, b.refine, self.mask)
        energy = self.grid.as_image(np.maximum(power, 0.0)).astype(np.float32)
        ms = (time.perf_counter() - t0) * 1e3 / n
        return [Outputs(energy[k], sources[k], float(stamps[k]), ms) for k in range(n)]

    def frames(self, audio: np.ndarray):
        """Yield ``(start_sample, block)`` analysis frames of a long ``(mics, samples)`` recording."""
        f = self.config.frame
        for start in range(0, audio.shape[1] - f.frame_samples + 1, f.hop_samples):
            yield start, audio[:, start: start + f.frame_samples]


def localize(
    audio: np.ndarray, array: ArrayGeometry, sample_rate: int, num_sources: int = 1,
    config: PipelineConfig | None = None,
) -> list[SourceDirection]:
    """Offline localisation of a whole ``(mics, samples)`` recording.

    The STFT of the whole recording is pooled into one cross-spectrum (static
    sources), then the map's peaks are refined. Without a ``config`` the most
    accurate method (``DEFAULT_LOCALIZE_METHOD``, see ``avperception bench doa``)
    is used, else ``config.beamformer.method``.
    """
    from dataclasses import replace

    from .dsp.beamforming import DEFAULT_LOCALIZE_METHOD

    cfg = config or PipelineConfig()
    cfg = replace(
        cfg, sample_rate=sample_rate, array=array.name,
        beamformer=replace(cfg.beamformer, num_sources=num_sources, interp=max(cfg.beamformer.interp, 16),
                           method=DEFAULT_LOCALIZE_METHOD if config is None else cfg.beamformer.method,
                           fmax_hz=0.45 * sample_rate if config is None else min(cfg.beamformer.fmax_hz, sample_rate / 2)),
        frame=replace(cfg.frame, frame_samples=max(cfg.frame.frame_samples, cfg.stft.nfft)),
    ).validate()
    arr = ArrayGeometry(array.name, array.positions, array.frame_id, None, None)
    pipe = Pipeline(cfg, arr)
    if audio.shape[1] < cfg.stft.nfft:
        raise ValueError(f"recording too short: {audio.shape[1]} samples, need at least {cfg.stft.nfft}")
    spec = stft(audio, cfg.stft.nfft, cfg.stft.hop, cfg.stft.window)
    power = pipe.beamformer.map(spec)
    b = cfg.beamformer
    return find_sources(pipe.beamformer, None, power, num_sources, b.min_separation_deg, 0.0, True, pipe.mask)
