-- sim/sns.lua — SNS (query protocol) in the simulator: CreateTopic, Subscribe and Publish. A
-- published message is kept in the world (w.sns.messages: topic, subject, message, time) for
-- whoever wants to read what the pipeline sent; errors are <ErrorResponse> documents.
local util = require "sim.util"
local sim = require "sim"

local M = {}

local error_answer, ok = util.query_protocol('xmlns="http://sns.amazonaws.com/doc/2010-03-31/"')
M.error_answer = error_answer

local function required(p, names)
  for _, k in ipairs(names) do
    if not p[k] then
      error(util.fault("InvalidParameter", "Invalid parameter: " .. k .. " Reason: a value is required"))
    end
  end
end

function M.handle(w, req)
  local p = util.parse_query(req.body)
  local action = p.Action
  if action == "CreateTopic" then
    required(p, {"Name"})
    local arn = string.format("arn:aws:sns:%s:%s:%s", w.region, w.account, p.Name)
    w.sns.topics[arn] = w.sns.topics[arn] or {Name = p.Name, TopicArn = arn, subscriptions = {}}
    return ok(action, util.el("TopicArn", arn))
  elseif action == "Subscribe" then
    required(p, {"TopicArn", "Protocol"})
    local t = w.sns.topics[p.TopicArn]
    if not t then error(util.fault("NotFound", "Topic does not exist", 404)) end
    local arn = p.TopicArn .. ":" .. require("sim.state").next_id(w, "", 8, "0123456789abcdef")
    t.subscriptions[#t.subscriptions + 1] = {arn = arn, protocol = p.Protocol, endpoint = p.Endpoint}
    return ok(action, util.el("SubscriptionArn", arn))
  elseif action == "Publish" then
    required(p, {"Message"})
    local arn = p.TopicArn or p.TargetArn
    if not arn then
      error(util.fault("InvalidParameter", "Invalid parameter: TopicArn or TargetArn Reason: " ..
        "no value for required parameter"))
    end
    if not w.sns.topics[arn] then error(util.fault("NotFound", "Topic does not exist", 404)) end
    if #p.Message > 262144 then
      error(util.fault("InvalidParameter", "Invalid parameter: Message too long"))
    end
    local id = require("sim.state").next_id(w, "", 8, "0123456789abcdef") .. "-5a1e-4e0e-9a0e-" ..
      require("sim.state").next_id(w, "", 12, "0123456789abcdef")
    w.sns.messages[#w.sns.messages + 1] = {MessageId = id, TopicArn = arn, Subject = p.Subject,
                                           Message = p.Message, Timestamp = sim.now()}
    return ok(action, util.el("MessageId", id))
  end
  error(util.fault("InvalidAction", "Could not find operation " .. tostring(action), 400))
end

return M
