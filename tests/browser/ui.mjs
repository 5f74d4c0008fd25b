// ui.mjs — flowrun's web UI in a real Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core), one phase per call (tests/py/test_server_browser.py starts and restarts
// the server between them). Prints one "RESULT ok|fail message" line per check and saves a
// screenshot of each page in $ARTIFACTS.
//
//   node ui.mjs PHASE     PHASE: green (login, grid, trigger form, a run turning green live,
//                        a log followed, markup in a log line, cancel, keyboard, dark mode),
//                        fail (a run with a failed EMR step: its stderr tail), retry (that run
//                        retried from the failed task until it succeeds)
//   env: FLOWRUN_URL, FLOWRUN_UI_TOKEN, ARTIFACTS, STATE_FILE (JSON passed between phases)
import { chromium } from "playwright-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const phase = process.argv[2];
const URL_ = process.env.FLOWRUN_URL;
const TOKEN = process.env.FLOWRUN_UI_TOKEN;
const ART = process.env.ARTIFACTS;
const STATE_FILE = process.env.STATE_FILE;
const shared = fs.existsSync(STATE_FILE) ? JSON.parse(fs.readFileSync(STATE_FILE, "utf8")) : {};

function result(ok, msg) {
  console.log(`RESULT ${ok ? "ok" : "fail"} ${String(msg).replace(/\n/g, " ")}`);
}
const check = (cond, msg) => result(Boolean(cond), msg);
const eq = (got, want, msg) => result(got === want, got === want ? msg : `${msg} (got ${JSON.stringify(got)}, want ${JSON.stringify(want)})`);

const profile = fs.mkdtempSync(path.join(os.tmpdir(), "flowrun-chromium-"));
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1280, height: 800 },
});
const page = ctx.pages()[0] || await ctx.newPage();
const problems = [];
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
// the 401 before logging in and the 400 of the bad value are expected answers, not faults
page.on("console", (m) => {
  if (m.type() === "error" && !/status of 40[01]/.test(m.text())) problems.push(`console: ${m.text()}`);
});
let dialogs = 0;
page.on("dialog", async (d) => {
  dialogs++;
  if (d.type() === "confirm") await d.accept(); else await d.dismiss();
});

async function shot(name) {
  await page.screenshot({ path: path.join(ART, `${name}.png`) });
}

async function login() {
  await page.goto(URL_ + "/");
  await page.waitForURL(/\/login\?next=/);
  check(true, "an anonymous visit is sent to the login page");
  await shot("login");
  await page.fill("#token", "not-the-token-at-all");
  await page.click("button[type=submit]");
  await page.waitForURL(/failed=1/);
  check(await page.isVisible("#failed"), "a wrong token: the form says so");
  await page.fill("#token", TOKEN);
  await page.click("button[type=submit]");
  await page.waitForSelector("section.card[data-workflow]");
  eq(new URL(page.url()).pathname, "/", "logged in, back on the grid");
  const cookies = await ctx.cookies();
  const c = cookies.find((x) => x.name === "flowrun_session");
  check(c && c.httpOnly && c.sameSite === "Strict", "the session cookie is HttpOnly and SameSite=Strict");
  check(await page.evaluate(() => !document.cookie.includes("flowrun_session")), "scripts cannot read it");
}

// the states of the graph's nodes, by task
async function nodeStates() {
  return page.$$eval("#graph g.node", (gs) => Object.fromEntries(gs.map((g) => [g.dataset.task, g.dataset.state])));
}

async function runState() {
  return page.getAttribute("#run-state", "data-state");
}

async function waitRunState(states, timeout = 90000) {
  await page.waitForFunction((ss) => {
    const b = document.querySelector("#run-state");
    return b && ss.includes(b.dataset.state);
  }, states, { timeout });
  return runState();
}

