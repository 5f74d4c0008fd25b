-- A small workflow for the server's tests: typed parameters (one required, one secret), a
-- task that logs markup and the secret, a task that fails until a file exists (retry), a
-- multi-line error, and a cleanup task.
local flow = require "flow"
local sys = require "flow.sys"

local wf = flow.workflow {
  name = "hello", doc = "says hello, and fails on demand",
  params = {
    who = { default = "world", doc = "whom to greet" },
    n = { default = 3, doc = "an integer" },
    ratio = { default = 0.5 },
    loud = { default = false },
    tags = { type = "table", default = { "a" } },
    target = { required = true, doc = "a required parameter" },
    token = { default = "", secret = true, doc = "a secret parameter" },
    fail_until = { default = "", doc = "task check fails until this file exists" },
    pause = { default = 0, doc = "seconds task a sleeps" },
  },
}

wf:task("greet", function(ctx)
  ctx.log("hello", ctx.params.who, "<b>bold</b><script>alert(1)</script>")
  if ctx.params.token ~= "" then ctx.log("the secret is " .. ctx.params.token) end
  ctx.progress(50, "half way")
  flow.sleep(ctx.params.pause)
  ctx.log("greeted")
  return { n = ctx.params.n, target = ctx.params.target }
end)

wf:task("check", { after = "greet" }, function(ctx)
  local f = ctx.params.fail_until
  if f ~= "" and not sys.stat(f) then
    ctx.log("no " .. f .. " yet")
    error(flow.error("test.failed", "check failed: " .. f .. " is missing\n--- detail ---\nline two\nline three",
      { retryable = false }))
  end
  ctx.log("check ok")
end)

wf:task("report", { after = "check" }, function(ctx) ctx.log("report") end)
wf:task("tidy", { after = "report", cleanup = true }, function(ctx) ctx.log("tidy") end)

return wf
