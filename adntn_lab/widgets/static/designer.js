// TopologyDesigner front end: preset form, SVG editor of an adntn-graph/1 design, live stats.
//
// Traits: mode ("preset" | "custom"), preset (dict), design (adntn-graph/1 dict), design_rev
// (bumped when Python replaces the design: the view is refitted), stats, choices, error.
// Custom messages: {action: "load_json", source}, {action: "new_custom", ...},
// {action: "edit_as_custom"}, {action: "reshape", in_features, out_features, n_sites}.
// Shared helpers (el, svg, setup, wire) come from common.js through `loadCommon`.

let el, svg;

async function loadCommon(model) {
  const src = model.get("_common_js");
  const cache = (globalThis.__adntnCommon ??= new Map());
  if (!cache.has(src)) cache.set(src, import(URL.createObjectURL(new Blob([src], { type: "text/javascript" }))));
  return cache.get(src);
}

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22", "#17becf"];
const WIDTH = 720;
const HEIGHT = 420;
const R = 11;           // core radius in pixels
const LEG = 26;         // physical-leg stub length in pixels

const clone = (x) => JSON.parse(JSON.stringify(x));
const stageColor = (s) => PALETTE[((s % 10) + 10) % 10];

// Control point of a quadratic curve from p0 to p1 that passes clear of every centre in
// `others` lying on the straight segment (null when the segment is clear).
function bendAround(p0, p1, others) {
  const [dx, dy] = [p1[0] - p0[0], p1[1] - p0[1]];
  const len = Math.hypot(dx, dy);
  if (!len) return null;
  const [nx, ny] = [-dy / len, dx / len];
  let push = 0;
  for (const [cx, cy] of others) {
    const t = ((cx - p0[0]) * dx + (cy - p0[1]) * dy) / (len * len);
    if (t <= 0.05 || t >= 0.95) continue;
    const off = (cx - p0[0]) * nx + (cy - p0[1]) * ny;
    if (Math.abs(off) < R * 1.4) push = (off > 0 ? -1 : 1) * Math.max(Math.abs(push), R * 4.5);
  }
  if (!push) return null;
  return [(p0[0] + p1[0]) / 2 + nx * push, (p0[1] + p1[1]) / 2 + ny * push];
}

function labeled(label, input, testid) {
  const wrap = el("label", { class: "adntn-field", "data-testid": testid }, el("span", { text: label }), input);
  return wrap;
}

