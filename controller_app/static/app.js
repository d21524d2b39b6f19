// The operator page: devices (index.html) and one device (device.html). Plain JavaScript, no
// build step. Every value from the controller goes into the page as text (textContent), never
// as markup. The operator's token stays in this tab (sessionStorage) and is sent only in an
// Authorization header.
"use strict";

const TOKEN_KEY = "iot-operator-token";
const REFRESH_MS = 2000;
const state = { session: null };

// ---------------------------------------------------------------- helpers

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs, ...children) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

async function api(path, opts = {}) {
  const headers = Object.assign({ "Accept": "application/json" }, opts.headers || {});
  const t = token();
  if (t) headers["Authorization"] = "Bearer " + t;
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method: opts.method || "GET", headers,
                                body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
                                cache: "no-store", credentials: "omit" });
  let data = null;
  try { data = await r.json(); } catch (e) { data = { error: `HTTP ${r.status}` }; }
  return { ok: r.ok, status: r.status, data };
}

function pad(n) { return String(n).padStart(2, "0"); }

function fmtTime(sec) {
  if (!sec) return "–";
  const d = new Date(sec * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtAgo(sec) {
  if (!sec) return "–";
  const s = Math.max(0, Date.now() / 1000 - sec);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function fmtRate(bps) {
  const units = ["B/s", "kB/s", "MB/s", "GB/s"];
  let v = bps, i = 0;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

function chip(category, extra) {
  const c = category || "undecided";
  return el("span", { class: `chip cat-${c.replace(/[^a-z0-9-]/gi, "")}${extra ? " " + extra : ""}`, text: c });
}

function stageBadge(stage) {
  const s = stage || "learning";
  return el("span", { class: `stage st-${s.replace(/[^a-z-]/gi, "")}`, text: s });
}

function vendorCell(row) {
  const wrap = el("span", { class: "vendor" });
  if (row.vendor) wrap.append(el("span", { text: row.vendor }), " ");
  wrap.append(el("code", { class: "oui", text: row.oui }));
  if (row.local) wrap.append(" ", el("span", { class: "muted", text: "randomised", title: "The MAC's locally administered bit is set (a randomised or virtual address): no vendor owns this prefix" }));
  else if (!row.vendor) wrap.append(" ", el("span", { class: "muted", text: "unregistered", title: "No organisation in the IEEE registry for this prefix (or no registry on the controller)" }));
  return wrap;
}

// ---------------------------------------------------------------- header: status and sign-in

function renderStatus(st) {
  const box = document.getElementById("status");
  if (!box || !st) return;
  const pol = st.policy || {};
  box.replaceChildren(
    el("span", { text: `${(st.switches || []).length} switch${(st.switches || []).length === 1 ? "" : "es"}` }),
    el("span", { text: `${st.devices} devices` }),
    el("span", { text: `${st.learning ?? 0} learning` }),
    el("span", { text: `${st.packet_ins_per_second ?? 0} packet-ins/s` }),
    el("span", { title: pol.source || "", text: `policy ${pol.digest || "?"} (enforce on ${pol.enforce_on || "?"})` }),
    el("span", { class: st.pins_enabled ? "pins on" : "pins off", text: st.pins_enabled ? "pins on" : "pins off (read-only)" }),
  );
}

async function loadSession() {
  const r = await api("/api/session");
  state.session = r.ok ? r.data : { pins_enabled: false, operator: null };
  if (token() && !state.session.operator) sessionStorage.removeItem(TOKEN_KEY);
  renderSignin();
  return state.session;
}

function renderSignin() {
  const box = document.getElementById("signin");
  if (!box) return;
  const s = state.session || {};
  if (!s.pins_enabled) {
    box.replaceChildren(el("span", { class: "muted", text: "read-only" }));
    return;
  }
  if (s.operator) {
    box.replaceChildren(
      el("span", { id: "operator", text: `signed in as ${s.operator}` }), " ",
      el("button", { type: "button", id: "signout", onclick: () => { sessionStorage.removeItem(TOKEN_KEY); loadSession().then(onSession); } }, "sign out"));
    return;
  }
  const input = el("input", { type: "password", id: "token", placeholder: "operator token", "aria-label": "Operator token", autocomplete: "off" });
  const msg = el("span", { class: "msg", id: "signin-msg" });
  const form = el("form", { id: "signin-form", onsubmit: async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    const s2 = await loadSession();
    if (!s2.operator) {
      const m = document.getElementById("signin-msg");
      if (m) { m.textContent = "unknown token"; m.className = "msg error"; }
    }
    onSession();
  } }, input, " ", el("button", { type: "submit", id: "signin-btn" }, "sign in"), " ", msg);
  box.replaceChildren(form);
}

let onSession = () => {};

// ---------------------------------------------------------------- the devices page

const listState = { q: "", category: "", stage: "", pinned: false, sort: "last_seen", order: "desc", offset: 0, limit: 100 };

function readListState() {
  const p = new URLSearchParams(location.search);
  for (const k of ["q", "category", "stage", "sort", "order"]) if (p.has(k)) listState[k] = p.get(k);
  if (p.has("offset")) listState.offset = Math.max(0, parseInt(p.get("offset"), 10) || 0);
  listState.pinned = p.get("pinned") === "1";
}

function listQuery() {
  const p = new URLSearchParams();
  for (const k of ["q", "category", "stage", "sort", "order"]) if (listState[k]) p.set(k, listState[k]);
  if (listState.pinned) p.set("pinned", "1");
  if (listState.offset) p.set("offset", String(listState.offset));
  return p;
}

function fillFacet(select, counts, current, allLabel) {
  const opts = [el("option", { value: "", text: allLabel })];
  const names = Object.keys(counts || {});
  if (current && !names.includes(current)) names.push(current);
  for (const n of names) opts.push(el("option", { value: n, text: `${n} (${(counts || {})[n] || 0})` }));
  select.replaceChildren(...opts);
  select.value = current || "";
}

function deviceRow(d) {
  const href = `/ui/device?mac=${encodeURIComponent(d.mac)}`;
  const cat = d.gateway ? chip("gateway") : chip(d.category);
  const cells = [
    el("td", {}, el("a", { href, class: "mac", text: d.mac }), d.pin ? el("span", { class: "pin", title: `pinned: ${d.pin}`, text: "pinned" }) : null),
    el("td", {}, vendorCell(d)),
    el("td", { text: d.dpid ? `${d.dpid.replace(/^0+(?=.)/, "")} · ${d.port ?? "?"}` : "–" }),
    el("td", {}, cat),
    el("td", { class: "num", text: d.confidence === null || d.confidence === undefined ? "–" : d.confidence.toFixed(2) }),
    el("td", {}, d.gateway ? el("span", { class: "muted", text: "gateway" }) : stageBadge(d.stage)),
    el("td", { class: "action", text: d.enforced || (d.gateway ? "forwarded" : "none yet") }),
    el("td", { text: fmtTime(d.first_seen_ns / 1e9) }),
    el("td", { title: fmtTime(d.last_seen_ns / 1e9), text: fmtAgo(d.last_seen_ns / 1e9) }),
  ];
  return el("tr", { "data-mac": d.mac, "data-category": d.category || "", "data-stage": d.stage || "" }, cells);
}

let listTimer = null;
let listSeq = 0;

async function refreshList() {
  clearTimeout(listTimer);
  const seq = ++listSeq;
  const p = listQuery();
  p.set("limit", String(listState.limit));
  const r = await api(`/api/devices?${p}`);
  if (seq !== listSeq) return;
  const live = document.getElementById("live");
  if (!r.ok) {
    live.textContent = `error: ${r.data.error}`;
    live.className = "live error";
  } else {
    const data = r.data;
    renderStatus(data.status);
    fillFacet(document.getElementById("f-category"), data.facets.category, listState.category, "every category");
    fillFacet(document.getElementById("f-stage"), data.facets.stage, listState.stage, "every stage");
    const tbody = document.querySelector("#devices tbody");
    tbody.replaceChildren(...data.rows.map(deviceRow));
    if (!data.rows.length) tbody.append(el("tr", {}, el("td", { colspan: "9", class: "empty", text: data.total ? "No device matches the filter." : "No device seen yet." })));
    const end = data.offset + data.rows.length;
    document.getElementById("range").textContent = data.matched ? `${data.offset + 1}–${end} of ${data.matched}${data.matched !== data.total ? ` (of ${data.total})` : ""}` : `0 of ${data.total}`;
    document.getElementById("prev").disabled = data.offset === 0;
    document.getElementById("next").disabled = end >= data.matched;
    for (const th of document.querySelectorAll("#devices th[data-sort]")) {
      th.classList.toggle("sorted", th.dataset.sort === data.sort);
      th.setAttribute("aria-sort", th.dataset.sort === data.sort ? (data.order === "asc" ? "ascending" : "descending") : "none");
      th.dataset.order = th.dataset.sort === data.sort ? data.order : "";
    }
    live.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
    live.className = "live";
    document.body.dataset.loaded = "1";
  }
  listTimer = setTimeout(() => { if (!document.hidden) refreshList(); else listTimer = setTimeout(refreshList, REFRESH_MS); }, REFRESH_MS);
}

function listChanged(resetOffset = true) {
  if (resetOffset) listState.offset = 0;
  history.replaceState(null, "", `${location.pathname}?${listQuery()}`);
  refreshList();
}

function initDevices() {
  readListState();
  const q = document.getElementById("q");
  q.value = listState.q;
  let qTimer = null;
  q.addEventListener("input", () => { clearTimeout(qTimer); qTimer = setTimeout(() => { listState.q = q.value.trim(); listChanged(); }, 200); });
  document.getElementById("f-category").addEventListener("change", (e) => { listState.category = e.target.value; listChanged(); });
  document.getElementById("f-stage").addEventListener("change", (e) => { listState.stage = e.target.value; listChanged(); });
  const pinned = document.getElementById("f-pinned");
  pinned.checked = listState.pinned;
  pinned.addEventListener("change", () => { listState.pinned = pinned.checked; listChanged(); });
  for (const th of document.querySelectorAll("#devices th[data-sort]")) {
    th.tabIndex = 0;
    const go = () => {
      const k = th.dataset.sort;
      if (listState.sort === k) listState.order = listState.order === "asc" ? "desc" : "asc";
      else { listState.sort = k; listState.order = ["last_seen", "first_seen", "confidence"].includes(k) ? "desc" : "asc"; }
      listChanged();
    };
    th.addEventListener("click", go);
    th.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); go(); } });
  }
  document.getElementById("prev").addEventListener("click", () => { listState.offset = Math.max(0, listState.offset - listState.limit); listChanged(false); });
  document.getElementById("next").addEventListener("click", () => { listState.offset += listState.limit; listChanged(false); });
  loadSession().then(refreshList);
}

