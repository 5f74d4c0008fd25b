-- s3 — Amazon S3 helpers for workflows. Locations are "s3://bucket/key" URIs (or bucket, key).
--
--   local s3 = require "s3"
--   s3.put_file("s3://b/jobs/job.py", "workflows/jobs/job.py")
--   s3.put("s3://b/k", "text")            s3.get("s3://b/k") -> body
--   s3.head("s3://b/k") -> {size, etag, last_modified, content_type} or nil when missing
--   s3.list("s3://b/prefix/") -> every object under the prefix (all pages): {key, size, ...}
--   s3.wait_for_prefix("s3://b/prefix/", {timeout = "10m", min_objects = 1}) -> objects
local flow = require "flow"

local M = {}

local function aws() return require "aws" end

-- IAM: M.iam.<operator>(uri) -> the grants it needs; uri may end in * (declare.under(uri):
-- everything below a location).
M.iam = {}
local function D() return require "aws.grants" end

-- parse("s3://bucket/key") -> bucket, key ("" for the bucket itself)
function M.parse(uri, key)
  if key ~= nil then return uri, key end
  if type(uri) ~= "string" then error("s3: expected an s3://bucket/key URI, got " .. type(uri), 3) end
  local b, k = uri:match("^s3a?n?://([^/]+)/?(.*)$")
  if not b then error("s3: expected an s3://bucket/key URI, got " .. string.format("%q", uri), 3) end
  return b, k
end

function M.uri(bucket, key) return "s3://" .. bucket .. "/" .. (key or "") end

-- GetObject answers NoSuchKey; HeadObject's 404 has no body, so the client calls it NotFound.
local function not_found(err)
  return type(err) == "table" and (err.code == "aws.NoSuchKey" or err.code == "aws.NotFound")
end

-- put(uri, body, opts) -> {etag}. opts.content_type.
function M.put(uri, body, opts)
  opts = opts or {}
  if type(body) ~= "string" then error("s3.put: body must be a string, got " .. type(body), 2) end
  local b, k = M.parse(uri)
  local r = aws().s3.put_object{Bucket = b, Key = k, Body = body, ContentType = opts.content_type}
  return {etag = r and r.ETag, uri = M.uri(b, k)}
end

function M.iam.put(uri) return D().grant("S3Write", "s3:PutObject", D().s3_object(uri)) end

-- put_file(uri, path, opts) -> {etag, uri, size}: uploads a local file.
function M.put_file(uri, path, opts)
  local f, err = io.open(path, "rb")
  if not f then
    error(flow.error("s3.file", "s3.put_file: cannot read " .. tostring(path) .. ": " .. tostring(err),
      {retryable = false}), 2)
  end
  local body = f:read("a")
  f:close()
  local r = M.put(uri, body, opts)
  r.size = #body
  return r
end

M.iam.put_file = M.iam.put

-- get(uri) -> body (string). Raises the AWS error (aws.NoSuchKey ...) when missing.
function M.get(uri, key)
  local b, k = M.parse(uri, key)
  local r = aws().s3.get_object{Bucket = b, Key = k}
  return r.Body
end

function M.iam.get(uri) return D().grant("S3Read", "s3:GetObject", D().s3_object(uri)) end

-- head(uri) -> metadata table, or nil when the object does not exist.
function M.head(uri, key)
  local b, k = M.parse(uri, key)
  local ok, r = pcall(function() return aws().s3.head_object{Bucket = b, Key = k} end)
  if not ok then
    if not_found(r) then return nil end
    error(r, 0)
  end
  return {size = tonumber(r.ContentLength), etag = r.ETag, last_modified = r.LastModified,
          content_type = r.ContentType}
end

-- a missing object is told (404, so nil) only to a caller who may list the bucket
function M.iam.head(uri) return D().join(M.iam.get(uri), M.iam.list(uri)) end

-- list(uri, opts) -> list of {key, size, etag, last_modified, uri} for every object under the
-- prefix, all pages. opts.max (stop after so many).
function M.list(uri, opts)
  opts = opts or {}
  local b, prefix = M.parse(uri)
  local out = {}
  for page in aws().paginate("s3", "ListObjectsV2", {Bucket = b, Prefix = prefix}) do
    for _, o in ipairs(page.Contents or {}) do
      out[#out + 1] = {key = o.Key, size = tonumber(o.Size), etag = o.ETag,
                       last_modified = o.LastModified, uri = M.uri(b, o.Key)}
      if opts.max and #out >= opts.max then return out end
    end
  end
  return out
end

-- ListObjectsV2 is s3:ListBucket on the bucket, narrowed by the s3:prefix condition
function M.iam.list(uri)
  local d = D()
  local _, k = d.s3(uri)
  if not k:match("%*$") then k = k .. "*" end
  return d.grant("S3List", "s3:ListBucket", d.s3_bucket(uri),
    {condition = k ~= "*" and {StringLike = {["s3:prefix"] = k}} or nil})
end

-- wait_for_prefix(uri, opts) -> objects under the prefix once there are at least
-- opts.min_objects (1), optionally matching opts.pattern (a Lua pattern on the key).
-- opts: every (30 s), timeout (30 min), log.
function M.wait_for_prefix(uri, opts)
  opts = opts or {}
  local want = opts.min_objects or 1
  return flow.poll(function()
    local objs = M.list(uri)
    if opts.pattern then
      local keep = {}
      for _, o in ipairs(objs) do if o.key:match(opts.pattern) then keep[#keep + 1] = o end end
      objs = keep
    end
    if #objs >= want then return objs end
    return nil, string.format("%d of %d object(s) under %s", #objs, want, uri)
  end, {every = opts.every or 30, timeout = opts.timeout or 30 * 60,
        name = "S3 prefix " .. uri, log = opts.log})
end

M.iam.wait_for_prefix = function(uri) return M.iam.list(uri) end

return M
