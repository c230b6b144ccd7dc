"""The audit page's one script: it draws the timeline from the page's own data, in pages.

Ten thousand incarnations drawn as ten thousand SVG bars make a page tens of thousands of
elements long that nobody can read and that a browser lays out slowly. So the page carries
its report as data (a JSON block, never executed) and this script draws only what is asked
for: one row per ID with its incarnations side by side, under its namespace, 100 IDs at a
time, on a time axis that can be zoomed; an overview of every matching incarnation (how
many were created in each slice of the window, by how they ended) sits above, so the whole
is seen at any count. The filters and the zoom live in the URL fragment (``#ns=web&
ending=signal``), so a view can be linked, reloaded, and opened by a test.

The page's Content-Security-Policy allows this script by its SHA-256 (SCRIPT_HASH) and
nothing else: no other script, no fetch, no frame. Every text is set with textContent,
never parsed as markup, so IDs and commands from the history cannot become elements.
"""

from __future__ import annotations

import base64
import hashlib

SCRIPT = r"""
(function () {
"use strict";
var D = JSON.parse(document.getElementById("audit-data").textContent);
var svg = document.getElementById("timeline"), hist = document.getElementById("overview");
var NS = svg.namespaceURI, form = document.getElementById("filters");
var W = 1040, LABEL = 200, RIGHT = 170, ROW = 22, BAR = 14, AXIS = 26, HEAD = 24, MIN = 3;
var PER_PAGE = 100, LISTED = 200, BUCKETS = 60, HIST = 64;
var STEPS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60,
  120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
var PLOT = W - LABEL - RIGHT, ENDINGS = D.endings.map(function (e) { return e[0]; });
var FIRST = 0, LAST = 1;
D.lives.forEach(function (l) { LAST = Math.max(LAST, end(l)); });

function end(l) { return l[6] !== null ? l[6] : D.until; }
function make(ns, tag, attrs, text) {
  var e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (var k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function svgEl(tag, attrs, text) { return make(NS, tag, attrs, text); }
function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
function iso(ms) { return new Date(D.t0 + ms).toISOString(); }
function duration(s) {
  if (s < 0.01) return (s * 1000).toFixed(1) + "ms";
  if (s < 1) return Math.round(s * 1000) + "ms";
  if (s < 60) return +s.toPrecision(3) + "s";
  var m = Math.floor(s / 60), pad = function (n) { return (n < 10 ? "0" : "") + n; };
  if (m < 60) return m + "m" + pad(Math.floor(s) % 60) + "s";
  var h = Math.floor(m / 60);
  if (h < 24) return h + "h" + pad(m % 60) + "m";
  return Math.floor(h / 24) + "d" + pad(h % 24) + "h";
}

function read() {
  var q = new URLSearchParams(location.hash.slice(1)), at = function (name, dflt) {
    var t = Date.parse(q.get(name) || "");
    return isNaN(t) ? dflt : t - D.t0;
  };
  var s = {ns: q.get("ns") || "", id: q.get("id") || "", status: q.get("status") || "",
    ending: (q.get("ending") || "").split(",").filter(function (e) { return e; }),
    from: at("from", FIRST), to: at("to", LAST), page: Math.max(1, +q.get("page") || 1)};
  if (!(s.to > s.from)) { s.from = FIRST; s.to = LAST; }
  return s;
}
function write(s) {
  var q = new URLSearchParams();
  if (s.ns) q.set("ns", s.ns);
  if (s.id) q.set("id", s.id);
  if (s.ending.length) q.set("ending", s.ending.join(","));
  if (s.status) q.set("status", s.status);
  if (s.from !== FIRST || s.to !== LAST) { q.set("from", iso(s.from)); q.set("to", iso(s.to)); }
  if (s.page > 1) q.set("page", String(s.page));
  location.hash = q.toString();
}
function fromForm(keep) {
  var s = read();
  s.ns = form.elements.ns.value; s.id = form.elements.id.value.trim();
  s.status = form.elements.status.value.trim();
  s.ending = Array.prototype.filter.call(form.querySelectorAll("input[name=ending]"),
    function (box) { return box.checked; }).map(function (box) { return box.value; });
  if (!keep) s.page = 1;
  return s;
}
function toForm(s) {
  form.elements.ns.value = s.ns; form.elements.id.value = s.id;
  form.elements.status.value = s.status;
  form.querySelectorAll("input[name=ending]").forEach(function (box) {
    box.checked = s.ending.indexOf(box.value) >= 0;
  });
}

function matches(l, s) {
  return (!s.ns || D.namespaces[l[0]] === s.ns) && (!s.id || l[1].indexOf(s.id) >= 0) &&
    (!s.ending.length || s.ending.indexOf(l[7]) >= 0) &&
    (s.status === "" || String(l[9]) === s.status) && l[3] <= s.to && end(l) >= s.from;
}

function axis(s, height) {
  var span = (s.to - s.from) / 1000, step = STEPS.find(function (t) { return span / t <= 8; });
  step = step || span / 8;
  for (var n = 0; n * step <= span; n++) {
    var tx = LABEL + n * step / span * PLOT;
    svg.appendChild(svgEl("line", {"class": "grid", x1: tx, y1: AXIS - 6, x2: tx, y2: height}));
    svg.appendChild(svgEl("text", {"class": "tick", x: tx, y: AXIS - 10},
      n ? "+" + duration(n * step) : ""));
  }
  svg.appendChild(svgEl("text", {"class": "origin", x: LABEL + 6, y: AXIS - 10},
    iso(s.from).replace("T", " ").slice(0, 19)));
  if (D.until >= s.from && D.until <= s.to) {
    var ux = LABEL + (D.until - s.from) / (s.to - s.from) * PLOT;
    var line = svgEl("line", {"class": "until", x1: ux, y1: AXIS - 6, x2: ux, y2: height});
    line.appendChild(svgEl("title", {}, "until " + iso(D.until)));
    svg.appendChild(line);
  }
}

function mark(m, x, y, lifeEnd) {
  var kind = D.marks[m[0]], mx = x(m[1]);
  var g = svgEl("g", {"class": "mark mark-" + kind, "data-mark": kind});
  g.appendChild(svgEl("title", {}, m[3] + "\n" + iso(m[1])));
  if (kind === "kill") {
    g.appendChild(svgEl("polygon", {points: [mx - 4, y - 2, mx + 4, y - 2, mx, y + 5].join(" ")}));
  } else if (kind === "pause") {
    var px = x(m[2] !== null ? m[2] : lifeEnd);
    g.appendChild(svgEl("rect", {x: mx, y: y + 3, width: Math.max(px - mx, 2), height: BAR - 6}));
  } else if (kind === "exec") {
    var b = y + BAR;
    var diamond = [mx, b - 3, mx + 3, b, mx, b + 3, mx - 3, b];
    g.appendChild(svgEl("polygon", {points: diamond.join(" ")}));
  } else if (kind === "oom") {
    g.appendChild(svgEl("circle", {cx: mx, cy: y + BAR / 2, r: 4}));
  } else {
    g.appendChild(svgEl("path", {d: "M" + (mx - 4) + " " + (y + 3) + "l8 8m0 -8l-8 8"}));
  }
  return g;
}

function bar(l, top, x) {
  var key = D.namespaces[l[0]] + "/" + l[1] + "#" + l[2], y = top + (ROW - BAR) / 2;
  var x0 = x(l[3]), x1 = Math.max(x(end(l)), x0 + MIN);
  var r0 = l[4] !== null ? x(l[4]) : x0;
  var r1 = Math.max(l[5] !== null ? x(l[5]) : x(end(l)), r0 + MIN);
  var g = svgEl("g", {"class": "bar ended-" + l[7] + (l[11] ? " clock-went-back" : ""),
    "data-task": key, "data-ended": l[7]});
  g.appendChild(svgEl("title", {}, l[10]));
  g.appendChild(svgEl("rect", {"class": "life", x: x0, y: y, width: x1 - x0, height: BAR}));
  g.appendChild(svgEl("rect", {"class": "run", x: r0, y: y, width: r1 - r0, height: BAR}));
  l[12].forEach(function (m) { g.appendChild(mark(m, x, y, end(l))); });
  return [g, x1];
}

function timeline(rows, s) {
  clear(svg);
  var first = (s.page - 1) * PER_PAGE, shown = rows.slice(first, first + PER_PAGE);
  var heads = shown.filter(function (r, i) { return !i || shown[i - 1][0][0] !== r[0][0]; });
  var height = AXIS + ROW * shown.length + HEAD * heads.length + 4;
  svg.setAttribute("height", height); svg.setAttribute("viewBox", "0 0 " + W + " " + height);
  axis(s, height);
  var x = function (t) {
    return Math.min(Math.max(LABEL + (t - s.from) / (s.to - s.from) * PLOT, LABEL), W - RIGHT);
  };
  var top = AXIS;
  shown.forEach(function (row, i) {
    var ns = D.namespaces[row[0][0]];
    if (!i || shown[i - 1][0][0] !== row[0][0]) {
      svg.appendChild(svgEl("text", {"class": "namespace", x: 4, y: top + HEAD - 7}, ns));
      top += HEAD;
    }
    var g = svgEl("g", {"class": "row", "data-id": ns + "/" + row[0][1]}), right = 0;
    var label = row[0][1].length <= 30 ? row[0][1] : row[0][1].slice(0, 29) + "\u2026";
    g.appendChild(svgEl("text", {"class": "label", x: LABEL - 8, y: top + ROW - 7}, label));
    row.forEach(function (l) { var b = bar(l, top, x); g.appendChild(b[0]); right = b[1]; });
    var last = row[row.length - 1];
    var said = D.outcomes[last[8]] + (last[11] ? " \u00b7 clock went back" : "") +
      (row.length > 1 ? " \u00b7 " + row.length + " incarnations" : "");
    g.appendChild(svgEl("text", {"class": "outcome", x: Math.min(right + 5, W - RIGHT + 5),
      y: top + ROW - 7}, said));
    svg.appendChild(g);
    top += ROW;
  });
}

function overview(lives, s) {
  clear(hist);
  var counts = [], most = 1, width = (s.to - s.from) / BUCKETS;
  for (var b = 0; b < BUCKETS; b++) counts.push({});
  lives.forEach(function (l) {
    if (l[3] < s.from) return;
    var c = counts[Math.min(BUCKETS - 1, Math.floor((l[3] - s.from) / width))];
    c[l[7]] = (c[l[7]] || 0) + 1;
  });
  counts.forEach(function (c, n) {
    var total = 0, said = [];
    ENDINGS.forEach(function (e, k) {
      if (c[e]) { total += c[e]; said.push(c[e] + " " + D.endings[k][2]); }
    });
    c.total = total; c.said = said; most = Math.max(most, total);
  });
  var step = PLOT / BUCKETS;
  counts.forEach(function (c, n) {
    var bx = LABEL + n * step, y = HIST, g = svgEl("g", {"class": "bucket", "data-count": c.total});
    ENDINGS.forEach(function (e) {
      if (!c[e]) return;
      var h = Math.max(c[e] / most * (HIST - 4), 1);
      y -= h;
      g.appendChild(svgEl("rect", {"class": "hist ended-" + e, x: bx + 0.5, y: y,
        width: step - 1, height: h}));
    });
    var t0 = s.from + n * width;
    g.appendChild(svgEl("title", {}, c.total + " created " + iso(t0) + " \u2013 " +
      iso(t0 + width) + (c.total ? ": " + c.said.join(", ") : "") + "\n(click to zoom in)"));
    g.appendChild(svgEl("rect", {"class": "hit", x: bx, y: 0, width: step, height: HIST}));
    g.addEventListener("click", function () { zoomTo(t0, t0 + width); });
    hist.appendChild(g);
  });
  hist.appendChild(svgEl("text", {"class": "label", x: LABEL - 8, y: HIST - 4},
    "created, most " + most));
}

function anomalies(lives, s) {
  var body = document.getElementById("anomaly-rows"), chosen = new Set(lives);
  if (!body) return;  // the report has none: the page says so in place of the table
  clear(body);
  var rows = D.anomalies.filter(function (a) {
    if (a[7] >= 0) return chosen.has(D.lives[a[7]]);
    return (!s.ns || a[2] === s.ns) && (!s.id || a[3].indexOf(s.id) >= 0);
  });
  rows.slice(0, LISTED).forEach(function (a) {
    var tr = make(null, "tr", {"class": "anomaly kind-" + a[1]});
    [iso(a[0]), a[1], a[2] + "/" + a[3] + "#" + a[4], a[5], a[6]].forEach(function (text) {
      tr.appendChild(make(null, "td", {}, text));
    });
    body.appendChild(tr);
  });
  var more = rows.length - LISTED;
  document.getElementById("anomaly-status").textContent = rows.length ? (more > 0 ?
    "The first " + LISTED + " of " + rows.length +
    " matching anomalies; narrow the filters for the rest."
    : rows.length + " matching anomalies.") : "No anomalies match.";
}

function zoomTo(from, to) { var s = fromForm(false); s.from = from; s.to = to; write(s); }

function render() {
  var s = read(), lives = D.lives.filter(function (l) { return matches(l, s); }), rows = [];
  toForm(s);
  lives.forEach(function (l) {
    var row = rows[rows.length - 1];
    if (row && row[0][0] === l[0] && row[0][1] === l[1]) row.push(l); else rows.push([l]);
  });
  var pages = Math.max(1, Math.ceil(rows.length / PER_PAGE));
  s.page = Math.min(s.page, pages);
  overview(lives, s);
  timeline(rows, s);
  anomalies(lives, s);
  var first = (s.page - 1) * PER_PAGE;
  var status = document.getElementById("status");
  status.setAttribute("data-matching", lives.length);
  status.setAttribute("data-rows", rows.length);
  status.textContent = lives.length ? "IDs " + (first + 1) + "\u2013" +
    Math.min(first + PER_PAGE, rows.length) + " of " + rows.length + " (" + lives.length +
    " of " + D.lives.length + " incarnations match), page " + s.page + " of " + pages + "."
    : "No incarnation matches.";
  document.getElementById("prev").disabled = s.page <= 1;
  document.getElementById("next").disabled = s.page >= pages;
  document.getElementById("empty").hidden = lives.length > 0;
}

form.addEventListener("submit", function (e) { e.preventDefault(); write(fromForm(false)); });
form.addEventListener("change", function () { write(fromForm(false)); });
form.elements.id.addEventListener("input", function () { write(fromForm(false)); });
function page(by) { var s = fromForm(true); s.page += by; write(s); }
function zoom(by) {
  var s = read(), mid = (s.from + s.to) / 2, half = (s.to - s.from) * by / 2;
  zoomTo(Math.max(FIRST, mid - half), Math.min(LAST, mid + half));
}
document.getElementById("prev").addEventListener("click", function () { page(-1); });
document.getElementById("next").addEventListener("click", function () { page(1); });
document.getElementById("zoom-in").addEventListener("click", function () { zoom(0.5); });
document.getElementById("zoom-out").addEventListener("click", function () { zoom(2); });
document.getElementById("whole").addEventListener("click", function () { zoomTo(FIRST, LAST); });
document.getElementById("clear").addEventListener("click", function () { location.hash = ""; });
window.addEventListener("hashchange", render);
document.getElementById("controls").hidden = false;
render();
})();
"""

SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
"""What the page's Content-Security-Policy allows to run: this script, byte for byte."""
