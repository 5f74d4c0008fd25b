-- flow.journal — the durable record of a run: one JSON object per line in
-- <state_dir>/runs/<run_id>.jsonl, appended as states change, and the replay that turns a
-- journal back into the run's state (for `runs`, `show`, `resume` and `graph --run`).
--
-- Durability: records are buffered by append() and written by commit(), which writes the
-- buffer in one write, flushes and fsyncs before returning. The engine commits before it acts
-- on a change (starting downstream tasks, retrying, exiting), so changes that happen together
-- share one fsync (group commit).
--
-- Record shapes ("ev" field):
--   run_started  {run, workflow, file, hash, params, secret_params, pid, v, tasks = {names},
--                 sim = {fail = {specs}} when the run answers AWS from the simulator}
--   run_resumed  {hash, pid, forced}
--   task_started {task, attempt}
--   task_succeeded {task, attempt, result}
--   task_failed  {task, attempt, error = {code, message}, state = "failed" | "cancelled"}
--   task_retry   {task, attempt, delay, error}
--   task_skipped {task, state = "skipped" | "upstream_failed" | "cancelled"}
--   run_finished {state = "success" | "failed" | "cancelled", exit, reason}
-- Every record has "t" (wall-clock seconds, following virtual time) and "ev".
local json = require "json"

local M = {}
M.VERSION = 1

local function core()
  local ok, c = pcall(require, "flow.core")
  return ok and c or nil
end

local Writer = {}
Writer.__index = Writer

local function mkdir_p(path)
  local c = core()
  if c and c.mkdir then
    local acc = path:sub(1, 1) == "/" and "" or "."
    for part in path:gmatch("[^/]+") do
      acc = acc .. "/" .. part
      c.mkdir(acc)
    end
    return
  end
  -- no mkdir primitive: the shell does it (once per run, before anything starts)
  os.execute("mkdir -p '" .. path:gsub("'", "'\\''") .. "'")
end
M.mkdir_p = mkdir_p

function M.runs_dir(state_dir)
  return (state_dir or ".flowrun") .. "/runs"
end

function M.path(state_dir, run_id)
  return M.runs_dir(state_dir) .. "/" .. run_id .. ".jsonl"
end

-- lock(path) -> a lock held until it is closed or the process ends, or nil, message when
-- another flowrun process is running (or resuming) this run. The lock is on path .. ".lock"
-- (the journal itself may be replaced when a cut last line is repaired).
function M.lock(path)
  local dir = path:match("^(.*)/[^/]*$")
  if dir then mkdir_p(dir) end
  local f, err = io.open(path .. ".lock", "a")
  if not f then return nil, "cannot open the run's lock file: " .. tostring(err) end
  local ok = core().flock(f)
  if not ok then
    f:close()
    return nil, "another flowrun process is running this run (" .. path .. ".lock is held)"
  end
  return f
end

-- open(path, {fsync = bool}) -> writer appending to path (created when missing).
function M.open(path, o)
  o = o or {}
  local dir = path:match("^(.*)/[^/]*$")
  if dir then mkdir_p(dir) end
  -- a last line cut by a crash is dropped before appending (else the next record would be
  -- glued to it): the file is rewritten without it and renamed into place
  local old = io.open(path, "rb")
  if old then
    local text = old:read("a")
    old:close()
    if #text > 0 and text:sub(-1) ~= "\n" then
      local keep = text:match("^(.*\n)") or ""
      local tmp = path .. ".tmp"
      local tf = assert(io.open(tmp, "wb"))
      tf:write(keep)
      tf:flush()
      local c = core()
      if c and c.fsync then c.fsync(tf) end
      tf:close()
      assert(os.rename(tmp, path))
    end
  end
  local existed = io.open(path, "r")
  if existed then existed:close() end
  local f, err = io.open(path, "a")
  if not f then error("journal: cannot open " .. tostring(err), 2) end
  f:setvbuf("full", 1 << 16)
  local c = core()
  if not existed and o.fsync ~= false and c and c.fsync then
    -- a new file: make its directory entry durable too
    local d = io.open(dir or ".", "r")
    if d then
      pcall(c.fsync, d)
      d:close()
    end
  end
  local w = setmetatable({
    f = f, path = path, buf = {}, n = 0, fsync = o.fsync ~= false,
    fsync_fn = c and c.fsync, commits = 0, syncs = 0, records = 0,
    clock = o.clock,
  }, Writer)
  return w
