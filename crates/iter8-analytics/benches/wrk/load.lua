-- wrk script for benches/load.sh: POSTs the example assessment request like assess.lua, and
-- counts the answers by kind, so that shed requests (503 with Retry-After) are told apart
-- from timeouts (503 without it) and from anything else.
--   wrk -t1 -c256 -d60s --latency -s crates/iter8-analytics/benches/wrk/load.lua URL
-- The request itself is assess.lua's (its done() is replaced below).
dofile("crates/iter8-analytics/benches/wrk/assess.lua")

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  counts = {}
end

function response(status, headers, body)
  local kind = tostring(status)
  if status == 503 then
    kind = (headers["retry-after"] or headers["Retry-After"]) and "503-shed" or "503-other"
  end
  counts[kind] = (counts[kind] or 0) + 1
end

-- One machine-readable line per kind of answer, then wrk's own errors and the latency.
function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for kind, n in pairs(thread:get("counts")) do
      total[kind] = (total[kind] or 0) + n
    end
  end
  for kind, n in pairs(total) do
    io.write(string.format("answers %s %d\n", kind, n))
  end
  local e = summary.errors
  io.write(string.format("socket-errors connect %d read %d write %d timeout %d\n",
    e.connect, e.read, e.write, e.timeout))
  io.write(string.format("latency-ms p50 %.2f p99 %.2f max %.2f\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
  io.write(string.format("requests %d seconds %.1f\n", summary.requests, summary.duration / 1e6))
end
