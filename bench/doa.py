#!/usr/bin/env python3
"""Same as `avperception bench doa`; see avperception/bench/doa.py for what it measures."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avperception.bench.doa import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
