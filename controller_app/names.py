"""What a person calls a device: the names it announces, its IP addresses, the operator's label.

* **Names** are identity values the controller already reads (:mod:`classifier.features.identity`):
  the DHCP host name, the DHCPv6 FQDN, the mDNS instance and host names, and the friendly name an
  mDNS TXT record carries (``fn=``, as Cast devices announce; UPnP's friendly name lives in the
  description document behind an SSDP ``LOCATION``, which the controller does not fetch, so SSDP
  gives no name here). At most :data:`MAX_NAMES` a device, the first ones it said, each once
  (whatever the case).
* **Addresses** are the source addresses of what a device sends of its identity protocols (DNS,
  mDNS, SSDP, DHCP once it has an address; :func:`harvest`, on the event loop, from packets
  decoded anyway): unicast IPv4 and IPv6 only, at most :data:`MAX_ADDRESSES` a device, the latest
  first.
* **Labels** are the operator's own (``PUT /api/devices/MAC/label``), kept in the inventory, not
  in the policy.

:class:`NameBook` holds them for the operator page: filled from the inventory at start-up and by
the shell as values arrive, read when the event loop publishes its snapshot. Everything here is
text the page draws as text; a label is refused if it holds control characters.
"""

from __future__ import annotations

import ipaddress
import threading
import unicodedata

import numpy as np

MAX_NAMES = 8
MAX_ADDRESSES = 8
MAX_LABEL = 64
#: identity kinds that name the device, with the words the page shows for them
NAME_KINDS = {"dhcp.hostname": "DHCP", "dhcpv6.fqdn": "DHCPv6", "mdns.instance": "mDNS instance",
              "mdns.host": "mDNS host", "mdns.txt": "mDNS friendly name"}
#: mDNS TXT keys whose value is the device's friendly name
FRIENDLY_TXT_KEYS = ("fn", "n", "name", "friendlyname")
#: pending addresses held at most between two drains of the shell (a flood of spoofed sources
#: cannot grow it beyond this)
MAX_PENDING = 4096
_V4_MAPPED = np.uint64(0xFFFF00000000)


def name_of(kind: str, value: str) -> str | None:
    """The name an identity value gives the device (``kind`` a name kind), or None."""
    if kind not in NAME_KINDS:
        return None
    v = (value or "").strip()
    if kind == "mdns.txt":
        key, sep, val = v.partition("=")
        if not sep or key.strip().lower() not in FRIENDLY_TXT_KEYS:
            return None
        v = val.strip()
    elif kind in ("mdns.host", "dhcpv6.fqdn"):
        v = v.rstrip(".").removesuffix(".local")
    elif kind == "mdns.instance":
        v = v.rstrip(".")
    v = "".join(ch for ch in v if unicodedata.category(ch)[0] != "C")
    return v[:120] or None


def harvest(pk) -> list[tuple[int, str, int]]:
    """``(mac, address, last seen ns)`` of each distinct (source MAC, unicast source address) of
    decoded packets ``pk`` (the :class:`~classifier.capture.packets.Packets` columns)."""
    if len(pk) == 0:
        return []
    ok = pk.ip_version != 0
    if not ok.any():
        return []
    hi, lo = pk.src_ip[:, 0], pk.src_ip[:, 1]
    v4 = (hi == 0) & ((lo & np.uint64(0xFFFFFFFF00000000)) == _V4_MAPPED)
    a4 = (lo & np.uint64(0xFFFFFFFF)).astype(np.uint64)
    bad4 = v4 & ((a4 == 0) | (a4 >= np.uint64(0xE0000000)) | ((a4 >> np.uint64(24)) == np.uint64(127)))
    bad6 = ~v4 & (((hi == 0) & (lo <= 1)) | ((hi >> np.uint64(56)) == np.uint64(0xFF)))
    rows = np.flatnonzero(ok & ~bad4 & ~bad6)
    if len(rows) == 0:
        return []
    keys = np.stack([pk.eth_src[rows], hi[rows], lo[rows]], axis=1)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    last = np.zeros(len(uniq), np.int64)
    np.maximum.at(last, inv.ravel(), pk.ts_ns[rows].astype(np.int64))
    out = []
    for (mac, h, l_), t in zip(uniq.tolist(), last.tolist()):
        if h == 0 and (l_ >> 32) == 0xFFFF:
            text = str(ipaddress.IPv4Address(l_ & 0xFFFFFFFF))
        else:
            text = str(ipaddress.IPv6Address((h << 64) | l_))
        out.append((int(mac), text, int(t)))
    return out


