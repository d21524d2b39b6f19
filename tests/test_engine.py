"""The decision engine: evidence and stages, open set, persistence, the shipped default."""

from __future__ import annotations

import json

import numpy as np
import pytest

from classifier.engine.decision import CONFIRMED, PROVISIONAL, UNKNOWN
from classifier.capture.decode import read_packets
from classifier.engine.engine import DecisionEngine, EngineConfig, EngineError, load_engine
from classifier.capture.labels import CATEGORIES
from classifier.capture.packets import mac_to_int


class FixedModel:
    """A stand-in model answering fixed probabilities (to test the engine's own logic)."""

    kind = "fixed"

    def __init__(self, classes, p):
        self.classes = classes
        self.p = np.asarray(p, float)
        self.calls = 0

    def predict_proba(self, inst):
        self.calls += 1
        return np.tile(self.p, (len(inst), 1))

    def explain(self, inst, top=3):
        if "seg" in inst.X:  # segment models explain by feature, session models by session
            return [[("n_total", 0.1)] for _ in range(len(inst))]
        return [[(0, "lan", 1.0)] for _ in range(len(inst))]


def first_packets_with(pk, mac, sessions):
    """The device's packets up to its ``sessions``-th session start."""
    from classifier.features.devices import split_devices
    from classifier.features.sessions import session_table
    s = session_table(pk, split_devices(pk, devices=[mac]))
    cut = s.start_ns[sessions - 1] if sessions <= len(s) else pk.ts_ns.max()
    return pk.take(pk.ts_ns <= cut)


@pytest.fixture(scope="module")
def plug(synth_capture):
    path, _, net = synth_capture
    pk = read_packets(str(path))
    mac = mac_to_int(next(d.mac for d in net.devices if d.category == "plug"))
    return pk, mac


def test_stages_follow_evidence_and_confidence(plug):
    pk, mac = plug
    cfg = EngineConfig(min_sessions_provisional=3, min_sessions_confirmed=8, confirm_confidence=0.9, threshold=0.5)
    sure = DecisionEngine(FixedModel(["camera", "plug"], [0.05, 0.95]), None, cfg, {"version": "t"})
    assert sure.decide(first_packets_with(pk, mac, 2), mac) is None           # too little evidence
    d = sure.decide(first_packets_with(pk, mac, 4), mac)
    assert (d.category, d.stage) == ("plug", PROVISIONAL) and d.evidence["sessions"] == 4
    d = sure.decide(first_packets_with(pk, mac, 9), mac)
    assert (d.category, d.stage) == ("plug", CONFIRMED) and d.confidence == pytest.approx(0.95)
    unsure = DecisionEngine(FixedModel(["camera", "plug"], [0.3, 0.7]), None, cfg, {"version": "t"})
    assert unsure.decide(first_packets_with(pk, mac, 9), mac).stage == PROVISIONAL  # < confirm_confidence
    lost = DecisionEngine(FixedModel(["camera", "plug"], [0.55, 0.45]), None,
                          EngineConfig(threshold=0.6), {"version": "t"})
    assert lost.decide(first_packets_with(pk, mac, 4), mac) is None          # below threshold, little evidence
    # the full behaviour evidence, but not yet the stated minimum of time: not unknown yet
    early = first_packets_with(pk, mac, 9)
    assert (early.ts_ns.max() - early.ts_ns.min()) / 1e9 < lost.config.min_unknown_seconds
    assert lost.decide(early, mac) is None
    d = lost.decide(pk, mac)                                                  # an hour of it
    assert (d.category, d.stage) == (UNKNOWN, UNKNOWN) and d.evidence["seconds"] >= 600


def test_segment_model_joins_when_a_window_is_complete(plug):
    pk, mac = plug
    cfg = EngineConfig(interval=60.0, t=4, threshold=0.5, segment_weight=0.5, segment_threshold=0.5)
    seg = FixedModel(["camera", "plug"], [0.9, 0.1])
    eng = DecisionEngine(FixedModel(["camera", "plug"], [0.2, 0.8]), seg, cfg, {"version": "t"})
    early = pk.take(pk.ts_ns <= pk.ts_ns.min() + 120 * 10**9)
    d = eng.decide(early, mac)
    assert d is None or "segment" not in d.model
    d = eng.decide(pk, mac)   # an hour: the segment model reads the last 4 complete minutes
    assert seg.calls >= 1 and "fixed+fixed" in d.model
    # averaged [0.55, 0.45]: camera; the segment model vouches for it (0.9 >= 0.5)
    assert d.category == "camera" and d.confidence == pytest.approx(0.9)
    weak = DecisionEngine(FixedModel(["camera", "plug"], [0.2, 0.8]), FixedModel(["camera", "plug"], [0.6, 0.4]),
                          EngineConfig(interval=60.0, t=4, threshold=0.9, segment_threshold=0.7), {"version": "t"})
    d = weak.decide(pk, mac)  # averaged camera 0.4 / plug 0.6 -> plug, but 0.8 < 0.9 and 0.4 < 0.7: nobody vouches
    assert (d.category, d.stage) == (UNKNOWN, UNKNOWN)


