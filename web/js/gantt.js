// gantt.js — the timeline of a run's attempts: one row per task (in dependency order), one bar
// per attempt from its start to its end (or now, while it runs), coloured by how it ended.
import { svg } from "./dom.js";
import { duration, clock, label } from "./fmt.js";

const ROW = 20, LABEL_W = 150, AXIS = 22;

export function draw(container, run, selected, onSelect, now) {
  const width = Math.max(360, container.clientWidth || 600);
  const t0 = run.started;
  let t1 = run.finished || now;
  for (const t of run.tasks) for (const a of t.attempt_list) t1 = Math.max(t1, a.finished || now);
  const span = Math.max(1, t1 - t0);
  const plotW = width - LABEL_W - 10;
  const x = (t) => LABEL_W + (plotW * (t - t0)) / span;
  const rows = run.tasks;
  const height = AXIS + rows.length * ROW + 4;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, height, role: "img",
    "aria-label": "timeline of the task attempts" });
  // the axis: about six ticks
  const step = niceStep(span / 6);
  for (let s = 0; s <= span + 1e-9; s += step) {
    const xx = x(t0 + s);
    root.append(svg("line", { class: "tick", x1: xx, x2: xx, y1: AXIS - 4, y2: height }));
    root.append(svg("text", { class: "tick-label", x: xx + 2, y: 12, text: s === 0 ? clock(t0) : `+${duration(s)}` }));
  }
  rows.forEach((t, i) => {
    const y = AXIS + i * ROW;
    const sel = t.name === selected;
    const bg = svg("rect", { class: `row-bg${sel ? " selected" : ""}`, x: 0, y, width, height: ROW });
    const lab = svg("text", { class: `row-label${sel ? " selected" : ""}`, x: LABEL_W - 8, y: y + 14,
      "text-anchor": "end", text: t.name.length > 20 ? t.name.slice(0, 19) + "…" : t.name });
    const pick = () => onSelect(t.name);
    bg.addEventListener("click", pick);
    lab.addEventListener("click", pick);
    root.append(bg, lab);
    for (const a of t.attempt_list) {
      const x0 = x(a.started), x1 = x(a.finished || now);
      const bar = svg("rect", { class: `bar state-${a.state}`, x: x0.toFixed(1), y: y + 4,
        width: Math.max(2, x1 - x0).toFixed(1), height: ROW - 8, rx: 2 });
      bar.append(svg("title", { text: `${t.name} attempt ${a.attempt}: ${label(a.state)}, ` +
        `${duration((a.finished || now) - a.started)}${a.error ? "\n" + a.error : ""}` }));
      bar.addEventListener("click", pick);
      root.append(bar);
    }
  });
  container.replaceChildren(root);
}

function niceStep(s) {
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400];
  for (const v of steps) if (v >= s) return v;
  return 86400 * Math.ceil(s / 86400);
}
