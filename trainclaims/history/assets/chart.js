/* The history site's charts (trainclaims/history/site.py inlines this into every page with a chart).
   It reads the page's <script type="application/json" id="chart-data"> and draws an SVG into each
   <figure class="chart" data-chart="ID"> (a series over runs: each point with its spread as a bar,
   the fitted levels, the bound, each step found, an axis of dates and commits, round ticks, from
   zero where the series cannot go below it, a tooltip per point with its run's commit, date and
   label, a click-through to the commit where the site was given a --commit-url) and each
   <span class="spark" data-spark="ID"> (a sparkline: the series alone). No library, no network. */
(function () {
  "use strict";
  var holder = document.getElementById("chart-data");
  if (!holder) return;
  var data = JSON.parse(holder.textContent);
  var runs = data.runs || [];
  var NS = "http://www.w3.org/2000/svg";
  var W = 640, H = 220, L = 58, R = 14, T = 16, B = 40;
  var LOG_RATIO = 30;  /* a positive series spanning more than this factor is drawn on a log axis */
  var CHAR_W = 6;      /* an estimate of a label's character width, for placing labels apart */

  function el(name, attrs, text) {
    var e = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function title(parent, text) { parent.appendChild(el("title", {}, text)); return parent; }

  function fmt(v) {
    if (v === null || v === undefined || !isFinite(v)) return "-";
    var a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2).replace("e+", "e");
    return String(Number(v.toPrecision(4)));
  }
  function tickText(v, step) {
    /* a tick's text with as many digits as the step between ticks needs: 0.06, not 0.06046 */
    if (v === 0) return "0";
    var e = Math.floor(Math.log10(step) + 1e-9), quarter = Math.abs(step / Math.pow(10, e) - 2.5) < 1e-6 ? 1 : 0;
    if (Math.abs(v) >= 1e5 || step < 1e-3) {
      var digits = Math.floor(Math.log10(Math.abs(v)) + 1e-9) - e + quarter;
      return v.toExponential(Math.min(Math.max(digits, 0), 6)).replace("e+", "e");
    }
    return v.toFixed(Math.max(0, quarter - e));
  }
  function niceStep(range, count) {
    var raw = range / Math.max(count, 1), mag = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / mag;
    return mag * (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10);
  }
  function linearAxis(lo, hi) {
    if (hi === lo) { var pad = Math.abs(hi) * 0.1 || 1; lo = lo >= 0 && lo - pad < 0 ? 0 : lo - pad; hi = hi + pad; }
    var step = niceStep(hi - lo, 4), start = Math.floor(lo / step + 1e-9) * step, end = Math.ceil(hi / step - 1e-9) * step;
    var ticks = [];
    for (var t = start; t <= end + step / 2; t += step) ticks.push(Math.abs(t) < step / 1e6 ? 0 : t);
    return {lo: start, hi: end, log: false, ticks: ticks, step: step};
  }
  function logAxis(lo, hi) {
    var a = Math.floor(Math.log10(lo)), b = Math.ceil(Math.log10(hi)), ticks = [];
    for (var k = a; k <= b; k++) {
      ticks.push(Math.pow(10, k));
      if (b - a <= 2 && k < b) { ticks.push(2 * Math.pow(10, k)); ticks.push(5 * Math.pow(10, k)); }
    }
    return {lo: Math.pow(10, a), hi: Math.pow(10, b), log: true, ticks: ticks, step: 0};
  }
  function yAxis(values) {
    var lo = Math.min.apply(null, values), hi = Math.max.apply(null, values);
    if (lo > 0 && hi / lo > LOG_RATIO) return logAxis(lo, hi);
    if (lo >= 0) lo = 0;  /* a series that cannot go below zero starts there */
    return linearAxis(lo, hi);
  }

  function runText(i) {
    var r = runs[i] || {};
    var parts = ["run " + i + (r.label ? " (" + r.label + ")" : ""), (r.date || "").slice(0, 16).replace("T", " "),
      "commit " + (r.commit || "?").slice(0, 10), "torch " + (r.torch || "?")];
    if (r.status && r.status !== "complete") parts.push(r.status);
    return parts.join(" · ");
  }

  function draw(figure, spec) {
    var svg = el("svg", {"class": "chart", width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img",
      "aria-label": spec.title, "data-series": spec.key || ""});
    title(svg, spec.title);
    var pts = spec.points || [];
    if (!pts.length) return;
    var values = [];
    pts.forEach(function (p) { [p[1], p[2], p[3]].forEach(function (v) { if (v !== null && isFinite(v)) values.push(v); }); });
    (spec.bounds || []).forEach(function (b) { values.push(b[1]); });
    var y = yAxis(values);
    var first = pts[0][0], last = pts[pts.length - 1][0];
    (spec.bounds || []).forEach(function (b) { first = Math.min(first, b[0]); last = Math.max(last, b[0]); });
    var plotW = W - L - R, plotH = H - T - B;
    function X(run) { return L + (last === first ? plotW / 2 : plotW * (run - first) / (last - first)); }
    function Y(v) {
      var f = y.log ? (Math.log10(Math.max(v, 1e-300)) - Math.log10(y.lo)) / (Math.log10(y.hi) - Math.log10(y.lo))
        : (v - y.lo) / ((y.hi - y.lo) || 1);
      return T + (1 - f) * plotH;
    }
    var half = last === first ? plotW / 4 : plotW / (last - first) / 2;
    y.ticks.forEach(function (t) {
      svg.appendChild(el("line", {"class": "grid", x1: L, x2: W - R, y1: Y(t).toFixed(1), y2: Y(t).toFixed(1)}));
      svg.appendChild(el("text", {x: L - 4, y: (Y(t) + 3).toFixed(1), "text-anchor": "end", "class": "ytick"},
        y.log ? fmt(t) : tickText(t, y.step)));
    });
    svg.appendChild(el("line", {"class": "axis", x1: L, y1: H - B, x2: W - R, y2: H - B}));
    svg.appendChild(el("line", {"class": "axis", x1: L, y1: T, x2: L, y2: H - B}));
    /* the run axis: dates and labels (else commits), none overlapping another, the newest always named;
       a label near an edge leans inwards, so that none is cut */
    var LABEL_W = 12 * CHAR_W;
    function anchorAt(px) { return px > W - R - LABEL_W / 2 ? "end" : px < L + LABEL_W / 2 - 24 ? "start" : "middle"; }
    function extent(px) {
      var a = anchorAt(px);
      return a === "end" ? [px - LABEL_W, px] : a === "start" ? [px, px + LABEL_W] : [px - LABEL_W / 2, px + LABEL_W / 2];
    }
    var marks = [];
    pts.forEach(function (p, k) {
      var e = extent(X(p[0]));
      var free = function () { return !marks.length || e[0] >= marks[marks.length - 1].e[1] + 6; };
      if (k === pts.length - 1) while (!free()) marks.pop();
      if (free()) marks.push({run: p[0], e: e});
    });
    marks.forEach(function (m) {
      var r = runs[m.run] || {}, px = X(m.run), x = px.toFixed(1), anchor = anchorAt(px);
      svg.appendChild(el("line", {"class": "axis", x1: x, x2: x, y1: H - B, y2: H - B + 3}));
      svg.appendChild(el("text", {x: x, y: H - B + 13, "text-anchor": anchor, "class": "xtick", "data-run": m.run},
        (r.date || "").slice(0, 10)));
      svg.appendChild(el("text", {x: x, y: H - B + 25, "text-anchor": anchor, "class": "xtick commit"},
        r.label ? r.label.slice(0, 12) : (r.commit || "?").slice(0, 7)));
    });
    if (spec.bounds && spec.bounds.length) {
      var bpts = spec.bounds.length === 1
        ? [[X(spec.bounds[0][0]) - half, Y(spec.bounds[0][1])], [X(spec.bounds[0][0]) + half, Y(spec.bounds[0][1])]]
        : spec.bounds.map(function (b) { return [X(b[0]), Y(b[1])]; });
      svg.appendChild(title(el("polyline", {"class": "bound", points: bpts.map(function (p) {
        return p[0].toFixed(1) + "," + p[1].toFixed(1); }).join(" ")}), "the bound"));
    }
    if (spec.levels && spec.levels.length === pts.length) {
      var corners = [];
      spec.levels.forEach(function (lv, k) {
        if (k && lv[1] !== spec.levels[k - 1][1]) {
          var mid = (X(spec.levels[k - 1][0]) + X(lv[0])) / 2;
          corners.push([mid, Y(spec.levels[k - 1][1])], [mid, Y(lv[1])]);
        }
        corners.push([X(lv[0]), Y(lv[1])]);
      });
      svg.appendChild(title(el("polyline", {"class": "level", points: corners.map(function (p) {
        return p[0].toFixed(1) + "," + p[1].toFixed(1); }).join(" ")}), "the fitted levels"));
    }
    pts.forEach(function (p) {
      var run = p[0], x = X(run).toFixed(1);
      if (p[2] !== null && p[3] !== null) {
        svg.appendChild(el("line", {"class": "bar", x1: x, x2: x, y1: Y(p[2]).toFixed(1), y2: Y(p[3]).toFixed(1)}));
      }
      var dot = el("circle", {"class": p[4] ? "outlier" : "pt", "data-run": run, cx: x, cy: Y(p[1]).toFixed(1), r: 3});
      var text = runText(run) + ": " + fmt(p[1]) + (spec.unit ? " " + spec.unit : "") +
        (p[2] !== null ? " (spread " + fmt(p[2]) + ".." + fmt(p[3]) + ")" : "") + (p[4] ? ", set aside as one run's outlier" : "");
      title(dot, text);
      var url = (runs[run] || {}).url;
      if (url) {
        var a = el("a", {href: url, target: "_blank"});
        a.appendChild(dot);
        svg.appendChild(a);
      } else svg.appendChild(dot);
    });
    /* the steps: a dashed line where each began, its label on the first free row above */
    var placed = [];
    (spec.steps || []).forEach(function (s) {
      var sx = X(s.run) - half;
      svg.appendChild(title(el("line", {"class": "step", "data-run": s.run, x1: sx.toFixed(1), y1: T, x2: sx.toFixed(1),
        y2: H - B}), s.title));
      var w = CHAR_W * s.label.length, right = sx + 3 + w <= W - R, x0 = right ? sx + 3 : sx - 3 - w, row = 0;
      while (placed.some(function (q) { return q.row === row && x0 < q.x1 + 4 && q.x0 < x0 + w + 4; })) row++;
      placed.push({row: row, x0: x0, x1: x0 + w});
      svg.appendChild(el("text", {"class": "steplabel", x: (right ? sx + 3 : sx - 3).toFixed(1), y: T + 9 + 11 * row,
        "text-anchor": right ? "start" : "end", "data-run": s.run}, s.label));
    });
    figure.appendChild(svg);
  }

  function spark(holderEl, spec) {
    var w = 120, h = 26, pts = spec.points || [];
    var svg = el("svg", {"class": "spark", width: w, height: h, viewBox: "0 0 " + w + " " + h});
    title(svg, spec.title || "");
    if (pts.length) {
      var vs = pts.map(function (p) { return p[1]; }), lo = Math.min.apply(null, vs), hi = Math.max.apply(null, vs);
      if (lo >= 0) lo = 0;
      var span = hi - lo || 1, first = pts[0][0], last = pts[pts.length - 1][0];
      var xy = pts.map(function (p) {
        return [2 + (last === first ? (w - 4) / 2 : (w - 4) * (p[0] - first) / (last - first)),
          h - 2 - (h - 4) * (p[1] - lo) / span];
      });
      svg.appendChild(el("polyline", {points: xy.map(function (p) { return p[0].toFixed(1) + "," + p[1].toFixed(1); }).join(" ")}));
      var end = xy[xy.length - 1];
      svg.appendChild(title(el("circle", {cx: end[0].toFixed(1), cy: end[1].toFixed(1), r: 2}),
        runText(pts[pts.length - 1][0]) + ": " + fmt(pts[pts.length - 1][1])));
    }
    holderEl.appendChild(svg);
  }

  document.querySelectorAll("figure.chart[data-chart]").forEach(function (f) {
    var spec = (data.charts || {})[f.dataset.chart];
    if (spec) draw(f, spec);
  });
  document.querySelectorAll("span.spark[data-spark]").forEach(function (s) {
    var spec = (data.sparks || {})[s.dataset.spark];
    if (spec) spark(s, spec);
  });
})();
