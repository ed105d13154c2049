"""Pipeline.process_batch: many frames at once give what Pipeline.process gives frame by frame.

Plane waves from known directions (and a silent frame) on a planar, a linear and a volumetric array, through the
batched pair-lag path (srp_phat, das) and the per-frame fallback (mvdr): the same maps, the same number of
sources, the same directions and powers to float rounding, and the strongest one where the wave came from.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from avperception.config import PipelineConfig
from avperception.dsp.batch import supports_batch
from avperception.dsp.grid import angular_distance_deg, azel_to_vector
from avperception.pipeline import Pipeline
from avperception.sim.room import plane_wave

FS = 16000
DIRS = [(-45.0, 30.0), (120.0, 10.0), (10.0, 60.0), (-170.0, 45.0)]


def _frames(pipe: Pipeline) -> tuple[np.ndarray, list]:
    """Frames of single plane waves, one of two waves at once, and one of silence; the first wave's directions."""
    arr, n = pipe.array, pipe.frame_samples
    waves = [plane_wave(arr, azel_to_vector(az, el), FS, n, seed=k, snr_db=15) for k, (az, el) in enumerate(DIRS)]
    two = waves[0] + 0.8 * plane_wave(arr, azel_to_vector(100.0, 20.0), FS, n, seed=9)
    blocks = np.stack(waves + [two, np.zeros_like(waves[0])])
    return blocks, [azel_to_vector(az, el) for az, el in DIRS] + [azel_to_vector(*DIRS[0]), None]


@pytest.mark.parametrize("array,method", [("robot_8mic", "srp_phat"), ("respeaker_6mic", "das"),
                                          ("binaural", "srp_phat"), ("tetra_4mic", "srp_phat"),
                                          ("respeaker_4mic", "mvdr"), ("respeaker_4mic", "srp_phat_c2f")])
def test_process_batch_equals_process(array, method):
    cfg = PipelineConfig(array=array, sample_rate=FS)
    cfg = replace(cfg, grid=replace(cfg.grid, resolution_deg=4.0), beamformer=replace(cfg.beamformer, method=method))
    pipe = Pipeline(cfg)
    assert supports_batch(pipe.beamformer) == (method in ("srp_phat", "das"))  # else frame by frame
    blocks, truth = _frames(pipe)
    stamps = np.arange(len(blocks)) * 0.064
    one = [pipe.process(b, float(t)) for b, t in zip(blocks, stamps)]
    many = pipe.process_batch(blocks, stamps)
    assert len(many) == len(one)
    for k, (a, b) in enumerate(zip(one, many)):
        assert b.stamp == a.stamp and b.energy.shape == a.energy.shape == pipe.grid.shape
        np.testing.assert_allclose(b.energy, a.energy, rtol=1e-5, atol=1e-6)
        assert len(b.sources) == len(a.sources), (k, a.sources, b.sources)
        for s, r in zip(a.sources, b.sources):
            np.testing.assert_allclose(r.vector, s.vector, atol=1e-7)
            assert r.power == pytest.approx(s.power, rel=1e-5, abs=1e-6)
            assert r.azimuth_deg == pytest.approx(s.azimuth_deg, abs=1e-5)
            assert r.elevation_deg == pytest.approx(s.elevation_deg, abs=1e-5)
        if truth[k] is None:
            if method != "mvdr":
                assert not b.sources  # silence: the phase-transformed map has no peak above zero
        elif pipe.array.rank == 2 and method != "mvdr":  # planar: the upper hemisphere is resolved
            assert angular_distance_deg(np.array(b.sources[0].vector), truth[k]) < 8, (k, b.sources[0])


def test_process_batch_checks_its_input():
    pipe = Pipeline(PipelineConfig(sample_rate=FS))
    assert pipe.process_batch(np.zeros((0, pipe.array.num_mics, pipe.frame_samples))) == []
    with pytest.raises(ValueError, match="frames"):
        pipe.process_batch(np.zeros((pipe.array.num_mics, pipe.frame_samples)))
    with pytest.raises(ValueError, match="stamps"):
        pipe.process_batch(np.zeros((2, pipe.array.num_mics, pipe.frame_samples)), [0.0])
