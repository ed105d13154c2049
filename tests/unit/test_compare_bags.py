"""compare-bags: two bags of the node's outputs, written here with rosbags, compared ping by ping."""

import numpy as np
import pytest

pytest.importorskip("rosbags")

from avperception.cli import main  # noqa: E402
from avperception.eval.bagfiles import BagRecorder  # noqa: E402
from avperception.eval.bagio import BagError, header_msg, make_msg, typestore  # noqa: E402
from avperception.eval.compare import compare_bags, match_stamps  # noqa: E402

IMAGE = "sensor_msgs/msg/Image"
T0 = 1_700_000_000.0


def image(ts, a: np.ndarray, t: float):
    enc, width = ("32FC1", 4) if a.dtype == np.float32 else ("mono8", 1)
    return make_msg(ts, IMAGE, header=header_msg(ts, t, "mic_array"), height=a.shape[0], width=a.shape[1],
                    encoding=enc, step=a.shape[1] * width, data=np.frombuffer(a.tobytes(), dtype=np.uint8))


def write(path, pings, storage="mcap", semantic=True):
    """``pings``: [(stamp, depth (H, W) float32, labels (H, W) uint8)]."""
    ts = typestore()
    with BagRecorder(path, storage, ts) as rec:
        for t, d, lab in pings:
            rec.add("/sonar/depth", IMAGE, int(t * 1e9), ts.serialize_cdr(image(ts, d, t), IMAGE))
            if semantic:
                rec.add("/sonar/semantic", IMAGE, int(t * 1e9), ts.serialize_cdr(image(ts, lab, t), IMAGE))


@pytest.fixture()
def bags(tmp_path):
    rng = np.random.default_rng(1)
    a = []
    for k in range(5):
        d = rng.uniform(0.5, 6.0, (60, 120)).astype(np.float32)
        d[:3] = np.nan  # unknown in both
        a.append((T0 + 0.25 * k, d, rng.integers(0, 4, (60, 120)).astype(np.uint8)))
    b = []
    for k, (t, d, lab) in enumerate(a):
        if k == 4:
            continue  # ping 4 only in A
        d2, lab2 = d.copy(), lab.copy()
        if k == 1:
            d2 = d * np.float32(1.1)  # 10 % farther everywhere: AbsRel 0.1, every ratio below 1.25
        if k == 2:
            d2 = d * np.float32(1.5)  # AbsRel 0.5, no ratio below 1.25
            lab2[10, :90] = (lab2[10, :90] + 1) % 4  # 90 of 7200 pixels change class
        b.append((t + 0.0002, d2, lab2))  # stamps 0.2 ms apart still match
    b.append((T0 + 10.0, a[0][1], a[0][2]))  # only in B
    write(tmp_path / "a", a)
    write(tmp_path / "b", b, "sqlite3")
    return tmp_path / "a", tmp_path / "b", a


def test_changed_depth_gives_its_abs_rel_and_delta1(bags):
    a, b, pings = bags
    r = compare_bags(a, b)
    rows = r["pings"]
    assert [round(p["stamp"], 3) for p in rows] == [round(t, 3) for t, _, _ in pings[:4]]
    assert rows[0]["abs_rel"] == 0 and rows[0]["delta1"] == 1 and rows[0]["class_agreement"] == 1
    assert rows[1]["abs_rel"] == pytest.approx(0.1, abs=1e-6) and rows[1]["delta1"] == 1
    known = np.isfinite(pings[1][1])
    assert rows[1]["max_abs_diff"] == pytest.approx(0.1 * float(np.max(pings[1][1][known])), rel=1e-5)
    assert rows[1]["known_pixels"] == int(known.sum()) and rows[1]["known_in_one"] == 0
    assert rows[2]["abs_rel"] == pytest.approx(0.5, abs=1e-6) and rows[2]["delta1"] == 0
    assert rows[2]["class_agreement"] == pytest.approx(1 - 90 / 7200)
    t = r["totals"]
    assert (t["matched"], t["only_a"], t["only_b"], t["identical_pings"]) == (4, 1, 1, 2)
    assert r["only_a"] == [pytest.approx(pings[4][0])] and r["only_b"] == [pytest.approx(T0 + 10.0)]
    assert t["abs_rel_mean"] == pytest.approx((0.1 + 0.5) / 4, abs=1e-6)
    assert t["delta1_mean"] == pytest.approx(3 / 4)


def test_identical_bags_agree_everywhere(bags):
    a, _, pings = bags
    r = compare_bags(a, a)
    t = r["totals"]
    assert (t["matched"], t["only_a"], t["only_b"], t["identical_pings"]) == (5, 0, 0, 5)
    assert t["abs_rel_mean"] == 0 and t["delta1_mean"] == 1.0 and t["max_abs_diff"] == 0
    assert t["class_agreement_mean"] == 1.0


def test_depth_only_and_the_cli_report(bags, tmp_path, capsys):
    a, b, _ = bags
    write(tmp_path / "c", [(T0, np.ones((60, 120), np.float32), np.zeros((60, 120), np.uint8))], semantic=False)
    r = compare_bags(a, tmp_path / "c")
    assert r["semantic_topic"] is None and r["pings"][0]["class_agreement"] is None
    assert main(["compare-bags", str(a), str(b), "--out", str(tmp_path / "r.md")]) == 0
    md = (tmp_path / "r.md").read_text()
    assert md == capsys.readouterr().out.split("written to")[0]
    assert "| 1700000000.250000 | 0.1000 | 1.0000 |" in md and "only in A: 1; only in B: 1" in md
    assert main(["compare-bags", str(a), str(tmp_path / "nope")]) == 2


def test_match_stamps_pairs_each_once_nearest_first():
    a = np.array([0.0, 1.0, 1.0005, 3.0])
    b = np.array([0.0004, 1.0004, 2.0])
    assert match_stamps(a, b, 1e-3) == [(0, 0), (2, 1)]
    assert match_stamps(a, np.array([]), 1e-3) == [] and match_stamps(np.array([]), b, 1e-3) == []


def test_a_bag_without_the_topic_is_an_error(bags, tmp_path):
    a, _, _ = bags
    write(tmp_path / "d", [], semantic=False)
    with pytest.raises(BagError, match="no topic /sonar/depth"):
        compare_bags(a, tmp_path / "d")
