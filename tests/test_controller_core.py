"""The controller core against fake flow tables: forwarding, mirroring, policies, reload,
unknown devices, overrides, reconnection, several switches."""

from __future__ import annotations

import pytest

from controller_app.core import Settings
from testing.fakeflowtable import SwitchError
from controller_app.intents import CookieKind, FlowAdd, Match, MeterAdd, OFPP_CONTROLLER, Table, cookie_kind
from controller_app.policy import parse_policy
from ctl_harness import (A, B, C, CONFIRMED, D, GW, PROVISIONAL, SEC, UNKNOWN, FakeEngine, Harness, arp, m, tcp,
                         udp)


def policy(text: str):
    return parse_policy(text, "test.yaml")


def mirror_copies(d) -> list:
    return [p for p in d.packet_ins if cookie_kind(p[2]) == CookieKind.MIRROR]


def learned(h, *pairs) -> None:
    """Make hosts known: each (mac, port) sends an ARP request from its port on switch 1."""
    for mac, port in pairs:
        h.send(1, port, arp(mac))


# ------------------------------------------------------------------ forwarding


def test_learning_switch_floods_unknown_then_forwards_to_the_learned_port():
    h = Harness()
    h.connect(1, [1, 2, 3])
    d = h.send(1, 1, arp(A))
    assert sorted(d.received) == [(1, 2), (1, 3)]                  # flooded, never back out of port 1
    d = h.send(1, 2, udp(B, A))
    assert d.received == [(1, 1)]                                  # A was learned at port 1
    d = h.send(1, 1, udp(A, B))
    assert d.received == [(1, 2)]
    d = h.send(1, 1, udp(A, B))
    assert not [p for p in d.packet_ins if cookie_kind(p[2]) == CookieKind.LEARN]   # no second learning copy
    d = h.send(1, 3, udp(C, "02:00:00:00:00:ee"))                  # unknown destination: flood
    assert sorted(d.received) == [(1, 1), (1, 2)]


def test_host_that_moves_is_relearned_and_forwarded_to_its_new_port():
    h = Harness()
    h.connect(1, [1, 2, 3])
    learned(h, (A, 1), (B, 2))
    assert h.send(1, 2, udp(B, A)).received == [(1, 1)]
    h.send(1, 3, arp(A))                                           # A now on port 3
    assert h.send(1, 2, udp(B, A)).received == [(1, 3)]
    assert all(f.match.in_port != 1 for f in h.sw(1).entries(Table.ETH_SRC) if f.match.eth_src == m(A))


def test_idle_timeout_removal_forgets_the_host():
    h = Harness()
    h.connect(1, [1, 2, 3])
    learned(h, (A, 1), (B, 2))
    entry = [f for f in h.sw(1).entries(Table.ETH_SRC) if f.match.eth_src == m(A)][0]
    assert entry.idle_timeout == h.core.settings.l2_idle_timeout and entry.notify_removed
    h.run(h.core.flow_removed(1, Table.ETH_SRC, entry.cookie, 1, m(A), h.ns))
    assert sorted(h.send(1, 2, udp(B, A)).received) == [(1, 1), (1, 3)]   # flooded again


# ------------------------------------------------------------------ mirroring


def test_learning_device_is_mirrored_both_ways_truncated_with_wire_length():
    h = Harness()
    h.connect(1, [1, 2])
    learned(h, (A, 1), (GW, 2))
    h.core.settings.gateways = ()
    d = h.send(1, 1, udp(A, GW, "52.1.2.3", size=600))
    copies = mirror_copies(d)
    assert len(copies) == 1 and len(copies[0][5]) == 128 and copies[0][3] == 14 + 20 + 8 + 600
    assert d.received == [(1, 2)]                                  # the packet itself is forwarded
    d = h.send(1, 2, udp(GW, A, src_ip="52.1.2.3", size=50))
    assert len(mirror_copies(d)) == 1                              # received packets too
    buf = h.core.learner.packets(m(A))     # mirroring starts after the packet that taught us A
    assert len(buf) == 2 and buf.wire_len.tolist() == [642, 92] and buf.cap_len.tolist() == [128, 92]


def test_gateway_is_forwarded_but_never_mirrored():
    h = Harness(settings=Settings(gateways=(m(GW),)))
    h.connect(1, [1, 2])
    learned(h, (GW, 2), (A, 1))
    d = h.send(1, 2, udp(GW, B, size=10))
    assert not mirror_copies(d)
    assert m(GW) not in h.core.learner.buffers and not h.core.devices[m(GW)].mirroring


