"""The operator page's server side: pins written into the policy file (only the one override
changes), tokens, the page's JSON (sorting, filtering, paging), refusals, and the real app
answering pins over HTTP (applied through the hot reload, audited); the Grafana dashboard's
queries against the metrics the app exports."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from classifier.capture.packets import mac_to_int, mac_to_str
from controller_app.pins import (MIN_TOKEN_LENGTH, PinError, PolicyEditor, TokenError, Tokens, edit_overrides,
                                 pin_from_request)
from controller_app.policy import Action, Override, load_policy, parse_policy
from controller_app.traffic import TrafficHistory
from controller_app.web import WebUI, explanation_parts

ROOT = Path(__file__).resolve().parent.parent
M1, M2, M3 = (mac_to_int(f"02:00:00:00:01:0{i}") for i in (1, 2, 3))

BASES = {
    "block": ('# site policy\nversion: 1\nenforce_on: confirmed   # comment\ncategories:\n  camera: block\n'
              'overrides:          # pinned devices\n  "02:00:00:00:01:01": {category: plug}   # the test plug\n'
              '# after the overrides\nmin_confidence: 0.7\n'),
    "block-last": ('categories: {camera: block}\noverrides:\n  "02:00:00:00:01:02":\n    action:\n'
                   '      rate_limit_kbps: 64\n'),
    "flow-empty": "version: 1\noverrides: {}   # none yet\ndefault: allow\n",
    "flow": 'overrides: {"02:00:00:00:01:03": {action: block}, "02:00:00:00:01:01": {category: hub}}\nunknown: block\n',
    "missing": "version: 1\nenforce_on: provisional\n",
    "missing-no-newline": "default: block",
    "shipped-default": (ROOT / "policies" / "default.yaml").read_text(),
    "shipped-example": (ROOT / "policies" / "example-strict.yaml").read_text(),
}
OVERRIDES = [{"category": "camera"}, {"category": "unknown"}, {"action": "block"}, {"action": "allow"},
             {"action": {"rate_limit_kbps": 64}}, {"action": {"allow_pools": ["vendor-cloud", "52.94.0.0/16"],
                                                              "dscp": 46}}]


def _expected(ov: dict) -> Override:
    return parse_policy(yaml.safe_dump({"overrides": {"02:00:00:00:00:01": ov}}), "x").overrides[mac_to_int(
        "02:00:00:00:00:01")]


def _rest(p):
    """A policy without its overrides, source and digest (what a pin must leave alone)."""
    import dataclasses
    return dataclasses.replace(p, overrides={}, source="", digest="")


@settings(max_examples=150, deadline=None)
@given(base=st.sampled_from(sorted(BASES)),
       ops=st.lists(st.tuples(st.sampled_from([M1, M2, M3]), st.one_of(st.none(), st.sampled_from(OVERRIDES))),
                    min_size=1, max_size=6))
def test_pins_change_only_their_override_and_keep_the_file_valid(base, ops):
    text = BASES[base]
    first = parse_policy(text, "p")
    want = dict(first.overrides)
    for mac, ov in ops:
        new = edit_overrides(text, mac, ov)
        pol = parse_policy(new, "p")          # always valid
        if ov is None:
            want.pop(mac, None)
        else:
            want[mac] = _expected(ov)
        assert pol.overrides == want, (base, ops, new)
        assert _rest(pol) == _rest(first), new
        # comments outside the overrides entries survive
        for line in BASES[base].splitlines():
            if line.strip().startswith("#"):
                assert line in new
        text = new


def test_pin_then_release_gives_back_the_file_byte_for_byte():
    for name, text in BASES.items():
        pol = parse_policy(text, name)
        mac = next(m for m in (M1, M2, M3) if m not in pol.overrides)
        pinned = edit_overrides(text, mac, {"category": "camera"})
        assert pinned != text
        back = edit_overrides(pinned, mac, None)
        if name in ("missing", "missing-no-newline"):
            assert parse_policy(back, name).overrides == pol.overrides     # `overrides: {}` stays behind
        else:
            assert back == text, name


def test_a_pin_is_one_added_line_in_a_block_style_file():
    text = BASES["block"]
    new = edit_overrides(text, M2, {"action": {"rate_limit_kbps": 64}})
    added = [ln for ln in new.splitlines() if ln not in text.splitlines()]
    assert added == ['  "02:00:00:00:01:02": {action: {rate_limit_kbps: 64}}']
    assert new.replace(added[0] + "\n", "") == text
    replaced = edit_overrides(text, M1, {"category": "camera"})
    # the operator's note about the device stays on its line
    assert '  "02:00:00:00:01:01": {category: camera}   # the test plug' in replaced
    assert "# after the overrides" in replaced and "# pinned devices" in replaced
    released = edit_overrides(text, M1, None)
    assert "overrides: {}" in released and "# pinned devices" in released
    assert parse_policy(released, "p").overrides == {}


def test_editor_writes_atomically_keeps_mode_and_refuses_an_invalid_file(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(BASES["block"])
    os.chmod(path, 0o640)
    ed = PolicyEditor(str(path))
    change = ed.set(M2, {"category": "camera"})
    assert change.changed and change.before is None and change.after == "category=camera"
    assert load_policy(str(path)).overrides[M2] == Override(category="camera")
    assert change.digest == load_policy(str(path)).digest != change.digest_before
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pin-")]     # no temporary file left
    again = ed.set(M2, {"category": "camera"})
    assert not again.changed
    rel = ed.set(M2, None)
    assert rel.changed and rel.after is None and path.read_text() == BASES["block"]
    # an invalid file on disk is not touched
    bad = "categories:\n  camera: blok\n"
    path.write_text(bad)
    with pytest.raises(PinError) as exc:
        ed.set(M1, {"category": "hub"})
    assert exc.value.status == 409 and "invalid" in str(exc.value) and "camera" in str(exc.value)
    assert path.read_text() == bad


def test_editor_follows_a_symlinked_policy(tmp_path):
    real = tmp_path / "real.yaml"
    real.write_text(BASES["flow-empty"])
    link = tmp_path / "policy.yaml"
    link.symlink_to(real)
    PolicyEditor(str(link)).set(M1, {"action": "block"})
    assert link.is_symlink() and load_policy(str(real)).overrides[M1] == Override(action=Action(block=True))


@pytest.mark.parametrize("body,message", [
    ({"category": "toaster"}, "category: 'toaster' is not one of"),
    ({"category": "camera", "action": "block"}, "exactly one of"),
    ({}, "exactly one of"),
    ({"colour": "red"}, "unknown field(s) colour"),
    ({"action": "{rate_limit_kbps: -5}"}, "action.rate_limit_kbps: expected an integer 1..100000000, got '-5'"),
    ({"action": "{rate_limit_kbps: 64, block: true}"}, "block cannot be combined with rate_limit_kbps"),
    ({"action": "{ratelimit: 64}"}, "action.ratelimit: unknown key"),
    ({"action": "{rate_limit_kbps: [}"}, "action: not valid YAML"),
    ({"action": "blok"}, "expected allow, block or a mapping"),
    ({"action": {"allow_pools": ["10.0.0.0/33"]}}, "not a valid CIDR prefix: '10.0.0.0/33'"),
    ([1, 2], "expected a JSON object"),
])
def test_bad_pin_input_is_refused_with_what_and_where(body, message):
    with pytest.raises(PinError) as exc:
        pin_from_request(body, M1)
    assert message in str(exc.value) and exc.value.status == 400


def test_good_pin_input():
    assert pin_from_request({"category": "camera"}, M1) == {"category": "camera"}
    assert pin_from_request({"action": " block "}, M1) == {"action": "block"}
    assert pin_from_request({"action": "{rate_limit_kbps: 64}"}, M1) == {"action": {"rate_limit_kbps": 64}}
    assert pin_from_request({"action": {"dscp": 46}}, M1) == {"action": {"dscp": 46}}


def test_token_file(tmp_path):
    p = tmp_path / "tokens"
    p.write_text("# operators\nalice:" + "a" * 20 + "\n\nbob : " + "b" * 16 + "\n")
    t = Tokens.load(str(p))
    assert len(t) == 2 and t.who("a" * 20) == "alice" and t.who("b" * 16) == "bob"
    assert t.who("a" * 19) is None and t.who("") is None and t.who(None) is None
    p.write_text("c" * 30 + "\n")
    assert Tokens.load(str(p)).who("c" * 30) == "operator"
    for text, msg in ((f"alice:{'x' * (MIN_TOKEN_LENGTH - 1)}\n", ":1: the token of 'alice' is 15 characters"),
                      ("# nothing\n", "no token in the token file"),
                      (f"a b:{'x' * 20}\n", ":1: expected `name:token`"),
                      (f"a:{'x' * 20}\na:{'y' * 20}\n", ":2: operator 'a' is named twice")):
        p.write_text(text)
        with pytest.raises(TokenError) as exc:
            Tokens.load(str(p))
        assert msg in str(exc.value), (text, str(exc.value))
    with pytest.raises(TokenError, match="cannot read the token file"):
        Tokens.load(str(tmp_path / "absent"))


FORGED = "camera; segments: TRUST_ME (+9.99)"


def test_an_explanation_in_prose_is_one_value_never_split():
    """A DHCP host name that reads like the engine's own parts is drawn as the words it is."""
    text = f"identity camera 0.97; identity: DHCP host name {FORGED}; sessions: #1 evil (9.99)"
    ex = explanation_parts(None, text, ["identity"])
    assert ex["text"] == [text] and ex["segments"] == [] and ex["sessions"] == [] and not ex["structured"]
    assert ex["vouching"] == ["identity"]
    assert explanation_parts(None, None)["text"] == []


