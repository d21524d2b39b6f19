"""Identity evidence: every kind from packets built here, the table's helpers, and the same
packets read by tshark (where installed) giving the same records."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from classifier.capture.decode import decode_frames, read_packets
from classifier.capture.packets import mac_to_int
from classifier.capture.writer import Record, write_pcap
from classifier.errors import CaptureWarning
from classifier.features.identity import (KINDS, IdentityRecords, Kind, identity_from_frames, identity_records,
                                          locally_administered, summarize)

from test_exactness import needs_tshark

DEV, GW, PHONE = "02:00:00:00:00:0a", "02:00:00:00:00:01", "da:00:00:00:00:0b"
T0 = 1_700_000_000 * 10**9


def _scapy():
    import logging
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    import scapy.all as s  # noqa: F401 - loads every layer
    return s


def client_hello(server_name: bytes) -> bytes:
    """A TLS 1.2 record holding a ClientHello: one cipher suite, an extension, then SNI."""
    name = struct.pack("!BH", 0, len(server_name)) + server_name
    sni = struct.pack("!HHH", 0, len(name) + 2, len(name)) + name
    other = struct.pack("!HH", 23, 0)  # extended_master_secret, empty
    exts = other + sni
    body = b"\x03\x03" + bytes(range(32)) + b"\x00" + struct.pack("!HH", 2, 0x1301) + b"\x01\x00" \
        + struct.pack("!H", len(exts)) + exts
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def identity_zoo() -> list[bytes]:
    """One or more packets for every kind, plus packets that must yield nothing."""
    s = _scapy()
    E = lambda src=DEV, dst=GW: s.Ether(src=src, dst=dst)  # noqa: E731
    ip = s.IP(src="192.168.1.10", dst="192.168.1.1")
    mc = s.IP(src="192.168.1.10", dst="224.0.0.251")
    ssdp_ip = s.IP(src="192.168.1.10", dst="239.255.255.250")
    dhcp_opts = [("message-type", "discover"), ("hostname", b"Philips-hue\x00"), ("vendor_class_id", b"udhcp 1.19.4"),
                 ("param_req_list", [1, 3, 6, 12, 15, 28, 42]), "end"]
    record = client_hello(b"api.example.com")
    pkts = [
        # DHCP discover (client) and offer (server: nothing)
        E(dst="ff:ff:ff:ff:ff:ff") / s.IP(src="0.0.0.0", dst="255.255.255.255") / s.UDP(sport=68, dport=67)
        / s.BOOTP(op=1, chaddr=bytes.fromhex("02000000000a")) / s.DHCP(options=dhcp_opts),
        E(GW, DEV) / s.IP(src="192.168.1.1", dst="192.168.1.10") / s.UDP(sport=67, dport=68)
        / s.BOOTP(op=2) / s.DHCP(options=[("message-type", "offer"), ("hostname", b"router"), "end"]),
        # DHCPv6 solicit
        E(dst="33:33:00:01:00:02") / s.IPv6(src="fe80::a", dst="ff02::1:2") / s.UDP(sport=546, dport=547)
        / s.DHCP6_Solicit() / s.DHCP6OptVendorClass(enterprisenum=311, vcdata=[s.VENDOR_CLASS_DATA(data=b"MSFT 5.0")])
        / s.DHCP6OptClientFQDN(fqdn=b"laptop.example."),
        # DNS: a query (UDP), a query over TCP, an answer (nothing)
        E() / ip / s.UDP(sport=40000, dport=53) / s.DNS(rd=1, qd=s.DNSQR(qname="time.example.com")),
        E() / ip / s.TCP(sport=40001, dport=53, flags="PA")
        / (lambda m: struct.pack("!H", len(m)) + m)(bytes(s.DNS(rd=1, qd=s.DNSQR(qname="tcp.example.com")))),
        E(GW, DEV) / s.IP(src="192.168.1.1", dst="192.168.1.10") / s.UDP(sport=53, dport=40000)
        / s.DNS(qr=1, qd=s.DNSQR(qname="answer.example.com"), an=s.DNSRR(rrname="answer.example.com", rdata="1.2.3.4")),
        # LLMNR query
        E(dst="01:00:5e:00:00:fc") / s.IP(src="192.168.1.10", dst="224.0.0.252") / s.UDP(sport=50000, dport=5355)
        / s.LLMNRQuery(qd=s.DNSQR(qname="wpad")),
        # mDNS: a browse query with a known answer (someone else's: nothing from it)
        E(dst="01:00:5e:00:00:fb") / mc / s.UDP(sport=5353, dport=5353)
        / s.DNS(qd=s.DNSQR(qname="_googlecast._tcp.local", qtype="PTR"),
                an=s.DNSRR(rrname="_googlecast._tcp.local", type="PTR", rdata="Other TV._googlecast._tcp.local")),
        # mDNS: a probe (question + authority records proposed for itself)
        E(dst="01:00:5e:00:00:fb") / mc / s.UDP(sport=5353, dport=5353)
        / s.DNS(qd=[s.DNSQR(qname="Hue Bridge._hap._tcp.local", qtype="ALL"), s.DNSQR(qname="hue-1.local", qtype="ALL")],
                ns=[s.DNSRRSRV(rrname="Hue Bridge._hap._tcp.local", target="hue-1.local", port=8080)]),
        # mDNS: a response announcing a service instance
        E(dst="01:00:5e:00:00:fb") / mc / s.UDP(sport=5353, dport=5353)
        / s.DNS(qr=1, aa=1, an=[s.DNSRR(rrname="_services._dns-sd._udp.local", type="PTR", rdata="_hap._tcp.local"),
                                s.DNSRR(rrname="_hap._tcp.local", type="PTR", rdata="Hue Bridge._hap._tcp.local"),
                                s.DNSRR(rrname="Hue Bridge._hap._tcp.local", type="TXT",
                                        rdata=[b"md=BSB002", b"ci=2", b""]),
                                s.DNSRRSRV(rrname="Hue Bridge._hap._tcp.local", target="hue-1.local", port=8080),
                                s.DNSRR(rrname="hue-1.local", type="A", rdata="192.168.1.10"),
                                s.DNSRR(rrname="10.1.168.192.in-addr.arpa", type="PTR", rdata="hue-1.local")]),
        # SSDP: NOTIFY, M-SEARCH, a response
        E(dst="01:00:5e:7f:ff:fa") / ssdp_ip / s.UDP(sport=1900, dport=1900)
        / (b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive\r\n"
           b"LOCATION: http://192.168.1.10:80/description.xml\r\nSERVER: Linux/3.14.0 UPnP/1.0 IpBridge/1.9.0\r\n\r\n"),
        E(PHONE, "01:00:5e:7f:ff:fa") / s.IP(src="192.168.1.20", dst="239.255.255.250") / s.UDP(sport=50001, dport=1900)
        / (b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\n"
           b"ST: urn:dial-multiscreen-org:service:dial:1\r\nUSER-AGENT: Google Chrome/70.0 Linux\r\n\r\n"),
        E(DEV, PHONE) / s.IP(src="192.168.1.10", dst="192.168.1.20") / s.UDP(sport=1900, dport=50001)
        / (b"HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:basic:1\r\nlocation:  http://192.168.1.10/d.xml \r\n"
           b"Server: FreeRTOS UPnP/1.0\r\n\r\n"),
        # TLS ClientHello (port 8883: any port), HTTP request (port 8080), a server's TLS record (nothing)
        E() / s.IP(src="192.168.1.10", dst="52.1.2.3") / s.TCP(sport=40002, dport=8883, flags="PA") / record,
        E(PHONE, DEV) / s.IP(src="192.168.1.20", dst="192.168.1.10") / s.TCP(sport=40003, dport=8080, flags="PA")
        / b"GET /api HTTP/1.1\r\nHost: 192.168.1.10\r\nUser-Agent: Dalvik/2.1.0\r\nAccept: */*\r\n\r\n",
        E(GW, DEV) / s.IP(src="52.1.2.3", dst="192.168.1.10") / s.TCP(sport=8883, dport=40002, flags="PA")
        / (b"\x16\x03\x03\x00\x04\x02\x00\x00\x00"),
    ]
    return [bytes(p) for p in pkts]


EXPECTED = {
    (0, "dhcp.hostname", "Philips-hue"), (0, "dhcp.vendor_class", "udhcp 1.19.4"), (0, "dhcp.prl", "1,3,6,12,15,28,42"),
    (2, "dhcpv6.vendor_class", "MSFT 5.0"), (2, "dhcpv6.fqdn", "laptop.example"),
    (3, "dns.query", "time.example.com"), (4, "dns.query", "tcp.example.com"),
    (6, "llmnr.query", "wpad"),
    (7, "mdns.browse", "_googlecast._tcp"),
    (8, "mdns.service", "_hap._tcp"), (8, "mdns.instance", "Hue Bridge"), (8, "mdns.host", "hue-1"),
    (9, "mdns.service", "_hap._tcp"), (9, "mdns.instance", "Hue Bridge"), (9, "mdns.txt", "md=BSB002"),
    (9, "mdns.txt", "ci=2"), (9, "mdns.host", "hue-1"),
    (10, "ssdp.type", "upnp:rootdevice"), (10, "ssdp.location", "http://192.168.1.10:80/description.xml"),
    (10, "ssdp.server", "Linux/3.14.0 UPnP/1.0 IpBridge/1.9.0"),
    (11, "ssdp.search", "urn:dial-multiscreen-org:service:dial:1"), (11, "ssdp.user_agent", "Google Chrome/70.0 Linux"),
    (12, "ssdp.type", "urn:schemas-upnp-org:device:basic:1"), (12, "ssdp.location", "http://192.168.1.10/d.xml"),
    (12, "ssdp.server", "FreeRTOS UPnP/1.0"),
    (13, "tls.sni", "api.example.com"),
    (14, "http.host", "192.168.1.10"), (14, "http.user_agent", "Dalvik/2.1.0"),
}


def _records(frames: list[bytes], wire=None, warnings=None) -> IdentityRecords:
    ts = [T0 + i * 1_000_000 for i in range(len(frames))]
    wire = wire or [len(f) for f in frames]
    pk = decode_frames(frames, ts, wire)
    return identity_from_frames(frames, pk, warnings=warnings)


def _triples(recs: IdentityRecords) -> set:
    return set(zip(recs.row.tolist(), recs.kind_names, recs.value.tolist()))


def test_every_kind_from_built_packets():
    warns = []
    recs = _records(identity_zoo(), warnings=warns)
    assert warns == []
    assert _triples(recs) == EXPECTED
    assert {k for _, k, _ in EXPECTED} == set(KINDS), "every kind is exercised"
    # records name the sender and the packet's time
    dhcp = recs.take(recs.row == 0)
    assert set(dhcp.mac.tolist()) == {mac_to_int(DEV)} and set(dhcp.t_ns.tolist()) == {T0}
    search = recs.take(recs.kind == Kind.SSDP_SEARCH)
    assert search.mac.tolist() == [mac_to_int(PHONE)]


def test_same_records_from_a_capture_file(tmp_path):
    frames = identity_zoo()
    path = tmp_path / "zoo.pcap"
    with open(path, "wb") as fh:
        write_pcap(fh, [Record(T0 + i * 1_000_000, f) for i, f in enumerate(frames)])
    recs = identity_records(str(path))
    assert _triples(recs) == EXPECTED
    pk = read_packets(str(path))
    assert _triples(identity_records(str(path), packets=pk)) == EXPECTED
    assert np.count_nonzero(pk.payload_off) == len(frames) - 1  # all but the server's TLS record


def test_snap_length_cuts_silently():
    """A capture truncated to its headers: what was captured is read, the rest is not a fault."""
    frames = identity_zoo()
    warns = []
    cut = [f[:80] for f in frames]
    recs = _records(cut, wire=[len(f) for f in frames], warnings=warns)
    assert warns == []
    assert _triples(recs) <= EXPECTED
    # a DHCP message needs 240 bytes before its options; 80 hold a short DNS question
    assert (3, "dns.query", "time.example.com") in _triples(recs)
    assert not any(r[1].startswith("dhcp.") for r in _triples(recs))


def test_table_helpers():
    recs = _records(identity_zoo())
    dev = mac_to_int(DEV)
    mine = recs.for_mac(dev)
    assert mine == sorted(mine, key=lambda r: r[0])
    assert ("dhcp.hostname", "Philips-hue") in {(k, v) for _, k, v in mine}
    assert all(isinstance(t, int) and k in KINDS and isinstance(v, str) for t, k, v in mine)
    by_mac = recs.by_mac()
    assert set(by_mac) == set(recs.macs().tolist()) == {dev, mac_to_int(PHONE)}
    assert by_mac[dev] == mine
    distinct = recs.distinct(dev)
    assert distinct["mdns.service"] == [("_hap._tcp", T0 + 8_000_000, 2)]  # seen in the probe first
    # two captures in one table: rows shifted, time order kept
    both = IdentityRecords.concat([recs, recs.take(np.arange(3))], row_offsets=[0, 100])
    assert len(both) == len(recs) + 3 and np.all(np.diff(both.t_ns) >= 0)
    assert sorted(both.row.tolist())[-3:] == [100, 100, 100]
    rows = summarize(recs)
    assert [r["mac"] for r in rows][0] == DEV
    assert rows[0]["counts"]["mdns.txt"] == 2 and rows[0]["locally_administered"] is True
    assert IdentityRecords.empty().for_mac(dev) == []


def test_locally_administered():
    assert locally_administered(mac_to_int("da:a1:19:00:00:01"))
    assert not locally_administered(mac_to_int("00:17:88:24:76:ff"))


def _dns_frame(payload: bytes, sport=5353, dport=5353) -> bytes:
    from testing.synth import ether, udp4
    return ether(DEV, "01:00:5e:00:00:fb", 0x0800, udp4("192.168.1.10", "224.0.0.251", sport, dport, payload))


def test_malformed_payloads_warn_and_keep_what_came_before():
    s = _scapy()
    good = bytes(s.DNS(qd=s.DNSQR(qname="_hap._tcp.local", qtype="PTR")))
    # a name whose compression pointer points at itself
    loop = struct.pack("!HHHHHH", 0, 0, 2, 0, 0, 0) + b"\x05_ipps\x04_tcp\x05local\x00\x00\x0c\x00\x01" \
        + b"\xc0\x22\x00\x0c\x00\x01"  # the second question's name at byte 34 points at byte 34
    # a TXT record whose length runs past the message
    txt = bytes(s.DNS(qr=1, an=s.DNSRR(rrname="x._hap._tcp.local", type="TXT", rdata=[b"md=A"])))
    txt_long = txt[:-7] + struct.pack("!H", 4000) + txt[-5:]
    # a DHCP option running past the message, and a host name that is not UTF-8
    dhcp = bytes(s.BOOTP(op=1) / s.DHCP(options=[("hostname", b"ok-name"), ("vendor_class_id", b"\xff\xfe bad"), "end"]))
    cut = dhcp[:dhcp.index(b"ok-name") + 7] + b"\x3c\x40abc"
    from testing.synth import ether, udp4
    frames = [_dns_frame(good), _dns_frame(loop), _dns_frame(txt_long),
              ether(DEV, GW, 0x0800, udp4("0.0.0.0", "255.255.255.255", 68, 67, dhcp)),
              ether(DEV, GW, 0x0800, udp4("0.0.0.0", "255.255.255.255", 68, 67, cut))]
    warns = []
    recs = _records(frames, warnings=warns)
    text = [str(w) for w in warns]
    assert all(isinstance(w, CaptureWarning) for w in warns)
    assert any("2 malformed or oversized mDNS" in t and "first: packet 2" in t for t in text), text
    assert any("1 malformed or oversized DHCP" in t and "packet 5" in t for t in text), text
    assert any("not valid UTF-8" in t and "dhcp.vendor_class" in t for t in text), text
    got = _triples(recs)
    assert (0, "mdns.browse", "_hap._tcp") in got and (1, "mdns.browse", "_ipps._tcp") in got  # before the fault
    assert (3, "dhcp.hostname", "ok-name") in got and (4, "dhcp.hostname", "ok-name") in got
    assert not any(k == "dhcp.vendor_class" for _, k, _ in got)


def test_record_limit_per_message():
    """A message announcing more values than the per-message limit keeps the first ones."""
    from classifier.features.identity import MAX_RECORDS_PER_MESSAGE
    s = _scapy()
    strings = [f"k{i}=v".encode() for i in range(MAX_RECORDS_PER_MESSAGE + 50)]
    msg = bytes(s.DNS(qr=1, an=s.DNSRR(rrname="big._x._tcp.local", type="TXT", rdata=strings)))
    warns = []
    recs = _records([_dns_frame(msg)], warnings=warns)
    assert len(recs) == MAX_RECORDS_PER_MESSAGE
    assert len(warns) == 1 and "mDNS" in str(warns[0])


@needs_tshark
def test_built_packets_match_tshark(tmp_path):
    from tshark_identity import compare, expected_records, ours
    frames = identity_zoo()
    path = tmp_path / "zoo.pcap"
    with open(path, "wb") as fh:
        write_pcap(fh, [Record(T0 + i * 1_000_000, f) for i, f in enumerate(frames)])
    recs = identity_records(str(path))
    exp, decoded = expected_records(str(path))
    result = compare(ours(recs), exp, decoded)
    bad = {k: r for k, r in result.items() if r["missing"] or r["extra"]}
    assert not bad, bad
    assert not any(r["undecoded"] for r in result.values())
    assert sum(r["same"] for r in result.values()) == len(EXPECTED)


def test_cli_identity(tmp_path, capsys):
    from classifier.cli import main
    frames = identity_zoo()
    path = tmp_path / "zoo.pcap"
    with open(path, "wb") as fh:
        write_pcap(fh, [Record(T0 + i * 1_000_000, f) for i, f in enumerate(frames)])
    (tmp_path / "devices.csv").write_text(f"mac,device,category\n{DEV},Hue bridge,hub\n")
    assert main(["identity", str(path), "--json", "--devices", str(tmp_path / "devices.csv")]) == 0
    rows = {r["mac"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {DEV, PHONE}
    dev = rows[DEV]
    assert dev["device"] == "Hue bridge (hub)" and dev["locally_administered"] is True
    assert dev["counts"]["dns.query"] == 2
    assert [v["value"] for v in dev["values"]["mdns.txt"]] == ["md=BSB002", "ci=2"]
    assert dev["values"]["dhcp.hostname"][0]["first_seen"].endswith("Z")
    assert main(["identity", str(path), "--max-values", "1"]) == 0
    text = capsys.readouterr().out
    assert DEV in text and "mdns.txt  (2 records, 2 distinct)" in text and "1 more" in text


def test_non_ascii_values_are_kept():
    """UTF-8 beyond ASCII (instance names are often the owner's words) is decoded like the rest."""
    s = _scapy()
    msg = bytes(s.DNS(qr=1, an=[s.DNSRR(rrname="_googlecast._tcp.local", type="PTR",
                                        rdata="Küche Lautsprecher._googlecast._tcp.local"),
                                s.DNSRR(rrname="Küche Lautsprecher._googlecast._tcp.local", type="TXT",
                                        rdata=["fn=Küche".encode(), b"md=Google Home"])]))
    warns = []
    recs = _records([_dns_frame(msg), _dns_frame(msg)], warnings=warns)
    assert warns == []
    got = {(k, v) for _, k, v in _triples(recs)}
    assert got == {("mdns.service", "_googlecast._tcp"), ("mdns.instance", "Küche Lautsprecher"),
                   ("mdns.txt", "fn=Küche"), ("mdns.txt", "md=Google Home")}
    assert len(recs) == 8  # every record of both packets


def test_output_grows_past_its_first_allocation():
    """Messages whose compressed names expand far beyond their size, and more records than
    the first allocation holds: the output grows and every record is kept."""
    long_name = b"".join(bytes([60]) + bytes([97 + i]) * 60 for i in range(4)) + b"\x00"  # 245 bytes of text
    head = struct.pack("!HHHHHH", 0, 0x8400, 0, 200, 0, 0)
    # record 1 spells the name out (owner at byte 12); the others point at it, and carry a
    # TXT string of their own
    first = long_name + struct.pack("!HHIH", 16, 1, 120, 4) + b"\x03k=0"
    rest = b"".join(b"\xc0\x0c" + struct.pack("!HHIH", 16, 1, 120, 6) + b"\x05k=" + f"{i:03d}".encode()
                    for i in range(1, 200))
    frames = [_dns_frame(head + first + rest) for _ in range(20)]
    warns = []
    recs = _records(frames, warnings=warns)
    assert warns == []
    assert len(recs) == 20 * 200
    assert set(recs.value.tolist()) == {"k=0"} | {f"k={i:03d}" for i in range(1, 200)}