def harvest_sent(pk, mac: int) -> list[tuple[int, str, int]]:
    """:func:`harvest` of the packets of ``pk`` that ``mac`` sent (a decision's packets hold what its
    peers sent it too)."""
    if len(pk) == 0:
        return []
    return harvest(pk.take(np.flatnonzero(pk.eth_src == np.uint64(mac))))


def clean_label(text) -> str:
    """An operator's label as stored: trimmed, at most :data:`MAX_LABEL` characters, no control
    characters ("" removes the label). ValueError says what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"label: expected a string, got {type(text).__name__}")
    t = text.strip()
    if len(t) > MAX_LABEL:
        raise ValueError(f"label: {len(t)} characters, at most {MAX_LABEL}")
    bad = next((ch for ch in t if unicodedata.category(ch)[0] == "C"), None)
    if bad is not None:
        raise ValueError(f"label: control character U+{ord(bad):04X} at {t.index(bad) + 1} is not allowed")
    return t


class NameBook:
    """Per MAC (text, lower case): announced names, addresses and the operator's label.
    Written from the event loop (names, addresses) and an HTTP thread (labels); read when the
    event loop publishes."""

    def __init__(self):
        self._names: dict[str, list] = {}      # mac -> [(kind, name)], first said first
        self._addresses: dict[str, dict] = {}  # mac -> {address: last seen ns}
        self._labels: dict[str, str] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- writes

    def add_identity(self, rows) -> int:
        """``(mac text or int, kind name, value, ...)`` rows (the core's identity values);
        returns the names added."""
        added = 0
        with self._lock:
            for row in rows:
                mac, kind, value = row[0], row[1], row[2]
                name = name_of(kind, value)
                if name is None:
                    continue
                key = _mac_text(mac)
                held = self._names.setdefault(key, [])
                if len(held) >= MAX_NAMES or any(n.lower() == name.lower() for _, n in held):
                    continue
                held.append((kind, name))
                added += 1
        return added

    def add_addresses(self, rows) -> None:
        """``(mac, address, last seen ns)`` rows."""
        with self._lock:
            for mac, addr, t in rows:
                held = self._addresses.setdefault(_mac_text(mac), {})
                if addr in held or len(held) < MAX_ADDRESSES:
                    held[addr] = max(int(t), held.get(addr, 0))
                else:                              # full: the oldest gives way
                    oldest = min(held, key=held.get)
                    if held[oldest] < t:
                        del held[oldest]
                        held[addr] = int(t)

    def set_label(self, mac, label: str) -> None:
        with self._lock:
            if label:
                self._labels[_mac_text(mac)] = label
            else:
                self._labels.pop(_mac_text(mac), None)

    def forget(self, macs) -> None:
        """Devices forgotten (undecided, unseen): their names and addresses go; labels stay."""
        with self._lock:
            for mac in macs:
                key = _mac_text(mac)
                self._names.pop(key, None)
                self._addresses.pop(key, None)

    # ---------------------------------------------------------------- reads

    def of(self, mac) -> tuple[list, list, str | None]:
        """(names as ``{"kind", "source", "value"}``, addresses (IPv4 first, then IPv6; latest
        first within each), label or None)."""
        key = _mac_text(mac)
        with self._lock:
            names = [{"kind": k, "source": NAME_KINDS[k], "value": n} for k, n in self._names.get(key, ())]
            held = self._addresses.get(key) or {}
            addrs = sorted(held, key=lambda a: (":" in a, -held[a]))
            return names, addrs, self._labels.get(key)

    def load(self, names=(), addresses=(), labels=()) -> None:
        """What the inventory holds (:meth:`controller_app.inventory.Inventory.names`)."""
        self.add_identity(names)
        self.add_addresses(addresses)
        for mac, label in labels:
            self.set_label(mac, label)


def _mac_text(mac) -> str:
    if isinstance(mac, str):
        return mac.lower()
    v = int(mac)
    return ":".join(f"{(v >> s) & 0xFF:02x}" for s in range(40, -8, -8))


__all__ = ["MAX_ADDRESSES", "MAX_LABEL", "MAX_NAMES", "NAME_KINDS", "NameBook", "clean_label", "harvest", "harvest_sent",
           "name_of"]
