// The orders table: one <tbody> per order (its row and, when opened, its details), newest
// first, updated in place from snapshots (GET /api/orders) and events (the stream socket).
//
// Snapshots and events can arrive in any order (the list is re-read after a reconnect while
// events keep coming), so each order keeps the latest state it has seen: an event applies if
// its seq is new and it is not older than the snapshot shown, a snapshot if it is not older
// than the last event; a final status never goes back.

import { api } from "./api.js";
import { fill, h } from "./dom.js";
import * as fmt from "./format.js";

const TERMINAL = new Set(["confirmed", "failed", "cancelled"]);
const CANCELLABLE = new Set(["pending", "routing", "retrying"]);
const MAX_ROWS = 1000;
const COLUMNS = 9;

const parseTime = (iso) => (iso ? Date.parse(iso) : NaN);

/** When what a row shows was true; an order this page only just placed has no such time yet. */
const shownAt = (order) => (order.provisional || !order.updatedAt ? -Infinity : parseTime(order.updatedAt));

export class OrderBoard {
  constructor(table, { onChange } = {}) {
    this.table = table;
    this.onChange = onChange || (() => {});
    this.rows = new Map();      // orderId -> row
    this.sorted = [];           // rows, newest first
    this.dirty = new Set();
    this.frame = 0;
    this.skewSamples = [];      // local clock minus server clock, from events' `at`
    this.fetching = new Set();  // order ids whose snapshot is being read
    this.summaryDue = false;
    this.loaded = false;
    this.loadError = null;
    setInterval(() => this.tick(), 100);
  }

  // --- what comes in --------------------------------------------------------------------

  /** A page of snapshots (GET /api/orders). */
  addSnapshots(orders) {
    for (const order of orders) this.upsertSnapshot(order);
    this.loaded = true;
    this.loadError = null;
    this.changed();
  }

  upsertSnapshot(order) {
    let row = this.rows.get(order.orderId);
    if (!row) {
      row = this.create(order.orderId, { ...order });
    } else if (TERMINAL.has(row.order.status) && !TERMINAL.has(order.status)) {
      return;   // a stale snapshot: a final status never goes back
    } else if (parseTime(order.updatedAt) < shownAt(row.order)) {
      return;
    } else {
      const { createdAt } = row.order;
      row.order = { ...row.order, ...order };
      delete row.order.provisional;
      if (createdAt !== order.createdAt) this.reposition(row);
    }
    this.markDirty(row);
  }

  /** An order this page just placed: shown at once, before its first event arrives. */
  addPlaced(orderId, request) {
    if (this.rows.has(orderId)) {
      this.rows.get(orderId).fresh = true;
      this.markDirty(this.rows.get(orderId));
      return;
    }
    // its times are guesses until its first event or snapshot says (both of which win over it)
    const now = new Date(this.serverNow()).toISOString();
    const row = this.create(orderId, {
      orderId, type: "MARKET", status: "pending", attempts: 0, createdAt: now, updatedAt: null,
      tokenIn: String(request.tokenIn).toUpperCase(), tokenOut: String(request.tokenOut).toUpperCase(),
      amountIn: String(request.amountIn), slippageBps: request.slippageBps ?? 50,
      clientOrderId: request.clientOrderId ?? null, provisional: true,
    });
    row.fresh = true;
    this.markDirty(row);
    this.changed();
  }

  /** One event: `live` from the socket (just published), or read from GET /events. */
  applyEvent(event, live = false) {
    if (live) this.noteClock(event.at);
    let row = this.rows.get(event.orderId);
    if (!row) {
      if (event.seq !== 1) {
        // its start was missed (it began before this page subscribed): fetch the snapshot
        if (!this.fetching.has(event.orderId)) this.fetchSnapshot(event.orderId);
        return;
      }
      row = this.create(event.orderId, { orderId: event.orderId, status: "pending", createdAt: event.at,
                                         updatedAt: event.at, attempts: 0 });
    }
    row.events.set(event.seq, event);
    const order = row.order;
    const stale = event.seq <= row.lastSeq
      || (TERMINAL.has(order.status) && !TERMINAL.has(event.status))
      || parseTime(event.at) < shownAt(order);
    if (!stale) {
      row.lastSeq = event.seq;
      applyToOrder(order, event);
      if (order.provisional) {
        delete order.provisional;
        if (event.status === "pending") {   // the time it was accepted, from the server
          order.createdAt = event.at;
          this.reposition(row);
        }
      }
    }
    if (row.open && missingSeqs(row)) this.loadEvents(row);
    this.markDirty(row);
    this.changed();
  }

