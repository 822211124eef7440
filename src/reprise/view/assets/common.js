"use strict";
// Shared helpers of the run and experiment pages. Every value from the data is put in the page
// with textContent or attributes, never parsed as markup.

function readData(id) {
  const block = document.getElementById(id);
  return block ? JSON.parse(block.textContent) : null;
}

function h(tag, attrs, children) {
  const node = document.createElement(tag);
  if (attrs) {
    for (const key of Object.keys(attrs)) {
      const value = attrs[key];
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, String(value));
    }
  }
  if (children) {
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
  }
  return node;
}

function svg(tag, attrs, children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const key of Object.keys(attrs || {})) {
    if (key === "text") node.textContent = String(attrs[key]);
    else node.setAttribute(key, String(attrs[key]));
  }
  for (const child of children || []) node.appendChild(child);
  return node;
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
  if (seconds < 0.001) return (seconds * 1e6).toFixed(0) + " µs";
  if (seconds < 1) return (seconds * 1000).toFixed(seconds < 0.01 ? 2 : 1) + " ms";
  if (seconds < 60) return seconds.toFixed(seconds < 10 ? 2 : 1) + " s";
  const m = Math.floor(seconds / 60);
  if (m < 60) return m + " m " + Math.round(seconds - m * 60) + " s";
  return Math.floor(m / 60) + " h " + (m % 60) + " m";
}

function fmtCost(cost) {
  if (cost === null || cost === undefined) return "";
  if (cost === 0) return "$0";
  // Three significant digits below $1 (model calls cost fractions of a cent), cents above $10.
  if (cost < 1) return "$" + String(Number(cost.toPrecision(3)));
  return "$" + cost.toFixed(cost < 10 ? 3 : 2);
}

function fmtTokens(tokens) {
  if (tokens === null || tokens === undefined) return "";
  if (tokens >= 1e6) return (tokens / 1e6).toFixed(2) + "M";
  if (tokens >= 1e4) return (tokens / 1e3).toFixed(1) + "k";
  return String(Math.round(tokens));
}

function fmtMs(ms) {
  return ms === 0 ? "0" : fmtDuration(ms / 1000);
}

function niceStep(total, count) {
  // A tick step of 1, 2 or 5 times a power of ten giving about `count` ticks.
  const raw = total / Math.max(count, 1);
  const power = Math.pow(10, Math.floor(Math.log10(raw || 1)));
  for (const m of [1, 2, 5, 10]) if (raw <= m * power) return m * power;
  return 10 * power;
}

function kvTable(pairs) {
  const rows = [];
  for (const [key, value] of pairs) {
    if (value === null || value === undefined || value === "") continue;
    rows.push(h("tr", null, [h("td", { text: key }), h("td", null, [typeof value === "string" ? value : value])]));
  }
  return h("table", { class: "kv" }, rows);
}

function fmtNum(v) {
  if (v === null || v === undefined || !isFinite(v)) return "";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
  return String(Number(v.toPrecision(4)));
}

function shellWord(text) {
  // Hierarchy paths are words; anything else is single-quoted for a POSIX shell.
  return /^[A-Za-z0-9_.:\/=-]+$/.test(text) ? text : "'" + text.replace(/'/g, "'\\''") + "'";
}

// -- charts (inline SVG) -------------------------------------------------------------------------
const PALETTE = ["#3b74d9", "#d9822b", "#2e9d5b", "#9b59b6", "#d93a3a", "#17a2b8", "#8b6d3d", "#e83e8c"];
// Points drawn as dots (with a tooltip) when a line has at most this many; longer lines are a line.
const MAX_DOTS = 400;

function extent(values) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
  if (lo === Infinity) return [0, 1];
  if (lo === hi) { const pad = Math.abs(lo) * 0.1 || 1; return [lo - pad, hi + pad]; }
  return [lo, hi];
}