// ---------------------------------------------------------------- the device page

let deviceMac = "";
let deviceTimer = null;
let lastDevice = null;

function card(label, ...value) {
  return el("div", { class: "card" }, el("div", { class: "label", text: label }), el("div", { class: "value" }, ...value));
}

function renderSummary(d) {
  const pinned = d.pin ? el("span", { class: "pin", text: `pinned: ${d.pin}` }) : el("span", { class: "muted", text: "not pinned" });
  document.getElementById("summary").replaceChildren(
    card("Category", d.gateway ? chip("gateway") : chip(d.category), " ", d.confidence === null || d.confidence === undefined ? "" : el("span", { class: "conf", text: d.confidence.toFixed(2) })),
    card("Stage", d.gateway ? "gateway" : stageBadge(d.stage), d.mirroring ? el("div", { class: "muted", text: `mirrored: ${d.mirrored_packets ?? 0} packets held` }) : null,
         d.thin_answers ? el("div", { class: "muted", text: `${d.thin_answers} × not enough evidence yet` }) : null,
         d.mirroring && d.identity_probes ? el("div", { class: "muted", text: `asked ${d.identity_probes} × (mDNS identity probe)` }) : null,
         d.identity_watch ? el("div", { class: "muted", text: "its identity protocols still read: a new record re-opens its decision" }) : null),
    card("Action in force", el("span", { id: "enforced", class: "action", text: d.enforced || "none yet" }), el("div", {}, pinned),
         d.action_tightened ? el("div", { id: "tightened", class: "muted", text: `tightened: ${d.action_basis} (the decision rests on the device's own claims alone)` }) : null),
    card("Switch · port", d.dpid ? `${d.dpid.replace(/^0+(?=.)/, "")} · ${d.port ?? "?"}` : "–"),
    card("Vendor (OUI)", vendorCell(d)),
    card("First seen", fmtTime(d.first_seen_ns / 1e9)),
    card("Last seen", el("span", { title: fmtTime(d.last_seen_ns / 1e9), text: fmtAgo(d.last_seen_ns / 1e9) })),
    card("Model", d.model || "–"),
  );
}

