-- flow.engine_cli — the command-line half of the engine: `flowrun WF.lua [options]` (run_cli)
-- and the subcommands `runs`, `show`, `resume`, `graph`, `plan` (command). Parses its own
-- options; returns the process exit code: 0 success, 1 failed run, 2 invalid input,
-- 128+signal when cancelled by a signal.
local duration = require "flow.duration"
local journal = require "flow.journal"
local progress = require "flow.progress"
local workflow = require "flow.workflow"
local graph = require "flow.graph"
local options = require "flow.options"

local M = {}

M.RUN_HELP = [[
Run options (flowrun WORKFLOW.lua [options]):
  --var NAME=VALUE      set a workflow parameter (repeatable; wins over everything else)
  --vars-file FILE      parameters from a JSON object; `terraform output -json` works as is
                        (precedence: defaults < --vars-file < FLOWRUN_VAR_<NAME> < --var)
  --state-dir DIR       where run journals live (default .flowrun)
  --timeout DURATION    bound the whole run (e.g. 90m): running tasks are cancelled,
                        cleanup tasks run, exit 1
  --max-active N        run at most N tasks at once
  --log-format FORMAT   tty (live view), text (timestamped lines) or json (one object per
                        line); default tty on a terminal, text otherwise
  --virtual-time        when every task only waits on timers, jump the clock to the next
                        deadline (tests, simulations)
  --sim                 answer AWS calls with the in-process simulator
  --sim-fail SPEC       make the simulator fail as SPEC says (repeatable)
  --no-fsync            journal without fsync (faster, not crash-safe)]]

M.COMMANDS_HELP = [[
Runs (journals under --state-dir, default .flowrun):
  flowrun runs [--state-dir DIR] [--json]          list runs: id, workflow, started,
                                                   duration, state
  flowrun show RUN_ID [--state-dir DIR] [--json]   each task's state, attempts, duration,
                                                   error and result
  flowrun resume RUN_ID [--force] [run options]    continue a crashed or failed run; succeeded
                                                   tasks keep their results; --force resumes
                                                   although the workflow file changed
  flowrun graph WF.lua [--format dot|mermaid] [--run RUN_ID] [--state-dir DIR]
                                                   print the DAG (coloured by state with --run)
  flowrun plan WF.lua [--var K=V] [--vars-file F]  validate, resolve parameters and list the
                                                   tasks in dependency order; runs nothing
RUN_ID may be a unique prefix of an id, or "last".]]

local function eprint(...)
  local parts = { ... }
  for i = 1, #parts do parts[i] = tostring(parts[i]) end
  io.stderr:write("flowrun: ", table.concat(parts), "\n")
  io.stderr:flush()
end

-- Parses args against spec {name = "flag" | "value" | "multi"}: "--name v", "--name=v".
-- Returns opts, positionals; or nil, message.
local function parse(args, spec)
  local o, pos = { var = {} }, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--" then
      for j = i + 1, #args do pos[#pos + 1] = args[j] end
      break
    end
    local name, val = a:match("^%-%-([%w%-]+)=(.*)$")
    if not name then name = a:match("^%-%-([%w%-]+)$") end
    if name then
      local kind = spec[name]
      if not kind then return nil, "unknown option --" .. name end
      if kind == "flag" then
        if val then return nil, "--" .. name .. " takes no value" end
        o[name] = true
      else
        if not val then
          i = i + 1
          val = args[i]
          if val == nil then return nil, "--" .. name .. " needs a value" end
        end
        if kind == "multi" then
          o[name] = o[name] or {}
          table.insert(o[name], val)
        else
          o[name] = val
        end
      end
    elseif a == "-h" then
      o.help = true
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return o, pos
end
M.parse = parse

local RUN_SPEC = {
  var = "multi", ["vars-file"] = "multi", ["state-dir"] = "value", timeout = "value",
  ["log-format"] = "value", ["virtual-time"] = "flag", sim = "flag", ["sim-fail"] = "multi",
  ["max-active"] = "value", ["no-fsync"] = "flag", help = "flag",
}

local function copy(t)
  local r = {}
  for k, v in pairs(t) do r[k] = v end
  return r
end

-- --var list -> {name = "value"} or nil, message
local function vars_of(list)
  local vars = {}
  for _, kv in ipairs(list or {}) do
    local k, v = kv:match("^([^=]+)=(.*)$")
    if not k then return nil, "--var expects NAME=VALUE, got " .. string.format("%q", kv) end
    vars[k] = v
  end
  return vars