def test_full_behaviour_evidence_does_not_confirm_against_another_voter(plug):
    """Confirmation on full behaviour evidence (8 sessions or a full window at >= 0.9) also
    needs no other voter vouching for a different class: the decision stays provisional and
    says which voter disagrees."""
    pk, mac = plug
    cfg = EngineConfig(interval=60.0, t=4, threshold=0.5, segment_weight=0.3, segment_threshold=0.5)
    # session plug 0.95 (weight 0.7), segment camera 0.9 (weight 0.3): averaged plug 0.695
    eng = DecisionEngine(FixedModel(["camera", "plug"], [0.05, 0.95]), FixedModel(["camera", "plug"], [0.9, 0.1]),
                         cfg, {"version": "t"})
    d = eng.decide(pk, mac)   # an hour: many sessions and a full window
    assert d.evidence["sessions"] >= 8 and "fixed+fixed" in d.model
    assert (d.category, d.stage) == ("plug", PROVISIONAL) and d.confidence == pytest.approx(0.95)
    assert d.explanation.endswith("; not confirmed: segment vouches for camera 0.90, not plug")
    # the same segment answer below its threshold does not vouch: confirmed as before
    quiet = DecisionEngine(FixedModel(["camera", "plug"], [0.05, 0.95]), FixedModel(["camera", "plug"], [0.9, 0.1]),
                           EngineConfig(interval=60.0, t=4, threshold=0.5, segment_weight=0.3,
                                        segment_threshold=0.95), {"version": "t"})
    q = quiet.decide(pk, mac)
    assert (q.category, q.stage) == ("plug", CONFIRMED)


def test_identity_vouching_for_another_class_keeps_full_behaviour_provisional():
    from classifier.engine.engine import _Evidence, _Vote
    eng = DecisionEngine(FixedModel(["camera", "plug"], [0.05, 0.95]), None, EngineConfig(explain=False),
                         {"version": "t"})
    session = _Vote("session", np.array([0.05, 0.95]), 0.5, 0.5, "fixed")
    identity = _Vote("identity", np.array([0.8, 0.2]), 0.6, 0.5, "tokens")   # vouches for camera
    counts = {"packets": 500, "sessions": 9, "segments": 0, "identity_records": 1}
    d = eng.conclude(_Evidence([session, identity], counts, False, None, None, None))
    assert (d.category, d.stage) == ("plug", PROVISIONAL)     # averaged plug 0.575; session 0.95 on 9 sessions
    assert d.explanation == ("not confirmed: identity vouches for camera 0.80, not plug "
                             "[session plug 0.95, identity camera 0.80]")
    # without the identity voter (or with it below its threshold) the same evidence confirms
    assert eng.conclude(_Evidence([session], counts, False, None, None, None)).stage == CONFIRMED
    shy = _Vote("identity", np.array([0.55, 0.45]), 0.6, 0.5, "tokens")
    assert eng.conclude(_Evidence([session, shy], counts, False, None, None, None)).stage == CONFIRMED


def test_unknown_device_mac_gives_no_decision(plug):
    pk, _ = plug
    eng = DecisionEngine(FixedModel(["plug"], [1.0]), None, EngineConfig(), {"version": "t"})
    assert eng.decide(pk, mac_to_int("02:99:99:99:99:99")) is None


def test_trained_engine_save_load_and_decide(synth_data, tmp_path):
    from classifier.evaluation.protocols import capture_folds
    from classifier.evaluation.training import build_engine
    f = capture_folds(synth_data.streams, 3, 0)
    eng = build_engine(synth_data, synth_data, f != 0, f != 0, seed=0, log=lambda m: None)
    eng.info["version"] = "test"
    eng.save(tmp_path / "engine")
    again = load_engine(tmp_path / "engine")
    assert again.config == eng.config and again.classes == eng.classes
    decided = correct = 0
    for st in [s for s, k in zip(synth_data.streams, f) if k == 0]:
        lc = synth_data.cache.get([st.capture])[0]
        a, b = eng.decide(lc.packets, st.mac), again.decide(lc.packets, st.mac)
        assert (a is None) == (b is None)
        if a is not None:
            assert (a.category, a.stage) == (b.category, b.stage)
            assert a.confidence == pytest.approx(b.confidence, abs=1e-6)
            decided += 1
            correct += a.category == st.category
    assert decided >= 10 and correct / decided >= 0.7


def test_engine_files_are_checked(tmp_path):
    with pytest.raises(EngineError, match="no engine.json"):
        load_engine(tmp_path)
    (tmp_path / "engine.json").write_text(json.dumps({"format": "iotclass-engine", "format_version": 7}))
    with pytest.raises(EngineError, match="version 7"):
        load_engine(tmp_path)
    (tmp_path / "engine.json").write_text("{not json")
    with pytest.raises(EngineError, match="not valid JSON"):
        load_engine(tmp_path)


def test_shipped_default_engine_decides(synth_capture):
    eng = load_engine()
    assert set(eng.classes) <= set(CATEGORIES) and len(eng.classes) >= 5
    assert eng.segment_model is not None and eng.info.get("version")
    path, _, net = synth_capture
    pk = read_packets(str(path))
    for dev in net.devices:
        d = eng.decide(pk, mac_to_int(dev.mac))
        # an hour of traffic is evidence enough (sessions and full segment windows): a decision
        # for every device, whatever the model makes of these generated ones
        assert d is not None, f"{dev.category} ({dev.mac}): no decision on an hour of its traffic"
        assert d.stage in (PROVISIONAL, CONFIRMED, UNKNOWN) and 0.0 <= d.confidence <= 1.0
        assert d.category in set(CATEGORIES) | {UNKNOWN}


@pytest.mark.shared
def test_shipped_default_engine_on_a_home_capture(datasets):
    """The shipped model was trained on these captures: it must know these devices."""
    from classifier.capture.labels import load_labels
    eng = load_engine()
    path = datasets / "home" / "training_2023-5-26_1_13_9.pcapng.gz"
    labels = load_labels(datasets / "home" / "devices.csv")
    pk = read_packets(str(path), warnings=[])
    right = total = 0
    for mac, dev in labels.for_path(str(path)).devices.items():
        d = eng.decide(pk, mac)
        if d is None or d.stage == UNKNOWN:
            continue
        total += 1
        right += d.category == dev.category
    assert total >= 8 and right / total >= 0.9
