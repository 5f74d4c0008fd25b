-- 002_schedules: what schedulers keep beside the runs. Shipped: never edit, add 003_... instead.
--
-- schedules  one row per workflow that was paused or whose scheduler handled an interval with
--            no run of its own: paused (since when, by whom), and handled_end, the end of the
--            latest interval handled that way (a tick skipped by overlap = "skip", or a date a
--            backfill run already had). The latest interval a workflow's schedulers handled is
--            the later of that and the latest scheduled run's interval_end: the runs are the
--            truth, this row keeps only what they cannot say. skipped counts skipped ticks.
-- runs       one run per (workflow, logical date) among scheduled and backfill runs, so that a
--            scheduler and a backfill never both make a date's run (runs_dated_once replaces
--            runs_scheduled_once, which covered scheduled runs only); and the workflow's active
--            runs (queued or running: what max_active_runs counts) in an index of their own.
CREATE TABLE flowrun.schedules (
  workflow     text PRIMARY KEY,
  paused       boolean NOT NULL DEFAULT false,
  paused_at    timestamptz,
  paused_by    text,
  handled_end  timestamptz,
  skipped      integer NOT NULL DEFAULT 0,
  last_skipped timestamptz,                      -- the logical date of the latest skipped tick
  updated_at   timestamptz NOT NULL DEFAULT now()
);

DROP INDEX flowrun.runs_scheduled_once;
CREATE UNIQUE INDEX runs_dated_once ON flowrun.runs (workflow, logical_date)
  WHERE kind IN ('scheduled', 'backfill');
CREATE INDEX runs_active ON flowrun.runs (workflow, created, id)
  WHERE state IN ('queued', 'running');
