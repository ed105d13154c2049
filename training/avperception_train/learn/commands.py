"""``avperception-train`` commands for learning: train, evaluate, export, recipe."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from .config import MODES, load_train_config


def cmd_train(a: argparse.Namespace) -> int:
    from .train import train

    cfg = load_train_config(a.config, mode=a.mode, data=a.data, out=a.out, teacher=a.teacher, epochs=a.epochs,
                            batch_size=a.batch_size, device=a.device, max_train_samples=a.max_train_samples, lr=a.lr,
                            init=a.init, train_only=tuple(a.train_only) if a.train_only else None, seed=a.seed)
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


def load_predictor(spec: str, data_root: str, device: str = "cpu"):
    """A predictor from ``student:PATH`` (checkpoint .pt or exported .safetensors), ``teacher:CK``,
    ``manifold:ATNET_CK,VQVAE_CK``, ``manifold-e2e:CK``, ``mean-layout``, ``echo-tof`` or ``echo-planes``."""
    from .baselines import EchoPlanes, EchoTimeOfFlight, MeanLayout
    from .data import InMemoryScenes
    from .evaluate import torch_predictor
    from .train import load_stage, teacher_view

    kind, _, path = spec.partition(":")
    dev = torch.device(device)
    if kind == "student":
        return torch_predictor(load_student(path, device), "student", device)
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

    test = InMemoryScenes(a.data, a.split)
    shipped = ["student:" + str(default_model_path())] if a.default else []
    specs = shipped + list(a.model)
    if a.baselines:
        specs += ["mean-layout", "echo-tof", "echo-planes"]
    if not specs:
        raise SystemExit("nothing to evaluate: give --model SPEC (repeatable), --default or --baselines")
    results = {}
    for spec, name in zip(specs, row_names(specs)):
        t = time.time()
        results[name] = evaluate(load_predictor(spec, a.data, a.device), test, voxel_size_m=test.info.voxel_size_m,
                                 progress=True)
        print(f"{name}: {time.time() - t:.1f} s", flush=True)
    title = f"Evaluation on the {a.split} split of {a.data}"
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


def cmd_export(a: argparse.Namespace) -> int:
    from .train import export_student

    path = export_student(a.checkpoint, a.out, half=a.half)
    print(f"weights: {path} ({path.stat().st_size / 1e6:.1f} MB), config: {Path(a.out).with_suffix('.json')}")
    if a.onnx:
        from avperception.models.export import export_onnx
        from avperception.models.student import AudioStudent

        onnx_path, err = export_onnx(AudioStudent.load(a.out), Path(a.out).with_suffix(".onnx"))
        print(f"onnx: {onnx_path} (max |onnxruntime - torch| = {err:.2e})")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("train", help="train a teacher, VQ-VAE or student (see configs/)")
    p.add_argument("--config", help="training YAML (examples: training/configs/*.yaml); options given here override it")
    p.add_argument("--mode", choices=list(MODES),
                   help="manifold-e2e: the manifold student's network on the depth labels, without the VQ-VAE")
    p.add_argument("--data", help="dataset directory from `datagen`")
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
    p.add_argument("--train-only", dest="train_only", nargs="+", metavar="PART",
                   help="train only these parts of the student (e.g. layout; see AudioStudent), the rest frozen")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score models and baselines on the test rooms; markdown table")
    p.add_argument("--data", required=True, help="dataset directory")
    p.add_argument("--model", action="append", default=[],
                   help="student:PATH | teacher:CK | manifold:AT_CK,VQ_CK | manifold-e2e:CK | mean-layout | echo-tof | "
                        "echo-planes (repeatable)")
    p.add_argument("--default", action="store_true", help="also score the shipped default model")
    p.add_argument("--baselines", action="store_true",
                   help="add the mean-layout, echo time-of-flight and echo-planes baselines")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="write the table here (markdown, plus .json)")
    p.add_argument("--layout-figure", dest="layout_figure", metavar="PNG",
                   help="also draw a student's layout head against the true walls (top views of 6 scenes): the first "
                        "--model student with a layout head, else the shipped one")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="student checkpoint -> safetensors + config JSON (+ ONNX)")
    p.add_argument("checkpoint", help="best.pt of a student run")
    p.add_argument("--out", required=True, help="destination without suffix, e.g. models/robot_8mic/student")
    p.add_argument("--half", action="store_true", help="store weights as float16 (half the size)")
    p.add_argument("--onnx", action="store_true", help="also export ONNX and check it against torch")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("recipe", help="the whole recipe: data, teacher, students, baselines, evaluation, export")
    p.add_argument("--out", required=True, help="work directory")
    p.add_argument("--scenes", type=int, default=2000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--array", default="robot_8mic")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=32)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--variant", default="small", choices=["small", "large"])
    p.add_argument("--skip-manifold", action="store_true",
                   help="leave out the VQ-VAE + AT-net student and its end-to-end control")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="datagen override, e.g. --set panorama.resolution_deg=6 (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_recipe)


def cmd_recipe(a: argparse.Namespace) -> int:
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
    test = InMemoryScenes(data, "test")
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
