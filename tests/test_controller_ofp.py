"""Intents -> OpenFlow 1.3 messages (serialized and parsed back with os-ken), and the lazy-match
packet-in parser against os-ken's stock one."""

from __future__ import annotations

import ipaddress
import random
import struct

from os_ken.ofproto import ofproto_parser, ofproto_protocol, ofproto_v1_3, ofproto_v1_3_parser

from controller_app import fastpath, ofp
from controller_app.intents import (OFPM_ALL, OFPP_CONTROLLER, OFPTT_ALL, CookieKind, FlowAdd, FlowDelete, Match,
                                    MeterAdd, MeterDelete, Output, PacketOut, SetDscp, SetQueue, cookie)

DP = ofproto_protocol.ProtocolDesc(ofproto_v1_3.OFP_VERSION)
MAC = 0x02000000000A


def roundtrip_flow_mod(intent):
    msg = ofp.to_message(DP, intent)
    msg.set_xid(7)
    msg.serialize()
    buf = bytes(msg.buf)
    return ofproto_v1_3_parser.OFPFlowMod.parser(DP, 4, 14, len(buf), 7, buf)


def test_flow_add_with_meter_actions_and_goto():
    net = ipaddress.ip_network("52.94.0.0/16")
    fm = roundtrip_flow_mod(FlowAdd(
        1, 0, 316, Match(eth_src=MAC, eth_type=0x0800, ip_dst=net),
        actions=(SetQueue(2), SetDscp(46), Output(OFPP_CONTROLLER, 128)), goto=1, meter=9,
        cookie=cookie(CookieKind.POLICY, MAC), idle_timeout=30, notify_removed=True))
    assert (fm.table_id, fm.priority, fm.idle_timeout, fm.command) == (0, 316, 30, ofproto_v1_3.OFPFC_ADD)
    assert fm.cookie == (0x15 << 56) | MAC and fm.flags == ofproto_v1_3.OFPFF_SEND_FLOW_REM
    m = dict(fm.match.items())
    assert m == {"eth_src": "02:00:00:00:00:0a", "eth_type": 0x0800, "ipv4_dst": ("52.94.0.0", "255.255.0.0")}
    kinds = [type(i).__name__ for i in fm.instructions]
    assert kinds == ["OFPInstructionMeter", "OFPInstructionActions", "OFPInstructionGotoTable"]
    assert fm.instructions[0].meter_id == 9 and fm.instructions[2].table_id == 1
    acts = fm.instructions[1].actions
    assert acts[0].queue_id == 2 and acts[1].key == "ip_dscp" and acts[1].value == 46
    assert acts[2].port == OFPP_CONTROLLER and acts[2].max_len == 128


def test_metadata_written_and_matched_in_instruction_order():
    fm = roundtrip_flow_mod(FlowAdd(1, 2, 0, Match(), write_metadata=(1, 1), goto=3))
    kinds = [type(i).__name__ for i in fm.instructions]
    assert kinds == ["OFPInstructionWriteMetadata", "OFPInstructionGotoTable"]
    assert (fm.instructions[0].metadata, fm.instructions[0].metadata_mask) == (1, 1)
    fm = roundtrip_flow_mod(FlowAdd(1, 4, 10, Match(metadata=(1, 1)), actions=(Output(OFPP_CONTROLLER, 128),),
                                    meter=1, write_metadata=(0, 1), goto=5))
    assert dict(fm.match.items()) == {"metadata": (1, 1)}
    kinds = [type(i).__name__ for i in fm.instructions]
    assert kinds == ["OFPInstructionMeter", "OFPInstructionActions", "OFPInstructionWriteMetadata",
                     "OFPInstructionGotoTable"]
    assert ofp.describe(FlowAdd(1, 2, 0, Match(), write_metadata=(1, 1), goto=3))["write_metadata"] == [1, 1]


def test_ipv6_match_and_in_port():
    fm = roundtrip_flow_mod(FlowAdd(1, 1, 400, Match(in_port=3, eth_dst=MAC, eth_type=0x86DD,
                                                     ip_src=ipaddress.ip_network("fe80::/10")), goto=2))
    assert dict(fm.match.items()) == {"in_port": 3, "eth_dst": "02:00:00:00:00:0a", "eth_type": 0x86DD,
                                      "ipv6_src": ("fe80::", "ffc0::")}


def test_flow_deletes_strict_and_by_cookie():
    fm = roundtrip_flow_mod(FlowDelete(1, 3, Match(eth_dst=MAC), priority=100))
    assert (fm.command, fm.table_id, fm.priority) == (ofproto_v1_3.OFPFC_DELETE_STRICT, 3, 100)
    assert fm.out_port == ofproto_v1_3.OFPP_ANY and fm.out_group == ofproto_v1_3.OFPG_ANY
    fm = roundtrip_flow_mod(FlowDelete(1, OFPTT_ALL, cookie=cookie(CookieKind.MIRROR, MAC), cookie_mask=2**64 - 1))
    assert (fm.command, fm.table_id) == (ofproto_v1_3.OFPFC_DELETE, ofproto_v1_3.OFPTT_ALL)
    assert fm.cookie == (0x16 << 56) | MAC and fm.cookie_mask == 2**64 - 1 and dict(fm.match.items()) == {}


