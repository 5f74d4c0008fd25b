// dom.js — elements made with the DOM API only. Text always goes in as text (textContent or
// text nodes) and attributes through setAttribute, so a value from a run can never become
// markup: escaping is a property of this module, not a habit of its callers.

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(node, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") node.textContent = String(v);
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else if (k === "dataset") for (const [dk, dv] of Object.entries(v)) node.dataset[dk] = String(dv);
    else if (k === "value" && "value" in node) node.value = String(v);
    else if (k === "checked" || k === "disabled" || k === "selected" || k === "hidden")
      node[k] = Boolean(v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// el("a", {href, class, text, on: {click}}, ...children) -> an HTML element
export function el(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

// svg("rect", {x, y, class}, ...children) -> an SVG element
export function svg(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

// replace(node, ...children): node's children become these
export function replace(node, ...children) {
  node.replaceChildren();
  return fill(node, {}, children);
}

export function $(sel, root = document) { return root.querySelector(sel); }
