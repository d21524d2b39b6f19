"""The controller's pure core: events in, flow intents out.

Nothing here touches a socket, a thread, a clock or a framework: every handler takes the
event (and the current time) and returns a list of intents (:mod:`controller_app.intents`).
The os-ken shell turns those into OpenFlow messages; the tests apply them to a fake flow
table and ask what happens to packets.

The pipeline (OpenFlow 1.3, five tables; see :class:`~controller_app.intents.Table`)::

    0 POLICY_SRC  our LLDP probes -> controller; the sending device's policy
    1 POLICY_DST  the receiving device's policy
    2 ETH_SRC     known (in_port, eth_src) -> on; unknown -> truncated copy to the controller (learning)
    3 ETH_DST     known eth_dst -> its port; otherwise flood along the spanning tree
    4 MIRROR      learning devices: meter (packets/s) + truncated copy to the controller

Forwarding outputs happen in ETH_DST's apply-actions, *before* MIRROR: a mirror meter that
drops a copy cannot drop the forwarded packet (an OpenFlow 1.3 meter is an instruction on the
whole packet, so it must never sit on the forwarding path). A blocked device's packets skip
forwarding and go straight to MIRROR, so a device still being learned is seen even when blocked.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from dataclasses import dataclass

import networkx as nx
import numpy as np

from classifier.engine.decision import CONFIRMED, UNKNOWN, Decision
from classifier.capture.decode import decode_frames
from classifier.features.devices import is_unicast
from classifier.capture.packets import DecodeFlag, Packets, mac_to_str

from controller_app import lldp
from controller_app.intents import (ETH_TYPE_IPV4, ETH_TYPE_IPV6, FULL_MASK, OFPCML_NO_BUFFER, OFPM_ALL, OFPP_CONTROLLER,
                      OFPP_MAX, OFPTT_ALL, CookieKind, DecideRequest, FlowAdd, FlowDelete, Match, MeterAdd,
                      MeterDelete, Output, PacketOut, ResolvePools, SetDscp, SetQueue, Table, cookie)
from controller_app.learning import Learner
from controller_app.policy import Action, Policy

LOG = logging.getLogger("controller_app.core")

# priorities
PRIO_LLDP = 1000
PRIO_POOL_ALLOW = 300      # + prefix length: the longest prefix wins
PRIO_IP_DENY = 200
PRIO_IP_MARK = 150
PRIO_DEVICE = 100
PRIO_LINK_PORT = 200
PRIO_HOST = 100
PRIO_FLOOD = 10
PRIO_MIRROR_SRC = 100
PRIO_MIRROR_DST = 90
PRIO_MISS = 0

SEC = 1_000_000_000


@dataclass
class Settings:
    """The core's knobs (the shell fills them from flags and the config file)."""

    mirror_max_len: int = 128          #: bytes of each mirrored packet sent to the controller
    mirror_rate_pps: int = 200         #: mirror meter: packets/s per learning device
    mirror_burst: int = 200            #: mirror meter burst (packets)
    learn_max_len: int = 128           #: bytes of each L2-learning copy
    l2_idle_timeout: int = 300         #: seconds a learned (in_port, eth_src) entry lives unused
    decide_interval: float = 30.0      #: seconds between decision requests for one device
    decide_min_packets: int = 10       #: packets a device needs before the first request
    recheck_interval: float = 6 * 3600.0   #: seconds from a confirmed decision to the next re-check
    recheck_window: float = 900.0      #: seconds a re-check mirrors before giving up
    lldp_interval: float = 5.0         #: seconds between topology probes
    link_timeout: float = 16.0         #: seconds without a probe before a link is gone
    max_buffer_packets: int = 50_000   #: mirrored packets kept per learning device
    time_scale: float = 1.0            #: replays: the classifier sees t0 + (t - t0) * time_scale
    gateways: tuple = ()               #: MACs (int) of routers: forwarded, never classified


