"""The mirror manager alone against a fake flow table: mirror entries and meters, filing
mirrored packets under the devices they involve, the classifier's time scale."""

from __future__ import annotations

import numpy as np

from classifier.capture.decode import decode_frames
from controller_app.core.mirror import MirrorManager
from controller_app.core.state import SEC, Settings, State
from controller_app.core.topology import TopologyManager
from controller_app.intents import FlowAdd, LoadIdentity, MeterAdd
from controller_app.pipeline import LEARN_METER, CookieKind, Table, cookie_kind, cookie_mac
from testing.fakeflowtable import FakeNetwork
from ctl_harness import A, B, GW, m, udp


def build(settings=None, dpids=(1,)):
    st = State(settings or Settings())
    topo = TopologyManager(st)
    mirror = MirrorManager(st)
    net = FakeNetwork()
    for dp in dpids:
        net.add_switch(dp)
        net.apply(topo.switch_added(dp, [1, 2, 3]))
    topo.changed()
    net.apply(topo.sync())
    return st, mirror, net


def device(st, mac, dpid=1, port=1):
    dev = st.new_device(m(mac), 0)
    st.attach(dev, dpid, port)
    return dev


def test_a_learning_device_is_mirrored_both_ways_through_its_meter_and_stops_cleanly():
    st, mirror, net = build()
    dev = device(st, A)
    out = mirror.sync(dev)
    assert [(i.meter_id, i.unit) for i in out[:2]] == [(dev.mirror_meter, "pktps"), (dev.identity_meter, "pktps")]
    assert all(isinstance(i, FlowAdd) for i in out[2:-1])
    assert out[-1] == LoadIdentity(dev.mac)       # its identity values back from the inventory, if it has any
    net.apply(out)
    assert dev.mirror_dpid == 1 and dev.mirror_meter in net.switches[1].meters
    for frame in (udp(A, B), udp(B, A)):
        d = net.inject(1, 2, frame)
        assert [(cookie_kind(p[2]), cookie_mac(p[2])) for p in d.packet_ins][-1] == (CookieKind.MIRROR, m(A))
    assert mirror.sync(dev) == []                                # nothing to change
    dev.mirroring = False
    net.apply(mirror.sync(dev))
    assert dev.mirror_dpid is None and not net.switches[1].entries(Table.MIRROR)[1:]
    assert dev.mirror_meter not in net.switches[1].meters and dev.identity_meter not in net.switches[1].meters


def test_a_device_on_a_switch_that_is_not_connected_is_not_mirrored():
    st, mirror, net = build()
    dev = device(st, A, dpid=7)
    assert mirror.sync(dev) == [] and dev.mirror_dpid is None


def test_packets_are_filed_under_devices_mirrored_on_the_switch_that_sent_them():
    st, mirror, net = build(dpids=(1, 2))
    a, b = device(st, A, 1), device(st, B, 2)
    net.apply(mirror.sync(a) + mirror.sync(b))
    frames = [udp(A, B), udp(B, A), udp(GW, B)]
    pk = decode_frames(frames, np.array([1, 2, 3]) * SEC, [len(f) for f in frames])
    mirror.file(pk, np.array([1, 1, 1], np.uint64))       # all three copies came from switch 1
    assert len(st.learner.packets(m(A))) == 2 and m(B) not in st.learner.buffers
    assert a.last_ns == 2 * SEC
    pk = decode_frames([udp(GW, B)], [4 * SEC], [100])
    mirror.file(pk, np.array([1], np.uint64))              # B is mirrored on switch 2, not 1
    assert st.counters["packet_ins_mirror_unowned"] == 1


def test_time_scale_maps_packet_times_and_back():
    st, mirror, net = build(Settings(time_scale=60.0))
    dev = device(st, A)
    net.apply(mirror.sync(dev))
    pk = decode_frames([udp(A, B), udp(A, B)], [100 * SEC, 101 * SEC], [100, 100])
    mirror.file(pk, np.array([1, 1], np.uint64))
    assert st.learner.packets(m(A)).ts_ns.tolist() == [100 * SEC, 160 * SEC]
    assert dev.last_ns == 101 * SEC                        # the device's clock stays real time
    assert mirror.controller_time(mirror.classifier_time(107 * SEC)) == 107 * SEC


def test_a_switch_that_went_clears_mirror_state():
    st, mirror, net = build()
    dev = device(st, A)
    net.apply(mirror.sync(dev))
    assert mirror.mirrored_here(np.array([m(A)], np.uint64), np.array([1], np.uint64)).tolist() == [True]
    mirror.switch_gone(1)
    assert dev.mirror_dpid is None
    assert mirror.mirrored_here(np.array([m(A)], np.uint64), np.array([1], np.uint64)).tolist() == [False]


# ------------------------------------------------------------------ the mirror cap


def test_at_most_max_mirrored_devices_are_mirrored_the_others_wait_in_order():
    st, mirror, net = build(Settings(max_mirrored=2))
    devs = [device(st, f"02:00:00:00:20:{i:02x}", port=1 + i % 3) for i in range(5)]
    for d in devs:
        d.located = True
        net.apply(mirror.sync(d))
    assert st.mirrored == {devs[0].mac, devs[1].mac}
    assert list(st.mirror_wait) == [d.mac for d in devs[2:]] and st.counters["mirror_capped"] == 3
    assert sorted(net.switches[1].meters) == sorted([LEARN_METER, devs[0].mirror_meter, devs[0].identity_meter,
                                                     devs[1].mirror_meter, devs[1].identity_meter])
    assert mirror.sync(devs[2]) == [] and st.counters["mirror_capped"] == 3       # counted once while waiting
    assert mirror.promote(0) == []                                              # no free slot
    devs[0].mirroring = False                                                   # e.g. its decision is final
    net.apply(mirror.sync(devs[0]))
    devs[2].located = False                                                     # its entry idled out: skipped
    net.apply(mirror.promote(5 * SEC))
    assert st.mirrored == {devs[1].mac, devs[3].mac} and list(st.mirror_wait) == [devs[2].mac, devs[4].mac]
    assert devs[3].mirror_meter in net.switches[1].meters and devs[0].mirror_meter not in net.switches[1].meters
    devs[4].mirroring = False                                                   # no longer wants it: leaves the queue
    net.apply(mirror.sync(devs[4]))
    assert list(st.mirror_wait) == [devs[2].mac]


def test_release_removes_entries_and_meter_and_frees_the_slot():
    st, mirror, net = build(Settings(max_mirrored=1))
    a, b = device(st, A), device(st, B, port=2)
    b.located = True
    net.apply(mirror.sync(a) + mirror.sync(b))
    assert st.mirrored == {a.mac} and list(st.mirror_wait) == [b.mac]
    net.apply(mirror.release(a))
    assert a.mirror_dpid is None and not [f for f in net.switches[1].entries(Table.MIRROR) if f.priority > 0
                                          and f.match.eth_src == a.mac]
    net.apply(mirror.promote(0))
    assert st.mirrored == {b.mac}
