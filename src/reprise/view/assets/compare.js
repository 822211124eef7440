// The compare page: two or more runs side by side: their metric curves overlaid, their configs
// (differences marked), and the node outcomes that differ.
(function () {
  const C = readData("reprise-compare");
  const runs = C.runs;
  const app = document.getElementById("app");
  const label = (r) => r.name || r.id;
  const color = (k) => PALETTE[k % PALETTE.length];
  const runRef = (r) => (r.href ? h("a", { href: r.href, class: "mono", text: label(r) }) : h("span", { class: "mono", text: label(r) }));

  app.appendChild(h("header", { class: "top" }, [
    h("h1", null, [h("span", { text: "Compare " + runs.length + " runs" })]),
  ]));
  const body = h("div", { class: "exp-body" });
  app.appendChild(body);

  // -- the runs -------------------------------------------------------------------------------
  const facts = [
    ["run", (r) => h("span", { class: "mono", text: r.id })],
    ["root", (r) => r.root],
    ["status", (r) => h("span", { class: "badge " + r.status, text: r.status })],
    ["started", (r) => (r.started || "").replace("T", " ").slice(0, 19)],
    ["duration", (r) => fmtDuration(r.duration)],
    ["tokens", (r) => fmtTokens(r.tokens)],
    ["cost", (r) => fmtCost(r.cost)],
    ["error", (r) => (r.error ? h("span", { class: "err", text: r.error }) : "")],
  ];
  const head = h("tr", null, [h("th")].concat(runs.map((r, k) => h("th", null, [h("span", { class: "swatch", style: "background:" + color(k) }), runRef(r)]))));
  const rows = facts.map(([name, cell]) => h("tr", null, [h("td", { class: "kind", text: name })].concat(runs.map((r) => {
    const v = cell(r);
    return h("td", null, [typeof v === "string" ? v : v]);
  }))));
  body.appendChild(h("h3", { text: "Runs" }));
  body.appendChild(h("div", { class: "table-box" }, [h("table", { class: "runs-table", id: "compare-runs" }, [h("thead", null, [head]), h("tbody", null, rows)])]));

  // -- metrics --------------------------------------------------------------------------------
  const names = Object.keys(C.series).sort();
  body.appendChild(h("h3", { text: "Metrics (reprise.log)" }));
  if (names.length) {
    body.appendChild(h("div", { class: "metric-charts", id: "compare-charts" }, names.map((name) => {
      const lines = C.series[name].map((s) => {
        const k = runs.findIndex((r) => r.id === s.run);
        return { label: label(runs[k]), points: s.points, color: color(k) };
      });
      return lineChart(name, lines);
    })));
  } else {
    body.appendChild(h("p", { class: "kind", text: "No run logged metrics." }));
  }

  // -- config ---------------------------------------------------------------------------------
  const sources = Array.from(new Set(runs.map((r) => r.config_source).filter(Boolean)));
  body.appendChild(h("h3", { text: "Config" + (sources.length ? " (" + sources.join(", ") + ")" : "") }));
  if (C.config.length) {
    let onlyDiff = C.config.some((row) => row.differs);
    const table = h("table", { class: "runs-table config-table", id: "compare-config" });
    const toggle = h("label", null, [h("input", { type: "checkbox", checked: onlyDiff ? "checked" : null, id: "only-differences" }), " only differences"]);
    toggle.querySelector("input").addEventListener("change", (ev) => { onlyDiff = ev.target.checked; drawConfig(); });
    function drawConfig() {
      const shown = C.config.filter((row) => !onlyDiff || row.differs);
      table.replaceChildren(
        h("thead", null, [h("tr", null, [h("th", { text: "key" })].concat(runs.map((r) => h("th", { text: label(r) }))))]),
        h("tbody", null, shown.map((row) => h("tr", { class: row.differs ? "differs" : null, "data-key": row.key }, [h("td", { class: "mono", text: row.key })].concat(
          row.values.map((v) => h("td", null, [v === null ? h("span", { class: "kind", text: "(absent)" }) : h("pre", { class: "cell", text: v })])))))),
      );
    }
    drawConfig();
    body.appendChild(h("div", { class: "filters" }, [toggle, h("span", { class: "kind", text: C.config.filter((r) => r.differs).length + " of " + C.config.length + " keys differ" })]));
    body.appendChild(h("div", { class: "table-box" }, [table]));
  } else {
    body.appendChild(h("p", { class: "kind", text: "No run has a config or initial inputs." }));
  }

  // -- outcomes -------------------------------------------------------------------------------
  body.appendChild(h("h3", { text: "Outcomes that differ (" + C.outcomes.length + ")" }));
  body.appendChild(h("p", { class: "kind", text: C.same_outcomes + " node outcome(s) are the same in every run." }));
  const list = h("div", { id: "compare-outcomes" }, C.outcomes.map((row) => h("div", { class: "outcome-diff", "data-path": row.path }, [
    h("h4", { class: "mono", text: row.path }),
    h("div", { class: "side-by-side", style: "grid-template-columns: repeat(" + runs.length + ", minmax(0, 1fr))" }, row.cells.map((cell, k) => h("div", null, [
      h("div", { class: "kind" }, [h("span", { class: "swatch", style: "background:" + color(k) }), label(runs[k]) + " · ",
        cell ? h("span", { class: "st-" + cell.status, text: cell.status }) : "not run"]),
      cell && cell.outcome !== null ? outcomeView(cell.outcome, "outcome") : h("div", { class: "kind", text: cell ? "no outcome" : "" }),
    ]))),
  ])));
  body.appendChild(list);
  document.body.dataset.ready = "true";
})();
