-- flowrun.server.auth — who is asking. Two roles: viewer (read) and operator (read, trigger,
-- cancel, retry, pause). Tokens come from a file (--tokens FILE: lines "ROLE TOKEN [NAME]",
-- # comments; the file must not be readable by others) and/or FLOWRUN_TOKEN (one operator
-- token). A request carries its token as `Authorization: Bearer TOKEN`, or a session cookie set
-- by the login form (HttpOnly, SameSite=Strict, Secure under TLS; the token itself is never
-- put in a cookie). Tokens are compared in constant time (their SHA-256 digests, every byte,
-- every token) and never logged or echoed. With no token at all the server is open to whoever
-- reaches it, which the server allows on a loopback address only.
--
--   local a, err = auth.new{tokens = {{role, token, name}}, secure = bool}
--   auth.read_file(path) -> tokens | nil, message
--   a.open                       no tokens: everyone is an operator (loopback only)
--   a:identify(req) -> principal | nil, status, message     principal: {role, name, via}
--   a:login(token) -> cookie_value, principal | nil
--   a:logout(req)  -> the Set-Cookie that removes the session
--   auth.allows(principal, need) -> bool                     need: "viewer" | "operator"
local sys = require "flow.sys"
local flow = require "flow"
local util = require "flowrun.server.util"

local M = {}

M.COOKIE = "flowrun_session"
M.SESSION_TTL = 12 * 3600
M.MAX_SESSIONS = 10000
M.MIN_TOKEN = 16
M.RANK = { viewer = 1, operator = 2 }

-- read_file(path) -> {{role, token, name}}, or nil and a message that never quotes a token.
function M.read_file(path)
  local st = sys.stat(path)
  if not st then return nil, "tokens file " .. path .. ": no such file" end
  if st.type ~= "file" then return nil, "tokens file " .. path .. ": not a regular file" end
  if st.mode & 6 ~= 0 then
    return nil, string.format("tokens file %s is readable or writable by others (mode %o): "
      .. "chmod 600 it", path, st.mode & 511)
  end
  local f, err = io.open(path, "r")
  if not f then return nil, "tokens file: " .. tostring(err) end
  local out, n = {}, 0
  for line in f:lines() do
    n = n + 1
    local s = line:gsub("#.*$", ""):gsub("^%s+", ""):gsub("%s+$", "")
    if s ~= "" then
      local role, token, name = s:match("^(%S+)%s+(%S+)%s*(.*)$")
      if not role then
        f:close()
        return nil, string.format("%s:%d: expected ROLE TOKEN [NAME]", path, n)
      end
      if not M.RANK[role] then
        f:close()
        return nil, string.format("%s:%d: unknown role %q (viewer or operator)", path, n, role)
      end
      if #token < M.MIN_TOKEN then
        f:close()
        return nil, string.format("%s:%d: a token must have at least %d characters", path, n,
          M.MIN_TOKEN)
      end
      out[#out + 1] = { role = role, token = token, name = name ~= "" and name or (role .. "@" .. n) }
    end
  end
  f:close()
  if #out == 0 then return nil, "tokens file " .. path .. " holds no token" end
  return out
end

local A = {}
A.__index = A

function M.new(o)
  o = o or {}
  local self = setmetatable({ tokens = {}, sessions = {}, nsessions = 0, secure = o.secure,
    clock = o.clock or flow.time }, A)
  for _, t in ipairs(o.tokens or {}) do
    if not M.RANK[t.role] then return nil, "unknown role " .. tostring(t.role) end
    if type(t.token) ~= "string" or #t.token < M.MIN_TOKEN then
      return nil, string.format("a token (%s) must have at least %d characters", t.name or t.role,
        M.MIN_TOKEN)
    end
    self.tokens[#self.tokens + 1] = { role = t.role, name = t.name or t.role,
      digest = util.digest(t.token) }
  end
  self.open = #self.tokens == 0
  return self
end

-- The token that matches, looked for in constant time: every token's digest is compared with
-- every byte, and the loop never stops early.
function A:match(token)
  local d = util.digest(token)
  local found
  for _, t in ipairs(self.tokens) do
    if util.equal_digests(d, t.digest) and not found then found = t end
  end
  return found
end

local function bearer(req)
  local h = req.headers.authorization
  if not h then return nil end
  return h:match("^[Bb][Ee][Aa][Rr][Ee][Rr]%s+(%S+)%s*$"), true
end

function A:session(value)
  if not value or value == "" then return nil end
  local key = util.digest(value)
  local s = self.sessions[key]
  if not s then return nil end
  if s.expires < self.clock() then
    self.sessions[key] = nil
    self.nsessions = self.nsessions - 1
    return nil
  end
  return s
end

-- identify(req) -> principal {role, name, via}, or nil, 401, message.
function A:identify(req)
  if self.open then return { role = "operator", name = "local", via = "open" } end
  local token, had = bearer(req)
  if had then
    if not token then return nil, 401, "the Authorization header must be: Bearer TOKEN" end
    local t = self:match(token)
    if not t then return nil, 401, "unknown token" end
    return { role = t.role, name = t.name, via = "bearer" }
  end
  local c = util.cookies(req.headers.cookie)[M.COOKIE]
  if c then
    local s = self:session(c)
    if not s then return nil, 401, "the session has ended: log in again" end
    return { role = s.role, name = s.name, via = "cookie" }
  end
  return nil, 401, "a token is needed (Authorization: Bearer TOKEN, or log in)"
end

function A:cookie_attrs(max_age)
  return "; Path=/; HttpOnly; SameSite=Strict" .. (self.secure and "; Secure" or "")
    .. "; Max-Age=" .. max_age
end

-- login(token) -> the Set-Cookie header value of a new session, and its principal; or nil.
function A:login(token)
  if self.open or type(token) ~= "string" then return nil end
  local t = self:match(token)
  if not t then return nil end
  if self.nsessions >= M.MAX_SESSIONS then
    -- the oldest sessions go first
    local oldest, ok
    for k, s in pairs(self.sessions) do
      if not ok or s.expires < ok then oldest, ok = k, s.expires end
    end
    if oldest then self.sessions[oldest] = nil; self.nsessions = self.nsessions - 1 end
  end
  local value = util.random_hex(32)
  self.sessions[util.digest(value)] = { role = t.role, name = t.name,
    expires = self.clock() + M.SESSION_TTL }
  self.nsessions = self.nsessions + 1
  return M.COOKIE .. "=" .. value .. self:cookie_attrs(M.SESSION_TTL),
    { role = t.role, name = t.name, via = "cookie" }
end

-- logout(req) -> the Set-Cookie value that removes the browser's cookie (the session ends).
function A:logout(req)
  local c = util.cookies(req.headers.cookie)[M.COOKIE]
  if c then
    local key = util.digest(c)
    if self.sessions[key] then
      self.sessions[key] = nil
      self.nsessions = self.nsessions - 1
    end
  end
  return M.COOKIE .. "=" .. self:cookie_attrs(0)
end

function M.allows(p, need)
  return p ~= nil and (M.RANK[p.role] or 0) >= (M.RANK[need] or 99)
end

return M
