#!/usr/bin/env bash
# Stops the kube-env started by up.sh (SIGTERM, then waits for its clean
# shutdown) and removes its state. A no-op when none is running.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lib.sh"
state="${ITER8_KUBE_ENV_STATE:-$IT_CACHE/run}"
pidfile="$state/kube-env.pid"

if [[ -f "$pidfile" ]]; then
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    it_log "stopping kube-env (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 200); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      it_log "kube-env (pid $pid) did not stop within 40s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
fi
# kube-env removes these itself on a clean stop; after a kill it cannot.
rm -rf "$state/data" "$state/kubeconfig"
