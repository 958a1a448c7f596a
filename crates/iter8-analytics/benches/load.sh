#!/usr/bin/env bash
# Sustained load on the analytics service: builds and starts the release server, then drives
# `POST /v1/assessments` with wrk for a while at a concurrency below `--max-in-flight` and at
# one well above it, sampling every second the server's RSS (/proc), its in-flight gauge
# (its own /metrics) and how long `/healthz` takes to answer. Prints, per phase: requests/s,
# wrk's latency (all answers), the server's latency of the 200s (from its histogram), 200s vs
# shed 503s, every other outcome (must be 0), RSS min/max/first/last, /healthz, server CPU.
#
#   bash crates/iter8-analytics/benches/load.sh          # from anywhere in the repository
#
# Tune with ITER8_LOAD_SECONDS (per phase, default 60), ITER8_LOAD_MAX_IN_FLIGHT (64),
# ITER8_LOAD_BELOW (connections below the limit, 32), ITER8_LOAD_ABOVE (8 x the limit) and
# ITER8_LOAD_ROUNDS (1; each round is a fresh server running both phases; 0 connections
# skips a phase). Needs wrk
# (Debian package `wrk`, installed by integration-tests/setup.sh), curl and python3.
# Exits non-zero if any answer was neither 200 nor a shed 503, or /healthz failed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
seconds="${ITER8_LOAD_SECONDS:-60}"
limit="${ITER8_LOAD_MAX_IN_FLIGHT:-64}"
below="${ITER8_LOAD_BELOW:-32}"
above="${ITER8_LOAD_ABOVE:-$((8 * limit))}"
rounds="${ITER8_LOAD_ROUNDS:-1}"
bin="${CARGO_TARGET_DIR:-$root/target}/release/iter8-analytics"
work="$(mktemp -d)"
server_pid=""
sampler_pid=""

for tool in wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "load.sh: $tool is required (bash integration-tests/setup.sh installs wrk)" >&2; exit 2; }
done

