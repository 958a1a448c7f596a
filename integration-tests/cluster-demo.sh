#!/usr/bin/env bash
# The cluster quickstart in one command (docs/quickstart-cluster.md):
#
#   bash integration-tests/cluster-demo.sh
#
# Sets up what is missing (integration-tests/setup.sh: Prometheus, kube-env, helm, Traefik),
# starts a Kubernetes control plane, builds iter8's binaries, and runs
# integration-tests/examples/cluster_demo.rs: sample apps behind a real gateway, Prometheus,
# `helm install` of charts/iter8, a canary with live traffic, printed as
# `kubectl get experiments` shows it, and the decision with its reason. Tears everything
# down at the end. Needs root (it creates a network namespace for the sample apps).
set -euo pipefail
IT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$IT_DIR/.." && pwd)"

bash "$IT_DIR/setup.sh"
# A control plane of its own, so a test run's is left alone.
export ITER8_KUBE_ENV_STATE="$IT_DIR/.cache/demo-run"
trap 'bash "$IT_DIR/kube-env/down.sh"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
source "$IT_DIR/kube-env/up.sh"
export ITER8_TEST_KUBECONFIG

cd "$ROOT"
cargo build -q -p iter8-controller -p iter8-analytics -p iter8-sample-app --bins
cargo run -q -p iter8-integration-tests --example cluster_demo
