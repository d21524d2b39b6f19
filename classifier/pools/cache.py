"""The persistent pool cache: RDAP answers keyed by prefix, in one SQLite file.

One file is shared by the offline tools and the controller, across processes. Location:
``$IOT_POOL_CACHE`` if set, else ``$XDG_CACHE_HOME/iotclass/pools.sqlite``, else
``~/.cache/iotclass/pools.sqlite``.

* Each entry is keyed by a prefix (network and length, in the 128-bit IPv4-mapped space) and
  holds the pool and what is known of the prefix (ASN, organisation, registry, country), when
  it was fetched, when it expires and its source: ``rdap`` (an answer) or ``rdap-failed`` (a
  negative entry: the look-up failed, keyed by the one address, with its error).
* Expiry: answers live ``positive_ttl`` seconds (default 30 days: registration data changes
  rarely), failures ``negative_ttl`` seconds (default 1 hour), so that a server that was down
  is asked again soon, but not on every packet.
* An address is answered by the most specific fresh answer containing it; failing that, by a
  fresh failure; failing that, by an expired answer (for the caller to serve while it
  refreshes). :meth:`PoolCache.find` gives both the best answer (fresh or expired) and any fresh
  failure, so that a caller can serve an expired answer without asking again before the failure
  expires.
* Concurrency: the database is in WAL mode, so readers never block and are never blocked by the
  one writer; writers wait for each other (``busy_timeout``). Each process keeps an in-memory
  index of the entries and reloads it when another connection has committed (SQLite's
  ``PRAGMA data_version``), so a process sees the answers another one fetched.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from classifier.pools.asndb import PoolError, mask, prefix_text

DEFAULT_POSITIVE_TTL = 30 * 86400.0
DEFAULT_NEGATIVE_TTL = 3600.0
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prefixes (
    network  TEXT    NOT NULL,   -- 32 hex digits: the 128-bit (IPv4-mapped) network address
    plen     INTEGER NOT NULL,   -- prefix length in the 128-bit space (IPv4 /24 is 120)
    prefix   TEXT    NOT NULL,   -- the same as CIDR text, for people
    asn      INTEGER,
    asn_org  TEXT    NOT NULL,
    registry TEXT    NOT NULL,
    country  TEXT    NOT NULL,
    pool     TEXT    NOT NULL,
    source   TEXT    NOT NULL,   -- 'rdap' or 'rdap-failed'
    error    TEXT    NOT NULL,
    fetched  REAL    NOT NULL,   -- unix time
    expires  REAL    NOT NULL,   -- unix time
    PRIMARY KEY (network, plen)
) WITHOUT ROWID
"""


