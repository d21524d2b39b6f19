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


def unknown_after(settings: dict, announce: bool = False) -> tuple[Harness, list]:
    """A learning device the engine calls ``unknown`` at every request (one every 5 s, from its
    first packet), ticked once a second for two minutes: the harness and the times (s after
    mirroring started) of the requests made."""
    from classifier.engine.decision import UNKNOWN
    from ctl_harness import FakeEngine
    h = Harness(settings=Settings(gateways=(m(GW),), decide_min_packets=1, decide_interval=5, **settings),
                engine=FakeEngine({A: ("unknown", 0.3, UNKNOWN)}))
    h.connect(1, [1, 2, 3, 4])
    t0 = h.now
    h.send(1, 1, udp(A, GW))
    h.send(1, 2, udp(GW, A))
    if announce:
        h.send(1, 1, mdns_announcement(A))             # it said what it is: nothing to ask
    dev = h.core.devices[m(A)]
    for _ in range(120):
        if dev.stage == UNKNOWN:
            break
        h.tick(1)
    return h, [round(h.now - t0)] + [c[2] for c in h.engine.calls]


def test_an_unknown_answer_while_the_identity_probes_are_outstanding_is_not_final():
    """Probes at 1, 21 and 41 s after mirroring starts; the last one's answer is awaited 5 s.
    Until 46 s the device stays learning and is asked again every decide_interval (5 s here),
    new packets or not; the first unknown answer after that is final."""
    from classifier.engine.decision import UNKNOWN
    h, (final_s, *_) = unknown_after({})
    dev = h.core.devices[m(A)]
    assert dev.stage == UNKNOWN and 46 <= final_s <= 51, final_s
    asked = len(h.engine.calls)
    assert asked >= 9 and h.core.counters["unknown_deferred"] == asked - 1
    assert h.core.counters["identity_probes_sent"] == 3 and not dev.mirroring and dev.watch_dpid == 1
    assert dev.thin_answers == 0                         # counted while deferred, reset by the decision
    # while deferred: still learning, undecided, and counted as "not enough evidence yet"
    h = Harness(settings=Settings(gateways=(m(GW),), decide_min_packets=1, decide_interval=5),
                engine=h.engine)
    h.connect(1, [1, 2])
    h.send(1, 1, udp(A, GW))
    h.send(1, 1, udp(A, GW))                            # the first taught the controller A; this one is mirrored
    h.tick(1)
    dev = h.core.devices[m(A)]
    assert (dev.stage, dev.mirroring, dev.thin_answers, dev.decide_retry) == (None, True, 1, True)


def test_an_unknown_answer_is_final_at_once_when_the_device_announced_itself_or_probes_are_off():
    from classifier.engine.decision import UNKNOWN
    for settings, announce in (({}, True), ({"identity_probes": 0}, False)):
        h, (final_s, *_) = unknown_after(settings, announce)
        assert h.core.devices[m(A)].stage == UNKNOWN and final_s == 1, (settings, final_s)
        assert h.core.counters["unknown_deferred"] == 0


def test_an_unknown_answer_within_the_last_probes_grace_waits_for_its_answer():
    """After the third probe (41 s) the device is no longer asked, but an unknown answer in the
    next 5 s is still deferred: the probe's answer may be on its way."""
    from classifier.engine.decision import UNKNOWN, Decision
    h = setup()
    dev = h.core.devices[m(A)]
    for _ in range(3):
        probes(h, 20 if dev.probes_sent else 1)
    assert dev.probes_sent == 3
    unknown = Decision("unknown", 0.3, UNKNOWN, "v1")
    assert h.core.defers(m(A), unknown, h.ns + 4 * 10**9)
    assert not h.core.defers(m(A), unknown, h.ns + 5 * 10**9)
    assert not h.core.defers(m(A), Decision("plug", 0.9, "confirmed", "v1"), h.ns)   # only unknown waits
