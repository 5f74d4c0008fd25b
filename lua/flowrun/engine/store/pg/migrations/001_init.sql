-- 001_init: the run store's tables in schema "flowrun". Shipped: never edit, add 002_... instead.
--
-- runs    one row per run: what it is (workflow, its source, public parameters), its summary
--         (state and task counts, kept by every commit so that listing never replays journals)
--         and who holds it (owner, lease_until, and epoch: the fencing token, bumped on every
--         claim and checked by every write a holder makes).
-- events  the run's journal: the same records as the file store's JSON lines, in seq order,
--         each with the epoch that wrote it.
-- logs    task log lines (ctx.log, flow.poll status, flow.exec output), bounded per attempt by
--         the writer.
-- workers the live workers and their heartbeats (flowrun workers).
CREATE SCHEMA IF NOT EXISTS flowrun;

CREATE TABLE flowrun.schema_version (
  version    integer PRIMARY KEY,
  name       text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE flowrun.runs (
  id               text PRIMARY KEY,
  workflow         text NOT NULL,
  state            text NOT NULL
                   CHECK (state IN ('queued', 'running', 'success', 'failed', 'cancelled')),
  kind             text NOT NULL DEFAULT 'manual',      -- manual | submitted | scheduled | backfill
  -- times are the engine's clock (seconds since the epoch, as in the journal's records)
  created          double precision NOT NULL,           -- submitted or started: the list order
  started          double precision,
  finished         double precision,
  last_t           double precision,
  exit             integer,
  reason           text,
  file             text,
  hash             text,
  source           text,                                -- the workflow file as submitted
  params           json NOT NULL DEFAULT '{}',          -- public parameters only
  secret_params    json,                                -- names of secret ones (never values)
  task_names       json,
  options          json,                                -- timeout, max_active of a submitted run
  sim              boolean NOT NULL DEFAULT false,      -- answered by the simulator
  logical_date     timestamptz,
  interval_start   timestamptz,
  interval_end     timestamptz,
  tasks_total      integer NOT NULL DEFAULT 0,
  tasks_succeeded  integer NOT NULL DEFAULT 0,
  tasks_failed     integer NOT NULL DEFAULT 0,
  resumed          integer NOT NULL DEFAULT 0,
  seq              integer NOT NULL DEFAULT 0,          -- journal records committed
  -- the holder
  adoptable        boolean NOT NULL DEFAULT false,      -- workers take it over when its lease expires
  owner            text,
  epoch            bigint NOT NULL DEFAULT 0,
  lease_until      timestamptz,
  takeovers        integer NOT NULL DEFAULT 0,
  cancel_requested timestamptz,
  submitted_at     timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);

-- listing: newest first, by workflow, by state; keyset pagination on (created, id)
CREATE INDEX runs_created ON flowrun.runs (created, id);
CREATE INDEX runs_workflow_created ON flowrun.runs (workflow, created, id);
CREATE INDEX runs_state_created ON flowrun.runs (state, created, id);
-- a scheduled run is one per (workflow, logical date): a second one is refused
CREATE UNIQUE INDEX runs_scheduled_once ON flowrun.runs (workflow, logical_date)
  WHERE kind = 'scheduled';
-- workers: queued runs in order, held runs whose lease may expire, a worker's runs
CREATE INDEX runs_queued ON flowrun.runs (sim, created, id) WHERE state = 'queued';
CREATE INDEX runs_leases ON flowrun.runs (sim, lease_until) WHERE state = 'running' AND adoptable;
CREATE INDEX runs_owner ON flowrun.runs (owner) WHERE state = 'running';

CREATE TABLE flowrun.events (
  run_id text NOT NULL REFERENCES flowrun.runs (id) ON DELETE CASCADE,
  seq    integer NOT NULL,
  epoch  bigint NOT NULL,
  t      double precision NOT NULL,
  rec    json NOT NULL,
  PRIMARY KEY (run_id, seq)
);

CREATE TABLE flowrun.logs (
  run_id    text NOT NULL REFERENCES flowrun.runs (id) ON DELETE CASCADE,
  id        bigserial,
  task      text,
  attempt   integer,
  t         double precision NOT NULL,
  msg       text NOT NULL,
  truncated boolean NOT NULL DEFAULT false,
  epoch     bigint NOT NULL,
  PRIMARY KEY (run_id, id)
);

CREATE TABLE flowrun.workers (
  id           text PRIMARY KEY,
  hostname     text NOT NULL,
  pid          integer NOT NULL,
  version      text,
  concurrency  integer NOT NULL,
  sim          boolean NOT NULL DEFAULT false,
  state        text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'stopping', 'stopped')),
  lease        double precision NOT NULL,
  running      integer NOT NULL DEFAULT 0,
  started_at   timestamptz NOT NULL DEFAULT now(),
  heartbeat_at timestamptz NOT NULL DEFAULT now()
);
