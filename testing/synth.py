"""Synthetic device traffic: small captures the project generates itself.

Tests that must run anywhere, and the demo on machines without ../shared/datasets, use
these. Each *profile* is a caricature of a device category's behaviour seen in real
captures (a camera streams upstream, a plug sends small keep-alives, a sensor wakes up now
and then, a phone talks to many servers, ...). They are for exercising the pipeline, not
for judging a model.

Packets are built with :mod:`struct` (valid IPv4/TCP/UDP checksums) and written with
:mod:`classifier.capture.writer`.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

from classifier.capture.packets import mac_to_int
from classifier.capture.writer import Record, write_pcap

# ------------------------------------------------------------------ packet builders


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _mac(m: str | int) -> bytes:
    v = m if isinstance(m, int) else mac_to_int(m)
    return v.to_bytes(6, "big")


def _ip4(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def ether(src: str, dst: str, ethertype: int, payload: bytes, vlan: int | None = None) -> bytes:
    if vlan is not None:
        return _mac(dst) + _mac(src) + struct.pack("!HHH", 0x8100, vlan, ethertype) + payload
    return _mac(dst) + _mac(src) + struct.pack("!H", ethertype) + payload


def ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int = 0, ttl: int = 64) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0x4000, ttl, proto, 0,
                      _ip4(src), _ip4(dst))
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return hdr + payload


def _pseudo4(src: str, dst: str, proto: int, length: int) -> bytes:
    return _ip4(src) + _ip4(dst) + struct.pack("!BBH", 0, proto, length)


def udp4(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    c = _csum(_pseudo4(src, dst, 17, len(seg)) + seg) or 0xFFFF
    return ipv4(src, dst, 17, seg[:6] + struct.pack("!H", c) + seg[8:])


def tcp4(src: str, dst: str, sport: int, dport: int, flags: int, payload: bytes = b"", seq: int = 0,
         ack: int = 0) -> bytes:
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0)
    seg += payload
    c = _csum(_pseudo4(src, dst, 6, len(seg)) + seg)
    return ipv4(src, dst, 6, seg[:16] + struct.pack("!H", c) + seg[18:])


def arp_request(src_mac: str, src_ip: str, target_ip: str) -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, _mac(src_mac), _ip4(src_ip), b"\x00" * 6, _ip4(target_ip))
    return ether(src_mac, "ff:ff:ff:ff:ff:ff", 0x0806, body)


def arp_reply(src_mac: str, src_ip: str, dst_mac: str, dst_ip: str) -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, _mac(src_mac), _ip4(src_ip), _mac(dst_mac), _ip4(dst_ip))
    return ether(src_mac, dst_mac, 0x0806, body)


def dns_query(name: str, ident: int) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", 1, 1)


def dns_answer(name: str, ident: int, addr: str) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    return (struct.pack("!HHHHHH", ident, 0x8180, 1, 1, 0, 0) + q + struct.pack("!HH", 1, 1)
            + struct.pack("!HHHIH", 0xC00C, 1, 1, 300, 4) + _ip4(addr))


def _dns_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"


def dhcp_request(mac: str, hostname: str, xid: int = 0x3903F326, prl: bytes = bytes([1, 3, 6, 12, 15, 28, 42])) -> bytes:
    """A DHCPREQUEST broadcast from ``mac`` (0.0.0.0:68 -> 255.255.255.255:67) naming itself in
    option 12 (host name), with a parameter request list (option 55)."""
    chaddr = _mac(mac) + bytes(10)
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000, bytes(4), bytes(4), bytes(4),
                        bytes(4), chaddr, bytes(64), bytes(128))
    host = hostname.encode()
    opts = (b"\x63\x82\x53\x63" + b"\x35\x01\x03" + bytes([12, len(host)]) + host
            + bytes([55, len(prl)]) + prl + b"\xff")
    return ether(mac, "ff:ff:ff:ff:ff:ff", 0x0800, udp4("0.0.0.0", "255.255.255.255", 68, 67, bootp + opts))


def mdns_hap_announcement(mac: str, ip: str, instance: str, host: str, txt: list[str]) -> bytes:
    """An mDNS response (an announcement) from ``mac``: a HomeKit accessory's PTR
    ``_hap._tcp.local`` -> ``instance._hap._tcp.local``, its SRV (``host.local``:8080) and TXT
    (``txt``, e.g. ``["c#=1", "ci=5", "md=LB1"]``) records, and ``host.local``'s A record."""
    svc = _dns_name("_hap._tcp.local")
    inst = _dns_name(f"{instance}._hap._tcp.local")
    target = _dns_name(f"{host}.local")
    strings = b"".join(bytes([len(t.encode())]) + t.encode() for t in txt)
    srv = struct.pack("!HHH", 0, 0, 8080) + target
    answers = (svc + struct.pack("!HHIH", 12, 1, 4500, len(inst)) + inst
               + inst + struct.pack("!HHIH", 33, 0x8001, 120, len(srv)) + srv
               + inst + struct.pack("!HHIH", 16, 0x8001, 4500, len(strings)) + strings
               + target + struct.pack("!HHIH", 1, 0x8001, 120, 4) + _ip4(ip))
    msg = struct.pack("!HHHHHH", 0, 0x8400, 0, 4, 0, 0) + answers
    return ether(mac, "01:00:5e:00:00:fb", 0x0800, udp4(ip, "224.0.0.251", 5353, 5353, msg))


