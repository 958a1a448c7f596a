# Starts the shared test control plane (kube-env) and exports KUBECONFIG.
#
#   source integration-tests/kube-env/up.sh     # exports KUBECONFIG and ITER8_TEST_KUBECONFIG
#   eval "$(bash integration-tests/kube-env/up.sh)"   # same, from a subshell
#   bash integration-tests/kube-env/down.sh     # stops it, removes its data
#
# Builds kube-env if needed (integration-tests/kube-env/build.sh), starts it in
# the background with its state under integration-tests/.cache/run/ (override
# with ITER8_KUBE_ENV_STATE), and waits for its ready line, which kube-env
# prints once /readyz answers ok. If one is already running from the same
# state directory it is reused. Does not change the caller's shell options.

_iter8_kube_env_up() {
  local it_dir
  it_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
  # shellcheck source=../lib.sh
  source "$it_dir/lib.sh" || return 1
  local state="${ITER8_KUBE_ENV_STATE:-$IT_CACHE/run}"
  local pidfile="$state/kube-env.pid" logfile="$state/kube-env.log"
  local kubeconfig="$state/kubeconfig" timeout="${ITER8_KUBE_ENV_TIMEOUT:-180}"

  bash "$it_dir/kube-env/build.sh" || return 1
  mkdir -p "$state" || return 1

  local pid
  if [[ -f "$pidfile" ]] && pid="$(cat "$pidfile")" && kill -0 "$pid" 2>/dev/null \
     && grep -q '^kube-env: ready' "$logfile" 2>/dev/null && [[ -f "$kubeconfig" ]]; then
    it_log "reusing running kube-env (pid $pid)"
  else
    rm -rf "$state/data" "$pidfile" "$kubeconfig"
    it_log "starting kube-env (log: $logfile)"
    local start=$SECONDS
    "$IT_BIN/kube-env" --data-dir "$state/data" --kubeconfig "$kubeconfig" \
      </dev/null >"$logfile" 2>&1 &
    pid=$!
    echo "$pid" >"$pidfile"
    until grep -q '^kube-env: ready' "$logfile" 2>/dev/null; do
      if ! kill -0 "$pid" 2>/dev/null; then
        it_log "kube-env exited before becoming ready; last log lines:"
        tail -n 40 "$logfile" >&2
        rm -f "$pidfile"
        return 1
      fi
      if ((SECONDS - start > timeout)); then
        it_log "kube-env not ready within ${timeout}s; stopping it. Last log lines:"
        tail -n 40 "$logfile" >&2
        bash "$it_dir/kube-env/down.sh" || true
        return 1
      fi
      sleep 0.2
    done
    it_log "kube-env ready in $((SECONDS - start))s (pid $pid): $(grep -m1 '^kube-env: ready' "$logfile")"
  fi
  export KUBECONFIG="$kubeconfig" ITER8_TEST_KUBECONFIG="$kubeconfig" ITER8_KUBE_ENV_PID="$pid"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  # Executed: print the exports for eval.
  set -euo pipefail
  _iter8_kube_env_up
  printf 'export KUBECONFIG=%q ITER8_TEST_KUBECONFIG=%q ITER8_KUBE_ENV_PID=%q\n' \
    "$KUBECONFIG" "$ITER8_TEST_KUBECONFIG" "$ITER8_KUBE_ENV_PID"
else
  _iter8_kube_env_up
fi
