-- make bench-api's load (bench/api.py): POST /api/v1/messages, each request with its own
-- Idempotency-Key, recipient address and reference (so none is answered from an earlier one,
-- and each makes a new contact as a first message to an address does). Each thread keeps the
-- ids of its 202 answers; done() writes them, one a line, to API_BENCH_IDS (what the bench
-- checks against the ledger and the SES endpoint: a 202 whose message was not sent is lost)
-- and prints one machine-readable line "WRK {json}".
local key = os.getenv("API_BENCH_KEY")
local template = os.getenv("API_BENCH_TEMPLATE")
local run = os.getenv("API_BENCH_RUN")
local ids_path = os.getenv("API_BENCH_IDS")

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

-- Globals, not locals: done() reads them from each thread with thread:get.
ids = {}
statuses = {}
local n = 0
local headers

function init(args)
  headers = {
    ["Authorization"] = "Bearer " .. key,
    ["Content-Type"] = "application/json",
  }
end

function request()
  n = n + 1
  local tag = run .. "-" .. tid .. "-" .. n
  headers["Idempotency-Key"] = tag
  local body = '{"template": ' .. template .. ', "to": "m' .. tag .. '@bench.example", ' ..
    '"reference": "' .. tag .. '", "personalisation": {"first_name": "Ada", "code": "' ..
    n .. '"}}'
  return wrk.format("POST", "/api/v1/messages", headers, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 202 then
    local id = string.match(body, '"id":%s*(%d+)')
    if id then ids[#ids + 1] = id end
  end
end

function done(summary, latency, requests)
  local out = io.open(ids_path, "w")
  local codes = {}
  for _, thread in ipairs(threads) do
    for _, id in ipairs(thread:get("ids")) do out:write(id, "\n") end
    for code, count in pairs(thread:get("statuses")) do
      codes[code] = (codes[code] or 0) + count
    end
  end
  out:close()
  local parts = {}
  for code, count in pairs(codes) do parts[#parts + 1] = '"' .. code .. '": ' .. count end
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"statuses": {%s}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, table.concat(parts, ", ")))
end