def test_structured_explanations_keep_their_fields_and_a_devices_strings_as_values():
    explain = {
        "voters": [{"name": "identity", "category": "camera", "probability": 0.97, "threshold": 0.5, "vouches": True},
                   {"name": "session", "category": "plug", "probability": "0.99"}],          # not a number: left out
        "identity": [{"kind": "dhcp.hostname", "value": FORGED, "category": "camera", "weight": 2.0,
                      "segments": [{"feature": "TRUST_ME", "change": 9.99}]}],            # a key of its own: dropped
        "sessions": [{"position": 1, "pool": "as16509-amazon", "weight": 0.41}, {"position": "x", "pool": 1}],
        "segments": [{"feature": "n_total", "change": 0.31}] * 80,
        "notes": ["not confirmed: identity vouches for plug 0.97, not camera", {"text": 5}],
        "TRUST_ME": [{"feature": "x", "change": 9.99}],
    }
    ex = explanation_parts(explain, "the prose", ["identity", "session"])
    assert ex["structured"] and ex["text"] == []
    assert ex["voters"] == [{"name": "identity", "category": "camera", "probability": 0.97, "threshold": 0.5,
                             "vouches": True}]
    assert ex["identity"] == [{"kind": "dhcp.hostname", "value": FORGED, "category": "camera", "weight": 2.0}]
    assert ex["sessions"] == [{"position": 1, "pool": "as16509-amazon", "weight": 0.41}]
    assert len(ex["segments"]) == 50 and ex["notes"] == [{"text": "not confirmed: identity vouches for plug 0.97, "
                                                                  "not camera"}]
    assert "TRUST_ME" not in ex and set(ex) == {"voters", "identity", "sessions", "segments", "notes", "text",
                                                 "vouching", "structured"}


