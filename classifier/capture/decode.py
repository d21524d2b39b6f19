"""Header decoding: frames (bytes + offsets) -> the :class:`~classifier.capture.packets.Packets` table.

One numba kernel walks the headers of every record (link layer: Ethernet with 802.1Q/802.1ad
tags, Linux cooked SLL/SLL2, raw IP; then ARP, IPv4, IPv6 with extension headers; then TCP,
UDP, SCTP ports, TCP flags, ICMP/ICMPv6/IGMP) and writes one row per packet into numpy
columns. The same kernel decodes captures offline and mirrored packet-ins in the
controller, so both paths see identical fields.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numba import njit

from classifier.capture.reader import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, PAD, Frames, Source, read_frames
from classifier.capture.packets import COLUMNS, DecodeFlag, Packets
from classifier.capture.protocols import TCP_PORTS, UDP_PORTS, Proto, port_table

_UDP_TABLE = port_table(UDP_PORTS)
_TCP_TABLE = port_table(TCP_PORTS)

_L2T = int(DecodeFlag.L2_TRUNCATED)
_L3T = int(DecodeFlag.L3_TRUNCATED)
_L4T = int(DecodeFlag.L4_TRUNCATED)
_FRAG = int(DecodeFlag.FRAGMENT)
_BAD = int(DecodeFlag.MALFORMED)

_P_OTHER, _P_TCP, _P_UDP, _P_IPO = int(Proto.OTHER), int(Proto.TCP), int(Proto.UDP), int(Proto.IP_OTHER)
_P_ARP, _P_ICMP, _P_ICMPV6, _P_IGMP = int(Proto.ARP), int(Proto.ICMP), int(Proto.ICMPV6), int(Proto.IGMP)
_P_DNS, _P_EAPOL, _P_L2O = int(Proto.DNS), int(Proto.EAPOL), int(Proto.L2_OTHER)
_P_MDNS, _P_LLMNR, _P_DHCP = int(Proto.MDNS), int(Proto.LLMNR), int(Proto.DHCP)
_P_DHCPV6, _P_SSDP = int(Proto.DHCPV6), int(Proto.SSDP)

_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)


@njit(cache=True, nogil=True, inline="always")
def _be16(buf, o):
    return (np.uint32(buf[o]) << 8) | np.uint32(buf[o + 1])


@njit(cache=True, nogil=True, inline="always")
def _be48(buf, o):
    v = np.uint64(0)
    for j in range(6):
        v = (v << np.uint64(8)) | np.uint64(buf[o + j])
    return v


@njit(cache=True, nogil=True, inline="always")
def _be64(buf, o):
    v = np.uint64(0)
    for j in range(8):
        v = (v << np.uint64(8)) | np.uint64(buf[o + j])
    return v


@njit(cache=True, nogil=True)
def _qname_hash(buf, q, end):
    """FNV-1a hash of a DNS question name (lower-cased, dot-separated); 0 if unreadable."""
    h = _FNV_OFFSET
    total = 0
    while q < end:
        ln = np.int64(buf[q])
        if ln == 0:
            return h
        if ln >= 64 or q + 1 + ln > end:
            return np.uint64(0)
        if total > 0:
            h = (h ^ np.uint64(46)) * _FNV_PRIME
        for j in range(ln):
            c = np.uint64(buf[q + 1 + j])
            if c >= 65 and c <= 90:
                c += np.uint64(32)
            h = (h ^ c) * _FNV_PRIME
        total += ln + 1
        if total > 255:
            return np.uint64(0)
        q += 1 + ln
    return np.uint64(0)


@njit(cache=True, nogil=True, inline="always")
def _tcp_identity_payload(buf, d):
    """Whether a TCP payload (at least 6 bytes at ``d``) opens with a TLS ClientHello or an
    HTTP request line: the payloads the identity parser reads besides the control protocols."""
    b0 = buf[d]
    if b0 == 0x16:  # TLS handshake record, version 3.x, handshake type 1 (ClientHello)
        return buf[d + 1] == 3 and buf[d + 5] == 1
    b1, b2, b3 = buf[d + 1], buf[d + 2], buf[d + 3]
    if b0 == 71:  # GET
        return b1 == 69 and b2 == 84 and b3 == 32
    if b0 == 80:  # POST, PUT, PATCH
        return (b1 == 79 and b2 == 83 and b3 == 84) or (b1 == 85 and b2 == 84 and b3 == 32) or \
            (b1 == 65 and b2 == 84 and b3 == 67)
    if b0 == 72:  # HEAD
        return b1 == 69 and b2 == 65 and b3 == 68
    if b0 == 79:  # OPTIONS
        return b1 == 80 and b2 == 84 and b3 == 73
    if b0 == 68:  # DELETE
        return b1 == 69 and b2 == 76 and b3 == 69
    return False


@njit(cache=True, nogil=True)
def _decode_kernel(buf, off, cap, wire, lt, udp_tab, tcp_tab,
                   eth_src, eth_dst, vlan, ethertype, ip_version, src_ip, dst_ip, ip_proto,
                   sport, dport, tcp_flags, proto, dns_qhash, flags, payload_off):
    for i in range(len(off)):
        p = off[i]
        end = p + np.int64(cap[i])
        fl = 0
        src = np.uint64(0)
        dst = np.uint64(0)
        vl = 0
        et = 0
        l3 = np.int64(-1)
        ipv = 0
        ipp = 0
        sp = -1
        dp = -1
        tf = -1
        pr = _P_OTHER
        qh = np.uint64(0)
        ps = np.int64(-1)  # start of a payload the identity parser reads
        s_hi = np.uint64(0)
        s_lo = np.uint64(0)
        d_hi = np.uint64(0)
        d_lo = np.uint64(0)
        link = lt[i]

        # ---- link layer
        if link == 1:  # Ethernet
            if end - p < 14:
                fl |= _L2T
            else:
                dst = _be48(buf, p)
                src = _be48(buf, p + 6)
                et = _be16(buf, p + 12)
                q = p + 14
                ntag = 0
                while (et == 0x8100 or et == 0x88A8 or et == 0x9100) and ntag < 4:
                    if q + 4 > end:
                        fl |= _L2T
                        et = 0
                        break
                    if ntag == 0:
                        vl = _be16(buf, q) & 0x0FFF
                    et = _be16(buf, q + 2)
                    q += 4
                    ntag += 1
                if (fl & _L2T) == 0:
                    l3 = q
                    if et < 0x0600:  # 802.3 length field: an LLC frame
                        et = 0
                        # LLC/SNAP with an RFC 1042 or 802.1H OUI carries an ethertype
                        if (q + 8 <= end and buf[q] == 0xAA and buf[q + 1] == 0xAA and buf[q + 2] == 3
                                and buf[q + 3] == 0 and buf[q + 4] == 0 and (buf[q + 5] == 0 or buf[q + 5] == 0xF8)):
                            et = _be16(buf, q + 6)
                            l3 = q + 8
        elif link == 113:  # Linux cooked v1
            if end - p < 16:
                fl |= _L2T
            else:
                if _be16(buf, p + 4) == 6:
                    src = _be48(buf, p + 6)
                et = _be16(buf, p + 14)
                l3 = p + 16
        elif link == 276:  # Linux cooked v2
            if end - p < 20:
                fl |= _L2T
            else:
                et = _be16(buf, p)
                if buf[p + 11] == 6:
                    src = _be48(buf, p + 12)
                l3 = p + 20
        else:  # raw IP (101, 228, 229)
            if end - p < 1:
                fl |= _L2T
            else:
                v = buf[p] >> 4
                if v == 4:
                    et = 0x0800
                elif v == 6:
                    et = 0x86DD
                else:
                    fl |= _BAD
                l3 = p

        # ---- network layer
        l4 = np.int64(-1)
        ip_payload = np.int64(0)   # bytes after the fixed IP header, per its length field
        l4_base = np.int64(0)      # where that payload starts
        if l3 >= 0:
            if et == 0x0806:
                pr = _P_ARP
                if l3 + 28 > end:
                    fl |= _L3T
            elif et == 0x0800:
                if l3 + 20 > end:
                    fl |= _L3T
                else:
                    ihl = np.int64(buf[l3] & 15) * 4
                    if (buf[l3] >> 4) != 4 or ihl < 20:
                        fl |= _BAD
                    else:
                        ipv = 4
                        ipp = buf[l3 + 9]
                        s_lo = np.uint64(0xFFFF00000000) | (_be64(buf, l3 + 8) & np.uint64(0xFFFFFFFF))
                        d_lo = np.uint64(0xFFFF00000000) | (_be64(buf, l3 + 12) & np.uint64(0xFFFFFFFF))
                        ip_payload = np.int64(_be16(buf, l3 + 2)) - ihl
                        l4_base = l3 + ihl
                        if (_be16(buf, l3 + 6) & 0x1FFF) != 0:
                            fl |= _FRAG
                        else:
                            l4 = l3 + ihl
            elif et == 0x86DD:
                if l3 + 40 > end:
                    fl |= _L3T
                elif (buf[l3] >> 4) != 6:
                    fl |= _BAD
                else:
                    ipv = 6
                    s_hi = _be64(buf, l3 + 8)
                    s_lo = _be64(buf, l3 + 16)
                    d_hi = _be64(buf, l3 + 24)
                    d_lo = _be64(buf, l3 + 32)
                    nh = buf[l3 + 6]
                    q = l3 + 40
                    ip_payload = np.int64(_be16(buf, l3 + 4))
                    l4_base = l3 + 40
                    for _ in range(8):
                        if nh != 0 and nh != 43 and nh != 60 and nh != 44 and nh != 51:
                            break
                        if q + 8 > end:
                            fl |= _L4T
                            q = -1
                            break
                        nxt = buf[q]
                        if nh == 44:
                            if (_be16(buf, q + 2) >> 3) != 0:
                                fl |= _FRAG
                                nh = nxt
                                q = -1
                                break
                            q += 8
                        elif nh == 51:
                            q += (np.int64(buf[q + 1]) + 2) * 4
                        else:
                            q += (np.int64(buf[q + 1]) + 1) * 8
                        nh = nxt
                    ipp = nh
                    l4 = q
            elif et == 0x888E:
                pr = _P_EAPOL
            else:
                pr = _P_L2O

        # ---- transport layer and class
        if ipv != 0:
            pr = _P_IPO
            if ipp == 6 or ipp == 17 or ipp == 132:
                pr = _P_TCP if ipp == 6 else (_P_UDP if ipp == 17 else _P_IPO)
                if l4 >= 0:
                    if l4 + 4 <= end:
                        sp = np.int32(_be16(buf, l4))
                        dp = np.int32(_be16(buf, l4 + 2))
                        # A port names an application protocol only for a packet that carries
                        # a payload and is well formed, as in Wireshark.
                        has_payload = False
                        data = np.int64(-1)
                        if ipp == 17 and l4 + 6 <= end:
                            ulen = np.int64(_be16(buf, l4 + 4))
                            if ulen > np.int64(wire[i]) - (l4 - p):
                                fl |= _BAD  # UDP length beyond the frame: malformed
                            else:
                                has_payload = ulen > 8
                                data = l4 + 8
                        elif ipp == 6 and l4 + 13 <= end:
                            doff = np.int64(buf[l4 + 12] >> 4) * 4
                            has_payload = ip_payload - (l4 - l4_base) - doff > 0
                            data = l4 + doff
                        if has_payload:
                            lo = sp if sp < dp else dp
                            hi = dp if sp < dp else sp
                            tab = udp_tab if ipp == 17 else tcp_tab
                            c = tab[lo]
                            if c == 0:
                                c = tab[hi]
                            if c != 0:
                                pr = c
                            # mark the payloads the identity parser reads (where captured)
                            if data < end and data - p < 65536:
                                if (pr == _P_DNS or pr == _P_MDNS or pr == _P_LLMNR or pr == _P_DHCP
                                        or pr == _P_DHCPV6 or pr == _P_SSDP):
                                    ps = data
                                elif ipp == 6 and data + 6 <= end and _tcp_identity_payload(buf, data):
                                    ps = data
                    else:
                        fl |= _L4T
                    if ipp == 6:
                        if l4 + 14 <= end:
                            tf = np.int32(_be16(buf, l4 + 12) & 0x0FFF)
                        else:
                            fl |= _L4T
                # a DNS query's question name (for unique-DNS-request features)
                if pr == _P_DNS and l4 >= 0:
                    d = np.int64(-1)
                    if ipp == 17:
                        d = l4 + 8
                    elif ipp == 6 and l4 + 14 <= end:
                        d = l4 + np.int64(buf[l4 + 12] >> 4) * 4 + 2
                    if d >= 0 and d + 12 <= end:
                        if (buf[d + 2] & 0x80) == 0 and _be16(buf, d + 4) >= 1:
                            qh = _qname_hash(buf, d + 12, end)
            elif ipp == 1:
                pr = _P_ICMP
            elif ipp == 58:
                pr = _P_ICMPV6
            elif ipp == 2:
                pr = _P_IGMP

        eth_src[i] = src
        eth_dst[i] = dst
        vlan[i] = vl
        ethertype[i] = et
        ip_version[i] = ipv
        src_ip[i, 0] = s_hi
        src_ip[i, 1] = s_lo
        dst_ip[i, 0] = d_hi
        dst_ip[i, 1] = d_lo
        ip_proto[i] = ipp
        sport[i] = sp
        dport[i] = dp
        tcp_flags[i] = tf
        proto[i] = pr
        dns_qhash[i] = qh
        flags[i] = fl
        payload_off[i] = ps - p if ps >= 0 else 0


def decode_arrays(buf: np.ndarray, offset: np.ndarray, caplen: np.ndarray, wirelen: np.ndarray,
                  ts_ns: np.ndarray, linktype: np.ndarray) -> Packets:
    """Decode records given as offsets into a padded byte buffer (see :class:`Frames`)."""
    n = len(offset)
    cols = {}
    for name, dtype in COLUMNS.items():
        shape = (n, 2) if name in ("src_ip", "dst_ip") else (n,)
        cols[name] = np.empty(shape, dtype=dtype)
    cols["ts_ns"] = np.ascontiguousarray(ts_ns, dtype=np.int64)
    cols["wire_len"] = np.ascontiguousarray(wirelen, dtype=np.uint32)
    cols["cap_len"] = np.ascontiguousarray(caplen, dtype=np.uint32)
    if n:
        _decode_kernel(buf, np.ascontiguousarray(offset, dtype=np.int64), cols["cap_len"], cols["wire_len"],
                       np.ascontiguousarray(linktype, dtype=np.uint16), _UDP_TABLE, _TCP_TABLE,
                       cols["eth_src"], cols["eth_dst"], cols["vlan"], cols["ethertype"], cols["ip_version"],
                       cols["src_ip"], cols["dst_ip"], cols["ip_proto"], cols["sport"], cols["dport"],
                       cols["tcp_flags"], cols["proto"], cols["dns_qhash"], cols["flags"], cols["payload_off"])
    return Packets(**cols)


def decode(frames: Frames) -> Packets:
    """Decode every record of a capture."""
    return decode_arrays(frames.buf, frames.offset, frames.caplen, frames.wirelen, frames.ts_ns, frames.linktype)


def decode_frames(datas: Sequence[bytes], ts_ns: Sequence[int] | np.ndarray, wire_len: Sequence[int] | np.ndarray,
                  linktype: int = LINKTYPE_ETHERNET) -> Packets:
    """Decode a batch of raw frames (e.g. mirrored packet-ins, possibly truncated).

    ``wire_len`` is each frame's length on the wire (a packet-in's ``total_len``), which may
    exceed ``len(data)`` when the switch truncated the copy.
    """
    n = len(datas)
    caplen = np.fromiter((len(d) for d in datas), dtype=np.uint32, count=n)
    offset = np.zeros(n, dtype=np.int64)
    if n:
        np.cumsum(caplen[:-1], out=offset[1:])
    joined = b"".join(datas)
    buf = np.zeros(len(joined) + PAD, dtype=np.uint8)
    buf[: len(joined)] = np.frombuffer(joined, dtype=np.uint8)
    wire = np.maximum(np.asarray(wire_len, dtype=np.uint32), caplen)
    return decode_arrays(buf, offset, caplen, wire, np.asarray(ts_ns, dtype=np.int64),
                         np.full(n, linktype, dtype=np.uint16))


def read_packets(source: Source, name: str | None = None, warnings: list | None = None) -> Packets:
    """Read and decode a capture. Warnings (e.g. a truncated last record) are appended to
    ``warnings`` when given, else issued with :func:`warnings.warn`."""
    frames = read_frames(source, name)
    if warnings is not None:
        warnings.extend(frames.warnings)
    else:
        import warnings as _w
        for w in frames.warnings:
            _w.warn(w, stacklevel=2)
    return decode(frames)


def warm_up() -> None:
    """Compile (or load from cache) the numba kernels on a tiny capture: ``make install`` runs
    this once so that the first real use does not pay for compilation."""
    import io

    from classifier.capture.writer import Interface, Record, write_pcap, write_pcapng
    frame = bytes(12) + b"\x08\x00" + bytes(40)
    for write in (write_pcap, lambda fh, recs: write_pcapng(fh, recs, [Interface()])):
        buf = io.BytesIO()
        write(buf, [Record(0, frame)])
        decode(read_frames(buf.getvalue(), name="warm-up"))


__all__ = ["decode", "decode_arrays", "decode_frames", "read_packets", "Packets",
           "LINKTYPE_LINUX_SLL", "LINKTYPE_LINUX_SLL2"]
