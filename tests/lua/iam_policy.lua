-- IAM: the simulator's policy evaluation (sim/iam.lua: wildcards, NotAction, explicit deny,
-- condition operators), what it checks for a request (PassRole, tags, Glue's path, S3 prefixes,
-- a missing key), and the derivation (flowrun.iam: merging never widens a grant, a covered grant
-- is dropped, the ARNs' account and region, Terraform escaping, a task without a declaration,
-- recorded runs); emr.find_cluster passes over a cluster the policy does not let it describe.
local t = require "tap"
local flow = require "flow"
local json = require "json"
require("aws").use_transport(require("sim").handle)
local sim = require "sim"
local siam = require "sim.iam"
local iam = require "flowrun.iam"
local D = require "aws.grants"
local aws = require "aws"
local emr = require "emr"

flow.core.set_virtual_time(true)

local function policy(stmts) return {Version = "2012-10-17", Statement = stmts} end

t.test("evaluation: wildcards, NotAction, explicit deny, implicit deny", function()
  siam.set_policy(policy{
    {Sid = "A", Effect = "Allow", Action = "s3:Get*", Resource = "arn:aws:s3:::b/raw/*"},
    {Sid = "B", Effect = "Allow", NotAction = "s3:*", Resource = "*"},
    {Sid = "C", Effect = "Deny", Action = "dms:StopReplicationTask", Resource = "*"},
    {Sid = "Q", Effect = "Allow", Action = "s3:ListBucket", Resource = "arn:aws:s3:::ord?rs"},
  })
  t.eq({siam.evaluate("s3:GetObject", "arn:aws:s3:::b/raw/x/y")}, {"allow", "A"}, "a wildcard action and resource")
  t.eq({siam.evaluate("S3:getobject", "arn:aws:s3:::b/raw/x")}, {"allow", "A"}, "actions are case-insensitive")
  t.eq(siam.evaluate("s3:GetObject", "arn:aws:s3:::B/raw/x"), "implicit", "resources are not")
  t.eq(siam.evaluate("s3:PutObject", "arn:aws:s3:::b/raw/x"), "implicit", "nothing allows it")
  t.eq({siam.evaluate("dms:StartReplicationTask", "x")}, {"allow", "B"}, "NotAction allows the rest")
  t.eq({siam.evaluate("dms:StopReplicationTask", "x")}, {"deny", "C"}, "an explicit deny wins")
  t.eq(siam.evaluate("s3:ListBucket", "arn:aws:s3:::orders"), "allow", "? is one character")
  t.eq(siam.evaluate("s3:ListBucket", "arn:aws:s3:::ordrs"), "implicit", "exactly one")
  t.eq(siam.evaluate("s3:GetObject", "arn:aws:s3:::b/raw.x"), "implicit", "a dot is a dot")
  siam.set_policy(nil)
end)

t.test("conditions: StringEquals, StringLike, Null, IfExists, ForAnyValue, negation", function()
  local function with(cond) siam.set_policy(policy{{Effect = "Allow", Action = "*", Resource = "*", Condition = cond}}) end
  with{StringEquals = {["aws:ResourceTag/flowrun:workflow"] = "dms_to_emr"}}
  t.eq(siam.evaluate("a:B", "r", {["aws:ResourceTag/flowrun:workflow"] = "dms_to_emr"}), "allow", "the tag")
  t.eq(siam.evaluate("a:B", "r", {["AWS:ResourceTag/flowrun:workflow"] = "dms_to_emr"}), "allow", "keys fold case")
  t.eq(siam.evaluate("a:B", "r", {["aws:ResourceTag/flowrun:workflow"] = "other"}), "implicit", "another value")
  t.eq(siam.evaluate("a:B", "r", {}), "implicit", "no tag")
  with{StringLike = {["s3:prefix"] = {"raw/*", "cdc/*"}}}
  t.eq(siam.evaluate("a:B", "r", {["s3:prefix"] = "cdc/public/x/"}), "allow", "any of the values")
  t.eq(siam.evaluate("a:B", "r", {["s3:prefix"] = "other/"}), "implicit", "none of them")
  with{Null = {["aws:ResourceTag/x"] = "false"}}
  t.eq(siam.evaluate("a:B", "r", {["aws:ResourceTag/x"] = "1"}), "allow", "Null false: present")
  t.eq(siam.evaluate("a:B", "r", {}), "implicit", "absent")
  with{StringEqualsIfExists = {["k"] = "v"}}
  t.eq(siam.evaluate("a:B", "r", {}), "allow", "IfExists: absent passes")
  t.eq(siam.evaluate("a:B", "r", {k = "w"}), "implicit", "present must match")
  with{["ForAnyValue:StringEquals"] = {["aws:TagKeys"] = "flowrun:run-id"}}
  t.eq(siam.evaluate("a:B", "r", {["aws:TagKeys"] = {"a", "flowrun:run-id"}}), "allow", "ForAnyValue")
  with{StringNotEquals = {["k"] = "v"}}
  t.eq(siam.evaluate("a:B", "r", {k = "w"}), "allow", "StringNotEquals")
  t.eq(siam.evaluate("a:B", "r", {k = "v"}), "implicit", "StringNotEquals refuses the value")
  siam.set_policy(nil)
  t.raises(function() siam.set_policy({Version = "x"}, "p.json") end, "not an IAM policy", "a document without Statement")
end)

