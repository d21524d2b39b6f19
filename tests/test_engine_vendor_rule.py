"""The engine's seen-vendor rule: behaviour models alone accept only devices whose MAC vendor
was among the training devices' vendors; for other vendors the identity voter must vouch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from classifier.capture.decode import read_packets
from classifier.capture.labels import CATEGORIES
from classifier.capture.packets import mac_to_int
from classifier.engine.decision import CONFIRMED, PROVISIONAL, UNKNOWN
from classifier.engine.engine import DecisionEngine, EngineConfig, EngineError, load_engine
from classifier.identity.model import IdentityModel
from classifier.identity.oui import OuiRegistry

SEEN, UNSEEN, UNREGISTERED, LOCAL = "00:17:88:00:00:01", "00:aa:bb:00:00:02", "00:cc:dd:00:00:03", "02:00:00:00:00:04"


class FixedModel:
    kind = "fixed"

    def __init__(self, classes, p):
        self.classes, self.p = classes, np.asarray(p, float)

    def predict_proba(self, inst):
        return np.tile(self.p, (len(inst), 1))

    def explain(self, inst, top=3):
        return [[(0, "lan", 1.0)] for _ in range(len(inst))]


def _p(cat, p):
    out = np.full(len(CATEGORIES), (1 - p) / (len(CATEGORIES) - 1))
    out[CATEGORIES.index(cat)] = p
    return out


@pytest.fixture(scope="module")
def plugs(tmp_path_factory):
    """Fifteen minutes of four plugs: MACs of a vendor seen in training, of another registered
    vendor, of no registered vendor, and a locally administered one."""
    from testing.synth import SynthDevice, SynthNetwork, write_network_capture
    net = SynthNetwork(devices=[SynthDevice(m, f"192.168.1.{10 + i}", "plug", f"plug {i}")
                                for i, m in enumerate((SEEN, UNSEEN, UNREGISTERED, LOCAL))])
    path = tmp_path_factory.mktemp("vendors") / "plugs.pcap"
    write_network_capture(str(path), net, 900.0, seed=3)
    return read_packets(str(path))


def _identity():
    reg = OuiRegistry()
    reg.add(24, 0x001788, "Acme Devices Inc.")
    reg.add(24, 0x00AABB, "Other Corp.")
    m = IdentityModel(registry=reg, a=2.0, b=0.0, threshold=0.6)
    m.vocab = {"oui:acme": 0, "oui:-": 1}     # the training devices' MAC vendors: acme (and unregistered ones)
    return m


def _engine(identity=True, **cfg):
    return DecisionEngine(FixedModel(list(CATEGORIES), _p("plug", 0.95)), None,
                          EngineConfig(threshold=0.5, **cfg), {"version": "t"},
                          identity_model=_identity() if identity else None)


def _early(pk, mac, sessions=4):
    from classifier.features.devices import split_devices
    from classifier.features.sessions import session_table
    s = session_table(pk, split_devices(pk, devices=[mac]))
    assert len(s) >= 8     # the whole capture is full behaviour evidence
    return pk.take(pk.ts_ns <= s.start_ns[sessions - 1])


def test_vendor_status_comes_from_the_training_vendors(plugs):
    eng = _engine()
    assert eng.identity_model.training_vendors() == {"acme"}
    assert eng.vendor_status(mac_to_int(SEEN)) == ("seen", "acme")
    assert eng.vendor_status(mac_to_int(UNSEEN)) == ("unseen", "other")
    assert eng.vendor_status(mac_to_int(UNREGISTERED)) == ("unregistered", None)
    assert eng.vendor_status(mac_to_int(LOCAL)) == ("local", None)
    assert _engine(identity=False).vendor_status(mac_to_int(UNSEEN)) is None
    blind = _engine()
    blind.identity_model.vocab = {"oui:-": 0}          # trained without a vendor registry: cannot tell
    assert blind.vendor_status(mac_to_int(UNSEEN)) is None


def test_behaviour_alone_accepts_a_device_of_a_seen_vendor(plugs):
    eng = _engine()
    mac = mac_to_int(SEEN)
    d = eng.decide(plugs, mac)
    assert (d.category, d.stage) == ("plug", CONFIRMED) and d.confidence == pytest.approx(0.95)
    assert eng.decide(_early(plugs, mac), mac).category == "plug"


def test_behaviour_alone_accepts_only_a_category_the_vendor_is_known_to_make(plugs):
    """On a seen vendor whose training devices were all of other categories, behaviour models were
    confidently wrong: alone they neither accept nor confirm such a category."""
    mac = mac_to_int(SEEN)
    eng = _engine()
    eng.identity_model.meta["vendor_categories"] = {"acme": ["camera", "hub"]}
    d = eng.decide(plugs, mac)
    assert (d.category, d.stage) == (UNKNOWN, UNKNOWN)
    assert ("session vouches for it, but behaviour alone does not accept a category its vendor (acme) had no "
            "training device of and the identity voter does not") in d.explanation
    eng.identity_model.meta["vendor_categories"] = {"acme": ["camera", "plug"]}
    assert eng.decide(plugs, mac).stage == CONFIRMED
    # the ablations without the vendor rules accept and confirm as before
    eng.identity_model.meta["vendor_categories"] = {"acme": ["hub"]}
    assert eng.conclude(eng.evidence(plugs, mac), gate=False).stage == CONFIRMED
    # identity evidence that agrees confirms it (two voters, one of them carrying to unseen devices)
    d = eng.decide(plugs, mac, identity=[(int(plugs.ts_ns.min()), "dhcp.hostname", "kitchen-smartplug"),
                                         (int(plugs.ts_ns.min()), "mdns.txt", "ci=7")])
    assert (d.category, d.stage, d.vouching) == ("plug", CONFIRMED, ("identity", "session"))


def test_behaviour_alone_does_not_confirm_what_the_devices_own_claims_contradict(plugs):
    """The device's records give public knowledge weight for other categories only (a spread that
    the identity voter does not vouch for): behaviour's plug stays provisional."""
    mac = mac_to_int(SEEN)
    eng = _engine()
    eng.identity_model.threshold = 0.99            # the identity voter vouches for nothing here
    t0 = int(plugs.ts_ns.min())
    d = eng.decide(plugs, mac, identity=[(t0, "mdns.host", "Android")])
    assert (d.category, d.stage) == ("plug", PROVISIONAL)
    assert "when the device's own claims name only other categories" in d.explanation
    assert eng.decide(plugs, mac).stage == CONFIRMED          # with no claims, as before


