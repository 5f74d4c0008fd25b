-- flow.schedule.interval — logical dates and data intervals, with Airflow's semantics.
--
-- A scheduled run covers the data interval [start, end) between two consecutive fire times of
-- its schedule and is due at `end`; its logical date is `start`. So the `0 2 * * *` run that
-- starts at 02:00 on the 29th processes [28th 02:00, 29th 02:00) and has logical date the 28th.
-- A manual run's logical date is the time it was started (whole seconds); its data interval is
-- the latest complete one at that time, as Airflow infers it.
--
--   local interval = require "flow.schedule.interval"
--   local tt = assert(interval.timetable {
--     schedule = "0 2 * * *", timezone = "Europe/Paris",
--     start_date = "2026-01-01", end_date = nil,            -- ISO 8601 (in the zone) or epochs
--   })
--   tt:first()                 -> the first interval: its start is the first fire time >= start_date
--   tt:following(iv)           -> the interval after iv
--   tt:between(lo, hi [, max]) -> intervals whose end lies in [lo, hi], oldest first (catch-up,
--                                 backfill); at most max of them, and true when more remain
--   tt:latest(now)             -> the latest complete interval (end <= now), or nil
--   tt:upcoming(now)           -> the next interval to become due (end > now), or nil
--   tt:due(now, last_end, catchup [, max]) -> the intervals a scheduler should start now
--   tt:manual(at)              -> the interval of a run started by hand at `at`
--   tt:context(iv)             -> {logical_date, data_interval = {start, ["end"], ...}, ...}
--   interval.iso(epoch, zone)  -> "2026-03-29T03:00:00+02:00"
--   interval.parse_time(v, zone) -> epoch | nil, message
--
-- An interval is {start = epoch, ["end"] = epoch, logical_date = epoch, manual = true|nil}.
-- Bounds, as in Airflow: an interval exists when its start is >= start_date and <= end_date
-- (so the last one may end after end_date). A schedule without start_date is unbounded.
local tz = require "flow.schedule.tz"
local cron = require "flow.schedule.cron"

local M = {}

local floor, ceil = math.floor, math.ceil

-- iso(epoch [, zone]) -> ISO 8601 local date-time with the zone's offset (UTC: "+00:00");
-- fractions of a second are kept to the millisecond.
function M.iso(t, zone)
  if type(t) ~= "number" then
    error(("bad argument #1 to 'iso' (epoch seconds expected, got %s)"):format(type(t)), 2)
  end
  zone = zone or tz.utc
  local s = floor(t)
  local l = zone:to_local(s)
  local frac = ""
  if t ~= s then
    local ms = floor((t - s) * 1000 + 0.5)
    if ms > 0 and ms < 1000 then frac = (".%03d"):format(ms) end
  end
  return ("%04d-%02d-%02dT%02d:%02d:%02d%s%s"):format(l.year, l.month, l.day, l.hour, l.min,
    l.sec, frac, tz.format_offset(l.offset))
end

local TIME_HELP = "expected YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS] with an optional Z or +HH:MM"

-- parse_time(v [, zone]) -> epoch | nil, message. v: epoch seconds, or an ISO 8601 date or
-- date-time; without an offset it is a local time in `zone` (default UTC), read as
-- zone:instant reads it (the first of an overlap; in a gap, with the offset before the change).
function M.parse_time(v, zone)
  if type(v) == "number" then return v end
  if type(v) ~= "string" then
    return nil, ("bad time %s: %s"):format(type(v), TIME_HELP)
  end
  zone = zone or tz.utc
  local y, mo, d, rest = v:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then return nil, ("bad time %q: %s"):format(v, TIME_HELP) end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  local h, mi, s, frac, off = 0, 0, 0, 0, nil
  if rest ~= "" then
    local hh, mm, tail = rest:match("^[T ](%d%d):(%d%d)(.*)$")
    if not hh then return nil, ("bad time %q: %s"):format(v, TIME_HELP) end
    h, mi = tonumber(hh), tonumber(mm)
    local ss, t2 = tail:match("^:(%d%d)(.*)$")
    if ss then
      s, tail = tonumber(ss), t2
      local f, t3 = tail:match("^%.(%d+)(.*)$")
      if f then frac, tail = tonumber("0." .. f), t3 end
    end
    if tail == "Z" or tail == "z" then
      off = 0
    elseif tail ~= "" then
      local sign, oh, om = tail:match("^([+-])(%d%d):?(%d%d)$")
      if not sign then return nil, ("bad time %q: %s"):format(v, TIME_HELP) end
      off = (tonumber(oh) * 3600 + tonumber(om) * 60) * (sign == "-" and -1 or 1)
    end
  end
  if mo < 1 or mo > 12 or d < 1 or d > tz.days_in_month(y, mo) or h > 23 or mi > 59 or s > 59 then
    return nil, ("bad time %q: no such date or time"):format(v)
  end
  local w = tz.naive(y, mo, d, h, mi, s)
  local t = off and (w - off) or zone:localize(w)
  if frac ~= 0 then t = t + frac end
  return t
end

local TT = {}
TT.__index = TT
TT.__name = "flowrun.schedule.timetable"

function TT:__tostring()
  return ("timetable %s in %s"):format(self.schedule.expr, self.zone.name)
end

local function mk(start, stop)
  return { start = start, ["end"] = stop, logical_date = start }
end

