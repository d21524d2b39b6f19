"""Protocol classes of packets: user (data) versus control (supporting functions).

Bai et al. 2018 split a device's packets into *user* packets (TCP, UDP and the protocols
above them) and *control* packets (ICMP, ARP, DNS, NTP and similar supporting
protocols). Each packet gets one :class:`Proto` code; :data:`USER` lists the user ones.

Application protocols are recognised by well-known port the way Wireshark does it: the
lower of the two ports first, then the higher one.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Proto(IntEnum):
    OTHER = 0        #: not decodable (link header cut short)
    TCP = 1          #: TCP not otherwise named (HTTP, TLS, MQTT, ...)
    UDP = 2          #: UDP not otherwise named (QUIC, CoAP, vendor protocols, ...)
    IP_OTHER = 3     #: other IP payloads (ESP, GRE, fragments without a header, ...)
    ARP = 4
    ICMP = 5
    ICMPV6 = 6
    IGMP = 7
    DNS = 8
    MDNS = 9
    LLMNR = 10
    NETBIOS = 11
    NTP = 12
    DHCP = 13
    DHCPV6 = 14
    SSDP = 15
    EAPOL = 16
    L2_OTHER = 17    #: other link-layer protocols (LLDP, STP/LLC, ...)


#: The user (data) classes; every other class is control.
USER = (Proto.TCP, Proto.UDP, Proto.IP_OTHER)

#: Lower-case names, as used in feature column names.
NAMES = {p: p.name.lower() for p in Proto}

#: A boolean lookup table: IS_USER[code] is True for user classes.
IS_USER = np.zeros(len(Proto), dtype=np.bool_)
IS_USER[list(USER)] = True

# Well-known ports -> class, for UDP and TCP (the decoder's table).
UDP_PORTS = {
    53: Proto.DNS, 5353: Proto.MDNS, 5355: Proto.LLMNR, 137: Proto.NETBIOS, 138: Proto.NETBIOS,
    123: Proto.NTP, 67: Proto.DHCP, 68: Proto.DHCP, 546: Proto.DHCPV6, 547: Proto.DHCPV6,
    1900: Proto.SSDP,
}
TCP_PORTS = {53: Proto.DNS, 5355: Proto.LLMNR}


def port_table(ports: dict[int, Proto]) -> np.ndarray:
    """A 65536-entry table mapping port -> Proto code (0 where the port names nothing)."""
    table = np.zeros(65536, dtype=np.uint8)
    for port, proto in ports.items():
        table[port] = int(proto)
    return table
