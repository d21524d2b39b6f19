// The operator page: devices (index.html), one device (device.html), the review queue
// (review.html). Plain JavaScript, no build step. Every value from the controller goes into the
// page as text (textContent), never as markup. The operator's token stays in this tab
// (sessionStorage) and is sent only in an Authorization header.
//
// The page tells the truth about the network: when the controller cannot be reached it says so
// (a banner), dims what it shows (the last data it had) and keeps trying, with back-off, until the
// controller answers again; a snapshot older than a few seconds is called stale; a device whose
// switch is down says so; a device the controller never saw says so and the page stops asking.
"use strict";

const TOKEN_KEY = "iot-operator-token";
const REFRESH_MS = 2000;
const RETRY_MAX_MS = 10000;
const STALE_S = 8;
const state = { session: null };
const conn = { ok: true, since: null, failures: 0, lastOk: null };

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

// A request to the controller. Never throws: a controller that cannot be reached answers
// {ok: false, status: 0, offline: true}, and the connection state (the banner) follows.
async function api(path, opts = {}) {
  const headers = Object.assign({ "Accept": "application/json" }, opts.headers || {});
  const t = token();
  if (t) headers["Authorization"] = "Bearer " + t;
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  let r;
  try {
    r = await fetch(path, { method: opts.method || "GET", headers,
                            body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
                            cache: "no-store", credentials: "omit" });
  } catch (e) {
    offline();
    return { ok: false, status: 0, offline: true, data: { error: "the controller cannot be reached" } };
  }
  let data = null;
  try { data = await r.json(); } catch (e) { data = { error: `HTTP ${r.status}` }; }
  online();
  return { ok: r.ok, status: r.status, data };
}

function offline() {
  conn.failures += 1;
  if (conn.ok) { conn.ok = false; conn.since = Date.now(); }
  renderBanner();
}

function online() {
  const was = conn.ok;
  conn.ok = true;
  conn.failures = 0;
  conn.lastOk = Date.now();
  if (!was) {
    conn.since = null;
    renderBanner();
    loadSession().then(() => onSession());    // the controller may have restarted
  }
}

function retryDelay() { return Math.min(RETRY_MAX_MS, REFRESH_MS * Math.pow(2, Math.max(0, conn.failures - 1))); }

function renderBanner(stale) {
  const b = document.getElementById("banner");
  if (!b) return;
  if (!conn.ok) {
    b.hidden = false;
    b.className = "banner error";
    b.textContent = `The controller cannot be reached (since ${new Date(conn.since).toLocaleTimeString()}). ` +
      `What you see is the last data it sent; retrying every ${Math.round(retryDelay() / 1000)} s.`;
    document.body.classList.add("stale");
  } else if (stale) {
    b.hidden = false;
    b.className = "banner warn";
    b.textContent = stale;
    document.body.classList.add("stale");
  } else {
    b.hidden = true;
    b.textContent = "";
    document.body.classList.remove("stale");
  }
}

// The controller publishes a snapshot every second: an old one means its event loop is stuck.
function checkFresh(st) {
  const pub = st && st.published;
  if (!pub) { renderBanner(null); return; }
  const age = (st.now || Date.now() / 1000) - pub;      // the server's clock, not the browser's
  renderBanner(age > STALE_S ? `The controller's data is ${Math.round(age)} s old: it answers but has not updated its view; what you see may be out of date.` : null);
}

function pad(n) { return String(n).padStart(2, "0"); }