// One metric: value over step, one line per entry of `lines` ({label, points: [[step, value]]}).
// The SVG scales to the width of its box (viewBox), so charts fit a narrow panel.
function lineChart(name, lines, xLabel) {
  const W = 380, H = 180, L = 52, R = 12, T = 10, B = 28;
  const [x0, x1] = extent(lines.flatMap((l) => l.points.map((p) => p[0])));
  const [y0, y1] = extent(lines.flatMap((l) => l.points.map((p) => p[1])));
  const X = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const Y = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const g = svg("svg", { viewBox: "0 0 " + W + " " + H, class: "line-chart", role: "img", "aria-label": name + " over steps" });
  const ys = niceStep(y1 - y0, 4);
  for (let y = Math.ceil(y0 / ys) * ys; y <= y1 + ys * 1e-9; y += ys) {
    g.appendChild(svg("line", { x1: L, x2: W - R, y1: Y(y), y2: Y(y), class: "grid-line" }));
    g.appendChild(svg("text", { x: L - 4, y: Y(y) + 4, "text-anchor": "end", text: fmtNum(y) }));
  }
  const xs = Math.max(1, niceStep(x1 - x0, 5));
  for (let x = Math.ceil(x0 / xs) * xs; x <= x1 + 1e-9; x += xs) {
    g.appendChild(svg("text", { x: X(x), y: H - B + 16, "text-anchor": "middle", text: fmtNum(x) }));
  }
  g.appendChild(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis-line" }));
  g.appendChild(svg("text", { x: W - R, y: H - 2, "text-anchor": "end", text: xLabel || "step" }));
  lines.forEach((line, k) => {
    const color = line.color || PALETTE[k % PALETTE.length];
    const series = svg("g", { class: "series", "data-label": line.label || "", "data-points": line.points.length });
    series.appendChild(svg("polyline", {
      points: line.points.map((p) => X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1)).join(" "),
      fill: "none", stroke: color, "stroke-width": 1.5,
    }));
    if (line.points.length <= MAX_DOTS) {
      for (const [x, y] of line.points) {
        series.appendChild(svg("circle", { cx: X(x).toFixed(1), cy: Y(y).toFixed(1), r: 2.5, fill: color, class: "pt" }, [
          svg("title", { text: (line.label ? line.label + " · " : "") + (xLabel || "step") + " " + fmtNum(x) + ": " + fmtNum(y) }),
        ]));
      }
    }
    g.appendChild(series);
  });
  const legend = lines.length > 1 ? h("div", { class: "legend" }, lines.map((line, k) => h("span", null, [
    h("span", { class: "swatch", style: "background:" + (line.color || PALETTE[k % PALETTE.length]) }),
    line.label || "",
  ]))) : null;
  return h("div", { class: "chart metric-chart", "data-metric": name }, [h("h4", { class: "mono", text: name }), g, legend]);
}

