-- The PostgreSQL run store's statements, one per purpose, read by flowrun.engine.store.pg.
-- Each block starts with "-- name: NAME"; the comment under it says what it does and the lock
-- it takes. Parameters are $1, $2 ... (sent apart from the text). Times: the engine's clock in
-- seconds (double precision) for what the journal records; the server's now() for leases and
-- heartbeats, so that machines whose clocks disagree still agree on who holds a run.

-- name: schema_exists
-- Takes: nothing. Reads the catalog with the statement's snapshot (not to_regclass, whose cache
-- may not yet know of a table another session created while this one waited for the lock).
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = 'flowrun' AND c.relname = 'schema_version') AS present

-- name: schema_version
-- Takes: nothing (a plain read).
SELECT coalesce(max(version), 0) AS version FROM flowrun.schema_version

-- name: migration_lock
-- Takes: a transaction-scoped advisory lock (key 0x666c6f77 'flow'), so that two processes
-- migrating the same database at once apply each migration once.
SELECT pg_advisory_xact_lock(1718382455)

-- name: record_migration
-- Takes: the new row's lock (INSERT), inside the migration's transaction.
INSERT INTO flowrun.schema_version (version, name) VALUES ($1, $2)

-- name: create_run
-- A run started here (flowrun run): its row, held by this process, and its first record.
-- Takes: the new row's lock (INSERT). An id already taken inserts nothing (ON CONFLICT), so two
-- processes racing for one id cannot both get it.
WITH run AS (
  INSERT INTO flowrun.runs (id, workflow, state, kind, created, started, last_t, file, hash,
    source, params, secret_params, task_names, sim, tasks_total, seq, owner, epoch,
    lease_until, adoptable)
  VALUES ($1, $2, 'running', 'manual', $3, $3, $3, $4, $5, $6, $7::json, $8::json, $9::json,
    $10, $11, 1, $12, 1, now() + make_interval(secs => $13), false)
  ON CONFLICT DO NOTHING
  RETURNING id)
INSERT INTO flowrun.events (run_id, seq, epoch, t, rec)
SELECT id, 1, 1, $3, $14::json FROM run

-- name: submit
-- A run queued for the workers. Takes: the new row's lock (INSERT). An id already taken, or a
-- second scheduled or backfill run of a workflow for one logical date (runs_dated_once),
-- inserts nothing (ON CONFLICT). Wakes idle workers (NOTIFY, delivered at commit).
WITH run AS (
  INSERT INTO flowrun.runs (id, workflow, state, kind, created, file, hash, source, params,
    secret_params, task_names, options, sim, tasks_total, adoptable, logical_date,
    interval_start, interval_end)
  VALUES ($1, $2, 'queued', $3, $4, $5, $6, $7, $8::json, $9::json, $10::json, $11::json, $12,
    $13, true, to_timestamp($14::float8), to_timestamp($15::float8), to_timestamp($16::float8))
  ON CONFLICT DO NOTHING
  RETURNING id)
SELECT id, pg_notify('flowrun', 'queued ' || id) AS notified FROM run

-- name: claim
-- A worker claims up to $2 runs: expired leases first (their holder died or lost the store),
-- then queued runs, oldest first. Takes: row locks on the candidates, FOR UPDATE SKIP LOCKED:
-- a run another worker is claiming, or whose holder is committing, is skipped, never waited
-- for. Bumps each claimed run's epoch, so its previous holder's writes are refused from now on.
-- A takeover is counted when the previous holder's lease ran out, not when it handed the run
-- back (release: owner NULL), so that restarting workers does not count against a run.
WITH expired AS (
  SELECT id, state, owner FROM flowrun.runs
  WHERE state = 'running' AND adoptable AND sim = $3 AND lease_until < now()
  ORDER BY lease_until LIMIT $2
  FOR UPDATE SKIP LOCKED
), queued AS (
  SELECT id, state, owner FROM flowrun.runs
  WHERE state = 'queued' AND sim = $3
  ORDER BY created, id LIMIT $2
  FOR UPDATE SKIP LOCKED
), picked AS (
  SELECT id, state, owner FROM expired UNION ALL SELECT id, state, owner FROM queued LIMIT $2
)
UPDATE flowrun.runs r
SET state = 'running', owner = $1, epoch = r.epoch + 1,
    lease_until = now() + make_interval(secs => $4),
    takeovers = r.takeovers + (picked.state = 'running' AND picked.owner IS NOT NULL)::int,
    updated_at = now()
