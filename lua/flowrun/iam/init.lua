-- flowrun.iam — the IAM policy a workflow's runs need, derived from the workflow: each task's
-- `iam` option names the operators it calls on what (dms.iam.start_task(ctx.params.arn), ...),
-- each operator declares every action it may call on any of its paths (stdlib/*.lua, beside
-- the operator; see aws.grants), and hooks built by operator modules declare
-- themselves (notify.on_failure). A task without an `iam` option is covered by a recorded
-- simulated run of it (derive's opts.records), or reported as uncovered.
--
--   local iam = require "flowrun.iam"
--   local policy = iam.derive(wf, params, {account =, region =, records = {file, ...}})
--   print(iam.json(policy))          -- an IAM policy document
--   print(iam.terraform(policy))     -- data "aws_iam_policy_document" "<workflow>" { ... }
--
-- The paths covered are those the parameters select (mode, compute, notifications...: the task
-- bindings read ctx.params as the tasks do): success, every failure, cancellation and resume of
-- a run with these parameters. Grants are merged into statements that grant no more than was
-- declared: an action is never given a resource it was not declared on.
local declare = require "aws.grants"
local json = require "json"

local M = {}

---- where the ARNs point -------------------------------------------------------------------------

local function each_string(v, fn, seen)
  seen = seen or {}
  if type(v) == "string" then fn(v)
  elseif type(v) == "table" and not seen[v] then
    seen[v] = true
    for _, x in pairs(v) do each_string(x, fn, seen) end
  end
end

-- env_of(params, opts) -> {partition, region, account}: the most common of the parameters'
-- ARNs, unless opts gives them; the region falls back to AWS_REGION, then "*".
function M.env_of(params, opts)
  opts = opts or {}
  local count = {partition = {}, region = {}, account = {}}
  each_string(params, function(s)
    local part, _, region, account = s:match("^arn:([%w%-]+):([%w%-]+):([%w%-]*):(%d*):")
    if part then
      count.partition[part] = (count.partition[part] or 0) + 1
      if region ~= "" then count.region[region] = (count.region[region] or 0) + 1 end
      if account ~= "" then count.account[account] = (count.account[account] or 0) + 1 end
    end
  end)
  local function top(t)
    local best, n = nil, 0
    for k, c in pairs(t) do if c > n or (c == n and k < best) then best, n = k, c end end
    return best
  end
  local region = os.getenv("AWS_REGION") or os.getenv("AWS_DEFAULT_REGION")
  if region == "" then region = nil end
  return {partition = top(count.partition) or "aws",
          region = opts.region or top(count.region) or region or "*",
          account = opts.account or top(count.account) or "*"}
end

---- grants -------------------------------------------------------------------------------------

local function canonical(v)
  if v == nil then return "" end
  return json.encode(v)
end

local function glob(pat, s)
  local lp = "^" .. pat:gsub("[%^%$%(%)%%%.%[%]%+%-]", "%%%0"):gsub("%*", ".*"):gsub("%?", ".") .. "$"
  return s:find(lp) ~= nil
end

-- The grants as atoms (one action on one resource under one condition), de-duplicated, the
-- first declaration's Sid kept; an atom inside another (same action and condition, or none, and
-- a resource the other's pattern covers) is dropped.
local function atoms_of(grants)
  local atoms, seen = {}, {}
  for _, g in ipairs(grants) do
    for _, a in ipairs(g.actions or {}) do
      for _, r in ipairs(g.resources or {}) do
        local key = a .. "\0" .. r .. "\0" .. canonical(g.condition)
        if not seen[key] then
          seen[key] = true
          atoms[#atoms + 1] = {sid = g.sid or "Flowrun", action = a, resource = r,
                               condition = g.condition, cond = canonical(g.condition), why = g.why}
        end
      end
    end
  end
  local keep = {}
  for _, x in ipairs(atoms) do
    local covered = false
    for _, y in ipairs(atoms) do
      if y ~= x and y.action == x.action and (y.cond == "" or y.cond == x.cond)
          and y.resource ~= x.resource and glob(y.resource, x.resource) then
        covered = true
        break
      end
    end
    if not covered then keep[#keep + 1] = x end
  end
  return keep
end

-- Statements: atoms grouped by Sid stem and condition, then resources grouped by the exact set
-- of actions declared on them (so merging never widens what any action is given).
local function statements_of(atoms)
  local groups, order = {}, {}
  for _, a in ipairs(atoms) do
    local gk = a.sid .. "\0" .. a.cond
    local g = groups[gk]
    if not g then
      g = {sid = a.sid, condition = a.condition, by_resource = {}, resources = {}, why = {}}
      groups[gk] = g
      order[#order + 1] = g
    end
    if not g.by_resource[a.resource] then
      g.by_resource[a.resource] = {}
      g.resources[#g.resources + 1] = a.resource
    end
    local acts = g.by_resource[a.resource]
    acts[#acts + 1] = a.action
    if a.why then g.why[a.why] = true end
  end
  local out, used = {}, {}
  for _, g in ipairs(order) do
    local by_actions, aorder = {}, {}
    for _, r in ipairs(g.resources) do
      local acts = g.by_resource[r]
      table.sort(acts)
      local k = table.concat(acts, ",")
      if not by_actions[k] then
        by_actions[k] = {actions = acts, resources = {}}
        aorder[#aorder + 1] = k
      end
      local rs = by_actions[k].resources
      rs[#rs + 1] = r
    end
    local whys = {}
    for w in pairs(g.why) do whys[#whys + 1] = w end
    table.sort(whys)
    for _, k in ipairs(aorder) do
      local sid = g.sid
      used[sid] = (used[sid] or 0) + 1
      if used[sid] > 1 then sid = sid .. used[sid] end
      local st = by_actions[k]
      table.sort(st.resources)
      out[#out + 1] = {Sid = sid, Effect = "Allow", Action = st.actions, Resource = st.resources,
                       Condition = g.condition, why = whys}
    end
  end
  return out
end

---- recorded runs --------------------------------------------------------------------------------

-- The runtime ids in a recorded resource become wildcards (clusters, applications and job runs
-- are made by the run), and so does the run's id inside S3 keys.
local function generalise(resource, run_id)
  local r = resource
  r = r:gsub("(:cluster/)j%-[%w]+", "%1*")
  r = r:gsub("(/applications/)[%w]+", "%1*")
  r = r:gsub("(/jobruns/)[%w]+", "%1*")
  if run_id and run_id ~= "" then
    local i, j = r:find(run_id, 1, true)
    if i then r = r:sub(1, i - 1) .. "*" end
  end
  return r
end

-- grants_of_records(paths, tasks) -> grants for the recorded calls of the named tasks (a
-- FLOWRUN_SIM_RECORD file: each line carries the task and the checks the call needed).
function M.grants_of_records(paths, tasks)
  local grants, seen_tasks = {}, {}
  for _, path in ipairs(paths or {}) do
    local f, err = io.open(path, "rb")
    if not f then error("flowrun iam: cannot read the record " .. tostring(path) .. ": " .. tostring(err), 0) end
    for line in f:lines() do
      local ok, r = pcall(json.decode, line)
      if ok and type(r) == "table" and type(r.task) == "string" and tasks[r.task] then
        seen_tasks[r.task] = true
        for _, c in ipairs(type(r.authz) == "table" and r.authz or {}) do
          local cond
          local ctx = type(c.context) == "table" and c.context or {}
          if c.action == "iam:PassRole" and ctx["iam:PassedToService"] then
            cond = {StringEquals = {["iam:PassedToService"] = ctx["iam:PassedToService"]}}
          elseif c.action == "s3:ListBucket" and type(ctx["s3:prefix"]) == "string" and ctx["s3:prefix"] ~= "" then
            cond = {StringLike = {["s3:prefix"] = generalise(ctx["s3:prefix"], r.run_id)}}
          end
          grants[#grants + 1] = {sid = "Recorded" .. r.task:gsub("[^%w]", ""):gsub("^%l", string.upper),
            actions = {c.action}, resources = {generalise(c.resource, r.run_id)}, condition = cond,
            why = c.resource == "*" and ("recorded from a simulated run of " .. r.task) or nil}
        end
      end
    end
    f:close()
  end
  return grants, seen_tasks
end

---- deriving ---------------------------------------------------------------------------------

-- derive(wf, params, opts) -> {statements, notes, uncovered = {task names}, recorded = {names},
-- env}. opts: account, region, records (FLOWRUN_SIM_RECORD files).
function M.derive(wf, params, opts)
  opts = opts or {}
  local env = M.env_of(params, opts)
  local saved = declare.env
  declare.env = env
  local ctx = {params = params, workflow = wf.name}
  local grants, undeclared, uncovered = {}, {}, {}
  local ok, err = pcall(function()
    for _, t in ipairs(wf.tasks) do
      if t.iam == nil then
        undeclared[t.name] = true
      elseif t.iam then
        for _, g in ipairs(t.iam(ctx) or {}) do grants[#grants + 1] = g end
      end
      for _, h in ipairs {"on_success", "on_failure", "on_retry"} do
        local decl = t[h] and declare.declaration_of(t[h])
        if decl then for _, g in ipairs(decl(ctx) or {}) do grants[#grants + 1] = g end end
      end
    end
    for _, h in ipairs {"on_success", "on_failure", "on_retry", "on_finish"} do
      local decl = wf.hooks[h] and declare.declaration_of(wf.hooks[h])
      if decl then for _, g in ipairs(decl(ctx) or {}) do grants[#grants + 1] = g end end
    end
  end)
  declare.env = saved
  if not ok then error(err, 0) end
  local recorded = {}
  if next(undeclared) and opts.records and #opts.records > 0 then
    local rg, seen = M.grants_of_records(opts.records, undeclared)
    for _, g in ipairs(rg) do grants[#grants + 1] = g end
    for name in pairs(seen) do recorded[#recorded + 1] = name; undeclared[name] = nil end
  end
  for _, t in ipairs(wf.tasks) do if undeclared[t.name] then uncovered[#uncovered + 1] = t.name end end
  table.sort(recorded)
  local notes, seen_note = {}, {}
  for _, g in ipairs(grants) do
    if g.note and not seen_note[g.note] then seen_note[g.note] = true; notes[#notes + 1] = g.note end
  end
  return {statements = statements_of(atoms_of(grants)), notes = notes, uncovered = uncovered,
          recorded = recorded, env = env, workflow = wf.name}
end

---- output -----------------------------------------------------------------------------------

local function jstr(s) return json.encode(s) end

local function jlist(l, indent)
  if #l == 1 then return jstr(l[1]) end
  local parts = {}
  for _, v in ipairs(l) do parts[#parts + 1] = indent .. "  " .. jstr(v) end
  return "[\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "]"
end

local function sorted_keys(t)
  local k = {}
  for x in pairs(t) do k[#k + 1] = x end
  table.sort(k)
  return k
end

-- json(policy) -> the policy document, keys in IAM's usual order (Sid, Effect, Action, Resource,
-- Condition). JSON has no comments: the Sids say what each statement is for.
function M.json(policy)
  local out = {'{\n  "Version": "2012-10-17",\n  "Statement": ['}
  for i, s in ipairs(policy.statements) do
    local lines = {'    {', '      "Sid": ' .. jstr(s.Sid) .. ',', '      "Effect": "Allow",',
      '      "Action": ' .. jlist(s.Action, "      ") .. ',',
      '      "Resource": ' .. jlist(s.Resource, "      ") .. (s.Condition and ',' or '')}
    if s.Condition then
      local ops = {}
      for _, op in ipairs(sorted_keys(s.Condition)) do
        local keys = {}
        for _, k in ipairs(sorted_keys(s.Condition[op])) do
          local v = s.Condition[op][k]
          keys[#keys + 1] = '          ' .. jstr(k) .. ': ' ..
            (type(v) == "table" and jlist(v, "          ") or jstr(v))
        end
        ops[#ops + 1] = '        ' .. jstr(op) .. ': {\n' .. table.concat(keys, ",\n") .. '\n        }'
      end
      lines[#lines + 1] = '      "Condition": {\n' .. table.concat(ops, ",\n") .. '\n      }'
    end
    lines[#lines + 1] = '    }' .. (i < #policy.statements and ',' or '')
    out[#out + 1] = table.concat(lines, "\n")
  end
  out[#out + 1] = '  ]\n}\n'
  return table.concat(out, "\n")
end

-- HCL strings: JSON's escapes, and ${ / %{ (template sequences) doubled.
local function hstr(s) return (jstr(s):gsub("%${", "$${"):gsub("%%{", "%%%%{")) end

local function hlist(l, indent)
  if #l == 1 then return "[" .. hstr(l[1]) .. "]" end
  local parts = {}
  for _, v in ipairs(l) do parts[#parts + 1] = indent .. "  " .. hstr(v) .. "," end
  return "[\n" .. table.concat(parts, "\n") .. "\n" .. indent .. "]"
end

-- terraform(policy) -> a data "aws_iam_policy_document" block named after the workflow; why a
-- statement is not narrower is said in comments above it.
function M.terraform(policy, name)
  name = name or (policy.workflow or "flowrun"):gsub("[^%w_]", "_")
  local out = {string.format('# The IAM policy the %s workflow\'s runs need, derived by `flowrun iam`.',
    policy.workflow or "?")}
  for _, n in ipairs(policy.notes) do out[#out + 1] = "# Note: " .. n end
  out[#out + 1] = string.format('data "aws_iam_policy_document" "%s" {', name)
  for _, s in ipairs(policy.statements) do
    for _, w in ipairs(s.why or {}) do out[#out + 1] = "  # " .. s.Sid .. ": " .. w end
    out[#out + 1] = "  statement {"
    out[#out + 1] = "    sid       = " .. hstr(s.Sid)
    out[#out + 1] = '    effect    = "Allow"'
    out[#out + 1] = "    actions   = " .. hlist(s.Action, "    ")
    out[#out + 1] = "    resources = " .. hlist(s.Resource, "    ")
    for _, op in ipairs(sorted_keys(s.Condition or {})) do
      for _, k in ipairs(sorted_keys(s.Condition[op])) do
        local v = s.Condition[op][k]
        out[#out + 1] = "    condition {"
        out[#out + 1] = "      test     = " .. hstr(op)
        out[#out + 1] = "      variable = " .. hstr(k)
        out[#out + 1] = "      values   = " .. hlist(type(v) == "table" and v or {v}, "      ")
        out[#out + 1] = "    }"
      end
    end
    out[#out + 1] = "  }"
  end
  out[#out + 1] = "}"
  return table.concat(out, "\n") .. "\n"
end

-- comments(policy) -> the lines that say why statements are not narrower, the notes and the
-- tasks not covered (the json format prints them on stderr).
function M.comments(policy)
  local out = {}
  for _, s in ipairs(policy.statements) do
    for _, w in ipairs(s.why or {}) do out[#out + 1] = s.Sid .. ": " .. w end
  end
  for _, n in ipairs(policy.notes) do out[#out + 1] = "note: " .. n end
  if #policy.recorded > 0 then
    out[#out + 1] = "from a recorded simulated run (only the calls it made): " ..
      table.concat(policy.recorded, ", ")
  end
  if #policy.uncovered > 0 then
    out[#out + 1] = "not covered (no iam declaration, not in a recorded run): " ..
      table.concat(policy.uncovered, ", ")
  end
  return out
end

return M
