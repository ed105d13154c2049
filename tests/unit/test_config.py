import numpy as np
import pytest

from avperception.config import (ArrayGeometry, ConfigError, PipelineConfig, array_presets, flatten, load_array,
                                 load_pipeline_config)

EXPECTED_PRESETS = {"respeaker_4mic", "respeaker_6mic", "minidsp_uma8", "minidsp_uma16", "binaural", "robot_8mic"}


def test_presets_exist_and_load():
    names = set(array_presets())
    assert EXPECTED_PRESETS <= names
    for name in names:
        arr = load_array(name)
        assert arr.positions.shape == (arr.num_mics, 3)
        assert arr.input_channels >= arr.num_mics


def test_preset_geometry_is_physical():
    assert load_array("respeaker_6mic").num_mics == 6
    assert load_array("minidsp_uma16").num_mics == 16
    assert load_array("robot_8mic").rank == 2
    assert load_array("binaural").rank == 1
    assert load_array("tetra_4mic").rank == 3
    # UMA-16 is a 4x4 grid with 42 mm pitch
    d = np.linalg.norm(load_array("minidsp_uma16").positions[0] - load_array("minidsp_uma16").positions[1])
    assert d == pytest.approx(0.042, abs=1e-4)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match="respeaker_4mic"):
        load_array("no_such_array")


def test_bad_array_files(tmp_path):
    p = tmp_path / "a.yaml"
    p.write_text("positions: [[0, 0], [1, 1]]\n")
    with pytest.raises(ConfigError, match=r"\[x, y, z\]"):
        load_array(p)
    p.write_text("positions: [[0, 0, 0], [0.1, 0, 0]]\ncolour: red\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_array(p)
    p.write_text("positions: [[0, 0, 0], [0.1, 0, 0]]\nchannel_map: [0]\n")
    with pytest.raises(ConfigError, match="channel_map has 1 entries"):
        load_array(p)
    p.write_text("positions: [[0, 0, 0], [0, 0, 0]]\n")
    with pytest.raises(ConfigError, match="duplicate"):
        load_array(p)


def test_channel_count_mismatch_is_a_clear_error():
    arr = load_array("respeaker_4mic")  # 6 device channels, mics on 1..4
    with pytest.raises(ConfigError, match="expects 6 input channels but the audio has 4"):
        arr.select_channels(np.zeros((4, 10)))
    block = np.arange(6)[:, None] * np.ones((6, 3))
    assert np.array_equal(arr.select_channels(block)[:, 0], [1, 2, 3, 4])
    plain = ArrayGeometry("x", np.array([[0, 0, 0], [0.1, 0, 0]]))
    with pytest.raises(ConfigError, match="has 2 microphones but the audio has 3 channels"):
        plain.select_channels(np.zeros((3, 5)))


def test_device_layout_round_trip():
    arr = load_array("respeaker_4mic")
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    assert np.array_equal(arr.select_channels(arr.to_device_layout(x)), x)


def test_pipeline_config_yaml_and_errors(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("array: robot_8mic\nframe: {hop_samples: 512}\ngrid: {resolution_deg: 5}\n")
    cfg = load_pipeline_config(p)
    assert cfg.frame.hop_samples == 512 and cfg.grid.resolution_deg == 5.0 and cfg.array == "robot_8mic"
    p.write_text("grid: {resolutoin_deg: 5}\n")
    with pytest.raises(ConfigError, match="unknown keys.*resolutoin_deg"):
        load_pipeline_config(p)
    p.write_text("stft: {nfft: 500}\n")
    with pytest.raises(ConfigError, match="power of two"):
        load_pipeline_config(p)
    p.write_text("frame: {hop_samples: fast}\n")
    with pytest.raises(ConfigError, match="expected an integer"):
        load_pipeline_config(p)
    with pytest.raises(ConfigError, match="above Nyquist"):
        load_pipeline_config({"sample_rate": 8000})
    for q in (-0.1, 0.7):
        with pytest.raises(ConfigError, match="near_bound_quantile"):
            load_pipeline_config({"sonar": {"near_bound_quantile": q}})
    assert load_pipeline_config({"sonar": {"near_bound_quantile": 0.0}}).sonar.near_bound_quantile == 0.0
    for r in (-0.1, 11.0):
        with pytest.raises(ConfigError, match="confident_max_rel_std"):
            load_pipeline_config({"sonar": {"confident_max_rel_std": r}})
    assert load_pipeline_config({"sonar": {"confident_max_rel_std": 0.0}}).sonar.confident_max_rel_std == 0.0
    with pytest.raises(ConfigError, match="points_confident"):
        load_pipeline_config({"sonar": {"confident_max_rel_std": 0.0, "points_confident": True}})
    for h in (-0.5, 12.0):
        with pytest.raises(ConfigError, match="array_height_m"):
            load_pipeline_config({"sonar": {"array_height_m": h}})
    assert load_pipeline_config({"sonar": {"array_height_m": 1.4}}).sonar.array_height_m == 1.4


def test_flatten_names_cover_every_setting():
    flat = flatten(PipelineConfig())
    assert {"array", "sample_rate", "frame.hop_samples", "grid.kind", "beamformer.method"} <= set(flat)
