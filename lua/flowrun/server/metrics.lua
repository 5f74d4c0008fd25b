-- flowrun.server.metrics — GET /metrics in the Prometheus text format (version 0.0.4): counters
-- and histograms this process keeps, and gauges read when scraped (runs by state from the data
-- seam, runs running here, SSE clients, resident memory, the scheduler's lateness).
--
--   local m = metrics.new()
--   m:inc(name, labels [, n]); m:observe(name, labels, value); m:gauge(name, fn)  fn() -> {{labels, value}}
--   m:render() -> text
--   m:watch_aws()   counts the AWS requests of this process by service (see below)
--
-- AWS requests are counted as the client tells them (aws.observe): every attempt by service and
-- outcome; throttles (an answer whose AWS error code is one of the SDKs' throttling codes);
-- retries (a failed attempt the client tries again). No label ever carries a parameter, a
-- header or a message.
local flow = require "flow"

local M = {}

-- name -> {type, help, labels (names, in order), buckets}
M.FAMILIES = {
  flowrun_runs = { "gauge", "Runs in the store by workflow and state.", { "workflow", "state" } },
  flowrun_runs_active = { "gauge", "Runs this server process is running now.", {} },
  flowrun_runs_triggered_total = { "counter", "Runs triggered through this server's API.",
    { "workflow" } },
  flowrun_scheduler_lateness_seconds = { "gauge", "Seconds from a scheduled run's due time to its "
    .. "being queued by this server's scheduler (quantiles over the ticks due while it ran).",
    { "quantile" } },
  flowrun_scheduler_runs_fired = { "gauge", "Runs this server's scheduler queued since it "
    .. "started.", {} },
  flowrun_runs_finished_total = { "counter", "Runs this process ran to their end, by state.",
    { "workflow", "state" } },
  flowrun_task_duration_seconds = { "histogram", "Durations of task attempts that ended in this "
    .. "process (success or failure).", { "workflow", "state" },
    { 0.1, 1, 5, 15, 60, 300, 900, 1800, 3600, 10800 } },
  flowrun_task_retries_total = { "counter", "Task attempts that failed and were retried.",
    { "workflow" } },
  flowrun_store_commit_seconds = { "histogram", "Latency of a run store commit (a group of "
    .. "journal records made durable).", {},
    { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1 } },
  flowrun_aws_requests_total = { "counter", "AWS requests sent (each attempt), by service and "
    .. "outcome (ok, client_error, server_error, network_error).", { "service", "outcome" } },
  flowrun_aws_throttles_total = { "counter", "AWS answers with a throttling error code.",
    { "service" } },
  flowrun_aws_retries_total = { "counter", "AWS attempts that failed and were tried again.",
    { "service" } },
  flowrun_http_requests_total = { "counter", "HTTP requests answered, by route and status.",
    { "route", "status" } },
  flowrun_http_request_duration_seconds = { "histogram", "Time to answer an HTTP request "
    .. "(streams: until the headers).", { "route" },
    { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2 } },
  flowrun_sse_clients = { "gauge", "Server-Sent Events streams open now.", {} },
  flowrun_process_resident_memory_bytes = { "gauge", "Resident memory of the server process.", {} },
}

local Mt = {}
Mt.__index = Mt

function M.new()
  return setmetatable({ series = {}, gauges = {} }, Mt)
end

local function esc(v)
  return (tostring(v):gsub("[\\\"\n]", { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

local function label_text(names, labels)
  if #names == 0 then return "" end
  local parts = {}
  for i, n in ipairs(names) do parts[i] = n .. '="' .. esc(labels and labels[n] or "") .. '"' end
  return table.concat(parts, ",")
end

local function family(name)
  local f = M.FAMILIES[name]
  if not f then error("metrics: unknown family " .. tostring(name), 3) end
  return f
end

-- the series of family `name` for these labels (made on first use)
function Mt:get(name, labels)
  local f = family(name)
  local by = self.series[name]
  if not by then by = {}; self.series[name] = by end
  local key = label_text(f[3], labels)
  local s = by[key]
  if not s then
    s = { key = key, value = 0 }
    if f[1] == "histogram" then
      s.counts = {}
      for i = 1, #f[4] do s.counts[i] = 0 end
      s.sum, s.count = 0, 0
    end
    by[key] = s
  end
  return s
end

-- series_of(name, labels) -> the series itself, for a caller that counts the same series often
-- (the HTTP requests of a route): add_to(series, n) and observe_into(name, series, v) then
-- skip the label lookup.
function Mt:series_of(name, labels) return self:get(name, labels) end

function Mt.add_to(s, n) s.value = s.value + (n or 1) end

function Mt:observe_into(name, s, v)
  local b = M.FAMILIES[name][4]
  local counts = s.counts
  for i = 1, #b do if v <= b[i] then counts[i] = counts[i] + 1 end end
  s.sum, s.count = s.sum + v, s.count + 1
end

function Mt:inc(name, labels, n)
  local s = self:get(name, labels)
  s.value = s.value + (n or 1)
end

function Mt:observe(name, labels, v)
  local f = family(name)
  local s = self:get(name, labels)
  for i, b in ipairs(f[4]) do if v <= b then s.counts[i] = s.counts[i] + 1 end end
  s.sum, s.count = s.sum + v, s.count + 1
end

-- gauge(name, fn): fn() -> list of {labels, value}, called at each scrape.
function Mt:gauge(name, fn)
  family(name)
  self.gauges[name] = fn
end

local function num(v)
  if v == math.huge then return "+Inf" end
  if math.type(v) == "integer" then return tostring(v) end
  return string.format("%.14g", v)
end

local function with_le(key, le)
  if key == "" then return 'le="' .. le .. '"' end
  return key .. ',le="' .. le .. '"'
end

function Mt:render()
  local out = {}
  local names = {}
  for n in pairs(M.FAMILIES) do names[#names + 1] = n end
  table.sort(names)
  for _, name in ipairs(names) do
    local f = M.FAMILIES[name]
    out[#out + 1] = "# HELP " .. name .. " " .. f[2]
    out[#out + 1] = "# TYPE " .. name .. " " .. f[1]
    local rows = {}
    if self.gauges[name] then
      local ok, list = pcall(self.gauges[name])
      for _, r in ipairs(ok and list or {}) do
        rows[#rows + 1] = { key = label_text(f[3], r[1]), value = r[2] }
      end
    else
      for _, s in pairs(self.series[name] or {}) do rows[#rows + 1] = s end
    end
    table.sort(rows, function(a, b) return a.key < b.key end)
    for _, s in ipairs(rows) do
      local key = s.key
      if f[1] == "histogram" then
        for i, b in ipairs(f[4]) do
          out[#out + 1] = name .. "_bucket{" .. with_le(key, num(b)) .. "} " .. num(s.counts[i])
        end
        out[#out + 1] = name .. "_bucket{" .. with_le(key, "+Inf") .. "} " .. num(s.count)
        local lk = key ~= "" and ("{" .. key .. "}") or ""
        out[#out + 1] = name .. "_sum" .. lk .. " " .. num(s.sum)
        out[#out + 1] = name .. "_count" .. lk .. " " .. num(s.count)
      else
        out[#out + 1] = name .. (key ~= "" and ("{" .. key .. "}") or "") .. " " .. num(s.value)
      end
    end
  end
  return table.concat(out, "\n") .. "\n"
end

---- AWS requests ------------------------------------------------------------------------------

-- watch_aws(): counts every attempt of this process's AWS calls (aws.observe).
function Mt:watch_aws()
  require("aws").observe(function(i)
    local st, outcome = i.status, "ok"
    if not st then outcome = "network_error"
    elseif st >= 500 then outcome = "server_error"
    elseif st >= 400 then outcome = "client_error" end
    self:inc("flowrun_aws_requests_total", { service = i.service, outcome = outcome })
    if i.throttle then self:inc("flowrun_aws_throttles_total", { service = i.service }) end
    if i.retry then self:inc("flowrun_aws_retries_total", { service = i.service }) end
  end)
end

-- The resident memory of this process (bytes), from /proc.
function M.rss()
  local f = io.open("/proc/self/statm", "r")
  if not f then return 0 end
  local s = f:read("l")
  f:close()
  local pages = tonumber(s and s:match("^%d+%s+(%d+)") or 0)
  return pages * 4096
end

M.now = flow.now
return M