def test_meter_mods_and_packet_out_serialize():
    for intent, cmd, flags in ((MeterAdd(1, 5, 200, 100, "pktps"), ofproto_v1_3.OFPMC_ADD,
                                ofproto_v1_3.OFPMF_PKTPS | ofproto_v1_3.OFPMF_BURST),
                               (MeterAdd(1, 6, 64, 16, "kbps", modify=True), ofproto_v1_3.OFPMC_MODIFY,
                                ofproto_v1_3.OFPMF_KBPS | ofproto_v1_3.OFPMF_BURST)):
        msg = ofp.to_message(DP, intent)
        msg.serialize()
        c, f, mid = struct.unpack_from("!HHI", msg.buf, 8)
        btype, blen, rate, burst = struct.unpack_from("!HHII", msg.buf, 16)
        assert (c, f, mid, btype, rate, burst) == (cmd, flags, intent.meter_id, ofproto_v1_3.OFPMBT_DROP,
                                                   intent.rate, intent.burst)
    msg = ofp.to_message(DP, MeterDelete(1, OFPM_ALL))
    msg.serialize()
    assert struct.unpack_from("!HHI", msg.buf, 8) == (ofproto_v1_3.OFPMC_DELETE, 0, ofproto_v1_3.OFPM_ALL)
    msg = ofp.to_message(DP, PacketOut(1, b"\x01" * 60, 4))
    msg.serialize()
    assert bytes(msg.buf).endswith(b"\x01" * 60) and msg.actions[0].port == 4


def test_describe_is_json_friendly():
    import json
    d = ofp.describe(FlowAdd(1, 4, 100, Match(eth_src=MAC), actions=(Output(OFPP_CONTROLLER, 128),), meter=3,
                             cookie=cookie(CookieKind.MIRROR, MAC)))
    assert json.loads(json.dumps(d))["actions"] == ["output:CONTROLLER/128"]
    assert d["dpid"] == "0000000000000001" and d["match"] == {"eth_src": "02:00:00:00:00:0a"}


# ------------------------------------------------------------------ the lazy-match packet-in parser


def raw_packet_in(rng: random.Random):
    fields = {"in_port": rng.randrange(1, 2**31)}
    if rng.random() < 0.5:
        fields["metadata"] = rng.randrange(2**64)
    if rng.random() < 0.5:
        fields["tunnel_id"] = rng.randrange(2**64)
    if rng.random() < 0.3:
        fields["eth_type"] = 0x0800
    if rng.random() < 0.2:
        fields = {k: v for k, v in fields.items() if k != "in_port"}   # a match without in_port
    match = ofproto_v1_3_parser.OFPMatch(**fields)
    mbuf = bytearray()
    mlen = match.serialize(mbuf, 0)
    data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
    pad = rng.randrange(0, 8)                       # a switch may pad the data
    total = len(data) if rng.random() < 0.5 else len(data) + rng.randrange(0, 1500)
    body = struct.pack("!IHBBQ", rng.randrange(2**32), total, rng.randrange(3), rng.randrange(255),
                       rng.randrange(2**64)) + bytes(mbuf[:mlen]) + b"\x00\x00" + data + b"\x00" * pad
    return bytearray(struct.pack("!BBHI", 4, 10, 8 + len(body), 1) + body), fields


def test_lazy_packet_in_parser_matches_the_stock_parser():
    lazy_cls = fastpath.make_packet_in_class(ofproto_v1_3_parser, ofproto_v1_3)
    assert lazy_cls.__name__ == "OFPPacketIn"
    rng = random.Random(5)
    for _ in range(300):
        buf, fields = raw_packet_in(rng)
        stock = ofproto_v1_3_parser.OFPPacketIn.parser(DP, 4, 10, len(buf), 1, bytearray(buf))
        lazy = lazy_cls.parser(DP, 4, 10, len(buf), 1, bytearray(buf))
        for attr in ("buffer_id", "total_len", "reason", "table_id", "cookie", "data", "xid", "msg_len"):
            assert getattr(lazy, attr) == getattr(stock, attr), attr
        assert lazy.in_port == fields.get("in_port")
        assert lazy.match.to_jsondict() == stock.match.to_jsondict()
        assert lazy.match.get("in_port") == stock.match.get("in_port")


def test_install_registers_the_lazy_parser_and_events_still_map():
    from os_ken.controller import ofp_event
    table = ofproto_v1_3_parser._MSG_PARSERS
    saved = table[ofproto_v1_3.OFPT_PACKET_IN]
    try:
        assert fastpath.install(ofproto_v1_3_parser, ofproto_v1_3)
        assert fastpath.install(ofproto_v1_3_parser, ofproto_v1_3)    # idempotent
        buf, _ = raw_packet_in(random.Random(1))
        msg = ofproto_parser.msg(DP, 4, 10, len(buf), 1, buf)
        assert type(msg) is not ofproto_v1_3_parser.OFPPacketIn and msg._lazy_match is None
        assert isinstance(ofp_event.ofp_msg_to_ev(msg), ofp_event.EventOFPPacketIn)
    finally:
        table[ofproto_v1_3.OFPT_PACKET_IN] = saved


