#!/usr/bin/env bash
# The checks only a CUDA machine can do, in one go (the first four took 564 s on one H200,
# 2026-11-28, before ddp_step.py was added; now about 10 minutes):
#   1. pytest -m gpu: bf16 + channels_last, fp16 + GradScaler at 512 px with resume, torch.compile,
#      the lagged loss guard, NCCL under torchrun (tests/test_gpu.py)
#   2. benchmarks/ddp_step.py, then benchmarks/ddp.py: DDP with one NCCL process against a plain
#      step (PyTorch's default buffer copy and lab2's wrapper), and against a plain whole run
#   3. benchmarks/epoch.py: whole training epochs with 4 loader workers, plain and compiled
#   4. if time is left: epoch.py on 2 CPU cores (taskset), 2 against 4 loader workers: a
#      Colab-sized machine (a T4 with 2 vCPUs)
# The benchmarks append their tables to benchmarks/RESULTS.md. Packages missing on the machine
# can travel as wheels in .whl/ (installed into /tmp/site first when the folder exists).
#
#   bash benchmarks/gpu_checks.sh [OUT_DIR [STEP...]]   # OUT_DIR gets RESULTS.md and the log
#
# STEPs (default: all): tests, ddp, epoch, cores (the numbered checks above; `cores` runs only if
# the clock reads under 400 s). DDP_ARGS replaces ddp.py's arguments (default --epochs 3), e.g.
#   DDP_ARGS="--epochs 6 --n-trainval 600" bash benchmarks/gpu_checks.sh "$OUT" ddp
# Each step must end by a fixed second of the script's clock (tests 240, ddp_step.py 330, ddp.py
# 450, epoch.py 575, cores 575), so a device call of 590 s comes back with what was measured;
# choose the steps that fit the device time at hand.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${1:-/tmp/lab2-gpu-checks}
STEPS=" ${*:2} "; [ "$STEPS" = "  " ] && STEPS=" tests ddp epoch cores "
want() { [[ "$STEPS" == *" $1 "* ]]; }
mkdir -p "$OUT"
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
exec > >(tee "$OUT/gpu_checks.log") 2>&1
status=0
# each step has its own time limit, so that one slow step cannot take the later ones with it, and
# RESULTS.md is copied out after each step (a run stopped from outside keeps what it had measured)
step() {  # step SECONDS_UNTIL command...: run command until the script's clock reads SECONDS_UNTIL
    local until=$1; shift
    if [ "$SECONDS" -ge "$until" ]; then echo "skipped (no time left): $*"; status=1; return; fi
    timeout $((until - SECONDS)) "$@" || { echo "step failed or out of time ($?): $*"; status=1; }
    cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
}
nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv
$PY -c "import sys, torch, torchvision, cv2, albumentations as A, numpy
print('python', sys.version.split()[0], 'torch', torch.__version__, 'torchvision',
      torchvision.__version__, 'cv2', cv2.__version__, 'albumentations', A.__version__,
      'numpy', numpy.__version__, 'cuda', torch.version.cuda)" || exit 1
echo "CPUs: $(nproc); /dev/shm: $(df -h /dev/shm | tail -1)"
# addopts cleared: the notebook plugin (nbval) is not needed for these tests
want tests && step 240 $PY -m pytest -q -p no:cacheprovider -o addopts="-ra" -m gpu tests/test_gpu.py
want ddp && step 330 $PY benchmarks/ddp_step.py
# shellcheck disable=SC2086  # DDP_ARGS is a list of arguments
want ddp && step 450 $PY benchmarks/ddp.py ${DDP_ARGS:---epochs 3}
want epoch && step 575 $PY benchmarks/epoch.py --workers 4 --epochs 3 --compile
if want cores && [ "$SECONDS" -lt 400 ] && command -v taskset >/dev/null; then
    step 575 taskset -c 0,1 $PY benchmarks/epoch.py --workers 2 4 --epochs 3 --n-trainval 300 \
        --beyond-cores
fi
echo "gpu_checks.sh done in ${SECONDS} s, status $status"
exit $status
