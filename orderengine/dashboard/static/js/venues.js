// The venues' prices side by side (GET /api/venues, every 1.5 s), and a small hand-drawn
// SVG chart of the spread between them over the last five minutes. The spread of a pair
// is (highest mid price − lowest) / lowest, in basis points: what routing to the better
// venue is worth before fees and price impact.

import { api } from "./api.js";
import { KeyRefused } from "./auth.js";
import { fill, h, svg } from "./dom.js";
import * as fmt from "./format.js";

const POLL_MS = 1500;
const WINDOW_MS = 5 * 60_000;
const MIN_SPAN_MS = 20_000;     // a fresh page spreads what it has across the whole width
const CHART_HEIGHT = 132;
const PAD = { left: 34, right: 8, top: 10, bottom: 18 };

export class VenuePanel {
  constructor({ prices, chart, legend, updated, onPrices }) {
    this.el = { prices, chart, legend, updated };
    this.onPrices = onPrices || (() => {});
    this.last = new Map();       // "pair|venue" -> previous midPrice, for the up/down flash
    this.history = [];           // [{t, spreads: {pair: bps}}]
    this.pairs = [];             // pair names in a stable order, for the chart's colours
    new ResizeObserver(() => this.drawChart()).observe(chart);
  }

  start() {
    this.poll();
  }

  async poll() {
    try {
      const { data } = await api("/api/venues");
      this.show(data.venues || []);
    } catch (error) {
      const text = error instanceof KeyRefused ? "Prices need an API key." : `Prices unavailable: ${error.message}`;
      this.el.updated.textContent = "";
      if (!this.history.length) fill(this.el.prices, h("p", { class: "empty-inline" }, text));
      else this.el.updated.textContent = "stale";
      this.el.updated.title = text;
    } finally {
      setTimeout(() => this.poll(), POLL_MS);
    }
  }

  show(venues) {
    const loaded = venues.filter((v) => v.status === "loaded");
    const names = loaded.map((v) => v.name);
    const pairs = new Map();     // "SOL/USDC" -> {tokens, byVenue: {venue: {mid, fee}}}
    for (const venue of loaded) {
      for (const pool of venue.pools || []) {
        const name = pool.tokens.join("/");
        if (!pairs.has(name)) pairs.set(name, { name, tokens: pool.tokens, byVenue: {} });
        const entry = pairs.get(name).byVenue;
        if (!(venue.name in entry)) entry[venue.name] = { mid: pool.midPrice, fee: pool.feePct };
      }
    }
    for (const name of pairs.keys()) if (!this.pairs.includes(name)) this.pairs.push(name);
    const now = Date.now();
    const spreads = {};
    for (const pair of pairs.values()) pair.spreadBps = spreads[pair.name] = spreadBps(pair.byVenue);
    this.history.push({ t: now, spreads });
    while (this.history.length && this.history[0].t < now - WINDOW_MS) this.history.shift();

    this.drawTable(names, [...pairs.values()], venues.filter((v) => v.status !== "loaded"));
    this.drawChart();
    this.el.updated.textContent = `updated ${fmt.clock(new Date(now).toISOString())}`;
    this.el.updated.title = "";
    this.onPrices([...pairs.values()]);
  }

  drawTable(names, pairs, broken) {
    if (!names.length) {
      fill(this.el.prices, h("p", { class: "empty-inline" },
        "No venue is loaded. Install a venue plugin (docs/venues.md) and restart the engine."),
        brokenNotes(broken));
      return;
    }
    const head = h("tr", {}, h("th", {}, "Pair"),
      names.map((n) => h("th", { class: "num" }, fmt.venueName(n))), h("th", { class: "num" }, "Spread"));
    const rows = pairs.map((pair) => {
      const mids = Object.values(pair.byVenue).map((v) => Number(v.mid));
      const best = mids.length > 1 ? Math.max(...mids) : null;
      return h("tr", { dataset: { pair: pair.name } },
        h("th", { scope: "row", class: "pair-name" }, pair.tokens[0], h("span", { class: "unit" }, ` / ${pair.tokens[1]}`)),
        names.map((venue) => {
          const quote = pair.byVenue[venue];
          if (!quote) return h("td", { class: "num muted" }, "—");
          const key = `${pair.name}|${venue}`;
          const before = this.last.get(key);
          this.last.set(key, quote.mid);
          const move = before == null || before === quote.mid ? null : Number(quote.mid) > Number(before) ? "up" : "down";
          return h("td", { class: ["num", "venue-price", Number(quote.mid) === best && "best"],
                           dataset: { venue, move: move || "" }, title: `${quote.mid} ${pair.tokens[1]} per ${pair.tokens[0]}` },
            h("span", { class: "mid" }, fmt.price(quote.mid)),
            h("span", { class: "fee" }, `fee ${fmt.fixed(quote.fee, 2)} %`));
        }),
        h("td", { class: "num spread" }, pair.spreadBps == null ? "—" : `${pair.spreadBps.toFixed(1)} bps`));
    });
    fill(this.el.prices, h("table", { class: "prices" }, h("thead", {}, head), h("tbody", {}, rows)),
      brokenNotes(broken));
  }

