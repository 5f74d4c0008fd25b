-- flowrun repl: the interactive REPL (flowrun.cli.repl).
local settings = require "flowrun.cli.settings"
local common = require "flowrun.cli.common"

local M = {}

function M.run(opts)
  local s, serr = settings.resolve(opts)
  if not s then common.eprint(serr) return 2 end
  local ok, err = settings.apply(s)
  if not ok then common.eprint(err) return 2 end
  return require("flowrun.cli.repl").run({ output = opts.output or "json" })
end

return M
