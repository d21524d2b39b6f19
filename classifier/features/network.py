"""A network seen through several captures: its gateway, and its devices as one stream each.

The gateway (router) is the MAC that carries the traffic to and from off-link addresses: it
sends the packets of many public IPv4 addresses and global IPv6 prefixes, and receives the
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


def _public_ipv4(ips: np.ndarray) -> np.ndarray:
    """IPv4-mapped addresses outside the private, shared, loopback, link-local, multicast and
    reserved ranges."""
    a = ips[:, 1] & np.uint64(0xFFFFFFFF)
    o1 = a >> np.uint64(24)
    o2 = (a >> np.uint64(16)) & np.uint64(0xFF)
    local = ((o1 == 10) | ((o1 == 172) & (o2 >= 16) & (o2 < 32)) | ((o1 == 192) & (o2 == 168)) | (o1 == 127)
             | ((o1 == 169) & (o2 == 254)) | ((o1 == 100) & (o2 >= 64) & (o2 < 128)) | (o1 == 0) | (o1 >= 224))
    return is_ipv4(ips) & ~local


def _global_ipv6(ips: np.ndarray) -> np.ndarray:
    """Global unicast IPv6 addresses (2000::/3)."""
    return ~is_ipv4(ips) & ((ips[:, 0] >> np.uint64(61)) == np.uint64(1))


def offlink_counts(pk: Packets) -> dict[int, tuple[int, int]]:
    """Per MAC: distinct public IPv4 addresses and distinct global IPv6 /64 prefixes it sent
    from or received for."""
    pairs = {4: [], 6: []}
    for mac_col, ip_col in ((pk.eth_src, pk.src_ip), (pk.eth_dst, pk.dst_ip)):
        ok = is_unicast(mac_col) & (pk.ip_version > 0)
        m4 = ok & _public_ipv4(ip_col)
        m6 = ok & _global_ipv6(ip_col)
        pairs[4].append(np.stack([mac_col[m4], ip_col[m4, 1]], axis=1))
        pairs[6].append(np.stack([mac_col[m6], ip_col[m6, 0]], axis=1))  # the /64 prefix
    out: dict[int, list[int]] = {}
    for fam, parts in pairs.items():
        both = np.concatenate(parts)
        if not len(both):
            continue
        macs, counts = np.unique(np.unique(both, axis=0)[:, 0], return_counts=True)
        for mac, c in zip(macs.tolist(), counts.tolist()):
            out.setdefault(mac, [0, 0])[0 if fam == 4 else 1] = c
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
