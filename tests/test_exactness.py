"""Every field of every packet, compared with tshark's dissection of the same capture.

The shared-data test decodes every capture in ../shared/datasets (the IoT Sentinel
captures merged with mergecap first: one tshark run instead of 550). Generated captures
are checked the same way, so the comparison itself is exercised where ../shared is absent.
"""

from __future__ import annotations

import subprocess

import pytest

from classifier.capture.decode import read_packets
from classifier.capture.labels import is_capture_file
from classifier.capture.packets import Packets

from tshark_fields import compare, expected_columns, have_tshark

needs_tshark = pytest.mark.skipif(not have_tshark(), reason="tshark is not installed (make install adds it as root)")


def _files(folder):
    return sorted(str(p) for p in folder.rglob("*") if p.is_file() and is_capture_file(p.name))


def _check(paths, reference):
    ours = Packets.concat([read_packets(p, warnings=[]) for p in paths])
    problems = compare(ours, expected_columns(reference))
    assert not problems, f"{reference}: " + "; ".join(problems)
    return len(ours)


@needs_tshark
@pytest.mark.shared
@pytest.mark.slow
def test_iot_sentinel_matches_tshark(datasets, tmp_path):
    files = _files(datasets / "iot-sentinel")
    merged = tmp_path / "iot-sentinel.pcapng"
    subprocess.run(["mergecap", "-a", "-w", str(merged)] + files, check=True, capture_output=True)
    assert _check(files, merged) > 100_000


@needs_tshark
@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("subset", ["home", "longterm"])
def test_long_captures_match_tshark(datasets, subset):
    # several home captures end in a cut-short block, which mergecap refuses: one file at a time
    files = _files(datasets / subset)
    assert files
    for f in files:
        _check([f], f)


@needs_tshark
def test_generated_capture_matches_tshark(synth_capture):
    path, _, _ = synth_capture
    assert _check([str(path)], path) > 1000


def _with_length(msg: bytes) -> bytes:
    """DNS over TCP: a two-byte length before the message."""
    return len(msg).to_bytes(2, "big") + msg


@needs_tshark
def test_crafted_protocol_zoo_matches_tshark(tmp_path):
    """Protocols and encapsulations the shared data lack: VLAN, IPv6 extension headers,
    fragments, SCTP, ICMP errors quoting a UDP header, LLC, Linux cooked."""
    from scapy.layers.dhcp6 import DHCP6_Solicit
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrRouting
    from scapy.layers.l2 import LLC, SNAP, Dot1Q, Dot3, Ether
    from scapy.layers.sctp import SCTP
    from scapy.layers.dns import DNS, DNSQR
    from scapy.layers.llmnr import LLMNRQuery
    from scapy.layers.netbios import NBNSQueryRequest

    a, b = "02:00:00:00:00:0a", "02:00:00:00:00:01"
    pkts = [
        Ether(src=a, dst=b) / Dot1Q(vlan=7) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2, flags="S"),
        Ether(src=a, dst=b) / Dot1Q(vlan=7) / Dot1Q(vlan=9) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=3, dport=4),
        Ether(src=a, dst=b) / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting()
        / TCP(sport=5, dport=6, flags="PA"),
        Ether(src=a, dst=b) / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(offset=100, nh=17) / b"zz",
        Ether(src=a, dst=b) / IP(src="10.0.0.1", dst="10.0.0.2", flags="MF", frag=0) / UDP(sport=9, dport=53) / b"q",
        Ether(src=a, dst=b) / IP(src="10.0.0.1", dst="10.0.0.2", frag=20, proto=17) / b"rest-of-datagram",
        Ether(src=a, dst=b) / IP(src="10.0.0.1", dst="10.0.0.2") / SCTP(sport=7, dport=8),
        Ether(src=b, dst=a) / IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(type=3, code=3)
        / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=11, dport=123),
        Ether(src=a, dst=b) / IPv6(src="fe80::1", dst="fe80::2") / ICMPv6EchoRequest(),
        Ether(src=a, dst="33:33:00:01:00:02") / IPv6(src="fe80::1", dst="ff02::1:2") / UDP(sport=546, dport=547)
        / DHCP6_Solicit(),
        Ether(src=a, dst=b) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000, dport=53, flags="PA")
        / _with_length(bytes(DNS(rd=1, qd=DNSQR(qname="x.example")))),
        Ether(src=a, dst="01:00:5e:00:00:fc") / IP(src="10.0.0.1", dst="224.0.0.252") / UDP(sport=50000, dport=5355)
        / LLMNRQuery(qd=DNSQR(qname="host")),
        Ether(src=a, dst="ff:ff:ff:ff:ff:ff") / IP(src="10.0.0.1", dst="10.0.0.255") / UDP(sport=137, dport=137)
        / NBNSQueryRequest(QUESTION_NAME="HOST"),
        Ether(src=a, dst="01:00:5e:7f:ff:fa") / IP(src="10.0.0.1", dst="239.255.255.250") / UDP(sport=50001, dport=1900)
        / b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n\r\n",
        Dot3(src=a, dst="01:80:c2:00:00:00") / LLC(dsap=0x42, ssap=0x42, ctrl=3) / (b"\x00" * 35),
        Dot3(src=a, dst=b) / LLC(dsap=0xAA, ssap=0xAA, ctrl=3) / SNAP(OUI=0, code=0x0800) / IP() / UDP(),
        Ether(src=a, dst=b, type=0x88CC) / (b"\x02\x07\x04" + b"\x00" * 40),
        Ether(src=a, dst=b, type=0x888E) / b"\x01\x00\x00\x05\x01\x00\x00\x05\x01",
    ]
    from scapy.utils import wrpcap
    path = tmp_path / "zoo.pcap"
    wrpcap(str(path), pkts)
    assert _check([str(path)], path) == len(pkts)
