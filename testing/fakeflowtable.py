"""A fake OpenFlow 1.3 switch that applies flow intents and answers "what happens to this
packet" — and a fake network of them — so the core is tested without any switch.

It follows the OpenFlow 1.3 semantics the pipeline relies on and is strict where a real
switch would answer with an error or behave undefinedly:

* a table lookup takes the highest-priority matching entry; two matching entries of the same
  priority with different instructions raise :class:`AmbiguousMatch`;
* instructions run in spec order: meter (a drop band drops the packet here — outputs already
  made by earlier tables stand), apply-actions in list order (an output to the packet's own
  in_port is not made), write-metadata, goto (only to a later table);
* a flow naming a meter that does not exist, adding a meter twice, setting DSCP without an IP
  ``eth_type`` in the match are errors (:class:`SwitchError`), as on a real switch;
* deleting a meter deletes the flows that use it (OpenFlow 1.3, 6.6);
* ``FlowDelete`` is strict (priority given) or non-strict (every entry at least as specific),
  with cookie masks.

Meters are token buckets driven by the ``now`` (seconds) passed to :meth:`process`.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

from controller_app.intents import (ETH_TYPE_IPV4, ETH_TYPE_IPV6, OFPM_ALL, OFPP_CONTROLLER, OFPTT_ALL, FlowAdd, FlowDelete,
                      Match, MeterAdd, MeterDelete, Output, PacketOut, SetDscp, SetQueue, is_switch_intent)
from controller_app.pipeline import N_TABLES


class SwitchError(Exception):
    """What a real switch would refuse with an OpenFlow error."""


class AmbiguousMatch(SwitchError):
    pass


@dataclass
class Pkt:
    """The header fields the pipeline matches on, parsed from a frame."""

    eth_dst: int
    eth_src: int
    eth_type: int
    ip_src: object = None
    ip_dst: object = None
    dscp: int | None = None
    metadata: int = 0          #: the pipeline's metadata register (0 when the packet enters)
    ip_proto: int | None = None
    udp_src: int | None = None
    udp_dst: int | None = None
    tcp_src: int | None = None
    tcp_dst: int | None = None

    @classmethod
    def parse(cls, frame: bytes) -> "Pkt":
        if len(frame) < 14:
            raise ValueError("frame shorter than an Ethernet header")
        dst = int.from_bytes(frame[0:6], "big")
        src = int.from_bytes(frame[6:12], "big")
        (et,) = struct.unpack_from("!H", frame, 12)
        p = cls(dst, src, et)
        l4 = None
        if et == ETH_TYPE_IPV4 and len(frame) >= 34:
            p.dscp = frame[15] >> 2
            p.ip_proto = frame[23]
            p.ip_src = ipaddress.IPv4Address(frame[26:30])
            p.ip_dst = ipaddress.IPv4Address(frame[30:34])
            if struct.unpack_from("!H", frame, 20)[0] & 0x1FFF == 0:   # not a later fragment
                l4 = 14 + (frame[14] & 0x0F) * 4
        elif et == ETH_TYPE_IPV6 and len(frame) >= 54:
            p.dscp = ((frame[14] & 0x0F) << 2) | (frame[15] >> 6)
            p.ip_proto = frame[20]           # the next header (no extension headers followed)
            p.ip_src = ipaddress.IPv6Address(frame[22:38])
            p.ip_dst = ipaddress.IPv6Address(frame[38:54])
            l4 = 54
        if p.ip_proto == 17 and l4 is not None and len(frame) >= l4 + 4:
            p.udp_src, p.udp_dst = struct.unpack_from("!HH", frame, l4)
        elif p.ip_proto == 6 and l4 is not None and len(frame) >= l4 + 4:
            p.tcp_src, p.tcp_dst = struct.unpack_from("!HH", frame, l4)
        return p


def match_applies(m: Match, pkt: Pkt, in_port: int) -> bool:
    if m.in_port is not None and m.in_port != in_port:
        return False
    if m.eth_src is not None and m.eth_src != pkt.eth_src:
        return False
    if m.eth_dst is not None and m.eth_dst != pkt.eth_dst:
        return False
    if m.eth_type is not None and m.eth_type != pkt.eth_type:
        return False
    if m.ip_src is not None and (pkt.ip_src is None or pkt.ip_src.version != m.ip_src.version
                                 or pkt.ip_src not in m.ip_src):
        return False
    if m.ip_dst is not None and (pkt.ip_dst is None or pkt.ip_dst.version != m.ip_dst.version
                                 or pkt.ip_dst not in m.ip_dst):
        return False
    if m.metadata is not None and (pkt.metadata & m.metadata[1]) != m.metadata[0]:
        return False
    for name in ("ip_proto", "udp_src", "udp_dst", "tcp_src", "tcp_dst"):
        if getattr(m, name) is not None and getattr(m, name) != getattr(pkt, name):
            return False
    return True


def _at_least_as_specific(entry: Match, pattern: Match) -> bool:
    """Non-strict delete: the entry matches every field the pattern sets (prefixes nested)."""
    for name in ("in_port", "eth_src", "eth_dst", "eth_type", "metadata", "ip_proto", "udp_src", "udp_dst",
                 "tcp_src", "tcp_dst"):
        v = getattr(pattern, name)
        if v is not None and getattr(entry, name) != v:
            return False
    for name in ("ip_src", "ip_dst"):
        v = getattr(pattern, name)
        if v is not None:
            e = getattr(entry, name)
            if e is None or e.version != v.version or not e.subnet_of(v):
                return False
    return True


@dataclass
class Result:
    """What one switch did with one packet."""

    outputs: list = field(default_factory=list)      #: (port, queue or None, dscp or None)
    to_controller: list = field(default_factory=list)  #: (table, cookie, data, total_len)
    trace: list = field(default_factory=list)        #: (table, priority, cookie) of each entry hit
    meter_drop: int | None = None                    #: the meter that dropped the packet

    @property
    def ports(self) -> list:
        return [o[0] for o in self.outputs]


class _Bucket:
    def __init__(self, m: MeterAdd):
        self.spec = m
        self.tokens = float(m.burst)
        self.t = None

    def take(self, length: int, now: float) -> bool:
        m = self.spec
        if self.t is not None and now > self.t:
            self.tokens = min(float(m.burst), self.tokens + (now - self.t) * m.rate)
        self.t = now if self.t is None else max(self.t, now)
        cost = 1.0 if m.unit == "pktps" else length * 8 / 1000.0
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class FakeFlowTable:
    """One switch: its tables of entries and its meters."""

    def __init__(self, dpid: int, n_tables: int = N_TABLES):
        self.dpid = dpid
        self.n_tables = n_tables
        self.tables: list[dict] = [dict() for _ in range(n_tables)]   # (priority, match) -> FlowAdd
        self.meters: dict[int, _Bucket] = {}
        self.packet_outs: list[PacketOut] = []

    # ---------------------------------------------------------------- applying intents

    def apply(self, intents) -> None:
        for i in intents:
            if is_switch_intent(i) and i.dpid == self.dpid:
                self.apply_one(i)

    def apply_one(self, i) -> None:
        if isinstance(i, FlowAdd):
            self._flow_add(i)
        elif isinstance(i, FlowDelete):
            self._flow_delete(i)
        elif isinstance(i, MeterAdd):
            if i.unit not in ("kbps", "pktps") or i.rate <= 0:
                raise SwitchError(f"bad meter band {i}")
            if i.modify:
                if i.meter_id not in self.meters:
                    raise SwitchError(f"meter {i.meter_id}: modify of an unknown meter")
            elif i.meter_id in self.meters:
                raise SwitchError(f"meter {i.meter_id}: already exists")
            self.meters[i.meter_id] = _Bucket(i)
        elif isinstance(i, MeterDelete):
            ids = list(self.meters) if i.meter_id == OFPM_ALL else [i.meter_id]
            for mid in ids:
                self.meters.pop(mid, None)
                for t in self.tables:
                    for k in [k for k, f in t.items() if f.meter == mid]:
                        del t[k]
        elif isinstance(i, PacketOut):
            self.packet_outs.append(i)

    def _flow_add(self, f: FlowAdd) -> None:
        if not 0 <= f.table < self.n_tables:
            raise SwitchError(f"table {f.table} does not exist")
        if f.goto is not None and not f.table < f.goto < self.n_tables:
            raise SwitchError(f"goto {f.goto} from table {f.table}: must go forward to an existing table")
        if f.meter is not None and f.meter not in self.meters:
            raise SwitchError(f"flow {f.match} uses unknown meter {f.meter}")
        for md in (f.match.metadata, f.write_metadata):
            if md is not None and (len(md) != 2 or md[0] & ~md[1]):
                raise SwitchError(f"metadata {md}: expected (value, mask) with the value inside the mask")
        for a in f.actions:
            if isinstance(a, SetDscp) and f.match.eth_type not in (ETH_TYPE_IPV4, ETH_TYPE_IPV6):
                raise SwitchError(f"set_field ip_dscp needs an IP eth_type in the match: {f.match}")
            if not isinstance(a, (Output, SetQueue, SetDscp)):
                raise SwitchError(f"unknown action {a!r}")
        self.tables[f.table][(f.priority, f.match)] = f

    def _flow_delete(self, d: FlowDelete) -> None:
        tables = range(self.n_tables) if d.table == OFPTT_ALL else [d.table]
        for t in tables:
            tab = self.tables[t]
            for k, f in list(tab.items()):
                if (f.cookie & d.cookie_mask) != (d.cookie & d.cookie_mask):
                    continue
                if d.priority is not None:
                    if k == (d.priority, d.match):
                        del tab[k]
                elif _at_least_as_specific(f.match, d.match):
                    del tab[k]

    # ---------------------------------------------------------------- packets

    def entries(self, table: int | None = None) -> list[FlowAdd]:
        tabs = self.tables if table is None else [self.tables[table]]
        return [f for t in tabs for f in t.values()]

    def lookup(self, table: int, pkt: Pkt, in_port: int) -> FlowAdd | None:
        best = None
        for f in self.tables[table].values():
            if not match_applies(f.match, pkt, in_port):
                continue
            if best is None or f.priority > best.priority:
                best = f
            elif f.priority == best.priority and (f.actions, f.goto, f.meter) != (best.actions, best.goto, best.meter):
                raise AmbiguousMatch(f"table {table}: {best.match} and {f.match} both match at priority {f.priority}")
        return best

    def process(self, frame: bytes, in_port: int, now: float = 0.0) -> Result:
        pkt = Pkt.parse(frame)
        res = Result()
        queue = None
        table = 0
        while True:
            f = self.lookup(table, pkt, in_port)
            if f is None:
                return res          # table-miss without an entry: drop
            res.trace.append((table, f.priority, f.cookie))
            if f.meter is not None and not self.meters[f.meter].take(len(frame), now):
                res.meter_drop = f.meter
                return res
            for a in f.actions:
                if isinstance(a, SetQueue):
                    queue = a.queue_id
                elif isinstance(a, SetDscp):
                    pkt.dscp = a.dscp
                elif isinstance(a, Output):
                    if a.port == OFPP_CONTROLLER:
                        res.to_controller.append((table, f.cookie, frame[:a.max_len], len(frame)))
                    elif a.port != in_port:
                        res.outputs.append((a.port, queue, pkt.dscp))
            if f.write_metadata is not None:
                value, mask = f.write_metadata
                pkt.metadata = (pkt.metadata & ~mask) | value
            if f.goto is None:
                return res
            table = f.goto


@dataclass
class Delivery:
    received: list = field(default_factory=list)     #: (dpid, port) of the host ports the packet reached
    packet_ins: list = field(default_factory=list)   #: (dpid, in_port, cookie, total_len, ts_ns, data)
    results: list = field(default_factory=list)      #: (dpid, in_port, Result) per switch visited


class FakeNetwork:
    """Switches joined by links; frames sent from a port travel until they leave at host
    ports, and every copy to the controller becomes a packet-in row for the core."""

    def __init__(self):
        self.switches: dict[int, FakeFlowTable] = {}
        self.links: dict[tuple, tuple] = {}

    def add_switch(self, dpid: int) -> FakeFlowTable:
        sw = self.switches[dpid] = FakeFlowTable(dpid)
        return sw

    def link(self, a: tuple, b: tuple) -> None:
        self.links[a] = b
        self.links[b] = a

    def unlink(self, a: tuple) -> None:
        b = self.links.pop(a, None)
        if b is not None:
            self.links.pop(b, None)

    def apply(self, intents, now: float = 0.0) -> list:
        """Apply switch intents; packet-outs are sent at once. Returns the packet-in rows."""
        pins = []
        for i in intents:
            if not is_switch_intent(i) or i.dpid not in self.switches:
                continue
            if isinstance(i, PacketOut):
                peer = self.links.get((i.dpid, i.port))
                if peer is not None:
                    pins += self.inject(peer[0], peer[1], i.data, now).packet_ins
            else:
                self.switches[i.dpid].apply_one(i)
        return pins

    def inject(self, dpid: int, port: int, frame: bytes, now: float = 0.0, max_hops: int = 64) -> Delivery:
        d = Delivery()
        work = [(dpid, port, 0)]
        while work:
            dp, inp, hops = work.pop(0)
            if hops > max_hops:
                raise SwitchError("forwarding loop: more than %d hops" % max_hops)
            sw = self.switches.get(dp)
            if sw is None:
                continue
            r = sw.process(frame, inp, now)
            d.results.append((dp, inp, r))
            for table, ck, data, total in r.to_controller:
                d.packet_ins.append((dp, inp, ck, total, int(now * 1e9), data))
            for p in r.ports:
                peer = self.links.get((dp, p))
                if peer is not None:
                    work.append((peer[0], peer[1], hops + 1))
                else:
                    d.received.append((dp, p))
        return d