end

-- Applies the options every running command shares; returns settings or nil, message.
local function run_settings(o)
  local s = { state_dir = o["state-dir"] or ".flowrun", fsync = not o["no-fsync"] }
  -- the simulator keeps its world in <state-dir>/sim-state.json, so a resumed run finds it
  options.state_dir = s.state_dir
  if o.timeout then
    local d, err = duration.parse(o.timeout)
    if not d or d <= 0 then return nil, "--timeout: " .. (err or "must be greater than 0") end
    s.timeout = d
  end
  if o["max-active"] then
    local n = math.tointeger(tonumber(o["max-active"]))
    if not n or n < 1 then return nil, "--max-active expects a positive integer" end
    s.max_active = n
  end
  local fmt = o["log-format"] or "auto"
  if fmt ~= "auto" and fmt ~= "tty" and fmt ~= "text" and fmt ~= "json" then
    return nil, "--log-format expects tty, text or json, got " .. string.format("%q", fmt)
  end
  s.log_format = fmt
  if o["virtual-time"] then require("flow.core").set_virtual_time(true) end
  if o.sim then options.sim = true end
  if o["sim-fail"] then
    options.sim = true
    for _, f in ipairs(o["sim-fail"]) do table.insert(options.sim_fail, f) end
  end
  return s
end

local function abspath(p)
  if p:sub(1, 1) == "/" then return p end
  local cwd = os.getenv("PWD")
  if not cwd then
    local h = io.popen("pwd")
    cwd = h and h:read("l")
    if h then h:close() end
  end
  return (cwd or ".") .. "/" .. p:gsub("^%./", "")
end

local function print_problems(what, problems)
  io.stderr:write("flowrun: ", what, ":\n")
  for _, p in ipairs(problems) do io.stderr:write("  - ", p, "\n") end
  io.stderr:flush()
end

