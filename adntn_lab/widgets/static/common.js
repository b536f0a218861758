// Shared helpers of the adntn_lab widgets. Python sends this file's text as every widget's
// `_common_js` trait; each widget module imports it with `loadCommon(model)` (a blob URL,
// imported once per page and text), so the modules stay plain files with no build step.

const SVGNS = "http://www.w3.org/2000/svg";
const PING_TIMEOUT_MS = 4000;

// Build an HTML element: attributes, `on<event>` listeners, `text`, children.
// Form fields get `data-lm-suppress-shortcuts` (their keys belong to them, not to
// JupyterLab) and number/text inputs apply on Enter as well as on blur.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  if (tag === "input" || tag === "select" || tag === "textarea") node.setAttribute("data-lm-suppress-shortcuts", "true");
  if (tag === "input" && (attrs.type === "number" || attrs.type === "text")) applyOnEnter(node);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) node.append(c);
  return node;
}

// Enter fires the field's "change" handlers (the browser only does so on blur).
export function applyOnEnter(input) {
  let applied = null;
  input.addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter" || ev.isComposing) return;
    ev.preventDefault();
    applied = input.value;
    input.dispatchEvent(new Event("change", { bubbles: true }));
  });
  // the blur that follows an applied Enter would repeat the same change: swallow it
  input.addEventListener("change", (ev) => {
    if (!ev.isTrusted) return;
    if (applied !== null && input.value === applied) ev.stopImmediatePropagation();
    applied = null;
  }, true);
}

export function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  return node;
}

// Subscribe `handlers` ({"change:x": fn, ...}); returns the function that unsubscribes them.
export function wire(model, handlers) {
  for (const [name, fn] of Object.entries(handlers)) model.on(name, fn);
  return () => { for (const [name, fn] of Object.entries(handlers)) model.off(name, fn); };
}

// The red banner that shows the `error` trait; `update()` re-reads it.
export function errorBanner(model, testid) {
  const node = el("div", { class: "adntn-error", "data-testid": testid });
  const update = () => {
    const err = model.get("error");
    node.textContent = err || "";
    node.style.display = err ? "" : "none";
  };
  update();
  return { node, update };
}

// The busy sign: a spinner and the `busy` trait's text, hidden when it is empty.
export function busySign(model, testid) {
  const text = el("span", {});
  const node = el("span", { class: "adntn-busy", "data-testid": testid, role: "status" }, el("span", { class: "adntn-spinner" }), text);
  const update = () => {
    const b = model.get("busy") || "";
    text.textContent = b;
    node.style.display = b ? "" : "none";
  };
  update();
  return { node, update };
}

// Add the shared stylesheet (the `_common_css` trait) to the page once.
export function ensureStyles(model) {
  const css = model.get("_common_css") || "";
  let style = document.getElementById("adntn-base-css");
  if (!style) {
    style = document.createElement("style");
    style.id = "adntn-base-css";
    document.head.append(style);
  }
  if (style.textContent !== css) style.textContent = css;
}

// Tell a live kernel from a gone one. Python answers {action: "ping"} with {pong: n}.
// A ping goes out when ipywidgets reports that the comm went down (kernel restart or
// shutdown) and after every action sent with `connection.send`; no answer within a few
// seconds shows the disconnected state (controls inert, a banner saying why). A late answer
// brings the widget back. Returns {send, lost, banner, dispose}.
export function watchConnection(model, root, { onChange } = {}) {
  const banner = el("div", { class: "adntn-disconnected", "data-testid": "disconnected", role: "alert" });
  banner.style.display = "none";
  let lost = false, n = 0, waiting = null, timer = null;
  const setLost = (why) => {
    lost = !!why;
    root.classList.toggle("adntn-is-disconnected", lost);
    banner.textContent = why || "";
    banner.style.display = lost ? "" : "none";
    onChange?.(lost);
  };
  const ping = (why) => {
    const k = ++n;
    waiting = k;
    clearTimeout(timer);
    try { model.send({ action: "ping", n: k }); } catch (e) { setLost(why); return; }
    timer = setTimeout(() => { if (waiting === k) setLost(why); }, PING_TIMEOUT_MS);
  };
  const onMsg = (msg) => {
    if (msg && msg.pong !== undefined) {
      if (msg.pong === waiting) { waiting = null; clearTimeout(timer); }
      if (lost) setLost("");
    }
  };
  const gone = "disconnected: the kernel was restarted or shut down — run the cell again to get a live widget";
  const onComm = () => ping(gone);
  const onClose = () => setLost("disconnected: this widget was closed in the kernel — run the cell again");
  model.on("msg:custom", onMsg);
  model.on("comm_live_update", onComm);
  model.on("comm:close", onClose);
  model.on("destroy", onClose);
  const send = (content) => {
    if (lost) return false;
    try { model.send(content); } catch (e) { setLost(gone); return false; }
    ping("no answer from the kernel: it is busy, was restarted or has stopped");
    return true;
  };
  const dispose = () => {
    clearTimeout(timer);
    model.off("msg:custom", onMsg);
    model.off("comm_live_update", onComm);
    model.off("comm:close", onClose);
    model.off("destroy", onClose);
  };
  return { send, banner, dispose, lost: () => lost };
}

// Everything a widget's render starts with: the styles, the root class, the error banner and
// the connection watcher (its banner first in the root).
export function setup(model, root, name, { onConnection } = {}) {
  ensureStyles(model);
  root.classList.add("adntn-widget", `adntn-${name}`);
  const error = errorBanner(model, `${name}-error`);
  const connection = watchConnection(model, root, { onChange: onConnection });
  root.append(connection.banner);
  return { error, connection };
}
