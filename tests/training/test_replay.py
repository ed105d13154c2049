"""record-sim and replay-eval end to end: a simulated pinging run as a bag, replayed through the node's code.

The metrics replay-eval writes equal those of the same stream scored directly (score_stream); a bag with a gap, a
clock jump, an unknown topic and a missing truth frame is evaluated with each of them reported; the HTML report
is self-contained.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import pytest

pytest.importorskip("rosbags")
pytest.importorskip("onnxruntime")

PINGS = 10


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """A 10-ping bag of room 0 and the trajectory it was recorded from."""
    from avperception_train.datagen.sim_bag import bundle_emitter, record_sim
    from avperception_train.datagen.trajectory import ActiveTrajectory

    over, _ = bundle_emitter()
    traj = ActiveTrajectory(room_id=0, seed=0, num_sources=2, active=over)
    bag = tmp_path_factory.mktemp("bags") / "sim"
    res = record_sim(bag, PINGS, trajectory=traj)
    return bag, traj, res


@pytest.fixture(scope="module")
def report(sim, tmp_path_factory):
    from avperception.eval.replay import replay_eval

    out = tmp_path_factory.mktemp("report")
    m = replay_eval(sim[0], out, threads=1, progress=False)
    return out, m


def test_record_sim_topics(sim):
    bag, traj, res = sim
    msgs = res["messages"]
    assert res["storage"] == "mcap" and (bag / "metadata.yaml").is_file()
    assert msgs["/audio"] == PINGS * traj.period // 1024
    for topic in ("/sonar/pings", "/sim/depth", "/sim/semantic", "/sim/occupancy", "/sim/true_source_poses", "/tf"):
        assert msgs[topic] == PINGS, topic


def test_replay_metrics_equal_direct_scores(sim, report):
    """Every ping of the bag scores exactly what the same stream scores through SonarPipeline directly."""
    from avperception.config import SonarConfig
    from avperception.eval.live import score_stream

    _, traj, _ = sim
    out, m = report
    records, _ = score_stream(traj, PINGS, SonarConfig(threads=1))
    saved = json.loads((out / "metrics.json").read_text())
    by_ping = {p["ping"]: p for p in saved["pings"]}
    assert sorted(by_ping) == [r["ping"] for r in records]
    for r in records:
        p = by_ping[r["ping"]]
        assert p["truth"] == "sim" and p["correction"] == r["correction"]
        for k in ("delta1", "abs_rel", "rmse", "class_acc", "voxel_iou"):
            assert p[k] == pytest.approx(r[k], abs=1e-6), (r["ping"], k)
    o = saved["overall"]
    for k in ("delta1", "abs_rel", "class_acc", "voxel_iou"):
        assert o[f"{k}_mean"] == pytest.approx(float(np.mean([r[k] for r in records])), abs=1e-6)
    assert o["pings"] == len(records) == PINGS - 1
    # ping 0 starts with the stream: its window lacks the samples before the onset; its truth is unmatched
    assert saved["skipped"] == {"ping_before_audio": 1, "truth_without_ping": 3}
    assert saved["events"] == [] and saved["unknown_topics"] == {}
    assert o["doa_errors"] > 0 and 0 <= o["doa_error_deg_median"] <= 180
    assert len(saved["segments"]) == 1 and saved["segments"][0]["pings"] == len(records)
    # the safety metrics pooled over every ping's pixels, and the uncertainty's AUSE per ping, as computed directly
    from avperception.eval.safety import kept_counts, kept_metrics, merge_counts, safety_counts, safety_metrics, \
        sparsification
    from avperception.sonar.products import confident_depth, depth_near_bound

    pooled = pooled_bound = pooled_kept = None
    for r in records:
        out_r, truth = r["out"], r["truth"]
        assert out_r.depth_uncertainty is not None  # the shipped bundle has an uncertainty head
        sp = sparsification(out_r.depth, truth.depth, out_r.depth_uncertainty)
        assert by_ping[r["ping"]]["ause"] == pytest.approx(sp["ause"], abs=1e-9)
        assert by_ping[r["ping"]]["ause_random"] == pytest.approx(sp["ause_random"], abs=1e-9)
        pooled = merge_counts(pooled, safety_counts(out_r.depth, truth.depth, truth.semantic))
        bound = depth_near_bound(out_r.depth, out_r.depth_uncertainty, SonarConfig().near_bound_quantile)
        assert (bound <= out_r.depth + 1e-6)[np.isfinite(out_r.depth)].all()
        pooled_bound = merge_counts(pooled_bound, safety_counts(bound, truth.depth, truth.semantic))
        conf = confident_depth(out_r.depth, out_r.depth_uncertainty, SonarConfig().confident_max_rel_std)
        pooled_kept = merge_counts(pooled_kept, kept_counts(conf, truth.depth))
        one = kept_metrics(kept_counts(conf, truth.depth))  # the live scoring's per ping
        assert (r["confident_kept"], r["confident_delta1"]) == (one["kept"], one["delta1"])
    direct, direct_bound = safety_metrics(pooled), safety_metrics(pooled_bound)
    assert o["near_pixels"] == direct["near_pixels"]
    for k in ("false_far_rate", "near_recall", "false_near_rate", "obstacle_delta1", "near_bound_false_far_rate",
              "near_bound_near_recall", "near_bound_false_near_rate"):
        want = direct_bound[k[len("near_bound_"):]] if k.startswith("near_bound_") else direct[k]
        assert (o[k] is None) == (not np.isfinite(want)), k
        if o[k] is not None:
            assert o[k] == pytest.approx(want, abs=1e-12), k
    kept = kept_metrics(pooled_kept)
    for k in ("kept", "delta1", "abs_rel", "false_far_rate"):
        assert (o["confident_" + k] is None) == (not np.isfinite(kept[k])), k
        if o["confident_" + k] is not None:
            assert o["confident_" + k] == pytest.approx(kept[k], abs=1e-12), k
    assert 0 < o["confident_kept"] < 1 and o["confident_delta1"] >= o["delta1_mean"] - 0.05
    # the live scoring's summary (the demo, bench sonar-quality) pools the same counts to the same rates
    from avperception.eval.live import summarize_scores

    live = summarize_scores(records)
    for k in ("false_far_rate", "near_recall", "false_near_rate", "confident_kept", "confident_delta1",
              "confident_abs_rel", "confident_false_far_rate"):
        assert live[k] == (None if o[k] is None else pytest.approx(o[k], abs=1e-12)), k
    assert o["ause_mean"] == pytest.approx(np.mean([p["ause"] for p in saved["pings"]]), abs=1e-12)
    # the uncertainty ranks this room's errors far better than a random order does
    assert o["ause_mean"] < 0.5 * o["ause_random_mean"]


def _rewrite(src, dst, edit):
    """Copy a bag message by message; ``edit(topic, msg, t_ns) -> [(msg, t_ns), ...]`` (may drop or add)."""
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import StoragePlugin, Writer

    from avperception.eval.bagio import typestore

    ts = typestore()
    with AnyReader([src], default_typestore=ts) as r, Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {}
        for c, t_ns, raw in r.messages():
            for topic, msgtype, msg, t in edit(c.topic, c.msgtype, r.deserialize(raw, c.msgtype), t_ns):
                if topic not in conns:
                    conns[topic] = w.add_connection(topic, msgtype, typestore=ts)
                w.write(conns[topic], t, ts.serialize_cdr(msg, msgtype))


def test_replay_reports_gap_jump_unknown_topic_missing_truth(sim, tmp_path):
    from avperception.eval.bagio import make_msg, stamp_msg, typestore
    from avperception.eval.replay import replay_eval

    bag, traj, _ = sim
    ts = typestore()
    t0 = 1.7e9
    jump_at, back = t0 + 1.5, 100.0  # from 1.5 s on, every stamp is 100 s earlier: a new clock
    missing = t0 + 5 * traj.period / traj.fs  # ping 5's depth frame is lost

    def edit(topic, msgtype, msg, t_ns):
        h = getattr(msg, "header", None)
        stamp = h.stamp.sec + h.stamp.nanosec * 1e-9 if h is not None else None
        if topic == "/audio" and msg.sequence in (12, 13):  # two chunks lost: a 128 ms gap
            return []
        if topic == "/sim/depth" and abs(stamp - missing) < 1e-6:
            return []
        out = []
        if topic == "/audio" and msg.sequence % 8 == 0:  # a topic the evaluation does not read
            out.append(("/chatter", "std_msgs/msg/String", make_msg(ts, "std_msgs/msg/String", data="hi"), t_ns))
        if stamp is not None and stamp >= jump_at - 1e-6:
            h.stamp = stamp_msg(ts, stamp - back)
        return out + [(topic, msgtype, msg, t_ns)]

    edited = tmp_path / "edited"
    _rewrite(bag, edited, edit)
    out = tmp_path / "report"
    m = replay_eval(edited, out, threads=1, progress=False)
    saved = json.loads((out / "metrics.json").read_text())
    kinds = [e["kind"] for e in saved["events"]]
    assert kinds.count("gap") == 1 and kinds.count("clock_jump") == 1
    gap = next(e for e in saved["events"] if e["kind"] == "gap")
    assert gap["seconds"] == pytest.approx(2 * 1024 / traj.fs, abs=1e-3)
    assert saved["stream"]["clock_resets"] == 1 and saved["stream"]["gaps"] == 1
    assert saved["unknown_topics"] == {"/chatter": (PINGS * traj.period // 1024 + 7) // 8}
    assert saved["skipped"]["ping_no_depth_truth"] == 1
    assert saved["skipped"].get("ping_gap_in_window", 0) >= 1  # the pings whose window holds the gap
    no_depth = [p for p in saved["pings"] if p["delta1"] is None]
    assert len(no_depth) == 1 and no_depth[0]["ping"] == 5 and no_depth[0]["class_acc"] is not None
    epochs = {p["epoch"] for p in saved["pings"]}
    assert epochs == {0, 1}  # pings scored on both sides of the jump
    assert len(saved["segments"]) == 2 and saved["segments"][1]["epoch"] == 1
    summary = (out / "summary.md").read_text()
    for word in ("ping_no_depth_truth", "unknown_topic /chatter", "gap", "clock_jump", "ping_gap_in_window"):
        assert word in summary, word
    assert m["overall"]["pings"] == len(saved["pings"])


class _Html(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.imgs, self.ids, self.links = [], [], set(), []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        for k in ("href", "src"):
            if k in a and tag != "img":
                self.links.append(a[k])


def test_html_report_is_self_contained(report):
    out, m = report
    for name in ("metrics.json", "summary.md", "index.html", "error_over_time.png", "latency_hist.png",
                 "class_iou.png", "doa_cdf.png", "samples.png"):
        assert (out / name).is_file(), name
    text = (out / "index.html").read_text()
    p = _Html()
    p.feed(text)
    p.close()
    assert p.tags[0] == "html" and "style" in p.tags and "link" not in p.tags and "script" not in p.tags
    assert len(p.imgs) == 5 and all(s.startswith("data:image/png;base64,") and len(s) > 1000 for s in p.imgs)
    assert p.links == [] and "http" not in text.replace("http-equiv", "")
    for sec in ("overall", "segments", "classes", "skipped", "stream", "plots", "table-overall", "table-segments",
                "table-classes", "table-skipped"):
        assert sec in p.ids, sec
    assert text.count("<tr>") >= 1 + 1 + 2 + len(m["classes"]) + 1


def test_replay_scores_a_depth_camera_where_it_sees(sim, tmp_path):
    """The simulator's depth replaced by a forward pinhole camera (its z-depth, no TF): each ping is scored on the
    panorama reprojected into the camera, as well as on the panorama the camera sees, and the report says the
    camera was assumed to look along +x."""
    from avperception.eval.bagio import depth_to_metres, header_msg, make_msg, typestore
    from avperception.eval.replay import replay_eval
    from avperception.sonar.products import PinholeReprojection

    bag, traj, _ = sim
    ts = typestore()
    w, h, f = 64, 48, 40.0
    cam = PinholeReprojection((60, 120), w, h, f, f, w / 2, h / 2)

    def edit(topic, msgtype, msg, t_ns):
        if topic != "/sim/depth":
            return [(topic, msgtype, msg, t_ns)]
        z = cam(depth_to_metres(msg)).astype("<f4")
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        img = make_msg(ts, "sensor_msgs/msg/Image", header=header_msg(ts, stamp, "camera_optical"), height=h,
                       width=w, encoding="32FC1", step=4 * w, data=np.frombuffer(z.tobytes(), np.uint8))
        info = make_msg(ts, "sensor_msgs/msg/CameraInfo", header=header_msg(ts, stamp, "camera_optical"), height=h,
                        width=w, k=np.array([f, 0, w / 2, 0, f, h / 2, 0, 0, 1.0]))
        return [("/camera/depth/image_raw", msgtype, img, t_ns),
                ("/camera/depth/camera_info", "sensor_msgs/msg/CameraInfo", info, t_ns)]

    edited = tmp_path / "camera"
    _rewrite(bag, edited, edit)
    m = replay_eval(edited, None, threads=1, progress=False, beamformer_every=0)
    assert m["topics"]["camera_depth"] == "/camera/depth/image_raw"
    assert any("+x" in n for n in m["notes"])
    scored = [p for p in m["pings"] if p["truth"] == "camera"]
    assert len(scored) == PINGS - 1 and all(p["camera_pixels"] > 0.5 * w * h for p in scored)
    from avperception.config import SonarConfig
    from avperception.eval.live import score_stream
    from avperception.eval.metrics import depth_metrics

    records, _ = score_stream(traj, PINGS, SonarConfig(threads=1))
    by_ping = {p["ping"]: p for p in scored}
    for r in records:  # the prediction reprojected into the camera, scored on the camera's depth only
        d = depth_metrics(cam(r["out"].depth), cam(r["truth"].depth))
        assert by_ping[r["ping"]]["abs_rel"] == pytest.approx(d["abs_rel"], abs=1e-6)
        assert by_ping[r["ping"]]["delta1"] == pytest.approx(d["delta1"], abs=1e-6)
        assert by_ping[r["ping"]]["class_acc"] == pytest.approx(r["class_acc"], abs=1e-6)
        # the uncertainty is reprojected with the depth and ranks the camera's pixels
        from avperception.eval.safety import sparsification

        sp = sparsification(cam(r["out"].depth), cam(r["truth"].depth), cam(r["out"].depth_uncertainty))
        assert by_ping[r["ping"]]["ause"] == pytest.approx(sp["ause"], abs=1e-9)
    assert m["overall"]["false_far_rate"] is None or 0.0 <= m["overall"]["false_far_rate"] <= 1.0


def test_replay_fast_path_equals_node_order(sim, report):
    """The default replay (the network and beamformer batches in background workers) and one with small
    beamformer batches score exactly what the node's order and code (workers 0, beam_batch 1) scores: every ping's
    scores and sample outputs, every beamformer frame's DOA errors and number of sources."""
    from avperception.eval.replay import ReplaySettings, replay_eval

    _, fast = report
    assert fast["settings"]["workers"] == ReplaySettings.workers > 0 and ReplaySettings.beam_batch > 1
    node = replay_eval(sim[0], None, threads=1, progress=False, workers=0, beam_batch=1)
    small = replay_eval(sim[0], None, threads=1, progress=False, workers=2, beam_batch=3)
    for m in (fast, small):
        for k in ("skipped", "events", "stream", "doa_frames", "beamformer_frames"):
            assert m[k] == node[k], k
        assert len(m["pings"]) == len(node["pings"])
        for p, q in zip(m["pings"], node["pings"]):
            assert {k: v for k, v in p.items() if not k.endswith("_ms")} == \
                pytest.approx({k: v for k, v in q.items() if not k.endswith("_ms")}, abs=1e-6)
        assert [s["ping"] for s in m["_samples"]] == [s["ping"] for s in node["_samples"]]
        for s, r in zip(m["_samples"], node["_samples"]):
            np.testing.assert_allclose(s["depth"], r["depth"], atol=1e-6)
            np.testing.assert_array_equal(s["labels"], r["labels"])
        assert node["_doa"] and len(m["_doa"]) == len(node["_doa"])
        for d, e in zip(m["_doa"], node["_doa"]):
            assert d["stamp"] == e["stamp"] and d["found"] == e["found"]
            np.testing.assert_allclose(d["errors"], e["errors"], atol=1e-5)
    cpu = fast["speed"]["cpu_s"]
    assert cpu["network"] > 0 and cpu["beamformer"] > 0 and cpu["total"] >= cpu["network"]


