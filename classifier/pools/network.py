"""A network seen through several captures: its gateway, and its devices as one stream each.

The gateway (router) is the MAC that carries the traffic to and from off-link addresses: it
sends the packets of many off-link IPv4 addresses and IPv6 prefixes (no LAN, link-local,
multicast or reserved address: what the IP pools call special), and receives the
packets addressed to them, where a host only ever shows its own address. For each address
family, the MAC with the most distinct off-link addresses (IPv4) or /64 prefixes (IPv6), and
at least twice as many as any other MAC, is a gateway; a capture with no traffic leaving the
link names none. Captures of one network are looked at one by one and their gateways joined
(a network may have a router per family, or change it).

Captures of one network are joined into one packet table in time order, so that each device
is one stream across the files, as a controller sees it live.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from classifier.capture.packets import Packets, is_ipv4
from classifier.features.devices import is_unicast


def offlink_counts(pk: Packets) -> dict[int, tuple[int, int]]:
    """Per MAC: distinct off-link IPv4 addresses and IPv6 /64 prefixes it sent from or received
    for. Off-link is what the IP pools call no special address (not LAN, link-local, multicast,
    loopback, shared or reserved: see :func:`classifier.pools.asndb.special_pools`)."""
    from classifier.pools.asndb import special_pools
    macs, ips = [], []
    for mac_col, ip_col in ((pk.eth_src, pk.src_ip), (pk.eth_dst, pk.dst_ip)):
        ok = is_unicast(mac_col) & (pk.ip_version > 0)
        macs.append(mac_col[ok])
        ips.append(ip_col[ok])
    mac = np.concatenate(macs)
    ip = np.concatenate(ips)
    if not len(mac):
        return {}
    uniq, inverse = np.unique(ip, axis=0, return_inverse=True)
    offlink = (special_pools(uniq) == "")[inverse.ravel()]
    v4 = is_ipv4(ip)
    out: dict[int, list[int]] = {}
    for fam, sel, key in ((0, offlink & v4, ip[:, 1]), (1, offlink & ~v4, ip[:, 0])):  # IPv6: the /64
        pairs = np.unique(np.stack([mac[sel], key[sel]], axis=1), axis=0)
        for m, c in zip(*np.unique(pairs[:, 0], return_counts=True)):
            out.setdefault(int(m), [0, 0])[fam] = int(c)
    return {m: (v[0], v[1]) for m, v in out.items()}


def find_gateways(pk: Packets) -> dict[int, tuple[int, int]]:
    """The capture's gateway MACs, each with its off-link counts (IPv4 addresses, IPv6 /64s)."""
    counts = offlink_counts(pk)
    found = {}
    for fam in (0, 1):
        ranked = sorted(((c[fam], mac) for mac, c in counts.items() if c[fam] > 0), reverse=True)
        if ranked and (len(ranked) == 1 or ranked[0][0] > 2 * ranked[1][0]):
            found[ranked[0][1]] = counts[ranked[0][1]]
    return found


def join_captures(parts: Sequence[Packets]) -> tuple[Packets, np.ndarray]:
    """Captures of one network as one packet table in time order (ties keep the order of the
    captures, taken by their first packet). Also returns each row's capture index."""
    parts = list(parts)
    if not parts:
        return Packets.empty(), np.zeros(0, np.int64)
    firsts = [int(p.ts_ns.min()) if len(p) else 0 for p in parts]
    order = sorted(range(len(parts)), key=lambda k: (firsts[k], k))
    joined = Packets.concat([parts[k] for k in order])
    source = np.concatenate([np.full(len(parts[k]), k, np.int64) for k in order])
    idx = np.argsort(joined.ts_ns, kind="stable")
    return joined.take(idx), source[idx]
