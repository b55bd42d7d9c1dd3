// The HTTP API as the page uses it: JSON in and out, the API key on every request, and a
// 401 turned into one question for the key, after which the request is sent again.

import { askForKey, getKey } from "./auth.js";

export const ROOT = document.body.dataset.root || "";   // where orderengine is mounted ("" at /)

/** A request that did not succeed: `status` 0 means the server could not be reached. */
export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || (status ? `The server answered ${status}.` : "The server cannot be reached."));
    this.status = status;
    this.code = error.code || (status ? "HTTP_" + status : "NETWORK_ERROR");
    this.fields = error.fields || null;
  }
}

/**
 * fetch(ROOT + path) with JSON, the key, and the 401 question. Resolves with
 * {data, response}; rejects with ApiError (or KeyRefused when the person declines a key).
 */
export async function api(path, { method = "GET", body, headers = {}, signal } = {}) {
  for (;;) {
    const key = getKey();
    const sent = { Accept: "application/json", ...headers };
    if (key) sent.Authorization = `Bearer ${key}`;
    if (body !== undefined) sent["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(ROOT + path, {
        method, headers: sent, signal, cache: "no-store", credentials: "omit",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, null);
    }
    if (response.status === 401) {
      await askForKey(key);   // nothing was done with a refused request: sending it again is safe
      continue;
    }
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, data);
    return { data, response };
  }
}

/** A UUID v4 from crypto.getRandomValues (crypto.randomUUID needs a secure context; plain http on a LAN is not). */
export function newIdempotencyKey() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export function socketUrl(path) {
  const url = new URL(ROOT + path, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const key = getKey();
  if (key) url.searchParams.set("apiKey", key);
  return url.toString();
}
