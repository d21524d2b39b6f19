"""The host manager (L2 learning and forwarding) with the topology manager, no mirroring or
policy (its device callback only records), against fake flow tables."""

from __future__ import annotations

from controller_app.core.hosts import HostManager
from controller_app.core.state import SEC, Settings, State
from controller_app.core.topology import TopologyManager
from controller_app.pipeline import PRIO_HOST, CookieKind, Table, cookie
from testing.fakeflowtable import FakeNetwork
from ctl_harness import A, B, C, m, udp


class Parts:
    def __init__(self, dpids=(1,), ports=(1, 2, 3), links=()):
        self.st = State(Settings())
        self.topo = TopologyManager(self.st)
        self.synced = []
        self.hosts = HostManager(self.st, self.topo, lambda dev: self.synced.append(dev.mac) or [])
        self.net = FakeNetwork()
        for dp in dpids:
            self.net.add_switch(dp)
        for a, b in links:
            self.net.link(a, b)
        for dp in dpids:
            self.net.apply(self.topo.switch_added(dp, ports))
        for dp, sw in self.st.switches.items():
            for p in self.topo.probes(dp, sorted(sw.ports)):
                peer = self.net.links.get((p.dpid, p.port))
                if peer is not None:
                    self.topo.lldp_in(peer[0], peer[1], p.data, 0)
        self.topo.changed()
        self.apply(self.topo.sync() + self.hosts.resync())

    def apply(self, intents):
        self.net.apply(intents)
        return intents

    def learn(self, mac, dpid, port, now_ns=0):
        return self.apply(self.hosts.learn(m(mac), dpid, port, now_ns))


def test_learning_installs_the_host_entry_and_forwarding_and_syncs_the_device_once():
    p = Parts()
    p.learn(A, 1, 1)
    entry = [f for f in p.net.switches[1].entries(Table.ETH_SRC) if f.match.eth_src == m(A)]
    assert len(entry) == 1 and entry[0].match.in_port == 1 and entry[0].notify_removed
    assert entry[0].idle_timeout == p.st.settings.l2_idle_timeout and entry[0].cookie == cookie(CookieKind.HOST, m(A))
    assert p.net.inject(1, 2, udp(B, A)).received == [(1, 1)]
    assert p.synced == [m(A)]
    assert p.hosts.learn(m(A), 1, 1, 0) == []             # a copy that raced the entry: nothing
    assert p.st.counters["devices_seen"] == 1


def test_unknown_ports_and_link_ports_are_not_learned_from():
    p = Parts(dpids=(1, 2), links=[((1, 3), (2, 3))])
    assert p.hosts.learn(m(A), 1, 3, 0) == [] and m(A) not in p.st.devices      # a link port
    assert p.hosts.learn(m(A), 1, 7, 0) == [] and p.st.counters["packet_ins_unknown_port"] == 1
    assert p.hosts.learn(m(A), 9, 1, 0) == []                                   # an unknown switch


def test_a_host_that_moves_loses_its_old_entry():
    p = Parts()
    p.learn(A, 1, 1)
    out = p.learn(A, 1, 3)
    assert any(getattr(i, "priority", None) == PRIO_HOST and i.match.in_port == 1 for i in out
               if type(i).__name__ == "FlowDelete")
    assert [f.match.in_port for f in p.net.switches[1].entries(Table.ETH_SRC) if f.match.eth_src == m(A)] == [3]
    assert p.net.inject(1, 2, udp(B, A)).received == [(1, 3)]


def test_forwarding_toward_a_host_on_every_switch_of_a_line_and_its_removal():
    p = Parts(dpids=(1, 2, 3), links=[((1, 3), (2, 2)), ((2, 3), (3, 2))])
    p.learn(A, 1, 1)
    assert {dp: sw.fwd.get(m(A)) for dp, sw in p.st.switches.items()} == {1: 1, 2: 2, 3: 2}
    assert p.net.inject(3, 1, udp(C, A)).received == [(1, 1)]
    ck = cookie(CookieKind.HOST, m(A))
    assert p.hosts.flow_removed(1, Table.ETH_DST, ck, 1, m(A), 0) == []          # not the ETH_SRC entry
    assert p.hosts.flow_removed(1, Table.ETH_SRC, ck, 2, m(A), 0) == []          # another port
    p.apply(p.hosts.flow_removed(1, Table.ETH_SRC, ck, 1, m(A), 400 * SEC))
    dev = p.st.devices[m(A)]
    assert not dev.located and dev.last_ns == 100 * SEC                          # last used 300 s before
    assert all(m(A) not in sw.fwd for sw in p.st.switches.values())
    assert sorted(p.net.inject(3, 1, udp(C, A)).received) == [(1, 1), (1, 2), (2, 1), (3, 3)]   # flooded


def test_port_down_unlocates_only_the_hosts_on_that_port():
    p = Parts()
    p.learn(A, 1, 1)
    p.learn(B, 1, 2)
    out = p.apply(p.hosts.port_down(1, 1))
    assert {i.match.eth_src or i.match.eth_dst for i in out} == {m(A)}        # A's ETH_SRC and ETH_DST entries
    assert not p.st.devices[m(A)].located and p.st.devices[m(B)].located
    assert p.net.inject(1, 3, udp(C, B)).received == [(1, 2)]
    assert sorted(p.net.inject(1, 3, udp(C, A)).received) == [(1, 1), (1, 2)]          # flooded