# ------------------------------------------------------------------ device profiles

TCP_SYN, TCP_ACK, TCP_PSH, TCP_FIN = 0x02, 0x10, 0x08, 0x01


@dataclass
class Profile:
    """How a kind of device behaves: servers it talks to and how often."""

    category: str
    servers: list[tuple[str, str, int]]          # (name, address, port)
    period: float                                 # seconds between sessions
    up_bytes: tuple[int, int]                     # per session, sent (range)
    down_bytes: tuple[int, int]                   # per session, received (range)
    udp: bool = False
    dns_every: float = 1800.0
    ntp_every: float = 3600.0
    mdns: bool = False
    jitter: float = 0.2


PROFILES: dict[str, Profile] = {
    "camera": Profile("camera", [("stream.camcloud.example", "52.94.236.248", 443),
                                 ("api.camcloud.example", "54.239.28.85", 443)], 20.0, (150_000, 400_000),
                      (2_000, 8_000)),
    "plug": Profile("plug", [("mqtt.plugcloud.example", "18.184.104.180", 8883)], 60.0, (80, 200), (60, 150),
                    ntp_every=1200.0),
    "hub": Profile("hub", [("hub.vendor.example", "34.223.255.1", 443), ("time.vendor.example", "13.107.4.50", 443)],
                   30.0, (500, 3_000), (500, 4_000), mdns=True),
    "sensor": Profile("sensor", [("report.sensorco.example", "35.156.180.2", 443)], 300.0, (300, 900), (200, 600),
                      dns_every=600.0),
    "light": Profile("light", [("bulb.lightco.example", "47.254.131.5", 56700)], 45.0, (100, 300), (100, 300),
                     udp=True),
    "speaker": Profile("speaker", [("voice.speakerco.example", "142.250.185.78", 443),
                                   ("music.speakerco.example", "151.101.2.133", 443)], 40.0, (2_000, 20_000),
                       (20_000, 200_000)),
    "non-iot": Profile("non-iot", [(f"site{i}.example", f"{a}", 443) for i, a in enumerate(
        ["140.82.121.4", "151.101.1.69", "104.16.132.229", "172.217.16.142", "157.240.27.35", "185.199.108.153",
         "13.33.82.100", "23.215.0.136", "104.244.42.65", "199.232.65.140"])], 8.0, (500, 5_000), (2_000, 80_000),
                       dns_every=30.0),
}


@dataclass
class SynthDevice:
    mac: str
    ip: str
    category: str
    name: str = ""
    hostname: str = ""               #: sent in DHCP (option 12) and as its mDNS host name, when set
    homekit: int | None = None       #: HomeKit category code (``ci=``) it announces over mDNS, when set
    seed_key: str = ""               #: what its traffic's random generator is seeded with (default: the MAC)


#: What devices say about themselves when a network is generated with ``identity=True``:
#: category -> (DHCP/mDNS host name, HomeKit category code).
IDENTITY = {"light": ("LightCo-Bulb-4A21", 5), "hub": ("HomeCo-Bridge-7C10", 2), "sensor": ("HomeCo-Sensor-31D2", 10)}


@dataclass
class SynthNetwork:
    gateway_mac: str = "02:00:00:00:00:01"
    gateway_ip: str = "192.168.1.1"
    devices: list[SynthDevice] = field(default_factory=list)


