"""The core's one shared state object and its records (devices, switches, packet-in batches).

Every manager of the core (:mod:`controller_app.core`) reads and writes the same
:class:`State`; none keeps state of its own elsewhere. Nothing here touches a socket, a thread
or a clock: times are passed in (nanoseconds).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import networkx as nx
import numpy as np

from classifier.capture.packets import mac_to_str

from controller_app.intents import FlowAdd, FlowDelete, MeterAdd, MeterDelete
from controller_app.learning import Learner
from controller_app.pipeline import mirror_meter_id, rate_meter_id
from controller_app.policy import Policy

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
        return mirror_meter_id(self.slot)

    @property
    def rate_meter(self) -> int:
        return rate_meter_id(self.slot)

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
        self.learner = Learner(self.settings.max_buffer_packets)
        self.counters: Counter = Counter()
        self.gateways = set(int(g) for g in self.settings.gateways)
        # topology, derived from switches and links (TopologyManager)
        self.graph = nx.Graph()
        self.tree_ports: dict[int, set] = {}
        self.paths: dict[int, dict] = {}        # edge dpid -> {dpid: port toward the edge}
        self.next_lldp_ns = 0
        # mirroring (MirrorManager)
        self.mirror_index = None                # (sorted macs, their dpids) of mirrored devices
        self.time_origin_ns = None              # t0 of the classifier's time scale (first mirrored packet)

    def new_device(self, mac: int, now_ns: int) -> Device:
        dev = Device(mac, len(self.devices), now_ns)
        dev.gateway = mac in self.gateways
        self.devices[mac] = dev
        if not dev.gateway and not self.pinned(mac):
            dev.mirroring = True
        return dev

    def pinned(self, mac: int) -> bool:
        return mac in self.policy.overrides

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
