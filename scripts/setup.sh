#!/usr/bin/env bash
# Set up the development environment in .venv at the repository root.
#
#   bash scripts/setup.sh
#
# Creates .venv (python3 -m venv) when it is missing, upgrades pip, installs torch when the venv
# cannot import it, then installs this package in editable mode with its `dev` extras.
# Idempotent: when pyproject.toml and the Python version are unchanged since the last successful
# run, it only checks the venv and returns within a second.
#
# Environment:
#   PYTHON       interpreter used to create the venv (default: python3; needs >= 3.11)
#   TORCH_SPEC   pip requirement for torch when it is missing (default: torch==2.13.0)
#   ADNTN_FORCE_SETUP=1   reinstall even when the venv looks up to date
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/common.sh
source "$ROOT/scripts/common.sh"

PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
VENV="$ROOT/.venv"
VPY="$VENV/bin/python"
STAMP="$VENV/.adntn-setup-stamp"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "setup: '$PYTHON' not found; install Python >= 3.11 or point PYTHON at one." >&2
  exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: $("$PYTHON" --version 2>&1) is too old; adntn_lab needs Python >= 3.11" \
       "(set PYTHON=python3.12, for example)." >&2
  exit 1
fi

if [[ ! -x "$VPY" ]] || ! "$VPY" -c 'import sys' >/dev/null 2>&1; then
  if [[ -e "$VENV" ]]; then
    echo "setup: $VENV exists but has no working interpreter; recreating it."
    rm -rf "$VENV"
  fi
  step "create .venv" "$PYTHON" -m venv "$VENV"
fi

stamp_value() {
  "$VPY" - "$TORCH_SPEC" <<'PY'
import hashlib, sys
digest = hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest()
print(digest, sys.version.split()[0], sys.argv[1])
PY
}

installed() {
  "$VPY" - <<'PY'
import importlib.util, sys
sys.exit(any(importlib.util.find_spec(m) is None for m in ("adntn_lab", "torch", "pytest", "ruff")))
PY
}

want="$(stamp_value)"
if [[ "${ADNTN_FORCE_SETUP:-0}" != 1 && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] && installed; then
  echo "setup: .venv is up to date ($("$VPY" --version 2>&1))."
  exit 0
fi

step "upgrade pip" "$VPY" -m pip install --quiet --upgrade pip \
  || echo "setup: could not upgrade pip (offline?); continuing with $("$VPY" -m pip --version)."

if ! "$VPY" -c 'import torch' >/dev/null 2>&1; then
  echo "setup: torch is not installed in .venv; installing $TORCH_SPEC (a large download from PyPI)."
  step "install $TORCH_SPEC" "$VPY" -m pip install --quiet "$TORCH_SPEC"
fi

step "install adntn_lab[dev]" "$VPY" -m pip install --quiet -e ".[dev]"

printf '%s\n' "$want" > "$STAMP"
echo "setup: done ($("$VPY" --version 2>&1), torch $("$VPY" -c 'import torch; print(torch.__version__)'))."