function bar(value, max, cls) {
  const w = max > 0 ? Math.min(100, Math.abs(value) / max * 100) : 0;
  const b = el("span", { class: `bar ${cls || ""}` });
  b.style.width = `${w.toFixed(1)}%`;
  return el("span", { class: "barbox" }, b);
}

function explanationCell(h) {
  // Structured parts only (controller_app.web.explanation_parts): every string is drawn as text,
  // as one value; nothing here splits or parses what the engine or a device wrote.
  const ex = h.explained || {};
  const part = (name) => Array.isArray(ex[name]) ? ex[name] : [];
  const box = el("div", { class: "explain" });
  const voters = part("voters");
  if (voters.length) {
    box.append(el("div", { class: "sub", text: "Voters (class, probability, threshold)" }),
      el("table", { class: "mini" }, el("tbody", {}, voters.map((v) =>
        el("tr", {}, el("td", { text: v.name }), el("td", { text: v.category }),
           el("td", {}, bar(v.probability, 1)), el("td", { class: "num", text: v.probability.toFixed(2) }),
           el("td", { class: "muted small", text: v.threshold === null ? "" : `≥ ${v.threshold.toFixed(2)}` }),
           el("td", { class: "muted small", text: v.vouches ? "vouches" : "" }))))));
  } else if (part("vouching").length) {
    box.append(el("div", { class: "muted small", text: `vouching: ${part("vouching").join(", ")}` }));
  }
  const ids = part("identity");
  if (ids.length) {
    box.append(el("div", { class: "sub", text: "What the device said about itself" }),
      el("table", { class: "mini" }, el("tbody", {}, ids.map((r) =>
        el("tr", {}, el("td", { class: "muted", text: r.kind }), el("td", { class: "pool", text: r.value }),
           el("td", { text: r.category || "" }))))));
  }
  const sessions = part("sessions");
  if (sessions.length) {
    const max = Math.max(...sessions.map((s) => s.weight));
    box.append(el("div", { class: "sub", text: "Attended sessions (IP pool, attention weight)" }),
      el("table", { class: "mini" }, el("tbody", {}, sessions.map((s) =>
        el("tr", {}, el("td", { class: "muted", text: `#${s.position}` }), el("td", { class: "pool", text: s.pool }),
           el("td", {}, bar(s.weight, max)), el("td", { class: "num", text: s.weight.toFixed(2) }))))));
  }
  const segments = part("segments");
  if (segments.length) {
    const max = Math.max(...segments.map((s) => Math.abs(s.change)));
    box.append(el("div", { class: "sub", text: "Segment features (change when occluded)" }),
      el("table", { class: "mini" }, el("tbody", {}, segments.map((s) =>
        el("tr", {}, el("td", { class: "pool", text: s.feature }), el("td", {}, bar(s.change, max, s.change < 0 ? "neg" : "")),
           el("td", { class: "num", text: (s.change >= 0 ? "+" : "") + s.change.toFixed(2) }))))));
  }
  for (const n of part("notes")) box.append(el("div", { text: n.text }));
  for (const t of part("text")) box.append(el("div", { class: "explain-text", text: t }));
  if (!box.childNodes.length) box.append(el("span", { class: "muted", text: "–" }));
  return box;
}

