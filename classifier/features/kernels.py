"""Columnar feature kernels: the device split, segment features and sessions as numba passes
over the decoded packet columns, as the decoder is.

Each kernel walks the packet table in time order (the table's own order, which a capture
almost always has; otherwise one stable argsort of the timestamps gives it), reading the
columns sequentially, with no per-packet Python and no sort of the whole capture. A packet is
an entry of its sender (transmitted) and of its receiver (received), in that order, so that
each device meets its entries in the order of its :class:`~classifier.features.devices.DeviceView`
(time, packet, transmitted before received):

* :func:`split_ids` files every packet under its sender and receiver device with an
  open-addressing table of MACs (ids in order of first appearance), and counts each device's
  entries, first and last time; :func:`split_fill` lays the view's entry arrays out by a stable
  counting sort, only when something reads them;
* :func:`segment_layout` lays out each device's segments; :func:`segment_kernel` accumulates
  each segment's counts, and its length sums, minima and maxima per subset (all, user,
  control, rx, tx), then in a second pass the central moments, into the feature table's rows;
* :func:`session_kernel` keeps the devices' 5-tuples in an open-addressing table: an entry
  joins its 5-tuple's current session or, after ``idle_timeout`` of silence, opens the next
  one; sessions are then grouped by device in the order they were born (device, start, first
  entry), the order of the session table.

The results are those of the vectorised numpy code they replace, bit for bit: every sum runs
over a group's entries in the order ``np.bincount`` summed them (sequentially, in the device's
entry order), and the final divisions, square roots and powers (:func:`_moments`) are
the same IEEE operations as numpy's there (``tests/test_feature_kernels.py`` compares them with
that code, kept in ``tests/vectorised_reference.py``).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def _mix(h, v):
    h = (h ^ v) * np.uint64(0x9E3779B97F4A7C15)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(29)
    return h


@njit(cache=True, nogil=True, inline="always")
def _in_sorted(a, v):
    """Whether ``v`` is in the sorted array ``a``."""
    lo = 0
    hi = len(a)
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo < len(a) and a[lo] == v


@njit(cache=True, nogil=True)
def _grown_table(table, keys, n_keys):
    size = 2 * len(table)
    mask = np.uint64(size - 1)
    new = np.full(size, -1, np.int64)
    for k in range(n_keys):
        slot = np.int64(_mix(np.uint64(0), keys[k]) & mask)
        while new[slot] >= 0:
            slot = (slot + 1) & (size - 1)
        new[slot] = k
    return new


@njit(cache=True, nogil=True)
def _grown(a, n):
    b = np.empty(2 * len(a), a.dtype)
    b[:n] = a[:n]
    return b


@njit(cache=True, nogil=True)
def _split_run(src, dst, ts, gw, only, use_only, i0, dev_tx, dev_rx, table, keys, counts, tmin, tmax, st):
    """:func:`split_ids`' loop from packet ``i0`` until the end, or until the tables are full
    (returns where it stopped). ``st``: keys held, whether ``ts`` decreased. The arrays are
    never reallocated here: a loop that may reallocate what it reads runs several times slower."""
    n = len(src)
    n_keys = st[0]
    mask = len(table) - 1
    last0 = np.uint64(0)
    last1 = np.uint64(0)
    d0 = -1
    d1 = -1
    prev_t = ts[i0 - 1] if i0 > 0 else (ts[0] if n else 0)
    for i in range(i0, n):
        if 2 * (n_keys + 2) > len(table):
            st[0] = n_keys
            return i
        t = ts[i]
        if t < prev_t:
            st[1] = 1
        prev_t = t
        for side in range(2):
            m = src[i] if side == 0 else dst[i]
            if side == 0 and m == last0 and i > i0:
                d = d0
            elif side == 1 and m == last1 and i > i0:
                d = d1
            else:
                d = -1
                if m != 0 and ((m >> np.uint64(40)) & np.uint64(1)) == 0 and not _in_sorted(gw, m) \
                        and (not use_only or _in_sorted(only, m)):
                    slot = np.int64(_mix(np.uint64(0), m) & np.uint64(mask))
                    while True:
                        k = table[slot]
                        if k < 0:
                            table[slot] = n_keys
                            keys[n_keys] = m
                            counts[n_keys] = 0
                            tmin[n_keys] = t
                            tmax[n_keys] = t
                            d = n_keys
                            n_keys += 1
                            break
                        if keys[k] == m:
                            d = k
                            break
                        slot = (slot + 1) & mask
                if side == 0:
                    last0 = m
                    d0 = d
                else:
                    last1 = m
                    d1 = d
            if d >= 0:
                counts[d] += 1
                if t < tmin[d]:
                    tmin[d] = t
                if t > tmax[d]:
                    tmax[d] = t
            if side == 0:
                dev_tx[i] = d
            else:
                dev_rx[i] = d
    st[0] = n_keys
    return n


@njit(cache=True, nogil=True)
def split_ids(src, dst, ts, gw, only, use_only):
    """Per packet, the device id of its sender and of its receiver (-1: not a device), the
    ids in the order of the devices' MACs; each device's MAC, first entry (and the entries'
    total at the end), first and last time; whether ``ts`` never decreases. A device is a
    unicast, non-zero MAC not in the sorted ``gw`` (and in the sorted ``only`` when
    ``use_only``)."""
    n = len(src)
    dev_tx = np.empty(n, np.int32)
    dev_rx = np.empty(n, np.int32)
    table = np.full(64, -1, np.int64)
    keys = np.empty(32, np.uint64)
    counts = np.zeros(32, np.int64)
    tmin = np.zeros(32, np.int64)
    tmax = np.zeros(32, np.int64)
    st = np.zeros(2, np.int64)
    i = 0
    while True:
        i = _split_run(src, dst, ts, gw, only, use_only, i, dev_tx, dev_rx, table, keys, counts, tmin, tmax, st)
        if i >= n:
            break
        n_keys = st[0]
        keys = _grown(keys, n_keys)
        counts = _grown(counts, n_keys)
        tmin = _grown(tmin, n_keys)
        tmax = _grown(tmax, n_keys)
        table = _grown_table(table, keys, n_keys)
    n_keys = st[0]
    # ids of first appearance -> the MACs' order (the MACs are distinct: any sort is stable)
    by_mac = np.argsort(keys[:n_keys])
    rank = np.empty(n_keys, np.int32)
    for r in range(n_keys):
        rank[by_mac[r]] = r
    for j in range(n):
        a = dev_tx[j]
        if a >= 0:
            dev_tx[j] = rank[a]
        b = dev_rx[j]
        if b >= 0:
            dev_rx[j] = rank[b]
    start = np.zeros(n_keys + 1, np.int64)
    for r in range(n_keys):
        start[r + 1] = start[r] + counts[by_mac[r]]
    return dev_tx, dev_rx, keys[by_mac], start, tmin[by_mac], tmax[by_mac], st[1] == 0


@njit(cache=True, nogil=True, inline="always")
def _file(pkt, dev, tx, cur, d, i, sent):
    """Packet ``i`` filed under device ``d`` (none: ``d`` < 0), as its sender or receiver."""
    if d >= 0:
        q = cur[d]
        pkt[q] = i
        dev[q] = d
        tx[q] = sent
        cur[d] = q + 1


@njit(cache=True, nogil=True)
def split_fill(dev_tx, dev_rx, start, order, use_order):
    """The view's entries: packets in time order (``order`` when ``use_order``, else the
    table's order), each filed under its sender (tx) then its receiver (rx), grouped by device
    by a stable counting sort."""
    total = start[-1]
    pkt = np.empty(total, np.int64)
    dev = np.empty(total, np.int32)
    tx = np.empty(total, np.bool_)
    cur = start[:-1].copy()
    n = len(dev_tx)
    for j in range(n):
        i = order[j] if use_order else j
        _file(pkt, dev, tx, cur, dev_tx[i], i, True)
        _file(pkt, dev, tx, cur, dev_rx[i], i, False)
    return pkt, dev, tx


@njit(cache=True, nogil=True, inline="always")
def _add(acc, g, k, x):
    if acc[g, k, 0] == 0.0:
        acc[g, k, 2] = x
        acc[g, k, 3] = x
    else:
        if x > acc[g, k, 2]:
            acc[g, k, 2] = x
        if x < acc[g, k, 3]:
            acc[g, k, 3] = x
    acc[g, k, 0] += 1.0
    acc[g, k, 1] += x


@njit(cache=True, nogil=True, inline="always")
def _add_moments(mom, mean, g, k, x):
    dd = x - mean[g, k]
    d2 = dd * dd
    mom[g, k, 0] += d2
    mom[g, k, 1] += d2 * dd
    mom[g, k, 2] += d2 * d2


@njit(cache=True, nogil=True)
def _moments(acc, mom, values, nc):
    """The length statistics of every group and subset into ``values[g, nc + 8 * s:]`` (max,
    min, mean, sum, std, var, skew, kurt) from :func:`segment_kernel`'s per-group count, sum,
    max and min (``acc``) and sums of the deviations' 2nd, 3rd and 4th powers (``mom``); 0
    where a group is empty (skew and kurtosis 0 where the variance is). The same IEEE
    operations, in the same order, as the array code it replaces
    (``tests/vectorised_reference.py``), but for the skew's ``m2 ** 1.5``: numba's power is not
    numpy's to the last bit, so the skew column holds the third moment and the caller divides
    it with numpy (:func:`classifier.features.segments._divide_skew`)."""
    G, S = acc.shape[0], acc.shape[1]
    for g in range(G):
        for s in range(S):
            c = nc + 8 * s
            n = acc[g, s, 0]
            if n > 0:
                s1 = acc[g, s, 1]
                values[g, c] = acc[g, s, 2]
                values[g, c + 1] = acc[g, s, 3]
                values[g, c + 2] = s1 / n
                values[g, c + 3] = s1
                m2 = mom[g, s, 0] / n
                values[g, c + 4] = np.sqrt(m2)
                values[g, c + 5] = m2
                if m2 > 0:
                    values[g, c + 6] = mom[g, s, 1] / n      # the caller divides by m2 ** 1.5
                    values[g, c + 7] = (mom[g, s, 2] / n) / (m2 * m2) - 3.0
            else:
                values[g, c + 3] = acc[g, s, 1]


@njit(cache=True, nogil=True)
def positive_variances(values, nc):
    """The positive variances of a segment table (:func:`segment_kernel`), in row-major order
    of (segment, subset): what ``var[var > 0]`` gives for ``var = values[:, nc:].reshape(G,
    subsets, 8)[..., 5]``, as a contiguous array."""
    G = values.shape[0]
    n = 0
    for g in range(G):
        for s in range(5):
            if values[g, nc + 8 * s + 5] > 0:
                n += 1
    out = np.empty(n, np.float64)
    n = 0
    for g in range(G):
        for s in range(5):
            v = values[g, nc + 8 * s + 5]
            if v > 0:
                out[n] = v
                n += 1
    return out


@njit(cache=True, nogil=True)
def divide_skews(values, nc, by):
    """Each skew column whose variance is positive divided by the next of ``by`` (the same
    order as :func:`positive_variances`)."""
    G = values.shape[0]
    n = 0
    for g in range(G):
        for s in range(5):
            c = nc + 8 * s
            if values[g, c + 5] > 0:
                values[g, c + 6] = values[g, c + 6] / by[n]
                n += 1


@njit(cache=True, nogil=True)
def segment_layout(t_first, t_last, ts, end_ns, T):
    """Per device its first global segment (and the total at the end); per segment its device,
    index within the device, start, and whether it ends by the end: device d's segments start
    at ``t_first[d] + k * T`` for k up to ``(end - t_first[d]) // T``. The end: ``end_ns``
    (None: the last of ``ts``), but no earlier than any device's last packet (``t_last``)."""
    ndev = len(t_first)
    if end_ns is None:
        end = ts[0]
        for t in ts:
            if t > end:
                end = t
    else:
        end = end_ns
    for t in t_last:
        if t > end:
            end = t
    first = np.zeros(ndev + 1, np.int64)
    for d in range(ndev):
        first[d + 1] = first[d] + (end - t_first[d]) // T + 1
    G = first[ndev]
    dev_of_seg = np.empty(G, np.int64)
    k = np.empty(G, np.int64)
    start = np.empty(G, np.int64)
    complete = np.empty(G, np.bool_)
    for d in range(ndev):
        for g in range(first[d], first[d + 1]):
            dev_of_seg[g] = d
            k[g] = g - first[d]
            start[g] = t_first[d] + k[g] * T
            complete[g] = start[g] + T <= end
    return first, dev_of_seg, k, start, complete


