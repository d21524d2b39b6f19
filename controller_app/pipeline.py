"""The OpenFlow pipeline's names, in one place: tables, cookie kinds, priorities, meter ids.

Every manager of the core (:mod:`controller_app.core`), the shell, the benchmarks and the test
doubles take these from here (:mod:`controller_app.intents` re-exports the table and cookie
names for code that already imports them from there). Nothing here imports anything.

The pipeline (OpenFlow 1.3)::

    0 POLICY_SRC  our LLDP probes -> controller; the sending device's policy
    1 POLICY_DST  the receiving device's policy
    2 ETH_SRC     known (in_port, eth_src) -> on; unknown -> truncated copy to the controller (learning)
    3 ETH_DST     known eth_dst -> its port; otherwise flood along the spanning tree
    4 MIRROR      learning devices: meter (packets/s) + truncated copy to the controller
"""

from __future__ import annotations

from enum import IntEnum


class Table(IntEnum):
    """The pipeline's tables, in the order a packet visits them."""

    POLICY_SRC = 0   #: policy of the sending device (match eth_src), LLDP probes to the controller
    POLICY_DST = 1   #: policy of the receiving device (match eth_dst)
    ETH_SRC = 2      #: L2 learning: known (in_port, eth_src) pass, unknown ones are copied to the controller
    ETH_DST = 3      #: L2 forwarding: known eth_dst -> its port, else flood along the spanning tree
    MIRROR = 4       #: learning devices: metered, truncated copy to the controller


N_TABLES = len(Table)


class CookieKind(IntEnum):
    """The top byte of every flow's cookie says who installed it and why; per-device flows
    carry the device's MAC in the low 48 bits (so a packet-in names the flow that sent it)."""

    DEFAULT = 0x10   #: table defaults (goto next table, table-miss)
    LLDP = 0x11      #: topology probes to the controller
    LEARN = 0x12     #: ETH_SRC: table-miss copy to the controller, and link ports
    HOST = 0x13      #: ETH_SRC/ETH_DST entries of one learned host (MAC in the low bits)
    FLOOD = 0x14     #: ETH_DST flooding per in_port
    POLICY = 0x15    #: a device's policy entries (MAC in the low bits)
    MIRROR = 0x16    #: a device's mirror entries (MAC in the low bits)


MAC_MASK = (1 << 48) - 1
KIND_SHIFT = 56
KIND_MASK = 0xFF << KIND_SHIFT
FULL_MASK = (1 << 64) - 1


def cookie(kind: CookieKind, mac: int = 0) -> int:
    return (int(kind) << KIND_SHIFT) | (int(mac) & MAC_MASK)


def cookie_kind(value: int) -> int:
    return (int(value) >> KIND_SHIFT) & 0xFF


def cookie_mac(value: int) -> int:
    return int(value) & MAC_MASK


# ------------------------------------------------------------------ priorities, by table

# POLICY_SRC / POLICY_DST
PRIO_LLDP = 1000           #: our topology probes (POLICY_SRC)
PRIO_POOL_ALLOW = 300      #: + prefix length: the longest prefix wins
PRIO_IP_DENY = 200         #: allow_pools: every other IPv4 / IPv6 destination
PRIO_IP_MARK = 150         #: DSCP marking of IP traffic
PRIO_DEVICE = 100          #: the device's action for everything else
# ETH_SRC
PRIO_LINK_PORT = 200       #: inter-switch links: never learned from
PRIO_HOST = 100            #: a learned (in_port, eth_src); also ETH_DST's eth_dst -> port
# ETH_DST
PRIO_FLOOD = 10            #: flooding along the spanning tree
# MIRROR
PRIO_MIRROR_SRC = 100
PRIO_MIRROR_DST = 90
# every table
PRIO_MISS = 0


# ------------------------------------------------------------------ meters

def mirror_meter_id(slot: int) -> int:
    """The mirror meter (packets/s) of the device holding ``slot``."""
    return 1 + 2 * slot


def rate_meter_id(slot: int) -> int:
    """The rate-limit meter (kbit/s) of the device holding ``slot``."""
    return 2 + 2 * slot
