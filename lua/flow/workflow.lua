-- flow.workflow — defining a workflow: flow.workflow{...}, wf:task(name, [opts,] fn), the
-- checks made before anything runs (unknown dependency, cycle, duplicate, bad option), the
-- tasks' dependency order and the resolution of parameters (defaults < --vars-file <
-- FLOWRUN_VAR_<NAME> < --var).
--
-- Task options (wf:task(name, opts, fn)); durations are seconds or "30s", "5m", "2h", "1h30m":
--   after            a task name, a task returned by wf:task, or a list of those
--   trigger          all_success (default) | all_done | all_failed | one_success |
--                    one_failed | none_failed — evaluated once every upstream is final
--   cleanup = true   runs once its upstreams are done whatever happened, also after Ctrl-C or
--                    --timeout (shielded); its success never makes a failed run succeed
--   undoes           (cleanup tasks) the tasks whose effects it reverses (terminate_cluster
--                    undoes create_cluster): resuming the run runs them again
--   retries, retry_delay, retry_backoff (multiplier >= 1), max_retry_delay, jitter (true or a
--                    fraction: the delay is cut by up to that share at random), retry_if(err, ctx)
--   timeout          per attempt; the attempt is cancelled and counts as a failure
--   on_success(ctx, result), on_failure(ctx, err), on_retry(ctx, err)   hooks; the workflow's
--                    hooks of the same names run after the task's, for every task, and
--                    on_finish(summary) once per run. A failing hook is logged, changes nothing.
--   iam(ctx)         the AWS the task uses, for `flowrun iam`: the grants of the operators it
--                    calls, from their declarations (dms.iam.start_task(ctx.params.arn), ...);
--                    ctx has params and workflow only; false: the task uses no AWS
-- fn(ctx): ctx.params, ctx.results.<task>, ctx.run_id, ctx.task, ctx.attempt, ctx.workflow,
--   ctx.log(...), ctx.progress(pct, msg).
--
-- Definition never raises for a mistake in a task's options: problems are collected and
-- reported all together by wf:validate(), so that `flowrun` can print them and exit 2 before
-- starting anything. Misuse of the API itself (a non-table spec) raises at once.
local duration = require "flow.duration"

local M = {}

-- A parameter that must be given (--var, --vars-file or FLOWRUN_VAR_<NAME>):
--   params = { dms_task_arn = flow_workflow.REQUIRED } or { dms_task_arn = { required = true } }
M.REQUIRED = setmetatable({}, { __name = "flowrun.workflow.required",
  __tostring = function() return "<required>" end })

-- What happens to a scheduled run that is still going when the next one is due.
M.OVERLAP = { skip = true, queue = true, cancel_previous = true }

M.TRIGGERS = {
  all_success = true, all_done = true, all_failed = true,
  one_success = true, one_failed = true, none_failed = true,
}

local TASK_OPTS = {
  after = true, retries = true, retry_delay = true, retry_backoff = true,
  max_retry_delay = true, jitter = true, timeout = true, trigger = true, cleanup = true,
  on_failure = true, on_retry = true, on_success = true, retry_if = true, doc = true,
  undoes = true, iam = true,
}
local WF_OPTS = {
  name = true, params = true, max_active = true, defaults = true, doc = true,
  schedule = true, timezone = true, start_date = true, end_date = true, catchup = true,
  max_active_runs = true, overlap = true,
  on_failure = true, on_retry = true, on_success = true, on_finish = true,
}
local PARAM_SPEC_KEYS = { required = true, default = true, doc = true, description = true,
  type = true, secret = true }

local Workflow = {}
Workflow.__index = Workflow
Workflow.__name = "flowrun.workflow"

local function is_param_spec(v)
  if type(v) ~= "table" or getmetatable(v) ~= nil or next(v) == nil then return false end
  for k in pairs(v) do
    if not PARAM_SPEC_KEYS[k] then return false end
  end
  return true
end

