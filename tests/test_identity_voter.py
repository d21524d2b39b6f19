"""Identity evidence: the OUI registry, the identity voter, and the
engine's fusion of it with the behaviour models (stages, minimum evidence, explanations)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from classifier.capture.decode import read_packets
from classifier.capture.packets import mac_to_int
from classifier.engine.decision import CONFIRMED, PROVISIONAL, UNKNOWN
from classifier.engine.engine import DecisionEngine, EngineConfig, load_engine
from classifier.capture.labels import CATEGORIES
from classifier.identity.model import IdentityModel, device_tokens, precision_threshold, record_tokens, registered_domain
from classifier.identity.oui import OuiRegistry, vendor_key
from classifier.identity.training import train_identity, vendor_folds

# --------------------------------------------------------------------------- OUI registry


def test_oui_registry_reads_ieee_csv_and_manuf(tmp_path):
    csvf = tmp_path / "oui.csv"
    csvf.write_text("Registry,Assignment,Organization Name,Organization Address\n"
                    "MA-L,0017AB,\"Example Lighting, Inc.\",Somewhere\n"
                    "MA-L,0017AC,Private,\n")
    mam = tmp_path / "mam.csv"
    mam.write_text("Registry,Assignment,Organization Name,Organization Address\nMA-M,0017AB5,Deeper Corp,Here\n")
    manuf = tmp_path / "manuf"
    manuf.write_text("# comment\n00:17:AB\tExample\tSomething Else\n40:AE:30\tTp-LinkP\tTp-Link Corporation Pte. Ltd.\n")
    reg = OuiRegistry.load([csvf, mam, manuf])
    assert reg.lookup(mac_to_int("00:17:ab:01:02:03")) == "Example Lighting, Inc."   # IEEE CSV wins over manuf
    assert reg.lookup(mac_to_int("00:17:ab:50:00:01")) == "Deeper Corp"               # longer prefix first
    assert reg.lookup(mac_to_int("40:ae:30:46:6e:a8")) == "Tp-Link Corporation Pte. Ltd."  # only in manuf
    assert reg.lookup(mac_to_int("00:17:ac:00:00:01")) is None                        # "Private" is no name
    assert reg.lookup(mac_to_int("02:17:ab:01:02:03")) is None                        # locally administered
    assert reg.vendor(mac_to_int("40:ae:30:46:6e:a8")) == "tp-link"


def test_oui_registry_absent_warns_and_answers_none(tmp_path):
    with pytest.warns(UserWarning, match="ieee-data"):
        reg = OuiRegistry.load([tmp_path / "nope.csv"])
    assert not reg.available and reg.lookup(mac_to_int("00:17:88:00:00:01")) is None


def test_oui_registry_bad_csv_names_file_and_line(tmp_path):
    bad = tmp_path / "oui.csv"
    bad.write_text("Registry,Assignment,Organization Name\nMA-L,XYZ123,Somebody\n")
    with pytest.raises(ValueError, match=r"oui.csv: line 2: .*not hexadecimal"):
        OuiRegistry.load([bad])


@pytest.mark.parametrize("org, key", [("Amazon Technologies Inc.", "amazon"), ("TP-LINK TECHNOLOGIES CO.,LTD.", "tp-link"),
                                      ("Google, Inc.", "google"), ("The Example Group", "example"), ("", None)])
def test_vendor_key(org, key):
    assert vendor_key(org) == key


# --------------------------------------------------------------------------- knowledge


def test_the_identity_voter_speaks_on_a_randomised_mac_alone():
    m = IdentityModel(registry=OuiRegistry(), a=2.0, b=0.0, threshold=0.6)
    assert m.speaks_for_mac(mac_to_int("da:a1:19:00:00:01")) and not m.speaks_for_mac(mac_to_int("00:17:88:00:00:01"))
    v = m.vote([], mac_to_int("da:a1:19:00:00:01"))
    assert CATEGORIES[int(v.proba.argmax())] == "non-iot" and v.supporting_kinds("non-iot") == {"mac"}


def test_training_calibrates_on_the_mac_evidence_too():
    """The identity voter's calibration sees the same knowledge it will be asked with: a
    randomised MAC's hit is in the training examples' knowledge scores."""
    from types import SimpleNamespace
    phone = SimpleNamespace(mac=mac_to_int("da:a1:19:00:00:01"), t0_ns=0, category="non-iot", device="p", group="p")
    plugs = [SimpleNamespace(mac=0x001788000000 + i, t0_ns=0, category="plug", device=f"d{i}", group=f"d{i}")
             for i in range(3)]
    streams = [phone] + plugs
    recs = {0: [(0, "dns.query", "a.example.com")]} | {i: [(0, "dhcp.hostname", f"smartplug-{i}")] for i in (1, 2, 3)}
    seen = []
    orig = IdentityModel.fit_calibration

    def spy(self, K, L, y, *a, **kw):
        seen.append((K.copy(), y.copy()))
        return orig(self, K, L, y, *a, **kw)
    IdentityModel.fit_calibration = spy
    try:
        train_identity(streams, lambda i: recs[i], np.ones(4, bool), registry=OuiRegistry())
    finally:
        IdentityModel.fit_calibration = orig
    K, y = seen[0]
    j = CATEGORIES.index("non-iot")
    assert all(K[n, j] == 2.0 for n in np.flatnonzero(y == "non-iot"))
    assert all(K[n, j] == 0.0 for n in np.flatnonzero(y == "plug"))


def test_token_model_with_two_classes():
    """Two training categories: logistic regression has one coefficient row; the voter still
    gives each class its probability."""
    toks = [{"name:bulb"}, {"name:bulb", "dom:a.com"}, {"name:cam"}, {"name:cam", "dom:b.com"}]
    m = IdentityModel(registry=OuiRegistry()).fit_tokens(toks, np.array(["light", "light", "camera", "camera"]),
                                                         min_count=1)
    assert m.classes == ["camera", "light"] and m.coef.shape == (len(m.vocab), 2)
    lp = m.learned_logp({"name:bulb"})
    assert lp[CATEGORIES.index("light")] > lp[CATEGORIES.index("camera")] > lp[CATEGORIES.index("lock")]
    lp = m.learned_logp({"name:cam"})
    assert lp[CATEGORIES.index("camera")] > lp[CATEGORIES.index("light")]


# --------------------------------------------------------------------------- identity voter


def test_registered_domain():
    assert registered_domain("a.b.tplinkcloud.com") == "tplinkcloud.com"
    assert registered_domain("x.example.co.uk.") == "example.co.uk"


def test_device_tokens_cover_kinds_and_oui():
    reg = OuiRegistry()
    reg.add(24, 0x001788, "Philips Lighting BV")
    toks = device_tokens([(1, "dhcp.hostname", "Hue-Bridge"), (2, "dns.query", "api.meethue.com"),
                          (3, "dhcp.prl", "1,3,6"), (4, "mdns.service", "_hue._tcp")], 0x001788000001, reg)
    assert {"name:hue", "name:bridge", "dom:meethue.com", "prl:1,3,6", "opt:6", "svc:_hue._tcp", "oui:philips"} <= toks


def test_record_tokens_of_what_a_device_looks_for():
    assert record_tokens("mdns.browse", "_GoogleCast._tcp") == ["browse:_googlecast._tcp"]
    assert record_tokens("mdns.browse", "_hap._tcp.local") == ["browse:_hap._tcp"]
    assert record_tokens("mdns.browse", "_sub._googlecast._tcp") == ["browse:_sub._googlecast._tcp"]
    # instance and host look-ups name other devices, not the one asking
    assert record_tokens("mdns.browse", "Living Room._hap._tcp") == []
    assert record_tokens("mdns.browse", "hue-bridge") == []
    assert record_tokens("mdns.browse", "1.0.168.192.in-addr.arpa") == []
    assert record_tokens("ssdp.search", "urn:dial-multiscreen-org:service:dial:1") == [
        "ssearch:urn:dial-multiscreen-org:service:dial:#"]
    assert record_tokens("ssdp.search", "ssdp:all") == ["ssearch:ssdp:all"]
    assert record_tokens("ssdp.user_agent", "Google Chrome/70.0 Linux") == ["ua:google", "ua:chrome", "ua:linux"]
    assert record_tokens("llmnr.query", "wpad") == []
    toks = device_tokens([(1, "mdns.browse", "_googlecast._tcp"), (2, "mdns.browse", "Kitchen._airplay._tcp"),
                          (3, "ssdp.search", "urn:schemas-upnp-org:device:MediaRenderer:1"),
                          (4, "llmnr.query", "printer")], None)
    assert toks == {"browse:_googlecast._tcp", "ssearch:urn:schemas-upnp-org:device:mediarenderer:#"}


def _examples():
    """Hand-made identity records of small device families."""
    fam = {"camera": ["cam-{}", "nexus.camcloud.example"], "plug": ["plugger-{}", "api.plugco.example"],
           "light": ["glow-{}", "time.lightco.example"]}
    recs, ys, macs = [], [], []
    for j, (cat, (host, dom)) in enumerate(fam.items()):
        for u in range(6):
            recs.append([(0, "dhcp.hostname", host.format(u)), (1, "dns.query", dom)])
            ys.append(cat)
            macs.append(((0x100000 + 0x10 * j + u % 3) << 24) | u)   # three vendors per family
    return recs, np.array(ys, dtype=object), macs


def test_identity_model_learns_tokens_and_round_trips(tmp_path):
    recs, y, macs = _examples()
    reg = OuiRegistry()
    m = IdentityModel(registry=reg).fit_tokens([device_tokens(r, mac, reg) for r, mac in zip(recs, macs)], y)
    v = m.vote([(0, "dhcp.hostname", "glow-77"), (1, "dns.query", "time.lightco.example")], None)
    assert CATEGORIES[int(v.proba.argmax())] == "light"
    m.save(tmp_path / "identity.safetensors")
    again = IdentityModel.load(tmp_path / "identity.safetensors")
    again.registry = reg
    w = again.vote([(0, "dhcp.hostname", "glow-77"), (1, "dns.query", "time.lightco.example")], None)
    assert np.allclose(v.proba, w.proba, atol=1e-5)


def test_identity_knowledge_names_categories_never_trained():
    recs, y, macs = _examples()
    reg = OuiRegistry()
    m = IdentityModel(registry=reg, a=2.0, b=0.5).fit_tokens([device_tokens(r, mac, reg) for r, mac in zip(recs, macs)], y)
    v = m.vote([(0, "mdns.service", "_hap._tcp"), (0, "mdns.txt", "ci=6")], None)   # a HomeKit door lock
    assert CATEGORIES[int(v.proba.argmax())] == "lock" and "lock" not in m.classes


class _Stream:
    def __init__(self, category, mac, device, group):
        self.category, self.mac, self.device, self.group = category, mac, device, group
        self.t0_ns = 0


def test_calibration_predictions_are_held_out(monkeypatch):
    """Every prediction the calibrations fit on comes from a token model that never saw the
    example's device: for the unseen-vendor calibration, nor any device of its vendor; for the
    seen-vendor one, not the device (its vendor's other devices may be in it). Watched through the token
    model's own methods: which token sets each model is fitted on, and which it predicts.
    Each device's records carry a domain of its own, so its examples are recognisable."""
    recs, y, macs = _examples()
    recs = [r + [(2, "dns.query", f"api.unit{chr(97 + i // 26)}{chr(97 + i % 26)}.example")] for i, r in enumerate(recs)]
    reg = OuiRegistry()
    for j in range(3):
        for u in range(3):
            reg.add(24, 0x100000 + 0x10 * j + u, f"Vendor{j}{u} Inc.")
    streams = [_Stream(c, mac, f"dev{i}", f"g{i}") for i, (c, mac) in enumerate(zip(y, macs))]

    def own(toks):          # the device an example's tokens belong to, and its vendor
        return (next(t for t in toks if t.startswith("dom:unit")), next(t for t in toks if t.startswith("oui:")))
    fitted: dict[int, list] = {}          # id(model) -> the (device, vendor) of each example it was fitted on
    predicted = []                        # (phase, id(model), (device, vendor))
    alive = []                            # every model fitted, kept so that no id is reused
    phase = ["unseen-vendor"]
    fit, logp = IdentityModel.fit_tokens, IdentityModel.learned_logp
    fit_cal, fit_seen = IdentityModel.fit_calibration, IdentityModel.fit_seen_calibration

    def spy_fit(self, token_sets, *a, **kw):
        fitted[id(self)] = [own(t) for t in token_sets]
        alive.append(self)
        return fit(self, token_sets, *a, **kw)

    def spy_logp(self, toks):
        predicted.append((phase[0], id(self), own(toks)))
        return logp(self, toks)

    def spy_cal(self, K, L, *a, **kw):
        calibrated.append(("unseen-vendor", L.copy()))
        phase[0] = "seen-vendor"
        return fit_cal(self, K, L, *a, **kw)

    def spy_seen(self, K, L, *a, **kw):
        calibrated.append(("seen-vendor", L.copy()))
        phase[0] = "after"
        return fit_seen(self, K, L, *a, **kw)
    calibrated = []
    monkeypatch.setattr(IdentityModel, "fit_tokens", spy_fit)
    monkeypatch.setattr(IdentityModel, "learned_logp", spy_logp)
    monkeypatch.setattr(IdentityModel, "fit_calibration", spy_cal)
    monkeypatch.setattr(IdentityModel, "fit_seen_calibration", spy_seen)
    m = train_identity(streams, lambda i: recs[i], np.ones(len(streams), bool), folds=3, registry=reg)
    assert [c[0] for c in calibrated] == ["unseen-vendor", "seen-vendor"]
    assert m.meta["vendors"] == 9 and m.meta["calibration_folds"] == 3
    n_examples = m.meta["examples"]
    by_phase = {p: [x for x in predicted if x[0] == p] for p in ("unseen-vendor", "seen-vendor", "after")}
    # every example predicted once for the unseen-vendor calibration, each shared-vendor one for the other
    assert len(by_phase["unseen-vendor"]) == n_examples == len(calibrated[0][1])
    assert len(by_phase["seen-vendor"]) == len(calibrated[1][1]) > 0
    assert not by_phase["after"]
    for _, model, (device, vendor) in by_phase["unseen-vendor"]:
        assert model != id(m) and model in fitted
        assert device not in {d for d, _ in fitted[model]}, "a calibration prediction of a device trained on"
        assert vendor not in {v for _, v in fitted[model]}, "a vendor-held-out prediction of a vendor trained on"
    for _, model, (device, _vendor) in by_phase["seen-vendor"]:
        assert model != id(m) and device not in {d for d, _ in fitted[model]}, "a device-held-out prediction of a " \
            "device trained on"
    # the model shipped is fitted on every example, after both calibrations
    assert len(fitted[id(m)]) == n_examples


def test_seen_vendor_calibration_applies_to_trained_vendors_only():
    m = IdentityModel(registry=OuiRegistry(), a=1.0, b=0.1, threshold=0.9, seen=(1.0, 2.0, 0.6))
    m.vocab = {"oui:acme": 0}
    assert m.regime({"oui:acme", "name:x"}) == (1.0, 2.0, 0.6)
    assert m.regime({"oui:other"}) == (1.0, 0.1, 0.9) and m.regime({"oui:-"}) == (1.0, 0.1, 0.9)


def test_vendor_folds_keep_a_vendor_together():
    vendors = ["a"] * 5 + ["b"] * 3 + ["c"] * 3 + ["d"]
    f = vendor_folds(vendors, 3, seed=1)
    for v in set(vendors):
        assert len({int(x) for x, w in zip(f, vendors) if w == v}) == 1
    assert len(set(f.tolist())) == 3


def test_precision_threshold():
    p = np.array([[0.95, 0.05], [0.9, 0.1], [0.8, 0.2], [0.6, 0.4]])
    yi = np.array([0, 0, 1, 0])          # the 0.8 one is wrong
    assert precision_threshold(p, yi, np.ones(4), 1.0, 0.5) == pytest.approx(0.9)
    assert precision_threshold(p, yi, np.ones(4), 0.75, 0.5) == pytest.approx(0.6)


# --------------------------------------------------------------------------- the engine with identity


class FixedModel:
    kind = "fixed"

    def __init__(self, classes, p):
        self.classes, self.p = classes, np.asarray(p, float)

    def predict_proba(self, inst):
        return np.tile(self.p, (len(inst), 1))

    def explain(self, inst, top=3):
        return [[(0, "lan", 1.0)] for _ in range(len(inst))]


@pytest.fixture(scope="module")
def plug(synth_capture):
    path, _, net = synth_capture
    pk = read_packets(str(path))
    mac = mac_to_int(next(d.mac for d in net.devices if d.category == "plug"))
    return pk, mac


def _first(pk, mac, sessions):
    from classifier.features.devices import split_devices
    from classifier.features.sessions import session_table
    s = session_table(pk, split_devices(pk, devices=[mac]))
    return pk.take(pk.ts_ns <= s.start_ns[sessions - 1]), int(s.start_ns[0])


def _identity(a=2.0):
    return IdentityModel(registry=OuiRegistry(), a=a, b=0.0, threshold=0.6)


def test_identity_and_sessions_agreeing_confirm_early(plug):
    pk, mac = plug
    early, t0 = _first(pk, mac, 3)
    recs = [(t0, "dhcp.hostname", "porch-smartplug"), (t0, "dns.query", "plug.example.net")]
    n = len(early.take(early.eth_src == mac)) + len(early.take(early.eth_dst == mac))
    eng = DecisionEngine(FixedModel(CATEGORIES_LIST, _p("plug", 0.8)), None,
                         EngineConfig(min_packets_confirmed=n), {"version": "t"},
                         identity_model=_identity())
    d = eng.decide(early, mac, identity=recs)
    assert d.category == "plug" and d.stage == CONFIRMED and d.evidence["sessions"] == 3
    assert "DHCP host name 'porch-smartplug'" in d.explanation and "identity plug" in d.explanation
    # the same evidence on too few packets: provisional only
    strict = DecisionEngine(FixedModel(CATEGORIES_LIST, _p("plug", 0.8)), None,
                            EngineConfig(min_packets_confirmed=n + 1), {"version": "t"},
                            identity_model=_identity())
    assert strict.decide(early, mac, identity=recs).stage == PROVISIONAL


def test_identity_disagreeing_blocks_early_confirmation(plug):
    pk, mac = plug
    early, t0 = _first(pk, mac, 3)
    recs = [(t0, "dhcp.hostname", "porch-camera"), (t0, "mdns.txt", "ci=17")]
    eng = DecisionEngine(FixedModel(CATEGORIES_LIST, _p("plug", 0.8)), None, EngineConfig(),
                         {"version": "t"}, identity_model=_identity())
    d = eng.decide(early, mac, identity=recs)
    assert d.stage == PROVISIONAL


def test_identity_alone_needs_two_kinds_of_record(plug):
    pk, mac = plug
    early, t0 = _first(pk, mac, 2)          # too few sessions for the session model
    eng = DecisionEngine(FixedModel(CATEGORIES_LIST, _p("plug", 0.8)), None,
                         EngineConfig(min_packets_confirmed=1), {"version": "t"},
                         identity_model=_identity(a=3.0))
    one = eng.decide(early, mac, identity=[(t0, "dhcp.hostname", "hall-thermostat")])
    assert one.category == "sensor" and one.stage == PROVISIONAL
    two = eng.decide(early, mac, identity=[(t0, "dhcp.hostname", "hall-thermostat"),
                                           (t0, "mdns.txt", "ci=9")])
    assert two.category == "sensor" and two.stage == CONFIRMED
    later = eng.decide(early, mac, identity=[(int(early.ts_ns.max()) + 10**9, "mdns.txt", "ci=9")])
    assert later is None                     # records after "now" are not evidence yet


def test_unknown_when_full_evidence_and_nobody_vouches(plug):
    pk, mac = plug
    eng = DecisionEngine(FixedModel(CATEGORIES_LIST, np.full(len(CATEGORIES), 1 / len(CATEGORIES))), None,
                         EngineConfig(threshold=0.5), {"version": "t"},
                         identity_model=_identity(a=0.1))
    d = eng.decide(pk, mac, identity=[(int(pk.ts_ns.min()), "dhcp.hostname", "thing-1")])
    assert (d.category, d.stage) == (UNKNOWN, UNKNOWN)


def test_engine_with_identity_saves_and_loads(plug, tmp_path):
    from classifier.models.session import SessionNBA
    recs, y, macs = _examples()
    reg = OuiRegistry()
    ident = IdentityModel(registry=reg, threshold=0.7).fit_tokens(
        [device_tokens(r, mac, reg) for r, mac in zip(recs, macs)], y)
    default = load_engine()
    eng = DecisionEngine(default.session_model, None, EngineConfig(voters=("identity", "session")),
                         {"version": "t"}, identity_model=ident)
    eng.save(tmp_path / "e")
    again = load_engine(tmp_path / "e")
    assert again.identity_model is not None and again.config == eng.config
    assert isinstance(again.session_model, SessionNBA) and again.classes == list(CATEGORIES)


CATEGORIES_LIST = list(CATEGORIES)


def _p(cat, p):
    out = np.full(len(CATEGORIES), (1 - p) / (len(CATEGORIES) - 1))
    out[CATEGORIES.index(cat)] = p
    return out


def test_first_final_metrics():
    from classifier.evaluation.generalisation import first_final_metrics
    ev = {"packets": 30}
    rows = [{"category": "plug", "first_final": {"seconds": 10, "category": "plug", "stage": CONFIRMED, "evidence": ev}},
            {"category": "plug", "first_final": {"seconds": 30, "category": UNKNOWN, "stage": UNKNOWN, "evidence": ev}},
            {"category": "camera", "first_final": {"seconds": 50, "category": "camera", "stage": CONFIRMED,
                                                   "evidence": {"packets": 5}}},
            {"category": "light", "first_final": None}]
    m = first_final_metrics(rows, min_packets=20)
    assert m["accuracy_of_first_finals"] == pytest.approx(2 / 3) and m["share_unknown"] == pytest.approx(1 / 3)
    assert m["median_seconds_to_first_final"] == pytest.approx(40) and m["share_with_final"] == 0.75
    assert m["confirmed_below_minimum"] == 1 and m["accuracy_of_first_confirmed"] == 1.0


def test_no_warning_from_the_installed_registry():
    from classifier.identity.oui import DEFAULT_FILES
    if not any(p.is_file() for p in DEFAULT_FILES):
        pytest.skip("no OUI registry installed (Debian packages ieee-data / libwireshark-data)")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg = OuiRegistry.load()
    assert reg.vendor(mac_to_int("00:17:88:24:76:ff")) == "philips"


def test_training_keeps_each_vendors_categories_and_module_makers_blocks(tmp_path):
    """What behaviour alone may accept comes from training alone: per MAC vendor the categories of
    its training devices, and for a Wi-Fi module maker per block of it."""
    from types import SimpleNamespace
    reg = OuiRegistry()
    reg.add(24, 0x001788, "Acme Devices Inc.")
    reg.add(24, 0x5CCF7F, "Espressif Inc.")
    devs = [SimpleNamespace(mac=0x001788000001, t0_ns=0, category="plug", device="a", group="a"),
            SimpleNamespace(mac=0x001788000002, t0_ns=0, category="camera", device="b", group="b"),
            SimpleNamespace(mac=0x5CCF7F000003, t0_ns=0, category="appliance", device="c", group="c")]
    m = train_identity(devs, lambda i: [(0, "dhcp.hostname", f"device-{i}")], np.ones(3, bool), registry=reg)
    assert m.vendor_categories() == {"acme": {"plug", "camera"}, "espressif": {"appliance"},
                                     "espressif/5ccf7f": {"appliance"}}
    m.save(tmp_path / "identity.safetensors")
    assert IdentityModel.load(tmp_path / "identity.safetensors").vendor_categories() == m.vendor_categories()