function renderHistory(history) {
  const tbody = document.querySelector("#history tbody");
  const rows = history.slice().reverse().map((h) => {
    const ev = h.evidence || {};
    const evText = Object.entries(ev).map(([k, v]) => `${v} ${k}`).join(", ");
    return el("tr", {}, el("td", { text: fmtTime(h.ts) }), el("td", {}, chip(h.category)),
      el("td", { class: "num", text: h.confidence === null ? "–" : Number(h.confidence).toFixed(2) }), el("td", {}, stageBadge(h.stage)),
      el("td", { text: evText || "–" }), el("td", {}, explanationCell(h)), el("td", { class: "muted small", text: h.model || "" }));
  });
  tbody.replaceChildren(...rows);
  if (!rows.length) tbody.append(el("tr", {}, el("td", { colspan: "7", class: "empty", text: "No decision yet." })));
}

function renderRules(rules) {
  const tbody = document.querySelector("#rules tbody");
  tbody.replaceChildren(...rules.entries.map((e) => el("tr", {},
    el("td", { text: e.dpid.replace(/^0+(?=.)/, "") }), el("td", { text: `${e.table} ${e.table_name}` }), el("td", { class: "num", text: e.priority }),
    el("td", {}, el("code", { text: e.match })), el("td", {}, el("code", { text: e.actions })))));
  if (!rules.entries.length) tbody.append(el("tr", {}, el("td", { colspan: "5", class: "empty", text: "No entry installed for this device." })));
  document.getElementById("meters").textContent = rules.meters.length
    ? "Meters: " + rules.meters.map((m) => `${m.what} meter ${m.meter} on ${m.dpid.replace(/^0+(?=.)/, "")}: ${m.rate} ${m.unit}`).join("; ")
    : "";
}

