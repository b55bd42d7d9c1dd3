// The order form: POST /api/orders/execute with an Idempotency-Key per submission. The
// server validates (one set of rules, one set of messages): its `fields` are shown next
// to their inputs. A submission that got no answer (network, 5xx) keeps its key, so
// pressing the button again cannot place the order twice; any other outcome, or a change
// to the order, starts a new one.

import { ApiError, api, newIdempotencyKey } from "./api.js";
import { KeyRefused } from "./auth.js";
import { $ } from "./dom.js";
import * as fmt from "./format.js";

const FIELDS = ["tokenIn", "tokenOut", "amountIn", "slippageBps", "clientOrderId"];

export class OrderForm {
  constructor(form, { onPlaced }) {
    this.form = form;
    this.onPlaced = onPlaced;
    this.pairs = [];
    this.pendingKey = null;     // { key, body } of a submission whose outcome is unknown
    this.busy = false;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    form.addEventListener("input", (event) => {
      this.clearError(event.target.name);
      this.refreshHints();
    });
    $("#swap-tokens").addEventListener("click", () => {
      const a = this.input("tokenIn");
      const b = this.input("tokenOut");
      [a.value, b.value] = [b.value, a.value];
      this.clearError("tokenIn");
      this.clearError("tokenOut");
      this.refreshHints();
    });
    this.refreshHints();
  }

  input(name) {
    return this.form.elements.namedItem(name);
  }

  /** The body exactly as typed: the server, not the page, decides what is valid. */
  body() {
    const value = (name) => this.input(name).value.trim();
    const body = { type: "MARKET", tokenIn: value("tokenIn"), tokenOut: value("tokenOut") };
    if (value("amountIn")) body.amountIn = value("amountIn");
    const slippage = value("slippageBps");
    if (slippage) body.slippageBps = /^\d+$/.test(slippage) ? Number(slippage) : slippage;
    if (value("clientOrderId")) body.clientOrderId = value("clientOrderId");
    return body;
  }

  async submit() {
    if (this.busy) return;
    const body = this.body();
    const text = JSON.stringify(body);
    const key = this.pendingKey && this.pendingKey.body === text ? this.pendingKey.key : newIdempotencyKey();
    this.pendingKey = null;
    this.clearErrors();
    this.setBusy(true);
    try {
      const { data } = await api("/api/orders/execute", {
        method: "POST", body, headers: { "Idempotency-Key": key },
      });
      this.onPlaced(data.orderId, body);
      this.note(`Placed ${data.orderId.slice(0, 8)}.`);
    } catch (error) {
      this.showError(error);
      const unknownOutcome = error instanceof ApiError && (error.status === 0 || error.status >= 500
                                                           || error.code === "IDEMPOTENCY_KEY_IN_USE");
      if (unknownOutcome) this.pendingKey = { key, body: text };
    } finally {
      this.setBusy(false);
    }
  }

  showError(error) {
    if (error instanceof KeyRefused) {
      this.formError("Placing an order needs an API key: use \u201cEnter API key\u201d at the top.");
      return;
    }
    const leftover = [];
    for (const [field, messages] of Object.entries(error.fields || {})) {
      const slot = FIELDS.includes(field) && this.form.querySelector(`[data-error-for="${field}"]`);
      if (slot) {
        slot.textContent = messages.join(" ");
        slot.closest(".field").classList.add("invalid");
        this.input(field).setAttribute("aria-invalid", "true");
      } else {
        leftover.push(field === "_schema" ? messages.join(" ") : `${field}: ${messages.join(" ")}`);
      }
    }
    if (!error.fields || leftover.length) {
      this.formError([error.message, ...leftover].join(" "));
    }
    const first = this.form.querySelector(".field.invalid input");
    if (first) first.focus();
  }

  clearError(name) {
    const slot = name && this.form.querySelector(`[data-error-for="${name}"]`);
    if (!slot) return;
    slot.textContent = "";
    slot.closest(".field").classList.remove("invalid");
    this.input(name).removeAttribute("aria-invalid");
  }

  clearErrors() {
    FIELDS.forEach((name) => this.clearError(name));
    this.formError("");
  }

  formError(text) {
    const el = $("#form-error");
    el.textContent = text;
    el.classList.remove("ok");
  }

  note(text) {
    const el = $("#form-error");
    el.textContent = text;
    el.classList.add("ok");
  }

  setBusy(busy) {
    this.busy = busy;
    const button = $("#submit-order");
    button.disabled = busy;
    button.textContent = busy ? "Placing…" : "Place order";
  }

  /** Called with each new set of venue prices. */
  setPairs(pairs) {
    this.pairs = pairs;
    this.refreshHints();
  }

  refreshHints() {
    const tokenIn = this.input("tokenIn").value.trim().toUpperCase();
    const tokenOut = this.input("tokenOut").value.trim().toUpperCase();
    $("#amount-unit").textContent = tokenIn;
    const bps = this.input("slippageBps").value.trim();
    $("#slippage-pct").textContent = /^\d+$/.test(bps) ? `${(Number(bps) / 100).toFixed(2)} %` : "";
    $("#estimate").textContent = this.estimate(tokenIn, tokenOut, this.input("amountIn").value.trim());
  }

  /** "≈ 376.23 USDC at Meteora's mid price": a guide only (floats); the quotes decide. */
  estimate(tokenIn, tokenOut, amountText) {
    const amount = Number(amountText);
    if (!/^\d*\.?\d+$/.test(amountText) || !(amount > 0)) {
      return "Every venue is asked for a quote when the order is routed; the best net amount out wins.";
    }
    let best = null;
    for (const pair of this.pairs) {
      const [a, b] = pair.tokens;
      if (!((a === tokenIn && b === tokenOut) || (a === tokenOut && b === tokenIn))) continue;
      for (const [venue, { mid }] of Object.entries(pair.byVenue)) {
        const out = a === tokenIn ? amount * Number(mid) : amount / Number(mid);
        if (Number.isFinite(out) && (!best || out > best.out)) best = { out, venue };
      }
    }
    if (!best) return "";
    const text = best.out.toFixed(9).replace(/0+$/, "").replace(/\.$/, "");
    return `\u2248 ${fmt.amount(text, tokenOut)} ${tokenOut} at ${fmt.venueName(best.venue)}\u2019s mid price, ` +
           "before fees and price impact";
  }
}
