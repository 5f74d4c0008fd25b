// graph.js — a run's DAG: the layout is Graphviz's (the server runs `dot -Tplain` and sends the
// positions), drawn here as SVG elements made with the DOM API (names as text nodes), coloured
// by state through CSS classes, so a state change only changes a class.
import { svg } from "./dom.js";
import { label } from "./fmt.js";

const PAD = 8;

function splinePath(points) {
  if (points.length === 0) return "";
  let d = `M${points[0][0].toFixed(1)},${points[0][1].toFixed(1)}`;
  // Graphviz's B-spline: the first point, then three control points per cubic segment
  for (let i = 1; i + 2 < points.length; i += 3) {
    const [a, b, c] = [points[i], points[i + 1], points[i + 2]];
    d += ` C${a[0].toFixed(1)},${a[1].toFixed(1)} ${b[0].toFixed(1)},${b[1].toFixed(1)} ` +
      `${c[0].toFixed(1)},${c[1].toFixed(1)}`;
  }
  return d;
}

// draw(container, layout, onSelect) -> {update(tasksByName), select(name)}
export function draw(container, lay, onSelect) {
  const w = lay.width + 2 * PAD, h = lay.height + 2 * PAD;
  const root = svg("svg", {
    viewBox: `${-PAD} ${-PAD} ${w} ${h}`, width: Math.round(w), height: Math.round(h),
    role: "group", "aria-label": "the run's tasks and their dependencies",
  });
  const defs = svg("defs", {}, svg("marker", {
    id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7",
    orient: "auto-start-reverse",
  }, svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" })));
  root.append(defs);
  for (const e of lay.edges) {
    root.append(svg("path", { class: `edge${e.dashed ? " dashed" : ""}`, d: splinePath(e.points),
      "marker-end": "url(#arrow)" }));
  }
  const nodes = new Map();
  for (const n of lay.nodes) {
    const g = svg("g", {
      class: `node state-pending${n.cleanup ? " cleanup" : ""}`, tabindex: "0", role: "button",
      "data-task": n.name, "aria-label": `task ${n.name}`,
    });
    const x = n.x - n.w / 2, y = n.y - n.h / 2;
    g.append(svg("rect", { x: x.toFixed(1), y: y.toFixed(1), width: n.w.toFixed(1),
      height: n.h.toFixed(1), rx: "6" }));
    const title = svg("title", { text: n.name });
    g.append(title);
    const sub = n.cleanup ? "cleanup" : (n.trigger || null);
    g.append(svg("text", { x: n.x.toFixed(1), y: (n.y + (sub ? -1 : 4)).toFixed(1),
      "text-anchor": "middle", text: n.name }));
    if (sub) {
      g.append(svg("text", { class: "sub", x: n.x.toFixed(1), y: (n.y + 11).toFixed(1),
        "text-anchor": "middle", text: sub }));
    }
    const pick = () => onSelect(n.name);
    g.addEventListener("click", pick);
    g.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); pick(); }
    });
    root.append(g);
    nodes.set(n.name, { g, title, cleanup: n.cleanup });
  }
  container.replaceChildren(root);
  return {
    update(tasks) {
      for (const [name, t] of Object.entries(tasks)) {
        const n = nodes.get(name);
        if (!n) continue;
        for (const c of [...n.g.classList]) if (c.startsWith("state-")) n.g.classList.remove(c);
        n.g.classList.add(`state-${t.state}`);
        n.g.setAttribute("data-state", t.state);
        n.g.setAttribute("aria-label", `task ${name}: ${label(t.state)}`);
        n.title.textContent = `${name}: ${label(t.state)}${t.attempts > 1 ? ` (${t.attempts} attempts)` : ""}`;
      }
    },
    select(name) {
      for (const [k, n] of nodes) n.g.classList.toggle("selected", k === name);
    },
  };
}