def test_replay_bench_reports_speed_and_cpu_per_stage(sim):
    from avperception.bench.replay import run

    res = run(sim[0], ["node", "batched"], repeats=1)
    assert [r["setting"] for r in res["rows"]] == ["node", "batched"]
    for r in res["rows"]:
        assert r["x_real_time"] > 0 and r["audio_s"] == pytest.approx(PINGS * 0.25, rel=0.05)
        assert r["cpu_s"]["network"] > 0 and r["cpu_s"]["beamformer"] > 0 and len(r["load"]) == 1
    assert res["rows"][0]["workers"] == 0 and res["rows"][0]["beam_batch"] == 1


def test_replay_repairs_nan_audio_and_skips_empty_and_oversized_messages(sim, report, tmp_path):
    """The node's audio policy in replay: a chunk with NaN samples inside ping 4's window is repaired (zeros) and
    counted, an empty and a 2 s message are skipped and counted; every ping whose audio they do not touch scores
    exactly what the clean bag scores, and ping 4 still scores."""
    import copy

    from avperception.eval.replay import replay_eval

    bag, traj, _ = sim
    _, clean = report
    p4 = next(p for p in clean["pings"] if p["ping"] == 4)
    target, dur = p4["stamp"] + 0.05, 1024 / traj.fs
    hit = {}

    def edit(topic, msgtype, msg, t_ns):
        if topic != "/audio":
            return [(topic, msgtype, msg, t_ns)]
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        out = []
        if msg.sequence == 30:  # an empty and an oversized message just before it, with its sequence number
            for data in (np.zeros(0, np.uint8), np.zeros(2 * traj.fs * msg.channels, "<f4").view(np.uint8)):
                bad = copy.deepcopy(msg)
                bad.data = data
                out.append((topic, msgtype, bad, t_ns - 1))
        if stamp <= target < stamp + dur:
            x = np.frombuffer(bytes(msg.data), "<f4").reshape(-1, msg.channels).copy()
            x[100:300] = np.nan
            msg.data = x.reshape(-1).view(np.uint8)
            hit["nan"] = (stamp, stamp + dur)
        return out + [(topic, msgtype, msg, t_ns)]

    edited = tmp_path / "faulty"
    _rewrite(bag, edited, edit)
    m = replay_eval(edited, None, threads=1, progress=False)
    assert hit and clean["stream"]["nonfinite_chunks"] == 0
    assert m["skipped"] == {**clean["skipped"], "audio_empty": 1, "audio_oversized": 1}
    assert m["stream"] == {**clean["stream"], "nonfinite_chunks": 1}
    assert m["events"] == [] and any("NaN" in n for n in m["notes"])
    assert m["beamformer_frames"] == clean["beamformer_frames"]  # no audio lost
    window = 2048 / traj.fs
    untouched = 0
    for p, q in zip(m["pings"], clean["pings"]):
        assert p["ping"] == q["ping"]
        if p["ping"] == 4:
            assert p["delta1"] is not None and np.isfinite(p["delta1"]) and np.isfinite(p["class_acc"])
        elif q["stamp"] + window + 0.05 < hit["nan"][0] or q["stamp"] - 0.05 > hit["nan"][1]:
            untouched += 1
            for k in ("stamp", "delta1", "abs_rel", "rmse", "class_acc", "voxel_iou"):
                assert p[k] == pytest.approx(q[k], abs=1e-6), (p["ping"], k)
    assert untouched >= len(clean["pings"]) - 2


