"""Which IP prefixes make up an IP pool, for one device: the interface the controller needs to
turn a policy's ``allow_pools: [name, ...]`` into OpenFlow matches.

A resolver has two methods, both called only from the controller's worker thread (never the
event loop, so they may block on RDAP or DNS):

* ``observe(mac, packets)``: the device's mirrored packets at each classification (a
  resolver may learn from them which destinations the device uses);
* ``prefixes(pool, mac)``: the prefixes (CIDR strings or ``ipaddress`` networks) of ``pool``
  for device ``mac``. Raising means "look-up failed": the controller logs it, counts it and
  keeps the LAN and the policy's literal CIDRs (plus whatever it resolved before).

:class:`SeenPoolResolver` is the default: a pool is what that device's sessions were seen
going to in that pool. It needs ``pool_of(address)`` from the IP-pools component, returning a
pool name, or an object with ``pool`` and ``prefix`` (such as an RDAP answer): then the whole
registered prefix is allowed, so that a cloud address that changes within it stays allowed.
Without ``pool_of``, only sessions whose ``pool`` column is already filled count; pool names
otherwise resolve to nothing.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from typing import Callable, Protocol

from classifier.features.devices import split_devices
from classifier.capture.packets import Packets, ips_to_str
from classifier.features.sessions import session_table

LOG = logging.getLogger("controller_app.pools")


class PoolResolver(Protocol):
    def observe(self, mac: int, packets: Packets) -> None: ...

    def prefixes(self, pool: str, mac: int) -> list: ...


class SeenPoolResolver:
    def __init__(self, pool_of: Callable[[str], str | None] | None = None, max_per_pool: int = 64):
        self.pool_of = pool_of
        self.max_per_pool = max_per_pool
        self.seen: dict[int, dict[str, set]] = {}
        self._lock = threading.Lock()
        self._warned = False

    def observe(self, mac: int, packets: Packets) -> None:
        if len(packets) == 0:
            return
        sess = session_table(packets, split_devices(packets, devices=[mac]))
        if len(sess) == 0:
            return
        pools = list(sess.pool)
        addrs = ips_to_str(sess.remote_ip)
        with self._lock:
            mine = self.seen.setdefault(mac, {})
            for addr, pool in zip(addrs, pools):
                net = ipaddress.ip_network(addr)
                if not pool and self.pool_of is not None:
                    info = self.pool_of(addr)
                    pool = info if isinstance(info, str) or info is None else getattr(info, "pool", "")
                    prefix = getattr(info, "prefix", "") if not isinstance(info, str) else ""
                    try:
                        p = ipaddress.ip_network(prefix, strict=False) if prefix else None
                    except ValueError:
                        p = None
                    if p is not None and p.version == net.version and net.subnet_of(p) and p.prefixlen >= 8:
                        net = p
                if not pool:
                    continue
                s = mine.setdefault(pool, set())
                if len(s) < self.max_per_pool:
                    s.add(net)

    def prefixes(self, pool: str, mac: int) -> list:
        with self._lock:
            nets = sorted(self.seen.get(mac, {}).get(pool, ()), key=lambda n: (n.version, int(n.network_address)))
        if not nets and self.pool_of is None and not self._warned:
            self._warned = True
            LOG.warning("no IP-pool resolver configured: pool names in allow_pools resolve to no prefixes "
                        "(the LAN and literal CIDR prefixes still apply)")
        return nets
