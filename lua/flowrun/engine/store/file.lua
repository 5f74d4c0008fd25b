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
    fsync = o.fsync ~= false, clock = o.clock or os.time }, Store)
end

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
  return setmetatable({ f = f, path = path, run_id = run_id, store = self, buf = {}, n = 0,
    fsync = self.fsync, commits = 0, syncs = 0, records = 0, clock = self.clock,
    logs = nil, log_bytes = {} }, Journal)
end

-- j:append(rec): buffers a record (a table with ev); sets rec.t when missing. Raises when the
-- record cannot be encoded (the engine turns that into a task failure).
function Journal:append(rec)
  if not rec.t then rec.t = self.clock() end
  local line = json.encode(rec)
  self.n = self.n + 1
  self.buf[self.n] = line
  return line
end

-- j:commit(): writes what is buffered, flushes and fsyncs. Does nothing when nothing is
-- buffered. The write happens in one call so that a crash cuts at most the last line.
function Journal:commit()
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

-- j:close(): commits and releases the run's lock.
function Journal:close()
  if self.f then
    self:commit()
    self.f:close()
    self.f = nil
  end
  if self.logs then
    self.logs:close()
    self.logs = nil
  end
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

-- store:resume_run(run) -> journal appending to an existing run, or nil, err.
function Store:resume_run(run)
  return self:open_journal(run.id, false)
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

-- load(run_id) -> run (see replay.replay) with run.path and run.truncated, or nil and a message.
function Store:load(run_id)
  local path = self:journal_path(run_id)
  local recs, trunc = M.read(path)
  if not recs then return nil, trunc end
  local run = replay.replay(recs)
  run.path, run.truncated, run.records = path, trunc, #recs
  if run.state == "running" and not self:live(run.id) then run.state = "interrupted" end
  return run
end

-- runs() -> every run sorted by start time (newest last); journals that cannot be read are
-- returned as {id, state = "damaged", error}.
function Store:runs()
  local names = sys.readdir(self.runs_dir) or {}
  local runs = {}
  for _, n in ipairs(names) do
    local id = n:match("^(.+)%.jsonl$")
    if id and not id:match("%.log$") then
      local run, err = self:load(id)
      runs[#runs + 1] = run or { id = id, error = err, started = 0, state = "damaged",
        tasks = {}, task_order = {}, params = {}, resumed = 0 }
    end
  end
  table.sort(runs, function(a, b)
    if (a.started or 0) ~= (b.started or 0) then return (a.started or 0) < (b.started or 0) end
    return tostring(a.id) < tostring(b.id)
  end)
  return runs
end

-- find(id) -> run by id, unique prefix, or "last"; or nil, message.
function Store:find(id)
  if not id then return nil, "expected a RUN_ID (see flowrun runs)" end
  if sys.stat(self:journal_path(id)) then return self:load(id) end
  local runs = self:runs()
  if id == "last" or id == "latest" then
    if #runs == 0 then return nil, "no runs in " .. self.runs_dir end
    local r = runs[#runs]
    if r.error then return nil, r.error end
    return r
  end
  local found = {}
  for _, r in ipairs(runs) do
    if tostring(r.id):sub(1, #id) == id then found[#found + 1] = r end
  end
  if #found == 1 then
    if found[1].error then return nil, found[1].error end
    return found[1]
  end
  if #found > 1 then return nil, "run id " .. id .. " is ambiguous (" .. #found .. " runs match)" end
  return nil, "no run " .. id .. " in " .. self.runs_dir
end

-- logs(run_id) -> list of {t, task, attempt, msg}, in the order they were written.
function Store:logs(run_id)
  local out = {}
  local f = io.open(self:log_path(run_id), "r")
  if not f then return out end
  for line in f:lines() do
    local ok, rec = pcall(json.decode, line)
    if ok and type(rec) == "table" and type(rec.msg) == "string" then out[#out + 1] = rec end
  end
  f:close()
  return out
end

return M
