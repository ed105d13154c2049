"""``avperception-train``: the training package's command line.

    avperception-train datagen --out DIR --num-scenes N [--config FILE] [--workers W] [--seed S]
    avperception-train preview DIR [--num 4] [--out PNG_DIR]
    avperception-train export-bag DIR --out BAG [--scenes 0,1,2] [--storage sqlite3|mcap]
    avperception-train record-sim --out BAG [--pings N] [--room R] [--storage mcap|sqlite3]
    avperception-train import-bag BAG --out DIR [--array NAME] [--align start|center|end|chirp] ...
    avperception-train dataset-info DIR
    avperception-train export-bundle CHECKPOINT|MODEL.safetensors|default --out DIR [--data DIR | --datagen-config YAML]
    avperception-train info
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def cmd_info(args: argparse.Namespace) -> int:
    import avperception_train
    from avperception.config import array_presets

    print(f"avperception-train {avperception_train.__version__}")
    print("arrays:", ", ".join(array_presets()))
    return 0


def _load_cfg(args: argparse.Namespace):
    from .datagen.config import load_config, parse_set

    over = parse_set(getattr(args, "set", None) or [])
    if getattr(args, "seed", None) is not None:
        over["seed"] = args.seed
    if getattr(args, "array", None) is not None:
        over["array"] = args.array
    if getattr(args, "scenes_per_shard", None) is not None:
        over["scenes_per_shard"] = args.scenes_per_shard
    dist = getattr(args, "distribution", None)  # only datagen takes one
    return load_config(args.config, over, **({"distribution": dist} if dist else {}))


def cmd_datagen(args: argparse.Namespace) -> int:
    from .datagen.engine import run_datagen

    cfg = _load_cfg(args)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    if args.out is None or args.num_scenes is None:
        raise _Usage("datagen needs --out DIR and --num-scenes N")
    workers = args.workers if args.workers is not None else max(1, os.cpu_count() or 1)
    only = [x.strip() for x in args.splits.split(",") if x.strip()] if args.splits else None
    run_datagen(cfg, args.out, args.num_scenes, workers, overwrite=args.overwrite, show_progress=not args.quiet,
                only_splits=only)
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from .datagen.preview import preview

    idx = [int(v) for v in args.scenes.split(",")] if args.scenes else None
    for p in preview(args.dir, args.out, args.num, args.split, idx):
        print(p)
    return 0


def cmd_export_bag(args: argparse.Namespace) -> int:
    from .datagen.rosbag_io import export_bag

    idx = [int(v) for v in args.scenes.split(",")] if args.scenes else None
    if idx is None and args.num is not None:
        idx = list(range(args.num))
    res = export_bag(args.dir, args.out, idx, args.storage, args.chunk, args.encoding, args.period)
    print(json.dumps(res, indent=1))
    return 0


def cmd_record_sim(args: argparse.Namespace) -> int:
    from .datagen.sim_bag import record_sim

    res = record_sim(args.out, args.pings, args.room, args.storage, args.model, args.seed, args.rate, args.chunk,
                     args.encoding, publish_pings=not args.no_pings, progress=not args.quiet, array=args.array)
    print(json.dumps(res, indent=1))
    return 0


def cmd_import_bag(args: argparse.Namespace) -> int:
    from .datagen.rosbag_io import import_bag

    m = import_bag(args.bag, args.out, array=args.array, config=args.config, audio_topic=args.audio_topic,
                   depth_topic=args.depth_topic, info_topic=args.info_topic, camera_xyz=tuple(args.camera_xyz),
                   camera_rpy_deg=tuple(args.camera_rpy), align=args.align, min_interval_s=args.min_interval,
                   split=args.split, room_id=args.room_id, overwrite=args.overwrite, show_progress=not args.quiet,
                   active={"auto": None, "yes": True, "no": False}[args.active])
    print(f"{m['num_scenes']} frames -> {args.out} (skipped: {m['import']['skipped']}, "
          f"audio gaps: {m['import']['audio_gaps']})")
    return 0


def cmd_dataset_info(args: argparse.Namespace) -> int:
    from .datagen.shards import read_manifest

    m = read_manifest(args.dir)
    only = m.get("only_splits")
    held = (f"{sum(v['scenes'] for v in m['splits'].values())} scenes ({', '.join(only)} only) of "
            if only else "")
    print(f"{args.dir}: {held}{m['num_scenes']} scenes ({m.get('source', '?')}), {len(m['shards'])} shards, "
          f"complete={m.get('complete')}")
    print(f"array {m['array']['name']} ({len(m['array']['positions'])} mics), seed {m.get('seed')}, "
          f"config {m.get('config_digest')}")
    for s, v in m["splits"].items():
        print(f"  {s:5s}: {v['scenes']} scenes in {len(v['rooms'])} rooms")
    g = m["grids"]
    print(f"panorama {g['panorama']['shape']}, energy {g['energy']['shape']}, voxels {g['voxels']['shape_dhw']}")
    if m.get("source") == "synthetic":  # a recording's surfaces are unknown
        from .datagen.config import config_from_dict
        from .datagen.scene import echo_free_materials

        cfg = config_from_dict(m["config"])
        quiet, mats = echo_free_materials(cfg), cfg.room.materials
        drawn = [f"{k} {sum(x in quiet for x in getattr(mats, k))} of {len(getattr(mats, k))}"
                 for k in ("floor", "wall", "ceiling", "obstacle")]
        print(f"materials that return no echo of the sweep: {', '.join(sorted(quiet)) or 'none'} "
              f"(of the materials drawn: {', '.join(drawn)})")
    print("libraries:", ", ".join(f"{k} {v}" for k, v in m["libraries"].items()))
    return 0


class _Usage(Exception):
    pass


def _floats3(text: str) -> list[float]:
    from .datagen.config import parse_xyz

    try:
        return parse_xyz(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    from avperception.config import DEFAULT_ARRAY

    from .datagen.config import DISTRIBUTIONS

    ap = argparse.ArgumentParser(prog="avperception-train", description="avperception training tools")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="versions and available arrays")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("datagen", help="generate synthetic echo scenes into shards",
                       description="Simulate rooms (pyroomacoustics), the robot's sweep and ambient sources as "
                                   "heard by a microphone array, and ray-cast ground truth (open3d): depth and "
                                   "semantic panoramas, occupancy voxels, energy targets. Deterministic from the "
                                   "seed whatever the worker count; an interrupted run resumes when started again.")
    p.add_argument("--config", help="datagen YAML (default: the shipped datagen.yaml); only changed keys needed")
    p.add_argument("--distribution", choices=list(DISTRIBUTIONS), default=DISTRIBUTIONS[0],
                   help="the scenes' distribution: standard (the shipped datagen.yaml) or wide (datagen_wide.yaml: "
                        "arrays 0.1-2 m high and close to walls and boxes, rooms up to 12 m and corridors, more, "
                        "louder and nearer ambient sources); --config and --set override it")
    p.add_argument("--out", help="dataset directory (created; resumed when it holds the same dataset)")
    p.add_argument("--num-scenes", type=_positive, help="number of scenes")
    p.add_argument("--workers", type=_positive, default=None,
                   help=f"worker processes (default: one per CPU, {os.cpu_count()} here); "
                        "the output does not depend on it")
    p.add_argument("--seed", type=int, help="override the config's seed")
    p.add_argument("--array", help="override the config's array (preset name or YAML path)")
    p.add_argument("--scenes-per-shard", type=_positive, help="override the config's scenes_per_shard")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any config key, e.g. --set room.size_m=[3,5] (repeatable; values are YAML)")
    p.add_argument("--splits", metavar="NAMES",
                   help="only the scenes of these splits (comma-separated: train, val, test), exactly as the "
                        "--num-scenes dataset holds them: e.g. --splits test gives its held-out rooms in a tenth "
                        "of the time (default: all)")
    p.add_argument("--overwrite", action="store_true", help="delete an existing dataset in --out first")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_datagen)

    p = sub.add_parser("preview", help="render a few scenes of a dataset to PNG",
                       description="One PNG per scene: floor plan with robot, sources and voxel crop; depth and "
                                   "semantic panoramas; energy target; occupancy voxels; waveforms; echo profile.")
    p.add_argument("dir", help="dataset directory")
    p.add_argument("--out", help="where to write the PNGs (default DIR/preview)")
    p.add_argument("--num", type=_positive, default=4, help="scenes to render, spread over the dataset (default 4)")
    p.add_argument("--scenes", help="comma-separated dataset positions instead of --num")
    p.add_argument("--split", choices=["train", "val", "test"], help="only scenes of this split")
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("export-bag", help="write dataset scenes to a rosbag2",
                       description="Audio as avperception_msgs/AudioFrame chunks, ground-truth depth / semantic / "
                                   "energy Images, voxel PointCloud2, source MarkerArray, robot pose on /tf, and "
                                   "the pinhole depth camera + camera_info when the dataset has one.")
    p.add_argument("dir", help="dataset directory")
    p.add_argument("--out", required=True, help="bag directory to create")
    p.add_argument("--scenes", help="comma-separated dataset positions (default all)")
    p.add_argument("--num", type=_positive, help="export the first N scenes")
    p.add_argument("--storage", choices=["sqlite3", "mcap"], default="sqlite3")
    p.add_argument("--chunk", type=_positive, default=512, help="audio samples per message (default 512)")
    p.add_argument("--encoding", choices=["F32LE", "S16LE", "S32LE"], default="F32LE")
    p.add_argument("--period", type=float, default=1.0, help="seconds between scenes in the bag (default 1)")
    p.set_defaults(func=cmd_export_bag)

    p = sub.add_parser("record-sim", help="a bag of the simulated active room: a robot pinging as it drives",
                       description="Audio (AudioFrame chunks), pings, TF and per ping the truth (depth, semantic, "
                                   "occupancy, source poses) of a robot pinging through a data-engine room, stamped "
                                   "as sim_audio_node publishes them (avperception replay-eval scores it).")
    p.add_argument("--out", required=True, help="bag directory to create")
    p.add_argument("--pings", type=_positive, default=40, help="pings to record (default 40 = 10 s at 4 Hz)")
    p.add_argument("--room", type=int, default=0, help="data-engine room id (default 0)")
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    p.add_argument("--array", help="array preset or YAML (default robot_8mic); the model must fit it")
    p.add_argument("--model", default="default",
                   help="model bundle whose sweep the robot emits (default: the shipped one for the array)")
    p.add_argument("--seed", type=int, default=0, help="trajectory seed (path, sources, noise)")
    p.add_argument("--rate", type=float, default=4.0, help="pings per second (default 4)")
    p.add_argument("--chunk", type=_positive, default=1024, help="audio samples per message (default 1024)")
    p.add_argument("--encoding", choices=["F32LE", "S16LE", "S32LE"], default="F32LE",
                   help="audio PCM (F32LE keeps the simulated samples exactly)")
    p.add_argument("--no-pings", action="store_true", help="leave /sonar/pings out (pings found on the direct path)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_record_sim)

    p = sub.add_parser("import-bag", help="turn a real recording (audio + depth camera) into shards",
                       description="Cut an audio window at each depth image (time-aligned), project the depth "
                                   "image into the range panorama and the occupancy crop, and write shards in the "
                                   "dataset format (no semantic / energy labels).")
    p.add_argument("bag", help="rosbag2 directory (sqlite3 or mcap)")
    p.add_argument("--out", required=True, help="dataset directory to write")
    p.add_argument("--array", default=DEFAULT_ARRAY,
                   help=f"microphone array (preset or YAML path; default {DEFAULT_ARRAY})")
    p.add_argument("--config", help="datagen YAML for audio length, grids, voxel crop and sweep (default shipped)")
    p.add_argument("--audio-topic", default="/audio")
    p.add_argument("--depth-topic", default="/camera/depth/image_raw")
    p.add_argument("--info-topic", default="/camera/depth/camera_info")
    p.add_argument("--camera-xyz", type=_floats3, default=[0.0, 0.0, 0.0],
                   help="camera position in the array frame, metres: x,y,z")
    p.add_argument("--camera-rpy", type=_floats3, default=[0.0, 0.0, 0.0],
                   help="camera roll,pitch,yaw in degrees relative to the array's +x (x forward)")
    p.add_argument("--align", choices=["start", "center", "end", "chirp"], default="start",
                   help="where the audio window sits relative to the image stamp (chirp: at the sweep emission)")
    p.add_argument("--min-interval", type=float, default=0.0, help="minimum seconds between imported frames")
    p.add_argument("--active", choices=["auto", "yes", "no"], default="auto",
                   help="does the audio hold the robot's sweep? (auto: yes with --align chirp)")
    p.add_argument("--split", choices=["train", "val", "test"], default="train")
    p.add_argument("--room-id", type=int, default=0, help="room id for the split bookkeeping")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_import_bag)

    p = sub.add_parser("dataset-info", help="summarise a dataset's manifest")
    p.add_argument("dir")
    p.set_defaults(func=cmd_dataset_info)

    from .learn.commands import add_commands

    add_commands(sub)  # train, evaluate, export, recipe
    return ap


def main(argv: list[str] | None = None) -> int:
    from avperception.config import ConfigError
    from avperception.inference.bundle import BundleError

    from .datagen.config import DatagenConfigError
    from .datagen.rosbag_io import BagError
    from .datagen.shards import DatasetError
    from rosbags.highlevel import AnyReaderError

    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except _Usage as e:
        ap.error(str(e))
    except (DatagenConfigError, ConfigError, DatasetError, BagError, FileNotFoundError, IndexError, BundleError,
            ValueError) as e:  # ValueError: inputs that do not fit (a model and its data, a part to train, ...)
        print(f"avperception-train {args.command}: error: {e}", file=sys.stderr)
        return 2
    except AnyReaderError as e:
        print(f"avperception-train {args.command}: error: cannot read the bag ({e}); is it a complete rosbag2 "
              "directory (metadata.yaml + its .mcap or .db3 files)?", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\navperception-train {args.command}: interrupted (datagen resumes when run again)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