def device_mac(category: str, unit: int, index: int) -> str:
    """A generated device's MAC: as in the real world, a phone's or computer's (``non-iot``) is
    locally administered (randomised: 02:00:00:00:UU:II), an appliance's is burnt in, here from
    the block set aside for documentation (RFC 7042, 00:00:5e:00:53:00-ff: IANA's OUI, so the
    registry names it and no real device has it). ``unit`` and ``index`` count from 0."""
    if category == "non-iot":
        return f"02:00:00:00:{unit + 1:02x}:{index + 1:02x}"
    k = unit * 16 + index + 1
    if index >= 16 or k > 0xFF:
        raise ValueError(f"generated networks hold at most 15 units of 16 categories, not unit {unit}, index {index}")
    return f"00:00:5e:00:53:{k:02x}"


def default_network(categories: list[str] | None = None, units: int = 1, identity: bool = False) -> SynthNetwork:
    """``units`` devices per category (or per category given), MACs from :func:`device_mac`.
    ``identity``: devices of the categories in :data:`IDENTITY` also name themselves (a DHCP
    request with a host name and HomeKit mDNS announcements, in their first seconds)."""
    cats = categories or list(PROFILES)
    net = SynthNetwork()
    for u in range(units):
        for i, c in enumerate(cats):
            k = u * len(cats) + i
            name = f"synthetic {c}" + (f" (unit {u + 1})" if units > 1 else "")
            # seeded as when every generated MAC was 02:00:00:00:UU:II, so the traffic stays the same
            dev = SynthDevice(device_mac(c, u, i), f"192.168.1.{10 + k}", c, name,
                              seed_key=f"02:00:00:00:{u + 1:02x}:{i + 1:02x}")
            if identity and c in IDENTITY:
                host, ci = IDENTITY[c]
                dev.hostname, dev.homekit = host + (f"-{u + 1}" if units > 1 else ""), ci
            net.devices.append(dev)
    return net


