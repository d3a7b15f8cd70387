#!/usr/bin/env bash
# Set up bopkd on a fresh Debian/Ubuntu machine: system library for open3d, a virtual environment in
# .venv, and bopkd with its dependencies (--dev adds the test tools). Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
for a in "$@"; do
  case "$a" in
    --dev) DEV=1 ;;
    *) echo "setup.sh: unknown option $a (use --dev for the test tools)" >&2; exit 2 ;;
  esac
done

# open3d needs libusb-1.0 at import time.
# grep reads all of ldconfig's output (grep -q would end the pipe early and fail it under pipefail).
if ! ldconfig -p 2>/dev/null | grep 'libusb-1.0.so.0' >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup.sh: installing libusb-1.0-0 (needed by open3d)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null; }; then
      echo "setup.sh: apt-get could not install libusb-1.0-0 (needed by open3d); install it, then rerun: apt-get install -y libusb-1.0-0" >&2
      exit 1
    fi
  else
    echo "setup.sh: open3d needs the system library libusb-1.0-0; install it with: sudo apt-get install -y libusb-1.0-0" >&2
    exit 1
  fi
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if [ "$DEV" = 1 ]; then
  .venv/bin/python -m pip install -q -e ".[dev]"
else
  .venv/bin/python -m pip install -q -e .
fi
.venv/bin/python -c "import bopkd, open3d, torch; print('bopkd ready: torch', torch.__version__, '| open3d', open3d.__version__)"
