// Talking to the service: the API key, JSON calls, downloads, and the live event feed.
// Every data call carries the key in a header when one is set; nothing puts it in a URL.

const KEY_STORAGE = "retail-pulse-api-key";

export function storedKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function rememberKey(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_STORAGE);
}

function keyHeaders(key = storedKey()) {
  return key ? { "X-API-Key": key } : {};
}

export class ApiError extends Error {
  constructor(status, message, details) {
    super(message);
    this.status = status;
    this.details = details;
  }
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  let details;
  try {
    const body = await response.json();
    if (body && typeof body.error === "string") message = body.error;
    details = body ? body.details : undefined;
  } catch {
    // Not JSON: the status line says enough.
  }
  return new ApiError(response.status, message, details);
}

/** A JSON call; throws ApiError with the service's own message on a non-2xx answer. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json", ...keyHeaders() };
  const init = { method, headers, signal };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/** Whether the service needs a key, and (given one) whether it is right: never a 401. */
export async function authInfo(key) {
  const response = await fetch("/api/auth", { headers: keyHeaders(key) });
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/** Save a file from the service: through fetch and a Blob, so the key travels in a header. */
export async function download(path, filename) {
  const response = await fetch(path, { headers: keyHeaders() });
  if (!response.ok) throw await errorOf(response);
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  // After the click has handed the blob to the download.
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/**
 * A Server-Sent Events parser (the WHATWG event-stream format): feed it text as it
 * arrives; it calls onEvent({event, data, id}) per event and onRetry(ms) per retry field.
 * Comment lines (the heartbeat) are skipped.
 */
export function sseParser(onEvent, onRetry = () => {}) {
  let pending = "";
  let data = [];
  let event = "";
  let lastId = null;

  function line(text) {
    if (text === "") {
      if (data.length) onEvent({ event: event || "message", data: data.join("\n"), id: lastId });
      data = [];
      event = "";
      return;
    }
    if (text.startsWith(":")) return;
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") data.push(value);
    else if (field === "event") event = value;
    else if (field === "id" && !value.includes("\0")) lastId = value;
    else if (field === "retry" && /^\d+$/.test(value)) onRetry(Number(value));
  }

  let afterCr = false; // the last chunk ended in CR: an LF opening this one belongs to it

  return function feed(chunk) {
    pending += afterCr && chunk.startsWith("\n") ? chunk.slice(1) : chunk;
    afterCr = false;
    let start = 0;
    for (let i = 0; i < pending.length; i++) {
      const char = pending[i];
      if (char !== "\n" && char !== "\r") continue;
      line(pending.slice(start, i));
      if (char === "\r") {
        if (i === pending.length - 1) afterCr = true;
        else if (pending[i + 1] === "\n") i++;
      }
      start = i + 1;
    }
    pending = pending.slice(start);
  };
}

const POLL_EVERY = 1000;
const RETRY_FIRST = 3000;
const RETRY_MAX = 60_000;

/**
 * One feed of live job events for the whole page: one connection to GET /api/events
 * (browsers allow six per host), or, where the service has no stream, a tick at most
 * once a second on which views poll. Listeners get {type, data}: "progress" and "done"
 * from the stream, "tick" when polling, "resync" after a reconnect, "mode" on a change.
 */
export class LiveFeed {
  constructor() {
    this.listeners = new Set();
    this.mode = "off";
    this.lastId = null;
    this.retry = RETRY_FIRST;
    this.controller = null;
    this.timer = null;
    this.stopped = true;
  }

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(type, data) {
    for (const listener of [...this.listeners]) listener({ type, data });
  }

  setMode(mode) {
    if (mode === this.mode) return;
    this.mode = mode;
    this.emit("mode", mode);
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
    clearInterval(this.timer);
    clearTimeout(this.timer);
    this.timer = null;
    this.setMode("off");
  }

  poll() {
    this.setMode("polling");
    clearInterval(this.timer);
    this.timer = setInterval(() => {
      if (!document.hidden) this.emit("tick");
    }, POLL_EVERY);
  }

  async connect() {
    clearInterval(this.timer);
    this.timer = null;
    if (this.stopped) return;
    this.controller = new AbortController();
    const headers = { Accept: "text/event-stream", ...keyHeaders() };
    if (this.lastId) headers["Last-Event-ID"] = this.lastId;
    let response;
    try {
      response = await fetch("/api/events", { headers, signal: this.controller.signal });
    } catch {
      return this.later();
    }
    if (response.status === 404) return this.poll(); // a service without the stream
    if (!response.ok || !response.body) return this.later();
    this.setMode("stream");
    this.retry = RETRY_FIRST;
    this.emit("resync");
    const feed = sseParser(
      (message) => this.dispatch(message),
      (ms) => {
        this.retry = Math.min(Math.max(ms, 500), RETRY_MAX);
      },
    );
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        feed(value);
      }
    } catch {
      // Aborted, or the connection dropped: reconnect below unless stopped.
    }
    this.later();
  }

  // Poll while the stream is away, and try it again after a pause.
  later() {
    if (this.stopped) return;
    this.poll();
    const delay = this.retry;
    this.retry = Math.min(this.retry * 2, RETRY_MAX);
    setTimeout(() => this.connect(), delay);
  }

  dispatch({ event, data, id }) {
    if (id) this.lastId = id;
    if (event !== "progress" && event !== "done") return;
    let parsed;
    try {
      parsed = JSON.parse(data);
    } catch {
      return;
    }
    this.emit(event, parsed);
  }
}
