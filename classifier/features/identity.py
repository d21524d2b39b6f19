"""Identity evidence: what devices say about themselves, per device and in time order.

Behaviour statistics do not carry well to devices, vendors and networks never seen; what a
device announces does. The decoder (:mod:`classifier.capture.decode`) marks the few packets
whose payload says something about their sender (``Packets.payload_off``); a numba kernel
reads only those, straight from the capture's bytes, and writes one record per piece of
evidence: the packet's time, the sending MAC (``eth_src``), a :class:`Kind` and the value
as text.

What is read, from packets the device sends:

======================  =====================================================================
kind                    value
======================  =====================================================================
dhcp.hostname           DHCPv4 client message (BOOTREQUEST), option 12, trailing NULs removed
dhcp.vendor_class       option 60
dhcp.prl                option 55, the requested option codes as comma-joined decimals
dhcpv6.vendor_class     DHCPv6 client message, option 16, each vendor-class-data item
dhcpv6.fqdn             option 39, the domain name
dns.query               DNS standard query (UDP or TCP 53): each question name
llmnr.query             LLMNR query (5355): each question name
mdns.browse             mDNS query (not a probe): each question name, ``.local`` removed --
                        what the device looks for, not what it is
mdns.service            service types the device announces (``_hap._tcp``): from the names of
                        its own records and of its probes, and PTR targets of
                        ``_services._dns-sd._udp``
mdns.instance           the instance label of its service instance names (``Living Room``)
mdns.txt                each non-empty string of its TXT records (``md=BSB002``, ``ci=2``)
mdns.host               owner names of its A/AAAA records, SRV targets, reverse-PTR targets
                        and probed host names, ``.local`` removed
ssdp.type               NOTIFY ``NT`` and M-SEARCH responses' ``ST``: what the device is
ssdp.search             M-SEARCH ``ST``: what the device looks for
ssdp.server             ``SERVER`` of a NOTIFY or M-SEARCH response
ssdp.user_agent         ``USER-AGENT`` of an M-SEARCH
ssdp.location           ``LOCATION`` of a NOTIFY or M-SEARCH response
tls.sni                 TLS ClientHello server name (TCP, any port, the segment opening it)
http.user_agent         HTTP request (TCP, any port, the segment opening it) ``User-Agent``
http.host               its ``Host``
======================  =====================================================================

"Own" mDNS records are every record of a response, and the authority records of a probe (a
query with authority records); the answers of a query are known answers about others and
are skipped. Names are their labels joined with ``.``; header values are trimmed of spaces.
Values are kept as sent (case included) and must be valid UTF-8.

The MAC's locally-administered bit (randomised phone MACs) is a property of the MAC, not of
a packet: :func:`locally_administered`.

Malformed payloads (options or records running past their message, compression loops,
names longer than 255 bytes, oversized values, invalid UTF-8) lose the evidence from the
fault on and are counted: one :class:`~classifier.errors.CaptureWarning` per protocol names
how many and the first packet. Payloads cut short by a capture's snap length are read as
far as they go, silently.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Iterable, Sequence

import numpy as np
from numba import njit

from classifier.capture.packets import Packets
from classifier.capture.protocols import Proto
from classifier.errors import CaptureWarning


class Kind(IntEnum):
    DHCP_HOSTNAME = 0
    DHCP_VENDOR_CLASS = 1
    DHCP_PRL = 2
    DHCPV6_VENDOR_CLASS = 3
    DHCPV6_FQDN = 4
    DNS_QUERY = 5
    LLMNR_QUERY = 6
    MDNS_BROWSE = 7
    MDNS_SERVICE = 8
    MDNS_INSTANCE = 9
    MDNS_TXT = 10
    MDNS_HOST = 11
    SSDP_TYPE = 12
    SSDP_SEARCH = 13
    SSDP_SERVER = 14
    SSDP_USER_AGENT = 15
    SSDP_LOCATION = 16
    TLS_SNI = 17
    HTTP_USER_AGENT = 18
    HTTP_HOST = 19


#: Kind names, indexed by :class:`Kind` code ("dhcp.hostname", ...).
KINDS: tuple[str, ...] = tuple(k.name.lower().replace("_", ".", 1) for k in Kind)
KIND_CODES: dict[str, int] = {name: i for i, name in enumerate(KINDS)}


class Source(IntEnum):
    """The protocols the kernel reads (its problem counters are per protocol)."""
    DHCP = 0
    DHCPV6 = 1
    DNS = 2
    LLMNR = 3
    MDNS = 4
    SSDP = 5
    TLS = 6
    HTTP = 7


SOURCE_NAMES = {Source.DHCP: "DHCP", Source.DHCPV6: "DHCPv6", Source.DNS: "DNS", Source.LLMNR: "LLMNR",
                Source.MDNS: "mDNS", Source.SSDP: "SSDP", Source.TLS: "TLS ClientHello",
                Source.HTTP: "HTTP request"}

#: At most this many records from one message (more: the rest is counted as a problem).
MAX_RECORDS_PER_MESSAGE = 256
#: Longest value kept, in bytes (a DNS name has at most 255); longer ones are problems.
MAX_VALUE = 1024
_MAX_LABELS = 128
_MAX_JUMPS = 64

_P_DNS, _P_MDNS, _P_LLMNR = int(Proto.DNS), int(Proto.MDNS), int(Proto.LLMNR)
_P_DHCP, _P_DHCPV6, _P_SSDP = int(Proto.DHCP), int(Proto.DHCPV6), int(Proto.SSDP)

_K = {k.name: int(k) for k in Kind}
_K_DHCP_HOSTNAME, _K_DHCP_VC, _K_DHCP_PRL = _K["DHCP_HOSTNAME"], _K["DHCP_VENDOR_CLASS"], _K["DHCP_PRL"]
_K_V6_VC, _K_V6_FQDN = _K["DHCPV6_VENDOR_CLASS"], _K["DHCPV6_FQDN"]
_K_DNS, _K_LLMNR, _K_BROWSE = _K["DNS_QUERY"], _K["LLMNR_QUERY"], _K["MDNS_BROWSE"]
_K_SERVICE, _K_INSTANCE, _K_TXT, _K_HOST = _K["MDNS_SERVICE"], _K["MDNS_INSTANCE"], _K["MDNS_TXT"], _K["MDNS_HOST"]
_K_SSDP_TYPE, _K_SSDP_SEARCH, _K_SSDP_SERVER = _K["SSDP_TYPE"], _K["SSDP_SEARCH"], _K["SSDP_SERVER"]
_K_SSDP_UA, _K_SSDP_LOC = _K["SSDP_USER_AGENT"], _K["SSDP_LOCATION"]
_K_SNI, _K_HTTP_UA, _K_HTTP_HOST = _K["TLS_SNI"], _K["HTTP_USER_AGENT"], _K["HTTP_HOST"]

_S_DHCP, _S_DHCPV6, _S_DNS, _S_LLMNR = int(Source.DHCP), int(Source.DHCPV6), int(Source.DNS), int(Source.LLMNR)
_S_MDNS, _S_SSDP, _S_TLS, _S_HTTP = int(Source.MDNS), int(Source.SSDP), int(Source.TLS), int(Source.HTTP)
_N_SOURCES = len(Source)

# outcomes of reading one piece of a message
_OK, _BAD, _CUT = 0, 1, 2

_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)

# state vector of the kernel's output: records written, bytes written, first record and
# first byte of the current message, messages remembered
_ST_N, _ST_W, _ST_MSG, _ST_MSGW, _ST_SEEN = 0, 1, 2, 3, 4
#: Output bytes one message may use (its values, and the names read on the way).
_MESSAGE_BYTES = MAX_RECORDS_PER_MESSAGE * (MAX_VALUE + 256)


# --------------------------------------------------------------------------- kernel helpers


@njit(cache=True, nogil=True, inline="always")
def _be16(buf, o):
    return (np.int64(buf[o]) << 8) | np.int64(buf[o + 1])


@njit(cache=True, nogil=True)
def _emit(out, st, orow, okind, opos, olen, ohash, row, kind, pos, ln):
    """Record ``out[pos:pos+ln]`` as a value of ``kind`` (skipped when empty, or when the same
    kind and value was recorded from this message already). Returns False when the message
    has reached its record limit."""
    if ln <= 0:
        return True
    h = _FNV_OFFSET
    for j in range(ln):
        h = (h ^ np.uint64(out[pos + j])) * _FNV_PRIME
    for r in range(st[_ST_MSG], st[_ST_N]):
        if ohash[r] == h and okind[r] == kind and olen[r] == ln:
            return True
    k = st[_ST_N]
    if k - st[_ST_MSG] >= MAX_RECORDS_PER_MESSAGE:
        return False
    orow[k] = row
    okind[k] = kind
    opos[k] = pos
    olen[k] = ln
    ohash[k] = h
    st[_ST_N] = k + 1
    return True


@njit(cache=True, nogil=True, inline="always")
def _room(st, w, need):
    """Whether the current message may write ``need`` more bytes at ``w``."""
    return w + need - st[_ST_MSGW] <= _MESSAGE_BYTES


@njit(cache=True, nogil=True)
def _copy(buf, s, e, out, st):
    """Copy ``buf[s:e]`` to the output buffer; returns its position there (bytes committed),
    -1 when the message has used its share of the output."""
    w = st[_ST_W]
    if not _room(st, w, e - s):
        return -1
    for j in range(e - s):
        out[w + j] = buf[s + j]
    st[_ST_W] = w + (e - s)
    return w


@njit(cache=True, nogil=True, inline="always")
def _lower(c):
    return c + 32 if 65 <= c <= 90 else c


@njit(cache=True, nogil=True)
def _label_is(out, s, ln, word):
    """Case-insensitive comparison of a label with an ASCII word (given as a uint8 array)."""
    if ln != len(word):
        return False
    for j in range(ln):
        if _lower(out[s + j]) != word[j]:
            return False
    return True


_W_TCP = np.frombuffer(b"_tcp", np.uint8).copy()
_W_UDP = np.frombuffer(b"_udp", np.uint8).copy()
_W_SUB = np.frombuffer(b"_sub", np.uint8).copy()
_W_LOCAL = np.frombuffer(b"local", np.uint8).copy()
_W_SERVICES = np.frombuffer(b"_services", np.uint8).copy()
_W_DNSSD = np.frombuffer(b"_dns-sd", np.uint8).copy()
_W_ARPA = np.frombuffer(b"arpa", np.uint8).copy()


@njit(cache=True, nogil=True)
def _read_name(buf, msg, end, q, cut, out, w, lab, st):
    """Read a DNS name at ``q`` (compression pointers relative to ``msg``, bytes up to
    ``end``) into ``out[w:]`` as text: labels joined with ``.``. ``lab`` receives each label's
    (start, length) in ``out``. Returns (status, position after the name, text length,
    labels). ``cut``: the message continues past ``end`` (snap length), so running out of
    bytes is not a fault."""
    nxt = np.int64(-1)
    n_lab = 0
    text = 0
    wire = 0
    jumps = 0
    while True:
        if q >= end:
            return (_CUT if cut else _BAD), np.int64(0), 0, 0
        c = np.int64(buf[q])
        if c == 0:
            if nxt < 0:
                nxt = q + 1
            return _OK, nxt, text, n_lab
        t = c & 0xC0
        if t == 0xC0:
            if q + 1 >= end:
                return (_CUT if cut else _BAD), np.int64(0), 0, 0
            target = msg + (((c & 0x3F) << 8) | np.int64(buf[q + 1]))
            if nxt < 0:
                nxt = q + 2
            jumps += 1
            if jumps > _MAX_JUMPS or target >= end:
                return _BAD, np.int64(0), 0, 0
            q = target
            continue
        if t != 0:
            return _BAD, np.int64(0), 0, 0  # extended label types (RFC 6891 deprecated them)
        wire += c + 1
        if wire + 1 > 255 or n_lab >= _MAX_LABELS:
            return _BAD, np.int64(0), 0, 0
        if q + 1 + c > end:
            return (_CUT if cut else _BAD), np.int64(0), 0, 0
        if not _room(st, w, text + c + 1):
            return _BAD, np.int64(0), 0, 0
        if n_lab > 0:
            out[w + text] = 46  # '.'
            text += 1
        lab[n_lab, 0] = w + text
        lab[n_lab, 1] = c
        for j in range(c):
            out[w + text + j] = buf[q + 1 + j]
        text += c
        n_lab += 1
        q += 1 + c


@njit(cache=True, nogil=True)
def _strip_local(out, lab, n_lab, w, text):
    """Length of a name's text without a final ``.local`` label (the whole text otherwise)."""
    if n_lab >= 2 and _label_is(out, lab[n_lab - 1, 0], lab[n_lab - 1, 1], _W_LOCAL):
        return lab[n_lab - 2, 0] + lab[n_lab - 2, 1] - w
    return text


