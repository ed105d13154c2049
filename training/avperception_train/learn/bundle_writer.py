"""Write model bundles: a trained student as ``model.onnx`` + ``bundle.json`` (+ ``model.safetensors``).

:func:`write_bundle` exports the graph with fixed shapes
(:func:`avperception.models.export.export_onnx`), stores float16-exact weights
as float16 (:func:`store_exact_half`), checks it (:func:`verify_onnx`, TensorRT's
parser rules, :func:`onnx_parity` against torch on random audio, a wall echo
and real windows) and writes the ``bundle.json`` (:func:`bundle_meta`) that
:func:`avperception.inference.bundle.load_bundle` reads back, verified.
:func:`student_contract` is what a student's own config says about the audio
it takes, for :func:`avperception.inference.bundle.fits`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from avperception.inference.bundle import ARRAY_HEIGHT_INPUT, graph_feed
from avperception.models.export import MIN_OPSET, export_onnx, output_names

from ..datagen.geometry import CLASS_NAMES

CLASS_COLORS = ((140, 107, 64), (153, 204, 255), (217, 217, 204), (230, 77, 51))


def store_exact_half(path: str | Path, min_size: int = 16) -> int:
    """Store every float32 initializer of ``path`` whose values are all exactly float16 numbers (weights saved in
    half precision) as float16 followed by a ``Cast`` back to float32: the graph computes bit for bit the same
    (ONNX Runtime folds the casts when it loads), in about half the file. Returns the bytes saved."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(path))
    inits, casts, saved = [], [], 0
    for t in m.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32 and a.size >= min_size and np.array_equal(a.astype(np.float16).astype(np.float32), a):
            h = numpy_helper.from_array(a.astype(np.float16), t.name + "__half")
            inits.append(h)
            casts.append(helper.make_node("Cast", [h.name], [t.name], to=TensorProto.FLOAT, name=t.name + "__cast"))
            saved += a.nbytes // 2
        else:
            inits.append(t)
    if casts:
        nodes = list(m.graph.node)
        m.graph.ClearField("initializer")
        m.graph.initializer.extend(inits)
        m.graph.ClearField("node")
        m.graph.node.extend(casts + nodes)
        onnx.save(m, str(path))
    return saved


def verify_onnx(path: str | Path, input_shape: tuple[int, ...], min_opset: int = MIN_OPSET) -> dict:
    """``onnx.checker`` (full check) + strict shape inference; every input and output shape fixed; opset >= 17.

    Returns ``{name: shape}`` of the outputs; raises ``ValueError`` naming what is wrong.
    """
    import onnx

    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    opset = max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    if opset < min_opset:
        raise ValueError(f"{path}: opset {opset} < {min_opset}")

    def shape(v) -> list:
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in v.type.tensor_type.shape.dim]

    ins = {v.name: shape(v) for v in inferred.graph.input}
    want = {"audio": list(input_shape)} | ({ARRAY_HEIGHT_INPUT: [1]} if ARRAY_HEIGHT_INPUT in ins else {})
    if ins != want:
        raise ValueError(f"{path}: inputs {ins} are not {want}")
    outs = {v.name: shape(v) for v in inferred.graph.output}
    loose = {k: s for k, s in outs.items() if not all(isinstance(d, int) and d > 0 for d in s)}
    if loose:
        raise ValueError(f"{path}: outputs without a fixed shape: {loose}")
    return outs


