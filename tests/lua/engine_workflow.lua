-- Defining workflows: validation (unknown dependency, cycle, duplicate, bad options),
-- parameters and their precedence, durations, dependency order, graph and plan output.
local t = require "tap"
local flow = require "flow"
local workflow = require "flow.workflow"
local duration = require "flow.duration"
local graph = require "flowrun.engine.graph"
local json = require "json"

local function noop() end

local function problems_of(wf)
  local ok, p = wf:validate()
  return ok, table.concat(p or {}, "\n")
end

t.test("durations parse and print", function()
  t.eq(duration.parse("30s"), 30, "30s")
  t.eq(duration.parse("5m"), 300, "5m")
  t.eq(duration.parse("2h"), 7200, "2h")
  t.eq(duration.parse("1h30m"), 5400, "1h30m")
  t.eq(duration.parse("250ms"), 0.25, "250ms")
  t.eq(duration.parse(90), 90, "a number is seconds")
  t.eq(duration.parse("45"), 45, "a numeric string is seconds")
  t.ok(not duration.parse("5q"), "unknown unit refused")
  t.ok(not duration.parse(-1), "negative refused")
  t.ok(not duration.parse(""), "empty refused")
  t.eq(duration.format(62), "1m02s", "format minutes")
  t.eq(duration.format(21600), "6h00m", "format hours")
  t.eq(duration.format(0.25), "250ms", "format ms")
end)

t.test("flow.workflow returns a workflow object", function()
  local wf = flow.workflow { name = "w" }
  t.ok(wf.__flowrun_workflow == true, "__flowrun_workflow marker")
  local task = wf:task("a", noop)
  wf:task("b", { after = task }, noop)
  t.ok(wf:validate(), "a task object is accepted in after")
  t.eq(wf.by_name.b.after, { "a" }, "after resolved to the name")
end)

t.test("unknown dependency, duplicate, bad options are all reported", function()
  local wf = flow.workflow { name = "w" }
  wf:task("a", noop)
  wf:task("a", noop)
  wf:task("b", { after = "nope" }, noop)
  wf:task("c", { retries = -1, timeout = "5q", trigger = "sometimes", colour = "red" }, noop)
  wf:task("d", { after = "a" }, "not a function")
  wf:task("e", { retry_backoff = 0.5, jitter = 2 }, noop)
  local ok, msg = problems_of(wf)
  t.ok(not ok, "invalid")
  t.like(msg, 'task "a": defined twice', "duplicate")
  t.like(msg, 'task "b": depends on unknown task "nope"', "unknown dependency")
  t.like(msg, 'task "c": retries must be an integer >= 0', "bad retries")
  t.like(msg, 'task "c": timeout: bad duration "5q"', "bad timeout")
  t.like(msg, 'task "c": unknown trigger "sometimes"', "bad trigger")
  t.like(msg, 'task "c": unknown option "colour"', "unknown option")
  t.like(msg, 'task "d": expected a function', "body not a function")
  t.like(msg, 'task "e": retry_backoff must be a number >= 1', "bad backoff")
  t.like(msg, 'task "e": jitter must be', "bad jitter")
end)

t.test("a cycle is shown", function()
  local wf = flow.workflow { name = "w" }
  wf:task("start", noop)
  wf:task("a", { after = { "start", "c" } }, noop)
  wf:task("b", { after = "a" }, noop)
  wf:task("c", { after = "b" }, noop)
  local ok, msg = problems_of(wf)
  t.ok(not ok, "invalid")
  t.like(msg, "dependency cycle: a %-> b %-> c %-> a", "cycle listed in order")
  local wf2 = flow.workflow { name = "w" }
  wf2:task("x", { after = "x" }, noop)
  t.like(select(2, problems_of(wf2)), 'task "x": depends on itself', "self dependency")
end)

t.test("workflow-level problems", function()
  local wf = flow.workflow { name = "bad name!", max_active = 0, params = { ["1x"] = 1 },
    on_failure = 3 }
  local ok, msg = problems_of(wf)
  t.ok(not ok, "invalid")
  t.like(msg, "workflow: name must be", "bad name")
  t.like(msg, "max_active must be a positive integer", "bad max_active")
  t.like(msg, "parameter name 1x is not an identifier", "bad param name")
  t.like(msg, "on_failure must be a function", "bad hook")
  t.like(msg, "workflow has no tasks", "no tasks")
end)

