-- flowrun.engine.store.pg — the shared run store: PostgreSQL (RDS and Aurora included), for runs
-- that outlive the machine that started them and for workers that share runs. It keeps the
-- file store's promise and interface (flowrun.engine.store, file.lua is the reference):
--
--   * a run's journal is the same records, rows of flowrun.events in seq order, so replay,
--     resume and `show` are shared with the file store (flowrun.engine.replay checks each);
--   * journal:commit() writes everything appended since the last commit and the run's summary
--     in ONE statement (one transaction: group commit), and returns only once it is committed;
--   * the summary (state, task counts, times) lives in flowrun.runs, kept by every commit and
--     indexed, so listing and paging through 10,000 runs never replays a journal.
--
-- Holding a run. A process that runs a run holds it: runs.owner, a lease (runs.lease_until,
-- by the server's clock) renewed by a heartbeat (and by every commit), and the epoch, a fencing
-- token bumped by every claim. Every write a holder makes (commit, log lines, heartbeat,
-- release) names its epoch and writes nothing when the epoch moved on. A holder that finds it
-- lost a run (a write refused, or no contact with the store for longer than the lease) marks
-- the journal lost: the `lost` hook (the engine: run:abandon) stops the run's tasks, later
-- commits raise store.lost, and guard(run_id) refuses the run's AWS calls. Before each AWS call
-- guard() checks the lease is not about to expire, renewing it first if it is, so a process
-- that was stopped (SIGSTOP, a frozen VM) longer than its lease learns it lost the run before
-- it calls AWS.
--
-- Submitted runs (submit) are queued with the workflow's source; workers claim them (claim:
-- FOR UPDATE SKIP LOCKED), and take over runs whose lease expired (adoptable ones: submitted
-- runs), resuming them as `flowrun resume` does.
--
-- Waiting for changes: NOTIFY on channel "flowrun" with payload "<kind> <run_id>" for queued,
-- released (handed back), cancel and finished, "<paused|unpaused> <workflow>" for a schedule
-- paused or unpaused; store:watch() listens. Task-level changes are not
-- notified (a NOTIFY serialises committing transactions); watchers poll run_state (seq).
--
-- The schema ("flowrun") is created and migrated by flowrun itself: numbered files in
-- pg/migrations/, each applied in one transaction under an advisory lock, recorded in
-- flowrun.schema_version; a schema newer than this flowrun knows is refused. The statements are
-- in pg/queries.sql, one per purpose, with the lock each takes.
--
-- Secrets: only public parameters are stored (the engine passes no secret ones); the connection
-- string's password never reaches a message (describe() shows the store without it; pg errors
-- are scrubbed by the pg module).
local flow = require "flow"
local core = require "flow.core"
local json = require "json"
local pg = require "pg"
local sys = require "flow.sys"
local replay = require "flowrun.engine.replay"

local M = {}

M.LOG_LIMIT = 1 << 20  -- bytes of log text kept per task attempt
M.LEASE = 30           -- seconds a holder's lease lasts; heartbeats renew it every LEASE / 3
M.MAX_TAKEOVERS = 5    -- a run whose holders keep dying is failed after this many takeovers
M.LOG_FLUSH = 0.2      -- seconds a log line may wait to be written with others
M.CHANNEL = "flowrun"

---- SQL: the statements and the migrations, read once from the files beside this module ----------

local here = (package.searchpath("flowrun.engine.store.pg", package.path) or ""):match("^(.*)%.lua$")

local function read_text(path)
  local f, err = io.open(path, "rb")
  if not f then error("flowrun: cannot read " .. tostring(err), 0) end
  local s = f:read("a")
  f:close()
  return s
end

