"""Test harness for the controller core: the core, a fake network of fake flow tables, and a
fake classification engine, run synchronously (decisions and pool look-ups answered at once)."""

from __future__ import annotations

from classifier.engine.decision import CONFIRMED, PROVISIONAL, UNKNOWN, Decision
from classifier.capture.packets import Packets, mac_to_int
from testing.synth import arp_request, ether, tcp4, udp4
from controller_app.core import Core, PacketInBatch, Settings
from testing.fakeflowtable import FakeNetwork
from controller_app.intents import DecideRequest, LoadIdentity, ResolvePools

SEC = 1_000_000_000

A, B, C, D = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c", "02:00:00:00:00:0d"
GW = "02:00:00:00:00:01"
IP = {A: "192.168.1.10", B: "192.168.1.11", C: "192.168.1.12", D: "192.168.1.13", GW: "192.168.1.1"}


def m(text: str) -> int:
    return mac_to_int(text)


class FakeEngine:
    """Decides by MAC from a table: mac -> (category, confidence, stage[, vouching]), once a
    device has at least ``min_packets`` mirrored packets; records every call (and the identity
    records of each in ``identities``)."""

    version = "fake-engine-1"

    def __init__(self, table: dict | None = None, min_packets: int = 1):
        self.table = {m(k) if isinstance(k, str) else k: v for k, v in (table or {}).items()}
        self.min_packets = min_packets
        self.calls: list = []
        self.identities: list = []

    def decide(self, pk: Packets, mac: int, now_ns: int | None = None, identity=None) -> Decision | None:
        self.calls.append((mac, len(pk), now_ns))
        self.identities.append(identity)
        if mac not in self.table or len(pk) < self.min_packets:
            return None
        cat, conf, stage, *vouching = self.table[mac]
        return Decision(cat, conf, stage, self.version, f"fake: {cat}", {"packets": len(pk)},
                        vouching=tuple(vouching[0]) if vouching else ())


def _takes_identity(engine) -> bool:
    """Whether the engine's ``decide`` takes ``identity=`` (as the shell asks it)."""
    import inspect
    return "identity" in inspect.signature(engine.decide).parameters


class Harness:
    """The core, a fake network, a fake engine and, for the identity values the core asks back
    (``LoadIdentity``), ``inventory``: an object with ``identity_of(mac)`` (an
    :class:`~controller_app.inventory.Inventory`, say), or None (nothing stored)."""

    def __init__(self, policy=None, settings: Settings | None = None, engine: FakeEngine | None = None,
                 resolver=None, inventory=None):
        self.core = Core(settings or Settings(), policy)
        self.net = FakeNetwork()
        self.engine = engine or FakeEngine()
        self.resolver = resolver or (lambda name, mac: [])
        self.inventory = inventory
        self.now = 1000.0
        self.log: list = []

    @property
    def ns(self) -> int:
        return int(self.now * SEC)

    def run(self, intents) -> None:
        todo = list(intents)
        while todo:
            batch, todo = todo, []
            self.log += batch
            pins = self.net.apply(batch, self.now)
            for req in batch:
                if isinstance(req, LoadIdentity) and self.inventory is not None:
                    self.core.identity_loaded(req.mac, self.inventory.identity_of(req.mac), self.ns)
                elif isinstance(req, DecideRequest):
                    kw = {"identity": req.identity} if _takes_identity(self.engine) else {}
                    d = self.engine.decide(req.packets, req.mac, req.now_ns, **kw)
                    todo += self.core.decision_made(req.mac, d, self.ns)
                elif isinstance(req, ResolvePools):
                    todo += self.core.pools_resolved(req.mac, {p: self.resolver(p, req.mac) for p in req.pools},
                                                     self.ns)
            if pins:
                todo += self.core.packet_ins(PacketInBatch.from_rows(pins), self.ns)

    def connect(self, dpid: int, ports) -> None:
        if dpid not in self.net.switches:
            self.net.add_switch(dpid)
        self.run(self.core.switch_up(dpid, list(ports), self.ns))

    def disconnect(self, dpid: int) -> None:
        self.run(self.core.switch_down(dpid, self.ns))

    def send(self, dpid: int, port: int, frame: bytes):
        d = self.net.inject(dpid, port, frame, self.now)
        if d.packet_ins:
            self.run(self.core.packet_ins(PacketInBatch.from_rows(d.packet_ins), self.ns))
        return d

    def tick(self, seconds: float = 1.0) -> None:
        self.now += seconds
        self.run(self.core.timer(self.ns))

    def sw(self, dpid: int):
        return self.net.switches[dpid]


def udp(src: str, dst: str, dst_ip: str | None = None, size: int = 100, src_ip: str | None = None,
        sport: int = 40000, dport: int = 5000) -> bytes:
    return ether(src, dst, 0x0800, udp4(src_ip or IP.get(src, "192.168.1.99"), dst_ip or IP.get(dst, "192.168.1.98"),
                                         sport, dport, bytes(size)))


def tcp(src: str, dst: str, dst_ip: str, size: int = 0, src_ip: str | None = None) -> bytes:
    return ether(src, dst, 0x0800, tcp4(src_ip or IP[src], dst_ip, 40000, 443, 0x18, bytes(size)))


def arp(src: str) -> bytes:
    return arp_request(src, IP[src], "192.168.1.1")


__all__ = ["A", "B", "C", "D", "GW", "IP", "SEC", "FakeEngine", "Harness", "arp", "m", "tcp", "udp",
           "CONFIRMED", "PROVISIONAL", "UNKNOWN"]
