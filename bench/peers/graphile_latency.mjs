// bench/peers/graphile_latency.mjs — graphile-worker's add-job-to-start latency, measured as
// bench/store_latency.lua measures flowrun's submit-to-start: an idle runner (concurrency 4) in
// this process; N times, a job is added through WorkerUtils and the time from the addJob call to
// the task handler starting is taken (graphile-worker wakes on LISTEN/NOTIFY). Prints one JSON
// line with p50, p99, mean and max in ms.
//   node bench/peers/graphile_latency.mjs URL [N]
import { run, makeWorkerUtils, Logger } from "graphile-worker";
import { performance } from "node:perf_hooks";

const [, , url, n] = process.argv;
const N = Number(n || 200);
let wake = null;
const started = new Map();
const runner = await run({
  connectionString: url, concurrency: 4, noHandleSignals: true, pollInterval: 2000,
  logger: new Logger(() => () => {}),
  taskList: {
    lat: async (payload) => {
      started.set(payload.i, performance.now());
      if (wake) wake();
    },
  },
});
const utils = await makeWorkerUtils({ connectionString: url, logger: new Logger(() => () => {}) });
await new Promise((ok) => setTimeout(ok, 500));
const lat = [];
for (let i = 0; i < N + 5; i++) {
  const got = new Promise((ok) => { wake = ok; });
  const t0 = performance.now();
  await utils.addJob("lat", { i });
  if (!started.has(i)) await Promise.race([got, new Promise((_, no) => setTimeout(() => no(new Error("job did not start")), 10000))]);
  if (i >= 5) lat.push(started.get(i) - t0);
  await new Promise((ok) => setTimeout(ok, 10));
}
await runner.stop();
await utils.release();
lat.sort((a, b) => a - b);
const pct = (p) => lat[Math.max(0, Math.ceil(lat.length * p) - 1)];
console.log(JSON.stringify({ n: lat.length, p50_ms: pct(0.5), p99_ms: pct(0.99),
  mean_ms: lat.reduce((a, b) => a + b, 0) / lat.length, max_ms: lat[lat.length - 1] }));
process.exit(0);
