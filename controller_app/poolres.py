"""Which IP prefixes make up an IP pool, for one device: the interface the controller needs to
turn a policy's ``allow_pools: [name, ...]`` into OpenFlow matches.

A resolver has two methods, both called only from the controller's worker thread (never the
event loop, so they may block on RDAP or DNS):

* ``observe(mac, packets, sessions=None)``: the device's mirrored packets at each
  classification, and the device's session table when the caller built it already (the
  shell builds it once per decision, for this and for the engine); a resolver may learn from
  them which destinations the device uses;
* ``prefixes(pool, mac)``: the prefixes (CIDR strings or ``ipaddress`` networks) of ``pool``
  for device ``mac``. Raising means "look-up failed": the controller logs it, counts it and
  keeps the LAN and the policy's literal CIDRs (plus whatever it resolved before).

:class:`SeenPoolResolver` is the default: a pool is what that device's sessions were seen
going to in that pool. Its source of pools is ``pool_table(addresses)``, vectorised (as
:meth:`classifier.pools.resolver.PoolResolver.resolve_table`: each distinct address resolved
once), or ``pool_of(address)``, one address (text) at a time; an answer is a pool name, or an
object with ``pool`` and ``prefix`` (such as a :class:`~classifier.pools.resolver.PoolInfo`):
then the whole registered prefix is allowed, so that a cloud address that changes within it
stays allowed. The answers also fill the session table's empty ``pool`` column, so that the
engine deciding on the same table resolves nothing again. Without a source, only sessions
whose ``pool`` column is already filled count; pool names otherwise resolve to nothing.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from typing import Callable, Protocol

import numpy as np

from classifier.capture.packets import Packets, ips_to_str
from classifier.features.devices import split_devices
from classifier.features.sessions import Sessions, session_table

LOG = logging.getLogger("controller_app.pools")


class PoolResolver(Protocol):
    def observe(self, mac: int, packets: Packets, sessions: Sessions | None = None) -> None: ...

    def prefixes(self, pool: str, mac: int) -> list: ...


class SeenPoolResolver:
    def __init__(self, pool_of: Callable[[str], object] | None = None, max_per_pool: int = 64,
                 pool_table: Callable[[np.ndarray], tuple] | None = None):
        self.pool_of = pool_of
        self.pool_table = pool_table
        self.max_per_pool = max_per_pool
        self.seen: dict[int, dict[str, set]] = {}
        self._lock = threading.Lock()
        self._warned = False

    def _answers(self, ips: np.ndarray) -> tuple[np.ndarray, list, np.ndarray]:
        """(distinct addresses, an answer or None for each, inverse index)."""
        if self.pool_table is not None:
            uniq, answers, inverse = self.pool_table(ips)
            return uniq, list(answers), np.asarray(inverse)
        uniq, inverse = np.unique(ips, axis=0, return_inverse=True)
        inverse = inverse.ravel()
        if self.pool_of is None:
            return uniq, [None] * len(uniq), inverse
        return uniq, [self.pool_of(a) for a in ips_to_str(uniq)], inverse

    def observe(self, mac: int, packets: Packets, sessions: Sessions | None = None) -> None:
        """Remember where device ``mac``'s sessions go, by pool; ``sessions``: its session table
        if built already (else built here from ``packets``). Fills the table's empty pools."""
        sess = sessions
        if sess is None:
            if len(packets) == 0:
                return
            sess = session_table(packets, split_devices(packets, devices=[mac]))
        if len(sess) == 0:
            return
        uniq, answers, inverse = self._answers(sess.remote_ip)
        names = ["" if a is None else a if isinstance(a, str) else (getattr(a, "pool", "") or "") for a in answers]
        empty = sess.pool == ""
        if empty.any():
            sess.pool[empty] = np.asarray(names, dtype=object)[inverse[empty]]
        # per distinct address: its pool (a session's own where it came filled) and its network
        _, first = np.unique(inverse, return_index=True)
        found = []
        for addr, ans, name, row in zip(ips_to_str(uniq), answers, names, first.tolist()):
            if empty[row]:      # resolved here: the source's pool, and its registered prefix if it gives one
                pool, prefix = name, ("" if ans is None or isinstance(ans, str) else getattr(ans, "prefix", "") or "")
            else:               # the caller's pool
                pool, prefix = sess.pool[row], ""
            if not pool:
                continue
            net = ipaddress.ip_network(addr)
            if prefix:
                try:
                    p = ipaddress.ip_network(prefix, strict=False)
                except ValueError:
                    p = None
                if p is not None and p.version == net.version and net.subnet_of(p) and p.prefixlen >= 8:
                    net = p
            found.append((pool, net))
        with self._lock:
            mine = self.seen.setdefault(mac, {})
            for pool, net in found:
                s = mine.setdefault(pool, set())
                if len(s) < self.max_per_pool:
                    s.add(net)

    def prefixes(self, pool: str, mac: int) -> list:
        with self._lock:
            nets = sorted(self.seen.get(mac, {}).get(pool, ()), key=lambda n: (n.version, int(n.network_address)))
        if not nets and self.pool_of is None and self.pool_table is None and not self._warned:
            self._warned = True
            LOG.warning("no IP-pool resolver configured: pool names in allow_pools resolve to no prefixes "
                        "(the LAN and literal CIDR prefixes still apply)")
        return nets