  async fetchSnapshot(orderId) {
    this.fetching.add(orderId);
    try {
      const { data } = await api(`/api/orders/${encodeURIComponent(orderId)}`);
      this.upsertSnapshot(data);
      this.changed();
    } catch { /* the next list read brings it */ } finally {
      this.fetching.delete(orderId);
    }
  }

  // --- rows -----------------------------------------------------------------------------

  create(orderId, order) {
    const main = h("tr", { class: "order-row", tabindex: "0", "aria-expanded": "false" });
    const body = h("tbody", { class: "order", dataset: { orderId } }, main);
    const row = { id: orderId, order, events: new Map(), lastSeq: 0, open: false, body, main,
                  detail: null, loadingEvents: false, eventsError: null, actionError: null, fresh: false };
    main.addEventListener("click", (event) => {
      if (!event.target.closest("a, button")) this.toggle(row);
    });
    main.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        this.toggle(row);
      }
    });
    this.rows.set(orderId, row);
    this.insert(row);
    this.trim();
    return row;
  }

  insert(row) {
    let lo = 0;
    let hi = this.sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (newerFirst(this.sorted[mid], row) < 0) lo = mid + 1;
      else hi = mid;
    }
    const next = this.sorted[lo];
    this.sorted.splice(lo, 0, row);
    this.table.insertBefore(row.body, next ? next.body : null);
  }

  reposition(row) {
    const at = this.sorted.indexOf(row);
    if (at >= 0) this.sorted.splice(at, 1);
    this.insert(row);
  }

  /** Keep the page light on a busy engine: the oldest closed rows go past MAX_ROWS. */
  trim() {
    while (this.sorted.length > MAX_ROWS) {
      const victim = [...this.sorted].reverse().find((r) => !r.open);
      if (!victim) return;
      this.sorted.splice(this.sorted.indexOf(victim), 1);
      this.rows.delete(victim.id);
      victim.body.remove();
      this.trimmed = true;
    }
  }

  /** Forget every order (they belonged to a key that was just forgotten). */
  clear() {
    for (const row of this.rows.values()) row.body.remove();
    this.rows.clear();
    this.sorted = [];
    this.loaded = false;
    this.trimmed = false;
    this.changed();
  }

  toggle(row) {
    row.open = !row.open;
    row.main.setAttribute("aria-expanded", String(row.open));
    if (row.open) this.loadEvents(row);
    this.markDirty(row);
  }

  async loadEvents(row) {
    if (row.loadingEvents) return;
    row.loadingEvents = true;
    try {
      const { data } = await api(`/api/orders/${encodeURIComponent(row.id)}/events`);
      row.eventsError = null;
      for (const event of data) {
        if (!row.events.has(event.seq)) this.applyEvent(event);
      }
    } catch (error) {
      row.eventsError = error.message;
    } finally {
      row.loadingEvents = false;
      this.markDirty(row);
    }
  }

  async cancel(row) {
    row.actionError = null;
    try {
      const { data } = await api(`/api/orders/${encodeURIComponent(row.id)}/cancel`, { method: "POST" });
      this.upsertSnapshot(data);
    } catch (error) {
      row.actionError = error.message;
    }
    this.markDirty(row);
    this.changed();
  }

  // --- drawing --------------------------------------------------------------------------

  markDirty(row) {
    this.dirty.add(row);
    this.schedule();
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  /** Draw what changed, at most once a frame however many events came in. */
  flush() {
    this.frame = 0;
    if (this.summaryDue) {
      this.summaryDue = false;
      this.onChange(this);
    }
    for (const row of this.dirty) {
      if (!this.rows.has(row.id)) continue;
      renderRow(row, this);
      renderDetail(row, this);
    }
    this.dirty.clear();
  }

  changed() {
    this.summaryDue = true;
    this.schedule();
  }

  counts() {
    const counts = { inFlight: 0, confirmed: 0, failed: 0, cancelled: 0 };
    for (const row of this.rows.values()) {
      const status = row.order.status;
      if (status === "confirmed") counts.confirmed += 1;
      else if (status === "failed") counts.failed += 1;
      else if (status === "cancelled") counts.cancelled += 1;
      else counts.inFlight += 1;
    }
    return counts;
  }

  /** The time taken of orders in flight ticks on. */
  tick() {
    for (const row of this.rows.values()) {
      if (!TERMINAL.has(row.order.status) && row.tookCell) {
        row.tookCell.textContent = fmt.duration(this.serverNow() - parseTime(row.order.createdAt));
      }
    }
  }

  noteClock(at) {
    const sample = Date.now() - parseTime(at);
    if (!Number.isFinite(sample)) return;
    this.skewSamples.push(sample);
    if (this.skewSamples.length > 100) this.skewSamples.shift();
  }

  /** The server's clock as best this page knows it (events carry the server's time). */
  serverNow() {
    const skew = this.skewSamples.length ? Math.min(...this.skewSamples) : 0;
    return Date.now() - skew;
  }
}

