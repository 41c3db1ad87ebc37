// A job's live progress: status, stage, step, ETA, the progress bar and the preview
// frames the worker sends while it denoises; with a cancel button while it runs.

import { followEvents } from "./sse.js";
import { el, fill, seconds } from "./util.js";

const PREVIEW_PREFIX = "data:image/jpeg;base64,";

export class LiveProgress {
  /** `onFinish(video)` gets the job's final video object. */
  constructor(root, api, { onFinish, onOpen } = {}) {
    this.root = root;
    this.api = api;
    this.onFinish = onFinish;
    this.onOpen = onOpen;
    this.controller = null;
  }

  stop() {
    this.controller?.abort();
    this.controller = null;
  }

  /** Show `video` (a video object) and follow its events to the end. */
  async follow(video) {
    this.stop();
    const controller = new AbortController();
    this.controller = controller;
    this.video = video;
    this.build(video);
    this.update(video.status, video);
    try {
      const final = await followEvents(this.api, video.id, (ev) => this.onEvent(ev), {
        signal: controller.signal,
      });
      if (!final || controller.signal.aborted) return;
      const done = final.type === "deleted" ? null : await this.api.get(`/v1/videos/${video.id}`);
      if (done) this.finish(done);
    } catch (err) {
      if (!controller.signal.aborted) this.parts.message.textContent = err.message;
    }
  }

  build(video) {
    const p = {
      status: el("span", { class: "status" }),
      cancel: el("button", { type: "button", class: "danger small", "data-action": "cancel" }, "Cancel"),
      bar: el("progress", { max: 100, value: 0 }),
      stage: el("b", { class: "stage" }, "–"),
      step: el("b", { class: "step" }, "–"),
      eta: el("b", { class: "eta" }, "–"),
      queue: el("b", { class: "queue" }, "–"),
      preview: el("img", { class: "preview", alt: "preview of the video being made", hidden: true }),
      previews: el("b", { class: "previews" }, "0"),
      message: el("p", { class: "message" }),
    };
    p.cancel.addEventListener("click", () => this.cancel());
    this.parts = p;
    this.previewCount = 0;
    this.root.hidden = false;
    this.root.dataset.videoId = video.id;
    fill(
      this.root,
      el("div", { class: "live-head" },
        el("div", {}, p.status, " ", el("code", {}, video.id)), p.cancel),
      el("p", { class: "muted" }, video.prompt),
      p.bar,
      el("div", { class: "facts" },
        el("span", {}, "stage ", p.stage),
        el("span", {}, "step ", p.step),
        el("span", {}, "ETA ", p.eta),
        el("span", {}, "queue ", p.queue),
        el("span", {}, "previews ", p.previews)),
      el("div", { class: "preview-box" }, p.preview),
      p.message,
    );
  }

  update(status, data) {
    const p = this.parts;
    if (status) {
      p.status.textContent = status.replace("_", " ");
      p.status.className = `status ${status}`;
      this.root.dataset.status = status;
      p.cancel.hidden = !(status === "queued" || status === "in_progress");
    }
    if (data.progress !== undefined && data.progress !== null) p.bar.value = data.progress;
    if (data.stage) p.stage.textContent = data.stage;
    if (data.total_steps && data.stage === "denoise") { // other stages count files, not steps
      p.step.textContent = `${data.step ?? 0}/${data.total_steps}`;
      this.root.dataset.step = String(data.step ?? 0);
    }
    if (data.eta_s !== undefined) p.eta.textContent = data.eta_s === null ? "–" : seconds(data.eta_s, 1);
    if (data.queue_position !== undefined) {
      p.queue.textContent = data.queue_position === null ? "–" : `#${data.queue_position + 1}`;
    }
    if (typeof data.preview === "string" && data.preview.startsWith(PREVIEW_PREFIX)) {
      p.preview.src = data.preview;
      p.preview.hidden = false;
      p.previews.textContent = String(++this.previewCount);
    }
  }

  onEvent(ev) {
    const d = ev.data;
    switch (ev.type) {
      case "queued":
      case "requeued":
        this.update("queued", d);
        if (d.message) this.parts.message.textContent = `retrying: ${d.message}`;
        break;
      case "started":
        this.update("in_progress", { ...d, queue_position: null });
        break;
      case "progress":
        this.update("in_progress", d);
        break;
      case "completed":
        this.update("completed", { ...d, progress: 100, eta_s: 0, stage: "done" });
        break;
      case "failed":
        this.update("failed", d);
        this.parts.message.textContent = `${d.code || "failed"}: ${d.message || ""}`;
        break;
      case "canceled":
        this.update("canceled", d);
        break;
      case "deleted":
        this.update("canceled", d);
        this.parts.message.textContent = "deleted";
        break;
      default:
        break;
    }
  }

  finish(video) {
    this.video = video;
    this.update(video.status, { ...video, preview: undefined });
    if (video.status === "completed") {
      const t = video.timings?.total;
      fill(this.parts.message,
        `ready in ${seconds(t)} `,
        this.onOpen ? el("button", { type: "button", class: "small", "data-action": "open",
          onclick: () => this.onOpen(video) }, "Watch") : null);
    }
    this.onFinish?.(video);
  }

  async cancel() {
    const p = this.parts;
    p.cancel.disabled = true;
    try {
      const video = await this.api.post(`/v1/videos/${this.video.id}/cancel`);
      this.update(video.status, video);
    } catch (err) {
      p.message.textContent = err.message;
    } finally {
      p.cancel.disabled = false;
    }
  }
}
