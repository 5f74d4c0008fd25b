-- flow.schedule.cron — schedules: 5-field cron expressions, presets and fixed intervals, and
-- their fire times in a time zone.
--
--   local cron = require "flow.schedule.cron"
--   local s = assert(cron.parse("0 2 * * MON-FRI"))      -- or "@daily", or "6h"
--   s:next(after, zone)  -> the first fire time strictly after `after` (epoch seconds)
--   s:prev(before, zone) -> the last fire time strictly before `before`
--   cron.parse("6h", { start_date = epoch })              -- intervals are anchored there
--
-- Syntax (Vixie cron as croniter reads it): minute 0-59, hour 0-23, day-of-month 1-31, month
-- 1-12 or JAN-DEC, day-of-week 0-7 or SUN-SAT (0 and 7 are Sunday); `*`, lists `a,b`, ranges
-- `a-b`, steps `*/n`, `a-b/n` and `a/n` (= a-max/n); names in any case. A range ending on
-- Sunday (`FRI-SUN`, `5-0`) wraps to 7. Presets: @hourly @daily @midnight @weekly @monthly
-- @yearly @annually. An interval ("30m", "6h", "1d", "1h30m" or seconds) fires every so many
-- seconds of real time from its anchor (start_date, default the epoch): "1d" is 86,400 s, so
-- it keeps its UTC time of day and moves by an hour in local time across a DST change, as a
-- timedelta schedule does in Airflow; write "0 2 * * *" for a fixed local time.
--
-- Day-of-month and day-of-week: when both are restricted, a day matches when either matches
-- (Vixie cron's OR rule). "Restricted" means the field does not cover its whole range, as in
-- croniter (Vixie cron instead looks at whether the field starts with `*`, so `*/2` counts as
-- unrestricted there and restricted here).
--
-- Time zones and daylight saving time. Fields match the local wall-clock time in the zone, and
-- each matching local time fires at the instant PEP 495's fold=0 gives it (Python's zoneinfo,
-- and croniter with zoneinfo read local times so):
--   * A local time that does not exist (spring forward: 02:30 on the night clocks go from 02:00
--     to 03:00) is read with the offset in force before the change: 02:30 fires at 03:30 of the
--     new time, so a daily job still runs once that day. Every matching time the change skips
--     fires so, each shifted by the gap (`*/20 2 * * *` fires at 03:00, 03:20, 03:40); a shifted
--     time that lands on another fire time is one fire, not two. (croniter fires at most the
--     first of them, and only when asked from before the change.)
--   * A local time that occurs twice (fall back) fires once, at its first occurrence, unless
--     the hour field is `*` (every hour): then the repeated hour fires again, so "*/15 * * * *"
--     keeps firing every 15 minutes of real time and "0 * * * *" fires 25 times that day. This
--     is what Airflow does (its _covers_every_hour fix over croniter) and what Vixie cron does
--     for wildcard jobs; croniter alone skips the repeated hour.
-- The fire times are thus a set that depends on the expression and the zone only: next and prev
-- walk the same set from any instant. (croniter 1.3.5 given zone-aware datetimes does not: its
-- DST correction shifts an answer by the DST difference whenever the start and the answer have
-- different UTC offsets, e.g. `0 12 * * *` asked on the afternoon before a spring-forward
-- answers 11:00; Airflow avoids that by giving croniter naive local times.
-- tests/py/test_schedule_oracle.py measures both.)
--
-- Parsing errors name the field and say why (`minute: 61 is out of range 0-59`). A schedule
-- that can never fire (`0 0 30 2 *`) is refused by parse; next/prev search at most 10 years.
local tz = require "flow.schedule.tz"
local duration = require "flow.duration"

local M = {}

local floor, ceil = math.floor, math.ceil
local MININT, MAXINT = math.mininteger, math.maxinteger
local days_from_civil, civil_from_days = tz.days_from_civil, tz.civil_from_days
local days_in_month = tz.days_in_month

-- The longest wait between two fire times of a schedule parse accepts is 8 years (February 29
-- around a century year that is not a leap year).
local HORIZON = 10 * 366 * 86400

local MONTHS = { jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6, jul = 7, aug = 8,
  sep = 9, oct = 10, nov = 11, dec = 12 }
local DAYS = { sun = 0, mon = 1, tue = 2, wed = 3, thu = 4, fri = 5, sat = 6 }
local MONTH_NAMES = { "January", "February", "March", "April", "May", "June", "July",
  "August", "September", "October", "November", "December" }

