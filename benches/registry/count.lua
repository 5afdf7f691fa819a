-- wrk script for the registry benchmark.
--
-- done() prints one parseable line:
--   WRKRESULT requests=N bytes=N duration_us=N non2xx=N status_ge400=N
--             connect=N read=N write=N timeout=N p50_us=N p99_us=N max_us=N
--
-- If WRK_COUNT_STATUS=1 a response() callback counts every status outside
-- 200..299 exactly (non2xx).  wrk then buffers each body in Lua, which is cheap
-- for manifests but not for 50 MB blobs, so blob runs leave it off and rely on
-- wrk's own status>399 counter plus a bytes-per-response check done by run.sh
-- (a 3xx or truncated response cannot carry a whole blob); non2xx is then -1.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

if os.getenv("WRK_COUNT_STATUS") == "1" then
   function init(args)
      non2xx = 0
   end

   function response(status, headers, body)
      if status < 200 or status > 299 then
         non2xx = non2xx + 1
      end
   end
end

function done(summary, latency, requests)
   local n = -1
   if os.getenv("WRK_COUNT_STATUS") == "1" then
      n = 0
      for _, t in ipairs(threads) do
         n = n + (t:get("non2xx") or 0)
      end
   end
   local e = summary.errors
   io.write(string.format(
      "WRKRESULT requests=%d bytes=%d duration_us=%d non2xx=%d status_ge400=%d " ..
      "connect=%d read=%d write=%d timeout=%d p50_us=%d p99_us=%d max_us=%d\n",
      summary.requests, summary.bytes, summary.duration, n, e.status,
      e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(99), latency.max))
end
