// A job's Server-Sent Events, read with fetch().
//
// Hand-rolled on purpose: the browser's EventSource cannot send the Authorization
// header our API needs, and the fetch-based SSE clients on npm ship ES modules that
// browsers cannot load without a bundler. The reader keeps the last event id and
// reconnects with Last-Event-ID, so a dropped connection loses nothing.

import { errorOf } from "./api.js";
import { FINAL, sleep } from "./util.js";

/**
 * Follow /v1/videos/{id}/events until a final event (completed, failed, canceled,
 * deleted) or until `signal` aborts. `onEvent({id, type, data})` is called for each
 * event. Returns the final event (or null when aborted). A 4xx answer is thrown.
 */
export async function followEvents(api, videoId, onEvent, { signal, lastId = 0 } = {}) {
  let last = lastId;
  let failures = 0;
  while (!signal?.aborted) {
    try {
      const headers = last ? { "Last-Event-ID": String(last) } : {};
      const resp = await api.raw("GET", `/v1/videos/${encodeURIComponent(videoId)}/events`, {
        headers,
        signal,
      });
      if (!resp.ok) {
        const err = await errorOf(resp);
        if (resp.status < 500) throw Object.assign(err, { final: true });
        throw err;
      }
      for await (const event of parseStream(resp.body)) {
        failures = 0;
        if (event.id) last = event.id;
        onEvent(event);
        if (FINAL.has(event.type)) return event;
      }
    } catch (err) {
      if (signal?.aborted) return null;
      if (err.final || ++failures > 8) throw err;
    }
    await sleep(Math.min(5000, 200 * 2 ** failures));
  }
  return null;
}

/** Yield {id, type, data} from a text/event-stream body (data is parsed JSON). */
async function* parseStream(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let id = 0;
  let type = "message";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        let line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {
          if (data.length) yield { id, type, data: JSON.parse(data.join("\n")) };
          type = "message";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue; // keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "id" && /^\d+$/.test(text)) id = Number(text);
        else if (field === "event") type = text;
        else if (field === "data") data.push(text);
      }
    }
  } finally {
    reader.releaseLock();
  }
}
