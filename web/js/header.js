// header.js — the top bar every page shares: who is logged in (and with which role), the
// log-out button (a POST form), the current page marked in the navigation.
import { el, replace, $ } from "./dom.js";
import { me } from "./api.js";

export async function header(current) {
  for (const a of document.querySelectorAll(".top nav a")) {
    if (a.dataset.page === current) a.setAttribute("aria-current", "page");
  }
  let who = null;
  try { who = await me(); } catch (e) { return null; }
  const box = $("#who");
  if (box) {
    replace(box,
      el("span", { class: "live-dot", id: "live", title: "live updates" }),
      who.open ? "no tokens (loopback)" : who.name, " · ",
      el("span", { class: "role", text: who.role }),
      who.sim ? " · simulated AWS" : "");
  }
  const out = $("#logout");
  if (out && who.via === "cookie") out.hidden = false;
  document.body.dataset.role = who.role;
  return who;
}

export function live(on) {
  const d = $("#live");
  if (d) d.classList.toggle("on", on);
}
