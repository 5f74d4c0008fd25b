-- pg — PostgreSQL from Lua tasks. The mechanism (libpq on the loop, type conversion) is C
-- (pg.core, runtime/pg.c); this module is the policy: transactions, LISTEN helpers, COPY,
-- the pool. Every call that talks to the server waits (the task yields; others run).
--
--   local pg = require "pg"
--   local conn = pg.connect(os.getenv("DATABASE_URL"))      -- raises pg.08001, pg.28P01 ...
--   local rows = conn:query("SELECT id, name FROM t WHERE id = $1", 42)
--   rows[1].name, rows.columns[1] --> {name="id", type="int4", oid=23}, rows.affected
--   conn:exec("CREATE TABLE a (x int); CREATE INDEX ON a (x)")  -- several statements, no $n
--   conn:transaction(function(c) c:query(...) end)            -- COMMIT, or ROLLBACK + re-raise
--   conn:listen("ch"); local n = conn:wait_notify(5)          -- {channel=, payload=, pid=} | nil
--   conn:copy_from("COPY t (a, b) FROM STDIN", rows_or_iterator) -> count
--   conn:copy_to("COPY t TO STDOUT", function(line) ... end) -> count
--   conn:close() (also <close> and __gc); conn:status() "ready"|"busy"|"broken"|"closed";
--   conn:transaction_status(), conn:backend_pid(), conn:parameter(name)
--   conn:numeric("number") numeric as Lua numbers; conn:statement_cache(0) no prepared
--   statements (PgBouncer in transaction mode; pg.statement_cache is the default policy);
--   conn:pipeline(true) libpq pipeline mode;
--   conn:cancel_timeout(s): a cancelled statement that has not stopped after s seconds
--   (default 30) gets its connection closed instead (pg.08006, retryable)
--   local pool = pg.pool { conninfo = "...", size = 8, on_connect = fn }
--   pool:query(sql, ...), pool:exec(sql), pool:transaction(fn), pool:with(fn),
--   pool:acquire() / pool:release(conn), pool:stats(), pool:close()
--
-- Results: int2/int4/int8/oid -> integers (int8 exact), float4/float8 -> numbers, numeric ->
-- exact strings, bool -> booleans, NULL -> pg.null, json/jsonb -> tables (json.null inside),
-- bytea -> binary strings, date/timestamp/timestamptz -> ISO 8601 strings, arrays -> Lua
-- arrays (nested for several dimensions), anything else -> its text form.
--
-- Parameters are sent apart from the SQL text ($1, $2 ...), like untyped literals: the server
-- infers each type from the statement; cast ($1::int8) where nothing tells it. nil and pg.null
-- are NULL, booleans are bool, numbers are sent exactly (integers as int64), tables as JSON,
-- pg.bytea(s) as bytea, pg.array(t) as a PostgreSQL array. A string that is not text
-- PostgreSQL can hold (not UTF-8, or with a NUL byte) goes as it is only to a parameter the
-- server says is bytea (the statement is prepared and described first); anywhere else it is
-- refused with pg.22021 naming the parameter, never stored as bytea's hex text. In pipeline
-- mode such a string must be given as pg.bytea(s).
--
-- Errors are error objects: code "pg.<SQLSTATE>", sqlstate, message, detail, hint, position,
-- severity (+ table, column, constraint, context, server); a lost connection is pg.08006,
-- retryable. Cancelling a task cancels its running statement on the server.
local core = require "pg.core"
local json = require "json"
local flow = require "flow"

local M = {}

M.null = core.null -- the same value as json.null
M.core = core

local methods = core.conn_methods

-- ---- values -----------------------------------------------------------------------------

