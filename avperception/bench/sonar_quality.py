"""Quality of the learned outputs live: a robot pinging through simulated rooms, scored ping by ping.

For each room (data-engine rooms, ``--rooms``) the robot drives its loop pinging at 4 Hz with moving ambient
sources; the continuous stream (earlier pings' tails included) goes through the node's sonar code in 1024-sample
chunks (:func:`avperception.eval.live.score_stream`), and every ping's depth, classes and voxels are scored
against the truth rendered for it, the depth again on the surfaces that return an echo (not on a wall that
absorbs the whole sweep, which no sonar hears). ``--isolated`` also scores, for the same pings, the data engine's own
independent scene at the same pose (no earlier ping, sources standing still: what the student was trained on),
so the difference is what the stream costs. ``--known-height`` gives the node each room's array height
(``sonar.array_height_m``), as a robot that knows where its array is mounted does. ``--rooms test:N`` (the default
``test:3``) takes the first N rooms of the data engine's test split (rooms no training run of the default seed has
used; rooms 0-9 are mostly training rooms). ``--average-pings K`` scores the same stream a second time with the
node's ``sonar.average_pings K`` (the array's pose from the trajectory, as the node reads it from TF): where the robot
stands still (``--speed 0``), each ping is heard as the mean of up to K pings; where it drives, the node hears each
ping alone. ``--loud`` makes the ambient sources as loud as the loud test set's (-30 to -18 dBFS at 1 m).

    avperception bench sonar-quality [--rooms test:N|0,3,5] [--pings 40] [--isolated] [--detect] [--known-height]
        [--average-pings K] [--speed M_S] [--loud] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from ..config import ConfigError, SonarConfig
from .common import machine


def heard_scores(traj, records: list[dict]) -> dict:
    """Depth delta_1 (each ping's and the mean) and AbsRel (mean) over the pings without the pixels whose surface
    returns no echo of the sweep (a wall no sonar hears), and those pixels' share of the known ones; then the same
    (``reflected_*``, ``silent_share``) also without the pixels whose surface has no point that reflects the sweep
    straight back, to which the simulator gives no first-order echo
    (:func:`avperception_train.datagen.scene.silent_view`)."""
    from avperception_train.datagen.scene import silent_view

    from ..eval.metrics import depth_metrics

    rows, reflected, counts = [], [], np.zeros(3)  # known pixels echo-free, also those with no specular point; known
    for r in records:
        spec, t = traj.scene_spec(r["ping"], sources=False), r["truth"]
        quiet, unreflected = silent_view(traj.cfg, traj.room, spec.origin, spec.rotation)
        known = np.isfinite(t.depth)
        quiet, silent = quiet & known, (quiet | unreflected) & known
        rows.append(depth_metrics(r["out"].depth, np.where(quiet, np.nan, t.depth)))
        reflected.append(depth_metrics(r["out"].depth, np.where(silent, np.nan, t.depth)))
        counts += (quiet.sum(), silent.sum(), known.sum())
    share = counts[:2] / counts[2] if counts[2] else np.full(2, np.nan)
    return {"heard_depth_delta1_mean": float(np.nanmean([x["delta1"] for x in rows])),
            "heard_depth_abs_rel_mean": float(np.nanmean([x["abs_rel"] for x in rows])),
            "echo_free_share": float(share[0]),
            "heard_delta1_per_ping": [round(float(x["delta1"]), 4) for x in rows],
            "reflected_depth_delta1_mean": float(np.nanmean([x["delta1"] for x in reflected])),
            "reflected_depth_abs_rel_mean": float(np.nanmean([x["abs_rel"] for x in reflected])),
            "silent_share": float(share[1])}


def isolated_scores(traj, records: list[dict], sonar) -> list[dict]:
    """The same pings as independent data-engine scenes (sample 0 = onset, nothing before it)."""
    from avperception_train.datagen.scene import simulate_audio

    from ..eval.live import score_outputs

    out = []
    for r in records:
        spec = traj.scene_spec(r["ping"])
        x = simulate_audio(traj.cfg, spec, traj.mics)
        x = np.clip(x, -1.0, 1.0) if traj.cfg.audio.clip else x
        o = sonar.infer(x.astype(np.float32))
        t = r["truth"]
        out.append(score_outputs(o, t.depth, t.semantic, t.occupancy))
    return out


DEFAULT_ROOMS = "test:3"


def parse_rooms(spec: str) -> tuple[int, ...]:
    """Room ids from ``"0,3,5"``, or ``"test:N"`` / ``"val:N"`` / ``"train:N"``: the first N rooms of that split of
    the default datagen config (:func:`avperception_train.datagen.scene.room_split`). ValueError otherwise."""
    split, _, n = spec.partition(":")
    if not n:
        try:
            rooms = tuple(int(x) for x in spec.split(",") if x.strip())
        except ValueError:
            raise ValueError(f"--rooms {spec!r}: give room ids (0,3,5) or a split and a count (test:10)") from None
        if not rooms or min(rooms) < 0:
            raise ValueError(f"--rooms {spec!r}: give at least one room id, none negative")
        return rooms
    from avperception_train.datagen.config import load_config
    from avperception_train.datagen.scene import room_split
    from avperception_train.datagen.shards import SPLITS

    if split not in SPLITS or not n.isdigit() or int(n) < 1:
        raise ValueError(f"--rooms {spec!r}: a split is {', '.join(SPLITS[:-1])} or {SPLITS[-1]} and a count at "
                         "least 1, e.g. test:10")
    cfg, want, out, room = load_config(None), SPLITS.index(split), [], 0
    while len(out) < int(n):
        if room_split(cfg, room) == want:
            out.append(room)
        room += 1
    return tuple(out)


# the loud test set's ambient levels (RMS dBFS at 1 m; docs/training.md)
LOUD_LEVEL_DB = (-30.0, -18.0)
DEFAULT_SPEED_M_S = 0.15


def run(rooms=None, pings: int = 40, isolated: bool = False, detect: bool = False, seed: int = 0,
        known_height: bool = False, average_pings: int = 1, speed_m_s: float = DEFAULT_SPEED_M_S,
        loud: bool = False) -> dict:
    """Score ``pings`` pings in each of ``rooms`` (room ids; None: :data:`DEFAULT_ROOMS`); with ``average_pings``
    above 1 the same stream again with the node's ``sonar.average_pings``."""
    import dataclasses

    from ..demo import active_room
    from ..eval.live import score_stream, summarize_scores
    from ..inference.backends import pin_threads

    pin_threads(1)
    rows = []
    for room in parse_rooms(DEFAULT_ROOMS) if rooms is None else rooms:
        traj = active_room(int(room), 4.0, seed, speed_m_s=speed_m_s,
                           level_db=LOUD_LEVEL_DB if loud else None)
        cfg = SonarConfig(array_height_m=traj.array_height if known_height else 0.0)
        records, sonar = score_stream(traj, pings, cfg, announce=not detect)
        row = {"room": int(room), "scene": traj.describe(), **summarize_scores(records),
               "pings_skipped": {k: v for k, v in sonar.aligner.skipped.items() if v}}
        row["delta1_per_ping"] = [round(float(r["delta1"]), 4) for r in records]
        row.update(heard_scores(traj, records))
        if average_pings > 1:
            avg, _ = score_stream(traj, pings, dataclasses.replace(cfg, average_pings=int(average_pings)),
                                  announce=not detect)
            heard = heard_scores(traj, avg)
            row["averaged"] = {**summarize_scores(avg), "heard_depth_delta1_mean": heard["heard_depth_delta1_mean"],
                               "delta1_per_ping": [round(float(r["delta1"]), 4) for r in avg],
                               "pings_averaged_mean": float(np.mean([r["out"].pings_averaged for r in avg]))}
        if isolated:
            iso = isolated_scores(traj, records, sonar)
            row["isolated_depth_delta1_mean"] = float(np.nanmean([s["delta1"] for s in iso]))
            row["isolated_depth_abs_rel_mean"] = float(np.nanmean([s["abs_rel"] for s in iso]))
            row["isolated_class_accuracy_mean"] = float(np.nanmean([s["class_acc"] for s in iso]))
        rows.append(row)
    d1 = np.concatenate([r["delta1_per_ping"] for r in rows])
    heard = np.concatenate([r["heard_delta1_per_ping"] for r in rows])
    out = {"rows": rows, "pings_scored": int(d1.size), "depth_delta1_mean": float(np.nanmean(d1)),
           "heard_depth_delta1_mean": float(np.nanmean(heard)),
           "depth_delta1_p10": float(np.nanpercentile(d1, 10)), "detect": detect, "known_height": known_height,
           "average_pings": int(average_pings), "speed_m_s": float(speed_m_s), "loud": bool(loud),
           "machine": machine()}
    if average_pings > 1:
        a1 = np.concatenate([r["averaged"]["delta1_per_ping"] for r in rows])
        out["averaged"] = {"depth_delta1_mean": float(np.nanmean(a1)),
                           "depth_delta1_p10": float(np.nanpercentile(a1, 10)),
                           "pings_averaged_mean": float(np.mean([r["averaged"]["pings_averaged_mean"] for r in rows]))}
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--rooms", default=DEFAULT_ROOMS,
                    help=f"test:N, the first N rooms of the data engine's test split (default {DEFAULT_ROOMS}: rooms "
                         "no training used), or room ids (0,3,5)")
    ap.add_argument("--pings", type=int, default=40, help="pings per room (default 40)")
    ap.add_argument("--isolated", action="store_true", help="also score the same poses as independent scenes")
    ap.add_argument("--detect", action="store_true", help="no Ping messages: find every ping on its direct path")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--known-height", dest="known_height", action="store_true",
                    help="give the node each room's array height (sonar.array_height_m); default: unknown")
    ap.add_argument("--average-pings", dest="average_pings", type=int, default=1, metavar="K",
                    help="also score the stream with the node's sonar.average_pings K (default 1: not)")
    ap.add_argument("--speed", type=float, default=DEFAULT_SPEED_M_S, metavar="M_S",
                    help=f"the robot's speed along its loop (default {DEFAULT_SPEED_M_S}; 0: it stands still)")
    ap.add_argument("--loud", action="store_true",
                    help="ambient sources at %g to %g dBFS at 1 m, as the loud test set's" % LOUD_LEVEL_DB)
    ap.add_argument("--json", action="store_true")


