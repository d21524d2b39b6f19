"""The policy-rules manager alone against fake flow tables: the entries of each action, the
desired action (overrides, gateways, enforced decisions), pools, diffs, reloads."""

from __future__ import annotations

from controller_app.core.rules import RulesManager, policy_flows
from controller_app.core.state import Settings, State
from controller_app.core.topology import TopologyManager
from controller_app.intents import FlowAdd, FlowDelete, MeterAdd, MeterDelete, ResolvePools
from controller_app.pipeline import CookieKind, Table, cookie_kind
from controller_app.policy import parse_policy
from testing.fakeflowtable import FakeNetwork
from ctl_harness import A, B, CONFIRMED, GW, PROVISIONAL, m, udp

POLICY = """
enforce_on: confirmed
min_confidence: 0.6
lan: [192.168.0.0/16]
unknown: {rate_limit_kbps: 100}
categories:
  camera: block
  plug: {rate_limit_kbps: 64}
  hub: {allow_pools: [vendor, 52.94.0.0/16]}
  speaker: {priority: 2, dscp: 46}
overrides:
  "02:00:00:00:00:0b": {category: camera}
"""


def build(text=POLICY, dpids=(1,)):
    st = State(Settings(), parse_policy(text, "p.yaml"))
    topo = TopologyManager(st)
    rules = RulesManager(st)
    net = FakeNetwork()
    for dp in dpids:
        net.add_switch(dp)
        net.apply(topo.switch_added(dp, [1, 2]))
    topo.changed()
    net.apply(topo.sync())
    return st, rules, net


def decided(st, mac, category, stage=CONFIRMED, conf=0.9, dpid=1):
    dev = st.devices.get(m(mac)) or st.new_device(m(mac), 0)
    st.attach(dev, dpid, 1)
    dev.category, dev.confidence, dev.stage = category, conf, stage
    enf = st.policy.enforcement(category, conf, stage)
    if enf is not None:
        dev.enforced = (category, conf, stage)
    return dev


def policy_hits(net, frame, in_port=1):
    """(table, priority) of the policy entries a frame hits on switch 1."""
    r = net.switches[1].process(frame, in_port)
    return [(t, p) for t, p, ck in r.trace if cookie_kind(ck) == CookieKind.POLICY], r


def test_block_sends_both_directions_to_the_mirror_table_only():
    st, rules, net = build()
    dev = decided(st, A, "camera")
    net.apply(rules.sync(dev))
    hits, r = policy_hits(net, udp(A, GW, "8.8.8.8"))
    assert hits == [(Table.POLICY_SRC, 100)] and r.trace[-1][0] == Table.MIRROR and r.outputs == []
    hits, r = policy_hits(net, udp(GW, A, src_ip="8.8.8.8"), in_port=2)
    assert hits == [(Table.POLICY_DST, 100)] and r.outputs == []


def test_allow_pools_entries_the_longest_prefix_wins_and_other_ip_is_denied():
    st, rules, net = build()
    dev = decided(st, A, "hub")
    out = rules.sync(dev)
    assert [i for i in out if isinstance(i, ResolvePools)] == [ResolvePools(m(A), ("vendor",))]
    assert rules.sync(dev) == []                                       # the look-up is pending: not asked twice
    net.apply(out)
    assert policy_hits(net, udp(A, GW, "52.94.1.1"))[0][0] == (Table.POLICY_SRC, 300 + 16)
    assert policy_hits(net, udp(A, GW, "192.168.1.1"))[0][0] == (Table.POLICY_SRC, 300 + 16)   # the LAN
    assert policy_hits(net, udp(A, GW, "34.223.255.1"))[0][0] == (Table.POLICY_SRC, 200)        # denied
    st.devices[m(A)].pools_pending = False
    dev2 = rules.pools_resolved(m(A), {"vendor": ["34.223.255.0/24"]})
    assert dev2 is dev and rules.pools_resolved(m(GW), {}) is None
    out = rules.sync(dev)
    assert out and all(isinstance(i, FlowAdd) for i in out)           # only additions: nothing became stale
    net.apply(out)
    assert policy_hits(net, udp(A, GW, "34.223.255.1"))[0][0] == (Table.POLICY_SRC, 300 + 24)


def test_desired_action_overrides_gateways_and_enforced_decisions():
    st, rules, net = build()
    b = st.new_device(m(B), 0)
    assert rules.desired_action(b) == st.policy.action_for("camera")    # pinned by an override
    gw = decided(st, GW, "camera")
    gw.gateway = True
    assert rules.desired_action(gw) is None
    a = decided(st, A, "plug")
    assert rules.desired_action(a).rate_limit_kbps == 64
    a.category, a.stage = "camera", PROVISIONAL                          # a provisional answer is not enforced ...
    assert rules.desired_action(a).rate_limit_kbps == 64                 # ... the confirmed one stays


def test_changing_the_rate_modifies_the_meter_and_a_move_clears_the_old_switch_first():
    st, rules, net = build(dpids=(1, 2))
    dev = decided(st, A, "plug")
    net.apply(rules.sync(dev))
    assert net.switches[1].meters[dev.rate_meter].spec.rate == 64
    rules.reloaded(parse_policy(POLICY.replace("rate_limit_kbps: 64", "rate_limit_kbps: 80"), "p.yaml"))
    out = rules.sync(dev)
    assert [type(i) for i in out] == [MeterAdd] and out[0].modify and out[0].rate == 80
    net.apply(out)
    st.attach(dev, 2, 1)
    out = rules.sync(dev)
    assert isinstance(out[0], FlowDelete) and out[0].dpid == 1 and isinstance(out[1], MeterDelete)
    net.apply(out)
    assert not [f for f in net.switches[1].entries() if cookie_kind(f.cookie) == CookieKind.POLICY]
    assert net.switches[2].meters[dev.rate_meter].spec.rate == 80
    assert policy_flows(2, m(A), dev.policy_action, st.policy.lan, (), dev.rate_meter) == \
        [f for f in net.switches[2].entries() if cookie_kind(f.cookie) == CookieKind.POLICY]


def test_reload_pins_and_unpins_learning():
    st, rules, net = build()
    a = st.new_device(m(A), 0)
    assert a.mirroring
    st.learner.buffers[m(A)] = object()
    rules.reloaded(parse_policy(POLICY + '  "02:00:00:00:00:0a": {action: allow}\n', "p.yaml"))
    assert not a.mirroring and m(A) not in st.learner.buffers
    b = st.devices.get(m(B)) or st.new_device(m(B), 0)
    assert not b.mirroring
    rules.reloaded(parse_policy(POLICY.split("overrides:")[0], "p.yaml"))
    assert a.mirroring and b.mirroring
