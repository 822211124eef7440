// The runs page: the runs of a run root, newest first, with the latest value of chosen metrics;
// filter by status and text, sort by a column, pick runs to compare.
(function () {
  const D = readData("reprise-runs");
  const runs = D.runs;
  const app = document.getElementById("app");
  let shownMetrics = D.metrics.slice();
  let status = "all", query = "", sortKey = null, sortDir = 1;
  const picked = new Set();

  app.appendChild(h("header", { class: "top" }, [
    h("h1", null, [h("span", { text: "Runs " }), h("span", { class: "mono", text: D.run_root })]),
    h("div", { class: "meta" }, [h("span", null, [h("b", { text: String(runs.length) }), " runs, newest first"])]),
  ]));
  const body = h("div", { class: "exp-body" });
  app.appendChild(body);

  const statuses = ["all"].concat(Array.from(new Set(runs.map((r) => r.status))).sort());
  const buttons = {};
  const search = h("input", { type: "search", placeholder: "Filter by id, name, root or tag", "aria-label": "filter runs", id: "runs-filter" });
  search.addEventListener("input", () => { query = search.value.trim().toLowerCase(); render(); });
  const count = h("span", { class: "kind", id: "runs-count" });
  body.appendChild(h("div", { class: "filters" }, statuses.map((s) => (buttons[s] = h("button", {
    text: s, "data-filter": s, onclick: () => { status = s; render(); },
  }))).concat([search, count])));

  if (D.all_metrics.length) {
    body.appendChild(h("div", { class: "filters metric-picker" }, [h("span", { class: "kind", text: "metric columns:" })].concat(
      D.all_metrics.map((name) => {
        const box = h("input", { type: "checkbox", "data-metric": name, checked: shownMetrics.includes(name) ? "checked" : null });
        box.addEventListener("change", () => {
          shownMetrics = box.checked ? shownMetrics.concat([name]) : shownMetrics.filter((m) => m !== name);
          render();
        });
        return h("label", { class: "mono" }, [box, " " + name]);
      }))));
  }

  const compareBox = h("div", { class: "rerun", id: "compare-command", hidden: "hidden" });
  body.appendChild(compareBox);
  const table = h("table", { class: "runs-table", id: "runs-table" });
  body.appendChild(h("div", { class: "table-box" }, [table]));

  function columns() {
    const cols = [
      ["", null, (r) => {
        const box = h("input", { type: "checkbox", title: "compare", checked: picked.has(r.id) ? "checked" : null });
        box.addEventListener("change", () => { if (box.checked) picked.add(r.id); else picked.delete(r.id); showCompare(); });
        return box;
      }],
      ["Run", (r) => r.name || r.id, (r) => h("div", null, [
        r.href ? h("a", { href: r.href, class: "mono run-link", text: r.id }) : h("span", { class: "mono", text: r.id, title: "no page written: reprise view " + r.id }),
        r.name ? h("div", { class: "kind", text: r.name }) : null,
      ])],
      ["Root", (r) => r.root, (r) => r.root],
      ["Status", (r) => r.status, (r) => h("span", { class: "st-" + r.status, text: r.status, title: r.error || "" })],
      ["Started", (r) => r.started || "", (r) => (r.started || "").replace("T", " ").slice(0, 19)],
      ["Duration", (r) => r.duration, (r) => fmtDuration(r.duration), "num"],
      ["Tokens", (r) => r.tokens, (r) => fmtTokens(r.tokens), "num"],
      ["Cost", (r) => r.cost, (r) => fmtCost(r.cost), "num"],
    ];
    for (const name of shownMetrics) cols.push([name, (r) => r.metrics[name], (r) => fmtNum(r.metrics[name]), "num metric"]);
    return cols;
  }

  function showCompare() {
    if (picked.size < 2) { compareBox.hidden = true; compareBox.replaceChildren(); return; }
    const ids = runs.filter((r) => picked.has(r.id)).map((r) => r.id);
    const command = "reprise view --compare " + ids.join(" ") + " --run-root " + shellWord(D.run_root);
    compareBox.hidden = false;
    compareBox.replaceChildren(h("code", { text: command }), copyButton(command));
  }

  function render() {
    const cols = columns();
    let shown = runs.filter((r) => (status === "all" || r.status === status) && (!query ||
      [r.id, r.name, r.root, ...Object.entries(r.tags || {}).map(([k, v]) => k + "=" + v)].some((t) => (t || "").toLowerCase().includes(query))));
    if (sortKey !== null && cols[sortKey] && cols[sortKey][1]) {
      const key = cols[sortKey][1];
      const value = (r) => { const v = key(r); return v === null || v === undefined ? -Infinity : v; };
      shown = shown.slice().sort((a, b) => { const x = value(a), y = value(b); return (x < y ? -1 : x > y ? 1 : 0) * sortDir; });
    }
    for (const [name, button] of Object.entries(buttons)) button.classList.toggle("on", name === status);
    count.textContent = shown.length + " of " + runs.length + " runs";
    const head = h("tr", null, cols.map(([label, key, , cls], k) => h("th", {
      text: label + (sortKey === k ? (sortDir > 0 ? " ▲" : " ▼") : ""), class: cls || null,
      onclick: key ? () => { sortDir = sortKey === k ? -sortDir : 1; sortKey = k; render(); } : null,
    })));
    const rows = shown.map((r) => h("tr", { class: "run-row" + (r.status === "failed" ? " failed" : ""), "data-run": r.id, "data-status": r.status },
      cols.map(([, , cell, cls]) => { const v = cell(r); return h("td", { class: cls || null }, [typeof v === "string" ? v : v]); })));
    table.replaceChildren(h("thead", null, [head]), h("tbody", null, rows));
  }
  render();
  document.body.dataset.ready = "true";
})();
