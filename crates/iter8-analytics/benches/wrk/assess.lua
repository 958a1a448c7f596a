-- wrk script: POST the example assessment request (run wrk from the repository root;
-- ITER8_WRK_BODY names another body). wrk itself reports any non-2xx answers.
--   wrk -t1 -c32 -d10s --latency -s crates/iter8-analytics/benches/wrk/assess.lua \
--       http://127.0.0.1:8080/v1/assessments
local path = os.getenv("ITER8_WRK_BODY") or "docs/examples/assessment-request.json"
local file = assert(io.open(path, "rb"), "cannot open " .. path .. "; run wrk from the repository root")
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  io.write(string.format("p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, errors %d\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, summary.errors.status + summary.errors.timeout))
end
