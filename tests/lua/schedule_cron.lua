-- flow.schedule.cron: the parser (every syntax element, every error) and next/prev on cases
-- checked by hand: DST changes of 2026 in Paris, New York, Lord Howe (30 minutes), Kolkata and
-- UTC; a time skipped by spring-forward, a time repeated by fall-back; month ends, leap days,
-- MON-FRI, the day-of-month/day-of-week OR rule, presets and intervals.
-- (17,000 generated cases against croniter + zoneinfo: tests/py/test_schedule_oracle.py.)
local t = require "tap"
local cron = require "flow.schedule.cron"
local tz = require "flow.schedule.tz"
local interval = require "flow.schedule.interval"

local function zone(name) return assert(tz.load(name)) end
local UTC, PARIS, NY = zone("UTC"), zone("Europe/Paris"), zone("America/New_York")
local LH, KOLKATA = zone("Australia/Lord_Howe"), zone("Asia/Kolkata")

local function at(s, z) return assert(interval.parse_time(s, z)) end

-- fires(expr, zone, from [, n [, backwards]]) -> the fire time after (before) `from`, a local
-- ISO time, as an ISO string; a list of the n next (previous) ones when n > 1
local function fires(expr, z, from, n, backwards)
  local s = assert(cron.parse(expr))
  local cur = at(from, z)
  local out = {}
  for i = 1, n or 1 do
    local nx, err = (backwards and s.prev or s.next)(s, cur, z)
    if not nx then return err end
    out[i] = interval.iso(nx, z)
    cur = nx
  end
  if (n or 1) == 1 then return out[1] end
  return out
end