def device_records(dev: SynthDevice, net: SynthNetwork, start_ns: int, duration: float, seed: int = 0,
                   mss: int = 1400) -> list[Record]:
    """One device's traffic (both directions, via the gateway) for ``duration`` seconds."""
    prof = PROFILES[dev.category]
    rng = random.Random(f"{seed}-{dev.seed_key or dev.mac}")
    recs: list[Record] = []
    gw_mac, gw_ip = net.gateway_mac, net.gateway_ip

    def at(t: float) -> int:
        return start_ns + int(t * 1e9)

    def out(t: float, frame: bytes):
        recs.append(Record(at(t), frame))

    # ARP for the gateway at start, then now and then
    t = rng.uniform(0, 2)
    while t < duration:
        out(t, arp_request(dev.mac, dev.ip, gw_ip))
        out(t + 0.002, arp_reply(gw_mac, gw_ip, dev.mac, dev.ip))
        t += rng.uniform(600, 1200)

    def dns(t: float, name: str, addr: str):
        ident = rng.randrange(65536)
        sport = rng.randrange(20000, 60000)
        out(t, ether(dev.mac, gw_mac, 0x0800, udp4(dev.ip, gw_ip, sport, 53, dns_query(name, ident))))
        out(t + 0.02, ether(gw_mac, dev.mac, 0x0800, udp4(gw_ip, dev.ip, 53, sport, dns_answer(name, ident, addr))))

    t = rng.uniform(0, 5)
    while t < duration:
        for name, addr, _ in prof.servers:
            dns(t, name, addr)
            t += 0.05
        t += prof.dns_every * rng.uniform(0.8, 1.2)

    t = rng.uniform(1, 10)
    while t < duration:
        sport = rng.randrange(20000, 60000)
        ntp = b"\x23" + b"\x00" * 47
        out(t, ether(dev.mac, gw_mac, 0x0800, udp4(dev.ip, "162.159.200.1", sport, 123, ntp)))
        out(t + 0.03, ether(gw_mac, dev.mac, 0x0800, udp4("162.159.200.1", dev.ip, 123, sport, b"\x24" + b"\x00" * 47)))
        t += prof.ntp_every * rng.uniform(0.9, 1.1)

    if prof.mdns:
        t = rng.uniform(0, 30)
        while t < duration:
            out(t, ether(dev.mac, "01:00:5e:00:00:fb", 0x0800,
                         udp4(dev.ip, "224.0.0.251", 5353, 5353, dns_query("_hub._tcp.local", 0))))
            t += rng.uniform(100, 140)

    if dev.hostname:
        # What it says of itself, at fixed times (no draws: the rest of its traffic stays as it
        # was). Its DHCP request meets no answer in the capture, so it is sent again after 4, 8,
        # 16, 32 and 64 s (RFC 2131 4.1's back-off); its mDNS announcement goes out eight times,
        # a second apart and then twice as long each time (RFC 6762 8.3). The repeats matter to a
        # replay: at 60x a device's first minute passes in the second before its mirror entries.
        for ta in (8.0, 12.0, 20.0, 36.0, 68.0, 132.0):
            out(ta, dhcp_request(dev.mac, dev.hostname))
        if dev.homekit is not None:
            txt = ["c#=1", f"ci={dev.homekit}", "sf=0"]
            for ta in (9.0, 10.0, 12.0, 16.0, 24.0, 40.0, 72.0, 136.0):
                out(ta + 0.5, mdns_hap_announcement(dev.mac, dev.ip, dev.hostname.replace("-", " "), dev.hostname,
                                                    txt))

    # sessions to the profile's servers
    t = rng.uniform(3, 10)
    while t < duration:
        name, addr, port = rng.choice(prof.servers)
        up = rng.randint(*prof.up_bytes)
        down = rng.randint(*prof.down_bytes)
        sport = rng.randrange(20000, 60000)
        if prof.udp:
            tt = t
            while up > 0:
                n = min(up, mss)
                out(tt, ether(dev.mac, gw_mac, 0x0800, udp4(dev.ip, addr, sport, port, bytes(n))))
                up -= n
                tt += 0.01
            while down > 0:
                n = min(down, mss)
                out(tt + 0.04, ether(gw_mac, dev.mac, 0x0800, udp4(addr, dev.ip, port, sport, bytes(n))))
                down -= n
                tt += 0.01
        else:
            seq, ack = rng.randrange(1 << 32), rng.randrange(1 << 32)
            tt = t
            out(tt, ether(dev.mac, gw_mac, 0x0800, tcp4(dev.ip, addr, sport, port, TCP_SYN, seq=seq)))
            out(tt + 0.03, ether(gw_mac, dev.mac, 0x0800, tcp4(addr, dev.ip, port, sport, TCP_SYN | TCP_ACK,
                                                                seq=ack, ack=seq + 1)))
            out(tt + 0.031, ether(dev.mac, gw_mac, 0x0800, tcp4(dev.ip, addr, sport, port, TCP_ACK, seq=seq + 1,
                                                                 ack=ack + 1)))
            tt += 0.04
            seq += 1
            ack += 1
            while up > 0:
                n = min(up, mss)
                out(tt, ether(dev.mac, gw_mac, 0x0800, tcp4(dev.ip, addr, sport, port, TCP_ACK | TCP_PSH, bytes(n),
                                                             seq=seq, ack=ack)))
                seq += n
                up -= n
                tt += 0.002
                if rng.random() < 0.5:
                    out(tt, ether(gw_mac, dev.mac, 0x0800, tcp4(addr, dev.ip, port, sport, TCP_ACK, seq=ack, ack=seq)))
            while down > 0:
                n = min(down, mss)
                out(tt, ether(gw_mac, dev.mac, 0x0800, tcp4(addr, dev.ip, port, sport, TCP_ACK | TCP_PSH, bytes(n),
                                                             seq=ack, ack=seq)))
                ack += n
                down -= n
                tt += 0.002
            out(tt + 0.01, ether(dev.mac, gw_mac, 0x0800, tcp4(dev.ip, addr, sport, port, TCP_FIN | TCP_ACK,
                                                                seq=seq, ack=ack)))
            out(tt + 0.04, ether(gw_mac, dev.mac, 0x0800, tcp4(addr, dev.ip, port, sport, TCP_FIN | TCP_ACK,
                                                                seq=ack, ack=seq + 1)))
        t += prof.period * rng.uniform(1 - prof.jitter, 1 + prof.jitter)
    recs.sort(key=lambda r: r.ts_ns)
    return recs


def network_records(net: SynthNetwork, duration: float, start_ns: int = 1_700_000_000 * 10**9,
                    seed: int = 0) -> list[Record]:
    recs = [r for d in net.devices for r in device_records(d, net, start_ns, duration, seed)]
    recs.sort(key=lambda r: r.ts_ns)
    return recs


def write_network_capture(path: str, net: SynthNetwork, duration: float, seed: int = 0, **kw) -> int:
    with open(path, "wb") as fh:
        return write_pcap(fh, network_records(net, duration, seed=seed), **kw)


def write_devices_csv(path: str, net: SynthNetwork) -> None:
    """Labels for a synthetic network capture (the by-MAC layout)."""
    with open(path, "w") as fh:
        fh.write("mac,device,category\n")
        for d in net.devices:
            fh.write(f"{d.mac},{d.name or d.category},{d.category}\n")
        fh.write(f"{net.gateway_mac},synthetic gateway,gateway\n")
