-- flowrun workers [--json]: the workers sharing the store, their runs and last heartbeat.
local json = require "json"
local duration = require "flow.duration"
local settings = require "flowrun.cli.settings"
local common = require "flowrun.cli.common"

local M = {}

function M.run(opts)
  local s, serr = settings.resolve(opts)
  if not s then common.eprint(serr) return 2 end
  local store = common.store(s)
  local ok, list = common.store_try(store.workers, store)
  if not ok then return 1 end
  if opts.json then
    for _, w in ipairs(list) do w.runs = json.array(w.runs or {}) end
    io.stdout:write(json.encode(json.array(list)), "\n")
    return 0
  end
  if #list == 0 then
    io.stdout:write("no workers in ", store:describe(), "\n")
    return 0
  end
  io.stdout:write("workers in ", store:describe(), "\n")
  io.stdout:write(string.format("%-34s %-9s %6s %10s  %s\n", "WORKER", "STATE", "RUNS",
    "HEARTBEAT", "RUN IDS"))
  for _, w in ipairs(list) do
    local state = w.state
    if state == "running" and not w.live then state = "gone" end
    io.stdout:write(string.format("%-34s %-9s %6s %10s  %s\n", w.id, state,
      string.format("%d/%d", #(w.runs or {}), w.concurrency or 0),
      duration.format(math.max(0, w.age or 0)) .. " ago", table.concat(w.runs or {}, " ")))
  end
  return 0
end

return M
