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

Everything is computed in columnar passes over the device view (numba kernels,
:mod:`classifier.features.kernels`), never with per-packet Python.
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


def _divide_skew(values: np.ndarray, nc: int) -> np.ndarray:
    """The skew columns of :func:`~classifier.features.kernels.segment_kernel`'s table (the
    third moment there) divided by ``var ** 1.5`` where the variance is positive, the power
    taken by numpy (numba's differs in the last bit) on the positive variances gathered into
    one contiguous array, as ``var[var > 0] ** 1.5`` gives them; returns ``values``."""
    from classifier.features.kernels import divide_skews, positive_variances
    var = positive_variances(values, nc)
    if len(var):
        divide_skews(values, nc, var ** 1.5)
    return values


def _layout(pk: Packets, view: DeviceView, interval: float, end_ns: int | None):
    """Per device its first packet's time and first global segment; per segment its device,
    index, start and completeness; the segment length in ns and the number of segments."""
    from classifier.features.kernels import segment_layout
    T = int(round(interval * 1e9))
    if T <= 0:
        raise ValueError(f"segment interval must be positive, got {interval}")
    ndev = len(view.macs)
    if ndev == 0:
        z = np.zeros(0, np.int64)
        return z, np.zeros(1, np.int64), z, z, z, np.zeros(0, bool), T, 0
    t0 = view.t_first
    first, dev_of_seg, k, start, complete = segment_layout(t0, view.t_last, pk.ts_ns,
                                                           None if end_ns is None else int(end_ns), T)
    return t0, first, dev_of_seg, k, start, complete, T, int(first[-1])


def segment_features(pk: Packets, view: DeviceView, interval: float = 300.0,
                     end_ns: int | None = None) -> FeatureTable:
    """Bai et al.'s per-segment features for every device of ``view`` (one numba pass for the
    counts, sums and extremes, a second for the central moments:
    :func:`classifier.features.kernels.segment_kernel`)."""
    from classifier.features.kernels import segment_kernel
    t0, first, dev_of_seg, k, start, complete, T, G = _layout(pk, view, interval, end_ns)
    nproto = len(Proto)
    order, use_order = view.walk()
    values = _divide_skew(segment_kernel(view.tx_dev, view.rx_dev, order, use_order, pk.ts_ns, pk.wire_len,
                                         pk.proto, IS_USER, t0, first, T, G, nproto), len(COUNT_NAMES))
    return FeatureTable(view.macs[dev_of_seg], k, start, complete, list(FEATURE_NAMES), values)


def window_bounds(pk: Packets, interval: float, t: int, end_ns: int, t_first: int) -> tuple[int, int, int] | None:
    """Where a device's last ``t`` complete segments up to ``end_ns`` (no earlier than its last
    packet) lie in ``pk``, which must be in time order (a binary search finds them): (first row,
    end row, the window's start), or None when the device has fewer than ``t`` complete
    segments. ``t_first``: the device's first packet time (segments are aligned on it)."""
    T = int(round(interval * 1e9))
    if T <= 0:
        raise ValueError(f"segment interval must be positive, got {interval}")
    K = (int(end_ns) - int(t_first)) // T            # complete segments
    if K < t:
        return None
    lo_t = int(t_first) + (K - t) * T
    lo, hi = np.searchsorted(pk.ts_ns, [lo_t, lo_t + t * T], side="left")
    return int(lo), int(hi), lo_t


def window_of_rows(pk: Packets, mac: int, interval: float, t: int, lo: int, hi: int, lo_t: int) -> tuple:
    """Device ``mac``'s window at its bounds (:func:`window_bounds`), as :func:`segment_features`
    gives those rows (the same values, bit for bit), from the window's packets alone: it reads
    rows ``[lo, hi)`` of ``pk`` and nothing else. Returns (values (t, features), the window's
    start)."""
    from classifier.features.kernels import device_sides, segment_kernel
    T = int(round(interval * 1e9))
    src, dst = pk.eth_src[lo:hi], pk.eth_dst[lo:hi]
    dev_tx, dev_rx = device_sides(src, dst, np.uint64(mac))
    nproto = len(Proto)
    values = segment_kernel(dev_tx, dev_rx, np.zeros(0, np.int64), False, pk.ts_ns[lo:hi], pk.wire_len[lo:hi],
                            pk.proto[lo:hi], IS_USER, np.array([lo_t], np.int64), np.zeros(2, np.int64), T, t, nproto)
    return _divide_skew(values, len(COUNT_NAMES)), lo_t


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
