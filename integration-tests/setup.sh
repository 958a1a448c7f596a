#!/usr/bin/env bash
# Idempotent set-up for the integration tests on a fresh machine: installs the
# system packages they need (only what is missing; `apt-get update` only when
# something is to be installed) and builds, into integration-tests/.cache/bin/,
#   kube-env  a real kube-apiserver + etcd (integration-tests/kube-env), and
#   helm      the official helm CLI (integration-tests/tools/helm),
#   traefik   the official Traefik proxy, the gateway of the end-to-end tests
#             (integration-tests/tools/traefik),
# and copies the official router CRDs (Gateway API, Istio) into .cache/crds/.
# Up-to-date builds are skipped. Safe to run any number of times.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

# Debian packages the tests and benches need (wrk: crates/iter8-analytics/benches/load.sh;
# iproute2: the network namespaces of the gateway tests' backends, src/gateway.rs).
APT_PACKAGES=(prometheus chromium wrk iproute2)

install_apt_packages() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  it_log "installing Debian packages: ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

check_go() {
  command -v go >/dev/null 2>&1 || { it_log "Go is required (>= 1.26): not found on PATH"; exit 1; }
  local v; v="$(go env GOVERSION)"; v="${v#go}"
  local major="${v%%.*}" rest="${v#*.}"; local minor="${rest%%.*}"
  if (( major < 1 || (major == 1 && minor < 26) )); then
    it_log "Go >= 1.26 is required, found go$v"; exit 1
  fi
}

install_apt_packages
check_go
bash "$IT_DIR/kube-env/build.sh"
bash "$IT_DIR/tools/helm/build.sh"
bash "$IT_DIR/tools/traefik/build.sh"
bash "$IT_DIR/router-crds.sh"
bash "$IT_DIR/fuzz/setup-schemathesis.sh"
it_log "setup done: $(ls "$IT_BIN" | tr '\n' ' ')"
