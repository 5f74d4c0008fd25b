-- flow.schedule.interval: data intervals between consecutive fire times, logical dates,
-- catch-up and backfill ranges, the latest complete interval, start_date/end_date bounds,
-- manual runs, ISO 8601 in the zone, parsing times.
local t = require "tap"
local tz = require "flow.schedule.tz"
local interval = require "flow.schedule.interval"

local PARIS = assert(tz.load("Europe/Paris"))
local function at(s, z) return assert(interval.parse_time(s, z or PARIS)) end
local function iso(e, z) return interval.iso(e, z or PARIS) end
local function span(iv, z) return iso(iv.start, z) .. " " .. iso(iv["end"], z) end
local function spans(list, z)
  local out = {}
  for i, iv in ipairs(list) do out[i] = span(iv, z) end
  return out
end

local function paris_daily(extra)
  local spec = { schedule = "0 2 * * *", timezone = "Europe/Paris", start_date = "2026-01-01" }
  for k, v in pairs(extra or {}) do spec[k] = v end
  return assert(interval.timetable(spec))
end

t.test("a month of 0 2 * * * in Paris: intervals across the DST changes", function()
  local tt = paris_daily()
  local march = tt:between(at("2026-03-01T00:00:00"), at("2026-03-31T23:59:59"))
  t.eq(#march, 31, "31 intervals end in March")
  t.eq(span(march[1]), "2026-02-28T02:00:00+01:00 2026-03-01T02:00:00+01:00", "the first")
  t.eq(span(march[29]), "2026-03-28T02:00:00+01:00 2026-03-29T03:00:00+02:00",
    "the one ending on the spring-forward night ends at 03:00 CEST")
  t.eq(march[29]["end"] - march[29].start, 86400, "  and lasts 24 h")
  t.eq(span(march[30]), "2026-03-29T03:00:00+02:00 2026-03-30T02:00:00+02:00", "the next")
  t.eq(march[30]["end"] - march[30].start, 82800, "  23 h")
  local ok = true
  for i = 2, #march do ok = ok and march[i].start == march[i - 1]["end"] end
  t.ok(ok, "each interval starts where the previous one ended")
  local oct = tt:between(at("2026-10-01T00:00:00"), at("2026-11-01T00:00:00"))
  t.eq(#oct, 31, "31 in October")
  t.eq(span(oct[25]), "2026-10-24T02:00:00+02:00 2026-10-25T02:00:00+02:00", "fall back day")
  t.eq(span(oct[26]), "2026-10-25T02:00:00+02:00 2026-10-26T02:00:00+01:00", "the 25-hour one")
  t.eq(oct[26]["end"] - oct[26].start, 90000, "  25 h")
end)

t.test("logical date and the run's context", function()
  local tt = paris_daily()
  local iv = tt:latest(at("2026-03-29T03:00:00"))
  local c = tt:context(iv)
  t.eq(c.logical_date, "2026-03-28T02:00:00+01:00", "the logical date is the start")
  t.eq(c.logical_date_epoch, at("2026-03-28T02:00:00"), "also as epoch seconds")
  t.eq(c.data_interval, { start = "2026-03-28T02:00:00+01:00", ["end"] = "2026-03-29T03:00:00+02:00",
    start_epoch = at("2026-03-28T01:00:00Z"), end_epoch = at("2026-03-29T01:00:00Z") },
    "data_interval: ISO strings and epochs")
  t.eq({ c.data_interval_start, c.data_interval_end, c.timezone, c.manual },
    { "2026-03-28T02:00:00+01:00", "2026-03-29T03:00:00+02:00", "Europe/Paris", false },
    "Airflow's names too")
end)

t.test("catch-up after three days down, with catchup on and off", function()
  local tt = paris_daily()
  local last_end, now = at("2026-03-10T02:00:00"), at("2026-03-13T12:00:00")
  local due, more = tt:due(now, last_end, true)
  t.eq(spans(due), {
    "2026-03-10T02:00:00+01:00 2026-03-11T02:00:00+01:00",
    "2026-03-11T02:00:00+01:00 2026-03-12T02:00:00+01:00",
    "2026-03-12T02:00:00+01:00 2026-03-13T02:00:00+01:00" }, "catchup: every missed, oldest first")
  t.eq(more, false, "  none held back")
  due, more = tt:due(now, last_end, true, 2)
  t.eq({ #due, more }, { 2, true }, "max holds the rest back")
  due = tt:due(now, last_end, false)
  t.eq(spans(due), { "2026-03-12T02:00:00+01:00 2026-03-13T02:00:00+01:00" },
    "no catchup: only the latest")
  t.eq(#tt:due(now, at("2026-03-13T02:00:00"), true), 0, "catchup: nothing when up to date")
  t.eq(#tt:due(now, at("2026-03-13T02:00:00"), false), 0, "no catchup: nothing either")
  due = tt:due(now, nil, true)
  t.eq(#due, 71, "catchup from start_date: Jan 2 .. Mar 13 (30 + 28 + 13)")
  t.eq(span(due[1]), "2026-01-01T02:00:00+01:00 2026-01-02T02:00:00+01:00", "  the first")
  t.eq(#tt:due(now, nil, false), 1, "a first run without catchup: the latest")
  t.eq(#tt:due(at("2026-03-13T02:00:00"), last_end, true), 3, "an end equal to now is due")
end)

t.test("start_date and end_date", function()
  local tt = paris_daily({ start_date = "2026-01-01T10:00:00" })
  t.eq(span(tt:first()), "2026-01-02T02:00:00+01:00 2026-01-03T02:00:00+01:00",
    "the first interval starts at the first fire time after start_date")
  t.eq(tt:latest(at("2026-01-03T01:59:59")), nil, "none complete before its end")
  t.eq(span(tt:latest(at("2026-01-03T02:00:00"))), span(tt:first()), "complete at its end")
  t.eq(span(tt:upcoming(at("2025-06-01T00:00:00"))), span(tt:first()), "upcoming: the first")
  t.eq(#tt:between(at("2025-01-01T00:00:00"), at("2026-01-03T02:00:00")), 1,
    "between starts at start_date")
  tt = paris_daily({ end_date = "2026-01-05" })
  local all = tt:between(at("2025-01-01T00:00:00"), at("2026-06-01T00:00:00"))
  t.eq(#all, 4, "end_date: intervals starting on or before it")
  t.eq(span(all[4]), "2026-01-04T02:00:00+01:00 2026-01-05T02:00:00+01:00",
    "the last one ends after end_date, as in Airflow")
  t.eq(span(tt:latest(at("2026-06-01T00:00:00"))), span(all[4]), "latest stops there")
  t.eq(tt:upcoming(at("2026-01-05T02:00:00")), nil, "nothing upcoming after it")
  t.eq(tt:following(all[4]), nil, "nothing follows")
  t.eq(span(tt:following(all[1])), span(all[2]), "following")
  local unb = assert(interval.timetable { schedule = "@daily" })
  t.eq(unb:first(), nil, "no start_date: no first interval")
  t.eq(span(unb:latest(at("2026-01-01T12:00:00Z")), tz.utc),
    "2025-12-31T00:00:00+00:00 2026-01-01T00:00:00+00:00", "but intervals all the same (UTC)")
end)

t.test("manual runs", function()
  local tt = paris_daily()
  local m = tt:manual(at("2026-03-13T12:34:56.7"))
  t.eq(iso(m.logical_date), "2026-03-13T12:34:56+01:00", "logical date: the start, whole seconds")
  t.eq(span(m), "2026-03-12T02:00:00+01:00 2026-03-13T02:00:00+01:00",
    "data interval: the latest complete one")
  t.eq(tt:context(m).manual, true, "marked manual")
  t.eq(span(tt:manual(at("2026-03-13T02:00:00"))),
    "2026-03-12T02:00:00+01:00 2026-03-13T02:00:00+01:00", "started at a fire time")
  t.eq(span(tt:manual(at("2025-06-01T12:00:00"))),
    "2025-05-31T02:00:00+02:00 2025-06-01T02:00:00+02:00", "not bounded by start_date")
end)

t.test("interval schedules", function()
  local U = tz.utc
  local tt = assert(interval.timetable { schedule = "6h", start_date = "2026-01-01T00:00:00Z" })
  t.eq(span(tt:first(), U), "2026-01-01T00:00:00+00:00 2026-01-01T06:00:00+00:00", "first")
  t.eq(spans(tt:between(at("2026-01-01T05:00:00Z"), at("2026-01-01T18:00:00Z")), U), {
    "2026-01-01T00:00:00+00:00 2026-01-01T06:00:00+00:00",
    "2026-01-01T06:00:00+00:00 2026-01-01T12:00:00+00:00",
    "2026-01-01T12:00:00+00:00 2026-01-01T18:00:00+00:00" }, "between")
  t.eq(span(tt:manual(at("2026-01-01T07:30:00Z")), U),
    "2026-01-01T01:30:00+00:00 2026-01-01T07:30:00+00:00", "manual: [at - 6h, at)")
  local _, err = interval.timetable { schedule = "6h" }
  t.like(err, "^start_date: an interval schedule", "an interval needs start_date")
end)

t.test("iso and parse_time", function()
  t.eq(interval.iso(0), "1970-01-01T00:00:00+00:00", "UTC is +00:00")
  t.eq(interval.iso(0.25), "1970-01-01T00:00:00.250+00:00", "milliseconds")
  t.eq(interval.iso(0, assert(tz.load("Asia/Kolkata"))), "1970-01-01T05:30:00+05:30", "Kolkata")
  t.eq(iso(at("2026-03-29")), "2026-03-29T00:00:00+01:00", "a date is local midnight")
  t.eq(iso(at("2026-03-29T02:30")), "2026-03-29T03:30:00+02:00",
    "a local time in the gap reads with the offset before it")
  t.eq(iso(at("2026-10-25T02:30:00")), "2026-10-25T02:30:00+02:00", "in the overlap: the first")
  t.eq(iso(at("2026-10-25 02:30:00+01:00")), "2026-10-25T02:30:00+01:00", "an offset chooses")
  t.eq(at("2026-03-29T01:00:00Z"), 1774746000, "Z")
  t.eq(at("2026-03-29T06:30:00+0530"), 1774746000, "+0530")
  t.eq(at("2026-03-29T01:00:00.5Z"), 1774746000.5, "fractions")
  t.eq(at(12345), 12345, "epochs pass through")
  for _, bad in ipairs { "2026-02-30", "2026-13-01", "yesterday", "2026-03-29T25:00",
    "2026-03-29T02:30+5", "2026-3-29", "2026-03-29T02" } do
    local v, err = interval.parse_time(bad, PARIS)
    t.ok(v == nil and err:find("bad time", 1, true), ("%q: %s"):format(bad, tostring(err)))
  end
end)

t.test("timetable errors", function()
  local cases = {
    { { schedule = "0 2 * * *", timezone = "Mars/Olympus" }, '^timezone: unknown time zone "Mars/Olympus"' },
    { { schedule = "0 2 * * *", timezone = "../etc/passwd" }, "^timezone: invalid time zone name" },
    { { schedule = "61 * * * *" }, "^schedule: minute: 61 is out of range 0%-59$" },
    { {}, "^schedule: missing" },
    { { schedule = "@daily", start_date = "soon" }, '^start_date: bad time "soon"' },
    { { schedule = "@daily", start_date = "2026-02-01", end_date = "2026-01-01" },
      "^end_date 2026%-01%-01T00:00:00%+00:00 is before start_date" },
  }
  for _, c in ipairs(cases) do
    local tt, err = interval.timetable(c[1])
    t.ok(tt == nil, "refused")
    t.like(err, c[2], "  " .. tostring(err))
  end
  t.raises(function() interval.timetable("0 2 * * *") end, "bad argument #1 to 'timetable'",
    "a string is misuse")
end)

t.done()
