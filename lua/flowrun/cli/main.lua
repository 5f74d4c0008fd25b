-- flowrun.cli.main — what `flowrun ...` does. Runs inside the main task; returns the process exit
-- code. The C side (runtime/main.c) only sets up the state and calls main(argv).
--
--   flowrun COMMAND [args] [options]     a command (flowrun.cli.cmd.<name>)
--   flowrun [options] script.lua [args]  a script, as lua runs it; when it returns a workflow,
--                                        the rest of the line is parsed as `run` options
--   flowrun [options] -e CODE            run CODE, print its results
--   flowrun                              the REPL on a terminal, else a script from stdin
local sys = require "flow.sys"
-- the option table, loaded when a line needs it: `flowrun -e CODE` and `flowrun script.lua`
-- start without it (compiling it is a fifth of a start-up)
local options = setmetatable({}, { __index = function(t, k)
  local o = require "flowrun.cli.options"
  setmetatable(t, { __index = o })
  return o[k]
end })
local settings = require "flowrun.cli.settings"
local script = require "flowrun.cli.script"
local common = require "flowrun.cli.common"

local M = {}

local eprint = common.eprint

-- Walks argv up to the first positional (the script or the command): options before it are
-- returned normalised (`--debug` alone means all; `--debug aws,http` takes the next word when it
-- looks like categories). Returns head (options), index of the positional or nil.
local function split(argv, from)
  local head = {}
  local i = from or 1
  while i <= #argv do
    local a = argv[i]
    if a == "--" then return head, i + 1, true end
    if a == "-" or a:sub(1, 1) ~= "-" then return head, i end
    if a == "--debug" then
      local nxt = argv[i + 1]
      if nxt and nxt:match("^[%w_,]+$") and not options.BY_NAME[nxt] then
        head[#head + 1] = "--debug=" .. nxt
        i = i + 2
      else
        head[#head + 1] = "--debug=all"
        i = i + 1
      end
    else
      head[#head + 1] = a
      if not a:find("=", 1, true) and (a == "-e" or options.TAKES_VALUE[a]) and argv[i + 1] ~= nil then
        i = i + 1
        head[#head + 1] = argv[i]
      end
      i = i + 1
    end
  end
  return head, nil
end

-- The arguments of a command, normalised the same way wherever they stand.
local function normalise_all(args)
  local out, i = {}, 1
  while i <= #args do
    local head, pos, dashdash = split(args, i)
    for _, a in ipairs(head) do out[#out + 1] = a end
    if not pos then break end
    if dashdash then
      out[#out + 1] = "--"
      for j = pos, #args do out[#out + 1] = args[j] end
      break
    end
    out[#out + 1] = args[pos]
    i = pos + 1
  end
  return out
end
M.normalise = normalise_all

local TOP = { name = "[options] [script.lua [args...]]" }

-- command(name, args) -> exit code: parses args with the command's parser and runs it.
local function wants_help(args)
  for _, a in ipairs(args) do
    if a == "--" then return false end
    if a == "-h" or a == "--help" then return true end
  end
  return false
end

function M.command(name, args, base)
  local parser = options.parser(name)
  if wants_help(args) then
    io.stdout:write(parser:get_help(), "\n")
    return 0
  end
  local ok, opts = parser:pparse(normalise_all(args))
  if not ok then
    eprint(opts, " (see flowrun ", name, " --help)")
    return 2
  end
  if base then common.merge(opts, base) end
  return require("flowrun.cli.cmd." .. name).run(opts)
end

-- A script that returned a workflow: the rest of its command line is `run` options.
local function run_returned_workflow(wf, path, args, head_opts)
  local run = options.BY_NAME.run
  local parser = options.parser_of { name = path, options = run.options,
    description = run.description }
  if wants_help(args) then
    io.stdout:write(require("flowrun.cli.cmd.run").help(wf, path, parser))
    return 0
  end
  local ok, opts = parser:pparse(normalise_all(args))
  if not ok then
    eprint(opts, " (see flowrun ", path, " --help)")
    return 2
  end
  common.merge(opts, head_opts)
  opts.workflow = path
  return require("flowrun.cli.cmd.run").run(opts, wf)
end

-- quick(head) -> the options of the most common starts (`flowrun script.lua ...`, `flowrun -e
-- CODE`), as the top-level parser would return them, without building it (building an argparse
-- parser costs more than the rest of a start-up); nil for anything else.
function M.quick(head)
  local exec = {}
  for i = 1, #head, 2 do
    if head[i] ~= "-e" or head[i + 1] == nil then return nil end
    exec[#exec + 1] = head[i + 1]
  end
  return { exec = exec, lib = {}, sim_fail = {} }
end

function M.main(argv)
  -- Lua seeds math.random from the time in seconds and an address, which a build without
  -- address randomisation (ASan) repeats: two processes started in one second then make the
  -- same run ids. The pid and the clock's microseconds tell them apart.
  math.randomseed(math.floor(require("flow.core").time() * 1e6), sys.getpid())
  local head, pos, dashdash = split(argv, 1)
  local first = pos and argv[pos]
  -- a command is a plain word; a script is a path (x.lua, ./x, -)
  if first and not dashdash and not first:find("[./]") and first ~= "-" and options.BY_NAME[first] then
    local args = {}
    for _, a in ipairs(head) do args[#args + 1] = a end
    for j = pos + 1, #argv do args[#args + 1] = argv[j] end
    return M.command(first, args)
  end
  local ok, opts = true, M.quick(head)
  if not opts then
    TOP.options = options.TOP
    ok, opts = options.parser_of(TOP):pparse(head)
  end
  if not ok then
    eprint(opts, " (see flowrun --help)")
    return 2
  end
  if opts.help then
    io.stdout:write(options.help())
    return 0
  end
  if opts.version then
    print(("flowrun %s (%s, libuv %s)"):format(sys.version, sys.lua_version, sys.uv_version))
    return 0
  end
  local s, serr = settings.resolve(opts)
  if not s then eprint(serr) return 2 end
  local aok, aerr = settings.apply(s)
  if not aok then eprint(aerr) return 2 end

  for _, m in ipairs(opts.lib or {}) do
    local rc = script.require_lib(m)
    if rc ~= 0 then return rc end
  end
  local env = script.lazy_env()
  local execs = opts.exec or {}
  for _, code in ipairs(execs) do
    local rc = script.exec(code, env, opts.output or "json")
    if rc ~= 0 then return rc end
  end
  if first then
    local rest = {}
    for j = pos + 1, #argv do rest[#rest + 1] = argv[j] end
    local rc, value = script.run(first, rest, argv[0])
    if rc ~= 0 then return rc end
    if require("flow.workflow").is_workflow(value) then
      return run_returned_workflow(value, first, rest, opts)
    end
    if not opts.interactive then return 0 end
  end
  if opts.interactive or (not first and #execs == 0) then
    if not opts.interactive and not sys.isatty(0) then
      local rc = script.run("-", {}, argv[0])
      return rc
    end
    return require("flowrun.cli.repl").run({ output = opts.output or "json", env = env })
  end
  return 0
end

return M
