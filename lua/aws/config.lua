-- aws/config.lua — configuration the way the AWS CLI reads it: environment variables, the
-- shared config file (~/.aws/config, AWS_CONFIG_FILE) and credentials file
-- (~/.aws/credentials, AWS_SHARED_CREDENTIALS_FILE), profiles, region, endpoint overrides.
--
-- The environment is read through M.getenv so tests can run against a hermetic environment
-- (aws.reset{env = {...}}) without touching the process's own.
local M = {}

local env_override -- nil: os.getenv; a table: that table is the whole environment
local files = {}   -- path -> parsed sections (cached until reset)

function M.getenv(name)
  if env_override then
    local v = env_override[name]
    if v == false then return nil end
    return v
  end
  return os.getenv(name)
end

function M.reset(env)
  env_override = env
  files = {}
end

local function truthy(v)
  return v ~= nil and (v:lower() == "true" or v == "1")
end
M.truthy = truthy

local function expand(path)
  if path:sub(1, 2) == "~/" then
    local home = M.getenv("HOME") or ""
    return home .. path:sub(2)
  end
  return path
end
M.expand = expand

-- INI as the AWS CLI writes it: [section], key = value, comments (# ;), and sub-sections:
-- "s3 =" followed by indented "key = value" lines. Returns sections, or nil and
-- "line N: what is wrong" for what the AWS CLI refuses too (a header without its closing ],
-- a setting before any section, a line that is not `key = value`).
local function parse_ini(text)
  local sections, cur, sub = {}, nil, nil
  local n = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    line = line:gsub("\r$", "")
    local indented = line:match("^%s+%S") ~= nil
    local s = line:match("^%s*(.-)%s*$")
    if s == "" or s:match("^[#;]") then
      -- skip
    elseif s:match("^%[") then
      local name = s:match("^%[%s*(.-)%s*%]$")
      if not name then
        return nil, string.format("line %d: a section header without its closing ] (%s)", n, s)
      end
      cur = sections[name] or {}
      sections[name] = cur
      sub = nil
    else
      local k, v = s:match("^([^=]-)%s*=%s*(.-)$")
      if not cur then
        return nil, string.format("line %d: a setting before any [section]", n)
      elseif not k or k == "" then
        if not (indented and sub) then
          return nil, string.format("line %d: expected key = value", n)
        end
      else
        v = v:gsub("%s+[#;].*$", "")
        if indented and sub then
          sub[k] = v
        elseif v == "" then
          sub = {}
          cur[k] = sub
        else
          cur[k] = v
          sub = nil
        end
      end
    end
  end
  return sections
end
M.parse_ini = parse_ini

-- A file that exists but cannot be used stops every call that needs configuration, as it stops
-- the AWS CLI: a silent "no region" or "no keys" would send the user looking elsewhere.
local function config_error(path, why)
  local core = require "flow.core"
  -- "path:N: why" for a line, "path: why" for the whole file
  local line, rest = why:match("^(%d+):: (.*)$")
  error(core.error("aws.ConfigError", line and string.format("%s:%s: %s", path, line, rest)
    or string.format("%s: %s", path, why),
    { retryable = false }), 0)
end

local function read_file(path)
  if files[path] ~= nil then
    if type(files[path]) == "string" then config_error(path, files[path]) end
    return files[path]
  end
  local f, err = io.open(path, "r")
  if not f then
    files[path] = false
    -- a missing file is no configuration; any other failure is a problem to report
    if not tostring(err):match("No such file") then
      files[path] = tostring(err):gsub("^" .. path:gsub("%p", "%%%0") .. ":%s*", "")
      config_error(path, files[path])
    end
    return false
  end
  local text, rerr = f:read("a")
  f:close()
  if not text then
    files[path] = rerr and tostring(rerr):match("Is a directory") and "is a directory, not a file"
      or ("cannot read: " .. tostring(rerr))
    config_error(path, files[path])
  end
  local parsed, perr = parse_ini(text)
  if not parsed then
    files[path] = perr:gsub("^line (%d+): ", "%1:: ")
    config_error(path, files[path])
  end
  files[path] = parsed
  return parsed
end

function M.config_file()
  return expand(M.getenv("AWS_CONFIG_FILE") or "~/.aws/config")
end

function M.credentials_file()
  return expand(M.getenv("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials")
end

function M.profile_name(explicit)
  return explicit or M.getenv("AWS_PROFILE") or M.getenv("AWS_DEFAULT_PROFILE") or "default"
end

-- The profile's settings from the config file ([profile NAME], or [default]).
function M.config_section(name)
  local cfg = read_file(M.config_file()) or {}
  if name == "default" then return cfg["default"] or cfg["profile default"] end
  return cfg["profile " .. name]
end

-- The profile's section in the credentials file ([NAME]).
function M.credentials_section(name)
  local creds = read_file(M.credentials_file()) or {}
  return creds[name]
end

-- A merged view (credentials file keys win for keys both set), for settings lookups.
function M.profile(name)
  local out = {}
  for k, v in pairs(M.config_section(name) or {}) do out[k] = v end
  for k, v in pairs(M.credentials_section(name) or {}) do out[k] = v end
  return out
end

function M.profile_exists(name)
  return M.config_section(name) ~= nil or M.credentials_section(name) ~= nil
end

-- Was the profile named by the user (AWS_PROFILE or AWS_DEFAULT_PROFILE), rather than defaulted?
function M.profile_named()
  local p = M.getenv("AWS_PROFILE") or M.getenv("AWS_DEFAULT_PROFILE")
  return p ~= nil and p ~= "" and p ~= "default"
end

-- Region: AWS_REGION, AWS_DEFAULT_REGION, the profile's region.
function M.region(profile)
  local r = M.getenv("AWS_REGION")
  if r and r ~= "" then return r, "AWS_REGION" end
  r = M.getenv("AWS_DEFAULT_REGION")
  if r and r ~= "" then return r, "AWS_DEFAULT_REGION" end
  r = M.profile(profile).region
  if r and r ~= "" then return r, "profile " .. profile end
  return nil
end

-- Endpoint override for a service (nil: the AWS default), highest first:
-- AWS_ENDPOINT_URL_<SERVICE_ID>, AWS_ENDPOINT_URL, the profile's endpoint_url (or its
-- services section). AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true turns all of them off.
function M.endpoint(service_id, profile)
  local p = M.profile(profile)
  if truthy(M.getenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"))
      or truthy(p.ignore_configured_endpoint_urls) then
    return nil
  end
  local key = "AWS_ENDPOINT_URL_" .. service_id:upper():gsub("[%s%-]", "_")
  local v = M.getenv(key)
  if v and v ~= "" then return v, key end
  v = M.getenv("AWS_ENDPOINT_URL")
  if v and v ~= "" then return v, "AWS_ENDPOINT_URL" end
  if p.services then
    local cfg = read_file(M.config_file()) or {}
    local sec = cfg["services " .. p.services]
    local svc_key = service_id:lower():gsub("%s", "_")
    local sub = sec and sec[svc_key]
    if type(sub) == "table" and sub.endpoint_url then
      return sub.endpoint_url, "profile " .. profile .. " services " .. p.services
    end
  end
  if type(p.endpoint_url) == "string" and p.endpoint_url ~= "" then
    return p.endpoint_url, "profile " .. profile
  end
  return nil
end

return M
