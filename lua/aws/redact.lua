-- aws/redact.lua — what must never reach a log, an error or debug output: secret keys,
-- session tokens, signatures, Authorization and X-Amz-Security-Token headers, SecretString
-- values and passwords. Every text the AWS client prints goes through here.
local M = {}

M.MASK = "<redacted>"

-- Header names whose values are secret (lower-case).
local secret_headers = {
  ["authorization"] = true,
  ["x-amz-security-token"] = true,
  ["x-aws-ec2-metadata-token"] = true,
  ["x-amz-server-side-encryption-customer-key"] = true,
  ["x-amz-copy-source-server-side-encryption-customer-key"] = true,
}

-- Names (JSON keys, XML elements, form and query parameters, shell variables, Python dict keys)
-- whose values are secret. They match whatever their spelling: case, _ and - are ignored
-- ("SecretAccessKey", "secret_access_key", "AWS_SECRET_ACCESS_KEY", "secretaccesskey").
local secret_names = {
  "SecretString", "SecretBinary", "SecretAccessKey", "SessionToken", "Password",
  "MasterUserPassword", "CliToken", "WebToken", "WebIdentityToken", "Token",
  "X-Amz-Signature", "X-Amz-Security-Token", "X-Amz-Credential", "Signature",
  "aws_secret_access_key", "aws_session_token", "aws_security_token",
}
local function norm(k) return (k:lower():gsub("[_%-]", "")) end
local SECRET = {}
for _, n in ipairs(secret_names) do SECRET[norm(n)] = true end

-- Is this key's value secret?
function M.is_secret_name(k) return SECRET[norm(k)] == true end

function M.header(name, value)
  if secret_headers[name:lower()] then
    if name:lower() == "authorization" then
      -- keep the non-secret shape: algorithm, access key id and scope
      local head = tostring(value):match("^(AWS4%-HMAC%-SHA256 Credential=[^,]*)")
      return head and (head .. ", SignedHeaders=..., Signature=" .. M.MASK) or M.MASK
    end
    return M.MASK
  end
  return value
end

function M.headers(h)
  local out = {}
  for k, v in pairs(h or {}) do out[k] = M.header(k, v) end
  return out
end

-- Redact secret values in free text: JSON ("Key": "value"), XML (<Key>value</Key>),
-- form/query (Key=value), header lines (Authorization: ...). Known secret strings (the current
-- secret key and token) are masked wherever they appear.
local known = {}
function M.remember(secret)
  if type(secret) == "string" and #secret >= 8 then known[secret] = true end
end

local function plain(s)
  return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

-- The end of a value that starts at i: past its closing quote for a quoted value (backslash
-- escapes honoured), at the end of its brackets for a list, else at the first separator.
local function value_end(s, i)
  local c = s:sub(i, i)
  if c == '"' or c == "'" then
    local j = i + 1
    while j <= #s do
      local d = s:sub(j, j)
      if d == "\\" then j = j + 2
      elseif d == c then return j + 1, i + 1, j - 1
      else j = j + 1 end
    end
    return #s + 1, i + 1, #s
  elseif c == "[" then
    local a, b = s:find("%b[]", i)
    if a == i then return b + 1, i + 1, b - 1 end
    return #s + 1, i + 1, #s
  end
  local j = s:find("[%s,;&}<\"']", i) or (#s + 1)
  return j, i, j - 1
end

-- Redact secret values in free text: `name: value`, `name = value`, `"name": "value"`,
-- `'name': 'value'`, `name=value` (form, query, shell), XML <Name>value</Name>, header lines
-- (Authorization: ...). Known secret strings (the current secret key and token) are masked
-- wherever they appear.
function M.text(s)
  if type(s) ~= "string" then return s end
  local out, pos = {}, 1
  while true do
    local a, b, q1, key, q2 = s:find("([\"']?)([%a][%w_%-]*)([\"']?)%s*[:=]%s*", pos)
    if not a then break end
    if q1 == q2 and SECRET[norm(key)] then
      local stop, vs, ve = value_end(s, b + 1)
      out[#out + 1] = s:sub(pos, vs - 1)
      if ve >= vs then out[#out + 1] = M.MASK end
      out[#out + 1] = s:sub(ve + 1, stop - 1)
      pos = stop
    else
      out[#out + 1] = s:sub(pos, b)
      pos = b + 1
    end
  end
  out[#out + 1] = s:sub(pos)
  s = table.concat(out)
  -- XML elements, whatever the case of their names
  s = s:gsub("<([%w_%-]+)>([^<]*)</([%w_%-]+)>", function(open, v, close)
    if open == close and SECRET[norm(open)] then return "<" .. open .. ">" .. M.MASK .. "</" .. close .. ">" end
  end)
  s = s:gsub("([Aa]uthorization:%s*)([^\r\n]*)", function(a, v) return a .. M.header("authorization", v) end)
  for secret in pairs(known) do
    s = s:gsub(plain(secret), M.MASK)
  end
  return s
end

-- A URL with secret query parameters masked.
function M.url(u)
  return M.text(u)
end

return M
