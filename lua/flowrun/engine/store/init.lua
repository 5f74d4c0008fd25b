-- flowrun.engine.store — where runs are kept. Every backend offers the same promise: a state
-- change is durable before the engine acts on it, and changes that happen together are one
-- commit. The interface (flowrun.engine.store.file is the reference):
--
--   store:create_run(run_started_record, new_id) -> journal | nil, err
--   store:resume_run(run) -> journal | nil, err     (err.code "store.busy": held elsewhere)
--   journal:append(record), journal:commit(), journal:log(task, attempt, msg), journal:close()
--   store:runs() -> runs (replayed, oldest first); store:find(id | prefix | "last") -> run | nil, msg
--   store:load(id) -> run | nil, msg; store:logs(run_id) -> {{t, task, attempt, msg}...}
--   store:describe() -> where it is, for messages
local M = {}

-- open(settings) -> the store the settings name (today: the file store in settings.state_dir).
function M.open(s)
  return require("flowrun.engine.store.file").open(s.state_dir, { fsync = s.fsync,
    clock = require("flow").time })
end

return M
