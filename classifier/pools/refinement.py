"""Merging pools that devices use together: the pools' co-usage graph (networkx) and
:func:`refine_pools`, whose merge map :class:`~classifier.pools.vocabulary.PoolVocabulary`
applies before its look-up.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping

import numpy as np

from classifier.pools.asndb import SPECIAL_POOLS, PoolError


def _tables(sessions) -> list:
    return [sessions] if hasattr(sessions, "pool") else list(sessions)


def co_usage_graph(sessions, window: float = 60.0, exclude: Iterable[str] = SPECIAL_POOLS):
    """The pools' co-usage graph (networkx): pools used together by a device in one burst.

    A burst is a run of one device's sessions whose starts are at most ``window`` seconds apart
    (one Sessions table per capture: bursts never span tables). Node attribute ``bursts``: how
    many bursts use the pool; edge attributes ``bursts`` (how many bursts use both) and
    ``devices`` (how many devices those bursts come from). Pools in ``exclude`` (the special
    pools, by default) and '' are left out.
    """
    import networkx as nx
    exclude = set(exclude)
    node_bursts: Counter = Counter()
    edge_bursts: Counter = Counter()
    edge_devices: dict[tuple[str, str], set] = {}
    for t, s in enumerate(_tables(sessions)):
        n = len(s)
        if n == 0:
            continue
        if s.pool is None or not any(s.pool.tolist()):
            raise PoolError(f"co-usage graph: session table {t} has no pools: run fill_pools first")
        new = np.ones(n, bool)
        new[1:] = (s.mac[1:] != s.mac[:-1]) | (np.diff(s.start_ns) > int(window * 1e9))
        burst = np.cumsum(new) - 1
        names, code = np.unique(s.pool.astype(str), return_inverse=True)
        code = code.ravel()
        keep = np.array([nm not in exclude and nm != "" for nm in names.tolist()], bool)[code]
        pairs = np.unique(burst[keep].astype(np.int64) * len(names) + code[keep])
        b, c = pairs // len(names), pairs % len(names)
        bounds = np.flatnonzero(np.diff(b)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [len(b)]])
        macs = s.mac
        first_of_burst = np.flatnonzero(new)
        for lo, hi in zip(starts.tolist(), ends.tolist()):
            if hi <= lo:
                continue
            members = sorted(names[c[lo:hi]].tolist())
            node_bursts.update(members)
            if len(members) < 2:
                continue
            device = (t, int(macs[first_of_burst[b[lo]]]))
            for i in range(len(members)):
                for j in range(i + 1, len(members)):
                    key = (members[i], members[j])
                    edge_bursts[key] += 1
                    edge_devices.setdefault(key, set()).add(device)
    g = nx.Graph()
    for p in sorted(node_bursts):
        g.add_node(p, bursts=node_bursts[p])
    for (a, b_), k in sorted(edge_bursts.items()):
        g.add_edge(a, b_, bursts=k, devices=len(edge_devices[(a, b_)]))
    return g


def refine_pools(sessions, *, window: float = 60.0, threshold: float = 0.5, min_support: int = 3,
                 min_devices: int = 1, exclude: Iterable[str] = SPECIAL_POOLS) -> dict[str, str]:
    """Merge pools that devices use together; returns {old pool: new pool} for pools that change.

    Deterministic and optional. On the co-usage graph (:func:`co_usage_graph`), two pools are
    linked when at least ``min_support`` bursts, from at least ``min_devices`` devices, use both
    and their Jaccard index (bursts using both / bursts using either) is at least ``threshold``.
    Each connected component of linked pools becomes one pool named after its member used in the
    most bursts (ties: the first name in sort order). Special pools are never merged.
    Apply the map with :func:`apply_pool_map`, or give it to :class:`PoolVocabulary` as ``merges``.
    """
    import networkx as nx
    g = co_usage_graph(sessions, window, exclude)
    keep = nx.Graph()
    keep.add_nodes_from(g.nodes)
    for a, b, d in g.edges(data=True):
        na, nb = g.nodes[a]["bursts"], g.nodes[b]["bursts"]
        jaccard = d["bursts"] / (na + nb - d["bursts"])
        if d["bursts"] >= min_support and d["devices"] >= min_devices and jaccard >= threshold:
            keep.add_edge(a, b)
    mapping = {}
    for comp in nx.connected_components(keep):
        if len(comp) < 2:
            continue
        rep = min(comp, key=lambda p: (-g.nodes[p]["bursts"], p))
        for p in sorted(comp):
            if p != rep:
                mapping[p] = rep
    return dict(sorted(mapping.items()))


def apply_pool_map(pools: np.ndarray, mapping: Mapping[str, str]) -> np.ndarray:
    """Pool names with ``mapping`` applied (a new object array)."""
    arr = np.asarray(pools, dtype=object)
    if not mapping or arr.size == 0:
        return arr.copy()
    uniq, inverse = np.unique(arr.astype(str), return_inverse=True)
    mapped = np.array([mapping.get(u, u) for u in uniq.tolist()], dtype=object)
    return mapped[inverse.ravel()].reshape(arr.shape)
