// Portcullis dashboard: polls /dashboard/api/state every 2 s and draws the tables and the
// decisions chart (inline SVG, no library). Data is only ever inserted as text, never as HTML.
"use strict";
(function () {
  const POLL_MS = 2000;
  const SVG = "http://www.w3.org/2000/svg";
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const COLORS = {
    forward: "#9db4c0", account_locked: "#c62828", directory_budget: "#ef6c00",
    directory_locked: "#6a1b9a", known_bad_password: "#f9a825", sprayed_password: "#ad1457",
    source_blocked: "#1565c0", rate_limited: "#00838f", blocked_network: "#37474f", overloaded: "#795548",
  };
  const $ = (sel) => document.querySelector(sel);
  let tenant = "all";
  let minutes = 60;
  let last = null;
  let timer = null;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  function time(ms) {
    if (!ms) return "—";
    return new Date(ms).toLocaleTimeString([], { hour12: false });
  }
  function until(ms, now) {
    const s = Math.max(0, Math.round((ms - now) / 1000));
    const left = s >= 3600 ? Math.round(s / 360) / 10 + " h" : s >= 60 ? Math.round(s / 6) / 10 + " min" : s + " s";
    return time(ms) + " (in " + left + ")";
  }
  function fill(table, rows, empty) {
    const body = document.querySelector(table + " tbody");
    const cols = document.querySelectorAll(table + " thead th").length;
    body.replaceChildren();
    if (!rows.length) {
      const tr = el("tr");
      const td = el("td", empty, "empty");
      td.colSpan = cols;
      tr.append(td);
      body.append(tr);
      return;
    }
    for (const cells of rows) {
      const tr = el("tr");
      for (const c of cells) {
        const td = el("td");
        if (c instanceof Node) td.append(c); else td.textContent = c === undefined || c === null ? "" : String(c);
        tr.append(td);
      }
      body.append(tr);
    }
  }
  function badge(id, n) {
    const b = $(id);
    b.textContent = n;
    b.classList.toggle("hot", n > 0);
  }
  async function admin(path, body) {
    const r = await fetch(path, {
      method: "POST", credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": csrf },
      body: JSON.stringify(body),
    });
    if (r.status === 401) { location.reload(); return; }
    if (!r.ok) $("#status").textContent = "action failed: HTTP " + r.status;
    refresh();
  }
  function button(label, cls, data, onclick) {
    const b = el("button", label, cls);
    b.type = "button";
    for (const k in data) b.dataset[k] = data[k];
    b.addEventListener("click", () => { b.disabled = true; onclick(); });
    return b;
  }

  function drawChart(c) {
    const root = $("#decisions-chart");
    const W = 960, H = 220, L = 44, R = 8, T = 8, B = 20;
    const shown = Math.min(c.buckets.length, Math.round(minutes * 60 / c.bucket_secs));
    const skip = c.buckets.length - shown;
    c = Object.assign({}, c, { buckets: c.buckets.slice(skip), start_ms: c.start_ms + skip * c.bucket_secs * 1000 });
    const n = c.buckets.length;
    const bw = (W - L - R) / n;
    const totals = c.buckets.map((b) => b.reduce((a, x) => a + x, 0));
    const peak = Math.max(1, ...totals) / c.bucket_secs;
    const step = niceStep(peak / 4);
    const ymax = Math.max(step * Math.ceil(peak / step), step);
    const y = (v) => T + (H - T - B) * (1 - v / ymax);
    root.replaceChildren();
    for (let v = 0; v <= ymax + 1e-9; v += step) {
      root.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e3e6ea" }));
      const t = svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end" });
      t.textContent = fmt(v) + "/s";
      root.append(t);
    }
    const tick = minutes >= 60 ? 10 : 2;
    for (let m = minutes; m >= 0; m -= tick) {
      const x = L + (W - L - R) * (1 - m / minutes);
      const t = svg("text", { x: x, y: H - 5, "text-anchor": m === minutes ? "start" : m === 0 ? "end" : "middle" });
      t.textContent = m === 0 ? "now" : "-" + m + " min";
      root.append(t);
    }
    const bars = svg("g", { class: "bars" });
    let drawn = 0;
    c.buckets.forEach((counts, i) => {
      let acc = 0;
      counts.forEach((k, s) => {
        if (!k) return;
        const v = k / c.bucket_secs;
        const r = svg("rect", {
          x: (L + i * bw).toFixed(2), width: Math.max(bw - 0.3, 0.8).toFixed(2),
          y: y(acc + v).toFixed(2), height: (y(acc) - y(acc + v)).toFixed(2),
          fill: COLORS[c.series[s]] || "#999", "data-series": c.series[s], "data-count": k,
        });
        const tip = svg("title", {});
        tip.textContent = time(c.start_ms + i * c.bucket_secs * 1000) + " " + c.series[s] + ": " + k;
        r.append(tip);
        bars.append(r);
        acc += v;
        drawn++;
      });
    });
    root.append(bars);
    root.dataset.total = c.total;
    root.dataset.minutes = minutes;
    root.dataset.bars = drawn;
    root.dataset.last = totals[n - 1] + totals[n - 2];
    const legend = $("#legend");
    legend.replaceChildren();
    const sums = c.series.map((_, s) => c.buckets.reduce((a, b) => a + b[s], 0));
    c.series.forEach((name, s) => {
      const item = el("span");
      const sw = el("i");
      sw.style.background = COLORS[name] || "#999";
      item.append(sw, document.createTextNode(name + " " + sums[s]));
      legend.append(item);
    });
  }
  function niceStep(x) {
    if (x <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(x)));
    for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p;
    return 10 * p;
  }
  function fmt(v) { return v >= 10 ? Math.round(v) : Math.round(v * 10) / 10; }

  function render(d) {
    last = d;
    const now = d.now_ms;
    drawChart(d.chart);
    const sel = $("#tenant");
    const want = ["all"].concat(d.chart.tenants);
    if (sel.options.length !== want.length || want.some((t, i) => sel.options[i].value !== t)) {
      sel.replaceChildren(...want.map((t) => { const o = el("option", t); o.value = t; return o; }));
      sel.value = want.includes(tenant) ? tenant : "all";
    }
    badge("#lockouts-count", d.counts.lockouts);
    fill("#lockouts", d.lockouts.map((l) => [l.tenant, l.account, l.kind, time(l.since_ms), until(l.until_ms, now), l.level,
      l.kind === "directory" ? el("span", "directory's own", "muted")
        : button("Unlock", "unlock", { tenant: l.tenant, account: l.account },
          () => admin("/v1/admin/unlock", { tenant: l.tenant, user: l.account }))]), "no account is locked");
    badge("#sources-count", d.counts.sources);
    fill("#sources", d.sources.map((s) => [s.tenant, s.source, s.counter + " " + s.value + "/" + s.limit, time(s.since_ms), until(s.until_ms, now),
      button("Clear", "clear", { tenant: s.tenant, source: s.source },
        () => admin("/v1/admin/clear-source", { tenant: s.tenant, source: s.source }))]), "no source is blocked");
    fill("#attacked", d.attacked_accounts.map((a) => [a.tenant, a.account, a.unfamiliar_failures + a.familiar_failures,
      a.directory_bad_count + "/" + a.directory_threshold, a.locked ? el("span", "locked", "yes") : "no"]), "no failures");
    fill("#prefixes", d.attacking_sources.map((s) => [s.tenant, s.source, s.failures, s.failed_accounts, s.successes,
      s.blocked ? el("span", "blocked", "yes") : "no"]), "no failing source");
    badge("#sprays-count", d.counts.sprays);
    fill("#sprays", d.sprays.map((s) => [s.id, time(s.detected_at_ms), s.accounts_failed,
      s.flagged.length ? s.flagged.map((f) => f.tenant + "/" + f.account).join(", ") : "none"]), "no sprayed password");
    fill("#budget", d.budget.map((b) => [b.tenant, b.account, b.directory_bad_count + "/" + b.directory_threshold, b.pending, b.budget_left_unfamiliar]),
      "no account has spent any budget");
    fill("#agents", d.agents.map((a) => [a.index, a.url, a.healthy ? "healthy" : el("span", "unhealthy", "yes"),
      Object.entries(a.answers).map(([k, v]) => k + " " + v).join(", ") || "none",
      a.p50_ms == null ? "—" : a.p50_ms + " ms", a.p99_ms == null ? "—" : a.p99_ms + " ms"]),
      d.inline ? "no agent" : "not in in-line mode (no --agent)");
    const p = d.policy;
    const dl = $("#policy");
    dl.replaceChildren();
    const row = (k, v) => dl.append(el("dt", k), el("dd", v));
    row("version", p.version);
    row("mode", p.mode);
    row("tenants", p.tenants + (p.tenant_names.length ? " (" + p.tenant_names.join(", ") + ")" : ""));
    if (p.shadow_version) {
      row("shadow", p.shadow_version);
      row("disagreements", p.disagreement_total);
      for (const kind in p.disagreements) {
        const e = Object.entries(p.disagreements[kind]);
        if (e.length) row("  " + kind, e.map(([r, n]) => r + " " + n).join(", "));
      }
    } else {
      row("shadow", "none loaded");
    }
    $("#policy-line").textContent = "policy " + p.version + " · " + p.mode;
    $("#status").textContent = "updated " + time(now);
  }

  async function refresh() {
    try {
      const r = await fetch("/dashboard/api/state?tenant=" + encodeURIComponent(tenant),
        { credentials: "same-origin", cache: "no-store" });
      if (r.status === 401) { location.reload(); return; }
      if (!r.ok) throw new Error("HTTP " + r.status);
      render(await r.json());
    } catch (e) {
      $("#status").textContent = "update failed: " + e.message;
    }
  }
  function loop() {
    refresh().finally(() => { timer = setTimeout(loop, POLL_MS); });
  }
  $("#tenant").addEventListener("change", (e) => {
    tenant = e.target.value;
    clearTimeout(timer);
    loop();
  });
  $("#range").addEventListener("change", (e) => {
    minutes = Number(e.target.value);
    $("#chart-title").textContent = "Decisions per second, last " + (minutes === 60 ? "hour" : minutes + " minutes");
    if (last) drawChart(last.chart);
  });
  loop();
})();