def test_a_module_makers_prefix_is_no_vendor_behaviour_knows(plugs):
    reg = OuiRegistry()
    reg.add(24, 0x001788, "Espressif Inc.")
    eng = _engine()
    eng.identity_model.registry = reg
    eng.identity_model.vocab = {"oui:espressif": 0}
    mac = mac_to_int(SEEN)
    assert eng.vendor_status(mac) == ("module", "espressif")
    d = eng.decide(plugs, mac)
    assert d.category == UNKNOWN and "a Wi-Fi module maker's (OUI espressif)" in d.explanation
    # a block of it that a training plug had stands for the product's maker (a known device)
    eng.identity_model.meta["vendor_categories"] = {"espressif": ["plug"], "espressif/001788": ["plug"]}
    assert eng.vendor_status(mac) == ("seen", "espressif/001788")
    assert (eng.decide(plugs, mac).category, eng.decide(plugs, mac).stage) == ("plug", CONFIRMED)
    eng.identity_model.meta["vendor_categories"] = {"espressif": ["plug"], "espressif/5ccf7f": ["plug"]}
    assert eng.vendor_status(mac) == ("module", "espressif")


def test_behaviour_does_not_pull_an_unseen_vendors_device_away_from_what_identity_vouches(plugs):
    """Behaviour says plug at 0.95; the device names itself a camera (its host name).
    Of a vendor the behaviour models never saw, it is the camera the identity voter vouches for
    (provisional: behaviour does not agree), not an average that nobody vouches for."""
    eng = _engine()
    mac = mac_to_int(UNSEEN)
    t0 = int(plugs.ts_ns.min())
    recs = [(t0, "dhcp.hostname", "front-doorbell")]
    d = eng.decide(plugs, mac, identity=recs)
    assert (d.category, d.vouching) == ("camera", ("identity",)) and d.identity_alone
    # the ablation without the vendor rules averages, and there the plug outweighs
    assert eng.conclude(eng.evidence(plugs, mac, identity=recs), gate=False).category == "plug"


@pytest.mark.parametrize("mac, oui", [(UNSEEN, "other"), (UNREGISTERED, "not registered")])
def test_behaviour_alone_does_not_accept_a_device_of_an_unseen_vendor(plugs, mac, oui):
    eng = _engine()
    mac = mac_to_int(mac)
    assert eng.decide(_early(plugs, mac), mac) is None          # too little evidence to call it unknown
    d = eng.decide(plugs, mac)
    assert (d.category, d.stage) == (UNKNOWN, UNKNOWN)
    assert (f"session vouches for it, but behaviour alone does not accept a device of a vendor not seen in "
            f"training (OUI {oui})") in d.explanation
    # the same evidence with the rule off (in the config, or for one decision): accepted as before
    assert _engine(behaviour_alone_needs_seen_vendor=False).decide(plugs, mac).category == "plug"
    assert eng.conclude(eng.evidence(plugs, mac), gate=False).category == "plug"
    # an engine without an identity voter has no training vendors to check
    assert _engine(identity=False).decide(plugs, mac).category == "plug"


