// LiveTrainer front end: Start / Stop / Resume, progress bar, loss and accuracy curves (SVG),
// parameter counts, W heatmap and per-core gradient norms.
//
// Traits read: status, message, progress, epoch, target_epochs, step, total_steps, curves,
// info, weight_image, grad_norms, error. Messages: {action: "start" | "stop" | "resume"}.
// Shared helpers (el, svg, setup, wire) come from common.js through `loadCommon`.

let el, svg;

async function loadCommon(model) {
  const src = model.get("_common_js");
  const cache = (globalThis.__adntnCommon ??= new Map());
  if (!cache.has(src)) cache.set(src, import(URL.createObjectURL(new Blob([src], { type: "text/javascript" }))));
  return cache.get(src);
}

function niceTicks(lo, hi, n = 4, integer = false) {
  if (!(hi > lo)) return [lo];
  const raw = Math.max((hi - lo) / n, integer ? 1 : 0);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = (integer ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10]).map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-12; v += step) out.push(+v.toPrecision(6));
  return out;
}

// A small line chart: series = [{xs, ys, color, label, dots, dash}]
function lineChart(target, series, { width = 380, height = 200, xlabel = "", ylabel = "", ymin, ymax, integerX = false } = {}) {
  const m = { l: 46, r: 10, t: 22, b: 30 };
  const pts = series.flatMap((s) => s.xs.map((x, i) => [x, s.ys[i]])).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "adntn-chart" });
  chart.append(svg("rect", { x: m.l, y: m.t, width: width - m.l - m.r, height: height - m.t - m.b, class: "adntn-plot-bg" }));
  if (!pts.length) {
    chart.append(svg("text", { x: width / 2, y: height / 2, class: "adntn-empty", text: "no data yet" }));
    target.replaceChildren(chart);
    return;
  }
  let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  let [y0, y1] = [ymin ?? Math.min(...pts.map((p) => p[1])), ymax ?? Math.max(...pts.map((p) => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y1 += 0.5; y0 -= 0.5; }
  const sx = (x) => m.l + (x - x0) / (x1 - x0) * (width - m.l - m.r);
  const sy = (y) => height - m.b - (y - y0) / (y1 - y0) * (height - m.t - m.b);
  for (const t of niceTicks(y0, y1)) {
    chart.append(svg("line", { x1: m.l, x2: width - m.r, y1: sy(t), y2: sy(t), class: "adntn-grid" }));
    chart.append(svg("text", { x: m.l - 4, y: sy(t) + 3, class: "adntn-tick adntn-tick-y", text: t }));
  }
  for (const t of niceTicks(x0, x1, 4, integerX)) chart.append(svg("text", { x: sx(t), y: height - m.b + 12, class: "adntn-tick", text: t }));
  chart.append(svg("text", { x: (m.l + width - m.r) / 2, y: height - 3, class: "adntn-axis-label", text: xlabel }));
  chart.append(svg("text", { x: 10, y: (m.t + height - m.b) / 2, class: "adntn-axis-label", transform: `rotate(-90 10 ${(m.t + height - m.b) / 2})`, text: ylabel }));
  let lx = m.l + 4;
  for (const s of series) {
    const p = s.xs.map((x, i) => [x, s.ys[i]]).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    if (!p.length) continue;
    if (p.length > 1 || !s.dots) chart.append(svg("polyline", { points: p.map(([x, y]) => `${sx(x)},${sy(y)}`).join(" "), fill: "none", stroke: s.color, "stroke-width": s.width || 1.6, "stroke-dasharray": s.dash || null }));
    if (s.dots) for (const [x, y] of p) chart.append(svg("circle", { cx: sx(x), cy: sy(y), r: 2.8, fill: s.color }));
    chart.append(svg("rect", { x: lx, y: 6, width: 10, height: 4, fill: s.color }));
    const label = svg("text", { x: lx + 13, y: 12, class: "adntn-legend-text", text: s.label });
    chart.append(label);
    lx += 20 + 6.2 * s.label.length;
  }
  target.replaceChildren(chart);
}

async function render({ model, el: root }) {
  const common = await loadCommon(model);
  ({ el, svg } = common);
  const { error, connection } = common.setup(model, root, "trainer", { onConnection: () => showStatus() });
  const send = (action) => connection.send({ action });
  const startBtn = el("button", { text: "▶ Start", "data-testid": "trainer-start", onclick: () => send("start") });
  const stopBtn = el("button", { text: "■ Stop", "data-testid": "trainer-stop", onclick: () => send("stop") });
  const resumeBtn = el("button", { text: "↻ Resume", "data-testid": "trainer-resume", onclick: () => send("resume") });
  const status = el("span", { class: "adntn-status", "data-testid": "trainer-status" });
  const message = el("span", { class: "adntn-message", "data-testid": "trainer-message" });
  const bar = el("div", { class: "adntn-bar-fill" });
  const progressText = el("div", { class: "adntn-progress-text", "data-testid": "trainer-progress" });
  const info = el("div", { class: "adntn-info", "data-testid": "trainer-info" });
  const lossChart = el("div", { class: "adntn-chart-box", "data-testid": "loss-chart" });
  const accChart = el("div", { class: "adntn-chart-box", "data-testid": "acc-chart" });
  const weight = el("img", { class: "adntn-weight", alt: "generated weight W", "data-testid": "weight-image" });
  const weightTitle = el("div", { class: "adntn-panel-title" });
  const grads = el("div", { class: "adntn-grads", "data-testid": "grad-norms" });

  root.append(
    el("div", { class: "adntn-row adntn-toolbar" }, startBtn, stopBtn, resumeBtn, status, message),
    el("div", { class: "adntn-bar" }, bar), progressText,
    el("div", { class: "adntn-cols" },
      el("div", { class: "adntn-col" }, lossChart, accChart),
      el("div", { class: "adntn-col adntn-side" }, info, weightTitle, weight, el("div", { class: "adntn-panel-title", text: "gradient norm per core (log scale)" }), grads)),
    error.node,
  );

  function showStatus() {
    const s = connection.lost() ? "disconnected" : model.get("status");
    status.textContent = s;
    status.className = `adntn-status adntn-status-${s}`;
    message.textContent = model.get("message") || "";
    if (s === "disconnected") message.textContent = "the kernel behind this widget is gone";
    const running = s === "running" || s === "stopping";
    startBtn.disabled = running || s === "stopped" || s === "disconnected";
    stopBtn.disabled = !running;
    resumeBtn.disabled = running || s !== "stopped";
    const p = model.get("progress") || 0;
    bar.style.width = `${(100 * p).toFixed(1)}%`;
    progressText.textContent = `epoch ${model.get("epoch")} / ${model.get("target_epochs")} · step ${model.get("step")} / ${model.get("total_steps")} · ${(100 * p).toFixed(1)}%`;
    error.update();
  }

  function showInfo() {
    const i = model.get("info") || {};
    const pct = (x) => (x === null || x === undefined ? "–" : x.toLocaleString());
    info.replaceChildren(
      el("div", { class: "adntn-kv" }, el("span", { text: "parameters" }), el("b", { text: pct(i.params), "data-testid": "trainer-params" })),
      el("div", { class: "adntn-kv" }, el("span", { text: "dense equivalent" }), el("b", { text: pct(i.dense_params) })),
      el("div", { class: "adntn-kv" }, el("span", { text: "compression" }), el("b", { text: i.compression ? `${i.compression.toFixed(2)}×` : "–", "data-testid": "trainer-compression" })),
      ...(i.layers || []).map((l) => el("div", { class: "adntn-layer" }, `${l.name}: ${l.family} ${l.shape.join("×")}, ${l.params.toLocaleString()} params (${l.ratio.toFixed(1)}×)`)),
    );
    weightTitle.textContent = i.weight_layer ? `W of ${i.weight_layer}` : "";
  }

  function showCurves() {
    const c = model.get("curves") || {};
    const nb = c.batches_per_epoch || 1;
    const epochX = (c.epoch || []).map((e) => e * nb);
    lineChart(lossChart, [
      { xs: c.step || [], ys: c.step_loss || [], color: "#9ecae1", label: "step loss", width: 1.2 },
      { xs: epochX, ys: c.train_loss || [], color: "#1f77b4", label: "train (epoch)", dots: true },
      { xs: epochX, ys: c.test_loss || [], color: "#ff7f0e", label: "test", dots: true, dash: "4 3" },
    ], { xlabel: "step", ylabel: "cross-entropy", integerX: true, ymin: 0 });
    lineChart(accChart, [
      { xs: c.epoch || [], ys: c.train_acc || [], color: "#1f77b4", label: "train acc", dots: true },
      { xs: c.epoch || [], ys: c.test_acc || [], color: "#ff7f0e", label: "test acc", dots: true },
    ], { xlabel: "epoch", ylabel: "accuracy", ymin: 0, ymax: 1, integerX: true });
  }

  function showImages() {
    weight.src = model.get("weight_image") || "";
    weight.style.display = model.get("weight_image") ? "" : "none";
    const g = model.get("grad_norms") || {};
    const names = g.names || [], values = g.values || [];
    const finite = values.filter((v) => v !== null && v > 0);
    if (!names.length || !finite.length) { grads.replaceChildren(el("div", { class: "adntn-empty-text", text: "gradients appear after the first step" })); return; }
    const lo = Math.log10(Math.min(...finite)) - 0.3, hi = Math.log10(Math.max(...finite)) + 0.1;
    const rowH = 13, width = 300, left = 92;
    const chart = svg("svg", { viewBox: `0 0 ${width} ${names.length * rowH + 4}`, width, height: names.length * rowH + 4, class: "adntn-chart" });
    names.forEach((n, i) => {
      const v = values[i];
      const w = v > 0 ? (Math.log10(v) - lo) / Math.max(hi - lo, 1e-9) * (width - left - 50) : 0;
      chart.append(svg("text", { x: left - 4, y: i * rowH + 10, class: "adntn-bar-label", text: n.length > 16 ? "…" + n.slice(-15) : n }));
      chart.append(svg("rect", { x: left, y: i * rowH + 2, width: Math.max(w, 1), height: rowH - 4, fill: "#2ca02c" }));
      chart.append(svg("text", { x: left + w + 3, y: i * rowH + 10, class: "adntn-bar-value", text: v === null ? "–" : v.toExponential(1) }));
    });
    grads.replaceChildren(chart);
    if (g.omitted) grads.append(el("div", { class: "adntn-empty-text", text: `${g.omitted} more not shown` }));
  }

  const unwire = common.wire(model, {
    "change:status": showStatus, "change:message": showStatus, "change:progress": showStatus,
    "change:step": showStatus, "change:epoch": showStatus, "change:error": showStatus,
    "change:target_epochs": showStatus, "change:total_steps": showStatus,
    "change:info": showInfo, "change:curves": showCurves,
    "change:weight_image": showImages, "change:grad_norms": showImages,
  });
  showStatus(); showInfo(); showCurves(); showImages();
  return () => { unwire(); connection.dispose(); };
}

export default { render };