function renderAudit(audit) {
  const tbody = document.querySelector("#audit tbody");
  tbody.replaceChildren(...audit.map((a) => el("tr", {}, el("td", { text: fmtTime(a.ts) }), el("td", { text: a.who }),
    el("td", { text: a.client || "" }), el("td", { text: a.op === "pin" ? `${a.before ? a.before + " → " : ""}pinned ${a.after}` : `released ${a.before || ""}` }))));
  if (!audit.length) tbody.append(el("tr", {}, el("td", { colspan: "4", class: "empty", text: "Never pinned from this page." })));
}

function renderTraffic(tr, d) {
  const box = document.getElementById("traffic");
  const note = document.getElementById("traffic-note");
  const W = 720, H = 180, L = 64, R = 12, T = 12, B = 28;
  if (!tr || !tr.t || tr.t.length < 1) {
    box.replaceChildren(el("p", { class: "empty", text: tr ? "No traffic sample yet: the switch's counters are read every few seconds, and a rate needs two readings." : "Traffic is not being read (--traffic-interval 0)." }));
  } else {
    const n = tr.t.length;
    const t0 = tr.t[0], t1 = Math.max(tr.t[n - 1], t0 + 1);
    const ymax = Math.max(1, ...tr.tx_Bps, ...tr.rx_Bps);
    const x = (t) => L + (W - L - R) * (t - t0) / (t1 - t0);
    const y = (v) => T + (H - T - B) * (1 - v / ymax);
    const line = (vals, cls) => svg("polyline", { class: cls, points: vals.map((v, i) => `${x(tr.t[i]).toFixed(1)},${y(v).toFixed(1)}`).join(" ") });
    const dots = (vals, cls) => n === 1 ? vals.map((v, i) => svg("circle", { class: cls, cx: x(tr.t[i]), cy: y(v), r: 3 })) : [];
    const grid = [0, 0.5, 1].map((f) => [svg("line", { class: "grid", x1: L, x2: W - R, y1: y(ymax * f), y2: y(ymax * f) }),
      svg("text", { class: "axis", x: L - 6, y: y(ymax * f) + 4, "text-anchor": "end" }, fmtRate(ymax * f))]);
    const start = tr.start || 0;
    const plot = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img", "aria-label": "Traffic of the device over time" },
      grid.flat(),
      svg("text", { class: "axis", x: L, y: H - 8 }, fmtTime(start + t0).slice(11)),
      svg("text", { class: "axis", x: W - R, y: H - 8, "text-anchor": "end" }, fmtTime(start + t1).slice(11)),
      line(tr.tx_Bps, "tx"), line(tr.rx_Bps, "rx"), dots(tr.tx_Bps, "tx"), dots(tr.rx_Bps, "rx"));
    const last = n - 1;
    box.replaceChildren(plot, el("div", { class: "legend" },
      el("span", { class: "key tx" }), ` from the device (now ${fmtRate(tr.tx_Bps[last])})  `,
      el("span", { class: "key rx" }), ` to the device (now ${fmtRate(tr.rx_Bps[last])})`));
  }
  note.textContent = "What the switch forwarded from and to the device (its forwarding entries' counters)" +
    (d && d.enforced === "block" ? "; a blocked device's frames are dropped before forwarding, so they do not show here." : ".");
}

