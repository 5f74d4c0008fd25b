// trigger.js — the form that starts a run, made from the workflow's parameters (their types,
// docs, defaults and required flags). Only the fields changed from what the server would use
// anyway are sent, as `--var NAME=VALUE` would give them; the server validates them exactly as
// the command line does and a bad value is shown next to its field.
import { el, replace, $ } from "./dom.js";
import { get, post, enc, ApiError } from "./api.js";
import { header } from "./header.js";

const name = decodeURIComponent(location.pathname.replace(/^\/workflows\//, "").replace(/\/trigger$/, ""));
const main = $("#main");

function shown(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function field(p) {
  const id = `p-${p.name}`;
  const initial = shown(p.value);
  let input;
  if (p.type === "boolean") {
    input = el("select", { id, name: p.name },
      el("option", { value: "true", text: "true", selected: initial === "true" }),
      el("option", { value: "false", text: "false", selected: initial !== "true" }));
  } else if (p.type === "json") {
    input = el("textarea", { id, name: p.name, rows: "2", spellcheck: "false" });
    input.value = initial;
  } else {
    input = el("input", {
      id, name: p.name, type: p.secret ? "password" : "text", value: p.secret ? "" : initial,
      autocomplete: "off", spellcheck: "false",
      inputmode: p.type === "integer" ? "numeric" : (p.type === "number" ? "decimal" : null),
      placeholder: p.secret ? "secret: leave empty to use the server's" : (p.required && !p.has_value ? "required" : ""),
      "aria-required": p.required && !p.has_value ? "true" : null,
    });
  }
  input.dataset.initial = p.secret ? "" : (p.type === "boolean" ? (initial === "true" ? "true" : "false") : initial);
  return [
    el("div", { class: "field-label" },
      el("label", { for: id, text: p.name }),
      p.required ? el("span", { class: "req", title: "required", text: "*" }) : null,
      el("span", { class: "tag", text: `${p.type}${p.secret ? ", secret" : ""}${p.source && p.source !== "default" ? `, from ${p.source}` : ""}` })),
    el("div", {}, input,
      p.doc ? el("div", { class: "doc", text: p.doc }) : null,
      el("div", { class: "field-error", id: `${id}-error`, role: "alert" })),
  ];
}

async function submit(ev) {
  ev.preventDefault();
  const form = ev.target;
  const params = {};
  for (const input of form.querySelectorAll("[name]")) {
    input.classList.remove("invalid");
    const errBox = $(`#${CSS.escape(input.id)}-error`);
    if (errBox) errBox.textContent = "";
    if (input.value !== input.dataset.initial) params[input.name] = input.value;
  }
  replace($("#problems"));
  const button = $("#start");
  button.disabled = true;
  try {
    const r = await post(`/api/v1/workflows/${enc(name)}/runs`, { params });
    location.assign(r.url);
  } catch (e) {
    button.disabled = false;
    const problems = (e instanceof ApiError && e.body && e.body.error.problems) || [];
    const loose = [];
    for (const p of problems) {
      const input = p.param && form.querySelector(`[name="${CSS.escape(p.param)}"]`);
      if (input) {
        input.classList.add("invalid");
        $(`#${CSS.escape(input.id)}-error`).textContent = p.message;
      } else loose.push(p.message);
    }
    replace($("#problems"), el("div", { class: "notice error", role: "alert" },
      el("div", { text: e.message }), loose.length ? el("pre", { text: loose.join("\n") }) : null));
  }
}

async function start() {
  const who = await header("grid");
  let wf;
  try { wf = await get(`/api/v1/workflows/${enc(name)}`); } catch (e) {
    replace(main, el("div", { class: "notice error", text: e.message }));
    return;
  }
  document.title = `Trigger ${wf.name} · flowrun`;
  const canOperate = who && who.role === "operator";
  replace(main,
    el("div", { class: "card" },
      el("div", { class: "card-head" }, el("h1", { text: `Trigger ${wf.name}` }),
        el("span", { class: "muted", text: `${wf.tasks} tasks · ${wf.file}` })),
      wf.doc ? el("p", { class: "muted", text: wf.doc }) : null,
      canOperate ? null : el("div", { class: "notice error", text: "Starting a run needs the operator role." }),
      el("div", { id: "problems" }),
      el("form", { id: "trigger-form", on: { submit } },
        el("div", { class: "form-grid" }, wf.params.map(field)),
        wf.params.length === 0 ? el("p", { class: "muted", text: "This workflow has no parameters." }) : null,
        el("div", { class: "form-actions" },
          el("button", { type: "submit", class: "primary", id: "start", text: "Start run", disabled: !canOperate }),
          el("a", { class: "button", href: "/", text: "Back" })))));
}

start();
