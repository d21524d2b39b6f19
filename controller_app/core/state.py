"""The core's one shared state object and its records (devices, switches, packet-in batches).

Every manager of the core (:mod:`controller_app.core`) reads and writes the same
:class:`State`; none keeps state of its own elsewhere. Nothing here touches a socket, a thread
or a clock: times are passed in (nanoseconds).
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass

import networkx as nx
import numpy as np

from classifier.capture.packets import mac_to_str
from classifier.engine.decision import CONFIRMED, UNKNOWN

from controller_app.intents import FlowAdd, FlowDelete, MeterAdd, MeterDelete
from controller_app.learning import Learner
from controller_app.pipeline import identity_meter_id, mirror_meter_id, rate_meter_id
from controller_app.policy import Policy

SEC = 1_000_000_000


@dataclass
class Settings:
    """The core's knobs (the shell fills them from flags and the config file)."""

    mirror_max_len: int = 128          #: bytes of each mirrored packet sent to the controller
    mirror_rate_pps: int = 200         #: mirror meter: packets/s per learning device
    mirror_burst: int = 200            #: mirror meter burst (packets)
    identity_rate_pps: int = 20        #: identity meter: packets/s per learning device of DHCP/DNS/mDNS/SSDP, whole
    identity_burst: int = 50           #: identity meter burst (packets)
    learn_max_len: int = 128           #: bytes of each L2-learning copy
    l2_idle_timeout: int = 300         #: seconds a learned (in_port, eth_src) entry lives unused
    decide_interval: float = 30.0      #: seconds between decision requests for one device
    decide_min_packets: int = 10       #: packets a device needs before the first request
    recheck_interval: float = 6 * 3600.0   #: seconds from a confirmed decision to the next re-check
    recheck_window: float = 900.0      #: seconds a re-check mirrors before giving up
    unknown_recheck_interval: float = 300.0  #: seconds from an unknown decision to its re-examination
    lldp_interval: float = 5.0         #: seconds between topology probes
    link_timeout: float = 16.0         #: seconds without a probe before a link is gone
    max_buffer_packets: int = 50_000   #: mirrored packets kept per learning device (over it, the oldest eighth goes)
    max_identity_values: int = 1000    #: distinct identity values (kind, value) kept per learning device
    identity_probes: int = 3           #: mDNS queries sent to a learning device that has not announced itself (0: none)
    identity_probe_interval: float = 20.0  #: seconds between them (the first one second after mirroring starts)
    identity_probes_per_tick: int = 64 #: devices probed at most per timer tick (the others at the next)
    time_scale: float = 1.0            #: replays: the classifier sees t0 + (t - t0) * time_scale
    # bounds (see docs/controller.md, "Bounded learning"): at a cap new MACs are forwarded, not learned
    max_hosts_per_port: int = 256      #: devices learned on one switch port (Faucet's max_hosts)
    max_hosts_per_switch: int = 2048   #: devices learned on one switch
    max_mirrored: int = 990            #: devices mirrored at once (two meters and twelve entries each)
    learn_ban_timeout: float = 30.0    #: seconds a port (switch) at its cap stops copying unknown sources
    learn_rate_pps: int = 500          #: per switch: unknown sources' copies to the controller/s (0: no meter)
    learn_burst: int = 500             #: that meter's burst (packets)
    host_timeout: float = 600.0        #: seconds unseen before a device gives its switch resources back
    max_pending_decisions: int = 256   #: decision requests outstanding at once
    decide_timeout: float = 300.0      #: seconds after which an unanswered decision request is asked again
    #: the engine's segment window: it moves each ``prepare_every`` seconds of a device's traffic
    #: once the device has ``prepare_from`` complete segments; at the first tick after it moves the
    #: engine is asked to vote on the new window ahead of the next decision (0: never)
    prepare_every: float = 0.0
    prepare_from: int = 0
    cap_log_interval: float = 60.0     #: seconds between log lines about caps and expired devices
    gateways: tuple = ()               #: MACs (int) of routers: forwarded, never classified


