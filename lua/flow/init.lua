-- flow — the async core as workflows see it: tasks, waiting, cancellation, time.
--
-- The primitives live in C (flow.core: spawn, sleep, wait_any, shield, clocks); what is
-- policy lives here: how all/any/timeout combine them. Every waiting call suspends only the
-- running task.
--
-- Cancellation: h:cancel() (or a signal, or a timeout) makes the task's current wait raise
-- the error object { code = "flow.cancelled" }. A cancelled task stays cancelled: every later
-- wait in it raises again (a pcall cannot make it carry on) and it ends "cancelled" even if
-- its body returns. Cleanup that must wait runs inside flow.shield:
--
--   local ok, err = pcall(work)
--   flow.shield(function() emr.terminate(cluster_id) end)   -- runs even when cancelled
--   if not ok then error(err, 0) end
--
-- `<close>` variables are closed when a task fails or is cancelled; their __close methods
-- run outside any task (they cannot wait), so waiting cleanup belongs in flow.shield.
local core = require "flow.core"

local M = {}

M.spawn = core.spawn
M.sleep = core.sleep
M.now = core.now
M.time = core.time
M.shield = core.shield
M.current = core.current
M.error = core.error
M.is_error = core.is_error
M.cancelled = core.cancelled
M.wait_any = core.wait_any
M.wait_all = core.wait_all
M.core = core

local wait_any, wait_all, spawn, shield = core.wait_any, core.wait_all, core.spawn, core.shield

-- Cancel every handle in hs except those already done, then wait for them to finish so their
-- cleanups have run before we go on (shielded: we may be cancelled ourselves).
local function cancel_and_drain(hs)
  for _, h in ipairs(hs) do h:cancel() end
  shield(function()
    for _, h in ipairs(hs) do
      if not h:done() then wait_any({ h }) end
    end
  end)
end
M.cancel_and_drain = cancel_and_drain

local function check_handles(hs, fname)
  if type(hs) ~= "table" then
    error(("bad argument #1 to '%s' (a list of task handles expected, got %s)"):format(fname, type(hs)), 3)
  end
end

-- flow.all(handles) -> array of each task's first result, in the order given.
-- Waits for all; when one fails, the others are cancelled and its error is raised.
function M.all(hs)
  check_handles(hs, "all")
  local ok, failed = pcall(wait_all, hs)
  if not ok then cancel_and_drain(hs); error(failed, 0) end
  if failed then
    local err = select(2, hs[failed]:result())
    cancel_and_drain(hs)
    error(err, 0)
  end
  return core.first_results(hs)
end

-- flow.any(handles) -> index, results... of the first task to succeed; the rest are
-- cancelled. When every task fails, raises the last error.
function M.any(hs)
  check_handles(hs, "any")
  local pending, index = {}, {}
  for i, h in ipairs(hs) do pending[#pending + 1] = h; index[#pending] = i end
  if #pending == 0 then error("bad argument #1 to 'any' (no tasks)", 2) end
  local last_err
  while #pending > 0 do
    local ok, k = pcall(wait_any, pending)
    if not ok then cancel_and_drain(pending); error(k, 0) end
    local h, i = pending[k], index[k]
    table.remove(pending, k)
    table.remove(index, k)
    local r = table.pack(h:result())
    if r[1] then
      cancel_and_drain(pending)
      return i, table.unpack(r, 2, r.n)
    end
    last_err = r[2]
  end
  error(last_err, 0)
end

-- flow.timeout(seconds | "30s", fn, ...) -> fn's results, or raises { code = "flow.timeout",
-- retryable = true } once the time is up; fn's work is cancelled (and its cleanups have run)
-- before the error is raised. fn runs in a task of its own.
function M.timeout(s, fn, ...)
  local d, derr = require("flow.duration").parse(s)
  if not d then error(("bad argument #1 to 'timeout' (%s)"):format(derr), 2) end
  s = d
  if type(fn) ~= "function" then
    error(("bad argument #2 to 'timeout' (function expected, got %s)"):format(type(fn)), 2)
  end
  local h = spawn(fn, ...)
  local ok, k = pcall(wait_any, { h }, s)
  if not ok then cancel_and_drain({ h }); error(k, 0) end
  if k == nil then
    cancel_and_drain({ h })
    error(core.error("flow.timeout", ("timed out after %gs"):format(s), { retryable = true }), 2)
  end
  return h:wait()
