-- httpd — an HTTP server on the loop. The mechanism (H2O on libuv: connections, parsing,
-- keep-alive, TLS and HTTP/2, limits and timeouts) is C (httpd.core, runtime/httpd.c); this
-- module turns its `nil, err` answers into raised errors where a handler must stop, and adds
-- the accept loop. Routes, auth and JSON shapes are the caller's policy.
--
--   local httpd = require "httpd"
--   local srv = httpd.listen { host = "127.0.0.1", port = 0,        -- 0: a free port
--                              tls = { cert = file, key = file },   -- optional; HTTP/2 by ALPN
--                              limits = { header_bytes = 16384, body_bytes = 1 << 20,
--                                         header_timeout = 10, idle_timeout = 60,
--                                         max_connections = 1024 } }  -- httpd.limits: defaults
--   srv.port, srv.host, srv.tls
--   local req = srv:accept()      -- waits for the next request; nil once the server is closed
--   req.method, req.path, req.query (nil without '?'), req.headers (lower-case names, repeated
--   ones joined with ", "; host included), req.body ("" when none), req.remote ("ip:port"),
--   req.version ("1.0", "1.1", "2")
--   req:respond(status, headers, body)        -- a whole response
--   req:start(status, headers)                -- a streamed one (chunked in HTTP/1.1); the
--   req:write(chunk) ...; req:finish()        -- headers leave with the first write
--   req:close()                               -- also <close>/__gc: 500 if nothing was answered,
--                                             -- an unfinished stream is cut short
--   srv:serve(handler)            -- accept loop: each request a task running handler(req),
--                                 -- the request closed when it returns or fails (a handler
--                                 -- that raises: the client gets a 500, the error is reported
--                                 -- on stderr like any failed task nobody waited for)
--   srv:close { grace = 5 }       -- waits: stop accepting (requests not yet accepted get a
--                                 -- 503), end streams, give in-flight requests `grace` s
--                                 -- (then a 503 for those unanswered), close every connection;
--                                 -- a server in a <close> variable or collected is closed at
--                                 -- once, without a grace
--   srv:stats()                   -- {connections, requests, queued, state}
--
-- headers: a map name -> value, or an array of {name, value} pairs (repeated headers);
-- Content-Length, Transfer-Encoding and Connection are the server's.
--
-- Errors: httpd.listen raises httpd.listen (the address cannot be bound) and httpd.tls (the
-- certificate or key cannot be used). req:write raises http.closed when the client went away
-- or stopped reading for idle_timeout, or the server is closing: a streaming loop ends there.
-- respond, start and finish return nil, http.closed instead (an answer nobody can receive is
-- nothing for a handler to act on). Misuse (a second answer, a bad header) raises at once.
local core = require "httpd.core"
local flow = require "flow"

local M = {}

M.limits = core.limits()

function M.listen(opts)
  local srv, err = core.listen(opts)
  if not srv then error(err, 2) end
  return srv
end

local S = core.server_methods
local R = core.request_methods

local raw_accept = S.accept
function S.accept(self)
  while true do
    local req = raw_accept(self)
    if req ~= false then return req end   -- false: woken, but another task took the request
  end
end

function S.serve(self, handler)
  while true do
    local req = self:accept()
    if not req then return end
    flow.spawn(function()
      local r <close> = req
      handler(r)
    end)
  end
end

local raw_write = R.write
function R.write(self, chunk)
  local ok, err = raw_write(self, chunk)
  if not ok then error(err, 2) end
  return true
end

return M
