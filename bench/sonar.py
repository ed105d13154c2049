#!/usr/bin/env python3
"""Latency and CPU of the learned half as the node runs it (same as ``avperception bench sonar``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avperception.bench.sonar import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
