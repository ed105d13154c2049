"""The beamformer leaves out each ping's sweep and ``sonar.blank_ms`` after it: past that the ping (its direct path
and echoes) is well below the room's own sources, for the shipped bundle's sweep and for a short one alike."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

from avperception.config import SonarConfig, load_array
from avperception.inference.bundle import load_bundle
from avperception.sonar.pipeline import SonarPipeline
from avperception_train.datagen import config_from_dict
from avperception_train.datagen.scene import sample_scene, simulate_audio


@functools.lru_cache(maxsize=None)
def pings_and_ambient(duration_s: float, scenes: int = 12) -> tuple[list, list, int]:
    """The ping alone (direct path and echoes) and the ambient sources alone, ``(M, N)`` each, in ``scenes``
    data-engine scenes with 1-3 ambient sources, for a sweep of ``duration_s``; and the sample rate."""
    cfg = config_from_dict({"seed": 5, "array": "robot_8mic", "active": {"duration_s": duration_s},
                            "passive": {"num_sources": [1, 3]}})
    pos = cfg.array_geometry().positions
    pings, ambients = [], []
    for i in range(scenes):
        spec = sample_scene(cfg, i, pos)
        both = simulate_audio(cfg, spec, pos, noise=False)
        ambient = simulate_audio(cfg, dataclasses.replace(spec, active=False), pos, noise=False)
        pings.append(both - ambient)
        ambients.append(ambient)
    return pings, ambients, cfg.audio.sample_rate


def ping_over_ambient_db(duration_s: float, after_s: float, until_s: float | None = None) -> float:
    """Median over the scenes of the ping's power from ``after_s`` after its onset until ``until_s`` (None: the
    window's end), over the ambient sources' power (dB)."""
    pings, ambients, fs = pings_and_ambient(duration_s)
    a = int(round(after_s * fs))
    b = None if until_s is None else int(round(until_s * fs))
    return float(np.median([10 * np.log10(np.mean(p[:, a:b] ** 2) / np.mean(q ** 2))
                            for p, q in zip(pings, ambients)]))


def test_the_blanked_span_covers_the_sweep_and_its_loudest_echoes():
    array = load_array("robot_8mic")
    shipped = SonarPipeline(array, SonarConfig())
    sweep_s = len(shipped.bundle.emitted) / shipped.bundle.sample_rate
    assert shipped.blank_s == pytest.approx(sweep_s + SonarConfig().blank_ms * 1e-3)
    assert SonarPipeline(array, SonarConfig(blank_ms=0.0)).blank_s == 0.0
    # the shipped sweep's ping drowns the room while it plays, not after the blanked span
    assert ping_over_ambient_db(sweep_s, 0.0, sweep_s) > 10.0
    after = ping_over_ambient_db(sweep_s, shipped.blank_s)
    assert after < -15.0
    # a fixed 30 ms (an 8 ms sweep's span) would leave the end of the shipped sweep in the beamformer's input
    assert ping_over_ambient_db(sweep_s, 0.030) > after + 10.0
    # an 8 ms sweep (the other shipped arrays' bundles) the same way
    short = load_bundle("default", array="respeaker_4mic")
    short_s = len(short.emitted) / short.sample_rate
    assert short_s == pytest.approx(0.008)
    assert ping_over_ambient_db(short_s, short_s + SonarConfig().blank_ms * 1e-3) < -15.0
