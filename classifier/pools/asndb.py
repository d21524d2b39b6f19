"""Addresses without the network: special-purpose ranges and the offline IP -> ASN databases.

Addresses are handled as 128-bit integers, IPv4 addresses IPv4-mapped (``::ffff:a.b.c.d``),
the convention of :mod:`classifier.capture.packets`.

Special addresses (:func:`special_pools`) never leave the machine: private ranges are the
devices' own LAN (``lan``), and loopback, link-local, multicast, broadcast, carrier-grade NAT
(``private``) and the reserved ranges of the IANA special-purpose registries get their own
named pools. The test is vectorised over an ``(n, 2)`` array of ``uint64`` halves.

Offline databases answer ``asn``, the AS organisation, the prefix the address falls in, its
registry and country, with no network at all:

* :class:`PlevinDatabase` (default) reads the ``plevin-db-network`` wheel from PyPI (announced
  prefixes, origin AS, AS operator, registry; IPv4 and IPv6), or any plevin ``.plv`` file;
* :class:`MmdbDatabase` reads a user-supplied MaxMind GeoLite2-ASN (or compatible) ``.mmdb``
  file through ``maxminddb``.

:func:`open_offline_database` picks one: an explicit path, else ``$IOT_POOL_DB``, else the
installed plevin database.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
from dataclasses import dataclass
from importlib import metadata

import numpy as np

from classifier.errors import IotClassError

V4_MAPPED = 0xFFFF << 32
ALL_ONES = (1 << 128) - 1

#: Pools that special addresses map to, plus ``unknown`` for addresses with no data.
SPECIAL_POOLS = ("lan", "loopback", "link-local", "multicast", "broadcast", "private", "reserved", "unknown")


class PoolError(IotClassError):
    """A pool database, cache, vocabulary or address that cannot be used (names what and where)."""


# --------------------------------------------------------------------------- addresses


def value_of(ip: str | int | tuple[int, int]) -> int:
    """An address as a 128-bit integer (IPv4 IPv4-mapped); accepts text, an int or (hi, lo)."""
    if isinstance(ip, tuple):
        return (int(ip[0]) << 64) | int(ip[1])
    if isinstance(ip, int):
        return ip
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        raise PoolError(f"not an IP address: {ip!r}") from None
    if addr.version == 4:
        return V4_MAPPED | int(addr)
    if addr.ipv4_mapped is not None:
        return V4_MAPPED | int(addr.ipv4_mapped)
    return int(addr)


def is_v4(value: int) -> bool:
    return (value >> 32) == 0xFFFF


def text_of(value: int) -> str:
    """An address's text as :mod:`ipaddress` writes it (IPv4-mapped shown as IPv4)."""
    if is_v4(value):
        return socket.inet_ntop(socket.AF_INET, (value & 0xFFFFFFFF).to_bytes(4, "big"))  # fast, same text
    return str(ipaddress.IPv6Address(value))


def prefix_text(network: int, plen: int) -> str:
    """CIDR text of a 128-bit network and prefix length (IPv4 shown as IPv4)."""
    if is_v4(network) and plen >= 96:
        return f"{text_of(network)}/{plen - 96}"
    return f"{text_of(network)}/{plen}"