FROM picked
WHERE r.id = picked.id
RETURNING r.id, r.epoch, picked.state AS was, r.workflow, r.file, r.hash, r.source, r.params,
  r.secret_params, r.task_names, r.options, r.seq, r.takeovers, r.created, r.kind,
  r.cancel_requested IS NOT NULL AS cancel_requested,
  extract(epoch FROM r.logical_date)::float8 AS logical_date,
  extract(epoch FROM r.interval_start)::float8 AS interval_start,
  extract(epoch FROM r.interval_end)::float8 AS interval_end

-- name: take
-- flowrun resume takes a run it will continue here. Takes: the run's row lock (UPDATE). Refuses
-- a run whose lease is held (running, not expired) and a queued run (a worker will start it).
-- Bumps the epoch: the previous holder's writes are refused from now on. A cancel request
-- left on it is dropped: resuming is the newer wish.
UPDATE flowrun.runs
SET epoch = epoch + 1, owner = $2, lease_until = now() + make_interval(secs => $3),
    cancel_requested = NULL, updated_at = now()
WHERE id = $1 AND state <> 'queued' AND NOT (state = 'running' AND lease_until >= now())
RETURNING epoch, seq

-- name: commit
-- Everything a run appended since its last commit: the records and the run's summary, in one
-- statement (one transaction). Takes: the run's row lock (UPDATE) for the statement. Writes
-- nothing when the epoch moved on (another holder claimed the run) or when seq is not the one
-- this holder last wrote (this very commit already happened: a retry after a lost answer).
-- Renews the lease: a holder that commits is alive. When the run ends, tells watchers (NOTIFY
-- finished, delivered at commit). Answers how many records it wrote.
WITH run AS (
  UPDATE flowrun.runs
  SET seq = $3 + $4, state = $6, started = coalesce($7, started), finished = $8, last_t = $9,
      exit = $10, reason = $11, tasks_total = $12, tasks_succeeded = $13, tasks_failed = $14,
      resumed = $15, lease_until = now() + make_interval(secs => $16), updated_at = now()
  WHERE id = $1 AND epoch = $2 AND seq = $3
  RETURNING id, state
), written AS (
  INSERT INTO flowrun.events (run_id, seq, epoch, t, rec)
  SELECT run.id, $3 + x.n, $2, (x.r ->> 't')::float8, x.r
  FROM run, json_array_elements($5::json) WITH ORDINALITY AS x(r, n)
  RETURNING 1
)
SELECT (SELECT count(*) FROM written)::int AS written,
  (SELECT pg_notify('flowrun', 'finished ' || id) FROM run WHERE state <> 'running') IS NULL
    AS quiet

-- name: holder
-- What a commit that wrote nothing finds: whose the run is now. Takes: nothing (a plain read).
SELECT epoch, seq, owner, state FROM flowrun.runs WHERE id = $1

-- name: append_logs
-- Task log lines. Takes: a share lock on the run's row (FOR SHARE) for the statement, so that a
-- claim (which bumps the epoch) comes before or after it: lines from a holder that lost the run
-- are never written.
WITH holder AS (
  SELECT id FROM flowrun.runs WHERE id = $1 AND epoch = $2 FOR SHARE
)
INSERT INTO flowrun.logs (run_id, task, attempt, t, msg, truncated, epoch)
SELECT holder.id, x.task, x.attempt, x.t, x.msg, coalesce(x.truncated, false), $2
FROM holder,
  json_to_recordset($3::json) AS x(task text, attempt integer, t float8, msg text, truncated boolean)

-- name: renew
-- Heartbeat: renews the leases of every run this process holds, in one statement. Takes: each
-- renewed run's row lock for the statement (UPDATE). A run missing from the answer is no longer
-- this holder's (its epoch moved on: taken over).
UPDATE flowrun.runs r
SET lease_until = now() + make_interval(secs => $3)
FROM unnest($1::text[], $2::bigint[]) AS h(id, epoch)
WHERE r.id = h.id AND r.epoch = h.epoch
RETURNING r.id, r.cancel_requested IS NOT NULL AS cancel_requested