class Device:
    """Compact per-device state (no buffers, no strings of its own: categories, stages and
    model names are interned)."""

    __slots__ = ("mac", "slot", "dpid", "port", "attached", "located", "gateway", "first_ns", "last_ns",
                 "category", "confidence", "stage", "model", "claims_only", "enforced",
                 "mirroring", "mirror_dpid", "watch_dpid", "mirror_since_ns", "policy_dpid", "policy_action",
                 "policy_pools",
                 "policy_lan", "meter_kbps", "next_check_ns", "recheck_until_ns", "last_decide_ns", "decide_retry",
                 "pools", "pools_pending", "thin_answers", "probes_sent", "next_probe_ns")

    def __init__(self, mac: int, slot: int | None, now_ns: int):
        self.mac = mac
        self.slot = slot          # meter ids; None while the device holds no switch resources (parked)
        self.dpid = None          # edge switch (last known), where policy and mirror rules live
        self.port = None
        self.attached = False     # counted at (dpid, port) for the caps; False: parked, holds nothing
        self.located = False      # an ETH_SRC entry is installed for (dpid, port)
        self.gateway = False
        self.first_ns = now_ns
        self.last_ns = now_ns
        self.category = None      # latest decision
        self.confidence = 0.0
        self.stage = None
        self.model = None
        self.claims_only = False  # the latest decision rests on the device's own claims alone (identity_alone)
        self.enforced = None      # (category, confidence, stage, claims_only) of the decision last enforced
        self.mirroring = False    # wanted: mirror this device
        self.mirror_dpid = None   # installed: mirror flows + meter on this switch
        self.watch_dpid = None    # installed: its identity entries alone (not mirrored: unknown, provisional)
        self.mirror_since_ns = None
        self.policy_dpid = None   # installed: policy flows on this switch ...
        self.policy_action = None  # ... for this action ...
        self.policy_pools = None  # ... with these resolved pool prefixes ...
        self.policy_lan = None    # ... and this LAN (a shared tuple of the policy)
        self.meter_kbps = None    # installed rate-limit meter rate
        self.next_check_ns = None
        self.recheck_until_ns = None
        self.last_decide_ns = None
        self.decide_retry = False  # a request that could not be queued: ask again without new packets
        self.pools = None         # pool name -> tuple of networks (only for devices that need it)
        self.pools_pending = False
        self.thin_answers = 0     # engine answers "not enough evidence yet" since the last decision
        self.probes_sent = 0      # identity probes sent since mirroring (re)started
        self.next_probe_ns = None  # when the next one is due (None: none wanted)

    @property
    def mirror_meter(self) -> int:
        return mirror_meter_id(self.slot)

    @property
    def rate_meter(self) -> int:
        return rate_meter_id(self.slot)

    @property
    def identity_meter(self) -> int:
        return identity_meter_id(self.slot)

    def to_record(self) -> dict:
        return {"mac": mac_to_str(self.mac), "dpid": self.dpid, "port": self.port,
                "first_seen_ns": self.first_ns, "last_seen_ns": self.last_ns,
                "category": self.category, "confidence": self.confidence, "stage": self.stage,
                "model": self.model, "claims_only": self.claims_only, "mirroring": self.mirroring,
                "identity_watch": self.watch_dpid is not None, "gateway": self.gateway,
                "enforced": self.policy_action.describe() if self.policy_action is not None else None,
                "thin_answers": self.thin_answers, "identity_probes": self.probes_sent, "parked": not self.attached}


class Switch:
    __slots__ = ("dpid", "ports", "flood", "no_flood", "link_ports_installed", "fwd", "link_ports")

    def __init__(self, dpid: int, ports):
        self.dpid = dpid
        self.ports = set(ports)
        self.flood: tuple | None = None       # output ports of the flood entry installed
        self.no_flood: set = set()            # link ports outside the tree with a no-flood entry
        self.link_ports_installed: set = set()
        self.fwd: dict = {}                   # mac -> output port installed in ETH_DST
        self.link_ports: set = set()          # ports with a link (from State.links)


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


def net_key(net):
    """Sort key of an IP network (IPv4 before IPv6, then address, then prefix length)."""
    return (net.version, int(net.network_address), net.prefixlen)