local FIELDS = {
  { name = "minute", lo = 0, hi = 59 },
  { name = "hour", lo = 0, hi = 23 },
  { name = "day-of-month", lo = 1, hi = 31 },
  { name = "month", lo = 1, hi = 12, names = MONTHS, what = "a month (1-12 or JAN-DEC)" },
  { name = "day-of-week", lo = 0, hi = 7, names = DAYS,
    what = "a day of the week (0-7 or SUN-SAT)" },
}

local PRESETS = {
  ["@hourly"] = "0 * * * *",
  ["@daily"] = "0 0 * * *",
  ["@midnight"] = "0 0 * * *",
  ["@weekly"] = "0 0 * * 0",
  ["@monthly"] = "0 0 1 * *",
  ["@yearly"] = "0 0 1 1 *",
  ["@annually"] = "0 0 1 1 *",
}

------------------------------------------------------------------------------------------------
-- Parsing

local function value(f, tok)
  if tok:match("^%d+$") then
    local v = tonumber(tok)
    if math.type(v) ~= "integer" or v < f.lo or v > f.hi then
      return nil, ("%s: %s is out of range %d-%d"):format(f.name, tok, f.lo, f.hi)
    end
    return v
  end
  if f.names and f.names[tok:lower()] then return f.names[tok:lower()] end
  if tok == "" then return nil, ("%s: a number is missing"):format(f.name) end
  local up = tok:upper()
  if up == "?" or up:match("^L") or up:match("^%d*[LW]$") or up:match("^H") or tok:find("#") then
    return nil, ("%s: %q is not supported (standard 5-field cron: numbers, names, *, lists, "
      .. "ranges and steps)"):format(f.name, tok)
  end
  if f.names then return nil, ("%s: %q is not %s"):format(f.name, tok, f.what) end
  return nil, ("%s: %q is not a number"):format(f.name, tok)
end

-- parse_field(f, text) -> set (value -> true) | nil, message
local function parse_field(f, text)
  local set = {}
  if text:sub(-1) == "," or text:sub(1, 1) == "," or text:find(",,", 1, true) then
    return nil, ("%s: empty element in list %q"):format(f.name, text)
  end
  for item in text:gmatch("[^,]+") do
    local base, step = item:match("^([^/]*)/(.*)$")
    if not base then base = item end
    local st = 1
    if step then
      if not step:match("^%d+$") then
        return nil, ("%s: step %q in %q is not a number"):format(f.name, step, item)
      end
      st = tonumber(step)
      if math.type(st) ~= "integer" or st < 1 then
        return nil, ("%s: step %s in %q must be at least 1"):format(f.name, step, item)
      end
    end
    local a, b
    if base == "*" then
      a, b = f.lo, f.hi
    else
      local x, y = base:match("^([^-]*)-(.*)$")
      local err
      if x then
        if x == "" or y == "" then
          return nil, ("%s: %q is not a range (a-b)"):format(f.name, base)
        end
        a, err = value(f, x)
        if not a then return nil, err end
        b, err = value(f, y)
        if not b then return nil, err end
        if f.name == "day-of-week" and b == 0 and a > 0 then b = 7 end
        if a > b then
          return nil, ("%s: range %s is backwards (%d > %d)"):format(f.name, base, a, b)
        end
      else
        a, err = value(f, base)
        if not a then return nil, err end
        b = step and f.hi or a -- "a/n" is "a-max/n", as croniter reads it
      end
    end
    for v = a, b, st do set[v] = true end
  end
  if f.name == "day-of-week" and set[7] then set[7] = nil; set[0] = true end
  return set
end

-- Tables for the search: nxt[v + 1] = the smallest member >= v (nil when none), prv[v + 1] =
-- the largest member <= v; full = the set covers the field's range.
local function tables(set, lo, hi)
  local nxt, prv = {}, {}
  local n = nil
  for v = hi, lo, -1 do
    if set[v] then n = v end
    nxt[v + 1] = n
  end
  local p = nil
  for v = lo, hi do
    if set[v] then p = v end
    prv[v + 1] = p
  end
  local full = true
  for v = lo, hi do if not set[v] then full = false; break end end
  return nxt, prv, full
end

local Schedule = {}
Schedule.__index = Schedule
Schedule.__name = "flow.schedule.cron"

function Schedule:__tostring()
  return "schedule " .. self.expr
end

