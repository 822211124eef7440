// The experiment page: figures, a success-rate chart and a duration histogram (inline SVG), and
// the runs as a sortable, filterable table whose rows link to each run's page (virtualised rows).
(function () {
  const X = readData("reprise-experiment");
  const F = X.figures;
  const S = X.summary || {};
  const runs = X.runs;
  const ROW = 22;
  // The rules summary.json is computed by: "completed" is a success, "cancelled" is not final.
  const ok = (r) => r.s === "completed";
  const counted = runs.filter((r) => r.s !== "cancelled");
  const pct = (v) => (v === null || v === undefined ? "" : (v * 100).toFixed(v === 1 || v === 0 ? 0 : 1) + "%");
  const app = document.getElementById("app");

  // -- header and figures ---------------------------------------------------------------------
  const started = S.start || S.started_at || S.start_time;
  const ended = S.end || S.ended_at || S.end_time;
  const meta = [];
  const add = (label, value) => { if (value) meta.push(h("span", null, [label + " ", h("b", { text: String(value) })])); };
  add("folder", X.folder);
  add("started", started);
  add("ended", ended);
  add("inputs", String(F.inputs));
  app.appendChild(h("header", { class: "top" }, [
    h("h1", null, [
      h("span", { text: "Experiment " }),
      h("span", { class: "mono", text: X.name }),
      h("span", { class: "badge " + (F.failures ? "failed" : "completed"), id: "success-rate", text: pct(F.success_rate) + " succeeded" }),
    ]),
    h("div", { class: "meta" }, meta),
    X.unreadable_lines ? h("div", { class: "kind", text: X.unreadable_lines + " line(s) of runs.jsonl could not be read" }) : null,
  ]));
  const body = h("div", { class: "exp-body" });
  app.appendChild(body);
  const card = (label, value, id) => h("div", { class: "card", id: id || null }, [h("div", { class: "v", text: value || "–" }), h("div", { class: "l", text: label })]);
  body.appendChild(h("div", { class: "cards" }, [
    card("runs" + (F.planned !== null && F.planned !== F.finished ? " of " + F.planned + " planned" : ""), String(F.finished), "card-total"),
    card("succeeded", String(F.successes), "card-successes"),
    card("failed", String(F.failures), "card-failures"),
    card("success rate", pct(F.success_rate), "card-rate"),
    card("duration p50", fmtDuration(F.p50)),
    card("duration p95", fmtDuration(F.p95)),
    card("tokens", fmtTokens(F.tokens)),
    card("cost", fmtCost(F.cost)),
    F.cancelled ? card("cancelled (not counted)", String(F.cancelled)) : null,
  ]));

  // -- charts ---------------------------------------------------------------------------------
  function successChart() {
    const byInput = new Map();
    for (const r of counted) {
      const entry = byInput.get(r.in) || { id: r.in, n: 0, ok: 0 };
      entry.n += 1;
      if (ok(r)) entry.ok += 1;
      byInput.set(r.in, entry);
    }
    let inputs = Array.from(byInput.values());
    const MAX = 24;
    const more = Math.max(0, inputs.length - MAX);
    // Too many inputs to show: the worst ones, which are the ones worth a look.
    if (more) inputs = inputs.sort((a, b) => a.ok / a.n - b.ok / b.n).slice(0, MAX);
    const labelW = 130, barW = 220, rowH = 16, top = 4;
    const height = top + inputs.length * rowH + (more ? rowH : 0) + 4;
    const g = svg("svg", { width: labelW + barW + 60, height: Math.max(height, 24), id: "chart-success", role: "img", "aria-label": "success rate by input" });
    inputs.forEach((entry, k) => {
      const y = top + k * rowH;
      const rate = entry.ok / entry.n;
      const label = entry.id.length > 20 ? entry.id.slice(0, 19) + "…" : entry.id || "(no id)";
      g.appendChild(svg("text", { x: labelW - 6, y: y + 11, "text-anchor": "end", text: label }));
      g.appendChild(svg("rect", { x: labelW, y: y + 2, width: barW, height: rowH - 5, fill: "#f2d4d4" }));
      g.appendChild(svg("rect", { x: labelW, y: y + 2, width: barW * rate, height: rowH - 5, fill: "#2e9d5b" }, [
        svg("title", { text: entry.id + ": " + entry.ok + " of " + entry.n + " succeeded" }),
      ]));
      g.appendChild(svg("text", { x: labelW + barW + 6, y: y + 11, text: entry.ok + "/" + entry.n }));
    });
    if (more) g.appendChild(svg("text", { x: labelW, y: top + inputs.length * rowH + 11, text: "… and " + more + " more inputs (worst shown)" }));
    return h("div", { class: "chart" }, [h("h3", { text: "Success rate by input" }), g]);
  }

  function durationChart() {
    const values = counted.filter((r) => r.d !== null && r.d !== undefined);
    const W = 440, H = 190, left = 34, bottom = 22, top = 34;
    const g = svg("svg", { width: W, height: H, id: "chart-duration", role: "img", "aria-label": "duration histogram" });
    if (!values.length) {
      g.appendChild(svg("text", { x: 10, y: 20, text: "no durations" }));
      return h("div", { class: "chart" }, [h("h3", { text: "Duration" }), g]);
    }
    const max = Math.max(...values.map((r) => r.d)) || 1;
    const bins = Math.min(30, Math.max(5, Math.ceil(Math.sqrt(values.length))));
    const good = new Array(bins).fill(0), bad = new Array(bins).fill(0);
    for (const r of values) {
      const b = Math.min(bins - 1, Math.floor((r.d / max) * bins));
      if (ok(r)) good[b] += 1; else bad[b] += 1;
    }
    const peak = Math.max(...good.map((v, k) => v + bad[k]));
    const plotW = W - left - 8, plotH = H - top - bottom;
    const bw = plotW / bins;
    const x = (seconds) => left + (seconds / max) * plotW;
    g.appendChild(svg("line", { x1: left, y1: top + plotH, x2: left + plotW, y2: top + plotH, stroke: "#c9ced8" }));
    for (let k = 0; k < bins; k++) {
      const hg = (good[k] / peak) * plotH, hb = (bad[k] / peak) * plotH;
      const tip = fmtDuration((k * max) / bins) + " – " + fmtDuration(((k + 1) * max) / bins) + ": " + good[k] + " succeeded, " + bad[k] + " failed";
      if (good[k]) g.appendChild(svg("rect", { x: left + k * bw + 1, y: top + plotH - hg, width: bw - 2, height: hg, fill: "#2e9d5b" }, [svg("title", { text: tip })]));
      if (bad[k]) g.appendChild(svg("rect", { x: left + k * bw + 1, y: top + plotH - hg - hb, width: bw - 2, height: hb, fill: "#d93a3a" }, [svg("title", { text: tip })]));
    }
    g.appendChild(svg("text", { x: left, y: H - 6, text: "0" }));
    g.appendChild(svg("text", { x: left + plotW, y: H - 6, "text-anchor": "end", text: fmtDuration(max) }));
    g.appendChild(svg("text", { x: left - 4, y: top + 8, "text-anchor": "end", text: String(peak) }));
    [["p50", F.p50], ["p95", F.p95]].forEach(([label, value], k) => {
      if (value === null || value === undefined) return;
      const lx = x(value);
      // On the left of its line near the right edge, so the label stays inside the chart.
      const right = lx > left + plotW * 0.7;
      // Labels above the bars, each on its own line.
      g.appendChild(svg("line", { x1: lx, y1: 4 + k * 12, x2: lx, y2: top + plotH, stroke: "#1d2330", "stroke-dasharray": "3 3" }));
      g.appendChild(svg("text", { x: right ? lx - 3 : lx + 3, y: 12 + k * 12, "text-anchor": right ? "end" : "start", text: label + " " + fmtDuration(value) }));
    });
    return h("div", { class: "chart" }, [h("h3", { text: "Duration (green: succeeded, red: failed)" }), g]);
  }

  body.appendChild(h("div", { class: "charts" }, [successChart(), durationChart()]));

  // -- errors by type -------------------------------------------------------------------------
  const INPUTS = X.inputs || {};
  const errorType = (r) => r.et || (r.em ? "error" : r.s);
  const groups = new Map();
  for (const r of counted) {
    if (ok(r)) continue;
    const type = errorType(r);
    const g = groups.get(type) || { type: type, n: 0, inputs: new Set(), example: r };
    g.n += 1;
    g.inputs.add(r.in);
    groups.set(type, g);
  }
  if (groups.size) {
    const sorted = Array.from(groups.values()).sort((a, b) => b.n - a.n);
    body.appendChild(h("div", { class: "chart", id: "error-groups" }, [
      h("h3", { text: "Errors by type" }),
      h("table", { class: "runs-table" }, [
        h("thead", null, [h("tr", null, [h("th", { text: "type" }), h("th", { class: "num", text: "runs" }), h("th", { class: "num", text: "inputs" }), h("th", { text: "example" })])]),
        h("tbody", null, sorted.map((g) => h("tr", { class: "error-group", "data-type": g.type }, [
          h("td", null, [h("a", { href: "#", class: "mono", text: g.type, onclick: (ev) => { ev.preventDefault(); filter = "type:" + g.type; refresh(); } })]),
          h("td", { class: "num", text: String(g.n) }),
          h("td", { class: "num", text: String(g.inputs.size) }),
          h("td", { class: "err", text: (g.example.ep ? g.example.ep + ": " : "") + (g.example.em || "") }),
        ]))),
      ]),
    ]));
  }

  // -- the runs table -------------------------------------------------------------------------
  const columns = [
    ["Input", (r) => r.in],
    ["Input text", (r) => INPUTS[r.in] || ""],
    ["Iter", (r) => (r.it === null ? -1 : r.it)],
    ["Status", (r) => r.s],
    ["Duration", (r) => (r.d === null ? -1 : r.d)],
    ["Cost", (r) => (r.c === null ? -1 : r.c)],
    ["Tokens", (r) => (r.tk === null ? -1 : r.tk)],
    ["Outcome", (r) => r.o || ""],
    ["Run · error", (r) => r.id],
  ];
  let filter = "all";
  let query = "";
  let sortKey = -1, sortDir = 1;
  let shown = runs.slice();
  const countHint = h("span", { class: "kind", id: "runs-count" });
  const buttons = {};
  const filterButton = (name, label) => (buttons[name] = h("button", { text: label, "data-filter": name, onclick: () => { filter = name; refresh(); } }));
  const searchBox = h("input", { type: "search", placeholder: "Filter by input or run id", "aria-label": "filter runs" });
  searchBox.addEventListener("input", () => { query = searchBox.value.trim().toLowerCase(); refresh(); });
  body.appendChild(h("div", { class: "filters" }, [
    filterButton("all", "All"), filterButton("ok", "Succeeded"), filterButton("failed", "Failed"), searchBox, countHint,
  ]));
  const headCells = columns.map(([label], k) => h("div", {
    text: label, class: k >= 4 && k <= 6 ? "num" : null, title: "sort by " + label.toLowerCase(),
    onclick: () => { sortDir = sortKey === k ? -sortDir : 1; sortKey = k; refresh(); },
  }));
  const spacer = h("div", { style: "position:relative" });
  const rowsEl = h("div", { id: "runs-rows" }, [spacer]);
  const runsBox = h("div", { id: "runs" }, [h("div", { id: "runs-head", class: "rgrid" }, headCells), rowsEl]);
  body.appendChild(runsBox);
  if (X.config) body.appendChild(h("details", null, [h("summary", { text: "config.yaml" }), h("pre", { class: "config", text: X.config })]));
  if (Object.keys(S).length) body.appendChild(h("details", null, [h("summary", { text: "summary.json" }), h("pre", { class: "config", text: JSON.stringify(S, null, 2) })]));

  function refresh() {
    const byType = filter.startsWith("type:") ? filter.slice(5) : null;
    shown = runs.filter((r) => (filter === "all" || (byType !== null ? !ok(r) && errorType(r) === byType : (filter === "ok") === ok(r))) &&
      (!query || r.in.toLowerCase().includes(query) || r.id.toLowerCase().includes(query)));
    if (sortKey >= 0) {
      const key = columns[sortKey][1];
      shown.sort((a, b) => { const x = key(a), y = key(b); return (x < y ? -1 : x > y ? 1 : 0) * sortDir; });
    }
    for (const [name, button] of Object.entries(buttons)) button.classList.toggle("on", name === filter);
    countHint.textContent = shown.length + " of " + runs.length + " runs" + (byType !== null ? " (" + byType + ")" : "");
    // As tall as its rows, up to a screenful; beyond that the rows scroll (and stay virtual).
    runsBox.style.height = Math.max(120, Math.min(480, 30 + shown.length * ROW)) + "px";
    rowsEl.scrollTop = 0;
    render();
  }

  function rowFor(r, k) {
    const runCell = r.href
      ? h("a", { href: r.href, class: "mono run-link", text: r.id })
      : h("span", { class: "mono", text: r.id, title: r.id ? "no page written: reprise view " + r.id : "" });
    const err = r.et || r.em
      ? h("span", { class: "err", text: "  " + (r.et || "error") + (r.ep ? " at " + r.ep : "") + ": " + (r.em || "") })
      : null;
    const text = INPUTS[r.in] || "";
    return h("div", { class: "rrow rgrid" + (ok(r) ? "" : " failed"), style: "top:" + k * ROW + "px", "data-run": r.id, "data-status": r.s }, [
      h("div", { text: r.in, title: r.pe ? "persona: " + r.pe : null }),
      h("div", { class: "input-text", text: text, title: text }),
      h("div", { class: "num", text: r.it === null ? "" : String(r.it) }),
      h("div", { class: "st-" + r.s, text: r.s }),
      h("div", { class: "num", text: fmtDuration(r.d) }),
      h("div", { class: "num", text: fmtCost(r.c) }),
      h("div", { class: "num", text: fmtTokens(r.tk) }),
      h("div", { class: "outcome-cell mono", text: r.o || "", title: r.o || "" }),
      h("div", null, [runCell, err]),
    ]);
  }

  let pending = false;
  function render() {
    pending = false;
    spacer.style.height = shown.length * ROW + "px";
    const first = Math.max(0, Math.floor(rowsEl.scrollTop / ROW) - 8);
    const last = Math.min(shown.length, Math.ceil((rowsEl.scrollTop + (rowsEl.clientHeight || 480)) / ROW) + 8);
    const rows = [];
    for (let k = first; k < last; k++) rows.push(rowFor(shown[k], k));
    spacer.replaceChildren(...rows);
  }
  rowsEl.addEventListener("scroll", () => { if (!pending) { pending = true; requestAnimationFrame(render); } });
  refresh();
  document.body.dataset.ready = "true";
})();
