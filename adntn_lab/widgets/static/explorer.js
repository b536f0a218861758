// CompressionExplorer front end: sweep settings, Run / Stop, accuracy-vs-parameters scatter
// (log x) with the Pareto front, and the selected point's configuration.
//
// Traits read: points, front, groups, view, selection, settings, status, message, choices,
// error. Traits written: selected, settings, view. Messages: {action: "run"}, {action: "stop"}.
// The plot shows the points of one experiment (`view`: dataset · model · layer · width) only.
// Shared helpers (el, svg, setup, wire) come from common.js through `loadCommon`.

let el, svg;

async function loadCommon(model) {
  const src = model.get("_common_js");
  const cache = (globalThis.__adntnCommon ??= new Map());
  if (!cache.has(src)) cache.set(src, import(URL.createObjectURL(new Blob([src], { type: "text/javascript" }))));
  return cache.get(src);
}

const COLORS = { ttn: "#1f77b4", attn: "#17becf", mera: "#9467bd", brickwall: "#2ca02c",
  custom: "#8c564b", mpo: "#ff7f0e", lowrank: "#d62728", dense: "#222222" };
const WIDTH = 620;
const HEIGHT = 360;

function marker(p, x, y, r) {
  const color = COLORS[p.family] || "#7f7f7f";
  if (p.kind === "dense") {
    const pts = [];
    for (let i = 0; i < 10; i++) {
      const a = -Math.PI / 2 + i * Math.PI / 5, rr = i % 2 ? r * 0.5 : r * 1.3;
      pts.push(`${x + rr * Math.cos(a)},${y + rr * Math.sin(a)}`);
    }
    return svg("polygon", { points: pts.join(" "), fill: color });
  }
  if (p.family === "mpo") return svg("rect", { x: x - r, y: y - r, width: 2 * r, height: 2 * r, fill: color });
  if (p.family === "lowrank") return svg("polygon", { points: `${x},${y - r * 1.2} ${x + r * 1.1},${y + r * 0.8} ${x - r * 1.1},${y + r * 0.8}`, fill: color });
  return svg("circle", { cx: x, cy: y, r, fill: color });
}