cleanup() {
  [[ -n "$sampler_pid" ]] && kill "$sampler_pid" 2>/dev/null || true
  [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

(cd "$root" && cargo build --release --quiet -p iter8-analytics --bin iter8-analytics)
# wrk opens one socket per connection.
ulimit -n "$((above + 256))" 2>/dev/null || true

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_server() {
  port="$(free_port)"
  base="http://127.0.0.1:$port"
  RUST_LOG=warn "$bin" --listen "127.0.0.1:$port" --max-in-flight "$limit" &
  server_pid=$!
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "$base/healthz" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "load.sh: the server did not start" >&2
  exit 1
}

stop_server() {
  kill "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

# One line a second: unix time, RSS in KiB, the in-flight gauge, /healthz status and seconds.
sample() {
  local out="$1"
  while kill -0 "$server_pid" 2>/dev/null; do
    local rss in_flight health
    rss="$(awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status" 2>/dev/null || echo 0)"
    in_flight="$(curl -s --max-time 2 "$base/metrics" | awk '/^iter8_analytics_http_requests_in_flight / {print $2}')"
    health="$(curl -s -o /dev/null --max-time 2 -w '%{http_code} %{time_total}' "$base/healthz" || true)"
    echo "$(date +%s.%N) ${rss:-0} ${in_flight:-?} ${health:-000 2}" >>"$out"
    sleep 1
  done
}

cpu_ticks() {
  awk '{print $14 + $15}' "/proc/$server_pid/stat"
}

run_phase() {
  local name="$1" connections="$2" dir="$work/round$round-$1"
  ((connections > 0)) || return 0
  mkdir -p "$dir"
  curl -s "$base/metrics" >"$dir/metrics.before"
  local cpu_before
  cpu_before="$(cpu_ticks)"
  sample "$dir/samples" &
  sampler_pid=$!
  (cd "$root" && wrk -t1 -c"$connections" -d"${seconds}s" --timeout 10s --latency \
    -s crates/iter8-analytics/benches/wrk/load.lua "$base/v1/assessments") >"$dir/wrk.out"
  kill "$sampler_pid"
  wait "$sampler_pid" 2>/dev/null || true
  sampler_pid=""
  echo "$(($(cpu_ticks) - cpu_before))" >"$dir/cpu_ticks"
  curl -s "$base/metrics" >"$dir/metrics.after"
  python3 - "$name" "$connections" "$dir" "$(getconf CLK_TCK)" "$limit" <<'PY'
import re, sys
name, connections, d, hz, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
wrk = open(f"{d}/wrk.out").read()
answers = {k: int(n) for k, n in re.findall(r"^answers (\S+) (\d+)$", wrk, re.M)}
socket = dict((k, int(n)) for k, n in re.findall(r"(connect|read|write|timeout) (\d+)", wrk.split("socket-errors", 1)[1].splitlines()[0]))
lat = dict(re.findall(r"(p50|p99|max) ([\d.]+)", wrk.split("latency-ms", 1)[1].splitlines()[0]))
requests, duration = re.search(r"^requests (\d+) seconds ([\d.]+)$", wrk, re.M).groups()

def buckets(path):
    """Cumulative counts of the 200s' duration histogram of /v1/assessments, by `le`."""
    out = {}
    for line in open(path):
        m = re.match(r'iter8_analytics_http_request_duration_seconds_bucket\{(.*)\} (\S+)', line)
        if m and 'endpoint="/v1/assessments"' in m[1] and 'status="200"' in m[1]:
            le = re.search(r'le="([^"]+)"', m[1])[1]
            out[float(le)] = float(m[2])
    return out

before, after = buckets(f"{d}/metrics.before"), buckets(f"{d}/metrics.after")
diff = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
total = diff[-1][1] if diff else 0
def quantile(q):
    """The upper bound of the bucket holding quantile q (what a histogram can say)."""
    for le, n in diff:
        if total and n >= q * total:
            return "≤ %g ms" % (le * 1e3) if le != float("inf") else "> 10 s"
    return "n/a"

samples = [l.split() for l in open(f"{d}/samples")]
rss = [int(s[1]) / 1024 for s in samples]
in_flight = [int(float(s[2])) for s in samples if s[2] != "?"]
health = [(s[3], float(s[4])) for s in samples]
health_bad = sum(1 for code, _ in health if code != "200")
seconds = float(duration)
ok = answers.get("200", 0)
shed = answers.get("503-shed", 0)
other = {k: n for k, n in answers.items() if k not in ("200", "503-shed")}
other.update({f"socket-{k}": n for k, n in socket.items() if n})
tenth = max(1, len(rss) // 10)
print(f"== {name}: {connections} connections, {seconds:.0f} s")
print(f"   requests/s      {int(requests) / seconds:,.0f} in all; {ok / seconds:,.0f} answered 200")
print(f"   answers         200: {ok:,}  shed 503: {shed:,}  other: {sum(other.values())} {other or ''}")
print(f"   latency (wrk)   p50 {lat['p50']} ms  p99 {lat['p99']} ms  max {lat['max']} ms  (all answers)")
print(f"   latency of 200s p50 {quantile(0.5)}  p99 {quantile(0.99)}  (server histogram)")
print(f"   in flight       max {max(in_flight, default=0)} (limit {limit}; the gauge counts the scrape itself; sampled each second)")
start = float(samples[0][0])
by_10s = {}
for s in samples:
    by_10s[int((float(s[0]) - start) // 10)] = int(s[1]) / 1024  # the last sample of each 10 s
print(f"   RSS MiB         min {min(rss):.1f}  max {max(rss):.1f}  first 10 % mean {sum(rss[:tenth]) / tenth:.1f}  last 10 % mean {sum(rss[-tenth:]) / tenth:.1f}  ({len(rss)} samples)")
print(f"   RSS by 10 s     {' '.join(f'{v:.0f}' for _, v in sorted(by_10s.items()))}")
print(f"   /healthz        {len(health) - health_bad}/{len(health)} answered 200, slowest {max(t for _, t in health) * 1e3:.1f} ms")
print(f"   server CPU      {int(open(f'{d}/cpu_ticks').read()) / hz / seconds:.2f} cores")
sys.exit(1 if other or health_bad else 0)
PY
}

status=0
for round in $(seq "$rounds"); do
  echo "round $round/$rounds ($(date -u +%H:%M:%S) UTC; nproc $(nproc); load average $(cut -d' ' -f1-3 /proc/loadavg))"
  start_server
  run_phase below "$below" || status=1
  run_phase above "$above" || status=1
  echo "   (load average after: $(cut -d' ' -f1-3 /proc/loadavg))"
  stop_server
done
exit "$status"