async function render({ model, el: root }) {
  const common = await loadCommon(model);
  ({ el, svg } = common);
  const { error, connection } = common.setup(model, root, "designer");
  let view = null;             // {scale, ox, oy}: design units -> pixels
  let seenRev = -1;
  let selected = null;         // {type: "core"|"bond", name|index}
  let pending = null;          // name of the core a new bond starts from
  let connectMode = false;
  let drag = null;             // {name, px, py, moved}
  let pointer = null;          // last pointer position (for the rubber band)
  let rubber = null;           // the rubber-band line while a bond is being made

  // ------------------------------------------------------------------ layout
  const tabs = el("div", { class: "adntn-tabs" });
  const presetTab = el("button", { class: "adntn-tab", "data-testid": "mode-preset", text: "Preset" });
  const customTab = el("button", { class: "adntn-tab", "data-testid": "mode-custom", text: "Custom drawing" });
  tabs.append(presetTab, customTab);
  const controls = el("div", { class: "adntn-controls" });
  const canvas = svg("svg", { class: "adntn-canvas", viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    width: WIDTH, height: HEIGHT, "data-testid": "designer-canvas" });
  const legend = el("div", { class: "adntn-legend" });
  const inspector = el("div", { class: "adntn-selection" });
  const stats = el("div", { class: "adntn-stats", "data-testid": "designer-stats" });
  const busy = common.busySign(model, "designer-busy");
  const jsonBox = el("textarea", { class: "adntn-json", rows: 6, spellcheck: "false",
    "data-testid": "designer-json", placeholder: "adntn-graph/1 JSON" });
  const jsonRow = el("div", { class: "adntn-row" },
    el("button", { text: "Export JSON", "data-testid": "export-json", onclick: () => {
      jsonBox.value = JSON.stringify(model.get("design"), null, 1);
      jsonBox.select();
    } }),
    el("button", { text: "Load JSON", "data-testid": "load-json", onclick: () => {
      connection.send({ action: "load_json", source: jsonBox.value });
    } }),
  );
  const jsonDetails = el("details", { class: "adntn-json-details" }, el("summary", { text: "JSON (adntn-graph/1)" }), jsonRow, jsonBox);
  const main = el("div", { class: "adntn-main" },
    el("div", { class: "adntn-left" }, controls, inspector),
    el("div", { class: "adntn-center" }, canvas, legend),
    el("div", { class: "adntn-right" }, busy.node, stats));
  root.append(tabs, main, error.node, jsonDetails);

  presetTab.addEventListener("click", () => { model.set("mode", "preset"); model.save_changes(); });
  customTab.addEventListener("click", () => {
    if (model.get("mode") !== "custom") connection.send({ action: "edit_as_custom" });
  });

  // ------------------------------------------------------------------ helpers
  const design = () => model.get("design") || {};
  const isCustom = () => model.get("mode") === "custom";

  function commit(d, structural) {
    if (structural) for (const c of d.cores || []) { delete c.legs; delete c.shape; }
    model.set("design", d);
    model.save_changes();
    draw();
  }

  function fit() {
    const cores = design().cores || [];
    if (!cores.length) { view = { scale: 60, ox: 60, oy: HEIGHT - 90 }; return; }
    const xs = cores.map((c) => +c.x || 0), ys = cores.map((c) => +c.y || 0);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const m = 40;
    const sx = (WIDTH - 2 * m) / Math.max(x1 - x0, 1e-9);
    const sy = (HEIGHT - 2 * m - LEG - 24) / Math.max(y1 - y0, 1e-9);
    const scale = Math.max(6, Math.min(90, sx, sy));
    const ox = WIDTH / 2 - scale * (x0 + x1) / 2;
    const oy = (HEIGHT - LEG - 20) / 2 + scale * (y0 + y1) / 2;
    view = { scale, ox, oy };
  }
  const toPx = (c) => [view.ox + view.scale * (+c.x || 0), view.oy - view.scale * (+c.y || 0)];
  const toUnits = (px, py) => [(px - view.ox) / view.scale, (view.oy - py) / view.scale];

  function eventPoint(ev) {
    const rect = canvas.getBoundingClientRect();
    return [(ev.clientX - rect.left) * WIDTH / rect.width, (ev.clientY - rect.top) * HEIGHT / rect.height];
  }

  function nextName(cores) {
    const used = new Set(cores.map((c) => c.name));
    let n = cores.length;
    while (used.has(`c${n}`)) n += 1;
    return `c${n}`;
  }

  function addBond(u, v) {
    if (u === v) return;
    const d = clone(design());
    d.bonds = d.bonds || [];
    d.bonds.push({ u, v, dim: Math.max(1, parseInt(bondDim.value, 10) || 1) });
    selected = { type: "bond", index: d.bonds.length - 1 };
    commit(d, true);
  }

  // ------------------------------------------------------------------ custom-mode controls
  const stageInput = el("input", { type: "number", min: 0, value: 0, class: "adntn-num", "data-testid": "current-stage" });
  const bondDim = el("input", { type: "number", min: 1, value: 3, class: "adntn-num", "data-testid": "bond-dim" });
  const connectBtn = el("button", { text: "Connect", "data-testid": "connect-mode", title: "click two cores to join them by a bond",
    onclick: () => { connectMode = !connectMode; pending = null; connectBtn.classList.toggle("adntn-active", connectMode); draw(); } });
  const fitBtn = el("button", { text: "Fit view", onclick: () => { fit(); draw(); } });
  const shapeIn = el("input", { type: "number", min: 1, class: "adntn-num", "data-testid": "custom-in" });
  const shapeOut = el("input", { type: "number", min: 1, class: "adntn-num", "data-testid": "custom-out" });
  const shapeSites = el("input", { type: "number", min: 1, class: "adntn-num", "data-testid": "custom-sites" });
  const actInput = el("input", { type: "text", class: "adntn-text", "data-testid": "custom-activation",
    list: "adntn-activations", placeholder: "relu (or one per stage: relu,tanh,identity)" });
  const reshapeBtn = el("button", { text: "Apply shape", "data-testid": "apply-shape", onclick: () => {
    connection.send({ action: "reshape", in_features: +shapeIn.value, out_features: +shapeOut.value, n_sites: +shapeSites.value });
  } });
  const newBtn = el("button", { text: "New empty drawing", "data-testid": "new-custom", onclick: () => {
    connection.send({ action: "new_custom", in_features: +shapeIn.value, out_features: +shapeOut.value, n_sites: +shapeSites.value });
  } });
  actInput.addEventListener("change", () => {
    const d = clone(design());
    const parts = actInput.value.split(",").map((s) => s.trim()).filter(Boolean);
    d.activation = parts.length > 1 ? parts : (parts[0] || null);
    commit(d, false);
  });

  const customHelp = el("div", { class: "adntn-help" });
  const customPanel = [
    el("div", { class: "adntn-row" }, labeled("stage", stageInput, "field-stage"), labeled("bond dim", bondDim, "field-bond-dim")),
    el("div", { class: "adntn-row" }, connectBtn, fitBtn),
    labeled("activation", actInput, "field-custom-activation"),
    el("div", { class: "adntn-row" }, labeled("in", shapeIn), labeled("out", shapeOut), labeled("sites", shapeSites)),
    el("div", { class: "adntn-row" }, reshapeBtn, newBtn),
    customHelp,
  ];
  function customControls() {
    const d = design();
    const set = (input, value) => { if (input !== document.activeElement) input.value = value; };
    set(shapeIn, d.in_features ?? "");
    set(shapeOut, d.out_features ?? "");
    set(shapeSites, (d.out_modes || []).length || "");
    const act = d.activation;
    set(actInput, Array.isArray(act) ? act.join(",") : (act || ""));
    connectBtn.classList.toggle("adntn-active", connectMode);
    const nSites = (d.out_modes || []).length;
    customHelp.replaceChildren("Click the canvas to add a core (in the current stage); drag to move; click a core's ",
      el("b", { text: "+" }), " handle and then another core to join them (or use Connect). ",
      `Every site 0..${Math.max(nSites - 1, 0)} must sit on exactly one core.`);
    if (controls.firstChild !== customPanel[0]) controls.replaceChildren(...customPanel);
  }

  // ------------------------------------------------------------------ preset form
  const presetInputs = {};
  let builtFamily = null;
  function presetControls() {
    const choices = model.get("choices") || {};
    const p = model.get("preset") || {};
    if (builtFamily === p.family && controls.childElementCount) {
      // same form: refresh values the user is not typing into
      for (const [key, input] of Object.entries(presetInputs)) {
        if (input !== document.activeElement && input.isConnected) input.value = p[key] ?? "";
      }
      return;
    }
    builtFamily = p.family;
    const fields = (choices.fields || {})[p.family] || [];
    const send = (key, value) => {
      model.set("preset", { ...model.get("preset"), [key]: value });
      model.save_changes();
    };
    const family = el("select", { "data-testid": "preset-family" },
      ...(choices.families || []).map((f) => el("option", { value: f, text: f, selected: f === p.family })));
    family.addEventListener("change", () => send("family", family.value));
    const num = (key, min = 1) => {
      const input = el("input", { type: "number", min, value: p[key] ?? "", class: "adntn-num", "data-testid": `preset-${key}` });
      input.addEventListener("change", () => send(key, input.value === "" ? null : +input.value));
      presetInputs[key] = input;
      return input;
    };
    const rows = [labeled("family", family, "field-family"),
      el("div", { class: "adntn-row" }, labeled("in", num("in_features")), labeled("out", num("out_features")))];
    if (fields.includes("bond_dim")) rows.push(labeled(p.family === "lowrank" ? "rank" : "bond dim χ", num("bond_dim")));
    if (fields.includes("n_sites")) {
      const input = num("n_sites", 0);
      input.placeholder = "auto";
      rows.push(labeled(p.family === "mpo" ? "cores" : "sites", input));
    }
    if (fields.includes("depth")) rows.push(labeled("depth M", num("depth")));
    if (fields.includes("pattern")) {
      const pat = el("select", { "data-testid": "preset-pattern" },
        ...(choices.patterns || []).map((x) => el("option", { value: x, text: x, selected: x === p.pattern })));
      pat.addEventListener("change", () => send("pattern", pat.value));
      rows.push(labeled("pattern", pat));
    }
    if (fields.includes("activation")) {
      const act = el("input", { type: "text", value: p.activation ?? "", class: "adntn-text", list: "adntn-activations",
        "data-testid": "preset-activation", placeholder: "relu, or one per stage" });
      act.addEventListener("change", () => send("activation", act.value));
      rows.push(labeled("activation", act));
    }
    if (fields.includes("lateral")) {
      const lat = el("input", { type: "checkbox", checked: !!p.lateral, "data-testid": "preset-lateral" });
      lat.addEventListener("change", () => send("lateral", lat.checked));
      rows.push(labeled("lateral mixers", lat));
    }
    rows.push(el("button", { text: "Edit as custom drawing", "data-testid": "edit-as-custom",
      onclick: () => connection.send({ action: "edit_as_custom" }) }));
    controls.replaceChildren(...rows);
  }

  const datalist = el("datalist", { id: "adntn-activations" });
  root.append(datalist);

  // ------------------------------------------------------------------ selection panel
  function selectionPanel() {
    inspector.replaceChildren();
    if (!isCustom() || !selected) return;
    const d = design();
    if (selected.type === "core") {
      const core = (d.cores || []).find((c) => c.name === selected.name);
      if (!core) { selected = null; return; }
      const stage = el("input", { type: "number", min: 0, value: core.stage, class: "adntn-num", "data-testid": "selected-stage" });
      stage.addEventListener("change", () => {
        const nd = clone(design());
        nd.cores.find((c) => c.name === core.name).stage = Math.max(0, parseInt(stage.value, 10) || 0);
        commit(nd, false);
      });
      const sites = el("input", { type: "text", value: (core.sites || []).join(", "), class: "adntn-text", "data-testid": "selected-sites", placeholder: "e.g. 0, 1" });
      sites.addEventListener("change", () => {
        const nd = clone(design());
        nd.cores.find((c) => c.name === core.name).sites = sites.value.split(/[ ,]+/).filter(Boolean).map((s) => parseInt(s, 10)).filter((s) => !Number.isNaN(s));
        commit(nd, true);
      });
      const addSite = el("button", { text: "+ next free site", "data-testid": "add-site", onclick: () => {
        const nd = clone(design());
        const taken = new Set(nd.cores.flatMap((c) => c.sites || []));
        const n = (nd.out_modes || []).length;
        let k = 0;
        while (taken.has(k) && k < n) k += 1;
        const target = nd.cores.find((c) => c.name === core.name);
        target.sites = [...(target.sites || []), k];
        commit(nd, true);
      } });
      const remove = el("button", { text: "Delete core", class: "adntn-danger", "data-testid": "delete-core", onclick: () => {
        const nd = clone(design());
        nd.cores = nd.cores.filter((c) => c.name !== core.name);
        nd.bonds = (nd.bonds || []).filter((b) => b.u !== core.name && b.v !== core.name);
        selected = null;
        commit(nd, true);
      } });
      inspector.append(el("div", { class: "adntn-sel-title", text: `core ${core.name}` }),
        labeled("stage", stage), labeled("sites (physical legs)", sites), el("div", { class: "adntn-row" }, addSite, remove));
    } else {
      const bond = (d.bonds || [])[selected.index];
      if (!bond) { selected = null; return; }
      const dim = el("input", { type: "number", min: 1, value: bond.dim, class: "adntn-num", "data-testid": "selected-dim" });
      dim.addEventListener("change", () => {
        const nd = clone(design());
        nd.bonds[selected.index].dim = Math.max(1, parseInt(dim.value, 10) || 1);
        commit(nd, true);
      });
      const remove = el("button", { text: "Delete bond", class: "adntn-danger", "data-testid": "delete-bond", onclick: () => {
        const nd = clone(design());
        nd.bonds.splice(selected.index, 1);
        selected = null;
        commit(nd, true);
      } });
      inspector.append(el("div", { class: "adntn-sel-title", text: `bond ${bond.u}–${bond.v}` }), labeled("dimension", dim), remove);
    }
  }

  // ------------------------------------------------------------------ drawing
  function draw() {
    const d = design();
    const custom = isCustom();
    if (!view || model.get("design_rev") !== seenRev) { seenRev = model.get("design_rev"); fit(); }
    canvas.replaceChildren();
    canvas.classList.toggle("adntn-editable", custom);
    canvas.append(svg("rect", { x: 0, y: 0, width: WIDTH, height: HEIGHT, class: "adntn-bg" }));
    const cores = d.cores || [];
    const byName = Object.fromEntries(cores.map((c) => [c.name, c]));
    const many = cores.length > 40;
    const modes = [d.out_modes || [], d.in_modes || []];
    // bonds
    (d.bonds || []).forEach((b, i) => {
      const cu = byName[b.u], cv = byName[b.v];
      if (!cu || !cv) return;
      const [x0, y0] = toPx(cu), [x1, y1] = toPx(cv);
      const isSel = selected && selected.type === "bond" && selected.index === i;
      const g = svg("g", { class: "adntn-bond" + (isSel ? " adntn-selected" : ""), "data-bond": i });
      // a bond that would run through another core bows around it
      const ctrl = bendAround([x0, y0], [x1, y1], cores.filter((c) => c !== cu && c !== cv).map(toPx));
      const d = ctrl ? `M ${x0} ${y0} Q ${ctrl[0]} ${ctrl[1]} ${x1} ${y1}` : `M ${x0} ${y0} L ${x1} ${y1}`;
      g.append(svg("path", { d, class: "adntn-bond-hit", fill: "none" }));
      g.append(svg("path", { d, class: "adntn-bond-line", fill: "none" }));
      const [mx, my] = ctrl ? [(x0 + 2 * ctrl[0] + x1) / 4, (y0 + 2 * ctrl[1] + y1) / 4] : [(x0 + x1) / 2, (y0 + y1) / 2];
      if (!many) g.append(svg("text", { x: mx, y: my - 3, class: "adntn-bond-dim", text: b.dim }));
      if (custom) g.addEventListener("pointerdown", (ev) => { ev.stopPropagation(); selected = { type: "bond", index: i }; pending = null; draw(); });
      canvas.append(g);
    });
    // physical legs: stubs pointing away from the core's bonded neighbours (down by default)
    const neighbours = {};
    for (const b of d.bonds || []) {
      if (!byName[b.u] || !byName[b.v]) continue;
      (neighbours[b.u] = neighbours[b.u] || []).push(byName[b.v]);
      (neighbours[b.v] = neighbours[b.v] || []).push(byName[b.u]);
    }
    for (const c of cores) {
      const sites = c.sites || [];
      if (!sites.length) continue;
      const [x, y] = toPx(c);
      const near = neighbours[c.name] || [];
      const meanY = near.length ? near.reduce((t, n) => t + toPx(n)[1], 0) / near.length : y - 1;
      const dir = meanY > y + 0.5 ? -1 : 1;  // neighbours below: legs go up
      const spread = many ? 12 : 30;
      sites.forEach((k, j) => {
        const dx = (j - (sites.length - 1) / 2) * spread;
        const g = svg("g", { class: "adntn-leg", "data-site": k });
        const ey = y + dir * LEG;
        g.append(svg("line", { x1: x, y1: y, x2: x + dx, y2: ey, class: "adntn-leg-line" }));
        const o = modes[0][k], i = modes[1][k];
        const label = o !== undefined && i !== undefined && !many ? `p${k} ${o}×${i}` : `p${k}`;
        const stagger = sites.length > 1 ? (j % 2) * 10 : 0;  // two legs of one core: labels apart
        g.append(svg("text", { x: x + dx, y: ey + dir * (stagger + 4) + (dir > 0 ? 7 : 0), class: "adntn-leg-label", text: label }));
        canvas.append(g);
      });
    }
    // rubber band of a bond being made (moved by pointermove without a redraw)
    rubber = null;
    if (custom && pending && byName[pending]) {
      const [x0, y0] = toPx(byName[pending]);
      const [x1, y1] = pointer || [x0, y0];
      rubber = svg("line", { x1: x0, y1: y0, x2: x1, y2: y1, class: "adntn-rubber" });
      canvas.append(rubber);
    }
    // cores
    for (const c of cores) {
      const [x, y] = toPx(c);
      const isSel = selected && selected.type === "core" && selected.name === c.name;
      const g = svg("g", { class: "adntn-core" + (isSel ? " adntn-selected" : "") + (pending === c.name ? " adntn-pending" : ""),
        "data-core": c.name, transform: `translate(${x},${y})` });
      const fill = stageColor(+c.stage || 0);
      const r = c.constant ? R * 0.6 : R;
      if (c.constant) g.append(svg("rect", { x: -r, y: -r, width: 2 * r, height: 2 * r, fill, class: "adntn-core-shape" }));
      else if (c.kind === "disentangler" || c.kind === "mixer") g.append(svg("polygon", { points: `0,${-r} ${r},0 0,${r} ${-r},0`, fill, class: "adntn-core-shape" }));
      else g.append(svg("circle", { r, fill, class: "adntn-core-shape" }));
      if (!many) g.append(svg("text", { x: 0, y: -R - 4, class: "adntn-core-name", text: c.name }));
      if (custom) {
        const handle = svg("g", { class: "adntn-handle", "data-handle": c.name, transform: `translate(${R + 2},${-R + 1})` });
        handle.append(svg("circle", { r: 5.5 }));
        handle.append(svg("text", { x: 0, y: 3, text: "+" }));
        handle.addEventListener("pointerdown", (ev) => {
          ev.stopPropagation();
          pending = pending === c.name ? null : c.name;
          pointer = eventPoint(ev);
          draw();
        });
        g.append(handle);
        g.addEventListener("pointerdown", (ev) => {
          ev.stopPropagation();
          const [px, py] = eventPoint(ev);
          drag = { name: c.name, px, py, moved: false };
          canvas.setPointerCapture?.(ev.pointerId);
        });
      }
      canvas.append(g);
    }
    if (custom && !cores.length) {
      canvas.append(svg("text", { x: WIDTH / 2, y: HEIGHT / 2, class: "adntn-hint", text: "click to add a core" }));
    }
    // legend: stages by colour
    const acts = (model.get("stats") || {}).activations || [];
    const stages = [...new Set(cores.map((c) => +c.stage || 0))].sort((a, b) => a - b);
    legend.replaceChildren(...stages.map((s) => el("span", { class: "adntn-legend-item" },
      el("span", { class: "adntn-swatch", style: `background:${stageColor(s)}` }),
      `stage ${s}${acts[s] ? ": " + acts[s] : ""}`)));
    if (custom && connectMode) legend.append(el("span", { class: "adntn-legend-note", text: pending ? `joining ${pending}: click a second core` : "connect: click a core" }));
    selectionPanel();
  }

  function onCorePicked(name) {
    if (pending && pending !== name) { const from = pending; pending = null; addBond(from, name); return; }
    if (connectMode) { pending = pending === name ? null : name; draw(); return; }
    selected = { type: "core", name };
    draw();
  }

  canvas.addEventListener("pointermove", (ev) => {
    if (!isCustom()) return;
    const [px, py] = eventPoint(ev);
    pointer = [px, py];
    if (drag) {
      if (!drag.moved && Math.hypot(px - drag.px, py - drag.py) < 4) return;
      drag.moved = true;
      const d = design();
      const core = (d.cores || []).find((c) => c.name === drag.name);
      if (core) { [core.x, core.y] = toUnits(px, py); draw(); }
    } else if (rubber) {
      rubber.setAttribute("x2", px);
      rubber.setAttribute("y2", py);
    }
  });
  canvas.addEventListener("pointerup", (ev) => {
    if (!isCustom() || !drag) return;
    const d = drag;
    drag = null;
    if (d.moved) {
      const nd = clone(design());
      const [x, y] = toUnits(...eventPoint(ev));
      const core = nd.cores.find((c) => c.name === d.name);
      core.x = +x.toFixed(3); core.y = +y.toFixed(3);
      commit(nd, false);
    } else onCorePicked(d.name);
  });
  canvas.addEventListener("pointerdown", (ev) => {
    if (!isCustom()) return;
    if (pending) { pending = null; draw(); return; }
    const [px, py] = eventPoint(ev);
    const [x, y] = toUnits(px, py);
    const nd = clone(design());
    nd.cores = nd.cores || [];
    const name = nextName(nd.cores);
    nd.cores.push({ name, stage: Math.max(0, parseInt(stageInput.value, 10) || 0), kind: "core", constant: false,
      sites: [], x: +x.toFixed(3), y: +y.toFixed(3) });
    selected = { type: "core", name };
    commit(nd, true);
  });

  // ------------------------------------------------------------------ stats and errors
  function siteDims(dims) {
    if (!dims.length) return "–";
    if (dims.length > 6 && dims.every((x) => x === dims[0])) return `${dims[0]} on all ${dims.length} sites`;
    if (dims.length > 8) return `${dims.length} sites, ${Math.min(...dims)}–${Math.max(...dims)}`;
    return dims.join("·");
  }

  function showStats() {
    const s = model.get("stats") || {};
    const t = s.text || {};
    const err = model.get("error");
    const row = (label, value, testid) => el("div", { class: "adntn-stat" }, el("span", { class: "adntn-stat-label", text: label }),
      el("span", { class: "adntn-stat-value", "data-testid": testid, text: value ?? "–" }));
    stats.replaceChildren(
      el("div", { class: "adntn-stats-title", text: `${s.family || ""} ${s.shape ? s.shape.join("×") : ""}` }),
      row("parameters", t.params, "stat-params"),
      row("dense", s.dense_params !== undefined ? s.dense_params.toLocaleString() : "–", "stat-dense"),
      row("compression", t.compression, "stat-compression"),
      row("FLOPs (generate W)", t.flops, "stat-flops"),
      row("peak memory", t.peak, "stat-peak"),
      row("stages / cores", s.num_stages !== undefined ? `${s.num_stages} / ${s.num_cores}` : "–", "stat-stages"),
      row("site dims", siteDims(s.site_dims || []), "stat-sites"),
      el("div", { class: "adntn-stat-note", text: err ? "showing the last valid design" : `updated in ${s.ms ?? "–"} ms` }),
    );
    error.update();
  }

  function refresh() {
    const custom = isCustom();
    presetTab.classList.toggle("adntn-active", !custom);
    customTab.classList.toggle("adntn-active", custom);
    root.classList.toggle("adntn-mode-custom", custom);
    datalist.replaceChildren(...((model.get("choices") || {}).activations || []).map((a) => el("option", { value: a })));
    if (custom) { builtFamily = null; customControls(); } else { presetControls(); selected = null; pending = null; }
    draw();
    showStats();
  }

  const unwire = common.wire(model, {
    "change:design": () => { if (!drag) draw(); if (isCustom()) customControls(); },
    "change:design_rev": draw,
    "change:mode": refresh,
    "change:preset": () => { if (!isCustom()) presetControls(); },
    "change:stats": () => { showStats(); draw(); },
    "change:error": showStats,
    "change:busy": busy.update,
  });
  refresh();
  return () => { unwire(); connection.dispose(); };
}

export default { render };
