"""IP pools (Chen et al., sec. 3.4): each session's remote address mapped to a pool.

A device whose cloud address changes keeps talking to the same organisation, so its sessions
keep the same pool. The mapping:

1. **Special addresses** never leave the machine (:mod:`classifier.pools.asndb`): private ranges
   (the devices' own LAN, and any ``lan_networks`` given) are ``lan``; then ``loopback``,
   ``link-local``, ``multicast``, ``broadcast``, ``private`` (carrier-grade NAT) and
   ``reserved``.
2. Every other address gets its **organisation pool**: one pool per AS, named
   ``as<ASN>-<organisation>`` (e.g. ``as15169-google``); where no AS announces the address but
   its holder is known, ``org-<holder>``; with no data at all, ``unknown``.

Where the answer comes from depends on the mode:

* ``offline`` (default): the offline database only (:func:`classifier.pools.asndb.open_offline_database`;
  the plevin network database from PyPI unless told otherwise). No network, no cache file;
  the same answer on every machine with the same database version.
* ``rdap``: the persistent cache (:mod:`classifier.pools.cache`) first, then a live RDAP look-up
  through ipwhois (:mod:`classifier.pools.rdap`) in a bounded thread pool; its answer (or failure)
  is cached. A failed look-up gives ``unknown`` (or a stale cached answer, if one is held).
* ``auto``: as ``rdap``, but a failed look-up falls back to the offline database.

RDAP names the registered block and its holder, not the AS that routes it, so the ASN (and with
it the pool name) comes from ARIN's origin-AS extension where present, else from the offline
database; the cached prefix is the more specific of the registered block and the announced
prefix, so that one cached answer never spans two origin ASes. Pool names therefore agree
between modes wherever the offline database knows the address.

``resolve`` in ``rdap``/``auto`` mode blocks (bounded: see :class:`classifier.pools.rdap.RdapOptions`);
a controller calls :meth:`PoolResolver.resolve_cached_or_offline` (or ``resolve_many(...,
blocking=False)``, as the decision engine does) instead, which answers at once from the cache or
the offline database and refreshes from RDAP in the background, so that later answers use
RDAP's. Background look-ups back off as a whole when the network fails: after
``backoff_after`` look-ups in a row end unreachable, timed out or rate-limited, none is started
for ``pause`` seconds (30 s, doubled on each further failure up to 15 minutes, reset by a
success), and the queued ones are dropped.

Pool names and their embedding ids: :mod:`classifier.pools.vocabulary`.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

from classifier.pools.asndb import (SPECIAL_POOLS, PoolError, SpecialClassifier, open_offline_database, prefix_text,
                    text_of, value_of)
from classifier.pools.cache import DEFAULT_NEGATIVE_TTL, DEFAULT_POSITIVE_TTL, PoolCache, default_cache_path
from classifier.pools.rdap import RdapClient, RdapError, RdapOptions
from classifier.pools.vocabulary import is_special, pool_name

MODES = ("offline", "rdap", "auto")
SOURCES = ("special", "cache", "rdap", "offline")

__all__ = ["PoolInfo", "PoolResolver", "PoolError", "fill_pools", "MODES", "SOURCES", "SPECIAL_POOLS",
           "RdapOptions", "default_cache_path"]


# --------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class PoolInfo:
    """What is known of one address, and its pool. ``source``: special, cache, rdap or offline."""

    asn: int | None
    asn_org: str
    prefix: str
    registry: str
    country: str
    pool: str
    source: str

    def to_dict(self) -> dict:
        return asdict(self)


def _special_info(pool: str) -> PoolInfo:
    return PoolInfo(None, "", "", "", "", pool, "special")


def _unique_rows(ips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of an (n, 2) uint64 array (sorted) and the inverse index.

    A two-key lexsort: about 25x faster than ``np.unique(..., axis=0)`` or a structured view."""
    hi, lo = ips[:, 0], ips[:, 1]
    order = np.lexsort((lo, hi))
    h, l = hi[order], lo[order]
    new = np.ones(len(order), bool)
    new[1:] = (h[1:] != h[:-1]) | (l[1:] != l[:-1])
    inverse = np.empty(len(order), np.int64)
    inverse[order] = np.cumsum(new) - 1
    return ips[order[new]], inverse