t.test("dependency order is stable and respects dependencies", function()
  local wf = flow.workflow { name = "w" }
  wf:task("d", { after = { "b", "c" } }, noop)
  wf:task("b", { after = "a" }, noop)
  wf:task("c", { after = "a" }, noop)
  wf:task("a", noop)
  wf:task("e", noop)
  assert(wf:validate())
  local names = {}
  for _, task in ipairs(wf.order) do names[#names + 1] = task.name end
  t.eq(names, { "a", "e", "b", "c", "d" }, "order")
end)

local function tmpfile(content)
  local p = os.tmpname()
  local f = assert(io.open(p, "w"))
  f:write(content)
  f:close()
  return p
end

t.test("parameters: defaults < vars-file < FLOWRUN_VAR_ < --var", function()
  local wf = flow.workflow { name = "w", params = {
    a = "da", b = "db", c = "dc", d = "dd", n = 1, flag = false, list = { 1 },
    arn = workflow.REQUIRED } }
  wf:task("x", noop)
  local vf = tmpfile(json.encode {
    b = { value = "file-b", type = "string", sensitive = false }, -- terraform output -json
    c = { value = "file-c", type = "string", sensitive = false },
    d = "file-d", arn = { value = "arn:x", type = "string", sensitive = false },
    unrelated_output = { value = 5, type = "number", sensitive = false } })
  local env = { FLOWRUN_VAR_C = "env-c", FLOWRUN_VAR_D = "env-d", FLOWRUN_VAR_N = "42" }
  local p, src = wf:resolve_params { vars = { d = "var-d", flag = "true", list = "[1,2]" },
    vars_files = { vf }, env = function(k) return env[k] end }
  os.remove(vf)
  t.ok(p, "resolved")
  t.eq(p.a, "da", "default")
  t.eq(p.b, "file-b", "vars-file (terraform shape) over default")
  t.eq(p.c, "env-c", "env over vars-file")
  t.eq(p.d, "var-d", "--var over env")
  t.eq(p.arn, "arn:x", "required given by the vars file")
  t.eq(math.type(p.n), "integer", "env converted to the default's type")
  t.eq(p.n, 42, "number")
  t.eq(p.flag, true, "boolean")
  t.eq(p.list, { 1, 2 }, "JSON for a table default")
  t.eq(src.d, "--var", "source of d")
  t.eq(src.c, "env", "source of c")
  t.eq(p.unrelated_output, nil, "outputs that are not parameters are ignored")
end)

t.test("parameters: required, unknown, wrong type", function()
  local wf = flow.workflow { name = "w", params = { arn = workflow.REQUIRED, n = 1,
    region = { required = true, doc = "AWS region" } } }
  wf:task("x", noop)
  local p, errs = wf:resolve_params { vars = { n = "many", zz = "1" }, env = function() end }
  t.ok(p == nil, "refused")
  local msg = table.concat(errs, "\n")
  t.like(msg, "parameter arn is required", "required arn")
  t.like(msg, "parameter region is required", "required region (spec table)")
  t.like(msg, "parameter n: expected a number", "type")
  t.like(msg, "%-%-var zz: unknown parameter", "unknown --var")
  local bad = tmpfile("{not json")
  local p2, errs2 = wf:resolve_params { vars = { arn = "a", region = "r" }, vars_files = { bad },
    env = function() end }
  os.remove(bad)
  t.ok(p2 == nil and table.concat(errs2):find("expected a JSON object"), "bad vars file")
end)

t.test("graph: dot and mermaid, coloured by a run", function()
  local wf = flow.workflow { name = "g" }
  wf:task("a", noop)
  wf:task("b", { after = "a", trigger = "one_failed" }, noop)
  wf:task("c", { after = "b", cleanup = true }, noop)
  assert(wf:validate())
  local dot = graph.dot(wf)
  t.like(dot, '^digraph "g" {', "dot header")
  t.like(dot, '"a" %-> "b";', "edge a->b")
  t.like(dot, '"b" %-> "c" %[style=dashed%];', "cleanup edge dashed")
  t.like(dot, "one_failed", "trigger shown")
  local run = { tasks = { a = { state = "success" }, b = { state = "failed" } } }
  local cdot = graph.dot(wf, run)
  t.like(cdot, '"a" %[.-fillcolor="#8fd18f"', "a green")
  t.like(cdot, '"b" %[.-fillcolor="#f08080"', "b red")
  t.like(cdot, '"c" %[.-fillcolor="#ffffff"', "c pending white")
  local mm = graph.mermaid(wf, run)
  t.like(mm, "^flowchart LR", "mermaid header")
  t.like(mm, "t_a %-%-> t_b", "mermaid edge")
  t.like(mm, "t_b %-%.%-> t_c", "mermaid cleanup edge")
  t.like(mm, "class t_b failed", "mermaid class")
  t.like(mm, "classDef success fill:#8fd18f", "mermaid classDef")
end)

t.test("plan lists parameters and tasks in order", function()
  local wf = flow.workflow { name = "p", params = { who = "x", pw = { default = "s3cret",
    secret = true } } }
  wf:task("b", { after = "a", retries = 3, retry_delay = "30s", retry_backoff = 2,
    timeout = "1h" }, noop)
  wf:task("a", noop)
  assert(wf:validate())
  local params, src = wf:resolve_params { vars = { who = "me" }, env = function() end }
  local text = graph.plan(wf, params, src)
  t.like(text, 'who%s+= "me"%s+%(%-%-var%)', "param with its source")
  t.like(text, "pw%s+= %*%*%*", "secret hidden")
  t.unlike(text, "s3cret", "secret value absent")
  t.like(text, "1%. a\n", "a first")
  t.like(text, "2%. b  %(after a; retries 3 every 30s x2; timeout 1h00m%)", "b with options")
end)

t.test("workflow defaults apply to every task; a task's own options win", function()
  local wf = flow.workflow { name = "d", defaults = { retries = 2, retry_delay = "1m", timeout = "1h" } }
  wf:task("a", noop)
  wf:task("b", { retries = 0 }, noop)
  assert(wf:validate())
  t.eq(wf.by_name.a.retries, 2, "default retries")
  t.eq(wf.by_name.a.retry_delay, 60, "default delay parsed")
  t.eq(wf.by_name.b.retries, 0, "own option wins")
  t.eq(wf.by_name.b.timeout, 3600, "other defaults kept")
  local bad = flow.workflow { name = "d", defaults = { retries = "x" } }
  bad:task("a", noop)
  t.like(select(2, problems_of(bad)), "retries must be an integer", "bad default reported")
end)

t.done()
