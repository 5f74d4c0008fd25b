-- pgstore.lua — a PostgreSQL run store of its own for a test file: a fresh database on the suite's
-- server (tests/servers/pg.sh), so test files never see each other's runs.
--
--   local pgstore = require "pgstore"
--   local conninfo = pgstore.fresh("engine_random")   -- drops and creates flowrun_t_engine_random
--   local store = require("flowrun.engine.store.pg").open(conninfo, {clock = flow.time})
local M = {}

-- fresh(name) -> conninfo of an empty database flowrun_t_<name>. Raises when the suite's server
-- is not there (a test whose server is missing fails, it never skips).
function M.fresh(name)
  local base = assert(os.getenv("FLOWRUN_TEST_PG"),
    "FLOWRUN_TEST_PG is not set: scripts/test.sh starts PostgreSQL (tests/servers/pg.sh)")
  local db = "flowrun_t_" .. name:gsub("[^%w_]", "_")
  local pg = require "pg"
  local c = pg.connect(base)
  c:exec("DROP DATABASE IF EXISTS " .. db .. " WITH (FORCE)")
  c:exec("CREATE DATABASE " .. db)
  c:close()
  return (base:gsub("dbname=%S+", "dbname=" .. db)), db
end

-- drop(db): removes a database made by fresh.
function M.drop(db)
  local pg = require "pg"
  local c = pg.connect(os.getenv("FLOWRUN_TEST_PG"))
  c:exec("DROP DATABASE IF EXISTS " .. db .. " WITH (FORCE)")
  c:close()
end

return M