class PoolResolver:
    """Addresses -> pools (see the module docstring).

    ``mode``: offline | rdap | auto. ``cache_path``: the SQLite cache used in rdap/auto mode
    (a path or a :class:`~classifier.pools.cache.PoolCache`; default ``$IOT_POOL_CACHE`` or
    ``~/.cache/iotclass/pools.sqlite``); offline mode opens no cache. ``lan_networks``: extra
    prefixes of the site's own LAN (their addresses are ``lan``, an IPv4 network's directed
    broadcast ``broadcast``). ``offline_db``: a ``.mmdb`` or plevin ``.plv`` file instead of the
    installed plevin database (also ``$IOT_POOL_DB``). ``rdap``: :class:`RdapOptions`, or its
    fields as keyword arguments (``bootstrap_url``, ``timeout``, ``retries``, ``backoff``,
    ``max_backoff``, ``deadline``, ``workers``).
    """

    def __init__(self, mode: str = "offline", cache_path=None, lan_networks: Iterable[str] = (), *,
                 offline_db: str | None = None, rdap: RdapOptions | None = None,
                 positive_ttl: float = DEFAULT_POSITIVE_TTL, negative_ttl: float = DEFAULT_NEGATIVE_TTL,
                 max_pending: int = 1024, backoff_after: int = 3, pause: float = 30.0, max_pause: float = 900.0,
                 **rdap_options):
        if mode not in MODES:
            raise PoolError(f"pool mode {mode!r}: use one of {', '.join(MODES)}")
        self.mode = mode
        self.special = SpecialClassifier(lan_networks)
        self.offline = open_offline_database(offline_db)
        self._memo: dict[int, PoolInfo] = {}
        self._memo_limit = 1 << 17
        self._lock = threading.Lock()
        self._inflight: dict[int, Future] = {}
        self._background: set[int] = set()      # addresses whose in-flight look-up nobody waits for
        self._max_pending = max_pending
        self._backoff_after = backoff_after
        self._pause_min, self._pause_max = pause, max_pause
        self._pause = 0.0
        self._paused_until = 0.0
        self._network_failures = 0               # background look-ups in a row that failed on the network
        self.paused = 0                          # times background look-ups were paused
        self.cache: PoolCache | None = None
        self._own_cache = False
        self.client: RdapClient | None = None
        self._executor: ThreadPoolExecutor | None = None
        if mode == "offline":
            if rdap_options:
                raise PoolError(f"RDAP options {sorted(rdap_options)} need mode rdap or auto")
            return
        try:
            opts = rdap or RdapOptions(**rdap_options)
        except TypeError as exc:
            raise PoolError(f"RDAP options: {exc}") from None
        if rdap is not None and rdap_options:
            raise PoolError("give RDAP options either as rdap=RdapOptions(...) or as keywords, not both")
        if opts.workers < 1 or opts.timeout <= 0 or opts.retries < 0:
            raise PoolError(f"RDAP options: workers >= 1, timeout > 0 and retries >= 0 are needed, got {opts}")
        if isinstance(cache_path, PoolCache):
            self.cache = cache_path
        else:
            self.cache = PoolCache(cache_path, positive_ttl=positive_ttl, negative_ttl=negative_ttl)
            self._own_cache = True
        self.client = RdapClient(opts)
        self._executor = ThreadPoolExecutor(max_workers=opts.workers, thread_name_prefix="rdap")

    # ----------------------------------------------------------------------- life cycle

    def close(self) -> None:
        """Stop background look-ups (pending ones are cancelled) and close the cache."""
        if self.client is not None:
            self.client.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self.cache is not None and self._own_cache:
            self.cache.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def description(self) -> str:
        """Where answers come from: mode, offline database and cache, for metadata and reports."""
        text = f"mode={self.mode}; offline={self.offline.name}"
        if self.cache is not None:
            text += f"; cache={self.cache.path}"
        return text

    # ----------------------------------------------------------------------- offline

    def _offline_info(self, value: int) -> PoolInfo:
        info = self._memo.get(value)
        if info is None:
            a = self.offline.lookup(value)
            if a is None:
                info = PoolInfo(None, "", "", "", "", "unknown", "offline")
            else:
                info = PoolInfo(a.asn, a.org, a.prefix, a.registry, a.country, pool_name(a.asn, a.org), "offline")
            if len(self._memo) >= self._memo_limit:
                self._memo.clear()
            self._memo[value] = info
        return info

    # ----------------------------------------------------------------------- RDAP

    def _fetch(self, value: int) -> PoolInfo:
        """One live look-up (in a worker thread): combine with the offline data, cache the result.
        Raises RdapError after caching the failure."""
        try:
            ans = self.client.lookup(value)
        except RdapError as exc:
            if exc.kind != "cancelled":
                self.cache.put_failure(value, str(exc))
            if exc.kind in ("unreachable", "timeout", "rate-limited"):
                self._network_failed()
            raise
        self._network_ok()
        off = self.offline.lookup(value)
        asn = ans.asn or (off.asn if off is not None else None)
        if off is not None and off.asn == asn and off.org:
            org = off.org
        else:
            org = ans.holder
        blocks = []
        if ans.network is not None and ans.plen:
            blocks.append((ans.plen, ans.network))
        if off is not None and off.plen:
            blocks.append((off.plen, off.network))
        plen, network = max(blocks) if blocks else (128, value)
        registry = ans.registry or (off.registry if off is not None else "")
        country = ans.country or (off.country if off is not None else "")
        pool = pool_name(asn, org)
        self.cache.put_answer(network, plen, asn=asn, asn_org=org, registry=registry, country=country, pool=pool)
        return PoolInfo(asn, org, prefix_text(network, plen), registry, country, pool, "rdap")

    def _network_failed(self) -> None:
        """A look-up failed on the network: after ``backoff_after`` in a row, pause background
        look-ups (the pause doubling each time, up to ``max_pause``) and drop the queued ones."""
        with self._lock:
            self._network_failures += 1
            if self._network_failures < self._backoff_after or time.monotonic() < self._paused_until:
                return
            self._pause = min(self._pause_max, max(self._pause_min, 2 * self._pause))
            self._paused_until = time.monotonic() + self._pause
            self.paused += 1
            queued = [self._inflight[v] for v in self._background if v in self._inflight]
        for fut in queued:
            fut.cancel()               # only those not running yet; a cancelled one calls ``done``

    def _network_ok(self) -> None:
        with self._lock:
            self._network_failures = 0
            self._pause = 0.0
            self._paused_until = 0.0

    def background_paused(self) -> bool:
        """Whether background look-ups are paused after network failures."""
        return time.monotonic() < self._paused_until

    def _submit(self, value: int, background: bool = False) -> Future | None:
        """The look-up of ``value`` in flight, started if need be. A background one is not
        started (None) when the queue is full, the resolver closed or look-ups paused."""
        with self._lock:
            fut = self._inflight.get(value)
            if fut is not None:
                if not background:
                    self._background.discard(value)
                return fut
            if self._executor is None:
                if background:
                    return None
                raise PoolError("the pool resolver is closed")
            if background and (len(self._inflight) >= self._max_pending or self.background_paused()):
                return None
            fut = self._executor.submit(self._fetch, value)
            self._inflight[value] = fut
            if background:
                self._background.add(value)

        def done(_f, value=value):
            with self._lock:
                self._inflight.pop(value, None)
                self._background.discard(value)

        fut.add_done_callback(done)
        return fut

    @staticmethod
    def _from_entry(e) -> PoolInfo:
        return PoolInfo(e.asn, e.asn_org, e.prefix, e.registry, e.country, e.pool, "cache")

    def _fallback(self, value: int, stale) -> PoolInfo:
        """No fresh answer and no live one: an expired cached answer if held, else offline in
        auto mode, else unknown."""
        if stale is not None:
            return self._from_entry(stale)
        if self.mode == "auto":
            return self._offline_info(value)
        return PoolInfo(None, "", "", "", "", "unknown", "rdap")

    def _cached(self, value: int) -> tuple[PoolInfo | None, object]:
        """(an answer from the cache without asking RDAP, or None; the expired answer held)."""
        answer, failure = self.cache.find(value)
        if answer is not None and not answer.expired():
            return self._from_entry(answer), answer
        if failure is not None:  # asked recently and failed: do not ask again before it expires
            return self._fallback(value, answer), answer
        return None, answer

    def _settle(self, value: int, stale, fut: Future) -> PoolInfo:
        try:
            return fut.result()
        except (RdapError, CancelledError):
            return self._fallback(value, stale)

    def _without_network(self, value: int) -> PoolInfo | None:
        """The answer that never needs RDAP: special addresses, and everything in offline mode."""
        pool = self.special.pool_of(value)
        if pool:
            return _special_info(pool)
        if self.mode == "offline":
            return self._offline_info(value)
        return None

    # ----------------------------------------------------------------------- public

    def resolve(self, ip: str) -> PoolInfo:
        """The pool of one address (text). Blocks on RDAP in rdap/auto mode on a cache miss."""
        value = value_of(ip)
        known = self._without_network(value)
        if known is not None:
            return known
        self.cache.refresh()
        info, stale = self._cached(value)
        if info is not None:
            return info
        return self._settle(value, stale, self._submit(value))

    def resolve_cached_or_offline(self, ip: str) -> PoolInfo:
        """The pool of one address, at once, never blocking on the network (for event loops).

        Special addresses and offline mode answer as :meth:`resolve`. In rdap/auto mode: a fresh
        cached answer if held; otherwise a stale cached answer or the offline database's, while
        an RDAP look-up is scheduled in the background (at most ``max_pending`` queued), whose
        answer later calls find in the cache.
        """
        value = value_of(ip)
        known = self._without_network(value)
        if known is not None:
            return known
        return self._cached_or_offline(value)

    def _cached_or_offline(self, value: int) -> PoolInfo:
        answer, failure = self.cache.find(value)
        if answer is not None and not answer.expired():
            return self._from_entry(answer)
        if failure is None:
            self._submit(value, background=True)
        return self._from_entry(answer) if answer is not None else self._offline_info(value)

    def resolve_table(self, ips: np.ndarray, blocking: bool = True) -> tuple[np.ndarray, list[PoolInfo], np.ndarray]:
        """Distinct addresses of an (n, 2) uint64 array, their :class:`PoolInfo`, and the inverse
        index (``infos[inverse[i]]`` answers row i). Each distinct address is resolved once.
        ``blocking=False``: every answer at once, as :meth:`resolve_cached_or_offline` gives it."""
        ips = np.asarray(ips, dtype=np.uint64).reshape(-1, 2)
        if len(ips) == 0:
            return np.zeros((0, 2), np.uint64), [], np.zeros(0, np.int64)
        uniq, inverse = _unique_rows(ips)
        special = self.special.classify(uniq)
        infos: list[PoolInfo | None] = [None] * len(uniq)
        values = [(int(h) << 64) | int(l) for h, l in uniq.tolist()]
        pending = []
        if self.mode != "offline":
            self.cache.refresh()
        for i, (sp, value) in enumerate(zip(special.tolist(), values)):
            if sp:
                infos[i] = _special_info(sp)
            elif self.mode == "offline":
                infos[i] = self._offline_info(value)
            elif not blocking:
                infos[i] = self._cached_or_offline(value)
            else:
                info, stale = self._cached(value)
                if info is not None:
                    infos[i] = info
                else:
                    pending.append((i, value, stale))
        # Look-ups run together, bounded by the pool's workers, in two waves: first one address per
        # announced prefix (offline database), then the others, many of which the first wave's
        # cached answers now cover.
        first, second, seen = [], [], set()
        for item in pending:
            off = self.offline.lookup(item[1])
            key = (off.network, off.plen) if off is not None and off.plen else item[1]
            (second if key in seen else first).append(item)
            seen.add(key)
        for wave in (first, second):
            futures = []
            for i, value, stale in wave:
                info, stale2 = self._cached(value) if wave is second else (None, stale)
                if info is not None:
                    infos[i] = info
                else:
                    futures.append((i, value, stale2, self._submit(value)))
            for i, value, stale, fut in futures:
                infos[i] = self._settle(value, stale, fut)
        return uniq, infos, inverse

    def resolve_many(self, ips: np.ndarray, blocking: bool = True) -> np.ndarray:
        """Pool names (object array) of an (n, 2) uint64 address array; each distinct address once
        (``blocking``: see :meth:`resolve_table`)."""
        uniq, infos, inverse = self.resolve_table(ips, blocking)
        names = np.array([i.pool for i in infos] or [""], dtype=object)
        return names[inverse] if len(inverse) else np.zeros(0, dtype=object)


