#!/usr/bin/env bash
# Installs what `make demo` and `make test` need, skipping what is already there: a .venv with
# torch, FFCV and this project, and the Debian packages that needs: FFCV builds from source (a C++
# compiler, Python's headers, turbojpeg and OpenCV; venv), and with --demo the demo data (Debian's
# Fashion-MNIST). The build packages are checked only when the .venv is (re)installed.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_PKGS="g++ python3-dev python3-venv libturbojpeg0-dev libopencv-dev pkg-config"
DEMO_PKGS="dataset-fashion-mnist"
TORCH="torch==2.14.1 torchvision==0.29.1"
VENV=${VITDAY_VENV:-.venv}
PY=${PYTHON:-python3}

# The stamp holds a hash of what we install; a changed pyproject.toml reinstalls.
stamp="$VENV/.vitday-installed"
want=$(cat pyproject.toml tools/setup.sh | sha256sum | cut -d' ' -f1)
installed=0
[ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && installed=1

needed=""
[ "$installed" = 1 ] || needed="$BUILD_PKGS"
[ "${1:-}" = "--demo" ] && needed="$needed $DEMO_PKGS"
missing=""
for p in $needed; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing Debian packages:$missing" >&2
        echo "setup: run as root: apt-get update && apt-get install -y$missing" >&2
        exit 1
    fi
    echo "setup: apt-get install$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
[ "$installed" = 1 ] && exit 0

# A venv without pip is what `python3 -m venv` leaves when python3-venv is missing: make it again.
if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$VENV"
    if ! "$PY" -m venv "$VENV"; then
        rm -rf "$VENV"
        echo "setup: '$PY -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv), then rerun" >&2
        exit 1
    fi
fi
pip() { "$VENV/bin/python" -m pip -q --disable-pip-version-check "$@"; }
echo "setup: installing into $VENV (torch, FFCV from source, vitday)"
pip install $TORCH
pip install "setuptools>=64" wheel numpy cython
# FFCV 1.0.2 ships only an sdist; it builds against the apt libraries above.
pip install --no-build-isolation "ffcv==1.0.2"
pip install --no-build-isolation -e ".[test]"
echo "$want" > "$stamp"
