"""Networks shared by training and runtime (student, its building blocks)."""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def default_model(array: str = "robot_8mic") -> Path:
    """Path (without suffix) of the shipped student for ``array``: ``.safetensors`` weights + ``.json`` config."""
    p = WEIGHTS_DIR / f"{array}_student"
    if not p.with_suffix(".safetensors").exists():
        shipped = sorted(x.stem.removesuffix("_student") for x in WEIGHTS_DIR.glob("*_student.safetensors"))
        raise FileNotFoundError(f"no shipped student model for array '{array}' (shipped: {shipped or 'none'}); "
                                "train one with `avperception-train recipe`")
    return p