@njit(cache=True, nogil=True)
def _segment_of(d, tt, t0, first, T, cur_g, cur_end):
    """The segment of device d's entry at ``tt``: ``first[d] + (tt - t0[d]) // T``, divided out
    only when the entry is not in the device's current segment (``cur_g[d]``, which ends at
    ``cur_end[d]``), which it then becomes."""
    if cur_end[d] - T <= tt < cur_end[d]:
        return cur_g[d]
    k = (tt - t0[d]) // T
    g = first[d] + k
    cur_g[d] = g
    cur_end[d] = t0[d] + (k + 1) * T
    return g


@njit(cache=True, nogil=True)
def segment_kernel(dev_tx, dev_rx, order, use_order, ts, wire, proto, is_user, t0, first, T, G, nproto):
    """Each segment's row of the feature table (G, 5 + nproto + 5 subsets * 8 statistics):
    counts -- total, user, control, rx, tx, then per class -- and the length statistics of
    each subset (all, user, control, rx, tx; :func:`_moments`, the skew still to be divided
    by ``var ** 1.5``). One pass accumulates each segment's counts and per subset the length
    count, sum, max and min, a second the sums of the 2nd, 3rd and 4th powers of the
    deviations from the segment's mean. The segment of a device d's entry:
    ``first[d] + (ts - t0[d]) // T``."""
    nc = 5 + nproto
    values = np.zeros((G, nc + 5 * 8))
    acc = np.zeros((G, 5, 4))
    mom = np.zeros((G, 5, 3))
    npk = len(dev_tx)
    # each device's current segment and the time it ends (:func:`_segment_of`): a device's
    # entries come in time order, so only one that crosses into a later segment is divided out;
    # the second pass walks the entries again the same way
    ndev = len(t0)
    cur_g = first[:ndev].copy()
    cur_end = t0 + T
    for j in range(npk):
        i = order[j] if use_order else j
        x = np.float64(wire[i])
        pr = proto[i]
        u = is_user[pr]
        tt = ts[i]
        for side in range(2):
            d = dev_tx[i] if side == 0 else dev_rx[i]
            if d < 0:
                continue
            t = side == 0
            g = _segment_of(d, tt, t0, first, T, cur_g, cur_end)
            values[g, 0] += 1.0
            if u:
                values[g, 1] += 1.0
            if t:
                values[g, 4] += 1.0
            values[g, 5 + pr] += 1.0
            _add(acc, g, 0, x)
            _add(acc, g, 1 if u else 2, x)
            _add(acc, g, 4 if t else 3, x)
    mean = np.zeros((G, 5))
    for g in range(G):
        values[g, 2] = values[g, 0] - values[g, 1]     # control = total - user
        values[g, 3] = values[g, 0] - values[g, 4]     # received = total - transmitted
        for k in range(5):
            if acc[g, k, 0] > 0:
                mean[g, k] = acc[g, k, 1] / acc[g, k, 0]
    cur_g[:] = first[:ndev]
    cur_end[:] = t0 + T
    for j in range(npk):
        i = order[j] if use_order else j
        x = np.float64(wire[i])
        u = is_user[proto[i]]
        tt = ts[i]
        for side in range(2):
            d = dev_tx[i] if side == 0 else dev_rx[i]
            if d < 0:
                continue
            t = side == 0
            g = _segment_of(d, tt, t0, first, T, cur_g, cur_end)
            _add_moments(mom, mean, g, 0, x)
            _add_moments(mom, mean, g, 1 if u else 2, x)
            _add_moments(mom, mean, g, 4 if t else 3, x)
    _moments(acc, mom, values, nc)
    return values