def test_packet_between_two_learning_devices_is_in_both_buffers_once():
    h = Harness()
    h.connect(1, [1, 2])
    learned(h, (A, 1), (B, 2))
    n_a, n_b = len(h.core.learner.packets(m(A))), len(h.core.learner.packets(m(B)))
    d = h.send(1, 1, udp(A, B))
    assert len(mirror_copies(d)) == 1
    assert len(h.core.learner.packets(m(A))) == n_a + 1 and len(h.core.learner.packets(m(B))) == n_b + 1


def test_mirror_meter_limits_copies_but_not_forwarding():
    h = Harness(settings=Settings(mirror_rate_pps=50, mirror_burst=20))
    h.connect(1, [1, 2])
    learned(h, (A, 1), (B, 2))
    copies = delivered = 0
    for _ in range(200):                                           # 200 packets in the same instant
        d = h.send(1, 1, udp(A, B))
        copies += len(mirror_copies(d))
        delivered += len(d.received)
    assert delivered == 200
    assert copies == 20                                            # the burst
    h.now += 0.2                                                   # 0.2 s later: 10 more tokens
    assert sum(len(mirror_copies(h.send(1, 1, udp(A, B)))) for _ in range(200)) == 10
    h.now += 5.0                                                   # refill stops at the burst
    assert sum(len(mirror_copies(h.send(1, 1, udp(A, B)))) for _ in range(200)) == 20


def test_confirmed_decision_stops_mirroring_and_a_recheck_resumes_it():
    s = Settings(decide_interval=10, decide_min_packets=3, recheck_interval=3600, recheck_window=600)
    eng = FakeEngine({A: ("plug", 0.95, CONFIRMED)}, min_packets=3)
    h = Harness(settings=s, engine=eng)
    h.connect(1, [1, 2])
    learned(h, (A, 1), (B, 2))
    for _ in range(5):
        h.send(1, 1, udp(A, B))
    h.tick(1)
    assert m(A) in [c[0] for c in eng.calls]
    dev = h.core.devices[m(A)]
    assert dev.stage == CONFIRMED and not dev.mirroring
    assert m(A) not in h.core.learner.buffers                     # buffers dropped
    assert not [f for f in h.sw(1).entries(Table.MIRROR) if m(A) in (f.match.eth_src, f.match.eth_dst)]
    assert dev.mirror_meter not in h.sw(1).meters
    d = h.send(1, 1, udp(A, B))                                    # B is still learning: its copy only
    assert [c[2] & 0xFFFFFFFFFFFF for c in mirror_copies(d)] == [m(B)]
    assert m(A) not in h.core.learner.buffers
    h.tick(3600)                                                   # re-check: mirror again
    assert dev.mirroring
    assert [f for f in h.sw(1).entries(Table.MIRROR) if f.match.eth_src == m(A)]
    assert any(int.from_bytes(p[5][6:12], "big") == m(A) for p in mirror_copies(h.send(1, 1, udp(A, B))))


def test_thin_evidence_answers_are_counted_until_a_decision():
    """The engine's "not enough evidence yet" (None) leaves the device learning and undecided,
    and is counted on its record, so that an operator (and the end-to-end tests) can tell a
    device the engine was asked about from one it never was; a decision resets the count."""
    s = Settings(decide_interval=10, decide_min_packets=3)
    eng = FakeEngine({A: ("plug", 0.7, PROVISIONAL)}, min_packets=6)
    h = Harness(settings=s, engine=eng)
    h.connect(1, [1, 2])
    learned(h, (A, 1), (B, 2))
    for _ in range(3):
        h.send(1, 1, udp(A, B))
    h.tick(11)
    dev = h.core.devices[m(A)]
    assert m(A) in [c[0] for c in eng.calls]
    assert dev.category is None and dev.mirroring and dev.to_record()["thin_answers"] == 1
    for _ in range(3):
        h.send(1, 1, udp(A, B))
    h.tick(11)
    assert dev.category == "plug" and dev.to_record()["thin_answers"] == 0