def test_bulk_packet_in_rows_match_the_stock_parser():
    """The receive loop's in-place read of packet-ins (ofconn's bulk path) gives what the stock
    parser gives, for messages side by side in one buffer; a match without in_port is left to
    the framework's path."""
    rng = random.Random(9)
    stream, msgs = bytearray(), []
    for _ in range(300):
        buf, fields = raw_packet_in(rng)
        msgs.append((len(stream), len(buf), buf, fields))
        stream += buf
    for pos, n, buf, fields in msgs:
        row = fastpath.packet_in_row(stream, pos, n)
        if "in_port" not in fields:
            assert row is None
            continue
        stock = ofproto_v1_3_parser.OFPPacketIn.parser(DP, 4, 10, n, 1, bytearray(buf))
        assert row == (stock.match["in_port"], stock.cookie, stock.total_len, stock.data)
    short = bytearray(struct.pack("!BBHI", 4, 10, 30, 1) + bytes(22))
    assert fastpath.packet_in_row(short, 0, 30) is None


def _bulk_connection(observed: bool = False):
    """A connection in MAIN_DISPATCHER whose registry has a bulk packet-in sink, and what each
    path received, in order."""
    from os_ken.controller import ofp_event

    from controller_app import ofconn

    got: list = []

    class Sock:
        def setsockopt(self, *a):
            pass

        settimeout = shutdown = close = sendall = setsockopt

    def handler(ev):
        got.append(("event", ev.msg.in_port))
    handler.callers = {ofp_event.EventOFPPacketIn: type("C", (), {"dispatchers": {ofconn.MAIN_DISPATCHER}})()}

    class Brick:
        def __init__(self):
            self.event_handlers = {ofp_event.EventOFPPacketIn: [handler]}
            self.observers = {ofp_event.EventOFPPacketIn: {"other": set()}} if observed else {}

        def get_handlers(self, ev, state=None):
            return self.event_handlers.get(type(ev), [])

        def send_event_to_observers(self, ev, state=None):
            if self.observers:
                got.append(("observed", type(ev).__name__))

    reg = ofconn.Connections()
    reg.take_packet_ins(lambda dpid, rows: got.append(("rows", dpid, [r[0] for r in rows])), handler)
    c = reg.admit("192.0.2.11", 1, None)
    dp = ofconn.GuardedDatapath(Sock(), ("192.0.2.11", 1), reg, c)
    c.dp = dp
    dp.ofp_brick = Brick()
    dp.set_version(ofproto_v1_3.OFP_VERSION)
    dp.id = 0x42
    dp.set_state(ofconn.MAIN_DISPATCHER)
    got.clear()                                                         # the state change's event
    return dp, reg, got


def test_bulk_packet_ins_keep_their_order_with_other_messages():
    """The receive loop hands the packet-ins before another message to the bulk sink before
    that message is dispatched; those after it, after; a packet-in without in_port and a
    message of another type take the framework's path in between; an unframeable length after
    whole packet-ins still lets those reach the app."""
    from testing.fakeswitch import header, packet_in
    fastpath.install(ofproto_v1_3_parser, ofproto_v1_3)
    frame = bytes(60)
    no_port = bytearray(packet_in(frame, 9))
    struct.pack_into("!I", no_port, 28, 0x80000204)                     # in_phy_port, not in_port
    echo = header(3, 8, 5)                                              # an echo reply: listened by nobody
    dp, reg, got = _bulk_connection()
    stream = packet_in(frame, 1) + packet_in(frame, 2) + bytes(no_port) + packet_in(frame, 3) + echo + packet_in(frame, 4)
    dp.feed(stream[:50])                                                # a message cut in two reads
    dp.feed(stream[50:])
    assert got == [("rows", 0x42, [1, 2]), ("event", None), ("rows", 0x42, [3]), ("rows", 0x42, [4])]
    got.clear()
    dp.feed(packet_in(frame, 5) + packet_in(frame, 6) + header(10, 4, 0))
    assert got == [("rows", 0x42, [5, 6])] and dp.closing and reg.stats["malformed"] == 1


def test_bulk_packet_ins_yield_to_an_observing_app():
    """Another app observing packet-ins: every packet-in takes the framework's path (parsed
    message, event to the observers and to the handler), as without the bulk path."""
    from testing.fakeswitch import packet_in
    fastpath.install(ofproto_v1_3_parser, ofproto_v1_3)
    dp, reg, got = _bulk_connection(observed=True)
    dp.feed(packet_in(bytes(60), 1) + packet_in(bytes(60), 2))
    assert got == [("observed", "EventOFPPacketIn"), ("event", 1), ("observed", "EventOFPPacketIn"), ("event", 2)]
    assert reg.stats["malformed"] == 0