@njit(cache=True, nogil=True, inline="always")
def _is_tuple(keys, c, dp_key, lhi, llo, lp, rhi, rlo, rp):
    """Whether session ``c``'s 5-tuple (``keys[c]``, see :func:`_session_run`) is this one."""
    return (keys[c, 0] == dp_key and keys[c, 1] == lhi and keys[c, 2] == llo and keys[c, 3] == lp
            and keys[c, 4] == rhi and keys[c, 5] == rlo and keys[c, 6] == rp)


@njit(cache=True, nogil=True)
def _session_run(dev_tx, dev_rx, order, use_order, ip_version, ip_proto, src_ip, dst_ip, sport, dport, ts, wire,
                 idle_ns, j0, table, keys, s_pkt, s_tx, s_dev, s_last, vol, st, recent):
    """:func:`session_kernel`'s loop from the ``j0``-th packet in time order until the end, or
    until its tables are full (returns where it stopped). ``keys[s]``: session s's 5-tuple
    (device, protocol, local address and port, remote address and port) and its hash;
    ``vol[s]``: packets out, in, bytes out, in; ``st``: 5-tuples and sessions held;
    ``recent[d]``: the session device d's last entry joined (-1: none), the latest of its
    5-tuple, which an entry of the same 5-tuple joins without a look-up while it is live."""
    npk = len(dev_tx)
    n_keys = st[0]
    ns = st[1]
    mask = len(table) - 1
    cap = len(s_pkt)
    for j in range(j0, npk):
        if 2 * (n_keys + 2) > len(table) or ns + 2 > cap:
            st[0] = n_keys
            st[1] = ns
            return j
        i = order[j] if use_order else j
        if ip_version[i] == 0 or (dev_tx[i] < 0 and dev_rx[i] < 0):
            continue
        pr = np.uint64(ip_proto[i])
        shi, slo, dhi, dlo = src_ip[i, 0], src_ip[i, 1], dst_ip[i, 0], dst_ip[i, 1]
        sp, dp = np.uint64(np.int64(sport[i])), np.uint64(np.int64(dport[i]))
        t = ts[i]
        ln = np.int64(wire[i])
        for side in range(2):
            d = dev_tx[i] if side == 0 else dev_rx[i]
            if d < 0:
                continue
            tx = side == 0
            if tx:
                lhi, llo, lp, rhi, rlo, rp = shi, slo, sp, dhi, dlo, dp
            else:
                lhi, llo, lp, rhi, rlo, rp = dhi, dlo, dp, shi, slo, sp
            dp_key = (np.uint64(d) << np.uint64(8)) | pr
            c = recent[d]
            if c >= 0 and t - s_last[c] <= idle_ns and _is_tuple(keys, c, dp_key, lhi, llo, lp, rhi, rlo, rp):
                s = c           # the live session its device's last entry joined: no look-up
            else:
                h = _mix(dp_key * np.uint64(0xD6E8FEB86659FD93) ^ lhi * np.uint64(0xA0761D6478BD642F)
                         ^ llo * np.uint64(0xE7037ED1A0B428DB) ^ rhi * np.uint64(0x8EBC6AF09C88C6E3)
                         ^ rlo * np.uint64(0x589965CC75374CC3)
                         ^ ((lp << np.uint64(32)) | (rp & np.uint64(0xFFFFFFFF))) * np.uint64(0x1D8E4E27C47D124F),
                         np.uint64(0))
                slot = np.int64(h & np.uint64(mask))
                s = -1
                while True:
                    c = table[slot]
                    if c < 0:
                        break
                    if keys[c, 7] == h and _is_tuple(keys, c, dp_key, lhi, llo, lp, rhi, rlo, rp):
                        s = c if t - s_last[c] <= idle_ns else -2
                        break
                    slot = (slot + 1) & mask
                if s < 0:
                    if s == -1:
                        n_keys += 1
                    s = ns
                    ns += 1
                    table[slot] = s
                    keys[s, 0] = dp_key
                    keys[s, 1] = lhi
                    keys[s, 2] = llo
                    keys[s, 3] = lp
                    keys[s, 4] = rhi
                    keys[s, 5] = rlo
                    keys[s, 6] = rp
                    keys[s, 7] = h
                    s_pkt[s] = i
                    s_tx[s] = tx
                    s_dev[s] = d
                    vol[s, 0] = 0
                    vol[s, 1] = 0
                    vol[s, 2] = 0
                    vol[s, 3] = 0
                recent[d] = s
            s_last[s] = t
            if tx:
                vol[s, 0] += 1
                vol[s, 2] += ln
            else:
                vol[s, 1] += 1
                vol[s, 3] += ln
    st[0] = n_keys
    st[1] = ns
    return npk


