"""The controller's identity probes: an mDNS / DNS-SD query sent to one learning device.

A device that was already running when it joined the controller's network (or when the
controller started) has usually said what it is long before: its DHCP request, its mDNS
announcements and SSDP notices came and went, and it may not repeat them for an hour. The
controller therefore asks it, as any DNS-SD browser on the link would: one multicast DNS
query (RFC 6762, DNS-SD RFC 6763) for the service types the public knowledge reads
(``classifier/knowledge/dnssd.csv``, ``_hap._tcp`` whose TXT ``ci=`` names a HomeKit
accessory category) and for DNS-SD's service enumeration (``_services._dns-sd._udp.local``).
A responder answers with its own records — the service types, instance names, TXT records and
host name the identity voter reads — **multicast** (the query asks for multicast answers),
so no address of the controller needs resolving and the answers reach the controller through
the device's mirror entries like any announcement of its own.

The query goes out of the device's edge port only (an OpenFlow packet-out), over IPv4 and over
IPv6. Its sources are link-local by construction, so that every responder takes it as coming
from its own link (RFC 6762 section 11), and it claims no address of a real host: the IPv4
source is in 169.254/16 (RFC 3927), the IPv6 one the link-local address of :data:`PROBE_MAC`,
a locally administered MAC no device has. Nothing here touches a socket: the core emits these
frames as :class:`~controller_app.intents.PacketOut` intents.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

import dpkt

from classifier.identity.probe import question_names  # noqa: F401 - the questions: one definition, shared with the evaluation

PROBE_MAC = 0x0E0000000002                      #: locally administered, never a device (LLDP probes use ...01)
PROBE_IPV4 = ipaddress.IPv4Address("169.254.0.2")   #: IPv4 link-local (RFC 3927)
MDNS_PORT = 5353
MDNS_IPV4 = ipaddress.IPv4Address("224.0.0.251")
MDNS_IPV6 = ipaddress.IPv6Address("ff02::fb")
MDNS_MAC_V4 = 0x01005E0000FB
MDNS_MAC_V6 = 0x3333000000FB


def link_local_ipv6(mac: int) -> ipaddress.IPv6Address:
    """The modified EUI-64 link-local address of ``mac`` (RFC 4291 appendix A)."""
    b = bytearray(mac.to_bytes(6, "big"))
    b[0] ^= 0x02
    return ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + bytes(b[:3]) + b"\xff\xfe" + bytes(b[3:]))


PROBE_IPV6 = link_local_ipv6(PROBE_MAC)


def mdns_query(names) -> bytes:
    """A DNS message asking for the PTR records of ``names`` (class IN, multicast answers
    wanted: the QU bit clear), id 0 as RFC 6762 asks of multicast queries."""
    msg = dpkt.dns.DNS(id=0, op=0, rcode=0)
    msg.qd = [dpkt.dns.DNS.Q(name=n, type=dpkt.dns.DNS_PTR, cls=dpkt.dns.DNS_IN) for n in names]
    msg.an, msg.ns, msg.ar = [], [], []
    return bytes(msg)


def _frame(ip, dst_mac: int, eth_type: int) -> bytes:
    eth = dpkt.ethernet.Ethernet(dst=dst_mac.to_bytes(6, "big"), src=PROBE_MAC.to_bytes(6, "big"), type=eth_type,
                                 data=ip)
    return bytes(eth)


def _udp(payload: bytes):
    u = dpkt.udp.UDP(sport=MDNS_PORT, dport=MDNS_PORT, data=payload)
    u.ulen = len(u)
    return u


@lru_cache(maxsize=1)
def probe_frames() -> tuple[bytes, bytes]:
    """The two frames of one probe: the query over IPv4 (from :data:`PROBE_IPV4`) and over IPv6
    (from :data:`PROBE_IPV6`), UDP 5353 to 5353, IP TTL / hop limit 255 (RFC 6762 section 11).
    Built once: every probe is the same two frames."""
    payload = mdns_query(question_names())
    ip4 = dpkt.ip.IP(src=PROBE_IPV4.packed, dst=MDNS_IPV4.packed, p=dpkt.ip.IP_PROTO_UDP, ttl=255, data=_udp(payload))
    ip4.len = len(ip4)
    u6 = _udp(payload)
    ip6 = dpkt.ip6.IP6(src=PROBE_IPV6.packed, dst=MDNS_IPV6.packed, nxt=dpkt.ip.IP_PROTO_UDP, hlim=255, data=u6,
                       plen=len(u6))
    return (_frame(ip4, MDNS_MAC_V4, dpkt.ethernet.ETH_TYPE_IP), _frame(ip6, MDNS_MAC_V6, dpkt.ethernet.ETH_TYPE_IP6))