def parse_prefix(text: str) -> tuple[int, int]:
    """A CIDR (or a bare address) as a 128-bit (network, prefix length), host bits cleared."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise PoolError(f"not an IP prefix: {text!r}") from None
    if net.version == 4:
        return V4_MAPPED | int(net.network_address), 96 + net.prefixlen
    return int(net.network_address), net.prefixlen


def mask(plen: int) -> int:
    return ALL_ONES ^ ((1 << (128 - plen)) - 1)


def contains(network: int, plen: int, value: int) -> bool:
    return (value & mask(plen)) == network


# --------------------------------------------------------------------------- special addresses

# (prefix, pool), first match wins; IPv4 prefixes are matched on IPv4-mapped addresses.
_SPECIAL_RULES = (
    ("255.255.255.255/32", "broadcast"),
    ("127.0.0.0/8", "loopback"),
    ("::1/128", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("fe80::/10", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("ff00::/8", "multicast"),
    ("10.0.0.0/8", "lan"),
    ("172.16.0.0/12", "lan"),
    ("192.168.0.0/16", "lan"),
    ("fc00::/7", "lan"),
    ("100.64.0.0/10", "private"),        # shared address space (carrier-grade NAT)
    ("0.0.0.0/8", "reserved"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "reserved"),
    ("198.18.0.0/15", "reserved"),
    ("198.51.100.0/24", "reserved"),
    ("203.0.113.0/24", "reserved"),
    ("240.0.0.0/4", "reserved"),
    ("2001:db8::/32", "reserved"),
    ("2001:2::/48", "reserved"),
    ("100::/64", "reserved"),
)


def _rule_arrays(rules):
    nets = np.zeros((len(rules), 2), np.uint64)
    masks = np.zeros((len(rules), 2), np.uint64)
    for i, (network, plen) in enumerate(rules):
        m = mask(plen)
        nets[i] = (network >> 64, network & 0xFFFFFFFFFFFFFFFF)
        masks[i] = (m >> 64, m & 0xFFFFFFFFFFFFFFFF)
    return nets, masks


_BASE_RULES = [(parse_prefix(p), pool) for p, pool in _SPECIAL_RULES]


def lan_rules(lan_networks) -> list[tuple[tuple[int, int], str]]:
    """Rules for the site's own LAN prefixes: their IPv4 directed broadcast, then ``lan``."""
    rules = []
    for text in lan_networks:
        net = ipaddress.ip_network(str(text).strip(), strict=False) if not isinstance(
            text, (ipaddress.IPv4Network, ipaddress.IPv6Network)) else text
        network, plen = parse_prefix(str(net))
        if net.version == 4 and net.prefixlen < 31:
            rules.append(((V4_MAPPED | int(net.broadcast_address), 128), "broadcast"))
        rules.append(((network, plen), "lan"))
    return rules


