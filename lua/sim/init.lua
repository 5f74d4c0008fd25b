-- sim — an in-process AWS for `--sim`: answers DMS, EMR, EMR Serverless, S3, Glue, Secrets
-- Manager, STS, Athena, SNS and CloudWatch (DMS's CDC latency) requests at the HTTP level, after
-- the client has serialized them, so the client's whole path except the socket is exercised.
-- The simulated DMS reads its source through its source endpoint (the real PostgreSQL of the
-- demo and the tests), so nothing outside the simulator has to tell it what the source holds.
--
--   require("sim").handle(req) -> {status, headers, body}
--     req = {method, url, headers, body, service, region}
--
-- State lives in one table (a "world"): built from the default world (sim/seed.lua), then a
-- seed file (FLOWRUN_SIM_SEED or configure{seed_file}); or loaded from a state file
-- (FLOWRUN_SIM_STATE or configure{state_file}) that is rewritten after every call that changed
-- something, so a killed run that is resumed finds the same clusters and tasks.
--
-- Resources move through their states lazily: each call first advances every resource it
-- touches to the current time of the flow clock (flow.time(), which follows virtual time),
-- so no background task is needed and hours of simulated work cost nothing.
--
-- Durations (seconds, see sim/state.lua) can be changed by a seed, configure{durations = {...}}
-- or FLOWRUN_SIM_DURATIONS='{"emr_step": 60}' (applied to a loaded state file too).
--
-- IAM: with a policy (configure{policy | policy_file}, FLOWRUN_SIM_POLICY, --sim-policy), every
-- call is authorized first, as AWS does, and refused with an AccessDenied (sim/iam.lua).
--
-- Injected failures: configure{fail = {"emr.step", "emr.cluster", "dms.task", "dms.table",
-- "dms.cdc", "dms.latency=900", "serverless.job", "lost=emr.RunJobFlow" (done, then answered 500
-- once)}, throttle = 0.2}, or FLOWRUN_SIM_FAIL="emr.step,throttle=0.2".
local json = require "json"
local util = require "sim.util"

local M = {}

local services = {
  dms = {module = "sim.dms", namespace = "com.amazonaws.dms", prefix = "AmazonDMSv20160101"},
  emr = {module = "sim.emr", namespace = "com.amazonaws.emr", prefix = "ElasticMapReduce"},
  glue = {module = "sim.glue", namespace = "com.amazonaws.glue", prefix = "AWSGlue"},
  secretsmanager = {module = "sim.secrets", namespace = "com.amazonaws.secretsmanager",
                    prefix = "secretsmanager"},
  athena = {module = "sim.athena", namespace = "com.amazonaws.athena", prefix = "AmazonAthena"},
  cloudwatch = {module = "sim.cloudwatch", namespace = "com.amazonaws.cloudwatch",
                prefix = "GraniteServiceVersion20100801"},
  ["emr-serverless"] = {module = "sim.emr_serverless"},
  s3 = {module = "sim.s3"},
  sts = {module = "sim.sts"},
  sns = {module = "sim.sns"},
}
M.services = services

local world        -- the state table
local cfg = {}     -- options in force
local configured = false

---- options -----------------------------------------------------------------------------------

local function parse_fail(spec, into)
  into.fail = into.fail or {}
  local items = {}
  if type(spec) == "string" then
    for item in spec:gmatch("[^,%s]+") do items[#items + 1] = item end
  elseif type(spec) == "table" then
    for k, v in pairs(spec) do
      if type(k) == "number" then items[#items + 1] = v
      elseif k == "throttle" then items[#items + 1] = "throttle=" .. tostring(v)
      elseif v then items[#items + 1] = k end
    end
  end
  for _, item in ipairs(items) do
    local k, v = tostring(item):match("^([%w%._]+)=(.*)$")
    if k == "throttle" then
      into.throttle = tonumber(v) or error("sim: throttle wants a probability, got " .. v)
    elseif k then
      into.fail[k] = v
    else
      into.fail[item] = true
    end
  end
end

-- Options from the environment, under what configure{} is given (the CLI passes --sim-fail and
-- the state file of a workflow run explicitly).
local function default_options()
  local o = {fail = {}, throttle = 0}
  local env = os.getenv("FLOWRUN_SIM_FAIL")
  if env and env ~= "" then parse_fail(env, o) end
  local d = os.getenv("FLOWRUN_SIM_DURATIONS")
  if d and d ~= "" then
    local dok, v = pcall(json.decode, d)
    if not dok or type(v) ~= "table" then
      error("sim: FLOWRUN_SIM_DURATIONS must be a JSON object of seconds, e.g. {\"emr_step\": 60}")
    end
    o.durations = v
  end
  o.record_file = os.getenv("FLOWRUN_SIM_RECORD")
  o.state_file = os.getenv("FLOWRUN_SIM_STATE")
  o.seed_file = os.getenv("FLOWRUN_SIM_SEED")
  o.policy_file = os.getenv("FLOWRUN_SIM_POLICY")
  for _, k in ipairs {"record_file", "state_file", "seed_file", "policy_file"} do
    if o[k] == "" then o[k] = nil end
  end
  return o
end

-- Time source: wall clock of the flow runtime (follows virtual time); overridable for tests.
function M.now()
  if cfg.clock then return cfg.clock() end
  return require("flow").time()
end

function M.failing(what) return cfg.fail and cfg.fail[what] end

---- world -------------------------------------------------------------------------------------

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

-- Long strings of the world (raw files, table data) live in files of their own beside the state
-- file, named after it and their SHA-256 and written once: the state file stays small, so
-- rewriting it after every call stays cheap.
local spilled = {}   -- string -> id, for the strings this process has written or read

-- beside the state file, so no directory has to be made: <state_file>.<sha256>
local function blob_path(id) return cfg.state_file .. "." .. id end

local function spill(s)
  local id = spilled[s]
  if id then return id end
  id = require("aws.sigv4").sha256_hex(s)
  local path = blob_path(id)
  local f = io.open(path, "rb")
  if f then
    f:close()
  else
    f = assert(io.open(path .. ".tmp", "wb"))
    f:write(s)
    f:close()
    assert(os.rename(path .. ".tmp", path))
  end
  spilled[s] = id
  return id
end

local function unspill(id)
  local s, err = read_file(blob_path(id))
  if not s then
    error("sim: state file " .. cfg.state_file .. " refers to a missing blob: " .. tostring(err))
  end
  spilled[s] = id
  return s
end

local function load_world()
  if cfg.state_file then
    local s = read_file(cfg.state_file)
    if s and s ~= "" then
      local ok, w = pcall(json.decode, s)
      if not ok then error("sim: state file " .. cfg.state_file .. " is not JSON: " .. tostring(w)) end
      world = require("sim.state").thaw(w, unspill)
      for k, v in pairs(cfg.durations or {}) do world.durations[k] = v end
      return
    end
  end
  local seeds = {}
  if not cfg.no_default then seeds[#seeds + 1] = require("sim.state").default_seed end
  if cfg.seed_file then
    local s, err = read_file(cfg.seed_file)
    if not s then error("sim: cannot read seed file: " .. tostring(err)) end
    local ok, v = pcall(json.decode, s)
    if not ok then error("sim: seed file " .. cfg.seed_file .. " is not JSON: " .. tostring(v)) end
    seeds[#seeds + 1] = v
  end
  if cfg.seed then seeds[#seeds + 1] = cfg.seed end
  world = require("sim.state").build(seeds)
  for k, v in pairs(cfg.durations or {}) do world.durations[k] = v end
  M.save()
end

-- (Re)configure the simulator. opts: policy (a decoded IAM policy document) or policy_file (its
-- JSON; also FLOWRUN_SIM_POLICY): every call is authorized against it (sim/iam.lua); fail (list or "a,b,throttle=p"), throttle, state_file,
-- default_state_file (used when neither state_file nor FLOWRUN_SIM_STATE names one),
-- seed_file, seed (a table, same shape as a seed file), durations, clock (function), no_default (start
-- from an empty world instead of the demo world), random_seed.
function M.configure(opts)
  opts = opts or {}
  cfg = default_options()
  for k, v in pairs(opts) do
    if k == "fail" then
      -- configured failures add to FLOWRUN_SIM_FAIL's
      parse_fail(v, cfg)
    elseif v ~= nil then cfg[k] = v end
  end
  -- a workflow run's world lives beside its journal unless FLOWRUN_SIM_STATE says otherwise
  cfg.state_file = cfg.state_file or cfg.default_state_file
  if opts.random_seed then math.randomseed(opts.random_seed) end
  configured = true
  world = nil
  load_world()
  local iam = require "sim.iam"
  if cfg.policy then iam.set_policy(cfg.policy, "configure{policy}")
  elseif cfg.policy_file then iam.load_policy(cfg.policy_file)
  else iam.set_policy(nil) end
  return M
end

local function ensure()
  if not configured then M.configure({}) end
  if not world then load_world() end
  return world
end

function M.world() return ensure() end

-- Persist the world when a state file is configured: written to a temporary file then renamed,
-- so a crash never leaves half a file.
function M.save()
  if not cfg.state_file or not world then return end
  local s = json.encode(require("sim.state").freeze(world, spill))
  local tmp = cfg.state_file .. ".tmp"
  local f = assert(io.open(tmp, "wb"))
  f:write(s)
  f:close()
  assert(os.rename(tmp, cfg.state_file))
end

-- For tests without a database: the sizes of the tables a DMS task copies ({"schema.table" =
-- n}), used instead of reading its source (as a seed's "Tables" are).
function M.set_table_rows(task_arn, rows)
  local w = ensure()
  local t = w.dms.tasks[task_arn]
  if not t then error("sim: no DMS task " .. tostring(task_arn)) end
  t.sim_tables = {}
  for name, n in pairs(rows) do t.sim_tables[name] = math.tointeger(n) or n end
  t.sim_sized = true
  M.save()
end

---- dispatch ----------------------------------------------------------------------------------

local function throttled(service)
  if (cfg.throttle or 0) <= 0 or math.random() >= cfg.throttle then return nil end
  if service == "s3" then
    return util.fault("SlowDown", "Please reduce your request rate.", 503)
  end
  return util.fault("ThrottlingException", "Rate exceeded", 400)
end

local function error_answer(svc, service, f)
  local mod = require(svc.module)
  if mod.error_answer then return mod.error_answer(f) end
  return util.json_error(svc.namespace or ("com.amazonaws." .. service), f)
end

-- FLOWRUN_SIM_RECORD=file: every request received, one JSON line each (service, method, url,
-- target, body; the workflow task that made it; with a policy, the IAM checks it needed and the
-- statement that allowed each), for tests that check what clients send against the API models
-- and which statements of a policy a run used, and for `flowrun iam --record`.
local function record(req, op, checks)
  local f = io.open(cfg.record_file, "ab")
  if not f then return end
  local ctx = require("flow.context").current()
  local authz
  if checks then
    authz = json.array()
    for _, c in ipairs(checks) do
      authz[#authz + 1] = {action = c.action, resource = c.resource, decision = c.decision or json.null,
                           sid = c.sid or json.null,
                           context = next(c.context or {}) and c.context or json.null}
    end
  end
  f:write(json.encode({service = req.service, method = req.method, url = req.url,
    target = util.header(req.headers, "X-Amz-Target") or json.null,
    operation = op or json.null, task = ctx and ctx.task or json.null,
    run_id = ctx and ctx.run_id or json.null, authz = authz or json.null,
    body = req.service ~= "s3" and req.body or json.null}), "\n")
  f:close()
end

-- The operation and the parameters of a request: JSON 1.1 services name it in X-Amz-Target,
-- the others are read as their protocol lays them out (sim/iam.lua).
local function decode(svc, service, req)
  if svc.prefix then
    local target = util.header(req.headers, "X-Amz-Target")
    local prefix, op = tostring(target or ""):match("^([^.]+)%.(%w+)$")
    if prefix ~= svc.prefix then return nil, {} end
    local params = {}
    if req.body and req.body ~= "" then
      local dok, v = pcall(json.decode, req.body)
      if dok and type(v) == "table" then params = v end
    end
    return op, params
  end
  return require("sim.iam").operation(service, req)
end

function M.handle(req)
  ensure()
  local service = req.service
  local svc = services[service]
  if not svc then
    if cfg.record_file then record(req) end
    return util.json_error("com.amazon.coral.service", util.fault("UnknownServiceException",
      "The simulator does not answer service '" .. tostring(service) .. "'", 400))
  end
  local mod = require(svc.module)
  local iam = require "sim.iam"
  local op, params = decode(svc, service, req)
  -- IAM first, as AWS does: a refused call changes nothing
  local checks, denied = iam.authorize(world, service, op, params, cfg.record_file ~= nil)
  local ok, res = pcall(function()
    if denied then error(denied) end
    local f = throttled(service)
    if f then error(f) end
    if svc.prefix then
      if not op or not mod.ops[op] then
        error(util.fault("UnknownOperationException",
          "Unknown operation " .. tostring(util.header(req.headers, "X-Amz-Target")), 400))
      end
      if req.body and req.body ~= "" then
        local dok, v = pcall(json.decode, req.body)
        if not dok or type(v) ~= "table" then
          error(util.fault("SerializationException", "Could not parse the request body as JSON"))
        end
      end
      util.require_params(params, mod.required and mod.required[op])
      local answer = util.json_ok(mod.ops[op](world, params, req))
      -- "lost=emr.RunJobFlow": the call is carried out, then its answer is lost (a 500), once;
      -- a client that simply retries does the work twice
      local lost = cfg.fail and cfg.fail.lost
      if lost == service .. "." .. op and not cfg.lost_done then
        cfg.lost_done = true
        M.save()
        error(util.fault("InternalFailure", "simulated lost answer (" .. lost .. ")", 500))
      end
      return answer
    end
    return mod.handle(world, req)
  end)
  local notes = iam.take_notes()
  if checks then
    for _, c in ipairs(notes) do checks[#checks + 1] = c end
  end
  if cfg.record_file then record(req, op, checks) end
  if not ok then
    if util.is_fault(res) then
      res = error_answer(svc, service, res)
    else
      res = error_answer(svc, service, util.fault("InternalFailure",
        "simulator error: " .. tostring(res), 500))
    end
  end
  M.save()
  return res
end

return M
