#!/usr/bin/env bash
# Fuzzes the analytics HTTP API from its OpenAPI document (api/openapi.json) with
# schemathesis: starts the real iter8-analytics binary on a free loopback port and runs
# every phase (examples, coverage, fuzzing) with every relevant check plus our own
# (schemathesis_hooks.py: each 4xx names the field), with a fixed seed and budget.
#
#   bash integration-tests/fuzz/schemathesis.sh            # CI budget: 300 examples per operation
#   ITER8_FUZZ_EXAMPLES=5000 bash integration-tests/fuzz/schemathesis.sh   # a longer local run
#
# Env: ITER8_FUZZ_EXAMPLES (max examples per operation), ITER8_FUZZ_SEED (default 8),
# ITER8_ANALYTICS_BIN (default: $CARGO_TARGET_DIR or target/, debug build; built if missing).
# Prints schemathesis' summary, including "N generated"; exits non-zero on any failure.
set -euo pipefail
FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$FUZZ_DIR/../lib.sh"
ROOT="$(cd "$IT_DIR/.." && pwd)"
EXAMPLES="${ITER8_FUZZ_EXAMPLES:-300}"
SEED="${ITER8_FUZZ_SEED:-8}"

ST="$IT_CACHE/schemathesis-venv/bin/st"
[[ -x "$ST" ]] || bash "$FUZZ_DIR/setup-schemathesis.sh"

BIN="${ITER8_ANALYTICS_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/iter8-analytics}"
if [[ -z "${ITER8_ANALYTICS_BIN:-}" ]]; then
  (cd "$ROOT" && cargo build -q -p iter8-analytics --bin iter8-analytics)
fi

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
work="$(mktemp -d)"
ITER8_ANALYTICS_LISTEN="127.0.0.1:$port" RUST_LOG=warn "$BIN" >"$work/analytics.log" 2>&1 &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  if grep -q "panicked" "$work/analytics.log"; then
    it_log "the analytics server panicked:"; grep -A3 "panicked" "$work/analytics.log" >&2
  fi
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

# positive_data_acceptance is left out: the schema states each field's own limits, but some
# rules span fields (weights summing to 100, the number of versions a kind needs, criteria
# naming a metric that the versions report), so schema-valid bodies are rightly refused
# with a 422 naming the field -- which error_names_the_field checks. The auth and
# stateful checks do not apply: the API has no auth and no resources.
cd "$work"
status=0
PYTHONPATH="$FUZZ_DIR" SCHEMATHESIS_HOOKS=schemathesis_hooks "$ST" run "$ROOT/api/openapi.json" \
  --url "http://127.0.0.1:$port" \
  --checks all \
  --exclude-checks positive_data_acceptance,ignored_auth,use_after_free,ensure_resource_availability,object_level_authorization \
  --phases examples,coverage,fuzzing \
  --mode all \
  --max-examples "$EXAMPLES" \
  --seed "$SEED" \
  --generation-database none \
  --workers 2 \
  --no-color || status=$?
if grep -q "panicked" "$work/analytics.log"; then
  status=1
fi
exit "$status"
