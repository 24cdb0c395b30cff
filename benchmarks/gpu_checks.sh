#!/usr/bin/env bash
# The checks only a CUDA machine can do, in one go (about 8 minutes on one H100 or H200):
#   1. pytest -m gpu: bf16 + channels_last, fp16 + GradScaler at 512 px with resume, torch.compile,
#      the lagged loss guard, NCCL under torchrun (tests/test_gpu.py)
#   2. benchmarks/epoch.py: whole training epochs with 4 loader workers, plain and compiled
#   3. benchmarks/ddp.py: torchrun --nproc_per_node 1 (NCCL) against a plain run
#   4. if time is left: epoch.py on 2 CPU cores (taskset), 2 against 4 loader workers: a
#      Colab-sized machine (a T4 with 2 vCPUs), where PyTorch warns about 4 workers
# The benchmarks append their tables to benchmarks/RESULTS.md. Packages missing on the machine
# can travel as wheels in .whl/ (installed into /tmp/site first when the folder exists).
#
#   bash benchmarks/gpu_checks.sh [OUT_DIR]      # OUT_DIR gets a copy of RESULTS.md and the log
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${1:-/tmp/lab2-gpu-checks}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
exec > >(tee "$OUT/gpu_checks.log") 2>&1
status=0
nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv
# addopts cleared: the notebook plugin (nbval) is not needed for these tests
$PY -m pytest -q -p no:cacheprovider -o addopts="-ra" -m gpu tests/test_gpu.py || status=1
$PY benchmarks/epoch.py --workers 4 --epochs 3 --compile || status=1
$PY benchmarks/ddp.py --epochs 3 || status=1
if [ "$SECONDS" -lt 400 ] && command -v taskset >/dev/null; then
    timeout $((560 - SECONDS)) taskset -c 0,1 $PY benchmarks/epoch.py --workers 2 4 --epochs 2 \
        || echo "the 2-core epoch comparison stopped (out of time, or the message above)"
fi
cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
exit $status