@njit(cache=True, nogil=True)
def _grown_rows(a, n):
    b = np.empty((2 * a.shape[0], a.shape[1]), a.dtype)
    b[:n] = a[:n]
    return b


@njit(cache=True, nogil=True)
def _grown_sessions(table, keys):
    size = 2 * len(table)
    mask = size - 1
    new = np.full(size, -1, np.int64)
    for slot0 in range(len(table)):
        s = table[slot0]
        if s < 0:
            continue
        slot = np.int64(keys[s, 7] & np.uint64(mask))
        while new[slot] >= 0:
            slot = (slot + 1) & mask
        new[slot] = s
    return new


@njit(cache=True, nogil=True)
def session_kernel(dev_tx, dev_rx, order, use_order, ndev, ip_version, ip_proto, src_ip, dst_ip, sport, dport, ts,
                   wire, idle_ns):
    """Sessions of every device: per session (grouped by device, in the order they were
    born), whether the device sent its first packet, its device, packets and bytes each way
    (out, in, out, in), then the table's columns (:func:`session_columns`)."""
    npk = len(dev_tx)
    cap = 16                                     # grown as needed: a small capture allocates little
    while cap < 1024 and cap < 2 * npk:
        cap *= 2
    keys = np.empty((cap, 8), np.uint64)
    s_pkt = np.empty(cap, np.int64)
    s_tx = np.empty(cap, np.bool_)
    s_dev = np.empty(cap, np.int32)
    s_last = np.empty(cap, np.int64)
    vol = np.empty((cap, 4), np.int64)
    table = np.full(2 * cap, -1, np.int64)       # slot -> the 5-tuple's latest session
    st = np.zeros(2, np.int64)
    recent = np.full(ndev, -1, np.int64)
    j = 0
    while True:
        j = _session_run(dev_tx, dev_rx, order, use_order, ip_version, ip_proto, src_ip, dst_ip, sport, dport, ts,
                         wire, idle_ns, j, table, keys, s_pkt, s_tx, s_dev, s_last, vol, st, recent)
        if j >= npk:
            break
        ns = st[1]
        if ns + 2 > len(s_pkt):
            keys = _grown_rows(keys, ns)
            s_pkt = _grown(s_pkt, ns)
            s_tx = _grown(s_tx, ns)
            s_dev = _grown(s_dev, ns)
            s_last = _grown(s_last, ns)
            vol = _grown_rows(vol, ns)
        if 2 * (st[0] + 2) > len(table):
            table = _grown_sessions(table, keys)
    ns = st[1]
    # group by device, keeping the order of birth (a stable counting sort)
    cnt = np.zeros(ndev + 1, np.int64)
    for s in range(ns):
        cnt[s_dev[s] + 1] += 1
    for d in range(ndev):
        cnt[d + 1] += cnt[d]
    pos = np.empty(ns, np.int64)
    for s in range(ns):
        d = s_dev[s]
        pos[cnt[d]] = s
        cnt[d] += 1
    v = vol[:ns][pos]
    pkt, tx, dev = s_pkt[pos], s_tx[pos], s_dev[pos]
    start, interval, duration, proto, version, local_ip, remote_ip, local_port, remote_port = session_columns(
        pkt, tx, dev, s_last[pos], ts, ip_proto, ip_version, src_ip, dst_ip, sport, dport)
    return (tx, dev, v[:, 0].copy(), v[:, 1].copy(), v[:, 2].copy(), v[:, 3].copy(), start, interval, duration,
            proto, version, local_ip, remote_ip, local_port, remote_port)