function renderPinPanel(data) {
  const d = data.device;
  const s = state.session || {};
  const sel = document.getElementById("pin-cat");
  if (!sel.options.length) {
    sel.replaceChildren(...data.choices.map((c) => el("option", { value: c.category, text: `${c.category} → ${c.action}` })));
    if (d.category && data.choices.some((c) => c.category === d.category)) sel.value = d.category;
  }
  const note = document.getElementById("pin-note");
  const off = !s.pins_enabled;
  for (const id of ["pin-cat", "pin-cat-btn", "pin-act", "pin-custom", "pin-act-btn", "release-btn"]) document.getElementById(id).disabled = off || !!d.gateway;
  document.getElementById("pin-release").hidden = !d.pin;
  if (off) note.textContent = "Pinning is off: the operator turns it on with --web-pins and --web-token-file. This page is read-only.";
  else if (d.gateway) note.textContent = "A gateway is never classified or enforced; it cannot be pinned.";
  else if (!s.operator) note.textContent = "Read-only until you sign in with an operator token (top right). A pin is written to the policy file's overrides.";
  else note.textContent = `Signed in as ${s.operator}. A pin is written to the policy file's overrides and applied by its hot reload.` + (d.pin ? ` Now pinned: ${d.pin}.` : "");
}

function pinMessage(text, ok) {
  const m = document.getElementById("pin-msg");
  m.textContent = text;
  m.className = `msg ${ok ? "ok" : "error"}`;
}

async function sendPin(method, body) {
  const r = await api(`/api/devices/${encodeURIComponent(deviceMac)}/pin`, { method, body });
  pinMessage(r.ok ? r.data.message : `Refused (${r.status}): ${r.data.error}`, r.ok);
  await refreshDevice();
}

async function refreshDevice() {
  clearTimeout(deviceTimer);
  const r = await api(`/api/devices/${encodeURIComponent(deviceMac)}`);
  const problem = document.getElementById("problem");
  if (!r.ok) {
    problem.hidden = false;
    problem.textContent = r.data.error;
  } else {
    const data = r.data;
    lastDevice = data;
    problem.hidden = !data.problems.length;
    problem.textContent = data.problems.join("; ");
    renderStatus(data.status);
    document.getElementById("title").replaceChildren(el("span", { class: "mac", text: data.device.mac }), " ",
      data.device.gateway ? chip("gateway") : chip(data.device.category));
    document.title = `${data.device.mac} · IoT controller`;
    renderSummary(data.device);
    renderPinPanel(data);
    renderTraffic(data.traffic, data.device);
    renderHistory(data.history);
    renderRules(data.rules);
    renderAudit(data.audit);
    document.body.dataset.loaded = "1";
  }
  deviceTimer = setTimeout(refreshDevice, REFRESH_MS + 1000);
}

function initDevice() {
  deviceMac = new URLSearchParams(location.search).get("mac") || "";
  const act = document.getElementById("pin-act");
  const custom = document.getElementById("pin-custom");
  act.addEventListener("change", () => { custom.hidden = act.value !== "custom"; });
  document.getElementById("pin-category").addEventListener("submit", (e) => {
    e.preventDefault();
    sendPin("POST", { category: document.getElementById("pin-cat").value });
  });
  document.getElementById("pin-action").addEventListener("submit", (e) => {
    e.preventDefault();
    const v = act.value === "custom" ? custom.value.trim() : act.value;
    if (!v) { pinMessage("Write an action first, e.g. {rate_limit_kbps: 64}", false); return; }
    sendPin("POST", { action: v });
  });
  document.getElementById("pin-release").addEventListener("submit", (e) => { e.preventDefault(); sendPin("DELETE"); });
  onSession = () => { if (lastDevice) renderPinPanel(lastDevice); };
  loadSession().then(refreshDevice);
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "devices") { onSession = () => refreshList(); initDevices(); }
  else if (document.body.dataset.page === "device") initDevice();
});
