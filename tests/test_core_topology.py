"""The topology manager alone (no hosts, no devices) against fake flow tables: table defaults,
LLDP links, the spanning tree and flooding, link expiry, port changes."""

from __future__ import annotations

from controller_app import lldp
from controller_app.core.state import SEC, Settings, State
from controller_app.core.topology import TopologyManager
from controller_app.intents import FlowDelete, MeterDelete, PacketOut
from controller_app.pipeline import PRIO_LINK_PORT, CookieKind, Table, cookie_kind
from testing.fakeflowtable import FakeNetwork
from ctl_harness import A, arp, udp


def build(dpids=(1,), ports=(1, 2, 3), links=(), settings=None):
    st = State(settings or Settings())
    topo = TopologyManager(st)
    net = FakeNetwork()
    for dp in dpids:
        net.add_switch(dp)
    for a, b in links:
        net.link(a, b)
    for dp in dpids:
        net.apply(topo.switch_added(dp, ports))
    return st, topo, net


def discover(st, topo, net, now_ns=0):
    """Send every switch's probes through the fake network and feed back what arrives."""
    changed = False
    for dp, sw in st.switches.items():
        for p in topo.probes(dp, sorted(sw.ports)):
            peer = net.links.get((p.dpid, p.port))
            if peer is not None:
                changed |= topo.lldp_in(peer[0], peer[1], p.data, now_ns)
    return changed


def test_a_new_switch_is_wiped_then_copies_unknown_sources_to_the_controller():
    st, topo, net = build()
    intents = topo.switch_added(1, [1, 2, 0xFFFFFFFE, 0xFFFFFFFD])
    assert isinstance(intents[0], FlowDelete) and isinstance(intents[1], MeterDelete)
    assert st.switches[1].ports == {1, 2, 0xFFFFFFFE}               # LOCAL kept, other reserved ports not
    d = net.inject(1, 1, arp(A))
    assert [cookie_kind(p[2]) for p in d.packet_ins] == [CookieKind.LEARN]
    assert d.received == []                                          # no flooding before the first sync
    net.apply(topo.sync())
    assert sorted(net.inject(1, 1, arp(A)).received) == [(1, 2), (1, 0xFFFFFFFE)]


def test_lldp_probes_make_links_once_and_foreign_lldp_is_counted():
    st, topo, net = build(dpids=(1, 2), links=[((1, 3), (2, 3))])
    assert discover(st, topo, net) is True
    assert st.links[(1, 3)][:2] == (2, 3) and st.links[(2, 3)][:2] == (1, 3)
    assert discover(st, topo, net) is False                          # the same link again: no change
    assert topo.link_ports(1) == {3} and topo.link_ports(2) == {3}
    foreign = bytes.fromhex("0180c200000e") + bytes.fromhex("02000000000a") + b"\x88\xcc" + bytes(20)
    assert topo.lldp_in(1, 1, foreign, 0) is False and st.counters["lldp_foreign"] == 1
    assert topo.lldp_in(1, 1, lldp.probe_frame(99, 1), 0) is False  # a switch we do not know
    assert topo.lldp_in(1, 2, lldp.probe_frame(1, 2), 0) is False   # its own probe looped back


def test_flooding_follows_a_spanning_tree_of_a_loop():
    links = [((1, 2), (2, 3)), ((2, 2), (3, 3)), ((3, 2), (1, 3))]
    st, topo, net = build(dpids=(1, 2, 3), links=links)
    discover(st, topo, net)
    net.apply(topo.sync())
    assert len(st.links) == 6 and sum(len(p) for p in st.tree_ports.values()) == 4    # 2 tree edges
    d = net.inject(1, 1, arp(A))                      # a loop would raise in the fake network
    assert sorted(d.received) == [(2, 1), (3, 1)]
    # link ports are never learned from
    for dp in (1, 2, 3):
        lp = {f.match.in_port for f in net.switches[dp].entries(Table.ETH_SRC) if f.priority == PRIO_LINK_PORT}
        assert lp == topo.link_ports(dp) == {2, 3}


