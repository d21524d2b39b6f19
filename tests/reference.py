"""Plain-Python reference implementations (one packet at a time) of the vectorised
feature code, written from the definitions in the module docstrings."""

from __future__ import annotations

import math
from collections import defaultdict

from classifier.capture.protocols import IS_USER


def unicast(mac: int) -> bool:
    return mac != 0 and not (mac >> 40) & 1


def device_entries(pk, gateways=()):
    """{mac: [(packet index, tx)]} in time order."""
    out = defaultdict(list)
    for i in range(len(pk)):
        s, d = int(pk.eth_src[i]), int(pk.eth_dst[i])
        if unicast(s) and s not in gateways:
            out[s].append((i, True))
        if unicast(d) and d not in gateways:
            out[d].append((i, False))
    for mac in out:
        out[mac].sort(key=lambda e: (int(pk.ts_ns[e[0]]), e[0]))
    return dict(out)


def stats(xs):
    """(max, min, mean, sum, std, var, skew, kurt) as the segment module defines them."""
    n = len(xs)
    if n == 0:
        return (0.0,) * 8
    mean = sum(xs) / n
    m2 = sum((x - mean) ** 2 for x in xs) / n
    m3 = sum((x - mean) ** 3 for x in xs) / n
    m4 = sum((x - mean) ** 4 for x in xs) / n
    skew = m3 / m2 ** 1.5 if m2 > 0 else 0.0
    kurt = m4 / m2 ** 2 - 3.0 if m2 > 0 else 0.0
    return (max(xs), min(xs), mean, float(sum(xs)), math.sqrt(m2), m2, skew, kurt)


def segment_rows(pk, interval, gateways=()):
    """{(mac, k): {"n_total":..., "len_user_mean":..., ...}} for every segment up to the end."""
    T = int(round(interval * 1e9))
    end = int(pk.ts_ns.max())
    rows = {}
    for mac, ents in device_entries(pk, gateways).items():
        t0 = int(pk.ts_ns[ents[0][0]])
        nseg = (end - t0) // T + 1
        buckets = defaultdict(list)
        for i, tx in ents:
            buckets[(int(pk.ts_ns[i]) - t0) // T].append((i, tx))
        for k in range(nseg):
            es = buckets.get(k, [])
            subsets = {
                "all": [e for e in es],
                "user": [e for e in es if IS_USER[pk.proto[e[0]]]],
                "control": [e for e in es if not IS_USER[pk.proto[e[0]]]],
                "rx": [e for e in es if not e[1]],
                "tx": [e for e in es if e[1]],
            }
            row = {"n_total": len(es), "n_user": len(subsets["user"]), "n_control": len(subsets["control"]),
                   "n_rx": len(subsets["rx"]), "n_tx": len(subsets["tx"]),
                   "start_ns": t0 + k * T}
            for name, sub in subsets.items():
                vals = stats([float(pk.wire_len[i]) for i, _ in sub])
                for st, v in zip(("max", "min", "mean", "sum", "std", "var", "skew", "kurt"), vals):
                    row[f"len_{name}_{st}"] = v
            rows[(mac, k)] = row
    return rows


def sessions(pk, idle_timeout, gateways=()):
    """List of sessions (dicts) per device, in start order, following the module's definition."""
    out = {}
    timeout = int(idle_timeout * 1e9)
    for mac, ents in device_entries(pk, gateways).items():
        open_ = {}
        done = []
        for i, tx in ents:
            if pk.ip_version[i] == 0:
                continue
            src, dst = tuple(pk.src_ip[i].tolist()), tuple(pk.dst_ip[i].tolist())
            sp, dp = int(pk.sport[i]), int(pk.dport[i])
            key = (int(pk.ip_proto[i]),) + ((src, sp, dst, dp) if tx else (dst, dp, src, sp))
            ts = int(pk.ts_ns[i])
            s = open_.get(key)
            if s is None or ts - s["last"] > timeout:
                s = {"key": key, "start": ts, "last": ts, "packets_out": 0, "packets_in": 0, "bytes_out": 0,
                     "bytes_in": 0, "outbound": tx}
                open_[key] = s
                done.append(s)
            s["last"] = ts
            w = int(pk.wire_len[i])
            if tx:
                s["packets_out"] += 1
                s["bytes_out"] += w
            else:
                s["packets_in"] += 1
                s["bytes_in"] += w
        done.sort(key=lambda s: s["start"])
        prev = None
        for s in done:
            s["interval"] = 0.0 if prev is None else (s["start"] - prev) * 1e-9
            s["duration"] = (s["last"] - s["start"]) * 1e-9
            prev = s["start"]
        out[mac] = done
    return out
