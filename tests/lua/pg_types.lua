-- pg: values both ways (every type the issue lists), NULLs, parameters never interpolated.
local t = require "tap"
local pg = require "pg"
local json = require "json"

local ci = os.getenv("FLOWRUN_TEST_PG")
if not ci then
  error("FLOWRUN_TEST_PG is not set: start tests/servers/pg.sh (scripts/test.sh does)")
end

local c = pg.connect(ci)
c:exec("SET TimeZone = 'UTC'")

local function one(sql, ...) return c:query(sql, ...)[1] end

t.test("integers: int2, int4, int8 exact, both ways", function()
  local r = one("SELECT 7::int2 a, (-2147483648)::int4 b, 9223372036854775807::int8 c, "
    .. "(-9223372036854775807 - 1)::int8 d, 4000000000::oid e")
  t.eq(r.a, 7); t.eq(math.type(r.a), "integer", "int2 is a Lua integer")
  t.eq(r.b, -2147483648)
  t.eq(r.c, math.maxinteger, "int8 max exact"); t.eq(math.type(r.c), "integer")
  t.eq(r.d, math.mininteger, "int8 min exact")
  t.eq(r.e, 4000000000, "oid")
  r = one("SELECT $1::int8 + 0 AS x, $2::int4 AS y, pg_typeof($1::int8)::text AS ty",
    9007199254740993, -5)
  t.eq(r.x, 9007199254740993, "int8 parameter beyond 2^53 survives"); t.eq(r.y, -5)
  t.eq(math.type(r.x), "integer")
end)

t.test("floats: float4, float8, infinities, NaN, both ways", function()
  local r = one("SELECT 1.5::float4 a, 0.1::float8 b, 'Infinity'::float8 c, '-Infinity'::float8 d,"
    .. " 'NaN'::float8 e, 1e300::float8 f")
  t.eq(r.a, 1.5); t.eq(math.type(r.a), "float")
  t.eq(r.b, 0.1, "float8 round-trips text exactly")
  t.eq(r.c, math.huge); t.eq(r.d, -math.huge); t.ok(r.e ~= r.e, "NaN"); t.eq(r.f, 1e300)
  r = one("SELECT $1::float8 a, $2::float8 b, $3::float8 c, $4::float8 = 0.1::float8 d",
    1 / 3, math.huge, 0 / 0, 0.1)
  t.eq(r.a, 1 / 3, "1/3 sent with full precision"); t.eq(r.b, math.huge); t.ok(r.c ~= r.c)
  t.eq(r.d, true)
end)

t.test("numeric is an exact string, both ways", function()
  local r = one("SELECT 12345678901234567890.123456789012::numeric a, 'NaN'::numeric b, 0.10::numeric c")
  t.eq(r.a, "12345678901234567890.123456789012"); t.eq(r.b, "NaN"); t.eq(r.c, "0.10")
  r = one("SELECT $1::numeric + 1 AS a, $2::numeric AS b", "99999999999999999999.5", 7)
  t.eq(r.a, "100000000000000000000.5", "numeric parameter from a string keeps every digit")
  t.eq(r.b, "7")
end)

t.test("numeric as numbers when asked", function()
  t.eq(c:numeric("number"), "string", "default mode is string")
  local r = one("SELECT 12.5::numeric a, 42::numeric b, '{1.5,2}'::numeric[] arr, "
    .. "'NaN'::numeric n, 123456789012345678901234::numeric big")
  t.eq(r.a, 12.5); t.eq(math.type(r.b), "integer"); t.eq(r.b, 42)
  t.eq(r.arr, { 1.5, 2 }); t.ok(r.n ~= r.n, "NaN")
  t.eq(math.type(r.big), "float", "too big for an integer: a float")
  t.eq(c:numeric("string"), "number")
  t.eq(one("SELECT 12.5::numeric a").a, "12.5", "back to exact strings")
end)

