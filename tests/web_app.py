"""The real app (``ryu-manager controller_app``, the fake engine) with the operator page, driven
by a fake switch: the page tests' and the dashboard test's set-up."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from testing.fakeswitch import FakeSwitch, packet_in
from testing.synth import arp_request, dhcp_request, dns_query, ether, udp4
from controller_app.intents import CookieKind, Table, cookie

ROOT = Path(__file__).resolve().parent.parent
A, B, C, GW = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c", "02:00:00:00:00:01"
PORTS = {A: 1, B: 2, C: 3, GW: 4}
IPS = {A: "192.168.1.10", B: "192.168.1.11", C: "192.168.1.12", GW: "192.168.1.1"}
POLICY = """# test site policy: cameras blocked, plugs limited
version: 1
enforce_on: confirmed
min_confidence: 0.5
default: allow
unknown: {rate_limit_kbps: 512}
categories:
  camera: block          # never let a camera out
  plug: {rate_limit_kbps: 77}
overrides: {}
# the end
"""
MODEL = {A: ["camera", 0.95, "confirmed"], B: ["plug", 0.7, "provisional"], "min_packets": 3}
#: issue 20's site (WebApp.populate_named): A a camera, C unknown, B still learning
NAMED_MODEL = {A: ["camera", 0.95, "confirmed"], C: ["unknown", 0.3, "unknown"], "min_packets": 3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def named_site(tmp: Path, extra=()):
    """The app with issue 20's site populated (:meth:`WebApp.populate_named`; no identity probes,
    so that an unknown answer is final at once); stopped on exit."""
    app = WebApp(tmp, model=NAMED_MODEL, extra=("--identity-probes", "0", *extra))
    try:
        app.populate_named()
        yield app
    finally:
        app.stop()


class WebApp:
    def __init__(self, tmp: Path, pins: bool = True, policy: str = POLICY, extra=(), model: dict | None = None):
        self.tmp = Path(tmp)
        self.of_port, self.http_port = free_port(), free_port()
        self.policy = self.tmp / "policy.yaml"
        self.policy.write_text(policy)
        model_table = model
        model = self.tmp / "model.json"
        model.write_text(json.dumps(MODEL if model_table is None else model_table))
        self.token = secrets.token_urlsafe(24)
        self.tokens = self.tmp / "tokens"
        self.tokens.write_text(f"# operators\nalice:{self.token}\n")
        os.chmod(self.tokens, 0o600)
        self.inventory = self.tmp / "inventory.sqlite"
        self.log = self.tmp / f"app-{self.of_port}.log"
        env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}")
        cmd = [sys.executable, "-m", "controller_app.manager", "controller_app",
               "--ofp-tcp-listen-port", str(self.of_port), "--ofp-listen-host", "127.0.0.1",
               "--engine", "fake_engine:make", "--model", str(model), "--policy-file", str(self.policy),
               "--inventory-db", str(self.inventory), "--http-port", str(self.http_port),
               "--decide-interval", "0.2", "--decide-min-packets", "3", "--tick-interval", "0.2",
               "--policy-watch-interval", "0.3", "--lldp-interval", "60", "--gateway-macs", GW,
               "--traffic-interval", "0.5", "--web-token-file", str(self.tokens),
               *(("--web-pins",) if pins else ()), *extra]
        self.fh = open(self.log, "w")
        self._cmd, self._env = cmd, env
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.fh, stderr=subprocess.STDOUT, env=env)
        self.sw: FakeSwitch | None = None
        self.t_start = time.monotonic()
        self.wait(lambda: self.request("GET", "/status")[0] == 200, 60, "the controller's HTTP endpoint")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def request(self, method: str, path: str, body=None, headers: dict | None = None, raw: bytes | None = None):
        """(status, JSON or text) of a request; connection errors give (0, message)."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        h = dict(headers or {})
        if body is not None and "Content-Type" not in h:
            h["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                status, text = r.status, r.read()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read()
        except OSError as exc:
            return 0, str(exc)
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text.decode(errors="replace")

    def auth(self, token: str | None = None) -> dict:
        return {"Authorization": f"Bearer {token or self.token}"}

    def wait(self, pred, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v:
                return v
            if self.proc.poll() is not None:
                raise AssertionError(f"waiting for {what}: the controller exited: {self.log.read_text()[-800:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"waiting for {what}: not within {timeout:g} s")
            time.sleep(0.1)

    def devices(self) -> dict:
        st, rows = self.request("GET", "/devices")
        return {d["mac"]: d for d in rows} if st == 200 else {}

    # ---------------------------------------------------------------- the fake switch

    def connect(self, dpid: int = 0xABCD) -> FakeSwitch:
        self.sw = FakeSwitch("127.0.0.1", self.of_port, dpid=dpid, ports=[1, 2, 3, 4])
        t0 = time.monotonic()

        def stats(req):     # the devices' forwarding counters grow with time
            el = time.monotonic() - t0
            out = []
            for mac, rate in ((A, 1000.0), (B, 4000.0), (C, 250.0)):
                m = int(mac.replace(":", ""), 16)
                ck = cookie(CookieKind.HOST, m)
                out.append((int(Table.ETH_SRC), ck, int(el * rate / 100), int(el * rate), el))
                out.append((int(Table.ETH_DST), ck, int(el * rate / 50), int(el * rate * 2), el))
            return out
        self.sw.flow_stats = stats
        self.sw.wait_for(lambda r: any(m.type == 14 for m in r))
        return self.sw

    def learn(self, mac: str) -> None:
        frame = arp_request(mac, IPS[mac], "192.168.1.1" if mac != GW else "192.168.1.10")
        self.sw.send(packet_in(frame, PORTS[mac], cookie(CookieKind.LEARN), int(Table.ETH_SRC), len(frame)))

    def mirror(self, mac: str, n: int) -> None:
        m = int(mac.replace(":", ""), 16)
        for i in range(n):
            frame = ether(mac, GW, 0x0800, udp4(IPS[mac], "52.1.2.3", 40000 + i, 443, bytes(300)))
            self.sw.send(packet_in(frame[:128], PORTS[mac], cookie(CookieKind.MIRROR, m), int(Table.MIRROR),
                                   len(frame)))

    def announce(self, mac: str, hostname: str, domain: str | None = None) -> None:
        """What a device says about itself, as its identity entries copy it (whole): a DHCP request
        naming ``hostname`` and, from its address, a DNS query for ``domain``."""
        m = int(mac.replace(":", ""), 16)
        frames = [dhcp_request(mac, hostname)]
        if domain:
            frames.append(ether(mac, GW, 0x0800, udp4(IPS[mac], IPS[GW], 53000, 53, dns_query(domain, 7))))
        for frame in frames:
            self.sw.send(packet_in(frame, PORTS[mac], cookie(CookieKind.MIRROR, m), int(Table.MIRROR), len(frame)))

    def populate_named(self) -> dict:
        """Issue 20's site: A (named 'porch-cam-01') decided, C (named 'Roomba-3F8A') decided as
        the model table says, B still learning, the gateway; returns /devices."""
        self.connect()
        for mac in (GW, A, B, C):
            self.learn(mac)
        self.wait(lambda: len(self.devices()) == 4 and all(self.devices()[m]["mirroring"] for m in (A, B, C)), 20,
                  "four devices, three mirrored")
        self.announce(A, "porch-cam-01", "cloud.example.com")
        self.announce(C, "Roomba-3F8A", "disc-prod.iot.irobotapi.com")
        self.mirror(A, 5)
        self.mirror(C, 5)
        self.mirror(B, 1)
        return self.wait(lambda: (lambda d: d if d[A]["stage"] == "confirmed" and d[C]["stage"] == "unknown"
                                  and d[C]["names"] else None)(self.devices()), 20, "A confirmed, C unknown and named")

    def populate(self) -> dict:
        """A decided camera (A), a provisional plug (B), a device still learning (C) and the
        gateway; returns /devices once A and B are decided."""
        self.connect()
        for mac in (GW, A, B, C):
            self.learn(mac)
        self.wait(lambda: len(self.devices()) == 4, 20, "four devices learned")
        self.wait(lambda: all(self.devices()[m]["mirroring"] for m in (A, B, C)), 20, "mirroring")
        self.mirror(A, 5)
        self.mirror(B, 5)
        self.mirror(C, 1)
        return self.wait(lambda: (lambda d: d if d[A]["stage"] == "confirmed" and d[B]["stage"] == "provisional"
                                  else None)(self.devices()), 20, "the decisions of A and B")

    def halt(self) -> int:
        """Stop the controller (SIGTERM) but keep its ports, inventory and log, to :meth:`resume`."""
        if self.sw is not None:
            self.sw.close()
            self.sw = None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)

    def resume(self) -> None:
        """Start the controller again on the same ports (as a restart does)."""
        self.proc = subprocess.Popen(self._cmd, cwd=ROOT, stdout=self.fh, stderr=subprocess.STDOUT, env=self._env)
        self.wait(lambda: self.request("GET", "/status")[0] == 200, 60, "the controller's HTTP endpoint again")

    def stop(self) -> int:
        if self.sw is not None:
            self.sw.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self.fh.close()

    def text(self) -> str:
        return self.log.read_text()
