-- sim/dms.lua — AWS DMS replication tasks in the simulator: starting -> running -> stopped
-- ("Stop Reason FULL_LOAD_ONLY_FINISHED") with a full load whose length comes from the source
-- table sizes (tables loaded eight at a time, as MaxFullLoadSubTasks does), progress in
-- ReplicationTaskStats, per-table statistics, and the raw files written to the S3 target's
-- bucket as each table finishes (TargetTablePrepMode DROP_AND_CREATE empties a table's folder
-- first, as DMS does for an S3 target).
--
-- The source is read at StartReplicationTask through the task's source endpoint (sim.source:
-- its secret or its server; the tables its mappings select), unless sizes were given (a seed's
-- "Tables", sim.set_table_rows) for a world without a database. A full-load-and-cdc task stays
-- running after its load and captures the source's changes: when it is looked at (a describe,
-- or a listing of its target folder) and dms_cdc_interval has passed since the last capture,
-- the source is read again and the differences are written as a CDC file per table, named by
-- the capture time (yyyymmdd-hhmmssSSS.parquet, as DMS names them), each row with its Op (I, U,
-- D) and commit timestamp. resume-processing continues the stream without a load.
--
-- The raw files are not Parquet: "PAR1", a JSON line saying what the file stands for, one line
-- per row ("key<TAB>digest" for a load, "Op<TAB>key<TAB>digest<TAB>commit time" for CDC), "PAR1".
--
-- Failures: fail "dms.task" (the task fails part way, status failed, LastFailureMessage),
-- "dms.table" (=name, or the largest table: that table errors and the task still stops with
-- FULL_LOAD_ONLY_FINISHED, as DMS does), "dms.cdc" (a running CDC task fails at its next
-- capture) and "dms.latency=<seconds>" (the CDC latency reported to CloudWatch).
local json = require "json"
local util = require "sim.util"
local sim = require "sim"
local source = require "sim.source"

local M = {ops = {}}

M.required = {
  DescribeReplicationInstances = {},
  DescribeReplicationTasks = {},
  StartReplicationTask = {"ReplicationTaskArn", "StartReplicationTaskType"},
  StopReplicationTask = {"ReplicationTaskArn"},
  DescribeTableStatistics = {"ReplicationTaskArn"},
  DescribeEndpoints = {},
}

local function not_found(what)
  return util.fault("ResourceNotFoundFault", what)
end

