# avperception: two commands on a fresh Debian/Ubuntu machine, no ROS install needed.
#   make demo   -- simulated rooms through the whole pipeline (pictures in demo_out/, live DDS runs)
#   make test   -- the whole test suite
# Both run `make install` first, which creates/refreshes the virtual environment in .venv.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
export AMENT_PREFIX_PATH := $(abspath $(VENV))
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test bench clean system-deps msgs

install: $(STAMP) msgs

# Debian packages for live capture (PortAudio) and open3d (libusb); only when root and missing.
system-deps:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in libportaudio2 libusb-1.0-0; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then echo "apt-get install$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	    || echo "warning: could not install$$missing (live capture / open3d may not work)"; fi; \
	fi

$(STAMP): requirements.txt setup.py training/pyproject.toml | system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q -e . -e training
	touch $(STAMP)

msgs: $(STAMP)
	@scripts/build_msgs.sh $(VENV)

demo: install
	$(VENV)/bin/avperception demo --out demo_out
	$(VENV)/bin/avperception demo --ros --mode passive --duration 8
	$(VENV)/bin/avperception demo --ros --mode active --duration 15

test: install
	$(PY) -m pytest -q tests

bench: install
	$(VENV)/bin/avperception bench beamforming

clean:
	rm -rf build demo_out .pytest_cache
