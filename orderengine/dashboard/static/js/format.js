// Numbers and times for people. Amounts arrive as exact decimal strings; they are rounded
// here on their digits (BigInt), never through a float, so what is shown is what was sent.

const DISPLAY_DECIMALS = { SOL: 4, USDC: 2, USDT: 2 };
const DECIMAL = /^(-?)(\d+)(?:\.(\d+))?$/;

/** "1234.56789", 2 -> "1,234.57": half-up rounding, grouped, exactly `places` decimals. */
export function fixed(text, places) {
  const m = DECIMAL.exec(String(text ?? "").trim());
  if (!m) return String(text ?? "");
  const [, sign, int, frac = ""] = m;
  let digits = BigInt(int + frac.padEnd(places, "0").slice(0, places));
  if (frac.length > places && frac[places] >= "5") digits += 1n;
  const padded = digits.toString().padStart(places + 1, "0");
  const whole = padded.slice(0, padded.length - places).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const part = places ? "." + padded.slice(padded.length - places) : "";
  const isZero = digits === 0n;
  return (sign && !isZero ? "-" : "") + whole + part;
}

/** Decimals that show a value's first significant digits when it is below 1. */
function placesFor(text, atLeast, significant) {
  const m = DECIMAL.exec(String(text ?? "").trim());
  if (!m) return atLeast;
  const [, , int, frac = ""] = m;
  if (BigInt(int) !== 0n) return Math.max(atLeast, significant - int.replace(/^0+/, "").length);
  const zeros = frac.length - frac.replace(/^0+/, "").length;
  if (zeros === frac.length) return atLeast;
  return Math.min(12, Math.max(atLeast, zeros + 4));
}

/** An amount of a token, rounded for a table: SOL to 4 places, stablecoins to 2; tiny ones keep 4 digits. */
export function amount(text, token) {
  if (text == null || text === "") return "";
  const base = DISPLAY_DECIMALS[String(token).toUpperCase()] ?? 4;
  const shown = fixed(text, placesFor(text, base, 0));
  // a tiny amount keeps its first digits, without zeros padded after them
  const [whole, part = ""] = shown.split(".");
  const kept = part.length > base ? part.replace(/0+$/, "").padEnd(base, "0") : part;
  return kept ? `${whole}.${kept}` : whole;
}

/** A price: about seven significant digits (150.1603, 1.000455, 0.006681). */
export function price(text) {
  if (text == null || text === "") return "";
  return fixed(text, placesFor(text, 2, 7));
}

export function percent(text) {
  return text == null ? "" : fixed(text, 2) + " %";
}

/** A duration in ms: "412 ms", "1.87 s", "1 m 05 s". */
export function duration(ms) {
  if (ms == null || !Number.isFinite(ms)) return "";
  ms = Math.max(0, ms);
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 10_000) return `${(ms / 1000).toFixed(2)} s`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.floor(ms / 1000);
  return `${Math.floor(s / 60)} m ${String(s % 60).padStart(2, "0")} s`;
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

/** Local wall-clock time of an ISO timestamp: "10:52:50", with ".436" when `ms`. */
export function clock(iso, ms = false) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const text = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return ms ? `${text}.${pad(d.getMilliseconds(), 3)}` : text;
}

/** "today" stays implicit; an older order shows its date too. */
export function placed(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return clock(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock(iso)}`;
}

/** "22MLFh…oocW": enough of a transaction hash to recognise it. */
export function shortHash(text, head = 6, tail = 4) {
  if (!text) return "";
  return text.length <= head + tail + 1 ? text : `${text.slice(0, head)}…${text.slice(-tail)}`;
}

export const venueName = (name) => (name ? name.charAt(0).toUpperCase() + name.slice(1) : "");