-- name: release
-- A holder lets a run go that did not finish (handed back by a stopping worker, or a process
-- that stops holding it): its lease is left expired, so it shows as interrupted, and a worker
-- may take it over at once (adoptable runs; NOTIFY wakes them). Takes: the run's row lock
-- (UPDATE); nothing happens unless the epoch is still the holder's.
WITH r AS (
  UPDATE flowrun.runs
  SET lease_until = now() - interval '1 second', owner = NULL, updated_at = now()
  WHERE id = $1 AND epoch = $2 AND state = 'running'
  RETURNING id, adoptable)
SELECT id, CASE WHEN adoptable THEN pg_notify('flowrun', 'released ' || id) END AS notified
FROM r

-- name: cancel_queued
-- flowrun cancel on a queued run: it ends at once (nothing ran, nothing to clean up). Takes: the
-- run's row lock (UPDATE); a run a worker claimed meanwhile is no longer queued and is left to
-- cancel_running.
WITH r AS (
  UPDATE flowrun.runs
  SET state = 'cancelled', finished = $2, last_t = $2, exit = 130,
      reason = 'cancelled before it started (flowrun cancel)', cancel_requested = now(),
      updated_at = now()
  WHERE id = $1 AND state = 'queued'
  RETURNING id)
SELECT id, pg_notify('flowrun', 'finished ' || id) AS notified FROM r

-- name: cancel_running
-- flowrun cancel on a running run: the request is recorded and its holder told (NOTIFY); the
-- holder cancels the run (its cleanup tasks run). Takes: the run's row lock (UPDATE).
WITH r AS (
  UPDATE flowrun.runs
  SET cancel_requested = coalesce(cancel_requested, now()), updated_at = now()
  WHERE id = $1 AND state = 'running'
  RETURNING id, owner, lease_until < now() AS expired, adoptable)
SELECT id, owner, expired, adoptable, pg_notify('flowrun', 'cancel ' || id) AS notified FROM r

-- name: clear_cancel
-- A holder has acted on a cancel request (the run is being cancelled): later resumes of the run
-- are not cancelled again. Takes: the run's row lock (UPDATE), fenced by the epoch.
UPDATE flowrun.runs SET cancel_requested = NULL WHERE id = $1 AND epoch = $2

-- name: run_row
-- One run's row. Takes: nothing (a plain read).
SELECT id, workflow, state, kind, created, started, finished, last_t, exit, reason, file, hash,
  source, params, secret_params, task_names, options, sim, tasks_total, tasks_succeeded,
  tasks_failed, resumed, seq, adoptable, owner, epoch, takeovers,
  cancel_requested IS NOT NULL AS cancel_requested,
  lease_until IS NOT NULL AND lease_until < now() AS expired,
  extract(epoch FROM logical_date)::float8 AS logical_date,
  extract(epoch FROM interval_start)::float8 AS interval_start,
  extract(epoch FROM interval_end)::float8 AS interval_end
FROM flowrun.runs WHERE id = $1

-- name: run_events
-- One run's journal, in order. Takes: nothing (a plain read).
SELECT seq, epoch, rec FROM flowrun.events WHERE run_id = $1 ORDER BY seq

-- name: run_state
-- What flowrun logs -f and watchers poll: a run's state and how far its journal is. Takes:
-- nothing (a plain read).
SELECT state, seq, lease_until IS NOT NULL AND lease_until < now() AS expired
FROM flowrun.runs WHERE id = $1

-- name: find_prefix
-- Runs whose id starts with $1 (at most 2: one is an answer, two is ambiguous). Takes: nothing.
SELECT id FROM flowrun.runs WHERE starts_with(id, $1) ORDER BY id LIMIT 2

-- name: find_last
-- The run started last. Takes: nothing.
SELECT id FROM flowrun.runs ORDER BY created DESC, id DESC LIMIT 1

-- name: list_runs
-- Runs with their summary columns, filtered and paged by keyset on (created, id): never a
-- journal replayed. The filter and order fragments below are put in place of the markers, so
-- each shape of filter is one statement, prepared once per connection and planned on the
-- indexes runs_created, runs_workflow_created and runs_state_created. Takes: nothing.
SELECT id, workflow, state, kind, created, started, finished, last_t, exit, reason,
  tasks_total, tasks_succeeded, tasks_failed, resumed, owner, sim, file,
  lease_until IS NOT NULL AND lease_until < now() AS expired,
  cancel_requested IS NOT NULL AS cancel_requested,
  extract(epoch FROM logical_date)::float8 AS logical_date