@njit(cache=True, nogil=True)
def _service_at(out, lab, n_lab):
    """Index k of the first label pair ``_svc._tcp`` / ``_svc._udp`` of a name; -1 if none."""
    for k in range(n_lab - 1):
        if lab[k, 1] >= 2 and out[lab[k, 0]] == 95 and (
                _label_is(out, lab[k + 1, 0], lab[k + 1, 1], _W_TCP)
                or _label_is(out, lab[k + 1, 0], lab[k + 1, 1], _W_UDP)):
            return k
    return -1


@njit(cache=True, nogil=True)
def _emit_service_name(out, st, orow, okind, opos, olen, ohash, row, lab, n_lab):
    """A service-shaped name: the service type (``_svc._tcp``) and, for an instance name, its
    instance (the labels before it; a subtype's ``_sub`` is no instance). Returns (found, ok)."""
    k = _service_at(out, lab, n_lab)
    if k < 0:
        return False, True
    s = lab[k, 0]
    ok = _emit(out, st, orow, okind, opos, olen, ohash, row, _K_SERVICE, s, lab[k + 1, 0] + lab[k + 1, 1] - s)
    if ok and k >= 1 and not _label_is(out, lab[k - 1, 0], lab[k - 1, 1], _W_SUB):
        ok = _emit(out, st, orow, okind, opos, olen, ohash, row, _K_INSTANCE, lab[0, 0],
                   lab[k - 1, 0] + lab[k - 1, 1] - lab[0, 0])
    return True, ok


