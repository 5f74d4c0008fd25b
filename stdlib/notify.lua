-- notify — telling people what happened: Amazon SNS and Slack-compatible webhooks.
--
--   local notify = require "notify"
--   notify.sns(topic_arn, {subject = "...", message = "..."})     -- -> MessageId
--   notify.webhook(url, {text = "..."})                            -- POST {"text": ...} as JSON
--   wf = flow.workflow{..., on_failure = notify.on_failure{topic_arn = ..., webhook = ...}}
--
-- A webhook URL carries its secret in its path (Slack's do): it never appears in an error or a
-- log line from this module; a failed POST says only what failed (the HTTP status, or the
-- transfer's error code). on_failure(opts) returns a workflow hook that sends the run id, the
-- workflow, the failed task and its error (for an EMR step: FailureDetails and the stderr
-- tail, which the error's message carries) to whichever of topic_arn and webhook is set;
-- options that are functions are called with the task's ctx (to read parameters).
local flow = require "flow"
local json = require "json"
local operator = require "flow.operator"

local M = {}

local function aws() return require "aws" end

local fail = operator.fail

-- IAM: SNS's Publish on the topic; a webhook needs none.
M.iam = {}
function M.iam.sns(topic_arn)
  if topic_arn == nil or topic_arn == "" then return {} end
  return require("aws.grants").grant("NotifyTopic", "sns:Publish", topic_arn)
end

-- SNS subjects: at most 100 printable ASCII characters, no line breaks.
local function subject_of(s)
  s = tostring(s or ""):gsub("[\r\n\t]", " "):gsub("[^\32-\126]", "?")
  if #s > 100 then s = s:sub(1, 97) .. "..." end
  return s
end

-- sns(topic_arn, {subject, message}) -> MessageId. The message is cut to SNS's 256 KiB.
function M.sns(topic_arn, msg)
  if type(topic_arn) ~= "string" or not topic_arn:match("^arn:") then
    error("notify.sns: expected a topic ARN, got " .. tostring(topic_arn), 2)
  end
  if type(msg) ~= "table" or type(msg.message) ~= "string" then
    error("notify.sns: expected {subject = ..., message = ...}", 2)
  end
  local text = msg.message
  if #text > 262144 then text = text:sub(1, 262100) .. "\n[cut]" end
  local r = aws().sns.publish{TopicArn = topic_arn, Message = text,
                              Subject = msg.subject and subject_of(msg.subject) or nil}
  return r.MessageId
end

-- webhook(url, payload, opts) -> HTTP status. (No AWS: nothing to declare.) payload: a table sent as JSON (Slack's
-- {text = ...}), or a string (sent as {"text": s}). opts: timeout (10 s), attempts (3: a 429,
-- a 5xx or a transfer error is tried again after 1, then 2 seconds).
function M.webhook(url, payload, opts)
  opts = opts or {}
  if type(url) ~= "string" or not url:match("^https?://") then
    error("notify.webhook: expected an http(s) URL", 2)
  end
  if type(payload) == "string" then payload = {text = payload} end
  if type(payload) ~= "table" then error("notify.webhook: expected a payload table or text", 2) end
  local body = json.encode(payload)
  local http = require "http"
  local attempts = opts.attempts or 3
  local what
  for attempt = 1, attempts do
    local ok, r, err = pcall(http.request, {method = "POST", url = url, body = body,
      headers = {["Content-Type"] = "application/json"}, timeout = opts.timeout or 10,
      connect_timeout = opts.timeout or 10})
    if not ok then
      if flow.cancelled(r) then error(r, 0) end
      r, err = nil, r
    end
    local retry
    if r and r.status >= 200 and r.status < 300 then return r.status end
    if r then
      what = "HTTP " .. tostring(r.status)
      retry = r.status == 429 or r.status >= 500
    else
      -- the transfer's message names the URL: only its code is repeated
      what = type(err) == "table" and tostring(err.code) or "transfer error"
      retry = true
    end
    if not retry or attempt == attempts then break end
    flow.sleep(attempt)
  end
  error(fail("notify.webhook", "notify.webhook: the webhook refused the message (" .. what .. ")",
    {status = tonumber(what:match("^HTTP (%d+)$"))}), 2)
end

local function err_text(err)
  if type(err) == "table" then
    local code, msg = rawget(err, "code"), rawget(err, "message")
    if code or msg then return tostring(code or "error") .. ": " .. tostring(msg or "") end
  end
  local ok, s = pcall(tostring, err)
  return ok and s or "(an error that cannot be shown)"
end

-- failure_text(ctx, err) -> subject, text: what a failure notification says.
function M.failure_text(ctx, err)
  local wf, run, task = ctx.workflow or "?", ctx.run_id or "?", ctx.task or "?"
  local subject = string.format("flowrun %s: run %s failed at %s", wf, run, task)
  local text = table.concat({
    string.format("flowrun workflow %s, run %s: task %s failed%s.", wf, run, task,
      ctx.attempt and string.format(" (attempt %d)", ctx.attempt) or ""),
    "",
    err_text(err),
    "",
    "Details: flowrun show " .. run .. "    Resume: flowrun resume " .. run,
  }, "\n")
  return subject, text
end

local function value(v, ctx)
  if type(v) == "function" then v = v(ctx) end
  if v == nil or v == "" then return nil end
  return v
end

-- on_failure{topic_arn, webhook} -> hook(ctx, err): sends the failure to each target that is
-- set (a value, or a function of ctx); both are tried; a target that fails raises after the
-- other was tried (the engine logs a failing hook and goes on). The hook declares its IAM use
-- (SNS's Publish on the topic the parameters name): `flowrun iam` finds it on the workflow.
function M.on_failure(opts)
  opts = opts or {}
  local D = require "aws.grants"
  return D.declared(function(ctx) return M.iam.sns(value(opts.topic_arn, ctx)) end,
    function(ctx, err)
    local topic, hook = value(opts.topic_arn, ctx), value(opts.webhook, ctx)
    if not topic and not hook then return end
    local subject, text = M.failure_text(ctx, err)
    local failures = {}
    if topic then
      local ok, e = pcall(M.sns, topic, {subject = subject, message = text})
      if not ok then
        if flow.cancelled(e) then error(e, 0) end
        failures[#failures + 1] = "SNS: " .. err_text(e)
      end
    end
    if hook then
      local ok, e = pcall(M.webhook, hook, {text = subject .. "\n```\n" .. text .. "\n```"})
      if not ok then
        if flow.cancelled(e) then error(e, 0) end
        failures[#failures + 1] = err_text(e)
      end
    end
    if #failures > 0 then
      error(fail("notify.failed", "the failure notification was not sent: " ..
        table.concat(failures, "; ")), 0)
    end
  end)
end

return M
