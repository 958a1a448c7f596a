#!/usr/bin/env bash
# Runs the cargo-fuzz targets of the analytics service (nightly Rust), each for a while,
# seeding the corpus with the example request. Installs the pinned cargo-fuzz if missing.
#
#   bash crates/iter8-analytics/fuzz/run.sh               # each target for 180 s
#   ITER8_FUZZ_SECONDS=3600 bash crates/iter8-analytics/fuzz/run.sh decode_body
#
# libFuzzer prints "Done N runs in S second(s)" per target; crashes land in artifacts/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
CARGO_FUZZ_VERSION=0.13.2
SECONDS_PER_TARGET="${ITER8_FUZZ_SECONDS:-180}"
targets=("$@")
((${#targets[@]})) || targets=(decode_body extreme_request)

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
mkdir -p corpus/decode_body
cp ../../../docs/examples/assessment-request.json corpus/decode_body/example.json
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  cargo +nightly fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 -rss_limit_mb=4096 -print_final_stats=1
done