t.test("the simulator refuses what the policy does not allow, naming the action and resource", function()
  sim.configure{policy = policy{
    {Sid = "List", Effect = "Allow", Action = "s3:ListBucket", Resource = "arn:aws:s3:::flowrun-demo-raw",
     Condition = {StringLike = {["s3:prefix"] = "raw/*"}}},
    {Sid = "Put", Effect = "Allow", Action = "s3:PutObject", Resource = "arn:aws:s3:::flowrun-demo-raw/raw/*"},
    {Sid = "Run", Effect = "Allow", Action = "elasticmapreduce:RunJobFlow", Resource = "*"},
    {Sid = "Pass", Effect = "Allow", Action = "iam:PassRole", Resource = "arn:aws:iam::123456789012:role/EMR_DefaultRole",
     Condition = {StringEquals = {["iam:PassedToService"] = "elasticmapreduce.amazonaws.com"}}},
  }}
  aws.s3.list_objects_v2{Bucket = "flowrun-demo-raw", Prefix = "raw/public/"}
  local e = t.raises(function() aws.s3.list_objects_v2{Bucket = "flowrun-demo-raw", Prefix = "cdc/"} end,
    "aws.AccessDenied", "a prefix outside the condition")
  t.ok(e.message:find("not authorized to perform: s3:ListBucket on resource: arn:aws:s3:::flowrun-demo-raw", 1, true),
    "named")
  aws.s3.put_object{Bucket = "flowrun-demo-raw", Key = "raw/x", Body = "1"}
  e = t.raises(function() aws.s3.get_object{Bucket = "flowrun-demo-raw", Key = "raw/x"} end,
    "aws.AccessDenied", "GetObject not allowed")
  e = t.raises(function() aws.s3.get_object{Bucket = "flowrun-demo-raw", Key = "raw/missing"} end,
    "aws.AccessDenied", "a missing key: 403 without ListBucket... ")
  t.like(e.message, "s3:GetObject", "...refused as GetObject first")
  e = t.raises(function()
    aws.emr.run_job_flow{Name = "x", ReleaseLabel = "emr-7.1.0", ServiceRole = "EMR_DefaultRole",
      JobFlowRole = "EMR_EC2_DefaultRole", Instances = {InstanceCount = 1}}
  end, "aws.AccessDeniedException", "RunJobFlow allowed, the instance profile's role not passable")
  t.like(e.message, "iam:PassRole on resource: arn:aws:iam::123456789012:role/EMR_EC2_DefaultRole", "PassRole named")
  e = t.raises(function() aws.dms.describe_replication_tasks{} end, "aws.AccessDeniedException", "DMS refused")
  t.ok(e.message:find("User: arn:aws:iam::123456789012:user/flowrun is not authorized to perform: " ..
    "dms:DescribeReplicationTasks on resource: * because no identity-based policy allows", 1, true), "as AWS says it")
  sim.configure{}
end)

t.test("emr.find_cluster passes over a cluster the policy does not let it describe", function()
  sim.configure{}
  local foreign = aws.emr.run_job_flow{Name = "someone-else", ReleaseLabel = "emr-7.1.0",
    Instances = {InstanceCount = 1, KeepJobFlowAliveWhenNoSteps = true}}.JobFlowId
  local ours = emr.create_cluster({Name = "mine", ReleaseLabel = "emr-7.1.0",
    Instances = {InstanceCount = 1, KeepJobFlowAliveWhenNoSteps = true}},
    {run_id = "r1", task = "create_cluster", workflow = "wf", log = function() end})
  D.env = {partition = "aws", region = "us-east-1", account = "123456789012"}
  local derived = iam.derive({name = "wf", hooks = {}, tasks = {{name = "x", iam = function()
    return emr.iam.find_cluster{cluster = D.tagged("wf")} end}}}, {})
  -- the same world, now with the derived policy as the caller's permissions
  siam.set_policy({Version = "2012-10-17", Statement = derived.statements})
  local found = emr.find_cluster{run_id = "r1"}
  t.eq(found and found.Id, ours.cluster_id, "our cluster is found")
  t.eq(emr.find_cluster{run_id = "r2"}, nil, "none for another run, without an error")
  t.raises(function() emr.describe(foreign) end, "aws.AccessDeniedException", "the other cluster is refused")
  siam.set_policy(nil)
  sim.configure{}
end)

local function wf_of(tasks, hooks)
  return {name = "w", hooks = hooks or {}, tasks = tasks}
