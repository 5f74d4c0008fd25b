-- bench/httpd.lua — the server under wrk: a Lua handler answering a fixed 2 KB JSON body to
-- every request (each request a task, as srv:serve makes it). Prints its port, then serves
-- until SIGTERM (or /quit); bench/httpd.sh reads its RSS from /proc meanwhile.
local httpd = require "httpd"
local json = require "json"

local body = {}
for i = 1, 24 do
  body[i] = { id = i, name = ("task_%02d"):format(i), state = "success", attempt = 1,
    started = "2026-01-01T00:00:00Z" }
end
body = json.encode { runs = body }
assert(#body >= 2000 and #body <= 2200, #body)
local headers = { ["content-type"] = "application/json" }

local srv = httpd.listen { port = tonumber(arg[1]) or 0, limits = { max_connections = 4096 } }
print(srv.port, #body)
io.stdout:flush()
srv:serve(function(req)
  req:respond(200, headers, body)
end)
