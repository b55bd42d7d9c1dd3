// The dashboard's wiring: the orders table fed by GET /api/orders and the stream socket,
// the venue prices, the order form, the connection state and the API key in the header.

import { api } from "./api.js";
import { forgetKey, getKey, KeyRefused, keyEvents, needsKey, promptForKey } from "./auth.js";
import { $, fill, h } from "./dom.js";
import { OrderForm } from "./form.js";
import { OrderBoard, TERMINAL } from "./orders.js";
import { OrderStream } from "./stream.js";
import { VenuePanel } from "./venues.js";

const PAGE = 50;
const STALE_CHECK_MS = 10_000;

const board = new OrderBoard($("#orders-table"), { onChange: showSummary });
let olderCursor;          // `next` of the last page read going back; null when there is none
let connection = { state: "connecting" };

// --- orders -----------------------------------------------------------------------------

async function loadRecent() {
  try {
    const { data } = await api(`/api/orders?limit=${PAGE}`);
    board.addSnapshots(data.orders);
    if (olderCursor === undefined) olderCursor = data.next;
  } catch (error) {
    board.loadError = error;
  }
  showSummary();
}

async function loadOlder() {
  if (!olderCursor) return;
  const button = $("#load-older");
  button.disabled = true;
  try {
    const { data } = await api(`/api/orders?limit=${PAGE}&before=${encodeURIComponent(olderCursor)}`);
    board.addSnapshots(data.orders);
    olderCursor = data.next;
  } catch (error) {
    board.loadError = error;
  } finally {
    button.disabled = false;
    showSummary();
  }
}

function showSummary() {
  const counts = board.counts();
  const chips = [
    ["in flight", counts.inFlight, "live"], ["confirmed", counts.confirmed, "confirmed"],
    ["failed", counts.failed, "failed"], ["cancelled", counts.cancelled, "cancelled"],
  ].filter(([, n], i) => n > 0 || i < 2);
  fill($("#order-counts"), board.rows.size
    ? chips.map(([label, n, kind]) =>
        h("span", { class: "count", dataset: { kind } }, h("strong", {}, String(n)), ` ${label}`))
    : null);

  const empty = $("#orders-empty");
  const hasRows = board.rows.size > 0;
  empty.hidden = hasRows;
  if (!hasRows) {
    if (board.loadError instanceof KeyRefused) {
      empty.dataset.state = "key";
      $("#orders-empty-title").textContent = "An API key is needed";
      $("#orders-empty-text").textContent = "This server shows orders to the holder of a key: " +
        "use \u201cEnter API key\u201d at the top.";
    } else if (board.loadError) {
      empty.dataset.state = "error";
      $("#orders-empty-title").textContent = "The orders could not be loaded";
      $("#orders-empty-text").textContent =
        `${board.loadError.message} The page tries again when the connection is back.`;
    } else if (board.loaded) {
      empty.dataset.state = "empty";
      $("#orders-empty-title").textContent = "No orders yet";
      fill($("#orders-empty-text"),
        "Place one with the form: it appears here at once and updates live as it is routed, sent and " +
        "confirmed. Orders placed elsewhere show up too, e.g. ", h("code", {}, "orderengine order SOL USDC 1"),
        " or ", h("code", {}, "POST /api/orders/execute"), ".");
    }
  }
  $("#load-older").hidden = !hasRows || !olderCursor || board.trimmed;
}

/** Pub/sub is at most once: an order in flight that has gone quiet is read again. */
function checkStale() {
  const quiet = [...board.rows.values()].some((row) => !TERMINAL.has(row.order.status)
    && Date.now() - Date.parse(row.order.updatedAt) > STALE_CHECK_MS);
  if (quiet && connection.state === "live") loadRecent();
}

// --- the header ---------------------------------------------------------------------------

function showConnection(next) {
  connection = next;
  renderConnection();
}

function renderConnection() {
  const el = $("#connection");
  const { state, retryAt, message } = connection;
  el.dataset.state = state;
  let text = "Connecting…";
  if (state === "live") text = "Live";
  else if (state === "key") text = "API key needed";
  else if (state === "reconnecting") {
    const seconds = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
    text = seconds ? `Reconnecting in ${seconds} s` : "Reconnecting…";
  }
  $("#connection-text").textContent = text;
  el.title = message || (state === "live" ? "Following every order over /api/orders/stream" : "");
}

function showKey() {
  const key = getKey();
  $("#key-state").hidden = !key;
  $("#key-hint").textContent = key ? `\u2022\u2022\u2022\u2022${key.slice(-4)}` : "";
  $("#enter-key").hidden = Boolean(key) || !needsKey();
}

// --- start --------------------------------------------------------------------------------

const stream = new OrderStream({
  onEvent: (event) => board.applyEvent(event, true),
  onSubscribed: () => loadRecent(),     // whatever happened while the socket was away
  onState: showConnection,
});

const form = new OrderForm($("#order-form"), {
  onPlaced: (orderId, request) => board.addPlaced(orderId, request),
});

const venues = new VenuePanel({
  prices: $("#venue-prices"), chart: $("#spread-chart"), legend: $("#spread-legend"),
  updated: $("#venues-updated"), onPrices: (pairs) => form.setPairs(pairs),
});

$("#load-older").addEventListener("click", loadOlder);
$("#forget-key").addEventListener("click", () => {
  forgetKey();
  // the orders shown were that key's: start again as a caller without one
  board.clear();
  olderCursor = undefined;
  showSummary();
  stream.reconnectNow();
  loadRecent();
});
$("#enter-key").addEventListener("click", () => {
  promptForKey().then(() => { stream.reconnectNow(); loadRecent(); }, () => {});
});
keyEvents.addEventListener("change", showKey);

showKey();
loadRecent();
stream.start();
venues.start();
setInterval(renderConnection, 500);
setInterval(checkStale, STALE_CHECK_MS / 2);
