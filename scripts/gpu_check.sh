#!/usr/bin/env bash
# The GPU checks, in one call on a machine with a CUDA GPU and numba-cuda installed: every test that
# runs on the "GPU" device (no simulator), then benchmarks/gpu_compare.py. Logs go to $OUT (or
# ./gpu-check-out). Usage: bash scripts/gpu_check.sh [TEST_SECONDS] [BENCH_SECONDS] [BENCH_ARGS...]
# Where the machine's packages do not fit (numba-cuda 0.30 fails on NumPy 2.5, which removed
# np.row_stack), put wheels in .whl/: they are installed into /tmp/site first.
set -u
cd "$(dirname "$0")/.."
out=${OUT:-gpu-check-out}
mkdir -p "$out"
test_seconds=${1:-240}
bench_seconds=${2:-180}
shift 2 2>/dev/null || shift $#
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
unset NUMBA_ENABLE_CUDASIM
if ls .whl/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PYTHONPATH
fi

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
python3 - <<'EOF'
import importlib.metadata as m
print({p: m.version(p) for p in ("numba", "numba-cuda", "llvmlite", "numpy", "onnx", "onnxruntime", "torch", "hypothesis", "pytest")})
from numba import cuda
print("numba.cuda available:", cuda.is_available(), cuda.get_current_device().name if cuda.is_available() else "")
EOF

# Every test with a "GPU" parametrization or a GPU test module; a hang must not eat the budget.
# Workers compile the CPU kernels the tests compare against in parallel (no disk cache there yet).
per_test=$(python3 -c "import pytest_timeout" 2>/dev/null && echo "--timeout 120")
workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8")
timeout "$test_seconds" python3 -m pytest -q -p no:cacheprovider $per_test $workers \
    -k "GPU or gpu" -rfE tests 2>&1 | tee "$out/tests.log" | grep -v "^\s*$" | tail -40
echo "tests exit: ${PIPESTATUS[0]}"

timeout "$bench_seconds" python3 benchmarks/gpu_compare.py --json "$out/gpu_compare.json" "$@" 2>&1 | tee "$out/bench.log"
echo "bench exit: ${PIPESTATUS[0]}"