def fill_pools(sessions, resolver: PoolResolver | None = None, mode: str = "offline", cache=None,
               blocking: bool = True):
    """Fill ``sessions.pool`` in place with each session's remote-address pool; returns ``sessions``.

    Without a resolver, one is made for the call (``mode``, ``cache`` = cache path) and closed.
    ``blocking=False``: cached or offline answers only, RDAP in the background (see
    :meth:`PoolResolver.resolve_table`).
    """
    own = resolver is None
    if own:
        resolver = PoolResolver(mode=mode, cache_path=cache)
    try:
        pools = resolver.resolve_many(sessions.remote_ip, blocking)
    finally:
        if own:
            resolver.close()
    if sessions.pool is None or len(sessions.pool) != len(pools):
        sessions.pool = np.full(len(pools), "", dtype=object)
    sessions.pool[:] = pools
    return sessions


# --------------------------------------------------------------------------- command line


def add_pool_source_options(sp, mode_flag: str = "--mode", cache_flag: str = "--cache") -> None:
    sp.add_argument(mode_flag, dest="pool_mode", choices=MODES, default="offline",
                    help="offline (default: offline database, no network), rdap (live, cache first) "
                         "or auto (RDAP, offline on failure)")
    sp.add_argument(cache_flag, dest="pool_cache", metavar="PATH", default=None,
                    help=f"pool cache for rdap/auto (default $IOT_POOL_CACHE or {default_cache_path()})")
    sp.add_argument("--offline-db", dest="pool_db", metavar="PATH", default=None,
                    help="offline database: a GeoLite2-ASN .mmdb or a plevin .plv (default $IOT_POOL_DB, "
                         "else the installed plevin network database)")
    sp.add_argument("--lan", dest="pool_lan", action="append", default=[], metavar="CIDR",
                    help="a prefix of the site's own LAN, mapped to the pool 'lan' (repeatable; "
                         "private ranges always are)")
    sp.add_argument("--rdap-url", dest="rdap_url", metavar="URL", default=None,
                    help="RDAP bootstrap URL (default ipwhois's)")
    sp.add_argument("--rdap-timeout", dest="rdap_timeout", type=float, default=None, metavar="S",
                    help="RDAP time-out per request in seconds (default 5)")


