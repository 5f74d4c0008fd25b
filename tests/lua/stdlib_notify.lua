-- stdlib notify: SNS Publish through the client (against the simulator), the failure text, the
-- workflow hook, and a webhook that cannot be reached: its URL (a secret) is never in the error.
-- Webhooks that answer are tested end to end in tests/py/test_pipeline_sim.py (a local server).
local t = require "tap"
local flow = require "flow"
local sim = require "sim"
require("aws").use_transport(sim.handle)   -- the client's one seam: the simulator answers
local notify = require "notify"

flow.core.set_virtual_time(true)
local TOPIC = "arn:aws:sns:us-east-1:123456789012:flowrun-demo-alerts"
local SECRET_URL = "http://127.0.0.1:1/services/T00000000/B00000000/XXXXsecretXXXX"

t.test("sns", function()
  sim.configure{}
  local id = notify.sns(TOPIC, {subject = "line one\nline two " .. string.rep("x", 200), message = "body"})
  t.ok(id, "a MessageId")
  local m = sim.world().sns.messages[1]
  t.eq(m and m.Message, "body", "the message")
  t.eq(m and #m.Subject, 100, "the subject cut to SNS's 100 characters")
  t.like(m and m.Subject or "", "^line one line two", "without line breaks")
  t.raises(function() notify.sns("arn:aws:sns:us-east-1:123456789012:nope", {message = "x"}) end,
    "aws.NotFound", "an unknown topic")
  t.raises(function() notify.sns("nope", {message = "x"}) end, "topic ARN", "misuse raises at once")
end)

t.test("the failure text", function()
  local err = flow.error("emr.step_failed", "EMR step FAILED; reason: Unknown Error\n--- stderr ---\nboom")
  local subject, text = notify.failure_text({workflow = "dms_to_emr", run_id = "20240101T000000-abcd",
                                             task = "wait_step", attempt = 1}, err)
  t.eq(subject, "flowrun dms_to_emr: run 20240101T000000-abcd failed at wait_step", "subject")
  t.like(text, "task wait_step failed %(attempt 1%)", "the task")
  t.like(text, "emr.step_failed: EMR step FAILED; reason: Unknown Error\n%-%-%- stderr %-%-%-\nboom",
    "the error as it reads, stderr tail included")
  t.like(text, "flowrun resume 20240101T000000%-abcd", "how to resume")
  local _, plain = notify.failure_text({}, "a string error")
  t.like(plain, "a string error", "a plain error")
  local _, odd = notify.failure_text({}, setmetatable({}, {__tostring = function() error("no") end}))
  t.like(odd, "cannot be shown", "an error that cannot be turned into text")
end)

t.test("a webhook that cannot be reached: the URL stays secret", function()
  local t0 = flow.now()
  local err = t.raises(function() notify.webhook(SECRET_URL, {text = "x"}) end, "notify.webhook",
    "raises notify.webhook")
  local msg = tostring(err and err.message)
  t.like(msg, "refused the message %(http%.", "saying what failed")
  t.unlike(msg, "secret", "without the URL's secret")
  t.unlike(msg, "services", "or its path")
  t.ok(flow.now() - t0 >= 3, "after three attempts (1 s, then 2 s apart)")
  t.raises(function() notify.webhook("ftp://x", {text = "x"}) end, "http%(s%) URL", "misuse")
end)

t.test("the workflow hook: every target tried, a failing one reported", function()
  sim.configure{}
  local hook = notify.on_failure{topic_arn = function(ctx) return ctx.params.topic end,
                                 webhook = function(ctx) return ctx.params.hook end}
  local ctx = {workflow = "w", run_id = "r1", task = "wait_dms", params = {topic = TOPIC, hook = SECRET_URL}}
  local err = t.raises(function() hook(ctx, flow.error("dms.task_failed", "FATAL_ERROR")) end,
    "notify.failed", "the unreachable webhook is reported")
  t.unlike(tostring(err and err.message), "secret", "without its URL")
  local m = sim.world().sns.messages[1]
  t.like(m and m.Message or "", "dms.task_failed: FATAL_ERROR", "SNS was sent all the same")
  t.eq(m and m.Subject, "flowrun w: run r1 failed at wait_dms", "with the subject")
  ctx.params = {topic = "", hook = ""}
  hook(ctx, "nothing to send")
  t.eq(#sim.world().sns.messages, 1, "no target set: nothing sent")
end)

t.done()