  drawChart() {
    const el = this.el.chart;
    const width = Math.max(200, Math.floor(el.clientWidth || 320));
    const height = CHART_HEIGHT;
    const now = this.history.length ? this.history[this.history.length - 1].t : Date.now();
    const first = this.history.length ? this.history[0].t : now;
    const span = Math.min(WINDOW_MS, Math.max(MIN_SPAN_MS, now - first));
    const start = now - span;
    let top = 0;
    for (const point of this.history) for (const v of Object.values(point.spreads)) if (v != null) top = Math.max(top, v);
    top = niceCeiling(top);
    const x = (t) => PAD.left + ((t - start) / span) * (width - PAD.left - PAD.right);
    const y = (v) => PAD.top + (1 - v / top) * (height - PAD.top - PAD.bottom);

    const grid = [0, top / 2, top].map((v) => [
      svg("line", { x1: PAD.left, x2: width - PAD.right, y1: y(v), y2: y(v), class: "grid" }),
      svg("text", { x: PAD.left - 6, y: y(v) + 3.5, class: "axis", "text-anchor": "end" }, trimNumber(v)),
    ]);
    const ticks = [[start, `−${minutes(span)}`], [start + span / 2, `−${minutes(span / 2)}`], [now, "now"]].map(([t, label], i) =>
      svg("text", { x: x(t), y: height - 4, class: "axis", "text-anchor": ["start", "middle", "end"][i] }, label));
    const lines = this.pairs.map((pair, i) => {
      const points = this.history.filter((p) => p.spreads[pair] != null)
        .map((p) => `${x(p.t).toFixed(1)},${y(p.spreads[pair]).toFixed(1)}`);
      if (!points.length) return null;
      const last = points[points.length - 1].split(",");
      return [svg("polyline", { points: points.join(" "), class: `series series-${i % 6}` }),
              svg("circle", { cx: last[0], cy: last[1], r: 2.6, class: `series-dot series-${i % 6}` })];
    });
    const empty = this.history.length < 2
      ? svg("text", { x: width / 2, y: height / 2, class: "axis", "text-anchor": "middle" }, "collecting prices…")
      : null;
    fill(el, svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
                          "aria-label": "Spread between venues over the last five minutes, in basis points" },
      grid, ticks, lines, empty));

    const latest = this.history.length ? this.history[this.history.length - 1].spreads : {};
    fill(this.el.legend, this.pairs.map((pair, i) => h("span", { class: "legend-item" },
      h("span", { class: `swatch series-${i % 6}` }), pair,
      h("span", { class: "legend-value" }, latest[pair] == null ? "—" : `${latest[pair].toFixed(1)} bps`))));
  }
}

function spreadBps(byVenue) {
  const mids = Object.values(byVenue).map((v) => Number(v.mid)).filter((m) => m > 0);
  if (mids.length < 2) return null;
  const low = Math.min(...mids);
  return ((Math.max(...mids) - low) / low) * 10_000;
}

/** 0.8 -> 1, 13 -> 20, 140 -> 200: a round top for the y axis. */
function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

const minutes = (ms) => (ms >= 60_000 ? `${trimNumber(ms / 60_000)} m` : `${Math.round(ms / 1000)} s`);

const trimNumber = (v) => (Number.isInteger(v) ? String(v) : v.toFixed(v < 1 ? 2 : 1).replace(/\.?0+$/, ""));

function brokenNotes(broken) {
  return broken.map((v) => h("p", { class: "venue-broken" },
    h("strong", {}, fmt.venueName(v.name)), ` ${v.status}: ${v.error || "no answer"}`));
}
