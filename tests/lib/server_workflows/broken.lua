-- A workflow file that does not load: the server lists it with its error.
local flow = require "flow"
return flow.workflow { name = "broken", params = { x = 1 }, bogus_option = true }