def run_cli(a: argparse.Namespace) -> int:
    try:
        rooms = parse_rooms(a.rooms)
        SonarConfig(average_pings=a.average_pings).validate()  # the node's own bounds
        if not a.speed >= 0:
            raise ValueError(f"--speed must be a speed in m/s >= 0, got {a.speed}")
    except (ValueError, ConfigError) as e:
        print(f"avperception bench sonar-quality: error: {e}", file=sys.stderr)
        return 2
    from ..eval.live import describe_safety

    res = run(rooms, a.pings, a.isolated, a.detect, a.seed, a.known_height, a.average_pings, a.speed, a.loud)
    if a.json:
        print(json.dumps(res))
        return 0
    for r in res["rows"]:
        iso = (f" | isolated scenes: delta1 {r['isolated_depth_delta1_mean']:.3f}, AbsRel "
               f"{r['isolated_depth_abs_rel_mean']:.3f}, class acc {r['isolated_class_accuracy_mean']:.3f}"
               if "isolated_depth_delta1_mean" in r else "")
        print(f"{r['scene']}\n  stream: {r['scored']} pings, depth delta1 {r['depth_delta1_mean']:.3f}, AbsRel "
              f"{r['depth_abs_rel_mean']:.3f}, class acc {r['class_accuracy_mean']:.3f}, voxel IoU "
              f"{r['voxel_iou_mean']:.3f}, worst onset correction {r['onset_correction_max_samples']} samples{iso}\n"
              f"  on the surfaces that return an echo ({1 - r['echo_free_share']:.1%} of the pixels): depth delta1 "
              f"{r['heard_depth_delta1_mean']:.3f}, AbsRel {r['heard_depth_abs_rel_mean']:.3f}; where the sweep "
              f"also reflects straight back ({1 - r['silent_share']:.1%}): delta1 "
              f"{r['reflected_depth_delta1_mean']:.3f}, AbsRel {r['reflected_depth_abs_rel_mean']:.3f}\n"
              f"  {describe_safety(r)}")
        if "averaged" in r:
            v = r["averaged"]
            print(f"  up to {res['average_pings']} pings averaged ({v['pings_averaged_mean']:.2f} on average): depth "
                  f"delta1 {v['depth_delta1_mean']:.3f}, AbsRel {v['depth_abs_rel_mean']:.3f}, class acc "
                  f"{v['class_accuracy_mean']:.3f}, voxel IoU {v['voxel_iou_mean']:.3f}; on the surfaces that return "
                  f"an echo {v['heard_depth_delta1_mean']:.3f}")
    how = (" (pings found on the direct path)" if res["detect"] else "") + (
        " (the array height given)" if res["known_height"] else "")
    print(f"all rooms: {res['pings_scored']} pings, depth delta1 mean {res['depth_delta1_mean']:.3f} "
          f"(10th percentile {res['depth_delta1_p10']:.3f}){how}; on the surfaces that return an echo "
          f"{res['heard_depth_delta1_mean']:.3f}")
    if "averaged" in res:
        v = res["averaged"]
        print(f"  with up to {res['average_pings']} pings averaged ({v['pings_averaged_mean']:.2f} on average; the "
              f"robot at {res['speed_m_s']:g} m/s): depth delta1 mean {v['depth_delta1_mean']:.3f} (10th percentile "
              f"{v['depth_delta1_p10']:.3f}), {v['depth_delta1_mean'] / res['depth_delta1_mean']:.3f}x each ping alone")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="avperception bench sonar-quality", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run_cli(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
