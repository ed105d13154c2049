"""Networks shared by training and runtime (student, its building blocks) and the shipped model bundles."""

from __future__ import annotations

from pathlib import Path

from ..config import DEFAULT_ARRAY

BUNDLES_DIR = Path(__file__).resolve().parent / "bundles"


def default_model(array: str = DEFAULT_ARRAY) -> Path:
    """Path (without suffix) of the shipped student's torch weights for ``array``: ``.safetensors`` weights +
    ``.json`` config, inside the shipped bundle ``bundles/ARRAY/`` (see :mod:`avperception.inference.bundle`)."""
    p = BUNDLES_DIR / array / "model"
    if not p.with_suffix(".safetensors").exists() and (p.parent / "bundle.json").is_file():
        raise FileNotFoundError(f"the shipped bundle for array '{array}' carries only its ONNX graph, no torch weights "
                                "to fine-tune: start from the robot_8mic student with `--init default --transfer`, or "
                                "from a recipe run's WORK/export/student.safetensors")
    if not p.with_suffix(".safetensors").exists():
        shipped = sorted(x.parent.name for x in BUNDLES_DIR.glob("*/model.safetensors"))
        raise FileNotFoundError(f"no shipped student model for array '{array}' (shipped: {shipped or 'none'}); "
                                "train one with `avperception-train recipe`")
    return p
