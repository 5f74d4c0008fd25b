-- sim/cloudwatch.lua — CloudWatch in the simulator, for what the pipeline asks it: DMS's CDC
-- latency (GetMetricStatistics on AWS/DMS CDCLatencySource and CDCLatencyTarget, dimensions
-- ReplicationInstanceIdentifier and ReplicationTaskIdentifier, the task being named by the last
-- part of its ARN as DMS publishes it). A task streaming changes when asked (running, its load
-- done) reports dms_cdc_latency seconds (fail "dms.latency=900" reports 900) for every period
-- of the window; any other task or metric has no datapoints.
local util = require "sim.util"
local sim = require "sim"

local M = {ops = {}}

M.required = {
  GetMetricStatistics = {"Namespace", "MetricName", "StartTime", "EndTime", "Period"},
}

local LATENCY = {CDCLatencySource = true, CDCLatencyTarget = true}

local function dims(list)
  local m = {}
  for _, d in ipairs(list or {}) do m[d.Name] = d.Value end
  return m
end

-- the task the dimensions name, if they name one exactly
local function task_of(w, d)
  for _, arn in ipairs(util.sorted_keys(w.dms.tasks)) do
    local t = w.dms.tasks[arn]
    local inst = w.dms.instances[t.ReplicationInstanceArn]
    if arn:match("([^:]+)$") == d.ReplicationTaskIdentifier and inst
      and inst.ReplicationInstanceIdentifier == d.ReplicationInstanceIdentifier then
      return t
    end
  end
end

function M.ops.GetMetricStatistics(w, p)
  local stats = p.Statistics or {}
  if #stats == 0 and not p.ExtendedStatistics then
    error(util.fault("InvalidParameterCombination",
      "Must specify either Statistics or ExtendedStatistics"))
  end
  local period = math.tointeger(p.Period) or 60
  if period < 1 then error(util.fault("InvalidParameterValue", "The parameter Period must be positive.")) end
  local out = util.array()
  local task = p.Namespace == "AWS/DMS" and LATENCY[p.MetricName] and task_of(w, dims(p.Dimensions))
  if task then
    require("sim.dms").catch_up(w)
    local r = task.sim_run
    local value = tonumber(sim.failing("dms.latency")) or w.durations.dms_cdc_latency
    if r and r.done and task.Status == "running" and task.MigrationType ~= "full-load" then
      local t = p.StartTime - (p.StartTime % period)
      while t < p.EndTime and #out < 1440 do
        local dp = {Timestamp = t, Unit = "Seconds"}
        for _, s in ipairs(stats) do
          if s == "SampleCount" then dp.SampleCount = 1.0
          elseif s == "Sum" or s == "Average" or s == "Minimum" or s == "Maximum" then
            dp[s] = value + 0.0
          end
        end
        out[#out + 1] = dp
        t = t + period
      end
    end
  end
  return {Label = p.MetricName, Datapoints = out}
end

return M