async function render({ model, el: root }) {
  const common = await loadCommon(model);
  ({ el, svg } = common);
  const { error, connection } = common.setup(model, root, "explorer");
  const familyBoxes = el("span", { class: "adntn-checks" });
  const baselineBoxes = el("span", { class: "adntn-checks" });
  const dataset = el("select", { "data-testid": "explorer-dataset" });
  const modelSel = el("select", { "data-testid": "explorer-model" });
  const layer = el("input", { type: "text", class: "adntn-short", "data-testid": "explorer-layer", title: "layers to compress, e.g. fc1 or fc1,fc2" });
  const hidden = el("input", { type: "number", min: 1, class: "adntn-num", "data-testid": "explorer-hidden", title: "FC-2 hidden width" });
  const budgets = el("input", { type: "text", class: "adntn-short", "data-testid": "explorer-budgets", title: "values of each family's knob: bond dimension χ, the rank of lowrank, the depth of brickwall" });
  const seeds = el("input", { type: "text", class: "adntn-short", "data-testid": "explorer-seeds", title: "seeds, e.g. 0,1,2" });
  const epochs = el("input", { type: "number", min: 1, class: "adntn-num", "data-testid": "explorer-epochs" });
  const knobs = el("span", { class: "adntn-hint", "data-testid": "explorer-knobs" });
  const runBtn = el("button", { text: "▶ Run sweep", "data-testid": "explorer-run", onclick: () => connection.send({ action: "run" }) });
  const stopBtn = el("button", { text: "■ Stop", "data-testid": "explorer-stop", onclick: () => connection.send({ action: "stop" }) });
  const status = el("span", { class: "adntn-message", "data-testid": "explorer-status" });
  const viewSel = el("select", { "data-testid": "explorer-view" });
  const plot = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, width: WIDTH, height: HEIGHT, class: "adntn-scatter", "data-testid": "explorer-plot" });
  const legend = el("div", { class: "adntn-legend" });
  const detail = el("div", { class: "adntn-detail", "data-testid": "explorer-selection" });
  const table = el("table", { class: "adntn-table", "data-testid": "explorer-table" });

  root.append(
    el("div", { class: "adntn-row" },
      el("label", { class: "adntn-inline" }, "dataset ", dataset),
      el("label", { class: "adntn-inline" }, "model ", modelSel),
      el("label", { class: "adntn-inline" }, "layer ", layer),
      el("label", { class: "adntn-inline" }, "hidden ", hidden)),
    el("div", { class: "adntn-row" },
      el("span", { class: "adntn-label", text: "families" }), familyBoxes,
      el("span", { class: "adntn-label", text: "baselines" }), baselineBoxes),
    el("div", { class: "adntn-row" },
      el("label", { class: "adntn-inline" }, "budgets ", budgets), knobs,
      el("label", { class: "adntn-inline" }, "seeds ", seeds),
      el("label", { class: "adntn-inline" }, "epochs ", epochs), runBtn, stopBtn, status),
    el("div", { class: "adntn-row" }, el("label", { class: "adntn-inline" }, "showing ", viewSel)),
    el("div", { class: "adntn-cols" }, el("div", {}, plot, legend), detail),
    el("details", { class: "adntn-points" }, el("summary", { text: "all points of this experiment" }), table),
    error.node,
  );

  const updateSettings = (patch) => {
    model.set("settings", { ...model.get("settings"), ...patch });
    model.save_changes();
  };
  const ints = (input) => input.value.split(/[ ,]+/).filter(Boolean).map((x) => parseInt(x, 10)).filter((x) => !Number.isNaN(x));
  budgets.addEventListener("change", () => updateSettings({ budgets: ints(budgets) }));
  seeds.addEventListener("change", () => updateSettings({ seeds: ints(seeds) }));
  epochs.addEventListener("change", () => updateSettings({ epochs: Math.max(1, parseInt(epochs.value, 10) || 1) }));
  hidden.addEventListener("change", () => updateSettings({ hidden: Math.max(1, parseInt(hidden.value, 10) || 1) }));
  layer.addEventListener("change", () => updateSettings({ layer: layer.value.trim() }));
  dataset.addEventListener("change", () => updateSettings({ dataset: dataset.value }));
  modelSel.addEventListener("change", () => updateSettings({ model: modelSel.value }));
  viewSel.addEventListener("change", () => { model.set("view", viewSel.value); model.save_changes(); });

  function checks(target, names, key) {
    const current = new Set(model.get("settings")[key] || []);
    target.replaceChildren(...names.map((n) => {
      const box = el("input", { type: "checkbox", checked: current.has(n), "data-testid": `explorer-${key}-${n}` });
      box.addEventListener("change", () => {
        const now = new Set(model.get("settings")[key] || []);
        if (box.checked) now.add(n); else now.delete(n);
        updateSettings({ [key]: names.filter((x) => now.has(x)) });
      });
      return el("label", { class: "adntn-check" }, box, n);
    }));
  }

  const options = (select, names, current) => {
    select.replaceChildren(...names.map((n) => el("option", { value: n, text: n, selected: n === current })));
    select.value = current;
  };

  function showSettings() {
    const s = model.get("settings") || {};
    const c = model.get("choices") || {};
    checks(familyBoxes, c.families || [], "families");
    checks(baselineBoxes, c.baselines || [], "baselines");
    options(dataset, c.datasets || [], s.dataset);
    options(modelSel, c.models || [], s.model);
    const set = (input, value) => { if (input !== document.activeElement) input.value = value; };
    set(budgets, (s.budgets || []).join(","));
    set(seeds, (s.seeds || []).join(","));
    set(epochs, s.epochs ?? 1);
    set(hidden, s.hidden ?? "");
    set(layer, s.layer ?? "");
    hidden.disabled = s.model !== "fc2";
    // what a budget means for each chosen family (the registry's knob)
    const k = c.knobs || {};
    const fams = [...(s.families || []), ...(s.baselines || []).filter((b) => b !== "dense")];
    knobs.textContent = fams.length ? "(" + fams.map((f) => `${f}: ${k[f] === "chi" ? "χ" : (k[f] || "χ")}`).join(", ") + ")" : "";
  }

  function showViews() {
    const groups = model.get("groups") || [];
    viewSel.replaceChildren(...groups.map((g) => el("option", { value: g.key, text: `${g.key} (${g.count} points)` })));
    viewSel.value = model.get("view");
    viewSel.disabled = groups.length < 2;
  }

  function showStatus() {
    const st = model.get("status");
    status.textContent = `${st}${model.get("message") ? " — " + model.get("message") : ""}`;
    runBtn.disabled = st === "running" || st === "stopping";
    stopBtn.disabled = !(st === "running");
    error.update();
  }

  function showPlot() {
    const view = model.get("view");
    const points = (model.get("points") || []).filter((p) => p.group === view && p.params > 0 && p.test_acc !== null);
    const sel = model.get("selected");
    plot.replaceChildren();
    const m = { l: 52, r: 14, t: 14, b: 40 };
    plot.append(svg("rect", { x: m.l, y: m.t, width: WIDTH - m.l - m.r, height: HEIGHT - m.t - m.b, class: "adntn-plot-bg" }));
    if (!points.length) {
      plot.append(svg("text", { x: WIDTH / 2, y: HEIGHT / 2, class: "adntn-empty", text: "no points yet: press Run sweep" }));
      legend.replaceChildren();
      return;
    }
    const lx = points.map((p) => Math.log10(p.params));
    let [x0, x1] = [Math.floor(Math.min(...lx) * 2) / 2 - 0.1, Math.ceil(Math.max(...lx) * 2) / 2 + 0.1];
    const accs = points.map((p) => p.test_acc);
    let [y0, y1] = [Math.min(...accs), Math.max(...accs)];
    const pad = Math.max((y1 - y0) * 0.12, 0.02);
    y0 = Math.max(0, y0 - pad); y1 = Math.min(1, y1 + pad);
    if (y1 <= y0) y1 = y0 + 0.05;
    const sx = (v) => m.l + (Math.log10(v) - x0) / (x1 - x0) * (WIDTH - m.l - m.r);
    const sy = (a) => HEIGHT - m.b - (a - y0) / (y1 - y0) * (HEIGHT - m.t - m.b);
    const count = (v) => (v >= 1e6 ? `${+(v / 1e6).toPrecision(3)}M` : v >= 1e3 ? `${+(v / 1e3).toPrecision(3)}k` : String(v));
    const fewDecades = x1 - x0 <= 2.5;
    for (let d = Math.floor(x0); d <= Math.ceil(x1); d++) {
      for (const k of [1, 2, 5]) {
        const v = k * 10 ** d, lv = Math.log10(v);
        if (lv < x0 || lv > x1) continue;
        plot.append(svg("line", { x1: sx(v), x2: sx(v), y1: m.t, y2: HEIGHT - m.b, class: k === 1 ? "adntn-grid" : "adntn-grid adntn-minor" }));
        if (k === 1 || fewDecades) plot.append(svg("text", { x: sx(v), y: HEIGHT - m.b + 14, class: "adntn-tick", text: count(v) }));
      }
    }
    const step = (y1 - y0) > 0.3 ? 0.1 : (y1 - y0) > 0.12 ? 0.05 : 0.02;
    for (let a = Math.ceil(y0 / step) * step; a <= y1 + 1e-9; a += step) {
      plot.append(svg("line", { x1: m.l, x2: WIDTH - m.r, y1: sy(a), y2: sy(a), class: "adntn-grid" }));
      plot.append(svg("text", { x: m.l - 5, y: sy(a) + 3, class: "adntn-tick adntn-tick-y", text: `${(100 * a).toFixed(0)}%` }));
    }
    plot.append(svg("text", { x: (m.l + WIDTH - m.r) / 2, y: HEIGHT - 6, class: "adntn-axis-label", text: "trainable parameters (log scale)" }));
    plot.append(svg("text", { x: 12, y: HEIGHT / 2, class: "adntn-axis-label", transform: `rotate(-90 12 ${HEIGHT / 2})`, text: "test accuracy" }));
    // dense accuracy as a reference line
    for (const p of points.filter((q) => q.kind === "dense")) {
      plot.append(svg("line", { x1: m.l, x2: WIDTH - m.r, y1: sy(p.test_acc), y2: sy(p.test_acc), class: "adntn-dense-line" }));
    }
    // Pareto front as a staircase
    const all = model.get("points") || [];
    const front = (model.get("front") || []).map((i) => all[i]).filter(Boolean);
    if (front.length) {
      let d = `M ${sx(front[0].params)} ${sy(front[0].test_acc)}`;
      for (let i = 1; i < front.length; i++) d += ` H ${sx(front[i].params)} V ${sy(front[i].test_acc)}`;
      d += ` H ${WIDTH - m.r}`;
      plot.append(svg("path", { d, class: "adntn-front" }));
    }
    for (const p of points) {
      const x = sx(p.params), y = sy(p.test_acc);
      const g = svg("g", { class: `adntn-point${p.pareto ? " adntn-pareto" : ""}${p.index === sel ? " adntn-selected" : ""}`, "data-index": p.index, "data-key": p.key });
      if (p.pareto) g.append(svg("circle", { cx: x, cy: y, r: 9, class: "adntn-ring" }));
      g.append(marker(p, x, y, 5.5));
      g.append(svg("title", { text: `${p.label || p.key}: ${p.params.toLocaleString()} params, ${(100 * p.test_acc).toFixed(1)}%${p.pareto ? " (Pareto front)" : ""}` }));
      g.addEventListener("click", () => { model.set("selected", p.index); model.save_changes(); });
      plot.append(g);
    }
    const fams = [...new Set(points.map((p) => p.family))];
    legend.replaceChildren(...fams.map((f) => el("span", { class: "adntn-legend-item" },
      el("span", { class: "adntn-swatch", style: `background:${COLORS[f] || "#7f7f7f"}` }), f)),
      el("span", { class: "adntn-legend-item" }, el("span", { class: "adntn-swatch adntn-ring-swatch" }), "Pareto front"));
    showTable();
  }

  function showTable() {
    const points = (model.get("points") || []).filter((p) => p.group === model.get("view"));
    const head = el("tr", {}, ...["key", "setting", "seed", "params", "test acc", "compression", "front"].map((h) => el("th", { text: h })));
    table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...points.map((p) => {
      const tr = el("tr", { class: p.index === model.get("selected") ? "adntn-current" : "" },
        el("td", { text: p.key }), el("td", { text: p.label || p.family }), el("td", { text: p.seed ?? "–" }),
        el("td", { text: p.params.toLocaleString() }), el("td", { text: p.test_acc === null ? "–" : `${(100 * p.test_acc).toFixed(1)}%` }),
        el("td", { text: p.compression ? `${p.compression.toFixed(1)}×` : "–" }), el("td", { text: p.pareto ? "●" : "" }));
      tr.addEventListener("click", () => { model.set("selected", p.index); model.save_changes(); });
      return tr;
    })));
  }

  function showSelection() {
    const s = model.get("selection") || {};
    if (!s.key) { detail.replaceChildren(el("div", { class: "adntn-empty-text", text: "click a point to see its configuration" })); return; }
    const row = (k, v) => el("tr", {}, el("th", { text: k }), el("td", { text: v }));
    detail.replaceChildren(
      el("div", { class: "adntn-sel-title", text: s.key }),
      el("table", { class: "adntn-kv" },
        row("setting", s.label || s.family), row("trained on", s.group || "–"),
        row("parameters", (s.params ?? 0).toLocaleString()),
        row("test accuracy", s.test_acc === null ? "–" : `${(100 * s.test_acc).toFixed(2)}%`),
        row("layer compression", s.compression ? `${s.compression.toFixed(1)}×` : "–"),
        row("layer shape", s.shape ? s.shape.join("×") : "–"),
        row("Pareto front", s.pareto ? "yes" : `no (dominated by ${(s.dominated_by || []).join(", ")})`),
        row("options", JSON.stringify(s.options || {}))),
      el("div", { class: "adntn-hint", text: s.has_generator ? "explorer.selected_generator gives this generator" : "dense model: no generator" }),
    );
  }

  const unwire = common.wire(model, {
    "change:settings": showSettings, "change:choices": showSettings,
    "change:status": showStatus, "change:message": showStatus, "change:error": showStatus,
    "change:points": showPlot, "change:front": showPlot, "change:view": () => { showViews(); showPlot(); },
    "change:groups": showViews,
    "change:selected": () => { showPlot(); },
    "change:selection": showSelection,
  });
  showSettings(); showStatus(); showViews(); showPlot(); showSelection();
  return () => { unwire(); connection.dispose(); };
}

export default { render };
