// grid.js — the home page: every workflow with its recent runs as a grid (tasks down, runs
// across, the newest on the right, each cell a task coloured by state, as Airflow's grid view),
// with its trigger and pause buttons. Kept live by the server's /api/v1/events stream.
import { el, replace, $ } from "./dom.js";
import { get, post, stream, enc, ApiError } from "./api.js";
import { header, live } from "./header.js";
import { duration, time, ago, until, label } from "./fmt.js";

let who = null;
const main = $("#main");

function runColumn(r, maxDur) {
  const h = maxDur > 0 ? Math.max(8, Math.round(40 * (r.duration || 0) / maxDur)) : 8;
  const bar = el("span", { class: "bar" });
  bar.style.height = `${h}px`;
  return el("a", {
    class: `col state-${r.state}`, href: `/runs/${enc(r.id)}`,
    title: `${r.id}\n${label(r.state)} · ${time(r.started)} · ${duration(r.duration)}`,
    "aria-label": `run ${r.id}: ${label(r.state)}, started ${time(r.started)}`,
  }, bar);
}

function workflowCard(w) {
  const runs = w.runs;
  const last = runs[runs.length - 1];
  const canOperate = who && who.role === "operator";
  const head = el("div", { class: "card-head" },
    el("h2", { text: w.name }),
    last ? el("span", { class: `badge state-${last.state}`, text: label(last.state) }) : null,
    last ? el("span", { class: "muted", text: `last run ${ago(last.started)}` }) : null,
    w.paused ? el("span", { class: "badge", text: "paused" }) : null,
    w.schedule ? el("span", {
      class: "muted schedule", title: `scheduled: ${w.schedule.expr} in ${w.schedule.timezone}`,
      text: `${w.schedule.expr} (${w.schedule.timezone})` +
        (w.schedule.next_due && !w.paused ? ` · next ${until(w.schedule.next_due)}` : ""),
    }) : null,
    el("span", { class: "spacer" }),
    canOperate && !w.error ? el("a", { class: "button primary", href: `/workflows/${enc(w.name)}/trigger`,
      text: "Trigger run" }) : null,
    canOperate ? el("button", {
      type: "button", class: "small", text: w.paused ? "Unpause" : "Pause",
      title: "pause or unpause the workflow's schedule",
      on: { click: async (ev) => {
        ev.target.disabled = true;
        try { await post(`/api/v1/workflows/${enc(w.name)}/${w.paused ? "unpause" : "pause"}`); }
        finally { refresh(); }
      } },
    }) : null);
  const body = [];
  if (w.error) body.push(el("div", { class: "notice error" }, "This workflow does not load:",
    el("pre", { text: w.error })));
  if (runs.length === 0) {
    body.push(el("p", { class: "muted", text: "No runs yet." }));
  } else {
    const maxDur = Math.max(...runs.map((r) => r.duration || 0));
    const headRow = el("tr", {}, el("th", {}), runs.map((r) => el("th", {}, runColumn(r, maxDur))));
    const rows = w.tasks.map((t) => el("tr", {},
      el("th", { class: "task", scope: "row", text: t }),
      runs.map((r) => {
        const s = r.tasks[t];
        return el("td", {}, s
          ? el("a", { class: `cell state-${s}`, href: `/runs/${enc(r.id)}#task=${enc(t)}`,
            tabindex: "-1", title: `${t}: ${label(s)}\nrun ${r.id}` })
          : el("span", { class: "cell none", title: `${t}: not in run ${r.id}` }));
      })));
    const recent = runs.slice(-6).reverse();
    body.push(el("div", { class: "card-body" },
      el("div", { class: "grid-wrap" },
        el("table", { class: "grid", "aria-label": `recent runs of ${w.name}` },
          el("thead", {}, headRow), el("tbody", {}, rows))),
      el("div", { class: "recent" },
        el("h3", { text: "Latest runs" }),
        el("table", { class: "list compact" },
          el("tbody", {}, recent.map((r) => el("tr", {},
            el("td", {}, el("a", { class: "mono", href: `/runs/${enc(r.id)}`, text: r.id })),
            el("td", {}, el("span", { class: `badge state-${r.state}`, text: label(r.state) })),
            el("td", { class: "muted", text: ago(r.started) }),
            el("td", { class: "muted", text: duration(r.duration) }))))),
        el("a", { href: `/runs?workflow=${enc(w.name)}`, text: "all runs of " + w.name }))));
  }
  return el("section", { class: "card", "data-workflow": w.name }, head, body);
}

let pending = false;
async function refresh() {
  if (pending) return;
  pending = true;
  try {
    const g = await get("/api/v1/grid?limit=25");
    const cards = g.workflows.map(workflowCard);
    if (cards.length === 0) {
      cards.push(el("div", { class: "card" }, el("p", { class: "muted",
        text: "No workflows: start the server with --workflows DIR (a directory of workflow files)." })));
    }
    replace($("#workflows"), cards);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) {
      replace($("#workflows"), el("div", { class: "notice error", text: `Cannot load the grid: ${e.message}` }));
    }
  } finally {
    pending = false;
  }
}

let timer = null;
function soon() {
  if (timer) return;
  timer = setTimeout(() => { timer = null; refresh(); }, 400);
}

async function start() {
  who = await header("grid");
  replace(main, el("div", { id: "workflows" }, el("p", { class: "muted", text: "Loading…" })));
  await refresh();
  stream("/api/v1/events", {
    open: () => live(true),
    error: () => live(false),
    runs: () => soon(),
  });
}

start();
