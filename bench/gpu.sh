#!/usr/bin/env bash
# Issue 8 in one command on a GPU machine (an H100/H200 with 16 cores; about 8 minutes):
#   loader vs ImageFolder, the model bound (MFU), the trainer end to end, the usual way,
#   a profile of one step at 128 and 224 px, and the 24-hour plan from the measured rates.
# Here first: bash tools/gpu_wheels.sh   (FFCV wheel for CPython 3.12 into .whl/)
# There, from the repository root with .whl carried:  bash bench/gpu.sh [OUT_DIR]
# Data: IMAGES synthetic ~500x375 JPEGs (bench/loader.py); their betons sit in the page cache,
# as ImageNet's do on a 128 GiB machine (ImageNet betons at 64/128/224 px take ~50 GB).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-results/gpu}}
images=${IMAGES:-10000}
work=${WORK:-/tmp/vitday_bench}
mkdir -p "$out"
if ! python3 -c "import ffcv" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1
run() { echo "== $*"; "$@" || echo "FAILED ($?): $*"; }
run python3 bench/loader.py --images "$images" --sizes 64,128,224 --workers 16 --repeats 2 --work "$work" \
    --out "$out/loader_bench.json"
run python3 -m bench.model --sizes 64,128,160,192,224 --batch 256 --out "$out/model_bench.json"
run python3 -m bench.train --config s16_24h --data.dir="$work/betons_$images" --data.num_workers=16 \
    --resolutions 64,128,224 --steps 20 --repeats 3 --out "$out/train_bench.json"
run python3 -m bench.usual --folder "$work/jpeg_$images" --sizes 64,128,224 --batch 1024 --workers 16 \
    --steps 5 --repeats 2 --out "$out/usual_bench.json"
run python3 -m bench.profile --config s16_24h --sizes 128,224 --out "$out/profile.json" --train.batch_size=256
run python3 -m pipeline.plan --config s16_24h --throughput "$out/train_bench.json" | tee "$out/plan.txt"
