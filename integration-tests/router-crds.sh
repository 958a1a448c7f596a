#!/usr/bin/env bash
# Copies the official router CRDs into integration-tests/.cache/crds/, as their projects
# publish them inside their Go modules (served by the Go module proxy):
#   Gateway API  sigs.k8s.io/gateway-api  config/crd/standard/..._httproutes.yaml, and the
#                standard-channel CRDs a gateway implementation watches (GatewayClass, Gateway,
#                HTTPRoute, GRPCRoute, ReferenceGrant, BackendTLSPolicy) in one file
#   Istio        istio.io/api             kubernetes/customresourcedefinitions.gen.yaml
# Skipped when the files for these versions are already there.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

GATEWAY_API_VERSION=v1.6.3
ISTIO_API_VERSION=v1.32.0
out="$IT_CACHE/crds"
stamp="$out/.versions"
want="gateway-api $GATEWAY_API_VERSION (standard) istio-api $ISTIO_API_VERSION"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  it_log "router CRDs are up to date ($out)"
  exit 0
fi

module_dir() {
  # Outside any module, so that no go.mod is read or changed.
  (cd "$(mktemp -d)" && GOFLAGS=-mod=mod go mod download -json "$1" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
}

mkdir -p "$out"
gw="$(module_dir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")"
istio="$(module_dir "istio.io/api@$ISTIO_API_VERSION")"
[[ -n "$gw" && -n "$istio" ]] || { it_log "could not download the router CRD modules"; exit 1; }
cp "$gw/config/crd/standard/gateway.networking.k8s.io_httproutes.yaml" "$out/gateway-api-httproutes.yaml"
for kind in gatewayclasses gateways httproutes grpcroutes referencegrants backendtlspolicies; do
  printf -- '---\n'
  cat "$gw/config/crd/standard/gateway.networking.k8s.io_$kind.yaml"
done > "$out/gateway-api-standard.yaml"
cp "$istio/kubernetes/customresourcedefinitions.gen.yaml" "$out/istio-crds.yaml"
chmod u+w "$out"/*.yaml
echo "$want" > "$stamp"
it_log "router CRDs: Gateway API $GATEWAY_API_VERSION, Istio $ISTIO_API_VERSION"
