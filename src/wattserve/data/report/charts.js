/* wattserve charts: draws the chart specs of wattserve.report (cdf, timeseries, bars, scatter)
   with uPlot. Each <div class="ws-chart"> holds its spec as JSON in a data-spec attribute; the
   dashboard calls wsCharts.draw(el, spec) and chart.setData(...) itself. */
(function () {
  "use strict";
  var COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
    "#17becf", "#7f7f7f", "#bcbd22"];

  function num(v, digits) {
    var a = Math.abs(v);
    if (a !== 0 && (a < 0.01 || a >= 1e5)) return v.toExponential(1);
    return (+v.toFixed(digits)).toLocaleString("en-US");
  }
  function si(v, unit) {
    var a = Math.abs(v), p = [[1e9, "G"], [1e6, "M"], [1e3, "k"]];
    for (var i = 0; i < p.length; i++) if (a >= p[i][0]) return num(v / p[i][0], 2) + " " + p[i][1] + unit;
    return num(v, a < 10 ? 2 : 1) + (unit ? " " + unit : "");
  }
  function clock(v) {
    var s = Math.round(v), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    var mm = (h ? String(m).padStart(2, "0") : String(m)) + ":" + String(r).padStart(2, "0");
    return h ? h + ":" + mm : mm;
  }
  /* A value in its unit, readable: 250 ms, 1.5 s, 2.4 kW, $0.12, 37 %, 1:30 (clock). */
  function fmt(unit, v) {
    if (v == null || isNaN(v)) return "–";
    switch (unit) {
      case "s":
        var a = Math.abs(v);
        if (a === 0) return "0";
        if (a < 1e-3) return num(v * 1e6, 0) + " µs";
        if (a < 1) return num(v * 1e3, a < 0.01 ? 2 : 1) + " ms";
        if (a < 120) return num(v, 2) + " s";
        return clock(v);
      case "clock": return clock(v);
      case "$":
        var d = Math.abs(v);
        return (v < 0 ? "-$" : "$") + (d === 0 ? "0" : d < 0.01 ? d.toPrecision(2) : num(d, d < 1 ? 4 : 2));
      case "%": return num(v * 100, 1) + " %";
      case "": return num(v, 3);
      default: return si(v, unit);
    }
  }

  /* a y axis as wide as its longest tick label, so that the label never covers the ticks */
  function axisSize(u, values) {
    var longest = 0;
    (values || []).forEach(function (v) { if (v && v.length > longest) longest = v.length; });
    return Math.max(60, 7 * longest + 36);
  }
  function axis(unit, label, vertical) {
    return {
      label: label, stroke: "#333", grid: { stroke: "#eee" }, size: vertical ? axisSize : 60,
      /* a log axis hands over null for the ticks it leaves unlabelled */
      values: function (u, splits) { return splits.map(function (v) { return v == null ? "" : fmt(unit, v); }); }
    };
  }

  function lineSeries(names, spec) {
    return names.map(function (n, i) {
      var dashed = spec.dashed && spec.dashed.indexOf(n) >= 0;
      return {
        label: n, stroke: (spec.colors && spec.colors[n]) || COLORS[i % COLORS.length], width: 2,
        spanGaps: true, dash: dashed ? [6, 4] : undefined,
        paths: spec.step ? uPlot.paths.stepped({ align: 1 }) : undefined,
        value: function (u, v) { return fmt(spec.y_unit, v); }
      };
    });
  }

  /* A log scale with a margin, so that the extreme points do not sit on the frame, ending on
     one-digit values: uPlot steps its log ticks from the scale's minimum (0.3, 0.4, ... 1, 2). */
  function logRange(u, lo, hi) {
    if (lo == null || !(lo > 0)) return [1, 10];
    var digit = function (v, round) {
      var p = Math.pow(10, Math.floor(Math.log10(v)));
      return +(round(v / p) * p).toPrecision(1);
    };
    return [digit(lo / 1.4, Math.floor), digit(hi * 1.4, Math.ceil)];
  }

  /* Log ticks at 1-2-5 values (1-2-3-5-7 when a decade is wide, 1 when narrow), labelled all:
     uPlot's own steps from the scale's minimum and hides most labels of a short axis. */
  function logSplits(u, axisIdx, min, max) {
    var px = (axisIdx === 0 ? u.width : u.height * 0.7) / Math.log10(max / min);
    var steps = px >= 400 ? [1, 2, 3, 5, 7] : px >= 120 ? [1, 2, 5] : [1], out = [];
    for (var e = Math.floor(Math.log10(min)); Math.pow(10, e) <= max; e++) {
      steps.forEach(function (m) {
        var v = +(m * Math.pow(10, e)).toPrecision(1);
        if (v >= min && v <= max) out.push(v);
      });
    }
    return out;
  }
  function logAxis(axis) {
    return Object.assign(axis, { splits: logSplits, filter: function (u, splits) { return splits; } });
  }

  function build(spec, width) {
    var base = {
      title: spec.title, width: width, height: spec.height || 300,
      legend: { live: true }, cursor: { drag: { x: true, y: false } }, scales: {}
    };
    var names = Object.keys(spec.series);
    var opts, data;
    if (spec.kind === "bars") {
      var cats = spec.categories;
      data = [cats.map(function (_, i) { return i; })].concat(names.map(function (n) { return spec.series[n]; }));
      /* many names are written slanted, in a taller axis, so that they do not overlap */
      var slant = cats.length > 8, longest = Math.max.apply(null, cats.map(function (c) { return c.length; }).concat([0]));
      opts = Object.assign(base, {
        scales: {
          x: { time: false, range: [-0.5, cats.length - 0.5] },
          y: spec.log ? { distr: 3, range: logRange } : { range: function (u, lo, hi) { return [0, hi * 1.1 || 1]; } }
        },
        axes: [{ stroke: "#333", grid: { show: false }, splits: function () { return data[0]; },
          rotate: slant ? -40 : 0, size: slant ? 24 + 5 * longest : 50,
          values: function (u, splits) { return splits.map(function (i) { return cats[i] || ""; }); } },
          spec.log ? logAxis(axis(spec.y_unit, spec.y_label, true)) : axis(spec.y_unit, spec.y_label, true)],
        series: [{ label: spec.x_label || "", value: function (u, i) { return i == null ? "–" : cats[i]; } }].concat(
          names.map(function (n, i) {
            var value = function (u, v) { return fmt(spec.y_unit, v); };
            if (spec.marks && spec.marks.indexOf(n) >= 0)  /* a limit per bar: a black dot */
              return { label: n, stroke: "#000", width: 0, paths: function () { return null; },
                points: { show: true, size: 14, width: 3, stroke: "#000", fill: "#000" }, value: value };
            return { label: n, fill: COLORS[i % COLORS.length] + "cc", stroke: COLORS[i % COLORS.length],
              paths: uPlot.paths.bars({ size: [0.6, 120] }),
              points: { show: false }, value: value };
          }))
      });
      return [opts, data];
    }
    var tables = names.map(function (n) { return spec.series[n]; });
    data = uPlot.join(tables);
    var series = [{ label: spec.x_label || "x", value: function (u, v) { return fmt(spec.x_unit, v); } }];
    if (spec.kind === "scatter") {
      names.forEach(function (n, i) {
        var labels = {}, pts = spec.series[n], names2 = spec.labels && spec.labels[n];
        if (names2) pts[0].forEach(function (x, j) { labels[x + "," + pts[1][j]] = names2[j]; });
        var front = spec.front && spec.front.indexOf(n) >= 0;
        series.push({
          label: n, stroke: COLORS[i % COLORS.length], width: front ? 2 : 0, spanGaps: front,
          paths: front ? uPlot.paths.stepped({ align: 1 }) : function () { return null; },
          points: { show: true, size: front ? 5 : 8, fill: COLORS[i % COLORS.length] },
          value: function (u, v, s, idx) {
            if (v == null) return "–";
            var l = labels[u.data[0][idx] + "," + v];
            return (l ? l + ": " : "") + fmt(spec.y_unit, v);
          }
        });
      });
    } else {
      series = series.concat(lineSeries(names, spec));
    }
    opts = Object.assign(base, {
      scales: spec.log ? {
        x: { time: false, distr: 3, range: logRange }, y: { distr: 3, range: logRange }
      } : {
        x: { time: false },
        y: spec.y_min != null ? { range: function (u, lo, hi) { return [spec.y_min, spec.y_max != null ? spec.y_max : hi * 1.05 || 1]; } } : {}
      },
      axes: [axis(spec.x_unit, spec.x_label), axis(spec.y_unit, spec.y_label, true)].map(function (a) {
        return spec.log ? logAxis(a) : a;
      }),
      series: series
    });
    if (spec.hlines) {
      opts.hooks = { draw: [function (u) {
        var ctx = u.ctx;
        spec.hlines.forEach(function (h) {
          if (h.value == null) return;
          var y = u.valToPos(h.value, "y", true);
          ctx.save(); ctx.strokeStyle = "#000"; ctx.setLineDash([6, 4]); ctx.lineWidth = 1.5;
          ctx.beginPath(); ctx.moveTo(u.bbox.left, y); ctx.lineTo(u.bbox.left + u.bbox.width, y); ctx.stroke();
          ctx.fillStyle = "#000"; ctx.font = "12px sans-serif"; ctx.textAlign = "right";
          ctx.fillText(h.label + " " + fmt(spec.y_unit, h.value), u.bbox.left + u.bbox.width - 4, y - 4);
          ctx.restore();
        });
      }] };
      var top = Math.max.apply(null, spec.hlines.map(function (h) { return h.value || 0; }));
      opts.scales.y = { range: function (u, lo, hi) { return [0, Math.max(hi, top) * 1.1 || 1]; } };
    }
    return [opts, data];
  }

  function draw(el, spec) {
    var width = Math.max(320, Math.min(el.clientWidth || 760, 1100));
    var built = build(spec, width);
    el.innerHTML = "";
    return new uPlot(built[0], built[1], el);
  }

  window.wsCharts = { draw: draw, fmt: fmt, build: build };
  function drawAll() {
    var els = document.querySelectorAll("div.ws-chart[data-spec]");
    for (var i = 0; i < els.length; i++) {
      try { draw(els[i], JSON.parse(els[i].getAttribute("data-spec"))); }
      catch (e) { els[i].textContent = "chart failed: " + e; }
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", drawAll);
  else drawAll();
})();