FROM flowrun.runs
WHERE true /*FILTERS*/
ORDER BY /*ORDER*/
LIMIT $1

-- name: logs_after
-- A run's task log lines after line id $2, in order, at most $3. Takes: nothing.
SELECT id, task, attempt, t, msg, truncated FROM flowrun.logs
WHERE run_id = $1 AND id > $2 ORDER BY id LIMIT $3

-- name: worker_register
-- A worker says it is alive. Takes: the worker's row lock (INSERT ... ON CONFLICT UPDATE).
INSERT INTO flowrun.workers (id, hostname, pid, version, concurrency, sim, lease, state)
VALUES ($1, $2, $3, $4, $5, $6, $7, 'running')
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), state = 'running'

-- name: worker_heartbeat
-- A worker's heartbeat and how many runs it holds. Takes: the worker's row lock (UPDATE).
UPDATE flowrun.workers SET heartbeat_at = now(), running = $2, state = $3 WHERE id = $1

-- name: workers
-- Workers seen in the last hour (or still marked running), their runs and heartbeat age, in
-- seconds by the server's clock. Takes: nothing.
SELECT w.id, w.hostname, w.pid, w.version, w.concurrency, w.sim, w.state, w.lease, w.running,
  extract(epoch FROM w.started_at)::float8 AS started,
  extract(epoch FROM now() - w.heartbeat_at)::float8 AS age,
  coalesce((SELECT json_agg(r.id ORDER BY r.created) FROM flowrun.runs r
            WHERE r.owner = w.id AND r.state = 'running'), '[]'::json) AS runs
FROM flowrun.workers w
WHERE w.heartbeat_at > now() - interval '1 hour' OR w.state <> 'stopped'
ORDER BY w.started_at, w.id