-- new(spec) -> workflow. spec.name (string), spec.params ({name = default | REQUIRED |
-- {required=, default=, doc=, type=, secret=}}), spec.max_active (integer), spec.defaults
-- (task options applied to every task), hooks on_success/on_failure/on_retry (called for every
-- task after its own hook) and on_finish(summary) (once, at the end of a run).
-- Schedules (Airflow's semantics): spec.schedule (5-field cron, @daily-style presets, or an
-- interval such as "6h"), timezone (IANA name, default UTC), start_date, end_date (ISO 8601 in
-- that zone), catchup (default false), max_active_runs (default 1), overlap ("skip" default,
-- "queue", "cancel_previous"). A parameter's default may be a function of the run's dates:
-- default = function(d) return "raw/" .. d.ds end (d: logical_date, ds, data_interval ...).
function M.new(spec)
  if type(spec) ~= "table" then
    error("flow.workflow: expected a table {name = ..., params = {...}}, got " .. type(spec), 2)
  end
  local wf = setmetatable({
    __flowrun_workflow = true,
    name = spec.name,
    params = {},        -- name -> {default=, required=bool, doc=, type=, secret=}
    param_order = {},
    tasks = {},         -- in definition order
    by_name = {},
    problems = {},
    max_active = spec.max_active,
    defaults = spec.defaults or {},
    hooks = { on_success = spec.on_success, on_failure = spec.on_failure,
              on_retry = spec.on_retry, on_finish = spec.on_finish },
    doc = spec.doc,
  }, Workflow)
  local function problem(fmt, ...) wf.problems[#wf.problems + 1] = string.format(fmt, ...) end
  for k in pairs(spec) do
    if not WF_OPTS[k] then problem("workflow: unknown option %q", tostring(k)) end
  end
  if type(spec.name) ~= "string" or not spec.name:match("^[%w_][%w_%-%.]*$") then
    problem("workflow: name must be a string of letters, digits, _ - . (got %s)",
      type(spec.name) == "string" and string.format("%q", spec.name) or type(spec.name))
  end
  if spec.max_active ~= nil and (math.type(spec.max_active) ~= "integer" or spec.max_active < 1) then
    problem("workflow: max_active must be a positive integer, got %s", tostring(spec.max_active))
  end
  -- the schedule: checked here (a bad cron expression or zone is an invalid workflow, exit 2),
  -- computed by flow.schedule (pure time arithmetic)
  if spec.schedule ~= nil then
    local tt, terr = require("flow.schedule.interval").timetable {
      schedule = spec.schedule, timezone = spec.timezone, start_date = spec.start_date,
      end_date = spec.end_date }
    if not tt then problem("workflow: %s", terr) end
    wf.timetable = tt
  else
    for _, k in ipairs { "timezone", "start_date", "end_date", "catchup", "max_active_runs", "overlap" } do
      if spec[k] ~= nil then problem("workflow: %s is set but there is no schedule", k) end
    end
  end
  if spec.catchup ~= nil and type(spec.catchup) ~= "boolean" then
    problem("workflow: catchup must be true or false, got %s", tostring(spec.catchup))
  end
  if spec.max_active_runs ~= nil and (math.type(spec.max_active_runs) ~= "integer"
      or spec.max_active_runs < 1) then
    problem("workflow: max_active_runs must be a positive integer, got %s", tostring(spec.max_active_runs))
  end
  if spec.overlap ~= nil and not M.OVERLAP[spec.overlap] then
    problem("workflow: overlap must be \"skip\", \"queue\" or \"cancel_previous\", got %s",
      tostring(spec.overlap))
  end
  wf.schedule = spec.schedule and {
    expr = spec.schedule, timezone = spec.timezone or "UTC", start_date = spec.start_date,
    end_date = spec.end_date, catchup = spec.catchup == true,
    max_active_runs = spec.max_active_runs or 1, overlap = spec.overlap or "skip",
  } or nil
  for _, h in ipairs { "on_success", "on_failure", "on_retry", "on_finish" } do
    if spec[h] ~= nil and type(spec[h]) ~= "function" then
      problem("workflow: %s must be a function, got %s", h, type(spec[h]))
    end
  end
  if spec.params ~= nil and type(spec.params) ~= "table" then
    problem("workflow: params must be a table, got %s", type(spec.params))
  elseif spec.params then
    for name, v in pairs(spec.params) do
      if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") then
        problem("workflow: parameter name %s is not an identifier", tostring(name))
      else
        local p
        if v == M.REQUIRED then
          p = { required = true }
        elseif is_param_spec(v) then
          p = { required = v.required and v.default == nil, default = v.default,
                doc = v.doc or v.description, type = v.type, secret = v.secret }
        else
          p = { default = v }
        end
        wf.params[name] = p
        wf.param_order[#wf.param_order + 1] = name
      end
    end
    table.sort(wf.param_order)
  end
  if type(wf.defaults) ~= "table" then
    problem("workflow: defaults must be a table of task options")
    wf.defaults = {}
  end
  return wf
end

function M.is_workflow(v)
  return type(v) == "table" and rawget(v, "__flowrun_workflow") == true
end

local function check_task_opts(wf, name, opts, problem)
  local t = {}
  for k, v in pairs(opts) do
    if not TASK_OPTS[k] then
      problem("task %q: unknown option %q", name, tostring(k))
    end
    t[k] = v
  end
  -- after: a name, a task returned by wf:task, or a list of those
  local after = {}
  local a = t.after
  if a ~= nil then
    if type(a) == "string" or (type(a) == "table" and a.__flowrun_task) then a = { a } end
    if type(a) ~= "table" then
      problem("task %q: after must be a task name or a list of names, got %s", name, type(a))
      a = {}
    end
    local seen = {}
    for _, dep in ipairs(a) do
      if type(dep) == "table" and dep.__flowrun_task then dep = dep.name end
      if type(dep) ~= "string" then
        problem("task %q: after lists a %s, expected task names", name, type(dep))
      elseif dep == name then
        problem("task %q: depends on itself", name)
      elseif not seen[dep] then
        seen[dep] = true
        after[#after + 1] = dep
      end
    end
  end
  t.after = after
  local function int_opt(key, min)
    local v = t[key]
    if v ~= nil and (math.type(v) ~= "integer" or v < min) then
      problem("task %q: %s must be an integer >= %d, got %s", name, key, min, tostring(v))
      t[key] = nil
    end
  end
  int_opt("retries", 0)
  for _, key in ipairs { "retry_delay", "max_retry_delay", "timeout" } do
    if t[key] ~= nil then
      local d, err = duration.parse(t[key])
      if not d then problem("task %q: %s: %s", name, key, err) end
      t[key] = d
    end
  end
  if t.timeout ~= nil and t.timeout <= 0 then
    problem("task %q: timeout must be greater than 0", name)
  end
  if t.retry_backoff ~= nil and (type(t.retry_backoff) ~= "number" or t.retry_backoff < 1) then
    problem("task %q: retry_backoff must be a number >= 1 (a multiplier), got %s", name,
      tostring(t.retry_backoff))
    t.retry_backoff = nil
  end
  if t.jitter == true then t.jitter = 1 end
  if t.jitter == false then t.jitter = nil end
  if t.jitter ~= nil and (type(t.jitter) ~= "number" or t.jitter < 0 or t.jitter > 1) then
    problem("task %q: jitter must be true, false or a fraction between 0 and 1, got %s", name,
      tostring(t.jitter))
    t.jitter = nil
  end
  if t.trigger ~= nil and not M.TRIGGERS[t.trigger] then
    local names = {}
    for k in pairs(M.TRIGGERS) do names[#names + 1] = k end
    table.sort(names)
    problem("task %q: unknown trigger %q (expected one of %s)", name, tostring(t.trigger),
      table.concat(names, ", "))
    t.trigger = nil
  end
  if t.cleanup ~= nil and type(t.cleanup) ~= "boolean" then
    problem("task %q: cleanup must be true or false, got %s", name, type(t.cleanup))
    t.cleanup = nil
  end
  if t.undoes ~= nil then
    local u = type(t.undoes) == "string" and { t.undoes } or t.undoes
    if type(u) ~= "table" then
      problem("task %q: undoes must be a task name or a list of names, got %s", name, type(u))
      u = nil
    elseif not t.cleanup then
      problem("task %q: only a cleanup task can undo other tasks (undoes needs cleanup = true)", name)
    end
    t.undoes = u
  end
  if t.cleanup and t.trigger and t.trigger ~= "all_done" then
    problem("task %q: a cleanup task always runs once its upstreams are done; "
      .. "trigger %q cannot apply", name, t.trigger)
  end
  if t.iam ~= nil and t.iam ~= false and type(t.iam) ~= "function" then
    problem("task %q: iam must be a function of ctx (or false), got %s", name, type(t.iam))
    t.iam = nil
  end
  for _, h in ipairs { "on_failure", "on_retry", "on_success", "retry_if" } do
    if t[h] ~= nil and type(t[h]) ~= "function" then
      problem("task %q: %s must be a function, got %s", name, h, type(t[h]))
      t[h] = nil
    end
  end
  return t
end

-- wf:task(name, [opts,] fn) -> task (a table usable in another task's `after`).
-- fn(ctx) runs in its own task; its first result is the task's result (JSON-serialisable:
-- it is journaled so that a resumed run keeps it).
function Workflow:task(name, opts, fn)
  self.valid = nil
  if fn == nil and type(opts) == "function" then opts, fn = nil, opts end
  local function problem(fmt, ...) self.problems[#self.problems + 1] = string.format(fmt, ...) end
  if type(name) ~= "string" or not name:match("^[%a_][%w_%-%.]*$") then
    problem("wf:task: name must be a string of letters, digits, _ - . starting with a letter "
      .. "(got %s)", type(name) == "string" and string.format("%q", name) or type(name))
    name = type(name) == "string" and name or ("#" .. (#self.tasks + 1))
  end
  if opts ~= nil and type(opts) ~= "table" then
    problem("task %q: options must be a table, got %s", name, type(opts))
    opts = nil
  end
  if type(fn) ~= "function" then
    problem("task %q: expected a function as the task body, got %s", name, type(fn))
  end
  local merged = {}
  for k, v in pairs(self.defaults) do merged[k] = v end
  for k, v in pairs(opts or {}) do merged[k] = v end
  local t = check_task_opts(self, name, merged, problem)
  t.name, t.fn, t.__flowrun_task = name, fn, true
  t.index = #self.tasks + 1
  if self.by_name[name] then
    problem("task %q: defined twice (duplicate name)", name)
    return self.by_name[name]
  end
  self.tasks[#self.tasks + 1] = t
  self.by_name[name] = t
  return t
end

-- Finds a cycle among the tasks; returns a list of names a -> b -> ... -> a, or nil.
local function find_cycle(wf)
  local color, stack = {}, {}
  local cycle
  local function visit(t)
    color[t.name] = 1
    stack[#stack + 1] = t.name
    for _, dep in ipairs(t.after) do
      local d = wf.by_name[dep]
      if d then
        if color[dep] == 1 then
          local start
          for i = #stack, 1, -1 do if stack[i] == dep then start = i break end end
          cycle = {}
          for i = start, #stack do cycle[#cycle + 1] = stack[i] end
          cycle[#cycle + 1] = dep
          return true
        elseif not color[dep] and visit(d) then
          return true
        end
      end
    end
    stack[#stack] = nil
    color[t.name] = 2
    return false
  end
  for _, t in ipairs(wf.tasks) do
    if not color[t.name] and visit(t) then break end
  end
  if cycle then
    -- shown in dependency order: a runs before b, which runs before ... a
    local r = {}
    for i = #cycle, 1, -1 do r[#r + 1] = cycle[i] end
    return r
  end
end

-- wf:validate() -> true, or false and a list of messages (every problem found).
function Workflow:validate()
  if self.valid then return true end
  local problems = {}
  for _, p in ipairs(self.problems) do problems[#problems + 1] = p end
  if #self.tasks == 0 then problems[#problems + 1] = "workflow has no tasks" end
  for _, t in ipairs(self.tasks) do
    for _, dep in ipairs(t.after) do
      if not self.by_name[dep] then
        problems[#problems + 1] = string.format("task %q: depends on unknown task %q", t.name, dep)
      end
    end
  end
  for _, t in ipairs(self.tasks) do
    for _, u in ipairs(t.undoes or {}) do
      if not self.by_name[u] then
        problems[#problems + 1] = string.format("task %q: undoes unknown task %q", t.name, tostring(u))
      end
    end
  end
  local cycle = find_cycle(self)
  if cycle then
    problems[#problems + 1] = "dependency cycle: " .. table.concat(cycle, " -> ")
  end
  if #problems > 0 then return false, problems end
  self:link()
  self.valid = true
  return true
end

-- Fills t.downstream and wf.order (a dependency order, stable with the definition order).
function Workflow:link()
  for _, t in ipairs(self.tasks) do t.downstream = {} end
  for _, t in ipairs(self.tasks) do
    for _, dep in ipairs(t.after) do
      local d = self.by_name[dep]
      if d then d.downstream[#d.downstream + 1] = t.name end
    end
  end
  local indeg, order, ready = {}, {}, {}
  for _, t in ipairs(self.tasks) do
    indeg[t.name] = #t.after
    if #t.after == 0 then ready[#ready + 1] = t end
  end
  local head = 1
  while head <= #ready do
    local t = ready[head]
    head = head + 1
    order[#order + 1] = t
    for _, dn in ipairs(t.downstream) do
      indeg[dn] = indeg[dn] - 1
      if indeg[dn] == 0 then ready[#ready + 1] = self.by_name[dn] end
    end
  end
  self.order = order
  for i, t in ipairs(order) do t.order = i end
  self.downstream = true
end

-- Converts a string given on the command line or in the environment to the type of the
-- parameter's default (or its declared type): number, boolean, JSON for tables.
local function convert(name, p, s)
  local want = p.type or (p.default ~= nil and type(p.default) ~= "function" and type(p.default))
    or "string"
  if type(s) ~= "string" then return s end
  if want == "number" or want == "integer" then
    local n = tonumber(s)
    if not n then return nil, string.format("parameter %s: expected a number, got %q", name, s) end
    if want == "integer" or math.type(p.default) == "integer" then
      n = math.tointeger(n)
      if not n then return nil, string.format("parameter %s: expected an integer, got %q", name, s) end
    end
    return n
  elseif want == "boolean" then
    local l = s:lower()
    if l == "true" or l == "1" or l == "yes" then return true end
    if l == "false" or l == "0" or l == "no" then return false end
    return nil, string.format("parameter %s: expected true or false, got %q", name, s)
  elseif want == "table" then
    local ok, v = pcall(require("json").decode, s)
    if not ok or type(v) ~= "table" then
      return nil, string.format("parameter %s: expected JSON (a list or an object)", name)
    end
    return v
  end
  return s
end

-- The Lua type a parameter takes (its declared type, else its default's), or nil for any.
local function want_type(p)
  local t = p.type or (p.default ~= nil and type(p.default) ~= "function" and type(p.default)) or nil
  if t == "integer" then return "number", true end
  return t, p.type == nil and math.type(p.default) == "integer"
end

local JSON_NAMES = { number = "a number", string = "a string", boolean = "true or false",
  table = "a list or an object" }
local TF_TYPES = { string = "string", number = "number", bool = "boolean", list = "table",
  tuple = "table", set = "table", map = "table", object = "table" }

local function json_kind(v)
  if v == require("json").null then return "null" end
  local t = type(v)
  if t == "table" then return "a list or an object" end
  if t == "boolean" then return "a boolean" end
  if t == "string" then return string.format("the string %q", #v > 40 and (v:sub(1, 37) .. "...") or v) end
  return "the " .. t .. " " .. tostring(v)
end

-- A value from a vars file for parameter `name`: converted to the parameter's type or refused.
local function file_value(name, p, v, where)
  local want, int = want_type(p)
  if not want or type(v) == want then
    if int and math.type(v) ~= "integer" and not math.tointeger(v) then
      return nil, string.format("parameter %s in %s: expected an integer, got %s", name, where, json_kind(v))
    end
    return int and math.tointeger(v) or v
  end
  if type(v) == "string" then
    local cv, cerr = convert(name, p, v)
    if cv == nil then return nil, cerr .. " (in " .. where .. ")" end
    return cv
  end
  if want == "string" and type(v) == "number" then
    return math.type(v) == "integer" and string.format("%d", v) or tostring(v)
  end
  return nil, string.format("parameter %s in %s: expected %s, got %s", name, where,
    JSON_NAMES[want] or want, json_kind(v))
end

-- Reads one --vars-file into params: a JSON object of values, or `terraform output -json`'s
-- {"name": {"value": v, "type": t, "sensitive": b}}. Every problem (a file that is not an object,
-- a value of the wrong type, null for a required parameter) names the file and the parameter.
local function read_vars_file(wf, path, params, sources, problems)
  local json = require "json"
  local function problem(fmt, ...) problems[#problems + 1] = string.format(fmt, ...) end
  local f, err = io.open(path, "r")
  local text = f and f:read("a")
  if f then f:close() end
  if not text then
    local e = err or "is a directory, not a file"
    if f then e = path .. ": is a directory, not a file" end
    return problem("--vars-file: cannot read %s", e)
  end
  local ok, doc = pcall(json.decode, text)
  if not ok then
    return problem("--vars-file %s: expected a JSON object of parameters, but it is not JSON (%s)",
      path, tostring(doc))
  end
  if type(doc) ~= "table" or text:match("^%s*%[") or json.is_array(doc) then
    return problem("--vars-file %s: expected a JSON object of parameters, got %s", path,
      type(doc) == "table" and "a list" or json_kind(doc))
  end
  for k, v in pairs(doc) do
    local p = wf.params[k]
    if p then
      local where = path
      -- `terraform output -json` gives {"name": {"value": v, "type": ..., "sensitive": ...}}
      if type(v) == "table" and v.value ~= nil and (v.type ~= nil or v.sensitive ~= nil
          or (next(v) == "value" and next(v, "value") == nil)) then
        local tf = v.type
        v = v.value
        local tf_name = type(tf) == "table" and tf[1] or tf
        local want = want_type(p)
        if type(tf_name) == "string" and want and TF_TYPES[tf_name] and TF_TYPES[tf_name] ~= want then
          problem("parameter %s in %s: terraform says its type is %s, the parameter takes %s",
            k, path, tf_name, JSON_NAMES[want] or want)
          goto next
        end
      end
      if v == json.null then
        if p.required then
          problem("parameter %s in %s: null, but the parameter is required", k, where)
        end
      else
        local cv, cerr = file_value(k, p, v, where)
        if cv == nil then problem("%s", cerr) else params[k], sources[k] = cv, "vars-file" end
      end
    end
    ::next::
  end
end

-- wf:resolve_params{vars = {k = "v"}, vars_files = {path...}, env = function(name), time = the
-- run's dates (for defaults that are functions of them)} ->
-- params, sources (name -> "default" | "vars-file" | "env" | "--var"), or nil, list of
-- messages. Precedence: defaults < --vars-file < FLOWRUN_VAR_<NAME> < --var.
function Workflow:resolve_params(o)
  o = o or {}
  local getenv = o.env or os.getenv
  local params, sources, problems = {}, {}, {}
  for name, p in pairs(self.params) do
    if type(p.default) == "function" then
      -- a default computed from the run's dates (its logical date and data interval)
      local ok, v = pcall(p.default, o.time or {})
      if not ok then
        problems[#problems + 1] = string.format("parameter %s: its default failed: %s", name,
          tostring(v))
      elseif v ~= nil then
        params[name], sources[name] = v, "default"
      end
    elseif p.default ~= nil then
      params[name], sources[name] = p.default, "default"
    end
  end
  for _, path in ipairs(o.vars_files or {}) do
    read_vars_file(self, path, params, sources, problems)
  end
  for name, p in pairs(self.params) do
    local s = getenv("FLOWRUN_VAR_" .. name) or getenv("FLOWRUN_VAR_" .. name:upper())
    if s ~= nil then
      local v, err = convert(name, p, s)
      if v == nil then problems[#problems + 1] = err .. " (from FLOWRUN_VAR_" .. name:upper() .. ")"
      else params[name], sources[name] = v, "env" end
    end
  end
  for k, s in pairs(o.vars or {}) do
    local p = self.params[k]
    if not p then
      local known = table.concat(self.param_order, ", ")
      problems[#problems + 1] = string.format("--var %s: unknown parameter (known: %s)", k,
        known ~= "" and known or "none")
    else
      local v, err = convert(k, p, s)
      if v == nil then problems[#problems + 1] = err else params[k], sources[k] = v, "--var" end
    end
  end
  for _, name in ipairs(self.param_order) do
    if self.params[name].required and params[name] == nil then
      problems[#problems + 1] = string.format(
        "parameter %s is required: give it with --var %s=..., --vars-file or FLOWRUN_VAR_%s",
        name, name, name:upper())
    end
  end
  if #problems > 0 then table.sort(problems) return nil, problems end
  return params, sources
end

M.Workflow = Workflow
return M
