"""``avperception-train`` commands for learning: train, evaluate, export, recipe."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from .config import MODES, load_train_config


def cmd_train(a: argparse.Namespace) -> int:
    from .data import data_dirs
    from .train import train

    cfg = load_train_config(a.config, mode=a.mode, data=a.data, out=a.out, teacher=a.teacher, epochs=a.epochs,
                            batch_size=a.batch_size, device=a.device, max_train_samples=a.max_train_samples, lr=a.lr,
                            init=a.init, train_only=tuple(a.train_only) if a.train_only else None, seed=a.seed,
                            transfer=a.transfer or None)
    if cfg.init == "default" and cfg.data and not cfg.transfer:
        from avperception.inference.bundle import BundleMismatch

        try:
            for d in data_dirs(cfg.data):
                check_default_fits(d)
        except BundleMismatch as e:
            raise BundleMismatch(f"{e}. To start from the shipped model anyway (every tensor that fits), add "
                                 "--transfer", e.differences) from None
    best = train(cfg, resume=a.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"best checkpoint: {best}")
    return 0


def load_student(path: str, device: str = "cpu") -> torch.nn.Module:
    """A student from a checkpoint (``.pt``) or an exported model (``.safetensors``), in eval mode."""
    from .train import load_stage

    if path.endswith(".pt"):
        return load_stage(path, "distill", torch.device(device))[0]
    from avperception.models.student import AudioStudent

    return AudioStudent.load(path).to(device)


def load_predictor(spec: str, data_root: str, device: str = "cpu", known_height: bool = False):
    """A predictor from ``student:PATH`` (checkpoint .pt or exported .safetensors), ``bundle:DIR`` (a model bundle's
    ``model.onnx`` in ONNX Runtime, as the node runs it: recipe bundles have no torch weights; ``default:ARRAY``
    the shipped one; it must fit the data's array), ``teacher:CK``, ``manifold:ATNET_CK,VQVAE_CK``,
    ``manifold-e2e:CK``, ``mean-layout``, ``echo-tof`` or ``echo-planes``. ``known_height``: students and bundles
    are given each scene's true array height above the floor (what a robot that knows its mount gives the node);
    the others cannot take it (``ValueError``)."""
    from .baselines import EchoPlanes, EchoTimeOfFlight, MeanLayout
    from .data import InMemoryScenes
    from .evaluate import torch_predictor
    from .train import load_stage, teacher_view

    kind, _, path = spec.partition(":")
    dev = torch.device(device)
    if known_height and kind not in ("student", "bundle"):
        raise ValueError(f"--known-height: {spec} cannot take the array's height (only student: and bundle: can)")
    if kind == "student":
        model = load_student(path, device)
        check_student_sweep(model, data_root, f"student {path}")
        return torch_predictor(model, "student", device, known_height=known_height)
    if kind == "bundle":
        from avperception.inference.backends import require_height_input
        from avperception.inference.bundle import check_fits, load_bundle

        from .engine import onnx_predictor

        bundle = load_bundle(path)
        check_fits(bundle, *dataset_contract(data_root), **dataset_emitter(data_root))
        if known_height:
            try:
                require_height_input(bundle)
            except ValueError as e:
                raise ValueError(f"--known-height: {e}") from None
        return onnx_predictor(bundle.onnx_path, threads=torch.get_num_threads(), known_height=known_height)
    if kind == "teacher":  # one trained on a camera's view sees only that view of the test rooms too
        fov = teacher_view(path)
        view = InMemoryScenes(data_root, "train", max_samples=1, camera_fov_deg=fov).camera.view if fov else None
        return torch_predictor(load_stage(path, "teacher", dev)[0], "teacher", device, view=view)
    if kind == "manifold":
        at, vq = path.split(",")
        return torch_predictor((load_stage(at, "manifold", dev)[0], load_stage(vq, "vqvae", dev)[0]), "manifold", device)
    if kind == "manifold-e2e":
        return torch_predictor(load_stage(path, "manifold-e2e", dev)[0], "manifold-e2e", device)
    if kind == "mean-layout":
        return MeanLayout(InMemoryScenes(data_root, "train"))
    if kind == "echo-tof":
        train = InMemoryScenes(data_root, "train", max_samples=1)
        return EchoTimeOfFlight(train.info.emitted, train.info.sample_rate)
    if kind == "echo-planes":
        from ..datagen.shards import panorama_grid, read_manifest

        info = InMemoryScenes(data_root, "train", max_samples=1).info
        return EchoPlanes(info.emitted, info.sample_rate, info.array_positions, panorama_grid(read_manifest(data_root)),
                          info.speed_of_sound)
    raise ValueError(f"unknown model spec {spec!r}: use student:PATH, teacher:CK, manifold:AT,VQ, manifold-e2e:CK, "
                     "mean-layout, echo-tof, echo-planes")


def row_names(specs: list[str], width: int = 48) -> list[str]:
    """One table row name per model spec, all different: a long spec is shortened to its head and tail
    unless that would make two rows alike (two manifold students over one VQ-VAE); the same spec given
    twice is numbered."""
    short = [s if len(s) < width else s[:20] + "…" + s[-24:] for s in specs]
    names = [n if short.count(n) == 1 else s for n, s in zip(short, specs)]
    return [n if names.count(n) == 1 else f"{n} ({names[:i].count(n) + 1})" for i, n in enumerate(names)]


def cmd_evaluate(a: argparse.Namespace) -> int:
    from .data import InMemoryScenes
    from .evaluate import evaluate, layout_figure, report_text, write_report

    if a.default:
        check_default_fits(a.data, default_model_path())
    test = InMemoryScenes(a.data, a.split, echo_free=True)
    shipped = ["student:" + str(default_model_path())] if a.default else []
    specs = shipped + list(a.model)
    if a.baselines:
        specs += ["mean-layout", "echo-tof", "echo-planes"]
    if not specs:
        raise SystemExit("nothing to evaluate: give --model SPEC (repeatable), --default or --baselines")
    results = {}
    for spec, name in zip(specs, row_names(specs)):
        t = time.time()
        results[name] = evaluate(load_predictor(spec, a.data, a.device, a.known_height), test,
                                 voxel_size_m=test.info.voxel_size_m, progress=True,
                                 near_bound_quantile=a.near_bound, confident_max_rel_std=a.confident)
        print(f"{name}: {time.time() - t:.1f} s", flush=True)
    title = f"Evaluation on the {a.split} split of {a.data}" + (", the array's height known" if a.known_height else "")
    notes = f"{len(test)} scenes from rooms never seen in training."
    print(report_text(results, title, notes))
    if a.out:
        print(f"report: {write_report(results, a.out, title, notes)}")
    if a.layout_figure:
        # the students given with --model first, then the shipped one (--default)
        students = [s.partition(":")[2] for s in a.model + shipped if s.startswith("student:")]
        model = next((m for m in (load_student(p, a.device) for p in students) if m.layout is not None), None)
        if model is None:
            raise SystemExit("--layout-figure: none of the students has a layout head (model.layout_beams)")
        print(f"layout figure: {layout_figure(model, test, a.layout_figure, device=a.device)}")
    return 0


def default_model_path() -> Path:
    from avperception.models import default_model

    return default_model()


def dataset_contract(data: str | Path):
    """``(ArrayGeometry, sample_rate, speed_of_sound)`` a dataset's audio was made with (from its manifest)."""
    from avperception.config import ArrayGeometry

    from ..datagen.shards import read_manifest, speed_of_sound

    m = read_manifest(data)
    array = ArrayGeometry.from_dict(m["array"], source=f"{data}: manifest array")
    rate = int(m.get("config", {}).get("audio", {}).get("sample_rate", array.sample_rate or 16000))
    return array, rate, speed_of_sound(m)


def _dataset_active(data: str | Path) -> tuple[dict | None, int]:
    """A dataset's ``active`` settings (its sweep and speaker; None when its manifest has none) and sample rate."""
    from ..datagen.shards import read_manifest

    cfg = read_manifest(data).get("config", {})
    return cfg.get("active") or None, int(cfg.get("audio", {}).get("sample_rate", 16000))


def dataset_emitter(data: str | Path) -> dict:
    """``{"sweep": its sweep_id, "speaker_position": [x, y, z]}``: what a dataset's pings were made with (from its
    manifest's ``active`` settings), the keywords :func:`~avperception.inference.bundle.check_fits` compares with a
    bundle's; ``{}`` for a dataset without them."""
    from avperception.inference.bundle import sweep_id

    a, rate = _dataset_active(data)
    if a is None:
        return {}
    return {"sweep": sweep_id(a["sweep"], a["f_start_hz"], a["f_end_hz"], a["duration_s"], rate),
            "speaker_position": a["speaker_position"]}


def check_student_sweep(model, data: str | Path, name: str = "the student") -> None:
    """``ValueError`` naming both when a student that hears its sweep (echogram tokens, ``cfg.emitted``) was trained
    on another sweep than the dataset ``data`` was made with (its manifest's ``active`` settings); a student or a
    dataset that says nothing of its sweep is not checked."""
    from avperception.dsp.echo import sweep

    from .train import same_sweep

    cfg = model.cfg
    own = np.asarray(getattr(cfg, "emitted", ()) or (), dtype=np.float64)
    a, rate = _dataset_active(data)
    if not own.size or a is None:
        return
    if not same_sweep(own, sweep(rate, a["f_start_hz"], a["f_end_hz"], a["duration_s"], a["sweep"], a["fade"])):
        raise ValueError(f"{name} hears a {len(own) / cfg.sample_rate * 1e3:g} ms sweep, but {data} was made with "
                         f"{dataset_emitter(data)['sweep']}: score it on rooms made with its sweep (datagen --set "
                         "active.duration_s=...)")


def check_default_fits(data: str | Path, model_path: str | Path | None = None) -> None:
    """Raise :class:`~avperception.inference.bundle.BundleMismatch` (every difference, what to do) when the shipped
    model does not fit the dataset ``data``: the bundle ``model_path`` lies in (the weights of the default
    model), else the shipped bundle for the data's array, else the shipped robot_8mic one. Weights outside
    a bundle are not checked here (fine-tuning and evaluation check their shapes themselves)."""
    from avperception.inference.bundle import BUNDLE_JSON, BundleError, check_fits, default_bundle_path, load_bundle

    array, rate, c = dataset_contract(data)
    if model_path is not None:
        where = Path(model_path).parent
        if not (where / BUNDLE_JSON).is_file():
            return
    else:
        try:
            where = default_bundle_path(array.name)
        except BundleError:
            where = default_bundle_path()
    check_fits(load_bundle(where, verify=False), array, rate, c, **dataset_emitter(data))


def cmd_export(a: argparse.Namespace) -> int:
    from .train import export_student

    path = export_student(a.checkpoint, a.out, half=a.half)
    print(f"weights: {path} ({path.stat().st_size / 1e6:.1f} MB), config: {Path(a.out).with_suffix('.json')}")
    if a.onnx:
        from avperception.models.export import export_onnx
        from avperception.models.student import AudioStudent

        onnx_path, err = export_onnx(AudioStudent.load(a.out), Path(a.out).with_suffix(".onnx"))
        print(f"onnx: {onnx_path} (max |onnxruntime - torch| = {err:.2e})")
    if a.bundle:
        print(f"bundle: {export_bundle(str(path), a.bundle, a.data, a.datagen_config)}")
    return 0


def bundle_settings(data: str | None = None, datagen_config: str | None = None, array: str | None = None) -> dict:
    """What a bundle takes from the data a model was trained on: the array, sample rate, speed of sound, the
    sweep (parameters, level, speaker) and the voxel crop, from a dataset's manifest (``data``) or a datagen
    config (``datagen_config``, None = the shipped default; ``array`` overrides its array)."""
    from avperception.config import ArrayGeometry

    from ..datagen.config import config_from_dict, load_config

    if data:
        from ..datagen.shards import read_manifest, speed_of_sound

        m = read_manifest(data)
        cfg = config_from_dict(m["config"])
        geom = ArrayGeometry.from_dict(m["array"], source=f"{data}: manifest array")
        c = speed_of_sound(m)
    else:
        cfg = load_config(datagen_config, {"array": array} if array else None)
        geom = cfg.array_geometry()
        c = cfg.acoustics.speed_of_sound
    act = cfg.active
    return {"cfg": cfg, "array": geom, "sample_rate": int(cfg.audio.sample_rate), "speed_of_sound": float(c),
            "speaker_position": list(act.speaker_position), "sweep_level_db": float(act.level_db),
            "sweep_params": {"kind": act.sweep, "f0_hz": act.f_start_hz, "f1_hz": act.f_end_hz,
                             "duration_s": act.duration_s, "fade": act.fade},
            "voxel_center": list(cfg.voxels.center_m), "voxel_extent": list(cfg.voxels.extent_m),
            "voxel_resolution": list(cfg.voxels.resolution)}


def check_audio_windows(data: str | None, cfg, n: int = 1) -> list:
    """Real windows ``(M, N)`` to check an export on: ``n`` scenes of the dataset ``data`` (its test split when it
    has one), else ``n`` scenes rendered with the datagen config ``cfg``."""
    if data:
        from .data import InMemoryScenes

        for split in ("test", "val", "train"):
            try:
                ds = InMemoryScenes(data, split, max_samples=n)
            except Exception:  # noqa: BLE001  (an empty split)
                continue
            if len(ds):
                return [ds.item(i)["audio"] for i in range(min(n, len(ds)))]
        return []
    from ..datagen.scene import generate_scene

    return [generate_scene(cfg, i)["audio"].astype("float32") for i in range(n)]


def model_extra(source: str) -> dict:
    """The metadata a checkpoint (``.pt``: its training config and metrics) or exported model (``.safetensors``: what
    ``AudioStudent.save`` stored, e.g. ``train_config`` and ``uncertainty_calibration``) carries."""
    if source.endswith(".pt"):
        ck = torch.load(source, map_location="cpu", weights_only=False)
        return {"train_config": ck.get("train_config"), "metrics": ck.get("metrics", {})}
    from safetensors import safe_open

    with safe_open(str(Path(source).with_suffix(".safetensors")), "np") as f:
        return json.loads((f.metadata() or {}).get("extra", "{}") or "{}")


def export_bundle(source: str, out: str | Path, data: str | None = None, datagen_config: str | None = None,
                  with_weights: bool = True, log=print) -> Path:
    """Write the bundle of ``source`` (a student checkpoint ``.pt``, an exported ``.safetensors`` or ``default``)
    into ``out``, with the array, sweep, speaker, level and voxel crop of the dataset ``data`` or the datagen
    config ``datagen_config``; refuses (BundleMismatch / ValueError) when the model was made for another array,
    rate, speed of sound or sweep."""
    from avperception.inference.bundle import BundleMismatch, fits

    from .bundle_writer import beam_speed, student_contract, write_bundle

    weights_from = None
    if source == "default":
        weights_from = default_model_path()
        source = str(weights_from.with_suffix(".safetensors"))
    elif not source.endswith(".pt"):
        weights_from = Path(source)
    model = load_student(source).float().eval()
    cfg = model.cfg
    settings = bundle_settings(data, datagen_config, array=None if (data or datagen_config) else cfg.array)
    # the model's own contract against the data's, through the one fit test
    diffs = fits(student_contract(cfg), settings["array"], settings["sample_rate"],
                 beam_speed(cfg, settings["speed_of_sound"]))
    if cfg.num_samples != settings["cfg"].audio.num_samples:
        diffs.append(f"window: model {cfg.num_samples} samples vs data {settings['cfg'].audio.num_samples}")
    if diffs:
        raise BundleMismatch(f"{source} was not trained on this data: " + "; ".join(diffs)
                             + ". Give the dataset or datagen config the model was trained with", diffs)
    audio = check_audio_windows(data, settings["cfg"])
    extra = model_extra(source)
    return write_bundle(model, out, speaker_position=settings["speaker_position"],
                        sweep_level_db=settings["sweep_level_db"], sweep_params=settings["sweep_params"],
                        voxel_center=settings["voxel_center"], voxel_extent=settings["voxel_extent"],
                        voxel_resolution=settings["voxel_resolution"], train_config=extra.get("train_config"),
                        uncertainty_calibration=extra.get("uncertainty_calibration"),
                        with_weights=with_weights, array=settings["array"], speed_of_sound=settings["speed_of_sound"],
                        check_audio=audio, weights_from=weights_from, name=f"{cfg.array}_student", log=log)


def calibrate_student(source: str, data: str, out: str | Path, split: str = "val", quantile: float | None = None,
                      half: bool = False, device: str = "cpu", extra: dict | None = None, log=print) -> Path:
    """Calibrate the depth uncertainty of the student ``source`` (``.pt`` or ``.safetensors``) on the ``split`` rooms
    of ``data`` (one dataset, or several joined by commas as in ``train``: their rooms pooled;
    :func:`~avperception_train.learn.calibrate.calibrate_uncertainty`) and write it as ``out.safetensors`` +
    ``out.json``, its metadata kept plus ``uncertainty_calibration`` (and ``extra``: its ``data`` names the datasets
    used); returns the ``.safetensors`` path. A dataset of another array is refused naming the difference; one
    without ``split`` rooms (too few scenes: splits are by room) is left out, said through ``log``, unless none has
    any."""
    from torch.utils.data import ConcatDataset

    from avperception.inference.bundle import check_fits

    from .bundle_writer import beam_speed, student_contract
    from .calibrate import calibrate_uncertainty
    from .data import InMemoryScenes, split_scenes

    model = load_student(source, device)
    cfg = model.cfg
    counts = dict(split_scenes(data, split))  # a dataset named twice counts once
    for root in counts:
        array, rate, c = dataset_contract(root)
        check_fits(student_contract(cfg), array, rate, beam_speed(cfg, c))
        check_student_sweep(model, root, f"student {source}")
    roots = [root for root, n in counts.items() if n]
    what = {"val": "validation"}.get(split, split)
    if not roots:
        raise ValueError(f"calibrate: no {what} rooms in {data} (too few scenes: the splits are by room); give a "
                         "dataset with more scenes or another --split")
    for root in counts:
        if root not in roots:
            log(f"calibrate: {root} has no {what} rooms (too few scenes); on the others alone")
    parts = [InMemoryScenes(root, split) for root in roots]
    scenes = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    info = calibrate_uncertainty(model, scenes, quantile, device=device, progress=True)
    info.update(data=",".join(str(r) for r in roots), split=split)
    for mode in ("heard", "given"):
        if mode in info:
            m = info[mode]
            log(f"uncertainty with the array's height {mode}: scale x{m['scale']:.3f} times depth^{m['depth_slope']:g} "
                f"from {m['pixels']} pixels of {info['scenes']} {split} scenes: the truth below the "
                f"{info['quantile']:g} near bound at {m['below_before']:.2%} of them before, {m['below_after']:.2%} "
                "after")
    meta = {**model_extra(source), **(extra or {}), "uncertainty_calibration": info}
    model = model.cpu()
    (model.half() if half else model).save(out, meta)
    return Path(out).with_suffix(".safetensors")


def cmd_calibrate_uncertainty(a: argparse.Namespace) -> int:
    # no such split, no uncertainty head, a quantile out of range: ValueError, which main reports as an error
    from .data import data_dirs

    path = calibrate_student(a.source, a.data, a.out, a.split, a.quantile, a.half, a.device)
    print(f"weights: {path} ({path.stat().st_size / 1e6:.1f} MB); export a bundle with `avperception-train "
          f"export-bundle {path} --data {data_dirs(a.data)[0]} --out DIR`")  # (one dataset gives the contract)
    return 0


def average_weights(sources: list[str], out: str | Path, weights: list[float] | None = None, half: bool = False,
                    log=print) -> Path:
    """Average the students ``sources`` (``.pt`` or ``.safetensors``, one config;
    :func:`~avperception_train.learn.average.average_students`) and write ``out.safetensors`` + ``out.json``; the
    training config of the result names each source, its weight and its own training config. Returns the
    ``.safetensors`` path."""
    from .average import average_students, check_weights

    w = check_weights(weights, len(sources))
    models = [load_student(s) for s in sources]
    model = average_students(models, w)
    for s, v, m in zip(sources, w, models):
        log(f"{v:.3f} x {s}" + (" (its uncertainty calibration dropped)" if m.cfg.uncertainty_calibration else ""))
    parts = [{"source": str(s), "weight": v, "config": model_extra(s).get("train_config")} for s, v in zip(sources, w)]
    (model.half() if half else model).save(out, {"train_config": {"average_of": parts}})
    return Path(out).with_suffix(".safetensors")


def cmd_average_weights(a: argparse.Namespace) -> int:
    # students of another config, weights that are not positive: ValueError, which main reports as an error
    weights = [float(v) for v in a.weights.split(",")] if a.weights else None
    path = average_weights(a.sources, a.out, weights, a.half)
    has_head = json.loads(path.with_suffix(".json").read_text())["config"]["uncertainty"]
    nxt = ("calibrate its depth uncertainty with `avperception-train calibrate-uncertainty "
           f"{path} --data DIR --out DEST`" if has_head else
           f"export a bundle with `avperception-train export-bundle {path} --data DIR --out BUNDLE`")
    print(f"weights: {path} ({path.stat().st_size / 1e6:.1f} MB); {nxt}")
    return 0


def cmd_export_bundle(a: argparse.Namespace) -> int:
    out = export_bundle(a.source, a.out, a.data, a.datagen_config, with_weights=not a.no_weights)
    from avperception.inference.bundle import load_bundle

    b = load_bundle(out)
    print(b.describe())
    for f in sorted(out.iterdir()):
        print(f"  {f.name}: {f.stat().st_size / 1e6:.2f} MB")
    return 0


def cmd_wall_echoes(a: argparse.Namespace) -> int:
    """``wall-echoes``: :func:`.wall_echoes.audit` printed as a table (and written as JSON with ``--out``)."""
    from .wall_echoes import audit, report

    if a.scenes < 0:
        raise ValueError(f"--scenes must be 0 (all) or more, got {a.scenes}")
    result = audit(a.data, a.split, a.scenes)
    print(report(result), end="")
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {a.out}")
    return 0


def _numbers(high: float, what: str, example: str):
    """An argparse type: numbers joined by commas (``example``), each in (0, ``high``] (``what`` each one is)."""
    def parse(text: str) -> list[float]:
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: give numbers joined by commas, e.g. {example}") from None
        bad = [v for v in values if not 0 < v <= high]
        if bad:
            raise argparse.ArgumentTypeError(f"{bad}: each must be in (0, {high:g}] ({what})")
        return values
    return parse


# --confident 0.1,0.2,0.3 (as sonar.confident_max_rel_std takes) and --near-bound 0.1,0.05,0.02 (as
# sonar.near_bound_quantile takes, 0 aside)
_thresholds = _numbers(10.0, "a standard deviation as a share of the range", "0.2,0.3")
_probabilities = _numbers(0.5, "the probability that the surface is nearer than the bound", "0.05,0.02")


def add_commands(sub) -> None:
    p = sub.add_parser("train", help="train a teacher, VQ-VAE or student (see configs/)")
    p.add_argument("--config", help="training YAML (examples: training/configs/*.yaml); options given here override it")
    p.add_argument("--mode", choices=list(MODES),
                   help="manifold-e2e: the manifold student's network on the depth labels, without the VQ-VAE")
    p.add_argument("--data", help="dataset directory from `datagen`, or several joined by commas (DIR1,DIR2: their "
                                  "splits are concatenated; they must share the array, sweep and grids)")
    p.add_argument("--out", help="run directory (checkpoints, log.jsonl, tb/)")
    p.add_argument("--teacher", help="teacher checkpoint (distill) or VQ-VAE checkpoint (manifold)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--lr", type=float, help="peak learning rate (AdamW, cosine schedule)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--max-train-samples", dest="max_train_samples", type=int)
    p.add_argument("--seed", type=int, help="random seed of the weights and the batch order (the YAML's seed:)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--init", help="fine-tune: start the distill/e2e student from a checkpoint (.pt), an exported "
                                  "model (.safetensors) or `default` (the shipped model); shapes must match the data")
    p.add_argument("--transfer", action="store_true",
                   help="with --init: load only the tensors whose shapes fit this data's model (e.g. the shipped "
                        "student for another array) and re-initialise the rest, naming them")
    p.add_argument("--train-only", dest="train_only", nargs="+", metavar="PART",
                   help="train only these parts of the student (e.g. layout; see AudioStudent), the rest frozen")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score models and baselines on the test rooms; markdown table")
    p.add_argument("--data", required=True, help="dataset directory")
    p.add_argument("--model", action="append", default=[],
                   help="student:PATH | bundle:DIR (its ONNX graph; bundle:default:ARRAY the shipped one) | teacher:CK | "
                        "manifold:AT_CK,VQ_CK | manifold-e2e:CK | mean-layout | echo-tof | echo-planes (repeatable)")
    p.add_argument("--default", action="store_true", help="also score the shipped default model")
    p.add_argument("--baselines", action="store_true",
                   help="add the mean-layout, echo time-of-flight and echo-planes baselines")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--confident", type=_thresholds, metavar="R[,R2,...]",
                   help="score the confident depth (sonar/depth_confident) keeping the pixels whose standard deviation "
                        "is at most R of their range, at each R given (default: the node's sonar.confident_max_rel_std, "
                        "0.3); several give a table to choose the node's from")
    p.add_argument("--near-bound", dest="near_bound", type=_probabilities, metavar="Q[,Q2,...]",
                   help="score the near bound (sonar/depth_near_bound) at each probability Q that the surface is "
                        "nearer (default: the node's sonar.near_bound_quantile, 0.02); several give a table to "
                        "choose the node's from")
    p.add_argument("--known-height", dest="known_height", action="store_true",
                   help="give the students and bundles each scene's true array height above the floor, as a robot "
                        "that knows where its array is mounted gives the node (sonar.array_height_m)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="write the table here (markdown, plus .json)")
    p.add_argument("--layout-figure", dest="layout_figure", metavar="PNG",
                   help="also draw a student's layout head against the true walls (top views of 6 scenes): the first "
                        "--model student with a layout head, else the shipped one")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("wall-echoes", help="which walls an array hears in a dataset's rooms (no model): the share "
                                           "whose echo is the strongest in its beam, by band of range",
                       description="At each wall's specular column (where it is nearest) beamform the matched "
                                   "filters towards it and find the strongest echo between half and 1.5 times "
                                   "its distance: heard when within 0.1 m of the wall. What one ping can tell of "
                                   "the room, to compare arrays, sweeps and rooms before training (made with the "
                                   "same datagen options but one).")
    p.add_argument("--data", required=True, help="dataset directory")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--scenes", type=int, default=0, help="only the first N scenes of the split (default: all)")
    p.add_argument("--out", help="also write the result here (.json)")
    p.set_defaults(func=cmd_wall_echoes)

    p = sub.add_parser("export", help="student checkpoint -> safetensors + config JSON (+ ONNX)")
    p.add_argument("checkpoint", help="best.pt of a student run")
    p.add_argument("--out", required=True, help="destination without suffix, e.g. models/robot_8mic/student")
    p.add_argument("--half", action="store_true", help="store weights as float16 (half the size)")
    p.add_argument("--onnx", action="store_true", help="also export ONNX and check it against torch")
    p.add_argument("--bundle", metavar="DIR",
                   help="also write a model bundle (model.onnx + bundle.json + weights) to DIR, taking the sweep, "
                        "speaker and voxel crop from --data or --datagen-config")
    p.add_argument("--data", help="with --bundle: the dataset the model was trained on")
    p.add_argument("--datagen-config", dest="datagen_config",
                   help="with --bundle: its datagen YAML (instead of --data; default: the shipped one)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("calibrate-uncertainty",
                       help="calibrate a student's depth uncertainty so its near bound holds on rooms it did not "
                            "train on")
    p.add_argument("source", help="best.pt of a student run or an exported .safetensors (with an uncertainty head)")
    p.add_argument("--data", required=True, help="a dataset of the student's array (its --split rooms are used); "
                   "several joined by commas pool their rooms")
    p.add_argument("--split", default="val", choices=["train", "val", "test"],
                   help="the rooms to calibrate on (default val: the test rooms stay unseen)")
    p.add_argument("--quantile", type=float, default=None,
                   help="the near bound's probability to calibrate (default: sonar.near_bound_quantile, 0.02)")
    p.add_argument("--out", required=True, help="destination without suffix (writes .safetensors and .json)")
    p.add_argument("--half", action="store_true", help="store weights as float16 (half the size)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_calibrate_uncertainty)

    p = sub.add_parser("average-weights",
                       help="one student with the weighted mean of several students' weights (a model soup)",
                       description="Average students of one config, e.g. fine-tuned from one start on different "
                                   "data. The result is one network of the same size; an uncertainty "
                                   "calibration does not carry over, calibrate it again.")
    p.add_argument("sources", nargs="+", help="two or more best.pt of student runs or exported .safetensors")
    p.add_argument("--weights", help="comma-separated, one per source, positive, scaled to sum 1 (default: equal)")
    p.add_argument("--out", required=True, help="destination without suffix (writes .safetensors and .json)")
    p.add_argument("--half", action="store_true", help="store weights as float16 (half the size)")
    p.set_defaults(func=cmd_average_weights)

    p = sub.add_parser("export-bundle", help="a student -> model bundle (model.onnx + bundle.json + weights) for "
                                             "the runtime")
    p.add_argument("source", help="best.pt of a student run, an exported .safetensors, or `default` (the shipped "
                                  "model)")
    p.add_argument("--out", required=True, help="bundle directory to write")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--data", help="the dataset the model was trained on (its manifest gives the array, sweep, "
                                  "speaker, level and voxel crop; one test scene checks the export)")
    g.add_argument("--datagen-config", dest="datagen_config",
                   help="the datagen YAML it was trained with (default: the shipped one with the model's array)")
    p.add_argument("--no-weights", dest="no_weights", action="store_true",
                   help="leave out model.safetensors (ONNX Runtime only; no torch fallback)")
    p.set_defaults(func=cmd_export_bundle)

    from .engine import add_command as add_build_engine

    add_build_engine(sub)  # build-engine

    from .recipe import BUDGETS, DEFAULT_DRIVING_SPEED

    p = sub.add_parser(
        "recipe", help="a model bundle for your array: data, training from the shipped student, evaluation against "
                       "the baselines, export (--paper: the papers' teacher/distillation/manifold comparison)",
        description="Generate scenes for ARRAY with the speaker at X,Y,Z, start from the shipped student (every "
                    "tensor whose shape fits), train it in three stages (adapt the new inputs, the whole network, "
                    "the layout head), score it against the baselines on held-out rooms and write the model bundle "
                    "and report.md into OUT. Budgets: " + "; ".join(f"{k}: {b.scenes} scenes, {b.what}"
                                                                   for k, b in BUDGETS.items())
                    + ". A stage whose output exists is skipped with --resume.")
    p.add_argument("--out", required=True, help="work directory (data/, one run per stage, bundle/, report.md)")
    p.add_argument("--array", help="array preset (config/arrays/) or array YAML path (--paper: default robot_8mic)")
    p.add_argument("--speaker", metavar="X,Y,Z",
                   help="the speaker's position in the array frame, metres (x forward, y left, z up), e.g. 0,0,-0.05")
    p.add_argument("--budget", choices=list(BUDGETS), default="cpu",
                   help="quick: minutes, checks the pipeline; cpu: 2 CPU cores; gpu: one GPU (default cpu)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: the budget's (--paper: auto)")
    p.add_argument("--resume", action="store_true", help="continue a stopped run in OUT (finished stages are skipped)")
    p.add_argument("--scenes", type=int, help="scenes to generate (default: the budget's; --paper: 2000)")
    p.add_argument("--workers", type=int, help="datagen processes (default: one per CPU; --paper: 2)")
    p.add_argument("--init", default="default",
                   help="weights to start from: default (the shipped student), a student .pt or .safetensors")
    p.add_argument("--stage-epochs", dest="stage_epochs", metavar="ADAPT,WHOLE,LAYOUT",
                   help="epochs of the three training stages instead of the budget's, e.g. 1,5,2 (0 skips a stage)")
    p.add_argument("--driving", type=float, default=0.0, metavar="SHARE",
                   help="the share of the scenes heard with the robot driving through the window (e.g. 0.2; each "
                        "takes about ten times a standing scene's data time), trained on with the rest and scored "
                        "apart (default 0: all standing)")
    p.add_argument("--driving-speed", dest="driving_speed", type=float, default=DEFAULT_DRIVING_SPEED,
                   metavar="M_PER_S", help=f"with --driving: speeds uniform from 0 to this, m/s (default "
                                           f"{DEFAULT_DRIVING_SPEED:g}, as the shipped model's)")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("--paper", "the papers' pipeline: teacher, distilled and end-to-end students, the "
                                        "manifold student and its control, baselines (WORK/results.md)")
    g.add_argument("--paper", action="store_true", help="run the papers' comparison instead")
    g.add_argument("--epochs", type=int, default=30)
    g.add_argument("--batch-size", dest="batch_size", type=int, default=32)
    g.add_argument("--variant", default="small", choices=["small", "large"])
    g.add_argument("--skip-manifold", action="store_true",
                   help="leave out the VQ-VAE + AT-net student and its end-to-end control")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="datagen override, e.g. --set panorama.resolution_deg=6 (repeatable)")
    p.set_defaults(func=cmd_recipe)


_PAPER_ONLY = {"epochs": 30, "batch_size": 32, "variant": "small", "skip_manifold": False, "overrides": []}


def cmd_recipe(a: argparse.Namespace) -> int:
    """``recipe``: :func:`.recipe.run_recipe` (a bundle for an array), or with ``--paper`` :func:`cmd_paper_recipe`."""
    from avperception.config import DEFAULT_ARRAY, ConfigError

    from .recipe import DEFAULT_DRIVING_SPEED, DRIVING_ROW, parse_speaker, run_recipe

    if a.paper:
        if a.driving or a.driving_speed != DEFAULT_DRIVING_SPEED:
            raise ConfigError("recipe --paper: --driving is for a bundle for your array; for the papers' pipeline "
                              "give --set 'robot.speed_mps=[0.0, 2.0]' (every scene driving)")
        a.array = a.array or DEFAULT_ARRAY
        a.device = a.device or "auto"
        a.scenes = a.scenes if a.scenes is not None else 2000
        a.workers = a.workers if a.workers is not None else 2
        return cmd_paper_recipe(a)
    stray = [k.replace("_", "-") for k, v in _PAPER_ONLY.items() if getattr(a, k) != v]
    if stray:
        raise ConfigError(f"recipe: --{', --'.join(stray)} belong to the papers' pipeline: add --paper, or leave "
                          "them out (the budget sets the epochs and batch size)")
    if not a.array or not a.speaker:
        raise ConfigError("recipe needs --array (a preset in config/arrays/ or your array's YAML) and --speaker X,Y,Z "
                          "(where the speaker sits in the array frame, metres); see docs/your_robot.md")
    try:
        speaker = parse_speaker(a.speaker)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:
        epochs = tuple(int(e) for e in a.stage_epochs.split(",")) if a.stage_epochs else None
    except ValueError:
        raise ConfigError(f"--stage-epochs: three whole numbers ADAPT,WHOLE,LAYOUT, got {a.stage_epochs!r}") from None
    s = run_recipe(a.array, speaker, a.out, a.budget, "" if a.device in (None, "auto") else a.device, a.resume,
                   a.workers, a.seed, a.scenes, a.init, epochs, a.driving, a.driving_speed)
    student = s["scores"]["student (this recipe)"]
    print(f"\nbundle: {s['bundle']}")
    print(f"test depth: delta1 {student['delta1']:.3f}, AbsRel {student['abs_rel']:.3f}, RMSE {student['rmse']:.3f} m "
          f"(baselines: " + ", ".join(f"{n} delta1 {v['delta1']:.3f}" for n, v in s["scores"].items()
                                     if n not in ("student (this recipe)", DRIVING_ROW) and "delta1" in v) + ")")
    if DRIVING_ROW in s["scores"]:
        d = s["scores"][DRIVING_ROW]
        print(f"robot driving: delta1 {d['delta1']:.3f}, AbsRel {d['abs_rel']:.3f}")
    print(f"report: {s['report']}")
    return 0


def cmd_paper_recipe(a: argparse.Namespace) -> int:
    """Data -> teacher -> distilled student, end-to-end student, manifold student and its end-to-end control ->
    evaluation -> export."""
    from dataclasses import replace

    from ..datagen.config import load_config
    from ..datagen.engine import run_datagen
    from ..datagen.shards import MANIFEST, read_manifest
    from .config import ModelSpec, TrainConfig
    from .data import InMemoryScenes
    from .evaluate import evaluate, write_report
    from .train import export_student, train

    out = Path(a.out)
    data = out / "data"
    times = {}
    t = time.time()
    manifest = read_manifest(data) if (data / MANIFEST).exists() else {}
    if not manifest.get("complete"):  # a finished dataset is reused
        from ..datagen.config import _deep_merge, parse_set

        overrides = _deep_merge({"array": a.array, "seed": a.seed}, parse_set(a.overrides))
        run_datagen(load_config(None, overrides), data, a.scenes, a.workers)
        manifest = read_manifest(data)
    times["datagen_s"] = time.time() - t
    # warm up over at most a tenth of the run: a small run would otherwise end before its peak learning rate
    steps = a.epochs * max(manifest["splits"]["train"]["scenes"] // a.batch_size, 1)
    warmup = min(TrainConfig.warmup_steps, max(steps // 10, 1))
    base = TrainConfig(data=str(data), epochs=a.epochs, batch_size=a.batch_size, device=a.device, seed=a.seed,
                       workers=min(a.workers, 4), warmup_steps=warmup, model=ModelSpec(variant=a.variant))

    def stage(name: str, **kw) -> Path:
        t0 = time.time()
        ck = train(replace(base, out=str(out / name), **kw).validate())
        times[f"{name}_s"] = time.time() - t0
        return ck

    teacher = stage("teacher", mode="teacher")
    distill = stage("student_distill", mode="distill", teacher=str(teacher))
    e2e = stage("student_e2e", mode="e2e")
    manifold = None
    if not a.skip_manifold:  # the manifold paper's Adam lr 1e-4 scale: VQ training is unstable at 1e-3
        vq = stage("vqvae", mode="vqvae", lr=2e-4)
        manifold = (stage("student_manifold", mode="manifold", teacher=str(vq), lr=2e-4), vq)
        manifold_e2e = stage("student_manifold_e2e", mode="manifold-e2e", lr=2e-4)  # its control: no VQ-VAE
    test = InMemoryScenes(data, "test", echo_free=True)
    dev = "cuda" if torch.cuda.is_available() and a.device != "cpu" else "cpu"
    specs = {"student (SAM distillation)": f"student:{distill}", "student (end-to-end, no teacher)": f"student:{e2e}"}
    if manifold:
        specs["student (VQ-VAE manifold + AT-net, depth)"] = f"manifold:{manifold[0]},{manifold[1]}"
        specs["student (the same AT-net end to end, no VQ-VAE, depth)"] = f"manifold-e2e:{manifold_e2e}"
    specs.update({"teacher (sees the geometry)": f"teacher:{teacher}", "mean layout": "mean-layout",
                  "echo time of flight": "echo-tof", "echo planes": "echo-planes"})
    results = {name: evaluate(load_predictor(spec, str(data), dev), test, voxel_size_m=test.info.voxel_size_m)
               for name, spec in specs.items()}
    export_student(distill, out / "export" / "student", {"recipe": vars(a) | {"func": None}, "times": times},
                   half=True)
    notes = (f"{len(test)} test scenes from held-out rooms; {a.scenes} scenes generated for array {a.array}; "
             f"{a.epochs} epochs ({steps} steps, {warmup} of warmup), batch {a.batch_size}, variant {a.variant}, "
             f"device {dev}. "
             f"Stage times (s): {json.dumps({k: round(v) for k, v in times.items()})}")
    report = write_report(results, out / "results.md", "avperception students vs baselines", notes)
    print(report.read_text())
    return 0
