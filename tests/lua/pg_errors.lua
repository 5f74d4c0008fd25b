-- pg: error objects with SQLSTATE, connection errors, lost connections, no secrets.
local t = require "tap"
local pg = require "pg"
local flow = require "flow"

local ci = os.getenv("FLOWRUN_TEST_PG")
if not ci then
  error("FLOWRUN_TEST_PG is not set: start tests/servers/pg.sh (scripts/test.sh does)")
end
local host, port = os.getenv("FLOWRUN_TEST_PGHOST"), os.getenv("FLOWRUN_TEST_PGPORT")
local user, db = os.getenv("FLOWRUN_TEST_PGUSER"), os.getenv("FLOWRUN_TEST_PGDATABASE")
local password = os.getenv("FLOWRUN_TEST_PGPASSWORD")

local c = pg.connect(ci)

t.test("syntax error: code, sqlstate, message, position, severity", function()
  local err = t.raises(function() c:query("SELECT * FROM pg_errors_nosuch WHERE") end, "pg.42601")
  t.eq(getmetatable(err).__name, "flowrun.error", "an error object")
  t.eq(err.sqlstate, "42601"); t.eq(err.severity, "ERROR")
  t.like(err.message, "syntax error"); t.eq(math.type(err.position), "integer")
  t.eq(err.position, 37, "position points at the end of the statement")
  t.eq(err.retryable, false)
  t.like(tostring(err), "^pg%.42601: syntax error", "__tostring is code: message")
  t.ok(flow.is_error(err, "pg.42601"), "flow.is_error recognises it")
end)

t.test("constraint violation: detail, table, constraint", function()
  c:exec("DROP TABLE IF EXISTS pg_errors_u; CREATE TABLE pg_errors_u (id int PRIMARY KEY)")
  c:query("INSERT INTO pg_errors_u VALUES ($1)", 1)
  local err = t.raises(function() c:query("INSERT INTO pg_errors_u VALUES ($1)", 1) end, "pg.23505")
  t.like(err.message, "duplicate key value violates unique constraint")
  t.eq(err.detail, "Key (id)=(1) already exists.")
  t.eq(err.table, "pg_errors_u"); t.eq(err.constraint, "pg_errors_u_pkey")
  t.eq(c:query("SELECT count(*) AS n FROM pg_errors_u")[1].n, 1, "the connection works after it")
end)

t.test("RAISE with hint and detail; division by zero; bad input", function()
  local err = t.raises(function()
    c:exec([[DO $$ BEGIN RAISE EXCEPTION 'custom failure' USING DETAIL = 'the detail',
      HINT = 'the hint', ERRCODE = 'P0001'; END $$]])
  end, "pg.P0001")
  t.eq(err.message, "custom failure"); t.eq(err.detail, "the detail"); t.eq(err.hint, "the hint")
  t.raises(function() c:query("SELECT 1 / $1::int", 0) end, "pg.22012", "division by zero")
  t.raises(function() c:query("SELECT $1::int", "abc") end, "pg.22P02", "invalid input")
  err = t.raises(function() c:query("SELECT $1::int, $2::int", 1) end, "pg.08P01",
    "too few parameters is a protocol error from the server")
  t.eq(c:query("SELECT 2 AS two")[1].two, 2, "still usable")
end)

t.test("an error inside exec stops the rest of the statements", function()
  c:exec("DROP TABLE IF EXISTS pg_errors_m; CREATE TABLE pg_errors_m (x int)")
  t.raises(function()
    c:exec("INSERT INTO pg_errors_m VALUES (1); SELECT 1/0; INSERT INTO pg_errors_m VALUES (2)")
  end, "pg.22012")
  t.eq(c:query("SELECT count(*) AS n FROM pg_errors_m")[1].n, 0,
    "exec's statements run as one implicit transaction")
end)

t.test("wrong password: clear error, no password in it", function()
  local secret = "wrong-Secret-Pw-93xQ"
  local forms = {
    { host = host, port = port, user = user, password = secret, dbname = db },
    ("host=%s port=%s user=%s password=%s dbname=%s"):format(host, port, user, secret, db),
    ("postgresql://%s:%s@%s:%s/%s"):format(user, secret, host, port, db),
  }
  for i, form in ipairs(forms) do
    local err = t.raises(function() pg.connect(form) end, "pg.28P01", "form " .. i .. " fails")
    t.like(err and err.message, "password authentication failed for user", "says what failed")
    t.unlike(tostring(err), secret, "the password is not in the error")
    t.unlike(tostring(err and err.server), secret, "nor in its server field")
    t.eq(err and err.retryable, false, "not retryable")
  end
end)

