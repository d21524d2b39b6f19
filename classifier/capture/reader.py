"""Reading capture files into frames: where each packet's bytes are, its length and time.

Formats: pcap (microsecond and nanosecond, either byte order) and pcapng (section header,
interface description, enhanced, simple and obsolete packet blocks; several interfaces,
each with its own timestamp resolution and offset; unknown blocks skipped), plain or
gzip / xz / bzip2 compressed, from a path, a binary stream or bytes.

The record walk is sequential by nature (each record says where the next one starts), so
it runs in a small numba kernel; everything after it is vectorised numpy. Bad input gives
a :class:`CaptureError` naming the file and byte offset; a capture whose last record is cut
short gives every earlier packet plus a :class:`CaptureWarning`.

Offsets in messages are into the decompressed capture when the file is compressed.

Size: a capture larger than :func:`max_capture_bytes` (default :data:`DEFAULT_MAX_CAPTURE_BYTES`,
1 GiB; ``$IOT_MAX_CAPTURE_SIZE``, or ``iotclass --max-capture-size``) is refused, a compressed
one as soon as its decompressed bytes pass the limit, so that a small file that inflates to
gigabytes (a "compression bomb") is refused as soon as its output passes the limit. Input is
read and decompressed a megabyte at a time; the first :data:`SPOOL_MEMORY` (32 MiB) of a
capture are held in memory, the rest goes to an unlinked temporary file that is mapped (not
read) into memory as the buffer the kernels read: what reading any capture costs in process
memory is about that and the decompressor's state (xz: at most :data:`XZ_MEMLIMIT`), whatever
its size or compression ratio.
"""

from __future__ import annotations

import bz2
import lzma
import os
import re
import stat
import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Union

import numpy as np
from numba import njit

from classifier.errors import CaptureError, CaptureWarning, IotClassError

#: Records claiming more captured bytes than this are corrupt, not packets.
MAX_CAPLEN = 256 * 1024
#: Blocks (pcapng) longer than this are corrupt.
MAX_BLOCK = 16 * 1024 * 1024
#: Zero bytes appended after the data so that header reads near the end never leave the buffer.
PAD = 128
#: Largest capture read (after decompression), unless told otherwise (see :func:`max_capture_bytes`).
DEFAULT_MAX_CAPTURE_BYTES = 1 << 30
#: The environment variable that sets the limit (a size such as ``4G``, ``512M`` or bytes).
MAX_CAPTURE_ENV = "IOT_MAX_CAPTURE_SIZE"

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
SUPPORTED_LINKTYPES = {
    LINKTYPE_ETHERNET: "Ethernet",
    LINKTYPE_RAW: "raw IP",
    LINKTYPE_IPV4: "raw IPv4",
    LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_LINUX_SLL: "Linux cooked (SLL)",
    LINKTYPE_LINUX_SLL2: "Linux cooked v2 (SLL2)",
}

Source = Union[str, "os.PathLike[str]", BinaryIO, bytes, bytearray, memoryview]


@dataclass
class Frames:
    """The records of one capture, before any header is decoded.

    ``buf`` holds the whole (decompressed) capture followed by :data:`PAD` zero bytes;
    record ``i`` has ``caplen[i]`` bytes at ``buf[offset[i]:]``.
    """

    source: str
    buf: np.ndarray
    offset: np.ndarray
    caplen: np.ndarray
    wirelen: np.ndarray
    ts_ns: np.ndarray
    linktype: np.ndarray
    format: str
    warnings: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.offset)


# --------------------------------------------------------------------------- loading


