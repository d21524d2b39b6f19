"""Session features (Chen et al., network behaviour analysis).

A session is a device's traffic with one remote endpoint over one transport: the 5-tuple
(protocol, local address and port, remote address and port), both directions joined, UDP
and ICMP included (ports -1 where the protocol has none). A session ends after
``idle_timeout`` seconds without a packet; the next packet of the same 5-tuple opens a new
one. Sessions are ordered by start time per device.

Per session: start, interval since the device's previous session start (0 for its first),
duration, protocol, local and remote address and port, packets and bytes each way, who
opened it, and the remote address's IP pool (filled in by :mod:`classifier.pools.resolver`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from classifier.features.devices import DeviceView
from classifier.capture.packets import Packets, ips_to_str, macs_to_str

DEFAULT_IDLE_TIMEOUT = 60.0


@dataclass
class Sessions:
    """A table of sessions, one numpy array per column, grouped by device, in start order."""

    mac: np.ndarray           # uint64
    start_ns: np.ndarray      # int64
    interval: np.ndarray      # float64 seconds since the device's previous session start
    duration: np.ndarray      # float64 seconds
    ip_proto: np.ndarray      # uint8
    local_ip: np.ndarray      # (n, 2) uint64
    local_port: np.ndarray    # int32, -1 if none
    remote_ip: np.ndarray     # (n, 2) uint64
    remote_port: np.ndarray   # int32, -1 if none
    ip_version: np.ndarray    # uint8
    packets_out: np.ndarray   # int64 (sent by the device)
    packets_in: np.ndarray
    bytes_out: np.ndarray
    bytes_in: np.ndarray
    outbound: np.ndarray      # bool: the device sent the first packet
    pool: np.ndarray = field(default=None)  # object array of pool names ('' until resolved)

    def __post_init__(self):
        if self.pool is None:
            self.pool = np.full(len(self.mac), "", dtype=object)

    def __len__(self) -> int:
        return len(self.mac)

    def take(self, index) -> "Sessions":
        return Sessions(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to_frame(self):
        import pandas as pd
        return pd.DataFrame({
            "mac": macs_to_str(self.mac),
            "start": self.start_ns * 1e-9,
            "interval": self.interval,
            "duration": self.duration,
            "ip_proto": self.ip_proto,
            "local_ip": ips_to_str(self.local_ip),
            "local_port": self.local_port,
            "remote_ip": ips_to_str(self.remote_ip),
            "remote_port": self.remote_port,
            "packets_out": self.packets_out,
            "packets_in": self.packets_in,
            "bytes_out": self.bytes_out,
            "bytes_in": self.bytes_in,
            "outbound": self.outbound,
            "pool": self.pool,
        })


def _mix(h: np.ndarray, v: np.ndarray) -> np.ndarray:
    """One round of a 64-bit hash combine (splitmix64 finaliser), vectorised."""
    h = (h ^ v.astype(np.uint64)) * np.uint64(0x9E3779B97F4A7C15)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(29)
    return h


def _group_order(cols: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A stable order grouping equal rows of ``cols`` together, and the group key.

    Rows are hashed to 64 bits and sorted by hash (stable, so time order survives within a
    group). Hash collisions are detected and then the exact lexicographic sort is used.
    """
    h = np.zeros(len(cols[0]), dtype=np.uint64)
    for c in cols:
        h = _mix(h, c)
    order = np.argsort(h, kind="stable")
    hs = h[order]
    same = hs[1:] == hs[:-1]
    for c in cols:
        cs = c[order]
        if np.any(same & (cs[1:] != cs[:-1])):
            order = np.lexsort(tuple(reversed(cols)))  # exact, first column primary; stable
            new = np.ones(len(order), bool)
            new[1:] = np.any([c[order][1:] != c[order][:-1] for c in cols], axis=0)
            return order, np.cumsum(new).astype(np.uint64)
    return order, hs


def session_table(pk: Packets, view: DeviceView, idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> Sessions:
    """Every device's sessions (see the module docstring)."""
    ip = pk.ip_version[view.pkt] != 0
    ent = np.flatnonzero(ip)  # entries (positions in the view) with an IP header
    pkt = view.pkt[ent]
    tx = view.tx[ent]
    dev = view.dev[ent]
    src, dst = pk.src_ip[pkt], pk.dst_ip[pkt]
    sp, dp = pk.sport[pkt], pk.dport[pkt]
    local_ip = np.where(tx[:, None], src, dst)
    remote_ip = np.where(tx[:, None], dst, src)
    local_port = np.where(tx, sp, dp)
    remote_port = np.where(tx, dp, sp)
    proto = pk.ip_proto[pkt]
    ts = pk.ts_ns[pkt]
    length = pk.wire_len[pkt].astype(np.int64)

    # Entries are in (device, time) order; group by 5-tuple keeping time order inside.
    cols = [dev, proto, local_ip[:, 0], local_ip[:, 1], local_port, remote_ip[:, 0], remote_ip[:, 1], remote_port]
    if len(ent):
        order, key = _group_order(cols)
    else:
        order, key = np.zeros(0, np.int64), np.zeros(0, np.uint64)
    ts_o = ts[order]
    new = np.ones(len(order), bool)
    if len(order) > 1:
        new[1:] = (key[1:] != key[:-1]) | (np.diff(ts_o) > int(idle_timeout * 1e9))
    sid = np.cumsum(new) - 1
    nsess = int(sid[-1]) + 1 if len(sid) else 0
    first = np.flatnonzero(new)
    last = np.concatenate([first[1:] - 1, [len(order) - 1]]) if nsess else first
    o_first = order[first]
    tx_o = tx[order]
    len_o = length[order]
    start = ts_o[first]
    end = ts_o[last]
    s_dev = dev[o_first]
    s = Sessions(
        mac=view.macs[s_dev],
        start_ns=start,
        interval=np.zeros(nsess),
        duration=(end - start) * 1e-9,
        ip_proto=proto[o_first],
        local_ip=local_ip[o_first],
        local_port=local_port[o_first].astype(np.int32),
        remote_ip=remote_ip[o_first],
        remote_port=remote_port[o_first].astype(np.int32),
        ip_version=pk.ip_version[pkt[o_first]],
        packets_out=np.bincount(sid, weights=tx_o, minlength=nsess).astype(np.int64),
        packets_in=np.bincount(sid, weights=~tx_o, minlength=nsess).astype(np.int64),
        bytes_out=np.bincount(sid, weights=len_o * tx_o, minlength=nsess).astype(np.int64),
        bytes_in=np.bincount(sid, weights=len_o * ~tx_o, minlength=nsess).astype(np.int64),
        outbound=tx[o_first],
    )
    # Order by device, then start time (then 5-tuple position, for determinism).
    by_start = np.lexsort((o_first, start, s_dev))
    s = s.take(by_start)
    s_dev = s_dev[by_start]
    if nsess > 1:
        d = np.diff(s.start_ns) * 1e-9
        same_dev = s_dev[1:] == s_dev[:-1]
        s.interval[1:] = np.where(same_dev, d, 0.0)
    return s
