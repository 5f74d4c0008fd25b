-- flow.schedule.tz — time zones from the system's tz database: TZif files (RFC 8536) read
-- from /usr/share/zoneinfo (Debian's tzdata; $TZDIR overrides), the 64-bit data of version 2+
-- files, and the footer's POSIX TZ rule for instants after the last transition.
--
--   local tz = require "flow.schedule.tz"
--   local paris = assert(tz.load("Europe/Paris"))      -- also "UTC", "+05:30", "-03:00"
--   paris:to_local(epoch)  -> {year, month, day, hour, min, sec, wday, yday, offset, isdst, abbr}
--   paris:from_local(2026, 3, 29, 2, 30, 0) -> {}                  (spring-forward gap)
--   paris:from_local(2026, 10, 25, 2, 30, 0) -> {e1, e2}           (fall-back overlap)
--   paris:instant(2026, 3, 29, 2, 30, 0) -> one epoch (PEP 495 fold=0: the first of an overlap;
--                                           in a gap, read with the offset before the change)
--   paris:offset(epoch) -> offset, isdst, abbr
--
-- Why Lua reading TZif files rather than glibc (setenv TZ + tzset + localtime_r/mktime): TZ is
-- process-wide state, so switching it per call would race with anything else reading local
-- time and makes glibc re-read the zone file on each switch; mktime says nothing useful about
-- a local time that does not exist or occurs twice, while from_local must list both instants
-- of an overlap and none of a gap; and the offsets and transitions are plain data that a pure
-- module keeps, caches per zone and tests without a process. Files are read once per process.
--
-- Conventions: epochs are seconds since 1970-01-01T00:00:00Z (integers; fractions are dropped
-- by to_local); `offset` is seconds east of UTC; wday is 1..7 with Sunday = 1 and yday is
-- 1..366, as os.date("*t") gives them. The calendar is the proleptic Gregorian one.
local M = {}

local floor = math.floor
local MININT, MAXINT = math.mininteger, math.maxinteger
local sunpack = string.unpack

M.dir = os.getenv("TZDIR") or "/usr/share/zoneinfo"

-- Calendar arithmetic (Howard Hinnant's days_from_civil / civil_from_days): exact for any
-- year Lua integers reach, no tables, no os.time (which depends on the process's TZ).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = y // 400
  local yoe = y - era * 400
  local doy = (153 * ((m + 9) % 12) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = z // 146097
  local doe = z - era * 146097
  local yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
  local doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
  local mp = (5 * doy + 2) // 153
  local d = doy - (153 * mp + 2) // 5 + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local function is_leap(y)
  return y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)
end

local MDAYS = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }
local function days_in_month(y, m)
  if m == 2 and is_leap(y) then return 29 end
  return MDAYS[m]
end

M.days_from_civil = days_from_civil
M.civil_from_days = civil_from_days
M.is_leap = is_leap
M.days_in_month = days_in_month

-- naive(y, m, d, H, M, S) -> the local date-time as seconds on a clock without offsets, fields
-- normalised as os.time does (month 13 is January of the next year, minute 60 the next hour).
local function naive(y, mo, d, h, mi, s)
  y = y + (mo - 1) // 12
  mo = (mo - 1) % 12 + 1
  return (days_from_civil(y, mo, 1) + d - 1) * 86400 + h * 3600 + mi * 60 + s
end
M.naive = naive

------------------------------------------------------------------------------------------------
-- POSIX TZ strings (the TZif footer), with RFC 8536's extensions: hours up to 167 and negative
-- transition times.

local function posix_name(s, i)
  if s:sub(i, i) == "<" then
    local j = s:find(">", i + 1, true)
    if not j then return nil end
    return s:sub(i + 1, j - 1), j + 1
  end
  local name = s:match("^%a+", i)
  if not name or #name < 3 then return nil end
  return name, i + #name
end

-- [+-]hh[:mm[:ss]] -> seconds, next index
local function posix_hms(s, i)
  local sign, h, rest = s:match("^([+-]?)(%d+)()", i)
  if not h then return nil end
  local v = tonumber(h) * 3600
  i = rest
  local mm, r2 = s:match("^:(%d+)()", i)
  if mm then
    v, i = v + tonumber(mm) * 60, r2
    local ss, r3 = s:match("^:(%d+)()", i)
    if ss then v, i = v + tonumber(ss), r3 end
  end
  if sign == "-" then v = -v end
  return v, i
end

-- ,date[/time] where date is Jn, n or Mm.w.d
local function posix_date(s, i)
  local r
  local c = s:sub(i, i)
  if c == "J" then
    local n, nx = s:match("^J(%d+)()", i)
    if not n then return nil end
    r, i = { kind = "J", n = tonumber(n) }, nx
  elseif c == "M" then
    local m, w, d, nx = s:match("^M(%d+)%.(%d)%.(%d)()", i)
    if not m then return nil end
    r, i = { kind = "M", m = tonumber(m), w = tonumber(w), d = tonumber(d) }, nx
    if r.m < 1 or r.m > 12 or r.w < 1 or r.w > 5 or r.d > 6 then return nil end
  else
    local n, nx = s:match("^(%d+)()", i)
    if not n then return nil end
    r, i = { kind = "n", n = tonumber(n) }, nx
  end
  r.time = 7200
  if s:sub(i, i) == "/" then
    local t, nx = posix_hms(s, i + 1)
    if not t then return nil end
    r.time, i = t, nx
  end
  return r, i
end

-- parse_posix(s) -> {std_off, std_abbr, dst_off?, dst_abbr?, start?, stop?} | nil
-- Offsets are returned east of UTC (POSIX writes them west).
local function parse_posix(s)
  local std, i = posix_name(s, 1)
  if not std then return nil end
  local off
  off, i = posix_hms(s, i)
  if not off then return nil end
  local r = { std_abbr = std, std_off = -off }
  if i > #s then return r end
  local dst
  dst, i = posix_name(s, i)
  if not dst then return nil end
  r.dst_abbr = dst
  r.dst_off = r.std_off + 3600
  if i <= #s and s:sub(i, i) ~= "," then
    local doff
    doff, i = posix_hms(s, i)
    if not doff then return nil end
    r.dst_off = -doff
  end
  if s:sub(i, i) ~= "," then
    -- No rule: POSIX leaves it to the implementation; the US rules are the usual default.
    s = s .. ",M3.2.0,M11.1.0"
  end
  r.start, i = posix_date(s, i + 1)
  if not r.start or s:sub(i, i) ~= "," then return nil end
  r.stop, i = posix_date(s, i + 1)
  if not r.stop or i <= #s then return nil end
  return r
end
M._parse_posix = parse_posix

-- The day (days since the epoch) a POSIX rule date falls on in year y.
local function rule_day(rd, y)
  local jan1 = days_from_civil(y, 1, 1)
  if rd.kind == "J" then
    -- 1..365, February 29 never counted
    local n = rd.n
    if is_leap(y) and n >= 60 then n = n + 1 end
    return jan1 + n - 1
  elseif rd.kind == "n" then
    return jan1 + rd.n
  end
  local first = days_from_civil(y, rd.m, 1)
  local wd1 = (first + 4) % 7 -- 1970-01-01 was a Thursday
  local day = 1 + (rd.d - wd1) % 7 + (rd.w - 1) * 7
  local dim = days_in_month(y, rd.m)
  while day > dim do day = day - 7 end
  return first + day - 1
end

-- The transitions a POSIX rule makes in year y, in time order: {at, off, isdst, abbr}.
-- The start time is local standard time, the end time local daylight time.
local function rule_year(r, y)
  local a = { at = rule_day(r.start, y) * 86400 + r.start.time - r.std_off,
    off = r.dst_off, isdst = true, abbr = r.dst_abbr }
  local b = { at = rule_day(r.stop, y) * 86400 + r.stop.time - r.dst_off,
    off = r.std_off, isdst = false, abbr = r.std_abbr }
  if b.at < a.at then return { b, a } end
  return { a, b }
end

------------------------------------------------------------------------------------------------
-- Zones. A zone is a list of transitions (times[i], and the local time type that starts
-- there: offs[i], dsts[i], abbrs[i]), the type before the first transition (off0...), and,
-- for instants after the last transition, either the footer's rule or the last type.

local Zone = {}
Zone.__index = Zone
Zone.__name = "flowrun.schedule.zone"

function Zone:__tostring()
  return "zone " .. self.name
end

-- Transitions the footer rule makes around the instant t (years y-1..y+1), merged in time
-- order; a transition at the same instant as an earlier one replaces it (permanent DST).
local function rule_window(z, t)
  local y = civil_from_days((t + z.rule.std_off) // 86400)
  local cache = z.rule_cache
  local w = cache[y]
  if w then return w end
  w = {}
  for yy = y - 1, y + 1 do
    for _, tr in ipairs(rule_year(z.rule, yy)) do
      if #w > 0 and w[#w].at >= tr.at then w[#w] = nil end
      w[#w + 1] = tr
    end
  end
  if z.rule_cache_n > 64 then cache = {}; z.rule_cache = cache; z.rule_cache_n = 0 end
  cache[y] = w
  z.rule_cache_n = z.rule_cache_n + 1
  return w
end

-- segment(t) -> start, stop, offset, isdst, abbr, prev_offset: the span [start, stop) of
-- instants around t that share one offset (MININT/MAXINT when unbounded), and the offset in
-- force just before `start` (equal to `offset` when `start` is MININT).
local function segment(z, t)
  local times, n = z.times, z.n
  if n > 0 and t < times[1] then
    return MININT, times[1], z.off0, z.dst0, z.abbr0, z.off0
  end
  local last = n > 0 and times[n] or MININT
  if t < last then
    -- binary search: the largest i with times[i] <= t (then i < n)
    local lo, hi = 1, n
    while lo < hi do
      local mid = (lo + hi + 1) // 2
      if times[mid] <= t then lo = mid else hi = mid - 1 end
    end
    return times[lo], times[lo + 1], z.offs[lo], z.dsts[lo], z.abbrs[lo],
      lo > 1 and z.offs[lo - 1] or z.off0
  end
  local prev_last = n > 1 and z.offs[n - 1] or z.off0
  if not z.rule then
    if n == 0 then return MININT, MAXINT, z.off0, z.dst0, z.abbr0, z.off0 end
    return last, MAXINT, z.offs[n], z.dsts[n], z.abbrs[n], prev_last
  end
  -- after the table: the footer's rule
  local w = rule_window(z, t)
  local j = #w
  while j > 1 and w[j].at > t do j = j - 1 end
  local tr, nx, pv = w[j], w[j + 1], w[j - 1]
  local start, po = tr.at, pv and pv.off or tr.off
  if start < last then
    -- the table's last transition comes after the rule's: it starts this segment
    start, po = last, prev_last
  end
  return start, nx and nx.at or MAXINT, tr.off, tr.isdst, tr.abbr, po
end

-- segment(t) -> start, stop, offset, isdst, abbr, prev_offset (see above)
function Zone:segment(t)
  if self.fixed then return MININT, MAXINT, self.fixed, false, self.fixed_abbr, self.fixed end
  return segment(self, t)
end

-- offset(epoch) -> offset (seconds east of UTC), isdst, abbr
function Zone:offset(t)
  t = floor(t)
  if self.fixed then return self.fixed, false, self.fixed_abbr end
  local _, _, off, dst, abbr = segment(self, t)
  return off, dst, abbr
end

-- to_local(epoch) -> {year, month, day, hour, min, sec, wday, yday, offset, isdst, abbr}
function Zone:to_local(t)
  if type(t) ~= "number" then
    error(("bad argument #1 to 'to_local' (epoch seconds expected, got %s)"):format(type(t)), 2)
  end
  t = floor(t)
  if math.type(t) ~= "integer" then
    error(("bad argument #1 to 'to_local' (epoch seconds expected, got %s)"):format(tostring(t)), 2)
  end
  local off, dst, abbr = self:offset(t)
  local w = t + off
  local days = w // 86400
  local sod = w - days * 86400
  local y, m, d = civil_from_days(days)
  return {
    year = y, month = m, day = d,
    hour = sod // 3600, min = sod % 3600 // 60, sec = sod % 60,
    wday = (days + 4) % 7 + 1,
    yday = days - days_from_civil(y, 1, 1) + 1,
    offset = off, isdst = dst, abbr = abbr,
  }
end

-- RFC 8536 keeps UT offsets within about 26 hours; every instant a local time can stand for
-- lies within this distance of it.
local SPAN = 26 * 3600

-- resolve(w) -> list of instants whose local time is the naive local time w (ascending)
function Zone:resolve(w)
  if self.fixed then return { w - self.fixed } end
  local out = {}
  local t = w - SPAN
  while true do
    local start, stop, off = segment(self, t)
    local e = w - off
    if e >= start and e < stop and e ~= out[#out] then out[#out + 1] = e end
    if stop == MAXINT or stop > w + SPAN then break end
    t = stop
  end
  return out
end

-- localize(w) -> the one instant PEP 495's fold=0 gives the naive local time w: the only one,
-- the first of an overlap, or in a gap the instant w has with the offset before the change
-- (02:30 in a 02:00->03:00 gap is 03:30 of the new time).
function Zone:localize(w)
  if self.fixed then return w - self.fixed end
  local t = w - SPAN
  while true do
    local start, stop, off, _, _, prev_off = segment(self, t)
    local e = w - off
    if e >= start and e < stop then return e end
    if prev_off < off and start ~= MININT then
      e = w - prev_off
      if e >= start and e < start + (off - prev_off) then return e end
    end
    if stop == MAXINT or stop > w + SPAN then break end
    t = stop
  end
  -- unreachable for RFC 8536 zones: some segment always holds w read with one of its offsets
  return w - self:offset(w)
end

local function int_arg(v, i, fname)
  if math.type(v) == "integer" then return v end
  if type(v) == "number" and v == floor(v) then return floor(v) end
  error(("bad argument #%d to '%s' (integer expected, got %s)"):format(i, fname,
    type(v) == "number" and tostring(v) or type(v)), 3)
end

-- from_local(y, m, d, H, M, S) -> list of epochs: 1 normally, 0 in a spring-forward gap, 2 in
-- a fall-back overlap (earlier first). Fields are normalised as os.time does.
function Zone:from_local(y, mo, d, h, mi, s)
  y = int_arg(y, 1, "from_local")
  mo = int_arg(mo, 2, "from_local")
  d = int_arg(d, 3, "from_local")
  h = int_arg(h or 0, 4, "from_local")
  mi = int_arg(mi or 0, 5, "from_local")
  s = int_arg(s or 0, 6, "from_local")
  return self:resolve(naive(y, mo, d, h, mi, s))
end

-- instant(y, m, d, H, M, S) -> one epoch for a local time: see localize
function Zone:instant(y, mo, d, h, mi, s)
  y = int_arg(y, 1, "instant")
  mo = int_arg(mo, 2, "instant")
  d = int_arg(d, 3, "instant")
  h = int_arg(h or 0, 4, "instant")
  mi = int_arg(mi or 0, 5, "instant")
  s = int_arg(s or 0, 6, "instant")
  return self:localize(naive(y, mo, d, h, mi, s))
end

------------------------------------------------------------------------------------------------
-- Loading

local function fmt_offset(off)
  local sign = off < 0 and "-" or "+"
  off = math.abs(off)
  local s = ("%s%02d:%02d"):format(sign, off // 3600, off % 3600 // 60)
  if off % 60 ~= 0 then s = s .. (":%02d"):format(off % 60) end
  return s
end
M.format_offset = fmt_offset

-- fixed(seconds [, name]) -> a zone with one offset for all time
function M.fixed(off, name)
  if math.type(off) ~= "integer" then
    error(("bad argument #1 to 'fixed' (integer seconds expected, got %s)"):format(tostring(off)), 2)
  end
  local abbr = off == 0 and "UTC" or fmt_offset(off)
  return setmetatable({ name = name or abbr, fixed = off, fixed_abbr = abbr, n = 0, times = {},
    off0 = off, dst0 = false, abbr0 = abbr }, Zone)
end

M.utc = M.fixed(0, "UTC")

-- parse_tzif(data, name) -> zone | nil, message
local function parse_tzif(data, name)
  local function bad(why)
    return nil, ("time zone %q: %s"):format(name, why)
  end
  if data:sub(1, 4) ~= "TZif" then return bad("not a TZif file") end
  local version = data:sub(5, 5)
  local function header(pos)
    if #data < pos + 43 then return nil end
    local isut, isstd, leap, timecnt, typecnt, charcnt = sunpack(">I4I4I4I4I4I4", data, pos + 20)
    return { isut = isut, isstd = isstd, leap = leap, timecnt = timecnt, typecnt = typecnt,
      charcnt = charcnt }
  end
  local h = header(1)
  if not h then return bad("truncated header") end
  local pos = 45
  local tsize = 4
  if version >= "2" then
    -- skip the version 1 data block; the 64-bit block follows with its own header
    pos = pos + h.timecnt * 5 + h.typecnt * 6 + h.charcnt + h.leap * 8 + h.isstd + h.isut
    if #data < pos + 43 then return bad("truncated version 1 data block") end
    if data:sub(pos, pos + 3) ~= "TZif" then return bad("missing version 2 header") end
    h = header(pos)
    if not h then return bad("truncated version 2 header") end
    pos = pos + 44
    tsize = 8
  end
  if h.leap > 0 then
    return bad("has leap-second records (a \"right/\" zone); use the zone without \"right/\"")
  end
  if h.typecnt == 0 then return bad("has no local time types") end
  local need = h.timecnt * (tsize + 1) + h.typecnt * 6 + h.charcnt + h.isstd + h.isut
  if #data < pos + need - 1 then return bad("truncated data block") end
  local tfmt = tsize == 8 and ">i8" or ">i4"
  local times = {}
  for i = 1, h.timecnt do
    times[i] = sunpack(tfmt, data, pos)
    pos = pos + tsize
  end
  local idx = {}
  for i = 1, h.timecnt do
    idx[i] = data:byte(pos) + 1
    pos = pos + 1
  end
  local types = {}
  for i = 1, h.typecnt do
    local off, dst, ai = sunpack(">i4BB", data, pos)
    types[i] = { off = off, dst = dst ~= 0, ai = ai }
    pos = pos + 6
  end
  local chars = data:sub(pos, pos + h.charcnt - 1)
  pos = pos + h.charcnt + h.isstd + h.isut
  for _, ty in ipairs(types) do
    local e = chars:find("\0", ty.ai + 1, true)
    ty.abbr = chars:sub(ty.ai + 1, (e or #chars + 1) - 1)
  end
  local z = { name = name, times = {}, offs = {}, dsts = {}, abbrs = {}, n = 0,
    off0 = types[1].off, dst0 = types[1].dst, abbr0 = types[1].abbr,
    rule_cache = {}, rule_cache_n = 0 }
  for i = 1, h.timecnt do
    local ty = types[idx[i]]
    if not ty then return bad("transition to an undefined local time type") end
    if z.n > 0 and times[i] <= z.times[z.n] then return bad("transition times out of order") end
    z.n = z.n + 1
    z.times[z.n], z.offs[z.n], z.dsts[z.n], z.abbrs[z.n] = times[i], ty.off, ty.dst, ty.abbr
  end
  if tsize == 8 then
    local footer = data:match("^\n([^\n]*)\n", pos)
    if not footer then return bad("missing POSIX TZ footer (the file is cut short?)") end
    if footer ~= "" then
      local r = parse_posix(footer)
      if not r then return bad(("unreadable POSIX TZ footer %q"):format(footer)) end
      if r.start then
        z.rule = r
      elseif z.n == 0 then
        z.off0, z.dst0, z.abbr0 = r.std_off, false, r.std_abbr
      end
      -- (a rule without daylight time after transitions: the last type stays, as RFC 8536
      -- requires the footer to agree with it)
    end
  end
  if z.n == 0 and not z.rule then
    z.fixed, z.fixed_abbr = z.off0, z.abbr0
  end
  return setmetatable(z, Zone)
end
M._parse_tzif = parse_tzif

local cache = { UTC = M.utc }

local NAME_HELP = 'expected an IANA name such as "Europe/Paris", "UTC" or an offset such as "+05:30"'

-- valid_name(name) -> true when name can only address a file under the zone directory
local function valid_name(name)
  if #name == 0 or #name > 255 then return false end
  for part in (name .. "/"):gmatch("([^/]*)/") do
    if not part:match("^[A-Za-z0-9_+%-]+$") then return false end
  end
  return true
end

-- load(name) -> zone | nil, message. name: an IANA zone name (a file under M.dir), "UTC", or
-- a fixed offset "+HH:MM", "-HHMM", "+HH". Zones are cached for the life of the process.
function M.load(name)
  if type(name) ~= "string" then
    error(("bad argument #1 to 'load' (zone name expected, got %s)"):format(type(name)), 2)
  end
  local z = cache[name]
  if z then return z end
  local sign, hh, mm = name:match("^([+-])(%d%d):?(%d%d)$")
  if not sign then
    sign, hh = name:match("^([+-])(%d%d)$")
    mm = "00"
  end
  if sign then
    local h, m = tonumber(hh), tonumber(mm)
    if h > 23 or m > 59 then
      return nil, ("invalid UTC offset %q: expected -23:59 to +23:59"):format(name)
    end
    local off = (h * 3600 + m * 60) * (sign == "-" and -1 or 1)
    z = M.fixed(off, fmt_offset(off))
    cache[name] = z
    return z
  end
  if not valid_name(name) then
    return nil, ("invalid time zone name %q: %s"):format(name, NAME_HELP)
  end
  local path = M.dir .. "/" .. name
  local f, err = io.open(path, "rb")
  if not f then
    if err and err:find("No such file", 1, true) then
      return nil, ("unknown time zone %q (no such zone in %s)"):format(name, M.dir)
    end
    return nil, ("time zone %q: %s"):format(name, err)
  end
  local data, rerr = f:read("a")
  f:close()
  if not data then
    -- a directory such as "Europe" opens but does not read
    return nil, ("unknown time zone %q (%s is not a zone file)"):format(name, path)
  end
  local zz, perr = parse_tzif(data, name)
  if not zz then return nil, perr or rerr end
  cache[name] = zz
  return zz
end

M.Zone = Zone
return M
