#!/usr/bin/env bash
# Installs the pinned schemathesis into integration-tests/.cache/schemathesis-venv;
# does nothing when that version is already there.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../lib.sh"
SCHEMATHESIS_VERSION=4.32.5
venv="$IT_CACHE/schemathesis-venv"
# Run `st` itself: a venv made at another path (a moved or restored cache) keeps scripts
# whose interpreter line points there, and they cannot start.
if "$venv/bin/st" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
  it_log "schemathesis $SCHEMATHESIS_VERSION is installed"
  exit 0
fi
it_log "installing schemathesis $SCHEMATHESIS_VERSION into $venv ..."
python3 -m venv --clear "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
