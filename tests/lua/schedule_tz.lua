-- flow.schedule.tz: loading zones (names checked, errors clear), to_local, from_local in gaps
-- and overlaps, instant, fixed offsets, the POSIX rule past the tables, damaged files.
-- (Every zone against Python's zoneinfo: tests/py/test_schedule_oracle.py.)
local t = require "tap"
local tz = require "flow.schedule.tz"

-- Instants written as UTC ISO strings, computed apart from the code under test.
local T = {
  paris_spring = 1774746000, -- 2026-03-29T01:00:00Z: Paris 02:00 CET -> 03:00 CEST
  paris_fall = 1792890000,   -- 2026-10-25T01:00:00Z: Paris 03:00 CEST -> 02:00 CET
  paris_2040_spring = 2216250000, -- 2040-03-25T01:00:00Z (after the table: the footer's rule)
  paris_2040_fall = 2234998800,   -- 2040-10-28T01:00:00Z
  lh_fall = 1775314800,      -- 2026-04-04T15:00:00Z: Lord Howe 02:00 +11 -> 01:30 +10:30
  lh_spring = 1791041400,    -- 2026-10-03T15:30:00Z: Lord Howe 02:00 +10:30 -> 02:30 +11
  ny_spring = 1772953200,    -- 2026-03-08T07:00:00Z: New York 02:00 EST -> 03:00 EDT
  ny_fall = 1793512800,      -- 2026-11-01T06:00:00Z: New York 02:00 EDT -> 01:00 EST
  y2026 = 1767225600,        -- 2026-01-01T00:00:00Z
}

local function hms(l)
  return ("%04d-%02d-%02d %02d:%02d:%02d %+d %s"):format(l.year, l.month, l.day, l.hour, l.min,
    l.sec, l.offset, l.abbr)
end

t.test("load: names, errors and path traversal", function()
  local paris = assert(tz.load("Europe/Paris"))
  t.eq(paris.name, "Europe/Paris", "a zone knows its name")
  t.ok(tz.load("Europe/Paris") == paris, "zones are cached")
  t.ok(assert(tz.load("UTC")) == tz.utc, "UTC is built in")
  local z, err = tz.load("Europe/Pariss")
  t.ok(z == nil, "an unknown zone is nil")
  t.like(err, '^unknown time zone "Europe/Pariss"', "and the message names it")
  for _, bad in ipairs { "../../etc/passwd", "/etc/passwd", "Europe/../../../etc/passwd",
    "Europe//Paris", "Europe/Paris/", "zone.tab", "", "Europe/Paris\0", "Europe/ Paris" } do
    z, err = tz.load(bad)
    t.ok(z == nil and err:find("invalid time zone name", 1, true), ("refused: %q"):format(bad))
  end
  z, err = tz.load("Europe")
  t.ok(z == nil and err:find("^unknown time zone \"Europe\""), "a directory is not a zone: " .. err)
  z, err = tz.load("leapseconds")
  t.like(err, "not a TZif file", "a file of the database that is not a zone")
  z, err = tz.load("right/UTC")
  t.like(err, "leap%-second", "zones counting leap seconds are refused")
  t.raises(function() tz.load(42) end, "bad argument #1 to 'load'", "a non-string is misuse")
end)

t.test("UTC and fixed offsets", function()
  local l = tz.utc:to_local(T.y2026)
  t.eq(hms(l), "2026-01-01 00:00:00 +0 UTC", "UTC")
  t.eq({ l.wday, l.yday, l.isdst }, { 5, 1, false }, "2026-01-01 was a Thursday (wday 5)")
  local k = assert(tz.load("+05:30"))
  t.eq(k:offset(T.y2026), 19800, "+05:30")
  t.eq(k.name, "+05:30", "named by its offset")
  t.eq(assert(tz.load("-0300")):offset(0), -10800, "-0300")
  t.eq(assert(tz.load("+14")):offset(0), 50400, "+14")
  local _, err = tz.load("+24:00")
  t.like(err, "invalid UTC offset", "+24:00 is refused")
  t.eq(assert(tz.load("Etc/GMT+5")):offset(T.y2026), -18000, "Etc/GMT+5 is UTC-5 (POSIX sign)")
  t.eq(k:from_local(2026, 1, 1, 5, 30, 0), { T.y2026 }, "from_local with a fixed offset")
  t.eq(tz.fixed(3600):to_local(0).hour, 1, "tz.fixed")
end)

t.test("to_local around Paris's 2026 changes and past the table (2040, footer rule)", function()
  local p = assert(tz.load("Europe/Paris"))
  t.eq(hms(p:to_local(T.paris_spring - 1)), "2026-03-29 01:59:59 +3600 CET", "before spring")
  t.eq(hms(p:to_local(T.paris_spring)), "2026-03-29 03:00:00 +7200 CEST", "after spring")
  local l = p:to_local(T.paris_spring)
  t.eq({ l.wday, l.yday, l.isdst }, { 1, 88, true }, "a Sunday, day 88, summer time")
  t.eq(hms(p:to_local(T.paris_fall - 1)), "2026-10-25 02:59:59 +7200 CEST", "before fall")
  t.eq(hms(p:to_local(T.paris_fall)), "2026-10-25 02:00:00 +3600 CET", "after fall")
  t.eq(hms(p:to_local(T.paris_2040_spring - 1)), "2040-03-25 01:59:59 +3600 CET", "2040 before")
  t.eq(hms(p:to_local(T.paris_2040_spring)), "2040-03-25 03:00:00 +7200 CEST", "2040 after")
  t.eq(hms(p:to_local(T.paris_2040_fall)), "2040-10-28 02:00:00 +3600 CET", "2040 fall")
  t.eq(hms(p:to_local(T.paris_spring + 0.9)), "2026-03-29 03:00:00 +7200 CEST",
    "fractions of a second are dropped")
  local k = assert(tz.load("Asia/Kolkata"))
  t.eq(hms(k:to_local(T.paris_spring)), "2026-03-29 06:30:00 +19800 IST", "Kolkata, +05:30")
  t.raises(function() p:to_local("now") end, "epoch seconds expected", "misuse raises")
  t.raises(function() p:to_local(1e300) end, "epoch seconds expected", "so does 1e300")
end)

t.test("from_local: one instant, none in a gap, two in an overlap", function()
  local p = assert(tz.load("Europe/Paris"))
  t.eq(p:from_local(2026, 3, 29, 1, 59, 59), { T.paris_spring - 1 }, "just before the gap")
  t.eq(p:from_local(2026, 3, 29, 2, 0, 0), {}, "02:00 does not exist")
  t.eq(p:from_local(2026, 3, 29, 2, 59, 59), {}, "02:59:59 does not exist")
  t.eq(p:from_local(2026, 3, 29, 3, 0, 0), { T.paris_spring }, "03:00 is the change")
  t.eq(p:from_local(2026, 10, 25, 2, 0, 0), { T.paris_fall - 3600, T.paris_fall },
    "02:00 occurs twice, earlier first")
  t.eq(p:from_local(2026, 10, 25, 2, 59, 59), { T.paris_fall - 1, T.paris_fall + 3599 },
    "02:59:59 too")
  t.eq(p:from_local(2026, 10, 25, 3, 0, 0), { T.paris_fall + 3600 }, "03:00 once")
  t.eq(p:from_local(2026, 10, 24, 26, 0, 0), { T.paris_fall - 3600, T.paris_fall },
    "fields are normalised (hour 26 of the 24th)")
  local lh = assert(tz.load("Australia/Lord_Howe"))
  t.eq(lh:from_local(2026, 10, 4, 2, 15, 0), {}, "Lord Howe: a 30-minute gap")
  t.eq(lh:from_local(2026, 10, 4, 2, 30, 0), { T.lh_spring }, "02:30 is the change")
  t.eq(lh:from_local(2026, 4, 5, 1, 45, 0), { T.lh_fall - 900, T.lh_fall + 900 },
    "01:45 twice, 30 minutes apart")
  t.eq(hms(lh:to_local(T.lh_fall)), "2026-04-05 01:30:00 +37800 +1030", "after the change")
  local ny = assert(tz.load("America/New_York"))
  t.eq(ny:from_local(2026, 3, 8, 2, 30, 0), {}, "New York's gap")
  t.eq(ny:from_local(2026, 11, 1, 1, 30, 0), { T.ny_fall - 1800, T.ny_fall + 1800 },
    "New York's overlap")
  t.raises(function() p:from_local(2026, 3.5, 1) end, "integer expected", "misuse raises")
end)

t.test("instant: PEP 495's fold=0 reading", function()
  local p = assert(tz.load("Europe/Paris"))
  t.eq(p:instant(2026, 3, 29, 2, 30, 0), T.paris_spring + 1800,
    "02:30 in the gap: read with +01:00, that is 03:30 CEST")
  t.eq(p:instant(2026, 10, 25, 2, 30, 0), T.paris_fall - 1800, "in the overlap: the first")
  t.eq(p:instant(2026, 7, 1), p:from_local(2026, 7, 1)[1], "otherwise the only one")
  local lh = assert(tz.load("Australia/Lord_Howe"))
  t.eq(lh:instant(2026, 10, 4, 2, 0, 0), T.lh_spring, "Lord Howe 02:00 -> 02:30 +11")
end)

t.test("damaged files give errors, not crashes", function()
  local dir = os.getenv("FLOWRUN_TEST_TMP") or "/tmp"
  dir = dir .. "/tzdir." .. math.random(1e9)
  assert(os.execute("mkdir -p " .. dir .. "/Bad"))
  local src = assert(io.open(tz.dir .. "/Europe/Paris", "rb")):read("a")
  local function put(name, data)
    local f = assert(io.open(dir .. "/Bad/" .. name, "wb"))
    f:write(data)
    f:close()
  end
  put("Hello", "hello, world")
  put("Header", src:sub(1, 30))
  put("Short", src:sub(1, 100))
  put("Cut", src:sub(1, #src - 200))
  put("NoFooter", src:sub(1, #src - 10))
  put("Footer", (src:gsub("\nCET%-1CEST[^\n]*\n$", "\nCET-1CEST,M3.5.0,\n")))
  local old = tz.dir
  tz.dir = dir
  local results = {}
  for _, n in ipairs { "Hello", "Header", "Short", "Cut", "NoFooter", "Footer" } do
    local z, err = tz.load("Bad/" .. n)
    results[n] = z and "loaded" or err
  end
  tz.dir = old
  os.execute("rm -rf " .. dir)
  t.like(results.Hello, "not a TZif file", "not TZif")
  t.like(results.Header, "truncated", "a header cut short")
  t.like(results.Short, "truncated", "data cut short")
  t.like(results.Cut, "truncated data block", "the 64-bit data cut short")
  t.like(results.NoFooter, "missing POSIX TZ footer", "the footer cut short")
  t.like(results.Footer, "unreadable POSIX TZ footer", "a rule cut short")
end)

t.done()