end

-- Inside a workflow task, what a command printed becomes the task's log lines (kept with the
-- run: flowrun logs), each stream's first EXEC_LOG_MAX bytes, once the command has ended (the
-- process module hands over its output whole).
M.EXEC_LOG_MAX = 256 * 1024

local function log_output(ctx, prog, stream, text)
  if not text or text == "" then return end
  local name = tostring(prog):match("[^/]*$")
  local label = stream == "stderr" and (name .. " (stderr): ") or (name .. ": ")
  local cut = #text > M.EXEC_LOG_MAX
  local body = cut and text:sub(1, M.EXEC_LOG_MAX) or text
  for line in body:gmatch("([^\n]*)\n?") do
    if line ~= "" then ctx.log(label .. line:gsub("\r$", "")) end
  end
  if cut then
    ctx.log(string.format("%s[%d more bytes of %s not logged]", label, #text - M.EXEC_LOG_MAX, stream))
  end
end

-- flow.exec(cmd, opts) -> {status, signal, stdout, stderr, truncated, pid}. Runs a command
-- without blocking the loop: cmd is a list {"prog", "arg", ...} (run directly, no shell) or a
-- string (run by /bin/sh -c). opts: stdin (string), env (table over this process's
-- environment; NAME = false removes NAME), clear_env, cwd, max_output (bytes kept, default
-- 64 MB), timeout (seconds: the child is terminated and flow.timeout raised), check (raise
-- "proc.failed" with the end of stderr when the status is not 0), log (default true: inside a
-- workflow task, the output becomes the task's log lines, "prog: line" and "prog (stderr):
-- line"). Cancelling the task terminates the child (SIGTERM, SIGKILL after 3 s). Raises
-- "proc.spawn" when the command cannot be started.
function M.exec(cmd, opts)
  opts = opts or {}
  local argv = cmd
  if type(cmd) == "string" then
    argv = { "/bin/sh", "-c", cmd }
  elseif type(cmd) ~= "table" then
    error(("bad argument #1 to 'exec' (string or list expected, got %s)"):format(type(cmd)), 2)
  end
  local proc_run = require("flow.proc").run
  local function run(...)
    local res, err = proc_run(...)
    if not res then error(err, 0) end
    return res
  end
  local r
  if opts.timeout then r = M.timeout(opts.timeout, run, argv, opts) else r = run(argv, opts) end
  local ctx = opts.log ~= false and require("flow.context").current()
  if ctx then
    local prog = type(cmd) == "string" and "sh" or argv[1]
    log_output(ctx, prog, "stdout", r.stdout)
    log_output(ctx, prog, "stderr", r.stderr)
  end
  if opts.check and r.status ~= 0 then
    local tail = r.stderr:sub(-500):gsub("%s+$", "")
    error(core.error("proc.failed", ("%s %s%s"):format(tostring(argv[1]),
      r.status and ("exited with status " .. r.status) or ("was killed by signal " .. r.signal),
      tail ~= "" and (": " .. tail) or ""), { status = r.status, signal = r.signal,
      stdout = r.stdout, stderr = r.stderr }), 2)
  end
  return r
end

-- Workflow engine entry points (lua/flow/workflow.lua, poll.lua), loaded on first use.
function M.workflow(spec) return require("flow.workflow").new(spec) end
function M.poll(...) return require("flow.poll").poll(...) end

return M