-- timetable(spec) -> timetable | nil, message
-- spec.schedule: a cron expression, preset or interval (parsed here, an interval anchored at
-- start_date); spec.timezone: an IANA name, an offset or a zone (default UTC); spec.start_date,
-- spec.end_date: epochs or ISO 8601 strings (local to the zone unless they carry an offset).
function M.timetable(spec)
  if type(spec) ~= "table" then
    error(("bad argument #1 to 'timetable' (table expected, got %s)"):format(type(spec)), 2)
  end
  local zone = spec.timezone or "UTC"
  if type(zone) == "string" then
    local z, err = tz.load(zone)
    if not z then return nil, "timezone: " .. err end
    zone = z
  elseif getmetatable(zone) ~= tz.Zone then
    return nil, ("timezone: expected a zone name such as \"Europe/Paris\", got %s"):format(
      type(zone))
  end
  local bounds = {}
  for _, k in ipairs { "start_date", "end_date" } do
    if spec[k] ~= nil then
      local t, err = M.parse_time(spec[k], zone)
      if not t then return nil, k .. ": " .. err end
      bounds[k] = t
    end
  end
  if bounds.start_date and bounds.end_date and bounds.end_date < bounds.start_date then
    return nil, ("end_date %s is before start_date %s"):format(M.iso(bounds.end_date, zone),
      M.iso(bounds.start_date, zone))
  end
  local sched, err = spec.schedule, nil
  if getmetatable(sched) ~= cron.Schedule then
    if sched == nil then return nil, "schedule: missing" end
    sched, err = cron.parse(sched, { start_date = bounds.start_date and ceil(bounds.start_date) })
    if not sched then return nil, "schedule: " .. err end
  end
  if sched.kind == "interval" and not bounds.start_date then
    return nil, "start_date: an interval schedule (\"" .. sched.expr
      .. "\") needs one: its intervals are counted from it"
  end
  return setmetatable({ schedule = sched, zone = zone, start_date = bounds.start_date,
    end_date = bounds.end_date }, TT)
end

function TT:next(t)
  return assert(self.schedule:next(t, self.zone))
end

function TT:prev(t)
  return assert(self.schedule:prev(t, self.zone))
end

-- The interval that starts at the fire time s, when the bounds allow it.
function TT:starting(s)
  if self.start_date and s < self.start_date then return nil end
  if self.end_date and s > self.end_date then return nil end
  return mk(s, self:next(s))
end

-- first() -> the first interval, or nil when start_date is unset (no first one)
function TT:first()
  if not self.start_date then return nil end
  return self:starting(self:next(ceil(self.start_date) - 1))
end

-- following(iv) -> the interval after iv, or nil past end_date
function TT:following(iv)
  return self:starting(iv["end"])
end

-- between(lo, hi [, max]) -> list of the intervals whose end lies in [lo, hi] (inclusive),
-- oldest first, and true when max cut the list short
function TT:between(lo, hi, max)
  local out = {}
  if hi < lo then return out, false end
  local e = self:next(ceil(lo) - 1)
  local s = self:prev(e)
  if self.start_date and s < self.start_date then
    local f = self:first()
    if not f then return out, false end
    s, e = f.start, f["end"]
  end
  while e <= hi do
    if self.end_date and s > self.end_date then break end
    if max and #out >= max then return out, true end
    out[#out + 1] = mk(s, e)
    s, e = e, self:next(e)
  end
  return out, false
end

-- latest(now) -> the latest complete interval (end <= now), or nil
function TT:latest(now)
  local e = self:prev(floor(now) + 1)
  local s = self:prev(e)
  if self.end_date and s > self.end_date then
    s = self:prev(floor(self.end_date) + 1)
    e = self:next(s)
  end
  if self.start_date and s < self.start_date then return nil end
  return mk(s, e)
end

-- upcoming(now) -> the first interval that ends after now (the next run to become due), or nil
function TT:upcoming(now)
  local e = self:next(now)
  local s = self:prev(e)
  if self.start_date and s < self.start_date then return self:first() end
  if self.end_date and s > self.end_date then return nil end
  return mk(s, e)
end

-- due(now, last_end, catchup [, max]) -> list of the intervals to start now, oldest first, and
-- true when max held some back. last_end: the end of the latest interval already run (nil:
-- none). catchup: every interval that ended since then (from start_date when none ran);
-- otherwise only the latest complete one, when it is newer than last_end.
function TT:due(now, last_end, catchup, max)
  if catchup and (last_end or self.start_date) then
    local lo = last_end and floor(last_end) + 1 or ceil(self.start_date)
    return self:between(lo, now, max)
  end
  local iv = self:latest(now)
  if not iv or (last_end and iv["end"] <= last_end) then return {}, false end
  if max and max < 1 then return {}, true end
  return { iv }, false
end

-- manual(at) -> the interval of a run started by hand at `at`: logical date `at` (whole
-- seconds); data interval the latest complete one, or for an interval schedule [at - every, at)
function TT:manual(at)
  at = floor(at)
  local s, e
  if self.schedule.kind == "interval" then
    s, e = at - self.schedule.every, at
  else
    e = self:prev(at + 1)
    s = self:prev(e)
  end
  return { start = s, ["end"] = e, logical_date = at, manual = true }
end

-- context(iv) -> what a run sees: ISO 8601 strings in the schedule's zone and epoch seconds
function TT:context(iv)
  local z = self.zone
  local s, e, ld = M.iso(iv.start, z), M.iso(iv["end"], z), M.iso(iv.logical_date, z)
  return {
    logical_date = ld, logical_date_epoch = iv.logical_date,
    data_interval = { start = s, ["end"] = e, start_epoch = iv.start, end_epoch = iv["end"] },
    data_interval_start = s, data_interval_end = e,
    timezone = z.name, manual = iv.manual or false,
  }
end

function TT:iso(t)
  return M.iso(t, self.zone)
end

M.Timetable = TT
return M
