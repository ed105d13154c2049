"""Data-engine configuration: shipped defaults, strict keys, clear errors."""

from __future__ import annotations

import pytest
import yaml

from avperception_train.datagen.config import (DEFAULT_CONFIG_PATH, DatagenConfig, DatagenConfigError,
                                               config_from_dict, load_config, parse_set)


def test_shipped_yaml_equals_dataclass_defaults():
    assert load_config() == DatagenConfig().validate()
    # and it spells out every key, so it documents the whole config
    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            if isinstance(v, dict) and k != "shapes":
                out |= keys(v, f"{prefix}{k}.")
            else:
                out.add(prefix + k)
        return out

    shipped = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    assert keys(shipped) == keys(DatagenConfig().to_dict())


def test_partial_user_file_overrides_defaults(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("room:\n  size_m: [3, 4]\nseed: 5\n")
    cfg = load_config(p)
    assert cfg.room.size_m == (3.0, 4.0) and cfg.seed == 5
    assert cfg.room.height_m == DatagenConfig().room.height_m


def test_unknown_key_lists_valid_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("room:\n  sise_m: [3, 4]\n")
    with pytest.raises(DatagenConfigError, match=r"unknown keys \['sise_m'\].*size_m"):
        load_config(p)
    with pytest.raises(DatagenConfigError, match="unknown keys"):
        config_from_dict({"bogus": 1})


@pytest.mark.parametrize("over, msg", [
    ({"audio": {"sample_rate": "fast"}}, "expected an integer"),
    ({"room": {"size_m": [5, 3]}}, "low <= high"),
    ({"room": {"shapes": {"circle": 1}}}, "unknown"),
    ({"room": {"materials": {"wall": ["unobtainium"]}}}, "unknown pyroomacoustics materials"),
    ({"passive": {"signals": ["opera"]}}, "unknown"),
    ({"split": {"train": 0.5, "val": 0.1, "test": 0.1}}, "sum to 1"),
    ({"active": {"f_end_hz": 9000}}, "Nyquist"),
    ({"robot": {"array_height_m": [0.3, 3.0]}}, "ceiling"),
    ({"robot": {"near_probability": 1.5}}, "near_probability"),
    ({"robot": {"near_max_m": 0.3}}, "near_max_m"),
])
def test_bad_values_are_explained(over, msg):
    with pytest.raises(DatagenConfigError, match=msg):
        config_from_dict(over)


def test_unknown_array_is_a_config_error():
    cfg = config_from_dict({"array": "no_such_array"})
    with pytest.raises(DatagenConfigError, match="unknown array preset"):
        cfg.array_geometry()


def test_missing_config_file(tmp_path):
    with pytest.raises(DatagenConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_parse_set_builds_nested_overrides():
    over = parse_set(["room.size_m=[3, 5]", "seed=4", "pinhole.enabled=true"])
    assert over == {"room": {"size_m": [3, 5]}, "seed": 4, "pinhole": {"enabled": True}}
    cfg = load_config(None, over)
    assert cfg.room.size_m == (3.0, 5.0) and cfg.pinhole.enabled
    with pytest.raises(DatagenConfigError, match="KEY=VALUE"):
        parse_set(["nonsense"])
    # a bad value set on the command line is named as such, with the preset it overrides
    with pytest.raises(DatagenConfigError, match=r"datagen_wide\.yaml with --set robot\.speed_mps, seed: "
                                                 r"robot\.speed_mps must be <= 5"):
        load_config(None, parse_set(["robot.speed_mps=[1, 9]", "seed=4"]), distribution="wide")


def test_digest_is_stable_and_sensitive():
    a, b = DatagenConfig(), DatagenConfig(seed=1)
    assert a.digest() == DatagenConfig().digest() != b.digest()
