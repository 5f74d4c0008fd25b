-- sim/s3.lua — S3 (rest-xml) in the simulator: buckets and objects in memory, addressed
-- path-style (https://s3.region.amazonaws.com/bucket/key, or any endpoint override) or
-- virtual-hosted (https://bucket.s3.region.amazonaws.com/key). Operations: ListBuckets,
-- CreateBucket, HeadBucket, PutObject, GetObject (with Range), HeadObject, DeleteObject,
-- ListObjectsV2 (prefix, delimiter, start-after, max-keys, continuation tokens). Errors are S3's
-- XML <Error> documents with the S3 status codes; HEAD errors have no body.
local util = require "sim.util"
local sim = require "sim"

local M = {}

local NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'

local function answer(status, body, headers)
  headers = headers or {}
  headers["x-amz-request-id"] = headers["x-amz-request-id"] or util.s3_request_id()
  headers["x-amz-id-2"] = "c2ltdWxhdGVkIGJ5IGZsb3dydW4="
  if body and body ~= "" and not headers["Content-Type"] then
    headers["Content-Type"] = "application/xml"
  end
  body = body or ""
  headers["Content-Length"] = tostring(#body)
  return {status = status, headers = headers, body = body}
end

local function xml_doc(s) return '<?xml version="1.0" encoding="UTF-8"?>\n' .. s end

function M.error_answer(f)
  local rid = util.s3_request_id()
  local body = xml_doc("<Error>" .. util.el("Code", f.code) .. util.el("Message", f.message) ..
    util.el("BucketName", f.bucket) .. util.el("Key", f.key) .. util.el("RequestId", rid) ..
    "</Error>")
  if f.head then body = "" end
  return answer(f.status, body, {["x-amz-request-id"] = rid})
end

local function no_bucket(name, head)
  return util.fault("NoSuchBucket", "The specified bucket does not exist", 404,
    {bucket = name, head = head})
end

-- bucket, key from the URL: virtual-hosted when the host starts with "<bucket>.s3.".
local function locate(req)
  local _, host, path, query = util.parse_url(req.url)
  local bucket, key
  local vh = host:match("^(.+)%.s3[.-]") or host:match("^(.+)%.s3$")
  if vh then
    bucket = vh
    key = path:sub(2)
  else
    bucket, key = path:match("^/([^/]+)/?(.*)$")
  end
  if bucket then bucket = util.url_decode(bucket) end
  if key then key = util.url_decode(key) end
  if key == "" then key = nil end
  return bucket, key, util.parse_query(query)
end

local function object_headers(o)
  return {
    ["ETag"] = '"' .. o.etag .. '"',
    ["Last-Modified"] = util.http_date(o.mtime),
    ["Content-Type"] = o.ctype or "binary/octet-stream",
    ["Accept-Ranges"] = "bytes",
  }
end

local function list_objects(w, bucket, name, q)
  local prefix = q.prefix or ""
  local delim = q.delimiter
  local max = tonumber(q["max-keys"] or "1000") or 1000
  local after = q["start-after"] or ""
  if q["continuation-token"] then after = util.b64decode(q["continuation-token"]) end
  local keys = util.sorted_keys(bucket.objects)
  local contents, prefixes, seen = {}, {}, {}
  local count, truncated, last = 0, false, nil
  for _, k in ipairs(keys) do
    if k > after and k:sub(1, #prefix) == prefix then
      local cp
      if delim and delim ~= "" then
        local i = k:find(delim, #prefix + 1, true)
        if i then cp = k:sub(1, i + #delim - 1) end
      end
      if not (cp and seen[cp]) then
        if count >= max then truncated = true; break end
        count = count + 1
        if cp then
          seen[cp] = true
          prefixes[#prefixes + 1] = cp
        else
          contents[#contents + 1] = k
        end
      end
      last = k
      if cp then last = cp .. "\255" end
    end
  end
  -- encoding-type=url: keys and prefixes come back URL-encoded (boto3 asks for it)
  local enc = q["encoding-type"] == "url" and function(v)
    return (v:gsub("[^%w%-%._~/]", function(c) return string.format("%%%02X", c:byte()) end))
  end or function(v) return v end
  local out = {"<ListBucketResult " .. NS .. ">", util.el("Name", name),
               util.el("Prefix", enc(prefix))}
  if q["encoding-type"] == "url" then out[#out + 1] = util.el("EncodingType", "url") end
  if delim then out[#out + 1] = util.el("Delimiter", enc(delim)) end
  out[#out + 1] = util.el("MaxKeys", max)
  out[#out + 1] = util.el("KeyCount", count)
  out[#out + 1] = util.el("IsTruncated", truncated and "true" or "false")
  if q["continuation-token"] then out[#out + 1] = util.el("ContinuationToken", q["continuation-token"]) end
  if q["start-after"] then out[#out + 1] = util.el("StartAfter", enc(q["start-after"])) end
  if truncated then out[#out + 1] = util.el("NextContinuationToken", util.b64encode(last)) end
  for _, k in ipairs(contents) do
    local o = bucket.objects[k]
    out[#out + 1] = "<Contents>" .. util.el("Key", enc(k)) ..
      util.el("LastModified", util.iso8601(o.mtime)) .. util.el("ETag", '"' .. o.etag .. '"') ..
      util.el("Size", #o.body) .. util.el("StorageClass", "STANDARD") .. "</Contents>"
  end
  for _, p in ipairs(prefixes) do
    out[#out + 1] = "<CommonPrefixes>" .. util.el("Prefix", enc(p)) .. "</CommonPrefixes>"
  end
  out[#out + 1] = "</ListBucketResult>"
  return answer(200, xml_doc(table.concat(out)))
end

-- "bytes=a-b", "bytes=a-", "bytes=-n" -> first, last (1-based, inclusive) or nil
local function range(spec, size)
  if not spec then return nil end
  local a, b = spec:match("^bytes=(%d*)-(%d*)$")
  if not a then return nil end
  if a == "" then
    local n = tonumber(b)
    if not n or n == 0 then return nil end
    return math.max(1, size - n + 1), size
  end
  local first = tonumber(a) + 1
  local last = b ~= "" and math.min(tonumber(b) + 1, size) or size
  if first > size then
    error(util.fault("InvalidRange", "The requested range is not satisfiable", 416))
  end
  return first, last
end

function M.handle(w, req)
  local method = (req.method or "GET"):upper()
  local name, key, q = locate(req)
  local head = method == "HEAD"
  if not name then
    if method == "GET" then
      local out = {"<ListAllMyBucketsResult " .. NS .. "><Owner><ID>sim</ID>" ..
        "<DisplayName>flowrun-sim</DisplayName></Owner><Buckets>"}
      for _, b in ipairs(util.sorted_keys(w.s3.buckets)) do
        out[#out + 1] = "<Bucket>" .. util.el("Name", b) ..
          util.el("CreationDate", util.iso8601(w.s3.buckets[b].created)) .. "</Bucket>"
      end
      out[#out + 1] = "</Buckets></ListAllMyBucketsResult>"
      return answer(200, xml_doc(table.concat(out)))
    end
    error(util.fault("MethodNotAllowed", "The specified method is not allowed", 405))
  end
  local bucket = w.s3.buckets[name]
  if not key then
    if method == "PUT" then
      if bucket then
        if w.region == "us-east-1" then return answer(200, "", {Location = "/" .. name}) end
        error(util.fault("BucketAlreadyOwnedByYou", "Your previous request to create the " ..
          "named bucket succeeded and you already own it.", 409, {bucket = name}))
      end
      if not name:match("^[a-z0-9][a-z0-9.-]+[a-z0-9]$") or #name > 63 then
        error(util.fault("InvalidBucketName", "The specified bucket is not valid.", 400,
          {bucket = name}))
      end
      w.s3.buckets[name] = {created = sim.now(), objects = {}}
      return answer(200, "", {Location = "/" .. name})
    end
    if not bucket then error(no_bucket(name, head)) end
    if head then return answer(200, "", {["x-amz-bucket-region"] = w.region}) end
    if method == "GET" then
      -- what a streaming DMS task writes is there whenever someone looks
      require("sim.dms").catch_up(w, name, q.prefix or "")
      if q["list-type"] == "2" then return list_objects(w, bucket, name, q) end
      if q.location then
        return answer(200, xml_doc('<LocationConstraint ' .. NS .. '>' ..
          (w.region ~= "us-east-1" and w.region or "") .. '</LocationConstraint>'))
      end
      return list_objects(w, bucket, name, q)
    end
    if method == "DELETE" then
      if next(bucket.objects) then
        error(util.fault("BucketNotEmpty", "The bucket you tried to delete is not empty", 409,
          {bucket = name}))
      end
      w.s3.buckets[name] = nil
      return answer(204, "")
    end
    error(util.fault("MethodNotAllowed", "The specified method is not allowed", 405))
  end
  if not bucket then error(no_bucket(name, head)) end
  if method == "PUT" then
    local src = util.header(req.headers, "x-amz-copy-source")
    local body = req.body or ""
    local ctype = util.header(req.headers, "Content-Type")
    if src then
      local sb, sk = util.url_decode(src):match("^/?([^/]+)/(.+)$")
      local from = sb and w.s3.buckets[sb] and w.s3.buckets[sb].objects[sk]
      if not from then
        error(util.fault("NoSuchKey", "The specified key does not exist.", 404, {key = sk}))
      end
      body, ctype = from.body, from.ctype
    end
    local o = {body = body, etag = util.etag(body), mtime = sim.now(), ctype = ctype}
    bucket.objects[key] = o
    if src then
      return answer(200, xml_doc("<CopyObjectResult>" ..
        util.el("LastModified", util.iso8601(o.mtime)) .. util.el("ETag", '"' .. o.etag .. '"') ..
        "</CopyObjectResult>"))
    end
    return answer(200, "", {ETag = '"' .. o.etag .. '"'})
  end
  if method == "DELETE" then
    bucket.objects[key] = nil
    return answer(204, "")
  end
  local o = bucket.objects[key]
  if not o then
    -- S3 tells a missing key (404) only to a caller who may list the bucket; others get 403
    local denied = require("sim.iam").missing_key(w, name, key)
    if denied then denied.head = head; error(denied) end
    error(util.fault("NoSuchKey", "The specified key does not exist.", 404,
      {key = key, head = head}))
  end
  if method == "HEAD" then
    local h = object_headers(o)
    local r = answer(200, "", h)
    r.headers["Content-Length"] = tostring(#o.body)
    return r
  end
  if method == "GET" then
    local first, last = range(util.header(req.headers, "Range"), #o.body)
    local h = object_headers(o)
    if first then
      h["Content-Range"] = string.format("bytes %d-%d/%d", first - 1, last - 1, #o.body)
      return answer(206, o.body:sub(first, last), h)
    end
    return answer(200, o.body, h)
  end
  error(util.fault("MethodNotAllowed", "The specified method is not allowed", 405))
end

return M