def _source_name(source: Source, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return getattr(source, "name", None) or "<stream>"


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


CAPTURE_NAME = re.compile(r"\.(pcap|pcapng|cap)(\.(gz|xz|bz2))?$", re.IGNORECASE)


def capture_paths(paths) -> list[str]:
    """The capture files named by ``paths``: a file as given; a folder as the capture files
    under it (``.pcap``, ``.pcapng``, ``.cap``, optionally ``.gz``/``.xz``/``.bz2``, or any other
    name whose first bytes, decompressed, are a pcap or pcapng header; sub-folders included),
    sorted by path. A folder with none is an error naming it."""
    out: list[str] = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            found = sorted(os.path.join(root, f) for root, _dirs, files in os.walk(path)
                           for f in files if CAPTURE_NAME.search(f) or _looks_like_capture(os.path.join(root, f)))
            if not found:
                raise IotClassError(f"{path}: a folder with no capture files (.pcap, .pcapng or .cap, "
                                    f"optionally .gz/.xz/.bz2)")
            out += found
        else:
            out.append(path)
    return out


_MAGICS = (b"\xa1\xb2\xc3\xd4", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x4d\x3c\xb2\xa1",
           b"\x0a\x0d\x0d\x0a")


def _looks_like_capture(path: str) -> bool:
    """Do the file's first bytes (decompressed if gzip, xz or bzip2) start a pcap or pcapng?"""
    opener = {b"\x1f\x8b": "gzip", b"\xfd7": "lzma", b"BZ": "bz2"}
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
        mod = opener.get(head[:2])
        if mod is not None:
            import gzip
            with {"gzip": gzip.open, "lzma": lzma.open, "bz2": bz2.open}[mod](path, "rb") as fh:
                head = fh.read(4)
        return head in _MAGICS
    except (OSError, EOFError, lzma.LZMAError, ValueError):
        return False


def parse_size(text: str) -> int:
    """Bytes from ``1073741824``, ``1G``, ``512M``, ``1.5GiB``, ``64k`` (units are powers of 1024)."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a size (bytes, or a number with K, M, G or T)")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise ValueError(f"{text!r}: a size must be positive")
    return value


def format_size(n: int) -> str:
    for unit, k in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k:
            v = n / k
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n} bytes"


_max_bytes_override: int | None = None


def set_max_capture_bytes(limit: int | None) -> int | None:
    """Set the process-wide capture size limit (None: back to ``$IOT_MAX_CAPTURE_SIZE`` or the
    default); returns the previous setting."""
    global _max_bytes_override
    previous, _max_bytes_override = _max_bytes_override, limit
    return previous


def max_capture_bytes() -> int:
    """The capture size limit in force: :func:`set_max_capture_bytes`, else
    ``$IOT_MAX_CAPTURE_SIZE``, else :data:`DEFAULT_MAX_CAPTURE_BYTES`."""
    if _max_bytes_override is not None:
        return _max_bytes_override
    env = os.environ.get(MAX_CAPTURE_ENV)
    if env:
        try:
            return parse_size(env)
        except ValueError as exc:
            raise IotClassError(f"{MAX_CAPTURE_ENV}: {exc}") from None
    return DEFAULT_MAX_CAPTURE_BYTES


def _raise_hint() -> str:
    return f"raise the limit with --max-capture-size or {MAX_CAPTURE_ENV}"


def _too_big(name: str, limit: int, what: str) -> CaptureError:
    return CaptureError(name, None, f"{what} more than the capture size limit of {format_size(limit)}; "
                                    f"{_raise_hint()}")


#: Bytes of a capture (decompressed) held in memory; beyond, the rest goes to a temporary file
#: that is mapped, not read, into memory: what a capture costs in process memory is bounded by
#: this (and the decompressor's state), not by its size, so a compression bomb peaks here too.
SPOOL_MEMORY = 32 << 20
#: Compressed input read at a time, and decompressed output produced at a time.
STEP = 1 << 20


class _Spool:
    """Where a capture's bytes go as they are read or decompressed: memory up to
    :data:`SPOOL_MEMORY`, then an unlinked temporary file; refused past ``limit``."""

    def __init__(self, name: str, limit: int, memory: int | None = None):
        self.name, self.limit = name, limit
        self.memory = SPOOL_MEMORY if memory is None else memory
        self.buf = bytearray()
        self.file = None
        self.n = 0

    def write(self, piece, too_big) -> None:
        if not piece:
            return
        if self.n + len(piece) > self.limit:
            raise too_big()
        if self.file is None and self.n + len(piece) > self.memory:
            import tempfile
            self.file = tempfile.TemporaryFile(prefix="iotclass-capture-")
            self.file.write(self.buf)
            self.buf = bytearray()
        if self.file is not None:
            self.file.write(piece)
        else:
            self.buf += piece
        self.n += len(piece)

    def finish(self):
        """(the bytes, as the readers take them; the buffer the kernels read: the bytes and
        :data:`PAD` zero bytes)."""
        if self.file is None:
            data = self.buf
            buf = _padded(data)                  # extends the bytearray in place: the bytes are a view
            return memoryview(data)[:self.n], buf
        import mmap
        self.file.write(bytes(PAD))
        self.file.flush()
        mm = mmap.mmap(self.file.fileno(), self.n + PAD, access=mmap.ACCESS_COPY)
        self.file.close()                      # the mapping keeps the (unlinked) file's pages
        buf = np.frombuffer(mm, dtype=np.uint8)
        return memoryview(mm)[:self.n], buf


def _chunks(source: Source, name: str, limit: int):
    """(the source's size when known, an iterator over its bytes in chunks of :data:`STEP`)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source)
        return len(view), (view[i:i + STEP] for i in range(0, len(view), STEP))
    if isinstance(source, (str, os.PathLike)):
        try:
            fh = open(source, "rb")
            st = os.fstat(fh.fileno())
        except OSError as exc:
            raise CaptureError(name, None, f"cannot open: {exc.strerror or exc}") from None
        size = st.st_size if stat.S_ISREG(st.st_mode) else None
        return size, _file_chunks(fh, name, close=True)
    return None, _file_chunks(source, name, close=False)


def _file_chunks(fh, name: str, close: bool):
    try:
        while True:
            try:
                piece = fh.read(STEP)
            except OSError as exc:
                raise CaptureError(name, None, f"cannot read: {exc.strerror or exc}") from None
            if not piece:
                return
            yield piece
    finally:
        if close:
            fh.close()


#: Memory an xz stream's decoder may take (its header names its dictionary size; ``xz -9``
#: needs 65 MiB): a crafted header cannot make the decoder allocate more than this.
XZ_MEMLIMIT = 96 << 20

_DECOMPRESSORS = {
    "gzip": lambda: zlib.decompressobj(wbits=31),
    "xz": lambda: lzma.LZMADecompressor(memlimit=XZ_MEMLIMIT),
    "bzip2": bz2.BZ2Decompressor,
}


def compression_of(data) -> str:
    """'gzip', 'xz', 'bzip2' or '' from the first bytes."""
    head = bytes(data[:6])
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head == b"\xfd7zXZ\x00":
        return "xz"
    if head[:3] == b"BZh":
        return "bzip2"
    return ""


def _feed(dec, src, step: int, kind: str, pos: int, name: str) -> bytes:
    try:
        return dec.decompress(src, step)
    except (zlib.error, lzma.LZMAError, OSError, EOFError) as exc:
        raise CaptureError(name, pos, f"corrupt {kind} data near compressed byte {pos}: {exc}") from None


def _inflate(kind: str, first: bytes, rest, spool: _Spool, name: str, warnings: list, size: int | None) -> None:
    """Decompress ``first`` and the chunks of ``rest`` (gzip members or xz/bzip2 streams one
    after the other; zero padding after the last allowed) into ``spool``, never producing more
    than :data:`STEP` bytes at a time: a stream whose output passes the limit is refused as soon
    as it does, having held at most the spool's memory."""
    total = f" of {size}" if size is not None else ""
    src = bytes(first)
    pos = len(src)                           # compressed bytes read so far
    while True:                              # one member (gzip) or stream (xz, bzip2)
        member_start = pos - len(src)
        dec = _DECOMPRESSORS[kind]()
        while True:
            if kind == "gzip" or dec.needs_input:
                if not src:
                    src = bytes(next(rest, b""))
                    pos += len(src)
                    if not src:
                        warnings.append(CaptureWarning(
                            name, pos, f"{kind} stream ends early (member starting at compressed byte "
                                       f"{max(member_start, 0)}); reading what was decompressed"))
                        return
                feed, src = src, b""
            else:
                feed = b""
            piece = _feed(dec, feed, STEP, kind, pos, name)
            if kind == "gzip":
                src = dec.unconsumed_tail
            spool.write(piece, lambda: _too_big(
                name, spool.limit, f"{kind} data that decompresses (by compressed byte {pos}{total}) to"))
            if dec.eof:
                src = bytes(dec.unused_data) + src
                break
        # after a member: the end, trailing zero padding, or the next member
        while not src.strip(b"\x00"):
            more = bytes(next(rest, b""))
            if not more:
                return
            pos += len(more)
            if more.strip(b"\x00"):
                src = more if not src else src + more
                break
            src = b""


def _decompress(data, name: str, warnings: list, limit: int | None = None) -> tuple[bytearray, str]:
    """Undo gzip/xz/bzip2 compression of ``data`` (several members or streams allowed), at most
    ``limit`` bytes of output (the capture size limit)."""
    kind = compression_of(data)
    if not kind:
        return data, ""
    limit = max_capture_bytes() if limit is None else limit
    spool = _Spool(name, limit, memory=1 << 62)             # the caller wants the bytes in memory
    view = memoryview(data)
    _inflate(kind, b"", (view[i:i + STEP] for i in range(0, len(view), STEP)), spool, name, warnings, len(view))
    return spool.buf, kind


def _load(source: Source, name: str, limit: int, warnings: list):
    """(the capture's bytes, decompressed; the padded buffer the kernels read; the compression)."""
    size, chunks = _chunks(source, name, limit)
    first = b""
    while len(first) < 6:
        piece = next(chunks, b"")
        if not len(piece):
            break
        first += bytes(piece)
    kind = compression_of(first)
    if not kind and size is not None and size > limit:
        raise _too_big(name, limit, f"{size} bytes,")
    spool = _Spool(name, limit)
    if kind:
        _inflate(kind, first, chunks, spool, name, warnings, size)
    else:
        what = (lambda: _too_big(name, limit, f"{size} bytes,")) if size is not None else \
            (lambda: _too_big(name, limit, "holds"))
        spool.write(first, what)
        for piece in chunks:
            spool.write(piece, what)
    if not first:
        raise CaptureError(name, 0, "empty file, not a capture")
    data, buf = spool.finish()
    return data, buf, kind


def _padded(data) -> np.ndarray:
    """The buffer the kernels read: ``data`` and :data:`PAD` zero bytes. A bytearray is extended
    in place and shared (no copy); the caller reads the data through ``memoryview(data)[:n]``."""
    if isinstance(data, bytearray):
        data.extend(bytes(PAD))
        return np.frombuffer(data, dtype=np.uint8)
    buf = np.zeros(len(data) + PAD, dtype=np.uint8)
    buf[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    return buf


# --------------------------------------------------------------------------- kernels

# Status codes the kernels return (0 means the walk reached the end cleanly).
_OK = 0
_TRUNC_HEADER = 1      # fewer bytes left than a record/block header
_TRUNC_DATA = 2        # record data runs past the end of the file (plausible length)
_CAPLEN_BIG = 3        # captured length > MAX_CAPLEN
_CAPLEN_ZERO = 4       # zero-length record
_CAPLEN_WIRE = 6       # captured length > original length
_BLOCK_LEN = 7         # pcapng block length < 12 or not a multiple of 4
_BLOCK_TRAILER = 8     # pcapng trailing block length differs from the leading one
_BLOCK_BIG = 9         # pcapng block length implausible (beyond file, > MAX_BLOCK)
_BLOCK_BOM = 10        # pcapng section header with a bad byte-order magic
_BLOCK_SHORT = 11      # pcapng block too short for its type
_CAPLEN_BLOCK = 12     # pcapng captured length does not fit its block


@njit(cache=True, nogil=True)
def _rd32(buf, o, big):
    if big:
        return (np.uint32(buf[o]) << 24) | (np.uint32(buf[o + 1]) << 16) | (np.uint32(buf[o + 2]) << 8) | np.uint32(buf[o + 3])
    return (np.uint32(buf[o + 3]) << 24) | (np.uint32(buf[o + 2]) << 16) | (np.uint32(buf[o + 1]) << 8) | np.uint32(buf[o])


@njit(cache=True, nogil=True)
def _rd16(buf, o, big):
    if big:
        return (np.uint32(buf[o]) << 8) | np.uint32(buf[o + 1])
    return (np.uint32(buf[o + 1]) << 8) | np.uint32(buf[o])


@njit(cache=True, nogil=True)
def _walk_pcap(buf, start, end, big, max_caplen):
    """Walk pcap records from ``start`` to ``end``; returns (n, status, stop offset, value, columns)."""
    maxn = (end - start) // 16 + 1
    off_a = np.empty(maxn, np.int64)
    sec_a = np.empty(maxn, np.uint32)
    frac_a = np.empty(maxn, np.uint32)
    cap_a = np.empty(maxn, np.uint32)
    wire_a = np.empty(maxn, np.uint32)
    off = start
    k = 0
    status = _OK
    value = np.int64(0)
    while off < end:
        if off + 16 > end:
            status = _TRUNC_HEADER
            break
        c = _rd32(buf, off + 8, big)
        w = _rd32(buf, off + 12, big)
        value = np.int64(c)
        if c == 0:
            status = _CAPLEN_ZERO
            break
        if c > max_caplen:
            status = _CAPLEN_BIG
            break
        if c > w:
            status = _CAPLEN_WIRE
            value = (np.int64(c) << 32) | np.int64(w)
            break
        if off + 16 + c > end:
            status = _TRUNC_DATA
            value = np.int64(c)
            break
        sec_a[k] = _rd32(buf, off, big)
        frac_a[k] = _rd32(buf, off + 4, big)
        cap_a[k] = c
        wire_a[k] = w
        off_a[k] = off + 16
        k += 1
        off += 16 + c
    return k, status, off, value, off_a[:k], sec_a[:k], frac_a[:k], cap_a[:k], wire_a[:k]


@njit(cache=True, nogil=True)
def _walk_pcapng(buf, end, max_caplen, max_block):
    """Walk pcapng blocks. Packets: data offset, caplen, wirelen, ticks, interface, section, kind.

    Interface description blocks and section headers are returned as offsets (with their
    section and byte order) for Python to parse their options.
    """
    maxn = end // 12 + 1
    off_a = np.empty(maxn, np.int64)
    cap_a = np.empty(maxn, np.uint32)
    wire_a = np.empty(maxn, np.uint32)
    ticks_a = np.empty(maxn, np.uint64)
    if_a = np.empty(maxn, np.uint32)
    sec_a = np.empty(maxn, np.int32)
    kind_a = np.empty(maxn, np.uint8)
    idb_off = np.empty(maxn, np.int64)
    idb_sec = np.empty(maxn, np.int32)
    shb_big = np.empty(maxn, np.bool_)
    k = 0
    nidb = 0
    section = -1
    big = False
    off = 0
    status = _OK
    value = np.int64(0)
    while off < end:
        if off + 12 > end:
            status = _TRUNC_HEADER
            break
        if _rd32(buf, off, False) == 0x0A0D0D0A:
            bom = _rd32(buf, off + 8, False)
            if bom == 0x1A2B3C4D:
                big = False
            elif bom == 0x4D3C2B1A:
                big = True
            else:
                status = _BLOCK_BOM
                value = np.int64(bom)
                break
            section += 1
            shb_big[section] = big
        btype = _rd32(buf, off, big)
        blen = _rd32(buf, off + 4, big)
        value = np.int64(blen)
        if blen < 12 or blen % 4 != 0:
            status = _BLOCK_LEN
            break
        if off + blen > end:
            status = _BLOCK_BIG if blen > max_block else _TRUNC_DATA
            break
        if _rd32(buf, off + blen - 4, big) != blen:
            status = _BLOCK_TRAILER
            value = np.int64(_rd32(buf, off + blen - 4, big))
            break
        if btype == 6 or btype == 2:  # enhanced / obsolete packet block
            if blen < 32:
                status = _BLOCK_SHORT
                break
            if btype == 6:
                iface = _rd32(buf, off + 8, big)
            else:
                iface = _rd16(buf, off + 8, big)
            ticks = (np.uint64(_rd32(buf, off + 12, big)) << np.uint64(32)) | np.uint64(_rd32(buf, off + 16, big))
            c = _rd32(buf, off + 20, big)
            w = _rd32(buf, off + 24, big)
            value = np.int64(c)
            if c == 0:
                status = _CAPLEN_ZERO
                break
            if c > max_caplen:
                status = _CAPLEN_BIG
                break
            if c > blen - 32:
                status = _CAPLEN_BLOCK
                break
            if c > w:
                status = _CAPLEN_WIRE
                value = (np.int64(c) << 32) | np.int64(w)
                break
            off_a[k] = off + 28
            cap_a[k] = c
            wire_a[k] = w
            ticks_a[k] = ticks
            if_a[k] = iface
            sec_a[k] = section
            kind_a[k] = btype
            k += 1
        elif btype == 3:  # simple packet block: no timestamp, interface 0
            if blen < 16:
                status = _BLOCK_SHORT
                break
            w = _rd32(buf, off + 8, big)
            c = w
            if c > blen - 16:
                c = blen - 16
            value = np.int64(c)
            if c == 0:
                status = _CAPLEN_ZERO
                break
            if c > max_caplen:
                status = _CAPLEN_BIG
                break
            off_a[k] = off + 12
            cap_a[k] = c
            wire_a[k] = w
            ticks_a[k] = 0
            if_a[k] = 0
            sec_a[k] = section
            kind_a[k] = 3
            k += 1
        elif btype == 1:  # interface description
            if blen < 20:
                status = _BLOCK_SHORT
                break
            idb_off[nidb] = off
            idb_sec[nidb] = section
            nidb += 1
        off += blen
    return (k, status, off, value, off_a[:k], cap_a[:k], wire_a[:k], ticks_a[:k], if_a[:k], sec_a[:k],
            kind_a[:k], idb_off[:nidb], idb_sec[:nidb], shb_big[:section + 1])


# --------------------------------------------------------------------------- errors


def _status_error(name: str, status: int, off: int, value: int, what: str, warnings: list, end: int) -> None:
    """Turn a kernel status into a CaptureError, or a warning for a truncated last record."""
    if status == _OK:
        return
    if status == _TRUNC_HEADER:
        warnings.append(CaptureWarning(
            name, off, f"truncated last {what} (its header is cut short); keeping every earlier packet"))
        return
    if status == _TRUNC_DATA:
        # A length running past the end of the file cannot be told from a file cut short:
        # both are reported here, and every earlier packet is kept.
        warnings.append(CaptureWarning(
            name, off, f"truncated last {what}: it claims {value} bytes but the file ends "
                       f"{end - off} bytes after its start; keeping every earlier packet"))
        return
    messages = {
        _CAPLEN_BIG: f"{what} claims {value} captured bytes, more than the {MAX_CAPLEN} a packet can have",
        _CAPLEN_ZERO: f"zero-length {what}",
        _CAPLEN_WIRE: f"{what} claims {value >> 32} captured bytes but an original length of {value & 0xFFFFFFFF}",
        _BLOCK_LEN: f"corrupt block length {value} (must be at least 12 and a multiple of 4)",
        _BLOCK_TRAILER: f"corrupt block: trailing length {value} differs from the leading one",
        _BLOCK_BIG: f"corrupt block length {value} (more than {MAX_BLOCK} bytes)",
        _BLOCK_BOM: f"section header with a bad byte-order magic 0x{value:08x}",
        _BLOCK_SHORT: f"block of length {value} too short for its type",
        _CAPLEN_BLOCK: f"{what} claims {value} captured bytes, more than its block holds",
    }
    raise CaptureError(name, off, messages.get(status, f"unreadable {what} (status {status})"))


def _check_linktype(name: str, linktype: int, offset: int) -> None:
    if linktype not in SUPPORTED_LINKTYPES:
        known = ", ".join(f"{k} ({v})" for k, v in SUPPORTED_LINKTYPES.items())
        raise CaptureError(name, offset, f"unsupported link type {linktype}; supported: {known}")


# --------------------------------------------------------------------------- formats

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": (False, False),  # little-endian, microseconds
    b"\xa1\xb2\xc3\xd4": (True, False),
    b"\x4d\x3c\xb2\xa1": (False, True),   # little-endian, nanoseconds
    b"\xa1\xb2\x3c\x4d": (True, True),
}


def _read_pcap(name: str, data, warnings: list, buf: np.ndarray) -> Frames:
    if len(data) < 24:
        raise CaptureError(name, len(data), f"truncated pcap file header ({len(data)} of 24 bytes)")
    big, nano = _PCAP_MAGICS[bytes(data[:4])]
    linktype = struct.unpack_from(">I" if big else "<I", data, 20)[0] & 0xFFFF
    _check_linktype(name, linktype, 20)
    n, status, stop, value, off, sec, frac, cap, wire = _walk_pcap(buf, 24, len(data), big, MAX_CAPLEN)
    _status_error(name, status, int(stop), int(value), "record", warnings, len(data))
    ts = sec.astype(np.int64) * 1_000_000_000 + frac.astype(np.int64) * (1 if nano else 1000)
    snaplen = struct.unpack_from(">I" if big else "<I", data, 16)[0]
    _snaplen_warning(name, off[:n] - 16, cap[:n], snaplen, "the file's", warnings)
    return Frames(name, buf, off, cap, wire, ts, np.full(n, linktype, np.uint16),
                  "pcap-ns" if nano else "pcap", warnings)


def _snaplen_warning(name: str, record_at: np.ndarray, cap: np.ndarray, snaplen: int, whose: str,
                     warnings: list) -> None:
    """Records that captured more bytes than their snap length say: read as they are (their
    lengths are checked against the file and the packet's own length), with one warning."""
    if not snaplen or not len(cap):
        return
    over = np.flatnonzero(cap > snaplen)
    if len(over):
        first = int(over[0])
        warnings.append(CaptureWarning(name, int(record_at[first]), (
            f"{len(over)} record(s) captured more bytes than {whose} snap length of {snaplen} (the first, "
            f"{int(cap[first])} bytes, at byte {int(record_at[first])}); read as they are")))


def _idb_options(name: str, data: bytes, off: int, big: bool) -> tuple[int, int, int, int]:
    """Parse an interface description block: (linktype, snaplen, tsresol exponent spec, tsoffset)."""
    e = ">" if big else "<"
    blen = struct.unpack_from(e + "I", data, off + 4)[0]
    linktype, _reserved, snaplen = struct.unpack_from(e + "HHI", data, off + 8)
    tsresol = 6  # default: microseconds
    tsoffset = 0
    pos, stop = off + 16, off + blen - 4
    while pos + 4 <= stop:
        code, length = struct.unpack_from(e + "HH", data, pos)
        if code == 0:  # opt_endofopt
            break
        if pos + 4 + length > stop:
            raise CaptureError(name, pos, f"interface description option {code} of length {length} runs past its block")
        if code == 9 and length >= 1:
            tsresol = data[pos + 4]
        elif code == 14 and length >= 8:
            tsoffset = struct.unpack_from(e + "q", data, pos + 4)[0]
        pos += 4 + ((length + 3) & ~3)
    exp = tsresol & 0x7F
    if exp > (63 if tsresol & 0x80 else 19):
        base = "2^-" if tsresol & 0x80 else "10^-"
        raise CaptureError(name, off, f"interface description with an impossible timestamp resolution {base}{exp}")
    if abs(tsoffset) > 10**10:
        raise CaptureError(name, off, f"interface description with an impossible timestamp offset {tsoffset} s")
    return linktype, snaplen, tsresol, tsoffset


def _ticks_to_ns(ticks: np.ndarray, tsresol: int) -> np.ndarray:
    """Convert pcapng timestamp ticks to nanoseconds for one interface's resolution."""
    exp = tsresol & 0x7F
    if tsresol & 0x80:  # negative power of two
        if exp == 0:
            return ticks.astype(np.int64) * 1_000_000_000
        sec = (ticks >> np.uint64(exp)).astype(np.int64)
        frac = ticks & np.uint64((1 << exp) - 1)
        if exp <= 30:
            frac_ns = ((frac * np.uint64(1_000_000_000)) >> np.uint64(exp)).astype(np.int64)
        else:
            frac_ns = np.floor(frac.astype(np.float64) * (1e9 / 2.0 ** exp)).astype(np.int64)
        return sec * 1_000_000_000 + frac_ns
    if exp <= 9:
        return ticks.astype(np.int64) * (10 ** (9 - exp))
    return (ticks // np.uint64(10 ** (exp - 9))).astype(np.int64)


def _read_pcapng(name: str, data, warnings: list, buf: np.ndarray) -> Frames:
    if len(data) < 28:
        raise CaptureError(name, len(data), f"truncated pcapng section header ({len(data)} bytes)")
    (n, status, stop, value, off, cap, wire, ticks, iface, sec, kind, idb_off, idb_sec,
     shb_big) = _walk_pcapng(buf, len(data), MAX_CAPLEN, MAX_BLOCK)
    what = "packet block" if status in (_CAPLEN_BIG, _CAPLEN_ZERO, _CAPLEN_WIRE, _CAPLEN_BLOCK) else "block"
    _status_error(name, status, int(stop), int(value), what, warnings, len(data))

    # Interfaces per section, in order of appearance.
    interfaces: dict[int, list[tuple[int, int, int, int, int]]] = {}
    for o, s in zip(idb_off.tolist(), idb_sec.tolist()):
        lt, snap, res, tsoff = _idb_options(name, data, o, bool(shb_big[s]))
        interfaces.setdefault(s, []).append((lt, snap, res, tsoff, o))

    linktype = np.zeros(n, np.uint16)
    ts = np.zeros(n, np.int64)
    if n:
        # One key per (section, interface): packets are grouped by it to convert in bulk.
        key = sec.astype(np.int64) << 32 | iface.astype(np.int64)
        for k in np.unique(key).tolist():
            s, i = k >> 32, k & 0xFFFFFFFF
            sel = key == k
            ifs = interfaces.get(s, [])
            if i >= len(ifs):
                first = int(off[np.argmax(sel)]) - 28
                raise CaptureError(name, max(first, 0),
                                   f"packet block refers to interface {i}, but its section describes {len(ifs)}")
            lt, snap, res, tsoff, idb_at = ifs[i]
            _check_linktype(name, lt, idb_at + 8)
            linktype[sel] = lt
            ts[sel] = _ticks_to_ns(ticks[sel], res) + tsoff * 1_000_000_000
            spb = sel & (kind == 3)
            if snap and spb.any():  # simple packet blocks keep at most the snap length
                cap[spb] = np.minimum(cap[spb], snap)
            if snap:
                epb = sel & (kind != 3)
                _snaplen_warning(name, off[epb] - 28, cap[epb], snap, f"interface {i}'s", warnings)
    return Frames(name, buf, off, cap, wire, ts, linktype, "pcapng", warnings)


def read_frames(source: Source, name: str | None = None, max_bytes: int | None = None) -> Frames:
    """Read a whole capture (path, binary stream or bytes) into :class:`Frames`.

    Raises :class:`CaptureError` on input that is not a readable capture, or larger than
    ``max_bytes`` (default :func:`max_capture_bytes`) once decompressed; appends
    :class:`CaptureWarning` objects to ``Frames.warnings`` where a capture was read in part.
    """
    name = _source_name(source, name)
    limit = max_capture_bytes() if max_bytes is None else max_bytes
    warnings: list = []
    data, buf, compression = _load(source, name, limit, warnings)
    if compression and not len(data):
        raise CaptureError(name, 0, f"{compression} stream holds no data")
    n = len(data)
    magic = bytes(data[:4])
    if magic in _PCAP_MAGICS:
        reader = _read_pcap
    elif magic == b"\x0a\x0d\x0d\x0a":
        reader = _read_pcapng
    elif magic in (b"\xa1\xb2\xcd\x34", b"\x34\xcd\xb2\xa1"):
        raise CaptureError(name, 0, "modified (Kuznetzov) pcap format is not supported; convert it with editcap -F pcap")
    else:
        raise CaptureError(name, 0, f"not a capture: unknown magic 0x{magic.hex() or '(none)'} "
                                    "(expected pcap, pcapng, or one of them gzip/xz/bzip2 compressed)")
    frames = reader(name, data, warnings, buf)
    if compression:
        frames.format += f"+{compression}"
    return frames