def test_record_sim_for_another_array_replays_with_its_bundle(tmp_path):
    """record-sim --array respeaker_4mic writes 4-channel audio with that bundle's sweep; replay-eval with the
    shipped 4-mic bundle scores its pings and hears the room; the 8-mic bundle skips every message as having the
    wrong channels; recording with a bundle of another array is refused before anything is written."""
    from avperception.eval.replay import ReplaySettings, replay_eval
    from avperception.inference.bundle import BundleMismatch, load_bundle
    from avperception_train.datagen.sim_bag import record_sim

    bag = tmp_path / "four"
    res = record_sim(bag, 6, array="respeaker_4mic")
    assert res["messages"]["/sonar/pings"] == 6
    m = replay_eval(bag, None, ReplaySettings(model="default:respeaker_4mic", threads=1), progress=False)
    assert m["model"] == str(load_bundle("default:respeaker_4mic").path)
    assert m["overall"]["pings"] == 5 and m["skipped"].get("audio_wrong_channels", 0) == 0
    assert 0.6 < m["overall"]["delta1_mean"] <= 1.0
    other = replay_eval(bag, None, ReplaySettings(model="default:robot_8mic", threads=1), progress=False)
    assert other["overall"]["pings"] == 0 and other["skipped"]["audio_wrong_channels"] > 0
    with pytest.raises(BundleMismatch, match="does not fit array 'respeaker_4mic'"):
        record_sim(tmp_path / "mismatch", 2, array="respeaker_4mic", model="default:robot_8mic")
    assert not (tmp_path / "mismatch").exists()
    # and so is a given trajectory whose array the model does not fit
    from avperception_train.datagen.config import load_config
    from avperception_train.datagen.trajectory import ActiveTrajectory

    traj = ActiveTrajectory(load_config(None, {"array": "respeaker_4mic"}), room_id=0, seed=0)
    with pytest.raises(BundleMismatch, match="does not fit array 'respeaker_4mic'"):
        record_sim(tmp_path / "given", 2, model="default:robot_8mic", trajectory=traj)
    assert not (tmp_path / "given").exists()


