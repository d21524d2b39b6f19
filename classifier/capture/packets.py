"""The packet table: one numpy array per header field, one row per packet.

There is no per-packet Python object anywhere on the hot path: captures and mirrored
packet-ins are both decoded into a :class:`Packets` table and every feature is computed
on its columns.

Conventions
-----------
* ``ts_ns`` is the capture timestamp in integer nanoseconds since the epoch.
* ``wire_len`` is the packet's original length on the wire (the record's original length,
  never the number of bytes kept: some captures are truncated to their headers).
* MAC addresses are 48-bit integers in a ``uint64`` (``0`` where the link layer has none).
* IP addresses are 128-bit, stored as two big-endian ``uint64`` halves in an ``(n, 2)``
  array; IPv4 addresses are IPv4-mapped (``::ffff:a.b.c.d``). ``ip_version`` is 0, 4 or 6.
* ``sport``/``dport`` are -1 where there is no port (not TCP/UDP/SCTP, a non-first fragment,
  or the header was cut short); ``tcp_flags`` is -1 where there is no TCP header.
* ``proto`` is a :class:`~classifier.capture.protocols.Proto` code.
* ``flags`` is a bit set of :class:`DecodeFlag`.
* ``payload_off`` marks the packets whose payload the identity parser reads
  (:mod:`classifier.features.identity`): where that payload starts, counted from the start
  of the record; 0 for every other packet. Marked are UDP/TCP packets of the DHCP, DHCPv6,
  DNS, mDNS, LLMNR and SSDP classes, and TCP payloads that open with a TLS ClientHello or
  an HTTP request line, wherever some of their payload was captured.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, fields
from enum import IntFlag

import numpy as np

from classifier.capture.protocols import IS_USER


class DecodeFlag(IntFlag):
    L2_TRUNCATED = 1     #: the link-layer header is cut short
    L3_TRUNCATED = 2     #: the IP/ARP header is cut short
    L4_TRUNCATED = 4     #: the transport header is cut short
    FRAGMENT = 8         #: a non-first IP fragment (no transport header)
    MALFORMED = 16       #: a header field is impossible (e.g. IPv4 header length < 20)


COLUMNS = {
    "ts_ns": np.int64,
    "wire_len": np.uint32,
    "cap_len": np.uint32,
    "eth_src": np.uint64,
    "eth_dst": np.uint64,
    "vlan": np.uint16,
    "ethertype": np.uint16,
    "ip_version": np.uint8,
    "src_ip": np.uint64,
    "dst_ip": np.uint64,
    "ip_proto": np.uint8,
    "sport": np.int32,
    "dport": np.int32,
    "tcp_flags": np.int16,
    "proto": np.uint8,
    "dns_qhash": np.uint64,
    "flags": np.uint8,
    "payload_off": np.uint16,
}
_TWO_WIDE = ("src_ip", "dst_ip")


@dataclass
class Packets:
    """A table of decoded packets (see the module docstring for the columns)."""

    ts_ns: np.ndarray
    wire_len: np.ndarray
    cap_len: np.ndarray
    eth_src: np.ndarray
    eth_dst: np.ndarray
    vlan: np.ndarray
    ethertype: np.ndarray
    ip_version: np.ndarray
    src_ip: np.ndarray
    dst_ip: np.ndarray
    ip_proto: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    tcp_flags: np.ndarray
    proto: np.ndarray
    dns_qhash: np.ndarray
    flags: np.ndarray
    payload_off: np.ndarray

    @classmethod
    def empty(cls, n: int = 0) -> "Packets":
        cols = {}
        for name, dtype in COLUMNS.items():
            shape = (n, 2) if name in _TWO_WIDE else (n,)
            cols[name] = np.zeros(shape, dtype=dtype)
        return cls(**cols)

    def __len__(self) -> int:
        return len(self.ts_ns)

    @property
    def ts(self) -> np.ndarray:
        """Timestamps in float seconds (for features; ``ts_ns`` is the exact value)."""
        return self.ts_ns * 1e-9

    @property
    def is_user(self) -> np.ndarray:
        return IS_USER[self.proto]

    def take(self, index) -> "Packets":
        """The rows selected by an index array or boolean mask, as a new table."""
        return Packets(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(parts: list["Packets"]) -> "Packets":
        if not parts:
            return Packets.empty()
        return Packets(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Packets)})

    def nbytes(self) -> int:
        return sum(getattr(self, f.name).nbytes for f in fields(self))


# --------------------------------------------------------------------------- formatting


def mac_to_str(mac: int) -> str:
    return ":".join(f"{(int(mac) >> s) & 0xFF:02x}" for s in range(40, -8, -8))


def mac_to_int(text: str) -> int:
    parts = text.strip().replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) in (1, 2) for p in parts):
        raise ValueError(f"not a MAC address: {text!r}")
    value = 0
    for p in parts:
        value = (value << 8) | int(p, 16)
    return value


def macs_to_str(macs: np.ndarray) -> list[str]:
    return [mac_to_str(m) for m in macs.tolist()]


def ip_to_str(hi: int, lo: int, version: int | None = None) -> str:
    """Format one address stored as two uint64 halves (IPv4-mapped shown as IPv4)."""
    hi, lo = int(hi), int(lo)
    if version == 0:
        return ""
    if hi == 0 and (lo >> 32) == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFFFFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def ip_from_str(text: str) -> tuple[int, int]:
    addr = ipaddress.ip_address(text.strip())
    if addr.version == 4:
        return 0, 0xFFFF00000000 | int(addr)
    value = int(addr)
    return value >> 64, value & 0xFFFFFFFFFFFFFFFF


def ips_to_str(ips: np.ndarray, versions: np.ndarray | None = None) -> list[str]:
    """Format an (n, 2) address column; repeated addresses are formatted once."""
    if len(ips) == 0:
        return []
    uniq, inverse = np.unique(ips, axis=0, return_inverse=True)
    text = [ip_to_str(h, l) for h, l in uniq.tolist()]
    out = [text[i] for i in inverse.ravel().tolist()]
    if versions is not None:
        out = [s if v else "" for s, v in zip(out, versions.tolist())]
    return out


def is_ipv4(ips: np.ndarray) -> np.ndarray:
    return (ips[:, 0] == 0) & ((ips[:, 1] >> np.uint64(32)) == np.uint64(0xFFFF))