def test_the_device_page_gets_the_engines_structured_explanation_from_the_inventory(tmp_path):
    from classifier.engine.decision import Decision
    from controller_app.inventory import Inventory
    inv_path = str(tmp_path / "inv.sqlite")
    inv = Inventory(inv_path)
    rec = _record(1)
    mac = mac_to_int(rec["mac"])
    explain = {"identity": [{"kind": "dhcp.hostname", "value": FORGED, "category": "camera"}],
               "voters": [{"name": "identity", "category": "camera", "probability": 0.97, "threshold": 0.5,
                           "vouches": True}]}
    inv.record_decision(mac, 10**9, Decision("camera", 0.97, "provisional", "m", f"identity: {FORGED}",
                                             {"packets": 3, "explain": explain}, ("identity",)))
    inv.record_decision(mac, 2 * 10**9, Decision("camera", 0.97, "provisional", "m", f"identity: {FORGED}",
                                                 {"packets": 4}, ("identity",)))
    inv.close()
    ui = WebUI(_View([rec]), inventory_path=inv_path)
    st_, body = _get(ui, f"/api/devices/{rec['mac']}")
    structured, prose = body["history"]
    assert structured["evidence"] == {"packets": 3} and structured["explained"]["identity"][0]["value"] == FORGED
    assert structured["explained"]["segments"] == []
    assert prose["explained"]["text"] == [f"identity: {FORGED}"] and prose["explained"]["segments"] == []


def test_traffic_rates_from_counters_and_a_reinstalled_entry():
    from controller_app.intents import CookieKind, cookie
    th = TrafficHistory(samples=4)
    ck = cookie(CookieKind.HOST, M1)
    edge = {M1: 7}.get
    assert th.add(7, [(2, ck, 10, 1000, 5.0), (3, ck, 20, 4000, 5.0)], 100.0, False, edge) == 1
    assert th.series(M1)["t"] == []                                      # one reading: no rate yet
    th.add(7, [(2, ck, 30, 3000, 15.0)], 110.0, True, edge)               # a reply in two parts
    th.add(7, [(3, ck, 60, 8000, 15.0), (3, cookie(CookieKind.HOST, M2), 1, 1, 1.0)], 110.0, False, edge)
    s = th.series(M1)
    assert s["t"] == [10.0] and s["tx_Bps"] == [200.0] and s["rx_Bps"] == [400.0]
    th.add(7, [(2, ck, 5, 500, 2.0), (3, ck, 70, 9000, 25.0)], 120.0, False, edge)   # tx entry re-installed
    s = th.series(M1)
    assert s["tx_Bps"][-1] == 250.0 and s["rx_Bps"][-1] == 100.0
    th.add(8, [(2, ck, 1000, 100000, 30.0)], 121.0, False, edge)         # another switch: not its edge
    for k in range(10):
        th.add(7, [(2, ck, 10 + k, 1000 + k, 30.0 + k)], 130.0 + k, False, edge)
    s = th.series(M1)
    assert len(s["t"]) == 4 and s["t"] == sorted(s["t"]) and s["t"][-1] == 39.0
    assert th.series(M2)["t"] == []                                       # M2 has no edge switch