function newerFirst(a, b) {
  const byTime = parseTime(b.order.createdAt) - parseTime(a.order.createdAt);
  if (byTime) return byTime;
  return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}

function missingSeqs(row) {
  const highest = Math.max(0, ...row.events.keys());
  return row.events.size < highest;
}

function applyToOrder(order, event) {
  const data = event.data || {};
  order.status = event.status;
  order.updatedAt = event.at;
  order.attempts = Math.max(order.attempts || 0, event.attempt || 0);
  switch (event.status) {
    case "pending":
      for (const name of ["tokenIn", "tokenOut", "amountIn", "slippageBps", "clientOrderId", "type"]) {
        if (name in data) order[name] = data[name];
      }
      break;
    case "building":
      order.venue = data.venue ?? order.venue;
      break;
    case "submitted":
      order.venue = data.venue ?? order.venue;
      order.txHash = data.txHash ?? order.txHash;
      break;
    case "confirmed":
      Object.assign(order, { venue: data.venue, txHash: data.txHash, amountOut: data.amountOut,
                             executedPrice: data.executedPrice, error: null });
      break;
    case "failed":
      order.error = data.error || null;
      break;
    case "retrying":
      order.lastError = data.error || null;
      break;
    case "cancelled":
      order.reason = data.reason;
      break;
  }
}

// --- the row --------------------------------------------------------------------------

export function badge(status) {
  const live = !TERMINAL.has(status);
  return h("span", { class: ["badge", live && "badge-live"], dataset: { status } },
    h("span", { class: "badge-dot", "aria-hidden": "true" }), status);
}

function unit(token) {
  return token ? h("span", { class: "unit" }, token) : null;
}

function renderRow(row, board) {
  const o = row.order;
  const final = TERMINAL.has(o.status);
  const took = final ? parseTime(o.updatedAt) - parseTime(o.createdAt)
                     : board.serverNow() - parseTime(o.createdAt);
  const errorCode = o.status === "failed" ? o.error && o.error.code
                  : o.status === "retrying" ? o.lastError && o.lastError.code : null;
  const tookCell = h("td", { class: ["num", "took", !final && "ticking"] }, fmt.duration(took));
  const venueKnown = o.venue && o.status !== "routing" && o.status !== "pending";
  row.main.className = ["order-row", row.open && "open", row.fresh && "fresh"].filter(Boolean).join(" ");
  row.main.dataset.status = o.status;
  row.fresh = false;
  fill(row.main,
    h("td", { class: "time", title: `${o.createdAt}\norder ${o.orderId}` }, fmt.placed(o.createdAt)),
    h("td", { class: "status" }, badge(o.status),
      o.attempts > 1 && !final ? h("span", { class: "attempt" }, `attempt ${o.attempts}`) : null,
      errorCode ? h("span", { class: "error-code", title: (o.error || o.lastError || {}).message || "" },
                    errorCode) : null),
    h("td", { class: "pair" },
      h("span", { class: "pair-tokens" }, o.tokenIn || "…", h("span", { class: "arrow" }, " → "), o.tokenOut || "…"),
      h("span", { class: "pair-sub mono", title: o.clientOrderId ? "client order id" : "order id" },
        o.clientOrderId || (o.orderId || "").slice(0, 8))),
    h("td", { class: "num", title: o.amountIn || "" }, fmt.amount(o.amountIn, o.tokenIn), unit(o.tokenIn)),
    h("td", { class: ["venue", !venueKnown && "muted"] }, venueKnown ? fmt.venueName(o.venue) : "—"),
    h("td", { class: "num", title: o.executedPrice ? `${o.executedPrice} ${o.tokenOut} per ${o.tokenIn}` : "" },
      o.executedPrice ? fmt.price(o.executedPrice) : h("span", { class: "muted" }, "—")),
    h("td", { class: "num", title: o.amountOut || "" },
      o.amountOut ? [fmt.amount(o.amountOut, o.tokenOut), unit(o.tokenOut)] : h("span", { class: "muted" }, "—")),
    tookCell,
    h("td", { class: "chevron", "aria-hidden": "true" },
      h("span", { class: "chevron-mark" }, "›")),
  );
  row.tookCell = final ? null : tookCell;
}