-- Reads the source for a load (or a capture): {name = {rows, lines}}, or nil, message.
local function read_source(w, task)
  -- sizes given, or no source at all (a seed's bare task): the load makes up its rows
  if task.sim_sized or not task.SourceEndpointArn then return nil end
  return source.read(w, task)
end

local function table_list(task)
  local names = {}
  for name in pairs(task.sim_tables or {}) do names[#names + 1] = name end
  if #names == 0 then
    -- No sizes given: the explicitly named tables of the selection rules, 10,000 rows each.
    local ok, m = pcall(json.decode, task.TableMappings or "{}")
    for _, r in ipairs(ok and type(m) == "table" and m.rules or {}) do
      local loc = r["object-locator"] or {}
      if r["rule-type"] == "selection" and r["rule-action"] ~= "exclude"
        and loc["schema-name"] and loc["table-name"] and not loc["table-name"]:find("%", 1, true) then
        names[#names + 1] = loc["schema-name"] .. "." .. loc["table-name"]
        task.sim_tables = task.sim_tables or {}
        task.sim_tables[names[#names]] = 10000
      end
    end
  end
  table.sort(names)
  return names
end

-- Plan a full load starting at t0: each table gets a slot, a start and an end.
local function plan_load(w, task, t0)
  local d = w.durations
  local names = table_list(task)
  local slots = {}
  for i = 1, math.max(1, d.dms_parallel_tables) do slots[i] = t0 end
  local tables, finish = {}, t0
  for _, name in ipairs(names) do
    local rows = task.sim_tables[name] or 0
    local best = 1
    for i = 2, #slots do if slots[i] < slots[best] then best = i end end
    local start = slots[best]
    local stop = start + math.max(d.dms_min_table, rows / d.dms_rows_per_second)
    slots[best] = stop
    if stop > finish then finish = stop end
    tables[#tables + 1] = {name = name, rows = rows, start = start, stop = stop}
  end
  return tables, finish
end

local function errored_table(task)
  local which = sim.failing("dms.table")
  if not which then return nil end
  if which ~= true then return which end
  local best, rows = nil, -1
  for name, n in pairs(task.sim_tables or {}) do
    if n > rows or (n == rows and name < best) then best, rows = name, n end
  end
  return best
end

-- The target bucket and the folder of a table ("raw/public/orders/"), or nil.
local function target_of(w, task, tname)
  local target = w.dms.endpoints[task.TargetEndpointArn]
  local s3s = target and target.S3Settings
  if not s3s or not s3s.BucketName then return nil end
  local bucket = w.s3.buckets[s3s.BucketName]
  if not bucket then return nil end
  local folder = s3s.BucketFolder and s3s.BucketFolder ~= "" and (s3s.BucketFolder .. "/") or ""
  if not tname then return bucket, folder, s3s end
  local schema, name = tname:match("^([^.]+)%.(.+)$")
  if not schema then schema, name = "public", tname end
  return bucket, folder .. schema .. "/" .. name .. "/", s3s
end

local function put(bucket, key, body, t)
  bucket.objects[key] = {body = body, etag = util.etag(body), mtime = t,
                         ctype = "application/octet-stream"}
end

local FILE_ROWS = 500000

local function write_raw_files(w, task, tbl, lines)
  local bucket, dir = target_of(w, task, tbl.name)
  if not bucket then return end
  local files = math.max(1, math.ceil(tbl.rows / FILE_ROWS))
  local rows = {}
  if lines then for l in lines:gmatch("[^\n]*\n") do rows[#rows + 1] = l end end
  for i = 1, files do
    local n = i < files and FILE_ROWS or tbl.rows - FILE_ROWS * (files - 1)
    local body = {"PAR1\n", json.encode({sim = "dms full load", table = tbl.name, rows = n,
                                         lines = lines ~= nil}), "\n"}
    if lines then body[4] = table.concat(rows, "", FILE_ROWS * (i - 1) + 1, FILE_ROWS * (i - 1) + n) end
    body[#body + 1] = "PAR1"
    put(bucket, string.format("%sLOAD%08X.parquet", dir, i), table.concat(body), tbl.stop)
  end
end

-- DROP_AND_CREATE: the table's folder is emptied before its load.
local function prep_target(w, task, names)
  local okj, settings = pcall(json.decode, task.ReplicationTaskSettings or "{}")
  local mode = okj and type(settings) == "table" and settings.FullLoadSettings
    and settings.FullLoadSettings.TargetTablePrepMode or "DROP_AND_CREATE"
  if mode ~= "DROP_AND_CREATE" then return end
  for _, name in ipairs(names) do
    local bucket, dir = target_of(w, task, name)
    if bucket then
      for key in pairs(bucket.objects) do
        if key:sub(1, #dir) == dir then bucket.objects[key] = nil end
      end
    end
  end
end

-- yyyymmdd-hhmmssSSS, DMS's name for a CDC file written at t
local function cdc_name(t)
  local sec = math.floor(t)
  return os.date("!%Y%m%d-%H%M%S", sec) .. string.format("%03d", math.floor((t - sec) * 1000))
end

local function write_cdc_file(w, task, tname, changes, t)
  local bucket, dir, s3s = target_of(w, task, tname)
  if not bucket then return end
  local name = cdc_name(t)
  local bump = 0
  while bucket.objects[dir .. name .. ".parquet"] do   -- two captures in one millisecond
    bump = bump + 0.001
    name = cdc_name(t + bump)
  end
  local stamp = util.iso8601(t)
  local out = {"PAR1\n", json.encode({sim = "dms cdc", table = tname, rows = #changes, lines = true,
    timestamp_column = s3s.TimestampColumnName or json.null}), "\n"}
  for _, c in ipairs(changes) do
    out[#out + 1] = c[1] .. "\t" .. c[2] .. "\t" .. c[3] .. "\t" .. stamp .. "\n"
  end
  out[#out + 1] = "PAR1"
  put(bucket, dir .. name .. ".parquet", table.concat(out), t)
  return name
end

-- Bring a task up to time now.
local function advance(w, task, now)
  local r = task.sim_run
  if not r then return end
  local d = w.durations
  for _ = 1, 10 do
    local st = task.Status
    if st == "starting" and now >= r.start + d.dms_start and r.source_error then
      task.Status = "failed"
      task.StopReason = "Stop Reason FATAL_ERROR"
      task.LastFailureMessage = "Last Error " .. r.source_error .. " Stop Reason FATAL_ERROR " ..
        "Error Level FATAL"
      r.stopped_at = r.start + d.dms_start
    elseif st == "starting" and now >= r.start + d.dms_start and r.resume then
      -- resume-processing: the stream goes on from where it stopped, no load
      task.Status = "running"
      task.ReplicationTaskStartDate = r.start + d.dms_start
      r.done = true
      if task.sim_cdc then task.sim_cdc.last = r.start + d.dms_start end
    elseif st == "starting" and now >= r.start + d.dms_start then
      task.Status = "running"
      r.load_start = r.start + d.dms_start
      task.ReplicationTaskStartDate = r.load_start
      r.tables, r.finish = plan_load(w, task, r.load_start)
      r.errored = errored_table(task)
      local names = {}
      for _, t in ipairs(r.tables) do names[#names + 1] = t.name end
      prep_target(w, task, names)
      if sim.failing("dms.task") then
        r.fail_at = r.load_start + (r.finish - r.load_start) * 0.6
      end
    elseif st == "running" and r.fail_at and now >= r.fail_at then
      task.Status = "failed"
      task.StopReason = "Stop Reason FATAL_ERROR"
      task.LastFailureMessage = "Last Error Task '" .. task.ReplicationTaskIdentifier ..
        "' was suspended due to 6 successive unexpected failures Stop Reason FATAL_ERROR " ..
        "Error Level FATAL (simulated failure: dms.task)"
      r.stopped_at = r.fail_at
    elseif st == "running" and r.finish and not r.done and now >= r.finish then
      r.done = true
      local snap = r.snapshot or {}
      for _, t in ipairs(r.tables) do
        if t.name ~= r.errored then write_raw_files(w, task, t, snap[t.name] and snap[t.name].lines) end
      end
      if task.MigrationType ~= "full-load" then
        -- the stream starts from what the load read
        local image = {}
        for name, sn in pairs(snap) do image[name] = sn.lines end
        task.sim_cdc = {image = image, last = r.finish, counts = task.sim_cdc and
          task.sim_cdc.counts or {}}
      end
      r.snapshot = nil
      if task.MigrationType == "full-load" then
        task.Status = "stopped"
        task.StopReason = "Stop Reason FULL_LOAD_ONLY_FINISHED"
        r.stopped_at = r.finish
      end
    elseif st == "stopping" and now >= r.stop_requested + d.dms_stop then
      task.Status = "stopped"
      task.StopReason = "Stop Reason NORMAL"
      r.stopped_at = r.stop_requested + d.dms_stop
    else
      break
    end
  end
end

-- The CDC stream: the changes since the last capture, as one file per changed table. Reads the
-- source (waits): the capture's time is taken first, so a caller that arrives meanwhile finds
-- nothing to do.
local function capture(w, task, now)
  local r, c = task.sim_run, task.sim_cdc
  if not r or not r.done or task.Status ~= "running" or task.MigrationType == "full-load"
    or not c or task.sim_sized then
    return
  end
  -- (under virtual time each process starts its clock at the wall clock: a later process can
  -- be behind the world's last capture; it captures then, and names its files after the last)
  local since = now - (c.last or 0)
  if since >= 0 and since < w.durations.dms_cdc_interval then return end
  c.last = now
  if sim.failing("dms.cdc") then
    task.Status = "failed"
    task.StopReason = "Stop Reason RECOVERABLE_ERROR"
    task.LastFailureMessage = "Last Error Replication slot on the source was dropped " ..
      "(simulated failure: dms.cdc) Stop Reason RECOVERABLE_ERROR Error Level ERROR"
    r.stopped_at = now
    return
  end
  local snap, err = read_source(w, task)
  if task.sim_run ~= r or task.Status ~= "running" then return end
  if not snap then
    task.Status = "failed"
    task.StopReason = "Stop Reason RECOVERABLE_ERROR"
    task.LastFailureMessage = "Last Error " .. tostring(err) .. " Stop Reason RECOVERABLE_ERROR"
    r.stopped_at = now
    return
  end
  local t = math.max(now, (c.written or 0) + 0.001)
  for _, name in ipairs(util.sorted_keys(snap)) do
    local changes = source.diff(c.image[name] or "", snap[name].lines)
    if #changes > 0 then
      write_cdc_file(w, task, name, changes, t)
      c.written = t
      local n = c.counts[name] or {I = 0, U = 0, D = 0}
      for _, ch in ipairs(changes) do n[ch[1]] = n[ch[1]] + 1 end
      c.counts[name] = n
      c.image[name] = snap[name].lines
    end
  end
end

-- Brings every CDC task writing into bucket (any, when nil) up to now: called when someone
-- looks at what DMS writes.
function M.catch_up(w, bucket_name, prefix)
  local now = sim.now()
  for _, arn in ipairs(util.sorted_keys(w.dms.tasks)) do
    local task = w.dms.tasks[arn]
    local bucket, folder, s3s = target_of(w, task)
    if bucket and (not bucket_name or s3s.BucketName == bucket_name)
      and (not prefix or prefix:sub(1, #folder) == folder or folder:sub(1, #prefix) == prefix) then
      advance(w, task, now)
      capture(w, task, now)
    end
  end
end

local function stats(w, task, now)
  local r = task.sim_run
  if not r then return nil end
  local s = {FullLoadProgressPercent = 0, ElapsedTimeMillis = 0, TablesLoaded = 0,
             TablesLoading = 0, TablesQueued = 0, TablesErrored = 0,
             FreshStartDate = r.start, StartDate = r.start}
  local t_end = r.stopped_at or now
  s.ElapsedTimeMillis = math.floor((t_end - r.start) * 1000)
  if r.stopped_at then s.StopDate = r.stopped_at end
  if not r.tables then
    s.TablesQueued = #table_list(task)
    return s
  end
  s.FullLoadStartDate = r.load_start
  local total, done = 0, 0
  for _, t in ipairs(r.tables) do
    total = total + t.rows
    if t_end >= t.stop then
      if t.name == r.errored then s.TablesErrored = s.TablesErrored + 1
      else s.TablesLoaded = s.TablesLoaded + 1 end
      done = done + t.rows
    elseif t_end >= t.start then
      s.TablesLoading = s.TablesLoading + 1
      done = done + t.rows * (t_end - t.start) / (t.stop - t.start)
    else
      s.TablesQueued = s.TablesQueued + 1
    end
  end
  s.FullLoadProgressPercent = total > 0 and math.floor(100 * done / total) or 100
  if r.done then
    s.FullLoadProgressPercent = 100
    s.FullLoadFinishDate = r.finish
  end
  return s
end

local function view(w, task, now, without_settings)
  local out = {}
  for k, v in pairs(task) do
    if not k:match("^sim_") then out[k] = v end
  end
  if without_settings then out.ReplicationTaskSettings = nil end
  out.ReplicationTaskStats = stats(w, task, now)
  return out
end

local function get_task(w, arn, look)
  local task = w.dms.tasks[arn]
  if not task then
    error(not_found("Replication Task " .. tostring(arn) .. " not found"))
  end
  advance(w, task, sim.now())
  if look then capture(w, task, sim.now()) end
  return task
end

local filters = {
  ["replication-task-arn"] = "ReplicationTaskArn",
  ["replication-task-id"] = "ReplicationTaskIdentifier",
  ["migration-type"] = "MigrationType",
  ["endpoint-arn"] = {"SourceEndpointArn", "TargetEndpointArn"},
  ["replication-instance-arn"] = "ReplicationInstanceArn",
}

local function matches(task, fs)
  for _, f in ipairs(fs or {}) do
    local fields = filters[f.Name]
    if not fields then
      error(util.fault("InvalidParameterValueException",
        "Invalid filter name: " .. tostring(f.Name)))
    end
    if type(fields) == "string" then fields = {fields} end
    local hit = false
    for _, field in ipairs(fields) do
      for _, v in ipairs(f.Values or {}) do if task[field] == v then hit = true end end
    end
    if not hit then return false end
  end
  return true
end

local function page(list, params, max_default)
  local max = params.MaxRecords or max_default
  local start = tonumber(params.Marker or "0") or 0
  local out = util.array()
  for i = start + 1, math.min(#list, start + max) do out[#out + 1] = list[i] end
  local marker = start + max < #list and tostring(start + max) or nil
  return out, marker
end

function M.ops.DescribeReplicationTasks(w, p)
  local now = sim.now()
  local list = {}
  for _, arn in ipairs(util.sorted_keys(w.dms.tasks)) do
    local task = w.dms.tasks[arn]
    if matches(task, p.Filters) then
      advance(w, task, now)
      capture(w, task, now)
      list[#list + 1] = view(w, task, now, p.WithoutSettings)
    end
  end
  if #list == 0 then error(not_found("No Tasks found matching provided filters")) end
  local items, marker = page(list, p, 100)
  return {ReplicationTasks = items, Marker = marker}
end

function M.ops.StartReplicationTask(w, p)
  local task = get_task(w, p.ReplicationTaskArn)
  local kind = p.StartReplicationTaskType
  if kind ~= "start-replication" and kind ~= "resume-processing" and kind ~= "reload-target" then
    error(util.fault("InvalidParameterValueException",
      "Invalid StartReplicationTaskType: " .. tostring(kind) ..
      " (expected start-replication, resume-processing or reload-target)"))
  end
  local st = task.Status
  if st ~= "ready" and st ~= "stopped" and st ~= "failed" then
    error(util.fault("InvalidResourceStateFault", "Replication task " ..
      task.ReplicationTaskIdentifier .. " is in state " .. st .. " and cannot be started"))
  end
  if kind == "start-replication" and st ~= "ready" then
    error(util.fault("InvalidResourceStateFault",
      "Start Type : START_REPLICATION, valid only for tasks running for the first time"))
  end
  if kind == "resume-processing" and task.MigrationType ~= "full-load" and task.sim_cdc then
    local now = sim.now()
    local prev = task.sim_run or {}
    task.Status = "starting"
    task.StopReason, task.LastFailureMessage = nil, nil
    task.sim_run = {start = now, type = kind, resume = true, tables = prev.tables,
                    load_start = prev.load_start, finish = prev.finish}
    task.sim_starts = (task.sim_starts or 0) + 1
    return {ReplicationTask = view(w, task, now)}
  end
  -- the load reads the source now (what it copies is what is there when it starts)
  local run = {type = kind}
  task.sim_run_pending = run
  local snap, err = read_source(w, task)
  if task.sim_run_pending ~= run then
    error(util.fault("InvalidResourceStateFault", "Replication task " ..
      task.ReplicationTaskIdentifier .. " is being started by another request"))
  end
  task.sim_run_pending = nil
  local now = sim.now()
  if snap then
    task.sim_tables = {}
    for name, sn in pairs(snap) do task.sim_tables[name] = sn.rows end
    run.snapshot = snap
  elseif err then
    run.source_error = err
  end
  run.start = now
  task.Status = "starting"
  task.StopReason = nil
  task.LastFailureMessage = nil
  task.sim_run = run
  task.sim_starts = (task.sim_starts or 0) + 1
  return {ReplicationTask = view(w, task, now)}
end

function M.ops.StopReplicationTask(w, p)
  local task = get_task(w, p.ReplicationTaskArn)
  if task.Status ~= "running" and task.Status ~= "starting" then
    error(util.fault("InvalidResourceStateFault", "Replication task " ..
      task.ReplicationTaskIdentifier .. " is not running (state " .. task.Status .. ")"))
  end
  task.Status = "stopping"
  task.sim_run.stop_requested = sim.now()
  task.sim_run.fail_at = nil
  return {ReplicationTask = view(w, task, sim.now())}
end

local function table_state(r, t, now)
  if r.stopped_at and r.stopped_at < t.stop then
    if now >= t.start then return "Table cancelled" end
    return "Before load"
  end
  if now >= t.stop then
    if t.name == r.errored then return "Table error" end
    return "Table completed"
  end
  if now >= t.start then return "Full load" end
  return "Before load"
end

function M.ops.DescribeTableStatistics(w, p)
  local task = get_task(w, p.ReplicationTaskArn, true)
  local now = sim.now()
  local r = task.sim_run
  local list = {}
  for _, t in ipairs(r and r.tables or {}) do
    local st = table_state(r, t, now)
    local schema, name = t.name:match("^([^.]+)%.(.+)$")
    local rows = 0
    if st == "Table completed" then rows = t.rows
    elseif st == "Full load" or st == "Table cancelled" then
      local t_end = math.min(now, r.stopped_at or now)
      rows = math.floor(t.rows * (t_end - t.start) / (t.stop - t.start))
    end
    local cdc = task.sim_cdc and task.sim_cdc.counts[t.name] or {I = 0, U = 0, D = 0}
    local item = {
      SchemaName = schema or "public", TableName = name or t.name,
      Inserts = cdc.I, Deletes = cdc.D, Updates = cdc.U, Ddls = 0,
      AppliedInserts = cdc.I, AppliedDeletes = cdc.D, AppliedUpdates = cdc.U, AppliedDdls = 0,
      FullLoadRows = rows, FullLoadCondtnlChkFailedRows = 0,
      FullLoadErrorRows = st == "Table error" and t.rows or 0,
      FullLoadStartTime = now >= t.start and t.start or nil,
      FullLoadEndTime = (st == "Table completed" or st == "Table error") and t.stop or nil,
      FullLoadReloaded = r.type == "reload-target",
      LastUpdateTime = math.min(now, t.stop),
      TableState = st, ValidationPendingRecords = 0, ValidationFailedRecords = 0,
      ValidationSuspendedRecords = 0, ValidationState = "Not enabled",
    }
    local keep = true
    for _, f in ipairs(p.Filters or {}) do
      local field = ({["schema-name"] = "SchemaName", ["table-name"] = "TableName",
                      ["table-state"] = "TableState"})[f.Name]
      if not field then
        error(util.fault("InvalidParameterValueException",
          "Invalid filter name: " .. tostring(f.Name)))
      end
      local hit = false
      for _, v in ipairs(f.Values or {}) do if item[field] == v then hit = true end end
      keep = keep and hit
    end
    if keep then list[#list + 1] = item end
  end
  local items, marker = page(list, p, 100)
  return {ReplicationTaskArn = task.ReplicationTaskArn, TableStatistics = items, Marker = marker}
end

function M.ops.DescribeReplicationInstances(w, p)
  local list = {}
  for _, arn in ipairs(util.sorted_keys(w.dms.instances)) do
    local i = w.dms.instances[arn]
    local keep = true
    for _, f in ipairs(p.Filters or {}) do
      local field = ({["replication-instance-arn"] = "ReplicationInstanceArn",
                      ["replication-instance-id"] = "ReplicationInstanceIdentifier",
                      ["replication-instance-class"] = "ReplicationInstanceClass"})[f.Name]
      if not field then
        error(util.fault("InvalidParameterValueException", "Invalid filter name: " .. tostring(f.Name)))
      end
      local hit = false
      for _, v in ipairs(f.Values or {}) do if i[field] == v then hit = true end end
      keep = keep and hit
    end
    if keep then list[#list + 1] = i end
  end
  if #list == 0 then error(not_found("No replication instances found matching provided filters")) end
  local items, marker = page(list, p, 100)
  return {ReplicationInstances = items, Marker = marker}
end

function M.ops.DescribeEndpoints(w, p)
  local list = {}
  for _, arn in ipairs(util.sorted_keys(w.dms.endpoints)) do
    local e = w.dms.endpoints[arn]
    local keep = true
    for _, f in ipairs(p.Filters or {}) do
      local field = ({["endpoint-arn"] = "EndpointArn", ["endpoint-type"] = "EndpointType",
                      ["endpoint-id"] = "EndpointIdentifier", ["engine-name"] = "EngineName"})[f.Name]
      local hit = false
      for _, v in ipairs(f.Values or {}) do
        if field and tostring(e[field]):lower() == tostring(v):lower() then hit = true end
      end
      keep = keep and hit
    end
    if keep then
      local v = util.copy(e)
      v.Password = nil   -- DMS never gives a password back
      list[#list + 1] = v
    end
  end
  if #list == 0 then error(not_found("No Endpoints found matching provided filters")) end
  local items, marker = page(list, p, 100)
  return {Endpoints = items, Marker = marker}
end

return M
