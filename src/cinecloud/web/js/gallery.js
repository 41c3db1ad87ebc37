// The "Gallery" view: the caller's videos, and one video in detail: the player (HLS
// through hls.js, native HLS where the browser has it, or the MP4), the poster, a
// download link, per-stage timing bars, GPU time and cost, and cancel / delete.

import Hls from "../vendor/hls.js/hls.light.min.mjs";
import { LiveProgress } from "./live.js";
import { ago, el, fill, formatCost, seconds } from "./util.js";

const STAGES = ["queue_wait", "model_load", "text_encode", "denoise", "decode", "render", "upload", "cdn_warm"];

export class GalleryView {
  constructor(api) {
    this.api = api;
    this.list = document.getElementById("videos");
    this.detail = document.getElementById("detail");
    this.selected = null;
    this.hls = null;
    this.live = null;
    document.getElementById("refresh").addEventListener("click", () => this.load());
  }

  hide() {
    this.live?.stop();
    this.detachPlayer();
  }

  async load() {
    const page = await this.api.get("/v1/videos?limit=50&order=desc");
    fill(this.list, page.data.map((v) => this.item(v)));
    if (!page.data.length) fill(this.list, el("li", { class: "muted" }, "No videos yet."));
  }

  item(v) {
    const thumb = v.outputs?.thumbnail
      ? el("img", { src: v.outputs.thumbnail, alt: "" })
      : el("div", { class: "thumb" });
    const li = el("li", { dataset: { videoId: v.id, status: v.status }, class: v.id === this.selected ? "selected" : null },
      thumb,
      el("div", {},
        el("div", { class: "prompt", title: v.prompt }, v.prompt),
        el("div", { class: "meta" }, `${v.status.replace("_", " ")} · ${v.size} · ${ago(v.created_at)}`)));
    li.addEventListener("click", () => this.open(v.id));
    return li;
  }

  async open(id) {
    this.selected = id;
    for (const li of this.list.children) li.classList.toggle("selected", li.dataset.videoId === id);
    const video = await this.api.get(`/v1/videos/${id}`);
    this.show(video);
  }

  show(video) {
    this.live?.stop();
    this.detachPlayer();
    this.detail.hidden = false;
    this.detail.dataset.videoId = video.id;
    this.detail.dataset.status = video.status;
    const running = video.status === "queued" || video.status === "in_progress";
    const parts = [el("h2", {}, el("code", {}, video.id))];
    if (video.status === "completed" && video.outputs) parts.push(this.player(video));
    if (running) {
      const box = el("div", { class: "live" });
      parts.push(box);
      this.live = new LiveProgress(box, this.api, { onFinish: (v) => { this.show(v); this.load(); } });
      this.live.follow(video);
    }
    if (video.error) parts.push(el("p", { class: "error" }, `${video.error.code}: ${video.error.message}`));
    parts.push(this.facts(video), this.timings(video), this.actions(video));
    fill(this.detail, parts);
  }

  player(video) {
    const o = video.outputs;
    const media = el("video", { controls: true, muted: true, loop: true, playsinline: true, poster: o.poster });
    media.muted = true; // the property, for autoplay
    const modes = el("div", { class: "modes" }, "play as");
    const choices = [["hls", "HLS"], ["mp4", "MP4"]].filter(([k]) => (k === "hls" ? o.hls : o.video));
    const buttons = choices.map(([key, label]) => {
      const b = el("button", { type: "button", class: "small", "data-mode": key }, label);
      b.addEventListener("click", () => this.play(media, o, key, buttons));
      return b;
    });
    modes.append(...buttons);
    const links = el("div", { class: "actions" },
      o.video ? el("a", { href: o.video, download: `${video.id}.mp4`, class: "download" }, "Download MP4") : null,
      o.poster ? el("a", { href: o.poster, target: "_blank", rel: "noopener", class: "poster" }, "Poster") : null);
    queueMicrotask(() => this.play(media, o, o.hls ? "hls" : "mp4", buttons));
    return el("div", { class: "player" }, media, modes, links);
  }

