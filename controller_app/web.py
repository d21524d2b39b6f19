"""The operator page: the site's devices, live, and one device's decisions, traffic and rules;
pins from the page when the operator turns them on.

Served by the controller's HTTP endpoint (:mod:`controller_app.observe`), from the same
snapshot the JSON endpoints answer from (the event loop publishes it every tick; request
threads never touch the core). Static files (``controller_app/static``: HTML, one script, one
style sheet; no build step) and a small JSON API the page reads::

    GET    /ui/                      the devices (sortable, filterable, paged on the server)
    GET    /ui/device?mac=MAC        one device
    GET    /ui/review                the review queue
    GET    /api/devices?q=&category=&stage=&pinned=&sort=&order=&offset=&limit=
    GET    /api/devices/MAC          the device, its decisions (with their explanation, one plain
                                     sentence each, and the changes), traffic, policy entries, pin,
                                     pin history, timeline
    GET    /api/review               the devices the engine could not settle, with suggestions
    GET    /api/events?mac=&since=&limit=   the timeline, newest first
    GET    /api/session              whether pins are on; who the presented token names
    POST   /api/devices/MAC/pin      {"category": NAME} or {"action": A}: pin (token needed)
    DELETE /api/devices/MAC/pin      release the pin (token needed)
    PUT    /api/devices/MAC/label    {"label": TEXT}: the operator's name for it ("" removes; token needed)
    GET    /api/audit[?mac=MAC]      pins and releases, newest first

Pins are off unless the controller runs with ``--web-pins`` and a token file
(``--web-token-file``). A pin request carries the operator's token in an
``Authorization: Bearer`` header (never a cookie, so another site cannot make a browser send
it), a JSON body (``Content-Type: application/json``), and, when the browser sends one, an
``Origin`` that is this server. A pin is written to the policy file's ``overrides``
(:mod:`controller_app.pins`) and applied by the policy hot reload; each change is logged
(``{"event": "pin", ...}``) and kept in the inventory's ``audit`` table with who, when and
from where.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote

from classifier.capture.packets import mac_to_int

from controller_app.httpserver import Reply
from controller_app.intents import Table
from controller_app.pins import PIN_CATEGORIES, PinError, PolicyEditor, Tokens, pin_from_request
from controller_app.plain import changes, decision_sentence, feature_words, suggestions

LOG = logging.getLogger("controller_app.web")
STATIC = Path(__file__).resolve().parent / "static"
FILES = {"/ui": ("index.html", "text/html; charset=utf-8"), "/ui/": ("index.html", "text/html; charset=utf-8"),
         "/ui/device": ("device.html", "text/html; charset=utf-8"),
         "/ui/review": ("review.html", "text/html; charset=utf-8"),
         "/ui/app.js": ("app.js", "text/javascript; charset=utf-8"),
         "/ui/app.css": ("app.css", "text/css; charset=utf-8")}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
SORTS = ("mac", "vendor", "switch", "category", "confidence", "stage", "enforced", "first_seen", "last_seen", "pin",
         "name", "address")
MAX_LIMIT = 500
MAX_BODY = 16 * 1024
#: The text filter (``q``): at most this many characters and words (each word is a substring
#: test over every device: 32,000 words over 2,054 devices took 2.6 s of CPU)
MAX_QUERY_CHARS = 256
MAX_QUERY_WORDS = 8
#: A pin's JSON body: at most this deep (a pin needs 3: {"action": {"allow_pools": [...]}})
MAX_JSON_DEPTH = 8
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")
_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$")


def host_name_ok(names, host: str | None) -> bool:
    """Whether a request's ``Host`` header names this server: its name (without the port) among
    ``names`` (lower case; None: any name)."""
    if names is None:
        return True
    host = (host or "").strip().lower()
    if host.startswith("["):
        name = host[:host.find("]") + 1]
    else:
        name = host.rsplit(":", 1)[0] if ":" in host else host
    return name in names


def loopback_names(http_host: str):
    """The host names answered when listening on ``http_host``: on loopback, only loopback names
    (a page of another site that points its own name at 127.0.0.1 cannot read or write here:
    DNS rebinding); elsewhere None (any)."""
    host = (http_host or "").strip("[]").lower()
    loopback = host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
    return LOOPBACK_NAMES + (host, f"[{host}]") if loopback else None


def host_check(http_host: str):
    """``host_ok(Host header) -> bool`` for a server listening on ``http_host``, for every
    endpoint (the JSON endpoints, /metrics, the page and its API)."""
    names = loopback_names(http_host)
    return lambda host: host_name_ok(names, host)


def json_depth(text: str) -> int:
    """How deep ``text``'s JSON arrays and objects nest (brackets inside strings not counted),
    without parsing it: a body of 7,000 ``[`` made the parser raise RecursionError."""
    depth = deepest = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _structured(kind: str, **fields) -> str:
    return json.dumps({"event": kind, **fields}, default=str)


def no_vendor(mac: str) -> str | None:
    """No vendor look-up (the page shows the OUI prefix alone)."""
    return None


def oui_vendors(registry=None):
    """The vendor look-up of the IEEE registry (:mod:`classifier.identity.oui`: Debian's
    ``ieee-data`` and Wireshark's ``manuf``), loaded here once, not per request: MAC text ->
    the organisation its prefix (24, 28 or 36 bits, longest first) is registered to, or None
    (unregistered; locally administered, which the page shows as "randomised"). Without a
    registry on the machine (one warning), :func:`no_vendor`."""
    from functools import lru_cache

    from classifier.identity.oui import default_registry
    reg = default_registry() if registry is None else registry
    if not reg.available:
        return no_vendor

    @lru_cache(maxsize=1 << 16)       # across snapshots: a new one each second re-asks for every device
    def vendor_of(mac: str) -> str | None:
        return reg.lookup(int(mac.replace(":", "").replace("-", ""), 16))
    return vendor_of


_INCLUDE = re.compile(r'<!--#include ([\w.-]+\.html)(?: title="([^"<>]*)")?-->')


def include(page: str) -> str:
    """A page of ``static/`` with its ``<!--#include FILE title="…"-->`` lines replaced by the
    shared pieces (the head, the header), ``{title}`` by the title: the pages share them instead
    of repeating them. Read once a page (the server caches the result)."""
    return _INCLUDE.sub(lambda m: (STATIC / m.group(1)).read_text("utf-8").replace("{title}", m.group(2) or ""), page)


# ------------------------------------------------------------------ what the event loop publishes


def rules_state(dev, settings):
    """What the page needs to list a device's installed entries, as immutable values taken on
    the event loop: (MAC, policy switch, action, pool prefixes, LAN, rate meter id, mirror
    switch, mirror meter id, mirror max_len, mirror rate and burst, identity meter id (None when
    identity mirroring is off), its rate and burst). None when nothing is installed."""
    if (dev.policy_dpid is None and dev.mirror_dpid is None) or dev.slot is None:
        return None                   # a parked device holds nothing on any switch
    return (dev.mac, dev.policy_dpid, dev.policy_action, dev.policy_pools, dev.policy_lan, dev.rate_meter,
            dev.mirror_dpid, dev.mirror_meter, settings.mirror_max_len, settings.mirror_rate_pps,
            settings.mirror_burst, dev.identity_meter if settings.identity_rate_pps > 0 else None,
            settings.identity_rate_pps, settings.identity_burst)


def device_records(core, settings, names=None, now: float | None = None) -> tuple[list, list]:
    """The devices as the JSON endpoints and the page show them (each device's record, its
    switch as hex, the mirrored packets held, its names, addresses and label from ``names``, a
    :class:`controller_app.names.NameBook`), and each one's :func:`rules_state`, in the same
    order."""
    devices, rules = [], []
    buffers = core.learner.buffers
    for d in core.devices.values():
        r = d.to_record()
        r["dpid"] = None if d.dpid is None else f"{d.dpid:016x}"
        t = core.rules.treatment(d) if d.policy_action is not None else None
        r["action_basis"] = None if t is None else t.basis          # which policy entry the action comes from
        r["action_tightened"] = bool(t is not None and t.tightened)  # claims alone: intersected with `unknown`
        r["action_kind"] = d.policy_action.kind if d.policy_action is not None else "none"
        buf = buffers.get(d.mac)
        r["mirrored_packets"] = 0 if buf is None else buf.n
        r["mirror_since_ns"] = d.mirror_since_ns if d.mirroring else None
        if names is not None:
            r["names"], r["addresses"], r["label"] = names.of(d.mac)
        devices.append(r)
        rules.append(rules_state(d, settings))
    return devices, rules


def devices_by_action(records) -> dict:
    """``{(category, stage, action kind): devices}`` of published device records (gateways
    aside), for the ``iot_devices`` gauge."""
    from collections import Counter
    return dict(Counter((r.get("category") or "undecided", r.get("stage") or "learning", r.get("action_kind") or "none")
                        for r in records if not r.get("gateway")))


def installed_entries(state) -> dict:
    """The flow entries and meters the controller installed for a device (from its
    :func:`rules_state`), as the page shows them."""
    from controller_app.core import mirror_flows, policy_flows
    from controller_app.ofp import describe
    if state is None:
        return {"entries": [], "meters": []}
    (mac, pdp, action, pools, lan, rate_meter, mdp, mirror_meter, max_len, mirror_pps, mirror_burst, identity_meter,
     identity_pps, identity_burst) = state
    flows, meters = [], []
    if pdp is not None and action is not None:
        flows += policy_flows(pdp, mac, action, lan or (), pools or (), rate_meter)
        if action.rate_limit_kbps:
            meters.append({"dpid": f"{pdp:016x}", "meter": rate_meter, "rate": action.rate_limit_kbps,
                           "unit": "kbps", "what": "rate limit"})
    if mdp is not None:
        flows += mirror_flows(mdp, mac, mirror_meter, max_len, identity_meter)
        meters.append({"dpid": f"{mdp:016x}", "meter": mirror_meter, "rate": mirror_pps, "unit": "pktps",
                       "what": "mirror"})
        if identity_meter is not None:
            meters.append({"dpid": f"{mdp:016x}", "meter": identity_meter, "rate": identity_pps, "unit": "pktps",
                           "what": "identity protocols, whole"})
    out = []
    for f in flows:
        d = describe(f)
        acts = ([f"meter:{d['meter']}"] if d["meter"] is not None else []) + list(d["actions"])
        if d["goto"] is not None:
            acts.append(f"goto_table:{int(d['goto'])}")
        out.append({"dpid": d["dpid"], "table": d["table"], "table_name": Table(d["table"]).name,
                    "priority": d["priority"], "match": ", ".join(f"{k}={v}" for k, v in d["match"].items()),
                    "actions": ", ".join(acts) or "drop", "cookie": d["cookie"]})
    return {"entries": out, "meters": meters}


# ------------------------------------------------------------------ explanations


#: What the page draws of a decision's explanation, part by part: the fields of each entry and
#: their types. The engine hands them over as ``Decision.evidence["explain"]`` (see
#: docs/operator.md, "Explanations"); the keys are ours, whatever a device said is only ever a value.
EXPLAIN_PARTS = {
    "voters": {"name": str, "category": str, "probability": float, "threshold": float, "vouches": bool},
    "identity": {"kind": str, "value": str, "category": str, "weight": float},
    "sessions": {"position": int, "pool": str, "weight": float},
    "segments": {"feature": str, "change": float},
    "notes": {"text": str},
}
MAX_EXPLAIN_ENTRIES = 50
MAX_EXPLAIN_TEXT = 300
#: a segment feature whose occlusion moved the decision less than this, or a session the
#: attention gave less, is not shown (it is not evidence)
ZERO_WEIGHT = 0.005


def _value(kind, v):
    """``v`` as ``kind`` (a JSON value the engine wrote), or None when it is not one."""
    if kind is bool:
        return v if isinstance(v, bool) else None
    if kind is int:
        return v if isinstance(v, int) and not isinstance(v, bool) else None
    if kind is float:
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None
    if isinstance(v, str):
        return v[:MAX_EXPLAIN_TEXT]
    return None


def explanation_parts(explain, text: str | None = None, vouching=None) -> dict:
    """A decision's explanation as the page draws it: the structured parts the engine handed over
    (``explain``: a dict of :data:`EXPLAIN_PARTS` lists; each entry keeps only its known fields of
    the right type, at most :data:`MAX_EXPLAIN_ENTRIES` a part), else the engine's one-line
    ``text`` as **one** value, never split: a device's host name that reads like a feature list is
    drawn as the words it is. ``vouching``: the voters that vouched (recorded with the decision)."""
    out = {part: [] for part in EXPLAIN_PARTS}
    out["text"] = []
    out["vouching"] = [str(v) for v in vouching] if isinstance(vouching, (list, tuple)) else []
    structured = isinstance(explain, dict) and any(isinstance(explain.get(p), list) for p in EXPLAIN_PARTS)
    if structured:
        for part, fields in EXPLAIN_PARTS.items():
            entries = explain.get(part)
            if not isinstance(entries, list):
                continue
            for e in entries[:MAX_EXPLAIN_ENTRIES]:
                if part == "notes" and isinstance(e, str):
                    e = {"text": e}
                if not isinstance(e, dict):
                    continue
                row = {k: _value(kind, e.get(k)) for k, kind in fields.items()}
                if any(row[k] is None for k in fields if k not in ("category", "threshold", "vouches", "weight")):
                    continue                      # an entry without its essentials is left out
                if (part == "segments" and abs(row["change"]) < ZERO_WEIGHT) or \
                        (part == "sessions" and abs(row["weight"]) < ZERO_WEIGHT):
                    continue                      # moved nothing: not evidence
                if part == "segments":
                    row["label"] = feature_words(row["feature"])
                out[part].append(row)
    elif text:
        out["text"] = [str(text)]
    out["structured"] = structured
    return out


def explain_history(history: list) -> list:
    """Each decision of a device's history (:func:`controller_app.inventory.device_history`) with
    ``explained`` (:func:`explanation_parts`), the engine's structured parts taken out of its
    evidence. In place; returns ``history``."""
    for h in history:
        ev = h.get("evidence")
        explain = ev.pop("explain", None) if isinstance(ev, dict) else None
        h["explained"] = explanation_parts(explain, h.get("explanation"), h.get("vouching"))
    return history


# ------------------------------------------------------------------ the snapshot, indexed


class _Index:
    """One published snapshot, with what queries need built once."""

    def __init__(self, view: dict, vendor_of):
        self.view = view
        self.devices = view.get("devices") or []
        self.rules = view.get("rules") or []
        self.by_mac = {d["mac"]: d for d in self.devices}
        self.pins = (view.get("policy") or {}).get("overrides") or {}
        self.vendor_of = vendor_of
        self._vendors: dict = {}
        self._sorted: dict = {}
        self._text = None
        self._facets = None
        self._position = None
        self._switches = None
        self.lock = threading.Lock()

    def rules_of(self, d: dict):
        """The device's :func:`rules_state` (published beside the records, in their order)."""
        with self.lock:
            if self._position is None:
                self._position = {id(r): i for i, r in enumerate(self.devices)}
        i = self._position.get(id(d))
        return self.rules[i] if i is not None and i < len(self.rules) else None

    def vendor(self, mac: str):
        # per MAC, not per 24-bit prefix: the registry's MA-M and MA-S blocks (28, 36 bits) give
        # devices under one OUI different organisations
        if mac not in self._vendors:
            try:
                self._vendors[mac] = self.vendor_of(mac)
            except Exception:  # noqa: BLE001 - a look-up that fails shows the prefix alone
                self._vendors[mac] = None
        return self._vendors[mac]

    def learning_eta(self, d: dict) -> float | None:
        """Seconds of traffic a learning device still needs, about (the engine's learning window
        since its mirroring began; None when it is not learning)."""
        st = self.view.get("status") or {}
        since, window, now = d.get("mirror_since_ns"), st.get("learning_window_s"), st.get("published")
        if d.get("stage") is not None or not d.get("mirroring") or since is None or not window or not now:
            return None
        return max(0.0, round(float(window) - (now - since / 1e9), 1))

    def switch_up(self, d: dict) -> bool | None:
        """Whether the device's switch is connected (None: no switch known)."""
        if d.get("dpid") is None:
            return None
        with self.lock:
            if self._switches is None:
                self._switches = set((self.view.get("status") or {}).get("switches") or ())
        return d["dpid"] in self._switches

    def row(self, d: dict) -> dict:
        mac = d["mac"]
        return {"mac": mac, "oui": mac[:8].upper(), "vendor": self.vendor(mac),
                "names": d.get("names") or [], "addresses": d.get("addresses") or [], "label": d.get("label"),
                "learning_eta_s": self.learning_eta(d), "switch_up": self.switch_up(d),
                "action_kind": d.get("action_kind"), "parked": d.get("parked"),
                "local": bool(int(mac[:2], 16) & 2), "dpid": d.get("dpid"), "port": d.get("port"),
                "category": d.get("category"), "confidence": d.get("confidence") if d.get("stage") else None,
                "stage": d.get("stage"), "enforced": d.get("enforced"), "first_seen_ns": d.get("first_seen_ns"),
                "last_seen_ns": d.get("last_seen_ns"), "mirroring": d.get("mirroring"), "gateway": d.get("gateway"),
                "claims_only": d.get("claims_only"), "action_basis": d.get("action_basis"),
                "action_tightened": d.get("action_tightened"), "identity_watch": d.get("identity_watch"),
                "pin": self.pins.get(mac), "model": d.get("model"), "thin_answers": d.get("thin_answers"),
                "mirrored_packets": d.get("mirrored_packets"), "identity_probes": d.get("identity_probes")}

    def _value(self, name: str):
        """The sort value of a device: a string or a number (no tuples: sorting 10,000 devices must
        not leave 10,000 new containers for the garbage collector), or None when it has none (it
        then goes last, in either order)."""
        if name == "vendor":
            return None if self.vendor_of is no_vendor else (lambda d: self.vendor(d["mac"]))
        if name == "switch":
            return lambda d: None if d.get("dpid") is None else f"{d['dpid']}:{d.get('port') or 0:010d}"
        if name == "confidence":
            return lambda d: d.get("confidence") if d.get("stage") else None
        if name == "pin":
            return lambda d: self.pins.get(d["mac"])
        if name == "name":                                     # the label, else the first name it announced
            return lambda d: (d.get("label") or next((n["value"] for n in d.get("names") or ()), None) or "").lower() \
                or None
        if name == "address":
            return lambda d: (d.get("addresses") or [None])[0]
        return lambda d: d.get(name)

    def sort_rows(self, rows: list, name: str, descending: bool) -> list:
        """``rows`` sorted by ``name``, ties by MAC (ascending), rows without a value last."""
        if name in ("first_seen", "last_seen"):                # never missing; ties (same ns) are rare
            field = f"{name}_ns"
            return sorted(rows, key=lambda d: d[field] or 0, reverse=descending)
        by_mac = sorted(rows, key=lambda d: d["mac"])
        if name == "mac":
            return by_mac[::-1] if descending else by_mac
        value = self._value(name)
        if value is None:                                      # nobody has one
            return by_mac
        vals = list(map(value, by_mac))
        have = [i for i, v in enumerate(vals) if v is not None]
        have.sort(key=vals.__getitem__, reverse=descending)    # stable: ties stay in MAC order
        return [by_mac[i] for i in have] + [d for d, v in zip(by_mac, vals) if v is None]

    def sorted(self, name: str, descending: bool) -> list:
        """Every device sorted (kept for the snapshot: the unfiltered list is the common view)."""
        with self.lock:
            got = self._sorted.get((name, descending))
            if got is None:
                got = self._sorted[(name, descending)] = self.sort_rows(self.devices, name, descending)
            return got

    def text(self) -> dict:
        """MAC -> what the filter searches (lower case)."""
        with self.lock:
            if self._text is None:
                pins = self.pins
                vendor = self.vendor if self.vendor_of is not no_vendor else (lambda mac: None)
                self._text = {d["mac"]: (
                    f"{d['mac']} {d['mac'].replace(':', '')} {vendor(d['mac']) or ''} {d.get('dpid') or ''} "
                    f"{d.get('port') or ''} {d.get('category') or 'undecided'} {d.get('stage') or 'learning'} "
                    f"{d.get('enforced') or ''} {pins.get(d['mac']) or ''}{' gateway' if d.get('gateway') else ''} "
                    f"{d.get('label') or ''} {' '.join(n['value'] for n in d.get('names') or ())} "
                    f"{' '.join(d.get('addresses') or ())}"
                    ).lower() for d in self.devices}
            return self._text

    def facets(self) -> dict:
        with self.lock:
            if self._facets is None:
                from collections import Counter
                cats = Counter("gateway" if d.get("gateway") else (d.get("category") or "undecided")
                               for d in self.devices)
                stages = Counter(d.get("stage") or ("-" if d.get("gateway") else "learning") for d in self.devices)
                self._facets = {"category": dict(sorted(cats.items())), "stage": dict(sorted(stages.items())),
                                "pinned": sum(1 for d in self.devices if d["mac"] in self.pins)}
            return self._facets


# ------------------------------------------------------------------ the web UI


def _json(status: int, obj, headers: dict | None = None) -> Reply:
    return Reply(status, json.dumps(obj, default=str, separators=(",", ":")).encode(), "application/json",
                 {"Cache-Control": "no-store", **(headers or {})})


def _error(status: int, message: str, **extra) -> Reply:
    return _json(status, {"error": message, **extra})


class WebUI:
    """The page's routes. ``view()`` returns the observer's latest snapshot."""

    def __init__(self, view, *, inventory_path: str | None = None, policy_file: str | None = None,
                 pins: bool = False, tokens: Tokens | None = None, inventory=None, reload=None, traffic=None,
                 metrics=None, vendor_of=no_vendor, host_names=LOOPBACK_NAMES, apply_wait: float = 5.0, names=None,
                 events=None, review_after: float = 3600.0):
        if pins and (tokens is None or policy_file is None):
            raise ValueError("pins need a token file and a policy file")
        self.view = view
        self.inventory_path = inventory_path
        self.policy_file = policy_file
        self.pins = bool(pins)
        self.tokens = tokens
        self.editor = PolicyEditor(policy_file) if pins else None
        self.inventory = inventory
        self.reload = reload
        self.traffic = traffic
        self.metrics = metrics
        self.vendor_of = vendor_of
        self.host_names = None if host_names is None else tuple(h.lower() for h in host_names)
        self.apply_wait = apply_wait
        self.names = names                  #: controller_app.names.NameBook (labels are set through it)
        self.events = events                #: controller_app.events.EventLog (the timeline)
        self.review_after = review_after    #: seconds provisional before the review queue lists a device
        self._index: _Index | None = None
        self._index_lock = threading.Lock()
        self._files: dict = {}

    # ---------------------------------------------------------------- plumbing

    def handles(self, path: str) -> bool:
        return path in FILES or path == "/api" or path.startswith("/api/")

    def index(self) -> _Index:
        v = self.view()
        with self._index_lock:
            if self._index is None or self._index.view is not v:
                self._index = _Index(v, self.vendor_of)
            return self._index

    def _file(self, name: str) -> bytes:
        body = self._files.get(name)
        if body is None:
            body = (STATIC / name).read_bytes()
            if name.endswith(".html"):
                body = include(body.decode("utf-8")).encode("utf-8")
            self._files[name] = body
        return body

    def _host_ok(self, headers) -> bool:
        """On loopback, only loopback host names (a page of another site that resolves its own
        name to 127.0.0.1 cannot read or write here). ``host_names`` None: any."""
        return host_name_ok(self.host_names, headers.get("Host"))

    def handle(self, method: str, path: str, query: str, headers, read_body, client: str) -> Reply:
        """Answer one request for a path :meth:`handles`. ``read_body(n)`` reads the body."""
        if not self._host_ok(headers):
            return _error(421, "this server answers only for its loopback address (Host header)")
        try:
            if method == "GET" and path in FILES:
                name, ctype = FILES[path]
                return Reply(200, self._file(name), ctype, {**SECURITY_HEADERS, "Cache-Control": "no-cache"})
            q = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
            parts = [unquote(p) for p in path.split("/") if p][1:]  # after "api"
            if method == "GET":
                if parts == ["devices"]:
                    return self.devices(q)
                if parts == ["session"]:
                    return _json(200, self.session(headers))
                if parts == ["audit"]:
                    return self.audit(q.get("mac"), q)
                if parts == ["events"]:
                    return self.timeline(q)
                if parts == ["review"]:
                    return self.review(q)
                if len(parts) == 2 and parts[0] == "devices":
                    return self.device(parts[1])
                return _error(404, f"no such endpoint: {path}")
            if method in ("POST", "DELETE") and len(parts) == 3 and parts[0] == "devices" and parts[2] == "pin":
                return self.pin(method, parts[1], headers, read_body, client)
            if method == "PUT" and len(parts) == 3 and parts[0] == "devices" and parts[2] == "label":
                return self.label(parts[1], headers, read_body, client)
            if method in ("POST", "DELETE", "PUT", "PATCH"):
                return _error(405, f"{method} {path}: not allowed (only POST and DELETE of /api/devices/MAC/pin, "
                                   "PUT of /api/devices/MAC/label)")
            return _error(404, f"no such endpoint: {path}")
        except PinError as exc:
            return _error(exc.status, str(exc))

    # ---------------------------------------------------------------- reads

    def _status(self, idx: _Index) -> dict:
        st = idx.view.get("status") or {}
        pol = idx.view.get("policy") or {}
        return {"switches": st.get("switches", []), "devices": st.get("devices", len(idx.devices)),
                "learning": st.get("learning"), "packet_ins_per_second": st.get("packet_ins_per_second"),
                "links": st.get("links"), "model": st.get("model"), "policy": {
                    "source": pol.get("source"), "digest": pol.get("digest"), "enforce_on": pol.get("enforce_on"),
                    "min_confidence": pol.get("min_confidence"), "learning": pol.get("learning"),
                    "unknown": pol.get("unknown")},
                "pins_enabled": self.pins, "published": st.get("published"), "now": round(time.time(), 3),
                "events_last": st.get("events_last"),
                "review": self._review_count(idx)}

    def devices(self, q: dict) -> Reply:
        idx = self.index()
        sort = q.get("sort") or "last_seen"
        if sort not in SORTS:
            return _error(400, f"sort: {sort!r} is not one of {', '.join(SORTS)}")
        order = q.get("order") or ("desc" if sort in ("last_seen", "first_seen", "confidence") else "asc")
        if order not in ("asc", "desc"):
            return _error(400, f"order: {order!r} is not asc or desc")
        try:
            offset = max(0, int(q.get("offset") or 0))
            limit = min(MAX_LIMIT, max(1, int(q.get("limit") or 100)))
        except ValueError:
            return _error(400, "offset and limit: expected whole numbers")
        # filter first, then sort what is left (the unfiltered list is sorted once a snapshot)
        rows = idx.devices
        filtered = False
        cat, stage = q.get("category") or "", q.get("stage") or ""
        if cat:
            filtered = True
            if cat in ("gateway", "undecided"):
                rows = [d for d in rows if ("gateway" if d.get("gateway") else
                                            (d.get("category") or "undecided")) == cat]
            else:                                              # gateways have no category
                rows = [d for d in rows if d.get("category") == cat]
        if stage:
            filtered = True
            if stage in ("-", "learning"):
                rows = [d for d in rows if (d.get("stage") or ("-" if d.get("gateway") else "learning")) == stage]
            else:
                rows = [d for d in rows if d.get("stage") == stage]
        if q.get("pinned") in ("1", "true", "yes"):
            filtered = True
            rows = [d for d in rows if d["mac"] in idx.pins]
        text = (q.get("q") or "").strip().lower()
        if len(text) > MAX_QUERY_CHARS:
            return _error(400, f"q: {len(text)} characters, at most {MAX_QUERY_CHARS}")
        if len(text.split()) > MAX_QUERY_WORDS:
            return _error(400, f"q: {len(text.split())} words, at most {MAX_QUERY_WORDS}")
        if text:
            filtered = True
            index = idx.text()
            for w in text.split():
                rows = [d for d in rows if w in index[d["mac"]]]
        rows = idx.sort_rows(rows, sort, order == "desc") if filtered else idx.sorted(sort, order == "desc")
        page = [idx.row(d) for d in rows[offset:offset + limit]]
        return _json(200, {"total": len(idx.devices), "matched": len(rows), "offset": offset, "limit": limit,
                           "sort": sort, "order": order, "rows": page, "facets": idx.facets(),
                           "status": self._status(idx), "generated": time.time()})

    def _mac(self, text: str) -> str:
        t = text.strip().lower()
        if not _MAC_RE.match(t):
            raise PinError(f"{text!r} is not a MAC address like 02:00:00:00:01:01", 400)
        return t.replace("-", ":")

    def device(self, mac_text: str) -> Reply:
        try:
            mac = self._mac(mac_text)
        except PinError as exc:
            return _error(400, str(exc))
        idx = self.index()
        d = idx.by_mac.get(mac)
        if d is None:
            return _error(404, f"no device {mac} (the controller has not seen it)")
        from controller_app.inventory import InventoryError, device_history, read_audit
        history, audit, problems = [], [], []
        if self.inventory_path:
            try:
                history = device_history(self.inventory_path, mac)
                audit = read_audit(self.inventory_path, mac, 50)
            except InventoryError as exc:
                problems.append(str(exc))
        explain_history(history)
        for h in history:
            h["summary"] = decision_sentence(h)
        rules = installed_entries(idx.rules_of(d))
        pol = idx.view.get("policy") or {}
        cats = pol.get("categories") or {}
        choices = [{"category": c, "action": (pol.get("unknown") if c == "unknown" else cats.get(c, pol.get("default")))}
                   for c in PIN_CATEGORIES]
        traffic = self.traffic.series(mac_to_int(mac)) if self.traffic is not None else None
        events = self.events.recent(mac=mac, limit=50) if self.events is not None else []
        return _json(200, {"device": idx.row(d), "history": history, "changes": changes(history), "rules": rules,
                           "traffic": traffic, "audit": audit, "choices": choices, "events": events,
                           "status": self._status(idx), "problems": problems})

    def timeline(self, q: dict) -> Reply:
        """The timeline, newest first (``mac``, ``since`` an event id, ``limit`` at most 500)."""
        try:
            mac = self._mac(q["mac"]) if q.get("mac") else None
            since = int(q["since"]) if q.get("since") else None
            limit = min(500, max(1, int(q.get("limit") or 100)))
        except PinError as exc:
            return _error(400, f"mac: {exc}")
        except ValueError:
            return _error(400, "since and limit: expected whole numbers")
        events = self.events.recent(mac=mac, since=since, limit=limit) if self.events is not None else []
        return _json(200, {"events": events, "last": self.events.last_id() if self.events is not None else 0})

    # ---------------------------------------------------------------- the review queue

    def _queued(self, d: dict, now: float, pins) -> str | None:
        """Why a device is in the review queue, or None: decided unknown; a decision on its own
        claims alone; provisional for longer than ``review_after`` since it was first seen.
        Pinned devices and gateways are settled."""
        if d.get("gateway") or d["mac"] in pins:
            return None
        if d.get("stage") == "unknown":
            return "unknown"
        if d.get("claims_only") and d.get("stage") in ("provisional", "confirmed"):
            return "claims only"
        if d.get("stage") == "provisional" and now - (d.get("first_seen_ns") or 0) / 1e9 >= self.review_after:
            return "long provisional"
        return None

    def _review_count(self, idx: _Index) -> int:
        now = (idx.view.get("status") or {}).get("published") or time.time()
        with idx.lock:
            cached = getattr(idx, "_review", None)
        if cached is None:
            cached = [d for d in idx.devices if self._queued(d, now, idx.pins)]
            with idx.lock:
                idx._review = cached
        return len(cached)

    def review(self, q: dict) -> Reply:
        """The devices the engine could not settle, each with the engine's top suggestions and
        their evidence in plain words (:func:`controller_app.plain.suggestions`) and the action
        the policy gives each suggested category. At most ``limit`` (50) a page."""
        from controller_app.inventory import InventoryError, device_history, read_identity
        idx = self.index()
        try:
            offset = max(0, int(q.get("offset") or 0))
            limit = min(50, max(1, int(q.get("limit") or 50)))
        except ValueError:
            return _error(400, "offset and limit: expected whole numbers")
        now = (idx.view.get("status") or {}).get("published") or time.time()
        order = {"unknown": 0, "claims only": 1, "long provisional": 2}
        queued = sorted(((self._queued(d, now, idx.pins), d) for d in idx.devices if self._queued(d, now, idx.pins)),
                        key=lambda t: (order[t[0]], -(t[1].get("last_seen_ns") or 0), t[1]["mac"]))
        pol = idx.view.get("policy") or {}
        cats = pol.get("categories") or {}
        items, problems = [], []
        for why, d in queued[offset:offset + limit]:
            records, last = [], None
            if self.inventory_path:
                try:
                    records = read_identity(self.inventory_path, d["mac"])
                    hist = device_history(self.inventory_path, d["mac"], limit=1)
                    last = explain_history(hist)[-1] if hist else None
                except InventoryError as exc:
                    problems.append(str(exc))
            try:
                sugg = suggestions(records, mac_to_int(d["mac"]), last)
            except Exception as exc:  # noqa: BLE001 - a queue without suggestions beats no queue
                LOG.error(_structured("review_error", mac=d["mac"], error=f"{type(exc).__name__}: {exc}"))
                sugg = []
            for sg in sugg:
                sg["action"] = cats.get(sg["category"], pol.get("default"))
            if last is not None:
                last["summary"] = decision_sentence(last)
            items.append({"device": idx.row(d), "why": why, "suggestions": sugg, "records": len(records),
                          "decision": None if last is None else {k: last.get(k) for k in (
                              "ts", "category", "stage", "confidence", "summary")}})
        choices = [{"category": c, "action": (pol.get("unknown") if c == "unknown" else cats.get(c, pol.get("default")))}
                   for c in PIN_CATEGORIES]
        return _json(200, {"total": len(queued), "offset": offset, "items": items, "choices": choices,
                           "status": self._status(idx), "problems": problems})

    def audit(self, mac: str | None, q: dict) -> Reply:
        from controller_app.inventory import InventoryError, read_audit
        if not self.inventory_path:
            return _json(200, [])
        try:
            mac = self._mac(mac) if mac else None
            limit = min(1000, max(1, int(q.get("limit") or 200)))
        except (PinError, ValueError) as exc:
            return _error(400, str(exc) if isinstance(exc, PinError) else "limit: expected a whole number")
        try:
            return _json(200, read_audit(self.inventory_path, mac, limit))
        except InventoryError as exc:
            return _error(500, str(exc))

    def session(self, headers) -> dict:
        who = self._who(headers) if self.pins else None
        return {"pins_enabled": self.pins, "operator": who,
                "token_presented": bool(_bearer(headers)), "categories": list(PIN_CATEGORIES)}

    # ---------------------------------------------------------------- pins

    def _who(self, headers) -> str | None:
        return self.tokens.who(_bearer(headers)) if self.tokens is not None else None

    def _refuse(self, status: int, message: str, client: str, mac: str, why: str) -> Reply:
        LOG.warning(_structured("pin_refused", client=client, mac=mac, reason=why))
        if self.metrics is not None:
            self.metrics.pins.labels("refused").inc()
        return _error(status, message)

    def pin(self, method: str, mac_text: str, headers, read_body, client: str) -> Reply:
        op = "pin" if method == "POST" else "release"
        if not self.pins:
            return self._refuse(403, "pinning from this page is off: the operator starts the controller with "
                                     "--web-pins and --web-token-file to turn it on", client, mac_text, "off")
        origin = headers.get("Origin")
        host = headers.get("Host") or ""
        if origin is not None and origin not in (f"http://{host}", f"https://{host}"):
            return self._refuse(403, f"refused: a request from another site ({origin})", client, mac_text,
                                "cross-origin")
        who = self._who(headers)
        if who is None:
            reply = self._refuse(401, "refused: this needs an operator's token (Authorization: Bearer TOKEN); "
                                      "without one the page is read-only", client, mac_text,
                                 "bad token" if _bearer(headers) else "no token")
            reply.headers["WWW-Authenticate"] = 'Bearer realm="iot-controller"'
            reply.delay = 0.25         # slows guessing (the server waits, not a worker); read-only without a token
            return reply
        try:
            mac = self._mac(mac_text)
        except PinError as exc:
            return _error(400, str(exc))
        mac_int = mac_to_int(mac)
        override = None
        if op == "pin":
            body = self._json_body(headers, read_body)
            if isinstance(body, Reply):
                return body
            idx = self.index()
            dev = idx.by_mac.get(mac)
            if dev is None:
                return _error(404, f"no device {mac} (the controller has not seen it)")
            if dev.get("gateway"):
                return _error(400, f"{mac} is a gateway (--gateway-macs): it is never classified or enforced")
            override = pin_from_request(body, mac_int)
        change = self.editor.set(mac_int, override)
        if not change.changed:
            return _json(200, {"ok": True, "changed": False, "mac": mac, "pin": change.after, "digest": change.digest,
                               "applied": True, "message": f"{mac}: " + (f"already pinned ({change.after})" if
                                                                         change.after else "not pinned")})
        now = time.time()
        LOG.info(_structured(op, who=who, client=client, mac=mac, before=change.before, after=change.after,
                             file=self.policy_file, digest=change.digest, previous=change.digest_before))
        if self.metrics is not None:
            self.metrics.pins.labels(op).inc()
        problems = []
        if self.inventory is not None:
            try:
                self.inventory.add_audit(now, who, client, op, mac, change.before, change.after, change.digest)
            except Exception as exc:  # noqa: BLE001 - the file is written; say the audit row is missing
                LOG.error(_structured("audit_error", error=str(exc)))
                problems.append(f"the change is in the policy file but its audit row could not be written: {exc}")
        if self.events is not None:
            self.events.emit(op, mac, who=who, before=change.before, after=change.after, digest=change.digest)
        if self.reload is not None:
            self.reload(f"{op} by {who}")
        applied = self._wait_applied(change.digest)
        what = f"pinned {change.after}" if op == "pin" else "pin released"
        pending = None
        if applied:
            dev = self.index().by_mac.get(mac) or {}
            if self.index().switch_up(dev) is False:        # nothing can be installed on a switch that is down
                pending = "switch down"
        msg = f"{mac}: {what} by {who}; " + (
            f"pending: switch down (the policy file holds it; the switch {str(dev.get('dpid')).lstrip('0')} gets its "
            "entries when it reconnects)" if pending else "in force" if applied else
            "written to the policy file, not applied yet (see the controller log)")
        return _json(200, {"ok": True, "changed": True, "mac": mac, "pin": change.after, "before": change.before,
                           "digest": change.digest, "applied": applied, "pending": pending, "who": who,
                           "message": msg, "problems": problems})

    def label(self, mac_text: str, headers, read_body, client: str) -> Reply:
        """The operator's label of a device, in the inventory (not the policy): ``{"label": TEXT}``,
        "" removes it. Needs an operator's token, as pins do."""
        from controller_app.names import clean_label
        if not self.pins:
            return _error(403, "labels need an operator: the controller runs with --web-pins and --web-token-file")
        origin = headers.get("Origin")
        host = headers.get("Host") or ""
        if origin is not None and origin not in (f"http://{host}", f"https://{host}"):
            return _error(403, f"refused: a request from another site ({origin})")
        who = self._who(headers)
        if who is None:
            reply = _error(401, "refused: this needs an operator's token (Authorization: Bearer TOKEN)")
            reply.delay = 0.25
            return reply
        try:
            mac = self._mac(mac_text)
        except PinError as exc:
            return _error(400, str(exc))
        body = self._json_body(headers, read_body)
        if isinstance(body, Reply):
            return body
        if not isinstance(body, dict) or set(body) != {"label"}:
            return _error(400, 'expected {"label": TEXT} ("" removes the label)')
        try:
            text = clean_label(body["label"])
        except ValueError as exc:
            return _error(400, str(exc))
        if self.index().by_mac.get(mac) is None:
            return _error(404, f"no device {mac} (the controller has not seen it)")
        if self.inventory is not None:
            self.inventory.set_label(mac, text, who, time.time())
        if self.names is not None:
            self.names.set_label(mac, text)
        LOG.info(_structured("label", who=who, client=client, mac=mac, label=text))
        return _json(200, {"ok": True, "mac": mac, "label": text or None, "who": who,
                           "message": f"{mac}: " + (f"labelled {text!r}" if text else "label removed") +
                                      f" by {who}; shown within a second"})

    def _json_body(self, headers, read_body):
        """The request's JSON body (a pin's limits), or the Reply that refuses it."""
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return _error(415, "expected a JSON body (Content-Type: application/json)")
        try:
            n = int(headers.get("Content-Length") or 0)
        except ValueError:
            return _error(400, "bad Content-Length")
        if n <= 0 or n > MAX_BODY:
            return _error(400 if n <= 0 else 413, "expected a JSON body of at most 16 KB")
        try:
            raw = read_body(n).decode("utf-8")
        except UnicodeDecodeError as exc:
            return _error(400, f"the body is not UTF-8 text (byte {exc.start})")
        depth = json_depth(raw)
        if depth > MAX_JSON_DEPTH:
            return _error(400, f"the body nests {depth} levels deep; a pin needs at most {MAX_JSON_DEPTH}")
        try:
            return json.loads(raw)
        except ValueError as exc:
            return _error(400, f"the body is not valid JSON: {exc}")
        except RecursionError:          # json_depth bounds it; never a traceback for a body
            return _error(400, "the body nests too deep")

    def _wait_applied(self, digest: str) -> bool:
        deadline = time.monotonic() + self.apply_wait
        while True:
            if ((self.view().get("policy") or {}).get("digest")) == digest:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def _bearer(headers) -> str | None:
    auth = headers.get("Authorization") or ""
    scheme, _, tok = auth.strip().partition(" ")
    if scheme.lower() != "bearer" or not tok.strip():
        return None
    return tok.strip()


def from_config(cfg, view, *, inventory=None, reload=None, traffic=None, metrics=None, vendor_of=None, names=None,
                events=None) -> WebUI:
    """The page as the app's configuration asks (pins need ``web_pins`` and a token file).
    ``vendor_of(mac)``: the vendor's name for a MAC, or None; by default the IEEE registry's
    (:func:`oui_vendors`, loaded once here); :func:`no_vendor` shows the OUI prefix alone."""
    if vendor_of is None:
        vendor_of = oui_vendors()
    tokens = None
    if cfg.web_pins:
        if not cfg.web_token_file:
            raise ValueError("--web-pins needs --web-token-file (a file of `name:token` lines)")
        tokens = Tokens.load(cfg.web_token_file)
        from controller_app.pins import world_readable
        if world_readable(cfg.web_token_file):
            LOG.warning(_structured("token_file_readable", file=cfg.web_token_file,
                                    advice="chmod 600: other users can read the operators' tokens"))
    hosts = loopback_names(cfg.http_host)
    if cfg.web_pins and hosts is None:
        LOG.warning(_structured("pins_not_loopback", host=cfg.http_host,
                                advice="tokens cross the network in clear text; put TLS in front"))
    return WebUI(view, inventory_path=cfg.inventory_db, policy_file=cfg.policy_file, pins=cfg.web_pins, tokens=tokens,
                 inventory=inventory, reload=reload, traffic=traffic, metrics=metrics, vendor_of=vendor_of,
                 host_names=hosts, names=names, events=events, review_after=getattr(cfg, "review_after", 3600.0))


__all__ = ["WebUI", "from_config", "host_check", "include", "json_depth", "device_records", "devices_by_action",
           "rules_state", "installed_entries", "explanation_parts", "no_vendor", "oui_vendors"]
