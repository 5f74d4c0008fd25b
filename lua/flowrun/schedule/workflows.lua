-- flowrun.schedule.workflows — the workflows a scheduler serves: the *.lua files at the top of a
-- directory (not its subdirectories: config/ and jobs/ beside the workflows are not workflows),
-- each loaded as a worker loads a submitted run's source, and the runs made from them for an
-- interval (what store:submit takes). Shared by the scheduler, `flowrun schedules`, `pause`,
-- `unpause` and `backfill`.
--
--   local workflows = require "flowrun.schedule.workflows"
--   local e, err = workflows.load(path)   -- {path, name, wf, source, hash} | nil, message
--   local list, errors = workflows.scan(dir)      -- entries by name; {path = message} for the rest
--   local e, err = workflows.find(spec, dir)      -- a file, or the name of a workflow in dir
--   workflows.run_id(name, t)                     -- "nightly@20260329T000000Z"
--   workflows.submission(e, iv, o)                -- store:submit options for interval iv
local sys = require "flow.sys"
local engine = require "flowrun.engine"

local M = {}

M.DEFAULT_DIR = "workflows"

-- read(path) -> the file's text, or nil and a message.
local function read(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local text = f:read("a")
  f:close()
  if not text then return nil, path .. ": cannot read (a directory?)" end
  return text
end
M.read = read

-- load(path [, text]) -> entry {path, name, wf (validated), source, hash, scheduled}, or nil and
-- a message. The text is loaded as a worker loads the run's source (named by its file), so that
-- what the scheduler checks is exactly what runs.
function M.load(path, text)
  if not text then
    local err
    text, err = read(path)
    if not text then return nil, "cannot read " .. tostring(err) end
  end
  local base = path:match("[^/]*$")
  local chunk, lerr = load(text, "@" .. path)
  if not chunk then return nil, lerr end
  local wf, werr = engine.load(chunk, base)
  if not wf then return nil, werr end
  local ok, problems = wf:validate()
  if not ok then return nil, "invalid workflow: " .. table.concat(problems, "; ") end
  return { path = path, name = wf.name, wf = wf, source = text, hash = engine.hash_text(text),
    scheduled = wf.schedule ~= nil }
end

-- files(dir) -> sorted paths of the *.lua files at the top of dir, or nil and a message.
function M.files(dir)
  local names, err = sys.readdir(dir)
  if not names then return nil, tostring(err and err.message or err) end
  local out = {}
  for _, n in ipairs(names) do
    if n:match("%.lua$") and not n:match("^%.") then
      local p = dir .. "/" .. n
      local st = sys.stat(p)
      if st and st.type == "file" then out[#out + 1] = p end
    end
  end
  return out
end

-- scan(dir) -> {name = entry}, {path = message} (files that did not load, and a second file of
-- a name already taken), or nil and a message when dir cannot be read.
function M.scan(dir)
  local files, err = M.files(dir)
  if not files then return nil, err end
  local by_name, errors = {}, {}
  for _, p in ipairs(files) do
    local e, lerr = M.load(p)
    if not e then
      errors[p] = lerr
    elseif by_name[e.name] then
      errors[p] = string.format("workflow %s is already defined by %s", e.name, by_name[e.name].path)
    else
      by_name[e.name] = e
    end
  end
  return by_name, errors
end

-- find(spec, dir) -> entry, or nil and a message: spec is a workflow file, or the name of a
-- workflow defined by a file in dir.
function M.find(spec, dir)
  local st = sys.stat(spec)
  if st and st.type == "file" then return M.load(spec) end
  local by_name, errors = M.scan(dir)
  if not by_name then
    return nil, string.format("%s is not a file, and the workflows directory %s cannot be read (%s)",
      spec, dir, errors)
  end
  if by_name[spec] then return by_name[spec] end
  local names = {}
  for n in pairs(by_name) do names[#names + 1] = n end
  table.sort(names)
  local broken = {}
  for p, e in pairs(errors) do broken[#broken + 1] = p .. ": " .. e end
  table.sort(broken)
  return nil, string.format("no workflow %s in %s (it has %s)%s", spec, dir,
    #names > 0 and table.concat(names, ", ") or "none",
    #broken > 0 and ("; files that did not load: " .. table.concat(broken, "; ")) or "")
end

-- run_id(name, logical_date) -> the id of the scheduled (or backfill) run of that date: the same
-- in every scheduler, so that they make it once.
function M.run_id(name, t)
  return name .. "@" .. os.date("!%Y%m%dT%H%M%SZ", math.floor(t))
end

-- params(wf, dates, o) -> public params, secret names, problems | nil. Parameters as a run of
-- those dates resolves them (defaults, functions of the dates, o.vars_files, FLOWRUN_VAR_<NAME>,
-- o.vars); required secret ones are left to the worker (engine.queued_params).
function M.params(wf, dates, o)
  o = o or {}
  return engine.queued_params(wf, { vars = o.vars, vars_files = o.vars_files, time = dates })
end

-- submission(e, iv, o) -> the store:submit options of the run of interval iv ({start, end,
-- logical_date}) of entry e. o: kind ("scheduled" default, "backfill"), run_id, vars_files,
-- sim ({fail}), created. Parameters that do not resolve for these dates are left out: the
-- worker resolves them again and fails the run with why, so the tick is not lost silently.
function M.submission(e, iv, o)
  o = o or {}
  local wf = e.wf
  local dates = engine.dates(wf, { interval = iv })
  local public, secret = M.params(wf, dates, o)
  local names = {}
  for i, t in ipairs(wf.order) do names[i] = t.name end
  return { workflow = wf.name, source = e.source, hash = e.hash, file = e.path and
    (sys.realpath(e.path) or e.path) or nil, params = public or {},
    secret_params = secret and #secret > 0 and secret or nil, tasks = names, sim = o.sim,
    run_id = o.run_id or M.run_id(wf.name, iv.start), kind = o.kind or "scheduled",
    logical_date = iv.start, interval_start = iv.start, interval_end = iv["end"],
    created = o.created }
end

return M
