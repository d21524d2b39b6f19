"""A cheaper OpenFlow 1.3 packet-in parser for the framework: the match is parsed on first use.

Measured on the benchmark (``python -m benchmarks.controller packet-ins``), os-ken spends about
a third of each mirrored packet-in's cost in ``OFPPacketIn.parser``, and most of that in
``OFPMatch.parser`` — a generic OXM walk that builds type descriptors and a field list for a
match the controller reads one field of (``in_port``). This module registers, in place of the
stock parser, a subclass of the framework's ``OFPPacketIn`` (same class name, so os-ken and Ryu
still raise ``EventOFPPacketIn``) that reads the fixed header fields and the data exactly as
the stock parser does, takes ``in_port`` straight from the OXM list, and builds the full
``OFPMatch`` only when some code reads ``msg.match``. Any app sees the same message contents;
``tests/test_controller_ofp.py`` checks this field by field against the stock parser.
"""

from __future__ import annotations

import logging
import struct

LOG = logging.getLogger("controller_app.fastpath")
_OXM_IN_PORT = 0x80000004          # OFPXMC_OPENFLOW_BASIC, OFPXMT_OFB_IN_PORT, no mask, 4 bytes


def _in_port(buf, start: int, end: int):
    p = start
    while p + 4 <= end:
        (h,) = struct.unpack_from("!I", buf, p)
        if h == _OXM_IN_PORT and p + 8 <= end:
            return struct.unpack_from("!I", buf, p + 4)[0]
        p += 4 + (h & 0xFF)
    return None


_PACKET_IN_HEAD = struct.Struct("!IHBBQHH")   # buffer_id, total_len, reason, table_id, cookie; match type, length


def packet_in_row(buf, pos: int, msg_len: int):
    """(in_port, cookie, total_len, data) of the OpenFlow 1.3 packet-in at ``buf[pos:pos +
    msg_len]``, read as :func:`make_packet_in_class`'s parser reads it (``data``: a bytearray
    copy); None when it is not plainly well formed (no in_port in its match, a match running
    past the message): the message then takes the framework's full path, which reports it."""
    if msg_len < 34:
        return None
    _bid, total_len, _reason, _table, cookie, _mtype, length = _PACKET_IN_HEAD.unpack_from(buf, pos + 8)
    data_at = 24 + ((length + 7) // 8) * 8 + 2
    if length < 4 or data_at > msg_len:
        return None
    in_port = _in_port(buf, pos + 28, pos + 24 + length)
    if in_port is None:
        return None
    end = pos + msg_len
    if total_len < msg_len - data_at:
        end = pos + data_at + total_len
    return in_port, cookie, total_len, buf[pos + data_at:end]


def make_packet_in_class(parser_mod, ofproto_mod):
    base = parser_mod.OFPPacketIn
    match_parser = parser_mod.OFPMatch.parser
    head = ofproto_mod.OFP_HEADER_SIZE
    match_off = ofproto_mod.OFP_PACKET_IN_SIZE - ofproto_mod.OFP_MATCH_SIZE
    pack = ofproto_mod.OFP_PACKET_IN_PACK_STR

    class OFPPacketIn(base):  # the same name: the framework maps message class names to events
        __doc__ = base.__doc__
        _lazy_match = None
        in_port = None

        @property
        def match(self):
            m = self._lazy_match
            if m is None and self.buf is not None and len(self.buf) >= match_off + 4:
                m = self._lazy_match = match_parser(self.buf, match_off)
            return m

        @match.setter
        def match(self, value):
            self._lazy_match = value

        @classmethod
        def parser(cls, datapath, version, msg_type, msg_len, xid, buf):
            msg = cls(datapath)
            msg.set_headers(version, msg_type, msg_len, xid)
            msg.set_buf(buf)
            (msg.buffer_id, msg.total_len, msg.reason, msg.table_id, msg.cookie) = struct.unpack_from(pack, buf, head)
            _type, length = struct.unpack_from("!HH", buf, match_off)
            msg.in_port = _in_port(buf, match_off + 4, match_off + length)
            data = buf[match_off + ((length + 7) // 8) * 8 + 2:]
            if msg.total_len < len(data):
                data = data[:msg.total_len]      # padding, as the stock parser discards it
            msg.data = data
            return msg

    OFPPacketIn.__module__ = base.__module__
    OFPPacketIn.__qualname__ = base.__qualname__
    return OFPPacketIn


def install(parser_mod, ofproto_mod) -> bool:
    """Register the lazy-match packet-in parser in the framework's OpenFlow 1.3 parser table.
    Returns False (and changes nothing) if the table is not the expected one."""
    table = getattr(parser_mod, "_MSG_PARSERS", None)
    current = table.get(ofproto_mod.OFPT_PACKET_IN) if isinstance(table, dict) else None
    if current is None:
        LOG.warning("packet-in fast path not installed: unexpected parser table in %s", parser_mod.__name__)
        return False
    if getattr(current, "__self__", None) is not None and getattr(current.__self__, "_lazy_match", False) is None:
        return True   # already installed
    cls = make_packet_in_class(parser_mod, ofproto_mod)
    table[ofproto_mod.OFPT_PACKET_IN] = cls.parser
    return True
