// ContractionInspector front end: group selector, step slider, drawing with the merged cores,
// the intermediate (numbers, histogram, heatmap), the contraction tree, the step table and the
// schedule/optimiser comparison.
//
// Traits read: summary, groups, steps, tree, highlight, intermediate, drawing,
// intermediate_image, heatmap, comparison, backends, error, busy.
// Traits written: group, step, backend, batch_size, memory_limit. Message: {action: "compare"}.
// Shared helpers (el, svg, setup, wire) come from common.js through `loadCommon`.

let el, svg;

async function loadCommon(model) {
  const src = model.get("_common_js");
  const cache = (globalThis.__adntnCommon ??= new Map());
  if (!cache.has(src)) cache.set(src, import(URL.createObjectURL(new Blob([src], { type: "text/javascript" }))));
  return cache.get(src);
}


const fmt = (x, digits = 4) => (x === null || x === undefined ? "–" : Number(x).toPrecision(digits));
const shapeText = (s) => `(${(s || []).join(", ")}${(s || []).length === 1 ? "," : ""})`;

async function render({ model, el: root }) {
  const common = await loadCommon(model);
  ({ el, svg } = common);
  const { error, connection } = common.setup(model, root, "inspector");

  const title = el("div", { class: "adntn-title" });
  const busy = common.busySign(model, "inspector-busy");
  const groupSel = el("select", { "data-testid": "group-select" });
  const slider = el("input", { type: "range", min: 0, step: 1, class: "adntn-slider", "data-testid": "step-slider" });
  const stepLabel = el("span", { class: "adntn-step-label", "data-testid": "step-label" });
  const prev = el("button", { text: "◀", title: "previous step", "data-testid": "step-prev" });
  const next = el("button", { text: "▶", title: "next step", "data-testid": "step-next" });
  const drawing = el("img", { class: "adntn-drawing", alt: "generator with the merged cores outlined", "data-testid": "inspector-drawing" });
  const interInfo = el("div", { class: "adntn-inter", "data-testid": "intermediate" });
  const hist = el("img", { class: "adntn-hist", alt: "histogram of the intermediate" });
  const heat = el("img", { class: "adntn-heat", alt: "heatmap of the intermediate" });
  const treeSvg = svg("svg", { class: "adntn-tree", "data-testid": "contraction-tree" });
  const stepTable = el("table", { class: "adntn-table", "data-testid": "step-table" });

  const batch = el("input", { type: "number", min: 0, class: "adntn-num", "data-testid": "batch-size", title: "0: no batch (generation only)" });
  const memory = el("input", { type: "number", min: 0, class: "adntn-num adntn-wide", "data-testid": "memory-limit", title: "bytes; 0 for none" });
  const backendSel = el("select", { "data-testid": "backend" });
  const measure = el("button", { text: "Measure", "data-testid": "compare", onclick: () => connection.send({ action: "compare" }) });
  const stopMeasure = el("button", { text: "■ Stop", "data-testid": "compare-stop", title: "skip the remaining measurements", onclick: () => connection.send({ action: "stop" }) });
  const compareTable = el("table", { class: "adntn-table adntn-compare", "data-testid": "compare-table" });

  root.append(
    el("div", { class: "adntn-header" }, title, busy.node),
    el("div", { class: "adntn-row adntn-stepper" }, el("label", { class: "adntn-inline" }, "group ", groupSel), prev, slider, next, stepLabel),
    el("div", { class: "adntn-grid" },
      el("div", { class: "adntn-panel adntn-draw-panel" }, drawing),
      el("div", { class: "adntn-panel" }, el("div", { class: "adntn-panel-title", text: "intermediate" }), interInfo, el("div", { class: "adntn-row" }, hist, heat))),
    el("div", { class: "adntn-grid" },
      el("div", { class: "adntn-panel" }, el("div", { class: "adntn-panel-title", text: "contraction tree (bottom-up, in execution order)" }), treeSvg),
      el("div", { class: "adntn-panel" }, el("div", { class: "adntn-panel-title", text: "pairwise steps of this group" }), stepTable)),
    el("div", { class: "adntn-panel" },
      el("div", { class: "adntn-panel-title", text: "schedules × optimisers: predicted cost and measured time" }),
      el("div", { class: "adntn-row" },
        el("label", { class: "adntn-inline" }, "batch ", batch),
        el("label", { class: "adntn-inline" }, "memory limit (bytes, sliced) ", memory),
        el("label", { class: "adntn-inline" }, "backend ", backendSel), measure, stopMeasure),
      compareTable),
    error.node,
  );

  // ------------------------------------------------------------------ writers
  let timer = null;
  const setStep = (k) => {
    const n = currentGroup().steps || 1;
    k = Math.max(0, Math.min(n - 1, k));
    slider.value = k;
    stepLabel.textContent = `step ${k + 1} / ${n}`;
    clearTimeout(timer);
    timer = setTimeout(() => { model.set("step", k); model.save_changes(); }, 40);
  };
  slider.addEventListener("input", () => setStep(+slider.value));
  prev.addEventListener("click", () => setStep(model.get("step") - 1));
  next.addEventListener("click", () => setStep(model.get("step") + 1));
  groupSel.addEventListener("change", () => { model.set("group", +groupSel.value); model.save_changes(); });
  const setInt = (name, input) => input.addEventListener("change", () => {
    model.set(name, Math.max(0, parseInt(input.value, 10) || 0));
    model.save_changes();
  });
  setInt("batch_size", batch);
  setInt("memory_limit", memory);
  backendSel.addEventListener("change", () => { model.set("backend", backendSel.value); model.save_changes(); });

  // ------------------------------------------------------------------ readers
  const currentGroup = () => (model.get("groups") || [])[model.get("group")] || {};

  function showHeader() {
    const s = model.get("summary") || {};
    const t = s.text || {};
    title.textContent = `${s.title || ""} — ${t.flops || ""} to generate W, peak ${t.peak || ""}, ${s.num_steps ?? ""} pairwise steps`;
    busy.update();
    groupSel.replaceChildren(...(model.get("groups") || []).map((g) => el("option", { value: g.index, text: g.label, selected: g.index === model.get("group") })));
    backendSel.replaceChildren(...(model.get("backends") || []).map((b) => el("option", { value: b, text: b, selected: b === model.get("backend") })));
    if (batch !== document.activeElement) batch.value = model.get("batch_size");
    if (memory !== document.activeElement) memory.value = model.get("memory_limit");
  }

  function showStep() {
    const g = currentGroup();
    const k = model.get("step");
    slider.max = Math.max(0, (g.steps || 1) - 1);
    slider.value = k;
    slider.disabled = (g.steps || 0) <= 1;
    stepLabel.textContent = `step ${k + 1} / ${g.steps || 0}`;
    groupSel.value = model.get("group");
    const it = model.get("intermediate") || {};
    const t = it.text || {};
    const row = (label, value, testid) => el("tr", {}, el("th", { text: label }), el("td", { text: value, "data-testid": testid }));
    interInfo.replaceChildren(el("table", { class: "adntn-kv" },
      row("merges", `${it.left ?? ""} ⊗ ${it.right ?? ""} → ${it.label ?? ""}`, "intermediate-merge"),
      row("cores", (model.get("highlight") || []).join(", "), "intermediate-cores"),
      row("shape", shapeText(it.shape), "intermediate-shape"),
      row("size", `${(it.size ?? 0).toLocaleString()} (${t.bytes || "–"} at float32)`, "intermediate-size"),
      row("predicted FLOPs", t.flops || "–", "intermediate-flops"),
      row("norm", fmt(it.norm), "intermediate-norm"),
      row("min / max", `${fmt(it.min, 3)} / ${fmt(it.max, 3)}`),
      row("mean ± std", `${fmt(it.mean, 3)} ± ${fmt(it.std, 3)}`),
    ));
    drawing.src = model.get("drawing") || "";
    hist.src = model.get("intermediate_image") || "";
    heat.src = model.get("heatmap") || "";
    showTree();
    showSteps();
  }

  function showTree() {
    const tree = model.get("tree") || { nodes: [], edges: [] };
    const k = model.get("step");
    const nodes = tree.nodes || [];
    const width = Math.max(260, 70 * (tree.width || 1));
    const top = Math.max(...nodes.map((n) => n.y), 1);
    const height = 40 + 46 * top;
    treeSvg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    treeSvg.setAttribute("width", Math.min(width, 520));
    treeSvg.setAttribute("height", Math.min(height, 300) * Math.min(1, 520 / width) + 4);
    const px = (n) => 35 + (n.x / Math.max((tree.width || 1) - 1, 1)) * (width - 70);
    const py = (n) => height - 22 - 46 * n.y;
    const byId = Object.fromEntries(nodes.map((n) => [n.id, n]));
    // nodes under the current step's node
    const below = new Set();
    const kids = {};
    for (const [p, c] of tree.edges || []) (kids[p] = kids[p] || []).push(c);
    const current = nodes.find((n) => n.step === k);
    const walk = (id) => { below.add(id); (kids[id] || []).forEach(walk); };
    if (current) walk(current.id);
    treeSvg.replaceChildren();
    for (const [p, c] of tree.edges || []) {
      const a = byId[p], b = byId[c];
      treeSvg.append(svg("line", { x1: px(a), y1: py(a), x2: px(b), y2: py(b), class: below.has(p) && below.has(c) ? "adntn-edge adntn-on" : "adntn-edge" }));
    }
    for (const n of nodes) {
      const g = svg("g", { class: `adntn-node${n.leaf ? " adntn-leaf" : ""}${below.has(n.id) ? " adntn-on" : ""}${n.step === k ? " adntn-current" : ""}`,
        transform: `translate(${px(n)},${py(n)})`, "data-step": n.step ?? "" });
      if (n.leaf) g.append(svg("rect", { x: -18, y: -9, width: 36, height: 18, rx: 3 }));
      else g.append(svg("circle", { r: 8 }));
      g.append(svg("text", { y: n.leaf ? 4 : -12, text: n.label }));
      g.append(svg("title", { text: `${n.label} ${shapeText(n.shape)}${n.flops ? ", " + n.flops.toLocaleString() + " FLOPs" : ""}` }));
      if (!n.leaf) g.addEventListener("click", () => setStep(n.step));
      treeSvg.append(g);
    }
  }

  function showSteps() {
    const k = model.get("step");
    const head = el("tr", {}, ...["step", "left", "right", "output shape", "size", "FLOPs"].map((h) => el("th", { text: h })));
    const rows = (model.get("steps") || []).map((s) => {
      const tr = el("tr", { class: s.step === k ? "adntn-current" : "", "data-step": s.step },
        el("td", { text: s.step }), el("td", { text: s.left }), el("td", { text: s.right }),
        el("td", { text: shapeText(s.shape) }), el("td", { text: s.size.toLocaleString() }), el("td", { text: s.flops_text }));
      tr.addEventListener("click", () => setStep(s.step));
      return tr;
    });
    stepTable.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
  }

  function showComparison() {
    const rows = model.get("comparison") || [];
    const best = Math.min(...rows.filter((r) => r.flops !== null).map((r) => r.flops));
    const head = el("tr", {}, ...["optimiser", "schedule", "predicted FLOPs", "peak memory", "largest", "slices", `measured (${model.get("backend")})`, "note"].map((h) => el("th", { text: h })));
    compareTable.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows.map((r) => el("tr", { class: r.flops === best ? "adntn-best" : "" },
      el("td", { text: r.optimizer }), el("td", { text: r.schedule }), el("td", { text: r.text ? r.text.flops : "–" }),
      el("td", { text: r.text ? r.text.peak : "–" }), el("td", { text: r.largest !== null ? r.largest.toLocaleString() : "–" }),
      el("td", { text: r.slices ?? "–" }), el("td", { text: r.text ? r.text.time : "–" }), el("td", { class: "adntn-note", text: r.note || "" })))));
  }

  function showMeasuring() {
    const on = !!model.get("measuring");
    measure.disabled = on;
    stopMeasure.disabled = !on;
  }

  function showError() {
    error.update();
    busy.update();
  }

  const unwire = common.wire(model, {
    "change:summary": showHeader,
    "change:groups": showHeader,
    "change:backends": showHeader,
    "change:backend": () => { showHeader(); showComparison(); },
    "change:batch_size": showHeader,
    "change:memory_limit": showHeader,
    "change:group": showStep,
    "change:step": showStep,
    "change:intermediate": showStep,
    "change:drawing": showStep,
    "change:tree": showTree,
    "change:steps": showSteps,
    "change:comparison": showComparison,
    "change:error": showError,
    "change:busy": showError,
    "change:measuring": showMeasuring,
  });
  showHeader();
  showStep();
  showComparison();
  showError();
  showMeasuring();
  return () => { clearTimeout(timer); unwire(); connection.dispose(); };
}

export default { render };
