-- flow.duration — durations as users write them ("30s", "5m", "2h", "1h30m", "250ms", 90)
-- and as the engine prints them.
local M = {}

local UNIT = { ms = 0.001, s = 1, m = 60, h = 3600, d = 86400, w = 604800 }

-- parse(v) -> seconds (number), or nil and a message saying what was expected.
-- Accepts a non-negative number, a numeric string (seconds) or a sequence of
-- <number><unit> parts with units ms, s, m, h, d, w. NaN and negative durations are refused;
-- math.huge, and anything longer than the loop can count, means "forever" (a wait that ends only
-- when it is cancelled), the same rule the C primitives apply.
function M.parse(v)
  if type(v) == "number" then
    if v ~= v or v < 0 then
      return nil, "expected a number of seconds >= 0, got " .. tostring(v)
    end
    return v
  end
  if type(v) ~= "string" then
    return nil, "expected a duration (seconds or a string like \"30s\", \"5m\", \"2h\"), got "
      .. type(v)
  end
  local s = v:gsub("%s+", "")
  if s == "" then return nil, "expected a duration, got an empty string" end
  local n = tonumber(s)
  if n then return M.parse(n) end
  local total, pos = 0, 1
  while pos <= #s do
    local num, unit, nxt = s:match("^(%d+%.?%d*)(%a+)()", pos)
    if not num then num, unit, nxt = s:match("^(%.%d+)(%a+)()", pos) end
    if not num or not UNIT[unit:lower()] then
      return nil, string.format("bad duration %q: expected parts like 30s, 5m, 2h, 1d, 250ms", v)
    end
    total = total + tonumber(num) * UNIT[unit:lower()]
    pos = nxt
  end
  return total
end

-- check(v, what) -> seconds; raises a message naming `what` when v is not a duration.
function M.check(v, what)
  local d, err = M.parse(v)
  if not d then error((what and (what .. ": ") or "") .. err, 2) end
  return d
end

-- format(seconds) -> "250ms", "4.2s", "1m02s", "6h00m", "2d03h"
function M.format(s)
  if s == nil then return "-" end
  if s ~= s then return "?" end
  if s >= 2^53 then return "forever" end
  if s < 0 then s = 0 end
  if s < 1 then return string.format("%dms", math.floor(s * 1000 + 0.5)) end
  if s < 10 then return string.format("%.1fs", s) end
  if s < 60 then return string.format("%ds", math.floor(s)) end
  s = math.floor(s)
  if s < 3600 then return string.format("%dm%02ds", s // 60, s % 60) end
  if s < 86400 then return string.format("%dh%02dm", s // 3600, (s % 3600) // 60) end
  return string.format("%dd%02dh", s // 86400, (s % 86400) // 3600)
end

return M