function fmtTime(sec) {
  if (!sec) return "–";
  const d = new Date(sec * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtClock(sec) {
  if (!sec) return "–";
  const d = new Date(sec * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
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

function minutes(s) {
  const m = Math.max(1, Math.ceil(s / 60));
  return `${m} more minute${m === 1 ? "" : "s"}`;
}

function chip(category, extra) {
  const c = category || "undecided";
  return el("span", { class: `chip cat-${c.replace(/[^a-z0-9-]/gi, "")}${extra ? " " + extra : ""}`, text: c });
}

// The category a device is treated as: a pinned one (the operator's), else its decision's.
function categoryCell(d) {
  if (d.gateway) return chip("gateway");
  const pinned = d.pin && d.pin.startsWith("category=") ? d.pin.slice(9) : null;
  if (!pinned || pinned === d.category) return chip(d.category);
  return el("span", {}, chip(pinned, "pinned-cat"), el("div", { class: "muted small", text: `engine: ${d.category || "undecided"}` }));
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

// What a person calls the device: the operator's label, else the first name it announced.
function displayName(d) {
  if (d.label) return d.label;
  return (d.names && d.names.length) ? d.names[0].value : null;
}

function switchText(d) {
  return d.dpid ? `${d.dpid.replace(/^0+(?=.)/, "")} · ${d.port ?? "?"}` : "–";
}

function downBadge(d) {
  return d.switch_up === false ? el("span", { class: "badge down", text: "switch down", title: "Its switch is not connected to the controller: nothing can be installed for it until it reconnects" }) : null;
}

// How far a learning device is, and when the policy acts on it.
function learningText(d, st) {
  const pol = (st && st.policy) || {};
  const whenEnforced = pol.enforce_on === "provisional" ? "enforced once decided" : "enforced once confirmed";
  if (!d.stage && d.learning_eta_s !== null && d.learning_eta_s !== undefined) {
    return d.learning_eta_s > 0 ? `about ${minutes(d.learning_eta_s)} of traffic; ${whenEnforced}`
      : `its traffic should suffice soon (or it names itself sooner); ${whenEnforced}`;
  }
  if (!d.stage && d.mirroring) return `learning; ${whenEnforced}`;
  if (d.stage === "provisional" && pol.enforce_on !== "provisional" && !d.pin)
    return "provisional: not enforced until confirmed (enforce_on: confirmed)";
  return null;
}

// ---------------------------------------------------------------- header: status and sign-in

function renderStatus(st) {
  const box = document.getElementById("status");
  if (!box || !st) return;
  const pol = st.policy || {};
  const n = (st.switches || []).length;
  box.replaceChildren(
    el("span", { class: n ? "" : "warn", text: `${n} switch${n === 1 ? "" : "es"}${n ? "" : " connected"}` }),
    el("span", { text: `${st.devices} device${st.devices === 1 ? "" : "s"}` }),
    el("span", { text: `${st.learning ?? 0} learning` }),
    el("span", { text: `${st.packet_ins_per_second ?? 0} packet-ins/s` }),
    el("span", { title: pol.source || "", text: `policy ${pol.digest || "?"} (enforce on ${pol.enforce_on || "?"})` }),
    el("span", { class: st.pins_enabled ? "pins on" : "pins off", text: st.pins_enabled ? "pins on" : "pins off (read-only)" }),
  );
  const nav = document.getElementById("nav-review");
  if (nav) nav.textContent = st.review ? `Review (${st.review})` : "Review";
  checkFresh(st);
}

async function loadSession() {
  const r = await api("/api/session");
  state.session = r.ok ? r.data : (state.session || { pins_enabled: false, operator: null });
  if (r.ok && token() && !state.session.operator) sessionStorage.removeItem(TOKEN_KEY);
  renderSignin();
  return state.session;
}

function signedIn() { const s = state.session || {}; return !!(s.pins_enabled && s.operator); }

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

// ---------------------------------------------------------------- the timeline

const knownNames = new Map();     // MAC -> what the page calls it (from the rows it has shown)

function eventText(ev) {
  const who = ev.mac ? (knownNames.get(ev.mac) ? `${knownNames.get(ev.mac)} (${ev.mac})` : ev.mac) : "";
  switch (ev.event) {
    case "new_device": return `new device ${who}` + (ev.left_out ? ` (and ${ev.left_out} more)` : "");
    case "category_changed": return `${who}: ${ev.from || "undecided"} → ${ev.to} (${ev.stage})`;
    case "confirmed": return `${who}: confirmed ${ev.to}`;
    case "unknown": return `${who}: decided unknown` + (ev.from ? ` (was ${ev.from})` : "");
    case "pin": return `${who}: pinned ${ev.after} by ${ev.who}`;
    case "release": return `${who}: pin released by ${ev.who}`;
    case "switch_up": return `switch ${String(ev.dpid || "").replace(/^0+(?=.)/, "")} connected`;
    case "switch_down": return `switch ${String(ev.dpid || "").replace(/^0+(?=.)/, "")} disconnected` + (ev.devices ? ` (${ev.devices} devices)` : "");
    case "policy_reloaded": return `policy reloaded (${ev.reason}): ${ev.digest}`;
    default: return String(ev.event);
  }
}

function renderTimeline(list, events, linkMacs) {
  if (!list) return;
  const items = (events || []).map((ev) => el("li", { class: `ev ev-${String(ev.event).replace(/[^a-z_]/g, "")}`, "data-event": ev.event },
    el("time", { class: "when", title: fmtTime(ev.ts), text: fmtClock(ev.ts) }), " ",
    linkMacs && ev.mac ? el("a", { href: `/ui/device?mac=${encodeURIComponent(ev.mac)}`, text: eventText(ev) }) : el("span", { text: eventText(ev) })));
  list.replaceChildren(...items);
  if (!items.length) list.append(el("li", { class: "muted", text: "Nothing yet." }));
}

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

function nameCell(d) {
  const href = `/ui/device?mac=${encodeURIComponent(d.mac)}`;
  const name = displayName(d);
  const cell = el("td", { "data-label": "Device" });
  if (name) cell.append(el("a", { href, class: "name", text: name }), el("br"), el("a", { href, class: "mac small", text: d.mac }));
  else cell.append(el("a", { href, class: "mac", text: d.mac }));
  if (d.label && d.names && d.names.length) cell.append(el("div", { class: "muted small", text: `says: ${d.names[0].value}` }));
  if (d.pin) cell.append(" ", el("span", { class: "pin", title: `pinned: ${d.pin}`, text: "pinned" }));
  const down = downBadge(d);
  if (down) cell.append(" ", down);
  return cell;
}

function deviceRow(d, st) {
  if (displayName(d)) knownNames.set(d.mac, displayName(d));
  const cat = categoryCell(d);
  const learn = learningText(d, st);
  const stageCell = el("td", { "data-label": "Stage" }, d.gateway ? el("span", { class: "muted", text: "gateway" }) : stageBadge(d.stage));
  if (learn && !d.stage) stageCell.append(el("div", { class: "muted small learn", title: learn, text: learn.split(";")[0] }));
  const cells = [
    nameCell(d),
    el("td", { "data-label": "IP address", class: "addr", text: (d.addresses || []).slice(0, 2).join(", ") || "–" }),
    el("td", { "data-label": "Vendor" }, vendorCell(d)),
    el("td", { "data-label": "Switch · port", text: switchText(d) }),
    el("td", { "data-label": "Category" }, cat),
    el("td", { "data-label": "Confidence", class: "num", text: d.confidence === null || d.confidence === undefined ? "–" : d.confidence.toFixed(2) }),
    stageCell,
    el("td", { "data-label": "Action in force", class: "action", text: d.switch_up === false ? "none: switch down" : (d.enforced || (d.gateway ? "forwarded" : "none yet")) }),
    el("td", { "data-label": "First seen", class: "when-cell", title: fmtTime(d.first_seen_ns / 1e9), text: fmtTime(d.first_seen_ns / 1e9).slice(5, 16) }),
    el("td", { "data-label": "Last seen", class: "when-cell", title: fmtTime(d.last_seen_ns / 1e9), text: fmtAgo(d.last_seen_ns / 1e9) }),
  ];
  return el("tr", { "data-mac": d.mac, "data-category": d.category || "", "data-stage": d.stage || "",
                    class: d.switch_up === false ? "is-down" : null }, cells);
}

let listTimer = null;
let listSeq = 0;
let lastEventId = null;
let lastNames = 0;

async function refreshList() {
  clearTimeout(listTimer);
  const seq = ++listSeq;
  let delay = REFRESH_MS;
  try {
    const p = listQuery();
    p.set("limit", String(listState.limit));
    const r = await api(`/api/devices?${p}`);
    if (seq !== listSeq) return;
    const live = document.getElementById("live");
    if (r.offline) {
      live.textContent = `not live · last update ${conn.lastOk ? new Date(conn.lastOk).toLocaleTimeString() : "never"}`;
      live.className = "live error";
      delay = retryDelay();
    } else if (!r.ok) {
      live.textContent = `error: ${r.data.error}`;
      live.className = "live error";
    } else {
      const data = r.data;
      renderStatus(data.status);
      fillFacet(document.getElementById("f-category"), data.facets.category, listState.category, "every category");
      fillFacet(document.getElementById("f-stage"), data.facets.stage, listState.stage, "every stage");
      const tbody = document.querySelector("#devices tbody");
      tbody.replaceChildren(...data.rows.map((d) => deviceRow(d, data.status)));
      if (!data.rows.length) tbody.append(el("tr", {}, el("td", { colspan: "10", class: "empty", text: data.total ? "No device matches." : "No device seen yet." })));
      const end = data.offset + data.rows.length;
      document.getElementById("range").textContent = data.matched ? `${data.offset + 1}–${end} of ${data.matched}${data.matched !== data.total ? ` (of ${data.total})` : ""}` : `0 of ${data.total}`;
      document.getElementById("prev").disabled = data.offset === 0;
      document.getElementById("next").disabled = end >= data.matched;
      for (const th of document.querySelectorAll("#devices th[data-sort]")) {
        th.classList.toggle("sorted", th.dataset.sort === data.sort);
        th.setAttribute("aria-sort", th.dataset.sort === data.sort ? (data.order === "asc" ? "ascending" : "descending") : "none");
        th.dataset.order = th.dataset.sort === data.sort ? data.order : "";
      }
      const stale = document.body.classList.contains("stale");
      live.textContent = `${stale ? "stale" : "live"} · updated ${new Date().toLocaleTimeString()}`;
      live.className = stale ? "live error" : "live";
      document.body.dataset.loaded = "1";
      if (data.status.events_last !== lastEventId || knownNames.size !== lastNames) {
        lastNames = knownNames.size;
        const ev = await api("/api/events?limit=15");
        if (ev.ok) { renderTimeline(document.getElementById("timeline"), ev.data.events, true); lastEventId = data.status.events_last; }
      }
    }
  } finally {
    if (seq === listSeq) listTimer = setTimeout(() => { if (!document.hidden) refreshList(); else listTimer = setTimeout(refreshList, REFRESH_MS); }, delay);
  }
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
let deviceGone = false;

function card(label, ...value) {
  return el("div", { class: "card" }, el("div", { class: "label", text: label }), el("div", { class: "value" }, ...value));
}

function renderSummary(d, st) {
  const pinned = d.pin ? el("span", { class: "pin", text: `pinned: ${d.pin}` }) : el("span", { class: "muted", text: "not pinned" });
  const learn = learningText(d, st);
  const names = (d.names || []).map((n) => el("div", {}, el("span", { class: "name", text: n.value }), " ", el("span", { class: "muted small", text: `(${n.source})` })));
  document.getElementById("summary").replaceChildren(
    card("Names it announces", ...(names.length ? names : [el("span", { class: "muted", text: "none heard yet" })])),
    card("IP addresses", (d.addresses || []).length ? el("span", { class: "addr", text: d.addresses.join(", ") }) : el("span", { class: "muted", text: "none seen yet" })),
    card("Category", categoryCell(d), " ", d.confidence === null || d.confidence === undefined ? "" : el("span", { class: "conf", text: d.confidence.toFixed(2) })),
    card("Stage", d.gateway ? "gateway" : stageBadge(d.stage), learn ? el("div", { id: "learning", class: "muted", text: learn }) : null,
         d.mirroring ? el("div", { class: "muted", text: `mirrored: ${d.mirrored_packets ?? 0} packets held` }) : null,
         d.thin_answers ? el("div", { class: "muted", text: `${d.thin_answers} × not enough evidence yet` }) : null,
         d.mirroring && d.identity_probes ? el("div", { class: "muted", text: `asked ${d.identity_probes} × what it is (mDNS)` }) : null,
         d.identity_watch ? el("div", { class: "muted", text: "still listened to: a new announcement re-opens its decision" }) : null),
    card("Action in force", el("span", { id: "enforced", class: "action", text: d.switch_up === false ? "none: switch down" : (d.enforced || "none yet") }), el("div", {}, pinned),
         d.action_basis === "learning" ? el("div", { class: "muted", text: "the policy's learning posture (learning:)" }) : null,
         d.action_tightened ? el("div", { id: "tightened", class: "muted", text: `tightened: ${d.action_basis} (the decision rests on the device's own claims alone)` }) : null),
    card("Switch · port", switchText(d), " ", downBadge(d)),
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

const VOTER_WORDS = { identity: "What it says about itself", session: "The services it talks to", segment: "Its traffic volumes" };

function explanationDetails(h) {
  // Structured parts only (controller_app.web.explanation_parts): every string is drawn as text,
  // as one value; nothing here splits or parses what the engine or a device wrote.
  const ex = h.explained || {};
  const part = (name) => Array.isArray(ex[name]) ? ex[name] : [];
  const box = el("div", { class: "explain" });
  const voters = part("voters");
  if (voters.length) {
    box.append(el("div", { class: "sub", text: "What each part of the engine said (its best guess, how sure, the bar it must reach)" }),
      el("table", { class: "mini" }, el("tbody", {}, voters.map((v) =>
        el("tr", {}, el("td", { text: VOTER_WORDS[v.name] || v.name }), el("td", { text: v.category }),
           el("td", {}, bar(v.probability, 1)), el("td", { class: "num", text: `${Math.round(v.probability * 100)}%` }),
           el("td", { class: "muted small", text: v.threshold === null ? "" : `needs ${Math.round(v.threshold * 100)}%` }),
           el("td", { class: "muted small", text: v.vouches ? "vouches" : "" }))))));
  } else if (part("vouching").length) {
    box.append(el("div", { class: "muted small", text: `vouching: ${part("vouching").join(", ")}` }));
  }
  const ids = part("identity");
  if (ids.length) {
    box.append(el("div", { class: "sub", text: "What the device said about itself that counted" }),
      el("table", { class: "mini" }, el("tbody", {}, ids.map((r) =>
        el("tr", {}, el("td", { class: "muted", text: r.kind }), el("td", { class: "pool", text: r.value }),
           el("td", { text: r.category || "" }))))));
  }
  const sessions = part("sessions");
  if (sessions.length) {
    const max = Math.max(...sessions.map((s) => s.weight));
    box.append(el("div", { class: "sub", text: "The connections that counted most (where they went, how much they counted)" }),
      el("table", { class: "mini" }, el("tbody", {}, sessions.map((s) =>
        el("tr", {}, el("td", { class: "muted", text: `#${s.position}` }), el("td", { class: "pool", text: s.pool }),
           el("td", {}, bar(s.weight, max)), el("td", { class: "num", text: `${Math.round(s.weight * 100)}%` }))))));
  }
  const segments = part("segments");
  if (segments.length) {
    const max = Math.max(...segments.map((s) => Math.abs(s.change)));
    box.append(el("div", { class: "sub", text: "The traffic measures that moved the decision most (hidden: how much it moved)" }),
      el("table", { class: "mini" }, el("tbody", {}, segments.map((s) =>
        el("tr", {}, el("td", { text: s.label || s.feature }), el("td", {}, bar(s.change, max, s.change < 0 ? "neg" : "")),
           el("td", { class: "num", text: (s.change >= 0 ? "+" : "") + s.change.toFixed(2) }))))));
  }
  for (const n of part("notes")) box.append(el("div", { class: "note-line", text: n.text }));
  for (const t of part("text")) box.append(el("div", { class: "explain-text", text: t }));
  const ev = h.evidence || {};
  const evText = Object.entries(ev).map(([k, v]) => `${v} ${k}`).join(", ");
  if (evText) box.append(el("div", { class: "muted small", text: `evidence: ${evText}` }));
  if (h.model) box.append(el("div", { class: "muted small", text: `model: ${h.model}` }));
  return box;
}

function renderChanges(changes) {
  const list = document.getElementById("changes");
  const items = (changes || []).map((c) => {
    const what = c.from === null || c.from === undefined ? `first decided: ${c.category} (${c.stage})`
      : (c.from === c.category ? `${c.category}: ${c.from_stage} → ${c.stage}` : `${c.from} → ${c.category} (${c.stage})`);
    const span = c.decisions > 1 ? ` · ${c.decisions} decisions until ${fmtClock(c.until)}` : "";
    return el("li", {}, el("time", { class: "when", title: fmtTime(c.ts), text: fmtClock(c.ts) }), " ", el("span", { text: what + span }));
  });
  list.replaceChildren(...items);
  if (!items.length) list.append(el("li", { class: "muted", text: "No decision yet." }));
}

function renderHistory(history) {
  const box = document.getElementById("history");
  const open = new Set(Array.from(box.querySelectorAll("details[open]")).map((d) => d.dataset.key));
  // newest first, runs of the same category and stage collapsed into one entry
  const runs = [];
  for (const h of history.slice().reverse()) {
    const last = runs[runs.length - 1];
    if (last && last.h.category === h.category && last.h.stage === h.stage) { last.n += 1; last.first = h.ts; continue; }
    runs.push({ h, n: 1, first: h.ts });
  }
  const items = runs.map((r, i) => {
    const key = `${r.h.ts}`;
    const when = r.n > 1 ? `${fmtTime(r.first)} – ${fmtClock(r.h.ts)}, ${r.n} decisions` : fmtTime(r.h.ts);
    const d = el("details", { class: "decision", "data-key": key, open: (i === 0 && !open.size) || open.has(key) ? true : null },
      el("summary", {}, chip(r.h.category), " ", stageBadge(r.h.stage), " ", el("span", { class: "muted small", text: when }),
        el("div", { class: "sentence", text: r.h.summary || r.h.explanation || "" })),
      explanationDetails(r.h));
    return d;
  });
  box.replaceChildren(...items);
  if (!items.length) box.append(el("p", { class: "empty", text: "No decision yet." }));
  const first = history[history.length - 1];
  document.getElementById("sentence").textContent = first ? (first.summary || "") : "";
}

function renderRules(rules) {
  const tbody = document.querySelector("#rules tbody");
  tbody.replaceChildren(...rules.entries.map((e) => el("tr", {},
    el("td", { "data-label": "Switch", text: e.dpid.replace(/^0+(?=.)/, "") }), el("td", { "data-label": "Table", text: `${e.table} ${e.table_name}` }),
    el("td", { "data-label": "Priority", class: "num", text: e.priority }),
    el("td", { "data-label": "Match" }, el("code", { text: e.match })), el("td", { "data-label": "Actions" }, el("code", { text: e.actions })))));
  if (!rules.entries.length) tbody.append(el("tr", {}, el("td", { colspan: "5", class: "empty", text: "No entry installed for this device." })));
  document.getElementById("meters").textContent = rules.meters.length
    ? "Meters: " + rules.meters.map((m) => `${m.what} meter ${m.meter} on ${m.dpid.replace(/^0+(?=.)/, "")}: ${m.rate} ${m.unit}`).join("; ")
    : "";
}

function renderAudit(audit) {
  const tbody = document.querySelector("#audit tbody");
  tbody.replaceChildren(...audit.map((a) => el("tr", {}, el("td", { "data-label": "Time", text: fmtTime(a.ts) }), el("td", { "data-label": "Who", text: a.who }),
    el("td", { "data-label": "From", text: a.client || "" }), el("td", { "data-label": "Change", text: a.op === "pin" ? `${a.before ? a.before + " → " : ""}pinned ${a.after}` : `released ${a.before || ""}` }))));
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

// A choice list that starts on nothing: the operator picks, never the page.
function categoryOptions(sel, choices) {
  if (sel.options.length) return;
  sel.replaceChildren(el("option", { value: "", text: "choose a category…", selected: true }),
    ...choices.map((c) => el("option", { value: c.category, text: `${c.category} → ${c.action}` })));
  sel.value = "";
}

function renderPinPanel(data) {
  const d = data.device;
  const s = state.session || {};
  const sel = document.getElementById("pin-cat");
  categoryOptions(sel, data.choices);
  const note = document.getElementById("pin-note");
  const off = !s.pins_enabled;
  const locked = off || !s.operator || !!d.gateway;
  for (const id of ["pin-cat", "pin-act", "pin-custom", "release-btn"]) document.getElementById(id).disabled = locked;
  document.getElementById("pin-cat-btn").disabled = locked || !sel.value;
  const act = document.getElementById("pin-act");
  document.getElementById("pin-act-btn").disabled = locked || !act.value;
  document.getElementById("pin-release").hidden = !d.pin;
  if (off) note.textContent = "Pinning is off: the operator turns it on with --web-pins and --web-token-file. This page is read-only.";
  else if (d.gateway) note.textContent = "A gateway is never classified or enforced; it cannot be pinned.";
  else if (!s.operator) note.textContent = "Read-only until you sign in with an operator token (at the top of the page). A pin is written to the policy file's overrides.";
  else note.textContent = `Signed in as ${s.operator}. A pin is written to the policy file's overrides and applied by its hot reload; a pinned category also teaches the engine this site's example.` + (d.pin ? ` Now pinned: ${d.pin}.` : "");
  const lab = document.getElementById("label-input");
  const labBtn = document.getElementById("label-btn");
  lab.disabled = labBtn.disabled = !signedIn();
  if (document.activeElement !== lab && !lab.dataset.dirty) lab.value = d.label || "";
}

function message(id, text, ok) {
  const m = document.getElementById(id);
  m.textContent = text;
  m.className = `msg ${ok ? "ok" : "error"}`;
}

async function sendPin(method, body) {
  const r = await api(`/api/devices/${encodeURIComponent(deviceMac)}/pin`, { method, body });
  message("pin-msg", r.ok ? r.data.message : (r.offline ? "Not sent: the controller cannot be reached." : `Refused (${r.status}): ${r.data.error}`), r.ok && !r.data.pending);
  await refreshDevice();
}

async function sendLabel() {
  const input = document.getElementById("label-input");
  const r = await api(`/api/devices/${encodeURIComponent(deviceMac)}/label`, { method: "PUT", body: { label: input.value } });
  message("label-msg", r.ok ? r.data.message : (r.offline ? "Not sent: the controller cannot be reached." : `Refused (${r.status}): ${r.data.error}`), r.ok);
  delete input.dataset.dirty;
  await refreshDevice();
}

async function refreshDevice() {
  clearTimeout(deviceTimer);
  if (deviceGone) return;
  let delay = REFRESH_MS + 1000;
  try {
    const r = await api(`/api/devices/${encodeURIComponent(deviceMac)}`);
    const problem = document.getElementById("problem");
    if (r.offline) {
      delay = retryDelay();
    } else if (r.status === 404 || r.status === 400) {
      // a device the controller never saw (or not a MAC): say so, and stop asking
      deviceGone = true;
      problem.hidden = false;
      problem.textContent = r.status === 404 ? `${r.data.error}. This page does not refresh; the devices list shows every device the controller knows.` : r.data.error;
      document.getElementById("content").hidden = true;
      document.getElementById("title").textContent = deviceMac || "Device";
      document.body.dataset.loaded = "1";
      document.body.dataset.gone = "1";
      return;
    } else if (!r.ok) {
      problem.hidden = false;
      problem.textContent = r.data.error;
    } else {
      const data = r.data;
      lastDevice = data;
      if (displayName(data.device)) knownNames.set(data.device.mac, displayName(data.device));
      problem.hidden = !data.problems.length;
      problem.textContent = data.problems.join("; ");
      renderStatus(data.status);
      const name = displayName(data.device);
      document.getElementById("title").replaceChildren(...[name ? el("span", { class: "name", text: name }) : null,
        el("span", { class: "mac", text: data.device.mac }), categoryCell(data.device),
        downBadge(data.device)].filter((x) => x !== null));
      document.title = `${name || data.device.mac} · IoT controller`;
      renderSummary(data.device, data.status);
      renderPinPanel(data);
      renderChanges(data.changes);
      renderHistory(data.history);
      renderTraffic(data.traffic, data.device);
      renderRules(data.rules);
      renderTimeline(document.getElementById("timeline"), data.events, false);
      renderAudit(data.audit);
      document.body.dataset.loaded = "1";
    }
  } finally {
    if (!deviceGone) deviceTimer = setTimeout(refreshDevice, delay);
  }
}

function initDevice() {
  deviceMac = new URLSearchParams(location.search).get("mac") || "";
  const act = document.getElementById("pin-act");
  const custom = document.getElementById("pin-custom");
  const sel = document.getElementById("pin-cat");
  const sync = () => { if (lastDevice) renderPinPanel(lastDevice); };
  act.addEventListener("change", () => { custom.hidden = act.value !== "custom"; sync(); });
  sel.addEventListener("change", sync);
  document.getElementById("pin-category").addEventListener("submit", (e) => {
    e.preventDefault();
    if (!sel.value) { message("pin-msg", "Choose a category first.", false); return; }
    sendPin("POST", { category: sel.value });
  });
  document.getElementById("pin-action").addEventListener("submit", (e) => {
    e.preventDefault();
    const v = act.value === "custom" ? custom.value.trim() : act.value;
    if (!v) { message("pin-msg", "Choose an action first, or write one, e.g. {rate_limit_kbps: 64}", false); return; }
    sendPin("POST", { action: v });
  });
  document.getElementById("pin-release").addEventListener("submit", (e) => { e.preventDefault(); sendPin("DELETE"); });
  const lab = document.getElementById("label-input");
  lab.addEventListener("input", () => { lab.dataset.dirty = "1"; });
  document.getElementById("label-form").addEventListener("submit", (e) => { e.preventDefault(); sendLabel(); });
  onSession = sync;
  if (!deviceMac) {
    deviceGone = true;
    document.getElementById("problem").hidden = false;
    document.getElementById("problem").textContent = "No device named: this page needs ?mac=MAC.";
    document.getElementById("content").hidden = true;
    document.body.dataset.loaded = "1";
    return;
  }
  loadSession().then(refreshDevice);
}

// ---------------------------------------------------------------- the review queue

let reviewTimer = null;
let lastReview = null;

const WHY = {
  "unknown": "The engine could not name it: it is under the unknown action.",
  "claims only": "Named only on what it says about itself: held to the stricter of its category's action and the unknown action until its behaviour agrees.",
  "long provisional": "Provisional for long: the engine is not sure enough to confirm it.",
};

function reviewCard(item, choices) {
  const d = item.device;
  const name = displayName(d);
  const locked = !signedIn();
  const head = el("div", { class: "rv-head" },
    el("a", { href: `/ui/device?mac=${encodeURIComponent(d.mac)}`, class: name ? "name" : "mac", text: name || d.mac }),
    name ? el("span", { class: "mac small", text: ` ${d.mac}` }) : null, " ", chip(d.category), " ", stageBadge(d.stage), " ", downBadge(d),
    el("div", { class: "muted small" }, vendorCell(d), (d.addresses || []).length ? ` · ${d.addresses.join(", ")}` : ""));
  const sugg = item.suggestions.map((s, i) => el("li", { class: "suggestion" },
    el("div", {}, el("strong", { text: `${i + 1}. ` }), chip(s.category), " ", el("span", { class: "muted small", text: `→ ${s.action}` }), " ",
      el("button", { type: "button", class: "accept", "data-category": s.category, disabled: locked || null,
                     onclick: () => pinFromQueue(d.mac, s.category) }, `Accept: ${s.category}`)),
    el("ul", { class: "evidence" }, s.evidence.map((e) => el("li", {}, el("span", { text: e.text }), " ", el("span", { class: "muted small", text: `(${e.source})` }))))));
  const sel = el("select", { class: "choose", "aria-label": `Category for ${d.mac}`, disabled: locked || null },
    el("option", { value: "", text: "choose a category…", selected: true }),
    ...choices.map((c) => el("option", { value: c.category, text: `${c.category} → ${c.action}` })));
  const btn = el("button", { type: "submit", class: "choose-btn", disabled: true }, "Pin");
  sel.addEventListener("change", () => { btn.disabled = locked || !sel.value; });
  const form = el("form", { class: "pinform", onsubmit: (e) => { e.preventDefault(); if (sel.value) pinFromQueue(d.mac, sel.value); } },
    el("label", { text: "Or choose:" }), sel, btn);
  return el("article", { class: "rv-card panel", "data-mac": d.mac, "data-why": item.why },
    head,
    el("p", { class: "why", text: WHY[item.why] || item.why }),
    item.decision && item.decision.summary ? el("p", { class: "sentence", text: item.decision.summary }) : null,
    item.suggestions.length ? el("div", {}, el("div", { class: "sub", text: "The engine's suggestions" }), el("ol", { class: "suggestions" }, sugg))
      : el("p", { class: "muted", text: "No suggestion: it said nothing the engine can read, and its traffic is like no category the engine knows." }),
    form);
}

async function pinFromQueue(mac, category) {
  const r = await api(`/api/devices/${encodeURIComponent(mac)}/pin`, { method: "POST", body: { category } });
  message("review-msg", r.ok ? r.data.message : (r.offline ? "Not sent: the controller cannot be reached." : `Refused (${r.status}): ${r.data.error}`), r.ok && !r.data.pending);
  await refreshReview();
}

function renderReview(data) {
  const q = document.getElementById("queue");
  q.replaceChildren(...data.items.map((it) => reviewCard(it, data.choices)));
  if (!data.items.length) q.append(el("p", { class: "empty", text: "Nothing to review: every device is settled." }));
  const s = state.session || {};
  document.getElementById("review-note").textContent = `${data.total} device${data.total === 1 ? "" : "s"} to review.` +
    (!s.pins_enabled ? " Pinning is off (--web-pins): this page is read-only." : (!s.operator ? " Sign in (at the top of the page) to accept a suggestion." : ""));
}

async function refreshReview() {
  clearTimeout(reviewTimer);
  let delay = REFRESH_MS * 2;
  try {
    const r = await api("/api/review");
    if (r.offline) delay = retryDelay();
    else if (r.ok) {
      lastReview = r.data;
      renderStatus(r.data.status);
      // while the operator is choosing, the cards stay as they are
      const busy = document.activeElement && document.activeElement.closest && document.activeElement.closest("#queue select");
      if (!busy) renderReview(r.data);
      document.body.dataset.loaded = "1";
    }
  } finally {
    reviewTimer = setTimeout(refreshReview, delay);
  }
}

function initReview() {
  onSession = () => { if (lastReview) renderReview(lastReview); };
  loadSession().then(refreshReview);
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  const current = document.getElementById(page === "review" ? "nav-review" : "nav-devices");
  if (current) current.setAttribute("aria-current", "page");
  if (page === "devices") { onSession = () => refreshList(); initDevices(); }
  else if (page === "device") initDevice();
  else if (page === "review") initReview();
});
