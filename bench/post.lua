-- wrk script for the benchmark: POST an Anthropic /v1/messages request and print the summary
-- as one JSON line (prefixed BENCH-JSON) that bench/run.py reads.
-- Settings come from the environment, so one script serves the direct and the relayed runs.

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["content-type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.headers["x-bench-delay-ms"] = os.getenv("BENCH_DELAY_MS") or "0"
local key = os.getenv("BENCH_KEY") or ""
if key ~= "" then
  wrk.headers["x-api-key"] = key
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH-JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
