"""Writing captures: pcap (µs/ns, either byte order) and pcapng (several interfaces).

Used to write the project's own generated captures (tests, demo) and by the replay harness.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterable


@dataclass
class Record:
    ts_ns: int
    data: bytes
    wire_len: int | None = None  # defaults to len(data)
    interface: int = 0


def write_pcap(fh: BinaryIO, records: Iterable[Record], linktype: int = 1, nano: bool = False,
               big_endian: bool = False, snaplen: int = 262144) -> int:
    e = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    fh.write(struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
    n = 0
    for r in records:
        sec, frac = divmod(r.ts_ns, 1_000_000_000)
        if not nano:
            frac //= 1000
        fh.write(struct.pack(e + "IIII", sec, frac, len(r.data), r.wire_len or len(r.data)))
        fh.write(r.data)
        n += 1
    return n


def _pad4(b: bytes) -> bytes:
    return b + b"\x00" * (-len(b) % 4)


def _block(e: str, btype: int, body: bytes) -> bytes:
    body = _pad4(body)
    total = len(body) + 12
    return struct.pack(e + "II", btype, total) + body + struct.pack(e + "I", total)


def _option(e: str, code: int, value: bytes) -> bytes:
    return struct.pack(e + "HH", code, len(value)) + _pad4(value)


@dataclass
class Interface:
    linktype: int = 1
    snaplen: int = 0
    tsresol: int = 6        # pcapng if_tsresol byte: 6 = µs, 9 = ns, 0x80|n = 2^-n
    tsoffset: int = 0       # seconds


def ticks(ts_ns: int, iface: Interface) -> int:
    """A timestamp in the interface's resolution (the inverse of the reader's conversion)."""
    sec = ts_ns // 1_000_000_000 - iface.tsoffset
    frac_ns = ts_ns % 1_000_000_000
    exp = iface.tsresol & 0x7F
    if iface.tsresol & 0x80:
        return (sec << exp) + ((frac_ns << exp) + 999_999_999) // 1_000_000_000
    return sec * 10 ** exp + frac_ns * 10 ** exp // 1_000_000_000


def write_pcapng(fh: BinaryIO, records: Iterable[Record], interfaces: list[Interface] | None = None,
                 big_endian: bool = False, simple: bool = False, extra_blocks: bool = False) -> int:
    """Write a pcapng section. ``simple`` writes simple packet blocks (no timestamps);
    ``extra_blocks`` adds blocks a reader must skip (name resolution, statistics, custom)."""
    e = ">" if big_endian else "<"
    interfaces = interfaces or [Interface()]
    fh.write(_block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1)))
    for itf in interfaces:
        opts = b""
        if itf.tsresol != 6:
            opts += _option(e, 9, bytes([itf.tsresol]))
        if itf.tsoffset:
            opts += _option(e, 14, struct.pack(e + "q", itf.tsoffset))
        if opts:
            opts += _option(e, 0, b"")
        fh.write(_block(e, 1, struct.pack(e + "HHI", itf.linktype, 0, itf.snaplen) + opts))
    if extra_blocks:
        fh.write(_block(e, 4, struct.pack(e + "HH", 0, 0)))                 # name resolution (empty)
        fh.write(_block(e, 0x00000BAD, b"\x00\x00\x7e\xb0custom"))          # custom block
    n = 0
    for r in records:
        wire = r.wire_len or len(r.data)
        if simple:
            fh.write(_block(e, 3, struct.pack(e + "I", wire) + r.data))
        else:
            t = ticks(r.ts_ns, interfaces[r.interface])
            fh.write(_block(e, 6, struct.pack(e + "IIIII", r.interface, t >> 32, t & 0xFFFFFFFF, len(r.data), wire)
                            + r.data))
        n += 1
    if extra_blocks:
        fh.write(_block(e, 5, struct.pack(e + "III", 0, 0, 0)))            # interface statistics
    return n
