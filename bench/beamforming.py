#!/usr/bin/env python3
"""Same as `avperception bench beamforming`; see avperception/bench/beamforming.py for what it measures."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avperception.bench.beamforming import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