def test_time_scale_stretches_what_the_classifier_sees_and_nothing_else():
    """``time_scale`` K (replays compressed K times): mirrored packets' timestamps and the
    decision's "now" become t0 + (t - t0) * K, t0 the first mirrored packet; the device's
    last-seen time, the decision interval and the inventory stay in real time."""
    s = Settings(decide_interval=5, decide_min_packets=3, time_scale=60.0)
    eng = FakeEngine({}, min_packets=10**9)        # never decides: the requests are what matter
    h = Harness(settings=s, engine=eng)
    h.connect(1, [1, 2])
    learned(h, (A, 1), (B, 2))
    t0 = h.ns
    for i in range(4):                             # one packet a second, real time
        h.send(1, 1, udp(A, B))
        h.now += 1.0
    pk = h.core.learner.packets(m(A))
    assert pk.ts_ns.tolist() == [t0 + 60 * i * SEC for i in range(4)]        # a minute apart for the classifier
    dev = h.core.devices[m(A)]
    assert dev.last_ns == t0 + 3 * SEC                                        # real time
    h.tick(0.5)                                    # now = t0 + 4.5 s real
    calls = [c for c in eng.calls if c[0] == m(A)]
    assert calls and calls[-1][2] == t0 + int(4.5 * 60 * SEC)
    n = len(eng.calls)
    h.send(1, 1, udp(A, B))
    h.tick(1.0)                                    # 1 s real later: within the (real) decision interval
    assert len(eng.calls) == n


def test_time_scale_one_leaves_times_alone():
    h = Harness(settings=Settings(decide_min_packets=1), engine=FakeEngine({}, min_packets=10**9))
    h.connect(1, [1, 2])
    learned(h, (A, 1), (B, 2))
    t0 = h.ns
    h.send(1, 1, udp(A, B))
    h.now += 2.0
    h.send(1, 1, udp(A, B))
    assert h.core.learner.packets(m(A)).ts_ns.tolist() == [t0, t0 + 2 * SEC]
    assert h.core.classifier_time(t0 + 7) == t0 + 7


def test_recheck_window_ends_mirroring_without_a_new_decision():
    s = Settings(recheck_interval=100, recheck_window=50, decide_min_packets=1000)
    h = Harness(settings=s, engine=FakeEngine({A: ("plug", 0.9, CONFIRMED)}, min_packets=0))
    h.connect(1, [1, 2])
    learned(h, (A, 1))
    h.run(h.core.decision_made(m(A), h.engine.decide(h.core.learner.packets(m(A)), m(A)), h.ns))
    dev = h.core.devices[m(A)]
    h.tick(101)
    assert dev.mirroring
    h.tick(51)
    assert not dev.mirroring and dev.next_check_ns is not None


# ------------------------------------------------------------------ policies

POLICY = """
enforce_on: confirmed
min_confidence: 0.6
lan: [192.168.0.0/16]
default: allow
unknown: {rate_limit_kbps: 100}
categories:
  camera: block
  plug: {rate_limit_kbps: 64}
  hub: {allow_pools: [vendor, 52.94.0.0/16]}
  speaker: {priority: 2, dscp: 46}
"""


def decided(category: str, conf: float = 0.9, stage: str = CONFIRMED, text: str = POLICY, resolver=None):
    h = Harness(policy=policy(text), engine=FakeEngine({A: (category, conf, stage)}), resolver=resolver)
    h.connect(1, [1, 2])
    learned(h, (A, 1), (GW, 2))
    for _ in range(h.core.settings.decide_min_packets):
        h.send(1, 1, udp(A, GW, "192.168.1.1", size=10))
    h.tick(h.core.settings.decide_interval + 1)
    for _ in range(5):                    # an unknown answer is not final while the identity probes last
        if h.core.devices[m(A)].category is not None:
            break
        h.tick(h.core.settings.decide_interval)
    assert h.core.devices[m(A)].category == category
    return h


def test_block_drops_both_directions_but_keeps_other_devices():
    h = decided("camera")
    assert h.send(1, 1, udp(A, GW, "8.8.8.8")).received == []
    assert h.send(1, 2, udp(GW, A, src_ip="8.8.8.8")).received == []
    assert h.send(1, 2, udp(GW, B, size=10)).received != []       # B (unknown yet) unaffected


def test_blocked_device_still_mirrored_while_learning():
    text = POLICY.replace("enforce_on: confirmed", "enforce_on: provisional")
    h = decided("camera", stage=PROVISIONAL, text=text)
    d = h.send(1, 1, udp(A, GW, "8.8.8.8"))
    assert d.received == [] and len(mirror_copies(d)) == 1