t.test("booleans both ways", function()
  local r = one("SELECT true a, false b, $1::bool c, $2::bool d, pg_typeof($1)::text e", true, false)
  t.eq(r.a, true); t.eq(r.b, false); t.eq(r.c, true); t.eq(r.d, false)
  t.eq(r.e, "boolean", "a Lua boolean is sent as bool")
  r = one("SELECT $1 AND true AS x", true)
  t.eq(r.x, true, "bool parameter needs no cast")
end)

t.test("NULL: pg.null in results; nil and pg.null as parameters", function()
  t.ok(pg.null == json.null, "pg.null is json.null")
  local r = one("SELECT NULL::int a, NULL::text b, NULL::jsonb c, $1::int IS NULL d, "
    .. "$2::text IS NULL e, $3::text f", nil, pg.null, "")
  t.ok(r.a == pg.null and r.b == pg.null and r.c == pg.null, "NULLs of every type are pg.null")
  t.eq(r.d, true, "nil parameter is NULL"); t.eq(r.e, true, "pg.null parameter is NULL")
  t.eq(r.f, "", "the empty string is not NULL")
  r = one("SELECT $1::int a, $2::int b, $3::int c", 1, nil, 3)
  t.eq({ r.a, r.b, r.c }, { 1, pg.null, 3 }, "a nil in the middle keeps later parameters in place")
end)

