-- flow.cli — the command line: what `flowrun ...` does. Runs inside the main task; returns the
-- process exit code. The C side (main.c) only sets up the state and calls M.main(argv).
local sys = require "flow.sys"
local core = require "flow.core"

local M = {}

local USAGE = [==[
Usage: flowrun [options] [script.lua [args...]]
       flowrun [options] -e CODE
       flowrun COMMAND [args...]

flowrun runs Lua workflow scripts on an event loop: AWS and PostgreSQL calls, timers and tasks
wait without blocking each other. A script that returns a workflow (flow.workflow{...}) is run
by the workflow engine, with a journal that lets a crashed run resume.

Options:
  -e CODE             run CODE and print what it returns (JSON by default, see --output)
  -l MODULE           require MODULE before running (its value is the global of that name)
  -i                  enter the REPL after running the script or -e
  --output json|lua   how -e prints its results (default json)
  --debug [CATS]      debug output on stderr: aws,http,pg,sched or all (FLOWRUN_DEBUG)
  --virtual-time      timers jump ahead when nothing else can run (simulations, tests)
  --sim               answer AWS calls from the in-process simulator (FLOWRUN_SIM=1)
  -v, --version       print versions and exit
  -h, --help          this help
  --                  stop handling options
  -                   read the script from standard input

Commands:
  repl                         the interactive REPL (also: flowrun with no arguments on a terminal)
  run WF.lua [run options]     run a workflow (same as flowrun WF.lua [run options])
  runs [--state-dir D] [--json]            list runs: id, workflow, started, duration, state
  show RUN_ID [--state-dir D] [--json]     each task's state, attempts, duration, error, result
  resume RUN_ID [--force] [run options]    continue a crashed or failed run; succeeded tasks
                                           keep their results; --force: the file changed
  graph WF.lua [--format dot|mermaid] [--run RUN_ID] [--state-dir D]
  plan WF.lua [--var K=V] [--vars-file F]  validate, resolve parameters, list tasks in order
  (RUN_ID may be a unique prefix of an id, or "last")

Run options (after the workflow file; flowrun WF.lua --help shows the workflow's parameters):
  --var NAME=VALUE      set a workflow parameter (repeatable; wins over everything else)
  --vars-file FILE      parameters from a JSON object; `terraform output -json` works as is
                        (precedence: defaults < --vars-file < FLOWRUN_VAR_<NAME> < --var)
  --state-dir DIR       where run journals live (default .flowrun)
  --timeout DURATION    bound the whole run (e.g. 90m): running tasks are cancelled,
                        cleanup tasks run, exit 1
  --max-active N        run at most N tasks at once
  --log-format FORMAT   tty (live view), text (timestamped lines) or json (one object per line);
                        default tty on a terminal, text otherwise
  --virtual-time        jump the clock to the next timer when every task only waits on timers
  --sim                 answer AWS calls with the in-process simulator
  --sim-fail SPEC       make the simulator fail (emr.step, emr.cluster, dms.task, throttle=0.2;
                        repeatable; implies --sim)
  --no-fsync            journal without fsync (faster, not crash-safe)

Environment:
  LUA_PATH, LUA_CPATH   extra module search paths (after flowrun's own lua/ and stdlib/)
  FLOWRUN_DEBUG         as --debug
  FLOWRUN_SIM=1         as --sim
  AWS_*                 credentials, region, endpoints as the AWS CLI reads them

Exit status: 0 success, 1 error or failed run, 2 invalid input, 130/143 interrupted.

Examples:
  flowrun hello.lua a b            run a script with arg[1]="a", arg[2]="b"
  flowrun -e 'return 1 + 1'        prints 2
  flowrun -e 'return aws.sts.get_caller_identity()'
  flowrun workflows/dms_to_emr.lua --vars-file outputs.json --sim --virtual-time
  flowrun                          the REPL
]==]

local function stderr(...)
  io.stderr:write(...)
  io.stderr:write("\n")
end

-- Globals the REPL and -e see without require: loaded on first use.
local LAZY = { flow = "flow", aws = "aws", pg = "pg", json = "json", sim = "sim" }

function M.lazy_env()
  return setmetatable({}, {
    __index = function(t, k)
      local v = _G[k]
      if v ~= nil then return v end
      local mod = LAZY[k]
      if mod then
        local ok, m = pcall(require, mod)
        if ok then rawset(t, k, m); return m end
      end
      return nil
    end,
  })
end

-- Text for an uncaught error: the error (its __tostring for error objects) and a traceback.
local function traceback(err)
  if type(err) == "table" and getmetatable(err) and getmetatable(err).__tostring then
    err = tostring(err)
  elseif type(err) ~= "string" then
    err = ("(error object is a %s value)"):format(type(err))
  end
  -- level 3: skip this function and the xpcall handler; drop the frames of flowrun's own
  -- runner below the user's code
  local tb = debug.traceback(err, 3)
  return (tb:gsub("\n%s*%[C%]: in function 'xpcall'.*$", ""))
end
M.traceback = traceback

-- Run fn(...) and report an uncaught error; returns the exit code.
local function run_protected(fn, ...)
  local r = table.pack(xpcall(fn, function(e)
    if core.cancelled(e) then return e end
    return { msg = traceback(e), err = e }
  end, ...))
  if r[1] then return 0, r end
  local e = r[2]
  if core.cancelled(e) then
    local sig = core.signal()
    return sig and 128 + sig or 1, r
  end
  stderr("flowrun: ", e.msg)
  return 1, r
end

local function print_results(r, fmt)
  if r.n < 2 then return end
  if fmt == "lua" then
    local pretty = require "flow.pretty"
    for i = 2, r.n do print(pretty.format(r[i])) end
  else
    local json = require "json"
    for i = 2, r.n do
      local v = r[i]
      local ok, s = pcall(json.encode, v == nil and json.null or v, { pretty = true })
      if not ok then
        local pretty = require "flow.pretty"
        s = pretty.format(v)
      end
      print(s)
    end
  end
end

local function load_file(path)
  local f, err
  if path == "-" then
    f, err = load(io.read("a"), "=stdin")
  else
    local fh = io.open(path, "r")
    if not fh then
      return nil, ("cannot open %s: %s"):format(path, select(2, io.open(path, "r")) or "no such file")
    end
    fh:close()
    f, err = loadfile(path)
  end
  return f, err
end

-- True when v is a workflow object (lua/flow/workflow.lua).
local function is_workflow(v)
  return type(v) == "table" and rawget(v, "__flowrun_workflow") == true
end

local function run_script(path, args, opts)
  local chunk, err = load_file(path)
  if not chunk then
    stderr("flowrun: ", err)
    return 1
  end
  -- the global `arg`, as lua does: arg[0] the script, arg[1..] its arguments
  local a = { [0] = path }
  for i, v in ipairs(args) do a[i] = v end
  a[-1] = opts.argv0
  _G.arg = a
  local code, r = run_protected(chunk, table.unpack(args))
  if code ~= 0 then return code end
  if is_workflow(r[2]) then
    return require("flow.engine").run_cli(r[2], { file = path, args = args })
  end
  return 0
end

local COMMANDS = { runs = true, show = true, resume = true, graph = true, plan = true }

function M.main(argv)
  local opts = { argv0 = argv[0], output = "json", pre = {}, exec = {} }
  local i, n = 1, #argv
  local script
  local function need(opt)
    i = i + 1
    if argv[i] == nil then
      stderr("flowrun: option ", opt, " needs a value (see flowrun --help)")
      return nil
    end
    return argv[i]
  end
  while i <= n do
    local a = argv[i]
    if a == "-h" or a == "--help" then
      io.write(USAGE)
      return 0
    elseif a == "-v" or a == "--version" then
      print(("flowrun %s (%s, libuv %s)"):format(sys.version, sys.lua_version, sys.uv_version))
      return 0
    elseif a == "-e" then
      local code = need(a); if not code then return 2 end
      opts.exec[#opts.exec + 1] = code
    elseif a == "-l" then
      local m = need(a); if not m then return 2 end
      opts.pre[#opts.pre + 1] = m
    elseif a == "-i" then
      opts.interactive = true
    elseif a == "--output" then
      local f = need(a); if not f then return 2 end
      if f ~= "json" and f ~= "lua" then
        stderr("flowrun: --output takes json or lua, not ", f)
        return 2
      end
      opts.output = f
    elseif a:match("^%-%-output=") then
      opts.output = a:match("=(.*)")
    elseif a == "--debug" then
      local nxt = argv[i + 1]
      if nxt and nxt:match("^[%a,]+$") and not nxt:match("%.lua$") and not COMMANDS[nxt] and nxt ~= "repl" then
        i = i + 1
        sys.set_debug(nxt)
      else
        sys.set_debug("all")
      end
    elseif a:match("^%-%-debug=") then
      sys.set_debug(a:match("=(.*)"))
    elseif a == "--virtual-time" then
      core.set_virtual_time(true)
    elseif a == "--sim" then
      local ok, options = pcall(require, "flow.options")
      if ok and type(options) == "table" then options.sim = true end
      opts.sim = true
    elseif a == "--" then
      i = i + 1
      script = argv[i]
      break
    elseif a == "-" then
      script = "-"
      break
    elseif a:sub(1, 1) == "-" then
      stderr("flowrun: unknown option ", a, " (see flowrun --help)")
      return 2
    else
      script = a
      break
    end
    i = i + 1
  end
  local rest = {}
  for j = i + 1, n do rest[#rest + 1] = argv[j] end

  if opts.sim then
    local ok, options = pcall(require, "flow.options")
    if ok and type(options) == "table" then options.sim = true end
  end

  for _, m in ipairs(opts.pre) do
    local code, r = run_protected(require, m)
    if code ~= 0 then return code end
    _G[m:match("[^.]+$")] = r[2]
  end

  if script == "repl" and #opts.exec == 0 then
    return require("flow.repl").run({ output = opts.output })
  end
  if script == "run" then
    script = table.remove(rest, 1)
    if not script then stderr("flowrun: run needs a workflow file"); return 2 end
  elseif script and COMMANDS[script] then
    return require("flow.engine").command(script, rest)
  end

  local env = M.lazy_env()
  for _, code in ipairs(opts.exec) do
    local chunk, err = load(code, "=(command line)", "t", env)
    if not chunk then
      stderr("flowrun: ", err)
      return 1
    end
    local rc, r = run_protected(chunk)
    if rc ~= 0 then return rc end
    print_results(r, opts.output)
  end

  if script then
    local rc = run_script(script, rest, opts)
    if rc ~= 0 or not opts.interactive then return rc end
  end
  if opts.interactive or (not script and #opts.exec == 0) then
    if not opts.interactive and not sys.isatty(0) then
      return run_script("-", rest, opts)
    end
    return require("flow.repl").run({ output = opts.output, env = env })
  end
  return 0
end

return M
