"""Helpers shared by the benchmarks: timing, test signals, environment description."""

from __future__ import annotations

import os
import platform
import time
from typing import Callable

import numpy as np


def time_call(fn: Callable[[], object], min_time: float = 0.3, min_reps: int = 3, max_reps: int = 500,
              warmup: int = 1) -> dict:
    """Median and minimum wall time of ``fn()`` in milliseconds.

    Runs ``warmup`` untimed calls, then repeats until ``min_time`` seconds have
    passed (at least ``min_reps``, at most ``max_reps`` calls). The median is
    what the benchmarks report; the minimum shows the noise of a shared machine.
    """
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < min_time and len(times) < max_reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    a = np.asarray(times) * 1e3
    return {"ms": float(np.median(a)), "ms_min": float(a.min()), "reps": int(len(a))}


def machine() -> dict:
    """What the numbers were measured on."""
    info = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "numpy": np.__version__}
    try:
        import scipy

        info["scipy"] = scipy.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover
        pass
    return info


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
