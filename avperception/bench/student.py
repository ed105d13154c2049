"""Inference time of the student network: ONNX Runtime against PyTorch eager, one frame at a time.

The shipped model (or ``--model PATH``) is exported to ONNX in a temporary
folder, then both runtimes run the same 128 ms of 8-channel audio with the
given thread count; the ratio is measured in the same run. The real-time
target is one frame per hop of the perception pipeline (64 ms) with room to
spare: 10 ms on 2 CPU cores.

    avperception bench student [--model PATH] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from .common import machine, time_call


def run(model_path: str | None = None, threads: int = 2, min_time: float = 1.0) -> dict:
    import torch

    from ..models import default_model
    from ..models.export import OUTPUTS, export_onnx
    from ..models.student import AudioStudent

    torch.set_num_threads(threads)
    path = Path(model_path) if model_path else default_model()
    model = AudioStudent.load(path).float().eval()
    cfg = model.cfg
    x = (np.random.default_rng(0).standard_normal((1, cfg.num_mics, cfg.num_samples)) * 0.05).astype(np.float32)
    xt = torch.from_numpy(x)
    rows = []

    def eager():
        with torch.no_grad():
            return model(xt)

    t = time_call(eager, min_time=min_time)
    rows.append({"runtime": "torch eager", "ms": round(t["ms"], 3), "ms_min": round(t["ms_min"], 3)})
    notes = []
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
        notes.append("onnxruntime is not installed: pip install onnxruntime")
    if ort is not None:
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path, err = export_onnx(model, Path(tmp) / "student.onnx")
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
            t = time_call(lambda: sess.run(list(OUTPUTS[:4]), {"audio": x}), min_time=min_time)
        rows.append({"runtime": "onnxruntime", "ms": round(t["ms"], 3), "ms_min": round(t["ms_min"], 3),
                     "max_abs_diff_vs_torch": err})
    base = rows[0]["ms"]
    for r in rows:
        r["speedup_vs_torch_eager"] = round(base / r["ms"], 2)
    params = sum(p.numel() for p in model.parameters())
    return {"model": str(path), "array": cfg.array, "params": int(params), "threads": threads,
            "input": [1, cfg.num_mics, cfg.num_samples], "rows": rows, "notes": notes, "torch": torch.__version__,
            "machine": machine()}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", help="student weights (default: the shipped robot_8mic model)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for both runtimes (default 2)")
    ap.add_argument("--json", action="store_true")


def run_cli(a: argparse.Namespace) -> int:
    res = run(a.model, a.threads)
    if a.json:
        print(json.dumps(res))
        return 0
    print(f"student {res['array']} ({res['params'] / 1e6:.1f} M parameters), input {res['input']}, "
          f"{res['threads']} threads on {res['machine'].get('cpu', 'cpu')}")
    for r in res["rows"]:
        print(f"  {r['runtime']:12s} {r['ms']:7.2f} ms per frame (best {r['ms_min']:.2f}), "
              f"{r['speedup_vs_torch_eager']:.2f}x torch eager")
    for n in res["notes"]:
        print(n)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="avperception bench student", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run_cli(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
