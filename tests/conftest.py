import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# our message package and share dir live in the venv's prefix when no ROS setup.bash was sourced
prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
if sys.prefix not in prefixes:
    os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join(prefixes + [sys.prefix])