// --- the details of an opened row ----------------------------------------------------------

function renderDetail(row, board) {
  if (!row.open) {
    if (row.detail) row.detail.remove();
    row.detail = null;
    return;
  }
  if (!row.detail) {
    row.detail = h("tr", { class: "detail-row" });
    row.body.append(row.detail);
  }
  const events = [...row.events.values()].sort((a, b) => a.seq - b.seq);
  const building = events.filter((e) => e.status === "building").pop();
  fill(row.detail, h("td", { colspan: String(COLUMNS) },
    h("div", { class: "detail" },
      h("div", { class: "detail-quotes" }, quotesSection(row, building)),
      h("div", { class: "detail-summary" }, summarySection(row, building, board)),
      h("div", { class: "detail-log" }, logSection(row, events)))));
}

function quotesSection(row, building) {
  const title = h("h3", {}, "Quotes", building && building.attempt > 1
    ? h("span", { class: "h-note" }, ` · attempt ${building.attempt}`) : null);
  if (!building) {
    let text = "Quotes appear here once the order is routed.";
    if (row.loadingEvents && !row.events.size) text = "Loading…";
    else if (TERMINAL.has(row.order.status)) {
      text = [...row.events.values()].some((e) => e.status === "routing")
        ? "No venue was chosen: the event log says why."
        : "No quotes: the order ended before it was routed.";
    }
    return [title, h("p", { class: "empty-inline" }, text)];
  }
  const d = building.data || {};
  const o = row.order;
  const rows = (d.quotes || []).map((q) => {
    const chosen = q.venue === d.venue;
    if (q.error) {
      return h("tr", { class: "quote-error" },
        h("td", {}, fmt.venueName(q.venue)),
        h("td", { colspan: "5", class: "error-text" }, `${q.error.code}: ${q.error.message}`));
    }
    return h("tr", { class: chosen ? "chosen" : null, dataset: { venue: q.venue } },
      h("td", {}, fmt.venueName(q.venue), chosen ? h("span", { class: "chosen-tag" }, "chosen") : null),
      h("td", { class: "num", title: q.amountOut }, fmt.amount(q.amountOut, o.tokenOut)),
      h("td", { class: "num", title: `${q.fee} ${q.feeToken || ""}` }, fmt.amount(q.fee, q.feeToken),
        unit(q.feeToken)),
      h("td", { class: "num strong", title: q.netOut }, fmt.amount(q.netOut, o.tokenOut)),
      h("td", { class: "num", title: q.price }, fmt.price(q.price)),
      h("td", { class: "num" }, fmt.percent(q.priceImpactPct)));
  });
  return [title, h("table", { class: "quotes" },
    h("thead", {}, h("tr", {},
      h("th", {}, "Venue"), h("th", { class: "num" }, `Out (${o.tokenOut || ""})`), h("th", { class: "num" }, "Fee"),
      h("th", { class: "num" }, "Net out"), h("th", { class: "num" }, "Price"), h("th", { class: "num" }, "Impact"))),
    h("tbody", {}, rows))];
}

