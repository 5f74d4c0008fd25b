-- flowrun.engine.store.file — the embedded run store: one machine, no server. Each run is a
-- journal of JSON lines in <dir>/runs/<run_id>.jsonl, appended as states change, and its task
-- logs in <dir>/runs/<run_id>.log.jsonl.
--
-- Durability: records are buffered by append() and written by commit(), which writes the buffer
-- in one write, flushes and fsyncs before returning. The engine commits before it acts on a
-- change (starting downstream tasks, retrying, exiting), so changes that happen together share
-- one fsync (group commit). A crash cuts at most the last line, which reading tolerates and the
-- next writer truncates away.
--
-- One process at a time writes a run: it holds an exclusive flock on the journal itself (no lock
-- files), which the kernel releases when the process dies — so "is anybody running this run?" is
-- answered by trying the lock, not by guessing from a pid.
--
-- Task logs (ctx.log lines, flow.poll status lines, flow.exec output a task logs) are kept per
-- run as {t, task, attempt, msg} lines, bounded per attempt (LOG_LIMIT bytes; past it one
-- "truncated" line), written as they come (no fsync: a log line is not a state change).
--
-- Workers on this machine (flowrun worker, the server) share the store through files too:
--   <dir>/queue/<id>.json    a submitted run (its workflow's source, public parameters) until it
--                            has finished; a worker claims it by creating and locking its
--                            journal, and takes it over when the journal's lock is free and the
--                            run did not finish (its worker died)
--   <dir>/runs/<id>.cancel   a cancel request: the process holding the run polls for it
--   <dir>/workers/<id>.json  a live worker, locked by it (so a dead worker's file is unlocked)
--   <dir>/.lock              held for a moment around submit, claim, cancel and a scheduler's
--                            decision (fire)
--   <dir>/runs/.index.json   listing's cache of run summaries, keyed by journal size and mtime
-- and schedulers (flowrun.schedule.scheduler, flowrun backfill, flowrun pause):
--   <dir>/dated/<workflow>/<YYYYmmddTHHMMSSZ>.json   the one scheduled or backfill run of that
--                            logical date ({run, kind, logical_date, interval_end}), made under
--                            .lock with its queue entry: a date's run is made once
--   <dir>/schedules/<workflow>.json   a schedule's state: paused (paused_at, paused_by),
--                            handled_end, skipped, last_skipped (as the PostgreSQL store's
--                            flowrun.schedules, migration 002)
-- Watchers (store:watch) are woken by the kernel (inotify) when the queue or a schedule changes.
-- The journal's lock is the lease: the kernel releases it when its process dies, so there is
-- no epoch to check here (one machine, one kernel).
local flow = require "flow"
local core = require "flow.core"
local json = require "json"
local sys = require "flow.sys"
local replay = require "flowrun.engine.replay"

local M = {}

M.LOG_LIMIT = 1 << 20 -- bytes of log text kept per task attempt

local Store = {}
Store.__index = Store

-- open(dir, {fsync = bool, clock = fn}) -> store. The directory is created when first written.
function M.open(dir, o)
  o = o or {}
  return setmetatable({ kind = "file", dir = dir, runs_dir = dir .. "/runs",
    queue_dir = dir .. "/queue", workers_dir = dir .. "/workers",
    dated_dir = dir .. "/dated", schedules_dir = dir .. "/schedules",
    fsync = o.fsync ~= false, clock = o.clock or os.time, held = {}, worker_files = {},
    handback_on_signal = false }, Store)
end

M.CANCEL_POLL = 0.5 -- seconds between looks for a cancel request by the process holding a run

function Store:describe() return self.runs_dir end

function Store:journal_path(run_id) return self.runs_dir .. "/" .. run_id .. ".jsonl" end
function Store:log_path(run_id) return self.runs_dir .. "/" .. run_id .. ".log.jsonl" end

-- raises "what: message" for a sys call that failed
local function must(what, ok, err)
  if not ok then error(string.format("%s: %s", what, tostring(err and err.message or err)), 0) end
  return ok
end

---- writing a run ------------------------------------------------------------------------------

local Journal = {}
Journal.__index = Journal

-- Opens (creating when missing) and locks a run's journal. A last line cut by a crash is
-- truncated away first, so the next record is not glued to it. Returns journal, or nil, err
-- (another process holds the run: err.code "store.busy").
function Store:open_journal(run_id, create)
  must("cannot create " .. self.runs_dir, sys.mkdir_p(self.runs_dir))
  local path = self:journal_path(run_id)
  local existed = sys.stat(path) ~= nil
  if create and existed then return nil, { code = "store.exists" } end
  if not create and not existed then
    return nil, { code = "store.not_found", message = "no run " .. run_id .. " in " .. self.runs_dir }
  end
  local f, err = io.open(path, "a+")
  if not f then error("cannot open the journal " .. tostring(err), 0) end
  local ok, lerr = sys.flock(f)
  if not ok then
    f:close()
    if lerr and lerr.code == "sys.locked" then
      return nil, { code = "store.busy",
        message = "another flowrun process is running run " .. run_id .. " (" .. path .. " is locked)" }
    end
    error("cannot lock " .. path .. ": " .. tostring(lerr and lerr.message or lerr), 0)
  end
  -- a last line cut by a crash is dropped before appending
  f:seek("set")
  local text = f:read("a") or ""
  if #text > 0 and text:sub(-1) ~= "\n" then
    local keep = #(text:match("^(.*\n)") or "")
    must("cannot repair " .. path, sys.truncate(f, keep))
  end
  f:seek("end")
  f:setvbuf("full", 1 << 16)
  if not existed and self.fsync then
    -- a new file: make its directory entry durable too
    sys.fsync_dir(self.runs_dir)
  end
  local j = setmetatable({ f = f, path = path, run_id = run_id, store = self, buf = {}, n = 0,
    fsync = self.fsync, commits = 0, syncs = 0, records = 0, clock = self.clock,
    logs = nil, log_bytes = {}, hooks = {} }, Journal)
  self.held[run_id] = j
  return j
end

-- j:append(rec): buffers a record (a table with ev); sets rec.t when missing. Raises when the
-- record cannot be encoded (the engine turns that into a task failure).
function Journal:append(rec)
  if not rec.t then rec.t = self.clock() end
  local line = json.encode(rec)
  if self.lost then return line end
  self.n = self.n + 1
  self.buf[self.n] = line
  return line
end

-- j:commit(): writes what is buffered, flushes and fsyncs. Does nothing when nothing is
-- buffered. The write happens in one call so that a crash cuts at most the last line.
function Journal:commit()
  if self.lost then error(self.lost, 0) end
  if self.n == 0 then return end
  local data = table.concat(self.buf, "\n", 1, self.n) .. "\n"
  self.records = self.records + self.n
  self.buf, self.n = {}, 0
  local ok, err = self.f:write(data)
  if not ok then error("journal: cannot write " .. self.path .. ": " .. tostring(err), 0) end
  self.f:flush()
  self.commits = self.commits + 1
  if self.fsync then
    must("journal: cannot fsync " .. self.path, sys.fsync(self.f))
    self.syncs = self.syncs + 1
  end
end

-- j:log(task, attempt, msg): keeps one log line of a task attempt (task nil: the run's own).
function Journal:log(task, attempt, msg)
  if self.lost then return end
  local key = (task or "") .. "#" .. tostring(attempt or 0)
  local used = self.log_bytes[key] or 0
  if used > M.LOG_LIMIT then return end
  if not self.logs then
    local f, err = io.open(self.store:log_path(self.run_id), "a")
    if not f then
      self.log_bytes[key] = M.LOG_LIMIT + 1
      io.stderr:write("flowrun: cannot keep task logs: ", tostring(err), "\n")
      return
    end
    f:setvbuf("line")
    self.logs = f
  end
  used = used + #msg
  local rec = { t = self.clock(), task = task, attempt = attempt, msg = msg }
  if used > M.LOG_LIMIT then
    rec.msg = string.format("[log truncated: more than %d bytes for this attempt]", M.LOG_LIMIT)
    rec.truncated = true
    used = M.LOG_LIMIT + 1
  end
  self.log_bytes[key] = used
  self.logs:write(json.encode(rec), "\n")
end

-- j:watch{cancel = fn(reason), lost = fn(err)}: while the run is held, a cancel request
-- (<run>.cancel, made by flowrun cancel) is looked for every CANCEL_POLL seconds and handed to
-- cancel. (A file-store run is never lost to another process: its lock is held until close.)
function Journal:watch(hooks)
  self.hooks = hooks or {}
  if self.cancel_pending and self.hooks.cancel then
    -- a worker took over a run it was asked to cancel
    self.cancel_pending = nil
    self.hooks.cancel("cancelled by flowrun cancel")
  end
  if not self.hooks.cancel or self.poller then return end
  local marker = self.store:cancel_path(self.run_id)
  self.poller = flow.spawn(function()
    while self.f do
      if sys.stat(marker) then
        sys.unlink(marker)
        self.hooks.cancel("cancelled by flowrun cancel")
        return
      end
      flow.sleep(M.CANCEL_POLL)
    end
  end)
end

-- j:guard(): raises when a stopping worker hands the run back (store:guard).
function Journal:guard()
  return self.store:guard(self.run_id)
end

-- j:handback(why): a stopping worker gives the run back: nothing more is written, and close()
-- releases the lock, so another worker takes it over.
function Journal:handback(why)
  if self.lost then return end
  self.lost = flow.error("store.lost", string.format("run %s was handed back (%s): its tasks are "
    .. "stopped and nothing more is written or called for it", self.run_id, why),
    { retryable = false, run_id = self.run_id })
  self.buf, self.n = {}, 0
  if self.hooks.lost then self.hooks.lost(self.lost) end
end

-- j:close(): commits and releases the run's lock.
function Journal:close()
  if self.poller then
    if self.poller ~= flow.current() then self.poller:cancel() end
    self.poller = nil
  end
  if self.f then
    if not self.lost then self:commit() end
    self.f:close()
    self.f = nil
  end
  if self.logs then
    self.logs:close()
    self.logs = nil
  end
  if self.store.held[self.run_id] == self then self.store.held[self.run_id] = nil end
end

-- store:create_run(first) -> journal of a new run whose first record is `first` (a run_started
-- record, first.run the id; `new_id` is called for another id while the id is taken).
function Store:create_run(first, new_id)
  while true do
    local j, err = self:open_journal(first.run, true)
    if j then
      j:append(first)
      j:commit()
      return j
    end
    if err.code ~= "store.exists" then return nil, err end
    first.run = new_id()
  end
end

-- store:resume_run(run [, {keep_cancel}]) -> journal appending to an existing run, or nil, err.
-- A cancel request left on the run is dropped (resuming is the newer wish) unless keep_cancel
-- (a worker taking over a run it was asked to cancel).
function Store:resume_run(run, o)
  local j, err = self:open_journal(run.id, false)
  if j and not (o and o.keep_cancel) then sys.unlink(self:cancel_path(run.id)) end
  return j, err
end

-- guard(run_id): raises when a stopping worker hands its runs back (the run's AWS calls stop).
function Store:guard(run_id)
  local j = self.held[run_id]
  if not j then return end
  if j.lost then error(j.lost, 2) end
  if self.handback_on_signal and core.signal() then
    j:handback("the worker is stopping (signal " .. tostring(core.signal()) .. ")")
    error(j.lost, 2)
  end
end

---- reading runs -------------------------------------------------------------------------------

-- read(path) -> list of records, truncated, or nil and a message naming the file and line. A last
-- line without its newline that does not parse (a write cut by a crash) is dropped; any other
-- line that does not parse or is not a valid record is damage.
function M.read(path)
  local f, err = io.open(path, "r")
  if not f then return nil, "cannot read journal " .. tostring(err) end
  local text = f:read("a")
  f:close()
  local recs, lineno, pos = {}, 0, 1
  local len = #text
  local truncated = false
  while pos <= len do
    local nl = text:find("\n", pos, true)
    local line = text:sub(pos, (nl or len + 1) - 1)
    lineno = lineno + 1
    pos = (nl or len) + 1
    if not line:match("^%s*$") then
      local ok, rec = pcall(json.decode, line)
      local valid, why = false, nil
      if ok then valid, why = replay.check(rec) else why = tostring(rec):gsub("\n", " ") end
      if not valid then
        if not nl and not ok then
          truncated = true
          break
        end
        return nil, string.format("%s:%d: damaged journal line: %s", path, lineno, why)
      end
      if #recs == 0 and rec.ev ~= "run_started" then
        return nil, string.format("%s:%d: expected a run_started record, got %q", path, lineno, rec.ev)
      end
      recs[#recs + 1] = rec
    end
  end
  if #recs == 0 then return nil, path .. ": empty journal" end
  return recs, truncated
end

-- Is some process writing this run now? (its journal's lock is held)
function Store:live(run_id)
  local f = io.open(self:journal_path(run_id), "r")
  if not f then return false end
  local ok, err = sys.flock(f)
  f:close() -- releases the lock we may have taken
  return not ok and err ~= nil and err.code == "sys.locked"
end

function Store:queue_path(run_id) return self.queue_dir .. "/" .. run_id .. ".json" end
function Store:cancel_path(run_id) return self.runs_dir .. "/" .. run_id .. ".cancel" end

local function read_json(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  local ok, v = pcall(json.decode, text or "")
  if ok and type(v) == "table" then return v end
  return nil
end

-- Writes a file whole: to a temporary name, then renamed over it (a reader sees the old file or
-- the new one, never half of one).
local function write_atomic(path, text)
  local tmp = path .. ".tmp" .. tostring(sys.getpid())
  local f = assert(io.open(tmp, "wb"))
  f:write(text)
  f:close()
  assert(os.rename(tmp, path))
end

-- A submitted run that has no journal yet (queued): made from its queue entry.
local function queued_run(sub)
  local tasks, order = {}, {}
  for _, name in ipairs(sub.tasks or {}) do
    tasks[name] = { state = "pending", attempts = 0 }
    order[#order + 1] = name
  end
  return { id = sub.run, workflow = sub.workflow, file = sub.file, hash = sub.hash,
    params = sub.params or {}, secret_params = sub.secret_params, started = sub.created,
    last_t = sub.created, state = "queued", tasks = tasks, task_order = order, resumed = 0,
    source = sub.source, kind = sub.kind, logical_date = sub.logical_date }
end

-- load(run_id) -> run (see replay.replay) with run.path and run.truncated, or nil and a message.
-- A submitted run not started yet is "queued".
function Store:load(run_id)
  local path = self:journal_path(run_id)
  if not sys.stat(path) then
    local sub = read_json(self:queue_path(run_id))
    if sub then return queued_run(sub) end
  end
  local recs, trunc = M.read(path)
  if not recs then
    local sub = read_json(self:queue_path(run_id))
    local st = sys.stat(path)
    if sub and st and st.size == 0 then
      -- claimed a moment ago: its first record is not written yet
      local q = queued_run(sub)
      if self:live(run_id) then q.state = "running" end
      return q
    end
    return nil, trunc
  end
  local run = replay.replay(recs)
  run.path, run.truncated, run.records = path, trunc, #recs
  if run.state == "running" and not self:live(run.id) then run.state = "interrupted" end
  local sub = read_json(self:queue_path(run_id))
  run.kind = recs[1].kind
  if sub then
    run.source, run.kind, run.logical_date = sub.source, sub.kind, sub.logical_date
    if self:requeued(sub) then run.state = "queued" end
  end
  return run
end

-- Is the queue entry a finished run queued again (store:fire's requeue) that no worker has
-- taken yet? (its journal has not grown since)
function Store:requeued(sub)
  if not sub.requeue_size then return false end
  local st = sys.stat(self:journal_path(sub.run))
  return st ~= nil and st.size == sub.requeue_size
end

-- records(run_id) -> the run's journal records, in order.
function Store:records(run_id)
  return (M.read(self:journal_path(run_id))) or {}
end

-- state(run_id) -> "queued" | "running" | "interrupted" | "success" | "failed" | "cancelled", and
-- the number of records, or nil.
function Store:state(run_id)
  local r = self:load(run_id)
  if not r then return nil end
  return r.state, r.records or 0
end

-- Every run, replayed (queued ones too), sorted by start time; journals that cannot be read are
-- {id, state = "damaged", error}.
function Store:all_runs()
  local names = sys.readdir(self.runs_dir) or {}
  local runs, seen = {}, {}
  for _, n in ipairs(names) do
    local id = n:match("^(.+)%.jsonl$")
    if id and not id:match("%.log$") then
      local run, err = self:load(id)
      seen[id] = true
      runs[#runs + 1] = run or { id = id, error = err, started = 0, state = "damaged",
        tasks = {}, task_order = {}, params = {}, resumed = 0 }
    end
  end
  for _, n in ipairs(sys.readdir(self.queue_dir) or {}) do
    local id = n:match("^(.+)%.json$")
    if id and not seen[id] then
      local sub = read_json(self.queue_dir .. "/" .. n)
      if sub then runs[#runs + 1] = queued_run(sub) end
    end
  end
  table.sort(runs, function(a, b)
    if (a.started or 0) ~= (b.started or 0) then return (a.started or 0) < (b.started or 0) end
    return tostring(a.id) < tostring(b.id)
  end)
  return runs
end

-- What a listing shows of a run (the summary columns of the PostgreSQL store).
local function summary_of(r)
  local ok_n, failed, total = 0, 0, 0
  for _, name in ipairs(r.task_order or {}) do
    local t = r.tasks[name]
    total = total + 1
    if t.state == "success" then ok_n = ok_n + 1 elseif t.state == "failed" then failed = failed + 1 end
  end
  return { id = r.id, workflow = r.workflow, state = r.state, kind = r.kind, created = r.started or 0,
    started = r.started or 0, finished = r.finished, last_t = r.last_t, exit = r.exit,
    reason = r.reason, tasks_total = total, tasks_succeeded = ok_n, tasks_failed = failed,
    resumed = r.resumed or 0, error = r.error, file = r.file, logical_date = r.logical_date }
end

-- The summaries of every run, from the listing cache (<runs>/.index.json) where a journal has
-- not changed since (same size and mtime), else by replaying it; the cache is rewritten when it
-- changed. A run that was running when it was cached is asked again whether it still is.
function Store:summaries()
  local index_path = self.runs_dir .. "/.index.json"
  local index = read_json(index_path)
  if not index or index.v ~= 1 or type(index.runs) ~= "table" then index = { v = 1, runs = {} } end
  local fresh, changed, out = {}, false, {}
  local subs = {}
  for _, n in ipairs(sys.readdir(self.queue_dir) or {}) do
    local id = n:match("^(.+)%.json$")
    if id then subs[id] = read_json(self.queue_dir .. "/" .. n) end
  end
  for _, n in ipairs(sys.readdir(self.runs_dir) or {}) do
    local id = n:match("^(.+)%.jsonl$")
    if id and not id:match("%.log$") then
      local st = sys.stat(self.runs_dir .. "/" .. n)
      local e = index.runs[id]
      local s
      if st and e and e.size == st.size and e.mtime == st.mtime and type(e.s) == "table" then
        s = e.s
        if s.state == "running" or s.state == "interrupted" then
          s.state = self:live(id) and "running" or "interrupted"
        end
      else
        local run, err = self:load(id)
        s = summary_of(run or { id = id, error = err, started = 0, state = "damaged", resumed = 0 })
        changed = true
      end
      if st then fresh[id] = { size = st.size, mtime = st.mtime, s = s } end
      local sub = subs[id]
      if sub and sub.requeue_size and st and st.size == sub.requeue_size then
        -- queued again (a backfill reprocessing its date): not kept so in the cache
        local q = {}
        for k, v in pairs(s) do q[k] = v end
        q.state, q.finished, q.exit, q.reason = "queued", nil, nil, nil
        s = q
      end
      out[#out + 1] = s
    end
  end
  for id in pairs(index.runs) do if not fresh[id] then changed = true end end
  for id, sub in pairs(subs) do
    if sub and not fresh[id] and not sys.stat(self:journal_path(id)) then
      out[#out + 1] = summary_of(queued_run(sub))
    end
  end
  if changed and sys.stat(self.runs_dir) then
    pcall(write_atomic, index_path, json.encode { v = 1, runs = fresh })
  end
  return out
end

-- runs(filter) -> summaries, next_cursor: as the PostgreSQL store's (see flowrun.engine.store).
function Store:runs(f)
  f = f or {}
  local desc = f.order == "desc"
  local want
  if f.state then
    want = {}
    for _, s in ipairs(type(f.state) == "table" and f.state or { f.state }) do want[s] = true end
  end
  local cur_c, cur_id
  if f.cursor then
    cur_c, cur_id = tostring(f.cursor):match("^([^/]+)/(.+)$")
    cur_c = tonumber(cur_c)
    if not cur_c then error("flowrun: a bad page cursor " .. tostring(f.cursor), 2) end
  end
  local all = {}
  for _, s in ipairs(self:summaries()) do
    local c = s.created or 0
    local keep = (not f.workflow or s.workflow == f.workflow) and (not want or want[s.state])
      and (not f.since or c >= f.since) and (not f.before or c < f.before)
    if keep and cur_c then
      if desc then keep = c < cur_c or (c == cur_c and s.id < cur_id)
      else keep = c > cur_c or (c == cur_c and s.id > cur_id) end
    end
    if keep then all[#all + 1] = s end
  end
  table.sort(all, function(a, b)
    local ca, cb = a.created or 0, b.created or 0
    if ca ~= cb then if desc then return ca > cb end return ca < cb end
    if desc then return tostring(a.id) > tostring(b.id) end
    return tostring(a.id) < tostring(b.id)
  end)
  local limit = f.limit
  if limit and #all > limit then
    local last = all[limit]
    for i = #all, limit + 1, -1 do all[i] = nil end
    return all, string.format("%.17g/%s", last.created or 0, last.id)
  end
  return all, nil
end

-- find(id) -> run by id, unique prefix, or "last"; or nil, message.
function Store:find(id)
  if not id then return nil, "expected a RUN_ID (see flowrun runs)" end
  if sys.stat(self:journal_path(id)) or sys.stat(self:queue_path(id)) then return self:load(id) end
  if id == "last" or id == "latest" then
    local runs = self:runs { order = "desc", limit = 1 }
    if #runs == 0 then return nil, "no runs in " .. self.runs_dir end
    if runs[1].error then return nil, runs[1].error end
    return self:load(runs[1].id)
  end
  local found = {}
  for _, r in ipairs(self:summaries()) do
    if tostring(r.id):sub(1, #id) == id then found[#found + 1] = r end
  end
  if #found == 1 then
    if found[1].error then return nil, found[1].error end
    return self:load(found[1].id)
  end
  if #found > 1 then return nil, "run id " .. id .. " is ambiguous (" .. #found .. " runs match)" end
  return nil, "no run " .. id .. " in " .. self.runs_dir
end

-- logs(run_id, {after = n}) -> list of {id, t, task, attempt, msg, truncated} in the order they
-- were written (id: the line's number), and the id of the last line.
function Store:logs(run_id, o)
  local out, after, n = {}, o and o.after or 0, 0
  local f = io.open(self:log_path(run_id), "r")
  if not f then return out, after end
  for line in f:lines() do
    n = n + 1
    if n > after then
      local ok, rec = pcall(json.decode, line)
      if ok and type(rec) == "table" and type(rec.msg) == "string" then
        rec.id = n
        out[#out + 1] = rec
      end
    end
  end
  f:close()
  return out, math.max(n, after)
end

---- workers on this machine -----------------------------------------------------------------------

-- with_lock(path, fn, ...) -> fn's results: fn runs holding an exclusive lock on the file at
-- path (made when missing), a lock held only for a moment (the store's, the shared simulated
-- world's): a process that finds it taken tries again shortly, waiting a little more each time.
-- The lock is let go however fn ends, and when the wait is cancelled.
function M.with_lock(path, fn, ...)
  local f = assert(io.open(path, "a"))
  local tries = 0
  while true do
    local ok, err = sys.flock(f)
    if ok then break end
    if not (err and err.code == "sys.locked") then
      f:close()
      error("cannot lock " .. path .. ": " .. tostring(err and err.message), 0)
    end
    tries = tries + 1
    -- a holder keeps it well under a millisecond
    local sok, serr = pcall(flow.sleep, math.min(0.0005 * tries, 0.02))
    if not sok then f:close() error(serr, 0) end
  end
  local r = table.pack(pcall(fn, ...))
  f:close()
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

-- Runs fn while holding the store's lock (<dir>/.lock).
function Store:locked(fn, ...)
  must("cannot create " .. self.dir, sys.mkdir_p(self.dir))
  return M.with_lock(self.dir .. "/.lock", fn, ...)
end

-- store:submit(o) -> run_id | nil, err: queues a run for the workers (see flowrun.engine.store).
local DATED = { scheduled = true, backfill = true }

local function date_key(t)
  return os.date("!%Y%m%dT%H%M%SZ", math.floor(t))
end

-- <dir>/dated/<workflow>/<date>.json: the scheduled or backfill run of that logical date.
function Store:dated_path(workflow, t)
  return self.dated_dir .. "/" .. workflow .. "/" .. date_key(t) .. ".json"
end

-- submit, the store's lock held.
function Store:submit_locked(o)
  local id = o.run_id or o.new_id()
  -- an id made here that is taken (another process made the same) is made again
  for _ = 1, 20 do
    if o.run_id or not (sys.stat(self:queue_path(id)) or sys.stat(self:journal_path(id))) then break end
    id = o.new_id()
  end
  if sys.stat(self:queue_path(id)) or sys.stat(self:journal_path(id)) then
    return nil, { code = "store.exists", message = "run " .. id .. " is already in " .. self.runs_dir }
  end
  local dated = o.logical_date and DATED[o.kind] and self:dated_path(o.workflow, o.logical_date)
  if dated then
    -- one scheduled or backfill run per (workflow, logical date)
    local had = read_json(dated)
    if had then
      return nil, { code = "store.exists", message = string.format(
        "a run of %s for that logical date is already in %s (%s)", o.workflow, self.runs_dir,
        tostring(had.run)) }
    end
  end
  must("cannot create " .. self.queue_dir, sys.mkdir_p(self.queue_dir))
  write_atomic(self:queue_path(id), json.encode { run = id, workflow = o.workflow,
    source = o.source, hash = o.hash, file = o.file, params = o.params or json.object {},
    secret_params = o.secret_params, tasks = o.tasks, sim = o.sim, kind = o.kind or "submitted",
    options = o.options, created = o.created or self.clock(), logical_date = o.logical_date,
    interval_start = o.interval_start, interval_end = o.interval_end })
  if self.fsync then sys.fsync_dir(self.queue_dir) end
  if dated then
    local d = dated:match("^(.*)/[^/]*$")
    must("cannot create " .. d, sys.mkdir_p(d))
    write_atomic(dated, json.encode { run = id, kind = o.kind, logical_date = o.logical_date,
      interval_end = o.interval_end })
    if self.fsync then sys.fsync_dir(d) end
  end
  return id
end

function Store:submit(o)
  return self:locked(self.submit_locked, self, o)
end

-- store:claim(worker_id, n, {sim}) -> claims (see flowrun.engine.store): queued runs (their
-- journal created and locked) and runs a dead worker left (their journal's lock free, no
-- run_finished), oldest first. A queue entry whose run finished is removed.
function Store:claim(worker_id, n, o)
  o = o or {}
  local names = sys.readdir(self.queue_dir)
  if not names or #names == 0 then return {} end
  return self:locked(function()
    local subs = {}
    for _, name in ipairs(names) do
      local id = name:match("^(.+)%.json$")
      local sub = id and read_json(self.queue_dir .. "/" .. name)
      if sub and (sub.sim ~= nil) == (o.sim == true) then subs[#subs + 1] = sub end
    end
    table.sort(subs, function(a, b)
      if (a.created or 0) ~= (b.created or 0) then return (a.created or 0) < (b.created or 0) end
      return a.run < b.run
    end)
    local out = {}
    for _, sub in ipairs(subs) do
      if #out >= n then break end
      local id = sub.run
      local c = { id = id, workflow = sub.workflow, source = sub.source, hash = sub.hash,
        file = sub.file, params = sub.params or {}, secret_params = sub.secret_params,
        tasks = sub.tasks, options = sub.options or {}, created = sub.created, kind = sub.kind,
        logical_date = sub.logical_date, interval_start = sub.interval_start,
        interval_end = sub.interval_end, takeovers = 0 }
      if not sys.stat(self:journal_path(id)) then
        local j = self:open_journal(id, true)
        if j then
          c.was, c.journal = "queued", j
          out[#out + 1] = c
        end
      elseif not self:live(id) then
        local run = self:load(id)
        if run and run.state == "queued" then
          -- a finished run queued again (a backfill reprocessing its date): resumed here
          local j = self:resume_run(run)
          if j then
            c.was, c.journal, c.run = "queued", j, run
            out[#out + 1] = c
          end
        elseif run and run.state ~= "interrupted" and run.state ~= "running" then
          sys.unlink(self:queue_path(id)) -- finished: nothing left to do
        elseif run then
          local j = self:resume_run(run, { keep_cancel = true })
          if j then
            c.was, c.journal, c.run = "running", j, run
            c.cancel_requested = sys.stat(self:cancel_path(id)) ~= nil
            if c.cancel_requested then
              sys.unlink(self:cancel_path(id))
              j.cancel_pending = true
            end
            out[#out + 1] = c
          end
        end
      end
    end
    return out
  end)
end

-- finished(run_id): a worker is done with a run (it finished): its queue entry goes, unless it
-- was queued again meanwhile (a backfill reprocessing its date) and nobody took it yet.
function Store:finished(run_id)
  self:locked(function()
    local sub = read_json(self:queue_path(run_id))
    if sub and self:requeued(sub) then return end
    sys.unlink(self:queue_path(run_id))
  end)
end

-- store:request_cancel(run_id) -> "cancelled" | "requested" | "requested-unheld" | nil, msg (see
-- flowrun.engine.store).
function Store:request_cancel(run_id)
  return self:locked(self.request_cancel_locked, self, run_id)
end

-- request_cancel, the store's lock held.
function Store:request_cancel_locked(run_id)
  do
    local has_journal = sys.stat(self:journal_path(run_id)) ~= nil
    local sub = read_json(self:queue_path(run_id))
    if not has_journal then
      if not sub then return nil, "no run " .. run_id .. " in " .. self.runs_dir end
      -- queued: it ends now, nothing ran
      local j = assert(self:open_journal(run_id, true))
      j:append { ev = "run_started", v = replay.VERSION, run = run_id, workflow = sub.workflow,
        file = sub.file, hash = sub.hash, params = sub.params, secret_params = sub.secret_params,
        tasks = sub.tasks, sim = sub.sim, kind = sub.kind, logical_date = sub.logical_date,
        data_interval = sub.interval_start and sub.interval_end
          and { sub.interval_start, sub.interval_end } or nil }
      j:append { ev = "run_finished", state = "cancelled", exit = 130,
        reason = "cancelled before it started (flowrun cancel)" }
      j:close()
      sys.unlink(self:queue_path(run_id))
      return "cancelled"
    end
    if self:live(run_id) then
      io.open(self:cancel_path(run_id), "w"):close()
      return "requested"
    end
    local run, err = self:load(run_id)
    if not run then return nil, err end
    if run.state == "queued" and sub then
      -- queued again by a backfill, not taken yet: it stays as it had ended
      sys.unlink(self:queue_path(run_id))
      return "cancelled"
    end
    if run.state ~= "interrupted" then
      return nil, string.format("run %s already ended (%s)", run_id, run.state)
    end
    if sub then
      io.open(self:cancel_path(run_id), "w"):close()
      return "requested-unheld"
    end
    return nil, string.format("run %s is interrupted: no process runs it, so there is nothing to "
      .. "cancel (flowrun resume %s continues it)", run_id, run_id)
  end
end

local Watcher = {}
Watcher.__index = Watcher

-- store:watch([{ticks = false}]) -> w: w:wait(timeout) -> a list of {kind, run}: "queued" (run:
-- the run) when a run was submitted, queued again or handed back, "finished" when it left the
-- queue (it ended), "paused" / "unpaused" (run: the workflow) when a schedule was paused or
-- unpaused, "reconnected" when changes may have been missed (look at everything again); nil on
-- timeout. The kernel says when the directories change (flow.watch). Where it cannot be asked,
-- the queue directory is polled (its changes are "queued", without a run) and "tick" comes
-- every second unless ticks = false (callers look again). A dead worker's run is found by
-- looking (its journal's lock is free; nothing changes in the queue): workers look every poll.
function Store:watch(o)
  local w = setmetatable({ store = self, last = nil, ticked = flow.now(),
    ticks = not (o and o.ticks == false) }, Watcher)
  local fs = require("flow.watch").new()
  if sys.mkdir_p(self.queue_dir) and sys.mkdir_p(self.schedules_dir) and fs:add(self.queue_dir)
      and fs:add(self.schedules_dir) then
    w.fs = fs
  else
    fs:close()
  end
  return w
end

-- w:push(kind): wakes the waiting task (a worker whose run ended looks for another at once).
function Watcher:push(kind, run)
  self.pushed = self.pushed or {}
  self.pushed[#self.pushed + 1] = { kind = kind, run = run }
  if self.fs then self.fs:wake() end
end

-- What the kernel said changed, as notes.
function Watcher:notes(changes)
  local out, seen = {}, {}
  local store = self.store
  for _, c in ipairs(changes) do
    if c.dir == store.queue_dir then
      local id = c.name and c.name:match("^(.+)%.json$")
      if not c.name then
        out[#out + 1] = { kind = "reconnected" }
      elseif id and not seen[id] then
        seen[id] = true
        out[#out + 1] = { kind = sys.stat(store.queue_dir .. "/" .. c.name) and "queued" or "finished",
          run = id }
      end
    else
      local wf = c.name and c.name:match("^(.+)%.json$")
      if wf and not seen[wf] then
        seen[wf] = true
        local sch = read_json(store.schedules_dir .. "/" .. c.name)
        out[#out + 1] = { kind = sch and sch.paused and "paused" or "unpaused", run = wf }
      end
    end
  end
  if changes.overflow then out[#out + 1] = { kind = "reconnected" } end
  return out
end

function Watcher:wait(timeout)
  local deadline = flow.now() + (timeout or math.huge)
  while true do
    if self.pushed then
      local q = self.pushed
      self.pushed = nil
      return q
    end
    if self.fs then
      local notes = self:notes((self.fs:wait(deadline < math.huge
        and math.max(0, deadline - flow.now()) or nil)))
      if self.pushed then
        for _, n in ipairs(notes) do self.pushed[#self.pushed + 1] = n end
        notes, self.pushed = self.pushed, nil
      end
      if #notes > 0 then return notes end
    else
      local st = sys.stat(self.store.queue_dir)
      local stamp = st and st.mtime or 0
      if self.last == nil then self.last = stamp end
      if stamp ~= self.last then
        self.last = stamp
        return { { kind = "queued" } }
      end
    end
    if not self.fs and self.ticks and flow.now() - self.ticked >= 1 then
      self.ticked = flow.now()
      return { { kind = "tick" } }
    end
    if flow.now() >= deadline then return nil end
    if not self.fs then flow.sleep(math.min(0.05, math.max(0, deadline - flow.now()))) end
  end
end

function Watcher:close()
  if self.fs then
    self.fs:close()
    self.fs = nil
  end
end

---- schedules (flowrun.schedule.scheduler, flowrun backfill, flowrun pause) ---------------------

function Store:schedule_path(workflow) return self.schedules_dir .. "/" .. workflow .. ".json" end

-- The end of the latest interval with a scheduled run (its dated marker), or nil.
function Store:last_scheduled_end(workflow)
  local names = sys.readdir(self.dated_dir .. "/" .. workflow) or {}
  for i = #names, 1, -1 do
    if names[i]:match("^%d+T%d+Z%.json$") then
      local m = read_json(self.dated_dir .. "/" .. workflow .. "/" .. names[i])
      if m and m.kind == "scheduled" then return m.interval_end end
    end
  end
  return nil
end

function Store:schedule_state(workflow)
  local sch = read_json(self:schedule_path(workflow)) or {}
  local h1, h2 = sch.handled_end, self:last_scheduled_end(workflow)
  local handled = h1 and h2 and math.max(h1, h2) or h1 or h2
  return { paused = sch.paused == true, paused_at = sch.paused_at, paused_by = sch.paused_by,
    handled_end = handled, skipped = sch.skipped or 0, last_skipped = sch.last_skipped }
end

-- store:schedule_states(names) -> as the PostgreSQL store's (see flowrun.engine.store).
function Store:schedule_states(names, o)
  local out, want = {}, {}
  for _, n in ipairs(names) do
    out[n] = self:schedule_state(n)
    want[n] = true
  end
  if next(want) and not (o and o.last == false) then
    local latest = {}
    for _, r in ipairs(self:summaries()) do
      local cur = latest[r.workflow]
      if want[r.workflow] and (not cur or (r.created or 0) > (cur.created or 0)
          or ((r.created or 0) == (cur.created or 0) and r.id > cur.id)) then
        latest[r.workflow] = r
      end
    end
    for n, r in pairs(latest) do
      out[n].last = { id = r.id, state = r.state, kind = r.kind, created = r.created,
        finished = r.finished, logical_date = r.logical_date }
    end
  end
  return out
end

-- The state of a run a queue entry stands for: queued (no journal yet, or queued again), running
-- (held, or interrupted: a worker takes it over), or its end.
function Store:queue_state(sub)
  if not sys.stat(self:journal_path(sub.run)) then return "queued" end
  if self:requeued(sub) then return "queued" end
  if self:live(sub.run) then return "running" end
  local run = self:load(sub.run)
  if not run then return "damaged" end
  if run.state == "interrupted" then return "running" end
  return run.state
end

-- store:active_runs(workflow) -> the runs max_active_runs counts: here, the runs handed to
-- workers (scheduled, backfill, submitted) that have not finished. (A `flowrun run` in a
-- terminal is not counted by the file store.)
function Store:active_runs(workflow)
  local out = {}
  for _, n in ipairs(sys.readdir(self.queue_dir) or {}) do
    local sub = n:match("%.json$") and read_json(self.queue_dir .. "/" .. n)
    if sub and sub.workflow == workflow and sub.run then
      local st = self:queue_state(sub)
      if st == "queued" or st == "running" then
        out[#out + 1] = { id = sub.run, kind = sub.kind, state = st, created = sub.created,
          cancel_requested = sys.stat(self:cancel_path(sub.run)) ~= nil,
          logical_date = sub.logical_date }
      end
    end
  end
  table.sort(out, function(a, b)
    if (a.created or 0) ~= (b.created or 0) then return (a.created or 0) < (b.created or 0) end
    return a.id < b.id
  end)
  return out
end

-- store:dated_runs(workflow, from, to) -> as the PostgreSQL store's (see flowrun.engine.store).
function Store:dated_runs(workflow, from, to)
  local out = {}
  local dir = self.dated_dir .. "/" .. workflow
  local lo, hi = date_key(from), date_key(to)
  for _, n in ipairs(sys.readdir(dir) or {}) do
    local key = n:match("^(%d+T%d+Z)%.json$")
    if key and key >= lo and key <= hi then
      local m = read_json(dir .. "/" .. n)
      if m and m.run and m.logical_date >= from and m.logical_date <= to then
        local run = self:load(m.run)
        local e = { id = m.run, kind = m.kind, logical_date = m.logical_date,
          interval_end = m.interval_end, state = run and run.state or "damaged" }
        if run then
          local ok_n, failed, total = 0, 0, 0
          for _, name in ipairs(run.task_order or {}) do
            local t = run.tasks[name]
            total = total + 1
            if t.state == "success" then ok_n = ok_n + 1 elseif t.state == "failed" then failed = failed + 1 end
          end
          e.created, e.started, e.finished, e.exit, e.reason = run.started, run.started,
            run.finished, run.exit, run.reason
          e.tasks_total, e.tasks_succeeded, e.tasks_failed = total, ok_n, failed
          e.cancel_requested = sys.stat(self:cancel_path(m.run)) ~= nil
        end
        out[#out + 1] = e
      end
    end
  end
  return out
end

-- Rewrites a schedule's state file, the store's lock held.
function Store:write_schedule(workflow, fn)
  local path = self:schedule_path(workflow)
  local sch = read_json(path) or { workflow = workflow }
  local r = fn(sch)
  must("cannot create " .. self.schedules_dir, sys.mkdir_p(self.schedules_dir))
  write_atomic(path, json.encode(sch))
  if self.fsync then sys.fsync_dir(self.schedules_dir) end
  return r
end

-- store:set_paused(workflow, paused, who) -> whether it was paused before.
function Store:set_paused(workflow, paused, who)
  return self:locked(function()
    return self:write_schedule(workflow, function(sch)
      local was = sch.paused == true
      sch.paused = paused == true
      sch.paused_at = paused and self.clock() or nil
      sch.paused_by = paused and who or nil
      return was
    end)
  end)
end

-- store:fire(workflow, decide) -> result: as the PostgreSQL store's (see flowrun.engine.store),
-- under the store's lock.
function Store:fire(workflow, decide)
  return self:locked(function()
    local st = self:schedule_state(workflow)
    local view = { paused = st.paused, handled_end = st.handled_end, skipped = st.skipped,
      active = self:active_runs(workflow),
      dated = function(lo, hi) return self:dated_runs(workflow, lo, hi) end }
    local plan = decide(view) or {}
    local out = { submitted = {}, existed = {}, requeued = {}, cancelled = {} }
    for _, o in ipairs(plan.submit or {}) do
      local id, err = self:submit_locked(o)
      if id then out.submitted[#out.submitted + 1] = id
      elseif err and err.code == "store.exists" then out.existed[#out.existed + 1] = o.run_id
      else error(err, 0) end
    end
    for _, r in ipairs(plan.requeue or {}) do
      if self:requeue_locked(r) then out.requeued[#out.requeued + 1] = r.id end
    end
    local h = plan.handled
    if h and (h.handled_end or (h.skipped or 0) > 0) then
      self:write_schedule(workflow, function(sch)
        if h.handled_end and (not sch.handled_end or h.handled_end > sch.handled_end) then
          sch.handled_end = h.handled_end
        end
        sch.skipped = (sch.skipped or 0) + (h.skipped or 0)
        if h.last_skipped and (not sch.last_skipped or h.last_skipped > sch.last_skipped) then
          sch.last_skipped = h.last_skipped
        end
      end)
    end
    for _, id in ipairs(plan.cancel or {}) do
      if self:request_cancel_locked(id) then out.cancelled[#out.cancelled + 1] = id end
    end
    return out
  end)
end

-- store:requeue{id, options = {rerun}, source, hash} -> true | nil, msg (see store/pg.lua). The
-- file store keeps no source of a finished run: source is required.
function Store:requeue(r)
  assert(r.source, "store:requeue: the file store needs the workflow's source")
  return self:locked(function()
    if self:requeue_locked(r) then return true end
    local run = self:load(r.id)
    if not run then return nil, "no run " .. r.id .. " in " .. self.runs_dir end
    return nil, string.format("run %s is %s: only a finished run can be queued again", r.id,
      run.state)
  end)
end

-- A finished run queued again, the store's lock held: its queue entry is written anew (with the
-- workflow's source and hash given, and options such as rerun), remembering the journal's size,
-- so a worker resumes it. A run that is queued or running is left alone (false).
function Store:requeue_locked(r)
  if read_json(self:queue_path(r.id)) then return false end
  local run = self:load(r.id)
  if not run or run.state == "running" or run.state == "interrupted" or run.state == "queued"
      or run.state == "damaged" then
    return false
  end
  local recs = M.read(self:journal_path(r.id))
  local first = recs and recs[1] or {}
  local st = sys.stat(self:journal_path(r.id))
  local options = {}
  if r.options then for k, v in pairs(r.options) do options[k] = v end end
  must("cannot create " .. self.queue_dir, sys.mkdir_p(self.queue_dir))
  write_atomic(self:queue_path(r.id), json.encode { run = r.id, workflow = run.workflow,
    source = r.source, hash = r.hash or run.hash, file = run.file,
    params = run.params or json.object {}, secret_params = run.secret_params,
    tasks = first.tasks, sim = run.sim, kind = first.kind or run.kind, options = options,
    created = run.started, logical_date = run.logical_date,
    interval_start = run.data_interval and run.data_interval[1],
    interval_end = run.data_interval and run.data_interval[2], requeue_size = st and st.size })
  sys.unlink(self:cancel_path(r.id))
  if self.fsync then sys.fsync_dir(self.queue_dir) end
  return true
end

-- register_worker(w): a worker says it is alive: <dir>/workers/<id>.json, locked while it lives.
function Store:register_worker(w)
  must("cannot create " .. self.workers_dir, sys.mkdir_p(self.workers_dir))
  local path = self.workers_dir .. "/" .. w.id .. ".json"
  local f = assert(io.open(path, "w"))
  must("cannot lock " .. path, sys.flock(f))
  self.worker_files[w.id] = { f = f, path = path, started = self.clock() }
  self:worker_heartbeat(w)
end

function Store:worker_heartbeat(w, state)
  local e = self.worker_files[w.id]
  if not e then return end
  if state == "stopped" then
    e.f:close()
    sys.unlink(e.path)
    self.worker_files[w.id] = nil
    return
  end
  e.f:seek("set")
  sys.truncate(e.f, 0)
  e.f:write(json.encode { id = w.id, hostname = w.hostname, pid = w.pid, version = w.version,
    concurrency = w.concurrency, sim = w.sim or false, lease = w.lease, state = state or "running",
    running = w.running or 0, runs = json.array(w.run_ids or {}), started = e.started,
    heartbeat = self.clock() })
  e.f:flush()
end

-- workers() -> the live workers (their file still locked); files dead workers left are removed.
function Store:workers()
  local out = {}
  for _, n in ipairs(sys.readdir(self.workers_dir) or {}) do
    local path = self.workers_dir .. "/" .. n
    if n:match("%.json$") then
      local f = io.open(path, "r")
      if f then
        local free = sys.flock(f)
        if free then
          sys.unlink(path)
        else
          local w = read_json(path)
          if w then
            w.live, w.age = true, self.clock() - (w.heartbeat or 0)
            out[#out + 1] = w
          end
        end
        f:close()
      end
    end
  end
  table.sort(out, function(a, b) return (a.started or 0) < (b.started or 0) end)
  return out
end

return M
