// run.js — one run: its DAG coloured by state and updated live (SSE), the timeline of its
// attempts, the selected task's details (its whole error as lines: a failed EMR step's
// FailureDetails and stderr tail), its logs followed live, and the cancel and retry buttons.
import { el, replace, $ } from "./dom.js";
import { get, post, stream, enc, ApiError } from "./api.js";
import { header, live } from "./header.js";
import { duration, time, label } from "./fmt.js";
import { draw as drawGraph } from "./graph.js";
import { draw as drawGantt } from "./gantt.js";
import { LogView } from "./logs.js";

const id = decodeURIComponent(location.pathname.replace(/^\/runs\//, ""));
let who = null;
let run = null;
let graph = null;
let selected = null;
let events = null;
let logs = null;
let logAttempt = null;
const main = $("#main");

function taskOf(name) { return run && run.tasks.find((t) => t.name === name); }

// The task worth looking at: a failed one, else the one that started last among those running.
function interesting() {
  const failed = run.tasks.find((t) => t.state === "failed");
  if (failed) return failed.name;
  let best = null;
  for (const t of run.tasks) {
    if ((t.state === "running" || t.state === "up_for_retry") && (!best || t.started > best.started)) best = t;
  }
  return best ? best.name : null;
}

function chooseDefault() {
  const h = new URLSearchParams(location.hash.slice(1)).get("task");
  if (h && taskOf(h)) { pinned = true; return h; }
  return interesting() || (run.tasks.length ? run.tasks[0].name : null);
}

// Until the user picks a task, the page follows the run: the task running, then a failed one.
let pinned = false;

function pick(name) {
  pinned = true;
  select(name);
}

function select(name) {
  if (!name) return;
  if (name === selected && graph) return;
  selected = name;
  history.replaceState(null, "", `#task=${enc(name)}`);
  logAttempt = null;
  if (graph) graph.select(name);
  renderTask(true);
  renderGantt();
}

function flash(msg, isError) {
  replace($("#flash"), msg ? el("div", { class: `notice${isError ? " error" : ""}`, role: "status", text: msg }) : null);
}

function renderHead() {
  const canOperate = who && who.role === "operator";
  const running = run.state === "running";
  const dur = (run.finished || (running ? Date.now() / 1000 : run.started + run.duration)) - run.started;
  replace($("#head"),
    el("h1", {}, el("a", { class: "crumb", href: "/", text: run.workflow }), " › ",
      el("span", { class: "mono", text: run.id })),
    el("span", { class: `badge state-${run.state}`, id: "run-state", "data-state": run.state, text: label(run.state) }),
    el("span", { class: "meta" },
      el("span", { text: `started ${time(run.started)}` }),
      el("span", { id: "run-duration", text: `${running ? "running for" : "took"} ${duration(dur)}` }),
      run.resumed ? el("span", { text: `resumed ${run.resumed}×` }) : null,
      run.sim ? el("span", { text: "simulated AWS" }) : null,
      run.reason ? el("span", { text: run.reason }) : null),
    el("span", { class: "spacer" }),
    canOperate && run.actions.cancel ? el("button", {
      type: "button", class: "danger", id: "cancel", text: "Cancel run",
      on: { click: cancelRun },
    }) : null);
  const keys = Object.keys(run.params).sort();
  const items = [];
  for (const k of keys) {
    const v = run.params[k];
    items.push(el("dt", { text: k }), el("dd", { text: typeof v === "string" ? v : JSON.stringify(v) }));
  }
  for (const k of run.secret_params) items.push(el("dt", { text: k }), el("dd", { class: "muted", text: "secret (not kept)" }));
  replace($("#params"), items.length ? el("details", { class: "params" },
    el("summary", { text: `${items.length / 2} parameters` }), el("dl", {}, items)) : null);
}

async function cancelRun(ev) {
  ev.target.disabled = true;
  try {
    await post(`/api/v1/runs/${enc(id)}/cancel`);
    flash("Cancelling: running tasks are stopped, cleanup tasks run.");
  } catch (e) {
    flash(e.message, true);
    ev.target.disabled = false;
  }
}

async function retryTask(name, force) {
  try {
    await post(`/api/v1/runs/${enc(id)}/retry`, { task: name, force: Boolean(force) });
    flash(`Retrying ${name} and everything downstream of it.`);
    follow();
  } catch (e) {
    if (e instanceof ApiError && e.status === 409 && /changed since/.test(e.message) && !force) {
      if (confirm(`${e.message}\n\nRun the changed workflow file?`)) return retryTask(name, true);
    }
    flash(e.message, true);
  }
}

function renderTask(newTask) {
  const t = taskOf(selected);
  const pane = $("#task");
  if (!t) { replace(pane, el("p", { class: "muted", text: "Select a task in the graph." })); return; }
  const canOperate = who && who.role === "operator";
  const last = t.attempt_list[t.attempt_list.length - 1];
  replace($("#task-info"),
    el("div", { class: "task-title" },
      el("h2", { text: t.name }),
      el("span", { class: `badge state-${t.state}`, id: "task-state", "data-state": t.state, text: label(t.state) }),
      t.cleanup ? el("span", { class: "badge", text: "cleanup" }) : null,
      el("span", { class: "spacer" }),
      canOperate ? el("button", {
        type: "button", id: "retry", class: t.state === "failed" ? "primary" : "",
        disabled: !run.actions.retry,
        title: run.actions.retry ? `run ${t.name} and everything downstream of it again`
          : "the run is still running",
        text: "Retry from here", on: { click: () => retryTask(t.name) },
      }) : null),
    el("div", { class: "facts" },
      el("span", {}, "attempts ", el("b", { text: String(t.attempts || 0) })),
      el("span", {}, "duration ", el("b", { text: t.duration !== null ? duration(t.duration)
        : (last && !last.finished ? duration(Date.now() / 1000 - last.started) : "-") })),
      t.started ? el("span", {}, "started ", el("b", { text: time(t.started) })) : null,
      t.progress && t.progress.pct !== null ? el("span", {}, "progress ", el("b", { text: `${t.progress.pct}%` })) : null,
      t.progress && t.progress.msg ? el("span", { text: t.progress.msg }) : null),
    t.error ? [el("h3", { text: "Error" }),
      el("pre", { class: "error-lines", id: "error-lines", text: t.error.lines.join("\n") })] : null,
    t.history.length > (t.state === "failed" ? 1 : 0) ? el("details", {},
      el("summary", { class: "muted", text: `${t.history.length} failed attempt(s)` }),
      t.history.map((h) => [el("h3", { text: `attempt ${h.attempt}${h.delay ? `, retried after ${duration(h.delay)}` : ""}` }),
        el("pre", { class: "error-lines", text: h.error ? h.error.lines.join("\n") : "" })])) : null,
    t.result !== null ? [el("h3", { text: "Result" }),
      el("pre", { class: "result", text: JSON.stringify(t.result, null, 2) })] : null);
  // the attempt picker of the log: all attempts, or one
  const sel = $("#log-attempt");
  const n = Math.max(1, t.attempts || 0);
  if (newTask || sel.options.length !== n + 1) {
    replace(sel, el("option", { value: "", text: "all attempts" }),
      Array.from({ length: n }, (_, i) => el("option", { value: String(i + 1), text: `attempt ${i + 1}` })));
    sel.value = logAttempt ? String(logAttempt) : "";
  }
  if (newTask) logs.show(t.name, logAttempt);
}

function renderGantt() {
  if (!run) return;
  drawGantt($("#gantt"), run, selected, pick, Date.now() / 1000);
}

function update(r) {
  const first = run === null;
  const wasRunning = run && run.state === "running";
  run = r;
  renderHead();
  if (graph) graph.update(Object.fromEntries(run.tasks.map((t) => [t.name, t])));
  const follow = !first && !pinned ? interesting() : null;
  if (first) select(chooseDefault());
  else if (follow && follow !== selected) select(follow);
  else { renderTask(false); renderGantt(); }
  document.title = `${label(run.state)} · ${run.workflow} ${run.id} · flowrun`;
  // the log of a task that is running again (a retry) starts over
  if (!wasRunning && run.state === "running" && selected) logs.show(selected, logAttempt, true);
}

function follow() {
  if (events) events.close();
  events = stream(`/api/v1/runs/${enc(id)}/events`, {
    open: () => live(true),
    error: () => live(false),
    run: (r) => update(r),
    delta: (d) => {
      if (!run) return;
      const changed = new Map(d.tasks.map((t) => [t.name, t]));
      update(Object.assign({}, d.run, { tasks: run.tasks.map((t) => changed.get(t.name) || t) }));
    },
    end: () => live(false),
  });
}

async function start() {
  who = await header("runs");
  replace(main,
    el("div", { class: "run-head", id: "head" }, el("h1", { class: "muted", text: id })),
    el("div", { id: "params" }),
    el("div", { id: "flash" }),
    el("section", { class: "card" }, el("h2", { text: "Graph" }),
      el("div", { class: "graph", id: "graph" }, el("p", { class: "muted", text: "Laying out…" }))),
    el("div", { class: "run-body" },
      el("section", { class: "card" }, el("h2", { text: "Timeline" }), el("div", { class: "gantt", id: "gantt" })),
      el("section", { class: "card task-pane", id: "task" },
        el("div", { id: "task-info" }),
        el("h3", { text: "Log" }),
        el("div", { class: "log-tools" },
          el("label", { for: "log-attempt", text: "Show" }),
          el("select", { id: "log-attempt", on: { change: (ev) => {
            logAttempt = ev.target.value ? Number(ev.target.value) : null;
            logs.show(selected, logAttempt);
          } } }),
          el("span", { class: "muted", id: "log-status" })),
        el("div", { class: "log", id: "log", tabindex: "0", role: "log", "aria-live": "off",
          "aria-label": "log lines of the selected task" }))));
  logs = new LogView($("#log"), id, $("#log-status"));
  let lay, r;
  try {
    [lay, r] = await Promise.all([get(`/api/v1/runs/${enc(id)}/graph`), get(`/api/v1/runs/${enc(id)}`)]);
  } catch (e) {
    replace(main, el("div", { class: "notice error", text: `Cannot show run ${id}: ${e.message}` }));
    return;
  }
  graph = drawGraph($("#graph"), lay, pick);
  update(r);
  follow();
  window.addEventListener("resize", renderGantt);
  window.addEventListener("hashchange", () => {
    const h = new URLSearchParams(location.hash.slice(1)).get("task");
    if (h && h !== selected && taskOf(h)) pick(h);
  });
  // durations of a running run move on between events
  setInterval(() => {
    if (run && run.state === "running") {
      const d = $("#run-duration");
      if (d) d.textContent = `running for ${duration(Date.now() / 1000 - run.started)}`;
      renderGantt();
    }
  }, 1000);
}

start();
