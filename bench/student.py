#!/usr/bin/env python3
"""Student inference time, ONNX Runtime vs torch eager (same as ``avperception bench student``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avperception.bench.student import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