local bytea_mt = core.bytea_mt()
bytea_mt.__name = "pg.bytea"
bytea_mt.__tostring = function(b) return ("pg.bytea(%d bytes)"):format(#b[1]) end

-- pg.bytea(s) -> a parameter sent as bytea, in binary, whatever the bytes are.
function M.bytea(s)
  if type(s) ~= "string" then
    error(("bad argument #1 to 'bytea' (string expected, got %s)"):format(type(s)), 2)
  end
  return setmetatable({ s }, bytea_mt)
end

local function array_elem(v, depth)
  if v == nil or v == M.null then return "NULL" end
  local t = type(v)
  if t == "boolean" then return v and "t" or "f" end
  if t == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    if v ~= v then return "NaN" end
    if v == math.huge then return "Infinity" end
    if v == -math.huge then return "-Infinity" end
    return ("%.17g"):format(v)
  end
  if t == "table" and getmetatable(v) == bytea_mt then
    v = "\\x" .. v[1]:gsub(".", function(ch) return ("%02x"):format(ch:byte()) end)
  elseif t == "table" then
    if depth > 32 then error("pg.array: nested too deep", 3) end
    local parts = {}
    for i = 1, #v do parts[i] = array_elem(v[i], depth + 1) end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif t ~= "string" then
    error(("pg.array: cannot send a %s"):format(t), 3)
  end
  return '"' .. v:gsub('[\\"]', "\\%0") .. '"'
end

-- pg.array(t) -> t as a PostgreSQL array literal ('{1,2,NULL}'), for = ANY($1) and array
-- columns. Nested tables are sub-arrays; pg.null elements are NULL.
function M.array(t)
  if type(t) ~= "table" then
    error(("bad argument #1 to 'array' (table expected, got %s)"):format(type(t)), 2)
  end
  return array_elem(t, 0)
end

-- pg.quote_ident(name) -> "name" quoted as an SQL identifier (for LISTEN, which takes none
-- of $1 parameters).
function M.quote_ident(name)
  if type(name) ~= "string" or name == "" or name:find("\0", 1, true) then
    error("pg: an identifier must be a non-empty string without NUL bytes", 2)
  end
  return '"' .. name:gsub('"', '""') .. '"'
end

-- ---- connections ------------------------------------------------------------------------

-- An AWS database secret (Secrets Manager, as RDS and DMS write them) spells some libpq
-- keywords its own way and carries keys libpq does not know.
local SECRET_RENAMED = { username = "user", database = "dbname" }
local SECRET_IGNORED = { engine = true, dbInstanceIdentifier = true, dbClusterIdentifier = true,
  masterarn = true }

-- pg.conninfo_table(t) -> a table of libpq keywords: t with an AWS database secret's keys
-- translated (username -> user, database -> dbname; engine and instance ids dropped) and
-- numbers as strings.
function M.conninfo_table(t)
  local out = {}
  for k, v in pairs(t) do
    local renamed = SECRET_RENAMED[k]
    -- libpq's own spelling wins when both are there
    if not SECRET_IGNORED[k] and not (renamed and t[renamed] ~= nil) then
      if type(v) == "number" then v = tostring(math.tointeger(v) or v) end
      out[renamed or k] = v
    end
  end
  return out
end

-- The statement cache's policy, applied to every connection pg.connect and pg.pool open (the
-- mechanism is pg.core's): each connection prepares at most `size` statements, a query from
-- its `prepare_from`-th run (the first run goes as a one-off unnamed statement: one round
-- trip; from the second, Parse once and Bind/Execute only ever after). A full cache evicts
-- statements not prepared yet, never prepared ones. conn:statement_cache(n, from) changes it
-- for one connection (0 behind PgBouncer in transaction mode).
M.statement_cache = { size = 256, prepare_from = 2 }

local function open(conninfo)
  if conninfo == nil then conninfo = "" end
  if type(conninfo) == "table" then conninfo = M.conninfo_table(conninfo) end
  local conn = core.connect(conninfo)
  conn:statement_cache(M.statement_cache.size, M.statement_cache.prepare_from)
  return conn
end

-- pg.connect(conninfo) -> conn. Waits. conninfo: "host=... dbname=..." (libpq key/value),
-- "postgresql://user@host/db", or a table of libpq keywords (an AWS database secret's table,
-- secrets.get_json(id), works as it is); PG* environment variables, .pgpass and sslmode
-- apply as in psql. Raises pg.08001 (retryable), pg.28P01 (wrong password), pg.3D000 (no such
-- database) ...; never with the password in the message.
function M.connect(conninfo)
  return open(conninfo)
end

local function is_error(err, code) return flow.is_error(err, code) end

local in_transaction = setmetatable({}, { __mode = "k" }) -- conn -> true inside transaction(fn)

-- conn:transaction(fn, ...) -> fn's results. BEGIN; COMMIT when fn returns; ROLLBACK when it
-- raises, then re-raises. fn gets (conn, ...). Nested use on one connection raises at once.
function methods:transaction(fn, ...)
  if type(fn) ~= "function" then
    error(("bad argument #1 to 'transaction' (function expected, got %s)"):format(type(fn)), 2)
  end
  -- "active" only means a statement is still running (e.g. a cancelled one draining): BEGIN
  -- waits behind it. A transaction(fn) in progress or a manual BEGIN is nesting.
  local st = self:transaction_status()
  if in_transaction[self] or st == "intrans" or st == "inerror" then
    error(("pg: conn:transaction called while this connection is already in a transaction "
      .. "(status %s); nested transactions are not supported: use SAVEPOINT inside, or "
      .. "another connection"):format(in_transaction[self] and "intrans" or st), 2)
  end
  in_transaction[self] = true
  local okb, errb = pcall(self.exec, self, "BEGIN")
  if not okb then
    in_transaction[self] = nil
    -- a BEGIN cancelled on our side may still have run on the server: a ROLLBACK queued
    -- behind it ends whatever it opened, so the connection (or the pool's next user) is not
    -- left inside a transaction
    flow.shield(function()
      local s = self:status()
      if s ~= "broken" and s ~= "closed" then pcall(self.exec, self, "ROLLBACK") end
    end)
    error(errb, 0)
  end
  local r = table.pack(pcall(fn, self, ...))
  in_transaction[self] = nil
  if r[1] then
    local ok, res = pcall(self.exec, self, "COMMIT")
    if ok and res.command == "ROLLBACK" then
      ok, res = false, flow.error("pg.25P02", "transaction rolled back: an error inside it was "
        .. "caught, so COMMIT rolled back", { sqlstate = "25P02", retryable = false })
    end
    if not ok then
      flow.shield(function()
        if self:status() ~= "broken" and self:status() ~= "closed"
          and self:transaction_status() ~= "idle" then
          pcall(self.exec, self, "ROLLBACK")
        end
      end)
      error(res, 0)
    end
    return table.unpack(r, 2, r.n)
  end
  -- the task may be cancelled: the rollback must still wait for the server
  flow.shield(function()
    local s = self:status()
    if s ~= "broken" and s ~= "closed" then pcall(self.exec, self, "ROLLBACK") end
  end)
  error(r[2], 0)
end

-- conn:listen(channel), conn:unlisten(channel): LISTEN / UNLISTEN (waits).
function methods:listen(channel)
  self:exec("LISTEN " .. M.quote_ident(channel))
end

function methods:unlisten(channel)
  self:exec("UNLISTEN " .. (channel == "*" and "*" or M.quote_ident(channel)))
end

-- conn:notify(channel, payload): pg_notify (waits).
function methods:notify(channel, payload)
  self:query("SELECT pg_notify($1, $2)", channel, payload or "")
end

-- ---- COPY -------------------------------------------------------------------------------

local escapes = { ["\\"] = "\\\\", ["\t"] = "\\t", ["\n"] = "\\n", ["\r"] = "\\r" }

local function copy_field(v)
  if v == nil or v == M.null then return "\\N" end
  local t = type(v)
  if t == "string" then return (v:gsub("[\\\t\n\r]", escapes)) end
  if t == "boolean" then return v and "t" or "f" end
  if t == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    return array_elem(v, 0)
  end
  if t == "table" and getmetatable(v) == bytea_mt then
    return "\\\\x" .. v[1]:gsub(".", function(ch) return ("%02x"):format(ch:byte()) end)
  end
  if t == "table" then return (json.encode(v):gsub("[\\\t\n\r]", escapes)) end
  error(("pg: copy_from cannot send a %s"):format(t), 4)
end

-- One row in COPY's text format: a string is sent as it is (a line, e.g. CSV with
-- FORMAT csv), a table is an array of values (row.n when it has nil holes).
local function copy_line(row)
  if type(row) == "string" then
    return row:sub(-1) == "\n" and row or row .. "\n"
  end
  if type(row) ~= "table" then error("pg: copy_from rows must be tables or strings", 3) end
  local n = row.n or #row
  local f = {}
  for i = 1, n do f[i] = copy_field(row[i]) end
  return table.concat(f, "\t") .. "\n"
end

-- conn:copy_from(sql, rows_or_iterator) -> number of rows copied. Waits. sql is a
-- "COPY t (cols) FROM STDIN" statement; rows is an array of rows or a function returning the
-- next row (nil at the end). On any error the COPY is ended with an error (nothing is
-- stored) and the error raised.
function methods:copy_from(sql, src)
  local next_row
  if type(src) == "table" then
    local i = 0
    next_row = function() i = i + 1; return src[i] end
  elseif type(src) == "function" then
    next_row = src
  else
    error(("bad argument #2 to 'copy_from' (rows table or iterator expected, got %s)")
      :format(type(src)), 2)
  end
  local mode, id = self:_copy_start(sql)
  if mode ~= "in" then
    self:_abort(id)
    error("pg: copy_from needs a COPY ... FROM STDIN statement", 2)
  end
  local ok, err = pcall(function()
    local buf, size = {}, 0
    for row in next_row do
      local line = copy_line(row)
      buf[#buf + 1] = line
      size = size + #line
      if size >= 65536 then
        self:_copy_put(table.concat(buf))
        buf, size = {}, 0
      end
    end
    if #buf > 0 then self:_copy_put(table.concat(buf)) end
  end)
  if not ok then
    self:_abort(id) -- ends the COPY with an error, without waiting
    error(err, 0)
  end
  return self:_copy_end()
end

-- conn:copy_to(sql, fn) -> number of rows. Waits. sql is a "COPY ... TO STDOUT" statement;
-- fn(line) is called with each row as COPY sends it (text format: tab-separated fields and a
-- newline; pg.copy_fields(line) splits it). If fn raises, the COPY is cancelled.
function methods:copy_to(sql, fn)
  if type(fn) ~= "function" then
    error(("bad argument #2 to 'copy_to' (function expected, got %s)"):format(type(fn)), 2)
  end
  local mode, id = self:_copy_start(sql)
  if mode ~= "out" then
    self:_abort(id)
    error("pg: copy_to needs a COPY ... TO STDOUT statement", 2)
  end
  local count
  local ok, err = pcall(function()
    while true do
      local lines, n = self:_copy_get()
      if lines == nil then count = n; return end
      if lines then
        for i = 1, #lines do fn(lines[i]) end
      end
    end
  end)
  if not ok then
    self:_abort(id)
    error(err, 0)
  end
  return count
end

local unescapes = { b = "\b", f = "\f", n = "\n", r = "\r", t = "\t", v = "\v", ["\\"] = "\\" }

-- pg.copy_fields(line) -> array of strings (pg.null for \N) of one text-format COPY line.
function M.copy_fields(line)
  line = line:gsub("\n$", "")
  local out = {}
  for field in (line .. "\t"):gmatch("([^\t]*)\t") do
    if field == "\\N" then
      out[#out + 1] = M.null
    else
      out[#out + 1] = field:gsub("\\(.)", function(c) return unescapes[c] or c end)
    end
  end
  return out
end

-- ---- the pool ---------------------------------------------------------------------------

local Pool = {}
Pool.__index = Pool
Pool.__name = "pg.pool"

-- pg.pool{conninfo = ..., size = N, on_connect = fn} -> pool. Connections are opened on
-- demand, at most `size`; a task that finds them all busy waits its turn (first come, first
-- served). Connections found broken (server restart, network) are closed and replaced.
-- on_connect(conn) runs on each new connection (settings: conn:numeric "number",
-- conn:exec "SET search_path ...", conn:statement_cache(0) behind PgBouncer ...).
function M.pool(opts)
  if type(opts) ~= "table" then
    error(("bad argument #1 to 'pool' (table expected, got %s)"):format(type(opts)), 2)
  end
  local size = opts.size or 10
  if math.type(size) ~= "integer" or size < 1 then
    error("pg.pool: size must be a positive integer", 2)
  end
  if opts.on_connect ~= nil and type(opts.on_connect) ~= "function" then
    error("pg.pool: on_connect must be a function", 2)
  end
  return setmetatable({
    on_connect = opts.on_connect,
    conninfo = opts.conninfo or "",
    size = size,
    idle = {},
    open = 0,
    waiters = {},
    whead = 1,
    wtail = 0,
    closed = false,
  }, Pool)
end

local function usable(c)
  local s = c:status()
  return s == "ready" or s == "busy"
end

local function wake_one(self, conn)
  while self.whead <= self.wtail do
    local e = self.waiters[self.whead]
    self.waiters[self.whead] = nil
    self.whead = self.whead + 1
    if not e.gone then
      e.conn = conn
      e.woken = true
      e.w:wake()
      return true
    end
  end
  return false
end

-- pool:acquire() -> conn. Waits for a free connection (or opens one). Give it back with
-- pool:release(conn).
function Pool:acquire()
  while true do
    if self.closed then error("pg: the pool is closed", 2) end
    -- prefer a connection that is ready over one still finishing a cancelled statement
    local idle, pick = self.idle, #self.idle
    for i = #idle, 1, -1 do
      if idle[i]:status() == "ready" then pick = i; break end
    end
    local c = pick > 0 and table.remove(idle, pick) or nil
    if c then
      if usable(c) then return c end
      c:close()
      self.open = self.open - 1
    elseif self.open < self.size then
      self.open = self.open + 1
      local ok, conn = pcall(open, self.conninfo)
      if ok and self.on_connect then
        local hook_ok, err = pcall(self.on_connect, conn)
        if not hook_ok then conn:close(); ok, conn = false, err end
      end
      if ok then return conn end
      self.open = self.open - 1
      wake_one(self, nil) -- someone else may try again
      error(conn, 0)
    else
      local e = { w = core.waiter() }
      self.wtail = self.wtail + 1
      self.waiters[self.wtail] = e
      local ok, err = pcall(e.w.wait, e.w)
      if not ok then
        e.gone = true
        -- woken as it was cancelled: hand what it was given (a connection, or a free slot) on
        if e.conn then
          self:release(e.conn)
        elseif e.woken and not self.closed then
          wake_one(self, nil)
        end
        error(err, 0)
      end
      if e.conn then return e.conn end
      -- woken without a connection: a slot was freed, go round again
    end
  end
end

-- pool:release(conn): give a connection back (does not wait). Broken connections, and ones
-- left inside a transaction, are closed; their slot goes to the next waiting task.
function Pool:release(c)
  local keep = not self.closed and usable(c)
  if keep then
    local tx = c:transaction_status()
    -- "active": a cancelled statement still draining, which leaves no transaction open
    if tx ~= "idle" and tx ~= "active" then keep = false end
  end
  if not keep then
    c:close()
    self.open = self.open - 1
    if not self.closed then wake_one(self, nil) end
    return
  end
  if not wake_one(self, c) then self.idle[#self.idle + 1] = c end
end

-- pool:with(fn, ...) -> fn(conn, ...)'s results, the connection held for the duration.
function Pool:with(fn, ...)
  local c = self:acquire()
  local r = table.pack(pcall(fn, c, ...))
  self:release(c)
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

-- pool:query(sql, ...) -> rows, as conn:query on a pooled connection. Waits.
function Pool:query(sql, ...)
  local c = self:acquire()
  local ok, rows = pcall(c.query, c, sql, ...)
  self:release(c)
  if not ok then error(rows, 0) end
  return rows
end

function Pool:exec(sql)
  local c = self:acquire()
  local ok, rows = pcall(c.exec, c, sql)
  self:release(c)
  if not ok then error(rows, 0) end
  return rows
end

-- pool:transaction(fn, ...) -> conn:transaction(fn, ...) on a pooled connection.
function Pool:transaction(fn, ...)
  return self:with(methods.transaction, fn, ...)
end

-- pool:stats() -> {size=, open=, idle=, waiting=}
function Pool:stats()
  local waiting = 0
  for i = self.whead, self.wtail do
    if self.waiters[i] and not self.waiters[i].gone then waiting = waiting + 1 end
  end
  return { size = self.size, open = self.open, idle = #self.idle, waiting = waiting }
end

-- pool:close(): closes idle connections now and the others when released; waiting tasks get
-- an error.
function Pool:close()
  if self.closed then return end
  self.closed = true
  for _, c in ipairs(self.idle) do c:close() end
  self.open = self.open - #self.idle
  self.idle = {}
  while wake_one(self, nil) do end
end
Pool.__close = Pool.close
Pool.__gc = Pool.close

M.is_error = is_error

return M
