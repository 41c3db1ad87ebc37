// The "Create" view: the request form (model, prompts, size, frames, seed, steps,
// guidance, an image for image-to-video) and the submitted job's live progress.

import { LiveProgress } from "./live.js";
import { el, fill } from "./util.js";

const FIELDS = ["prompt", "negative_prompt", "size", "num_frames", "seed", "steps", "guidance_scale", "priority"];

export class CreateView {
  constructor(api, { onOpen, onSubmitted } = {}) {
    this.api = api;
    this.onSubmitted = onSubmitted;
    this.form = document.getElementById("create-form");
    this.models = [];
    this.live = new LiveProgress(document.getElementById("live"), api, { onOpen });
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    document.getElementById("f-model").addEventListener("change", () => this.showModel());
  }

  async load() {
    const list = await this.api.get("/v1/models");
    // installed here first; the others stay selectable, since workers elsewhere may
    // have their weights
    this.models = [...list.data].sort((a, b) => Number(b.installed) - Number(a.installed));
    const select = document.getElementById("f-model");
    const options = this.models.map((m) =>
      el("option", { value: m.id, selected: m.default },
        m.id + (m.default ? " (default)" : "") + (m.installed ? "" : " (not installed on the server)")));
    fill(select, options);
    this.showModel();
  }

  model() {
    const id = document.getElementById("f-model").value;
    return this.models.find((m) => m.id === id);
  }

  /** The model's defaults as placeholders (an empty field means "the model's default"). */
  showModel() {
    const m = this.model();
    if (!m) return;
    const d = m.defaults;
    const l = m.limits;
    document.getElementById("f-size").placeholder = `${d.width}x${d.height}`;
    document.getElementById("f-frames").placeholder = String(d.num_frames);
    document.getElementById("f-steps").placeholder = String(d.steps);
    document.getElementById("f-steps").max = String(l.max_steps);
    document.getElementById("f-guidance").placeholder = String(d.guidance_scale);
    const image = document.getElementById("f-image");
    document.getElementById("image-field").hidden = m.input_image === "none";
    image.required = m.input_image === "required";
    if (m.input_image === "none") image.value = "";
    fill(document.getElementById("model-info"),
      `${m.family} · up to ${l.max_width}x${l.max_height}, ${l.min_frames}–${l.max_frames} frames`
      + ` (${l.frame_rule}), ${l.max_steps} steps`
      + (m.input_image === "none" ? "" : ` · image ${m.input_image}`));
  }

  async submit() {
    const error = document.getElementById("create-error");
    const button = document.getElementById("submit");
    error.textContent = "";
    const form = new FormData();
    form.set("model", document.getElementById("f-model").value);
    const data = new FormData(this.form);
    for (const name of FIELDS) {
      const value = String(data.get(name) ?? "").trim();
      if (value !== "" && !(name === "priority" && value === "0")) form.set(name, value);
    }
    const file = document.getElementById("f-image").files[0];
    if (file) form.set("input_reference", file, file.name);
    button.disabled = true;
    try {
      const video = await this.api.post("/v1/videos", { form });
      this.onSubmitted?.(video);
      this.live.follow(video);
    } catch (err) {
      error.textContent = `${err.code}: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  }
}