end

-- w:append(rec): buffers a record (a table with ev); sets rec.t when missing. Raises when the
-- record cannot be encoded (the caller turns that into a task failure).
function Writer:append(rec)
  if not rec.t then rec.t = self.clock and self.clock() or os.time() end
  local line = json.encode(rec)
  self.n = self.n + 1
  self.buf[self.n] = line
  return line
end

-- w:commit(): writes what is buffered, flushes and fsyncs. Does nothing when nothing is
-- buffered. The write happens in one call so that a crash cuts at most the last line.
function Writer:commit()
  if self.n == 0 then return end
  local data = table.concat(self.buf, "\n", 1, self.n) .. "\n"
  self.records = self.records + self.n
  self.buf, self.n = {}, 0
  local ok, err = self.f:write(data)
  if not ok then error("journal: cannot write " .. self.path .. ": " .. tostring(err)) end
  self.f:flush()
  self.commits = self.commits + 1
  if self.fsync and self.fsync_fn then
    self.fsync_fn(self.f)
    self.syncs = self.syncs + 1
  end
end

function Writer:close()
  if self.f then
    self:commit()
    self.f:close()
    self.f = nil
  end
end

-- read(path) -> list of records, or nil and a message naming the file and line. A last line
-- without its newline that does not parse (a write cut by a crash) is dropped; any other line
-- that does not parse is an error.
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
    if line:match("^%s*$") then
      if not nl then break end
    else
      local ok, rec = pcall(json.decode, line)
      if not ok or type(rec) ~= "table" or type(rec.ev) ~= "string" then
        if not nl then
          truncated = true
          break
        end
        return nil, string.format("%s:%d: damaged journal line (%s)", path, lineno,
          ok and "not a journal record" or tostring(rec):gsub("\n", " "))
      end
      recs[#recs + 1] = rec
    end
  end
  if #recs == 0 then return nil, path .. ": empty journal" end
  if recs[1].ev ~= "run_started" then
    return nil, string.format("%s:1: expected a run_started record, got %q", path, recs[1].ev)
  end
  return recs, truncated
end

local FINAL = { success = true, failed = true, upstream_failed = true, skipped = true,
  cancelled = true }
M.FINAL = FINAL

-- replay(records) -> run: {id, workflow, file, hash, params, started, finished, state,
-- exit, tasks = {name -> {state, attempts, result, error, started, finished, duration,
-- history = {{attempt, error, delay | state}} (failed attempts, across resumes)}},
-- resumed = count, pid}. Tasks that were started and not finished replay as "running";
-- a run with no run_finished after its last start is "running" (the caller tells a live run
-- from a crashed one).
function M.replay(recs)
  local first = recs[1]
  local run = {
    id = first.run, workflow = first.workflow, file = first.file, hash = first.hash,
    params = first.params or {}, secret_params = first.secret_params, started = first.t,
    pid = first.pid, tasks = {}, state = "running", resumed = 0, last_t = first.t,
    task_order = {}, sim = first.sim,
  }
  local function task(name)
    local t = run.tasks[name]
    if not t then
      t = { state = "pending", attempts = 0 }
      run.tasks[name] = t
      run.task_order[#run.task_order + 1] = name
    end
    return t
  end
  -- the task list (in dependency order) when the run recorded it: tasks that never started
  -- are shown as pending
  if type(first.tasks) == "table" then
    for _, name in ipairs(first.tasks) do task(name) end
  end
  for i = 2, #recs do
    local r = recs[i]
    local ev = r.ev
    run.last_t = r.t or run.last_t
    if ev == "task_started" then
      local t = task(r.task)
      t.state, t.attempts, t.error = "running", r.attempt or (t.attempts + 1), nil
      if not t.started or t.state_reset then t.started, t.state_reset = r.t, nil end
      t.attempt_started = r.t
      t.finished = nil
    elseif ev == "task_succeeded" then
      local t = task(r.task)
      t.state, t.result, t.finished, t.error = "success", r.result, r.t, nil
      t.attempts = r.attempt or t.attempts
    elseif ev == "task_failed" then
      local t = task(r.task)
      t.state, t.error, t.finished = r.state or "failed", r.error, r.t
      t.history = t.history or {}
      t.history[#t.history + 1] = { attempt = r.attempt, error = r.error, state = t.state }
      t.attempts = r.attempt or t.attempts
    elseif ev == "task_retry" then
      local t = task(r.task)
      t.state, t.error = "up_for_retry", r.error
      t.retries = (t.retries or 0) + 1
      t.history = t.history or {}
      t.history[#t.history + 1] = { attempt = r.attempt, error = r.error, delay = r.delay }
    elseif ev == "task_skipped" then
      local t = task(r.task)
      t.state, t.finished = r.state or "skipped", r.t
      t.started = t.started or r.t
    elseif ev == "run_resumed" then
      run.resumed = run.resumed + 1
      run.state, run.exit, run.finished, run.reason = "running", nil, nil, nil
      run.hash_now = r.hash
      run.pid = r.pid or run.pid
      -- states of unfinished tasks are decided again by the resumed run
      for _, t in pairs(run.tasks) do
        if t.state ~= "success" then t.state, t.state_reset = "pending", true end
      end
    elseif ev == "run_finished" then
      run.state, run.exit, run.finished, run.reason = r.state, r.exit, r.t, r.reason
    end
  end
  for _, t in pairs(run.tasks) do
    if t.started and t.finished then t.duration = t.finished - t.started end
  end
  return run
end

-- load(path) -> run (see replay) with run.path and run.truncated, or nil and a message.
function M.load(path)
  local recs, trunc = M.read(path)
  if not recs then return nil, trunc end
  local run = M.replay(recs)
  run.path, run.truncated, run.records = path, trunc, #recs
  return run
end

-- Is process `pid` alive and a flowrun? (Linux /proc; a run whose process is gone was
-- interrupted; the command line check keeps a recycled pid from passing for the run.)
function M.pid_alive(pid)
  pid = math.tointeger(pid)
  if not pid then return false end
  local f = io.open("/proc/" .. pid .. "/cmdline", "rb")
  if not f then return false end
  local cmd = f:read("a") or ""
  f:close()
  return cmd:find("flowrun", 1, true) ~= nil
end

function M.self_pid()
  local ok, sys = pcall(require, "flow.sys")
  if ok and sys.getpid then return sys.getpid() end
  local f = io.open("/proc/self/stat", "r")
  if not f then return nil end
  local s = f:read("l")
  f:close()
  return tonumber(s:match("^(%d+)"))
end

-- list(state_dir) -> runs sorted by start time (newest last); each from load(); journals that
-- cannot be read are returned with run.error set.
function M.list(state_dir)
  local dir = M.runs_dir(state_dir)
  local names = {}
  local c = core()
  if c and c.readdir then
    for _, n in ipairs(c.readdir(dir) or {}) do names[#names + 1] = n end
  else
    local p = io.popen("ls -1 '" .. dir:gsub("'", "'\\''") .. "' 2>/dev/null")
    if p then
      for n in p:lines() do names[#names + 1] = n end
      p:close()
    end
  end
  local runs = {}
  for _, n in ipairs(names) do
    if n:match("%.jsonl$") then
      local path = dir .. "/" .. n
      local run, err = M.load(path)
      if run then
        runs[#runs + 1] = run
      else
        runs[#runs + 1] = { id = n:gsub("%.jsonl$", ""), error = err, started = 0,
          path = path, state = "damaged", tasks = {}, task_order = {} }
      end
    end
  end
  table.sort(runs, function(a, b)
    if (a.started or 0) ~= (b.started or 0) then return (a.started or 0) < (b.started or 0) end
    return tostring(a.id) < tostring(b.id)
  end)
  return runs
end

-- A cheap change detector for the workflow file (FNV-1a, 64 bits, hex). Not a security hash:
-- it only tells `resume` whether the file was edited since the run started.
function M.hash_text(s)
  local h = -3750763034362895579 -- 0xcbf29ce484222325
  local prime = 1099511628211
  for i = 1, #s, 4 do
    local a, b, c, d = s:byte(i, i + 3)
    h = (h ~ a) * prime
    if b then h = (h ~ b) * prime end
    if c then h = (h ~ c) * prime end
    if d then h = (h ~ d) * prime end
  end
  return string.format("fnv1a64:%016x", h)
end

function M.hash_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return M.hash_text(s)
end

return M