def onnx_parity(model: torch.nn.Module, path: str | Path, audio: np.ndarray,
                names: tuple[str, ...], array_height: float = 0.0) -> dict[str, float]:
    """Largest ``|onnxruntime - torch|`` of every output on ``audio (M, N)`` and ``array_height`` (m; 0: unknown;
    fed only to a graph that takes it) (NaN-aware: both NaN counts as equal)."""
    import onnxruntime as ort

    x = np.ascontiguousarray(np.asarray(audio, dtype=np.float32)[None])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    got = dict(zip(names, sess.run(list(names), graph_feed([i.name for i in sess.get_inputs()], x, array_height))))
    with torch.no_grad():
        ref = model.float().eval()(torch.from_numpy(x), torch.tensor([array_height]) if array_height > 0 else None)
    errs = {}
    for k in names:
        r, g = ref[k].numpy(), got[k]
        if r.shape != g.shape:
            raise ValueError(f"output {k}: onnx shape {g.shape} vs torch {tuple(r.shape)}")
        both_nan = np.isnan(r) & np.isnan(g)
        errs[k] = float(np.max(np.where(both_nan, 0.0, np.abs(g - r)), initial=0.0))
    return errs


def sha256_json(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _versions() -> dict:
    import avperception

    out = {"avperception": avperception.__version__, "torch": torch.__version__}
    for mod in ("onnx", "onnxruntime", "numpy"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


def _array_of(cfg):
    """The model's array as an :class:`ArrayGeometry`: the preset of its name when the positions agree (1 mm)."""
    from avperception.config import ArrayGeometry, ConfigError, load_array

    pos = np.asarray(cfg.array_positions, dtype=np.float64)
    try:
        preset = load_array(cfg.array)
        if preset.positions.shape == pos.shape and np.abs(preset.positions - pos).max() <= 1e-3:
            return preset
    except (ConfigError, FileNotFoundError):
        pass
    if pos.shape != (cfg.num_mics, 3):
        raise ValueError(f"the model's config has no microphone positions for its {cfg.num_mics} mics; give array=")
    return ArrayGeometry(cfg.array, pos, sample_rate=cfg.sample_rate)


def student_contract(cfg):
    """What a student's own config says about the audio it takes, as a (file-less)
    :class:`~avperception.inference.bundle.ModelBundle` for :func:`~avperception.inference.bundle.fits`."""
    from avperception.inference.bundle import ModelBundle

    return ModelBundle(Path(f"<{cfg.array} student>"), {
        "array": {"name": cfg.array, "positions": [list(map(float, p)) for p in cfg.array_positions]},
        "sample_rate": int(cfg.sample_rate), "speed_of_sound": float(cfg.speed_of_sound)})


def beam_speed(cfg, speed_of_sound: float | None) -> float | None:
    """The speed of sound a student's fit to some audio depends on (for
    :func:`~avperception.inference.bundle.fits`): ``speed_of_sound`` for one that beamforms (echo beams or a layout
    head: its beams are steered with it), else None (it is not compared)."""
    return speed_of_sound if (cfg.echo_beams or cfg.layout_beams) else None


def bundle_meta(model, *, array, speaker_position, sweep_level_db: float, sweep_params: dict, emitted: np.ndarray,
                voxel_center, voxel_extent, voxel_resolution, classes, class_colors, train_config: dict | None,
                output_shapes: dict, speed_of_sound: float, opset: int, name: str = "") -> dict:
    """The ``bundle.json`` of ``model`` (everything but the file hashes)."""
    from avperception.inference.bundle import FORMAT, FORMAT_VERSION, ONNX_NAME, sweep_id

    cfg = model.cfg
    h, w = cfg.pano_h, cfg.pano_w
    res_az, res_el = 360.0 / w, (cfg.el_max_deg - cfg.el_min_deg) / h
    c = len(classes)
    meanings = {
        "depth": ("m", "range along each panorama pixel's ray from the array origin, (H, W)"),
        "semantic": ("logits", f"class logits (C, H, W), C = {c}: {', '.join(classes)}; argmax = label"),
        "energy": ("relative power", "acoustic energy map of ambient sources on the panorama grid, (H, W), >= 0"),
        "voxels": ("logits", "occupancy logits (D, H, W) indexed [z, y, x] over the voxel crop; > 0 = occupied"),
        "layout": ("m", "the room's depth without obstacles (walls, floor, ceiling), (H, W)"),
        "walls": ("m", "each panorama column's horizontal wall distance, (W,)"),
        "heights": ("m", "floor distance below and ceiling distance above the array, (2,)"),
        "depth_uncertainty": ("m", "standard deviation of the depth at each pixel (the Laplace scale of its log, "
                                   "times sqrt(2) and the depth), (H, W)"),
    }
    outputs = {k: {"shape": list(s), "dtype": "float32", "units": meanings[k][0], "meaning": meanings[k][1]}
               for k, s in output_shapes.items()}
    sp = dict(sweep_params)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name or f"{cfg.array}_student",
        "array": array.to_dict(),
        "sample_rate": int(cfg.sample_rate),
        "window": {"num_samples": int(cfg.num_samples), "onset": "sample 0 = the sweep's onset at the speaker"},
        "speed_of_sound": float(speed_of_sound),
        "sweep": {"kind": sp["kind"], "f0_hz": float(sp["f0_hz"]), "f1_hz": float(sp["f1_hz"]),
                  "duration_s": float(sp["duration_s"]), "fade": float(sp["fade"]),
                  "sweep_id": sweep_id(sp["kind"], sp["f0_hz"], sp["f1_hz"], sp["duration_s"], cfg.sample_rate),
                  "samples": [float(v) for v in np.asarray(emitted, dtype=np.float64)],
                  "level_db": float(sweep_level_db), "level_ref": "peak dBFS at 1 m from the speaker",
                  "speaker_position": [float(v) for v in speaker_position],
                  "speaker_frame": "array frame (x forward, y left, z up), m"},
        "input": {"name": "audio", "shape": [1, int(cfg.num_mics), int(cfg.num_samples)], "dtype": "float32",
                  "meaning": "raw audio in [-1, 1], microphones in the array's order, sample 0 = sweep onset"},
        **({"inputs": {ARRAY_HEIGHT_INPUT: {
            "shape": [1], "dtype": "float32", "units": "m",
            "meaning": "the array's height above the floor where the robot knows it (0: unknown): the floor is "
                       "rendered that far below the array instead of being told from the ceiling by its echo"}}}
           if model.layout is not None else {}),
        "outputs": outputs,
        "panorama": {"kind": "equirectangular", "shape": [h, w], "resolution_deg": res_az,
                     "el_max_deg": float(cfg.el_max_deg), "el_min_deg": float(cfg.el_min_deg),
                     "column_az_deg": [180.0 - res_az / 2, -180.0 + res_az / 2],
                     "row_el_deg": [float(cfg.el_max_deg) - res_el / 2, float(cfg.el_min_deg) + res_el / 2],
                     "convention": (f"pixel centres: column j at azimuth 180 - (j + 0.5) * {res_az:g} deg (column 0 "
                                    f"at {180 - res_az / 2:g}, decreasing to the right; azimuth 0 = +x, 90 = +y), "
                                    f"row i at elevation {cfg.el_max_deg:g} - (i + 0.5) * {res_el:g} deg (row 0 "
                                    "highest); avperception.dsp.grid.equirectangular")},
        "classes": {"names": list(classes), "colors": [[int(v) for v in col] for col in class_colors]},
        "voxels": {"center_m": [float(v) for v in voxel_center], "extent_m": [float(v) for v in voxel_extent],
                   "resolution": [int(v) for v in voxel_resolution], "axis_order": "zyx",
                   "shape_dhw": [int(voxel_resolution[2]), int(voxel_resolution[1]), int(voxel_resolution[0])],
                   "frame": "array frame (x forward, y left, z up)",
                   "note": "center_m, extent_m and resolution are x, y, z; the output is indexed [z, y, x]"},
        "model": {"onnx": ONNX_NAME, "opset": int(opset), "student_config": _plain(cfg)},
        "training": {"config_hash": sha256_json(train_config) if train_config else None,
                     "config": train_config},
        "versions": _versions(),
    }


def _plain(cfg) -> dict:
    from dataclasses import asdict

    d = asdict(cfg)
    d.pop("emitted", None)  # the sweep's samples are in "sweep"
    return d


def write_bundle(model, out_dir: str | Path, *, speaker_position, sweep_level_db: float, sweep_params: dict,
                 voxel_center, voxel_extent, voxel_resolution, classes=CLASS_NAMES, class_colors=CLASS_COLORS,
                 train_config: dict | None = None, with_weights: bool = True, array=None,
                 speed_of_sound: float | None = None, check_audio: list[np.ndarray] | tuple = (),
                 opset: int = 17, tol: float = 1e-3, name: str = "", weights_from: str | Path | None = None,
                 compact: bool = True, uncertainty_calibration: dict | None = None, log=print) -> Path:
    """Write the bundle of ``model`` (an ``AudioStudent``) into ``out_dir``; returns ``out_dir``.

    ``sweep_params``: ``{kind, f0_hz, f1_hz, duration_s, fade}`` of the emitted sweep (its samples are rendered
    from these and must match the model's ``cfg.emitted`` when it has one);
    ``speaker_position (3,)`` and ``sweep_level_db`` (peak dBFS at 1 m): where and how loud the robot emits it;
    the voxel crop: ``voxel_center``, ``voxel_extent`` (m) and ``voxel_resolution`` (voxels), all x, y, z.
    ``array``: the array of the data (default: the model's own); a model made for another array, or (with
    beams) another speed of sound, is refused with :class:`~avperception.inference.bundle.BundleMismatch`.
    The ONNX graph (opset >= 17, fixed shapes, no latent) is verified with ``onnx.checker`` + shape inference and
    against torch on random audio, a synthetic wall echo and every ``check_audio (M, N)`` window (``tol`` on
    every output). ``compact``: weights that are exactly float16 numbers (saved with ``--half``) are stored
    as float16 in the graph (:func:`store_exact_half`; the same outputs, half the file).
    ``with_weights``: also ``model.safetensors`` (+ ``model.json``) for the torch backend,
    copied byte for byte from ``weights_from`` when given (an ``AudioStudent.save`` file of this model).
    ``uncertainty_calibration``: how the depth uncertainty was calibrated
    (:func:`~avperception_train.learn.calibrate.calibrate_uncertainty`), recorded in bundle.json.
    """
    from avperception.dsp.echo import sweep
    from avperception.inference.bundle import (BUNDLE_JSON, ONNX_NAME, SAFETENSORS_NAME, BundleMismatch, check_fits,
                                               fits, load_bundle, sha256_file)
    from avperception.inference.synthetic import echo_window

    model = model.float().eval()
    cfg = model.cfg
    array = array if array is not None else _array_of(cfg)
    c = float(speed_of_sound if speed_of_sound is not None else cfg.speed_of_sound)
    diffs = fits(student_contract(cfg), array, cfg.sample_rate, beam_speed(cfg, c))
    if diffs:
        raise BundleMismatch(f"the model ({cfg.array}) was not trained for array '{array.name}': "
                             + "; ".join(diffs) + ". Give the array, dataset or datagen config it was trained with",
                             diffs)
    sp = dict(sweep_params)
    rendered = sweep(cfg.sample_rate, sp["f0_hz"], sp["f1_hz"], sp["duration_s"], sp["kind"], sp["fade"])
    if cfg.emitted:
        emitted = np.asarray(cfg.emitted, dtype=np.float64)
        if emitted.shape != rendered.shape or np.abs(emitted - rendered).max() > 1e-4:
            raise ValueError(f"the model was trained with another sweep than {sp} (its emitted samples differ); "
                             "give the sweep of the data it was trained on")
    else:
        emitted = rendered
    if len(classes) != cfg.num_classes or np.shape(class_colors) != (cfg.num_classes, 3):
        raise ValueError(f"{cfg.num_classes} classes need {cfg.num_classes} names and RGB colours, got "
                         f"{list(classes)} and shape {np.shape(class_colors)}")
    if tuple(int(v) for v in voxel_resolution)[::-1] != (cfg.voxel_size,) * 3:
        raise ValueError(f"voxel_resolution {list(voxel_resolution)} is not the model's {cfg.voxel_size}^3")
    names = output_names(model)
    takes_height = model.layout is not None  # the array's height as a second input: only a layout head renders it
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tmp_onnx = Path(tmp) / ONNX_NAME
        export_onnx(model, tmp_onnx, opset=opset, check=False, outputs=names, fixed=True, array_height=takes_height)
        if compact:
            store_exact_half(tmp_onnx)
        shapes = verify_onnx(tmp_onnx, (1, cfg.num_mics, cfg.num_samples))
        from avperception.inference.graphs import validate_graph

        validate_graph(tmp_onnx, (1, cfg.num_mics, cfg.num_samples))  # what TensorRT's ONNX parser would refuse
        rng = np.random.default_rng(0)
        windows = {"random": (0.05 * rng.standard_normal((cfg.num_mics, cfg.num_samples))).astype(np.float32),
                   "wall echo": echo_window(emitted, array.positions, speaker_position, cfg.sample_rate,
                                            cfg.num_samples, 2.0, 30.0, sweep_level_db, speed_of_sound=c)}
        windows.update({f"check audio {i}": a for i, a in enumerate(check_audio)})
        heights = (0.0, 1.5) if takes_height else (0.0,)  # unknown, and an array 1.5 m up
        for (what, audio), h in itertools.product(windows.items(), heights):
            errs = onnx_parity(model, tmp_onnx, audio, names, h)
            what = what + (f", array {h:g} m up" if h else "")
            bad = {k: v for k, v in errs.items() if not v <= tol}
            log(f"onnx vs torch ({what}): " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
            if bad:
                raise ValueError(f"the ONNX graph differs from torch on {what} beyond {tol:g}: {bad}")
        meta = bundle_meta(model, array=array, speaker_position=speaker_position, sweep_level_db=sweep_level_db,
                           sweep_params=sp, emitted=emitted, voxel_center=voxel_center, voxel_extent=voxel_extent,
                           voxel_resolution=voxel_resolution, classes=classes, class_colors=class_colors,
                           train_config=train_config, output_shapes=shapes, speed_of_sound=c, opset=opset,
                           name=name)
        if uncertainty_calibration:
            meta["uncertainty_calibration"] = uncertainty_calibration
        meta["model"]["onnx_sha256"] = sha256_file(tmp_onnx)
        meta["model"]["onnx_bytes"] = tmp_onnx.stat().st_size
        tmp_onnx.replace(out_dir / ONNX_NAME)
    st = out_dir / SAFETENSORS_NAME
    if with_weights:
        if weights_from is not None and Path(weights_from).with_suffix(".safetensors").resolve() != st.resolve():
            shutil.copyfile(Path(weights_from).with_suffix(".safetensors"), st)
            if Path(weights_from).with_suffix(".json").is_file():
                shutil.copyfile(Path(weights_from).with_suffix(".json"), st.with_suffix(".json"))
        elif weights_from is None:
            model.save(st, {"train_config": train_config} if train_config else None)
        meta["model"]["safetensors"] = SAFETENSORS_NAME
        meta["model"]["safetensors_sha256"] = sha256_file(st)
    else:  # no stale weights that the bundle does not describe
        st.unlink(missing_ok=True)
        st.with_suffix(".json").unlink(missing_ok=True)
    (out_dir / BUNDLE_JSON).write_text(json.dumps(meta, indent=1) + "\n")
    bundle = load_bundle(out_dir)  # what the runtime will read, verified
    check_fits(bundle, array, cfg.sample_rate, c)
    return out_dir