# ------------------------------------------------------------------ the page's JSON (WebUI alone)


def _record(i: int, **kw) -> dict:
    cats = ["camera", "plug", "hub", None]
    stages = ["confirmed", "provisional", "unknown", None]
    r = {"mac": mac_to_str(0x0200000A0000 + i), "dpid": f"{1 + i % 2:016x}", "port": 1 + i % 5,
         "first_seen_ns": 1_700_000_000_000_000_000 + i * 10**9, "last_seen_ns": 1_700_000_100_000_000_000 - i * 10**9,
         "category": cats[i % 4], "confidence": 0.5 + (i % 5) / 10 if cats[i % 4] else 0.0,
         "stage": stages[i % 4], "model": "m", "mirroring": i % 4 == 3, "gateway": False,
         "enforced": {0: "block", 1: None, 2: "rate_limit_kbps=256", 3: None}[i % 4], "thin_answers": 0,
         "mirrored_packets": 0}
    r.update(kw)
    return r


class _View:
    def __init__(self, devices, overrides=None, digest="abc"):
        self.v = {"status": {"devices": len(devices)}, "devices": devices,
                  "policy": {"digest": digest, "overrides": overrides or {}, "categories": {"camera": "block"},
                             "default": "allow", "unknown": "rate_limit_kbps=512"}, "rules": []}

    def __call__(self):
        return self.v


def _get(ui, path, headers=None):
    raw, _, query = path.partition("?")
    r = ui.handle("GET", raw, query, {"Host": "127.0.0.1:8080", **(headers or {})}, None, "127.0.0.1")
    return r.status, json.loads(r.body) if r.ctype == "application/json" else r.body


def test_devices_json_sorts_filters_and_pages():
    devs = [_record(i) for i in range(40)]
    ui = WebUI(_View(devs, {devs[5]["mac"]: "category=hub"}))
    st_, body = _get(ui, "/api/devices")
    assert st_ == 200 and body["total"] == 40 and body["sort"] == "last_seen" and body["order"] == "desc"
    assert [r["mac"] for r in body["rows"]] == [d["mac"] for d in devs]           # last seen, newest first
    st_, body = _get(ui, "/api/devices?sort=confidence&order=desc&limit=5")
    confs = [r["confidence"] for r in body["rows"]]
    assert confs == sorted(confs, reverse=True) and len(confs) == 5 and body["matched"] == 40
    st_, body = _get(ui, "/api/devices?sort=category&limit=500")
    cats = [r["category"] for r in body["rows"]]
    assert cats[:30] == sorted(cats[:30]) and cats[30:] == [None] * 10              # undecided last
    st_, body = _get(ui, "/api/devices?category=camera&stage=confirmed")
    assert body["matched"] == 10 and {r["category"] for r in body["rows"]} == {"camera"}
    st_, body = _get(ui, "/api/devices?q=rate_limit")
    assert body["matched"] == 10 and all(r["enforced"] == "rate_limit_kbps=256" for r in body["rows"])
    st_, body = _get(ui, "/api/devices?pinned=1")
    assert [r["mac"] for r in body["rows"]] == [devs[5]["mac"]] and body["rows"][0]["pin"] == "category=hub"
    st_, body = _get(ui, f"/api/devices?q={devs[7]['mac'].replace(':', '')[-6:]}")
    assert [r["mac"] for r in body["rows"]] == [devs[7]["mac"]]
    st_, body = _get(ui, "/api/devices?category=undecided")
    assert body["matched"] == 10
    st_, body = _get(ui, "/api/devices?sort=mac&offset=35&limit=10")
    assert [r["mac"] for r in body["rows"]] == sorted(d["mac"] for d in devs)[35:]
    assert body["facets"]["category"] == {"camera": 10, "hub": 10, "plug": 10, "undecided": 10}
    assert body["rows"][0]["oui"] == "02:00:00" and body["rows"][0]["local"] is True
    for bad, msg in (("sort=colour", "sort: 'colour' is not one of"), ("order=up", "order: 'up'"),
                     ("limit=x", "offset and limit")):
        st_, body = _get(ui, f"/api/devices?{bad}")
        assert st_ == 400 and msg in body["error"]


