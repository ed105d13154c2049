"""``avperception-train recipe``: a model bundle for your array, from the shipped student.

Stages, each skipped when its output exists (``--resume`` continues a stopped run):

1. ``data``: synthetic scenes for the array and the speaker position (``datagen``); with ``driving``, a share of
   them in ``data_driving`` heard with the robot driving through the window (``robot.speed_mps``), which every
   later stage takes with the rest.
2. ``adapt``: the shipped student moved to the array (:func:`~.train.transfer_student`: every tensor whose shape
   fits is loaded); only the re-initialised parts (the input projections) train, the rest frozen.
3. ``whole``: the whole network (the shipped recipe's echo and layout steps).
4. ``layout``: the layout head alone, relative error (the shipped recipe's last steps).
5. ``calibrate``: the depth uncertainty (the shipped student's head, never trained on this array's echoes)
   calibrated on the validation rooms so its near bound holds (:mod:`.calibrate`); ``evaluate``: the student
   against the baselines on the held-out test rooms (``results.md``).
6. ``bundle``: model.onnx + bundle.json + weights, checked against torch; ``report.md`` in the work directory.

Each stage's settings are ``training/configs/recipe_{adapt,whole,layout}.yaml``; a budget sets the scene count,
the epochs per stage and the batch size (:data:`BUDGETS`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
STAGES = ("adapt", "whole", "layout")
DEFAULT_DRIVING_SPEED = 2.0  # m/s: the fastest a recipe's driving rooms go by default (the shipped model's range)
DRIVING_SEED_OFFSET = 1  # the driving rooms' datagen seed: the recipe's plus this (other rooms than the standing ones)
DRIVING_ROW = "student (this recipe), robot driving"  # the recipe's row scored on the driving test rooms
BASELINES = {"mean layout of the training rooms": "mean-layout", "echo time of flight": "echo-tof",
             "echo planes (classical)": "echo-planes"}


@dataclass(frozen=True)
class Budget:
    """How much a recipe run does: scenes generated, epochs per stage (:data:`STAGES`), batch size, data loader
    workers, the device it is meant for, and what it is for (its measured times: docs/training.md, "The recipe")."""

    scenes: int
    epochs: tuple[int, int, int]
    batch_size: int
    loader_workers: int
    device: str
    what: str


BUDGETS = {
    "quick": Budget(160, (1, 1, 1), 16, 0, "cpu", "checks the pipeline end to end in minutes; not a usable model"),
    "cpu": Budget(5120, (1, 4, 2), 32, 1, "cpu", "a usable model on 2 CPU cores in under an hour"),
    "gpu": Budget(40000, (2, 30, 8), 64, 4, "cuda", "a usable model on one GPU within an hour"),
}


def parse_speaker(text: str) -> list[float]:
    """``"X,Y,Z"`` (metres, array frame) -> ``[x, y, z]``; ValueError saying what is expected otherwise."""
    from ..datagen.config import parse_xyz

    return parse_xyz(text, "--speaker X,Y,Z in metres in the array frame (x forward, y left, z up), e.g. 0,0,-0.05")


def stage_config(name: str, data: str | Path, out: Path, epochs: int, budget: Budget, device: str, seed: int, **kw):
    """The training config of one recipe stage: ``training/configs/recipe_{name}.yaml`` with the budget's
    epochs, batch size and loader workers, a warmup of at most a tenth of the stage, and ``kw``."""
    from .config import TrainConfig, load_train_config

    path = CONFIGS / f"recipe_{name}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"recipe stage config {path} is missing: run the recipe from a source checkout "
                                "of avperception (training/configs/)")
    cfg = load_train_config(path)
    n_train = _train_scenes(data)
    steps = epochs * max(n_train // budget.batch_size, 1)
    warmup = min(TrainConfig.warmup_steps, max(steps // 10, 1))
    return replace(cfg, data=str(data), out=str(out), epochs=epochs, batch_size=budget.batch_size,
                   workers=budget.loader_workers, device=device, seed=seed, warmup_steps=warmup, **kw).validate()


def _train_scenes(data: str | Path) -> int:
    """Training scenes of a dataset, or of several joined by commas."""
    from .data import split_scenes

    return sum(n for _, n in split_scenes(data, "train"))


def _done(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _stamp(path: Path, **info) -> None:
    path.write_text(json.dumps(info, indent=1))


def run_recipe(array: str, speaker: list[float], out: str | Path, budget: str = "cpu", device: str = "",
               resume: bool = False, workers: int | None = None, seed: int = 0, scenes: int | None = None,
               init: str = "default", stage_epochs: tuple[int, int, int] | None = None, driving: float = 0.0,
               driving_speed: float = DEFAULT_DRIVING_SPEED, log=print) -> dict:
    """Run the recipe (module docstring) into ``out``; returns the summary written to ``out/recipe.json``:
    the bundle's path, the student's and the baselines' test scores, the stage times.

    ``array``: preset name or array YAML; ``speaker``: the speaker's position (m, array frame);
    ``device``: "" = the budget's; ``workers``: datagen processes (None = one per CPU); ``scenes``: overrides the
    budget's scene count; ``init``: the weights to start from (default: the shipped student); ``stage_epochs``:
    overrides the budget's epochs of the three training stages; ``driving``: the share of the scenes heard with the
    robot driving straight through the window at a speed uniform in 0 to ``driving_speed`` m/s (each about ten times
    a standing scene's data time), trained on with the rest and scored on their own test rooms besides."""
    import torch

    from avperception.config import ConfigError, load_array

    if budget not in BUDGETS:
        raise ConfigError(f"--budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
    b = BUDGETS[budget]
    if stage_epochs is not None:
        if len(stage_epochs) != 3 or any(int(e) < 0 for e in stage_epochs) or not any(stage_epochs):
            raise ConfigError(f"--stage-epochs: three epoch counts (adapt, whole, layout; 0 skips one), got "
                              f"{list(stage_epochs)}")
        b = replace(b, epochs=tuple(int(e) for e in stage_epochs))
    if not 0.0 <= driving < 1.0:
        raise ConfigError(f"--driving: the share of the scenes heard with the robot driving, at least 0 and below 1, "
                          f"got {driving}")
    if not driving and driving_speed != DEFAULT_DRIVING_SPEED:
        raise ConfigError(f"--driving-speed {driving_speed:g} needs --driving SHARE (the share of the scenes heard "
                          "driving); without it every scene is heard standing")
    if driving and not 0.0 < driving_speed <= 10.0:
        raise ConfigError(f"--driving-speed: the fastest the robot drives while it pings, m/s (above 0, at most 10), "
                          f"got {driving_speed}")
    device = device or b.device
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device here; use --device cpu (and --budget cpu)")
    geometry = load_array(array)  # a bad preset or YAML fails here, before anything runs
    work = Path(out)
    settings = {"array": array, "array_name": geometry.name, "speaker": [float(v) for v in speaker],
                "budget": budget, "scenes": int(scenes or b.scenes), "seed": seed, "init": init,
                "epochs": list(b.epochs)}
    n_driving = round(settings["scenes"] * driving)
    if driving:
        if not 0 < n_driving < settings["scenes"]:
            raise ConfigError(f"--driving {driving} of {settings['scenes']} scenes leaves "
                              f"{'no driving' if n_driving == 0 else 'no standing'} scenes: give another share")
        settings.update(driving=float(driving), driving_speed_mps=float(driving_speed))  # absent: a run without
    summary_path = work / "recipe.json"
    if work.exists() and any(work.iterdir()):
        before = _done(summary_path)
        if before is None or not resume:
            raise ConfigError(f"{work} is not empty: add --resume to continue the recipe run there, or give "
                              "another --out")
        changed = {k: (before["settings"].get(k), v) for k, v in settings.items() if before["settings"].get(k) != v}
        if changed:
            raise ConfigError(f"--resume: {work} holds a run with other settings "
                              + "; ".join(f"{k}: {a} there, {v} now" for k, (a, v) in changed.items())
                              + "; give another --out")
        summary = before
    else:
        work.mkdir(parents=True, exist_ok=True)
        summary = {"settings": settings, "times_s": {}}
    times = summary["times_s"]

    def save() -> None:
        summary_path.write_text(json.dumps(summary, indent=1))

    save()
    data = work / "data"
    driving_data = work / "data_driving"
    # (stage key, directory, scenes, datagen settings beside the array and speaker, what the log says they are)
    datasets = [("data", data, settings["scenes"] - n_driving, {"seed": seed},
                 f"scenes for {geometry.name}, speaker at {settings['speaker']} m")]
    if driving:
        datasets.append(("data_driving", driving_data, n_driving,
                         {"seed": seed + DRIVING_SEED_OFFSET, "robot": {"speed_mps": [0.0, float(driving_speed)]}},
                         f"scenes heard driving at 0-{driving_speed:g} m/s"))
    for key, where, count, extra, what in datasets:
        if key in times:
            log(f"[1/6] data: done ({where})")
            continue
        from ..datagen.config import load_config
        from ..datagen.engine import run_datagen

        t = time.time()
        cfg = load_config(None, {"array": array, "active": {"speaker_position": settings["speaker"]}, **extra})
        log(f"[1/6] data: {count} {what}")
        run_datagen(cfg, where, count, workers or max(1, os.cpu_count() or 1))
        times[key] = time.time() - t
        save()
    train_data = f"{data},{driving_data}" if driving else str(data)

    from .train import train, transfer_student, student_config

    previous = init
    for i, name in enumerate(STAGES):
        run = work / name
        mark = run / "done.json"
        finished = _done(mark)
        if finished:
            previous = finished["best"] or previous  # None: a stage with nothing to do
            log(f"[{i + 2}/6] {name}: done ({previous})")
            continue
        epochs = b.epochs[i]
        if epochs == 0:
            log(f"[{i + 2}/6] {name}: 0 epochs, skipped")
            continue
        kw: dict = {}
        if name == "adapt":
            # the parts a transfer re-initialises train alone; none (the shipped array itself): nothing to adapt
            from .data import InMemoryScenes

            probe = stage_config(name, data, run, epochs, b, device, seed)
            info = InMemoryScenes(str(data), "train", max_samples=1).info
            _, _, fresh = transfer_student(init, student_config(probe, info), info.emitted, log=log)
            parts = tuple(dict.fromkeys(k.split(".")[0] for k in fresh))
            if not parts:
                log(f"[2/6] adapt: every tensor of {init} fits {geometry.name}; nothing to adapt")
                run.mkdir(parents=True, exist_ok=True)
                _stamp(mark, skipped=True, best=None)
                previous = init
                continue
            kw = {"init": init, "transfer": True, "train_only": parts}
        else:
            kw = {"init": previous, "transfer": previous == init}
        cfg = stage_config(name, train_data, run, epochs, b, device, seed, **kw)
        log(f"[{i + 2}/6] {name}: {epochs} epoch(s), batch {cfg.batch_size}, lr {cfg.lr:g}, "
            f"training {', '.join(cfg.train_only) if cfg.train_only else 'everything'} on {device}")
        if run.exists() and not (run / "last.pt").exists():
            shutil.rmtree(run)  # nothing to continue from
        t = time.time()
        best = train(cfg, resume=resume)
        times[name] = times.get(name, 0.0) + time.time() - t
        _stamp(mark, best=str(best))
        save()
        previous = str(best)
    student = previous
    calibrated = work / "calibrated" / "student"
    if "calibrate" not in times:
        from .commands import calibrate_student, load_student

        if load_student(student).uncertainty is not None:
            log("[5/6] calibrate: the depth uncertainty on the validation rooms")
            t = time.time()
            calibrate_student(student, train_data, calibrated, device="cuda" if device == "cuda" else "cpu",
                              extra={"recipe": settings}, log=log)
            times["calibrate"] = time.time() - t
            # a run resumed from before this stage existed scored and bundled the uncalibrated student: again
            times.pop("evaluate", None)
            times.pop("bundle", None)
        else:
            times["calibrate"] = 0.0
        save()
    if calibrated.with_suffix(".safetensors").exists():
        student = str(calibrated.with_suffix(".safetensors"))

    results_md = work / "results.md"
    if "evaluate" not in times or not results_md.with_suffix(".json").exists():
        from .commands import load_predictor
        from .data import InMemoryScenes
        from .evaluate import evaluate, write_report

        log("[5/6] evaluate: the student and the baselines on the held-out test rooms")
        t = time.time()
        test = InMemoryScenes(data, "test", echo_free=True)
        dev = "cuda" if device == "cuda" else "cpu"
        specs = {"student (this recipe)": f"student:{student}", **BASELINES}
        predictors = {n: load_predictor(s, str(data), dev) for n, s in specs.items()}
        results = {n: evaluate(p, test, voxel_size_m=test.info.voxel_size_m, progress=True)
                   for n, p in predictors.items()}
        notes = (f"{len(test)} test scenes of {test.info.array} from rooms never seen in training; speaker at "
                 f"{settings['speaker']} m; budget {budget} ({settings['scenes']} scenes generated).")
        if driving:
            try:
                moving = InMemoryScenes(driving_data, "test", echo_free=True)
            except ValueError:  # too few driving rooms for a test split
                log("[5/6] evaluate: the driving rooms have no test split (too few scenes); not scored apart")
            else:
                results[DRIVING_ROW] = evaluate(predictors["student (this recipe)"], moving,
                                                voxel_size_m=test.info.voxel_size_m, progress=True)
                notes += (f" The last row: the student on {len(moving)} other test scenes, the robot driving at "
                          f"0-{driving_speed:g} m/s through the window.")
        write_report(results, results_md, f"Recipe for {geometry.name}: student against the baselines", notes)
        times["evaluate"] = time.time() - t
        save()
    results = json.loads(results_md.with_suffix(".json").read_text())

    bundle = work / "bundle"
    if not (bundle / "bundle.json").exists() or "bundle" not in times:
        from .commands import export_bundle

        log(f"[6/6] bundle: {bundle}")
        t = time.time()
        if bundle.exists():
            shutil.rmtree(bundle)
        from .train import export_student

        # float16 weights, as the shipped bundle: half the size, the graph stores them exactly
        if student.endswith(".safetensors"):  # calibrated
            from avperception.models.student import AudioStudent

            from .commands import model_extra

            AudioStudent.load(student).half().save(work / "export" / "student", model_extra(student))
            weights = work / "export" / "student.safetensors"
        else:
            weights = export_student(student, work / "export" / "student", {"recipe": settings}, half=True)
        export_bundle(str(weights), bundle, data=str(data), log=log)
        times["bundle"] = time.time() - t
    summary.update(bundle=str(bundle), student=student, scores=_scores(results), report=str(work / "report.md"))
    save()
    (work / "report.md").write_text(report_markdown(summary, results_md.read_text()))
    return summary


def _scores(results: dict) -> dict:
    """``{row: {abs_rel, delta1, rmse, layout_iou, voxel_iou}}`` of an evaluation (what the summary shows)."""
    out = {}
    for name, r in results.items():
        d, s, v = r.get("depth", {}), r.get("semantic", {}), r.get("voxels", {})
        out[name] = {k: float(x) for k, x in (("abs_rel", d.get("abs_rel")), ("delta1", d.get("delta1")),
                                               ("rmse", d.get("rmse")), ("layout_iou", s.get("layout_iou")),
                                               ("voxel_iou", v.get("iou"))) if x is not None}
    return out


def report_markdown(summary: dict, results_text: str) -> str:
    """The work directory's ``report.md``: what was run, how long each stage took, where the bundle is and how
    to launch it, then the evaluation (``results.md``)."""
    s = summary["settings"]
    times = summary["times_s"]
    student = summary["scores"].get("student (this recipe)", {})
    lines = [f"# Model bundle for {s['array_name']}", "",
             f"- array: `{s['array']}`; speaker at {s['speaker']} m (array frame); budget `{s['budget']}`, "
             f"{s['scenes']} scenes, seed {s['seed']}, started from `{s['init']}`"
             + (f"; {s['driving']:.0%} of the scenes heard with the robot driving at 0-{s['driving_speed_mps']:g} m/s"
                if s.get("driving") else ""),
             f"- bundle: `{summary['bundle']}` (model.onnx + bundle.json + weights; the bundle records the speaker "
             "position and the sweep)",
             f"- test depth: δ1 {student.get('delta1', float('nan')):.3f}, AbsRel "
             f"{student.get('abs_rel', float('nan')):.3f}, RMSE {student.get('rmse', float('nan')):.3f} m"
             + ("" if DRIVING_ROW not in summary["scores"] else
                f"; with the robot driving δ1 {summary['scores'][DRIVING_ROW].get('delta1', float('nan')):.3f}, "
                f"AbsRel {summary['scores'][DRIVING_ROW].get('abs_rel', float('nan')):.3f}"),
             "- wall time per stage: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items())
             + f" (total {sum(times.values()) / 60:.1f} min)", "",
             "Launch it:", "", "```bash",
             f"ros2 launch avperception perception.launch.py use_sim:=false emit:=true array:={s['array']} "
             f"model:={Path(summary['bundle']).resolve()}", "```", "", results_text.replace("# ", "## ", 1)]
    return "\n".join(lines) + "\n"
