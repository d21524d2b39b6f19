"""Identity evidence live: what a learning device sends of DHCP, DNS, mDNS and SSDP reaches the
controller whole, through an identity meter of its own (so a busy device cannot starve it),
and the learner keeps the identity records it holds for the engine's decision requests."""

from __future__ import annotations

import struct

from controller_app.core import Settings
from controller_app.intents import DecideRequest, MeterAdd
from controller_app.pipeline import CookieKind, Table, cookie_kind, cookie_mac
from testing.synth import dns_query, ether, udp4
from ctl_harness import A, B, GW, IP, Harness, m, tcp, udp


def dhcp_discover(mac: str, hostname: bytes) -> bytes:
    chaddr = bytes.fromhex(mac.replace(":", "")) + bytes(10)
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, 0x1234, 0, 0, bytes(4), bytes(4), bytes(4),
                        bytes(4), chaddr, bytes(64), bytes(128))
    opts = b"\x63\x82\x53\x63" + b"\x35\x01\x01" + bytes([12, len(hostname)]) + hostname \
        + b"\x37\x04\x01\x03\x06\x0c" + b"\xff"
    return ether(mac, "ff:ff:ff:ff:ff:ff", 0x0800, udp4("0.0.0.0", "255.255.255.255", 68, 67, bootp + opts))


def mdns_announcement(mac: str) -> bytes:
    name = b"\x0aHue Bridge\x04_hap\x04_tcp\x05local\x00"
    txt = b"\x09md=BSB002\x04ci=2"
    msg = struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 0) + name + struct.pack("!HHIH", 16, 0x8001, 4500, len(txt)) + txt
    return ether(mac, "01:00:5e:00:00:fb", 0x0800, udp4(IP[mac], "224.0.0.251", 5353, 5353, msg))


def ssdp_notify(mac: str) -> bytes:
    body = (b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nNT: urn:schemas-upnp-org:device:basic:1\r\n"
            b"NTS: ssdp:alive\r\nSERVER: Linux/3.14.0 UPnP/1.0 IpBridge/1.9.0\r\nLOCATION: http://x/d.xml\r\n\r\n")
    return ether(mac, "01:00:5e:7f:ff:fa", 0x0800, udp4(IP[mac], "239.255.255.250", 1900, 1900, body))


def ssdp_answer(mac: str, to: str) -> bytes:
    body = b"HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\nSERVER: FreeRTOS UPnP/1.0\r\n\r\n" + bytes(200)
    return ether(mac, to, 0x0800, udp4(IP[mac], IP[to], 1900, 50123, body))


def dns_from(mac: str, name: str) -> bytes:
    return ether(mac, GW, 0x0800, udp4(IP[mac], IP[GW], 40000, 53, dns_query(name, 7) + bytes(120)))


def learning(**settings) -> Harness:
    """A switch with A learning on port 1 and the gateway (never learning) on port 2."""
    h = Harness(settings=Settings(gateways=(m(GW),), **settings))
    h.connect(1, [1, 2, 3])
    h.send(1, 1, udp(A, GW))      # A is learned on port 1 and mirrored
    h.send(1, 2, udp(GW, A))
    assert h.core.devices[m(A)].mirror_dpid == 1
    return h


def _copies(d):
    return [(cookie_kind(p[2]), cookie_mac(p[2]), len(p[5]), p[3]) for p in d.packet_ins]


def test_identity_protocols_reach_the_controller_whole_other_traffic_cut():
    h = learning()
    dev = h.core.devices[m(A)]
    sw = h.sw(1)
    ident = [f for f in sw.entries(Table.MIRROR) if f.meter == dev.identity_meter]
    assert len(ident) == 10 and dev.identity_meter in sw.meters
    for frame in (dhcp_discover(A, b"Philips-hue"), dns_from(A, "bridge.meethue.com"), mdns_announcement(A),
                  ssdp_notify(A), ssdp_answer(A, GW)):
        copies = _copies(h.send(1, 1, frame))
        assert (CookieKind.MIRROR, m(A), len(frame), len(frame)) in copies, frame[:60]
    # what it receives, and its other traffic, stay cut to mirror_max_len
    big = tcp(A, GW, "52.1.2.3", size=600)
    assert (CookieKind.MIRROR, m(A), 128, len(big)) in _copies(h.send(1, 1, big))
    answer = ether(GW, A, 0x0800, udp4(IP[GW], IP[A], 53, 40000, dns_query("x.example", 7) + bytes(200)))
    assert (CookieKind.MIRROR, m(A), 128, len(answer)) in _copies(h.send(1, 2, answer))
    # a final decision removes the identity entries and meter with the rest
    h.core.devices[m(A)].mirroring = False
    h.run(h.core.sync_device(h.core.devices[m(A)]))
    assert not [f for f in sw.entries(Table.MIRROR) if cookie_mac(f.cookie) == m(A)]
    assert dev.identity_meter not in sw.meters and dev.mirror_meter not in sw.meters