def test_the_review_queue_holds_unknown_claims_only_and_long_provisional_devices():
    now = 1_700_010_000.0
    first = lambda s: int((now - s) * 1e9)  # noqa: E731 - first seen s seconds before the snapshot
    devs = [_record(0, stage="unknown", category=None, first_seen_ns=first(60)),
            _record(1, stage="provisional", claims_only=True, first_seen_ns=first(60)),
            _record(2, stage="provisional", category="hub", first_seen_ns=first(7300)),
            _record(3, stage="provisional", category="hub", first_seen_ns=first(600)),   # not long yet
            _record(4, stage="confirmed", claims_only=False),
            _record(5, stage="unknown", category=None),                               # pinned: settled
            _record(6, stage="unknown", category=None, gateway=True),
            _record(7, stage=None, category=None, mirroring=True)]                    # still learning
    view = _View(devs, {devs[5]["mac"]: "category=plug"})
    view.v["status"]["published"] = now
    ui = WebUI(view, review_after=7200)
    st_, body = _get(ui, "/api/review")
    assert st_ == 200 and body["total"] == 3
    assert [(i["device"]["mac"], i["why"]) for i in body["items"]] == [
        (devs[0]["mac"], "unknown"), (devs[1]["mac"], "claims only"), (devs[2]["mac"], "long provisional")]
    assert all(i["records"] == 0 and i["decision"] is None for i in body["items"])       # no inventory here
    assert [c["category"] for c in body["choices"]][:1] == ["camera"] and body["choices"][0]["action"] == "block"
    _, body = _get(ui, "/api/review?offset=2&limit=1")
    assert [i["why"] for i in body["items"]] == ["long provisional"] and body["total"] == 3


def test_vendor_hook_names_the_oui():
    devs = [_record(1, mac="a4:cf:12:00:00:01"), _record(2)]
    ui = WebUI(_View(devs), vendor_of=lambda mac: "Espressif Inc." if mac.startswith("a4:cf:12") else None)
    _, body = _get(ui, "/api/devices?sort=vendor")
    assert [(r["oui"], r["vendor"], r["local"]) for r in body["rows"]] == [("A4:CF:12", "Espressif Inc.", False),
                                                                           ("02:00:00", None, True)]
    _, body = _get(ui, "/api/devices?q=espressif")
    assert body["matched"] == 1


OUI_CSV = ("Registry,Assignment,Organization Name,Organization Address\n"
           "MA-L,A4CF12,Espressif Inc.,Shanghai CN\n"
           'MA-L,D073D5,"LIFI LABS MANAGEMENT PTY LTD",Sydney AU\n'
           "MA-L,70B3D5,IEEE Registration Authority,Piscataway US\n")
MAM_CSV = ("Registry,Assignment,Organization Name,Organization Address\n"
           "MA-M,70B3D51,Acme Sensors GmbH,Berlin DE\n")


def test_the_app_names_each_devices_oui_vendor_from_the_registry_loaded_once(tmp_path, monkeypatch):
    """As the app builds the page (``from_config`` without a vendor hook): each device's
    organisation from the IEEE registry files, the longest registered prefix first (an MA-M
    block inside an OUI), in the list, its sort and filter, and on the device's page; a
    locally administered MAC has none (the page says "randomised"); the registry is read once,
    not per request or snapshot."""
    from controller_app.config import AppConfig
    from controller_app.web import from_config
    from classifier.identity import oui
    (tmp_path / "oui.csv").write_text(OUI_CSV)
    (tmp_path / "mam.csv").write_text(MAM_CSV)
    monkeypatch.setenv("IOT_OUI_FILES", f"{tmp_path / 'oui.csv'}:{tmp_path / 'mam.csv'}")
    oui.default_registry.cache_clear()
    loads = []
    real_load = oui.OuiRegistry.load.__func__
    monkeypatch.setattr(oui.OuiRegistry, "load", classmethod(lambda cls, *a, **k: loads.append(1) or
                                                             real_load(cls, *a, **k)))
    try:
        devs = [_record(1, mac="a4:cf:12:00:00:01"), _record(2), _record(3, mac="70:b3:d5:10:00:07"),
                _record(4, mac="70:b3:d5:20:00:08"), _record(5, mac="d0:73:d5:12:8e:30")]
        view = _View(devs)
        cfg = AppConfig(policy_file=str(tmp_path / "policy.yaml"), inventory_db=str(tmp_path / "inv.sqlite"))
        ui = from_config(cfg, view)
        _, body = _get(ui, "/api/devices?sort=vendor")
        assert [(r["mac"], r["vendor"], r["local"]) for r in body["rows"]] == [
            ("70:b3:d5:10:00:07", "Acme Sensors GmbH", False),          # MA-M block, not the OUI's holder
            ("a4:cf:12:00:00:01", "Espressif Inc.", False),
            ("70:b3:d5:20:00:08", "IEEE Registration Authority", False),
            ("d0:73:d5:12:8e:30", "LIFI LABS MANAGEMENT PTY LTD", False),
            (devs[1]["mac"], None, True)]                                 # locally administered: last
        _, body = _get(ui, "/api/devices?q=lifi")
        assert [r["mac"] for r in body["rows"]] == ["d0:73:d5:12:8e:30"]
        st_, body = _get(ui, "/api/devices/a4:cf:12:00:00:01")
        assert st_ == 200 and body["device"]["vendor"] == "Espressif Inc." and body["device"]["local"] is False
        _, body = _get(ui, f"/api/devices/{devs[1]['mac']}")
        assert body["device"]["vendor"] is None and body["device"]["local"] is True
        view.v = dict(view.v, devices=list(devs))                         # a new snapshot
        for _ in range(3):
            _, body = _get(ui, "/api/devices?sort=vendor&order=desc")
        assert body["rows"][0]["vendor"] == "LIFI LABS MANAGEMENT PTY LTD"
        assert len(loads) == 1, f"the registry was read {len(loads)} times"
    finally:
        oui.default_registry.cache_clear()


