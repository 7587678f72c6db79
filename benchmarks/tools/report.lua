-- Copied from shared/bench/peer/tools/report.lua (reference harness), unchanged.
-- wrk reporting script: prints one machine-readable line at the end.
-- Optional env WRK_METHOD=HEAD switches the request method.
local m = os.getenv("WRK_METHOD")
if m and m ~= "" then wrk.method = m end
done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format("RESULT reqs=%d secs=%.2f rps=%.1f MBps=%.1f p50ms=%.2f p99ms=%.2f non2xx=%d sockerr=%d\n",
    summary.requests, secs, summary.requests / secs, summary.bytes / secs / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.status, e.connect + e.read + e.write + e.timeout))
end