class State:
    """Everything the core knows, shared by its managers."""

    def __init__(self, settings: Settings | None = None, policy: Policy | None = None):
        self.settings = settings or Settings()
        self.policy = policy or Policy()
        self.switches: dict[int, Switch] = {}
        self.devices: dict[int, Device] = {}
        self.links: dict[tuple, tuple] = {}     # (dpid, port) -> (peer dpid, peer port, last seen ns)
        self.learner = Learner(self.settings.max_buffer_packets, self.settings.max_identity_values)
        self.counters: Counter = Counter()
        self.now_ns = 0                         # the time of the event being handled
        self.gateways = set(int(g) for g in self.settings.gateways)
        # topology, derived from switches and links (TopologyManager)
        self.graph = nx.Graph()
        self.tree_ports: dict[int, set] = {}
        self.paths: dict[int, dict] = {}        # edge dpid -> {dpid: port toward the edge}
        self.next_lldp_ns = 0
        # hosts (HostManager): who is attached where, for the caps; learning bans
        self.port_hosts: dict[tuple, set] = {}  # (dpid, port) -> MACs attached there
        self.switch_hosts: Counter = Counter()  # dpid -> devices attached
        self.bans: dict[tuple, int] = {}        # (dpid, port or None for the switch) -> ban ends (ns)
        self.forgotten: list[int] = []          # MACs forgotten since the shell last asked
        #: (mac, address, last seen ns) read from identity packets since the shell last asked
        #: (controller_app.names.harvest; at most names.MAX_PENDING)
        self.addresses: list = []
        # mirroring (MirrorManager)
        self.mirror_index = None                # (sorted macs, their dpids) of mirrored devices, of read ones
        self.time_origin_ns = None              # t0 of the classifier's time scale (first mirrored packet)
        self.mirrored: set = set()              # MACs with mirror entries installed (at most max_mirrored)
        self.mirror_wait: dict = {}             # MACs waiting for a mirror slot, in arrival order
        # decisions (DecisionManager)
        self.deciding: dict[int, tuple] = {}    # mac -> (request sent ns, last_decide_ns before it)
        self.reopened: set = set()              # MACs whose decision a new identity value re-opened, not asked yet
        self.pools_retry: set = set()           # MACs whose pool look-up could not be queued
        # slots: meter ids of devices holding switch resources
        self._slot_heap: list[int] = []        # heap: the lowest free slot first
        self._next_slot = 0
        # what the periodic log line reports (counts since the last one)
        self.tally: Counter = Counter()
        self.capped_at: set = set()             # (dpid, port or None) where learning was refused
        self.next_log_ns = 0
        self.last_log_ns = None

    def new_device(self, mac: int, now_ns: int, slot: bool = True) -> Device:
        dev = Device(mac, self.alloc_slot() if slot else None, now_ns)
        dev.gateway = mac in self.gateways
        self.devices[mac] = dev
        if not dev.gateway and not self.pinned(mac):
            dev.mirroring = True
        return dev

    def pinned(self, mac: int) -> bool:
        return mac in self.policy.overrides

    def keeps(self, dev: Device) -> bool:
        """Kept (parked) when absent, rather than forgotten: a final decision, an override, a gateway."""
        return dev.stage in (CONFIRMED, UNKNOWN) or dev.gateway or self.pinned(dev.mac)

    def edge(self, dev: Device) -> int | None:
        """The switch where the device's mirror and policy rules belong now (None: nowhere)."""
        return dev.dpid if dev.attached and dev.dpid in self.switches else None

    # ------------------------------------------------------------------ slots

    def alloc_slot(self) -> int:
        if self._slot_heap:
            return heapq.heappop(self._slot_heap)
        self._next_slot += 1
        return self._next_slot - 1

    def free_slot(self, dev: Device) -> None:
        if dev.slot is not None:
            heapq.heappush(self._slot_heap, dev.slot)
            dev.slot = None

    def slots_in_use(self) -> int:
        return self._next_slot - len(self._slot_heap)

    # ------------------------------------------------------------------ attachment (the caps count it)

    def attach(self, dev: Device, dpid: int, port: int) -> None:
        if dev.attached:
            self.detach(dev)
        dev.dpid, dev.port, dev.attached = dpid, port, True
        self.port_hosts.setdefault((dpid, port), set()).add(dev.mac)
        self.switch_hosts[dpid] += 1

    def detach(self, dev: Device) -> None:
        if not dev.attached:
            return
        key = (dev.dpid, dev.port)
        macs = self.port_hosts.get(key)
        if macs is not None:
            macs.discard(dev.mac)
            if not macs:
                del self.port_hosts[key]
        self.switch_hosts[dev.dpid] -= 1
        if self.switch_hosts[dev.dpid] <= 0:
            del self.switch_hosts[dev.dpid]
        dev.attached = False

    def count(self, intents: list) -> list:
        """Count the rule and meter changes in ``intents`` (returned unchanged)."""
        c = self.counters
        for i in intents:
            if isinstance(i, FlowAdd):
                c["rule_installs"] += 1
            elif isinstance(i, FlowDelete):
                c["rule_deletes"] += 1
            elif isinstance(i, (MeterAdd, MeterDelete)):
                c["meter_changes"] += 1
        return intents