def test_page_files_carry_a_content_security_policy_and_the_host_is_checked():
    ui = WebUI(_View([_record(1)]))
    for path in ("/ui/", "/ui/device", "/ui/app.js", "/ui/app.css"):
        r = ui.handle("GET", path, "", {"Host": "localhost:8080"}, None, "127.0.0.1")
        assert r.status == 200 and r.body and "script-src 'self'" in r.headers["Content-Security-Policy"]
    r = ui.handle("GET", "/api/devices", "", {"Host": "evil.example:8080"}, None, "127.0.0.1")
    assert r.status == 421
    st_, body = _get(ui, "/api/devices/zz:00")
    assert st_ == 400 and "not a MAC address" in body["error"]
    st_, body = _get(ui, "/api/devices/02:00:00:00:00:99")
    assert st_ == 404


def _pin(ui, method, mac, body=None, headers=None, ctype="application/json"):
    raw = b"" if body is None else json.dumps(body).encode()
    h = {"Host": "127.0.0.1:8080", "Content-Length": str(len(raw)), **({"Content-Type": ctype} if ctype else {}),
         **(headers or {})}
    r = ui.handle(method, f"/api/devices/{mac}/pin", "", h, lambda n: raw[:n], "127.0.0.1")
    return r.status, json.loads(r.body)


