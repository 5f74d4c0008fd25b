// runs.js — every run, newest first, filtered by workflow, state and time, a page at a time
// (the API's cursor).
import { el, replace, $ } from "./dom.js";
import { get, enc } from "./api.js";
import { header } from "./header.js";
import { duration, time, label } from "./fmt.js";

const main = $("#main");
const STATES = ["queued", "running", "interrupted", "success", "failed", "cancelled", "damaged"];
let cursor = null;

function query() {
  const f = new URLSearchParams(location.search);
  const q = new URLSearchParams({ limit: "50" });
  for (const k of ["workflow", "state", "since", "before"]) if (f.get(k)) q.set(k, f.get(k));
  return q;
}

function row(r) {
  return el("tr", {},
    el("td", {}, el("a", { class: "mono", href: `/runs/${enc(r.id)}`, text: r.id })),
    el("td", { text: r.workflow || "?" }),
    el("td", {}, el("span", { class: `badge state-${r.state}`, text: label(r.state) })),
    el("td", { text: time(r.started) }),
    el("td", { text: duration(r.duration) }),
    el("td", { text: `${r.tasks_succeeded}/${r.tasks_total}` }),
    el("td", { class: "reason", text: r.reason || r.error || "" }));
}

async function more(reset) {
  const q = query();
  if (!reset && cursor) q.set("cursor", cursor);
  const page = await get(`/api/v1/runs?${q}`);
  const body = $("#rows");
  if (reset) body.replaceChildren();
  for (const r of page.runs) body.append(row(r));
  if (reset && page.runs.length === 0) body.append(el("tr", {}, el("td", { colspan: "7", class: "muted", text: "No runs match." })));
  cursor = page.next;
  $("#more").hidden = !cursor;
}

async function start() {
  await header("runs");
  const f = new URLSearchParams(location.search);
  let workflows = [];
  try { workflows = (await get("/api/v1/workflows")).workflows.map((w) => w.name); } catch (e) { /* shown below */ }
  const dateVal = (k) => (f.get(k) || "").slice(0, 10);
  replace(main,
    el("form", { class: "filters", method: "get", action: "/runs" },
      el("div", {}, el("label", { for: "f-workflow", text: "Workflow" }),
        el("select", { id: "f-workflow", name: "workflow" }, el("option", { value: "", text: "all" }),
          workflows.map((w) => el("option", { value: w, text: w, selected: f.get("workflow") === w })))),
      el("div", {}, el("label", { for: "f-state", text: "State" }),
        el("select", { id: "f-state", name: "state" }, el("option", { value: "", text: "any" }),
          STATES.map((s) => el("option", { value: s, text: label(s), selected: f.get("state") === s })))),
      el("div", {}, el("label", { for: "f-since", text: "Started from" }),
        el("input", { id: "f-since", name: "since", type: "date", value: dateVal("since") })),
      el("div", {}, el("label", { for: "f-before", text: "Started before" }),
        el("input", { id: "f-before", name: "before", type: "date", value: dateVal("before") })),
      el("div", {}, el("button", { type: "submit", class: "primary", text: "Filter" }))),
    el("section", { class: "card" },
      el("table", { class: "list" },
        el("thead", {}, el("tr", {}, ["Run", "Workflow", "State", "Started", "Duration", "Tasks", ""].map((h) => el("th", { text: h })))),
        el("tbody", { id: "rows" })),
      el("p", {}, el("button", { type: "button", id: "more", hidden: true, text: "Older runs", on: { click: () => more(false) } }))));
  try { await more(true); } catch (e) {
    replace($("#rows"), el("tr", {}, el("td", { colspan: "7", class: "notice error", text: e.message })));
  }
}

start();