def default_cache_path() -> Path:
    env = os.environ.get("IOT_POOL_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "iotclass" / "pools.sqlite"


@dataclass(frozen=True)
class CacheEntry:
    network: int
    plen: int
    asn: int | None
    asn_org: str
    registry: str
    country: str
    pool: str
    source: str
    error: str
    fetched: float
    expires: float

    @property
    def negative(self) -> bool:
        return self.source == "rdap-failed"

    @property
    def prefix(self) -> str:
        return prefix_text(self.network, self.plen)

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires

    def age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.fetched


class PoolCache:
    """The SQLite pool cache (see the module docstring)."""

    def __init__(self, path: str | os.PathLike | None = None, positive_ttl: float = DEFAULT_POSITIVE_TTL,
                 negative_ttl: float = DEFAULT_NEGATIVE_TTL):
        self.path = Path(path).expanduser() if path else default_cache_path()
        self.positive_ttl = float(positive_ttl)
        self.negative_ttl = float(negative_ttl)
        self._lock = threading.RLock()
        self._index: dict[int, dict[int, CacheEntry]] = {}
        self._lengths: list[int] = []
        self._version = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PoolError(f"pool cache {self.path}: cannot create its folder: {exc.strerror or exc}") from None
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA busy_timeout = 30000")
            self._setup()
            self._reload()
        except sqlite3.Error as exc:
            self._close_quietly()
            raise PoolError(f"pool cache {self.path}: {exc}") from None
        except PoolError:            # not a pool cache: leave the file alone, closed
            self._close_quietly()
            raise

    # ----------------------------------------------------------------------- set-up

    def _setup(self) -> None:
        c = self._conn
        (version,) = c.execute("PRAGMA user_version").fetchone()
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version == SCHEMA_VERSION and "prefixes" in tables:
            self._wal()
            return
        if version not in (0, SCHEMA_VERSION) or (tables - {"prefixes"}):
            raise PoolError(f"pool cache {self.path}: not an iotclass pool cache "
                            f"(schema version {version}, tables {sorted(tables)}); move it away or pass another path")
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute(_SCHEMA)
            c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        self._wal()

    def _wal(self) -> None:
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")
            # WAL with synchronous=NORMAL never corrupts the file; a power cut may lose the last
            # answers, which a cache can afford (they are fetched again).
            self._conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.OperationalError:  # e.g. a file system without shared memory: stay in rollback mode
            pass

    def _close_quietly(self) -> None:
        """Close after a failed set-up (the error being reported is the set-up's)."""
        conn = getattr(self, "_conn", None)   # absent when connecting itself failed
        if conn is None:
            return
        try:
            conn.close()
        except sqlite3.Error:
            pass

    # ----------------------------------------------------------------------- index

    @staticmethod
    def _row_entry(row) -> CacheEntry:
        network, plen, asn, org, registry, country, pool, source, error, fetched, expires = row
        return CacheEntry(int(network, 16), int(plen), asn, org, registry, country, pool, source, error,
                          float(fetched), float(expires))

    def _reload(self) -> None:
        # The version is read before the rows: a commit landing in between makes the next
        # refresh() reload again, never miss it.
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        rows = self._conn.execute(
            "SELECT network, plen, asn, asn_org, registry, country, pool, source, error, fetched, expires "
            "FROM prefixes").fetchall()
        index: dict[int, dict[int, CacheEntry]] = {}
        for row in rows:
            e = self._row_entry(row)
            index.setdefault(e.plen, {})[e.network] = e
        self._index = index
        self._lengths = sorted(index, reverse=True)
        self._version = version

    def refresh(self) -> None:
        """Reload the index if another connection (another process) has committed since."""
        with self._lock:
            try:
                version = self._conn.execute("PRAGMA data_version").fetchone()[0]
                if version != self._version:
                    self._reload()
            except sqlite3.Error as exc:
                raise PoolError(f"pool cache {self.path}: {exc}") from None

    def _add(self, e: CacheEntry) -> None:
        bucket = self._index.get(e.plen)
        if bucket is None:
            bucket = self._index[e.plen] = {}
            self._lengths = sorted(self._index, reverse=True)
        bucket[e.network] = e

    # ----------------------------------------------------------------------- queries

    def find(self, value: int, now: float | None = None) -> tuple[CacheEntry | None, CacheEntry | None]:
        """(answer, failure) for a 128-bit address: the most specific fresh answer, else the most
        specific expired one (or None); and the most specific unexpired failure (or None)."""
        now = time.time() if now is None else now
        fresh = stale = failure = None
        with self._lock:
            for plen in self._lengths:
                e = self._index[plen].get(value & mask(plen))
                if e is None:
                    continue
                if e.negative:
                    if failure is None and not e.expired(now):
                        failure = e
                elif not e.expired(now):
                    fresh = fresh or e
                else:
                    stale = stale or e
        return fresh or stale, failure

    def lookup(self, value: int, now: float | None = None) -> CacheEntry | None:
        """The entry answering an address: a fresh answer, else a fresh failure, else an expired
        answer, else None."""
        answer, failure = self.find(value, now)
        if answer is not None and not answer.expired(now):
            return answer
        return failure or answer

    def entries(self) -> list[CacheEntry]:
        self.refresh()
        with self._lock:
            return sorted((e for b in self._index.values() for e in b.values()), key=lambda e: (e.network, e.plen))

    def __len__(self) -> int:
        with self._lock:
            return sum(len(b) for b in self._index.values())

    # ----------------------------------------------------------------------- writes

    def _write(self, e: CacheEntry) -> CacheEntry:
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT OR REPLACE INTO prefixes (network, plen, prefix, asn, asn_org, registry, country, pool, "
                    "source, error, fetched, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (f"{e.network:032x}", e.plen, e.prefix, e.asn, e.asn_org, e.registry, e.country, e.pool,
                     e.source, e.error, e.fetched, e.expires))
            except sqlite3.Error as exc:
                raise PoolError(f"pool cache {self.path}: cannot write: {exc}") from None
            self._add(e)
        return e

    def put_answer(self, network: int, plen: int, *, asn: int | None, asn_org: str, registry: str, country: str,
                   pool: str, now: float | None = None) -> CacheEntry:
        now = time.time() if now is None else now
        network &= mask(plen)
        return self._write(CacheEntry(network, plen, asn, asn_org or "", registry or "", country or "", pool,
                                      "rdap", "", now, now + self.positive_ttl))

    def put_failure(self, value: int, error: str, now: float | None = None) -> CacheEntry:
        now = time.time() if now is None else now
        return self._write(CacheEntry(value, 128, None, "", "", "", "unknown", "rdap-failed", error[:500],
                                      now, now + self.negative_ttl))

    def prune(self, now: float | None = None, grace: float = 0.0) -> int:
        """Delete entries expired more than ``grace`` seconds ago; how many were deleted."""
        now = time.time() if now is None else now
        with self._lock:
            try:
                n = self._conn.execute("DELETE FROM prefixes WHERE expires < ?", (now - grace,)).rowcount
                self._reload()
            except sqlite3.Error as exc:
                raise PoolError(f"pool cache {self.path}: {exc}") from None
        return n

    def close(self) -> None:
        with self._lock:
            self._close_quietly()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