def test_replay_gives_the_model_the_arrays_height(sim, report, tmp_path):
    """``--array-height``: the bag's pings score exactly what the same stream scores with the node's
    ``sonar.array_height_m``, and the setting is in the report."""
    from avperception.config import SonarConfig
    from avperception.eval.live import score_stream
    from avperception.eval.replay import replay_eval

    bag, traj, _ = sim
    m = replay_eval(bag, tmp_path / "r", threads=1, progress=False, array_height_m=traj.array_height)
    assert m["settings"]["array_height_m"] == traj.array_height and report[1]["settings"]["array_height_m"] == 0.0
    records, _ = score_stream(traj, PINGS, SonarConfig(threads=1, array_height_m=traj.array_height))
    by_ping = {p["ping"]: p for p in m["pings"]}
    for r in records:
        assert by_ping[r["ping"]]["delta1"] == pytest.approx(r["delta1"], abs=1e-6)
    heard = {p["ping"]: p["delta1"] for p in report[1]["pings"]}
    assert any(abs(by_ping[k]["delta1"] - heard[k]) > 1e-4 for k in by_ping)
    with pytest.raises(Exception, match="array_height_m"):
        replay_eval(bag, tmp_path / "bad", threads=1, progress=False, array_height_m=-1.0)
    # the same height read from the bag's TF (the simulator's base_link lies on the floor under the array)
    tf = replay_eval(bag, tmp_path / "tf", threads=1, progress=False, floor_frame="base_link")
    assert tf["settings"]["floor_frame"] == "base_link" and not any("floor_frame" in n for n in tf["notes"])
    for p in tf["pings"]:
        assert p["delta1"] == pytest.approx(by_ping[p["ping"]]["delta1"], abs=1e-5)
    none = replay_eval(bag, tmp_path / "none", threads=1, progress=False, floor_frame="no_such_frame")
    assert any("no usable transform" in n for n in none["notes"])
    assert [p["delta1"] for p in none["pings"]] == [heard[p["ping"]] for p in none["pings"]]