function summarySection(row, building, board) {
  const o = row.order;
  const d = (building && building.data) || {};
  const items = [
    ["Order", h("span", { class: "mono selectable" }, o.orderId)],
    o.clientOrderId ? ["Client id", h("span", { class: "mono selectable" }, o.clientOrderId)] : null,
    ["Slippage", `${o.slippageBps ?? "—"} bps`],
    d.expectedOut ? ["Expected out", [fmt.amount(d.expectedOut, o.tokenOut), unit(o.tokenOut)]] : null,
    d.minAmountOut ? ["Min amount out", [fmt.amount(d.minAmountOut, o.tokenOut), unit(o.tokenOut)]] : null,
    o.amountOut ? ["Received", [fmt.amount(o.amountOut, o.tokenOut), unit(o.tokenOut),
                                h("span", { class: "muted" }, ` at ${fmt.price(o.executedPrice)}`)]] : null,
    o.txHash ? ["Tx hash", h("span", { class: "mono selectable hash" }, o.txHash)] : null,
    o.status === "failed" && o.error ? ["Error", h("span", { class: "error-text" },
                                                   `${o.error.code}: ${o.error.message}`)] : null,
    o.status === "cancelled" && o.reason ? ["Cancelled", o.reason] : null,
    ["Attempts", String(o.attempts ?? 0)],
  ].filter(Boolean);
  const list = h("dl", { class: "facts" }, items.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  const actions = CANCELLABLE.has(o.status)
    ? h("div", { class: "detail-actions" },
        h("button", { type: "button", class: "btn btn-ghost btn-small btn-danger",
                      onclick: () => board.cancel(row) }, "Cancel order"))
    : null;
  return [h("h3", {}, "Execution"), list, actions,
          row.actionError ? h("p", { class: "error-text" }, row.actionError) : null];
}

function logSection(row, events) {
  const title = h("h3", {}, "Event log");
  if (row.eventsError) return [title, h("p", { class: "error-text" }, `Could not load the events: ${row.eventsError}`)];
  if (!events.length) return [title, h("p", { class: "empty-inline" }, "Loading…")];
  const start = parseTime(row.order.createdAt) || parseTime(events[0].at);
  const item = (e) => h("li", { class: "log-item", dataset: { status: e.status } },
    h("span", { class: "log-seq" }, `#${e.seq}`),
    badge(e.status),
    h("span", { class: "log-time", title: e.at }, fmt.clock(e.at, true)),
    h("span", { class: "log-offset" }, `+${fmt.duration(parseTime(e.at) - start)}`),
    h("span", { class: "log-text" }, describe(e, row.order)));
  return [title, h("ol", { class: "log" }, events.map(item))];
}

/** One line about an event, in words. */
export function describe(event, order) {
  const d = event.data || {};
  const out = order.tokenOut || "";
  switch (event.status) {
    case "pending":
      return `Accepted: ${d.amountIn ?? order.amountIn} ${d.tokenIn ?? order.tokenIn} → ${d.tokenOut ?? out}, ` +
             `slippage ${d.slippageBps ?? order.slippageBps} bps` +
             (d.clientOrderId ? `, client id ${d.clientOrderId}` : "");
    case "routing":
      return `Attempt ${event.attempt}: asking ${(d.venues || []).map(fmt.venueName).join(", ") || "the venues"} for quotes`;
    case "building":
      return `Chose ${fmt.venueName(d.venue)}: expect ${fmt.amount(d.expectedOut, out)} ${out}, ` +
             `at least ${fmt.amount(d.minAmountOut, out)}`;
    case "submitted":
      return `Sent to ${fmt.venueName(d.venue)}, tx ${fmt.shortHash(d.txHash)}`;
    case "confirmed":
      return `Filled on ${fmt.venueName(d.venue)}: ${fmt.amount(d.amountOut, out)} ${out} at ${fmt.price(d.executedPrice)}`;
    case "retrying":
      return `Attempt ${d.attempt ?? event.attempt} failed (${d.error ? `${d.error.code}: ${d.error.message}` : "?"}); ` +
             `retry in ${fmt.duration(d.retryInMs)}`;
    case "failed":
      return d.error ? `${d.error.code}: ${d.error.message}` : "Failed";
    case "cancelled":
      return d.reason || "Cancelled";
    default:
      return "";
  }
}

export { TERMINAL };
