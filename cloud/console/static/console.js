// CivicEdge console: the live channel on the overview, charts (uPlot), location on the phone report form.
// Everything else is server-rendered HTML and htmx.
"use strict";

(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const lang = document.body.dataset.lang || "en";
  const i18n = (() => { const el = $("#i18n"); return el ? JSON.parse(el.textContent) : {}; })();
  const t = (s) => i18n[s] || s;
  const clock = new Intl.DateTimeFormat(lang, { hour: "2-digit", minute: "2-digit", second: "2-digit" });

  // --- forms: a question before a grave action, a select that submits (no inline handlers: the CSP forbids them)
  document.addEventListener("submit", (e) => {
    const form = e.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      e.preventDefault();
    }
  });
  document.addEventListener("change", (e) => {
    const el = e.target;
    if (el instanceof HTMLSelectElement && el.hasAttribute("data-autosubmit") && el.form) el.form.submit();
  });

  // --- live channel (overview) -------------------------------------------------------------------------
  function bump(id, by) {
    const el = document.getElementById(id);
    if (el) el.textContent = String(Math.max(0, (parseInt(el.textContent.replace(/\D/g, ""), 10) || 0) + by));
  }

  function logEvent(text, cls) {
    const list = $("#live-events");
    if (!list) return;
    const placeholder = $(".placeholder", list);
    if (placeholder) placeholder.remove();
    const li = document.createElement("li");
    if (cls) li.className = cls;
    const time = document.createElement("time");
    time.textContent = clock.format(new Date());
    li.append(time, document.createTextNode(text));
    list.prepend(li);
    while (list.children.length > 100) list.lastChild.remove();
  }

  function addAlarmRow(ev) {
    const tpl = $("#tpl-alarm-row"), body = $("#alarm-rows");
    if (!tpl || !body || document.getElementById("alarm-" + ev.id)) return;
    const row = tpl.content.firstElementChild.cloneNode(true);
    row.id = "alarm-" + ev.id;
    row.classList.add("sev-" + ev.severity, "state-active");
    const badge = $(".badge", row);
    badge.classList.add("sev-" + ev.severity);
    badge.textContent = t(ev.severity);
    const links = row.querySelectorAll("a");
    links[0].href = "/console/alarms/" + ev.id;
    links[0].textContent = ev.message || ev.code;
    links[1].href = "/console/devices/" + encodeURIComponent(ev.device_id);
    links[1].textContent = ev.device_id;
    for (const [attr, action] of [["data-ack", "ack"], ["data-clear", "clear"]]) {
      const b = row.querySelector("[" + attr + "]");
      if (!b) continue;
      b.setAttribute("hx-post", "/console/alarms/" + ev.id + "/" + action);
      b.setAttribute("hx-target", "#alarm-" + ev.id);
      b.setAttribute("hx-swap", "outerHTML");
    }
    body.prepend(row);
    const none = $("#no-alarms");
    if (none) none.remove();
    if (window.htmx) window.htmx.process(row);
  }

  function startLive() {
    const state = $("#live-state");
    if (!state || !window.EventSource) return;
    const es = new EventSource("/console/live");
    es.onopen = () => { state.className = "dot live"; };
    es.onerror = () => { state.className = "dot offline"; };
    es.addEventListener("alarm", (m) => {
      const ev = JSON.parse(m.data);
      if (ev.event === "raised") {
        addAlarmRow(ev);
        bump("sev-" + ev.severity, 1);
        logEvent(`${t(ev.severity)} · ${ev.device_id}: ${ev.message || ev.code}`, "sev-" + ev.severity);
      } else {
        logEvent(`#${ev.id} ${t(ev.event)} · ${ev.device_id}`);
        if (ev.event === "cleared") {
          const row = document.getElementById("alarm-" + ev.id);
          if (row) row.classList.add("state-cleared");
        }
      }
    });
    es.addEventListener("device", (m) => {
      const ev = JSON.parse(m.data);
      logEvent(`${ev.device_id} ${t(ev.status)}`);
    });
    es.addEventListener("gate", (m) => {
      const ev = JSON.parse(m.data);
      const temp = ev.temperature_c ? ` ${ev.temperature_c.toFixed(1)} °C` : "";
      logEvent(`${ev.device_id}: ${t(ev.decision)} (${ev.reason})${temp}`);
    });
    es.addEventListener("visitor", (m) => {
      const ev = JSON.parse(m.data);
      logEvent(`${ev.device_id}: ${t("visitor request for flat")} ${ev.unit}`);
    });
    es.addEventListener("workorder", (m) => {
      const ev = JSON.parse(m.data);
      logEvent(`${t("work order")} #${ev.id} ${ev.title}: ${t(ev.state)}`);
    });
    es.addEventListener("resync", () => window.location.reload());
  }

  // --- charts --------------------------------------------------------------------------------------------
  const si = (v) => {
    const a = Math.abs(v);
    for (const [d, u] of [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]]) if (a >= d) return +(v / d).toPrecision(3) + u;
    return +v.toPrecision(3) + "";
  };

  function plot(fig, xs, ys, label, range) {
    if (!window.uPlot || !xs.length) {
      fig.insertAdjacentHTML("beforeend", '<p class="muted">—</p>');
      return;
    }
    const width = Math.max(260, fig.clientWidth || 380);
    const time = xs[0] > 1e8;
    new window.uPlot(
      {
        width, height: 160, legend: { show: false }, cursor: { drag: { x: false, y: false } },
        scales: { x: { time, range: range ? () => range : undefined } },
        series: [{}, { label, stroke: "#1f6feb", fill: "#1f6feb22", width: 1.5, points: { show: xs.length < 60 } }],
        axes: [{ size: 30 }, { size: 56, values: (u, vals) => vals.map(si) }],
      },
      [xs, ys],
      fig,
    );
  }

  async function deviceChart(fig) {
    const now = Date.now();
    const url = `/api/devices/${encodeURIComponent(fig.dataset.device)}/telemetry?metric=${encodeURIComponent(fig.dataset.metric)}` +
      `&since=${now - 86400000}&until=${now}&bucket_s=300`;
    try {
      const r = await fetch(url, { credentials: "same-origin" });
      if (!r.ok) throw new Error(r.status);
      const body = await r.json();
      plot(fig, body.points.map((p) => p.ts / 1000), body.points.map((p) => p.avg), fig.dataset.metric,
        [(now - 86400000) / 1000, now / 1000]);
    } catch (e) {
      fig.insertAdjacentHTML("beforeend", `<p class="muted">${e}</p>`);
    }
  }

  function charts() {
    for (const fig of document.querySelectorAll("figure.chart[data-metric]")) deviceChart(fig);
    for (const fig of document.querySelectorAll("figure.chart[data-series]")) {
      const ys = JSON.parse(fig.dataset.series);
      plot(fig, ys.map((_, i) => i), ys, fig.dataset.label || "");
    }
  }

  // --- phone: location for a report ----------------------------------------------------------------------
  function locate() {
    const b = $("#locate");
    if (!b) return;
    b.addEventListener("click", () => {
      if (!navigator.geolocation) return;
      navigator.geolocation.getCurrentPosition((pos) => {
        $("input[name=lat]").value = pos.coords.latitude.toFixed(6);
        $("input[name=lon]").value = pos.coords.longitude.toFixed(6);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", () => { startLive(); charts(); locate(); });
})();
