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

-- Field names (JSON keys, XML elements, form and query parameters) whose values are secret.
local secret_fields = {
  "SecretString", "SecretBinary", "SecretAccessKey", "SessionToken", "Password",
  "MasterUserPassword", "CliToken", "WebToken", "WebIdentityToken", "Token",
  "X%-Amz%-Signature", "X%-Amz%-Security%-Token", "X%-Amz%-Credential", "Signature",
  "aws_secret_access_key", "aws_session_token",
}

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

-- JSON: "Field": "value", where the value may hold escaped quotes.
local function json_field(s, f)
  local out, pos = {}, 1
  while true do
    local a, b = s:find('"' .. f .. '"%s*:%s*"', pos)
    if not a then break end
    local i = b + 1
    while i <= #s do
      local c = s:sub(i, i)
      if c == "\\" then i = i + 2
      elseif c == '"' then break
      else i = i + 1 end
    end
    out[#out + 1] = s:sub(pos, b) .. M.MASK
    pos = i -- the closing quote (or the end of a truncated text)
  end
  out[#out + 1] = s:sub(pos)
  return table.concat(out)
end

function M.text(s)
  if type(s) ~= "string" then return s end
  for _, f in ipairs(secret_fields) do
    s = json_field(s, f)
    s = s:gsub('("' .. f .. '"%s*:%s*)(%b[])', "%1[\"" .. M.MASK .. "\"]")
    -- XML
    s = s:gsub("(<" .. f .. ">)(.-)(</" .. f .. ">)", "%1" .. M.MASK .. "%3")
    -- form / query
    s = s:gsub("(%f[%w]" .. f .. "=)([^&%s\"]*)", "%1" .. M.MASK)
  end
  s = s:gsub("([Aa]uthorization:%s*)([^\r\n]*)", function(a, v) return a .. M.header("authorization", v) end)
  s = s:gsub("([Xx]%-[Aa]mz%-[Ss]ecurity%-[Tt]oken:%s*)([^\r\n]*)", "%1" .. M.MASK)
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