def test_ports_toward_an_edge_switch_on_a_line():
    st, topo, net = build(dpids=(1, 2, 3), links=[((1, 3), (2, 2)), ((2, 3), (3, 2))])
    discover(st, topo, net)
    assert topo.ports_toward(1) == {2: 2, 3: 2}
    assert topo.ports_toward(3) == {1: 3, 2: 3}
    assert topo.ports_toward(99) == {}


def test_links_expire_without_probes_and_probes_go_out_every_interval():
    s = Settings(lldp_interval=5, link_timeout=16)
    st, topo, net = build(dpids=(1, 2), links=[((1, 3), (2, 3))], settings=s)
    discover(st, topo, net, now_ns=0)
    probes, changed = topo.timer(1 * SEC)             # the first tick: switches were probed at connect
    assert probes == [] and not changed
    probes, changed = topo.timer(3 * SEC)             # within the interval: nothing
    assert probes == [] and not changed
    probes, changed = topo.timer(7 * SEC)
    assert {(p.dpid, p.port) for p in probes} == {(d, p) for d in (1, 2) for p in (1, 2, 3)} and not changed
    probes, changed = topo.timer(20 * SEC)            # 20 s without the link's probes coming back
    assert changed and st.links == {}
    net.apply(topo.sync())
    assert not [f for f in net.switches[1].entries(Table.ETH_SRC) if f.priority == PRIO_LINK_PORT]


def test_port_changes():
    st, topo, net = build(dpids=(1, 2), links=[((1, 3), (2, 3))])
    discover(st, topo, net)
    net.apply(topo.sync())
    assert topo.port_up(1, 2) is None                 # already up: nothing
    assert topo.port_down(1, 1) == (True, False) and topo.port_down(1, 1) == (False, False)
    out = topo.port_up(1, 1)
    assert [(p.dpid, p.port) for p in out if isinstance(p, PacketOut)] == [(1, 1)]
    assert topo.port_down(1, 3) == (True, True) and (1, 3) not in st.links and (2, 3) not in st.links


# ------------------------------------------------------------------ bounded learning: the learning meter, port churn


def test_copies_of_unknown_sources_go_through_the_switch_meter_and_forwarding_does_not():
    st, topo, net = build(settings=Settings(learn_rate_pps=100, learn_burst=10), ports=(1, 2, 3))
    topo.changed()
    net.apply(topo.sync())
    copies = delivered = 0
    for i in range(50):                                            # 50 unknown sources in the same instant
        d = net.inject(1, 1, udp(f"02:00:00:00:10:{i:02x}", "ff:ff:ff:ff:ff:ff"), now=0.0)
        copies += sum(1 for p in d.packet_ins if cookie_kind(p[2]) == CookieKind.LEARN)
        delivered += len(d.received)
    assert copies == 10 and delivered == 100                       # the burst; every packet flooded to 2 ports
    d = net.inject(1, 1, arp(A), now=0.05)                         # 50 ms later: 5 tokens
    assert len(d.packet_ins) == 1


def test_no_learning_meter_when_its_rate_is_zero():
    st, topo, net = build(settings=Settings(learn_rate_pps=0))
    assert net.switches[1].meters == {}
    assert len(net.inject(1, 1, arp(A)).packet_ins) == 1


def test_port_churn_is_linear_one_flood_entry_per_switch():
    """250 ports come up one at a time, then go down: each change rewrites the switch's one
    flood entry (and probes a port that came up), so 500 changes cost 500 flow-mods, not the
    ~n^2/2 of one flood entry per in_port."""
    from controller_app.core import Core
    from controller_app.intents import FlowAdd
    core = Core()
    net = FakeNetwork()
    net.add_switch(1)
    net.apply(core.switch_up(1, [1], 0))
    mods = 0
    for port in range(2, 251):
        out = core.port_changed(1, port, True, 0)
        net.apply(out)
        mods += sum(1 for i in out if isinstance(i, (FlowAdd, FlowDelete)))
    for port in range(2, 251):
        out = core.port_changed(1, port, False, 0)
        net.apply(out)
        mods += sum(1 for i in out if isinstance(i, (FlowAdd, FlowDelete)))
    assert mods == 2 * 249
    flood = [f for f in net.switches[1].entries(Table.ETH_DST) if cookie_kind(f.cookie) == CookieKind.FLOOD]
    assert len(flood) == 1 and [a.port for a in flood[0].actions] == [1]
