"""Flow intents: what the core wants a switch to do, as plain immutable values.

The pure core (:mod:`controller_app.core`) turns events into lists of these; the os-ken shell
turns them into OpenFlow 1.3 messages (:mod:`controller_app.ofp`); the tests apply them to a
fake flow table (:mod:`testing.fakeflowtable`) and ask what happens to a packet.

Besides flow and meter changes there are three requests that are not OpenFlow at all:
:class:`DecideRequest` (classify this device's mirrored packets, off the event loop) and
:class:`ResolvePools` (which prefixes make up these IP pools for this device; may do RDAP
look-ups, so also off the event loop), which the shell runs in a worker thread and whose answers
it feeds back to the core as events; and :class:`LoadIdentity` (the device's identity values
the inventory holds), which the shell answers at once (one indexed SQLite read).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Union

# The pipeline's names (tables, cookies) live in controller_app.pipeline; re-exported here.
from controller_app.pipeline import (FULL_MASK, KIND_MASK, KIND_SHIFT, MAC_MASK, CookieKind, Table,  # noqa: F401
                                     cookie, cookie_kind, cookie_mac)

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

# OpenFlow 1.3 reserved values (the same numbers in every framework's ofproto_v1_3).
OFPP_IN_PORT = 0xFFFFFFF8
OFPP_LOCAL = 0xFFFFFFFE
OFPP_CONTROLLER = 0xFFFFFFFD
OFPP_MAX = 0xFFFFFF00
OFPCML_NO_BUFFER = 0xFFFF
OFPTT_ALL = 0xFF
OFPM_ALL = 0xFFFFFFFF
ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_IPV6 = 0x86DD
ETH_TYPE_ARP = 0x0806
ETH_TYPE_LLDP = 0x88CC


@dataclass(frozen=True, slots=True)
class Match:
    """The fields a flow matches on (None = wildcard). IP prefixes imply their eth_type; UDP
    (TCP) ports need ``ip_proto`` 17 (6) and an IP ``eth_type`` (OpenFlow's prerequisites)."""

    in_port: int | None = None
    eth_src: int | None = None
    eth_dst: int | None = None
    eth_type: int | None = None
    ip_src: IPNetwork | None = None
    ip_dst: IPNetwork | None = None
    metadata: tuple | None = None   #: (value, mask): the pipeline's metadata register under mask
    ip_proto: int | None = None
    udp_src: int | None = None
    udp_dst: int | None = None
    tcp_src: int | None = None
    tcp_dst: int | None = None

    def __post_init__(self):
        for net in (self.ip_src, self.ip_dst):
            if net is not None:
                want = ETH_TYPE_IPV4 if net.version == 4 else ETH_TYPE_IPV6
                if self.eth_type != want:
                    raise ValueError(f"an IPv{net.version} prefix needs eth_type 0x{want:04x}, got {self.eth_type}")
        if self.ip_proto is not None and self.eth_type not in (ETH_TYPE_IPV4, ETH_TYPE_IPV6):
            raise ValueError(f"ip_proto needs an IP eth_type, got {self.eth_type}")
        if (self.udp_src is not None or self.udp_dst is not None) and self.ip_proto != 17:
            raise ValueError(f"a UDP port needs ip_proto 17, got {self.ip_proto}")
        if (self.tcp_src is not None or self.tcp_dst is not None) and self.ip_proto != 6:
            raise ValueError(f"a TCP port needs ip_proto 6, got {self.ip_proto}")

    def fields(self) -> dict:
        return {k: getattr(self, k) for k in ("in_port", "eth_src", "eth_dst", "eth_type", "ip_src", "ip_dst",
                                              "metadata", "ip_proto", "udp_src", "udp_dst",
                                              "tcp_src", "tcp_dst")
                if getattr(self, k) is not None}


# ------------------------------------------------------------------ actions


@dataclass(frozen=True, slots=True)
class Output:
    port: int
    max_len: int = OFPCML_NO_BUFFER   #: bytes of the packet a CONTROLLER output copies


@dataclass(frozen=True, slots=True)
class SetQueue:
    queue_id: int


@dataclass(frozen=True, slots=True)
class SetDscp:
    dscp: int


Action = Union[Output, SetQueue, SetDscp]

# ------------------------------------------------------------------ switch intents


@dataclass(frozen=True, slots=True)
class FlowAdd:
    """Add (or replace: same table, priority and match) one flow entry.

    Instructions run in OpenFlow order: ``meter``, then ``actions`` (apply-actions, at once),
    then ``write_metadata`` ((value, mask) into the metadata register), then ``goto``; without
    ``goto`` the pipeline ends there.
    """

    dpid: int
    table: int
    priority: int
    match: Match
    actions: tuple = ()
    goto: int | None = None
    meter: int | None = None
    cookie: int = 0
    idle_timeout: int = 0
    hard_timeout: int = 0
    notify_removed: bool = False
    write_metadata: tuple | None = None

    @property
    def key(self) -> tuple:
        return (self.dpid, self.table, self.priority, self.match)


@dataclass(frozen=True, slots=True)
class FlowDelete:
    """Delete flow entries. With ``priority`` set: exactly the entry (table, priority, match)
    (strict); otherwise every entry of ``table`` (or all tables) whose match includes
    ``match``'s fields and whose cookie equals ``cookie`` under ``cookie_mask``."""

    dpid: int
    table: int = OFPTT_ALL
    match: Match = field(default_factory=Match)
    priority: int | None = None
    cookie: int = 0
    cookie_mask: int = 0


@dataclass(frozen=True, slots=True)
class MeterAdd:
    """Add (``modify=False``) or change a meter with one drop band."""

    dpid: int
    meter_id: int
    rate: int
    burst: int
    unit: str = "kbps"   #: "kbps" or "pktps"
    modify: bool = False


@dataclass(frozen=True, slots=True)
class MeterDelete:
    dpid: int
    meter_id: int = OFPM_ALL


@dataclass(frozen=True, slots=True)
class PacketOut:
    dpid: int
    data: bytes
    port: int
    in_port: int = OFPP_CONTROLLER


SwitchIntent = Union[FlowAdd, FlowDelete, MeterAdd, MeterDelete, PacketOut]

# ------------------------------------------------------------------ requests to the shell


@dataclass(frozen=True, slots=True)
class DecideRequest:
    """Classify ``mac`` from ``packets`` (its mirrored packets so far), off the event loop;
    ``identity``: what the device said about itself in them (its identity records)."""

    mac: int
    packets: object   # classifier.capture.packets.Packets
    now_ns: int
    identity: object = None   # classifier.features.identity.IdentityRecords
    #: the device's sessions over ``packets`` (classifier.features.sessions.Sessions), kept from
    #: request to request by the learner; None: the engine builds them
    sessions: object = None


@dataclass(frozen=True, slots=True)
class PrepareWindow:
    """A segment of ``mac`` has just completed, so its next decision reads a new segment window:
    have the engine vote on that window now, off the event loop and ahead of the decision
    (``engine.prepare``), so the decision finds the vote ready. Optional work: if it cannot be
    queued, the decision computes the vote itself."""

    mac: int
    packets: object   # classifier.capture.packets.Packets
    now_ns: int


@dataclass(frozen=True, slots=True)
class ResolvePools:
    """Find the prefixes of these pool names for ``mac``, off the event loop."""

    mac: int
    pools: tuple


@dataclass(frozen=True, slots=True)
class LoadIdentity:
    """Give the core back ``mac``'s identity values from the inventory (``Core.identity_loaded``),
    before anything else: the device is about to be read for new ones."""

    mac: int


Intent = Union[SwitchIntent, DecideRequest, PrepareWindow, ResolvePools, LoadIdentity]


def is_switch_intent(intent) -> bool:
    return isinstance(intent, (FlowAdd, FlowDelete, MeterAdd, MeterDelete, PacketOut))
