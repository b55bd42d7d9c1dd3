// One WebSocket to /api/orders/stream, subscribed to every order of the caller.
// If it drops it comes back with a growing, jittered delay (0.5 s doubling to 15 s);
// each time it is subscribed again `onSubscribed` runs, and the page re-reads its list,
// since events published while the socket was away are not replayed by "all".

import { askForKey, getKey } from "./auth.js";
import { socketUrl } from "./api.js";

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 15_000;
const CLOSE_UNAUTHORIZED = 4401;
const CLOSE_TOO_MANY = 4429;

export class OrderStream {
  /** onEvent(event), onSubscribed(), onState({state, retryAt?, message?}) */
  constructor({ onEvent, onSubscribed, onState }) {
    this.onEvent = onEvent;
    this.onSubscribed = onSubscribed;
    this.onState = onState;
    this.ws = null;
    this.failures = 0;
    this.timer = null;
  }

  start() {
    this.connect();
    // a laptop waking up or a network coming back: do not wait out the backoff
    window.addEventListener("online", () => this.reconnectNow());
  }

  /** Close whatever is open and connect at once (a new key, the "online" event). */
  reconnectNow() {
    this.failures = 0;
    this.connect();
  }

  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.ws) {
      const old = this.ws;
      this.ws = null;
      old.close(1000);
    }
    const key = getKey();
    let ws;
    try {
      ws = new WebSocket(socketUrl("/api/orders/stream"));
    } catch {
      this.retry();
      return;
    }
    this.ws = ws;
    let reason = "";
    this.onState({ state: "connecting" });
    ws.addEventListener("open", () => {
      ws.send(JSON.stringify({ action: "subscribe", all: true, requestId: "dashboard" }));
    });
    ws.addEventListener("message", (message) => {
      if (this.ws !== ws) return;
      let body;
      try {
        body = JSON.parse(message.data);
      } catch {
        return;
      }
      if (body.type === "subscribed" && body.all) {
        this.failures = 0;
        this.onState({ state: "live" });
        this.onSubscribed();
      } else if (typeof body.seq === "number" && body.orderId) {
        this.onEvent(body);
      } else if (body.error) {
        reason = body.error.message || body.error.code || "";
      }
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return;   // replaced on purpose
      this.ws = null;
      if (event.code === CLOSE_UNAUTHORIZED) {
        this.onState({ state: "key", message: "API key needed" });
        askForKey(key).then(() => this.reconnectNow(), () => this.onState({ state: "key" }));
        return;
      }
      this.retry(event.code === CLOSE_TOO_MANY ? MAX_DELAY_MS : 0, reason);
    });
  }

  retry(atLeastMs = 0, message = "") {
    const delay = Math.max(atLeastMs, Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** this.failures));
    this.failures += 1;
    const jittered = Math.round(delay * (0.8 + Math.random() * 0.4));
    this.onState({ state: "reconnecting", retryAt: Date.now() + jittered, message });
    this.timer = setTimeout(() => this.connect(), jittered);
  }
}