-- queries.sql: blocks that start with "-- name: NAME"; comment lines are documentation.
local function parse_queries(text)
  local q, name, lines = {}, nil, {}
  local function close_block()
    if name then q[name] = table.concat(lines, "\n"):gsub("^%s+", ""):gsub("%s+$", "") end
    lines = {}
  end
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    local n = line:match("^%-%- name: ([%w_]+)%s*$")
    if n then
      close_block()
      name = n
    elseif not line:match("^%s*%-%-") then
      lines[#lines + 1] = line
    end
  end
  close_block()
  return q
end

local SQL = parse_queries(read_text(here .. "/queries.sql"))
M.SQL = SQL

-- migrations() -> {{version, name, sql}...} in order, from pg/migrations/NNN_name.sql.
function M.migrations()
  local dir = here .. "/migrations"
  local list = {}
  for _, f in ipairs(sys.readdir(dir) or {}) do
    local v, name = f:match("^(%d+)_([%w_]+)%.sql$")
    if v then
      list[#list + 1] = { version = tonumber(v), name = v .. "_" .. name,
        sql = read_text(dir .. "/" .. f) }
    end
  end
  table.sort(list, function(a, b) return a.version < b.version end)
  for i, m in ipairs(list) do
    if m.version ~= i then error("flowrun: migrations must be numbered 1, 2, 3 ... (" .. m.name .. ")", 0) end
  end
  return list
end

---- the connection string, shown without its password --------------------------------------------

-- redact(conninfo) -> the same string with any password removed: URLs
-- (postgresql://user:secret@host/db, ?password=...) and key/value strings (password=...).
function M.redact(ci)
  ci = tostring(ci or "")
  if ci:match("^postgres[%w]*://") then
    local scheme, rest = ci:match("^(postgres[%w]*://)(.*)$")
    local auth, hostpart = rest:match("^([^@/]*)@(.*)$")
    if auth then
      rest = (auth:match("^([^:]*)") or "") .. "@" .. hostpart
    end
    rest = rest:gsub("([?&])password=[^&]*", "%1password=***")
    return scheme .. rest
  end
  -- key/value: password = 'quoted value' or password=word
  ci = ci:gsub("password%s*=%s*'[^']*'", "password=***")
  ci = ci:gsub("password%s*=%s*[^%s']+", "password=***")
  return ci
end

-- describe(conninfo) -> "postgresql://user@host:port/db" for messages (no password, no query).
local function display(ci)
  local r = M.redact(ci)
  if r:match("^postgres[%w]*://") then return (r:gsub("%?.*$", "")) end
  local parts = {}
  for _, k in ipairs { "user", "host", "port", "dbname" } do
    local v = r:match(k .. "%s*=%s*'([^']*)'") or r:match(k .. "%s*=%s*([^%s']+)")
    if v then parts[k] = v end
  end
  return string.format("postgresql://%s%s%s/%s", parts.user and (parts.user .. "@") or "",
    parts.host or "", parts.port and (":" .. parts.port) or "", parts.dbname or "")
end
M.display = display

---- errors -----------------------------------------------------------------------------------------

-- The codes of failures that may go away by themselves: the connection (08xxx), the server
-- shutting down or starting (57P01-57P03), serialization and deadlocks.
local TRANSIENT = { ["pg.40001"] = true, ["pg.40P01"] = true, ["pg.57P01"] = true,
  ["pg.57P02"] = true, ["pg.57P03"] = true, ["pg.53300"] = true }
local function transient(err)
  if type(err) ~= "table" then return false end
  local code = tostring(err.code or "")
  return err.retryable == true or TRANSIENT[code] or code:match("^pg%.08") ~= nil
end
M.transient = transient

local function store_error(store, err)
  if flow.cancelled(err) then return err end
  local msg = type(err) == "table" and (err.message or err.code) or tostring(err)
  return flow.error("store.unavailable", string.format("the run store %s: %s", store.where,
    tostring(msg)), { retryable = transient(err), cause = type(err) == "table" and err.code or nil })
end

---- the store ----------------------------------------------------------------------------------------

local Store = {}
Store.__index = Store

-- open(conninfo, o) -> store. Nothing is connected until the first use, which also creates or
-- migrates the schema (o.migrate == false only checks it). o: lease (seconds), clock (the
-- engine's wall clock, flow.time by default), pool_size, owner (this process's name as a holder).
function M.open(conninfo, o)
  o = o or {}
  local lease = o.lease or M.LEASE
  return setmetatable({
    kind = "postgresql", conninfo = conninfo, where = display(conninfo),
    lease = lease, clock = o.clock or flow.time, pool_size = o.pool_size or 4,
    migrate_on_use = o.migrate ~= false,
    owner = o.owner or string.format("%s:%d", sys.hostname() or "?", sys.getpid()),
    held = {},          -- run_id -> journal this process holds
    watchers = {},      -- watcher -> true
    handback_on_signal = false,
  }, Store)
end

function Store:describe() return self.where end

-- The pool, created and the schema checked (or migrated) on first use, on the pool's first
-- connection (a command that reads one run opens one connection).
function Store:pool()
  if self.ready then return self.pool_ end
  if not self.pool_ then
    self.pool_ = pg.pool { conninfo = self.conninfo, size = self.pool_size }
  end
  if not self.opening then
    self.opening = flow.spawn(function()
      local ok, err = pcall(self.pool_.with, self.pool_, function(c)
        self:ensure_schema(self.migrate_on_use, c)
      end)
      if not ok then return nil, err end
      return true
    end)
  end
  local h = self.opening
  local ok, res, err = pcall(h.wait, h)
  if self.opening == h and (not ok or not res) then self.opening = nil end
  if not ok then error(res, 0) end
  if not res then
    if transient(err) or (type(err) == "table" and tostring(err.code):match("^pg%.28")) then
      err = store_error(self, err)
    end
    error(err, 0)
  end
  self.ready = true
  return self.pool_
end

-- q(name, ...) -> rows: one named statement on a pooled connection. Raises store.unavailable
-- (retryable when it may go away by itself) or the pg error of a statement the server refused.
function Store:q(name, ...)
  local sql = SQL[name] or error("flowrun: no statement " .. tostring(name), 2)
  local pool = self:pool()
  local ok, rows = pcall(pool.query, pool, sql, ...)
  if ok then return rows end
  if transient(rows) or (type(rows) == "table" and tostring(rows.code):match("^pg%.28")) then
    error(store_error(self, rows), 0)
  end
  error(rows, 0)
end

-- The schema: created, migrated, or checked. Migrations run on a connection of their own, each in
-- a transaction holding the advisory lock, the version re-read under it.
function Store:ensure_schema(migrate, conn)
  local own = conn == nil
  if own then
    local ok, c = pcall(pg.connect, self.conninfo)
    if not ok then error(store_error(self, c), 0) end
    conn = c
  end
  local function current(c)
    if not c:query(SQL.schema_exists)[1].present then return 0 end
    return c:query(SQL.schema_version)[1].version
  end
  local rok, rerr = pcall(function()
    local list = M.migrations()
    local v = current(conn)
    if v > #list then
      error(flow.error("store.schema", string.format("the run store %s has schema version %d, newer "
        .. "than this flowrun knows (%d): upgrade flowrun (flowrun -v) before using this store",
        self.where, v, #list), { retryable = false }), 0)
    end
    if v == #list then return end
    if not migrate then
      error(flow.error("store.schema", string.format("the run store %s has schema version %d; this "
        .. "flowrun needs %d: run flowrun store init", self.where, v, #list), { retryable = false }), 0)
    end
    for _, m in ipairs(list) do
      if m.version > v then
        conn:transaction(function(c)
          c:query(SQL.migration_lock)
          local now_v = current(c)
          if now_v > #list then
            error(flow.error("store.schema", string.format("the run store %s has schema version %d, "
              .. "newer than this flowrun knows (%d)", self.where, now_v, #list)), 0)
          end
          if now_v < m.version then
            c:exec(m.sql)
            c:query(SQL.record_migration, m.version, m.name)
          end
        end)
      end
    end
  end)
  if own then conn:close() end
  if not rok then
    if flow.is_error(rerr) and tostring(rerr.code):match("^store%.") then error(rerr, 0) end
    error(store_error(self, rerr), 0)
  end
end

-- init() -> from, to: creates or migrates the schema now (flowrun store init).
function Store:init()
  local list = M.migrations()
  local conn = pg.connect(self.conninfo)
  local from = conn:query(SQL.schema_exists)[1].present and conn:query(SQL.schema_version)[1].version or 0
  conn:close()
  self:ensure_schema(true)
  return from, #list
end

function Store:close()
  for _, j in pairs(self.held) do j:close() end
  self:stop_background()
  if self.pool_ then self.pool_:close() self.pool_ = nil end
  self.ready, self.opening = false, nil
end

---- the summary a commit keeps in flowrun.runs ---------------------------------------------------------

local Tally = {}
Tally.__index = Tally

-- A run's summary, kept up to date record by record (from a replayed run when resuming).
local function new_tally(prev)
  local t = setmetatable({ state = "running", total = 0, tasks = {}, n = {}, resumed = 0 }, Tally)
  if prev then
    t.started, t.resumed, t.last_t = prev.started, prev.resumed or 0, prev.last_t
    t.state, t.finished, t.exit, t.reason = prev.state, prev.finished, prev.exit, prev.reason
    if t.state == "interrupted" then t.state = "running" end
    for _, name in ipairs(prev.task_order or {}) do t:set(name, prev.tasks[name].state) end
  end
  return t
end

function Tally:set(name, state)
  local old = self.tasks[name]
  if old == state then return end
  if old then self.n[old] = self.n[old] - 1 else self.total = self.total + 1 end
  self.tasks[name] = state
  self.n[state] = (self.n[state] or 0) + 1
end

function Tally:apply(r)
  local ev = r.ev
  self.last_t = r.t
  if ev == "task_started" then self:set(r.task, "running")
  elseif ev == "task_succeeded" then self:set(r.task, "success")
  elseif ev == "task_failed" then self:set(r.task, r.state or "failed")
  elseif ev == "task_retry" then self:set(r.task, "up_for_retry")
  elseif ev == "task_skipped" then self:set(r.task, r.state)
  elseif ev == "run_started" then
    self.started, self.state = r.t, "running"
    for _, name in ipairs(r.tasks or {}) do self:set(name, "pending") end
  elseif ev == "run_resumed" then
    self.resumed = self.resumed + 1
    self.state, self.finished, self.exit, self.reason = "running", nil, nil, nil
    for name, s in pairs(self.tasks) do if s ~= "success" then self:set(name, "pending") end end
  elseif ev == "run_finished" then
    self.state, self.exit, self.reason, self.finished = r.state, r.exit, r.reason, r.t
  end
end

---- writing a run ------------------------------------------------------------------------------------

local Journal = {}
Journal.__index = Journal

local function lost_error(run_id, why)
  return flow.error("store.lost", string.format("run %s is no longer held by this process (%s): "
    .. "its tasks are stopped and nothing more is written or called for it", run_id, why),
    { retryable = false, run_id = run_id })
end
M.lost_error = lost_error

function Store:new_journal(run_id, epoch, seq, prev)
  local j = setmetatable({ store = self, run_id = run_id, epoch = epoch, seq = seq, buf = {}, n = 0,
    appended = 0, committed = 0,
    tally = new_tally(prev), clock = self.clock, commits = 0, syncs = 0, records = 0,
    lease_deadline = flow.now() + self.lease, logq = {}, logn = 0, log_bytes = {},
    hooks = {} }, Journal)
  self.held[run_id] = j
  self:start_background()
  return j
end

-- j:append(rec): buffers a record; sets rec.t when missing. Raises when the record cannot be
-- encoded (the engine turns that into a task failure). A lost journal forgets what it is given.
function Journal:append(rec)
  if not rec.t then rec.t = self.clock() end
  local line = json.encode(rec)
  if self.lost then return line end
  self.n = self.n + 1
  self.buf[self.n] = line
  self.appended = self.appended + 1
  self.tally:apply(rec)
  return line
end

-- Whose the run is now, after a commit that wrote nothing: "ours" when our commit is in (a retry
-- after a lost answer), else the reason we lost it.
function Journal:after_refusal(want_seq)
  local row = self.store:q("holder", self.run_id)[1]
  if not row then return "the run was deleted" end
  if row.epoch == self.epoch and row.seq == want_seq then return "ours" end
  if row.epoch ~= self.epoch then
    return string.format("claimed by %s with epoch %d; ours was %d",
      row.owner ~= pg.null and row.owner or "another holder", row.epoch, self.epoch)
  end
  return string.format("its journal is at record %d, this holder expected %d", row.seq, self.seq)
end

-- Writes what is buffered now (the records and the summary as they stand), retrying while the
-- store cannot be reached, until the lease would have expired. One at a time per journal (the
-- flight of commit()).
local function write_pending(self)
  local n = self.n
  if n == 0 then return end
  local lines = self.buf
  self.buf, self.n = {}, 0
  local payload = "[" .. table.concat(lines, ",", 1, n) .. "]"
  local t = self.tally
  local state, started, fin, last_t, exit, reason, total, nsucc, nfail, resumed = t.state,
    t.started, t.finished, t.last_t, t.exit, t.reason, t.total, t.n.success or 0, t.n.failed or 0,
    t.resumed
  local finished = state ~= "running"
  -- the lines a run wrote are in before it shows as ended (logs -f stops at the end)
  if finished then self:drain_logs() end
  local backoff = 0.05
  while true do
    local sent = flow.now()
    local ok, res = pcall(self.store.q, self.store, "commit", self.run_id, self.epoch, self.seq, n,
      payload, state, started, fin, last_t, exit, reason, total, nsucc, nfail, resumed,
      self.store.lease)
    local verdict
    if ok and res[1].written == n then
      verdict = "ours"
    elseif ok then
      local vok, v = pcall(self.after_refusal, self, self.seq + n)
      if vok then verdict = v else ok, res = false, v end
    end
    if verdict == "ours" then
      self.lease_deadline = sent + self.store.lease
      break
    elseif verdict then
      self:mark_lost(verdict)
      error(self.lost, 0)
    end
    if not transient(res) and not (type(res) == "table" and res.code == "store.unavailable") then
      -- not the store's weather: put the records back (in front) and give up
      for i = 1, self.n do lines[n + i] = self.buf[i] end
      self.buf, self.n = lines, n + self.n
      error(res, 0)
    end
    if flow.now() + backoff >= self.lease_deadline then
      self:mark_lost("no contact with the run store for longer than the lease ("
        .. tostring(type(res) == "table" and res.message or res) .. ")")
      error(self.lost, 0)
    end
    flow.sleep(backoff)
    backoff = math.min(backoff * 2, 1)
  end
  self.seq = self.seq + n
  self.committed = self.committed + n
  self.records = self.records + n
  self.commits = self.commits + 1
  self.syncs = self.commits
end

-- j:commit(): writes everything appended so far and the run's summary in one statement, and
-- returns once it is committed. Tasks that commit while a commit is in flight wait for it and
-- then share the next one (group commit). While the store cannot be reached it retries (the
-- engine waits: nothing is acted on before it is durable) until the lease would have expired;
-- then the run is lost to this process. Raises store.lost once the run is not this process's.
function Journal:commit()
  if self.lost then error(self.lost, 0) end
  local target = self.appended
  while self.committed < target do
    local h = self.flight
    if not h then
      -- the flight reports its failure as a value: whoever waits for it raises it (and when
      -- every waiter was cancelled, nobody is left to be told)
      h = flow.spawn(function()
        local ok, err = pcall(write_pending, self)
        if not ok then return false, err end
        return true
      end)
      self.flight = h
    end
    local ok, wok, werr = pcall(h.wait, h)
    if self.flight == h then self.flight = nil end
    if self.lost then error(self.lost, 0) end
    if not ok then error(wok, 0) end
    if not wok then error(werr, 0) end
  end
end

-- j:log(task, attempt, msg): keeps one log line of a task attempt (task nil: the run's own),
-- written with others within LOG_FLUSH seconds, bounded per attempt (a "truncated" line past it).
function Journal:log(task, attempt, msg)
  if self.lost or self.closed then return end
  local key = (task or "") .. "#" .. tostring(attempt or 0)
  local used = self.log_bytes[key] or 0
  if used > M.LOG_LIMIT then return end
  used = used + #msg
  local rec = { t = self.clock(), task = task, attempt = attempt, msg = msg }
  if used > M.LOG_LIMIT then
    rec.msg = string.format("[log truncated: more than %d bytes for this attempt]", M.LOG_LIMIT)
    rec.truncated = true
    used = M.LOG_LIMIT + 1
  end
  self.log_bytes[key] = used
  self.logn = self.logn + 1
  self.logq[self.logn] = rec
  if not self.flusher then
    self.flusher = flow.spawn(function()
      pcall(flow.sleep, M.LOG_FLUSH)
      flow.shield(self.flush_logs, self)
      self.flusher = nil
    end)
  end
end

-- Writes the buffered log lines (fenced by the epoch); lines that cannot be written while the
-- store is away are kept for the next flush, up to the per-attempt bound.
function Journal:flush_logs()
  while self.logn > 0 and not self.lost do
    local lines, n = self.logq, self.logn
    self.logq, self.logn = {}, 0
    local payload = json.encode(json.array(lines))
    local ok, res = pcall(self.store.q, self.store, "append_logs", self.run_id, self.epoch, payload)
    if not ok then
      -- keep them (in order) for the next try; the run's own commits decide whether it is lost
      for i = 1, self.logn do lines[n + i] = self.logq[i] end
      self.logq, self.logn = lines, n + self.logn
      return false
    end
    if res.affected == 0 then
      self:mark_lost("its log lines were refused: the epoch moved on")
      return false
    end
  end
  return true
end

-- Writes every buffered log line now, after the flusher's (which is woken), in order.
function Journal:drain_logs()
  if self.flusher then
    local h = self.flusher
    if h ~= flow.current() then
      h:cancel()
      pcall(h.wait, h)
    end
    self.flusher = nil
  end
  if not self.lost and self.logn > 0 then flow.shield(self.flush_logs, self) end
end

-- j:mark_lost(why): the run is no longer this process's. Everything stops writing; the engine's
-- lost hook stops the run's tasks.
function Journal:mark_lost(why)
  if self.lost then return end
  self.lost = lost_error(self.run_id, why)
  self.buf, self.n, self.logq, self.logn = {}, 0, {}, 0
  local hook = self.hooks.lost
  if hook then hook(self.lost) end
end

-- j:watch{cancel = fn(reason), lost = fn(err)}: what the holder is told while it holds the run:
-- a cancel request (flowrun cancel), the run lost. A cancel request made before it was held
-- (a run taken over while being cancelled) is delivered at once.
function Journal:watch(hooks)
  self.hooks = hooks or {}
  if self.hooks.cancel then self.store:nudge() end
  if self.cancel_pending then
    self.cancel_pending = nil
    self:deliver_cancel()
  end
end

function Journal:deliver_cancel()
  if self.cancel_seen or self.lost or self.closed then return end
  self.cancel_seen = true
  if self.hooks.cancel then
    self.hooks.cancel("cancelled by flowrun cancel")
    pcall(self.store.q, self.store, "clear_cancel", self.run_id, self.epoch)
  else
    self.cancel_pending = true
    self.cancel_seen = nil
  end
end

-- j:guard(): raises unless this process may act for the run now (before a task body starts,
-- see flowrun.engine.run): store:guard for this run.
function Journal:guard()
  return self.store:guard(self.run_id)
end

-- j:handback(why): a stopping worker gives the run back: nothing more is written or called for
-- it here, and close() leaves its lease expired so that another worker takes it over at once.
function Journal:handback(why)
  if self.lost then return end
  self.handed_back = true
  self:mark_lost(why)
end

-- j:close(): commits what is left, writes the log lines, and lets the run go: a run that did not
-- finish is left with an expired lease (interrupted; taken over at once when adoptable).
function Journal:close()
  if self.closed then return end
  flow.shield(function()
    if not self.lost then pcall(self.commit, self) end
    self:drain_logs()
    self.closed = true
    if (not self.lost or self.handed_back) and self.tally.state == "running" then
      pcall(self.store.q, self.store, "release", self.run_id, self.epoch)
    end
  end)
  self.closed = true
  if self.store.held[self.run_id] == self then self.store.held[self.run_id] = nil end
  if not next(self.store.held) and not next(self.store.watchers) then self.store:stop_background() end
end

---- creating, taking and claiming runs ---------------------------------------------------------------

local function jnull(v) if v == nil then return pg.null end return v end
local function jlist(v) if v == nil then return pg.null end return json.encode(json.array(v)) end

-- store:create_run(first, new_id, extra) -> journal of a new run held by this process, whose
-- first record is `first` (run_started; first.run the id, new_id() called for another while the
-- id is taken). extra: source (the workflow file's text, kept so the run can be resumed from
-- another machine).
function Store:create_run(first, new_id, extra)
  extra = extra or {}
  if not first.t then first.t = self.clock() end
  for _ = 1, 100 do
    local rec = json.encode(first)
    local rows = self:q("create_run", first.run, first.workflow, first.t, jnull(first.file),
      jnull(first.hash), jnull(extra.source), json.encode(first.params or json.object {}),
      jlist(first.secret_params), jlist(first.tasks), first.sim ~= nil, #(first.tasks or {}),
      self.owner, self.lease, rec)
    if rows.affected == 1 then
      local j = self:new_journal(first.run, 1, 1, nil)
      j.tally:apply(first)
      return j
    end
    first.run = new_id()
  end
  return nil, { code = "store.exists", message = "no free run id" }
end

-- store:resume_run(run) -> journal appending to an existing run (held by this process from now
-- on), or nil, err (store.busy: another process holds it; store.queued: a worker will start it).
function Store:resume_run(run)
  local rows = self:q("take", run.id, self.owner, self.lease)
  if #rows == 0 then
    local row = self:q("run_row", run.id)[1]
    if not row then return nil, { code = "store.not_found", message = "no run " .. run.id .. " in " .. self.where } end
    if row.state == "queued" then
      return nil, { code = "store.queued", message = "run " .. run.id .. " is queued: a worker will start it" }
    end
    return nil, { code = "store.busy", message = string.format(
      "run %s is being run by %s (its lease is held)", run.id,
      row.owner ~= pg.null and row.owner or "another process") }
  end
  return self:new_journal(run.id, rows[1].epoch, rows[1].seq, run)
end

-- store:submit(o) -> run_id, or nil and err (store.exists: the id, or the scheduled run of that
-- logical date, is taken). o: workflow (name), source, hash, file, params (public only),
-- secret_params (names), tasks (names), sim ({fail} or nil), run_id (default: a new one),
-- kind (submitted | scheduled | backfill), logical_date, interval_start, interval_end (epoch
-- seconds), options ({timeout, max_active}).
local function submit_args(self, o, id)
  return id, o.workflow, o.kind or "submitted", o.created or self.clock(),
    jnull(o.file), jnull(o.hash), jnull(o.source), json.encode(o.params or json.object {}),
    jlist(o.secret_params), jlist(o.tasks), o.options and json.encode(o.options) or pg.null,
    o.sim ~= nil, #(o.tasks or {}), jnull(o.logical_date), jnull(o.interval_start),
    jnull(o.interval_end)
end

local function exists_error(self, id, o)
  return { code = "store.exists", message = string.format(
    "run %s%s is already in %s", id, o.logical_date and (" (or a run of " .. o.workflow
    .. " for that logical date)") or "", self.where) }
end

function Store:submit(o)
  -- an id made here that is taken (another process made the same) is made again; an id given
  -- (a scheduled run's) or a logical date taken is refused
  for _ = 1, o.run_id and 1 or 20 do
    local id = o.run_id or o.new_id()
    local rows = self:q("submit", submit_args(self, o, id))
    if #rows > 0 then return id end
    if o.run_id or (o.logical_date and o.kind ~= "submitted") or not self:q("run_state", id)[1] then
      return nil, exists_error(self, id, o)
    end
  end
  return nil, { code = "store.exists", message = "no free run id in " .. self.where }
end

local function dec(v, default)
  if v == nil or v == pg.null then return default end
  return v
end

-- store:claim(worker_id, n, {sim = bool}) -> list of claims: {id, was ("queued" | "running": a
-- takeover), journal (held), workflow, source, hash, file, params, secret_params, tasks,
-- options, takeovers, cancel_requested, created, logical_date, interval_start, interval_end}.
-- A takeover's journal is positioned after the records already committed (resume replays them:
-- claim.run, loaded here).
function Store:claim(worker_id, n, o)
  o = o or {}
  local rows = self:q("claim", worker_id, n, o.sim == true, self.lease)
  local out = {}
  for _, r in ipairs(rows) do
    local c = { id = r.id, was = r.was, workflow = r.workflow, source = dec(r.source),
      hash = dec(r.hash), file = dec(r.file), params = dec(r.params, {}),
      secret_params = dec(r.secret_params), tasks = dec(r.task_names), options = dec(r.options, {}),
      takeovers = r.takeovers, cancel_requested = r.cancel_requested, created = r.created,
      kind = r.kind, logical_date = dec(r.logical_date), interval_start = dec(r.interval_start),
      interval_end = dec(r.interval_end), epoch = r.epoch }
    local prev
    if r.seq > 0 then
      local ok, run = pcall(self.load, self, r.id)
      if ok and run then prev = run else
        c.error = "its journal cannot be read: " .. tostring(ok and "missing" or run)
      end
      c.run = prev
    end
    c.journal = self:new_journal(r.id, r.epoch, r.seq, prev)
    if r.cancel_requested then c.journal.cancel_pending = true end
    out[#out + 1] = c
  end
  return out
end

-- store:requeue{id, options = {rerun}, source, hash} -> true | nil, msg: a finished run queued
-- again for the workers, who resume it (tasks that succeeded keep their results unless
-- options.rerun names them: the server's retry, a backfill's reprocess). source and hash: the
-- workflow's text to run, when it changed (else the run's own).
function Store:requeue(r)
  if #self:q("requeue", r.id, json.encode(r.options or json.object {}), jnull(r.source),
      jnull(r.hash)) > 0 then
    return true
  end
  local row = self:q("run_row", r.id)[1]
  if not row then return nil, "no run " .. r.id .. " in " .. self.where end
  return nil, string.format("run %s is %s: only a finished run can be queued again", r.id, row.state)
end

-- store:request_cancel(run_id) -> what happened: "cancelled" (it was queued: it ends now, nothing
-- ran), "requested" (its holder cancels it; its cleanup tasks run), "requested-unheld" (no live
-- holder: a worker takes it over and cancels it); or nil and a message (no such run, already
-- ended, or interrupted with nobody to take it over: `flowrun resume` continues it).
function Store:request_cancel(run_id)
  local row = self:q("run_row", run_id)[1]
  if not row then return nil, "no run " .. run_id .. " in " .. self.where end
  if row.state == "queued" then
    if #self:q("cancel_queued", run_id, self.clock()) > 0 then return "cancelled" end
    row = self:q("run_row", run_id)[1] -- a worker claimed it meanwhile
  end
  if row.state ~= "running" then
    return nil, string.format("run %s already ended (%s)", run_id, row.state)
  end
  local held = not row.expired and row.owner ~= pg.null
  if not held and not row.adoptable then
    return nil, string.format("run %s is interrupted: no process runs it, so there is nothing to "
      .. "cancel (flowrun resume %s continues it)", run_id, run_id)
  end
  self:q("cancel_running", run_id)
  return held and "requested" or "requested-unheld", dec(row.owner)
end

-- guard(run_id): raises unless this process may act for the run now (the engine's AWS calls go
-- through it, flowrun.worker.fence). A lease about to expire is renewed first.
function Store:guard(run_id)
  local j = self.held[run_id]
  if not j then return end
  if j.lost then error(j.lost, 2) end
  if self.handback_on_signal and core.signal() then
    j:handback("the worker is stopping (signal " .. tostring(core.signal()) .. ")")
    error(j.lost, 2)
  end
  local slack = math.min(self.lease / 4, 5)
  if flow.now() < j.lease_deadline - slack then return end
  self:renew_now()
  if j.lost then error(j.lost, 2) end
  if flow.now() >= j.lease_deadline - slack then
    error(flow.error("store.lease", string.format("run %s: the lease could not be renewed "
      .. "(the run store %s cannot be reached); not acting for the run until it is",
      run_id, self.where), { retryable = true }), 2)
  end
end

---- schedules (flowrun.schedule.scheduler, flowrun backfill, flowrun pause) ---------------------

local function state_of(r)
  local last
  if r.last_id ~= pg.null and r.last_id ~= nil then
    local st = r.last_state
    if st == "running" and r.last_expired then st = "interrupted" end
    last = { id = r.last_id, state = st, kind = r.last_kind, created = r.last_created,
      finished = dec(r.last_finished), logical_date = dec(r.last_logical_date) }
  end
  return { paused = r.paused, paused_at = dec(r.paused_at), paused_by = dec(r.paused_by),
    handled_end = dec(r.handled_end), skipped = r.skipped, last_skipped = dec(r.last_skipped),
    last = last }
end

-- store:schedule_states(names [, {last = false}]) -> {[name] = {paused, paused_at, paused_by,
-- handled_end, skipped, last_skipped, last = {id, state, kind, created, finished, logical_date}
-- | nil}}: one statement for any number of workflows (a scheduler starting, flowrun schedules).
-- handled_end is the end of the latest interval the workflow's schedulers handled. (last =
-- false: the caller does not need the latest run; the file store then reads less.)
function Store:schedule_states(names)
  local out = {}
  if #names == 0 then return out end
  for _, r in ipairs(self:q("schedule_states", pg.array(names))) do out[r.workflow] = state_of(r) end
  return out
end

local function active_of(rows)
  local out = {}
  for i, r in ipairs(rows) do
    out[i] = { id = r.id, kind = r.kind, state = r.state, created = r.created,
      cancel_requested = r.cancel_requested, logical_date = dec(r.logical_date) }
  end
  return out
end

local function dated_of(rows)
  local out = {}
  for i, r in ipairs(rows) do
    local st = r.state
    if st == "running" and r.expired then st = "interrupted" end
    out[i] = { id = r.id, kind = r.kind, state = st, created = r.created, started = dec(r.started),
      finished = dec(r.finished), exit = dec(r.exit), reason = dec(r.reason),
      tasks_total = r.tasks_total, tasks_succeeded = r.tasks_succeeded,
      tasks_failed = r.tasks_failed, cancel_requested = r.cancel_requested,
      logical_date = dec(r.logical_date), interval_end = dec(r.interval_end) }
  end
  return out
end

-- store:active_runs(workflow) -> the runs max_active_runs counts (queued, or running with a
-- live holder or one a worker takes over), oldest first: {id, kind, state, created,
-- cancel_requested, logical_date}.
function Store:active_runs(workflow)
  return active_of(self:q("active_runs", workflow))
end

-- store:dated_runs(workflow, from, to) -> the workflow's scheduled and backfill runs whose
-- logical date lies in [from, to] (epoch seconds), in date order, with their summaries.
function Store:dated_runs(workflow, from, to)
  return dated_of(self:q("dated_runs", workflow, from, to))
end

-- store:set_paused(workflow, paused, who) -> whether it was paused before. Schedulers are told.
function Store:set_paused(workflow, paused, who)
  local rows = self:q("set_paused", workflow, paused == true, jnull(who))
  return rows[1].was
end

-- store:fire(workflow, decide) -> result: what a scheduler (or a backfill) does for one
-- workflow, decided from the store's state and done in one transaction under the workflow's
-- advisory lock (schedulers and backfills of one workflow take turns). decide(view) is called
-- inside it and must not wait on anything but view.dated; view = {paused, handled_end,
-- skipped, active = store:active_runs(workflow), dated = function(from, to) ->
-- store:dated_runs(...)}. It returns a plan: {submit = {store:submit options...}, requeue =
-- {{id, options}...} (finished runs queued again), handled = {handled_end, skipped,
-- last_skipped} (intervals handled without a run), cancel = {run ids}}. result: {submitted =
-- {ids}, existed = {ids: refused, the id or the date was taken}, requeued = {ids}, cancelled =
-- {ids}}. Nothing of the plan is done unless all of it is.
function Store:fire(workflow, decide)
  local pool = self:pool()
  local ok, res = pcall(pool.transaction, pool, function(c)
    local function q(name, ...) return c:query(SQL[name], ...) end
    q("schedule_lock", workflow)
    local st = state_of(q("schedule_states", pg.array { workflow })[1])
    local view = { paused = st.paused, handled_end = st.handled_end, skipped = st.skipped,
      active = active_of(q("active_runs", workflow)) }
    view.dated = function(lo, hi) return dated_of(q("dated_runs", workflow, lo, hi)) end
    local plan = decide(view) or {}
    local out = { submitted = {}, existed = {}, requeued = {}, cancelled = {} }
    for _, o in ipairs(plan.submit or {}) do
      local id = o.run_id or o.new_id()
      local rows = q("submit", submit_args(self, o, id))
      local list = #rows > 0 and out.submitted or out.existed
      list[#list + 1] = id
    end
    for _, r in ipairs(plan.requeue or {}) do
      if #q("requeue", r.id, json.encode(r.options or json.object {}), jnull(r.source),
          jnull(r.hash)) > 0 then
        out.requeued[#out.requeued + 1] = r.id
      end
    end
    local h = plan.handled
    if h and (h.handled_end or (h.skipped or 0) > 0) then
      q("schedule_handled", workflow, jnull(h.handled_end), h.skipped or 0, jnull(h.last_skipped))
    end
    for _, id in ipairs(plan.cancel or {}) do
      if #q("cancel_queued", id, self.clock()) > 0 or #q("cancel_running", id) > 0 then
        out.cancelled[#out.cancelled + 1] = id
      end
    end
    return out
  end)
  if ok then return res end
  if transient(res) or (type(res) == "table" and tostring(res.code):match("^pg%.28")) then
    error(store_error(self, res), 0)
  end
  error(res, 0)
end

---- heartbeats and notifications (one background task per store, while it holds or watches) --------

-- Renews every held run's lease in one statement; marks lost the runs it did not renew. Returns
-- false when the store could not be reached (then runs whose lease ran out locally are lost).
function Store:heartbeat()
  local ids, epochs, js = {}, {}, {}
  for id, j in pairs(self.held) do
    if not j.lost and not j.closed then
      ids[#ids + 1], epochs[#epochs + 1], js[#js + 1] = id, j.epoch, j
    end
  end
  if #ids == 0 then return true end
  local sent = flow.now()
  local ok, rows = pcall(self.q, self, "renew", pg.array(ids), pg.array(epochs), self.lease)
  if not ok then
    if flow.cancelled(rows) then error(rows, 0) end
    for _, j in ipairs(js) do
      if flow.now() >= j.lease_deadline then
        j:mark_lost("no contact with the run store for longer than the lease")
      end
    end
    return false
  end
  local renewed = {}
  for _, r in ipairs(rows) do renewed[r.id] = r end
  for _, j in ipairs(js) do
    local r = renewed[j.run_id]
    if r then
      j.lease_deadline = sent + self.lease
      if r.cancel_requested then j:deliver_cancel() end
    elseif not j.closed then
      local vok, why = pcall(j.after_refusal, j, j.seq)
      j:mark_lost(vok and why ~= "ours" and why or "its lease was not renewed: the epoch moved on")
    end
  end
  return true
end

-- renew_now(): a heartbeat now (guard's), shared by the tasks that ask at the same time.
function Store:renew_now()
  if not self.renewing then
    self.renewing = flow.spawn(function() return self:heartbeat() end)
  end
  local h = self.renewing
  pcall(h.wait, h)
  if self.renewing == h then self.renewing = nil end
end

local function dispatch(self, note)
  local kind, id = tostring(note.payload):match("^(%S+) (.+)$")
  if kind == "cancel" and self.held[id] then self.held[id]:deliver_cancel() end
  for w in pairs(self.watchers) do w:push(kind, id) end
end

-- The listening connection: LISTEN flowrun, or nil when it cannot be had now. A new one is
-- followed by a heartbeat at once: a cancel request notified before it listened is in the answer.
function Store:listener()
  local c = self.listen_conn
  if c and c:status() ~= "broken" and c:status() ~= "closed" then return c end
  if c then pcall(c.close, c) end
  self.listen_conn = nil
  local ok
  ok, c = pcall(pg.connect, self.conninfo)
  if not ok then return nil end
  if not pcall(c.listen, c, M.CHANNEL) then c:close() return nil end
  self.listen_conn = c
  self.listen_fresh = true
  for w in pairs(self.watchers) do w:push("reconnected", nil) end
  return c
end

-- nudge(): the background task looks again now (a journal started to want cancel requests).
function Store:nudge()
  self.nudged = true
  if self.bg_waiter then self.bg_waiter:wake() end
end

-- Waits up to `s` seconds or until nudged; never a pending I/O operation, so virtual time jumps.
function Store:bg_sleep(s)
  if self.nudged then self.nudged = false return end
  self.bg_waiter = pg.core.waiter()
  self.bg_waiter:wait(s)
  self.bg_waiter = nil
  self.nudged = false
end

function Store:background_loop()
  local every = self.lease / 3
  local next_beat = flow.now() + every
  while next(self.held) or next(self.watchers) do
    local want_listen = next(self.watchers) ~= nil or self:wants_cancel_notes()
    local conn = want_listen and self:listener() or nil
    if self.listen_fresh then
      self.listen_fresh = false
      next_beat = flow.now()
    end
    local wait = math.max(0, next_beat - flow.now())
    if conn and not core.virtual_time() and wait > 0 then
      local ok, note = pcall(conn.wait_notify, conn, wait)
      if not ok then
        if flow.cancelled(note) then error(note, 0) end
        pcall(conn.close, conn)
        self.listen_conn = nil
        self:bg_sleep(math.min(1, wait))
      elseif note then
        dispatch(self, note)
      end
    elseif wait > 0 then
      -- nothing to listen on (or virtual time, where a pending wait would stop the clock from
      -- jumping): notifications are picked up between short sleeps
      self:bg_sleep(math.min(conn and 0.1 or 1, wait))
    end
    if conn then
      while true do
        local ok, note = pcall(conn.wait_notify, conn, 0)
        if not ok or not note then break end
        dispatch(self, note)
      end
    end
    if flow.now() >= next_beat then
      local ok = self:heartbeat()
      next_beat = flow.now() + (ok and every or math.min(every, 1))
    end
  end
end

function Store:wants_cancel_notes()
  for _, j in pairs(self.held) do if j.hooks.cancel then return true end end
  return false
end

function Store:start_background()
  if self.bg then return end
  self.bg = flow.spawn(function()
    local ok, err = pcall(self.background_loop, self)
    self.bg = nil
    if self.listen_conn then pcall(self.listen_conn.close, self.listen_conn) self.listen_conn = nil end
    if not ok and not flow.cancelled(err) then error(err, 0) end
  end)
end

function Store:stop_background()
  local h = self.bg
  if h and h ~= flow.current() then
    h:cancel()
    pcall(h.wait, h)
  end
  self.bg = nil
end

---- watching for changes --------------------------------------------------------------------------------

local Watcher = {}
Watcher.__index = Watcher

-- store:watch() -> watcher: w:wait(timeout) -> list of {kind, run} (kinds: queued, released,
-- cancel, finished, reconnected: notifications may have been missed; paused and unpaused, with
-- the workflow's name in run) or nil on timeout; w:close(). Task-level changes are not
-- notified: poll run_state.
function Store:watch()
  local w = setmetatable({ store = self, q = {}, waiter = pg.core.waiter() }, Watcher)
  self.watchers[w] = true
  self:start_background()
  self:nudge()
  -- the first wait may come before the listener is up: it is told to look (reconnected)
  w:push("reconnected", nil)
  return w
end

function Watcher:push(kind, run)
  self.q[#self.q + 1] = { kind = kind, run = run }
  self.waiter:wake()
end

function Watcher:wait(timeout)
  if #self.q == 0 then
    self.waiter:wait(timeout)
  end
  if #self.q == 0 then return nil end
  local q = self.q
  self.q = {}
  self.waiter = pg.core.waiter()
  return q
end

function Watcher:close()
  self.store.watchers[self] = nil
  if not next(self.store.held) and not next(self.store.watchers) then self.store:stop_background() end
end

---- reading runs ------------------------------------------------------------------------------------

-- A run with no journal yet (queued, or cancelled before it started): made from its row.
local function run_of_row(row)
  local tasks, order = {}, {}
  for _, name in ipairs(dec(row.task_names, {})) do
    tasks[name] = { state = row.state == "cancelled" and "cancelled" or "pending", attempts = 0 }
    order[#order + 1] = name
  end
  return { id = row.id, workflow = row.workflow, file = dec(row.file), hash = dec(row.hash),
    params = dec(row.params, {}), secret_params = dec(row.secret_params), started = row.created,
    finished = dec(row.finished), last_t = dec(row.last_t, row.created), state = row.state,
    exit = dec(row.exit), reason = dec(row.reason), tasks = tasks, task_order = order,
    resumed = 0 }
end

-- load(run_id) -> run (replay.replay, every record checked) with its store columns (source,
-- owner, kind, logical_date ...), or nil and a message. A run whose holder's lease expired is
-- "interrupted"; a queued one is "queued".
function Store:load(run_id)
  local row = self:q("run_row", run_id)[1]
  if not row then return nil, "no run " .. run_id .. " in " .. self.where end
  local run
  if row.seq == 0 then
    run = run_of_row(row)
  else
    local recs = {}
    for i, e in ipairs(self:q("run_events", run_id)) do
      local rec = e.rec
      local ok, why = replay.check(rec)
      if not ok then
        return nil, string.format("run %s, record %d (in %s): damaged journal record: %s",
          run_id, e.seq, self.where, why)
      end
      if i == 1 and rec.ev ~= "run_started" then
        return nil, string.format("run %s, record %d (in %s): expected a run_started record, got %q",
          run_id, e.seq, self.where, tostring(rec.ev))
      end
      recs[i] = rec
    end
    run = replay.replay(recs)
    run.records = #recs
    if run.state == "running" and (row.expired or row.owner == pg.null) then run.state = "interrupted" end
    -- queued again (a backfill reprocessing its date): a worker resumes it
    if row.state == "queued" then run.state = "queued" end
  end
  run.source, run.kind, run.owner = dec(row.source), row.kind, dec(row.owner)
  run.sim_run, run.adoptable, run.epoch, run.takeovers = row.sim, row.adoptable, row.epoch, row.takeovers
  run.cancel_requested = row.cancel_requested
  run.options = dec(row.options)
  run.logical_date, run.interval_start, run.interval_end =
    dec(row.logical_date), dec(row.interval_start), dec(row.interval_end)
  return run
end

-- records(run_id) -> the run's journal records in order (tests, export).
function Store:records(run_id)
  local out = {}
  for i, e in ipairs(self:q("run_events", run_id)) do out[i] = e.rec end
  return out
end

-- state(run_id) -> state ("queued", "running", "interrupted", "success", ...), seq | nil
function Store:state(run_id)
  local r = self:q("run_state", run_id)[1]
  if not r then return nil end
  if r.state == "running" and r.expired then return "interrupted", r.seq end
  return r.state, r.seq
end

-- live(run_id) -> is some process holding the run now?
function Store:live(run_id)
  local st = self:state(run_id)
  return st == "running"
end

local function encode_cursor(created, id) return string.format("%.17g/%s", created, id) end
local function decode_cursor(c)
  local created, id = tostring(c):match("^([^/]+)/(.+)$")
  return tonumber(created), id
end
M.encode_cursor, M.decode_cursor = encode_cursor, decode_cursor

-- The list statements, one per shape of filter (see list_runs in queries.sql).
local list_cache = {}
local function list_sql(f, desc)
  local key = table.concat({ f.workflow and "w" or "", f.states and "s" or "", f.since and "a" or "",
    f.before and "b" or "", f.cursor and "c" or "", desc and "d" or "" }, "")
  local sql = list_cache[key]
  if sql then return sql end
  local conds, i = {}, 1
  local function p() i = i + 1 return "$" .. i end
  if f.workflow then conds[#conds + 1] = "workflow = " .. p() end
  if f.states then conds[#conds + 1] = "state = ANY(" .. p() .. "::text[])" end
  if f.since then conds[#conds + 1] = "created >= " .. p() .. "::float8" end
  if f.before then conds[#conds + 1] = "created < " .. p() .. "::float8" end
  if f.cursor then
    local a, b = p(), p()
    conds[#conds + 1] = string.format("(created, id) %s (%s::float8, %s::text)", desc and "<" or ">", a, b)
  end
  local where = #conds > 0 and (" AND " .. table.concat(conds, " AND ")) or ""
  sql = SQL.list_runs:gsub("/%*FILTERS%*/", where):gsub("/%*ORDER%*/",
    desc and "created DESC, id DESC" or "created, id")
  list_cache[key] = sql
  return sql
end

M.list_sql = list_sql

-- A summary row as a run listing shows it (the fields of a replayed run that `runs` reads).
local function summary_of(r)
  local state = r.state
  if state == "running" and (r.expired or r.owner == pg.null) then state = "interrupted" end
  return { id = r.id, workflow = r.workflow, state = state, kind = r.kind, started = r.started ~= pg.null
    and r.started or r.created, created = r.created, finished = dec(r.finished), last_t = dec(r.last_t),
    exit = dec(r.exit), reason = dec(r.reason), tasks_total = r.tasks_total,
    tasks_succeeded = r.tasks_succeeded, tasks_failed = r.tasks_failed, resumed = r.resumed,
    owner = dec(r.owner), sim = r.sim, file = dec(r.file), cancel_requested = r.cancel_requested,
    logical_date = dec(r.logical_date) }
end

-- runs(filter) -> list of run summaries, and the cursor of the next page (nil when none).
-- filter: workflow, state (a name or a list; "running" is held by a live process, "interrupted"
-- is running with no live holder), since, before (created time, epoch seconds), limit (default
-- all), order ("asc": oldest first, the default; "desc": newest first), cursor (from the
-- previous page).
function Store:runs(f)
  f = f or {}
  local desc = f.order == "desc"
  local asked, states = nil, nil
  if f.state then
    asked, states = {}, {}
    for _, s in ipairs(type(f.state) == "table" and f.state or { f.state }) do
      asked[s] = true
      states[#states + 1] = s == "interrupted" and "running" or s
    end
  end
  local q = { workflow = f.workflow, states = states, since = f.since, before = f.before,
    cursor = f.cursor }
  local limit = f.limit or 1000000000
  local args = { limit + 1 }
  if q.workflow then args[#args + 1] = q.workflow end
  if q.states then args[#args + 1] = pg.array(q.states) end
  if q.since then args[#args + 1] = q.since end
  if q.before then args[#args + 1] = q.before end
  if q.cursor then
    local c, id = decode_cursor(q.cursor)
    if not c then error("flowrun: a bad page cursor " .. tostring(q.cursor), 2) end
    args[#args + 1] = c
    args[#args + 1] = id
  end
  local pool = self:pool()
  local ok, rows = pcall(pool.query, pool, list_sql(q, desc), table.unpack(args))
  if not ok then error(transient(rows) and store_error(self, rows) or rows, 0) end
  local out, next_cursor = {}, nil
  for i, r in ipairs(rows) do
    if i > limit then
      local last = rows[limit]
      next_cursor = encode_cursor(last.created, last.id)
      break
    end
    local s = summary_of(r)
    if not asked or asked[s.state] then out[#out + 1] = s end
  end
  return out, next_cursor
end

-- counts() -> {workflow -> {state -> n}}
function Store:counts()
  local out = {}
  for _, r in ipairs(self:q("count_runs")) do
    out[r.workflow] = out[r.workflow] or {}
    out[r.workflow][r.state] = r.n
  end
  return out
end

-- find(id) -> run by id, unique prefix, or "last"; or nil, message.
function Store:find(id)
  if not id then return nil, "expected a RUN_ID (see flowrun runs)" end
  if id == "last" or id == "latest" then
    local r = self:q("find_last")[1]
    if not r then return nil, "no runs in " .. self.where end
    return self:load(r.id)
  end
  if self:q("run_state", id)[1] then return self:load(id) end
  local rows = self:q("find_prefix", id)
  if #rows == 1 then return self:load(rows[1].id) end
  if #rows > 1 then return nil, "run id " .. id .. " is ambiguous (several runs match)" end
  return nil, "no run " .. id .. " in " .. self.where
end

-- logs(run_id, {after = line id, limit}) -> list of {id, t, task, attempt, msg, truncated}, in
-- the order they were written, and the id of the last one.
function Store:logs(run_id, o)
  o = o or {}
  local out, last = {}, o.after or 0
  while true do
    local rows = self:q("logs_after", run_id, last, o.limit or 10000)
    for _, r in ipairs(rows) do
      out[#out + 1] = { id = r.id, t = r.t, task = dec(r.task), attempt = dec(r.attempt), msg = r.msg,
        truncated = r.truncated or nil }
      last = r.id
    end
    if o.limit or #rows < 10000 then break end
  end
  return out, last
end

---- workers ----------------------------------------------------------------------------------------

-- register_worker(w) / worker_heartbeat(w) / worker_stopped(w): the workers table. w: id,
-- hostname, pid, version, concurrency, sim, lease, running.
function Store:register_worker(w)
  self:q("worker_register", w.id, w.hostname, w.pid, w.version, w.concurrency, w.sim == true, w.lease)
end

function Store:worker_heartbeat(w, state)
  self:q("worker_heartbeat", w.id, w.running or 0, state or "running")
end

-- workers() -> {{id, hostname, pid, concurrency, state, running, runs = {ids}, age (seconds since
-- the last heartbeat), live (heartbeat within twice its lease), started}}
function Store:workers()
  local out = {}
  for _, r in ipairs(self:q("workers")) do
    out[#out + 1] = { id = r.id, hostname = r.hostname, pid = r.pid, version = dec(r.version),
      concurrency = r.concurrency, sim = r.sim, state = r.state, lease = r.lease, running = r.running,
      runs = dec(r.runs, {}), age = r.age, started = r.started,
      live = r.state ~= "stopped" and r.age <= 2 * r.lease }
  end
  return out
end

return M
