"""A loopback RDAP server for tests: answers ``/bootstrap/ip/<address>`` and ``/bootstrap/entity/<handle>``
like an RDAP bootstrap service, or misbehaves on purpose (slow, malformed JSON, HTTP 429 or 500).

Only 127.0.0.1 is ever bound. Every request is logged; the highest number of requests served
at once is kept (to check that clients bound their concurrency).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BEHAVIOURS = ("ok", "slow", "malformed", "429", "500")


def network_response(cidr: str, name: str, *, country: str = "", port43: str = "whois.arin.net",
                     registrant: str | None = None, origin_as: int | None = None, handle: str | None = None) -> dict:
    """A minimal RDAP network object (RFC 9083 sec. 5.4) for a CIDR, as registries serve them."""
    net = ipaddress.ip_network(cidr, strict=False)
    obj = {
        "objectClassName": "ip network",
        "rdapConformance": ["rdap_level_0"],
        "handle": handle or f"NET-{str(net.network_address).replace('.', '-').replace(':', '-')}-1",
        "startAddress": str(net.network_address),
        "endAddress": str(net.broadcast_address),
        "ipVersion": f"v{net.version}",
        "name": name,
        "type": "DIRECT ALLOCATION",
        "port43": port43,
        "links": [{"rel": "self", "value": f"https://rdap.example/ip/{net.network_address}",
                   "href": f"https://rdap.example/ip/{net.network_address}"}],
        "events": [{"eventAction": "registration", "eventDate": "2000-01-01T00:00:00Z"}],
    }
    if country:
        obj["country"] = country
    if registrant:
        obj["entities"] = [{
            "objectClassName": "entity", "handle": f"{name}-ORG", "roles": ["registrant"],
            "vcardArray": ["vcard", [["version", {}, "text", "4.0"], ["fn", {}, "text", registrant],
                                     ["kind", {}, "text", "org"]]],
        }]
    if origin_as is not None:
        obj["arin_originas0_originautnums"] = [origin_as]
    return obj


class RdapServer:
    """``with RdapServer(responses) as srv: ... srv.url ...`` (responses: address text -> RDAP JSON)."""

    def __init__(self, responses: dict[str, dict] | None = None, entities: dict[str, dict] | None = None,
                 behaviour: str = "ok", delay: float = 1.0):
        self.responses = dict(responses or {})
        self.entities = dict(entities or {})
        self.behaviour = behaviour
        self.delay = delay
        self.requests: list[str] = []
        self.max_concurrent = 0
        self._active = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                with server._lock:
                    server.requests.append(self.path)
                    server._active += 1
                    server.max_concurrent = max(server.max_concurrent, server._active)
                try:
                    server._answer(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with server._lock:
                        server._active -= 1

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/bootstrap"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def _send(self, h, code: int, body: bytes, ctype: str = "application/rdap+json", extra: dict | None = None):
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def _answer(self, h) -> None:
        behaviour = self.behaviour
        if behaviour == "slow":
            self._closing.wait(self.delay)
        elif behaviour == "429":
            return self._send(h, 429, b'{"errorCode": 429, "title": "Too Many Requests"}', extra={"Retry-After": "1"})
        elif behaviour == "500":
            return self._send(h, 500, b'{"errorCode": 500}')
        elif behaviour == "malformed":
            return self._send(h, 200, b'{"handle": "NET-1", "startAddress": "8.8.8.0", "ipVer')
        path = h.path.split("?")[0]
        prefix = "/bootstrap/"
        if not path.startswith(prefix):
            return self._send(h, 404, b'{"errorCode": 404}')
        kind, _, key = path[len(prefix):].partition("/")
        table = self.responses if kind == "ip" else self.entities if kind == "entity" else {}
        if key in table:
            return self._send(h, 200, json.dumps(table[key]).encode())
        return self._send(h, 404, json.dumps({"errorCode": 404, "title": f"{key} not found"}).encode())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()


class BlackHole:
    """A loopback TCP server that accepts connections and never answers: to a client, a server
    behind a network that swallows its replies (each request waits for its time-out).
    ``with BlackHole() as bh: ... bh.url ... bh.connections ...``"""

    def __init__(self):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.05)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/bootstrap"
        self.connections = 0
        self._held: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            self._held.append(conn)          # never read from, never written to, never closed until the end

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(2)
        for c in self._held:
            c.close()
        self._sock.close()


def closed_port_url() -> str:
    """A loopback URL where nothing listens (the server is down)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/bootstrap"


def wait_for(predicate, timeout: float = 5.0, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
