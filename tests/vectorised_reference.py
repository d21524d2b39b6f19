"""The vectorised numpy feature code as it was before the columnar kernels
(classifier/features/kernels.py), kept verbatim as the reference the kernels must equal bit for
bit: device split, segment features, sessions (tests/test_feature_kernels.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from typing import Iterable

from classifier.capture.packets import Packets
from classifier.capture.protocols import IS_USER, Proto
from classifier.features.devices import as_mac_ints, is_unicast
from classifier.features.segments import COUNT_NAMES, FEATURE_NAMES, STATS, SUBSETS, FeatureTable
from classifier.features.sessions import DEFAULT_IDLE_TIMEOUT, Sessions

@dataclass
class DeviceView:
    """The view as it was: its entry arrays."""

    macs: np.ndarray
    pkt: np.ndarray
    dev: np.ndarray
    tx: np.ndarray
    start: np.ndarray

    def __len__(self) -> int:
        return len(self.macs)


def split_devices(pk: Packets, gateways: Iterable[int | str] | None = None,
                  devices: Iterable[int | str] | None = None) -> DeviceView:
    """Split a packet table into per-device streams.

    ``gateways``: MACs never treated as devices. ``devices``: when given, only these MACs.
    """
    gw = as_mac_ints(gateways)
    src_ok = is_unicast(pk.eth_src)
    dst_ok = is_unicast(pk.eth_dst)
    if len(gw):
        src_ok &= ~np.isin(pk.eth_src, gw)
        dst_ok &= ~np.isin(pk.eth_dst, gw)
    if devices is not None:
        only = as_mac_ints(devices)
        src_ok &= np.isin(pk.eth_src, only)
        dst_ok &= np.isin(pk.eth_dst, only)
    tx_idx = np.flatnonzero(src_ok)
    rx_idx = np.flatnonzero(dst_ok)
    pkt = np.concatenate([tx_idx, rx_idx])
    mac = np.concatenate([pk.eth_src[tx_idx], pk.eth_dst[rx_idx]])
    tx = np.concatenate([np.ones(len(tx_idx), bool), np.zeros(len(rx_idx), bool)])
    macs, dev = np.unique(mac, return_inverse=True)
    dev = dev.astype(np.int32)
    order = np.lexsort((pkt, pk.ts_ns[pkt], dev))
    pkt, dev, tx = pkt[order], dev[order], tx[order]
    start = np.searchsorted(dev, np.arange(len(macs) + 1), side="left").astype(np.int64)
    return DeviceView(macs=macs, pkt=pkt, dev=dev, tx=tx, start=start)


def _segments(pk: Packets, view: DeviceView, interval: float, end_ns: int | None):
    """Global segment id per view entry, plus per-segment (mac, index, start, complete)."""
    T = int(round(interval * 1e9))
    if T <= 0:
        raise ValueError(f"segment interval must be positive, got {interval}")
    ts = pk.ts_ns[view.pkt]
    ndev = len(view.macs)
    if ndev == 0:
        z = np.zeros(0, np.int64)
        return ts, z, z, z, z, np.zeros(0, bool), 0
    t0 = ts[view.start[:-1]]
    end = int(pk.ts_ns.max()) if end_ns is None else int(end_ns)
    end = max(end, int(ts.max()))
    nseg = (end - t0) // T + 1
    first = np.zeros(ndev + 1, np.int64)
    np.cumsum(nseg, out=first[1:])
    seg_in_dev = (ts - t0[view.dev]) // T
    g = first[view.dev] + seg_in_dev
    G = int(first[-1])
    dev_of_seg = np.repeat(np.arange(ndev), nseg)
    k = np.arange(G) - first[dev_of_seg]
    start = t0[dev_of_seg] + k * T
    complete = start + T <= end
    return ts, g, dev_of_seg, k, start, complete, G


def _grouped_stats(x: np.ndarray, g: np.ndarray, G: int) -> np.ndarray:
    """Length statistics per group; ``g`` must be sorted. Returns (G, len(STATS))."""
    out = np.zeros((G, len(STATS)))
    if len(x) == 0:
        return out
    n = np.bincount(g, minlength=G).astype(np.float64)
    s1 = np.bincount(g, weights=x, minlength=G)
    has = n > 0
    mean = np.zeros(G)
    mean[has] = s1[has] / n[has]
    d = x - mean[g]
    d2 = d * d
    m2 = np.zeros(G)
    m3 = np.zeros(G)
    m4 = np.zeros(G)
    m2[has] = np.bincount(g, weights=d2, minlength=G)[has] / n[has]
    m3[has] = np.bincount(g, weights=d2 * d, minlength=G)[has] / n[has]
    m4[has] = np.bincount(g, weights=d2 * d2, minlength=G)[has] / n[has]
    bounds = np.flatnonzero(np.diff(g)) + 1
    firsts = np.concatenate([[0], bounds])
    groups = g[firsts]
    out[groups, 0] = np.maximum.reduceat(x, firsts)
    out[groups, 1] = np.minimum.reduceat(x, firsts)
    out[:, 2] = mean
    out[:, 3] = s1
    var_pos = m2 > 0
    out[:, 4] = np.sqrt(m2)
    out[:, 5] = m2
    out[var_pos, 6] = m3[var_pos] / m2[var_pos] ** 1.5
    out[var_pos, 7] = m4[var_pos] / m2[var_pos] ** 2 - 3.0
    return out


def segment_features(pk: Packets, view: DeviceView, interval: float = 300.0,
                     end_ns: int | None = None) -> FeatureTable:
    """Bai et al.'s per-segment features for every device of ``view``."""
    ts, g, dev_of_seg, k, start, complete, G = _segments(pk, view, interval, end_ns)
    proto = pk.proto[view.pkt]
    length = pk.wire_len[view.pkt].astype(np.float64)
    user = IS_USER[proto]
    tx = view.tx
    masks = {"all": None, "user": user, "control": ~user, "rx": ~tx, "tx": tx}
    nproto = len(Proto)
    counts = np.zeros((G, len(COUNT_NAMES)))
    counts[:, 0] = np.bincount(g, minlength=G)
    counts[:, 1] = np.bincount(g, weights=user, minlength=G)
    counts[:, 2] = counts[:, 0] - counts[:, 1]
    counts[:, 4] = np.bincount(g, weights=tx, minlength=G)
    counts[:, 3] = counts[:, 0] - counts[:, 4]
    counts[:, 5:] = np.bincount(g * nproto + proto, minlength=G * nproto).reshape(G, nproto)
    # All five subsets in one grouped pass: subset j's groups are numbered j*G .. j*G+G-1,
    # so the concatenation stays sorted by group.
    sel = [np.arange(len(g)) if masks[name] is None else np.flatnonzero(masks[name]) for name in SUBSETS]
    gg = np.concatenate([g[ix] + j * G for j, ix in enumerate(sel)])
    xx = np.concatenate([length[ix] for ix in sel])
    stats = _grouped_stats(xx, gg, G * len(SUBSETS))
    lengths = [stats[j * G:(j + 1) * G] for j in range(len(SUBSETS))]
    values = np.hstack([counts] + lengths)
    return FeatureTable(view.macs[dev_of_seg], k, start, complete, list(FEATURE_NAMES), values)


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
