-- flowrun.engine.store — where runs are kept. Two backends, one interface: the file store
-- (store/file.lua: JSON lines on this machine, the embedded default, the reference) and
-- PostgreSQL (store/pg.lua: shared by processes on any number of machines). Every backend keeps
-- the same promise: a state change is durable before the engine acts on it, and changes that
-- happen together are one commit.
--
-- Running a run (the engine):
--   store:create_run(run_started_record, new_id [, {source}]) -> journal | nil, err
--   store:resume_run(run) -> journal | nil, err   (err.code "store.busy": held elsewhere;
--                                                  "store.queued": a worker will start it)
--   journal:append(record), journal:commit(), journal:log(task, attempt, msg), journal:close()
--   journal:watch{cancel = fn(reason), lost = fn(err)}   what the holder is told while it holds
--       the run: a cancel request, the run lost to another holder (PostgreSQL: its lease
--       expired and another worker claimed it); after that commit() raises store.lost
--   journal:handback(why)     a stopping worker gives the run back (taken over at once)
--   journal:guard(), store:guard(run_id)   raise unless this process may act for the run now:
--                             before each task body starts (the engine) and each AWS call
--                             (flowrun.worker.fence); a lease about to run out is renewed first
--
-- Reading runs:
--   store:runs(filter) -> summaries, next_cursor   filter: workflow, state (name or list;
--       queued, running, interrupted, success, failed, cancelled), since, before (created time,
--       epoch seconds), order ("asc" default | "desc"), limit, cursor. A summary: id, workflow,
--       state, created, started, finished, last_t, exit, reason, tasks_total, tasks_succeeded,
--       tasks_failed, resumed (PostgreSQL: from indexed columns, never a replayed journal)
--   store:find(id | prefix | "last") -> run | nil, msg;  store:load(id) -> run | nil, msg
--       (flowrun.engine.replay's run; queued runs too)
--   store:records(id) -> the journal's records;  store:state(id) -> state, seq (cheap)
--   store:logs(run_id, {after}) -> {{t, task, attempt, msg, truncated, id}...}, last id
--   store:watch() -> w; w:wait(timeout) -> {{kind, run}...} | nil; w:push(kind); w:close()
--       kinds: queued, released, cancel, finished, reconnected (changes may have been missed),
--       paused and unpaused (run: the workflow) (PostgreSQL: LISTEN/NOTIFY; the file store:
--       inotify on its queue and schedules, or, where that cannot be had, polling and "tick"
--       every second unless watch{ticks = false})
--   store:describe() -> where it is, for messages (never a password)
--
-- Workers and schedulers:
--   store:submit{workflow, source, hash, file, params, secret_params, tasks, sim, run_id,
--       kind, logical_date, interval_start, interval_end, options} -> run_id | nil, err
--       (err.code "store.exists": the id, or that workflow's scheduled run for that logical
--       date, is taken: how schedulers fire each tick once)
--   store:claim(worker_id, n, {sim}) -> claims {id, was = "queued" | "running" (a takeover),
--       journal, run (the replayed run of a takeover), source, params, ...}
--   store:request_cancel(run_id) -> "cancelled" | "requested" | "requested-unheld" | nil, msg
--   store:requeue{id, options = {rerun}, source, hash} -> true | nil, msg   a finished run queued
--       again; a worker resumes it (the server's retry)
--   store:register_worker(w), store:worker_heartbeat(w, state), store:workers()
--
-- Schedules (flowrun.schedule.scheduler, flowrun backfill, pause, schedules). One scheduled or
-- backfill run per (workflow, logical date) (PostgreSQL: a unique index; the file store: a
-- marker per date made under its lock); a schedule's own state is its pause and what its
-- schedulers handled without a run of their own (flowrun.schedules; <dir>/schedules/):
--   store:fire(workflow, decide) -> {submitted, existed, requeued, cancelled} (ids)
--       decide(view) runs while the workflow's schedulers and backfills are held off (an
--       advisory lock in a transaction; the file store's lock) and says what to do; all of it
--       is done, or none. view: {paused, handled_end (the end of the latest interval handled:
--       the later of the latest scheduled run's and what was handled without a run), skipped,
--       active = store:active_runs(workflow), dated = fn(from, to) -> store:dated_runs(...)};
--       the plan: {submit = {submit options...}, requeue = {{id, options = {rerun}, source,
--       hash}...} (finished runs queued again, to be resumed by a worker), handled =
--       {handled_end, skipped, last_skipped}, cancel = {run ids}}
--   store:active_runs(workflow) -> {{id, kind, state, created, cancel_requested, logical_date}}
--       queued and running runs (what max_active_runs counts), oldest first
--   store:dated_runs(workflow, from, to) -> scheduled and backfill runs whose logical date is
--       in [from, to], in date order: {id, kind, state, logical_date, interval_end, created,
--       finished, exit, reason, tasks_total, tasks_succeeded, tasks_failed}
--   store:schedule_states(names [, {last = false}]) -> {[name] = {paused, paused_at,
--       paused_by, handled_end, skipped, last_skipped, last = {id, state, kind, created,
--       finished, logical_date}}}  (last = false: the latest runs are not needed)
--   store:set_paused(workflow, paused, who) -> was it paused (watchers hear paused/unpaused)
local M = {}

-- open(settings) -> the store the settings name: s.store_kind "postgresql" (s.store_url) or the
-- file store in s.state_dir.
function M.open(s)
  if s.store_kind == "postgresql" then
    return require("flowrun.engine.store.pg").open(s.store_url, { lease = s.lease })
  end
  return require("flowrun.engine.store.file").open(s.state_dir, { fsync = s.fsync,
    clock = require("flow").time })
end

return M
