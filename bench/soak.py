#!/usr/bin/env python3
"""perception_node soaked for minutes, at real time or faster (same as ``avperception bench soak``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avperception.bench.soak import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
