// The studio's entry point: sign-in, the navigation between views, and wiring.

import { Api, ApiError, clearKey, isRemembered, loadKey, saveKey } from "./api.js";
import { CreateView } from "./create.js";
import { GalleryView } from "./gallery.js";
import { OpsView } from "./ops.js";

const $ = (id) => document.getElementById(id);
const VIEWS = ["signin", "create", "gallery", "ops"];

class Studio {
  constructor() {
    this.api = null;
    this.admin = false;
    $("signin-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.signIn($("api-key").value.trim(), $("remember").checked);
    });
    $("sign-out").addEventListener("click", () => this.signOut());
    for (const button of $("nav").querySelectorAll("button")) {
      button.addEventListener("click", () => this.go(button.dataset.view));
    }
    window.addEventListener("hashchange", () => this.route());
  }

  async start() {
    const key = loadKey();
    if (key && (await this.signIn(key, isRemembered(), true))) return;
    this.route();
  }

  /** Check `key` against the API; on success keep it and open the studio. */
  async signIn(key, remember, quiet = false) {
    const error = $("signin-error");
    error.textContent = "";
    const api = new Api(key);
    try {
      await api.get("/v1/models");
    } catch (err) {
      if (!quiet) error.textContent = err instanceof ApiError ? `${err.code}: ${err.message}` : String(err);
      return false;
    }
    this.admin = await isAdmin(api);
    saveKey(key, remember);
    this.api = api;
    this.create = new CreateView(api, {
      onOpen: (video) => this.openVideo(video.id),
      onSubmitted: () => this.gallery.load().catch(() => {}),
    });
    this.gallery = new GalleryView(api);
    this.ops = new OpsView(api);
    await this.create.load();
    $("account-key").textContent = `${key.slice(0, 10)}…${this.admin ? " (admin)" : ""}`;
    $("account").hidden = false;
    $("nav").hidden = false;
    $("nav-ops").hidden = !this.admin;
    this.route();
    return true;
  }

  signOut() {
    clearKey();
    location.hash = "";
    location.reload();
  }

  go(view) {
    if (location.hash === `#${view}`) this.route();
    else location.hash = view;
  }

  route() {
    let view = location.hash.replace("#", "") || "create";
    if (!this.api) view = "signin";
    else if (view === "signin") view = "create";
    if (view === "ops" && !this.admin) view = "create";
    if (!VIEWS.includes(view)) view = "create";
    for (const name of VIEWS) $(`view-${name}`).hidden = name !== view;
    for (const b of $("nav").querySelectorAll("button")) b.classList.toggle("active", b.dataset.view === view);
    document.body.dataset.view = view;
    if (view !== "ops") this.ops?.hide();
    if (view !== "gallery") this.gallery?.hide();
    if (view === "gallery") this.gallery.load().catch((err) => console.error(err));
    if (view === "ops") this.ops.show();
  }

  async openVideo(id) {
    this.go("gallery");
    await this.gallery.open(id);
  }
}

/** Whether the key may read the operators' endpoints (403 admin_required otherwise). */
async function isAdmin(api) {
  try {
    await api.get("/v1/admin/overview?window_s=60&buckets=1");
    return true;
  } catch {
    return false;
  }
}

new Studio().start();
