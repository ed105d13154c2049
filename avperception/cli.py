"""``avperception``: the command line.

Commands:
    localize AUDIO.wav --array ARRAY [--sources K] [--json]   offline localisation of a multichannel WAV
    infer AUDIO.wav [--model BUNDLE] --out DIR                learned depth, classes, occupancy of each ping
    calibrate-latency --device D [--seconds 3]                the emitter's output latency (full-duplex card)
    demo [--out DIR] [--ros]                                  simulated room through the pipeline
    record --out BAG [--topics T ...] [--duration S]          record the running graph's topics into a rosbag2
    compare-bags A B [--topic sonar/depth] [--out REPORT.md]  two recordings of the outputs compared ping by ping
    info                                                      versions, arrays, beamformers
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """``(channels, samples)`` float32 in [-1, 1] and the rate, from a PCM or float WAV."""
    from scipy.io import wavfile

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file: {p}")
    try:
        fs, data = wavfile.read(p)
    except ValueError as e:
        raise ValueError(f"{p}: not a readable WAV file ({e})") from None
    data = np.atleast_2d(data.T) if data.ndim > 1 else data[None]
    if data.dtype == np.int16:
        x = data / 32768.0
    elif data.dtype == np.int32:
        x = data / 2147483648.0
    elif data.dtype == np.uint8:
        x = (data.astype(np.float64) - 128) / 128.0
    else:
        x = data
    return np.asarray(x, dtype=np.float32), int(fs)


def write_wav(path: str | Path, x: np.ndarray, fs: int) -> None:
    """Write ``(channels, samples)`` float audio as 32-bit float WAV."""
    from scipy.io import wavfile

    wavfile.write(Path(path), int(fs), np.asarray(x, dtype=np.float32).T)


def cmd_localize(a: argparse.Namespace) -> int:
    from .config import load_array, load_pipeline_config
    from .pipeline import localize

    array = load_array(a.array)
    x, fs = read_wav(a.audio)
    x = array.select_channels(x)
    cfg = load_pipeline_config(a.config) if a.config else None
    sources = localize(x, array, fs, a.sources, cfg)
    if a.json:
        print(json.dumps({"sources": [s.to_dict() for s in sources]}))
    else:
        print(f"{a.audio}: {x.shape[1] / fs:.2f} s, {x.shape[0]} mics ({array.name}), {fs} Hz")
        for i, s in enumerate(sources):
            print(f"  source {i}: azimuth {s.azimuth_deg:7.2f} deg  elevation {s.elevation_deg:6.2f} deg  power {s.power:.3f}")
        if array.is_planar and array.rank == 2:
            print("  (planar array: elevation is reported on the side its normal points to)")
    return 0


def cmd_infer(a: argparse.Namespace) -> int:
    from .config import load_array
    from .inference.bundle import load_bundle
    from .sonar import infer

    given = load_array(a.array) if a.array else None
    bundle = load_bundle(a.model, array=given.name if given is not None else None)
    array = given if given is not None else bundle.array
    x, fs = read_wav(a.audio)
    x = array.select_channels(x)
    onsets = None if a.onset is None else [a.onset]
    results = infer.run(x, fs, bundle, array, a.backend, a.threads, onsets, log=print if a.verbose else None,
                        array_height_m=a.array_height, average_pings=a.average_pings)
    if not results:
        print(f"{a.audio}: no complete ping window found ({x.shape[1] / fs:.2f} s, {x.shape[0]} mics); is the "
              "sweep in it? (pass --onset N when sample N is the onset)", file=sys.stderr)
        return 1
    infer.write(a.out, results, bundle, str(a.audio), array_height_m=a.array_height)
    for k, o in results:
        d = o.depth[np.isfinite(o.depth)]
        print(f"ping at sample {k} ({k / fs:.3f} s): depth {np.min(d):.2f}-{np.max(d):.2f} m, "
              f"{int(o.occupancy.sum())} occupied voxels, {o.infer_ms:.1f} ms")
    extra = (", depth_uncertainty*.npy, depth_near_bound*.npy, depth_confident*.npy" if bundle.has_depth_uncertainty
             else "")
    print(f"wrote {len(results)} window(s) to {a.out} (depth*.npy, semantic*.npy, occupancy*.npy{extra}, "
          "preview*.png, meta.json)")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    if a.ros:
        from .ros.demo import run_ros_demo

        return run_ros_demo(a.array, a.duration, a.mode)
    from .demo import run

    s = run(a.out, a.array, a.seconds, a.seed)
    print(f"array {s['array']}, {s['frames']} frames, map {s['map_shape'][0]}x{s['map_shape'][1]}")
    for j, ps in enumerate(s["per_source"]):
        kind = "moving" if ps["moving"] else "static"
        print(f"source {j} ({ps['signal']}, {kind}): median error {ps['median_deg']:.1f} deg, "
              f"p90 {ps['p90_deg']:.1f} deg, found within {ps['threshold_deg']:.0f} deg in {100 * ps['within_threshold']:.0f}% of frames")
    print(f"compute {s['compute_ms_median']:.2f} ms per frame = {100 * s['real_time_factor']:.1f}% of real time")
    print(f"pictures: {Path(a.out) / 'energy_maps.png'}, {Path(a.out) / 'tracks.png'}; numbers: {Path(a.out) / 'summary.json'}")
    if a.pings <= 0:
        return 0
    from .demo import run_sonar
    from .eval.live import describe_safety

    print(f"\nlearned outputs: a robot pinging at 4 Hz as it drives through a simulated room ({a.pings} pings)")
    s = run_sonar(a.out, a.pings, a.room, a.seed)
    print(s["scene"])
    print(f"{s['scored']} pings aligned and scored ({s['backend']}): depth delta1 {s['depth_delta1_mean']:.3f}, "
          f"AbsRel {s['depth_abs_rel_mean']:.3f}; class accuracy {s['class_accuracy_mean']:.3f}; "
          f"voxel IoU {s['voxel_iou_mean']:.3f}; inference {s['inference_ms_median']:.1f} ms "
          f"(p99 {s['inference_ms_p99']:.1f})")
    print(describe_safety(s))
    print(f"pictures: {Path(a.out) / 'sonar.png'}; numbers: {Path(a.out) / 'sonar_summary.json'}")
    return 0


def cmd_replay_eval(a: argparse.Namespace) -> int:
    from .eval.replay import ReplaySettings, replay_eval

    s = ReplaySettings(model=a.model, backend=a.backend, threads=a.threads, audio_topic=a.audio_topic,
                       ping_topic=a.ping_topic, depth_topic=a.depth_topic, info_topic=a.info_topic,
                       realtime=a.realtime, beamformer_every=a.beamformer_every, detect=not a.no_detect,
                       workers=a.workers, beam_batch=a.beam_batch, array_height_m=a.array_height,
                       floor_frame=a.floor_frame, average_pings=a.average_pings, still_frame=a.still_frame)
    m = replay_eval(a.bag, a.out, s)
    o, sp = m["overall"], m["speed"]
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"{o['pings']} pings scored: depth delta1 {f(o['delta1_mean'])}, AbsRel {f(o['abs_rel_mean'])}, false far "
          f"{f(o['false_far_rate'])} of {o['near_pixels']} px within 0.5 m, near recall {f(o['near_recall'])}, "
          f"uncertainty AUSE {f(o['ause_mean'])} (random {f(o['ause_random_mean'])}), class accuracy "
          f"{f(o['class_acc_mean'])}, voxel IoU {f(o['voxel_iou_mean'])}; DOA p50 "
          f"{f(o.get('doa_error_deg_median'))} deg; skipped {m['skipped'] or 'nothing'}")
    cpu = sp["cpu_s"]
    print(f"{sp['audio_s']:.1f} s of audio in {sp['wall_s']:.1f} s ({sp['x_real_time']:.1f}x real time; CPU "
          f"{cpu['total']:.1f} s: network {cpu['network']:.1f}, beamformer {cpu['beamformer']:.1f}, reading and "
          f"scoring {cpu['reading_scoring']:.1f})" + (f"; report: {a.out}/index.html" if a.out else ""))
    return 0


def cmd_record(a: argparse.Namespace) -> int:
    from .ros.recorder import record

    s = record(a.out, a.topics, a.duration, a.storage)
    return 0 if sum(s["messages"].values()) else 1


def cmd_compare_bags(a: argparse.Namespace) -> int:
    from .eval.compare import compare_bags, to_markdown

    r = compare_bags(a.a, a.b, a.topic, None if a.no_semantic else a.semantic_topic, a.tolerance_ms * 1e-3)
    text = to_markdown(r)
    print(text, end="")
    if a.out:
        Path(a.out).write_text(text)
        print(f"written to {a.out}")
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    from . import __version__
    from .config import array_presets, load_array
    from .dsp.beamforming import BEAMFORMERS

    print(f"avperception {__version__}")
    print("beamformers:", ", ".join(sorted(BEAMFORMERS)))
    print("arrays:")
    for name in array_presets():
        arr = load_array(name)
        kind = {1: "linear", 2: "planar", 3: "3-D"}[arr.rank]
        print(f"  {name:16s} {arr.num_mics:2d} mics, {kind}, aperture {arr.aperture * 100:.1f} cm, "
              f"{arr.input_channels} input channels")
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    if a.bench == "beamforming":
        from .bench.beamforming import run_cli
    elif a.bench == "doa":
        from .bench.doa import run_cli
    elif a.bench == "student":
        from .bench.student import run_cli
    elif a.bench == "sonar":
        from .bench.sonar import run_cli
    elif a.bench == "sonar-quality":
        from .bench.sonar_quality import run_cli
    elif a.bench == "soak":
        from .bench.soak import run_cli
    elif a.bench == "replay":
        from .bench.replay import run_cli
    else:
        from .bench.features import run_cli
    return run_cli(a)


def build_parser() -> argparse.ArgumentParser:
    from .config import DEFAULT_ARRAY

    ap = argparse.ArgumentParser(prog="avperception", description="Microphone-array perception: localisation, maps, demos.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("localize", help="localise sound sources in a multichannel WAV")
    p.add_argument("audio", help="multichannel WAV (channels in the array's input layout)")
    p.add_argument("--array", required=True, help="array preset name or YAML file")
    p.add_argument("--sources", type=int, default=1, help="number of sources to report (default 1)")
    p.add_argument("--config", help="pipeline YAML overriding the defaults")
    p.add_argument("--json", action="store_true", help="print JSON: {\"sources\": [{azimuth_deg, elevation_deg, power}]}")
    p.set_defaults(func=cmd_localize)

    p = sub.add_parser("infer", help="learned depth, classes and occupancy of each ping in a multichannel WAV")
    p.add_argument("audio", help="multichannel WAV: one window whose sample 0 is the sweep's onset, or a longer "
                                 "recording whose pings are found on their direct path")
    p.add_argument("--model", default=None, help="model bundle directory (default: the shipped one)")
    p.add_argument("--array", default=None, help="the recording's array (default: the bundle's); must fit the bundle")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--onset", type=int, default=None, help="sample index of the one onset (skips detection)")
    p.add_argument("--array-height", dest="array_height", type=float, default=0.0, metavar="M",
                   help="the array's height above the floor (m), as the node's sonar.array_height_m; 0: unknown "
                        "(default)")
    p.add_argument("--average-pings", dest="average_pings", type=int, default=1, metavar="K",
                   help="hear each ping as the mean of its window and up to K-1 windows before it, as the node's "
                        "sonar.average_pings (a recording made standing still; default 1: each ping alone)")
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "torch"])
    p.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    p.add_argument("--verbose", action="store_true", help="say which backend runs and why")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("demo", help="simulated room through the pipeline: pictures and an error summary")
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--array", default=DEFAULT_ARRAY, help=f"array preset (default {DEFAULT_ARRAY})")
    p.add_argument("--seconds", type=float, default=6.0, help="seconds of audio to simulate (offline demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ros", action="store_true", help="run the sim and perception nodes over real DDS instead")
    p.add_argument("--duration", type=float, default=8.0, help="seconds to run with --ros")
    p.add_argument("--mode", choices=["active", "passive"], default="active",
                   help="with --ros: the simulator pings as its robot drives through a room (active, learned "
                        "outputs scored against the truth) or plays ambient sources in a shoebox (passive)")
    p.add_argument("--pings", type=int, default=24,
                   help="pings of the learned-outputs demo (offline; 0 skips it; needs the training package)")
    p.add_argument("--room", type=int, default=0, help="room of the learned-outputs demo (data engine room id)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="benchmarks: beamforming speed, DOA accuracy, feature and student timing")
    bsub = p.add_subparsers(dest="bench", required=True)
    from .bench import beamforming as bench_bf, doa as bench_doa, features as bench_feat, replay as bench_replay, \
        sonar as bench_sonar, soak as bench_soak, sonar_quality as bench_sonar_quality, student as bench_student

    for name, mod, hlp in (("beamforming", bench_bf, "map speed vs pyroomacoustics and acoular"),
                           ("doa", bench_doa, "DOA accuracy over simulated rooms vs pyroomacoustics"),
                           ("features", bench_feat, "torch feature front-end timing on CPU / CUDA"),
                           ("student", bench_student, "student network inference: ONNX Runtime vs torch eager"),
                           ("sonar", bench_sonar, "learned half as the node runs it: latency per stage, CPU"),
                           ("sonar-quality", bench_sonar_quality,
                            "learned outputs of a robot pinging through simulated rooms, scored per ping"),
                           ("soak", bench_soak, "perception_node fed for minutes, at real time or faster: memory, "
                                                "latency and drops over time"),
                           ("replay", bench_replay, "replay-eval speed on a bag per setting, CPU seconds per stage")):
        bp = bsub.add_parser(name, help=hlp, description=(mod.__doc__ or "").split("\n\n")[0])
        mod.add_arguments(bp)
    p.set_defaults(func=cmd_bench)

    from .sonar.calibrate import add_calibrate_parser

    add_calibrate_parser(sub)

    from .eval.replay import ReplaySettings

    p = sub.add_parser("replay-eval", help="replay a rosbag2 through the node's code and score every ping",
                       description="Reads a bag (mcap or sqlite3) with rosbags, runs the sonar and the beamformer "
                                   "on its audio and pings, scores each ping against the simulator's truth or an "
                                   "RGB-D camera's depth and the sources' directions, and writes a report.")
    p.add_argument("bag", help="rosbag2 directory")
    p.add_argument("--model", default="default", help="model bundle directory (default: the shipped one)")
    p.add_argument("--audio-topic", help="audio topic (default: /audio or the one audio topic)")
    p.add_argument("--ping-topic", help="Ping topic (default: /sonar/pings or the one Ping topic)")
    p.add_argument("--depth-topic", help="depth truth: a camera's depth image (or a panorama) topic")
    p.add_argument("--info-topic", help="the camera's CameraInfo (default: the one beside --depth-topic)")
    p.add_argument("--realtime", action="store_true", help="pace the replay by the bag's clock")
    p.add_argument("--out", help="report folder: metrics.json, summary.md, PNG plots, index.html")
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "torch"])
    p.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    p.add_argument("--workers", type=int, default=ReplaySettings.workers,
                   help="background threads running the network and the beamformer while the bag is read on "
                        f"(default {ReplaySettings.workers}); 0: inline, in the stream's order")
    p.add_argument("--beam-batch", type=int, default=ReplaySettings.beam_batch,
                   help=f"beamformer frames run at once as array operations (default {ReplaySettings.beam_batch}); "
                        "1: frame by frame, as the node (--workers 0 --beam-batch 1: the node's order and code)")
    p.add_argument("--beamformer-every", type=int, default=1,
                   help="run the beamformer on every N-th frame (1: all, as the node; 0: not at all)")
    p.add_argument("--no-detect", action="store_true", help="only pings announced by Ping messages")
    p.add_argument("--array-height", dest="array_height", type=float, default=0.0, metavar="M",
                   help="the array's height above the floor given to the model (m), as the node's "
                        "sonar.array_height_m; 0: unknown (default)")
    p.add_argument("--floor-frame", dest="floor_frame", default="", metavar="FRAME",
                   help="read the array's height above FRAME from the bag's /tf and /tf_static, as the node's "
                        "sonar.floor_frame (the simulator's: base_link)")
    p.add_argument("--average-pings", dest="average_pings", type=int, default=1, metavar="K",
                   help="hear each ping as the mean of up to K pings' windows taken where the array stood still, as "
                        "the node's sonar.average_pings (default 1: each ping alone)")
    p.add_argument("--still-frame", dest="still_frame", default=ReplaySettings.still_frame, metavar="FRAME",
                   help="with --average-pings: the fixed frame of the bag's TF the array must stand still in, as the "
                        f"node's sonar.still_frame (default {ReplaySettings.still_frame}; '': the array never moves)")
    p.set_defaults(func=cmd_replay_eval)

    p = sub.add_parser("record", help="record topics of the running graph into a rosbag2 (default: the node's outputs)",
                       description="Subscribes to the topics as they appear (types from the graph, QoS following "
                                   "their publishers) and writes the messages as received into a new rosbag2.")
    p.add_argument("--out", required=True, help="the new bag directory")
    p.add_argument("--topics", nargs="+", default=None,
                   help="topics to record (default: sonar/depth sonar/semantic sonar/points sonar/occupancy "
                        "sonar/occupancy_grid acoustic/energy acoustic/source_poses /diagnostics)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    p.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"])
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("compare-bags", help="compare two recordings of the node's outputs ping by ping",
                       description="Matches the depth (and class) images of two bags by header stamp and prints "
                                   "B's AbsRel, delta1, largest difference and class agreement against A per ping.")
    p.add_argument("a", help="reference bag (before)")
    p.add_argument("b", help="bag compared with it (after)")
    p.add_argument("--topic", default="sonar/depth", help="depth image topic (default sonar/depth)")
    p.add_argument("--semantic-topic", default="sonar/semantic", help="class image topic, when both bags have it")
    p.add_argument("--no-semantic", action="store_true", help="compare the depth only")
    p.add_argument("--tolerance-ms", type=float, default=1.0, help="header stamps this close are the same ping")
    p.add_argument("--out", help="write the report as markdown here")
    p.set_defaults(func=cmd_compare_bags)

    p = sub.add_parser("info", help="versions, arrays and beamformers")
    p.set_defaults(func=cmd_info)
    return ap


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"avperception {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
