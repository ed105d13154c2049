#!/usr/bin/env python3
"""Time the torch feature front-end on CUDA (and CPU for comparison).

    python bench/features_gpu.py [--mics 8] [--batch 16] [--seconds 1.0] [--json]

Uses ``cuda`` when torch sees a GPU, otherwise says so and times the CPU only.
Same as ``avperception bench features``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avperception.bench.features import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
