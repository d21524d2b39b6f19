"""Segment features (Bai et al. 2018) and the CCIT window features (Sivanathan et al. 2017).

Each device's stream is cut into segments of ``interval`` seconds, aligned on the device's
first packet: segment ``k`` holds the packets with ``t0 + k*T <= t < t0 + (k+1)*T``.
Segments run up to the end of the capture (or ``end_ns``), so a device that is silent for
a while gets explicit empty segments (all counts and statistics 0): silence is information.
The last segment is ``complete`` only if it ends by the capture's end.

Per segment: packet counts (total, user, control, received, transmitted, and per protocol
class, DNS/ARP/NTP/DHCP among them) and wire-length statistics (max, min, mean, sum,
standard deviation, variance, skewness, kurtosis) over all, user, control, received and
transmitted packets. Statistics are population moments; skewness and (excess) kurtosis
are 0 when the variance is 0, as are all statistics of an empty subset.

Everything is computed with grouped numpy reductions over the device view, never per packet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from classifier.features.devices import DeviceView
from classifier.capture.packets import Packets
from classifier.capture.protocols import IS_USER, NAMES, Proto

SUBSETS = ("all", "user", "control", "rx", "tx")
STATS = ("max", "min", "mean", "sum", "std", "var", "skew", "kurt")
COUNT_NAMES = ["n_total", "n_user", "n_control", "n_rx", "n_tx"] + [f"n_{NAMES[p]}" for p in Proto]
LENGTH_NAMES = [f"len_{s}_{st}" for s in SUBSETS for st in STATS]
FEATURE_NAMES = COUNT_NAMES + LENGTH_NAMES

#: Bai et al.'s six "most discriminating" features.
PAPER_FEATURES = ["n_user", "len_user_mean", "len_user_max", "n_control", "len_control_mean", "len_control_max"]
FEATURE_SETS = {"all": FEATURE_NAMES, "paper": PAPER_FEATURES}

CCIT_NAMES = ["sleep_time", "active_volume", "avg_packet_size", "mean_rate", "peak_mean_rate", "active_time",
              "n_servers", "n_protocols", "unique_dns", "dns_interval", "ntp_interval"]


@dataclass
class FeatureTable:
    """Rows of features per (device, segment). ``values[i]`` has one column per name."""

    macs: np.ndarray        # uint64 MAC of each row
    segment: np.ndarray     # int64 segment index within its device
    start_ns: np.ndarray    # int64 segment start
    complete: np.ndarray    # bool
    names: list[str]
    values: np.ndarray      # float64 (rows, len(names))

    def __len__(self) -> int:
        return len(self.macs)

    def select(self, names: list[str]) -> np.ndarray:
        idx = [self.names.index(n) for n in names]
        return self.values[:, idx]

    def to_frame(self):
        import pandas as pd

        from classifier.capture.packets import macs_to_str
        frame = pd.DataFrame(self.values, columns=self.names)
        frame.insert(0, "mac", macs_to_str(self.macs))
        frame.insert(1, "segment", self.segment)
        frame.insert(2, "start", self.start_ns * 1e-9)
        frame.insert(3, "complete", self.complete)
        return frame


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


def ccit_features(pk: Packets, view: DeviceView, interval: float = 300.0, end_ns: int | None = None,
                  bin_seconds: float = 1.0) -> FeatureTable:
    """The CCIT features of Sivanathan et al. per window of ``interval`` seconds.

    Definitions (per device and window of length W):

    * ``sleep_time``: the longest stretch of the window with no packet of the device (s);
    * ``active_time``: seconds spent in active ``bin_seconds`` bins (bins with a packet);
    * ``active_volume``: bytes per active second;
    * ``avg_packet_size``: bytes / packets;
    * ``mean_rate``: bytes / W (bytes/s); ``peak_mean_rate``: the busiest bin's rate over it;
    * ``n_servers``: distinct remote IP addresses; ``n_protocols``: distinct protocol classes;
    * ``unique_dns``: distinct names the device asked DNS for;
    * ``dns_interval`` / ``ntp_interval``: mean time between the device's DNS queries /
      NTP packets sent (W when fewer than two).
    """
    ts, g, dev_of_seg, k, start, complete, G = _segments(pk, view, interval, end_ns)
    W = interval
    out = np.zeros((G, len(CCIT_NAMES)))
    length = pk.wire_len[view.pkt].astype(np.float64)
    n = np.bincount(g, minlength=G).astype(np.float64)
    volume = np.bincount(g, weights=length, minlength=G)
    t_rel = (ts - start[g]) * 1e-9  # seconds since the window start

    # sleep: longest gap between consecutive packets, including the window's edges
    gap = np.full(G, W)
    if len(g):
        firsts = np.concatenate([[0], np.flatnonzero(np.diff(g)) + 1])
        lasts = np.concatenate([firsts[1:] - 1, [len(g) - 1]])
        groups = g[firsts]
        d = np.concatenate([np.diff(t_rel), [0.0]])
        d[lasts] = 0.0  # no gap across groups
        inner = _group_max(d, g, G)
        gap[groups] = np.maximum(np.maximum(t_rel[firsts], W - t_rel[lasts]), inner[groups])
    out[:, 0] = np.minimum(gap, W)

    nb = max(1, int(np.ceil(W / bin_seconds)))
    b = np.minimum((t_rel / bin_seconds).astype(np.int64), nb - 1)
    gb = g * nb + b
    ub, inv = np.unique(gb, return_inverse=True)
    bytes_per_bin = np.bincount(inv, weights=length, minlength=len(ub))
    bin_group = ub // nb
    active_bins = np.bincount(bin_group, minlength=G).astype(np.float64)
    peak = _group_max(bytes_per_bin / bin_seconds, bin_group, G)
    active_time = active_bins * bin_seconds
    out[:, 5] = active_time
    has_active = active_time > 0
    out[has_active, 1] = volume[has_active] / active_time[has_active]
    has = n > 0
    out[has, 2] = volume[has] / n[has]
    mean_rate = volume / W
    out[:, 3] = mean_rate
    pos = mean_rate > 0
    out[pos, 4] = peak[pos] / mean_rate[pos]

    ent_tx = view.tx
    remote = np.where(ent_tx[:, None], pk.dst_ip[view.pkt], pk.src_ip[view.pkt])
    is_ip = pk.ip_version[view.pkt] != 0
    out[:, 6] = _distinct_per_group(g[is_ip], remote[is_ip], G)
    out[:, 7] = _distinct_per_group(g, pk.proto[view.pkt][:, None], G)
    proto = pk.proto[view.pkt]
    qhash = pk.dns_qhash[view.pkt]
    dns_q = ent_tx & (proto == Proto.DNS) & (qhash != 0)
    out[:, 8] = _distinct_per_group(g[dns_q], qhash[dns_q][:, None], G)
    out[:, 9] = _mean_interval(g[dns_q], t_rel[dns_q], G, W)
    ntp = ent_tx & (proto == Proto.NTP)
    out[:, 10] = _mean_interval(g[ntp], t_rel[ntp], G, W)
    return FeatureTable(view.macs[dev_of_seg], k, start, complete, list(CCIT_NAMES), out)


def _group_max(x: np.ndarray, g: np.ndarray, G: int) -> np.ndarray:
    """Maximum of ``x`` per group for sorted group ids ``g`` (0 for empty groups)."""
    out = np.zeros(G)
    if len(g):
        firsts = np.concatenate([[0], np.flatnonzero(np.diff(g)) + 1])
        out[g[firsts]] = np.maximum.reduceat(x, firsts)
    return out


def _distinct_per_group(g: np.ndarray, values: np.ndarray, G: int) -> np.ndarray:
    """Number of distinct rows of ``values`` (n, w) per group id ``g`` (any order)."""
    if len(g) == 0:
        return np.zeros(G)
    cols = [values[:, j] for j in range(values.shape[1] - 1, -1, -1)] + [g]
    order = np.lexsort(cols)
    gs = g[order]
    new = np.ones(len(order), bool)
    new[1:] = (gs[1:] != gs[:-1]) | np.any(values[order][1:] != values[order][:-1], axis=1)
    return np.bincount(gs[new], minlength=G).astype(np.float64)


def _mean_interval(g: np.ndarray, t: np.ndarray, G: int, W: float) -> np.ndarray:
    out = np.full(G, W)
    if len(g) < 2:
        return out
    d = np.diff(t)
    same = np.diff(g) == 0
    cnt = np.bincount(g[1:][same], minlength=G)
    tot = np.bincount(g[1:][same], weights=d[same], minlength=G)
    ok = cnt > 0
    out[ok] = tot[ok] / cnt[ok]
    return out
