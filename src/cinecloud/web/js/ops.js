// The "Ops" view, for admin keys: the queue by model and priority, the workers and
// what they run, stage-latency percentiles and throughput over time (uPlot), the
// autoscaler's decisions when the server has an autoscaler, and GPU time per video.

import uPlot from "../vendor/uplot/uPlot.esm.js";
import { el, fill, formatCost, seconds } from "./util.js";

const REFRESH_MS = 3000;
const BUCKETS = 30;
const COLORS = ["#5aa9ff", "#46c37b", "#e6b450", "#ef6060", "#b77cff", "#4fd1c5", "#f08cc0", "#c0c6cf"];

export class OpsView {
  constructor(api) {
    this.api = api;
    this.timer = null;
    this.charts = {};
    document.getElementById("ops-quantile").addEventListener("change", () => this.drawLatency());
    document.getElementById("ops-window").addEventListener("change", () => this.refresh());
  }

  async show() {
    this.hide();
    await this.refresh();
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  hide() {
    clearInterval(this.timer);
    this.timer = null;
  }

  async refresh() {
    const error = document.getElementById("ops-error");
    const windowS = document.getElementById("ops-window").value;
    try {
      this.overview = await this.api.get(`/v1/admin/overview?window_s=${windowS}&buckets=${BUCKETS}`);
      error.textContent = "";
    } catch (err) {
      error.textContent = `${err.code}: ${err.message}`;
      return;
    }
    const o = this.overview;
    this.renderTotals(o);
    this.renderQueue(o);
    this.renderWorkers(o);
    this.drawLatency();
    this.drawThroughput();
    this.renderPerVideo(o);
    await this.renderAutoscaler();
  }

  renderTotals(o) {
    const t = o.totals;
    const rate = o.latency.buckets.reduce((n, b) => n + b.completed, 0) / (o.latency.window_s / 60);
    fill(document.getElementById("ops-totals"), el("div", { class: "totals" },
      ...[["queued", t.queued], ["in progress", t.in_progress], ["workers", t.workers],
        ["completed", t.completed], ["per minute", rate.toFixed(2)]]
        .map(([label, n]) => el("div", { dataset: { total: label } }, el("b", {}, n), el("span", {}, label)))));
  }

  renderQueue(o) {
    const running = new Map(o.in_progress.map((r) => [r.model, r.jobs]));
    const rows = o.queue.map((g) => el("tr", { dataset: { model: g.model, priority: g.priority } },
      el("td", {}, g.model), el("td", { class: "num" }, g.priority), el("td", { class: "num" }, g.queued),
      el("td", { class: "num" }, seconds(g.oldest_wait_s, 1))));
    for (const [model, n] of running) {
      if (!o.queue.some((g) => g.model === model)) {
        rows.push(el("tr", { dataset: { model } }, el("td", {}, model), el("td", {}, "–"), el("td", { class: "num" }, 0), el("td", {}, "–")));
      }
    }
    const table = el("table", {},
      el("tr", {}, el("th", {}, "model"), el("th", {}, "priority"), el("th", {}, "queued"), el("th", {}, "oldest wait")),
      rows.length ? rows : el("tr", {}, el("td", { colspan: 4, class: "muted" }, "The queue is empty.")));
    const runningLine = o.in_progress.length
      ? el("p", { class: "muted" }, "running: ", o.in_progress.map((r) => `${r.model} ×${r.jobs}`).join(", "))
      : null;
    fill(document.getElementById("ops-queue"), table, runningLine);
  }

  renderWorkers(o) {
    const rows = o.workers.map((w) => el("tr", { dataset: { workerId: w.id, workerName: w.name } },
      el("td", {}, el("b", {}, w.name), el("div", { class: "muted" }, `${w.status} · seen ${seconds(w.last_seen_s, 0)} ago`)),
      el("td", {}, gpuText(w)),
      el("td", {}, w.models.join(", ")),
      el("td", {}, el("span", { class: "meter", title: "share of the window it ran jobs" },
        el("i", { style: `width:${Math.round(w.busy * 100)}%` })), ` ${Math.round(w.busy * 100)}%`),
      el("td", {}, w.jobs.length ? w.jobs.map((j) => el("div", {}, el("code", {}, j.id), " ",
        `${j.stage ?? "starting"}${j.total_steps ? ` ${j.step ?? 0}/${j.total_steps}` : ""}`,
        j.eta_s ? ` · ETA ${seconds(j.eta_s, 1)}` : "")) : el("span", { class: "muted" }, "idle"))));
    fill(document.getElementById("ops-workers"), el("table", {},
      el("tr", {}, ...["worker", "device", "models", "busy", "current job"].map((h) => el("th", {}, h))),
      rows.length ? rows : el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No worker seen in the last minute."))));
  }

  chart(id, series, data) {
    const node = document.getElementById(id);
    const width = Math.max(320, node.clientWidth || 600);
    const key = `${id}:${series.map((s) => s.label).join(",")}`;
    if (this.charts[id]?.key !== key) {
      this.charts[id]?.plot.destroy();
      const opts = { width, height: 220, series: [{}, ...series], axes: [{ stroke: "#9aa1ab" }, { stroke: "#9aa1ab" }],
        scales: { x: { time: true } }, legend: { live: false } };
      this.charts[id] = { key, plot: new uPlot(opts, data, node) };
    } else {
      this.charts[id].plot.setData(data);
    }
  }

  drawLatency() {
    const o = this.overview;
    if (!o) return;
    const q = document.getElementById("ops-quantile").value;
    const buckets = o.latency.buckets;
    const stages = o.latency.stages.filter((s) => buckets.some((b) => b.stages[s]));
    const xs = buckets.map((b) => b.end);
    const ys = stages.map((s) => buckets.map((b) => b.stages[s]?.[q] ?? null));
    const series = stages.map((s, i) => ({ label: `${s} ${q} (s)`, stroke: COLORS[i % COLORS.length], spanGaps: true, points: { show: true } }));
    this.chart("ops-latency", series, [xs, ...ys]);
  }

  drawThroughput() {
    const buckets = this.overview.latency.buckets;
    this.chart("ops-throughput", [{ label: "videos/min", stroke: COLORS[1], fill: "#46c37b22" }],
      [buckets.map((b) => b.end), buckets.map((b) => b.per_minute)]);
  }

  renderPerVideo(o) {
    // A cost column only where the server reports costs (a cost ledger); GPU time always.
    const withCost = o.per_video.some((m) => m.cost_mean !== undefined);
    const heads = ["model", "videos", "GPU-s mean", "GPU-s p95", ...(withCost ? ["cost mean"] : [])];
    const rows = o.per_video.map((m) => el("tr", { dataset: { model: m.model } },
      el("td", {}, m.model), el("td", { class: "num" }, m.videos),
      el("td", { class: "num" }, seconds(m.gpu_seconds_mean)), el("td", { class: "num" }, seconds(m.gpu_seconds_p95)),
      withCost ? el("td", { class: "num" }, formatCost(m.cost_mean) ?? "–") : null));
    fill(document.getElementById("ops-cost"), el("table", {},
      el("tr", {}, heads.map((h) => el("th", {}, h))),
      rows.length ? rows : el("tr", {}, el("td", { colspan: heads.length, class: "muted" }, "No video finished in this window."))));
  }

  async renderAutoscaler() {
    const box = document.getElementById("ops-autoscaler");
    let body;
    try {
      body = await this.api.get("/v1/admin/autoscaler");
    } catch (err) {
      fill(box, off(err.status === 404 ? "" : ` (${err.code})`));
      return;
    }
    if (body.enabled === false) {
      fill(box, off(""));
      return;
    }
    const rows = Array.isArray(body) ? body : body.decisions ?? body.data ?? [];
    const pools = (body.pools ?? []).map((d) => el("div", { dataset: { pool: d.pool } },
      el("b", {}, d.pool), `: ${d.desired} worker(s)`, d.reason ? ` · ${d.reason}` : ""));
    const head = el("p", { class: "muted" },
      `on${body.launcher ? ` (${body.launcher} launcher)` : ""}`, pools);
    if (!rows.length) {
      fill(box, el("div", { dataset: { autoscaler: "on" } }, head, el("p", { class: "muted" }, "No decision yet.")));
      return;
    }
    const decision = "pool" in rows[0] && "desired" in rows[0];
    const keys = decision ? ["at", "pool", "change", "reason", "queued", "workers"] : Object.keys(rows[0]).slice(0, 6);
    const value = (r, k) => {
      if (!decision) return r[k];
      if (k === "change") return `${r.previous ?? "?"} → ${r.desired}`;
      if (k === "queued" || k === "workers") return r.observed?.[k];
      return r[k];
    };
    fill(box, el("div", { dataset: { autoscaler: "on" } }, head, el("table", {},
      el("tr", {}, keys.map((k) => el("th", {}, k))),
      rows.slice(0, 12).map((r) => el("tr", {}, keys.map((k) => el("td", {}, cell(value(r, k)))))))));
  }
}

function off(note) {
  return el("p", { class: "muted", dataset: { autoscaler: "off" } }, `autoscaler off${note}`);
}

function gpuText(w) {
  if (!w.gpus?.length) return w.device || "cpu";
  return w.gpus.map((g) => {
    const mem = g.memory_total ? ` ${(g.memory_total / 2 ** 30).toFixed(0)} GiB` : "";
    const util = typeof g.utilization === "number" ? ` · ${Math.round(g.utilization)}%` : "";
    return `${g.name}${mem}${util}`;
  }).join(", ") + (w.width > 1 ? ` (${w.width} ranks)` : "");
}

function cell(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number" && value > 1e9) return new Date(value * 1000).toLocaleTimeString();
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}
