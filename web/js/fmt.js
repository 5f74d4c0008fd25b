// fmt.js — times and durations as the terminal view prints them.

export function duration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "-";
  if (s < 1) return `${Math.round(s * 1000)}ms`;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)}s`;
  const m = Math.floor(s / 60), sec = Math.round(s % 60);
  if (m < 60) return `${m}m${String(sec).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  return `${h}h${String(m % 60).padStart(2, "0")}m`;
}

const pad = (n) => String(n).padStart(2, "0");

// "2026-01-02 03:04:05" in the browser's time zone
export function time(epoch) {
  if (!epoch) return "-";
  const d = new Date(epoch * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function clock(epoch) {
  const d = new Date(epoch * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// until(epoch): how long until a time ahead ("in 5 min"; "due now" once it has come).
export function until(epoch) {
  if (!epoch) return "";
  const s = epoch - Date.now() / 1000;
  if (s < 60) return "due now";
  if (s < 3600) return `in ${Math.floor(s / 60)} min`;
  if (s < 86400) return `in ${Math.floor(s / 3600)} h`;
  return `in ${Math.floor(s / 86400)} d`;
}

export function ago(epoch) {
  if (!epoch) return "";
  const s = Date.now() / 1000 - epoch;
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export const STATES = ["queued", "running", "up_for_retry", "pending", "success", "failed",
  "upstream_failed", "skipped", "cancelled", "interrupted", "damaged"];

export const LABEL = {
  up_for_retry: "up for retry", upstream_failed: "upstream failed",
};
export const label = (s) => LABEL[s] || s;