def test_a_busy_device_does_not_starve_its_identity_copies():
    """600 packets at once exhaust the mirror meter (burst 200); the DNS queries and the mDNS
    announcement after them still reach the controller through the identity meter."""
    def run(settings):
        h = learning(**settings)
        for _ in range(600):
            h.send(1, 1, tcp(A, GW, "52.1.2.3", size=100))
        got = 0
        for frame in (dns_from(A, "a.example"), dns_from(A, "b.example"), mdns_announcement(A)):
            got += any(c[:2] == (CookieKind.MIRROR, m(A)) for c in _copies(h.send(1, 1, frame)))
        return got, h
    got, h = run({})
    assert got == 3
    names = {v for _, k, v in h.core.learner.identity(m(A)).for_mac(m(A))}
    assert {"a.example", "b.example", "_hap._tcp", "Hue Bridge"} <= names
    starved, _ = run({"identity_rate_pps": 0})     # without it: the mirror meter drops them too
    assert starved == 0


def test_the_learner_keeps_identity_records_for_the_decision_request():
    h = learning(decide_min_packets=1, decide_interval=1)
    for frame in (dhcp_discover(A, b"Philips-hue"), dhcp_discover(A, b"Philips-hue"), mdns_announcement(A),
                  ssdp_notify(A), dns_from(A, "bridge.meethue.com")):
        h.send(1, 1, frame)
    got = h.core.learner.identity(m(A))
    pairs = [(k, v) for _, k, v in got.for_mac(m(A))]
    assert ("dhcp.hostname", "Philips-hue") in pairs and ("dhcp.prl", "1,3,6,12") in pairs
    assert ("mdns.txt", "md=BSB002") in pairs and ("ssdp.type", "urn:schemas-upnp-org:device:basic:1") in pairs
    assert ("dns.query", "bridge.meethue.com") in pairs
    assert len(pairs) == len(set(pairs))                  # each value once, first sight kept
    assert h.core.counters["identity_records"] >= len(pairs)
    h.now += 2
    reqs = [i for i in h.core.timer(h.ns) if isinstance(i, DecideRequest)]
    assert [r.mac for r in reqs] == [m(A)]
    assert [(k, v) for _, k, v in reqs[0].identity.for_mac(m(A))] == pairs
    # only what the device itself sent is its evidence: a packet to it adds nothing
    h.send(1, 2, ether(GW, A, 0x0800, udp4(IP[GW], IP[A], 5353, 5353, b"\x00" * 12)))
    assert len(h.core.learner.identity(m(A))) == len(pairs)
    h.core.learner.drop(m(A))
    assert len(h.core.learner.identity(m(A))) == 0


def test_identity_values_per_device_are_bounded():
    """The first values are kept (they say the most); at the cap a value of a kind the device
    has not sent yet still gets in (it says something new), one more of a kind it has does not."""
    h = learning(max_identity_values=3)
    for i in range(6):
        h.send(1, 1, dns_from(A, f"host{i}.example"))
    assert [v for _, _, v in h.core.learner.identity(m(A)).for_mac(m(A))] == ["host0.example", "host1.example",
                                                                               "host2.example"]
    assert h.core.counters["identity_dropped"] == 3
    h.send(1, 1, dhcp_discover(A, b"porch-camera"))                 # two new kinds: host name, parameter list
    h.send(1, 1, dhcp_discover(A, b"other-name"))                   # a second host name: dropped
    kinds = [k for _, k, _ in h.core.learner.identity(m(A)).for_mac(m(A))]
    assert kinds == ["dns.query"] * 3 + ["dhcp.hostname", "dhcp.prl"] and h.core.counters["identity_dropped"] == 4
    assert len(h.core.take_identity()) == 5                         # what the inventory gets: the same bound
    off = learning(max_identity_values=0)
    off.send(1, 1, dhcp_discover(A, b"porch-camera"))
    assert len(off.core.learner.identity(m(A))) == 0                # 0: none kept


