#!/usr/bin/env bash
# One entry point for the common tasks. Every task first runs scripts/setup.sh.
#
#   bash scripts/run.sh demo [ARGS...]   headless demo: `adntn-lab demo ARGS...`
#   bash scripts/run.sh test [ARGS...]   ruff, then the whole pytest suite (ARGS go to pytest)
#   bash scripts/run.sh lab  [ARGS...]   JupyterLab on the notebooks/ folder
#
# `test` installs Debian's chromium with apt-get when it is missing and the script runs as root;
# without it the browser tests are skipped (or fail when CI=true). The exit status is that of
# the first failing step (pytest before ruff).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/common.sh
source "$ROOT/scripts/common.sh"

usage() {
  echo "usage: bash scripts/run.sh {demo|test|lab} [ARGS...]" >&2
  exit 2
}

[[ $# -ge 1 ]] || usage
task="$1"; shift
VENV="$ROOT/.venv"
CHROMIUM="${ADNTN_CHROMIUM:-/usr/bin/chromium}"

install_chromium() {
  DEBIAN_FRONTEND=noninteractive apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
}

ensure_chromium() {
  if [[ -x "$CHROMIUM" ]]; then
    echo "browser tests: using $CHROMIUM"
  elif [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "browser tests: $CHROMIUM is missing; installing Debian's chromium with apt-get."
    step "apt-get install chromium" install_chromium \
      || echo "browser tests: apt-get could not install chromium; they will not run."
  else
    echo "browser tests: $CHROMIUM is missing and this is not a root shell with apt-get;" \
         "they will be skipped (install it with: sudo apt-get install chromium)."
  fi
}

run_tests() {
  local rc_ruff=0 rc_pytest=0 log
  ensure_chromium
  step "ruff check" "$VENV/bin/ruff" check . || rc_ruff=$?
  mkdir -p artifacts
  log="artifacts/pytest.log"
  run_pytest() {
    "$VENV/bin/python" -m pytest -q -ra "$@" 2>&1 | tee "$log"
    return "${PIPESTATUS[0]}"
  }
  step "pytest" run_pytest "$@" || rc_pytest=$?
  print_times
  local summary
  summary="$(grep -E '(passed|failed|errors?|skipped|deselected|no tests ran).* in [0-9.]+s' "$log" \
    | tail -n 1 | sed -E 's/^=+ //; s/ =+$//' || true)"
  printf '\npytest: %s (exit status %d; full log in %s)\n' "${summary:-no summary line}" "$rc_pytest" "$log"
  [[ $rc_ruff -eq 0 ]] || echo "ruff: exit status $rc_ruff"
  if [[ $rc_pytest -ne 0 ]]; then
    exit "$rc_pytest"
  fi
  exit "$rc_ruff"
}

case "$task" in
  demo)
    step "setup" bash "$ROOT/scripts/setup.sh"
    rc=0
    step "adntn-lab demo" "$VENV/bin/adntn-lab" demo "$@" || rc=$?
    print_times
    exit "$rc"
    ;;
  test)
    step "setup" bash "$ROOT/scripts/setup.sh"
    run_tests "$@"
    ;;
  lab)
    step "setup" bash "$ROOT/scripts/setup.sh"
    lab_args=()
    if [[ "$(id -u)" == 0 ]]; then
      lab_args+=(--allow-root)  # JupyterLab refuses to start as root without it
    fi
    lab_dir="$ROOT/notebooks"
    [[ -d "$lab_dir" ]] || lab_dir="$ROOT"
    exec "$VENV/bin/jupyter" lab "$lab_dir" ${lab_args[@]+"${lab_args[@]}"} "$@"
    ;;
  -h|--help|help)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    ;;
  *)
    usage
    ;;
esac