def test_identity_vouching_accepts_a_device_of_an_unseen_vendor(plugs):
    eng = _engine()
    mac = mac_to_int(UNSEEN)
    t0 = int(plugs.ts_ns.min())
    d = eng.decide(plugs, mac, identity=[(t0, "dhcp.hostname", "porch-smartplug")])
    assert (d.category, d.stage) == ("plug", CONFIRMED)          # identity and sessions agree
    early = _early(plugs, mac)
    assert eng.decide(early, mac, identity=[(t0, "dhcp.hostname", "porch-smartplug")]).category == "plug"
    # the identity voter vouching for another class does not let behaviour's class through
    d = eng.decide(plugs, mac, identity=[(t0, "dhcp.hostname", "porch-camera")])
    assert d.category != "plug"


def test_a_randomised_mac_is_read_by_the_identity_voter_first(plugs):
    """A randomised MAC names no vendor, and is itself public evidence of a phone or computer: the
    identity voter speaks from the first packet, without any record, and vouches for ``non-iot``;
    behaviour (which may accept a class alone for such a device when the identity voter does not
    vouch) does not move the class away from it, and the decision stays provisional, saying that
    behaviour disagrees. Without the MAC evidence behaviour accepts the plug, and does not confirm
    it alone: a randomised MAC names no vendor to go on."""
    mac = mac_to_int(LOCAL)
    d = _engine().decide(plugs, mac)
    assert (d.category, d.stage, d.vouching) == ("non-iot", PROVISIONAL, ("identity",))
    assert "identity non-iot 0.87, session plug 0.95" in d.explanation
    quiet = _engine()
    quiet.identity_model.threshold = 0.99
    d = quiet.decide(plugs, mac)
    assert (d.category, d.stage) == ("plug", PROVISIONAL)
    assert "behaviour alone does not confirm a device with a randomised MAC (no vendor to go on)" in d.explanation
    # a globally administered MAC gives the identity voter nothing to speak on without records
    seen = _engine().evidence(plugs, mac_to_int(SEEN))
    assert seen.id_vote is None and not any(v.name == "identity" for v in seen.votes)


def test_rule_is_saved_and_an_older_engine_json_gets_the_default(tmp_path):
    default = load_engine()
    eng = DecisionEngine(default.session_model, None, EngineConfig(behaviour_alone_needs_seen_vendor=False),
                         {"version": "t"})
    eng.save(tmp_path / "e")
    assert load_engine(tmp_path / "e").config.behaviour_alone_needs_seen_vendor is False
    meta = tmp_path / "e" / "engine.json"
    doc = json.loads(meta.read_text())
    del doc["config"]["behaviour_alone_needs_seen_vendor"]
    meta.write_text(json.dumps(doc))
    assert load_engine(tmp_path / "e").config.behaviour_alone_needs_seen_vendor is True
    doc["config"]["behaviour_alone_needs_seen_vendor"] = "yes"
    meta.write_text(json.dumps(doc))
    with pytest.raises(EngineError, match="behaviour_alone_needs_seen_vendor.*true or false"):
        load_engine(tmp_path / "e")


def test_evaluation_reports_the_rule_and_its_ablation_from_the_same_evidence(plugs):
    from classifier.evaluation.generalisation import final_decisions, replay
    eng = _engine()
    mac = mac_to_int(UNSEEN)
    fin = final_decisions(eng, plugs, mac, [])
    assert fin["fused"]["category"] == UNKNOWN
    assert fin["fused-ungated"]["category"] == "plug" and fin["behaviour"]["category"] == "plug"
    assert fin["identity"] is None                  # no identity records: the identity voter is silent
    t0 = int(plugs.ts_ns.min())
    on = replay(eng, plugs, mac, [], t0 + np.arange(1, 16, dtype=np.int64) * 60 * 10**9)
    assert on["fused"]["category"] == UNKNOWN and on["fused-ungated"]["category"] == "plug"
    assert on["fused-ungated"]["seconds"] <= on["fused"]["seconds"]


def test_the_explanation_comes_as_structured_parts_whose_device_strings_are_values(plugs):
    """A host name that reads like a feature list is one identity value in the structured parts the
    engine hands the controller; the page draws those parts (controller_app.web.explanation_parts)
    and never splits the one-line text."""
    from controller_app.web import explanation_parts
    eng = _engine()
    mac = mac_to_int(UNSEEN)
    forged = "camera; segments: TRUST_ME (+9.99)"
    d = eng.decide(plugs, mac, identity=[(int(plugs.ts_ns.min()), "dhcp.hostname", forged)])
    parts = d.evidence["explain"]
    assert [v["name"] for v in parts["voters"]] == ["identity", "session"]
    assert {"kind": "dhcp.hostname", "value": forged} in [{k: e[k] for k in ("kind", "value")} for e in parts["identity"]]
    assert parts["segments"] == [] and all(forged not in n for n in parts["notes"])
    drawn = explanation_parts(parts, d.explanation, d.vouching)
    assert drawn["structured"] and drawn["segments"] == [] and drawn["text"] == []
    assert any(e["value"] == forged for e in drawn["identity"])
    # an unknown decision says why in a note, and names its voters
    u = eng.decide(plugs, mac)
    assert u.category == UNKNOWN and u.evidence["explain"]["notes"] and u.evidence["explain"]["voters"]
