#!/usr/bin/env python3
"""Learned outputs scored live in simulated rooms (same as ``avperception bench sonar-quality``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avperception.bench.sonar_quality import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
