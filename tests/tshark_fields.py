"""Independent reference for the decoder: tshark's dissection of the same capture.

``expected_columns(path)`` runs ``tshark -T fields`` and converts its output to the
project's column conventions (see ``classifier.capture.packets``); ``compare`` lists every
field of every packet where the two differ.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np

from classifier.capture.packets import Packets, ip_from_str, mac_to_int
from classifier.capture.protocols import TCP_PORTS, UDP_PORTS, Proto, port_table

_UDP, _TCP = port_table(UDP_PORTS), port_table(TCP_PORTS)

FIELDS = [
    "frame.time_epoch", "frame.len", "frame.cap_len", "frame.protocols",
    "eth.src", "eth.dst", "eth.type", "vlan.id", "vlan.etype", "llc.type", "sll.src.eth", "sll.etype",
    "ip.src", "ip.dst", "ip.proto", "ipv6.src", "ipv6.dst", "ipv6.nxt", "ipv6.fraghdr.nxt",
    "tcp.srcport", "tcp.dstport", "tcp.flags", "udp.srcport", "udp.dstport", "sctp.srcport", "sctp.dstport",
]

# Wireshark protocol names -> the project's class (transport and application layers).
APP = {
    "dns": Proto.DNS, "mdns": Proto.MDNS, "llmnr": Proto.LLMNR, "nbns": Proto.NETBIOS, "nbdgm": Proto.NETBIOS,
    "ntp": Proto.NTP, "dhcp": Proto.DHCP, "dhcpv6": Proto.DHCPV6, "ssdp": Proto.SSDP,
}
TRANSPORT = {"tcp": (Proto.TCP, 6), "udp": (Proto.UDP, 17), "sctp": (Proto.IP_OTHER, 132),
             "icmp": (Proto.ICMP, 1), "icmpv6": (Proto.ICMPV6, 58), "igmp": (Proto.IGMP, 2)}
BY_NUMBER = {6: Proto.TCP, 17: Proto.UDP, 1: Proto.ICMP, 58: Proto.ICMPV6, 2: Proto.IGMP}
IPV6_EXT = {"ipv6.hopopts", "ipv6.routing", "ipv6.dstopts", "ipv6.fraghdr", "ah"}


def have_tshark() -> bool:
    return shutil.which("tshark") is not None


def run_tshark(path: str) -> list[list[str]]:
    cmd = ["tshark", "-n", "-r", str(path), "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE",
           "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,", "-E", "quote=n"]
    for f in FIELDS:
        cmd += ["-e", f]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    # tshark exits 2 after reading a capture whose last packet is cut short; what it
    # printed before is still every complete packet.
    if proc.returncode not in (0, 2) or (proc.returncode == 2 and "cut short" not in proc.stderr):
        raise RuntimeError(f"tshark failed on {path}: {proc.stderr.strip()}")
    out = proc.stdout
    return [line.split("\t") for line in out.splitlines()]


def _int(text: str, default: int) -> int:
    if not text:
        return default
    return int(text, 16) if text.startswith("0x") else int(text)


def expected_columns(path: str) -> dict[str, np.ndarray]:
    """tshark's view of every packet of ``path`` in the project's conventions."""
    rows = run_tshark(path)
    n = len(rows)
    exp = {
        "ts_ns": np.zeros(n, np.int64), "wire_len": np.zeros(n, np.int64), "cap_len": np.zeros(n, np.int64),
        "eth_src": np.zeros(n, np.uint64), "eth_dst": np.zeros(n, np.uint64), "ethertype": np.zeros(n, np.int64),
        "vlan": np.zeros(n, np.int64), "ip_version": np.zeros(n, np.int64),
        "src_ip": np.zeros((n, 2), np.uint64), "dst_ip": np.zeros((n, 2), np.uint64),
        "ip_proto": np.zeros(n, np.int64), "sport": np.full(n, -1, np.int64), "dport": np.full(n, -1, np.int64),
        "tcp_flags": np.full(n, -1, np.int64), "proto": np.zeros(n, np.int64),
    }
    ix = {f: i for i, f in enumerate(FIELDS)}
    for r, row in enumerate(rows):
        def g(f: str, last: bool = False) -> str:
            """The field's outermost occurrence (innermost with ``last``: stacked VLAN tags)."""
            values = row[ix[f]].split(",") if ix[f] < len(row) else [""]
            return values[-1] if last else values[0]

        sec, _, frac = g("frame.time_epoch").partition(".")
        exp["ts_ns"][r] = int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])
        exp["wire_len"][r] = int(g("frame.len"))
        exp["cap_len"][r] = int(g("frame.cap_len"))
        if g("eth.src"):
            exp["eth_src"][r] = mac_to_int(g("eth.src"))
            exp["eth_dst"][r] = mac_to_int(g("eth.dst"))
        elif g("sll.src.eth"):
            exp["eth_src"][r] = mac_to_int(g("sll.src.eth"))
        protos = g("frame.protocols").split(":")
        layer3 = next((i for i, p in enumerate(protos) if p in ("ip", "ipv6", "arp")), None)
        et = g("vlan.etype", last=True) or g("eth.type") or g("llc.type") or g("sll.etype")
        if et:
            exp["ethertype"][r] = _int(et, 0)
        elif layer3 is not None and protos[layer3] in ("ip", "ipv6") and not g("eth.src"):
            exp["ethertype"][r] = 0x0800 if protos[layer3] == "ip" else 0x86DD  # raw IP link type
        exp["vlan"][r] = _int(g("vlan.id"), 0)

        cls = Proto.L2_OTHER
        if "arp" in protos[:3] or (layer3 is not None and protos[layer3] == "arp"):
            cls = Proto.ARP
        elif "eapol" in protos:
            cls = Proto.EAPOL
        if layer3 is not None and protos[layer3] in ("ip", "ipv6"):
            v6 = protos[layer3] == "ipv6"
            exp["ip_version"][r] = 6 if v6 else 4
            exp["src_ip"][r] = ip_from_str(g("ipv6.src" if v6 else "ip.src"))
            exp["dst_ip"][r] = ip_from_str(g("ipv6.dst" if v6 else "ip.dst"))
            rest = protos[layer3 + 1:]
            while rest and rest[0] in IPV6_EXT:
                rest = rest[1:]
            transport = rest[0] if rest else ""
            if v6 and g("ipv6.fraghdr.nxt"):
                exp["ip_proto"][r] = _int(g("ipv6.fraghdr.nxt"), 0)
            elif v6:
                exp["ip_proto"][r] = TRANSPORT[transport][1] if transport in TRANSPORT and len(rest) < len(protos[layer3 + 1:]) else _int(g("ipv6.nxt"), 0)
            else:
                exp["ip_proto"][r] = _int(g("ip.proto"), 0)
            cls = BY_NUMBER.get(int(exp["ip_proto"][r]), Proto.IP_OTHER)
            if transport in ("tcp", "udp", "sctp") and g(f"{transport}.srcport"):
                exp["sport"][r] = int(g(f"{transport}.srcport"))
                exp["dport"][r] = int(g(f"{transport}.dstport"))
                app = rest[1] if len(rest) > 1 else ""
                if app in APP:
                    cls = APP[app]
                elif app and app != "data" and transport in ("tcp", "udp"):
                    # Wireshark tried the lower port first and found some other protocol
                    # there (e.g. "msproxy" for a datagram from port 1745 to 224.0.0.251:5353);
                    # its port table is far larger than the project's, which only names
                    # control protocols. Expect the project's table on the same two ports.
                    table = _UDP if transport == "udp" else _TCP
                    lo, hi = sorted((exp["sport"][r], exp["dport"][r]))
                    named = table[lo] or table[hi]
                    if named:
                        cls = Proto(named)
            if transport == "tcp" and g("tcp.flags"):
                exp["tcp_flags"][r] = _int(g("tcp.flags"), -1)
        exp["proto"][r] = int(cls)
    return exp


def compare(pk: Packets, exp: dict[str, np.ndarray], limit: int = 5) -> list[str]:
    """Every field where the decoder and tshark differ, summarised (empty list: all match)."""
    problems = []
    if len(pk) != len(exp["ts_ns"]):
        return [f"packet count: ours {len(pk)}, tshark {len(exp['ts_ns'])}"]
    for name, theirs in exp.items():
        ours = getattr(pk, name).astype(theirs.dtype)
        bad = ours != theirs
        if bad.ndim == 2:
            bad = bad.any(axis=1)
        idx = np.flatnonzero(bad)
        if len(idx):
            ex = ", ".join(f"#{i + 1}: ours {ours[i].tolist()} tshark {theirs[i].tolist()}" for i in idx[:limit])
            problems.append(f"{name}: {len(idx)} packets differ ({ex})")
    return problems