end

t.test("derive: statements never widen a grant; covered grants dropped; account and region", function()
  local p = iam.derive(wf_of{
    {name = "a", iam = function(ctx) return D.join(
      D.grant("S", "s3:GetObject", D.s3_object("s3://b/raw/*")),
      D.grant("S", "s3:PutObject", D.s3_object("s3://b/out/*")),
      D.grant("S", "s3:GetObject", D.s3_object("s3://b/raw/public/x")),   -- inside raw/*
      D.grant("T", "dms:StartReplicationTask", ctx.params.arn)) end},
  }, {arn = "arn:aws:dms:eu-west-1:111122223333:task:X"})
  t.eq(#p.statements, 3, "three statements")
  local by = {}
  for _, s in ipairs(p.statements) do by[s.Sid] = s end
  t.eq(by.S.Action, {"s3:GetObject"}, "GetObject...")
  t.eq(by.S.Resource, {"arn:aws:s3:::b/raw/*"}, "...only on raw/* (the narrower one dropped)")
  t.eq(by.S2.Action, {"s3:PutObject"}, "PutObject in its own statement...")
  t.eq(by.S2.Resource, {"arn:aws:s3:::b/out/*"}, "...on out/* only")
  t.eq(p.env, {partition = "aws", region = "eu-west-1", account = "111122223333"}, "from the parameters' ARNs")
  local q = iam.derive(wf_of{{name = "a", iam = function() return D.grant("G", "glue:GetTable", D.arn("glue", "catalog")) end}},
    {}, {account = "999", region = "us-west-2"})
  t.eq(q.statements[1].Resource, {"arn:aws:glue:us-west-2:999:catalog"}, "--account and --region")
end)

t.test("derive: uncovered tasks, declared hooks, notes, recorded runs", function()
  local hook = D.declared(function(ctx) return D.grant("N", "sns:Publish", ctx.params.topic) end, function() end)
  local p = iam.derive(wf_of({{name = "a"}, {name = "b", iam = false},
    {name = "c", iam = function() return D.note("grant X by hand") end}}, {on_failure = hook}),
    {topic = "arn:aws:sns:us-east-1:1:t"})
  t.eq(p.uncovered, {"a"}, "a task without a declaration is not covered")
  t.eq(p.statements[1] and p.statements[1].Action, {"sns:Publish"}, "the hook declared itself")
  t.eq(p.notes, {"grant X by hand"}, "notes")
  local rec = os.tmpname()
  local f = io.open(rec, "w")
  f:write(json.encode({task = "a", run_id = "20260101T000000-abcd", authz = {
    {action = "elasticmapreduce:DescribeCluster", resource = "arn:aws:elasticmapreduce:us-east-1:1:cluster/j-ABC123"},
    {action = "s3:PutObject", resource = "arn:aws:s3:::b/runs/20260101T000000-abcd/x.json"},
    {action = "iam:PassRole", resource = "arn:aws:iam::1:role/R", context = {["iam:PassedToService"] = "ec2.amazonaws.com"}}}}), "\n")
  f:write(json.encode({task = "b", authz = {{action = "s3:DeleteObject", resource = "*"}}}), "\n")
  f:close()
  local r = iam.derive(wf_of({{name = "a"}, {name = "b", iam = false}}), {}, {records = {rec}})
  os.remove(rec)
  t.eq(r.uncovered, {}, "covered by the recording")
  t.eq(r.recorded, {"a"}, "said to come from it")
  local res = {}
  for _, s in ipairs(r.statements) do for _, x in ipairs(s.Resource) do res[#res + 1] = x end end
  table.sort(res)
  t.eq(res, {"arn:aws:elasticmapreduce:us-east-1:1:cluster/*", "arn:aws:iam::1:role/R",
             "arn:aws:s3:::b/runs/*"}, "runtime ids and the run id become wildcards; b's calls not taken")
end)

t.test("output: JSON parses back; Terraform escapes template sequences", function()
  local p = iam.derive(wf_of{{name = "a", iam = function() return D.join(
    D.grant("X", {"s3:GetObject"}, "arn:aws:s3:::b/${aws:username}/*",
      {condition = {StringLike = {["s3:prefix"] = {"a/*", "b/*"}}}}),
    D.unscoped("L", "elasticmapreduce:ListClusters", "ListClusters takes no resource")) end}}, {})
  local doc = json.decode(iam.json(p))
  t.eq(doc.Version, "2012-10-17", "a policy document")
  t.eq(doc.Statement[1].Condition.StringLike["s3:prefix"], {"a/*", "b/*"}, "conditions kept")
  local tf = iam.terraform(p)
  t.like(tf, 'data "aws_iam_policy_document" "w" {', "the block")
  t.like(tf, "$${aws:username}", "${ doubled")
  t.like(tf, "# L: ListClusters takes no resource", "why, as a comment")
end)

t.done()
