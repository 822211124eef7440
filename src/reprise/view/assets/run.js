// The run page: header with lineage, element tree with a waterfall (virtualised rows), a
// concurrency overview on a canvas, and a details panel.
(function () {
  const M = readData("reprise-run");
  const E = M.elements;
  const RUN = M.run;
  const T = Math.max(M.span_ms || 0, 1e-3);
  // The waterfall's time window (ms from the start of the run); "Zoom to selected" narrows it.
  let W0 = 0, W1 = T;
  const ROW = 22;
  const OVERSCAN = 8;
  let details = null; // parsed on first selection: the largest part of the page
  const getDetails = () => details || (details = readData("reprise-details") || {});

  // -- tree state: only expanded containers contribute rows --------------------------------
  const open = new Uint8Array(E.length);
  const pos = new Int32Array(E.length);
  let visible = [];
  let selected = -1;
  const collapsedByDefault = new Set(["loop", "iteration", "node", "span"]);
  for (const e of E) if (e.ch && !collapsedByDefault.has(e.t)) open[e.i] = 1;
  open[0] = 1;
  // Full pre-order, for "next failure" and search in display order.
  const order = [];
  (function () {
    const stack = [0];
    while (stack.length) {
      const i = stack.pop();
      order.push(i);
      const ch = E[i].ch;
      if (ch) for (let k = ch.length - 1; k >= 0; k--) stack.push(ch[k]);
    }
  })();
  const orderPos = new Int32Array(E.length);
  order.forEach((i, k) => { orderPos[i] = k; });
  const failures = order.filter((i) => E[i].s === "failed" && (E[i].t === "node" || !E[i].ch));
  // Open the way to the first failure so it is in sight when the page opens.
  if (failures.length) for (let u = E[failures[0]].u; u >= 0; u = E[u].u) open[u] = 1;

  function computeVisible() {
    visible = [];
    pos.fill(-1);
    const stack = [0];
    while (stack.length) {
      const i = stack.pop();
      pos[i] = visible.length;
      visible.push(i);
      const ch = E[i].ch;
      if (ch && open[i]) for (let k = ch.length - 1; k >= 0; k--) stack.push(ch[k]);
    }
  }

  // -- layout ---------------------------------------------------------------------------------
  const app = document.getElementById("app");
  app.appendChild(header());
  const search = h("input", { type: "search", placeholder: "Find an element by path (Enter: next match)", "aria-label": "find" });
  const hint = h("span", { class: "hint" });
  const toolbar = h("div", { class: "toolbar" }, [
    search,
    h("button", { text: "Summary", id: "show-summary", title: "the run's summary, metrics and alerts", onclick: () => showSummary(true) }),
    h("button", { text: "Next failure", id: "next-failure", onclick: nextFailure, disabled: failures.length ? null : "disabled" }),
    h("button", { text: "Expand all", onclick: () => setAll(1) }),
    h("button", { text: "Collapse all", onclick: () => setAll(0) }),
    h("button", { text: "Zoom to selected", id: "zoom", onclick: zoomToSelected }),
    h("button", { text: "Reset zoom", id: "unzoom", onclick: () => setWindow(0, T) }),
    hint,
  ]);
  const overview = h("canvas", { id: "overview", height: "40", title: "Concurrency: one lane per node running at the same time. Click a bar to select it." });
  const axis = h("div", { class: "axis" });
  const head = h("div", { id: "grid-head", class: "grid" }, [
    h("div", { text: "Element" }),
    h("div", { text: "Status" }),
    h("div", { class: "num", text: "Duration" }),
    h("div", { class: "num", text: "Cost" }),
    axis,
  ]);
  const spacer = h("div", { id: "spacer" });
  const rowsEl = h("div", { id: "rows", tabindex: "0", role: "tree", "aria-label": "elements" }, [spacer]);
  const treePane = h("section", { id: "tree-pane", class: "pane" }, [toolbar, overview, head, rowsEl]);
  const detailsEl = h("aside", { id: "details", "aria-live": "polite" });
  app.appendChild(h("main", { class: "split" }, [treePane, detailsEl]));

  function header() {
    const meta = [];
    const add = (label, value, cls) => {
      if (value === null || value === undefined || value === "") return;
      meta.push(h("span", null, [label + " ", h("b", { text: value, class: cls || null })]));
    };
    add("root", RUN.root, "mono");
    add("started", RUN.started_at);
    add("duration", fmtDuration(RUN.duration_s));
    add("nodes", String(RUN.nodes));
    if (RUN.failed) add("failed", String(RUN.failed));
    if (RUN.reused) add("reused", String(RUN.reused));
    add("tokens", fmtTokens(RUN.tokens));
    add("cost", fmtCost(RUN.cost));
    add("host", RUN.host);
    if (M.alerts && M.alerts.length) add("alerts", String(M.alerts.length));
    for (const [k, v] of Object.entries(RUN.tags || {})) add(k, String(v));
    const title = h("h1", null, [
      M.back ? h("a", { href: M.back.href, text: "← " + M.back.label, id: "back" }) : null,
      h("span", { text: "Run " }),
      h("span", { class: "mono", text: RUN.run_id }),
      h("span", { class: "badge " + RUN.status, id: "run-status", text: RUN.status }),
    ]);
    const parts = [title, h("div", { class: "meta" }, meta)];
    if (RUN.error) parts.push(h("div", { class: "err-head", text: RUN.error }));
    if (M.lineage && M.lineage.length) parts.push(lineage());
    return h("header", { class: "top" }, parts);
  }

  function runRef(id) {
    const href = M.links && M.links[id];
    return href ? h("a", { href: href, class: "mono", text: id }) : h("span", { class: "mono", text: id });
  }

  function lineage() {
    const first = M.lineage[0];
    const items = [h("span", { text: "Re-run of " }), runRef(first.run_id)];
    if (first.from_path) items.push(h("span", { text: " from " }), h("b", { class: "mono", text: first.from_path }));
    else items.push(h("span", { text: " (resumed)" }));
    if (M.lineage.length > 1) {
      items.push(h("span", { text: "  ·  ancestry: " }));
      M.lineage.forEach((entry, k) => {
        if (k) items.push(h("span", { text: " ← " }));
        items.push(runRef(entry.run_id));
        if (entry.status) items.push(h("span", { class: "kind", text: " " + entry.status }));
      });
    }
    if (!first.found) items.push(h("span", { class: "kind", text: " (not under this run root)" }));
    return h("div", { class: "lineage", id: "lineage" }, items);
  }

  // -- time axis and rows ---------------------------------------------------------------------
  function drawAxis() {
    axis.replaceChildren();
    const span = W1 - W0;
    // As many ticks as fit: at least 60 px apart, none cut at the right edge, so labels never
    // overlap however narrow the window.
    const width = axis.clientWidth || 400;
    const step = niceStep(span, Math.max(1, Math.floor(width / 60)));
    for (let t = Math.ceil(W0 / step) * step; t <= W1 + 1e-9; t += step) {
      const x = ((t - W0) / span) * width;
      if (x > width - 50) break;
      axis.appendChild(h("div", { class: "tick", style: "left:" + x + "px", text: fmtMs(t) }));
    }
  }

  function setWindow(w0, w1) {
    W0 = w0;
    W1 = Math.max(w1, w0 + 1e-3);
    drawAxis();
    renderRows();
  }

  function zoomToSelected() {
    const e = selected >= 0 ? E[selected] : null;
    if (!e || e.a === undefined || e.a === null) return;
    const pad = Math.max((e.b - e.a) * 0.05, 1e-3);
    setWindow(Math.max(0, e.a - pad), Math.min(T, e.b + pad));
  }

  function rowFor(i) {
    const e = E[i];
    const cls = ["row", "grid"];
    if (e.s === "failed") cls.push("failed");
    if (i === selected) cls.push("selected");
    const hasKids = !!e.ch;
    const twisty = h("span", { class: "twisty", text: hasKids ? (open[i] ? "▾" : "▸") : "" });
    if (hasKids) twisty.addEventListener("click", (ev) => { ev.stopPropagation(); toggle(i); });
    const label = e.t === "iteration" ? "#" + e.n : e.n;
    const kind = e.t === "node" ? (e.k || "node") : e.t;
    const name = h("div", { class: "name", style: "padding-left:" + (4 + e.dp * 14) + "px" }, [
      twisty,
      h("span", { class: "dot " + e.s }),
      h("span", { text: label }),
      h("span", { class: "kind", text: kind + (hasKids && !open[i] && e.t !== "node" ? " · " + e.ch.length : "") }),
      e.r ? h("span", { class: "mark reused", text: "reused" }) : (e.nr ? h("span", { class: "mark", text: e.nr + " reused" }) : null),
      e.t !== "node" && e.nf ? h("span", { class: "mark fail", text: e.nf + " failed" }) : null,
    ]);
    const track = h("div", { class: "track" });
    if (e.a !== undefined && e.a !== null) {
      const bcls = ["bar", e.s];
      if (e.r) bcls.push("reused");
      else if (e.t === "span") bcls.push("span");
      else if (e.t !== "node") bcls.push("container");
      track.appendChild(h("div", {
        class: bcls.join(" "),
        style: "left:" + ((e.a - W0) / (W1 - W0)) * 100 + "%;width:" + Math.max(((e.b - e.a) / (W1 - W0)) * 100, 0) + "%",
      }));
    }
    const tip = [e.p, e.s, fmtDuration(e.d)];
    if (e.er) tip.push(e.er);
    if (e.rf) tip.push("reused from " + e.rf);
    return h("div", {
      class: cls.join(" "),
      style: "top:" + pos[i] * ROW + "px",
      "data-index": i,
      "data-path": e.p,
      "data-status": e.s,
      "data-type": e.t,
      "data-reused": e.r ? "true" : null,
      role: "treeitem",
      "aria-expanded": hasKids ? String(!!open[i]) : null,
      title: tip.filter(Boolean).join("\n"),
    }, [
      name,
      h("div", { class: "cell-status st-" + e.s, text: e.s }),
      h("div", { class: "num", text: fmtDuration(e.d) }),
      h("div", { class: "num", text: fmtCost(e.c) }),
      track,
    ]);
  }

  let pending = false;
  function renderRows() {
    pending = false;
    spacer.style.height = visible.length * ROW + "px";
    const top = rowsEl.scrollTop;
    const height = rowsEl.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
    const last = Math.min(visible.length, Math.ceil((top + height) / ROW) + OVERSCAN);
    const rows = [];
    for (let k = first; k < last; k++) rows.push(rowFor(visible[k]));
    spacer.replaceChildren(...rows);
  }
  function scheduleRender() {
    if (!pending) { pending = true; requestAnimationFrame(renderRows); }
  }
  rowsEl.addEventListener("scroll", scheduleRender);
  rowsEl.addEventListener("click", (ev) => {
    const row = ev.target.closest(".row");
    if (row) select(Number(row.dataset.index), false);
  });
  rowsEl.addEventListener("dblclick", (ev) => {
    const row = ev.target.closest(".row");
    if (row && E[Number(row.dataset.index)].ch) toggle(Number(row.dataset.index));
  });
  rowsEl.addEventListener("keydown", onKey);

  function toggle(i) {
    open[i] = open[i] ? 0 : 1;
    computeVisible();
    renderRows();
  }

  function setAll(value) {
    for (const e of E) if (e.ch) open[e.i] = value;
    open[0] = 1;
    computeVisible();
    renderRows();
  }

  function reveal(i) {
    for (let u = E[i].u; u >= 0; u = E[u].u) open[u] = 1;
    computeVisible();
    const y = pos[i] * ROW;
    if (y < rowsEl.scrollTop || y + ROW > rowsEl.scrollTop + rowsEl.clientHeight) {
      rowsEl.scrollTop = Math.max(0, y - rowsEl.clientHeight / 3);
    }
  }

  function select(i, doReveal) {
    selected = i;
    if (doReveal) reveal(i);
    renderRows();
    showDetails(i);
    setHash(E[i].p);
  }

  // The selection lives in the URL's hash (run.html#agent.flow1.node3), both ways: selecting
  // writes it (replacing the history entry: arrow keys do not fill the history), and a changed
  // hash (a pasted link, a link in an alert) selects. So a link shows what its sender saw.
  function setHash(path) {
    const hash = path ? "#" + encodeURIComponent(path) : "";
    if (location.hash === hash || (!hash && !location.hash)) return;
    try { history.replaceState(null, "", hash || location.pathname + location.search); }
    catch (e) { location.replace(hash || "#"); }
  }

  function fromHash() {
    let wanted = "";
    try { wanted = decodeURIComponent(location.hash.slice(1)); } catch (e) { wanted = location.hash.slice(1); }
    if (!wanted) { if (selected >= 0) showSummary(false); return; }
    const e = E.find((x) => x.p === wanted);
    if (e && e.i !== selected) select(e.i, true);
  }

  function showSummary(writeHash) {
    selected = -1;
    renderRows();
    showRunSummary();
    if (writeHash) setHash("");
  }

  function onKey(ev) {
    if (selected < 0) { if (ev.key.startsWith("Arrow")) { select(0, true); ev.preventDefault(); } return; }
    const e = E[selected];
    const p = pos[selected];
    if (ev.key === "ArrowDown" && p + 1 < visible.length) select(visible[p + 1], true);
    else if (ev.key === "ArrowUp" && p > 0) select(visible[p - 1], true);
    else if (ev.key === "ArrowRight" && e.ch) { if (!open[selected]) toggle(selected); else select(e.ch[0], true); }
    else if (ev.key === "ArrowLeft") { if (e.ch && open[selected]) toggle(selected); else if (e.u >= 0) select(e.u, true); }
    else if (ev.key === "Enter" && e.ch) toggle(selected);
    else return;
    ev.preventDefault();
  }

  function nextFailure() {
    if (!failures.length) return;
    const at = selected >= 0 ? orderPos[selected] : -1;
    const next = failures.find((i) => orderPos[i] > at);
    select(next === undefined ? failures[0] : next, true);
    hint.textContent = failures.length + " failed";
  }

  search.addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter") return;
    const q = search.value.trim().toLowerCase();
    if (!q) return;
    const matches = order.filter((i) => E[i].p.toLowerCase().includes(q));
    if (!matches.length) { hint.textContent = "no match"; return; }
    const at = selected >= 0 ? orderPos[selected] : -1;
    const next = matches.find((i) => orderPos[i] > at);
    const target = next === undefined ? matches[0] : next;
    select(target, true);
    hint.textContent = (matches.indexOf(target) + 1) + " of " + matches.length;
  });

  // -- concurrency overview (canvas: cost independent of the number of nodes on screen) -------
  const lanes = [];
  (function () {
    const items = E.filter((e) => e.t === "node" && e.a !== undefined && e.a !== null).sort((x, y) => x.a - y.a);
    const ends = [];
    for (const e of items) {
      let lane = ends.findIndex((end) => end <= e.a);
      if (lane < 0) { lane = ends.length; ends.push(0); lanes.push([]); }
      ends[lane] = e.b;
      lanes[lane].push(e);
    }
  })();
  const laneHeight = lanes.length ? Math.max(2, Math.min(10, Math.floor(72 / lanes.length))) : 10;
  overview.height = Math.max(18, lanes.length * (laneHeight + 1) + 6);
  overview.style.height = overview.height + "px";
  overview.dataset.lanes = String(lanes.length);

  function drawOverview() {
    const ratio = window.devicePixelRatio || 1;
    const width = overview.clientWidth || 800;
    overview.width = Math.round(width * ratio);
    overview.height = Math.round(parseFloat(overview.style.height) * ratio);
    const g = overview.getContext("2d");
    g.scale(ratio, ratio);
    const colors = { failed: "#d93a3a", cancelled: "#c98a12", running: "#3b74d9", unfinished: "#c98a12" };
    lanes.forEach((lane, k) => {
      const y = 3 + k * (laneHeight + 1);
      for (const e of lane) {
        g.fillStyle = e.r ? "#8b93a3" : colors[e.s] || "#7aa7e8";
        g.fillRect((e.a / T) * width, y, Math.max(((e.b - e.a) / T) * width, 1), laneHeight);
      }
    });
  }
  overview.addEventListener("click", (ev) => {
    const rect = overview.getBoundingClientRect();
    const lane = lanes[Math.floor((ev.clientY - rect.top - 3) / (laneHeight + 1))];
    if (!lane) return;
    const t = ((ev.clientX - rect.left) / rect.width) * T;
    const slack = (4 / rect.width) * T; // a few pixels either side: thin bars stay clickable
    let best = null;
    for (const e of lane) if (e.a - slack <= t && t <= e.b + slack) { best = e; break; }
    if (best) select(best.i, true);
  });

  // -- details --------------------------------------------------------------------------------
  function section(title, body) {
    return [h("h3", { text: title }), body];
  }

  function showDetails(i) {
    const e = E[i];
    const d = getDetails()[String(i)] || {};
    const parts = [h("h2", { class: "mono", text: e.p })];
    parts.push(h("div", null, [
      h("span", { class: "badge " + e.s, text: e.s }), " ",
      e.r ? h("span", { class: "badge reused", text: "reused" }) : null,
    ]));
    const isNode = e.t === "node";
    const facts = [
      ["type", e.t + (e.k ? " (" + e.k + ")" : "")],
      ["function", d.node],
      // A reused element's times are those of the run that executed it.
      [e.r ? "started (orig.)" : "started", d.started_at],
      [e.r ? "ended (orig.)" : "ended", d.ended_at],
      [e.r ? "took (orig.)" : "duration", fmtDuration(e.d)],
      ["in this run", e.a !== undefined && e.a !== null ? fmtMs(e.a) + " → " + fmtMs(e.b) : ""],
      ["attempts", e.at !== undefined ? String(e.at) : ""],
      ["reused from", e.rf ? runRef(e.rf) : ""],
      ["executed in", e.or && e.or !== e.rf ? runRef(e.or) : ""],
      ["tokens", fmtTokens(e.tk)],
      ["cost", fmtCost(e.c)],
    ];
    if (!isNode && e.t !== "span") {
      facts.push(["nodes", String(e.nn || 0)], ["failed", e.nf ? String(e.nf) : ""], ["reused", e.nr ? String(e.nr) : ""]);
      if (e.ch) facts.push(["children", String(e.ch.length)]);
    }
    parts.push(kvTable(facts));
    if (e.t !== "span") {
      // Re-running from here: what `reprise rerun` takes (every element path is a start path).
      const command = "reprise rerun " + RUN.run_id + " --from " + shellWord(e.p);
      parts.push(h("div", { class: "rerun" }, [h("code", { id: "rerun-command", text: command }), copyButton(command)]));
    }
    if (d.error) {
      parts.push(...section("Error", h("div", { class: "error-box" }, [
        h("div", { class: "err-head", text: (d.error.type ? d.error.type + ": " : "") + d.error.message }),
        d.error.traceback ? h("pre", { class: "error traceback", text: d.error.traceback }) : null,
      ])));
    }
    if (d.chat && d.chat.length) {
      // An AI model node's conversation: what it sent (request.json) and the answer.
      parts.push(...section("Messages", h("div", { class: "chat" }, d.chat.map((m) => h("div", { class: "msg " + m.role }, [
        h("div", { class: "role", text: m.role }),
        h("pre", { text: m.text }),
      ])))));
    }
    if (d.input !== undefined) parts.push(...section("Input", h("pre", { class: "input", text: d.input })));
    if (d.outcome !== undefined) parts.push(...section("Outcome", outcomeView(d.outcome, "outcome")));
    else if (isNode && e.s === "completed" && !e.r) parts.push(...section("Outcome", h("div", { class: "kind", text: "no outcome.json" })));
    if (d.logs && d.logs.length) {
      const lines = d.logs.map((l) => h("div", { class: "lv-" + l.level }, [
        h("span", { class: "ts", text: l.ts.slice(11, 23) + " " }),
        h("b", { text: l.level + " " }),
        l.event,
        l.extra ? h("span", { class: "ts", text: " " + l.extra }) : null,
      ]));
      if (d.logs_cut) lines.push(h("div", { class: "kind", text: "… " + d.logs_cut + " more lines in .trace/logs.jsonl" }));
      parts.push(...section("Logs (" + d.logs.length + ")", h("div", { class: "logs" }, lines)));
    }
    if (d.events && d.events.length) {
      const evs = d.events.map((ev) => h("details", null, [
        h("summary", { text: ev.name + (ev.t !== null && ev.t !== undefined ? " at " + fmtMs(ev.t) : "") }),
        ev.attributes ? h("pre", { text: ev.attributes }) : null,
      ]));
      parts.push(...section("Span events", h("div", null, evs)));
    }
    if (d.files && d.files.length) {
      const files = kvTable(d.files.map(([name, size]) => [name, name.endsWith("/") ? "folder" : size.toLocaleString() + " bytes"]));
      files.classList.add("files");
      parts.push(...section("Files", files));
    }
    if (d.fields) parts.push(...section("Other result fields", h("pre", { class: "fields", text: d.fields })));
    detailsEl.dataset.selected = e.p;
    detailsEl.replaceChildren(...parts);
  }

  function showRunSummary() {
    const parts = [h("h2", { text: "Run summary" })];
    parts.push(kvTable([
      ["status", RUN.status],
      ["nodes", String(RUN.nodes)],
      ["failed", RUN.failed ? String(RUN.failed) : "0"],
      ["reused", RUN.reused ? String(RUN.reused) : "0"],
      ["tokens", fmtTokens(RUN.tokens)],
      ["cost", fmtCost(RUN.cost)],
      ["re-run of", RUN.previous_run_id ? runRef(RUN.previous_run_id) : ""],
      ["start path", RUN.start_hierarchy_path],
      ["reprise", RUN.version],
    ]));
    if (failures.length) {
      const list = failures.slice(0, 50).map((i) => h("div", null, [
        h("a", { href: "#", class: "mono", text: E[i].p, onclick: (ev) => { ev.preventDefault(); select(i, true); } }),
        E[i].er ? h("div", { class: "kind", text: E[i].er }) : null,
      ]));
      parts.push(...section("Failed", h("div", null, list)));
    }
    if (M.alerts && M.alerts.length) {
      parts.push(...section("Alerts (" + M.alerts.length + ")", alertList(M.alerts.slice().reverse(), true)));
    }
    const metrics = M.metrics || {};
    const names = Object.keys(metrics.series || {});
    if (names.length) {
      parts.push(...section("Metrics (reprise.log)", h("div", { class: "metric-charts", id: "metric-charts" },
        names.map((name) => lineChart(name, [{ label: "", points: metrics.series[name] }])))));
    }
    const values = Object.keys(metrics.values || {});
    if (values.length) {
      parts.push(...section("Node metrics (ctx.metric)", h("div", { class: "metric-charts", id: "node-metric-values" },
        values.map((name) => lineChart(name, [{ label: "", points: metrics.values[name] }], "value #")))));
    }
    if (metrics.histograms && metrics.histograms.length) {
      parts.push(...section("Node metrics (ctx.metric)", h("div", { class: "metric-charts", id: "node-metric-charts" },
        metrics.histograms.map(histogramChart))));
    }
    parts.push(h("p", { class: "empty", text: "Select an element to see its input, outcome, error and logs." }));
    delete detailsEl.dataset.selected;
    detailsEl.replaceChildren(...parts);
  }

  // -- start ----------------------------------------------------------------------------------
  computeVisible();
  drawAxis();
  renderRows();
  drawOverview();
  showRunSummary();
  window.addEventListener("resize", () => { drawOverview(); drawAxis(); scheduleRender(); });
  window.addEventListener("hashchange", fromHash);
  fromHash();
  document.body.dataset.ready = "true";
})();
