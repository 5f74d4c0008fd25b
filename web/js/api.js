// api.js — the JSON API as the pages use it: fetch with the session cookie, errors as
// exceptions carrying the server's message, a 401 sends the browser to the login page.
// State-changing calls are POSTs with a JSON body (the server refuses anything else).

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function toLogin() {
  const next = location.pathname + location.search + location.hash;
  location.assign("/login?next=" + encodeURIComponent(next));
}

async function call(method, path, body) {
  const opts = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  let data = null;
  const type = r.headers.get("content-type") || "";
  if (type.startsWith("application/json")) data = await r.json();
  if (r.status === 401) { toLogin(); throw new ApiError(401, data); }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body === undefined ? {} : body);

// stream(path, handlers): an EventSource with named handlers {run, log, end, runs, open,
// error}; returns it (close() to stop). A stream that ended ("end") is not reopened.
export function stream(path, handlers) {
  const es = new EventSource(path);
  for (const [name, fn] of Object.entries(handlers)) {
    if (name === "open" || name === "error") es.addEventListener(name, fn);
    else es.addEventListener(name, (ev) => fn(JSON.parse(ev.data), ev));
  }
  es.addEventListener("end", () => es.close());
  return es;
}

export const enc = encodeURIComponent;

let meCache = null;
export async function me() {
  if (!meCache) meCache = get("/api/v1/me");
  return meCache;
}