local function parse_cron(expr, source)
  local parts = {}
  for p in expr:gmatch("%S+") do parts[#parts + 1] = p end
  if #parts ~= 5 then
    return nil, ("expected 5 fields (minute hour day-of-month month day-of-week), a preset "
      .. "(@hourly, @daily, @weekly, @monthly, @yearly) or an interval (\"6h\"); got %d field%s "
      .. "in %q"):format(#parts, #parts == 1 and "" or "s", source)
  end
  local sets = {}
  for i, f in ipairs(FIELDS) do
    local set, err = parse_field(f, parts[i])
    if not set then return nil, err end
    sets[i] = set
  end
  local s = setmetatable({ kind = "cron", expr = source, fields = parts }, Schedule)
  s.min_next, s.min_prev = tables(sets[1], 0, 59)
  s.hour_next, s.hour_prev, s.hour_full = tables(sets[2], 0, 23)
  s.dom_next, s.dom_prev, s.dom_full = tables(sets[3], 1, 31)
  s.mon_next, s.mon_prev = tables(sets[4], 1, 12)
  s.dow = sets[5]
  s.dow_full = true
  for v = 0, 6 do if not sets[5][v] then s.dow_full = false end end
  s.dom = sets[3]
  -- dow_ahead[wd + 1]: days from weekday wd to the next weekday in the set (1..7); behind: back
  s.dow_ahead, s.dow_behind = {}, {}
  for wd = 0, 6 do
    for k = 1, 7 do
      if sets[5][(wd + k) % 7] then s.dow_ahead[wd + 1] = k; break end
    end
    for k = 1, 7 do
      if sets[5][(wd - k) % 7] then s.dow_behind[wd + 1] = k; break end
    end
  end
  -- Days are picked by day-of-month alone when day-of-week is `*`: then some month of the set
  -- must have one of the days, or the schedule never fires.
  if s.dow_full and not s.dom_full then
    local ok = false
    for m = 1, 12 do
      if sets[4][m] then
        local dim = m == 2 and 29 or days_in_month(2001, m)
        for d = 1, dim do if sets[3][d] then ok = true; break end end
      end
      if ok then break end
    end
    if not ok then
      local days, months = {}, {}
      for d = 1, 31 do if sets[3][d] then days[#days + 1] = d end end
      for m = 1, 12 do if sets[4][m] then months[#months + 1] = MONTH_NAMES[m] end end
      return nil, ("day-of-month: %s never occur%s in %s: the schedule would never fire")
        :format(table.concat(days, ","), #days == 1 and "s" or "", table.concat(months, ", "))
    end
  end
  return s
end

-- parse(expr [, opts]) -> schedule | nil, message
-- expr: a 5-field cron expression, a preset, or an interval (a duration string or seconds).
-- opts.start_date: the epoch an interval schedule counts from (default 0).
function M.parse(expr, opts)
  local anchor = opts and opts.start_date or 0
  if type(anchor) ~= "number" then
    error(("bad option start_date to 'parse' (epoch seconds expected, got %s)"):format(
      type(anchor)), 2)
  end
  local single = type(expr) == "string" and expr:match("^%s*([^%s@][^%s]*)%s*$")
  if type(expr) == "number" or single then
    local secs = duration.parse(single or expr)
    if not secs then
      return nil, ("bad schedule %q: expected 5 cron fields (minute hour day-of-month month "
        .. "day-of-week), a preset such as @daily, or an interval such as \"6h\"")
        :format(tostring(expr))
    end
    if secs ~= floor(secs) or secs < 1 then
      return nil, ("interval: %s is not a whole number of seconds of at least 1"):format(
        tostring(expr))
    end
    return setmetatable({ kind = "interval", expr = tostring(single or expr),
      every = floor(secs), anchor = floor(anchor), hour_full = true }, Schedule)
  end
  if type(expr) ~= "string" then
    error(("bad argument #1 to 'parse' (cron expression or interval expected, got %s)"):format(
      type(expr)), 2)
  end
  local e = expr:match("^%s*(.-)%s*$")
  if e:sub(1, 1) == "@" then
    local p = PRESETS[e:lower()]
    if not p then
      return nil, ("unknown preset %q (expected @hourly, @daily, @midnight, @weekly, @monthly, "
        .. "@yearly or @annually)"):format(e)
    end
    return parse_cron(p, e)
  end
  if e == "" then return nil, "empty schedule" end
  return parse_cron(e, e)
end

------------------------------------------------------------------------------------------------
-- Searching local (naive) time: seconds on a clock without offsets. These know the calendar
-- and the fields, nothing of zones.

local function day_matches(s, y, m, d, days)
  if s.dom_full then
    return s.dow_full or s.dow[(days + 4) % 7] == true
  end
  if s.dow_full then return s.dom[d] == true end
  return s.dom[d] == true or s.dow[(days + 4) % 7] == true
end

-- Days from day d (not matching) to the next day of the month that can match, or nil when no
-- later day of this month can (dim: the month's length; wd: d's weekday, 0 = Sunday).
local function skip_forward(s, d, wd, dim)
  local a, b
  if not s.dom_full then
    local nd = s.dom_next[d + 2]
    if nd and nd <= dim then a = nd - d end
  end
  if not s.dow_full then
    local k = s.dow_ahead[wd + 1]
    if d + k <= dim then b = k end
  end
  if s.dom_full then return b end
  if s.dow_full then return a end
  if a and b then return a < b and a or b end
  return a or b
end

-- The same backwards: days from d to the previous day of the month that can match, or nil.
local function skip_back(s, d, wd)
  local a, b
  if not s.dom_full then
    local pd = s.dom_prev[d]
    if pd then a = d - pd end
  end
  if not s.dow_full then
    local k = s.dow_behind[wd + 1]
    if d - k >= 1 then b = k end
  end
  if s.dom_full then return b end
  if s.dow_full then return a end
  if a and b then return a < b and a or b end
  return a or b
end

-- next_naive(s, w, limit) -> the smallest matching whole minute >= w, or nil when it is > limit
local function next_naive(s, w, limit)
  local r = w % 60
  if r ~= 0 then w = w + 60 - r end
  if w > limit then return nil end
  local days = w // 86400
  local sod = w - days * 86400
  local hour, min = sod // 3600, sod % 3600 // 60
  local y, m, d = civil_from_days(days)
  local mon_next, hour_next, min_next = s.mon_next, s.hour_next, s.min_next
  while days * 86400 <= limit do
    local nm = mon_next[m + 1]
    if nm ~= m then
      if nm == nil then y, m = y + 1, mon_next[2] else m = nm end
      d, hour, min = 1, 0, 0
      days = days_from_civil(y, m, 1)
    elseif not day_matches(s, y, m, d, days) then
      local dim = days_in_month(y, m)
      local k = skip_forward(s, d, (days + 4) % 7, dim) or (dim - d + 1)
      days, d, hour, min = days + k, d + k, 0, 0
      if d > dim then
        d, m = 1, m + 1
        if m > 12 then m, y = 1, y + 1 end
      end
    else
      local nh = hour_next[hour + 1]
      if nh == nil then
        hour = 24 -- next day, below
      elseif nh ~= hour then
        hour, min = nh, 0
      end
      if hour < 24 then
        local mm = min_next[min + 1]
        if mm then
          local t = days * 86400 + hour * 3600 + mm * 60
          if t > limit then return nil end
          return t
        end
        hour, min = hour + 1, 0
      end
      if hour >= 24 then
        days, d, hour, min = days + 1, d + 1, 0, 0
        if d > days_in_month(y, m) then
          d, m = 1, m + 1
          if m > 12 then m, y = 1, y + 1 end
        end
      end
    end
  end
  return nil
end

-- prev_naive(s, w, limit) -> the largest matching whole minute <= w, or nil when it is < limit
local function prev_naive(s, w, limit)
  w = w - w % 60
  if w < limit then return nil end
  local days = w // 86400
  local sod = w - days * 86400
  local hour, min = sod // 3600, sod % 3600 // 60
  local y, m, d = civil_from_days(days)
  local mon_prev, hour_prev, min_prev = s.mon_prev, s.hour_prev, s.min_prev
  while days * 86400 + 86399 >= limit do
    local pm = mon_prev[m + 1]
    if pm ~= m then
      if pm == nil then y, m = y - 1, mon_prev[13] else m = pm end
      d, hour, min = days_in_month(y, m), 23, 59
      days = days_from_civil(y, m, d)
    elseif not day_matches(s, y, m, d, days) then
      local k = skip_back(s, d, (days + 4) % 7) or d
      days, d, hour, min = days - k, d - k, 23, 59
      if d < 1 then
        m = m - 1
        if m < 1 then m, y = 12, y - 1 end
        d = days_in_month(y, m)
      end
    else
      local ph = hour_prev[hour + 1]
      if ph == nil then
        hour = -1
      elseif ph ~= hour then
        hour, min = ph, 59
      end
      if hour >= 0 then
        local mm = min_prev[min + 1]
        if mm then
          local t = days * 86400 + hour * 3600 + mm * 60
          if t < limit then return nil end
          return t
        end
        hour, min = hour - 1, 59
      end
      if hour < 0 then
        days, d, hour, min = days - 1, d - 1, 23, 59
        if d < 1 then
          m = m - 1
          if m < 1 then m, y = 12, y - 1 end
          d = days_in_month(y, m)
        end
      end
    end
  end
  return nil
end

------------------------------------------------------------------------------------------------
-- Fire times in a zone. The zone's time line is cut into segments of one UTC offset; within a
-- segment [start, stop) with offset `off`, the instant t fires when its local time t + off
-- matches, except the second occurrences of repeated local times (the first span after a
-- fall-back, of width prev_off - off) when the hour field is not `*`. After a spring-forward
-- (prev_off < off), the local times skipped fire in [start, start + off - prev_off), each at
-- its local time read with prev_off.

local function never(s, t)
  local l = tz.utc:to_local(t)
  return nil, ("schedule %q has no fire time within 10 years of %04d-%02d-%02dT%02d:%02d:%02dZ")
    :format(s.expr, l.year, l.month, l.day, l.hour, l.min, l.sec)
end

-- Instants from year 1 to year 9999: integer arithmetic all the way, and no search can be
-- stuck on a float too large to move by a minute.
local T_MIN, T_MAX = -62135596800, 253402300799

local function check_args(fname, t, zone)
  if type(t) ~= "number" or not (t >= T_MIN and t <= T_MAX) then
    error(("bad argument #1 to '%s' (epoch seconds of years 1-9999 expected, got %s)"):format(
      fname, type(t) == "number" and tostring(t) or type(t)), 3)
  end
  if zone ~= nil and getmetatable(zone) ~= tz.Zone then
    error(("bad argument #2 to '%s' (a zone from tz.load expected, got %s)"):format(fname,
      type(zone)), 3)
  end
end

-- next(after [, zone]) -> epoch of the first fire time strictly after `after`, or nil, message
function Schedule:next(after, zone)
  check_args("next", after, zone)
  if self.kind == "interval" then
    local k = (floor(after) - self.anchor) // self.every + 1
    return self.anchor + k * self.every
  end
  zone = zone or tz.utc
  local t = floor(after) + 1
  local horizon = t + HORIZON
  while t <= horizon do
    local start, stop, off, _, _, prev_off = zone:segment(t)
    local limit = stop == MAXINT and horizon or math.min(stop - 1, horizon)
    local best
    if prev_off < off and start ~= MININT then
      local gap_end = start + (off - prev_off) - 1 -- last instant of the shifted span
      if t <= gap_end then
        local w = next_naive(self, t + prev_off, math.min(gap_end, limit) + prev_off)
        if w then best = w - prev_off; limit = best - 1 end
      end
    end
    local lo = t
    if prev_off > off and not self.hour_full and start ~= MININT then
      local first = start + (prev_off - off) -- the first instant that is not a repeat
      if lo < first then lo = first end
    end
    if lo <= limit then
      local w = next_naive(self, lo + off, limit + off)
      if w then best = w - off end
    end
    if best then return best end
    if stop == MAXINT then break end
    t = stop
  end
  return never(self, after)
end

-- prev(before [, zone]) -> epoch of the last fire time strictly before `before`, or nil, message
function Schedule:prev(before, zone)
  check_args("prev", before, zone)
  if self.kind == "interval" then
    local k = -((self.anchor - ceil(before)) // self.every) - 1
    return self.anchor + k * self.every
  end
  zone = zone or tz.utc
  local t = ceil(before) - 1
  local horizon = t - HORIZON
  while t >= horizon do
    local start, _, off, _, _, prev_off = zone:segment(t)
    local best
    local lo = start == MININT and horizon or math.max(start, horizon)
    if prev_off > off and not self.hour_full and start ~= MININT then
      lo = math.max(lo, start + (prev_off - off))
    end
    if lo <= t then
      local w = prev_naive(self, t + off, lo + off)
      if w then best = w - off end
    end
    if prev_off < off and start ~= MININT then
      local gap_end = math.min(t, start + (off - prev_off) - 1)
      local glo = best and math.max(start, best + 1) or start
      if gap_end >= glo then
        local w = prev_naive(self, gap_end + prev_off, glo + prev_off)
        if w then best = w - prev_off end
      end
    end
    if best then return best end
    if start == MININT then break end
    t = start - 1
  end
  return never(self, before)
end

-- matches_local(y, m, d, H, M) -> whether the fields match that local date and time
function Schedule:matches_local(y, m, d, h, mi)
  if self.kind ~= "cron" then return false end
  local days = days_from_civil(y, m, d)
  return self.mon_next[m + 1] == m and day_matches(self, y, m, d, days)
    and self.hour_next[h + 1] == h and self.min_next[mi + 1] == mi
end

M.Schedule = Schedule
return M