t.test("an AWS database secret's table connects as it is", function()
  -- the shape Secrets Manager holds for RDS/DMS: username, a numeric port, engine, ids
  local secret = { username = user, password = password, host = host, port = tonumber(port),
    dbname = db, engine = "postgres", dbInstanceIdentifier = "source-db" }
  local conn = pg.connect(secret)
  t.eq(conn:query("SELECT current_user AS u")[1].u, user, "username is the user")
  conn:close()
  local pool = pg.pool { conninfo = secret, size = 1 }
  t.eq(pool:query("SELECT current_user AS u")[1].u, user, "a pool takes the secret's table too")
  pool:close()
  t.eq(pg.conninfo_table({ username = "u", database = "d", port = 5432, engine = "postgres" }),
    { user = "u", dbname = "d", port = "5432" }, "the translation")
  t.eq(pg.conninfo_table({ user = "a", username = "b" }), { user = "a" }, "libpq's own key wins")
end)

t.test("connection failures", function()
  local err = t.raises(function()
    pg.connect { host = host, port = port, user = user, password = password, dbname = "pg_errors_nodb" }
  end, "pg.3D000", "a missing database")
  t.like(err.message, "does not exist")
  err = t.raises(function() pg.connect("host=/nonexistent-socket-dir") end, "pg.08001", "no server")
  t.like(err and err.message, "No such file or directory Is the server running",
    "libpq's continuation lines folded into one line (log lines stay whole)")
  -- a port where nothing listens
  local s = io.popen("python3 -c 'import socket;s=socket.socket();"
    .. "s.bind((\"127.0.0.1\",0));print(s.getsockname()[1])'")
  local free = s:read("l"); s:close()
  err = t.raises(function() pg.connect(("host=127.0.0.1 port=%s connect_timeout=2"):format(free)) end,
    "pg.08001", "connection refused")
  t.eq(err.retryable, true, "refused is retryable")
  t.raises(function() pg.connect { host = host, bogus_option = "x" } end, "invalid connection option",
    "an unknown keyword")
  err = t.raises(function() pg.connect("host=x password=abc def=") end, "pg.08001", "bad syntax")
  t.unlike(tostring(err), "abc", "a conninfo with a password is not echoed")
  t.raises(function() pg.connect(42) end, "expected a conninfo", "wrong type")
end)

t.test("an invalid conninfo: libpq's reason kept, the password left out", function()
  local secret = "s3cr3t-Pw"
  local cases = {
    -- conninfo, what the message must say
    { "host=x bogus=1", 'invalid connection option "bogus"' },
    { "host=x password=" .. secret .. " bogus=1", 'invalid connection option "bogus"' },
    { "host=x PassWord = " .. secret .. "   zzz", 'invalid connection option "PassWord"' },
    { "host=x password='" .. secret .. " \\' q' zzz", 'missing "=" after "zzz"' },
    { "host=x password='" .. secret, "the password value is malformed" },
    { "host=x password=se cret", "the password value is malformed" },
    { "host=x sslpassword=" .. secret .. " dbname=d junk", 'missing "=" after "junk"' },
    { "postgresql://user@[::1", 'IPv6 host address in URI: "postgresql://user@%[::1"' },
    { "postgresql://user:" .. secret .. "@[::1", '"postgresql://user:%*%*%*@%[::1"' },
    { "postgres://user:" .. secret .. "@[::1", '"postgres://user:%*%*%*@%[::1"' },
    { "postgresql://h/db?password=" .. secret .. "&x", 'URI query parameter: "x"' },
    { "postgresql://h/db?PASS%77ORD=" .. secret .. "&bogus=1", 'invalid URI query parameter: "PASSwORD"' },
    { "postgresql://u:%zz" .. secret .. "@h/db", "the password value is malformed" },
  }
  for _, case in ipairs(cases) do
    local err = t.raises(function() pg.connect(case[1]) end, "pg.08001", "refused: " .. case[1]:gsub(secret, "<pw>"))
    t.like(err and err.message, "^invalid connection string: .*" .. case[2], "  says " .. case[2])
    t.unlike(tostring(err), "s3cr3t", "  without the password")
    t.unlike(tostring(err), "cret[^%-]", "  nor a piece of it")
    t.eq(err and err.retryable, false, "  not retryable")
  end
end)

t.test("a Unix socket connection", function()
  local sock = os.getenv("FLOWRUN_TEST_PG_SOCKET")
  t.ok(sock, "FLOWRUN_TEST_PG_SOCKET is set")
  local conn = pg.connect(sock)
  local r = conn:query("SELECT inet_client_addr() IS NULL AS unix")[1]
  t.eq(r.unix, true, "connected over the socket, not TCP")
  conn:close()
end)

