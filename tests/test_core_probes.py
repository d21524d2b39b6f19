"""Identity probes: a learning device that has not announced itself is asked, with an mDNS /
DNS-SD query out of its edge port (controller_app.idprobe), a bounded number of times; its
answers come back through its identity mirror entries like its own announcements."""

from __future__ import annotations

import dpkt
import numpy as np

from classifier.capture.decode import decode_frames
from classifier.features.identity import identity_from_frames
from controller_app.core import Settings
from controller_app.idprobe import PROBE_IPV4, PROBE_IPV6, PROBE_MAC, link_local_ipv6, probe_frames, question_names
from controller_app.intents import PacketOut
from ctl_harness import A, B, C, GW, Harness, m, udp
from test_core_identity import mdns_announcement


def setup(**settings) -> Harness:
    h = Harness(settings=Settings(gateways=(m(GW),), **settings))
    h.connect(1, [1, 2, 3, 4])
    h.send(1, 1, udp(A, GW))
    h.send(1, 2, udp(GW, A))
    return h


def probes(h: Harness, seconds: float = 1.0) -> list:
    start = len(h.log)
    h.tick(seconds)
    return [i for i in h.log[start:] if isinstance(i, PacketOut) and i.data[6:12] == PROBE_MAC.to_bytes(6, "big")]


def test_the_probe_is_a_multicast_dns_sd_query_from_link_local_sources():
    v4, v6 = probe_frames()
    e4, e6 = dpkt.ethernet.Ethernet(v4), dpkt.ethernet.Ethernet(v6)
    assert e4.dst == bytes.fromhex("01005e0000fb") and e6.dst == bytes.fromhex("3333000000fb")
    assert e4.data.src == PROBE_IPV4.packed and e4.data.dst == bytes([224, 0, 0, 251]) and e4.data.ttl == 255
    assert e6.data.src == PROBE_IPV6.packed and e6.data.hlim == 255
    assert str(link_local_ipv6(0x0E0000000002)) == "fe80::c00:ff:fe00:2"
    for e in (e4, e6):
        u = e.data.data
        assert (u.sport, u.dport, u.ulen) == (5353, 5353, len(bytes(u)))
        msg = dpkt.dns.DNS(u.data)
        assert msg.qr == dpkt.dns.DNS_Q and msg.id == 0 and not msg.an
        assert [q.name for q in msg.qd] == list(question_names())
        assert all(q.type == dpkt.dns.DNS_PTR and q.cls == dpkt.dns.DNS_IN for q in msg.qd)   # QU bit clear
    assert "_hap._tcp.local" in question_names() and question_names()[0] == "_services._dns-sd._udp.local"
    # the project's own decoder reads it as what it is: a query (what the sender looks for)
    pk = decode_frames([v4, v6], np.array([1, 2], np.int64), np.array([len(v4), len(v6)], np.uint32))
    recs = identity_from_frames([v4, v6], pk)
    kinds = {(k, v) for _, k, v in recs.for_mac(PROBE_MAC)}
    assert ("mdns.browse", "_hap._tcp") in kinds and not any(k == "mdns.service" for k, _ in kinds)


def test_a_learning_device_is_probed_three_times_then_left_alone():
    h = setup()
    got = probes(h)
    assert [(p.dpid, p.port) for p in got] == [(1, 1), (1, 1)]       # IPv4 and IPv6, out of its port only
    assert [p.data for p in got] == list(probe_frames())
    assert probes(h, 5) == []                                       # not before the interval
    assert len(probes(h, 15)) == 2
    assert len(probes(h, 20)) == 2
    assert probes(h, 20) == [] and probes(h, 100) == []
    assert h.core.counters["identity_probes_sent"] == 3
    assert h.core.devices[m(A)].to_record()["identity_probes"] == 3      # what /devices and the page show


def test_a_device_that_answers_is_not_asked_again():
    h = setup()
    assert len(probes(h)) == 2
    h.send(1, 1, mdns_announcement(A))                              # its answer: own records, _hap._tcp ci=2
    assert ("mdns.txt", "ci=2") in {(k, v) for _, k, v in h.core.learner.identity(m(A)).for_mac(m(A))}
    assert probes(h, 30) == []


def test_no_probes_for_devices_not_learning_or_when_off():
    h = setup(identity_probes=0)
    assert probes(h) == [] and probes(h, 60) == []
    h = setup()
    h.send(1, 3, udp(B, GW))
    dev_b = h.core.devices[m(B)]
    dev_b.mirroring = False                                         # decided: its mirror goes
    h.run(h.core.sync_device(dev_b))
    got = probes(h)
    assert {p.port for p in got} == {1}                             # A only; never the gateway's port 2


def test_probes_per_tick_are_bounded_and_the_rest_follow():
    h = setup(identity_probes_per_tick=2)
    for mac, port in ((B, 3), (C, 4)):
        h.send(1, port, udp(mac, GW))
    first = probes(h)
    assert len(first) == 4 and h.core.counters["identity_probes_deferred"] == 1
    assert {p.port for p in probes(h)} == {4}                       # the one deferred, a tick later
