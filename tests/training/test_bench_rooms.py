"""The live quality bench's rooms: ids as given, or the first rooms of a split of the data engine, so that live
scores can come from rooms no training run has used."""

from __future__ import annotations

import pytest


def test_test_rooms_are_the_first_rooms_of_the_test_split():
    from avperception.bench.sonar_quality import parse_rooms
    from avperception_train.datagen.config import load_config
    from avperception_train.datagen.scene import room_split

    cfg = load_config(None)
    rooms = parse_rooms("test:6")
    assert len(rooms) == 6
    assert rooms == tuple(r for r in range(rooms[-1] + 1) if room_split(cfg, r) == 2)  # every one, none skipped
    assert not set(parse_rooms("train:20")) & set(rooms)
    assert parse_rooms("0, 3,5") == (0, 3, 5)
    from avperception.bench.sonar_quality import DEFAULT_ROOMS

    assert parse_rooms(DEFAULT_ROOMS) == rooms[:3]  # by default, held-out rooms


@pytest.mark.parametrize("spec, says", [("test:0", "count at least 1"), ("valid:3", "train, val or test"),
                                        ("a,b", "room ids"), ("", "at least one room"), ("-1", "none negative")])
def test_bad_room_specs_are_refused(spec, says, capsys):
    from avperception.bench.sonar_quality import main, parse_rooms

    with pytest.raises(ValueError, match=says):
        parse_rooms(spec)
    assert main(["--rooms", spec]) == 2
    assert says in capsys.readouterr().err