@njit(cache=True, nogil=True)
def _dns(buf, msg, end, cut, row, mode, out, st, orow, okind, opos, olen, ohash, lab, lab2):
    """One DNS-format message at ``msg``..``end``. ``mode``: _S_DNS, _S_LLMNR or _S_MDNS."""
    if msg + 12 > end:
        return _CUT if cut else _BAD
    flags = _be16(buf, msg + 2)
    qr = flags >> 15
    opcode = (flags >> 11) & 15
    if opcode != 0:
        return _OK
    qd = _be16(buf, msg + 4)
    an = _be16(buf, msg + 6)
    ns = _be16(buf, msg + 8)
    ar = _be16(buf, msg + 10)
    if mode != _S_MDNS and qr == 1:
        return _OK  # unicast DNS and LLMNR: only the device's own queries
    probe = qr == 0 and ns > 0
    q = msg + 12
    for _ in range(qd):
        w = st[_ST_W]
        status, q2, text, n_lab = _read_name(buf, msg, end, q, cut, out, w, lab, st)
        if status != _OK:
            return status
        if q2 + 4 > end:
            return _CUT if cut else _BAD
        q = q2 + 4
        if text == 0:
            continue
        ok = True
        if mode == _S_DNS:
            ok = _emit(out, st, orow, okind, opos, olen, ohash, row, _K_DNS, w, text)
        elif mode == _S_LLMNR:
            ok = _emit(out, st, orow, okind, opos, olen, ohash, row, _K_LLMNR, w, text)
        elif qr == 0 and not probe:
            ok = _emit(out, st, orow, okind, opos, olen, ohash, row, _K_BROWSE, w,
                       _strip_local(out, lab, n_lab, w, text))
        elif probe:
            found, ok = _emit_service_name(out, st, orow, okind, opos, olen, ohash, row, lab, n_lab)
            if ok and not found:
                ok = _emit(out, st, orow, okind, opos, olen, ohash, row, _K_HOST, w,
                           _strip_local(out, lab, n_lab, w, text))
        if not ok:
            return _BAD
        st[_ST_W] = w + text
    if mode != _S_MDNS:
        return _OK
    total = an + ns + ar
    for r in range(total):
        own = qr == 1 or (r >= an and r < an + ns)
        w = st[_ST_W]
        status, q2, text, n_lab = _read_name(buf, msg, end, q, cut, out, w, lab, st)
        if status != _OK:
            return status
        if q2 + 10 > end:
            return _CUT if cut else _BAD
        rtype = _be16(buf, q2)
        rdlen = _be16(buf, q2 + 8)
        rd = q2 + 10
        if rd + rdlen > end:
            return _CUT if cut else _BAD
        q = rd + rdlen
        if not own or text == 0:
            continue
        st[_ST_W] = w + text  # the owner's text stays while its records are emitted
        ok = True
        if rtype == 1 or rtype == 28:  # A, AAAA
            ok = _emit(out, st, orow, okind, opos, olen, ohash, row, _K_HOST, w, _strip_local(out, lab, n_lab, w, text))
        elif rtype == 12 or rtype == 33:  # PTR, SRV: a name in the data
            t0 = rd if rtype == 12 else rd + 6
            w2 = st[_ST_W]
            status, _, text2, n2 = _read_name(buf, msg, rd + rdlen, t0, False, out, w2, lab2, st)
            if status != _OK:
                return _BAD  # the record's bytes are all there: its name is at fault
            st[_ST_W] = w2 + text2
            if rtype == 33:
                _, ok = _emit_service_name(out, st, orow, okind, opos, olen, ohash, row, lab, n_lab)
                if ok:
                    ok = _emit(out, st, orow, okind, opos, olen, ohash, row, _K_HOST, w2,
                               _strip_local(out, lab2, n2, w2, text2))
            elif (n_lab >= 3 and _label_is(out, lab[0, 0], lab[0, 1], _W_SERVICES)
                  and _label_is(out, lab[1, 0], lab[1, 1], _W_DNSSD)
                  and _label_is(out, lab[2, 0], lab[2, 1], _W_UDP)):
                _, ok = _emit_service_name(out, st, orow, okind, opos, olen, ohash, row, lab2, n2)
            elif n_lab >= 2 and _label_is(out, lab[n_lab - 1, 0], lab[n_lab - 1, 1], _W_ARPA):
                ok = _emit(out, st, orow, okind, opos, olen, ohash, row, _K_HOST, w2,
                           _strip_local(out, lab2, n2, w2, text2))
            else:
                found, ok = _emit_service_name(out, st, orow, okind, opos, olen, ohash, row, lab2, n2)
                if ok:
                    _, ok = _emit_service_name(out, st, orow, okind, opos, olen, ohash, row, lab, n_lab)
        elif rtype == 16:  # TXT
            _, ok = _emit_service_name(out, st, orow, okind, opos, olen, ohash, row, lab, n_lab)
            t = rd
            while ok and t < rd + rdlen:
                ln = np.int64(buf[t])
                if t + 1 + ln > rd + rdlen:
                    return _BAD
                if ln > 0:
                    pos = _copy(buf, t + 1, t + 1 + ln, out, st)
                    ok = pos >= 0 and _emit(out, st, orow, okind, opos, olen, ohash, row, _K_TXT, pos, ln)
                t += 1 + ln
        else:
            _, ok = _emit_service_name(out, st, orow, okind, opos, olen, ohash, row, lab, n_lab)
        if not ok:
            return _BAD
    return _OK


