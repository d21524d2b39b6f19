"""Observability: Prometheus metrics and a small read-only HTTP JSON endpoint.

Endpoints (GET only, loopback by default)::

    /status          switches, device counts by category and stage, counters, policy in force
    /devices         every device the controller knows (live state)
    /devices/<mac>   one device, with its decision history from the inventory
    /policy          the policy in force
    /metrics         Prometheus text format
    /ui/, /api/...   the operator page and its JSON (:mod:`controller_app.web`); ``/`` asked
                     for by a browser (Accept: text/html) goes to ``/ui/``

The HTTP threads never touch the core: the event loop publishes a snapshot (:meth:`Observer.publish`)
and requests are answered from the latest one.
"""

from __future__ import annotations

import json
import logging
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LOG = logging.getLogger("controller_app.observe")


class Metrics:
    """The app's Prometheus metrics, in a registry of their own."""

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.packet_ins = Counter("iot_packet_ins", "packet-ins received, by kind", ["kind"], registry=r)
        self.packet_in_rate = Gauge("iot_packet_ins_per_second", "packet-ins per second over the last tick",
                                    registry=r)
        self.devices = Gauge("iot_devices", "devices by category, stage and the kind of action in force (block, "
                             "rate_limit, restrict, mark, allow, none)", ["category", "stage", "action"], registry=r)
        self.learning = Gauge("iot_learning_devices", "devices being mirrored", registry=r)
        self.switches = Gauge("iot_switches", "connected switches", registry=r)
        self.decisions = Counter("iot_decisions", "decisions made, by category and stage", ["category", "stage"],
                                 registry=r)
        self.rule_changes = Counter("iot_rule_changes", "flow and meter changes sent, by operation", ["op"],
                                    registry=r)
        self.errors = Counter("iot_errors", "errors, by kind", ["kind"], registry=r)
        self.capped = Counter("iot_learning_capped", "new MACs not learned at a cap (port, switch) and devices "
                              "that had to wait for a mirror slot (mirror)", ["cap"], registry=r)
        self.expired = Counter("iot_devices_expired", "devices unseen for host_timeout: forgotten (undecided) "
                               "or parked (decided)", ["how"], registry=r)
        self.policy_reloads = Counter("iot_policy_reloads", "policy reloads, by result (applied, unchanged, "
                                      "rejected)", ["result"], registry=r)
        self.pins = Counter("iot_pins", "pins from the operator page, by operation (pin, release, refused)", ["op"],
                            registry=r)
        self.events = Counter("iot_events", "timeline events, by kind (new_device, category_changed, confirmed, "
                              "unknown, pin, release, switch_up, switch_down, policy_reloaded)", ["event"], registry=r)
        from controller_app.events import KINDS
        for kind in KINDS:                      # every kind present from the start: 0, not "No data"
            self.events.labels(kind)
        self._last_counts: dict = {}
        self._device_labels: set = set()

    def sync_counters(self, counters: dict) -> None:
        """Move the core's packet-in counters (monotonic) into Prometheus counters."""
        for key, label in (("packet_ins_mirror", "mirror"), ("packet_ins_learn", "learn"),
                           ("packet_ins_lldp", "lldp"), ("packet_ins_unexpected", "unexpected"),
                           ("packet_ins_malformed", "malformed"), ("packet_ins_unknown_switch", "unknown_switch"),
                           ("packet_ins_unknown_port", "unknown_port")):
            now = counters.get(key, 0)
            delta = now - self._last_counts.get(key, 0)
            if delta > 0:
                self.packet_ins.labels(label).inc(delta)
                if label in ("malformed", "unexpected", "unknown_switch", "unknown_port"):
                    self.errors.labels(f"packet_in_{label}").inc(delta)
            self._last_counts[key] = now
        for key, metric, label in (("learn_refused_port", self.capped, "port"),
                                   ("learn_refused_switch", self.capped, "switch"),
                                   ("mirror_capped", self.capped, "mirror"),
                                   ("devices_forgotten", self.expired, "forgotten"),
                                   ("devices_parked", self.expired, "parked")):
            now = counters.get(key, 0)
            delta = now - self._last_counts.get(key, 0)
            if delta > 0:
                metric.labels(label).inc(delta)
            self._last_counts[key] = now

    def set_devices(self, by_category_stage: dict) -> None:
        """``{(category, stage, action kind): devices}``."""
        for labels in self._device_labels - set(by_category_stage):
            self.devices.labels(*labels).set(0)
        for labels, n in by_category_stage.items():
            self.devices.labels(*labels).set(n)
        self._device_labels |= set(by_category_stage)

    def text(self) -> bytes:
        return generate_latest(self.registry)