def test_rate_limit_meter_drops_excess_kbps():
    h = decided("plug")
    meter = [f.meter for f in h.sw(1).entries(Table.POLICY_SRC) if f.match.eth_src == m(A)]
    assert meter and meter[0] in h.sw(1).meters and h.sw(1).meters[meter[0]].spec.rate == 64
    ok = sum(len(h.send(1, 1, udp(A, GW, "8.8.8.8", size=1000)).received) for _ in range(50))
    assert 0 < ok < 50                                             # burst passes, the rest is dropped
    h.now += 10.0
    assert h.send(1, 1, udp(A, GW, "8.8.8.8", size=1000)).received == [(1, 2)]


def test_allow_pools_allows_listed_prefixes_resolved_pools_and_lan_only():
    h = decided("hub", resolver=lambda name, mac: ["34.223.255.0/24"] if name == "vendor" else [])
    assert h.send(1, 1, udp(A, GW, "52.94.236.248")).received == [(1, 2)]      # listed CIDR
    assert h.send(1, 1, udp(A, GW, "34.223.255.1")).received == [(1, 2)]       # resolved pool
    assert h.send(1, 1, udp(A, GW, "192.168.1.1")).received == [(1, 2)]        # LAN
    assert h.send(1, 1, udp(A, GW, "8.8.8.8")).received == []                  # elsewhere
    assert h.send(1, 2, udp(GW, A, src_ip="8.8.8.8")).received == []           # and back
    assert h.send(1, 2, udp(GW, A, src_ip="52.94.1.1")).received == [(1, 1)]
    assert h.send(1, 1, arp(A)).received == [(1, 2)]                           # non-IP allowed


def test_allow_pools_with_unresolved_pool_allows_only_lan_and_cidrs():
    h = decided("hub")
    assert h.send(1, 1, udp(A, GW, "34.223.255.1")).received == []
    assert h.send(1, 1, udp(A, GW, "52.94.0.1")).received == [(1, 2)]


def test_priority_sets_queue_and_dscp():
    h = decided("speaker")
    d = h.send(1, 1, udp(A, GW, "8.8.8.8"))
    assert d.results[0][2].outputs == [(2, 2, 46)]
    d = h.send(1, 1, arp(A))
    assert d.results[0][2].outputs == [(2, 2, None)]               # queue, no DSCP on ARP


def test_default_action_for_unlisted_category_allows():
    h = decided("light")
    assert h.send(1, 1, udp(A, GW, "8.8.8.8")).received == [(1, 2)]
    assert [f for f in h.sw(1).entries(Table.POLICY_SRC) if f.match.eth_src == m(A)]


def test_unknown_device_gets_the_unknown_action():
    h = decided("unknown", 0.3, UNKNOWN)
    flows = [f for f in h.sw(1).entries(Table.POLICY_SRC) if f.match.eth_src == m(A)]
    assert flows and flows[0].meter is not None and h.sw(1).meters[flows[0].meter].spec.rate == 100


def test_low_confidence_final_decision_enforces_unknown_action():
    h = decided("camera", conf=0.4)
    assert h.send(1, 1, udp(A, GW, "8.8.8.8", size=10)).received == [(1, 2)]   # not blocked ...
    flows = [f for f in h.sw(1).entries(Table.POLICY_SRC) if f.match.eth_src == m(A)]
    assert h.sw(1).meters[flows[0].meter].spec.rate == 100                     # ... but rate-limited


def test_provisional_decision_does_not_enforce_when_policy_waits_for_confirmed():
    h = decided("camera", stage=PROVISIONAL)
    assert h.send(1, 1, udp(A, GW, "8.8.8.8")).received == [(1, 2)]
    assert h.core.devices[m(A)].mirroring


def test_override_pins_category_and_action_without_mirroring():
    text = POLICY + f"""
overrides:
  "{A}": {{category: camera}}
  "{B}": {{action: {{rate_limit_kbps: 10}}}}
"""
    h = Harness(policy=policy(text))
    h.connect(1, [1, 2, 3])
    learned(h, (A, 1), (B, 2), (GW, 3))
    assert h.send(1, 1, udp(A, GW, "8.8.8.8")).received == []
    assert not h.core.devices[m(A)].mirroring and not h.core.devices[m(B)].mirroring
    flows = [f for f in h.sw(1).entries(Table.POLICY_SRC) if f.match.eth_src == m(B)]
    assert h.sw(1).meters[flows[0].meter].spec.rate == 10


