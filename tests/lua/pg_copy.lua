-- pg: COPY FROM STDIN / TO STDOUT, errors and cancellation in the middle of a COPY.
local t = require "tap"
local pg = require "pg"
local flow = require "flow"

local ci = os.getenv("FLOWRUN_TEST_PG")
if not ci then
  error("FLOWRUN_TEST_PG is not set: start tests/servers/pg.sh (scripts/test.sh does)")
end

local c = pg.connect(ci)
local function reset()
  c:exec([[DROP TABLE IF EXISTS pg_copy_t;
    CREATE TABLE pg_copy_t (id int, s text, j jsonb, b bytea, f float8, ok bool)]])
end
local function count() return c:query("SELECT count(*) AS n FROM pg_copy_t")[1].n end

t.test("copy_from rows with awkward values, copy_to reads them back", function()
  reset()
  local rows = {
    { 1, "tab\there", { a = 1 }, pg.bytea("\0\1\255"), 1.5, true },
    { 2, "new\nline\r\\back", pg.null, pg.null, -0.25, false },
    { 3, "ünïcødé ☃", { list = { 1, 2 } }, pg.bytea(""), 1e100, pg.null },
    { 4, "", pg.null, pg.null, pg.null, true, n = 6 },
    { 5, "\\N", { x = "y" }, pg.bytea("\\"), 0.1, true },
  }
  t.eq(c:copy_from("COPY pg_copy_t (id, s, j, b, f, ok) FROM STDIN", rows), 5, "5 rows copied")
  local back = c:query("SELECT * FROM pg_copy_t ORDER BY id")
  t.eq(back[1].s, "tab\there"); t.eq(back[1].j, { a = 1 }); t.eq(back[1].b, "\0\1\255")
  t.eq(back[1].f, 1.5); t.eq(back[1].ok, true)
  t.eq(back[2].s, "new\nline\r\\back"); t.eq(back[2].j, pg.null); t.eq(back[2].b, pg.null)
  t.eq(back[3].s, "ünïcødé ☃"); t.eq(back[3].j, { list = { 1, 2 } }); t.eq(back[3].f, 1e100)
  t.eq(back[3].ok, pg.null)
  t.eq(back[4].s, "", "empty string is not NULL"); t.eq(back[4].f, pg.null)
  t.eq(back[5].s, "\\N", "the text \\N is not NULL"); t.eq(back[5].b, "\\")
  local lines = {}
  local n = c:copy_to("COPY (SELECT id, s FROM pg_copy_t ORDER BY id) TO STDOUT", function(line)
    lines[#lines + 1] = line
  end)
  t.eq(n, 5, "copy_to returns the row count")
  t.eq(lines[1], "1\ttab\\there\n", "raw text-format line")
  t.eq(pg.copy_fields(lines[2]), { "2", "new\nline\r\\back" }, "pg.copy_fields decodes a line")
  t.eq(pg.copy_fields("7\t\\N\t\n"), { "7", pg.null, "" })
end)

t.test("copy_from an iterator: 50,000 rows; CSV lines", function()
  reset()
  local i = 0
  local n = c:copy_from("COPY pg_copy_t (id, s) FROM STDIN", function()
    i = i + 1
    if i <= 50000 then return { i, "row " .. i } end
  end)
  t.eq(n, 50000); t.eq(count(), 50000)
  t.eq(c:query("SELECT sum(id) AS s FROM pg_copy_t")[1].s, 1250025000)
  reset()
  n = c:copy_from("COPY pg_copy_t (id, s) FROM STDIN (FORMAT csv)",
    { '1,"a, b"', '2,"say ""hi"""\n', "3," })
  t.eq(n, 3)
  local r = c:query("SELECT s FROM pg_copy_t ORDER BY id")
  t.eq({ r[1].s, r[2].s, r[3].s }, { "a, b", 'say "hi"', pg.null })
end)

t.test("copy_to many rows, CSV", function()
  local total, bytes = 0, 0
  local n = c:copy_to("COPY (SELECT g, md5(g::text) FROM generate_series(1, 100000) g) TO STDOUT",
    function(line) total = total + 1; bytes = bytes + #line end)
  t.eq(n, 100000); t.eq(total, 100000)
  t.ok(bytes > 3000000, "every line arrived")
  local csv = {}
  c:copy_to("COPY (SELECT 1 AS a, 'x,y' AS b) TO STDOUT (FORMAT csv, HEADER)", function(l)
    csv[#csv + 1] = l
  end)
  t.eq(csv, { "a,b\n", '1,"x,y"\n' })
end)

t.test("an error in the middle of copy_from stores nothing; the connection is usable", function()
  reset()
  local i = 0
  local err = t.raises(function()
    c:copy_from("COPY pg_copy_t (id) FROM STDIN", function()
      i = i + 1
      if i == 1000 then error("source failed") end
      return { i }
    end)
  end, "source failed")
  t.eq(count(), 0, "nothing stored")
  t.eq(c:status(), "ready")
  -- a server-side error (bad value)
  t.raises(function() c:copy_from("COPY pg_copy_t (id) FROM STDIN", { { 1 }, { "nope" } }) end,
    "pg.22P02")
  t.eq(count(), 0)
  -- wrong statements
  t.raises(function() c:copy_from("SELECT 1", { { 1 } }) end, "not a COPY statement")
  t.raises(function() c:copy_to("COPY pg_copy_t FROM STDIN", print) end, "TO STDOUT")
  t.raises(function() c:query("COPY pg_copy_t TO STDOUT") end, "pg.copy",
    "COPY through conn:query is refused")
  t.eq(c:query("SELECT 1 AS x")[1].x, 1, "still usable after each")
  c:exec("INSERT INTO pg_copy_t (id) SELECT generate_series(1, 10000)")
  t.raises(function()
    c:copy_to("COPY pg_copy_t TO STDOUT", function() error("sink failed") end)
  end, "sink failed")
  t.eq(c:query("SELECT 2 AS x")[1].x, 2, "usable after a failed copy_to")
  err = nil
end)

t.test("cancelling a task in the middle of a COPY leaves the connection usable", function()
  reset()
  local i = 0
  t.raises(function()
    flow.timeout(0.2, function()
      c:copy_from("COPY pg_copy_t (id) FROM STDIN", function()
        i = i + 1
        if i % 100 == 0 then flow.sleep(0.01) end
        return { i }
      end)
    end)
  end, "flow.timeout")
  t.ok(i > 100, "it was copying")
  t.eq(c:query("SELECT 1 AS x")[1].x, 1, "usable after a cancelled copy_from")
  t.eq(count(), 0, "nothing stored")
  t.raises(function()
    flow.timeout(0.2, function()
      c:copy_to("COPY (SELECT g FROM generate_series(1, 100000000) g) TO STDOUT",
        function() end)
    end)
  end, "flow.timeout")
  t.eq(c:query("SELECT 3 AS x")[1].x, 3, "usable after a cancelled copy_to")
end)

t.test("many tasks COPYing on one connection, cancelled at random moments", function()
  local seed = 1
  local function rnd(n) seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n end
  local hs = {}
  for i = 1, 100 do
    local to = rnd(40) / 1000
    hs[i] = flow.spawn(function()
      return pcall(flow.timeout, to, function()
        return c:copy_to("COPY (SELECT generate_series(1, 20000)) TO STDOUT", function() end)
      end)
    end)
    if i % 20 == 0 then flow.sleep(0.005) end
  end
  for _, h in ipairs(hs) do h:wait() end
  local ok, r = pcall(flow.timeout, 5, function() return c:query("SELECT 1 AS x")[1].x end)
  t.ok(ok and r == 1, "the connection is not left stuck in COPY mode: " .. tostring(r))
end)

c:close()
t.done()