class Observer:
    """Holds the latest published snapshot and serves it over HTTP
    (:class:`controller_app.httpserver.HttpServer`: bounded connections, workers, time and sizes)."""

    def __init__(self, metrics: Metrics, inventory_path: str | None = None, web=None, limits=None, host_ok=None):
        self.metrics = metrics
        self.inventory_path = inventory_path
        self.web = web                  #: the operator page (controller_app.web.WebUI), or None
        self.limits = limits            #: controller_app.httpserver.HttpLimits (None: the defaults)
        #: ``host_ok(Host header) -> bool`` for every request (None: the loopback names when
        #: listening on loopback, else any; :func:`controller_app.web.host_check`)
        self.host_ok = host_ok
        self._view = {"status": {}, "devices": [], "policy": {}, "rules": []}
        self._lock = threading.Lock()
        self._cache: tuple = (None, {})  # (view, path -> JSON bytes): one serialisation a snapshot
        self.server = None

    def publish(self, status: dict, devices: list, policy: dict, rules: list | None = None) -> None:
        """A new snapshot; ``rules``: beside each device (same order), what the page needs to
        list its installed entries (:func:`controller_app.web.rules_state`)."""
        with self._lock:
            self._view = {"status": status, "devices": devices, "policy": policy, "rules": rules or []}

    def view(self) -> dict:
        with self._lock:
            return self._view

    def start(self, host: str, port: int) -> int:
        """Serve in a daemon thread; returns the bound port."""
        from controller_app.httpserver import HttpServer
        from controller_app.web import host_check
        host_ok = self.host_ok or host_check(host)
        self.server = HttpServer(self.answer, self.limits, host_ok)
        return self.server.start(host, port)

    def _cached_json(self, v: dict, key: str) -> bytes:
        """The snapshot's ``key`` as JSON, made once a snapshot (a client asking for every device
        in a loop costs one serialisation a second, not one a request)."""
        with self._lock:
            view, cache = self._cache
            if view is not v:
                cache = {}
                self._cache = (v, cache)
            body = cache.get(key)
        if body is None:
            body = json.dumps(v[key], indent=1, default=str).encode() + b"\n"
            with self._lock:
                if self._cache[0] is v:
                    self._cache[1][key] = body
        return body

    def answer(self, req):
        """One whole request (:class:`controller_app.httpserver.Request`) -> its Reply."""
        from controller_app.httpserver import Reply, error_reply

        def js(code, obj):
            return Reply(code, json.dumps(obj, indent=1, default=str).encode() + b"\n")
        method = "GET" if req.method == "HEAD" else req.method
        web = self.web
        if web is not None and web.handles(req.path):
            body = req.body
            return web.handle(method, req.path, req.query, req.headers, lambda n: body[:n], req.client)
        if method != "GET":
            return error_reply(405, f"{req.method} {req.path[:100]}: read-only endpoint")
        path = req.path.rstrip("/") or "/"
        v = self.view()
        if path == "/" and web is not None and "text/html" in (req.headers.get("Accept") or ""):
            return Reply(302, b"", "text/plain", {"Location": "/ui/"})
        if path == "/metrics":
            return Reply(200, self.metrics.text(), CONTENT_TYPE_LATEST)
        if path in ("/", "/status"):
            return Reply(200, self._cached_json(v, "status"))
        if path == "/devices":
            return Reply(200, self._cached_json(v, "devices"))
        if path == "/policy":
            return Reply(200, self._cached_json(v, "policy"))
        if path.startswith("/devices/"):
            mac = path.split("/", 2)[2].lower().replace("-", ":")
            dev = next((d for d in v["devices"] if d["mac"] == mac), None)
            if dev is None:
                return js(404, {"error": f"no device {mac[:40]}"})
            dev = dict(dev)
            dev["history"] = self.history(mac)
            return js(200, dev)
        return js(404, {"error": f"no such endpoint: {path[:100]}",
                        "endpoints": ["/status", "/devices", "/devices/<mac>", "/policy", "/metrics"]})

    def history(self, mac: str) -> list:
        if not self.inventory_path:
            return []
        from controller_app.inventory import InventoryError, device_history
        from controller_app.web import explain_history
        try:
            return explain_history(device_history(self.inventory_path, mac))
        except InventoryError:
            return []

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
