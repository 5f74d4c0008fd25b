-- flow.poll — the one generic waiter the sensors build on.
--
--   local v = flow.poll(check, { every = "30s", timeout = "6h", backoff = 1.5,
--                                max_every = "5m", name = "dms task", log = fn })
--
-- Calls check() at once and then every `every` (growing by `backoff` up to `max_every`)
-- until it returns a truthy first value; returns everything check returned. check may return
-- nil plus a status message (`return nil, "RUNNING 45%"`): the message is logged when it
-- changes, and a heartbeat line is logged now and then while nothing changes. An error raised
-- by check is retried on the next poll when it is retryable (err.retryable) and raised at once
-- otherwise; cancellation always propagates. When `timeout` passes, raises the error object
-- "flow.timeout" (retryable) naming the wait and its last status.
local duration = require "flow.duration"

local M = {}

local POLL_OPTS = { every = true, timeout = true, backoff = true, max_every = true,
  name = true, log = true, heartbeat = true, max_errors = true }

local default_log = require("flow.context").log

local function errmsg(e)
  if type(e) == "table" and e.code then return tostring(e.code) .. ": " .. tostring(e.message) end
  return tostring(e)
end

function M.poll(check, opts)
  local flow = require "flow"
  if type(check) ~= "function" then
    error("flow.poll: expected a function as the check, got " .. type(check), 2)
  end
  opts = opts or {}
  if type(opts) ~= "table" then error("flow.poll: options must be a table", 2) end
  for k in pairs(opts) do
    if not POLL_OPTS[k] then error("flow.poll: unknown option " .. tostring(k), 2) end
  end
  local every = duration.check(opts.every or 30, "flow.poll every")
  local timeout = opts.timeout ~= nil and duration.check(opts.timeout, "flow.poll timeout") or nil
  local backoff = opts.backoff or 1
  if type(backoff) ~= "number" or backoff < 1 then
    error("flow.poll: backoff must be a number >= 1", 2)
  end
  local max_every = opts.max_every and duration.check(opts.max_every, "flow.poll max_every")
  local name = opts.name or "poll"
  local log = opts.log or default_log
  local heartbeat = opts.heartbeat and duration.check(opts.heartbeat, "flow.poll heartbeat")
    or math.max(300, every * 10)
  local max_errors = opts.max_errors

  local start = flow.now()
  local deadline = timeout and start + timeout
  local interval = every
  local last_status, last_log, errors, polls = nil, start, 0, 0
  while true do
    polls = polls + 1
    local res = table.pack(pcall(check))
    if res[1] then
      if res[2] then return table.unpack(res, 2, res.n) end
      local status = res[3]
      if status ~= nil then status = tostring(status) end
      errors = 0
      if status and status ~= last_status then
        log(string.format("%s: %s", name, status))
        last_status, last_log = status, flow.now()
      elseif flow.now() - last_log >= heartbeat then
        log(string.format("%s: still waiting after %s%s", name,
          duration.format(flow.now() - start), last_status and (" (" .. last_status .. ")") or ""))
        last_log = flow.now()
      end
    else
      local err = res[2]
      if flow.cancelled(err) or type(err) ~= "table" or not err.retryable then error(err, 0) end
      errors = errors + 1
      if max_errors and errors >= max_errors then error(err, 0) end
      log(string.format("%s: check failed, will retry: %s", name, errmsg(err)))
      last_log = flow.now()
    end
    local now = flow.now()
    if deadline and now >= deadline then
      error(flow.error("flow.timeout", string.format("%s: gave up after %s (%d checks)%s", name,
        duration.format(now - start), polls, last_status and ("; last status: " .. last_status)
        or ""), { retryable = true }), 0)
    end
    local wait = interval
    if deadline and now + wait > deadline then wait = deadline - now end
    flow.sleep(wait)
    interval = interval * backoff
    if max_every and interval > max_every then interval = max_every end
  end
end

return M
