#!/usr/bin/env bash
# GPU check: install what the machine lacks from the wheels in .whl/, run the gpu tests, then
# benchmarks/gpu_bench.py. Run from anywhere:
#
#   bash benchmarks/gpu_check.sh            # on a CUDA machine (about 4-7 minutes)
#   bash benchmarks/gpu_check.sh --dry-run  # no GPU needed: checks this script's logic, runs the
#                                           # (skipping) gpu tests and the benchmark on the CPU
#
# Environment: PYTHON (default python3), OUT (results folder; default benchmarks/results, a
# temporary folder for a dry run),
# ADNTN_SITE (where wheels go; default /tmp/site), TEST_TIMEOUT / BENCH_TIMEOUT (seconds).
# Wheels: quimb, cotengra and autoray are always installed from .whl/; cytoolz, toolz and
# pytest (with pluggy, iniconfig, packaging, pygments) only when the machine lacks them.
# Exit status: 0 when the tests and every benchmark measurement passed, else the first failure.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
SITE="${ADNTN_SITE:-/tmp/site}"
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
TEST_TIMEOUT="${TEST_TIMEOUT:-210}"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-240}"
if [[ -n "${OUT:-}" ]]; then
  RESULTS="$OUT"
elif ((DRY)); then
  RESULTS="$(mktemp -d)"
else
  RESULTS="$ROOT/benchmarks/results"
fi
mkdir -p "$RESULTS"
T0=$SECONDS
rc_tests=0
rc_bench=0

say() { printf '\n==> %s  [%ds]\n' "$*" "$((SECONDS - T0))"; }

# ------------------------------------------------------------------ wheels
say "install missing packages from .whl/ into $SITE"
has() { "$PY" -c "import $1" >/dev/null 2>&1; }
wanted=(quimb cotengra autoray)
has cytoolz || wanted+=(cytoolz)
has toolz || wanted+=(toolz)
has pytest || wanted+=(pytest pluggy iniconfig packaging pygments)
wheels=()
for name in "${wanted[@]}"; do
  found=("$ROOT"/.whl/"$name"-[0-9]*.whl)
  if [[ -e "${found[0]}" ]]; then
    wheels+=("${found[0]}")
  else
    echo "missing wheel for $name in .whl/ (run: bash benchmarks/fetch_gpu_wheels.sh)" >&2
  fi
done
mkdir -p "$SITE"
if ((${#wheels[@]})); then
  printf '  %s\n' "${wheels[@]##*/}"
  if ! "$PY" -m pip install --quiet --no-index --no-deps --upgrade --target "$SITE" \
      "${wheels[@]}" >"$RESULTS/pip_install.log" 2>&1; then
    # no pip, or pip refused: a wheel is a zip archive laid out for site-packages
    echo "  pip install failed or is missing (see $RESULTS/pip_install.log); unpacking instead"
    for w in "${wheels[@]}"; do "$PY" -m zipfile -e "$w" "$SITE" || exit 3; done
  fi
fi
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"

say "imports"
"$PY" - <<'EOF' || { echo "import check failed" >&2; exit 3; }
import importlib, sys
import torch, numpy, quimb, cotengra, autoray
import adntn_lab, adntn_lab.nn, adntn_lab.engine.cupy_backend
from adntn_lab.engine.backends import available_backends, machine_summary
assert "anywidget" not in sys.modules and "ipywidgets" not in sys.modules, "widgets imported"
print(f"python {sys.version.split()[0]}; torch {torch.__version__} (CUDA {torch.version.cuda}); "
      f"numpy {numpy.__version__}; quimb {quimb.__version__}; cotengra {cotengra.__version__}; "
      f"autoray {autoray.__version__}")
try:
    cupy = importlib.import_module("cupy")
    print(f"cupy {cupy.__version__}")
except ImportError:
    print("cupy not installed")
print("machine:", machine_summary())
print("available backends:", available_backends())
EOF

# ------------------------------------------------------------------ device
say "nvidia-smi"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi | tee "$RESULTS/nvidia_smi.txt"
  nvidia-smi --query-gpu=name,memory.total,clocks.max.memory,driver_version --format=csv \
    | tee -a "$RESULTS/nvidia_smi.txt"
else
  echo "nvidia-smi not found (no NVIDIA driver here)"
  if ((!DRY)); then
    echo "this check needs a CUDA machine; use --dry-run to test the script without one" >&2
    exit 2
  fi
fi

# ------------------------------------------------------------------ tests
say "gpu tests (timeout ${TEST_TIMEOUT}s)"
timeout --signal=INT --kill-after=20 "$TEST_TIMEOUT" \
  "$PY" -m pytest -m gpu tests/test_gpu.py -q -ra -p no:cacheprovider 2>&1 \
  | tee "$RESULTS/gpu_pytest.log"
rc_tests=${PIPESTATUS[0]}
if ((DRY)) && ((rc_tests == 0)); then
  grep -q "skipped" "$RESULTS/gpu_pytest.log" \
    && echo "(dry run: the gpu tests are expected to skip without CUDA)"
fi

# ------------------------------------------------------------------ benchmark
say "benchmark (timeout ${BENCH_TIMEOUT}s)"
bench_args=()
((DRY)) && bench_args+=(--dry-run --out "$RESULTS/gpu_results_dry_run.json")
timeout --signal=INT --kill-after=20 "$BENCH_TIMEOUT" \
  "$PY" benchmarks/gpu_bench.py "${bench_args[@]}" 2>&1 | tee "$RESULTS/gpu_bench.log"
rc_bench=${PIPESTATUS[0]}

say "done: tests exit $rc_tests, benchmark exit $rc_bench; results in $RESULTS"
if ((rc_tests)); then exit "$rc_tests"; fi
exit "$rc_bench"
