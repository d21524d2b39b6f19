"""The site teaches the engine: a pinned device's identity records and category, folded into the
identity voter's token model (classifier.identity.site), name a second unit of the same model that
the voter could not name before — on generated devices of a vendor no training device had, so it
runs anywhere. The behaviour models are not touched; the fold starts from the voter as trained each
time; a Wi-Fi module maker's prefix does not make its radio's vendor a seen one; the inventory's pins
are read back as examples (``iotclass train --site``)."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.capture.labels import CATEGORIES
from classifier.engine.engine import DecisionEngine
from classifier.identity.knowledge import knowledge_verdict
from classifier.identity.site import SiteExample, fold_site, read_site_examples
from fake_engine import SITE_TRAIN, qorvane_records, site_records, site_voter

@pytest.fixture(scope="module")
def voter():
    """An identity voter trained on four vendors' generated devices (three units each)."""
    return site_voter()


QORVANE = 0x00AA05
CAM1, CAM2 = (QORVANE << 24) | 0x11, (QORVANE << 24) | 0x22


qorvane = qorvane_records


def top(vote):
    k = int(vote.proba.argmax())
    return CATEGORIES[k], float(vote.proba[k])


def test_a_second_unit_of_a_pinned_model_is_named(voter):
    r1, r2 = qorvane(1), qorvane(2)
    assert knowledge_verdict(r2, None) is None, "the generated model must be one public knowledge cannot name"
    before = voter.vote(r2, CAM2)
    cat, p = top(before)
    assert not (cat == "camera" and p >= before.threshold), (cat, p, before.threshold)   # not named before
    vocab_before = dict(voter.vocab)
    folded = fold_site(voter, [SiteExample(CAM1, "camera", tuple(r1))])
    after = folded.vote(r2, CAM2)
    cat, p = top(after)
    assert cat == "camera" and p >= after.threshold, (cat, p, after.threshold)
    # the voter as trained is untouched; the fold says what it learned
    assert voter.vocab == vocab_before and "camera" not in (voter.vendor_categories() or {}).get("qorvane", ())
    assert folded.meta["site"]["devices"] == 1 and folded.meta["site"]["categories"] == {"camera": 1}
    assert folded.meta["site"]["tokens_added"] > 0 and "oui:qorvane" in folded.vocab
    assert folded.vendor_categories()["qorvane"] == frozenset({"camera"})
    # the trained vendors' devices are read as before
    for prefix, (cat0, stem, vc, svc) in SITE_TRAIN.items():
        mac = (prefix << 24) | 0x99
        recs = site_records(stem, vc, svc, 9, stem.lower().replace("-", ""))
        assert top(folded.vote(recs, mac))[0] == top(voter.vote(recs, mac))[0] == cat0


def test_the_fold_starts_from_the_voter_as_trained_each_time(voter, tmp_path):
    eng = DecisionEngine(session_model=None, identity_model=voter)
    got = eng.learn_site([SiteExample(CAM1, "camera", tuple(qorvane(1)))])
    assert got["devices"] == 1 and eng.identity_model is not voter and eng.base_identity_model is voter
    first = eng.identity_model
    eng.learn_site([SiteExample(CAM1, "camera", tuple(qorvane(1)))])
    assert np.allclose(eng.identity_model.coef, first.coef)            # not folded twice
    assert eng.learn_site([]) == {"devices": 0} and eng.identity_model is voter
    # saved and loaded, the folded voter keeps what it learned
    folded = fold_site(voter, [SiteExample(CAM1, "camera", tuple(qorvane(1)))])
    folded.save(tmp_path / "identity.safetensors")
    from classifier.identity.model import IdentityModel
    back = IdentityModel.load(tmp_path / "identity.safetensors")
    back.registry = voter.registry
    assert back.meta["site"]["devices"] == 1
    assert top(back.vote(qorvane(2), CAM2)) == pytest.approx(top(folded.vote(qorvane(2), CAM2)))


def test_a_module_makers_prefix_does_not_make_its_radio_a_seen_vendor(voter):
    esp1, esp2 = 0x5CCF7F000001, 0x5CCF7F000002
    folded = fold_site(voter, [SiteExample(esp1, "camera", tuple(qorvane(1)))])
    assert "oui:espressif" not in folded.vocab
    assert folded.vendor_categories()["espressif/5ccf7f"] == frozenset({"camera"})
    # another product on the same radio, saying nothing alike, is not read as a seen vendor's
    other = [(0, "dhcp.hostname", "ESP_07AEFB")]
    assert folded.regime(set(["oui:espressif", "name:esp"])) == (voter.a, voter.b, voter.threshold)
    (c0, p0), (c1, p1) = top(voter.vote(other, esp2)), top(folded.vote(other, esp2))
    assert c1 == c0 and abs(p1 - p0) < 0.05 and p1 < voter.threshold


def test_the_inventory_pins_are_read_back_as_examples(tmp_path):
    from controller_app.inventory import Inventory
    path = str(tmp_path / "inv.sqlite")
    inv = Inventory(path)
    a, b, c, d = "00:aa:05:00:00:11", "00:aa:05:00:00:22", "00:aa:05:00:00:33", "00:aa:05:00:00:44"
    inv.upsert_devices([], [(CAM1, "dhcp.hostname", "QV-IPC0001-1ecf", 10**18),
                            (CAM1, "mdns.service", "_qvstream._tcp", 10**18 + 1)])
    inv.add_audit(1.0, "alice", "127.0.0.1", "pin", a, None, "category=camera", "d1")
    inv.add_audit(2.0, "alice", "127.0.0.1", "pin", b, None, "category=plug", "d2")
    inv.add_audit(3.0, "alice", "127.0.0.1", "release", b, "category=plug", None, "d3")       # released
    inv.add_audit(4.0, "alice", "127.0.0.1", "pin", c, None, "action=block", "d4")           # an action
    inv.add_audit(5.0, "alice", "127.0.0.1", "pin", d, None, "category=unknown", "d5")        # no category
    inv.close()
    (ex,) = read_site_examples(path)
    assert (ex.mac, ex.category) == (CAM1, "camera")
    assert [(k, v) for _, k, v in ex.records] == [("dhcp.hostname", "QV-IPC0001-1ecf"), ("mdns.service", "_qvstream._tcp")]
    from classifier.identity.site import SiteError
    with pytest.raises(SiteError, match="no inventory there"):
        read_site_examples(tmp_path / "nope.sqlite")
    (tmp_path / "x.sqlite").write_bytes(b"")
    with pytest.raises(SiteError, match="not a controller inventory"):
        read_site_examples(tmp_path / "x.sqlite")


def test_iotclass_train_has_a_site_option():
    from classifier.cli import build_parser
    args = build_parser().parse_args(["train", "--site", "inventory.sqlite"])
    assert args.site == "inventory.sqlite"