@njit(cache=True, nogil=True)
def _emit_decimal_list(buf, s, e, out, st):
    """Write the bytes ``buf[s:e]`` as comma-joined decimals; returns (position, length)."""
    w0 = st[_ST_W]
    if not _room(st, w0, 4 * (e - s)):
        return -1, 0
    w = w0
    for j in range(s, e):
        v = np.int64(buf[j])
        if j > s:
            out[w] = 44
            w += 1
        if v >= 100:
            out[w] = 48 + v // 100
            w += 1
        if v >= 10:
            out[w] = 48 + (v // 10) % 10
            w += 1
        out[w] = 48 + v % 10
        w += 1
    st[_ST_W] = w
    return w0, w - w0


@njit(cache=True, nogil=True)
def _dhcp(buf, p, end, cut, row, out, st, orow, okind, opos, olen, ohash):
    if p + 240 > end:
        return _CUT if cut else _OK  # too short for DHCP options: plain BOOTP or nothing
    if not (buf[p + 236] == 99 and buf[p + 237] == 130 and buf[p + 238] == 83 and buf[p + 239] == 99):
        return _OK  # no magic cookie: not DHCP
    if buf[p] != 1:
        return _OK  # a server's reply
    q = p + 240
    while q < end:
        code = buf[q]
        if code == 0:
            q += 1
            continue
        if code == 255:
            return _OK
        if q + 2 > end:
            return _CUT if cut else _BAD
        ln = np.int64(buf[q + 1])
        if q + 2 + ln > end:
            return _CUT if cut else _BAD
        s = q + 2
        e = s + ln
        ok = True
        if code == 12 or code == 60:
            while e > s and buf[e - 1] == 0:
                e -= 1
            pos = _copy(buf, s, e, out, st)
            ok = pos >= 0 and _emit(out, st, orow, okind, opos, olen, ohash, row, _K_DHCP_HOSTNAME if code == 12 else _K_DHCP_VC,
                       pos, e - s)
        elif code == 55:
            pos, n = _emit_decimal_list(buf, s, e, out, st)
            ok = pos >= 0 and _emit(out, st, orow, okind, opos, olen, ohash, row, _K_DHCP_PRL, pos, n)
        if not ok:
            return _BAD
        q = e
    return _CUT if cut else _OK


@njit(cache=True, nogil=True)
def _dhcpv6(buf, p, end, cut, row, out, st, orow, okind, opos, olen, ohash, lab):
    if p + 4 > end:
        return _CUT if cut else _BAD
    mt = buf[p]
    if not (mt == 1 or mt == 3 or mt == 4 or mt == 5 or mt == 6 or mt == 8 or mt == 9 or mt == 11):
        return _OK  # server and relay messages
    q = p + 4
    while q + 4 <= end:
        code = _be16(buf, q)
        ln = _be16(buf, q + 2)
        s = q + 4
        e = s + ln
        if e > end:
            return _CUT if cut else _BAD
        ok = True
        if code == 16:  # vendor class: enterprise number, then (length, data) items
            t = s + 4
            if t > e:
                return _BAD
            while ok and t + 2 <= e:
                n = _be16(buf, t)
                if t + 2 + n > e:
                    return _BAD
                pos = _copy(buf, t + 2, t + 2 + n, out, st)
                ok = pos >= 0 and _emit(out, st, orow, okind, opos, olen, ohash, row, _K_V6_VC, pos, n)
                t += 2 + n
        elif code == 39 and ln >= 2:  # client FQDN: flags, then an uncompressed name (may omit the root)
            w = st[_ST_W]
            t = s + 1
            text = 0
            while t < e:
                c = np.int64(buf[t])
                if c == 0:
                    break
                if c >= 64 or t + 1 + c > e or text + c + 1 > 255 or not _room(st, w, text + c + 1):
                    return _BAD
                if text > 0:
                    out[w + text] = 46
                    text += 1
                for j in range(c):
                    out[w + text + j] = buf[t + 1 + j]
                text += c
                t += 1 + c
            st[_ST_W] = w + text
            ok = _emit(out, st, orow, okind, opos, olen, ohash, row, _K_V6_FQDN, w, text)
        if not ok:
            return _BAD
        q = e
    if q < end:
        return _CUT if cut else _BAD
    return _CUT if cut else _OK


@njit(cache=True, nogil=True)
def _starts(buf, s, e, word):
    """Whether ``buf[s:e]`` starts with ``word`` (case-insensitive, word given lower-case)."""
    if e - s < len(word):
        return False
    for j in range(len(word)):
        if _lower(buf[s + j]) != word[j]:
            return False
    return True


_W_NOTIFY = np.frombuffer(b"notify ", np.uint8).copy()
_W_MSEARCH = np.frombuffer(b"m-search ", np.uint8).copy()
_W_HTTP = np.frombuffer(b"http/", np.uint8).copy()
_H_NT = np.frombuffer(b"nt", np.uint8).copy()
_H_ST = np.frombuffer(b"st", np.uint8).copy()
_H_SERVER = np.frombuffer(b"server", np.uint8).copy()
_H_LOCATION = np.frombuffer(b"location", np.uint8).copy()
_H_UA = np.frombuffer(b"user-agent", np.uint8).copy()
_H_HOST = np.frombuffer(b"host", np.uint8).copy()


@njit(cache=True, nogil=True)
def _name_is(buf, s, e, word):
    return e - s == len(word) and _starts(buf, s, e, word)


@njit(cache=True, nogil=True)
def _headers(buf, p, end, datagram, cut, row, ssdp, out, st, orow, okind, opos, olen, ohash):
    """An HTTP-like message (SSDP over UDP, an HTTP request's first segment over TCP). A last
    line without its line end counts only in a whole datagram."""
    # the start line
    q = p
    while q < end and buf[q] != 10:
        q += 1
    if q >= end:
        return _CUT if cut else _OK
    if ssdp:
        if _starts(buf, p, q, _W_NOTIFY):
            what = 1
        elif _starts(buf, p, q, _W_MSEARCH):
            what = 2
        elif _starts(buf, p, q, _W_HTTP):
            what = 3
        else:
            return _OK
    else:
        what = 0
    q += 1
    while q < end:
        s = q
        while q < end and buf[q] != 10:
            q += 1
        if q >= end and not datagram:
            break  # a line cut at the segment's end
        e = q
        q += 1
        if e > s and buf[e - 1] == 13:
            e -= 1
        if e == s:
            break  # the empty line ending the headers
        if buf[s] == 32 or buf[s] == 9:
            continue  # a folded continuation line
        c = s
        while c < e and buf[c] != 58:
            c += 1
        if c >= e:
            continue  # not a header line
        v = c + 1
        while v < e and (buf[v] == 32 or buf[v] == 9):
            v += 1
        ve = e
        while ve > v and (buf[ve - 1] == 32 or buf[ve - 1] == 9):
            ve -= 1
        kind = -1
        if ssdp:
            if _name_is(buf, s, c, _H_NT) and what == 1:
                kind = _K_SSDP_TYPE
            elif _name_is(buf, s, c, _H_ST) and what != 1:
                kind = _K_SSDP_TYPE if what == 3 else _K_SSDP_SEARCH
            elif _name_is(buf, s, c, _H_SERVER) and what != 2:
                kind = _K_SSDP_SERVER
            elif _name_is(buf, s, c, _H_LOCATION) and what != 2:
                kind = _K_SSDP_LOC
            elif _name_is(buf, s, c, _H_UA) and what == 2:
                kind = _K_SSDP_UA
        else:
            if _name_is(buf, s, c, _H_UA):
                kind = _K_HTTP_UA
            elif _name_is(buf, s, c, _H_HOST):
                kind = _K_HTTP_HOST
        if kind < 0 or ve <= v:
            continue
        if ve - v > MAX_VALUE:
            return _BAD
        pos = _copy(buf, v, ve, out, st)
        if pos < 0 or not _emit(out, st, orow, okind, opos, olen, ohash, row, kind, pos, ve - v):
            return _BAD
    return _OK


@njit(cache=True, nogil=True)
def _tls(buf, p, end, row, out, st, orow, okind, opos, olen, ohash):
    """A TLS ClientHello opening a TCP segment; the server names of its SNI extension."""
    rec_end = p + 5 + _be16(buf, p + 3)
    avail = min(rec_end, end)
    short = end < rec_end   # the record goes on in later segments (or past the snap length)
    miss = _CUT if short else _BAD
    if p + 9 > avail:
        return miss
    hs_end = p + 9 + ((np.int64(buf[p + 6]) << 16) | _be16(buf, p + 7))
    q = p + 9 + 34  # version and random
    if q + 1 > avail:
        return miss
    q += 1 + np.int64(buf[q])  # session id
    if q + 2 > avail:
        return miss
    q += 2 + _be16(buf, q)  # cipher suites
    if q + 1 > avail:
        return miss
    q += 1 + np.int64(buf[q])  # compression methods
    if q >= hs_end:
        return _OK if q == hs_end else _BAD  # no extensions
    if q + 2 > avail:
        return miss
    ext_end = q + 2 + _be16(buf, q)
    if ext_end > hs_end:
        return _BAD
    q += 2
    while q + 4 <= ext_end:
        if q + 4 > avail:
            return miss
        typ = _be16(buf, q)
        ln = _be16(buf, q + 2)
        s = q + 4
        e = s + ln
        if e > ext_end:
            return _BAD
        if typ == 0:
            if s + 2 > avail:
                return miss
            list_end = s + 2 + _be16(buf, s)
            if list_end > e:
                return _BAD
            t = s + 2
            while t + 3 <= list_end:
                if t + 3 > avail:
                    return miss
                n = _be16(buf, t + 1)
                if t + 3 + n > list_end:
                    return _BAD
                if t + 3 + n > avail:
                    return miss
                if buf[t] == 0:
                    pos = _copy(buf, t + 3, t + 3 + n, out, st)
                    if pos < 0 or not _emit(out, st, orow, okind, opos, olen, ohash, row, _K_SNI, pos, n):
                        return _BAD
                t += 3 + n
            return _OK
        q = e
    return _OK


# A datagram's records depend on its bytes alone (every reader above stays within them), and
# devices repeat theirs: the same mDNS answers and SSDP announcements, over and over. The
# kernel remembers each such datagram it read (by a hash of its bytes, its protocol and whether it
# was cut short) and gives a byte-for-byte repeat the records and outcome of the first: the
# same values at the same places of the output, under the repeat's own row.
_SEEN_AT, _SEEN_LEN, _SEEN_KEY, _SEEN_STATUS, _SEEN_SRC, _SEEN_R0, _SEEN_R1, _SEEN_HASH = range(8)


@njit(cache=True, nogil=True)
def _bytes_hash(buf, s, e, key):
    """A hash of ``buf[s:e]`` and ``key``, eight bytes at a time."""
    h = (np.uint64(key) + np.uint64(e - s)) * np.uint64(0x9E3779B97F4A7C15)
    nw = (e - s) >> 3
    words = buf[s:s + 8 * nw].view(np.uint64)
    for k in range(nw):
        h = (h ^ words[k]) * np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(29)
    for j in range(s + 8 * nw, e):
        h = (h ^ np.uint64(buf[j])) * np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(32)
    return h


@njit(cache=True, nogil=True)
def _same_bytes(buf, a, b, n):
    """Whether ``buf[a:a+n]`` and ``buf[b:b+n]`` hold the same bytes."""
    nw = n >> 3
    wa = buf[a:a + 8 * nw].view(np.uint64)
    wb = buf[b:b + 8 * nw].view(np.uint64)
    for k in range(nw):
        if wa[k] != wb[k]:
            return False
    for j in range(8 * nw, n):
        if buf[a + j] != buf[b + j]:
            return False
    return True


@njit(cache=True, nogil=True)
def _identity_kernel(buf, off, cap, wire, poff, proto, ipp, rows, j0, st,
                     orow, okind, opos, olen, ohash, out, problems, first_problem, seen_table, seen):
    """Read the marked rows ``rows[j0:]``; stops early (returning the next j) when the output
    arrays might not hold another message. ``seen_table`` / ``seen``: the datagrams read so
    far (an open-addressing table of indices into ``seen``'s rows, see ``_SEEN_*``)."""
    lab = np.empty((_MAX_LABELS, 2), np.int64)
    lab2 = np.empty((_MAX_LABELS, 2), np.int64)
    for j in range(j0, len(rows)):
        if st[_ST_N] + MAX_RECORDS_PER_MESSAGE + 1 > len(orow) or st[_ST_W] + _MESSAGE_BYTES > len(out):
            return j
        i = rows[j]
        start = off[i]
        p = start + np.int64(poff[i])
        end = start + np.int64(cap[i])
        cut = cap[i] < wire[i]
        pr = proto[i]
        st[_ST_MSG] = st[_ST_N]
        st[_ST_MSGW] = st[_ST_W]
        status = _OK
        src = -1
        if ipp[i] == 17:
            udp_end = p - 8 + _be16(buf, p - 4)
            if udp_end < end:
                end = udp_end
                cut = False
            elif udp_end > end:
                cut = True
            # only the announcements devices repeat are remembered (a DNS query or a DHCP
            # message differs from the last in its transaction id)
            ln = end - p if pr == _P_MDNS or pr == _P_SSDP else 0
            key = np.int64(pr) | (np.int64(cut) << 8)
            h = _bytes_hash(buf, p, end, key) if ln > 0 else np.uint64(0)
            slot = np.int64(h & np.uint64(len(seen_table) - 1))
            m = -1
            while ln > 0:
                c = seen_table[slot]
                if c < 0:
                    break
                if (seen[c, _SEEN_HASH] == np.int64(h) and seen[c, _SEEN_LEN] == ln and seen[c, _SEEN_KEY] == key
                        and _same_bytes(buf, seen[c, _SEEN_AT], p, ln)):
                    m = c
                    break
                slot = (slot + 1) & (len(seen_table) - 1)
            if m >= 0:
                # a repeat: the first one's records under this row
                k = st[_ST_N]
                for r in range(seen[m, _SEEN_R0], seen[m, _SEEN_R1]):
                    orow[k] = i
                    okind[k] = okind[r]
                    opos[k] = opos[r]
                    olen[k] = olen[r]
                    ohash[k] = ohash[r]
                    k += 1
                st[_ST_N] = k
                status = seen[m, _SEEN_STATUS]
                src = seen[m, _SEEN_SRC]
            elif pr == _P_DHCP:
                src = _S_DHCP
                status = _dhcp(buf, p, end, cut, i, out, st, orow, okind, opos, olen, ohash)
            elif pr == _P_DHCPV6:
                src = _S_DHCPV6
                status = _dhcpv6(buf, p, end, cut, i, out, st, orow, okind, opos, olen, ohash, lab)
            elif pr == _P_DNS or pr == _P_LLMNR or pr == _P_MDNS:
                src = _S_DNS if pr == _P_DNS else (_S_LLMNR if pr == _P_LLMNR else _S_MDNS)
                status = _dns(buf, p, end, cut, i, src, out, st, orow, okind, opos, olen, ohash, lab, lab2)
            elif pr == _P_SSDP:
                src = _S_SSDP
                status = _headers(buf, p, end, not cut, cut, i, True, out, st, orow, okind, opos, olen, ohash)
            if m < 0 and ln > 0:
                c = st[_ST_SEEN]
                seen_table[slot] = c
                seen[c, _SEEN_AT] = p
                seen[c, _SEEN_LEN] = ln
                seen[c, _SEEN_KEY] = key
                seen[c, _SEEN_STATUS] = status
                seen[c, _SEEN_SRC] = src
                seen[c, _SEEN_R0] = st[_ST_MSG]
                seen[c, _SEEN_R1] = st[_ST_N]
                seen[c, _SEEN_HASH] = np.int64(h)
                st[_ST_SEEN] = c + 1
        elif ipp[i] == 6:
            if pr == _P_DNS or pr == _P_LLMNR:
                # DNS over TCP: a two-byte length, then the message
                src = _S_DNS if pr == _P_DNS else _S_LLMNR
                if p + 2 > end:
                    status = _CUT
                else:
                    m_end = p + 2 + _be16(buf, p)
                    m_cut = m_end > end
                    status = _dns(buf, p + 2, min(m_end, end), m_cut, i, src, out, st, orow, okind, opos, olen,
                                  ohash, lab, lab2)
            elif p + 6 <= end and buf[p] == 0x16:
                src = _S_TLS
                status = _tls(buf, p, end, i, out, st, orow, okind, opos, olen, ohash)
            elif p + 6 <= end:
                src = _S_HTTP
                status = _headers(buf, p, end, False, cut, i, False, out, st, orow, okind, opos, olen, ohash)
        if status == _BAD and src >= 0:
            if problems[src] == 0:
                first_problem[src] = i
            problems[src] += 1
    return len(rows)


# --------------------------------------------------------------------------- the table


def locally_administered(mac: int) -> bool:
    """Whether a MAC has the locally-administered bit set (randomised phone MACs, VMs, ...)."""
    return bool((int(mac) >> 41) & 1)


@dataclass
class IdentityRecords:
    """Identity evidence of one capture (or several), one row per piece of evidence.

    ``row`` is the packet's index in the capture's packet table (frame number - 1 for a
    single capture); ``kind`` a :class:`Kind` code; ``value`` the text.
    """

    t_ns: np.ndarray
    mac: np.ndarray
    kind: np.ndarray
    value: np.ndarray
    row: np.ndarray

    @classmethod
    def empty(cls) -> "IdentityRecords":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros(0, np.uint8),
                   np.zeros(0, object), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.t_ns)

    def take(self, index) -> "IdentityRecords":
        return IdentityRecords(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(parts: Sequence["IdentityRecords"], row_offsets: Sequence[int] | None = None) -> "IdentityRecords":
        """Records of several tables, in time order; ``row_offsets`` shift each part's rows (the
        parts' packet tables concatenated in the same order)."""
        parts = list(parts)
        if not parts:
            return IdentityRecords.empty()
        rows = [p.row + (row_offsets[k] if row_offsets is not None else 0) for k, p in enumerate(parts)]
        out = IdentityRecords(np.concatenate([p.t_ns for p in parts]), np.concatenate([p.mac for p in parts]),
                              np.concatenate([p.kind for p in parts]), np.concatenate([p.value for p in parts]),
                              np.concatenate(rows))
        return out.take(np.argsort(out.t_ns, kind="stable"))

    @property
    def kind_names(self) -> list[str]:
        return [KINDS[k] for k in self.kind.tolist()]

    def macs(self) -> np.ndarray:
        return np.unique(self.mac)

    def for_mac(self, mac: int) -> list[tuple[int, str, str]]:
        """The device's records as (t_ns, kind name, value), in time order."""
        idx = np.flatnonzero(self.mac == np.uint64(mac))
        idx = idx[np.argsort(self.t_ns[idx], kind="stable")]
        return [(int(self.t_ns[i]), KINDS[int(self.kind[i])], self.value[i]) for i in idx.tolist()]

    def by_mac(self) -> dict[int, list[tuple[int, str, str]]]:
        """Every device's records (see :meth:`for_mac`), keyed by MAC."""
        out: dict[int, list] = {}
        order = np.lexsort((self.t_ns, self.mac))
        for i in order.tolist():
            out.setdefault(int(self.mac[i]), []).append((int(self.t_ns[i]), KINDS[int(self.kind[i])], self.value[i]))
        return out

    def distinct(self, mac: int) -> dict[str, list[tuple[str, int, int]]]:
        """Per kind: each distinct value with its first-seen time (ns) and record count, in
        order of first sight."""
        seen: dict[tuple[str, str], list] = {}
        for t, kind, value in self.for_mac(mac):
            entry = seen.get((kind, value))
            if entry is None:
                seen[(kind, value)] = [t, 1]
            else:
                entry[1] += 1
        out: dict[str, list] = {}
        for (kind, value), (t, n) in seen.items():
            out.setdefault(kind, []).append((value, t, n))
        return {k: out[k] for k in KINDS if k in out}


# --------------------------------------------------------------------------- extraction


@njit(cache=True, nogil=True)
def _group_values(out, pos, ln, h):
    """Group equal values (same bytes) with an open-addressing table keyed by their hash.
    Returns each record's group, each group's first record, and the groups' bytes joined
    (``joined[start[g]:start[g] + length]``), or start -1 for a group that is not ASCII."""
    n = len(pos)
    size = 16
    while size < 2 * n:
        size *= 2
    mask = size - 1
    table = np.full(size, -1, np.int64)   # -> group
    gid = np.empty(n, np.int64)
    first = np.empty(n, np.int64)
    groups = 0
    for r in range(n):
        slot = np.int64(h[r] & np.uint64(mask))
        while True:
            g = table[slot]
            if g < 0:
                table[slot] = groups
                first[groups] = r
                gid[r] = groups
                groups += 1
                break
            f = first[g]
            if h[f] == h[r] and ln[f] == ln[r]:
                same = True
                for j in range(ln[r] if pos[f] != pos[r] else 0):     # a repeat's value is the same bytes
                    if out[pos[f] + j] != out[pos[r] + j]:
                        same = False
                        break
                if same:
                    gid[r] = g
                    break
            slot = (slot + 1) & mask
    total = 0
    for g in range(groups):
        total += ln[first[g]]
    joined = np.empty(total, np.uint8)
    start = np.empty(groups, np.int64)
    w = 0
    for g in range(groups):
        f = first[g]
        ascii = True
        for j in range(ln[f]):
            if out[pos[f] + j] >= 128:
                ascii = False
                break
        if ascii:
            start[g] = w
            for j in range(ln[f]):
                joined[w + j] = out[pos[f] + j]
            w += ln[f]
        else:
            start[g] = -1
    return gid, first[:groups], joined[:w], start


@njit(cache=True, nogil=True)
def _grown(a, used):
    b = np.empty(2 * len(a), a.dtype)
    b[:used] = a[:used]
    return b


@njit(cache=True, nogil=True)
def _extract_all(buf, off, cap, wire, poff, proto, ipp):
    """The marked rows' records, grouped by value: one call per capture."""
    n_rows = 0
    for i in range(len(poff)):
        if poff[i] != 0:
            n_rows += 1
    rows = np.empty(n_rows, np.int64)
    payload = 0
    k = 0
    for i in range(len(poff)):
        if poff[i] != 0:
            rows[k] = i
            payload += np.int64(cap[i])
            k += 1
    cap_rec = 4 * n_rows + 2 * MAX_RECORDS_PER_MESSAGE + 16
    orow = np.empty(cap_rec, np.int64)
    okind = np.empty(cap_rec, np.uint8)
    opos = np.empty(cap_rec, np.int64)
    olen = np.empty(cap_rec, np.int64)
    ohash = np.empty(cap_rec, np.uint64)
    out = np.empty(2 * payload + 2 * _MESSAGE_BYTES, np.uint8)
    st = np.zeros(5, np.int64)
    problems = np.zeros(_N_SOURCES, np.int64)
    first_problem = np.zeros(_N_SOURCES, np.int64)
    size = 16
    while size < 2 * n_rows:
        size *= 2
    seen_table = np.full(size, -1, np.int64)
    seen = np.empty((n_rows, 8), np.int64)
    j = 0
    while True:
        j = _identity_kernel(buf, off, cap, wire, poff, proto, ipp, rows, j, st,
                             orow, okind, opos, olen, ohash, out, problems, first_problem, seen_table, seen)
        if j >= n_rows:
            break
        n = st[_ST_N]
        if n + MAX_RECORDS_PER_MESSAGE + 1 > len(orow):
            orow = _grown(orow, n)
            okind = _grown(okind, n)
            opos = _grown(opos, n)
            olen = _grown(olen, n)
            ohash = _grown(ohash, n)
        if st[_ST_W] + _MESSAGE_BYTES > len(out):
            out = _grown(out, st[_ST_W])
    n = st[_ST_N]
    gid, first, joined, start = _group_values(out, opos[:n], olen[:n], ohash[:n])
    return orow[:n], okind[:n], opos[:n], olen[:n], out, gid, first, joined, start, problems, first_problem


def _decode_groups(out, pos, ln, gid, first, joined, start):
    """Each record's value as text, and whether its bytes are not valid UTF-8 (then None; the
    second answer is None when every value is valid). Each distinct value is decoded once;
    the ASCII ones (nearly all) in one piece."""
    text = joined.tobytes().decode("ascii")
    texts = [text[a:a + n] if a >= 0 else None for a, n in zip(start.tolist(), ln[first].tolist())]
    bad_groups = None
    if len(start) and start.min() < 0:
        bad_groups = np.zeros(len(texts), dtype=bool)
        for g in np.flatnonzero(start < 0).tolist():
            i = first[g]
            try:
                texts[g] = out[pos[i]:pos[i] + ln[i]].tobytes().decode("utf-8")
            except UnicodeDecodeError:
                bad_groups[g] = True
    groups = np.empty(len(texts), dtype=object)
    groups[:] = texts
    bad = bad_groups[gid] if bad_groups is not None and bad_groups.any() else None
    return groups[gid], bad


def extract(buf: np.ndarray, offset: np.ndarray, caplen: np.ndarray, wirelen: np.ndarray, pk: Packets,
            name: str = "<capture>", warnings: list | None = None) -> IdentityRecords:
    """The identity records of a decoded capture, read from its frame bytes (``buf`` padded
    as in :class:`~classifier.capture.reader.Frames`). Problems are appended to ``warnings``
    as :class:`CaptureWarning` (issued with :func:`warnings.warn` when ``warnings`` is None)."""
    (orow, okind, opos, olen, out, gid, first, joined, start, problems, first_problem) = _extract_all(
        buf, np.ascontiguousarray(offset, dtype=np.int64), np.ascontiguousarray(caplen, dtype=np.uint32),
        np.ascontiguousarray(wirelen, dtype=np.uint32), pk.payload_off, pk.proto, pk.ip_proto)
    values, bad = _decode_groups(out, opos, olen, gid, first, joined, start)
    any_bad = bad is not None
    issues = []
    for src in (np.flatnonzero(problems).tolist() if problems.any() else ()):
        issues.append(CaptureWarning(
            name, None, f"identity evidence: {int(problems[src])} malformed or oversized {SOURCE_NAMES[Source(src)]} "
                        f"message(s), read up to the fault (first: packet {int(first_problem[src]) + 1})"))
    if any_bad:
        by_kind = np.bincount(okind[bad], minlength=len(KINDS))
        what = ", ".join(f"{int(c)} {KINDS[k]}" for k, c in enumerate(by_kind) if c)
        issues.append(CaptureWarning(
            name, None, f"identity evidence: skipped {int(bad.sum())} value(s) that are not valid UTF-8 ({what}; "
                        f"first: packet {int(orow[bad][0]) + 1})"))
    if warnings is not None:
        warnings.extend(issues)
    else:
        import warnings as _w
        for w in issues:
            _w.warn(w, stacklevel=2)
    if any_bad:
        keep = ~bad
        orow, okind, values = orow[keep], okind[keep], values[keep]
    return IdentityRecords(pk.ts_ns[orow], pk.eth_src[orow], okind, values, orow)


def identity_records(source, packets: Packets | None = None, name: str | None = None,
                     warnings: list | None = None) -> IdentityRecords:
    """The identity records of a capture: ``source`` is a path, bytes, a binary stream or a
    :class:`~classifier.capture.reader.Frames`; ``packets`` its decoded table when at hand."""
    from classifier.capture.decode import decode
    from classifier.capture.reader import Frames, read_frames
    frames = source if isinstance(source, Frames) else read_frames(source, name)
    if packets is None:
        packets = decode(frames)
    return extract(frames.buf, frames.offset, frames.caplen, frames.wirelen, packets, name or frames.source, warnings)


def identity_from_frames(datas: Sequence[bytes], packets: Packets, name: str = "<frames>",
                         warnings: list | None = None) -> IdentityRecords:
    """The identity records of raw frames (e.g. mirrored packet-ins) already decoded into
    ``packets`` by :func:`~classifier.capture.decode.decode_frames`."""
    from classifier.capture.reader import PAD
    caplen = np.fromiter((len(d) for d in datas), dtype=np.uint32, count=len(datas))
    offset = np.zeros(len(datas), dtype=np.int64)
    if len(datas):
        np.cumsum(caplen[:-1], out=offset[1:])
    joined = b"".join(datas)
    buf = np.zeros(len(joined) + PAD, dtype=np.uint8)
    buf[:len(joined)] = np.frombuffer(joined, dtype=np.uint8)
    wire = np.maximum(packets.wire_len, caplen)
    return extract(buf, offset, caplen, wire, packets, name, warnings)


def summarize(records: IdentityRecords, macs: Iterable[int] | None = None) -> list[dict]:
    """Per device: MAC, whether it is locally administered, record counts per kind and the
    distinct values with their first-seen time (ns). Devices in order of first evidence."""
    from classifier.capture.packets import mac_to_str
    wanted = records.macs().tolist() if macs is None else [int(m) for m in macs]
    rows = []
    for mac in wanted:
        recs = records.for_mac(mac)
        counts: dict[str, int] = {}
        for _, kind, _ in recs:
            counts[kind] = counts.get(kind, 0) + 1
        rows.append({"mac": mac_to_str(mac), "locally_administered": locally_administered(mac),
                     "first_ns": recs[0][0] if recs else None,
                     "counts": {k: counts[k] for k in KINDS if k in counts},
                     "values": {k: [{"value": v, "first_ns": t, "count": n} for v, t, n in vals]
                                for k, vals in records.distinct(mac).items()}})
    rows.sort(key=lambda r: (r["first_ns"] is None, r["first_ns"] or 0))
    return rows




def format_summary(rows: list[dict], max_values: int = 10, labels: dict[str, str] | None = None) -> str:
    """:func:`summarize`'s rows as text: per device its kinds, with each distinct value's
    first-seen time (UTC) and count; at most ``max_values`` values per kind (0: all)."""
    from datetime import datetime, timezone

    def iso(ns: int) -> str:
        return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"

    lines = []
    for row in rows:
        head = row["mac"] + ("  (locally administered)" if row["locally_administered"] else "")
        if labels and labels.get(row["mac"]):
            head += f"  {labels[row['mac']]}"
        lines.append(head)
        for kind, values in row["values"].items():
            lines.append(f"  {kind}  ({row['counts'][kind]} records, {len(values)} distinct)")
            shown = values if max_values <= 0 else values[:max_values]
            width = max(len(v["value"]) for v in shown)
            for v in shown:
                lines.append(f"    {v['value']:<{width}}  first {iso(v['first_ns'])}  x{v['count']}")
            if len(shown) < len(values):
                lines.append(f"    ... {len(values) - len(shown)} more (--max-values 0 shows all)")
    return "\n".join(lines) if lines else "(no identity evidence)"


__all__ = ["IdentityRecords", "KINDS", "KIND_CODES", "Kind", "extract", "format_summary", "identity_records",
           "identity_from_frames", "locally_administered", "summarize"]