def add_feature_pool_options(sp) -> None:
    """``iotclass features sessions`` options: --pool-mode, --pool-cache, --no-pools (and the rest)."""
    add_pool_source_options(sp, "--pool-mode", "--pool-cache")
    sp.add_argument("--no-pools", action="store_true", help="leave the pool column empty (no look-ups)")


def resolver_from_args(args) -> PoolResolver:
    kw = {}
    mode = getattr(args, "pool_mode", "offline")
    if mode != "offline":
        if getattr(args, "rdap_url", None):
            kw["bootstrap_url"] = args.rdap_url
        if getattr(args, "rdap_timeout", None) is not None:
            kw["timeout"] = args.rdap_timeout
    return PoolResolver(mode=mode, cache_path=getattr(args, "pool_cache", None),
                        lan_networks=getattr(args, "pool_lan", []) or (), offline_db=getattr(args, "pool_db", None),
                        **kw)


def pool_rows(targets: Sequence[str], resolver: PoolResolver, gateways=(), idle_timeout: float = 60.0) -> list[dict]:
    """Rows of ``iotclass pools``: per address (given, or a session's remote address in the
    captures), what it resolves to and how many sessions and devices use it."""
    import os

    from classifier.capture.packets import ip_from_str
    given, paths = [], []
    for t in targets:
        try:
            value_of(t)
            given.append(t.strip())
        except PoolError:
            if not os.path.exists(t):
                raise PoolError(f"{t}: neither an IP address nor a capture file") from None
            paths.append(t)
    addr_parts, dev_parts = [], []
    if paths:
        from classifier.features.pipeline import load_captures
        from classifier.features.sessions import session_table
        for cap in load_captures(paths, gateways):
            s = session_table(cap.packets, cap.view, idle_timeout)
            addr_parts.append(s.remote_ip)
            dev_parts.append(s.mac.astype(np.uint64))
    given_ips = np.array([ip_from_str(g) for g in given], dtype=np.uint64).reshape(-1, 2)
    sess_ips = np.concatenate(addr_parts) if addr_parts else np.zeros((0, 2), np.uint64)
    devs = np.concatenate(dev_parts) if dev_parts else np.zeros(0, np.uint64)
    uniq, infos, inverse = resolver.resolve_table(np.concatenate([given_ips, sess_ips]))
    inv_given, inv_sess = inverse[:len(given_ips)], inverse[len(given_ips):]
    n_sess = np.bincount(inv_sess, minlength=len(uniq))
    n_dev = np.zeros(len(uniq), np.int64)
    if len(inv_sess):
        pairs = np.unique(np.stack([inv_sess.astype(np.uint64), devs], axis=1), axis=0)  # (address, MAC)
        n_dev = np.bincount(pairs[:, 0].astype(np.int64), minlength=len(uniq))
    order = list(dict.fromkeys(inv_given.tolist()))
    rest = sorted(set(range(len(uniq))) - set(order), key=lambda i: (-n_sess[i], -n_dev[i], i))
    rows = []
    for i in order + rest:
        info = infos[i]
        value = (int(uniq[i, 0]) << 64) | int(uniq[i, 1])
        row = {"address": text_of(value), "asn": info.asn, "organisation": info.asn_org, "pool": info.pool,
               "source": info.source, "prefix": info.prefix, "registry": info.registry, "country": info.country}
        if paths:
            row["sessions"] = int(n_sess[i])
            row["devices"] = int(n_dev[i])
        rows.append(row)
    return rows


