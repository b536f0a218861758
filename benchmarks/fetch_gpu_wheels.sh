#!/usr/bin/env bash
# Download the wheels that benchmarks/gpu_check.sh installs on a CUDA machine whose image lacks
# them (Python 3.12, x86-64): quimb, cotengra, autoray, cytoolz, toolz and pytest with its
# dependencies. They land in .whl/ in the repository root (ignored by git).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl \
  quimb cotengra autoray cytoolz toolz pytest pluggy iniconfig packaging pygments
ls -1 .whl