-- name: count_runs
-- How many runs of each workflow are in each state (the server's grid and /metrics). Takes:
-- nothing (a plain read, a scan of the summaries, never of the journals).
SELECT workflow, CASE WHEN state = 'running' AND lease_until IS NOT NULL AND lease_until < now()
  THEN 'interrupted' ELSE state END AS state, count(*)::int AS n
FROM flowrun.runs GROUP BY 1, 2

-- ---- schedules (migration 002) ------------------------------------------------------------------

-- name: schedule_lock
-- Takes: a transaction-scoped advisory lock on one workflow's schedule (keys 0x666c6f77 and the
-- name's hash), so that schedulers and backfills deciding for one workflow take turns: what one
-- counts (max_active_runs) is still true when it submits. Exactly-once does not depend on it
-- (runs_dated_once does).
SELECT pg_advisory_xact_lock(1718382455, hashtext($1))

-- name: schedule_states
-- For each workflow of $1 (text[]): paused, the end of the latest interval its schedulers
-- handled (the later of the latest scheduled run's interval_end, read from runs_dated_once,
-- and schedules.handled_end), skipped ticks, and its latest run of any kind. Takes: nothing
-- (plain reads).
SELECT w.workflow, coalesce(s.paused, false) AS paused,
  extract(epoch FROM s.paused_at)::float8 AS paused_at, s.paused_by,
  extract(epoch FROM greatest(s.handled_end, ls.interval_end))::float8 AS handled_end,
  coalesce(s.skipped, 0) AS skipped,
  extract(epoch FROM s.last_skipped)::float8 AS last_skipped,
  lr.id AS last_id, lr.state AS last_state, lr.kind AS last_kind, lr.created AS last_created,
  lr.finished AS last_finished, lr.expired AS last_expired,
  extract(epoch FROM lr.logical_date)::float8 AS last_logical_date
FROM unnest($1::text[]) AS w(workflow)
LEFT JOIN flowrun.schedules s ON s.workflow = w.workflow
LEFT JOIN LATERAL (
  SELECT r.interval_end FROM flowrun.runs r
  WHERE r.workflow = w.workflow AND r.kind = 'scheduled'
  ORDER BY r.logical_date DESC LIMIT 1) ls ON true
LEFT JOIN LATERAL (
  SELECT r.id, r.state, r.kind, r.created, r.finished, r.logical_date,
    (r.state = 'running' AND (r.owner IS NULL OR r.lease_until < now())) AS expired
  FROM flowrun.runs r WHERE r.workflow = w.workflow
  ORDER BY r.created DESC, r.id DESC LIMIT 1) lr ON true

-- name: active_runs
-- A workflow's active runs, what max_active_runs counts: queued, or running with a live holder
-- or one a worker will take over (a `flowrun run` whose process died is interrupted until
-- someone resumes it, and counts no more). Oldest first. Takes: nothing; planned on runs_active.
SELECT id, kind, state, created, cancel_requested IS NOT NULL AS cancel_requested,
  extract(epoch FROM logical_date)::float8 AS logical_date
FROM flowrun.runs
WHERE workflow = $1 AND state IN ('queued', 'running')
  AND (state = 'queued' OR adoptable OR (owner IS NOT NULL AND lease_until >= now()))
ORDER BY created, id

-- name: dated_runs
-- A workflow's scheduled and backfill runs whose logical date lies in [$2, $3] (epoch seconds),
-- in date order, with their summary. Takes: nothing; planned on runs_dated_once.
SELECT id, kind, state, created, started, finished, exit, reason, tasks_total,
  tasks_succeeded, tasks_failed, owner, cancel_requested IS NOT NULL AS cancel_requested,
  state = 'running' AND (owner IS NULL OR lease_until < now()) AS expired,
  extract(epoch FROM logical_date)::float8 AS logical_date,
  extract(epoch FROM interval_end)::float8 AS interval_end
FROM flowrun.runs
WHERE workflow = $1 AND kind IN ('scheduled', 'backfill')
  AND logical_date BETWEEN to_timestamp($2::float8) AND to_timestamp($3::float8)
ORDER BY logical_date

-- name: schedule_handled
-- A scheduler handled intervals without runs of its own (ticks skipped, dates a backfill run
-- already had): the latest one's end is kept (never moved back), skipped ticks counted.
-- Takes: the schedule's row lock (INSERT ... ON CONFLICT UPDATE).
INSERT INTO flowrun.schedules (workflow, handled_end, skipped, last_skipped)
VALUES ($1, to_timestamp($2::float8), $3, to_timestamp($4::float8))
ON CONFLICT (workflow) DO UPDATE
SET handled_end = greatest(flowrun.schedules.handled_end, excluded.handled_end),
    skipped = flowrun.schedules.skipped + excluded.skipped,
    last_skipped = greatest(flowrun.schedules.last_skipped, excluded.last_skipped),
    updated_at = now()

-- name: set_paused
-- flowrun pause / unpause. Takes: the schedule's row lock (INSERT ... ON CONFLICT UPDATE).
-- Answers whether it was paused before; tells schedulers (NOTIFY paused|unpaused <workflow>,
-- delivered at commit).
WITH old AS (
  SELECT paused FROM flowrun.schedules WHERE workflow = $1
), s AS (
  INSERT INTO flowrun.schedules (workflow, paused, paused_at, paused_by)
  VALUES ($1, $2, CASE WHEN $2 THEN now() END, CASE WHEN $2 THEN $3 END)
  ON CONFLICT (workflow) DO UPDATE
  SET paused = excluded.paused, paused_at = excluded.paused_at, paused_by = excluded.paused_by,
      updated_at = now()
  RETURNING workflow, paused)
SELECT coalesce((SELECT paused FROM old), false) AS was,
  pg_notify('flowrun', CASE WHEN s.paused THEN 'paused ' ELSE 'unpaused ' END || s.workflow)
    AS notified
FROM s

-- name: requeue
-- A backfill that reprocesses a date: that date's finished run is queued again with the
-- workflow's source as it is now ($3, $4: source and hash), and the worker that claims it resumes
-- it (tasks that succeeded keep their results unless options.rerun names them, as `flowrun
-- resume --rerun` does). Takes: the run's row lock (UPDATE); a run that is queued or
-- running is left alone. Wakes idle workers (NOTIFY queued, delivered at commit).
WITH r AS (
  UPDATE flowrun.runs
  SET state = 'queued', finished = NULL, exit = NULL, reason = NULL, owner = NULL,
      lease_until = NULL, cancel_requested = NULL, adoptable = true,
      options = ((coalesce(options::jsonb, '{}') - 'rerun') || $2::jsonb)::json,
      source = coalesce($3, source), hash = coalesce($4, hash),
      updated_at = now()
  WHERE id = $1 AND state IN ('success', 'failed', 'cancelled')
  RETURNING id)
SELECT id, pg_notify('flowrun', 'queued ' || id) AS notified FROM r