t.test("text: unicode, quotes, backslashes, long", function()
  local s = "héllo wörld — ☃ 𝄞 'quoted' \"double\" \\back\\ \t tab"
  t.eq(one("SELECT $1::text s", s).s, s)
  local long = ("x"):rep(1000000)
  t.eq(#one("SELECT $1::text s", long).s, 1000000, "a 1 MB text parameter and result")
  t.eq(one("SELECT 'abc'::varchar(5) a").a, "abc")
  t.eq(one("SELECT 'ab'::char(4) a").a, "ab  ")
end)

t.test("json and jsonb are tables both ways", function()
  local v = { a = { 1, 2, 3 }, b = "x", c = { d = true, e = json.null }, big = 9007199254740993 }
  local r = one("SELECT $1::jsonb j, $1::json k", v)
  t.eq(r.j, v, "jsonb parameter from a table, back as a table")
  t.eq(r.k, v, "json too")
  t.eq(math.type(r.j.big), "integer", "int64 inside JSON stays exact")
  r = one([[SELECT '{"x":[1,{"y":null}]}'::jsonb j, '[]'::json e, '"s"'::jsonb s, 'null'::jsonb n]])
  t.eq(r.j.x[2].y, json.null, "JSON null inside a document is json.null")
  t.eq(type(r.e), "table"); t.eq(#r.e, 0)
  t.eq(r.s, "s", "a JSON scalar")
  t.eq(r.n, json.null, "JSON null (not SQL NULL)")
  c:exec("DROP TABLE IF EXISTS pg_types_doc; CREATE TABLE pg_types_doc (id int, doc jsonb)")
  c:query("INSERT INTO pg_types_doc VALUES ($1, $2)", 1, { name = "n1", tags = { "a", "b" } })
  r = one("SELECT doc->>'name' AS name, doc->'tags'->>1 AS tag FROM pg_types_doc WHERE id = $1", 1)
  t.eq(r.name, "n1", "a table inserted into a jsonb column is queryable as JSON")
  t.eq(r.tag, "b")
end)

t.test("bytea both ways: every byte value", function()
  local all = {}
  for i = 0, 255 do all[#all + 1] = string.char(i) end
  all = table.concat(all)
  local r = one("SELECT $1::bytea b, length($1::bytea) n", pg.bytea(all))
  t.eq(r.b, all, "all 256 byte values round-trip through pg.bytea")
  t.eq(r.n, 256, "the server saw 256 bytes")
  r = one("SELECT $1::bytea b, octet_length($1::bytea) n", "a\0b\255")
  t.eq(r.b, "a\0b\255", "a string with NUL/invalid UTF-8 goes as bytea by itself")
  t.eq(r.n, 4)
  t.eq(one("SELECT '\\x00ff41'::bytea b").b, "\0\255A", "bytea result is the binary string")
  t.eq(one("SELECT ''::bytea b").b, "")
end)

t.test("strings that are not text: refused for text, sent as they are to bytea", function()
  c:exec("DROP TABLE IF EXISTS pg_types_bin; CREATE TABLE pg_types_bin (id int, s text, b bytea)")
  local latin1 = "caf\233" -- "café" in ISO 8859-1: not UTF-8
  local err = t.raises(function()
    c:query("INSERT INTO pg_types_bin (id, s) VALUES ($1, $2)", 1, latin1)
  end, "pg.22021", "not UTF-8 into a text column: an error, not bytea hex")
  t.like(err and err.message, "query parameter %$2 is not valid UTF%-8 text %(byte 0xe9 at offset 3%)",
    "the message names the parameter, the byte and where")
  t.like(err and err.message, "takes it as text", "and what the server wanted")
  t.eq(err and err.sqlstate, "22021"); t.eq(err and err.retryable, false)
  t.eq(c:query("SELECT count(*) AS n FROM pg_types_bin")[1].n, 0, "nothing stored")
  t.raises(function() c:query("INSERT INTO pg_types_bin (id, s) VALUES ($1, $2)", 2, latin1) end,
    "pg.22021", "the same statement again (types known): refused again")
  c:query("INSERT INTO pg_types_bin (id, s) VALUES ($1, $2)", 3, "café")
  t.eq(one("SELECT s FROM pg_types_bin WHERE id = 3").s, "café", "UTF-8 text still goes as text")
  err = t.raises(function() c:query("SELECT $1::text AS s", "a\0b") end, "pg.22021", "a NUL byte")
  t.like(err and err.message, "a NUL byte at offset 1", "says so")
  err = t.raises(function() c:query("SELECT $1::int4 + 1 AS x", "\255\255\255\255") end, "pg.22021",
    "four bytes for an int4 parameter are not taken as a binary int4")
  t.like(err and err.message, "takes it as int4")
  local blob = "\0\1\255\254 not utf8 \192\175"
  c:query("INSERT INTO pg_types_bin (id, b) VALUES ($1, $2)", 4, blob)
  c:query("INSERT INTO pg_types_bin (id, b) VALUES ($1, $2)", 5, blob .. "!")
  t.eq(one("SELECT b FROM pg_types_bin WHERE id = 4").b, blob, "raw bytes into a bytea column")
  t.eq(one([[SELECT count(*) AS n FROM pg_prepared_statements
    WHERE statement = 'INSERT INTO pg_types_bin (id, b) VALUES ($1, $2)']]).n, 1,
    "prepared at its first use, so its parameter types are asked once")
  t.eq(one("SELECT b FROM pg_types_bin WHERE id = 5").b, blob .. "!", "again, from the cache")
  c:exec("DISCARD ALL"); c:exec("SET TimeZone = 'UTC'")
  c:query("INSERT INTO pg_types_bin (id, b) VALUES ($1, $2)", 6, blob)
  t.eq(one("SELECT b FROM pg_types_bin WHERE id = 6").b, blob, "after DISCARD ALL: prepared again")
  t.raises(function() c:query("SELECT $1::bytea AS b, $2::int AS i", blob) end, "pg.08P01",
    "a parameter missing: still the server's own error")
  local old = c:statement_cache(0)
  t.raises(function() c:query("INSERT INTO pg_types_bin (id, s) VALUES ($1, $2)", 7, latin1) end,
    "pg.22021", "without the statement cache: refused too")
  c:query("INSERT INTO pg_types_bin (id, b) VALUES ($1, $2)", 8, blob)
  t.eq(one("SELECT b FROM pg_types_bin WHERE id = 8").b, blob, "and bytea accepted")
  c:statement_cache(old)
  local p = pg.connect(ci)
  p:pipeline(true)
  t.raises(function() p:query("SELECT $1::bytea AS b", blob) end, "pg.22021",
    "pipeline mode: refused at once (no Describe in a pipeline)")
  t.eq(p:query("SELECT $1::bytea AS b", pg.bytea(blob))[1].b, blob, "pg.bytea goes in a pipeline")
  p:close()
  t.eq(one("SELECT 1 AS one").one, 1, "the connection is fine after all this")
end)

t.test("dates and timestamps as ISO 8601", function()
  local r = one("SELECT '2024-02-29'::date d, '2024-02-29 13:14:15.123456'::timestamp ts, "
    .. "'2024-02-29 13:14:15+00'::timestamptz tz, '2024-02-29 13:14:15'::timestamp t0, "
    .. "'13:14:15'::time tm, 'infinity'::timestamp inf")
  t.eq(r.d, "2024-02-29")
  t.eq(r.ts, "2024-02-29T13:14:15.123456")
  t.eq(r.tz, "2024-02-29T13:14:15+00:00")
  t.eq(r.t0, "2024-02-29T13:14:15")
  t.eq(r.tm, "13:14:15")
  t.eq(r.inf, "infinity")
  c:exec("SET TimeZone = 'Asia/Kolkata'")
  t.eq(one("SELECT '2024-01-01 00:00:00+00'::timestamptz tz").tz, "2024-01-01T05:30:00+05:30",
    "offset with minutes")
  c:exec("SET TimeZone = 'UTC'")
  r = one("SELECT $1::timestamptz tz, $2::date d, $3::timestamp ts",
    "2024-06-01T10:00:00+02:00", "2024-06-01", "2024-06-01T10:00:00")
  t.eq(r.tz, "2024-06-01T08:00:00+00:00", "ISO 8601 parameters are accepted")
  t.eq(r.d, "2024-06-01"); t.eq(r.ts, "2024-06-01T10:00:00")
end)

t.test("arrays of these are Lua arrays", function()
  local r = one([[SELECT '{1,2,NULL,4}'::int4[] i, '{9223372036854775807}'::int8[] b,
    ARRAY['a,b', 'q"uote', 'back\slash', 'NULL', NULL, ''] s,
    '{{1,2},{3,4}}'::int[] m, '{t,f}'::bool[] bo, '{1.5,NaN}'::float8[] f,
    '{1.10,2}'::numeric[] n, ARRAY['{"a":1}'::jsonb, '[2]'::jsonb] j,
    ARRAY['\x0001'::bytea] by, ARRAY['2024-01-02 03:04:05'::timestamp] ts,
    '{}'::int[] e, '[0:1]={7,8}'::int[] lb, ARRAY['2024-01-02'::date] d]])
  t.eq(r.i, { 1, 2, pg.null, 4 }, "int4[] with a NULL")
  t.eq(r.b[1], math.maxinteger, "int8[] exact")
  t.eq(r.s, { "a,b", 'q"uote', "back\\slash", "NULL", pg.null, "" },
    "text[]: quoting, the string 'NULL' versus NULL, empty string")
  t.eq(r.m, { { 1, 2 }, { 3, 4 } }, "two dimensions nest")
  t.eq(r.bo, { true, false }); t.eq(r.f[1], 1.5); t.ok(r.f[2] ~= r.f[2])
  t.eq(r.n, { "1.10", "2" }, "numeric[] elements are exact strings")
  t.eq(r.j, { { a = 1 }, { 2 } }, "jsonb[] elements are tables")
  t.eq(r.by, { "\0\1" }, "bytea[]")
  t.eq(r.ts, { "2024-01-02T03:04:05" }, "timestamp[] elements ISO 8601")
  t.eq(r.d, { "2024-01-02" })
  t.eq(r.e, {}, "empty array"); t.eq(r.lb, { 7, 8 }, "explicit lower bound")
  r = one("SELECT $1::int[] a, $2::text[] b, 3 = ANY($1::int[]) has3, $3::int[] m",
    pg.array { 1, 2, 3 }, pg.array { 'x"y', "a,b", pg.null, "\\" }, pg.array { { 1, 2 }, { 3, 4 } })
  t.eq(r.a, { 1, 2, 3 }, "pg.array parameter"); t.eq(r.has3, true)
  t.eq(r.b, { 'x"y', "a,b", pg.null, "\\" }, "pg.array quotes strings")
  t.eq(r.m, { { 1, 2 }, { 3, 4 } })
end)

t.test("everything else comes as its text form", function()
  local r = one("SELECT 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid u, '1 day 02:00'::interval i, "
    .. "'10.0.0.1/8'::inet n, $1::uuid p", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
  t.eq(r.u, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"); t.eq(r.i, "1 day 02:00:00")
  t.eq(r.n, "10.0.0.1/8"); t.eq(r.p, r.u)
end)

t.test("rows: fields by name, columns, affected, command", function()
  c:exec("DROP TABLE IF EXISTS pg_types_t; CREATE TABLE pg_types_t (id serial PRIMARY KEY, name text, n int8)")
  local ins = c:query("INSERT INTO pg_types_t (name, n) VALUES ($1, $2), ($3, $4) RETURNING id",
    "a", 1, "b", 2)
  t.eq(ins.affected, 2, "INSERT affected"); t.eq(#ins, 2, "RETURNING rows"); t.eq(ins.command, "INSERT 0 2")
  local rows = c:query("SELECT id, name, n FROM pg_types_t ORDER BY id")
  t.eq(#rows, 2); t.eq(rows[2].name, "b"); t.eq(rows[2].n, 2)
  t.eq(rows.columns[1], { name = "id", type = "int4", oid = 23 })
  t.eq(rows.columns[2].type, "text"); t.eq(rows.columns[3].type, "int8")
  t.eq(rows.affected, 2, "SELECT row count")
  t.eq(c:query("UPDATE pg_types_t SET n = n + 1").affected, 2)
  t.eq(c:query("DELETE FROM pg_types_t WHERE name = $1", "a").affected, 1)
  local empty = c:query("SELECT * FROM pg_types_t WHERE false")
  t.eq(#empty, 0); t.eq(#empty.columns, 3, "columns even without rows")
  t.eq(c:exec("SELECT 1 AS a; SELECT 2 AS b")[1].b, 2, "exec returns the last statement's rows")
  t.eq(#c:exec(""), 0, "an empty statement")
  local many = c:query("SELECT g, g * 2 AS d FROM generate_series(1, 20000) g")
  t.eq(#many, 20000); t.eq(many[20000].d, 40000)
end)

t.test("injection attempts as parameters are stored as data", function()
  c:exec("DROP TABLE IF EXISTS pg_types_inj; CREATE TABLE pg_types_inj (v text)")
  local attacks = {
    "'); DROP TABLE pg_types_inj; --",
    "x' OR '1'='1",
    "$1", "\\'; SELECT pg_sleep(10); --", "1; DELETE FROM pg_types_inj",
    "Robert'); DROP TABLE students;--", "E'\\x27'", "%' --",
  }
  for _, a in ipairs(attacks) do c:query("INSERT INTO pg_types_inj (v) VALUES ($1)", a) end
  local rows = c:query("SELECT v FROM pg_types_inj ORDER BY v")
  t.eq(#rows, #attacks, "every attempt stored, nothing executed, table still there")
  local found = 0
  for _, a in ipairs(attacks) do
    if #c:query("SELECT 1 FROM pg_types_inj WHERE v = $1", a) == 1 then found = found + 1 end
  end
  t.eq(found, #attacks, "each stored byte for byte")
  t.eq(#c:query("SELECT 1 FROM pg_types_inj WHERE v = $1", "x' OR '1'='1' --"), 0,
    "an OR-always-true attempt matches nothing")
end)

t.test("misuse raises at once", function()
  t.raises(function() c:query("SELECT $1", function() end) end, "cannot send a function",
    "a function parameter")
  t.raises(function() c:query() end, "string expected", "no SQL")
  t.raises(function() pg.bytea(1) end, "string expected")
  local co = coroutine.wrap(function() return c:query("SELECT 1") end)
  t.raises(co, "cannot wait here", "a plain coroutine cannot wait")
  t.eq(one("SELECT 1 AS one").one, 1, "the connection still works")
end)

t.test("statement cache: DDL under a prepared statement and DISCARD ALL", function()
  c:exec("DROP TABLE IF EXISTS pg_types_sc; CREATE TABLE pg_types_sc (a int)")
  c:query("INSERT INTO pg_types_sc VALUES (1)")
  local function prepared(pattern)
    local n = 0
    for _, r in ipairs(c:query("SELECT statement FROM pg_prepared_statements")) do
      if r.statement:find(pattern, 1, true) then n = n + 1 end
    end
    return n
  end
  t.eq(#c:query("SELECT * FROM pg_types_sc").columns, 1)
  t.eq(prepared("SELECT * FROM pg_types_sc"), 0, "run once: not prepared (one round trip)")
  t.eq(#c:query("SELECT * FROM pg_types_sc").columns, 1)
  t.eq(prepared("SELECT * FROM pg_types_sc"), 1, "run twice: prepared on the server")
  c:query("SELECT * FROM pg_types_sc")
  t.eq(prepared("SELECT * FROM pg_types_sc"), 1, "and reused, not prepared again")
  c:exec("ALTER TABLE pg_types_sc ADD COLUMN b int DEFAULT 5")
  local r = c:query("SELECT * FROM pg_types_sc")
  t.eq(r[1].b, 5, "the changed table is re-prepared transparently")
  t.eq(c:query("SELECT * FROM pg_types_sc")[1].b, 5)
  c:exec("DISCARD ALL")
  c:exec("SET TimeZone = 'UTC'")
  t.eq(c:query("SELECT * FROM pg_types_sc")[1].a, 1, "statements dropped by DISCARD ALL re-prepare")
  c:query("SELECT * FROM pg_types_sc")
  t.eq(prepared("SELECT * FROM pg_types_sc"), 1, "and prepared again on its next use")
  c:exec("DEALLOCATE ALL")
  local old = c:statement_cache(2)
  t.eq(old, 256, "default cache size")
  c:query("SELECT 'hot' AS a"); c:query("SELECT 'hot' AS a")
  for i = 1, 5 do c:query("SELECT 'cold' AS a, " .. i .. " AS i") end
  c:query("SELECT 'hot' AS a")
  t.eq(prepared("'hot'"), 1, "a full cache evicts seen-once statements, not prepared ones")
  t.eq(prepared("'cold'"), 0, "one-off statements are never prepared")
  c:statement_cache(0)
  t.eq(c:query("SELECT $1::int x", 3)[1].x, 3, "without the cache")
  c:statement_cache(old)
end)

t.test("statement cache policy is lua/pg's: size and from which run a query is prepared", function()
  t.eq(pg.statement_cache, { size = 256, prepare_from = 2 }, "the default policy")
  local function prepared(pattern)
    local n = 0
    for _, r in ipairs(c:query("SELECT statement FROM pg_prepared_statements")) do
      if r.statement:find(pattern, 1, true) then n = n + 1 end
    end
    return n
  end
  c:exec("DEALLOCATE ALL")
  local size, from = c:statement_cache(10, 3)
  t.eq({ size, from }, { 256, 2 }, "conn:statement_cache returns the previous size and run")
  c:query("SELECT 'third' AS a"); c:query("SELECT 'third' AS a")
  t.eq(prepared("'third'"), 0, "prepare_from 3: not prepared after two runs")
  c:query("SELECT 'third' AS a")
  t.eq(prepared("'third'"), 1, "prepared at the third")
  c:statement_cache(10, 1)
  c:query("SELECT 'first' AS a")
  t.eq(prepared("'first'"), 1, "prepare_from 1: prepared at the first run")
  t.raises(function() c:statement_cache(10, 0) end, "expected 1", "prepare_from below 1 is misuse")
  c:statement_cache(256, 2)
  local raw = pg.core.connect(ci)
  t.eq(raw:statement_cache(), 0, "pg.core alone prepares nothing: the policy is not in C")
  raw:close()
  local saved = pg.statement_cache
  pg.statement_cache = { size = 7, prepare_from = 4 }
  local other = pg.connect(ci)
  t.eq({ other:statement_cache() }, { 7, 4 }, "pg.connect applies pg.statement_cache")
  other:close()
  pg.statement_cache = saved
end)

c:close()
t.raises(function() c:query("SELECT 1") end, "closed", "a closed connection refuses queries")
t.done()
