# Shared shell functions for scripts/setup.sh and scripts/run.sh (sourced, not executed).

# Seconds since the epoch with sub-second resolution where the shell offers it.
_now() {
  if [[ -n "${EPOCHREALTIME:-}" ]]; then
    printf '%s\n' "${EPOCHREALTIME/,/.}"
  else
    date +%s
  fi
}

# step LABEL COMMAND [ARGS...]: run a command, print how long it took, return its exit status.
step() {
  local label="$1"; shift
  local t0 t1 rc=0
  t0="$(_now)"
  printf '==> %s\n' "$label"
  "$@" || rc=$?
  t1="$(_now)"
  local secs
  secs="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
  if [[ $rc -eq 0 ]]; then
    printf '    %s: %ss\n' "$label" "$secs"
  else
    printf '    %s: %ss (exit status %d)\n' "$label" "$secs" "$rc"
  fi
  STEP_TIMES+=("$(printf '%-28s %8ss  %s' "$label" "$secs" "$([[ $rc -eq 0 ]] && echo ok || echo "exit $rc")")")
  return "$rc"
}

# print_times: the table of all steps run so far in this shell.
print_times() {
  local line
  printf '\nTimings\n'
  for line in ${STEP_TIMES[@]+"${STEP_TIMES[@]}"}; do
    printf '  %s\n' "$line"
  done
}

STEP_TIMES=()
