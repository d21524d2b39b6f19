"""The learning posture (policy key ``learning:``): the action of devices whose decision enforces
nothing yet, on the fake flow tables; ``allow_services`` (DNS, DHCP, NTP to any address, other
IP traffic only to the LAN); the default ``allow`` installing nothing, as before."""

from __future__ import annotations

import pytest

from controller_app.intents import Match
from controller_app.pipeline import CookieKind, Table, cookie_kind
from controller_app.policy import ALLOW, Action, PolicyError, intersect, load_policy, parse_policy
from ctl_harness import A, GW, PROVISIONAL, FakeEngine, Harness, arp, m, udp

STRICT = """
enforce_on: confirmed
min_confidence: 0.5
unknown: {rate_limit_kbps: 256}
learning: {allow_services: [dns, dhcp, ntp], rate_limit_kbps: 128}
categories:
  camera: block
"""


def policy_hits(h, frame, port=1):
    r = h.sw(1).process(frame, port)
    return [(t, p) for t, p, ck in r.trace if cookie_kind(ck) == CookieKind.POLICY], r


def learned(text, table=None):
    h = Harness(parse_policy(text, "p.yaml"), engine=FakeEngine(table or {}))
    h.connect(1, [1, 2])
    h.send(1, 2, arp(GW))
    h.send(1, 1, arp(A))
    return h


def test_learning_key_parses_and_is_validated():
    pol = parse_policy(STRICT, "p.yaml")
    assert pol.learning == Action(allow_services=("dns", "dhcp", "ntp"), rate_limit_kbps=128)
    assert pol.learning.describe() == "allow_services=[dns,dhcp,ntp] rate_limit_kbps=128"
    assert pol.summary()["learning"] == "allow_services=[dns,dhcp,ntp] rate_limit_kbps=128"
    assert parse_policy("default: allow\n", "p.yaml").learning == ALLOW
    with pytest.raises(PolicyError) as exc:
        parse_policy("learning: {allow_services: [dns, telnet, dns]}\n", "p.yaml")
    assert exc.value.problems == [
        "p.yaml:1:34: learning.allow_services[1]: expected one of dns, dhcp, ntp, mdns, ssdp, http, https, "
        "got 'telnet'", "p.yaml:1:42: learning.allow_services[2]: 'dns' is listed twice"]
    with pytest.raises(PolicyError) as exc:
        parse_policy("learning: blok\n", "p.yaml")
    assert "p.yaml:1:11: learning: expected 'allow', 'block' or a mapping" in exc.value.problems[0]


def test_the_shipped_strict_example_has_a_learning_posture():
    pol = load_policy("policies/example-strict.yaml")
    assert pol.learning.restricts and set(pol.learning.allow_services) >= {"dns", "dhcp", "ntp"}
    assert pol.learning.rate_limit_kbps


def test_a_learning_device_gets_the_learning_action_services_pass_the_rest_stays_on_the_lan():
    h = learned(STRICT)
    dev = h.core.devices[m(A)]
    assert dev.stage is None and dev.mirroring
    t = h.core.rules.treatment(dev)
    assert t.basis == "learning" and dev.policy_action == parse_policy(STRICT).learning
    assert h.sw(1).meters[dev.rate_meter].spec.rate == 128
    # DNS and NTP to a public address: forwarded, through the meter
    hits, r = policy_hits(h, udp(A, GW, "8.8.8.8", dport=53))
    assert hits[0] == (Table.POLICY_SRC, 250) and r.outputs
    hits, r = policy_hits(h, udp(A, GW, "162.159.200.1", dport=123))
    assert hits[0] == (Table.POLICY_SRC, 250) and r.outputs
    # the answer back from port 53
    hits, r = policy_hits(h, udp(GW, A, src_ip="8.8.8.8", sport=53, dport=40000), port=2)
    assert (Table.POLICY_DST, 250) in hits and r.outputs
    # anything else beyond the LAN: not forwarded; on the LAN: forwarded
    hits, r = policy_hits(h, udp(A, GW, "52.1.2.3", dport=443))
    assert hits == [(Table.POLICY_SRC, 200)] and not r.outputs and r.trace[-1][0] == Table.MIRROR
    hits, r = policy_hits(h, udp(A, GW, "192.168.1.1", dport=443))
    assert r.outputs


def test_the_decision_replaces_the_learning_action_and_provisional_keeps_it_under_enforce_on_confirmed():
    h = learned(STRICT, {A: ("camera", 0.9, PROVISIONAL)})
    dev = h.core.devices[m(A)]
    for i in range(12):
        h.send(1, 1, udp(A, GW, "8.8.8.8", dport=53, sport=41000 + i))
    h.tick(31)
    assert dev.stage == PROVISIONAL and h.core.rules.treatment(dev).basis == "learning"
    h.engine.table[m(A)] = ("camera", 0.9, "confirmed")
    h.send(1, 1, udp(A, GW, "8.8.8.8", dport=53))
    h.tick(31)
    assert dev.stage == "confirmed" and dev.policy_action.block
    assert m(A) not in h.sw(1).meters or dev.meter_kbps is None


def test_learning_allow_installs_nothing_as_before():
    h = learned("unknown: {rate_limit_kbps: 256}\nlearning: allow\n")
    dev = h.core.devices[m(A)]
    assert h.core.rules.treatment(dev) is None and dev.policy_action is None
    hits, r = policy_hits(h, udp(A, GW, "52.1.2.3"))
    assert hits == [] and r.outputs


def test_services_intersect_like_pools():
    dns_only = Action(allow_services=("dns", "ntp"))
    pools = Action(allow_pools=("10.9.0.0/16",))
    assert intersect(dns_only, ALLOW) == dns_only
    assert intersect(dns_only, Action(allow_services=("ntp", "dhcp"))) == Action(allow_services=("ntp",))
    both = intersect(dns_only, pools)
    assert both.restricts and both.allow_services is None and both.allow_pools == ()
    assert Match(eth_type=0x0800, ip_proto=6, tcp_dst=53).fields()["tcp_dst"] == 53
    with pytest.raises(ValueError):
        Match(eth_type=0x0800, ip_proto=17, tcp_dst=53)