t.test("host names are resolved without blocking the loop", function()
  local conn = pg.connect { host = "localhost", port = port, user = user, password = password, dbname = db }
  t.eq(conn:query("SELECT 1 AS x")[1].x, 1, "host=localhost connects")
  t.like(tostring(conn), "@localhost:", "the connection is described by its host name")
  t.eq(conn:query("SELECT application_name AS a FROM pg_stat_activity WHERE pid = pg_backend_pid()")[1].a,
    "flowrun", "application_name defaults to flowrun")
  conn:close()
  local err = t.raises(function() pg.connect("host=no-such-host.invalid port=5432") end, "pg.08001")
  t.like(err and err.message, "could not translate host name", "an unknown host name")
  t.raises(function()
    flow.timeout(0, function() return pg.connect { host = "localhost", port = port, user = user,
      password = password, dbname = db } end)
  end, "flow.timeout", "a connect cancelled while resolving or connecting")
end)

t.test("PG* environment variables are honoured through libpq", function()
  -- only the dbname comes from the conninfo; the rest from the environment of a child flowrun
  local script = os.tmpname()
  local f = io.open(script, "w")
  f:write([[local pg = require "pg"; local c = pg.connect("dbname=]] .. db .. [[")
    io.write(c:query("SELECT current_user AS u")[1].u); c:close()]])
  f:close()
  local flowrun = os.getenv("FLOWRUN") or "./flowrun"
  local cmd = ("PGHOST=%s PGPORT=%s PGUSER=%s PGPASSWORD=%s %s %s"):format(host, port, user,
    password, flowrun, script)
  local p = io.popen(cmd)
  local out = p:read("a"); p:close()
  os.remove(script)
  t.eq(out, user, "connected with PGHOST/PGPORT/PGUSER/PGPASSWORD")
end)

t.test(".pgpass and sslmode work as in psql", function()
  local passfile = os.tmpname()
  local f = io.open(passfile, "w")
  f:write(("localhost:%s:%s:%s:%s\n"):format(port, db, user, password))
  f:close()
  os.execute("chmod 600 " .. passfile)
  local script = os.tmpname()
  f = io.open(script, "w")
  f:write(([[local pg = require "pg"
    local c = pg.connect { host = "localhost", port = "%s", user = "%s", dbname = "%s" }
    io.write(c:query("SELECT current_user AS u")[1].u); c:close()]]):format(port, user, db))
  f:close()
  local flowrun = os.getenv("FLOWRUN") or "./flowrun"
  local p = io.popen(("PGPASSWORD= PGPASSFILE=%s %s %s 2>&1"):format(passfile, flowrun, script))
  local out = p:read("a"); p:close()
  os.remove(passfile); os.remove(script)
  t.eq(out, user, "the password came from the password file (matched by host name)")
  local err = t.raises(function()
    pg.connect { host = host, port = port, user = user, password = password, dbname = db,
      sslmode = "require" }
  end, "pg.08001", "sslmode=require against a server without TLS")
  t.like(err and err.message, "SSL", "says why")
  local conn = pg.connect { host = host, port = port, user = user, password = password,
    dbname = db, sslmode = "prefer" }
  t.eq(conn:query("SELECT 1 AS x")[1].x, 1, "sslmode=prefer falls back to plain TCP")
  conn:close()
end)

t.test("a lost connection is retryable and the connection says broken", function()
  local victim = pg.connect(ci)
  local pid = victim:backend_pid()
  c:query("SELECT pg_terminate_backend($1)", pid)
  flow.sleep(0.2)
  local err = t.raises(function() victim:query("SELECT 1") end, nil, "a query on it fails")
  t.ok(err and (err.code == "pg.08006" or err.code == "pg.57P01"), "code " .. tostring(err and err.code))
  t.eq(err and err.retryable, true, "retryable")
  t.eq(victim:status(), "broken")
  victim:close()
  t.eq(victim:status(), "closed")
  victim:close() -- idempotent
  -- a query running when the backend dies
  victim = pg.connect(ci)
  pid = victim:backend_pid()
  local h = flow.spawn(function() return victim:query("SELECT pg_sleep(5)") end)
  flow.sleep(0.2)
  c:query("SELECT pg_terminate_backend($1)", pid)
  local ok, e = pcall(h.wait, h)
  t.ok(not ok and e.retryable == true, "the running query fails retryable: " .. tostring(e))
  do
    local closing <close> = victim
  end
  t.eq(victim:status(), "closed", "__close closed it")
end)

c:close()
t.done()