def test_reload_replaces_rules_and_removes_stale_ones():
    h = decided("hub", resolver=lambda name, mac: ["34.223.255.0/24"])
    before = {(f.table, f.priority, f.match) for f in h.sw(1).entries() if cookie_kind(f.cookie) == CookieKind.POLICY}
    assert len(before) > 4
    h.run(h.core.policy_reloaded(policy(POLICY.replace("hub: {allow_pools: [vendor, 52.94.0.0/16]}", "hub: block")),
                                 h.ns))
    after = [f for f in h.sw(1).entries() if cookie_kind(f.cookie) == CookieKind.POLICY]
    assert {(f.table, f.priority) for f in after} == {(Table.POLICY_SRC, 100), (Table.POLICY_DST, 100)}
    assert all(f.goto == Table.MIRROR for f in after)
    assert h.send(1, 1, udp(A, GW, "52.94.236.248")).received == []
    # and back to rate limiting: a meter appears; then to plain allow: it goes again
    h.run(h.core.policy_reloaded(policy(POLICY.replace("hub: {allow_pools: [vendor, 52.94.0.0/16]}",
                                                       "hub: {rate_limit_kbps: 300}")), h.ns))
    dev = h.core.devices[m(A)]
    assert h.sw(1).meters[dev.rate_meter].spec.rate == 300
    h.run(h.core.policy_reloaded(policy(POLICY.replace("hub: {allow_pools: [vendor, 52.94.0.0/16]}",
                                                       "hub: allow")), h.ns))
    assert dev.rate_meter not in h.sw(1).meters
    assert h.send(1, 1, udp(A, GW, "8.8.8.8")).received == [(1, 2)]


def test_reload_that_changes_only_the_lan_moves_pool_rules():
    h = decided("hub")
    assert h.send(1, 1, udp(A, GW, "10.1.2.3")).received == []
    h.run(h.core.policy_reloaded(policy(POLICY.replace("lan: [192.168.0.0/16]", "lan: [10.0.0.0/8]")), h.ns))
    assert h.send(1, 1, udp(A, GW, "10.1.2.3")).received == [(1, 2)]
    assert h.send(1, 1, udp(A, GW, "192.168.1.1")).received == []
    lan_rules = [f for f in h.sw(1).entries(Table.POLICY_SRC) if f.match.ip_dst is not None
                 and str(f.match.ip_dst) == "192.168.0.0/16"]
    assert lan_rules == []


# ------------------------------------------------------------------ switches


def test_switch_reconnect_gets_its_rules_back():
    h = decided("camera")
    def snapshot():
        return sorted((f.table, f.priority, repr(f.match), f.cookie) for f in h.sw(1).entries())
    before = snapshot()
    h.disconnect(1)
    h.net.switches[1] = type(h.sw(1))(1)                           # a switch that lost everything
    h.connect(1, [1, 2])
    after = snapshot()
    policy_before = [e for e in before if cookie_kind(e[3]) == CookieKind.POLICY]
    assert policy_before and policy_before == [e for e in after if cookie_kind(e[3]) == CookieKind.POLICY]
    assert h.send(1, 1, udp(A, GW, "8.8.8.8")).received == []       # still blocked


def test_restored_inventory_rules_installed_when_switch_connects():
    """A device the inventory saw recently (within host_timeout) is enforced as soon as its
    switch connects; one absent for longer waits until it is seen (tests/test_core_decisions.py)."""
    h = Harness(policy=policy(POLICY))
    h.core.restore([{"mac": m(A), "dpid": 1, "port": 1, "category": "camera", "confidence": 0.9,
                     "stage": CONFIRMED, "model": "x", "first_seen_ns": 1, "last_seen_ns": h.ns - SEC}], h.ns)
    h.connect(1, [1, 2])
    assert [f for f in h.sw(1).entries(Table.POLICY_SRC) if f.match.eth_src == m(A)]
    assert not h.core.devices[m(A)].mirroring
    learned(h, (GW, 2))
    assert h.send(1, 1, udp(A, GW, "8.8.8.8")).received == []


def test_port_down_forgets_hosts_on_it():
    h = Harness()
    h.connect(1, [1, 2, 3])
    learned(h, (A, 1), (B, 2))
    h.run(h.core.port_changed(1, 1, False, h.ns))
    assert not h.core.devices[m(A)].located
    assert h.send(1, 2, udp(B, A)).received == [(1, 3)]             # flooded on the ports left
    assert all(f.match.in_port != 1 for f in h.sw(1).entries(Table.ETH_DST))