class SpecialClassifier:
    """Vectorised special-address test: an object array of pool names, '' where not special."""

    def __init__(self, lan_networks=()):
        try:
            rules = lan_rules(lan_networks) + _BASE_RULES
        except ValueError as exc:
            raise PoolError(f"LAN prefix: {exc}") from None
        self.rules = rules
        self._nets, self._masks = _rule_arrays([r for r, _ in rules])
        self._pools = [p for _, p in rules]
        self._pool_names = np.array(self._pools + [""], dtype=object)   # "": no rule holds

    #: addresses tested against every rule at once (an addresses × rules matrix), per block
    BLOCK = 16384

    def classify(self, ips: np.ndarray) -> np.ndarray:
        ips = np.asarray(ips, dtype=np.uint64).reshape(-1, 2)
        out = np.full(len(ips), "", dtype=object)
        todo = np.ones(len(ips), bool)
        hi, lo = ips[:, 0], ips[:, 1]
        pools = self._pool_names
        nh, nl = self._nets[:, 0], self._nets[:, 1]
        mh, ml = self._masks[:, 0], self._masks[:, 1]
        for b in range(0, len(ips), self.BLOCK):
            h, l = hi[b:b + self.BLOCK, None], lo[b:b + self.BLOCK, None]
            hit = ((h & mh) == nh) & ((l & ml) == nl)
            # the first rule that holds (rules are in order of precedence); none: the sentinel ""
            first = np.where(hit.any(1), hit.argmax(1), len(self._pools))
            out[b:b + self.BLOCK] = pools[first]
            todo[b:b + self.BLOCK] = first == len(self._pools)
        # IPv6 outside global unicast (2000::/3) and not IPv4-mapped: reserved (:: included).
        v4 = (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
        global6 = (hi >> np.uint64(61)) == np.uint64(1)
        out[todo & ~v4 & ~global6] = "reserved"
        return out

    def pool_of(self, value: int) -> str:
        arr = np.array([[value >> 64, value & 0xFFFFFFFFFFFFFFFF]], dtype=np.uint64)
        return self.classify(arr)[0]


def special_pools(ips: np.ndarray, lan_networks=()) -> np.ndarray:
    """Pool names of special addresses in an ``(n, 2)`` address array ('' where not special)."""
    return SpecialClassifier(lan_networks).classify(ips)


# --------------------------------------------------------------------------- offline databases


@dataclass(frozen=True)
class OfflineAnswer:
    asn: int | None
    org: str          # the AS operator (or, where no AS announces the address, the block's holder)
    network: int      # 128-bit network of the prefix the address falls in (0 with plen 0: unknown)
    plen: int
    registry: str
    country: str

    @property
    def prefix(self) -> str:
        return prefix_text(self.network, self.plen) if self.plen else ""


class PlevinDatabase:
    """The plevin IP database (``plevin-db-network`` wheel by default, or a ``.plv`` file)."""

    kind = "plevin"

    def __init__(self, path: str | None = None):
        try:
            import plevin
            from plevin import derive
        except ImportError:  # pragma: no cover - a dependency of the project
            raise PoolError("the offline pool database needs the 'plevin' package (pip install plevin plevin-db-network)")
        try:
            self._db = plevin.Plevin(path) if path else plevin.Plevin()
        except (OSError, ValueError, LookupError) as exc:
            raise PoolError(f"offline pool database {path or '(plevin default)'}: {exc}") from None
        self._brand = derive.brand
        self._file = self._db.file
        self._lock = threading.Lock()
        self.path = self._file.path
        package = ""
        if not path and not os.environ.get("PLEVIN_DB"):
            for dist in ("plevin-db", "plevin-db-network"):
                try:
                    package = f"{dist} {metadata.version(dist)}"
                    break
                except metadata.PackageNotFoundError:
                    continue
        self.name = f"plevin {package or os.path.basename(self.path)} (built {self._file.built})".replace("  ", " ")

    def lookup(self, value: int) -> OfflineAnswer | None:
        wide = not is_v4(value)
        v = value if wide else value & 0xFFFFFFFF
        with self._lock:
            row = self._file.row(v, wide)
        net = row.get("network") if row else None
        if not net or not any(net.values()):
            return None
        asn = net.get("asn") or None
        handle = str(net.get("handle") or "")
        operator = net.get("operator") or {}
        company = str(operator.get("company") or "")
        brand = str(net.get("brand") or "")
        if not brand and (handle or company):
            brand = self._brand(handle, company)
        org = brand or company or handle
        plen = net.get("prefix")
        if plen:
            plen = int(plen) + (0 if wide else 96)
            network = value & mask(plen)
        else:
            network, plen = 0, 0
        return OfflineAnswer(int(asn) if asn else None, org, network, plen,
                             str(net.get("rir") or ""), str(net.get("country") or ""))


class MmdbDatabase:
    """A MaxMind DB file with GeoLite2-ASN records (``autonomous_system_number``/``_organization``)."""

    kind = "mmdb"

    def __init__(self, path: str):
        import maxminddb
        try:
            self._reader = maxminddb.open_database(path)
        except FileNotFoundError:
            raise PoolError(f"offline pool database {path}: no such file") from None
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise PoolError(f"offline pool database {path}: not a MaxMind DB file ({exc})") from None
        meta = self._reader.metadata()
        self.path = path
        self._v6 = meta.ip_version == 6
        self.name = f"mmdb {meta.database_type} (built {meta.build_epoch}) {os.path.basename(path)}"

    def lookup(self, value: int) -> OfflineAnswer | None:
        v4 = is_v4(value)
        if not v4 and not self._v6:
            return None
        text = text_of(value)
        try:
            record, plen = self._reader.get_with_prefix_len(text)
        except ValueError:
            return None
        if not isinstance(record, dict):
            return None
        asn = record.get("autonomous_system_number")
        org = str(record.get("autonomous_system_organization") or "")
        if asn is None and not org:
            return None
        plen = int(plen) + (96 if v4 else 0)
        return OfflineAnswer(int(asn) if asn else None, org, value & mask(plen), plen, "", "")


def open_offline_database(path: str | None = None):
    """The offline database: ``path`` (``.mmdb`` or plevin ``.plv``), else ``$IOT_POOL_DB``, else plevin's."""
    path = path or os.environ.get("IOT_POOL_DB") or None
    if path and path.lower().endswith(".mmdb"):
        return MmdbDatabase(path)
    if path and not os.path.exists(path):
        raise PoolError(f"offline pool database {path}: no such file")
    return PlevinDatabase(path)
