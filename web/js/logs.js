// logs.js — a task's log lines, followed live: an EventSource on the run's logs (SSE, one
// "log" event per batch of lines, "end" once the run is over). Each line is text in its own
// element; a line with markup in it shows that markup as characters.
import { el } from "./dom.js";
import { clock } from "./fmt.js";

const MAX_LINES = 5000;

export class LogView {
  constructor(box, runId, status) {
    this.box = box;
    this.runId = runId;
    this.status = status;
    this.es = null;
    this.key = null;
    this.follow = true;
    box.addEventListener("scroll", () => {
      const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
      this.follow = atEnd;
    });
  }

  // show(task, attempt): the lines of that task (and attempt; null: all attempts)
  show(task, attempt, force) {
    const key = `${task}#${attempt || ""}`;
    if (key === this.key && !force && this.es) return;
    this.close();
    this.key = key;
    this.count = 0;
    this.follow = true;
    this.box.replaceChildren(el("div", { class: "empty", text: "No log lines yet." }));
    const q = new URLSearchParams({ follow: "1" });
    if (task) q.set("task", task);
    if (attempt) q.set("attempt", String(attempt));
    const es = new EventSource(`/api/v1/runs/${encodeURIComponent(this.runId)}/logs?${q}`);
    this.es = es;
    this.setStatus("following");
    es.addEventListener("log", (ev) => this.append(JSON.parse(ev.data), !task));
    es.addEventListener("end", () => { es.close(); this.setStatus("complete"); });
    es.addEventListener("error", () => {
      if (es.readyState === EventSource.CLOSED) this.setStatus("closed");
      else this.setStatus("reconnecting");
    });
  }

  setStatus(s) {
    this.box.dataset.status = s;
    if (this.status) this.status.textContent = s;
  }

  append(lines, withTask) {
    if (this.count === 0) this.box.replaceChildren();
    for (const l of lines) {
      this.box.append(el("div", { class: "line", "data-seq": l.seq },
        el("span", { class: "t", text: clock(l.t) }),
        el("span", { class: "src", text: withTask && l.task ? `${l.task}#${l.attempt}` : `#${l.attempt ?? "-"}` }),
        el("span", { class: "msg", text: l.msg })));
      this.count++;
    }
    while (this.box.childElementCount > MAX_LINES) this.box.firstElementChild.remove();
    if (this.follow) this.box.scrollTop = this.box.scrollHeight;
  }

  close() {
    if (this.es) this.es.close();
    this.es = null;
  }
}
