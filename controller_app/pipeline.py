"""The OpenFlow pipeline's names, in one place: tables, cookie kinds, priorities, meter ids.

Every manager of the core (:mod:`controller_app.core`), the shell, the benchmarks and the test
doubles take these from here (:mod:`controller_app.intents` re-exports the table and cookie
names for code that already imports them from there). Nothing here imports anything.

The pipeline (OpenFlow 1.3)::

    0 POLICY_SRC  our LLDP probes -> controller; the sending device's policy
    1 POLICY_DST  the receiving device's policy
    2 ETH_SRC     known (in_port, eth_src) -> on; unknown -> marked (metadata) for a copy, then on
    3 ETH_DST     known eth_dst -> its port; otherwise flood along the spanning tree
    4 LEARN       marked (unknown source): meter (packets/s per switch) + truncated copy to the controller
    5 MIRROR      learning devices: meter (packets/s per device) + truncated copy to the controller;
                  what they send of DHCP, DNS, mDNS and SSDP: their identity meter + the whole packet

Both copies to the controller come after ETH_DST's forwarding outputs: an OpenFlow 1.3 meter is
an instruction on the whole packet, so a meter on the forwarding path would drop forwarded
traffic; after it, a meter drops only the copy (and, for LEARN, the MIRROR copy of that packet).
"""

from __future__ import annotations

from enum import IntEnum


class Table(IntEnum):
    """The pipeline's tables, in the order a packet visits them."""

    POLICY_SRC = 0   #: policy of the sending device (match eth_src), LLDP probes to the controller
    POLICY_DST = 1   #: policy of the receiving device (match eth_dst)
    ETH_SRC = 2      #: L2 learning: known (in_port, eth_src) pass, unknown ones are marked for a copy
    ETH_DST = 3      #: L2 forwarding: known eth_dst -> its port, else flood along the spanning tree
    LEARN = 4        #: marked packets (unknown source): metered, truncated copy to the controller
    MIRROR = 5       #: learning devices: metered, truncated copy to the controller (identity protocols whole)


N_TABLES = len(Table)


class CookieKind(IntEnum):
    """The top byte of every flow's cookie says who installed it and why; per-device flows
    carry the device's MAC in the low 48 bits (so a packet-in names the flow that sent it)."""

    DEFAULT = 0x10   #: table defaults (goto next table, table-miss)
    LLDP = 0x11      #: topology probes to the controller
    LEARN = 0x12     #: unknown sources: the mark, the copy to the controller, link ports, learning bans
    HOST = 0x13      #: ETH_SRC/ETH_DST entries of one learned host (MAC in the low bits)
    FLOOD = 0x14     #: ETH_DST flooding
    POLICY = 0x15    #: a device's policy entries (MAC in the low bits)
    MIRROR = 0x16    #: a device's mirror entries (MAC in the low bits)


MAC_MASK = (1 << 48) - 1
KIND_SHIFT = 56
KIND_MASK = 0xFF << KIND_SHIFT
FULL_MASK = (1 << 64) - 1

#: metadata bit set by ETH_SRC's table-miss entry: "source unknown, copy me in LEARN"
META_UNKNOWN_SRC = 0x1


def cookie(kind: CookieKind, mac: int = 0) -> int:
    return (int(kind) << KIND_SHIFT) | (int(mac) & MAC_MASK)


def cookie_kind(value: int) -> int:
    return (int(value) >> KIND_SHIFT) & 0xFF


def cookie_mac(value: int) -> int:
    return int(value) & MAC_MASK


#: What a device sends of its identity protocols, as (eth_type, UDP port field, port): DHCP and
#: DHCPv6 requests, DNS queries, mDNS, SSDP NOTIFY/M-SEARCH; then SSDP's answers to a search
#: (from port 1900), one priority lower so that 1900 -> 1900 meets one entry only. Copied whole
#: to the controller in LEARN (an unknown source's) and MIRROR (a learning device's).
IDENTITY_MATCHES = tuple((et, "udp_dst", port) for et, ports in ((0x0800, (67, 53, 5353, 1900)),
                                                                 (0x86DD, (547, 53, 5353, 1900)))
                         for port in ports) + ((0x0800, "udp_src", 1900), (0x86DD, "udp_src", 1900))


# ------------------------------------------------------------------ priorities, by table

# POLICY_SRC / POLICY_DST
PRIO_LLDP = 1000           #: our topology probes (POLICY_SRC)
PRIO_POOL_ALLOW = 300      #: + prefix length: the longest prefix wins
PRIO_SERVICE_ALLOW = 250   #: allow_services: a service's port, any address
PRIO_IP_DENY = 200         #: allow_pools / allow_services: every other IPv4 / IPv6 destination
PRIO_IP_MARK = 150         #: DSCP marking of IP traffic
PRIO_DEVICE = 100          #: the device's action for everything else
# ETH_SRC
PRIO_LINK_PORT = 200       #: inter-switch links: never learned from
PRIO_HOST = 100            #: a learned (in_port, eth_src); also ETH_DST's eth_dst -> port
PRIO_BAN_PORT = 50         #: a port at its host cap: unknown sources forwarded, not copied
PRIO_BAN_SWITCH = 40       #: a switch at its host cap: the same on every port
# ETH_DST
PRIO_NO_FLOOD = 11         #: packets in on a link outside the spanning tree: not flooded
PRIO_FLOOD = 10            #: flooding along the spanning tree (one entry per switch)
# LEARN
PRIO_LEARN_COPY = 10       #: marked packets: metered copy to the controller
PRIO_LEARN_IDENTITY = 12   #: marked packets of identity protocols (DHCP, DNS, mDNS, SSDP): copied whole
# MIRROR
PRIO_MIRROR_IDENTITY = 110     #: what a learning device sends of its identity protocols: whole, own meter
PRIO_MIRROR_SRC = 100
PRIO_MIRROR_DST = 90
# every table
PRIO_MISS = 0


# ------------------------------------------------------------------ meters

#: the switch's meter on LEARN's copies (packets/s); per-device meters follow it
LEARN_METER = 1


def mirror_meter_id(slot: int) -> int:
    """The mirror meter (packets/s) of the device holding ``slot``."""
    return 2 + 3 * slot


def rate_meter_id(slot: int) -> int:
    """The rate-limit meter (kbit/s) of the device holding ``slot``."""
    return 3 + 3 * slot


def identity_meter_id(slot: int) -> int:
    """The identity meter (packets/s) of the device holding ``slot``: its identity protocols'
    copies, counted apart from the mirror meter so that its other traffic cannot starve them."""
    return 4 + 3 * slot
