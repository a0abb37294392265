/* The dashboard: polls /dashboard/state every second and acts through POST /v1/fleet. Data is
   written with textContent only (names and errors come from the server). */
(function () {
  "use strict";
  var fmt = window.wsCharts.fmt;
  var key = sessionStorage.getItem("wattserveKey") || "";
  var charts = {};
  var $ = function (id) { return document.getElementById(id); };
  $("api-key").value = key;
  $("use-key").onclick = function () {
    key = $("api-key").value.trim();
    sessionStorage.setItem("wattserveKey", key);
    poll(true);
  };
  function headers() {
    var h = { "Content-Type": "application/json" };
    if (key) h.Authorization = "Bearer " + key;
    return h;
  }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text != null) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  function say(text, cls) { var m = $("admin-msg"); m.textContent = text; m.className = cls || "muted"; }

  function act(body) {
    fetch("/v1/fleet", { method: "POST", headers: headers(), body: JSON.stringify(body) })
      .then(function (r) { return r.json().then(function (j) { return [r.status, j]; }); })
      .then(function (res) {
        if (res[0] === 200) { say("done: " + JSON.stringify(body), "done"); poll(true); }
        else say("refused (" + res[0] + "): " + ((res[1].error || {}).message || "error"), "err");
      })
      .catch(function (e) { say("failed: " + e, "err"); });
  }

  function site(name, s) {
    var box = $("site-" + name);
    if (!box) {
      box = el("div", null, "site"); box.id = "site-" + name;
      box.appendChild(el("div", null, "now")).id = "site-" + name + "-now";
      var chart = el("div"); chart.id = "site-" + name + "-chart"; box.appendChild(chart);
      var form = el("div");
      var input = el("input"); input.id = "cap-" + name; input.type = "number"; input.min = "1";
      input.placeholder = "new cap, W"; input.size = 10;
      var btn = el("button", "set cap"); btn.id = "setcap-" + name;
      btn.onclick = function () {
        var v = input.value.trim();
        act({ action: "set_cap", site: name, power_cap_w: v === "" ? null : Number(v) });
      };
      form.appendChild(input); form.appendChild(btn); box.appendChild(form);
      $("sites").appendChild(box);
      var spec = { kind: "timeseries", title: name, x_unit: "clock", x_label: "gateway uptime",
        y_unit: "W", y_label: "power", dashed: ["cap"], step: true,
        series: { power: [[0], [0]], cap: [[0], [null]] }, y_min: 0 };
      var built = window.wsCharts.build(spec, 520);
      built[0].height = 220;
      charts[name] = new uPlot(built[0], [[0], [0], [null]], chart);
    }
    var cap = s.power_cap_w;
    $("site-" + name + "-now").textContent = fmt("W", s.power_w) + " now, cap " +
      (cap == null ? "none" : fmt("W", cap)) + ", peak " + fmt("W", s.peak_power_w);
    var h = s.history;
    if (h.t_s.length) charts[name].setData([h.t_s, h.power_w, h.cap_w]);
  }

  function cell(tr, text, cls) { tr.appendChild(el("td", text, cls)); }

  function targets(ts) {
    var body = $("targets").tBodies[0];
    body.textContent = "";
    Object.keys(ts).forEach(function (name) {
      var t = ts[name], st = t.stats || {}, tr = el("tr"); tr.id = "target-" + name;
      cell(tr, name); cell(tr, t.site); cell(tr, t.hardware || t.kind);
      cell(tr, t.drained ? "drained" : (t.healthy ? "healthy" : "unhealthy"),
        t.drained ? "warn" : (t.healthy ? "ok" : "bad"));
      var inflight = el("td", String(t.in_flight)); inflight.id = "target-" + name + "-inflight";
      tr.appendChild(inflight);
      var reps = t.replicas || [];
      cell(tr, reps.length ? reps.map(function (r) { return r.batch + "/" + r.waiting; }).join(" ") : "–");
      cell(tr, fmt("s", st.ttft_p50_s)); cell(tr, fmt("s", st.tpot_p50_s));
      cell(tr, st.energy_j_per_token == null ? "–" : fmt("J", st.energy_j_per_token));
      cell(tr, st.usd_per_mtok == null ? "–" : fmt("$", st.usd_per_mtok));
      var td = el("td"), b = el("button", t.drained ? "undrain" : "drain");
      b.id = "drain-" + name;
      b.onclick = function () { act({ action: t.drained ? "undrain" : "drain", target: name }); };
      td.appendChild(b); tr.appendChild(td);
      body.appendChild(tr);
    });
  }

  function recent(rows) {
    var body = $("recent").tBodies[0];
    body.textContent = "";
    rows.forEach(function (r) {
      var tr = el("tr");
      cell(tr, new Date(r.ts * 1000).toLocaleTimeString()); cell(tr, r.model);
      cell(tr, r.backend || "–"); cell(tr, r.site || "–");
      cell(tr, r.status, r.status === "ok" ? "ok" : "bad");
      cell(tr, fmt("s", r.ttft_s)); cell(tr, r.completion_tokens == null ? "–" : String(r.completion_tokens));
      cell(tr, r.energy_j == null ? "–" : fmt("J", r.energy_j));
      cell(tr, r.usd == null ? "–" : fmt("$", r.usd)); cell(tr, r.reason);
      body.appendChild(tr);
    });
  }

  function render(s) {
    $("total-requests").textContent = String(s.totals.requests);
    $("in-flight").textContent = String(s.in_flight);
    // as `wattserve usage`: unknown where no figure is known, "+?" where some are not
    const part = (unit, v, unknown) =>
      v == null ? "unknown" : fmt(unit, v) + (unknown ? "+?" : "");
    $("total-usd").textContent = part("$", s.totals.usd, s.totals.usd_unknown_requests);
    $("total-energy").textContent = part("J", s.totals.energy_j, s.totals.energy_unknown_requests);
    $("total-gco2").textContent = part("g", s.totals.gco2, s.totals.energy_unknown_requests);
    $("total-gco2").title = s.totals.gco2 == null ? "the fleet file gives no carbon intensity" : "";
    $("policy").textContent = s.policy;
    Object.keys(s.sites).forEach(function (n) { site(n, s.sites[n]); });
    targets(s.targets); recent(s.recent);
    $("status").textContent = "live · up " + fmt("clock", s.uptime_s) + " · fleet " + s.fleet;
    $("status").className = "muted";
  }

  var timer = null;
  function poll(now) {
    if (timer) clearTimeout(timer);
    fetch("/dashboard/state", { headers: headers(), cache: "no-store" })
      .then(function (r) { return r.json().then(function (j) { return [r.status, j]; }); })
      .then(function (res) {
        if (res[0] === 200) render(res[1]);
        else { $("status").textContent = "cannot read the fleet (" + res[0] + "): " + ((res[1].error || {}).message || "") ; $("status").className = "bad"; }
      })
      .catch(function (e) { $("status").textContent = "gateway unreachable: " + e; $("status").className = "bad"; })
      .then(function () { timer = setTimeout(poll, 1000); });
  }
  poll(true);
})();