-- the sets a field expands to, read back through matches_local on a known calendar
local function minutes(expr)
  local s = assert(cron.parse(expr .. " * * * *"))
  local out = {}
  for m = 0, 59 do if s:matches_local(2026, 1, 1, 0, m) then out[#out + 1] = m end end
  return table.concat(out, ",")
end

t.test("syntax: every element", function()
  t.eq(minutes("*"), minutes("0-59"), "* is the whole range")
  t.eq(minutes("5"), "5", "a number")
  t.eq(minutes("5,10,59"), "5,10,59", "a list")
  t.eq(minutes("10-13"), "10,11,12,13", "a range")
  t.eq(minutes("*/15"), "0,15,30,45", "*/n")
  t.eq(minutes("10-40/10"), "10,20,30,40", "a-b/n")
  t.eq(minutes("50/4"), "50,54,58", "a/n is a-59/n (croniter)")
  t.eq(minutes("*/90"), "0", "a step wider than the range")
  t.eq(minutes("1-3,7,*/20"), "0,1,2,3,7,20,40", "lists of ranges and steps")
  t.eq(minutes("05"), "5", "leading zeros")
  local s = assert(cron.parse("0 0 * JAN,mar-May *"))
  local months = {}
  for m = 1, 12 do if s:matches_local(2026, m, 1, 0, 0) then months[#months + 1] = m end end
  t.eq(table.concat(months, ","), "1,3,4,5", "month names, any case, in lists and ranges")
  local function days(expr)
    local d = assert(cron.parse("0 0 * * " .. expr))
    local out = {}
    -- 2026-03-01 is a Sunday
    for i = 1, 7 do if d:matches_local(2026, 3, i, 0, 0) then out[#out + 1] = i - 1 end end
    return table.concat(out, ",")
  end
  t.eq(days("MON-FRI"), "1,2,3,4,5", "MON-FRI")
  t.eq(days("7"), "0", "7 is Sunday")
  t.eq(days("0"), "0", "so is 0")
  t.eq(days("5-7"), "0,5,6", "5-7: Friday to Sunday")
  t.eq(days("FRI-SUN"), "0,5,6", "FRI-SUN wraps to 7")
  t.eq(days("sat,sun"), "0,6", "lower-case names")
  t.eq(days("*/2"), "0,2,4,6", "*/2 over 0-7")
  t.eq(days("MON/2"), "0,1,3,5", "MON/2 is 1-7/2: 7 is Sunday")
  t.eq(assert(cron.parse("  0   2 * *   *  ")).kind, "cron", "extra spaces")
end)

t.test("presets and intervals", function()
  local want = { ["@hourly"] = "0 * * * *", ["@daily"] = "0 0 * * *", ["@midnight"] = "0 0 * * *",
    ["@weekly"] = "0 0 * * 0", ["@monthly"] = "0 0 1 * *", ["@yearly"] = "0 0 1 1 *",
    ["@annually"] = "0 0 1 1 *" }
  for p, e in pairs(want) do
    t.eq(fires(p, UTC, "2026-02-27T10:30:00Z", 3), fires(e, UTC, "2026-02-27T10:30:00Z", 3),
      p .. " is " .. e)
  end
  t.eq(assert(cron.parse("@DAILY")).expr, "@DAILY", "presets in any case")
  t.eq(fires("@weekly", UTC, "2026-03-02T00:00:00Z"), "2026-03-08T00:00:00+00:00", "Sunday")
  local s = assert(cron.parse("6h", { start_date = at("2026-01-01T01:00:00Z") }))
  t.eq({ s.kind, s.every }, { "interval", 21600 }, "6h")
  t.eq(interval.iso(s:next(at("2026-01-01T01:00:00Z"))), "2026-01-01T07:00:00+00:00",
    "anchored at start_date")
  t.eq(interval.iso(s:next(at("2025-12-31T20:00:00Z"))), "2026-01-01T01:00:00+00:00",
    "before the anchor too")
  t.eq(interval.iso(s:prev(at("2026-01-01T07:00:00Z"))), "2026-01-01T01:00:00+00:00", "prev")
  t.eq(interval.iso(s:prev(at("2026-01-01T07:00:00.5Z"))), "2026-01-01T07:00:00+00:00",
    "strictly before a fractional instant")
  t.eq(assert(cron.parse("30m")).every, 1800, "30m")
  t.eq(assert(cron.parse("1d")).every, 86400, "1d")
  t.eq(assert(cron.parse("1h30m")).every, 5400, "1h30m")
  t.eq(assert(cron.parse(90)).every, 90, "a number of seconds")
  local d = assert(cron.parse("1d", { start_date = at("2026-03-28T02:00:00", PARIS) }))
  t.eq(interval.iso(d:next(at("2026-03-28T02:00:00", PARIS)), PARIS),
    "2026-03-29T03:00:00+02:00", "1d is 86,400 s: it moves an hour across a DST change")
  t.eq(interval.iso(assert(cron.parse("30m")):next(0)), "1970-01-01T00:30:00+00:00",
    "without start_date, counted from the epoch")
end)

t.test("errors: every one names the field and says why", function()
  local cases = {
    { "", "^empty schedule$" },
    { "* * *", "^expected 5 fields %(minute hour day%-of%-month month day%-of%-week%).*got 3 fields" },
    { "* * * * * *", "got 6 fields" },
    { "@fortnightly", '^unknown preset "@fortnightly"' },
    { "61 * * * *", "^minute: 61 is out of range 0%-59$" },
    { "0 24 * * *", "^hour: 24 is out of range 0%-23$" },
    { "0 0 0 * *", "^day%-of%-month: 0 is out of range 1%-31$" },
    { "0 0 32 * *", "^day%-of%-month: 32 is out of range 1%-31$" },
    { "0 0 * 13 *", "^month: 13 is out of range 1%-12$" },
    { "0 0 * 0 *", "^month: 0 is out of range 1%-12$" },
    { "0 0 * * 8", "^day%-of%-week: 8 is out of range 0%-7$" },
    { "99999999999999999999 * * * *", "^minute: 99999999999999999999 is out of range" },
    { "0 0 * FOO *", '^month: "FOO" is not a month %(1%-12 or JAN%-DEC%)$' },
    { "0 0 * * FUNDAY", '^day%-of%-week: "FUNDAY" is not a day of the week %(0%-7 or SUN%-SAT%)$' },
    { "0 0 * JAN-FOO *", '^month: "FOO" is not a month' },
    { "MON * * * *", '^minute: "MON" is not a number$' },
    { "x * * * *", '^minute: "x" is not a number$' },
    { "1,,2 * * * *", '^minute: empty element in list "1,,2"$' },
    { "1, * * * *", '^minute: empty element in list "1,"$' },
    { ",1 * * * *", '^minute: empty element in list ",1"$' },
    { "5- * * * *", '^minute: "5%-" is not a range %(a%-b%)$' },
    { "-5 * * * *", '^minute: "%-5" is not a range %(a%-b%)$' },
    { "10-5 * * * *", "^minute: range 10%-5 is backwards %(10 > 5%)$" },
    { "0 22-2 * * *", "^hour: range 22%-2 is backwards %(22 > 2%)$" },
    { "*/0 * * * *", '^minute: step 0 in "%*/0" must be at least 1$' },
    { "*/x * * * *", '^minute: step "x" in "%*/x" is not a number$' },
    { "*/ * * * *", '^minute: step "" in "%*/" is not a number$' },
    { "0 0 L * *", '^day%-of%-month: "L" is not supported' },
    { "0 0 15W * *", '^day%-of%-month: "15W" is not supported' },
    { "0 0 ? * *", '^day%-of%-month: "%?" is not supported' },
    { "0 0 * * 5#3", '^day%-of%-week: "5#3" is not supported' },
    { "0 0 * * 5L", '^day%-of%-week: "5L" is not supported' },
    { "H * * * *", '^minute: "H" is not supported' },
    { "0 0 30 2 *", "^day%-of%-month: 30 never occurs in February: the schedule would never fire$" },
    { "0 0 30,31 2 *", "^day%-of%-month: 30,31 never occur in February" },
    { "0 0 31 4,6,9,11 *", "^day%-of%-month: 31 never occurs in April, June, September, November" },
    { "0s", "^interval: 0s is not a whole number of seconds of at least 1$" },
    { "250ms", "^interval: 250ms is not a whole number" },
    { "6x", '^bad schedule "6x": expected 5 cron fields' },
    { "every day", "^expected 5 fields" },
  }
  for _, c in ipairs(cases) do
    local s, err = cron.parse(c[1])
    t.ok(s == nil, ("%q is refused"):format(c[1]))
    t.like(err, c[2], ("  with: %s"):format(tostring(err)))
  end
  t.ok(cron.parse("0 0 29 2 *"), "February 29 fires (in leap years)")
  t.ok(cron.parse("0 0 30 2 MON"), "30 February OR Mondays fires (the OR rule)")
  t.raises(function() cron.parse(nil) end, "bad argument #1 to 'parse'", "nil is misuse")
  t.raises(function() cron.parse({}) end, "bad argument #1 to 'parse'", "a table is misuse")
  local s = assert(cron.parse("0 * * * *"))
  t.raises(function() s:next("soon") end, "bad argument #1 to 'next'", "next wants a number")
  t.raises(function() s:next(0 / 0) end, "bad argument #1 to 'next'", "not NaN")
  t.raises(function() s:next(1e300) end, "years 1%-9999", "not beyond year 9999")
  t.raises(function() s:prev(-1e18) end, "years 1%-9999", "nor before year 1")
  t.eq(interval.iso(s:next(253402300000)), "10000-01-01T00:00:00+00:00", "the end of year 9999")
  t.raises(function() s:prev(0, "Europe/Paris") end, "bad argument #2 to 'prev'",
    "a zone object, not a name")
end)

t.test("0 2 * * * in Europe/Paris across both changes of 2026", function()
  t.eq(fires("0 2 * * *", PARIS, "2026-03-27T12:00:00", 4), {
    "2026-03-28T02:00:00+01:00",
    "2026-03-29T03:00:00+02:00", -- 02:00 does not exist: read with +01:00, it is 03:00 CEST
    "2026-03-30T02:00:00+02:00",
    "2026-03-31T02:00:00+02:00",
  }, "spring forward: the skipped 02:00 fires at 03:00 CEST")
  t.eq(fires("0 2 * * *", PARIS, "2026-03-31T02:00:00", 4, true), {
    "2026-03-30T02:00:00+02:00", "2026-03-29T03:00:00+02:00", "2026-03-28T02:00:00+01:00",
    "2026-03-27T02:00:00+01:00" }, "and back")
  t.eq(fires("0 2 * * *", PARIS, "2026-10-24T12:00:00", 3), {
    "2026-10-25T02:00:00+02:00", -- 02:00 occurs twice: the first only
    "2026-10-26T02:00:00+01:00",
    "2026-10-27T02:00:00+01:00",
  }, "fall back: 02:00 fires once, at its first occurrence")
  t.eq(fires("0 2 * * *", PARIS, "2026-10-26T02:00:00", 2, true), {
    "2026-10-25T02:00:00+02:00", "2026-10-24T02:00:00+02:00" }, "and back")
  t.eq(fires("0 2 * * *", PARIS, "2026-10-25T02:30:00+01:00"), "2026-10-26T02:00:00+01:00",
    "from inside the repeated hour: the next day")
  t.eq(fires("0 2 * * *", PARIS, "2026-10-25T02:30:00+01:00", 1, true),
    "2026-10-25T02:00:00+02:00", "and prev from there: the first occurrence")
end)

t.test("0 2 * * * in New York, Lord Howe (30-minute DST), Kolkata and UTC", function()
  t.eq(fires("0 2 * * *", NY, "2026-03-07T12:00:00", 3), {
    "2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00", "2026-03-10T02:00:00-04:00" },
    "New York, spring forward (2026-03-08)")
  t.eq(fires("0 2 * * *", NY, "2026-10-31T12:00:00", 2), {
    "2026-11-01T02:00:00-05:00", "2026-11-02T02:00:00-05:00" },
    "New York, fall back: 02:00 EST is after the repeated hour")
  t.eq(fires("0 2 * * *", LH, "2026-10-03T12:00:00", 2), {
    "2026-10-04T02:30:00+11:00", "2026-10-05T02:00:00+11:00" },
    "Lord Howe, 02:00 -> 02:30: the skipped 02:00 fires 30 minutes later")
  t.eq(fires("0 2 * * *", LH, "2026-04-04T12:00:00", 2), {
    "2026-04-05T02:00:00+10:30", "2026-04-06T02:00:00+10:30" },
    "Lord Howe, 02:00 -> 01:30: 02:00 occurs once")
  t.eq(fires("45 1 * * *", LH, "2026-04-04T12:00:00", 2), {
    "2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30" },
    "Lord Howe: 01:45 occurs twice, fires at the first")
  t.eq(fires("*/15 * * * *", LH, "2026-04-05T01:40:00+11:00", 4), {
    "2026-04-05T01:45:00+11:00", "2026-04-05T01:30:00+10:30", "2026-04-05T01:45:00+10:30",
    "2026-04-05T02:00:00+10:30" }, "Lord Howe: every 15 minutes of real time through the fold")
  t.eq(fires("0 2 * * *", KOLKATA, "2026-03-28T12:00:00", 2), {
    "2026-03-29T02:00:00+05:30", "2026-03-30T02:00:00+05:30" }, "Kolkata")
  t.eq(fires("0 2 * * *", UTC, "2026-03-29T02:00:00Z", 2), {
    "2026-03-30T02:00:00+00:00", "2026-03-31T02:00:00+00:00" }, "UTC, strictly after")
  t.eq(fires("0 2 * * *", UTC, "2026-03-29T02:00:00Z", 1, true), "2026-03-28T02:00:00+00:00",
    "UTC, strictly before")
  t.eq(interval.iso(assert(cron.parse("0 2 * * *")):next(at("2026-03-29T01:59:59.5Z"))),
    "2026-03-29T02:00:00+00:00", "a fractional instant")
end)

t.test("a time skipped by spring forward, a time repeated by fall back", function()
  t.eq(fires("30 2 * * *", PARIS, "2026-03-29T00:00:00", 2), {
    "2026-03-29T03:30:00+02:00", "2026-03-30T02:30:00+02:00" }, "30 2 * * * in Paris")
  t.eq(fires("30 2 * * *", NY, "2026-03-08T00:00:00", 1), "2026-03-08T03:30:00-04:00",
    "30 2 * * * in New York")
  t.eq(fires("30 2 * * *", PARIS, "2026-03-29T03:10:00", 1), "2026-03-29T03:30:00+02:00",
    "the shifted time, asked for after the change")
  t.eq(fires("15 2,3 * * *", PARIS, "2026-03-29T00:00:00", 3), {
    "2026-03-29T03:15:00+02:00", "2026-03-30T02:15:00+02:00", "2026-03-30T03:15:00+02:00" },
    "02:15 shifted onto 03:15 is one fire, not two")
  t.eq(fires("*/20 2 * * *", PARIS, "2026-03-29T00:00:00", 4), {
    "2026-03-29T03:00:00+02:00", "2026-03-29T03:20:00+02:00", "2026-03-29T03:40:00+02:00",
    "2026-03-30T02:00:00+02:00" }, "every skipped time fires, each shifted by the hour")
  t.eq(fires("*/30 * * * *", NY, "2026-03-08T01:10:00", 3), {
    "2026-03-08T01:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00" },
    "*/30: the shifted 02:00 and 02:30 land on 03:00 and 03:30")
  t.eq(fires("0 1 * * *", NY, "2026-10-31T12:00:00", 2), {
    "2026-11-01T01:00:00-04:00", "2026-11-02T01:00:00-05:00" },
    "0 1 * * * on New York's fall-back day: once")
  t.eq(fires("30 1 * * *", NY, "2026-11-01T01:10:00-05:00"), "2026-11-02T01:30:00-05:00",
    "from the second 01:10: the repeated 01:30 does not fire again")
  t.eq(fires("0 * * * *", NY, "2026-11-01T00:30:00", 3), {
    "2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00" },
    "0 * * * *: the repeated hour fires again (every hour of real time)")
  t.eq(fires("0 * * * *", NY, "2026-11-01T02:30:00", 3, true), {
    "2026-11-01T02:00:00-05:00", "2026-11-01T01:00:00-05:00", "2026-11-01T01:00:00-04:00" },
    "and back")
  t.eq(fires("*/30 * * * *", PARIS, "2026-10-25T02:40:00+02:00", 4), {
    "2026-10-25T02:00:00+01:00", "2026-10-25T02:30:00+01:00", "2026-10-25T03:00:00+01:00",
    "2026-10-25T03:30:00+01:00" }, "*/30 through Paris's fold")
  t.eq(fires("0 */2 * * *", PARIS, "2026-10-25T01:00:00", 3), {
    "2026-10-25T02:00:00+02:00", "2026-10-25T04:00:00+01:00", "2026-10-25T06:00:00+01:00" },
    "*/2 is not every hour: the repeated 02:00 does not fire again")
end)

t.test("month ends, leap days, MON-FRI, the OR rule", function()
  t.eq(fires("0 0 31 * *", UTC, "2026-01-31T00:00:00Z", 3), {
    "2026-03-31T00:00:00+00:00", "2026-05-31T00:00:00+00:00", "2026-07-31T00:00:00+00:00" },
    "the 31st skips short months")
  t.eq(fires("0 0 31 * *", UTC, "2026-05-31T00:00:00Z", 2, true), {
    "2026-03-31T00:00:00+00:00", "2026-01-31T00:00:00+00:00" }, "and back")
  t.eq(fires("0 0 30 * *", UTC, "2026-01-30T00:00:00Z"), "2026-03-30T00:00:00+00:00",
    "no February 30")
  t.eq(fires("0 0 28-31 * *", UTC, "2024-02-28T00:00:00Z", 2), {
    "2024-02-29T00:00:00+00:00", "2024-03-28T00:00:00+00:00" }, "28-31 in a leap February")
  t.eq(fires("59 23 31 12 *", UTC, "2026-06-01T00:00:00Z"), "2026-12-31T23:59:00+00:00",
    "the last minute of the year")
  t.eq(fires("0 0 29 2 *", UTC, "2026-01-01T00:00:00Z", 2), {
    "2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00" }, "leap days")
  t.eq(fires("0 0 29 2 *", UTC, "2026-01-01T00:00:00Z", 1, true), "2024-02-29T00:00:00+00:00",
    "the previous leap day")
  t.eq(fires("0 0 29 2 *", UTC, "2096-03-01T00:00:00Z"), "2104-02-29T00:00:00+00:00",
    "2100 is not a leap year: 8 years")
  t.eq(fires("0 0 29 2 *", UTC, "2104-01-01T00:00:00Z", 1, true), "2096-02-29T00:00:00+00:00",
    "and back over 2100")
  t.eq(fires("0 0 29 2 *", PARIS, "2026-01-01T00:00:00"), "2028-02-29T00:00:00+01:00",
    "in Paris")
  -- 2026-03-27 is a Friday
  t.eq(fires("0 9 * * MON-FRI", UTC, "2026-03-27T09:00:00Z", 2), {
    "2026-03-30T09:00:00+00:00", "2026-03-31T09:00:00+00:00" }, "MON-FRI skips the weekend")
  t.eq(fires("0 9 * * MON-FRI", UTC, "2026-03-30T09:00:00Z", 1, true),
    "2026-03-27T09:00:00+00:00", "and back")
  t.eq(fires("0 0 13 * FRI", UTC, "2026-04-09T00:00:00Z", 3), {
    "2026-04-10T00:00:00+00:00", "2026-04-13T00:00:00+00:00", "2026-04-17T00:00:00+00:00" },
    "13th OR Friday (April 13, 2026 is a Monday)")
  t.eq(fires("0 0 1-31 * MON", UTC, "2026-03-01T00:00:00Z", 2), {
    "2026-03-02T00:00:00+00:00", "2026-03-09T00:00:00+00:00" },
    "a day-of-month covering 1-31 is not restricted: Mondays only")
  t.eq(fires("0 0 */2 * MON", UTC, "2026-03-01T00:00:00Z", 3), {
    "2026-03-02T00:00:00+00:00", "2026-03-03T00:00:00+00:00", "2026-03-05T00:00:00+00:00" },
    "*/2 is restricted (croniter): odd days OR Mondays")
  t.eq(fires("0 0 * * 7", UTC, "2026-03-02T00:00:00Z"), "2026-03-08T00:00:00+00:00",
    "7 is Sunday")
  t.eq(fires("0 0 1 JAN *", UTC, "2026-01-01T00:00:00Z"), "2027-01-01T00:00:00+00:00",
    "yearly by name")
end)

t.test("far from the tables: 2040 and 1900", function()
  t.eq(fires("30 2 * * *", PARIS, "2040-03-24T12:00:00", 2), {
    "2040-03-25T03:30:00+02:00", "2040-03-26T02:30:00+02:00" }, "2040 spring (the footer rule)")
  t.eq(fires("0 0 1 1 *", PARIS, "1900-06-01T00:00:00"), "1901-01-01T00:00:00+00:09:21",
    "before standard time: Paris Mean Time, an offset in seconds (as Python prints it)")
end)

t.done()