def test_every_flow_the_core_installs_is_accepted_by_the_fake_switch():
    """The fake switch refuses what a real one would (unknown meters, bad gotos, DSCP without IP);
    moving one device through every action must raise nothing and leave the last action in force."""
    h = decided("hub", resolver=lambda name, mac: ["34.223.255.0/24"])
    for cat in ("camera", "plug", "speaker", "light", "hub", "plug"):
        h.run(h.core.policy_reloaded(policy(POLICY + f"overrides:\n  \"{A}\": {{category: {cat}}}\n"), h.ns))
        assert h.core.devices[m(A)].policy_action == h.core.policy.action_for(cat)
    assert h.sw(1).meters[h.core.devices[m(A)].rate_meter].spec.rate == 64
    with pytest.raises(SwitchError):
        h.sw(1).apply_one(FlowAdd(1, Table.POLICY_SRC, 5, Match(eth_src=m(B)), meter=999))
    with pytest.raises(SwitchError):
        h.sw(1).apply_one(FlowAdd(1, Table.ETH_DST, 5, Match(eth_src=m(B)), goto=Table.POLICY_DST))


# ------------------------------------------------------------------ several switches


def triangle():
    """Three switches in a loop; hosts A on s1:1, B on s2:1, C on s3:1 (links on ports 2, 3)."""
    h = Harness()
    for dp in (1, 2, 3):
        h.net.add_switch(dp)
    h.net.link((1, 2), (2, 3))
    h.net.link((2, 2), (3, 3))
    h.net.link((3, 2), (1, 3))
    for dp in (1, 2, 3):
        h.connect(dp, [1, 2, 3])
    h.tick(h.core.settings.lldp_interval + 0.1)
    return h


def test_links_discovered_and_broadcast_does_not_loop():
    h = triangle()
    assert len(h.core.links) == 6
    d = h.send(1, 1, arp(A))                                       # a loop would raise in the fake network
    assert sorted(d.received) == [(2, 1), (3, 1)]


def test_unicast_across_switches_follows_a_shortest_path():
    h = triangle()
    for dp, mac in ((1, A), (2, B), (3, C)):
        h.send(dp, 1, arp(mac))
    d = h.send(1, 1, udp(A, C))
    assert d.received == [(3, 1)]
    assert [r[0] for r in d.results] == [1, 3]                     # direct link, two switches
    d = h.send(2, 1, udp(B, A))
    assert d.received == [(1, 1)] and len(d.results) == 2


def test_mirror_copy_taken_once_at_the_device_edge_switch():
    h = triangle()
    for dp, mac in ((1, A), (2, B), (3, C)):
        h.send(dp, 1, arp(mac))
    na, nc = len(h.core.learner.packets(m(A))), len(h.core.learner.packets(m(C)))
    d = h.send(1, 1, udp(A, C))
    assert len(mirror_copies(d)) == 2                              # one at s1 (A's), one at s3 (C's)
    assert len(h.core.learner.packets(m(A))) == na + 1
    assert len(h.core.learner.packets(m(C))) == nc + 1


def test_link_failure_reroutes():
    h = triangle()
    for dp, mac in ((1, A), (2, B), (3, C)):
        h.send(dp, 1, arp(mac))
    h.net.unlink((1, 3))
    h.run(h.core.port_changed(1, 3, False, h.ns))
    h.run(h.core.port_changed(3, 2, False, h.ns))
    d = h.send(1, 1, udp(A, C))
    assert d.received == [(3, 1)] and [r[0] for r in d.results] == [1, 2, 3]
    assert sorted(h.send(1, 1, arp(A)).received) == [(2, 1), (3, 1)]


def test_policy_rules_only_on_the_edge_switch():
    h = triangle()
    for dp, mac in ((1, A), (2, B), (3, C)):
        h.send(dp, 1, arp(mac))
    h.run(h.core.policy_reloaded(policy(f"overrides:\n  \"{A}\": {{action: block}}\n"), h.ns))
    holders = [dp for dp in (1, 2, 3) if any(cookie_kind(f.cookie) == CookieKind.POLICY for f in h.sw(dp).entries())]
    assert holders == [1]
    assert h.send(2, 1, udp(B, A)).received == []
    assert h.send(2, 1, udp(B, C)).received == [(3, 1)]


def test_meters_precede_the_flows_that_use_them():
    h = decided("plug")
    seen = set()
    for i in h.log:
        if isinstance(i, MeterAdd):
            seen.add((i.dpid, i.meter_id))
        if isinstance(i, FlowAdd) and i.meter is not None:
            assert (i.dpid, i.meter) in seen
    assert any(isinstance(i, FlowAdd) and OFPP_CONTROLLER in [a.port for a in i.actions if hasattr(a, "port")]
               for i in h.log)