class Device:
    """Compact per-device state (no buffers, no strings of its own: categories, stages and
    model names are interned)."""

    __slots__ = ("mac", "slot", "dpid", "port", "located", "gateway", "first_ns", "last_ns",
                 "category", "confidence", "stage", "model", "enforced",
                 "mirroring", "mirror_dpid", "policy_dpid", "policy_action", "policy_pools", "policy_lan", "meter_kbps",
                 "next_check_ns", "recheck_until_ns", "last_decide_ns", "pools", "pools_pending",
                 "thin_answers")

    def __init__(self, mac: int, slot: int, now_ns: int):
        self.mac = mac
        self.slot = slot
        self.dpid = None          # edge switch (last known), where policy and mirror rules live
        self.port = None
        self.located = False      # an ETH_SRC entry is installed for (dpid, port)
        self.gateway = False
        self.first_ns = now_ns
        self.last_ns = now_ns
        self.category = None      # latest decision
        self.confidence = 0.0
        self.stage = None
        self.model = None
        self.enforced = None      # (category, confidence, stage) of the decision last enforced
        self.mirroring = False    # wanted: mirror this device
        self.mirror_dpid = None   # installed: mirror flows + meter on this switch
        self.policy_dpid = None   # installed: policy flows on this switch ...
        self.policy_action = None  # ... for this action ...
        self.policy_pools = None  # ... with these resolved pool prefixes ...
        self.policy_lan = None    # ... and this LAN (a shared tuple of the policy)
        self.meter_kbps = None    # installed rate-limit meter rate
        self.next_check_ns = None
        self.recheck_until_ns = None
        self.last_decide_ns = None
        self.pools = None         # pool name -> tuple of networks (only for devices that need it)
        self.pools_pending = False
        self.thin_answers = 0     # engine answers "not enough evidence yet" since the last decision

    @property
    def mirror_meter(self) -> int:
        return 1 + 2 * self.slot

    @property
    def rate_meter(self) -> int:
        return 2 + 2 * self.slot

    def to_record(self) -> dict:
        return {"mac": mac_to_str(self.mac), "dpid": self.dpid, "port": self.port,
                "first_seen_ns": self.first_ns, "last_seen_ns": self.last_ns,
                "category": self.category, "confidence": self.confidence, "stage": self.stage,
                "model": self.model, "mirroring": self.mirroring, "gateway": self.gateway,
                "enforced": self.policy_action.describe() if self.policy_action is not None else None,
                "thin_answers": self.thin_answers}


class Switch:
    __slots__ = ("dpid", "ports", "flood", "link_ports_installed", "fwd")

    def __init__(self, dpid: int, ports):
        self.dpid = dpid
        self.ports = set(ports)
        self.flood: dict = {}                 # in_port -> tuple of output ports installed
        self.link_ports_installed: set = set()
        self.fwd: dict = {}                   # mac -> output port installed in ETH_DST


@dataclass
class PacketInBatch:
    """Packet-ins as columns: what the shell's handler appends, decoded together."""

    dpid: np.ndarray
    in_port: np.ndarray
    cookie: np.ndarray
    total_len: np.ndarray
    ts_ns: np.ndarray
    datas: list

    @classmethod
    def from_rows(cls, rows) -> "PacketInBatch":
        """``rows``: (dpid, in_port, cookie, total_len, ts_ns, data) tuples."""
        n = len(rows)
        if n == 0:
            z = np.zeros(0, np.uint64)
            return cls(z, z.astype(np.uint32), z, z.astype(np.uint32), z.astype(np.int64), [])
        dp, ip, ck, tl, ts, data = zip(*rows)
        return cls(np.fromiter(dp, np.uint64, n), np.fromiter(ip, np.uint32, n), np.fromiter(ck, np.uint64, n),
                   np.fromiter(tl, np.uint32, n), np.fromiter(ts, np.int64, n), list(data))

    def __len__(self) -> int:
        return len(self.datas)


def _net_key(net):
    return (net.version, int(net.network_address), net.prefixlen)


def policy_flows(dpid: int, mac: int, action: Action, lan, pool_prefixes, rate_meter: int) -> list[FlowAdd]:
    """The flow entries that enforce ``action`` for device ``mac`` (both directions)."""
    c = cookie(CookieKind.POLICY, mac)
    out: list[FlowAdd] = []
    meter = rate_meter if action.rate_limit_kbps else None
    pre = (SetQueue(action.queue),) if action.queue is not None else ()
    ip_actions = pre + ((SetDscp(action.dscp),) if action.dscp is not None else ())
    nets = None
    if action.allow_pools is not None:
        nets = sorted({*lan, *pool_prefixes, *action.prefixes()}, key=_net_key)
    for table, mac_field, ip_field, nxt in ((Table.POLICY_SRC, "eth_src", "ip_dst", Table.POLICY_DST),
                                            (Table.POLICY_DST, "eth_dst", "ip_src", Table.ETH_SRC)):
        base = {mac_field: mac}
        if action.block:
            out.append(FlowAdd(dpid, table, PRIO_DEVICE, Match(**base), goto=Table.MIRROR, cookie=c))
            continue
        if nets is not None:
            for net in nets:
                et = ETH_TYPE_IPV4 if net.version == 4 else ETH_TYPE_IPV6
                out.append(FlowAdd(dpid, table, PRIO_POOL_ALLOW + net.prefixlen,
                                   Match(**base, eth_type=et, **{ip_field: net}),
                                   actions=ip_actions, goto=nxt, meter=meter, cookie=c))
            for et in (ETH_TYPE_IPV4, ETH_TYPE_IPV6):
                out.append(FlowAdd(dpid, table, PRIO_IP_DENY, Match(**base, eth_type=et), goto=Table.MIRROR,
                                   cookie=c))
        elif action.dscp is not None:
            for et in (ETH_TYPE_IPV4, ETH_TYPE_IPV6):
                out.append(FlowAdd(dpid, table, PRIO_IP_MARK, Match(**base, eth_type=et), actions=ip_actions,
                                   goto=nxt, meter=meter, cookie=c))
        out.append(FlowAdd(dpid, table, PRIO_DEVICE, Match(**base), actions=pre, goto=nxt, meter=meter, cookie=c))
    return out


