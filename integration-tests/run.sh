#!/usr/bin/env bash
# THE project test command: sets up (idempotent), starts one shared Kubernetes
# control plane, runs every crate's tests against it, and always tears it
# down. Exits with cargo's status.
#
#   bash integration-tests/run.sh                      # cargo test --workspace --no-fail-fast
#   bash integration-tests/run.sh -p iter8-integration-tests -- --nocapture
#                                                      # cargo test <these arguments>
set -euo pipefail
IT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$IT_DIR/.." && pwd)"

bash "$IT_DIR/setup.sh"

trap 'bash "$IT_DIR/kube-env/down.sh"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
source "$IT_DIR/kube-env/up.sh"
export ITER8_TEST_KUBECONFIG

cd "$ROOT"
# The chart test runs the service binaries as the chart configures them (tests/chart.rs);
# tests/cli.rs runs the iter8 command against a running controller; the gateway tests run the
# sample app as processes in a network namespace (src/gateway.rs).
cargo build -p iter8-controller -p iter8-analytics -p iter8-cli -p iter8-sample-app --bins
status=0
if (($#)); then
  cargo test "$@" || status=$?
else
  # --no-fail-fast: one failing test binary must not hide the results of the others.
  cargo test --workspace --no-fail-fast || status=$?
  # The HTTP API fuzzed from its OpenAPI document (docs/reliability.md, "Bad input").
  bash "$IT_DIR/fuzz/schemathesis.sh" || status=$?
fi
exit "$status"
