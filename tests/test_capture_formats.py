"""Every supported container, byte order, resolution, compression and link type decodes
to the fields the packets were built with."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma

import numpy as np
import pytest

from classifier.capture.reader import read_frames
from classifier.capture.decode import decode, read_packets
from classifier.capture.packets import DecodeFlag, ip_from_str, mac_to_int
from classifier.capture.writer import Interface, Record, write_pcap, write_pcapng
from classifier.capture.protocols import Proto
from testing.synth import arp_request, dns_query, ether, tcp4, udp4

DEV, GW = "02:00:00:00:00:0a", "02:00:00:00:00:01"


def sample_records() -> list[Record]:
    t = 1_600_000_000_123_456_000
    frames = [
        ether(DEV, GW, 0x0800, tcp4("192.168.1.10", "52.94.236.248", 40000, 443, 0x12)),
        ether(DEV, GW, 0x0800, udp4("192.168.1.10", "192.168.1.1", 5000, 53, dns_query("a.example", 7))),
        arp_request(DEV, "192.168.1.10", "192.168.1.1"),
        ether(GW, DEV, 0x0800, udp4("162.159.200.1", "192.168.1.10", 123, 40001, bytes(48))),
        ether(DEV, GW, 0x0800, udp4("192.168.1.10", "8.8.8.8", 40002, 40003, bytes(10)), vlan=42),
    ]
    return [Record(t + i * 1_000_000_000 + i * 1000, f) for i, f in enumerate(frames)]


def check_sample(pk, ts_exact=True):
    assert len(pk) == 5
    assert pk.eth_src[0] == mac_to_int(DEV) and pk.eth_dst[0] == mac_to_int(GW)
    assert list(pk.proto) == [Proto.TCP, Proto.DNS, Proto.ARP, Proto.NTP, Proto.UDP]
    assert list(pk.ethertype) == [0x0800, 0x0800, 0x0806, 0x0800, 0x0800]
    assert list(pk.vlan) == [0, 0, 0, 0, 42]
    assert pk.sport[0] == 40000 and pk.dport[0] == 443 and pk.tcp_flags[0] == 0x12
    assert tuple(pk.dst_ip[0]) == ip_from_str("52.94.236.248")
    assert pk.tcp_flags[1] == -1 and pk.sport[2] == -1
    assert pk.dns_qhash[1] != 0
    if ts_exact:
        assert pk.ts_ns[1] - pk.ts_ns[0] == 1_000_001_000


@pytest.mark.parametrize("nano", [False, True])
@pytest.mark.parametrize("big", [False, True])
def test_pcap_variants(nano, big):
    buf = io.BytesIO()
    write_pcap(buf, sample_records(), nano=nano, big_endian=big)
    fr = read_frames(buf.getvalue(), name="x.pcap")
    assert fr.format == ("pcap-ns" if nano else "pcap")
    pk = decode(fr)
    check_sample(pk)
    assert pk.ts_ns[0] == 1_600_000_000_123_456_000


@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("tsresol", [6, 9, 3, 0x80 | 30])
def test_pcapng_resolutions(big, tsresol):
    buf = io.BytesIO()
    recs = sample_records()
    write_pcapng(buf, recs, [Interface(tsresol=tsresol)], big_endian=big, extra_blocks=True)
    pk = read_packets(buf.getvalue(), name="x.pcapng")
    check_sample(pk, ts_exact=tsresol in (6, 9))
    if tsresol == 3:
        assert pk.ts_ns[0] == 1_600_000_000_123_000_000
    if tsresol == 0x80 | 30:
        assert abs(int(pk.ts_ns[0]) - 1_600_000_000_123_456_000) <= 1


def test_pcapng_several_interfaces_with_own_resolution_and_offset():
    recs = sample_records()
    for i, r in enumerate(recs):
        r.interface = i % 2
    itfs = [Interface(tsresol=6), Interface(tsresol=9, tsoffset=100)]
    buf = io.BytesIO()
    write_pcapng(buf, recs, itfs)
    pk = read_packets(buf.getvalue(), name="x.pcapng")
    check_sample(pk)
    assert [int(t) for t in pk.ts_ns] == [r.ts_ns for r in recs]


def test_pcapng_simple_packet_blocks_have_no_timestamp_and_honour_snaplen():
    recs = sample_records()
    buf = io.BytesIO()
    write_pcapng(buf, recs, [Interface(snaplen=40)], simple=True)
    fr = read_frames(buf.getvalue(), name="x.pcapng")
    assert list(fr.ts_ns) == [0] * 5
    assert list(fr.caplen) == [min(40, len(r.data)) for r in recs]
    assert list(fr.wirelen) == [len(r.data) for r in recs]


def test_multiple_sections_with_different_byte_orders():
    a, b = io.BytesIO(), io.BytesIO()
    recs = sample_records()
    write_pcapng(a, recs[:2], big_endian=False)
    write_pcapng(b, recs[2:], big_endian=True)
    pk = read_packets(a.getvalue() + b.getvalue(), name="x.pcapng")
    check_sample(pk)


@pytest.mark.parametrize("compress", [gzip.compress, lzma.compress, bz2.compress])
def test_compressed_and_streams(compress, tmp_path):
    buf = io.BytesIO()
    write_pcap(buf, sample_records())
    data = compress(buf.getvalue())
    path = tmp_path / "x.pcap.z"
    path.write_bytes(data)
    check_sample(read_packets(str(path)))
    with open(path, "rb") as fh:
        check_sample(read_packets(fh))


def test_concatenated_gzip_members():
    buf = io.BytesIO()
    write_pcap(buf, sample_records())
    raw = buf.getvalue()
    data = gzip.compress(raw[:100]) + gzip.compress(raw[100:])
    check_sample(read_packets(data, name="x.pcap.gz"))


def test_linux_cooked_and_raw_ip():
    eth = ether(DEV, GW, 0x0800, udp4("192.168.1.10", "192.168.1.1", 5000, 53, dns_query("a.example", 7)))
    ip = eth[14:]
    sll = (b"\x00\x04" + b"\x00\x01" + b"\x00\x06" + bytes.fromhex(DEV.replace(":", "")) + b"\x00\x00"
           + b"\x08\x00" + ip)
    sll2 = (b"\x08\x00" + b"\x00\x00" + b"\x00\x00\x00\x02" + b"\x00\x01" + b"\x04" + b"\x06"
            + bytes.fromhex(DEV.replace(":", "")) + b"\x00\x00" + ip)
    for linktype, frame in [(113, sll), (276, sll2), (101, ip), (228, ip)]:
        buf = io.BytesIO()
        write_pcap(buf, [Record(10**18, frame)], linktype=linktype)
        pk = read_packets(buf.getvalue(), name=f"lt{linktype}.pcap")
        assert pk.proto[0] == Proto.DNS, linktype
        assert pk.ethertype[0] == 0x0800
        assert pk.sport[0] == 5000 and pk.dport[0] == 53
        assert pk.eth_src[0] == (mac_to_int(DEV) if linktype in (113, 276) else 0)


def test_ipv6_extension_headers_and_fragments():
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import ICMPv6MLReport2, IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, RouterAlert
    from scapy.layers.l2 import Ether
    mld = bytes(Ether(src=DEV, dst="33:33:00:00:00:16") / IPv6(src="fe80::1", dst="ff02::16")
                / IPv6ExtHdrHopByHop(options=[RouterAlert()]) / ICMPv6MLReport2())
    first = bytes(Ether(src=DEV, dst=GW) / IPv6(src="2001:db8::1", dst="2001:db8::2")
                  / IPv6ExtHdrFragment(offset=0, m=1, id=5) / UDP(sport=1000, dport=53) / b"x")
    later = bytes(Ether(src=DEV, dst=GW) / IPv6(src="2001:db8::1", dst="2001:db8::2")
                  / IPv6ExtHdrFragment(offset=10, m=0, id=5, nh=17) / b"yyyyyyyy")
    buf = io.BytesIO()
    write_pcap(buf, [Record(10**18 + i, f) for i, f in enumerate([mld, first, later])])
    pk = read_packets(buf.getvalue(), name="v6.pcap")
    assert list(pk.ip_version) == [6, 6, 6]
    assert list(pk.ip_proto) == [58, 17, 17]
    assert list(pk.proto) == [Proto.ICMPV6, Proto.DNS, Proto.UDP]
    assert pk.sport[1] == 1000 and pk.sport[2] == -1
    assert pk.flags[2] & DecodeFlag.FRAGMENT
    assert tuple(pk.src_ip[1]) == ip_from_str("2001:db8::1")


def test_truncated_headers_keep_wire_length():
    frame = ether(DEV, GW, 0x0800, tcp4("192.168.1.10", "52.94.236.248", 40000, 443, 0x18, bytes(1000)))
    buf = io.BytesIO()
    write_pcap(buf, [Record(10**18, frame[:n], wire_len=len(frame)) for n in (58, 40, 30)])
    pk = read_packets(buf.getvalue(), name="t.pcap")
    assert list(pk.wire_len) == [len(frame)] * 3
    assert list(pk.cap_len) == [58, 40, 30]
    assert pk.sport[0] == 40000 and pk.tcp_flags[0] == 0x18
    # 40 bytes: the ports are there, the flags are not
    assert pk.proto[1] == Proto.TCP and pk.dport[1] == 443 and pk.tcp_flags[1] == -1
    assert pk.flags[1] & DecodeFlag.L4_TRUNCATED
    # 30 bytes: the IPv4 header itself is cut short
    assert pk.proto[2] == Proto.OTHER and pk.flags[2] & DecodeFlag.L3_TRUNCATED


def test_decode_frames_matches_capture_decode():
    """The online entry point (packet-in bytes) gives the same columns as a capture."""
    from classifier.capture.decode import decode_frames
    recs = sample_records()
    buf = io.BytesIO()
    write_pcap(buf, recs)
    a = read_packets(buf.getvalue(), name="x.pcap")
    b = decode_frames([r.data for r in recs], [r.ts_ns for r in recs], [len(r.data) for r in recs])
    for name in ("eth_src", "eth_dst", "ethertype", "src_ip", "dst_ip", "sport", "dport", "proto", "dns_qhash"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