def test_identity_mirroring_off():
    h = learning(identity_rate_pps=0)
    dev = h.core.devices[m(A)]
    assert not [f for f in h.sw(1).entries(Table.MIRROR) if f.meter == dev.identity_meter]
    assert not [i for i in h.log if isinstance(i, MeterAdd) and i.meter_id == dev.identity_meter]


def test_identity_entries_as_openflow_messages():
    """The identity entries serialise with their OpenFlow prerequisites (eth_type, ip_proto) and
    copy the whole packet; a UDP port without them is refused before any switch sees it."""
    import pytest
    from os_ken.ofproto import ofproto_protocol, ofproto_v1_3, ofproto_v1_3_parser

    from controller_app import ofp
    from controller_app.core.mirror import mirror_flows
    from controller_app.intents import OFPCML_NO_BUFFER, Match
    dp = ofproto_protocol.ProtocolDesc(ofproto_v1_3.OFP_VERSION)
    flows = mirror_flows(1, m(A), 2, 128, identity_meter=4)
    assert len(flows) == 12
    parsed = []
    for f in flows[2:]:
        msg = ofp.to_message(dp, f)
        msg.set_xid(1)
        msg.serialize()
        buf = bytes(msg.buf)
        fm = ofproto_v1_3_parser.OFPFlowMod.parser(dp, 4, 14, len(buf), 1, buf)
        parsed.append(dict(fm.match.items()))
        assert fm.instructions[0].meter_id == 4 and fm.instructions[1].actions[0].max_len == OFPCML_NO_BUFFER
    assert {"eth_src": A, "eth_type": 0x0800, "ip_proto": 17, "udp_dst": 67} in parsed
    assert {"eth_src": A, "eth_type": 0x86DD, "ip_proto": 17, "udp_src": 1900} in parsed
    assert ofp.describe(flows[2])["match"] == {"eth_src": A, "eth_type": "0x0800", "ip_proto": 17, "udp_dst": 67}
    with pytest.raises(ValueError):
        Match(eth_type=0x0800, udp_dst=53)
    with pytest.raises(ValueError):
        Match(ip_proto=17)


def test_a_new_devices_first_identity_message_is_read_from_its_learning_copy():
    """A device's first frame is often its DHCP request with its host name, sent before it is
    known: the switch's learning copy of an identity protocol comes whole (other learning copies
    stay cut to learn_max_len), and the records in it are kept for the device it makes learning."""
    h = Harness(settings=Settings(gateways=(m(GW),)))
    h.connect(1, [1, 2, 3])
    first = dhcp_discover(A, b"LightCo-Bulb-4A21")
    assert len(first) > 128
    copies = _copies(h.send(1, 1, first))
    assert (CookieKind.LEARN, 0, len(first), len(first)) in copies        # whole, not 128 bytes
    assert h.core.devices[m(A)].mirror_dpid == 1                         # learned and mirrored
    recs = h.core.learner.identity(m(A))
    held = set(zip(recs.kind.tolist(), recs.value.tolist()))
    from classifier.features.identity import KIND_CODES
    assert (KIND_CODES["dhcp.hostname"], "LightCo-Bulb-4A21") in held
    assert h.core.counters["identity_records_learning"] >= 1
    # another unknown source's ordinary traffic: its learning copy stays cut
    big = tcp(B, GW, "52.1.2.3", size=600)
    assert (CookieKind.LEARN, 0, 128, len(big)) in _copies(h.send(1, 3, big))
    # the gateway (never a learning device) says who it is: nothing kept for it
    h.send(1, 2, dhcp_discover(GW, b"router"))
    assert not h.core.learner.identity(m(GW)).t_ns.size
