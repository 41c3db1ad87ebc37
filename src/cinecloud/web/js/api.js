// The API client: bearer key, JSON bodies, and the OpenAI-shaped error body.

const STORE_KEY = "cinecloud.apiKey";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The saved key: this tab's (sessionStorage) first, then a remembered one. */
export function loadKey() {
  return sessionStorage.getItem(STORE_KEY) || localStorage.getItem(STORE_KEY) || "";
}

/** Whether the saved key is kept across browser sessions. */
export function isRemembered() {
  return localStorage.getItem(STORE_KEY) !== null;
}

export function saveKey(key, remember) {
  sessionStorage.setItem(STORE_KEY, key);
  if (remember) localStorage.setItem(STORE_KEY, key);
  else localStorage.removeItem(STORE_KEY);
}

export function clearKey() {
  sessionStorage.removeItem(STORE_KEY);
  localStorage.removeItem(STORE_KEY);
}

export class Api {
  constructor(key, base = "") {
    this.key = key;
    this.base = base;
  }

  /** The raw fetch Response (for streams); auth header added. */
  async raw(method, path, { headers = {}, body, signal } = {}) {
    return fetch(this.base + path, {
      method,
      body,
      signal,
      cache: "no-store",
      headers: { Authorization: `Bearer ${this.key}`, ...headers },
    });
  }

  /** JSON in and out; throws ApiError with the server's code and message. */
  async request(method, path, { json, form, signal } = {}) {
    const headers = {};
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form !== undefined) {
      body = form; // the browser sets the multipart boundary
    }
    const resp = await this.raw(method, path, { headers, body, signal });
    if (!resp.ok) throw await errorOf(resp);
    return resp.status === 204 ? null : resp.json();
  }

  get(path, opts) { return this.request("GET", path, opts); }
  post(path, opts) { return this.request("POST", path, opts); }
  delete(path, opts) { return this.request("DELETE", path, opts); }
}

export async function errorOf(resp) {
  let code = `http_${resp.status}`;
  let message = resp.statusText || "request failed";
  try {
    const body = await resp.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(resp.status, code, message);
}