-- The journal's params: secret parameters are not written (they come back from --var or the
-- environment on resume).
local function journal_params(wf, params)
  local out, secret = {}, {}
  for k, v in pairs(params) do
    if wf.params[k] and wf.params[k].secret then secret[#secret + 1] = k
    else out[k] = v end
  end
  table.sort(secret)
  return out, secret
end

local function execute(wf, s, params, run_id, path, resume, file, hash)
  local engine = require "flow.engine"
  local F = require "flow"
  -- one process at a time runs (or resumes) a run
  local lock, lerr = journal.lock(path)
  if not lock then
    io.stderr:write("flowrun: ", lerr, "\n")
    return 2
  end
  local rep, fmt = progress.new(s.log_format)
  options.log_format = fmt
  local jr = journal.open(path, { fsync = s.fsync, clock = F.time })
  if resume then
    jr:append { ev = "run_resumed", hash = hash, pid = journal.self_pid(), forced = resume.forced }
  else
    local jp, secret = journal_params(wf, params)
    local names = {}
    for i, t in ipairs(wf.order) do names[i] = t.name end
    jr:append { ev = "run_started", v = journal.VERSION, run = run_id, workflow = wf.name,
      file = file, hash = hash, params = jp, secret_params = #secret > 0 and secret or nil,
      pid = journal.self_pid(), tasks = names,
      sim = (options.sim or os.getenv("FLOWRUN_SIM") == "1") and { fail = options.sim_fail } or nil }
  end
  jr:commit()
  local sum = engine.run(wf, { params = params, run_id = run_id, journal = jr, reporter = rep,
    max_active = s.max_active, timeout = s.timeout, resume = resume })
  jr:close()
  lock:close()
  if sum.state ~= "success" and fmt ~= "json" then
    io.stdout:write(string.format("resume with: flowrun resume %s%s\n", run_id,
      s.state_dir ~= ".flowrun" and (" --state-dir " .. s.state_dir) or ""))
    io.stdout:flush()
  end
  return sum.exit
end

local function param_help(wf)
  local lines = {}
  for _, name in ipairs(wf.param_order) do
    local p = wf.params[name]
    lines[#lines + 1] = string.format("  %-24s %s%s", name,
      p.required and "(required)" or ("default " .. graph.show_value(p.default, p.secret)),
      p.doc and ("  " .. p.doc) or "")
  end
  return lines
end

-- run_cli(wf, {file = path, args = {...}}) -> exit code. Called by `flowrun WF.lua args...`.
function M.run_cli(wf, a)
  a = a or {}
  local args = a.args or {}
  local o, pos = parse(args, RUN_SPEC)
  if not o then eprint(pos, " (flowrun ", a.file or "WF.lua", " --help)") return 2 end
  if o.help then
    io.stdout:write("usage: flowrun ", a.file or "WF.lua", " [options]\n")
    if workflow.is_workflow(wf) and #wf.param_order > 0 then
      io.stdout:write("Parameters of ", tostring(wf.name), ":\n", table.concat(param_help(wf), "\n"), "\n")
    end
    io.stdout:write(M.RUN_HELP, "\n")
    return 0
  end
  if #pos > 0 then eprint("unexpected argument ", string.format("%q", pos[1])) return 2 end
  if not workflow.is_workflow(wf) then
    eprint(a.file or "the file", " did not return a workflow (flow.workflow{...})")
    return 2
  end
  local s, err = run_settings(o)
  if not s then eprint(err) return 2 end
  local ok, problems = wf:validate()
  if not ok then print_problems("invalid workflow " .. (a.file or wf.name or ""), problems) return 2 end
  local vars, verr = vars_of(o.var)
  if not vars then eprint(verr) return 2 end
  local params, perr = wf:resolve_params { vars = vars, vars_files = o["vars-file"] }
  if not params then print_problems("invalid parameters", perr) return 2 end
  local engine = require "flow.engine"
  local run_id = engine.new_run_id()
  local path = journal.path(s.state_dir, run_id)
  local function exists(p) local f = io.open(p, "r") if f then f:close() return true end end
  while exists(path) do -- an id taken in the same second
    run_id = engine.new_run_id()
    path = journal.path(s.state_dir, run_id)
  end
  local file = a.file and abspath(a.file) or nil
  local hash = file and journal.hash_file(file) or nil
  return execute(wf, s, params, run_id, path, nil, file, hash)
end

-- Finds a run by id, unique prefix or "last". Returns run, or nil, message.
local function find_run(state_dir, id)
  if not id then return nil, "expected a RUN_ID (see flowrun runs)" end
  local path = journal.path(state_dir, id)
  local f = io.open(path, "r")
  if f then
    f:close()
    return journal.load(path)
  end
  local runs = journal.list(state_dir)
  if id == "last" or id == "latest" then
    if #runs == 0 then return nil, "no runs in " .. journal.runs_dir(state_dir) end
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
  return nil, "no run " .. id .. " in " .. journal.runs_dir(state_dir)
end

local function run_state(r)
  if r.state == "running" and not journal.pid_alive(r.pid) then return "interrupted" end
  return r.state
end

local function load_workflow(path)
  local chunk, err = loadfile(path)
  if not chunk then return nil, err end
  local ok, wf = pcall(chunk)
  if not ok then return nil, progress.errstr(wf) end
  if not workflow.is_workflow(wf) then
    return nil, path .. " did not return a workflow (flow.workflow{...})"
  end
  return wf
end
M.load_workflow = load_workflow

local function cmd_runs(args)
  local o, pos = parse(args, { ["state-dir"] = "value", json = "flag" })
  if not o then eprint(pos) return 2 end
  local runs = journal.list(o["state-dir"] or ".flowrun")
  if o.json then
    local json = require "json"
    local list = {}
    for _, r in ipairs(runs) do
      local ok_n, total = 0, 0
      for _, t in pairs(r.tasks) do
        total = total + 1
        if t.state == "success" then ok_n = ok_n + 1 end
      end
      list[#list + 1] = { id = r.id, workflow = r.workflow, started = r.started,
        finished = r.finished, duration = (r.finished or r.last_t or r.started) - (r.started or 0),
        state = run_state(r), exit = r.exit, error = r.error, tasks_succeeded = ok_n }
    end
    io.stdout:write(json.encode(json.array(list)), "\n")
    return 0
  end
  if #runs == 0 then
    io.stdout:write("no runs in ", journal.runs_dir(o["state-dir"] or ".flowrun"), "\n")
    return 0
  end
  io.stdout:write(string.format("%-22s %-20s %-20s %9s  %-11s %7s\n", "ID", "WORKFLOW", "STARTED",
    "DURATION", "STATE", "TASKS"))
  for _, r in ipairs(runs) do
    if r.error then
      io.stdout:write(string.format("%-22s %-20s %-20s %9s  %s\n", r.id, "?", "?", "-",
        "damaged: " .. progress.one_line(r.error, 60)))
    else
      local dur = (r.finished or r.last_t or r.started) - r.started
      local ok_n, total = 0, 0
      for _, t in pairs(r.tasks) do
        total = total + 1
        if t.state == "success" then ok_n = ok_n + 1 end
      end
      io.stdout:write(string.format("%-22s %-20s %-20s %9s  %-11s %7s%s\n", r.id,
        progress.one_line(r.workflow, 20), os.date("!%Y-%m-%d %H:%M:%S", math.floor(r.started)),
        duration.format(dur), run_state(r), ok_n .. "/" .. total,
        r.resumed > 0 and ("  resumed " .. r.resumed .. "x") or ""))
    end
  end
  return 0
end

local function cmd_show(args)
  local o, pos = parse(args, { ["state-dir"] = "value", json = "flag" })
  if not o then eprint(pos) return 2 end
  local r, err = find_run(o["state-dir"] or ".flowrun", pos[1])
  if not r then eprint(err) return 2 end
  local json = require "json"
  if o.json then
    local tasks = {}
    for _, name in ipairs(r.task_order) do
      local t = r.tasks[name]
      tasks[#tasks + 1] = { name = name, state = t.state, attempts = t.attempts,
        duration = t.duration, error = t.error, result = t.result,
        history = t.history and json.array(t.history) or nil }
    end
    io.stdout:write(json.encode { id = r.id, workflow = r.workflow, file = r.file,
      state = run_state(r), exit = r.exit, reason = r.reason, started = r.started,
      finished = r.finished, params = r.params, tasks = json.array(tasks), resumed = r.resumed,
      truncated = r.truncated or nil }, "\n")
    return 0
  end
  local w = io.stdout
  w:write("run ", r.id, "\n")
  w:write("  workflow  ", tostring(r.workflow), r.file and ("  (" .. r.file .. ")") or "", "\n")
  w:write("  state     ", run_state(r), r.exit and (" (exit " .. r.exit .. ")") or "",
    r.reason and (": " .. r.reason) or "", "\n")
  w:write("  started   ", os.date("!%Y-%m-%d %H:%M:%S UTC", math.floor(r.started)),
    "   duration ", duration.format((r.finished or r.last_t) - r.started),
    r.resumed > 0 and ("   resumed " .. r.resumed .. "x") or "", "\n")
  local keys = {}
  for k in pairs(r.params) do keys[#keys + 1] = k end
  table.sort(keys)
  if #keys > 0 then
    w:write("  params\n")
    for _, k in ipairs(keys) do w:write("    ", k, " = ", graph.show_value(r.params[k]), "\n") end
  end
  for _, k in ipairs(r.secret_params or {}) do w:write("    ", k, " = *** (secret)\n") end
  if r.truncated then w:write("  (the journal's last line was cut by a crash and ignored)\n") end
  local nw = 4
  for _, name in ipairs(r.task_order) do if #name > nw then nw = math.min(#name, 40) end end
  w:write(string.format("  %-" .. nw .. "s  %-15s %8s %9s  %s\n", "TASK", "STATE", "ATTEMPTS",
    "DURATION", "ERROR / RESULT"))
  for _, name in ipairs(r.task_order) do
    local t = r.tasks[name]
    local detail = ""
    if t.error and t.state ~= "success" then detail = progress.errstr(t.error)
    elseif t.result ~= nil then
      local ok, s = pcall(json.encode, t.result)
      detail = "=> " .. (ok and s or tostring(t.result))
    end
    w:write(string.format("  %-" .. nw .. "s  %-15s %8s %9s  %s\n", name, t.state,
      t.attempts > 0 and tostring(t.attempts) or "-", t.duration and duration.format(t.duration) or "-",
      progress.one_line(detail, 120)))
    -- earlier failed attempts, when there were several
    local hist = t.history or {}
    if #hist > 1 or (#hist == 1 and t.state == "success") then
      for _, h in ipairs(hist) do
        w:write(string.format("  %-" .. nw .. "s    attempt %s: %s%s\n", "", tostring(h.attempt or "?"),
          progress.one_line(progress.errstr(h.error), 100),
          h.delay and (" (retried after " .. duration.format(h.delay) .. ")") or ""))
      end
    end
  end
  return 0
end

local function cmd_resume(args)
  local spec = copy(RUN_SPEC)
  spec.force = "flag"
  local o, pos = parse(args, spec)
  if not o then eprint(pos) return 2 end
  local s, serr = run_settings(o)
  if not s then eprint(serr) return 2 end
  local r, err = find_run(s.state_dir, pos[1])
  if not r then eprint(err) return 2 end
  local state = run_state(r)
  if state == "success" then
    io.stdout:write("run ", r.id, " already succeeded; nothing to resume\n")
    return 0
  end
  if state == "running" and r.pid ~= journal.self_pid() then
    eprint("run ", r.id, " is still running (pid ", math.tointeger(r.pid) or "?", ")")
    return 2
  end
  if not r.file then eprint("run ", r.id, " has no workflow file recorded") return 2 end
  local hash = journal.hash_file(r.file)
  if not hash then eprint("cannot read the workflow file ", r.file) return 2 end
  if hash ~= r.hash and not o.force then
    eprint("the workflow file ", r.file, " changed since run ", r.id,
      " started; resume with --force to run the changed file")
    return 2
  end
  -- a run that talked to the simulator goes on talking to it: resuming it against a real
  -- account because --sim was forgotten would create real resources (injected failures are
  -- not replayed: give --sim-fail again for that)
  if r.sim then options.sim = true end
  local wf, lerr = load_workflow(r.file)
  if not wf then eprint(lerr) return 2 end
  local ok, problems = wf:validate()
  if not ok then print_problems("invalid workflow " .. r.file, problems) return 2 end
  -- recorded parameters win; secret ones come from --var / --vars-file / the environment
  local vars, verr = vars_of(o.var)
  if not vars then eprint(verr) return 2 end
  for k, v in pairs(r.params) do if wf.params[k] then vars[k] = v end end
  local params, perr = wf:resolve_params { vars = vars, vars_files = o["vars-file"] }
  if not params then print_problems("invalid parameters", perr) return 2 end
  r.forced = (hash ~= r.hash) or nil
  return execute(wf, s, params, r.id, r.path, r, r.file, hash)
end

local function cmd_graph(args)
  local o, pos = parse(args, { ["state-dir"] = "value", format = "value", run = "value" })
  if not o then eprint(pos) return 2 end
  if not pos[1] then eprint("usage: flowrun graph WF.lua [--format dot|mermaid] [--run RUN_ID]") return 2 end
  local fmt = o.format or "dot"
  if fmt ~= "dot" and fmt ~= "mermaid" then eprint("--format expects dot or mermaid") return 2 end
  local wf, err = load_workflow(pos[1])
  if not wf then eprint(err) return 2 end
  local ok, problems = wf:validate()
  if not ok then print_problems("invalid workflow " .. pos[1], problems) return 2 end
  local run
  if o.run then
    local rerr
    run, rerr = find_run(o["state-dir"] or ".flowrun", o.run)
    if not run then eprint(rerr) return 2 end
  end
  io.stdout:write(fmt == "dot" and graph.dot(wf, run) or graph.mermaid(wf, run))
  return 0
end

local function cmd_plan(args)
  local o, pos = parse(args, { var = "multi", ["vars-file"] = "multi" })
  if not o then eprint(pos) return 2 end
  if not pos[1] then eprint("usage: flowrun plan WF.lua [--var K=V] [--vars-file F]") return 2 end
  local wf, err = load_workflow(pos[1])
  if not wf then eprint(err) return 2 end
  local ok, problems = wf:validate()
  if not ok then print_problems("invalid workflow " .. pos[1], problems) return 2 end
  local vars, verr = vars_of(o.var)
  if not vars then eprint(verr) return 2 end
  local params, sources = wf:resolve_params { vars = vars, vars_files = o["vars-file"] }
  if not params then print_problems("invalid parameters", sources) return 2 end
  io.stdout:write(graph.plan(wf, params, sources))
  return 0
end

local COMMANDS = { runs = cmd_runs, show = cmd_show, resume = cmd_resume, graph = cmd_graph,
  plan = cmd_plan }

-- command(name, args) -> exit code, for `flowrun runs|show|resume|graph|plan ...`.
function M.command(name, args)
  local fn = COMMANDS[name]
  if not fn then eprint("unknown command ", tostring(name)) return 2 end
  for _, a in ipairs(args or {}) do
    if a == "--help" or a == "-h" then
      io.stdout:write(M.COMMANDS_HELP, "\n")
      if name == "resume" then io.stdout:write(M.RUN_HELP, "\n") end
      return 0
    end
  end
  local res = table.pack(pcall(fn, args or {}))
  if not res[1] then
    local e = res[2]
    if type(e) == "table" and e.code == "flow.cancelled" then error(e, 0) end
    eprint(progress.errstr(e))
    return 1
  end
  return res[2]
end

return M
