// The API key, for a server started with AUTH=keys. Asked for once, when a request is
// answered 401 (or the socket is closed with 4401), kept in this browser's localStorage,
// sent as `Authorization: Bearer <key>` on HTTP and as `?apiKey=<key>` on the socket
// (a browser cannot set headers on a WebSocket). With AUTH=off nothing asks, nothing is kept.

import { $ } from "./dom.js";

const STORAGE_KEY = "orderengine.apiKey";

/** Fires "change" when the key is saved or forgotten. */
export const keyEvents = new EventTarget();

export function getKey() {
  try {
    return localStorage.getItem(STORAGE_KEY) || "";
  } catch {
    return "";  // storage disabled: the page works without a key
  }
}

function setKey(key) {
  try {
    if (key) localStorage.setItem(STORAGE_KEY, key);
    else localStorage.removeItem(STORAGE_KEY);
  } catch { /* storage disabled */ }
  keyEvents.dispatchEvent(new Event("change"));
}

export function forgetKey() {
  setKey("");
}

export class KeyRefused extends Error {
  constructor() {
    super("An API key is needed.");
    this.code = "UNAUTHORIZED";
  }
}

let asking = null;
let declined = false;   // "Not now": stop asking until the person clicks "Enter API key"

/**
 * A request sent with `sentKey` was refused. Resolves once there is another key to try
 * (at once if the key changed meanwhile); rejects with KeyRefused if the person declines.
 * However many requests are refused at once, the dialog opens once.
 */
export function askForKey(sentKey) {
  const current = getKey();
  if (current && current !== sentKey) return Promise.resolve(current);
  if (sentKey && current === sentKey) setKey("");   // refused: do not send it again
  if (declined && !asking) return Promise.reject(new KeyRefused());
  return ask(Boolean(sentKey));
}

/** The header's "Enter API key": ask again after a "Not now". */
export function promptForKey() {
  declined = false;
  return ask(false);
}

export const needsKey = () => declined;

function ask(refused) {
  if (!asking) {
    asking = openDialog(refused).then(
      (key) => { declined = false; return key; },
      (error) => { declined = true; keyEvents.dispatchEvent(new Event("change")); throw error; },
    ).finally(() => { asking = null; });
  }
  return asking;
}

function openDialog(refused) {
  const dialog = $("#key-dialog");
  const form = $("#key-form");
  const input = $("#key-input");
  $("#key-reason").textContent = refused
    ? "The server refused the API key this page had. Enter another; it is kept in this browser only."
    : "This server asks for an API key. It is kept in this browser only (localStorage) and sent with " +
      "every request; \u201cForget key\u201d in the header removes it.";
  input.value = "";
  return new Promise((resolve, reject) => {
    const done = (key) => {
      form.removeEventListener("submit", onSubmit);
      $("#key-cancel").removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      if (dialog.open) dialog.close();
      if (key) {
        setKey(key);
        resolve(key);
      } else {
        reject(new KeyRefused());
      }
    };
    const onSubmit = (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (key) done(key);
      else input.focus();
    };
    const onCancel = (event) => {
      event.preventDefault();
      done("");
    };
    form.addEventListener("submit", onSubmit);
    $("#key-cancel").addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
    input.focus();
  });
}