def test_replay_averages_pings_only_where_the_bag_says_the_array_stood_still(sim, report, tmp_path):
    """``--average-pings``: the simulated robot drives, so with the bag's odom frame every ping is heard alone (the
    report's scores to the last digit); told the array never moves (``still_frame ''``), up to four pings are
    averaged, exactly as the same stream through SonarPipeline with the node's sonar.average_pings."""
    from avperception.config import SonarConfig
    from avperception.eval.live import score_stream
    from avperception.eval.replay import replay_eval

    bag, traj, _ = sim
    alone = {p["ping"]: p["delta1"] for p in report[1]["pings"]}
    moving = replay_eval(bag, tmp_path / "odom", threads=1, progress=False, average_pings=4)
    assert moving["settings"]["average_pings"] == 4 and moving["settings"]["still_frame"] == "odom"
    assert not any("still_frame" in n for n in moving["notes"])  # the bag's TF gave every window a pose
    assert [p["pings_averaged"] for p in moving["pings"]] == [1] * len(alone)
    assert {p["ping"]: p["delta1"] for p in moving["pings"]} == alone
    fixed = replay_eval(bag, tmp_path / "fixed", threads=1, progress=False, average_pings=4, still_frame="")
    assert [p["pings_averaged"] for p in fixed["pings"]] == [min(i + 1, 4) for i in range(len(alone))]
    records, _ = score_stream(traj, PINGS, SonarConfig(threads=1, average_pings=4, still_frame=""))
    by_ping = {p["ping"]: p["delta1"] for p in fixed["pings"]}
    for r in records:
        assert by_ping[r["ping"]] == pytest.approx(r["delta1"], abs=1e-6)
    assert any(abs(by_ping[k] - alone[k]) > 1e-4 for k in by_ping)
    lost = replay_eval(bag, tmp_path / "lost", threads=1, progress=False, average_pings=4, still_frame="map")
    assert any("still_frame map: no transform" in n for n in lost["notes"])
    assert [p["pings_averaged"] for p in lost["pings"]] == [1] * len(alone)
