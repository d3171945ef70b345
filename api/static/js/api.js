// Talking to the Descent API: the key, errors, ETag revalidation and the SSE stream.
//
// With auth on, a request answered 401 asks the user for a key (the page's dialog) and is sent
// again; the key lives in sessionStorage, so it is gone when the tab closes. With auth off
// (embedded mode) no key is ever asked for.

const KEY_ITEM = "descent.apiKey";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let promptForKey = async () => null;
let pendingPrompt = null;

/** Install the function that asks the user for a key: (reason) => Promise<string|null>. */
export function setKeyPrompt(fn) {
  promptForKey = fn;
}

export const storedKey = () => sessionStorage.getItem(KEY_ITEM);
export const forgetKey = () => sessionStorage.removeItem(KEY_ITEM);

async function askKey(reason) {
  // Several requests may hit 401 at once: one dialog answers them all.
  pendingPrompt ??= promptForKey(reason).finally(() => (pendingPrompt = null));
  const key = await pendingPrompt;
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  return key;
}

function headers(extra = {}) {
  const key = storedKey();
  return { Accept: "application/json", ...(key ? { Authorization: `Bearer ${key}` } : {}), ...extra };
}

async function errorOf(response) {
  try {
    const { error } = await response.json();
    return new ApiError(response.status, error.code, error.message);
  } catch {
    return new ApiError(response.status, "http_error", response.statusText);
  }
}

/** fetch() with the key; a 401 asks for a key and tries again. */
async function send(path, { method = "GET", body, extraHeaders = {}, signal } = {}) {
  for (let attempt = 0; ; attempt++) {
    const init = { method, headers: headers(extraHeaders), cache: "no-store", signal };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (response.status !== 401 || attempt >= 3) return response;
    const error = await errorOf(response);
    forgetKey();
    if (!(await askKey(error.message))) throw error;
  }
}

export async function request(path, options = {}) {
  const response = await send(path, options);
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

export const get = (path, options) => request(path, options);
export const post = (path, body) => request(path, { method: "POST", body });

const revalidated = new Map(); // path -> {etag, data}

/** GET that revalidates with If-None-Match: {data, changed}. An unchanged answer (304) costs
 * the server no body and the page no re-render. */
export async function poll(path, { signal } = {}) {
  const known = revalidated.get(path);
  const extraHeaders = known ? { "If-None-Match": known.etag } : {};
  const response = await send(path, { extraHeaders, signal });
  if (response.status === 304 && known) return { data: known.data, changed: false };
  if (!response.ok) throw await errorOf(response);
  const data = await response.json();
  const etag = response.headers.get("ETag");
  if (etag) revalidated.set(path, { etag, data });
  return { data, changed: true };
}

/** Read a server-sent-events stream with fetch (EventSource cannot send the key).
 * Calls onEvent(type, data, id) per event; resolves when the stream ends, rejects on an error.
 * Abort through `signal`. */
export async function stream(path, onEvent, { signal } = {}) {
  const response = await send(path, { extraHeaders: { Accept: "text/event-stream" }, signal });
  if (!response.ok) throw await errorOf(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = { type: "message", data: [], id: null };
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue; // keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event.type = text;
        else if (field === "data") event.data.push(text);
        else if (field === "id") event.id = text;
      }
      if (event.data.length) onEvent(event.type, JSON.parse(event.data.join("\n")), event.id);
    }
  }
}
