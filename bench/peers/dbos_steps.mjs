// bench/peers/dbos_steps.mjs — DBOS Transact doing what bench/store_steps.lua has flowrun do: RUNS
// durable workflows of 10 sequential no-op steps (each step's result committed before the next
// starts), queued first, then run by WORKERS processes taking CONCURRENCY workflows each from
// the queue, on the same PostgreSQL. Prints one JSON line: runs, seconds (from the first
// workflow's start to the last one's end, from DBOS's own workflow_status table), runs/s, steps/s.
//   node bench/peers/dbos_steps.mjs URL RUNS WORKERS CONCURRENCY
//   node bench/peers/dbos_steps.mjs worker URL CONCURRENCY     (what the driver spawns)
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { DBOS } from "@dbos-inc/dbos-sdk";
import pg from "pg";

const STEPS = 10;
const QUEUE = "bench_steps";

async function noop() { return 1; }
async function tenSteps(i) {
  for (let k = 0; k < STEPS; k++) await DBOS.runStep(noop, { name: "s" + k });
  return i;
}
const workflow = DBOS.registerWorkflow(tenSteps, { name: "tenSteps" });

async function launch(url, listen, concurrency) {
  DBOS.setConfig({ name: "flowrun-bench", systemDatabaseUrl: url, applicationVersion: "1",
    logLevel: "error", listenQueues: listen, systemDatabasePoolSize: Math.max(10, concurrency + 4) });
  await DBOS.launch();
  // the queue polls every 10 ms (its default is 1 s) so that polling is not what is measured
  await DBOS.registerQueue(QUEUE, { workerConcurrency: concurrency, minPollingIntervalMs: 10,
    onConflict: "always_update" });
}

if (process.argv[2] === "worker") {
  const [, , , url, c] = process.argv;
  await launch(url, [QUEUE], Number(c));
  process.on("SIGTERM", async () => { await DBOS.shutdown(); process.exit(0); });
} else {
  const [, , url, runs, workers, concurrency] = process.argv;
  const R = Number(runs), W = Number(workers), C = Number(concurrency);
  await launch(url, ["not_" + QUEUE], C); // this process only enqueues
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  await db.query("DELETE FROM dbos.workflow_status WHERE name = 'tenSteps'");
  for (let i = 0; i < R; i++) await DBOS.startWorkflow(workflow, { queueName: QUEUE })(i);
  const me = fileURLToPath(import.meta.url);
  const procs = [];
  for (let w = 0; w < W; w++) {
    procs.push(spawn(process.execPath, [me, "worker", url, String(C)], { stdio: ["ignore", "ignore", "inherit"] }));
  }
  const deadline = Date.now() + 600000;
  let done = 0;
  while (Date.now() < deadline) {
    const r = await db.query("SELECT count(*)::int AS n FROM dbos.workflow_status WHERE name = 'tenSteps' AND status = 'SUCCESS'");
    done = r.rows[0].n;
    if (done >= R) break;
    await new Promise((ok) => setTimeout(ok, 50));
  }
  const t = await db.query("SELECT min(started_at_epoch_ms)::float8 AS a, max(updated_at)::float8 AS b " +
    "FROM dbos.workflow_status WHERE name = 'tenSteps' AND status = 'SUCCESS'");
  const secs = (t.rows[0].b - t.rows[0].a) / 1000;
  for (const p of procs) p.kill("SIGTERM");
  await Promise.all(procs.map((p) => new Promise((ok) => p.on("exit", ok))));
  await db.end();
  await DBOS.shutdown();
  console.log(JSON.stringify({ runs: done, workers: W, concurrency: C, seconds: secs,
    runs_per_s: done / secs, steps_per_s: done * STEPS / secs }));
  process.exit(0);
}
