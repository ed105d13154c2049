"""Progress bars: tqdm when installed, else a plain one-line counter on stderr."""

from __future__ import annotations

import sys
import time


class _Plain:
    def __init__(self, total: int, desc: str, unit: str, disable: bool) -> None:
        self.total, self.desc, self.unit, self.disable = total, desc, unit, disable
        self.n = 0
        self.t0 = time.perf_counter()
        self._last = 0.0

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.perf_counter()
        if not self.disable and (now - self._last > 0.5 or self.n >= self.total):
            self._last = now
            rate = self.n / max(now - self.t0, 1e-9)
            sys.stderr.write(f"\r{self.desc}: {self.n}/{self.total} {self.unit}s ({rate:.2f} {self.unit}/s)")
            sys.stderr.flush()

    def close(self) -> None:
        if not self.disable and self.n:
            sys.stderr.write("\n")


def progress(total: int, desc: str = "", unit: str = "it", disable: bool = False):
    """A progress bar with ``update(k)`` and ``close()``."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _Plain(total, desc, unit, disable)
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True)
