"""A device's own claims may only tighten its treatment: a decision that rests on its identity
records alone (only the identity voter vouches) is enforced with the intersection of its
category's action and the ``unknown`` action, unless the policy trusts the category's claims
(``trust_claims``); once behaviour agrees, the category's own action applies."""

from __future__ import annotations

from classifier.engine.decision import Decision
from controller_app.core import Settings
from controller_app.intents import SetDscp, SetQueue
from controller_app.pipeline import PRIO_DEVICE, PRIO_IP_MARK, Table
from controller_app.policy import parse_policy
from controller_app.web import device_records
from ctl_harness import A, CONFIRMED, GW, PROVISIONAL, FakeEngine, Harness, m, udp

POLICY = """
enforce_on: confirmed
min_confidence: 0.5
unknown: {rate_limit_kbps: 256}
categories:
  camera: {priority: 1, dscp: 46}
"""
CLAIMS = ("identity",)
AGREED = ("identity", "session")


def decided(vouching=CLAIMS, text=POLICY, stage=CONFIRMED, category="camera") -> Harness:
    h = Harness(policy=parse_policy(text, "p.yaml"), settings=Settings(gateways=(m(GW),), identity_probes=0),
                engine=FakeEngine({A: (category, 0.97, stage, vouching)}))
    h.connect(1, [1, 2])
    h.send(1, 2, udp(GW, A))
    for _ in range(11):
        h.send(1, 1, udp(A, GW))
    h.tick(31)
    assert h.core.devices[m(A)].category == category
    return h


def src_entries(h):
    return [f for f in h.sw(1).entries(Table.POLICY_SRC) if f.match.eth_src == m(A)]


def record(h) -> dict:
    devices, _ = device_records(h.core, h.core.settings)
    return next(d for d in devices if d["mac"] == A)


def test_a_camera_on_its_claims_alone_gets_the_unknown_rate_limit_and_no_priority():
    h = decided()
    dev = h.core.devices[m(A)]
    assert dev.claims_only
    (entry,) = [f for f in src_entries(h) if f.priority == PRIO_DEVICE]
    assert entry.meter == dev.rate_meter and h.sw(1).meters[dev.rate_meter].spec.rate == 256
    assert not [a for f in src_entries(h) for a in f.actions if isinstance(a, (SetQueue, SetDscp))]
    assert not [f for f in src_entries(h) if f.priority == PRIO_IP_MARK]
    ok = sum(len(h.send(1, 1, udp(A, GW, "8.8.8.8", size=1000)).received) for _ in range(100))
    assert 0 < ok < 100                                                # held to the unknown rate
    r = record(h)
    assert r["claims_only"] is True and r["action_tightened"] is True
    assert r["action_basis"] == "intersection of camera and unknown" and r["enforced"] == "rate_limit_kbps=256"


def test_behaviour_agreeing_gives_the_categorys_own_action():
    h = decided()
    dev = h.core.devices[m(A)]
    meter = dev.rate_meter
    h.run(h.core.decision_made(m(A), Decision("camera", 0.98, CONFIRMED, "v1", vouching=AGREED), h.ns))
    assert not dev.claims_only and meter not in h.sw(1).meters
    (entry,) = [f for f in src_entries(h) if f.priority == PRIO_DEVICE]
    assert entry.meter is None and SetQueue(1) in entry.actions
    assert any(SetDscp(46) in f.actions for f in src_entries(h) if f.priority == PRIO_IP_MARK)
    r = record(h)
    assert (r["claims_only"], r["action_tightened"], r["action_basis"]) == (False, False, "camera")
    assert r["enforced"] == "priority=1 dscp=46"
    # a decision on the same evidence from the start is enforced the same way
    assert record(decided(AGREED))["enforced"] == "priority=1 dscp=46"


def test_a_recheck_answer_that_enforces_nothing_keeps_the_tightening_in_force():
    h = decided()
    dev = h.core.devices[m(A)]
    h.run(h.core.decision_made(m(A), Decision("camera", 0.9, PROVISIONAL, "v1", vouching=AGREED), h.ns))
    assert record(h)["enforced"] == "rate_limit_kbps=256" and record(h)["action_tightened"]
    assert dev.enforced == ("camera", 0.97, CONFIRMED, True)


def test_trusted_claims_get_the_categorys_action_and_a_reload_moves_the_rules():
    trusted = POLICY + "trust_claims: [camera]\n"
    r = record(decided(text=trusted))
    assert (r["claims_only"], r["action_tightened"]) == (True, False)
    assert r["action_basis"] == "camera (claims trusted: trust_claims)" and r["enforced"] == "priority=1 dscp=46"
    h = decided()
    dev = h.core.devices[m(A)]
    h.run(h.core.policy_reloaded(parse_policy(trusted, "p.yaml"), h.ns))
    assert record(h)["enforced"] == "priority=1 dscp=46" and dev.rate_meter not in h.sw(1).meters
    h.run(h.core.policy_reloaded(parse_policy(POLICY, "p.yaml"), h.ns))
    assert record(h)["enforced"] == "rate_limit_kbps=256" and dev.rate_meter in h.sw(1).meters


def test_claims_block_and_pools_stay_strict():
    text = ("enforce_on: confirmed\nunknown: {allow_pools: [52.0.0.0/8], rate_limit_kbps: 512}\n"
            "categories:\n  camera: {allow_pools: [52.94.0.0/16, 34.0.0.0/8], rate_limit_kbps: 1024}\n  plug: block\n")
    assert record(decided(text=text))["enforced"] == "allow_pools=[52.94.0.0/16] rate_limit_kbps=512"
    assert record(decided(text=text, category="plug"))["enforced"] == "block"


def test_a_restored_claims_only_decision_stays_tightened():
    h = Harness(policy=parse_policy(POLICY, "p.yaml"), settings=Settings(identity_probes=0))
    h.core.restore([{"mac": m(A), "dpid": 1, "port": 1, "first_seen_ns": h.ns, "last_seen_ns": h.ns,
                     "category": "camera", "confidence": 0.97, "stage": CONFIRMED, "model": "v1",
                     "claims_only": True}], h.ns)
    h.connect(1, [1, 2])
    r = record(h)
    assert r["claims_only"] and r["enforced"] == "rate_limit_kbps=256" and r["action_tightened"]


def test_a_device_confirmed_on_its_claims_alone_is_re_examined_on_the_unknown_schedule():
    """Only a re-examination can show its behaviour agreeing: it comes after the unknown device's
    interval (5 min by default), not the confirmed device's 6 hours; one whose behaviour agreed
    waits the 6 hours."""
    s = Settings()
    h = decided()
    dev = h.core.devices[m(A)]
    assert not dev.mirroring
    assert (dev.next_check_ns - h.ns) / 1e9 <= s.unknown_recheck_interval
    agreed = decided(AGREED)
    dev = agreed.core.devices[m(A)]
    assert (dev.next_check_ns - agreed.ns) / 1e9 > s.unknown_recheck_interval
    assert (dev.next_check_ns - agreed.ns) / 1e9 <= s.recheck_interval