def test_pins_off_no_token_bad_token_cross_site_and_bad_requests_change_nothing(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(BASES["block"])
    tok = tmp_path / "tokens"
    tok.write_text("alice:" + "s" * 24 + "\n")
    mac = mac_to_str(0x0200000A0001)
    gw = mac_to_str(0x0200000A0002)
    view = _View([_record(1), _record(2, gateway=True)])
    off = WebUI(view)
    st_, body = _pin(off, "POST", mac, {"category": "camera"})
    assert st_ == 403 and "--web-pins" in body["error"]
    ui = WebUI(view, policy_file=str(policy), pins=True, tokens=Tokens.load(str(tok)), apply_wait=0)
    good = {"Authorization": "Bearer " + "s" * 24}
    cases = [
        ({}, {"category": "camera"}, "application/json", 401, "needs an operator's token"),
        ({"Authorization": "Bearer " + "x" * 24}, {"category": "camera"}, "application/json", 401, "token"),
        ({"Authorization": "Basic " + "s" * 24}, {"category": "camera"}, "application/json", 401, "token"),
        ({**good, "Origin": "http://evil.example"}, {"category": "camera"}, "application/json", 403, "another site"),
        (good, {"category": "camera"}, "application/x-www-form-urlencoded", 415, "JSON body"),
        (good, {"category": "camera"}, None, 415, "JSON body"),
        (good, {"category": "toaster"}, "application/json", 400, "category: 'toaster'"),
        (good, {"action": "{rate_limit_kbps: 0}"}, "application/json", 400, "rate_limit_kbps: expected an integer"),
    ]
    for headers, body, ctype, status, msg in cases:
        st_, out = _pin(ui, "POST", mac, body, headers, ctype)
        assert st_ == status and msg in out["error"], (headers, body, st_, out)
    st_, out = _pin(ui, "POST", gw, {"category": "camera"}, good)
    assert st_ == 400 and "gateway" in out["error"]
    st_, out = _pin(ui, "POST", "02:00:00:00:00:99", {"category": "camera"}, good)
    assert st_ == 404
    st_, out = _pin(ui, "DELETE", mac, None, {}, None)
    assert st_ == 401
    assert policy.read_text() == BASES["block"]                        # nothing changed
    # a good one: written, reported as not applied (nothing reloads here)
    st_, out = _pin(ui, "POST", mac, {"category": "camera"}, {**good, "Origin": "http://127.0.0.1:8080"})
    assert st_ == 200 and out["changed"] and out["who"] == "alice" and out["applied"] is False
    assert load_policy(str(policy)).overrides[mac_to_int(mac)] == Override(category="camera")
    st_, out = _pin(ui, "DELETE", mac, None, good, None)
    assert st_ == 200 and out["pin"] is None and policy.read_text() == BASES["block"]


# ------------------------------------------------------------------ the real app


@pytest.fixture
def web_app(tmp_path):
    from web_app import WebApp
    apps = []

    def make(**kw):
        folder = tmp_path / f"app{len(apps)}"
        folder.mkdir()
        a = WebApp(folder, **kw)
        apps.append(a)
        return a
    yield make
    for a in apps:
        a.stop()


def test_real_app_pin_is_applied_by_the_hot_reload_and_audited(web_app):
    from testing.fakeswitch import T_METER_MOD
    from web_app import A, B, C, GW, POLICY
    app = web_app()
    app.populate()
    assert app.devices()[A]["enforced"] == "block"
    # read-only without a token; the page's JSON is there
    st_, body = app.request("GET", "/api/devices?sort=mac")
    assert st_ == 200 and [r["mac"] for r in body["rows"]] == sorted([A, B, C, GW])
    st_, body = app.request("POST", f"/api/devices/{A}/pin", {"category": "plug"})
    assert st_ == 401 and app.policy.read_text() == POLICY
    st_, body = app.request("GET", "/api/session", headers=app.auth())
    assert body == {"pins_enabled": True, "operator": "alice", "token_presented": True,
                    "categories": body["categories"]}
    # pin A (a blocked camera) as a plug: rate-limited at 77 kbps on the switch
    st_, body = app.request("POST", f"/api/devices/{A}/pin", {"category": "plug"}, app.auth())
    assert st_ == 200 and body["applied"] and body["pin"] == "category=plug", body
    app.sw.wait_for(lambda r: any(m.type == T_METER_MOD and m.parsed["bands"] and m.parsed["bands"][0][1] == 77
                                  for m in r))
    app.wait(lambda: app.devices()[A]["enforced"] == "rate_limit_kbps=77", 10, "A rate-limited")
    assert load_policy(str(app.policy)).overrides == {mac_to_int(A): Override(category="plug")}
    assert app.policy.read_text().replace(f'{{"{A}": {{category: plug}}}}', "{}") == POLICY
    st_, dev = app.request("GET", f"/api/devices/{A}")
    assert dev["device"]["pin"] == "category=plug"
    entries = [(e["table"], e["priority"], e["match"], e["actions"]) for e in dev["rules"]["entries"]]
    meter = dev["rules"]["meters"][0]
    assert meter["rate"] == 77 and meter["unit"] == "kbps"
    assert entries == [(0, 100, f"eth_src={A}", f"meter:{meter['meter']}, goto_table:1"),
                       (1, 100, f"eth_dst={A}", f"meter:{meter['meter']}, goto_table:2")]
    assert dev["audit"][0]["who"] == "alice" and dev["audit"][0]["op"] == "pin"
    assert dev["audit"][0]["after"] == "category=plug" and dev["audit"][0]["client"] == "127.0.0.1"
    assert dev["history"][0]["explanation"] == "table says camera"
    assert '"event": "pin"' in app.text() and '"who": "alice"' in app.text()
    app.wait(lambda: len(app.request("GET", f"/api/devices/{A}")[1]["traffic"]["t"]) >= 2, 10, "traffic samples")
    tr = app.request("GET", f"/api/devices/{A}")[1]["traffic"]
    assert 900 < tr["tx_Bps"][-1] < 1100 and 1800 < tr["rx_Bps"][-1] < 2200      # the fake switch's rates
    # release: the file as it was, the camera blocked again
    st_, body = app.request("DELETE", f"/api/devices/{A}/pin", headers=app.auth())
    assert st_ == 200 and body["applied"] and body["pin"] is None
    assert app.policy.read_text() == POLICY
    app.wait(lambda: app.devices()[A]["enforced"] == "block", 10, "A blocked again")
    st_, audit = app.request("GET", "/api/audit")
    assert [a["op"] for a in audit] == ["release", "pin"]
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "controller_app.cli", "devices", "--db", str(app.inventory), "--audit"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == 2, out
    assert "alice" in lines[0] and A in lines[0] and "pinned category=plug" in lines[0]
    assert "alice" in lines[1] and "released category=plug" in lines[1]
    # the browser's / goes to the page; the JSON endpoints stay read-only
    st_, _ = app.request("PUT", "/devices", {"x": 1})
    assert st_ == 405


def test_real_app_pin_is_applied_without_the_file_watcher(web_app):
    """With the policy file's watcher off (SIGHUP only), a pin still takes effect: the page asks
    the event loop for the reload itself."""
    from web_app import A
    app = web_app(extra=("--policy-watch-interval", "0"))
    app.populate()
    st_, body = app.request("POST", f"/api/devices/{A}/pin", {"action": "{rate_limit_kbps: 99}"}, app.auth())
    assert st_ == 200 and body["applied"], body
    app.wait(lambda: app.devices()[A]["enforced"] == "rate_limit_kbps=99", 10, "the pinned action")
    reloads = [json.loads(ln[ln.index("{"):]) for ln in app.text().splitlines() if '"event": "policy_' in ln]
    assert [(e["event"], e["reason"]) for e in reloads] == [("policy_reloaded", "pin by alice")], reloads


def test_real_app_refuses_pins_when_off_and_to_start_with_pins_but_no_tokens(web_app, tmp_path):
    import subprocess
    import sys
    from web_app import A
    app = web_app(pins=False)
    app.populate()
    st_, body = app.request("POST", f"/api/devices/{A}/pin", {"category": "plug"}, app.auth())
    assert st_ == 403 and "off" in body["error"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    base = [sys.executable, "-m", "controller_app.manager", "--http-port", "-1", "--inventory-db",
            str(tmp_path / "i.sqlite"), "--ofp-tcp-listen-port", "0"]
    r = subprocess.run(base + ["--web-pins"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 1 and "--web-pins: needs --web-token-file" in r.stderr
    weak = tmp_path / "weak"
    weak.write_text("alice:short\n")
    r = subprocess.run(base + ["--web-pins", "--web-token-file", str(weak)], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 1 and f"{weak}:1: the token of 'alice' is 5 characters" in r.stderr


# ------------------------------------------------------------------ the Grafana dashboard


def _dashboard_queries() -> list[str]:
    dash = json.loads((ROOT / "grafana" / "dashboard.json").read_text())
    exprs = []

    def walk(o):
        if isinstance(o, dict):
            if isinstance(o.get("expr"), str):
                exprs.append(o["expr"])
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(dash)
    return exprs


def test_every_metric_the_dashboard_queries_is_in_the_controllers_metrics(web_app):
    from prometheus_client.parser import text_string_to_metric_families
    from web_app import A
    exprs = _dashboard_queries()
    assert len(exprs) >= 8
    app = web_app()
    app.populate()
    app.request("POST", f"/api/devices/{A}/pin", {"category": "plug"}, app.auth())      # a reload, a pin
    app.request("POST", f"/api/devices/{A}/pin", {"category": "plug"})                  # a refusal
    from testing.fakeswitch import packet_in
    from controller_app.intents import CookieKind, Table, cookie
    app.sw.send(packet_in(b"\x01\x02", 2, cookie(CookieKind.MIRROR, mac_to_int(A)), int(Table.MIRROR), 60))

    def read_samples():
        out = {}
        for fam in text_string_to_metric_families(app.request("GET", "/metrics")[1]):
            for s in fam.samples:
                out.setdefault(s.name, set()).update(s.labels)
        return out
    samples = app.wait(lambda: (lambda s: s if {"iot_policy_reloads_total", "iot_errors_total", "iot_pins_total"}
                                <= set(s) else None)(read_samples()), 10, "a policy reload, a pin and an error counted")
    used = set()
    for e in exprs:
        for name in re.findall(r"\b(iot_[a-z_]+)\b", e):
            used.add(name)
            assert name in samples, f"the dashboard queries {name} ({e}); /metrics has {sorted(samples)}"
        for m in re.finditer(r"\b(iot_[a-z_]+)\{([^}]*)\}", e):
            for label in re.findall(r"(\w+)\s*=~?", m.group(2)):
                assert label in samples[m.group(1)], f"{m.group(1)} has no label {label!r} ({e})"
        for m in re.finditer(r"by \(([^)]*)\)", e):
            names = re.findall(r"\b(iot_[a-z_]+)\b", e)
            for label in (x.strip() for x in m.group(1).split(",")):
                assert any(label in samples[n] for n in names), f"no metric of {e!r} has label {label!r}"
    for wanted in ("iot_devices", "iot_decisions_total", "iot_packet_ins_total", "iot_learning_devices",
                   "iot_rule_changes_total", "iot_policy_reloads_total", "iot_events_total"):
        assert wanted in used, f"the dashboard does not show {wanted}"
    # issue 20: new devices, blocked and limited devices; counters that may not have counted yet say 0
    assert any('event="new_device"' in e for e in exprs) and any('action=~"block|rate_limit"' in e for e in exprs)
    for e in exprs:
        if "iot_errors_total" in e or "iot_pins_total" in e or "increase(" in e and "by (" not in e:
            assert "vector(0)" in e, f"{e!r} shows 'No data' rather than 0 before its counter first moves"