// A ctx.metric histogram: bucket counts between the first and last non-empty bucket.
function histogramChart(entry) {
  const W = 380, H = 150, L = 40, R = 12, T = 8, B = 30;
  const g = svg("svg", { viewBox: "0 0 " + W + " " + H, class: "hist-chart", role: "img", "aria-label": entry.name + " distribution" });
  const b = entry.buckets || [];
  let first = b.findIndex((c) => c > 0), last = b.length - 1;
  while (last >= 0 && !b[last]) last--;
  if (first >= 0) {
    const n = last - first + 1, peak = Math.max(...b.slice(first, last + 1));
    const bw = (W - L - R) / n;
    const edge = (k) => (k <= 0 ? (entry.min !== null ? entry.min : "") : k > entry.bounds.length ? (entry.max !== null ? entry.max : "") : entry.bounds[k - 1]);
    for (let k = first; k <= last; k++) {
      const bh = (b[k] / peak) * (H - T - B);
      const x = L + (k - first) * bw;
      g.appendChild(svg("rect", { x: x + 1, y: H - B - bh, width: Math.max(bw - 2, 1), height: bh, fill: "#7aa7e8" }, [
        svg("title", { text: fmtNum(edge(k)) + " – " + fmtNum(edge(k + 1)) + ": " + b[k] }),
      ]));
    }
    g.appendChild(svg("text", { x: L, y: H - B + 14, text: fmtNum(edge(first)) }));
    g.appendChild(svg("text", { x: W - R, y: H - B + 14, "text-anchor": "end", text: fmtNum(edge(last + 1)) }));
    g.appendChild(svg("text", { x: L - 4, y: T + 10, "text-anchor": "end", text: String(peak) }));
  }
  g.appendChild(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis-line" }));
  const mean = entry.count && entry.sum !== null ? entry.sum / entry.count : null;
  const attrs = Object.entries(entry.attrs || {}).map(([k, v]) => k + "=" + v).join(" ");
  return h("div", { class: "chart hist", "data-metric": entry.name }, [
    h("h4", null, [h("span", { class: "mono", text: entry.name }), h("span", { class: "kind", text: " " + entry.path + (attrs ? " " + attrs : "") })]),
    g,
    h("div", { class: "kind", text: "count " + entry.count + " · mean " + fmtNum(mean) + " · min " + fmtNum(entry.min) + " · max " + fmtNum(entry.max) }),
  ]);
}

function alertList(alerts, onPath) {
  return h("div", { class: "alerts" }, alerts.map((a) => h("div", { class: "alert lv-" + a.level, "data-level": a.level }, [
    h("span", { class: "badge lv-" + a.level, text: a.level }), " ",
    h("b", { text: a.title }),
    a.text ? h("div", { class: "alert-text", text: a.text }) : null,
    h("div", { class: "kind" }, [
      a.ts.replace("T", " ").slice(0, 19),
      a.path ? " · " : null,
      a.path ? (onPath ? h("a", { href: "#" + encodeURIComponent(a.path), class: "mono", text: a.path }) : h("span", { class: "mono", text: a.path })) : null,
    ]),
  ])));
}

// -- outcomes as what they are: a unified diff, Markdown, or text ------------------------------
// Every piece of text is put in the page with textContent; no markup from the data is parsed.

function looksLikeDiff(text) {
  return /^@@ -\d+(,\d+)? \+\d+(,\d+)? @@/m.test(text) && /^(diff --git |--- |\+\+\+ )/m.test(text);
}

function looksLikeMarkdown(text) {
  return /^(#{1,6} \S|\s{0,3}[-*+] \S|\s{0,3}\d+\. \S|```|> \S)/m.test(text) || /\*\*[^*\n]+\*\*|\[[^\]\n]+\]\([^)\s]+\)/.test(text);
}

function diffView(text) {
  const lines = text.split("\n").map((line) => {
    let cls = "ctx";
    if (/^(diff --git |index |--- |\+\+\+ |new file|deleted file|similarity|rename )/.test(line)) cls = "meta";
    else if (line.startsWith("@@")) cls = "hunk";
    else if (line.startsWith("+")) cls = "add";
    else if (line.startsWith("-")) cls = "del";
    return h("span", { class: "dl " + cls, text: line + "\n" });
  });
  return h("pre", { class: "diff" }, lines);
}

function inline(text) {
  const out = [];
  const re = /`([^`\n]+)`|\*\*([^*\n]+)\*\*|(?:^|(?<=[\s(]))[*_]([^*_\s][^*_\n]*?)[*_](?=$|[\s.,;:!?)])|\[([^\]\n]+)\]\(([^)\s]+)\)/g;
  let at = 0, m;
  while ((m = re.exec(text)) !== null) {
    if (m.index > at) out.push(text.slice(at, m.index));
    if (m[1] !== undefined) out.push(h("code", { text: m[1] }));
    else if (m[2] !== undefined) out.push(h("strong", { text: m[2] }));
    else if (m[3] !== undefined) out.push(h("em", { text: m[3] }));
    else if (/^(https?:|mailto:)/i.test(m[5])) out.push(h("a", { href: m[5], rel: "noopener noreferrer", target: "_blank", text: m[4] }));
    else out.push(m[0]);  // a link to anywhere else stays text
    at = re.lastIndex;
  }
  if (at < text.length) out.push(text.slice(at));
  return out;
}

function markdownView(text) {
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  const blocks = [];
  let para = [];
  const flush = () => { if (para.length) { blocks.push(h("p", null, inline(para.join(" ")))); para = []; } };
  const item = /^\s{0,3}([-*+]|\d+\.)\s+(.*)$/;
  const cells = (line) => line.trim().replace(/^\||\|$/g, "").split("|").map((c) => c.trim());
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    let m;
    if (/^\s*```/.test(line)) {
      flush();
      const code = [];
      for (i++; i < lines.length && !/^\s*```/.test(lines[i]); i++) code.push(lines[i]);
      blocks.push(h("pre", { class: "code" }, [h("code", { text: code.join("\n") })]));
    } else if ((m = /^(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line))) {
      flush();
      blocks.push(h("h" + m[1].length, null, inline(m[2])));
    } else if (/^\s{0,3}([-*_])(\s*\1){2,}\s*$/.test(line)) {
      flush();
      blocks.push(h("hr"));
    } else if (/^\s{0,3}>/.test(line)) {
      flush();
      const quote = [];
      for (; i < lines.length && /^\s{0,3}>/.test(lines[i]); i++) quote.push(lines[i].replace(/^\s{0,3}>\s?/, ""));
      i--;
      blocks.push(h("blockquote", null, inline(quote.join(" "))));
    } else if ((m = item.exec(line))) {
      flush();
      const ordered = /\d/.test(m[1]);
      const items = [];
      for (; i < lines.length && (m = item.exec(lines[i])) && /\d/.test(m[1]) === ordered; i++) items.push(h("li", null, inline(m[2])));
      i--;
      blocks.push(h(ordered ? "ol" : "ul", null, items));
    } else if (/^\s*\|.*\|\s*$/.test(line) && i + 1 < lines.length && /^\s*\|?\s*:?-{3,}/.test(lines[i + 1])) {
      flush();
      const head = h("tr", null, cells(line).map((c) => h("th", null, inline(c))));
      const rows = [];
      for (i += 2; i < lines.length && /^\s*\|.*\|\s*$/.test(lines[i]); i++) rows.push(h("tr", null, cells(lines[i]).map((c) => h("td", null, inline(c)))));
      i--;
      blocks.push(h("table", { class: "md-table" }, [h("thead", null, [head]), h("tbody", null, rows)]));
    } else if (!line.trim()) {
      flush();
    } else {
      para.push(line.trim());
    }
  }
  flush();
  return h("div", { class: "md" }, blocks);
}

// An outcome.json's text shown as what it holds: a string that is a unified diff as a diff, a
// Markdown string rendered, anything else as the JSON text. A button switches to the raw text.
function outcomeView(raw, cls) {
  let value;
  try { value = JSON.parse(raw); } catch (e) { value = undefined; }
  const rawPre = h("pre", { class: cls, text: raw });
  if (typeof value !== "string") return rawPre;
  const kind = looksLikeDiff(value) ? "diff" : looksLikeMarkdown(value) ? "markdown" : null;
  if (!kind) return h("pre", { class: cls + " text", text: value });
  const rendered = kind === "diff" ? diffView(value) : markdownView(value);
  rendered.classList.add(cls, "rendered");
  const box = h("div", { class: "rendered-box", "data-kind": kind }, [rendered]);
  let showingRaw = false;
  const toggle = h("button", { class: "small", text: "raw", title: "show the JSON as stored in outcome.json" });
  toggle.addEventListener("click", () => {
    showingRaw = !showingRaw;
    box.replaceChildren(showingRaw ? rawPre : rendered);
    toggle.textContent = showingRaw ? kind : "raw";
  });
  return h("div", null, [h("div", { class: "kind" }, [kind === "diff" ? "unified diff " : "Markdown ", toggle]), box]);
}

function copyButton(text, label) {
  const button = h("button", { class: "small copy", text: label || "copy", title: "copy to the clipboard" });
  button.addEventListener("click", () => {
    const done = (ok) => { button.textContent = ok ? "copied" : "select and copy"; setTimeout(() => { button.textContent = label || "copy"; }, 1500); };
    const fallback = () => {
      // file:// pages may have no clipboard API: copy through a selection instead.
      const area = h("textarea", { style: "position:fixed;left:-9999px" });
      area.value = text;
      document.body.appendChild(area);
      area.select();
      let ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      area.remove();
      done(ok);
    };
    if (navigator.clipboard && navigator.clipboard.writeText) navigator.clipboard.writeText(text).then(() => done(true), fallback);
    else fallback();
  });
  return button;
}