@njit(cache=True, nogil=True)
def session_columns(pkt, tx, s_dev, last, ts, ip_proto, ip_version, src_ip, dst_ip, sport, dport):
    """The session table's columns from :func:`session_kernel`'s answer, in one pass: start,
    interval since the device's previous session start (0 for its first), duration (s),
    protocol, IP version, and the local and remote address and port (the device's side is the
    sender's where it sent the first packet)."""
    ns = len(pkt)
    start = np.empty(ns, np.int64)
    interval = np.zeros(ns)
    duration = np.empty(ns)
    proto = np.empty(ns, ip_proto.dtype)
    version = np.empty(ns, ip_version.dtype)
    local_ip = np.empty((ns, 2), src_ip.dtype)
    remote_ip = np.empty((ns, 2), src_ip.dtype)
    local_port = np.empty(ns, np.int32)
    remote_port = np.empty(ns, np.int32)
    for s in range(ns):
        p = pkt[s]
        t = ts[p]
        start[s] = t
        duration[s] = np.float64(last[s] - t) * 1e-9
        if s > 0 and s_dev[s] == s_dev[s - 1]:
            interval[s] = np.float64(t - start[s - 1]) * 1e-9
        proto[s] = ip_proto[p]
        version[s] = ip_version[p]
        if tx[s]:
            local_ip[s, 0], local_ip[s, 1] = src_ip[p, 0], src_ip[p, 1]
            remote_ip[s, 0], remote_ip[s, 1] = dst_ip[p, 0], dst_ip[p, 1]
            local_port[s], remote_port[s] = sport[p], dport[p]
        else:
            local_ip[s, 0], local_ip[s, 1] = dst_ip[p, 0], dst_ip[p, 1]
            remote_ip[s, 0], remote_ip[s, 1] = src_ip[p, 0], src_ip[p, 1]
            local_port[s], remote_port[s] = dport[p], sport[p]
    return start, interval, duration, proto, version, local_ip, remote_ip, local_port, remote_port


@njit(cache=True, nogil=True)
def device_span(src, dst, ts, mac):
    """One device's entries in a packet table (a packet it sent, one it received; both for a
    packet to itself), its first and last time, and whether the table's times never decrease."""
    n = len(src)
    entries = 0
    t_min = np.int64(0)
    t_max = np.int64(0)
    ordered = True
    for i in range(n):
        t = ts[i]
        if i > 0 and t < ts[i - 1]:
            ordered = False
        k = (1 if src[i] == mac else 0) + (1 if dst[i] == mac else 0)
        if k:
            if entries == 0:
                t_min = t
                t_max = t
            else:
                if t < t_min:
                    t_min = t
                if t > t_max:
                    t_max = t
            entries += k
    return entries, t_min, t_max, ordered


@njit(cache=True, nogil=True)
def device_sides(src, dst, mac):
    """Per packet: 0 where device ``mac`` sent it, -1 elsewhere; and 0 where it received it."""
    n = len(src)
    dev_tx = np.full(n, -1, np.int32)
    dev_rx = np.full(n, -1, np.int32)
    for i in range(n):
        if src[i] == mac:
            dev_tx[i] = 0
        if dst[i] == mac:
            dev_rx[i] = 0
    return dev_tx, dev_rx
