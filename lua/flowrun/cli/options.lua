-- flowrun.cli.options — every command and option of the command line, in one table, and the
-- parsers and help texts made from it (lua-argparse, Debian's lua-argparse package), so that
-- `flowrun --help`, `flowrun COMMAND --help` and what is accepted can never disagree.
--
-- Global options are accepted by every command, before or after its arguments
-- (`flowrun wf.lua --debug aws` and `flowrun --debug aws wf.lua` are the same).

local M = {}

-- name -> {flags, arg = metavar (nil: a flag), multi = repeatable, choices, help}
local OPTIONS = {
  exec = { "-e", arg = "CODE", multi = true,
    help = "run CODE and print what it returns (JSON by default, see --output)" },
  lib = { "-l", arg = "MODULE", multi = true,
    help = "require MODULE before running (its value becomes the global of that name)" },
  interactive = { "-i", help = "enter the REPL after running the script or -e" },
  output = { "--output", arg = "FORMAT", choices = { "json", "lua" },
    help = "how -e prints its results: json (default) or lua" },
  debug = { "--debug", arg = "CATS",
    help = "debug output on stderr: aws, http, pg, sched or all (comma-separated; alone: all; "
      .. "also FLOWRUN_DEBUG)" },
  virtual_time = { "--virtual-time",
    help = "when every task only waits on timers, jump the clock to the next deadline "
      .. "(simulations, tests)" },
  sim = { "--sim", help = "answer AWS calls from the in-process simulator (also FLOWRUN_SIM=1)" },
  sim_fail = { "--sim-fail", arg = "SPEC", multi = true,
    help = "make the simulator fail: emr.step, emr.cluster, dms.task, dms.table, "
      .. "throttle=0.2, lost=emr.RunJobFlow (repeatable; implies --sim)" },
  sim_policy = { "--sim-policy", arg = "FILE",
    help = "the simulator authorizes every call against this IAM policy document (JSON) and "
      .. "answers AccessDenied for what it does not allow (implies --sim)" },
  version = { "-v --version", help = "print versions and exit" },
  help = { "-h --help", help = "show this help and exit" },
  -- running a workflow
  var = { "--var", arg = "NAME=VALUE", multi = true,
    help = "set a workflow parameter (repeatable; wins over everything else)" },
  vars_file = { "--vars-file", arg = "FILE", multi = true,
    help = "parameters from a JSON object; `terraform output -json` works as is "
      .. "(precedence: defaults < --vars-file < FLOWRUN_VAR_<NAME> < --var)" },
  state_dir = { "--state-dir", arg = "DIR",
    help = "where runs are kept (default $FLOWRUN_HOME, else ~/.local/state/flowrun)" },
  store = { "--store", arg = "STORE",
    help = "the run store: postgresql://USER@HOST/DB (shared, for workers), file:DIR, or a name "
      .. "from the config file (also FLOWRUN_STORE; default: the file store in --state-dir)" },
  timeout = { "--timeout", arg = "DURATION",
    help = "bound the whole run (e.g. 90m): running tasks are cancelled, cleanup tasks run, exit 1" },
  max_active = { "--max-active", arg = "N", help = "run at most N tasks at once" },
  log_format = { "--log-format", arg = "FORMAT", choices = { "tty", "text", "json" },
    help = "tty (live view), text (timestamped lines) or json (one object per line); "
      .. "default tty on a terminal, text otherwise" },
  no_fsync = { "--no-fsync", help = "journal without fsync (faster, not crash-safe)" },
  logical_date = { "--logical-date", arg = "DATE",
    help = "the run's logical date (YYYY-MM-DD or an ISO 8601 time; default: now): a scheduled "
      .. "workflow runs the interval that starts at its first fire time at or after DATE, so "
      .. "the same run can be made again for last Tuesday" },
  force = { "--force", help = "resume although the workflow file changed since the run started" },
  rerun = { "--rerun", arg = "TASK", multi = true,
    help = "run TASK again although it succeeded, with everything downstream of it "
      .. "(repeatable; also on a run that succeeded)" },
  -- reading runs
  json = { "--json", help = "print JSON instead of a table" },
  format = { "--format", arg = "FORMAT", choices = { "dot", "mermaid" },
    help = "dot (Graphviz, default) or mermaid" },
  run = { "--run", arg = "RUN_ID", help = "colour the tasks by the states of this run" },
  policy_format = { "--format", arg = "FORMAT", choices = { "json", "terraform" },
    help = "json (an IAM policy document, default) or terraform (a data "
      .. "\"aws_iam_policy_document\" block)" },
  record = { "--record", arg = "FILE", multi = true,
    help = "a simulated run's request log (FLOWRUN_SIM_RECORD=FILE): the calls of tasks that "
      .. "declare no IAM use are added as they were made (repeatable)" },
  account = { "--account", arg = "ID",
    help = "the AWS account of the ARNs (default: the account of the parameters' ARNs, else *)" },
  region = { "--region", arg = "REGION",
    help = "the region of the ARNs (default: the region of the parameters' ARNs, else AWS_REGION, else *)" },
  attempt = { "--attempt", arg = "N", help = "only this attempt's lines" },
  follow = { "-f --follow", help = "keep printing new lines until the run ends" },
  -- listing runs
  workflow = { "--workflow", arg = "NAME", help = "only runs of this workflow" },
  state = { "--state", arg = "STATE", multi = true,
    help = "only runs in this state: queued, running, interrupted, success, failed, cancelled "
      .. "(repeatable)" },
  limit = { "--limit", arg = "N", help = "only the N newest runs" },
  -- workers
  concurrency = { "--concurrency", arg = "N",
    help = "run at most N runs at once (default 4; flowrun server: 8)" },
  lease = { "--lease", arg = "DURATION",
    help = "how long a claimed run stays this worker's without a heartbeat (default 30s); a run "
      .. "whose worker died is taken over after it" },
  poll = { "--poll", arg = "DURATION",
    help = "look for runs at least this often even without a notification (default 5s)" },
  max_takeovers = { "--max-takeovers", arg = "N",
    help = "fail a run (its cleanup tasks run) once it was taken over more than N times from "
      .. "workers that died (default 5)" },
  run_id_opt = { "--run-id", arg = "ID", help = "the new run's id (default: a new one)" },
  -- schedules
  workflows = { "--workflows", arg = "DIR",
    help = "the workflows directory: its *.lua files are the workflows scheduled (and, for a "
      .. "server, offered), known by their names (default workflows/)" },
  no_schedule = { "--no-schedule",
    help = "do not fire the workflows' schedules here (another process is their scheduler)" },
  schedule = { "--schedule",
    help = "also be a scheduler: fire the due runs of the workflows in --workflows" },
  from = { "--from", arg = "DATE",
    help = "the first logical date (YYYY-MM-DD or an ISO 8601 time, in the workflow's zone)" },
  to = { "--to", arg = "DATE",
    help = "the last logical date, included (a date alone: that whole day)" },
  reprocess = { "--reprocess", arg = "WHICH", choices = { "none", "failed", "all" },
    help = "dates that already have a run: none (default: left as they are), failed (failed "
      .. "or cancelled runs resumed: their failed tasks run again) or all (every task of "
      .. "every such run again)" },
  quiet = { "-q --quiet", help = "print only the run id" },
  -- the server, and commands that talk to one
  server = { "--server", arg = "URL",
    help = "ask a flowrun server's API instead of the local store (also FLOWRUN_SERVER); the "
      .. "token is FLOWRUN_TOKEN" },
  listen = { "--listen", arg = "HOST:PORT",
    help = "where the server listens (default 127.0.0.1:8080; any other address than loopback "
      .. "needs tokens)" },
  tokens = { "--tokens", arg = "FILE",
    help = "API tokens, one \"ROLE TOKEN [NAME]\" a line (ROLE viewer or operator; mode 600); "
      .. "FLOWRUN_TOKEN adds one operator token" },
  tls_cert = { "--tls-cert", arg = "FILE", help = "serve HTTPS (and HTTP/2) with this certificate (PEM)" },
  tls_key = { "--tls-key", arg = "FILE", help = "the private key of --tls-cert (PEM)" },
  access_log = { "--access-log", help = "log every request (method, path, status, time) on stderr" },
  wait = { "--wait", help = "wait until the run ends; exit 0 when it succeeded, 1 otherwise" },
}
M.OPTIONS = OPTIONS

M.GLOBAL = { "debug", "virtual_time", "sim", "sim_fail", "sim_policy", "help" }
M.TOP = { "exec", "lib", "interactive", "output", "debug", "virtual_time", "sim", "sim_fail",
  "sim_policy", "version", "help" }
M.RUN = { "var", "vars_file", "logical_date", "state_dir", "store", "timeout", "max_active",
  "log_format", "no_fsync" }

-- The commands, in the order `flowrun --help` lists them. args: {name, metavar, optional}.
M.COMMANDS = {
  { name = "run", args = { { "workflow", "WORKFLOW.lua" } }, options = M.RUN,
    summary = "run a workflow (the same as flowrun WORKFLOW.lua [options])",
    description = "Runs a workflow: validates it, resolves its parameters, runs its tasks and "
      .. "journals every state change, so that a crashed run can be resumed. "
      .. "`flowrun WORKFLOW.lua --help` lists the workflow's parameters." },
  { name = "runs", options = { "state_dir", "store", "json", "workflow", "state", "limit", "server" },
    summary = "list runs: id, workflow, started, duration, state",
    description = "Lists the runs kept in the store, oldest first, and says where it looked." },
  { name = "show", args = { { "run_id", "RUN_ID" }, { "task", "TASK", true } },
    options = { "state_dir", "store", "json", "server" },
    summary = "a run's tasks: state, attempts, duration, error, result (TASK: the whole error)",
    description = "Shows a run. With TASK, shows that task's attempts and its whole error, "
      .. "lines intact. RUN_ID may be a unique prefix of an id, or \"last\"." },
  { name = "logs", args = { { "run_id", "RUN_ID" }, { "task", "TASK", true } },
    options = { "state_dir", "store", "attempt", "follow", "server" },
    summary = "a run's task logs (ctx.log lines, status lines), -f to follow a live run",
    description = "Prints the log lines kept for a run, for one task with TASK, for one attempt "
      .. "with --attempt." },
  { name = "resume", args = { { "run_id", "RUN_ID" } },
    options = { "force", "rerun", table.unpack(M.RUN) },
    summary = "continue a crashed, failed or cancelled run; succeeded tasks keep their results",
    description = "Continues a run: tasks that succeeded keep their results and are not run "
      .. "again (unless a cleanup task undid them); the rest run. Parameters are the run's; "
      .. "secret ones come again from --var, --vars-file or FLOWRUN_VAR_<NAME>." },
  { name = "server", options = { "listen", "workflows", "state_dir", "store", "tokens", "tls_cert",
      "tls_key", "vars_file", "max_active", "concurrency", "no_schedule", "access_log", "no_fsync" },
    summary = "the HTTP API and web UI, a scheduler and a worker: runs, logs, trigger, cancel, retry",
    description = "Serves the JSON API (documented at /api/v1/openapi.json), the web UI and "
      .. "/metrics over the runs of the store; queues the runs it is asked to trigger or retry, "
      .. "and runs them (and any other queued run) with a worker of its own, up to --concurrency "
      .. "at once; fires the schedules of the workflows in --workflows (unless --no-schedule). "
      .. "With --store postgresql://... any number of servers and workers share the runs. "
      .. "Listens on 127.0.0.1:8080 unless --listen says otherwise; another address than "
      .. "loopback needs tokens (--tokens FILE, FLOWRUN_TOKEN). --vars-file sets parameters of "
      .. "every run it triggers (under what a trigger gives). SIGTERM: stops accepting, ends "
      .. "streams, lets requests finish, and hands its runs back to a PostgreSQL store (another "
      .. "worker takes them over at once) or, on the file store, cancels them (their cleanup "
      .. "tasks run)." },
  { name = "trigger", args = { { "name", "WORKFLOW_NAME" } }, options = { "server", "var", "wait",
      "json" },
    summary = "start a run of a server's workflow (--server URL or FLOWRUN_SERVER); prints its id",
    description = "Starts a run of the workflow a server offers under that name, with --var "
      .. "parameters (validated by the server exactly as `flowrun run` validates them). Prints "
      .. "the run's id; --wait follows the run to its end and exits 0 when it succeeded." },
  { name = "graph", args = { { "workflow", "WORKFLOW.lua" } },
    options = { "format", "run", "state_dir", "store" },
    summary = "print the workflow's DAG (coloured by state with --run)" },
  { name = "plan", args = { { "workflow", "WORKFLOW.lua" } },
    options = { "var", "vars_file", "logical_date" },
    summary = "validate, resolve parameters and list the tasks in order; runs nothing" },
  { name = "iam", args = { { "workflow", "WORKFLOW.lua" } },
    options = { "var", "vars_file", "policy_format", "record", "account", "region" },
    summary = "the IAM policy the workflow's runs need, on every path the parameters select",
    description = "Prints the IAM policy document a workflow's runs need: every action its "
      .. "operators may call on the paths the parameters select (success, each failure, "
      .. "cancellation, resume), on resources scoped from the parameters where AWS allows it. "
      .. "Runs nothing." },
  { name = "submit", args = { { "workflow", "WORKFLOW.lua" } },
    options = { "var", "vars_file", "state_dir", "store", "timeout", "max_active", "run_id_opt",
      "quiet" },
    summary = "queue a run of a workflow for the workers; prints its id",
    description = "Validates the workflow and its parameters (exit 2 before anything is queued), "
      .. "then queues a run with the workflow file's source, which a worker runs (`flowrun "
      .. "worker`). Secret parameters are not stored: the worker takes them from its own "
      .. "environment (FLOWRUN_VAR_<NAME>) or --vars-file." },
  { name = "worker", options = { "state_dir", "store", "concurrency", "lease", "poll",
      "max_takeovers", "vars_file", "log_format", "schedule", "workflows" },
    summary = "run queued runs (and take over runs whose worker died) until stopped",
    description = "Claims queued runs from the store and runs up to --concurrency of them at once; "
      .. "renews their leases; takes over runs whose lease expired (their worker died) and "
      .. "resumes them as flowrun resume does. SIGTERM or SIGINT: stops claiming and hands its "
      .. "runs back to the store, where another worker takes them over at once. With --sim it "
      .. "runs only runs submitted with --sim. With --schedule it is also a scheduler (see "
      .. "flowrun scheduler)." },
  { name = "scheduler", options = { "state_dir", "store", "workflows", "vars_file" },
    summary = "fire the scheduled workflows' runs into the store, until stopped",
    description = "Watches the workflows directory (--workflows, default workflows/; a file added, "
      .. "edited or removed takes effect at once, a file that does not load keeps its last "
      .. "good version scheduled) and queues each scheduled, unpaused workflow's due runs for the "
      .. "workers, with their logical dates and data intervals: catchup, max_active_runs and "
      .. "overlap as the workflow declares them. Any number of schedulers may share a store: "
      .. "each tick is fired once. Parameters come from defaults, --vars-file and "
      .. "FLOWRUN_VAR_<NAME>; secret ones from the workers." },
  { name = "schedules", options = { "state_dir", "store", "workflows", "json" },
    summary = "the scheduled workflows: schedule, paused, last run and state, next fire times" },
  { name = "pause", args = { { "workflow_ref", "WORKFLOW" } },
    options = { "state_dir", "store", "workflows" },
    summary = "pause a workflow's schedule: no run is fired until unpause",
    description = "Pauses a workflow's schedule in the store: every scheduler stops firing its runs "
      .. "(runs already queued or running go on). flowrun unpause fires what is due then, as "
      .. "catchup says." },
  { name = "unpause", args = { { "workflow_ref", "WORKFLOW" } },
    options = { "state_dir", "store", "workflows" },
    summary = "unpause a workflow's schedule" },
  { name = "backfill", args = { { "workflow_ref", "WORKFLOW" } },
    options = { "from", "to", "reprocess", "state_dir", "store", "workflows", "vars_file" },
    summary = "make the runs of a range of logical dates and follow them until done",
    description = "Makes a run (kind backfill) for every fire time of the workflow's schedule whose "
      .. "logical date lies between --from and --to (both included), oldest first, never more "
      .. "active runs of the workflow at once than its max_active_runs, and shows their progress "
      .. "until all have ended (exit 0 when all succeeded, 1 otherwise). A date that already "
      .. "has a run is left alone unless --reprocess says otherwise. The runs are run by "
      .. "workers (flowrun worker)." },
  { name = "cancel", args = { { "run_id", "RUN_ID" } }, options = { "state_dir", "store", "server" },
    summary = "cancel a run wherever it runs; its cleanup tasks run",
    description = "A queued run ends at once. A running one is cancelled by the process running "
      .. "it (a worker, a server, or flowrun run in another terminal): its running tasks are "
      .. "stopped and its cleanup tasks run. With --server URL, the server is asked." },
  { name = "workers", options = { "state_dir", "store", "json" },
    summary = "list the workers: host, pid, runs, last heartbeat" },
  { name = "store", args = { { "action", "init" } }, options = { "state_dir", "store" },
    summary = "create or migrate the PostgreSQL run store's schema",
    description = "Creates the PostgreSQL run store's schema, or migrates it to this flowrun's "
      .. "version (also done on first use). Refuses a schema newer than this flowrun." },
  { name = "repl", options = { "output" },
    summary = "the interactive REPL (also: flowrun with no arguments on a terminal)" },
}
M.ARG_HELP = {
  workflow = "the workflow file (a Lua file returning flow.workflow{...})",
  workflow_ref = "a workflow file, or the name of a workflow in --workflows",
  run_id = "a run's id, a unique prefix of one, or \"last\"",
  task = "a task of the run",
  action = "init",
  name = "the name of a workflow the server offers (flow.workflow{name = ...})",
}

M.BY_NAME = {}
for _, c in ipairs(M.COMMANDS) do M.BY_NAME[c.name] = c end

-- Adds option `name` to an argparse parser.
local function add_option(p, name)
  local spec = OPTIONS[name]
  local o
  if spec.arg then
    o = p:option(spec[1], spec.help):argname(spec.arg):target(name)
    if spec.multi then o:count("*") end
    if spec.choices then o:choices(spec.choices) end
  else
    o = p:flag(spec[1], spec.help):target(name)
  end
  return o
end

local function make_parser(name, description, usage)
  -- required here, not at load: a start-up that parses nothing (flowrun -e, flowrun x.lua) skips it
  local p = require("argparse")(name, description):add_help(false):help_max_width(100)
  if usage then p:usage(usage) end
  return p
end

-- parser_of(spec) -> an argparse parser for a command spec {name, args, options, summary}: its
-- arguments, its options and the global ones.
function M.parser_of(c)
  local p = make_parser("flowrun " .. c.name, c.description or c.summary)
  for _, a in ipairs(c.args or {}) do
    local arg = p:argument(a[2], M.ARG_HELP[a[1]]):target(a[1])
    if a[3] then arg:args("?") end
  end
  local seen = {}
  for _, n in ipairs(c.options or {}) do add_option(p, n); seen[n] = true end
  for _, n in ipairs(M.GLOBAL) do if not seen[n] then add_option(p, n) end end
  return p
end

-- parser(name) -> the parser of `flowrun NAME ...`.
function M.parser(name) return M.parser_of(M.BY_NAME[name]) end

-- The text `flowrun --help` prints: usage, commands, options, environment, exit status.
function M.help()
  local out = {}
  local function w(...) out[#out + 1] = table.concat({ ... }) end
  -- "  left   text" with text wrapped at 96 columns, continuation lines under it
  local function entry(left, text, lw)
    local wrapped, line = {}, ""
    for word in text:gmatch("%S+") do
      if #line + #word + 1 > 93 - lw then wrapped[#wrapped + 1] = line; line = word
      else line = line == "" and word or (line .. " " .. word) end
    end
    wrapped[#wrapped + 1] = line
    w(string.format("  %-" .. lw .. "s %s", left, wrapped[1]))
    for i = 2, #wrapped do w(string.rep(" ", lw + 3), wrapped[i]) end
  end
  local function opt_line(name)
    local spec = OPTIONS[name]
    entry(spec[1]:gsub(" ", ", ") .. (spec.arg and (" " .. spec.arg) or ""), spec.help, 22)
  end
  w("Usage: flowrun [options] [script.lua [args...]]")
  w("       flowrun [options] -e CODE")
  w("       flowrun WORKFLOW.lua [run options]")
  w("       flowrun COMMAND [arguments] [options]        (flowrun COMMAND --help for each)")
  w("")
  w("flowrun runs Lua workflow scripts on an event loop: AWS and PostgreSQL calls, timers and")
  w("tasks wait without blocking each other. A script that returns a workflow")
  w("(flow.workflow{...}) is run by the workflow engine, with a journal that lets a crashed")
  w("run resume.")
  w("")
  w("Commands:")
  for _, c in ipairs(M.COMMANDS) do
    local args = {}
    for _, a in ipairs(c.args or {}) do args[#args + 1] = a[3] and ("[" .. a[2] .. "]") or a[2] end
    entry(c.name .. " " .. table.concat(args, " "), c.summary, 22)
  end
  w("  (RUN_ID may be a unique prefix of an id, or \"last\")")
  w("")
  w("Options (any command):")
  for _, n in ipairs(M.TOP) do opt_line(n) end
  w("  --                     stop handling options")
  w("  -                      read the script from standard input")
  w("")
  w("Run options (run, resume, and flowrun WORKFLOW.lua):")
  for _, n in ipairs(M.RUN) do opt_line(n) end
  w("")
  w("Environment:")
  w("  FLOWRUN_HOME          where runs are kept (default ~/.local/state/flowrun)")
  w("  FLOWRUN_STORE         as --store (postgresql://..., file:DIR, or a name from the config)")
  w("  FLOWRUN_CONFIG        the config file (default ~/.config/flowrun/config.json)")
  w("  FLOWRUN_DEBUG         as --debug")
  w("  FLOWRUN_SIM=1         as --sim")
  w("  FLOWRUN_VAR_<NAME>    a workflow parameter")
  w("  FLOWRUN_SERVER        as --server (runs, show, logs, cancel, trigger)")
  w("  FLOWRUN_TOKEN         the API token: sent by --server commands; an operator token of")
  w("                        flowrun server")
  w("  LUA_PATH, LUA_CPATH   extra module search paths (after flowrun's own lua/ and stdlib/)")
  w("  AWS_*                 credentials, region, endpoints as the AWS CLI reads them")
  w("")
  w("Exit status: 0 success, 1 error or failed run, 2 invalid input,")
  w("             129/130/143 interrupted by SIGHUP/SIGINT/SIGTERM.")
  w("")
  w("Examples:")
  w("  flowrun hello.lua a b            run a script with arg[1]=\"a\", arg[2]=\"b\"")
  w("  flowrun -e 'return 1 + 1'        prints 2")
  w("  flowrun -e 'return aws.sts.get_caller_identity()'")
  w("  flowrun workflows/dms_to_emr.lua --vars-file outputs.json --sim --virtual-time")
  w("  flowrun show last               the last run's tasks")
  w("  flowrun                          the REPL")
  return table.concat(out, "\n") .. "\n"
end

-- Options that take a value, by every spelling (for finding where the script name is).
M.TAKES_VALUE = {}
for _, spec in pairs(OPTIONS) do
  if spec.arg then
    for flag in spec[1]:gmatch("%S+") do M.TAKES_VALUE[flag] = true end
  end
end

return M
