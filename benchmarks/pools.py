"""Pool benchmark: offline look-up speed, and how many destinations get an organisation pool.

``python -m benchmarks.pools [--json] [--compare]`` measures, on this machine:

* offline look-ups/s of ``--random N`` distinct random routable IPv4 addresses (seeded), the
  first time (cold: a fresh resolver, the database's blocks decoded as they are reached) and
  again (warm: each distinct address answered from the resolver's memo); best of ``--repeat``;
* ``resolve_many`` over every session's remote address in the shared captures (sessions/s,
  cold and warm) — the path that fills the session table;
* per data set in ../shared/datasets (gateways excluded, as the labels name them): distinct
  destinations (remote addresses of sessions) and sessions, and the share that resolves to an
  organisation pool (not special, not ``unknown``), overall and among public addresses.

``--compare`` adds, where installed, geoip2fast (its bundled ASN data) on the same addresses:
coverage and look-ups/s (it gives an AS name and CIDR but no AS number).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from classifier.pools.asndb import SPECIAL_POOLS, SpecialClassifier, V4_MAPPED, text_of


def _random_public_v4(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    special = SpecialClassifier()
    out = np.zeros((0, 2), np.uint64)
    while len(out) < n:
        v = rng.integers(1 << 24, 224 << 24, size=2 * n, dtype=np.uint64)
        ips = np.stack([np.zeros_like(v), np.uint64(V4_MAPPED) | v], axis=1)
        ips = ips[special.classify(ips) == ""]
        out = np.unique(np.concatenate([out, ips]), axis=0)
    return out[rng.permutation(len(out))[:n]]


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def _shared_sessions():
    """{data set: (remote addresses (n, 2), MACs)} over the shared captures, gateways excluded."""
    from classifier.capture.labels import load_datasets
    from classifier.features.pipeline import load_captures
    from classifier.features.sessions import session_table
    from classifier.shared import datasets_root
    root = datasets_root()
    if root is None:
        return None
    out = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        paths = sorted(str(p) for p in folder.rglob("*.gz"))
        if not paths:
            continue
        labels = load_datasets([folder])
        parts = []
        for cap in load_captures(paths, (), labels, desc=folder.name):
            parts.append(session_table(cap.packets, cap.view).remote_ip)
        out[folder.name] = np.concatenate(parts) if parts else np.zeros((0, 2), np.uint64)
    return out


def _coverage(pools: np.ndarray, ips: np.ndarray) -> dict:
    uniq, first = np.unique(ips, axis=0, return_index=True)
    distinct = pools[first]
    special = np.isin(distinct, [p for p in SPECIAL_POOLS if p != "unknown"])
    org = ~np.isin(distinct, SPECIAL_POOLS)
    sess_special = np.isin(pools, [p for p in SPECIAL_POOLS if p != "unknown"])
    sess_org = ~np.isin(pools, SPECIAL_POOLS)
    return {
        "destinations": int(len(uniq)),
        "special": int(special.sum()),
        "organisation": int(org.sum()),
        "unknown": int((distinct == "unknown").sum()),
        "share_organisation": float(org.mean()) if len(uniq) else 0.0,
        "share_organisation_of_public": float(org.sum() / max(1, (~special).sum())),
        "sessions": int(len(pools)),
        "sessions_share_organisation": float(sess_org.mean()) if len(pools) else 0.0,
        "sessions_share_organisation_of_public": float(sess_org.sum() / max(1, (~sess_special).sum())),
    }


def _geoip2fast(texts: list[str]) -> dict | None:
    try:
        from geoip2fast import GeoIP2Fast
    except ImportError:
        return None
    g, load = _timed(lambda: GeoIP2Fast(geoip2fast_data_file="geoip2fast-asn-ipv6.dat.gz"))
    res, dt = _timed(lambda: [g.lookup(t) for t in texts])
    return {"load_s": load, "lookups_per_s": len(texts) / dt, "with_asn_name": sum(1 for r in res if r.asn_name),
            "addresses": len(texts)}


def _cold_and_warm(ips: np.ndarray, repeat: int):
    """Pools, and the best time of ``repeat`` fresh resolvers (cold) and of ``repeat`` more calls (warm)."""
    from classifier.pools.resolver import PoolResolver
    cold = warm = float("inf")
    for _ in range(repeat):
        r = PoolResolver()
        pools, dt = _timed(r.resolve_many, ips)
        cold = min(cold, dt)
    for _ in range(repeat):
        warm = min(warm, _timed(r.resolve_many, ips)[1])
    return r, pools, cold, warm


def run(n_random: int = 20000, compare: bool = False, repeat: int = 3) -> dict:
    out: dict = {"repeat": repeat}
    rnd = _random_public_v4(n_random)
    r, pools, cold, warm = _cold_and_warm(rnd, repeat)
    out["offline_database"] = r.offline.name
    out["random_addresses"] = len(rnd)
    out["offline_cold_lookups_per_s"] = len(rnd) / cold
    out["random_share_organisation"] = float((~np.isin(pools, SPECIAL_POOLS)).mean())
    out["offline_warm_lookups_per_s"] = len(rnd) / warm
    if compare:
        g = _geoip2fast([text_of((int(h) << 64) | int(lo)) for h, lo in rnd.tolist()])
        if g is not None:
            out["geoip2fast_random"] = g

    shared = _shared_sessions()
    if shared is None:
        out["shared"] = "../shared/datasets is absent"
        return out
    all_ips = np.concatenate(list(shared.values()))
    _, pools, cold, warm = _cold_and_warm(all_ips, repeat)
    out["shared_sessions"] = len(all_ips)
    out["shared_sessions_per_s_cold"] = len(all_ips) / cold
    out["shared_sessions_per_s_warm"] = len(all_ips) / warm
    out["shared"] = {"all": _coverage(pools, all_ips)}
    start = 0
    for name, ips in shared.items():
        out["shared"][name] = _coverage(pools[start:start + len(ips)], ips)
        start += len(ips)
    if compare:
        uniq = np.unique(all_ips, axis=0)
        keep = SpecialClassifier().classify(uniq) == ""
        texts = [text_of((int(h) << 64) | int(lo)) for h, lo in uniq[keep].tolist()]
        g = _geoip2fast(texts)
        if g is not None:
            out["geoip2fast_shared_public"] = g
    return out


def format_result(res: dict) -> str:
    lines = [f"offline database: {res['offline_database']}",
             f"offline look-ups, {res['random_addresses']} distinct random public IPv4: "
             f"{res['offline_cold_lookups_per_s']:,.0f}/s cold, {res['offline_warm_lookups_per_s']:,.0f}/s warm "
             f"({res['random_share_organisation']:.1%} in an organisation pool)"]
    if "geoip2fast_random" in res:
        g = res["geoip2fast_random"]
        lines.append(f"geoip2fast (same addresses): {g['lookups_per_s']:,.0f}/s, {g['with_asn_name']}/{g['addresses']} "
                     f"with an AS name (no AS number), data loaded in {g['load_s']:.2f} s")
    if isinstance(res.get("shared"), str):
        lines.append(res["shared"])
        return "\n".join(lines)
    lines.append(f"resolve_many over the shared captures' {res['shared_sessions']:,} sessions: "
                 f"{res['shared_sessions_per_s_cold']:,.0f} sessions/s cold, "
                 f"{res['shared_sessions_per_s_warm']:,.0f} warm")
    lines.append(f"{'data set':<14}{'destinations':>13}{'special':>9}{'org pool':>10}{'unknown':>9}"
                 f"{'org share':>11}{'of public':>11}{'sessions':>10}{'org share':>11}{'of public':>11}")
    for name, c in res["shared"].items():
        lines.append(f"{name:<14}{c['destinations']:>13}{c['special']:>9}{c['organisation']:>10}{c['unknown']:>9}"
                     f"{c['share_organisation']:>11.1%}{c['share_organisation_of_public']:>11.1%}"
                     f"{c['sessions']:>10}{c['sessions_share_organisation']:>11.1%}"
                     f"{c['sessions_share_organisation_of_public']:>11.1%}")
    if "geoip2fast_shared_public" in res:
        g = res["geoip2fast_shared_public"]
        lines.append(f"geoip2fast on the shared public destinations: {g['with_asn_name']}/{g['addresses']} with an "
                     "AS name (no AS number)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pools", description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--random", type=int, default=20000, metavar="N", help="random addresses (default 20000)")
    p.add_argument("--compare", action="store_true", help="also geoip2fast, where installed")
    p.add_argument("--repeat", type=int, default=3, help="best of N fresh resolvers (cold) and N calls (warm)")
    args = p.parse_args(argv)
    res = run(args.random, args.compare, args.repeat)
    if args.json:
        json.dump(res, sys.stdout, indent=2)
        print()
    else:
        print(format_result(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