async function triggerFromForm(name, fill) {
  await page.goto(`${URL_}/workflows/${name}/trigger`);
  await page.waitForSelector("#trigger-form");
  await fill();
  await page.click("#start");
  await page.waitForURL(/\/runs\//);
  await page.waitForSelector("#graph g.node");
  return decodeURIComponent(new URL(page.url()).pathname.replace("/runs/", ""));
}

async function green() {
  await login();
  await shot("grid");
  check(await page.isVisible("a.button.primary[href='/workflows/dms_to_emr/trigger']"), "the grid offers Trigger run");

  // the trigger form, made from the parameters
  await page.goto(`${URL_}/workflows/dms_to_emr/trigger`);
  await page.waitForSelector("#trigger-form");
  eq(await page.$eval("#p-tables", (e) => e.tagName), "TEXTAREA", "a list parameter is a JSON text area");
  eq(await page.$eval("#p-notify_webhook", (e) => e.type), "password", "a secret parameter is a password field");
  eq(await page.$eval("#p-notify_webhook", (e) => e.value), "", "and shows no value");
  eq(await page.$eval("#p-check_row_counts", (e) => e.tagName), "SELECT", "a boolean is a choice");
  eq(await page.$eval("#p-dms_task_arn", (e) => e.value), "arn:aws:dms:us-east-1:123456789012:task:FLOWRUNDEMOTASK00000000000",
    "values from the server's vars file");
  check((await page.textContent("#trigger-form")).includes("seconds between EMR polls"), "the parameters' docs");
  await shot("trigger");
  await page.fill("#p-core_instances", "two");
  await page.click("#start");
  await page.waitForSelector("#p-core_instances-error:not(:empty)");
  check((await page.textContent("#p-core_instances-error")).includes("expected a number"), "a bad value: the server's message next to its field");
  check(await page.$eval("#p-core_instances", (e) => e.classList.contains("invalid")), "the field is marked");
  await page.fill("#p-core_instances", "3");
  await page.click("#start");
  await page.waitForURL(/\/runs\//);
  const id = decodeURIComponent(new URL(page.url()).pathname.replace("/runs/", ""));
  shared.green = id;
  await page.waitForSelector("#graph g.node");
  eq((await page.$$("#graph g.node")).length, 17, "the run page draws the 17 tasks");
  // follow wait_cluster's log while it runs (a line when the cluster starts, one when it
  // bootstraps a few seconds later, ...)
  await page.click("#graph g.node[data-task='wait_cluster']");
  await page.waitForFunction(() => document.querySelector("#task-info h2")?.textContent === "wait_cluster");
  const seen = new Set();
  let logWhileRunning = 0, logLive = false;
  const t0 = Date.now();
  while (Date.now() - t0 < 90000) {
    const st = await nodeStates();
    for (const [k, v] of Object.entries(st)) seen.add(`${k}:${v}`);
    const lines = await page.$$eval("#log .line", (ls) => ls.length);
    if (st.wait_cluster === "running" && lines > logWhileRunning) {
      if (logWhileRunning > 0) logLive = true;
      logWhileRunning = lines;
    }
    if ((await runState()) !== "running") break;
    if (seen.has("wait_cluster:running") && !shared.shotRunning) {
      await shot("run-running");
      shared.shotRunning = true;
    }
    await page.waitForTimeout(100);
  }
  eq(await runState(), "success", "the run succeeded");
  check(seen.has("preflight:running") || seen.has("wait_dms:running"), "tasks were seen running");
  check(seen.has("wait_cluster:running"), "wait_cluster seen running (the graph changed live)");
  check(seen.has("wait_step:pending") || seen.has("wait_step:running"), "wait_step seen before it succeeded");
  check(logLive, "wait_cluster's log grew on the page while the task ran (followed live)");
  const final = await nodeStates();
  const green = ["preflight", "start_dms", "wait_dms", "check_raw", "plan", "create_cluster", "wait_cluster",
    "add_step", "wait_step", "verify", "terminate_cluster"].every((k) => final[k] === "success");
  check(green, "the graph turned green");
  const fill = await page.$eval("#graph g.node[data-task='verify'] rect", (r) => getComputedStyle(r).fill);
  eq(fill, "rgb(143, 209, 143)", "green is the graph's success colour (#8fd18f)");
  const logText0 = await page.textContent("#log");
  check(logText0.includes("STARTING") && logText0.includes("BOOTSTRAPPING"),
    "wait_cluster's lines are on the page: STARTING, then BOOTSTRAPPING");
  eq(await page.textContent("#log-status"), "complete", "the log stream ended with the run");
  const bars = await page.$$("#gantt rect.bar");
  check(bars.length >= 17, `the timeline has a bar per attempt (${bars.length})`);
  await shot("run-success");

  // keyboard: a node is reached and chosen without a mouse
  await page.focus("#graph g.node[data-task='check_raw']");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelector("#task-info h2")?.textContent === "check_raw");
  check(true, "a task is chosen with the keyboard (Enter on a focused node)");
  await page.keyboard.press("Tab");
  check(await page.evaluate(() => document.activeElement && document.activeElement.matches("g.node")),
    "Tab moves to the next node");

  // a log line with markup in it stays text
  const hid = await triggerFromForm("hello", async () => { await page.fill("#p-target", "browser"); });
  await waitRunState(["success", "failed"]);
  await page.click("#graph g.node[data-task='greet']");
  await page.waitForFunction(() => document.querySelector("#log")?.textContent.includes("alert(1)"));
  const logText = await page.textContent("#log");
  check(logText.includes("<b>bold</b><script>alert(1)</script>"), "a log line with HTML in it shows the HTML as text");
  eq(await page.$$eval("#log b, #log script", (x) => x.length), 0, "no element was made from it");
  eq(dialogs, 0, "no script ran (no alert)");
  await shot("run-markup");
  shared.hello = hid;

  // cancel another run
  const sid = await triggerFromForm("slow", async () => { await page.fill("#p-every", "20"); });
  await page.waitForSelector("#cancel");
  await page.waitForFunction(() => document.querySelector("#graph g.node[data-task='step1']")?.dataset.state === "running");
  await page.click("#cancel");
  eq(await waitRunState(["cancelled", "failed", "success"], 20000), "cancelled", "Cancel run: the run ends cancelled");
  const st = await nodeStates();
  eq(st.step1, "cancelled", "its running task was cancelled");
  eq(st.cleanup, "success", "its cleanup task ran");
  check(!(await page.isVisible("#cancel")), "the cancel button is gone");
  await shot("run-cancelled");

  // the grid shows the runs; dark mode
  await page.goto(URL_ + "/");
  await page.waitForSelector("section.card[data-workflow='dms_to_emr'] table.grid");
  const cells = await page.$$("section.card[data-workflow='dms_to_emr'] a.cell.state-success");
  check(cells.length >= 17, "the grid has a green cell per task of the run");
  await shot("grid-runs");
  await page.emulateMedia({ colorScheme: "dark" });
  await page.goto(`${URL_}/runs/${encodeURIComponent(id)}`);
  await page.waitForSelector("#graph g.node[data-state='success']");
  const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  eq(bg, "rgb(15, 18, 23)", "dark mode: a dark page");
  await shot("run-dark");
  await page.emulateMedia({ colorScheme: "light" });
  await page.setViewportSize({ width: 1440, height: 900 });
  await page.goto(`${URL_}/runs/${encodeURIComponent(id)}`);
  await page.waitForSelector("#graph g.node[data-state='success']");
  await shot("run-1440x900");
}

async function fail() {
  await login();
  const id = await triggerFromForm("dms_to_emr", async () => {});
  shared.failed = id;
  eq(await waitRunState(["failed", "success"]), "failed", "with --sim-fail emr.step the run fails");
  await page.waitForFunction(() => document.querySelector("#task-info h2")?.textContent === "wait_step");
  check(true, "the page followed the run to its failed task");
  await page.click("#graph g.node[data-task='verify']");
  await page.click("#graph g.node[data-task='wait_step']");
  await page.waitForFunction(() => document.querySelector("#task-info h2")?.textContent === "wait_step");
  const text = await page.textContent("#error-lines");
  check(text.includes("FAILED; reason:"), "the EMR step's FailureDetails");
  check(/\n--- stderr \(last lines\) ---\n/.test(text), "its stderr tail, on lines of their own");
  check(text.split("\n").length >= 5, `as lines, not one folded line (${text.split("\n").length})`);
  const st = await nodeStates();
  eq(st.verify, "upstream_failed", "what follows is upstream_failed");
  eq(st.terminate_cluster, "success", "the cluster was terminated (cleanup)");
  check(await page.isEnabled("#retry"), "Retry from here is offered");
  await shot("run-failed");
}

async function retry() {
  await login();
  await page.goto(`${URL_}/runs/${encodeURIComponent(shared.failed)}#task=wait_step`);
  await page.waitForFunction(() => document.querySelector("#task-info h2")?.textContent === "wait_step");
  await page.click("#retry");
  await page.waitForFunction(() => document.querySelector("#run-state")?.dataset.state === "running", null, { timeout: 20000 });
  check(true, "Retry: the run runs again");
  eq(await waitRunState(["success", "failed"]), "success", "and succeeds");
  const st = await nodeStates();
  eq(st.wait_step, "success", "wait_step succeeded");
  eq(st.verify, "success", "and what follows ran");
  eq(st.preflight, "success", "tasks before it kept their success");
  await page.click("#graph g.node[data-task='wait_step']");
  await page.waitForFunction(() => document.querySelector("#task-info h2")?.textContent === "wait_step");
  check((await page.textContent("#task-info .facts")).includes("attempts 2"), "wait_step's second attempt");
  await shot("run-retried");
}

try {
  if (phase === "green") await green();
  else if (phase === "fail") await fail();
  else if (phase === "retry") await retry();
  else throw new Error("unknown phase " + phase);
} catch (e) {
  result(false, `${phase} raised: ${e.message.split("\n")[0]}`);
  try { await shot(`error-${phase}`); } catch (_) { /* the page may be gone */ }
}
eq(problems.length === 0 ? "" : problems.join("; "), "", `${phase}: no script error, no failed request`);
fs.writeFileSync(STATE_FILE, JSON.stringify(shared));
await ctx.close();
fs.rmSync(profile, { recursive: true, force: true });
