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