def mirror_flows(dpid: int, mac: int, meter: int, max_len: int) -> list[FlowAdd]:
    c = cookie(CookieKind.MIRROR, mac)
    act = (Output(OFPP_CONTROLLER, max_len),)
    return [FlowAdd(dpid, Table.MIRROR, PRIO_MIRROR_SRC, Match(eth_src=mac), actions=act, meter=meter, cookie=c),
            FlowAdd(dpid, Table.MIRROR, PRIO_MIRROR_DST, Match(eth_dst=mac), actions=act, meter=meter, cookie=c)]


class Core:
    """The controller's state and event handlers (see the module docstring)."""

    def __init__(self, settings: Settings | None = None, policy: Policy | None = None):
        self.settings = settings or Settings()
        self.policy = policy or Policy()
        self.switches: dict[int, Switch] = {}
        self.devices: dict[int, Device] = {}
        self.links: dict[tuple, tuple] = {}     # (dpid, port) -> (peer dpid, peer port, last seen ns)
        self.learner = Learner(self.settings.max_buffer_packets)
        self.counters: Counter = Counter()
        self._free_slots: list[int] = []
        self._gateways = set(int(g) for g in self.settings.gateways)
        self._graph = nx.Graph()
        self._tree_ports: dict[int, set] = {}
        self._paths: dict[int, dict] = {}       # edge dpid -> {dpid: port toward the edge}
        self._mirror_index = None               # (sorted macs, their dpids) of mirrored devices
        self._next_lldp_ns = 0
        self._time_origin_ns = None             # t0 of the classifier's time scale (first mirrored packet)

    # ------------------------------------------------------------------ helpers

    def _new_device(self, mac: int, now_ns: int) -> Device:
        slot = self._free_slots.pop() if self._free_slots else len(self.devices)
        dev = Device(mac, slot, now_ns)
        dev.gateway = mac in self._gateways
        self.devices[mac] = dev
        if not dev.gateway and not self._pinned(mac):
            dev.mirroring = True
        return dev

    def _pinned(self, mac: int) -> bool:
        return mac in self.policy.overrides

    def _count(self, intents: list) -> list:
        for i in intents:
            if isinstance(i, FlowAdd):
                self.counters["rule_installs"] += 1
            elif isinstance(i, FlowDelete):
                self.counters["rule_deletes"] += 1
            elif isinstance(i, (MeterAdd, MeterDelete)):
                self.counters["meter_changes"] += 1
        return intents

    def classifier_time(self, ts_ns):
        """Controller time -> the time the classifier is given (packet timestamps, "now").

        With ``time_scale`` K != 1 (replays whose time was compressed K times), ``t0 + (t - t0) * K``
        with t0 the first mirrored packet's arrival: segments, session idle timeouts and
        intervals are then measured in the replayed capture's own time. Every other clock of
        the controller (decision interval, re-checks, LLDP, idle timeouts) stays real time."""
        k = self.settings.time_scale
        t0 = self._time_origin_ns
        if k == 1.0 or t0 is None:
            return ts_ns
        if isinstance(ts_ns, np.ndarray):
            return t0 + np.rint((ts_ns - t0).astype(np.float64) * k).astype(np.int64)
        return t0 + int(round((int(ts_ns) - t0) * k))

    def _controller_time(self, ts_ns: int) -> int:
        """The inverse of :meth:`classifier_time` (for a buffer's last packet time)."""
        k = self.settings.time_scale
        t0 = self._time_origin_ns
        if k == 1.0 or t0 is None:
            return ts_ns
        return t0 + int(round((int(ts_ns) - t0) / k))

    def link_ports(self, dpid: int) -> set:
        return {p for (d, p) in self.links if d == dpid}

    # ------------------------------------------------------------------ switches

    def switch_up(self, dpid: int, ports, now_ns: int) -> list:
        """A switch connected (or reconnected): clean slate, defaults, then every rule it should hold."""
        down = self.switch_down(dpid, now_ns) if dpid in self.switches else []
        out: list = []
        ports = {int(p) for p in ports if int(p) < OFPP_MAX or int(p) == 0xFFFFFFFE}
        self.switches[dpid] = Switch(dpid, ports)
        out.append(FlowDelete(dpid, OFPTT_ALL))
        out.append(MeterDelete(dpid, OFPM_ALL))
        out += self._defaults(dpid)
        self._topology_changed()
        out += self._sync_switching()
        for dev in self.devices.values():
            if dev.dpid == dpid:
                out += self._sync_device(dev)
        out += self._probes(dpid, sorted(ports))
        return down + self._count(out)

    def _defaults(self, dpid: int) -> list:
        s = self.settings
        d = cookie(CookieKind.DEFAULT)
        return [
            FlowAdd(dpid, Table.POLICY_SRC, PRIO_LLDP, Match(eth_src=lldp.PROBE_SRC, eth_type=lldp.ETH_TYPE_LLDP),
                    actions=(Output(OFPP_CONTROLLER, OFPCML_NO_BUFFER),), cookie=cookie(CookieKind.LLDP)),
            FlowAdd(dpid, Table.POLICY_SRC, PRIO_MISS, Match(), goto=Table.POLICY_DST, cookie=d),
            FlowAdd(dpid, Table.POLICY_DST, PRIO_MISS, Match(), goto=Table.ETH_SRC, cookie=d),
            FlowAdd(dpid, Table.ETH_SRC, PRIO_MISS, Match(), actions=(Output(OFPP_CONTROLLER, s.learn_max_len),),
                    goto=Table.ETH_DST, cookie=cookie(CookieKind.LEARN)),
            FlowAdd(dpid, Table.ETH_DST, PRIO_MISS, Match(), goto=Table.MIRROR, cookie=d),
            FlowAdd(dpid, Table.MIRROR, PRIO_MISS, Match(), cookie=d),
        ]

    def switch_down(self, dpid: int, now_ns: int) -> list:
        """A switch disconnected: forget what it held; its devices keep their state and get
        their rules back when it reconnects."""
        sw = self.switches.pop(dpid, None)
        if sw is None:
            return []
        for key in [k for k, v in self.links.items() if k[0] == dpid or v[0] == dpid]:
            del self.links[key]
        for dev in self.devices.values():
            if dev.mirror_dpid == dpid:
                dev.mirror_dpid = None
            if dev.policy_dpid == dpid:
                dev.policy_dpid = dev.policy_action = dev.policy_pools = dev.meter_kbps = None
            if dev.dpid == dpid:
                dev.located = False
        self._mirror_index = None
        self._topology_changed()
        return self._count(self._sync_switching())

    def port_changed(self, dpid: int, port: int, up: bool, now_ns: int) -> list:
        sw = self.switches.get(dpid)
        if sw is None or port >= OFPP_MAX:
            return []
        out: list = []
        if up:
            if port in sw.ports:
                return []
            sw.ports.add(port)
            out += self._probes(dpid, [port])
        else:
            if port not in sw.ports:
                return []
            sw.ports.discard(port)
            for key in [k for k, v in self.links.items() if k == (dpid, port) or v[:2] == (dpid, port)]:
                del self.links[key]
            for dev in self.devices.values():
                if dev.located and dev.dpid == dpid and dev.port == port:
                    out += self._unlocate(dev)
        self._topology_changed()
        out += self._sync_switching()
        return self._count(out)

    # ------------------------------------------------------------------ topology and forwarding

    def _probes(self, dpid: int, ports) -> list:
        return [PacketOut(dpid, lldp.probe_frame(dpid, p), p) for p in ports]

    def _topology_changed(self) -> None:
        g = nx.Graph()
        g.add_nodes_from(sorted(self.switches))
        for (d1, p1), (d2, p2, _) in sorted(self.links.items()):
            if d1 in self.switches and d2 in self.switches and d1 < d2 and not g.has_edge(d1, d2):
                g.add_edge(d1, d2, ports={d1: p1, d2: p2})
        self._graph = g
        tree = nx.minimum_spanning_tree(g)
        self._tree_ports = {d: set() for d in self.switches}
        for a, b in tree.edges():
            ports = g.edges[a, b]["ports"]
            self._tree_ports[a].add(ports[a])
            self._tree_ports[b].add(ports[b])
        self._paths = {}

    def _ports_toward(self, edge: int) -> dict:
        res = self._paths.get(edge)
        if res is None:
            res = {}
            if edge in self._graph:
                for s, path in nx.single_source_shortest_path(self._graph, edge).items():
                    if s != edge:
                        res[s] = self._graph.edges[s, path[-2]]["ports"][s]
            self._paths[edge] = res
        return res

    def _sync_switching(self) -> list:
        """Flooding, link-port and per-host forwarding entries on every switch, as a diff."""
        out: list = []
        for dpid, sw in self.switches.items():
            lp = self.link_ports(dpid)
            tree = self._tree_ports.get(dpid, set())
            flood_ports = sorted((sw.ports - lp) | (tree & sw.ports))
            want = {}
            for p in sw.ports:
                want[p] = () if (p in lp and p not in tree) else tuple(q for q in flood_ports if q != p)
            fc = cookie(CookieKind.FLOOD)
            for p, outs in want.items():
                if sw.flood.get(p) != outs:
                    out.append(FlowAdd(dpid, Table.ETH_DST, PRIO_FLOOD, Match(in_port=p),
                                       actions=tuple(Output(q) for q in outs), goto=Table.MIRROR, cookie=fc))
            for p in set(sw.flood) - set(want):
                out.append(FlowDelete(dpid, Table.ETH_DST, Match(in_port=p), priority=PRIO_FLOOD))
            sw.flood = want
            lc = cookie(CookieKind.LEARN)
            for p in sorted(lp - sw.link_ports_installed):
                out.append(FlowAdd(dpid, Table.ETH_SRC, PRIO_LINK_PORT, Match(in_port=p), goto=Table.ETH_DST,
                                   cookie=lc))
            for p in sorted(sw.link_ports_installed - lp):
                out.append(FlowDelete(dpid, Table.ETH_SRC, Match(in_port=p), priority=PRIO_LINK_PORT))
            sw.link_ports_installed = set(lp)
        for dev in self.devices.values():
            if dev.located and (dev.dpid not in self.switches or dev.port in self.link_ports(dev.dpid)):
                out += self._unlocate(dev)
        for dev in list(self.devices.values()):
            out += self._sync_forwarding(dev)
        return out

    def _sync_forwarding(self, dev: Device) -> list:
        want: dict = {}
        if dev.located and dev.dpid in self.switches:
            want[dev.dpid] = dev.port
            for s, port in self._ports_toward(dev.dpid).items():
                if s in self.switches:
                    want[s] = port
        out: list = []
        c = cookie(CookieKind.HOST, dev.mac)
        for dpid, sw in self.switches.items():
            have = sw.fwd.get(dev.mac)
            port = want.get(dpid)
            if port == have:
                continue
            if port is None:
                out.append(FlowDelete(dpid, Table.ETH_DST, Match(eth_dst=dev.mac), priority=PRIO_HOST))
                del sw.fwd[dev.mac]
            else:
                out.append(FlowAdd(dpid, Table.ETH_DST, PRIO_HOST, Match(eth_dst=dev.mac), actions=(Output(port),),
                                   goto=Table.MIRROR, cookie=c))
                sw.fwd[dev.mac] = port
        return out

    def _unlocate(self, dev: Device) -> list:
        out = []
        if dev.located and dev.dpid in self.switches:
            out.append(FlowDelete(dev.dpid, Table.ETH_SRC, Match(in_port=dev.port, eth_src=dev.mac),
                                  priority=PRIO_HOST))
        dev.located = False
        return out

    def _learn_host(self, mac: int, dpid: int, port: int, now_ns: int) -> list:
        sw = self.switches.get(dpid)
        if sw is None or port in self.link_ports(dpid):
            return []
        if port not in sw.ports:
            self.counters["packet_ins_unknown_port"] += 1   # a port the switch never reported: ignore
            return []
        dev = self.devices.get(mac)
        out: list = []
        if dev is None:
            dev = self._new_device(mac, now_ns)
            self.counters["devices_seen"] += 1
        elif dev.located and dev.dpid == dpid and dev.port == port:
            return []   # a copy that raced the flow entry
        elif dev.located:
            out += self._unlocate(dev)
        dev.dpid, dev.port, dev.located = dpid, port, True
        dev.last_ns = max(dev.last_ns, now_ns)
        out.append(FlowAdd(dpid, Table.ETH_SRC, PRIO_HOST, Match(in_port=port, eth_src=mac), goto=Table.ETH_DST,
                           cookie=cookie(CookieKind.HOST, mac), idle_timeout=self.settings.l2_idle_timeout,
                           notify_removed=True))
        out += self._sync_forwarding(dev)
        out += self._sync_device(dev)
        return out

    def flow_removed(self, dpid: int, table: int, cookie_value: int, in_port: int | None, eth_src: int | None,
                     now_ns: int) -> list:
        """An ETH_SRC host entry timed out: the host is gone from there; stop forwarding to it."""
        if (cookie_value >> 56) != CookieKind.HOST or table != Table.ETH_SRC or eth_src is None:
            return []
        dev = self.devices.get(eth_src)
        if dev is None or not dev.located or dev.dpid != dpid or dev.port != in_port:
            return []
        dev.located = False
        dev.last_ns = max(dev.last_ns, now_ns - self.settings.l2_idle_timeout * SEC)
        return self._count(self._sync_forwarding(dev))

    # ------------------------------------------------------------------ per-device rules

    def _desired_action(self, dev: Device) -> Action | None:
        if dev.gateway:
            return None
        ov = self.policy.overrides.get(dev.mac)
        if ov is not None:
            return ov.action if ov.action is not None else self.policy.action_for(ov.category)
        act = None
        if dev.stage is not None:
            act = self.policy.enforcement(dev.category, dev.confidence, dev.stage)
        if act is None and dev.enforced is not None:
            act = self.policy.enforcement(*dev.enforced)
        return act

    def _resolved_pools(self, dev: Device, action: Action) -> tuple[tuple, list]:
        names = action.pool_names()
        if not names:
            return (), []
        have = dev.pools or {}
        missing = tuple(sorted(n for n in names if n not in have))
        req = []
        if missing and not dev.pools_pending:
            dev.pools_pending = True
            req.append(ResolvePools(dev.mac, missing))
        nets = sorted({n for name in names for n in have.get(name, ())}, key=_net_key)
        return tuple(nets), req

    def _sync_device(self, dev: Device) -> list:
        """Bring a device's policy and mirror rules to what its state asks for (a diff)."""
        out: list = []
        target = dev.dpid if dev.dpid in self.switches else None
        # mirror
        want_mirror = target if dev.mirroring else None
        if dev.mirror_dpid != want_mirror:
            if dev.mirror_dpid is not None and dev.mirror_dpid in self.switches:
                out.append(FlowDelete(dev.mirror_dpid, Table.MIRROR, cookie=cookie(CookieKind.MIRROR, dev.mac),
                                      cookie_mask=FULL_MASK))
                out.append(MeterDelete(dev.mirror_dpid, dev.mirror_meter))
            if want_mirror is not None:
                s = self.settings
                out.append(MeterAdd(want_mirror, dev.mirror_meter, s.mirror_rate_pps, s.mirror_burst, "pktps"))
                out += mirror_flows(want_mirror, dev.mac, dev.mirror_meter, s.mirror_max_len)
            dev.mirror_dpid = want_mirror
            self._mirror_index = None
        # policy
        action = self._desired_action(dev) if target is not None else None
        pools: tuple = ()
        if action is not None:
            pools, req = self._resolved_pools(dev, action)
            out += req
        lan = self.policy.lan
        want = (target, action, pools, lan) if action is not None else (None, None, None, None)
        if (dev.policy_dpid, dev.policy_action, dev.policy_pools, dev.policy_lan) == want:
            return out
        new = policy_flows(target, dev.mac, action, lan, pools, dev.rate_meter) if action is not None else []
        new_rate = action.rate_limit_kbps if action is not None else None
        old: list = []
        if dev.policy_dpid is not None and dev.policy_dpid != want[0]:
            # moved, or nothing to enforce any more: remove everything from the old switch
            if dev.policy_dpid in self.switches:
                out.append(FlowDelete(dev.policy_dpid, OFPTT_ALL, cookie=cookie(CookieKind.POLICY, dev.mac),
                                      cookie_mask=FULL_MASK))
                if dev.meter_kbps is not None:
                    out.append(MeterDelete(dev.policy_dpid, dev.rate_meter))
            dev.meter_kbps = None
        elif dev.policy_action is not None:
            old = policy_flows(dev.policy_dpid, dev.mac, dev.policy_action, dev.policy_lan, dev.policy_pools,
                               dev.rate_meter)
        if new_rate is not None and dev.meter_kbps != new_rate:
            out.append(MeterAdd(target, dev.rate_meter, new_rate, max(new_rate, 64), "kbps",   # ~1 s of burst
                                modify=dev.meter_kbps is not None))
        old_by_key = {f.key: f for f in old}
        new_keys = {f.key for f in new}
        out += [f for f in new if old_by_key.get(f.key) != f]              # add the new entries first ...
        out += [FlowDelete(f.dpid, f.table, f.match, priority=f.priority)  # ... then remove stale ones
                for k, f in old_by_key.items() if k not in new_keys]
        if new_rate is None and dev.meter_kbps is not None:
            out.append(MeterDelete(target, dev.rate_meter))  # after the entries that used it
        dev.meter_kbps = new_rate
        dev.policy_dpid, dev.policy_action, dev.policy_pools, dev.policy_lan = want
        return out

    # ------------------------------------------------------------------ packet-ins

    def _mirror_lookup(self):
        if self._mirror_index is None:
            items = sorted((d.mac, d.mirror_dpid) for d in self.devices.values() if d.mirror_dpid is not None)
            macs = np.array([m for m, _ in items], dtype=np.uint64)
            dpids = np.array([p for _, p in items], dtype=np.uint64)
            self._mirror_index = (macs, dpids)
        return self._mirror_index

    def _mirrored_here(self, macs: np.ndarray, dpids: np.ndarray) -> np.ndarray:
        lm, ld = self._mirror_lookup()
        if len(lm) == 0:
            return np.zeros(len(macs), bool)
        idx = np.minimum(np.searchsorted(lm, macs), len(lm) - 1)
        return (lm[idx] == macs) & (ld[idx] == dpids)

    def packet_ins(self, batch: PacketInBatch, now_ns: int) -> list:
        """A batch of packet-ins: topology probes, L2 learning copies and mirrored packets,
        decoded together by the capture decoder. Malformed ones are counted and skipped."""
        n = len(batch)
        if n == 0:
            return []
        self.counters["packet_ins"] += n
        pk = decode_frames(batch.datas, batch.ts_ns, batch.total_len)
        kind = (batch.cookie >> np.uint64(56)).astype(np.uint8)
        bad = (pk.flags & np.uint8(DecodeFlag.L2_TRUNCATED)) != 0
        nbad = int(bad.sum())
        if nbad:
            self.counters["packet_ins_malformed"] += nbad
        ok = ~bad
        known_dp = np.isin(batch.dpid, np.fromiter(self.switches, np.uint64, len(self.switches)))
        if not known_dp.all():
            self.counters["packet_ins_unknown_switch"] += int((~known_dp & ok).sum())
            ok &= known_dp
        out: list = []
        is_lldp = ok & (kind == CookieKind.LLDP)
        is_learn = ok & (kind == CookieKind.LEARN)
        is_mirror = ok & (kind == CookieKind.MIRROR)
        other = ok & ~(is_lldp | is_learn | is_mirror)
        if other.any():
            self.counters["packet_ins_unexpected"] += int(other.sum())
        for i in np.flatnonzero(is_lldp).tolist():
            self.counters["packet_ins_lldp"] += 1
            out += self._lldp_in(int(batch.dpid[i]), int(batch.in_port[i]), batch.datas[i], now_ns)
        if is_learn.any():
            self.counters["packet_ins_learn"] += int(is_learn.sum())
            li = np.flatnonzero(is_learn & is_unicast(pk.eth_src))
            if len(li):
                keys = np.stack([batch.dpid[li], batch.in_port[li].astype(np.uint64), pk.eth_src[li]], axis=1)
                uniq, first = np.unique(keys, axis=0, return_index=True)
                for j in np.argsort(first).tolist():
                    dpid, port, mac = (int(v) for v in uniq[j])
                    out += self._learn_host(mac, dpid, port, int(batch.ts_ns[li[first[j]]]))
        if is_mirror.any():
            mi = np.flatnonzero(is_mirror)
            self.counters["packet_ins_mirror"] += len(mi)
            mp = pk.take(mi)
            if self._time_origin_ns is None:
                self._time_origin_ns = int(mp.ts_ns.min())
            mp.ts_ns = self.classifier_time(mp.ts_ns)
            dp = batch.dpid[mi]
            tx = self._mirrored_here(mp.eth_src, dp)
            rx = self._mirrored_here(mp.eth_dst, dp)
            filed = self.learner.add(mp, tx, rx)
            if filed == 0:
                self.counters["packet_ins_mirror_unowned"] += len(mi)
            for mac in np.unique(np.concatenate([mp.eth_src[tx], mp.eth_dst[rx]])).tolist():
                dev = self.devices.get(mac)
                if dev is not None:
                    dev.last_ns = max(dev.last_ns, self._controller_time(self.learner.buffers[mac].last_ns))
        return self._count(out)

    def _lldp_in(self, dpid: int, in_port: int, data: bytes, now_ns: int) -> list:
        probe = lldp.parse_probe(data)
        if probe is None:
            self.counters["lldp_foreign"] += 1
            return []
        src = probe
        if src[0] not in self.switches or src == (dpid, in_port):
            return []
        new = (dpid, in_port) not in self.links or self.links[(dpid, in_port)][:2] != src
        self.links[(dpid, in_port)] = (src[0], src[1], now_ns)
        self.links[src] = (dpid, in_port, now_ns)
        if not new:
            return []
        LOG.info("link %016x:%d <-> %016x:%d", src[0], src[1], dpid, in_port)
        self._topology_changed()
        return self._sync_switching()

    # ------------------------------------------------------------------ time

    def timer(self, now_ns: int) -> list:
        """Periodic work: topology probes and link expiry, decision requests, re-checks."""
        s = self.settings
        out: list = []
        if now_ns >= self._next_lldp_ns:
            first = self._next_lldp_ns == 0     # switches probed when they connected
            self._next_lldp_ns = now_ns + int(s.lldp_interval * SEC)
            stale = [k for k, v in self.links.items() if now_ns - v[2] > s.link_timeout * SEC]
            if stale:
                for k in stale:
                    self.links.pop(k, None)
                self._topology_changed()
                out += self._sync_switching()
            for dpid, sw in self.switches.items():
                if not first:
                    out += self._probes(dpid, sorted(sw.ports))
        for mac, buf in list(self.learner.buffers.items()):
            dev = self.devices.get(mac)
            if dev is None or not dev.mirroring:
                continue
            if buf.new == 0 or buf.n < s.decide_min_packets:
                continue
            if dev.last_decide_ns is not None and now_ns - dev.last_decide_ns < s.decide_interval * SEC:
                continue
            dev.last_decide_ns = now_ns
            buf.new = 0
            out.append(DecideRequest(mac, self.learner.packets(mac), self.classifier_time(now_ns)))
        for dev in self.devices.values():
            if dev.next_check_ns is not None and not dev.mirroring and now_ns >= dev.next_check_ns:
                dev.mirroring = True
                dev.next_check_ns = None
                dev.recheck_until_ns = now_ns + int(s.recheck_window * SEC)
                self.counters["rechecks"] += 1
                out += self._sync_device(dev)
            elif dev.recheck_until_ns is not None and dev.mirroring and now_ns >= dev.recheck_until_ns:
                out += self._stop_learning(dev, now_ns)
        return self._count(out)

    def _stop_learning(self, dev: Device, now_ns: int) -> list:
        dev.mirroring = False
        dev.recheck_until_ns = None
        dev.next_check_ns = now_ns + int(self.settings.recheck_interval * SEC)
        self.learner.drop(dev.mac)
        return self._sync_device(dev)

    # ------------------------------------------------------------------ decisions and policies

    def decision_made(self, mac: int, decision: Decision | None, now_ns: int) -> list:
        """The engine decided (``None``: not enough evidence yet)."""
        dev = self.devices.get(mac)
        if dev is None:
            return []
        if decision is None:
            dev.thin_answers += 1
            return []
        dev.thin_answers = 0
        self.counters["decisions"] += 1
        dev.category = decision.category
        dev.confidence = float(decision.confidence)
        dev.stage = decision.stage
        dev.model = decision.model
        if self.policy.enforcement(dev.category, dev.confidence, dev.stage) is not None:
            dev.enforced = (dev.category, dev.confidence, dev.stage)
        out: list = []
        if decision.stage in (CONFIRMED, UNKNOWN) and dev.mirroring:
            out += self._stop_learning(dev, now_ns)
        else:
            out += self._sync_device(dev)
        return self._count(out)

    def policy_reloaded(self, policy: Policy, now_ns: int) -> list:
        """Swap in a new (already validated) policy and move every device's rules to it."""
        old = self.policy
        self.policy = policy
        out: list = []
        for dev in self.devices.values():
            was_pinned = dev.mac in old.overrides
            pinned = dev.mac in policy.overrides
            if pinned and dev.mirroring:
                dev.mirroring = False
                self.learner.drop(dev.mac)
            elif was_pinned and not pinned and not dev.gateway and dev.stage not in (CONFIRMED, UNKNOWN):
                dev.mirroring = True
            if policy.pool_names() != old.pool_names():
                dev.pools_pending = False
            out += self._sync_device(dev)
        return self._count(out)

    def pools_resolved(self, mac: int, mapping: dict, now_ns: int) -> list:
        dev = self.devices.get(mac)
        if dev is None:
            return []
        dev.pools_pending = False
        pools = dict(dev.pools or {})
        for name, nets in mapping.items():
            pools[name] = tuple(sorted({ipaddress.ip_network(n, strict=False) for n in nets}, key=_net_key))
        dev.pools = pools
        return self._count(self._sync_device(dev))

    def switch_error(self, dpid: int, err_type: int, code: int, now_ns: int) -> list:
        self.counters["switch_errors"] += 1
        return []

    # ------------------------------------------------------------------ persistence and views

    def restore(self, records, now_ns: int) -> None:
        """Devices from the inventory (dicts with mac int, dpid, port, category, confidence,
        stage, model, first/last seen): final decisions are enforced as soon as their switch
        connects, and re-checked after ``recheck_interval``."""
        for r in records:
            mac = int(r["mac"])
            dev = self.devices.get(mac) or self._new_device(mac, int(r.get("first_seen_ns") or now_ns))
            dev.dpid = r.get("dpid")
            dev.port = r.get("port")
            dev.first_ns = int(r.get("first_seen_ns") or now_ns)
            dev.last_ns = int(r.get("last_seen_ns") or now_ns)
            if r.get("stage"):
                dev.category = r["category"]
                dev.confidence = float(r.get("confidence") or 0.0)
                dev.stage = r["stage"]
                dev.model = r.get("model")
                if self.policy.enforcement(dev.category, dev.confidence, dev.stage) is not None:
                    dev.enforced = (dev.category, dev.confidence, dev.stage)
                if dev.stage in (CONFIRMED, UNKNOWN):
                    dev.mirroring = False
                    dev.next_check_ns = now_ns + int(self.settings.recheck_interval * SEC)

    def snapshot(self) -> dict:
        by = Counter((d.category or "undecided", d.stage or "learning") for d in self.devices.values()
                     if not d.gateway)
        return {"switches": sorted(self.switches), "devices": len(self.devices),
                "learning": sum(1 for d in self.devices.values() if d.mirroring),
                "links": len(self.links) // 2, "by_category_stage": dict(by), "counters": dict(self.counters)}
