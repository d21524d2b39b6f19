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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
        self.devices = Gauge("iot_devices", "devices by category and stage", ["category", "stage"], registry=r)
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
        for labels in self._device_labels - set(by_category_stage):
            self.devices.labels(*labels).set(0)
        for labels, n in by_category_stage.items():
            self.devices.labels(*labels).set(n)
        self._device_labels |= set(by_category_stage)

    def text(self) -> bytes:
        return generate_latest(self.registry)


class Observer:
    """Holds the latest published snapshot and serves it over HTTP."""

    def __init__(self, metrics: Metrics, inventory_path: str | None = None, web=None):
        self.metrics = metrics
        self.inventory_path = inventory_path
        self.web = web                  #: the operator page (controller_app.web.WebUI), or None
        self._view = {"status": {}, "devices": [], "policy": {}, "rules": []}
        self._lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

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
        observer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "iot-controller"

            def log_message(self, fmt, *args):  # access log at debug level only
                LOG.debug("http %s " + fmt, self.client_address[0], *args)

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, code: int, obj) -> None:
                self._send(code, json.dumps(obj, indent=1, default=str).encode() + b"\n")

            def _web(self, method: str) -> bool:
                """The operator page's paths: answered by the web UI (True), else False."""
                web = observer.web
                raw, _, query = self.path.partition("?")
                if web is None or not web.handles(raw):
                    return False
                try:
                    reply = web.handle(method, raw, query, self.headers, self.rfile.read, self.client_address[0])
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.ctype)
                    self.send_header("Content-Length", str(len(reply.body)))
                    for k, val in reply.headers.items():
                        self.send_header(k, val)
                    self.end_headers()
                    if method != "HEAD":
                        self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return True

            def do_GET(self):  # noqa: N802 (http.server's naming)
                if self._web("GET"):
                    return
                path = self.path.split("?", 1)[0].rstrip("/") or "/"
                v = observer.view()
                try:
                    if path == "/" and observer.web is not None and "text/html" in (self.headers.get("Accept") or ""):
                        self.send_response(302)
                        self.send_header("Location", "/ui/")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                    elif path == "/metrics":
                        self._send(200, observer.metrics.text(), CONTENT_TYPE_LATEST)
                    elif path in ("/", "/status"):
                        self._json(200, v["status"])
                    elif path == "/devices":
                        self._json(200, v["devices"])
                    elif path == "/policy":
                        self._json(200, v["policy"])
                    elif path.startswith("/devices/"):
                        mac = path.split("/", 2)[2].lower().replace("-", ":")
                        dev = next((d for d in v["devices"] if d["mac"] == mac), None)
                        if dev is None:
                            self._json(404, {"error": f"no device {mac}"})
                            return
                        dev = dict(dev)
                        dev["history"] = observer.history(mac)
                        self._json(200, dev)
                    else:
                        self._json(404, {"error": f"no such endpoint: {path}",
                                         "endpoints": ["/status", "/devices", "/devices/<mac>", "/policy",
                                                       "/metrics"]})
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _read_only(self):
                self._json(405, {"error": "read-only endpoint"})

            def do_POST(self):  # noqa: N802
                if not self._web("POST"):
                    self._read_only()

            def do_DELETE(self):  # noqa: N802
                if not self._web("DELETE"):
                    self._read_only()

            do_PUT = do_PATCH = _read_only  # noqa: N815

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        t = threading.Thread(target=self.server.serve_forever, name="iot-http", daemon=True)
        t.start()
        return self.server.server_address[1]

    def history(self, mac: str) -> list:
        if not self.inventory_path:
            return []
        from controller_app.inventory import InventoryError, device_history
        try:
            return device_history(self.inventory_path, mac)
        except InventoryError:
            return []

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