def cmd_pools(args) -> int:
    with resolver_from_args(args) as resolver:
        rows = pool_rows(args.target, resolver, args.gateway, args.idle_timeout)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        cols = ["address", "asn", "organisation", "pool", "source"]
        if rows and "sessions" in rows[0]:
            cols += ["sessions", "devices"]
        text = [["" if r.get(c) is None else str(r.get(c)) for c in cols] for r in rows]
        widths = [max([len(c)] + [len(t[j]) for t in text]) for j, c in enumerate(cols)]
        print("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
        for t in text:
            print("  ".join(v.ljust(w) for v, w in zip(t, widths)).rstrip())
    organised = sum(1 for r in rows if not is_special(r["pool"]))
    special = sum(1 for r in rows if r["pool"] in SPECIAL_POOLS and r["pool"] != "unknown")
    unknown = sum(1 for r in rows if r["pool"] == "unknown")
    print(f"{len(rows)} addresses: {organised} in organisation pools, {special} special, {unknown} unknown "
          f"({resolver.description})", file=sys.stderr)
    return 0


def add_pools_command(subparsers) -> None:
    sp = subparsers.add_parser("pools", help="IP pools of addresses, or of the destinations in captures")
    sp.add_argument("target", nargs="+", metavar="PCAP|IP", help="capture files and/or IP addresses")
    add_pool_source_options(sp)
    sp.add_argument("--json", action="store_true", help="a JSON list of objects")
    sp.add_argument("--gateway", action="append", default=[], metavar="MAC",
                    help="a gateway/router MAC, never treated as a device (repeatable)")
    sp.add_argument("--idle-timeout", type=float, default=60.0, metavar="S", help="session idle timeout (s)")
    sp.set_defaults(func=cmd_pools)
