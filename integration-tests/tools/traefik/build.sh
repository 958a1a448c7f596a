#!/usr/bin/env bash
# Builds the official Traefik proxy (github.com/traefik/traefik/v3/cmd/traefik)
# into integration-tests/.cache/bin/: the gateway of the end-to-end tests
# (docs/testing.md, "The gateway").
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/lib.sh"

# Must match github.com/traefik/traefik/v3 in tools/traefik/go.mod.
TRAEFIK_VERSION=v3.6.12
it_go_build traefik "$IT_DIR/tools/traefik" github.com/traefik/traefik/v3/cmd/traefik "-s -w \
 -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION"