def test_a_host_learned_on_what_becomes_a_link_is_forgotten():
    p = Parts(dpids=(1, 2))
    p.learn(A, 1, 3)
    p.net.link((1, 3), (2, 3))
    for pr in p.topo.probes(1, [3]):
        p.topo.lldp_in(2, 3, pr.data, 0)
    p.apply(p.topo.sync() + p.hosts.resync())
    assert not p.st.devices[m(A)].located
    assert not [f for f in p.net.switches[1].entries(Table.ETH_SRC) if f.match.eth_src == m(A)]


# ------------------------------------------------------------------ caps (bounded learning)


def capped(**kw):
    p = Parts.__new__(Parts)
    p.st = State(Settings(**kw))
    p.topo = TopologyManager(p.st)
    p.synced = []
    p.hosts = HostManager(p.st, p.topo, lambda dev: p.synced.append(dev.mac) or [])
    p.net = FakeNetwork()
    p.net.add_switch(1)
    p.net.apply(p.topo.switch_added(1, [1, 2, 3, 4]))
    p.topo.changed()
    p.apply(p.topo.sync())
    return p


def learn_copies(d) -> int:
    return sum(1 for q in d.packet_ins if (q[2] >> 56) == CookieKind.LEARN)


def test_a_port_at_its_cap_forwards_new_macs_without_learning_them_and_stops_copying_for_a_while():
    p = capped(max_hosts_per_port=2, learn_ban_timeout=30)
    macs = [f"02:00:00:00:01:{i:02x}" for i in range(6)]
    p.learn(macs[0], 1, 1)
    p.learn(macs[1], 1, 1)
    out = p.learn(macs[2], 1, 1)                                   # the third on port 1
    assert m(macs[2]) not in p.st.devices and p.st.counters["learn_refused_port"] == 1
    assert [(i.table, i.priority, i.match.in_port) for i in out] == [(Table.ETH_SRC, 50, 1)]   # the ban
    assert p.learn(macs[3], 1, 1) == [] and p.st.counters["learn_refused_port"] == 2          # banned already
    d = p.net.inject(1, 1, udp(macs[4], macs[0]))                 # to a host on the same port: not sent back
    assert learn_copies(d) == 0 and d.received == []
    d = p.net.inject(1, 1, udp(macs[4], B))
    assert learn_copies(d) == 0 and sorted(d.received) == [(1, 2), (1, 3), (1, 4)]   # flooded, not copied
    d = p.net.inject(1, 2, udp(B, macs[0]))                        # other ports still learn
    assert learn_copies(d) == 1 and d.received == [(1, 1)]
    p.learn(B, 1, 2)
    assert m(B) in p.st.devices
    assert p.apply(p.hosts.lift_bans(29 * SEC)) == []              # the ban lasts 30 s
    out = p.apply(p.hosts.lift_bans(31 * SEC))
    assert len(out) == 1 and learn_copies(p.net.inject(1, 1, udp(macs[5], B))) == 1


def test_a_switch_at_its_cap_stops_learning_on_every_port():
    p = capped(max_hosts_per_switch=3, max_hosts_per_port=10)
    for i, port in enumerate((1, 2, 3)):
        p.learn(f"02:00:00:00:02:{i:02x}", 1, port)
    out = p.learn("02:00:00:00:02:09", 1, 4)
    assert p.st.counters["learn_refused_switch"] == 1 and len(p.st.devices) == 3
    assert [(i.priority, i.match) for i in out] == [(40, type(out[0].match)())]   # one switch-wide ban
    for port in (1, 4):
        assert learn_copies(p.net.inject(1, port, udp("02:00:00:00:02:0a", B))) == 0
    assert learn_copies(p.net.inject(1, 1, udp("02:00:00:00:02:00", B))) == 0   # learned hosts pass as before


def test_known_devices_gateways_and_pinned_macs_are_never_refused():
    from controller_app.policy import parse_policy
    p = capped(max_hosts_per_port=1, gateways=(m("02:00:00:00:00:01"),))
    p.st.policy = parse_policy('overrides:\n  "02:00:00:00:00:0c": {action: block}\n', "p.yaml")
    p.learn(A, 1, 1)
    p.learn("02:00:00:00:00:01", 1, 1)                             # the gateway
    p.learn(C, 1, 1)                                               # pinned by the policy
    p.learn(B, 1, 2)
    p.learn(B, 1, 1)                                               # a known device moving onto a full port
    assert {mac for mac in p.st.port_hosts[(1, 1)]} == {m(A), m("02:00:00:00:00:01"), m(C), m(B)}
    assert p.st.counters["learn_refused_port"] == 0 and p.st.port_hosts.get((1, 2)) is None
    assert p.st.switch_hosts[1] == 4


def test_port_down_lifts_nothing_but_what_it_touches_and_counts_stay_right():
    p = capped(max_hosts_per_port=5)
    for i in range(3):
        p.learn(f"02:00:00:00:03:{i:02x}", 1, 1)
    p.learn(B, 1, 2)
    out = p.apply(p.hosts.port_down(1, 2))
    assert {i.match.eth_src or i.match.eth_dst for i in out} == {m(B)}
    assert len(p.st.port_hosts[(1, 1)]) == 3 and p.st.devices[m(B)].attached     # still counted where it was