  /** Play `outputs` in `media`: HLS through hls.js where MSE exists, else natively. */
  play(media, outputs, mode, buttons) {
    this.detachPlayer();
    media.removeAttribute("src");
    for (const b of buttons) b.classList.toggle("active", b.dataset.mode === mode);
    if (mode === "hls" && Hls.isSupported()) {
      const hls = new Hls();
      hls.on(Hls.Events.ERROR, (_e, data) => {
        if (!data.fatal) return;
        media.dataset.error = `${data.type}: ${data.details}`;
        if (outputs.video) this.play(media, outputs, "mp4", buttons); // fall back to the MP4
      });
      hls.loadSource(outputs.hls);
      hls.attachMedia(media);
      this.hls = hls;
      media.dataset.player = "hls.js";
    } else if (mode === "hls" && media.canPlayType("application/vnd.apple.mpegurl")) {
      media.src = outputs.hls;
      media.dataset.player = "native-hls";
    } else {
      media.src = outputs.video;
      media.dataset.player = "mp4";
    }
    media.play().catch(() => { /* autoplay refused: the controls are there */ });
  }

  detachPlayer() {
    this.hls?.destroy();
    this.hls = null;
  }

  facts(v) {
    const cost = formatCost(v.cost);
    const rows = [
      ["prompt", v.prompt],
      v.negative_prompt ? ["negative", v.negative_prompt] : null,
      ["model", v.model],
      ["status", v.status],
      ["size", `${v.size}, ${v.num_frames} frames at ${v.fps} fps (${v.seconds} s)`],
      ["steps", `${v.steps}, guidance ${v.guidance_scale}, seed ${v.seed}`],
      ["created", ago(v.created_at)],
      ["GPU time", seconds(v.usage?.gpu_seconds ?? 0)],
      cost ? ["cost", cost] : null,
      v.engine ? ["engine", Object.entries(v.engine).map(([k, x]) => `${k}=${x}`).join(", ")] : null,
    ].filter(Boolean);
    return el("table", { class: "facts-table" },
      rows.map(([k, x]) => el("tr", { dataset: { fact: k } }, el("th", {}, k), el("td", {}, x))));
  }

  timings(v) {
    const t = v.timings;
    if (!t) return el("p", { class: "muted" }, "No timings yet.");
    const total = t.total || Math.max(...STAGES.map((s) => t[s] || 0)) || 1;
    const rows = STAGES.filter((s) => t[s] !== undefined).map((s) =>
      el("div", { class: "bar-row", dataset: { stage: s } },
        el("span", {}, s),
        el("div", { class: "track" }, el("div", { class: "fill", style: `width:${Math.min(100, (100 * t[s]) / total).toFixed(1)}%` })),
        el("span", { class: "secs" }, seconds(t[s]))));
    return el("div", { class: "bars" }, el("h2", {}, `Timings (total ${seconds(t.total)})`), rows);
  }

  actions(v) {
    const box = el("div", { class: "actions" });
    const message = el("span", { class: "error" });
    if (v.status === "queued" || v.status === "in_progress") {
      box.append(el("button", { type: "button", class: "danger", "data-action": "cancel", onclick: async () => {
        try {
          this.show(await this.api.post(`/v1/videos/${v.id}/cancel`));
          this.load();
        } catch (err) { message.textContent = err.message; }
      } }, "Cancel"));
    }
    const del = el("button", { type: "button", class: "danger", "data-action": "delete" }, "Delete");
    del.addEventListener("click", async () => {
      if (del.dataset.armed !== "1") { // a second click confirms
        del.dataset.armed = "1";
        del.textContent = "Really delete?";
        return;
      }
      try {
        await this.api.delete(`/v1/videos/${v.id}`);
        this.live?.stop();
        this.detachPlayer();
        this.detail.hidden = true;
        this.selected = null;
        await this.load();
      } catch (err) { message.textContent = err.message; }
    });
    box.append(del, message);
    return box;
  }
}
