"""The compiled public knowledge: its build from the pinned sources (here from small archives laid
out as the real packages are), its provenance, matching, explain and check."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from classifier.capture.labels import CATEGORIES
from classifier.capture.packets import mac_to_int
from classifier.identity.knowledge import KNOWLEDGE_FILE, Knowledge, default_knowledge, knowledge_verdict
from classifier.knowledge import build as kb
from classifier.knowledge.text import Vocabulary, model_pieces, tokens


# --------------------------------------------------------------------------- small source archives

HA_DHCP = '''DHCP: list[dict[str, str | bool]] = [
    {"domain": "camco", "hostname": "camco-*", "macaddress": "A8BBCC*"},
    {"domain": "camco", "macaddress": "5CCF7F*"},
    {"domain": "bulbco", "macaddress": "DDEEFF*"},
    {"domain": "bulbco", "registered_devices": True},
]
'''
HA_ZEROCONF = '''ZEROCONF = {
    "_bulbco._tcp.local.": [{"domain": "bulbco"}],
    "_http._tcp.local.": [{"domain": "camco", "name": "camco*"}],
}
HOMEKIT = {"BC100": {"always_discover": True, "domain": "bulbco"}}
'''
HA_SSDP = '''SSDP = {
    "multico": [{"st": "urn:multico-com:device:Thing:1"}, {"manufacturer": "MultiCo"}],
}
'''


def _ha_wheel(path: Path) -> Path:
    manifests = {
        "camco": ({"domain": "camco", "name": "CamCo"}, ["camera", "sensor"]),
        "bulbco": ({"domain": "bulbco", "name": "BulbCo Lights"}, ["light", "binary_sensor"]),
        "multico": ({"domain": "multico", "name": "MultiCo"}, ["light", "switch", "camera", "button"]),
        "weatherco": ({"domain": "weatherco", "name": "WeatherCo", "integration_type": "service"}, ["sensor"]),
    }
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("homeassistant/generated/dhcp.py", HA_DHCP)
        z.writestr("homeassistant/generated/zeroconf.py", HA_ZEROCONF)
        z.writestr("homeassistant/generated/ssdp.py", HA_SSDP)
        z.writestr("homeassistant/generated/integrations.json", json.dumps({"integration": {
            "camco_brand": {"name": "Camco Vision", "integration_type": "virtual", "supported_by": "camco"}}}))
        for d, (m, plats) in manifests.items():
            z.writestr(f"homeassistant/components/{d}/manifest.json", json.dumps(m))
            for p in plats + ["__init__", "config_flow"]:
                z.writestr(f"homeassistant/components/{d}/{p}.py", "")
    return path


def _wheel(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def _kasa_wheel(path: Path) -> Path:
    meta = ("Name: python-kasa\n\n## Supported devices\n### Supported Kasa devices\n"
            "- **Plugs**: HS100, HS110[^1], KP1\n- **Bulbs**: KL110\n- **Hub-Connected Devices[^3]**: KE100\n")
    return _wheel(path, {"python_kasa-0.12.0.dist-info/METADATA": meta})


def _pywemo_wheel(path: Path) -> Path:
    disc = ('def device_from_uuid_and_location(uuid, location):\n'
            '    if uuid.startswith("uuid:Socket"):\n        return Switch(location)\n'
            '    if uuid.startswith("uuid:Bridge"):\n        return Bridge(location)\n'
            '    if uuid.startswith("uuid:Gizmo"):\n        return Gizmo(location)\n')
    files = {"pywemo/discovery.py": disc}
    for cls in ("Switch", "Bridge", "Gizmo"):
        files[f"pywemo/ouimeaux_device/{cls.lower()}.py"] = f"class {cls}(Device):\n    pass\n"
    return _wheel(path, files)


def _aiohomekit_wheel(path: Path) -> Path:
    return _wheel(path, {"aiohomekit/model/categories.py":
                         "import enum\nclass Categories(enum.IntFlag):\n    OTHER = 1\n    BRIDGE = 2\n    LIGHTBULB = 5\n"
                         "    IP_CAMERA = 17\n    ROUTER = 33\n"})


def _psl_wheel(path: Path) -> Path:
    return _wheel(path, {"publicsuffixlist/public_suffix_list.dat":
                         "// ===BEGIN ICANN DOMAINS===\ncom\n// ===BEGIN PRIVATE DOMAINS===\n*.compute.cloudhost.com\n"
                         "s3.cloudhost.com\nexample.io\n"})


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sources")
    paths = {"homeassistant": _ha_wheel(tmp / "ha.whl"), "python-kasa": _kasa_wheel(tmp / "kasa.whl"),
             "pywemo": _pywemo_wheel(tmp / "pywemo.whl"), "aiohomekit": _aiohomekit_wheel(tmp / "aio.whl"),
             "publicsuffixlist": _psl_wheel(tmp / "psl.whl")}
    sources = [s for s in kb.SOURCES if s.package in paths]
    vendors = {"5CCF7F": "espressif", "A8BBCC": "camco", "DDEEFF": "bulbco"}
    doc = kb.build(paths, lambda p: vendors.get(p[:6]), sources=sources)
    return doc, Knowledge(doc)


def _rows(doc, **want):
    return [r for r in doc["rows"] if all(r.get(k) == v or r["pattern"].get(k) == v for k, v in want.items())]


def test_build_reads_home_assistant_matchers_with_categories_from_platforms(small_build):
    doc, _ = small_build
    strict = _rows(doc, match="dhcp")
    assert [(r["pattern"], r["categories"]) for r in strict] == [({"hostname": "camco-*", "mac": "A8BBCC"},
                                                                   {"camera": 1.0})]
    assert strict[0]["source"] == {"package": "homeassistant", "version": "2024.3.3",
                                   "file": "homeassistant/generated/dhcp.py", "field": "DHCP[0]"}
    # sensor platforms count only when alone; button names no kind of device; three kinds spread
    assert _rows(doc, match="dhcp_mac", mac="DDEEFF")[0]["categories"] == {"light": 1.0}
    multi = _rows(doc, match="ssdp")[0]
    assert multi["categories"] == pytest.approx({"camera": 1 / 3, "plug": 1 / 3, "light": 1 / 3})
    assert multi["pattern"] == {"type": "urn:multico-com:device:thing:1"}
    # a MAC prefix of a Wi-Fi module maker never votes alone; registered-devices and description-only
    # matchers are skipped, and said so
    assert not _rows(doc, match="dhcp_mac", mac="5CCF7F")
    assert any("module maker" in k for k in doc["skipped"]) and any("description" in k for k in doc["skipped"])
    assert _rows(doc, match="homekit_model")[0]["pattern"] == {"model": "bc100"}
    assert {r["pattern"]["type"] for r in _rows(doc, match="zeroconf")} == {"_bulbco._tcp"}
    assert _rows(doc, match="zeroconf_specific")[0]["pattern"] == {"type": "_http._tcp", "name": "camco*"}


def test_build_names_integrations_by_their_names_and_skips_services(small_build):
    doc, _ = small_build
    names = {r["pattern"]["name"]: r for r in _rows(doc, match="name") if r["source"]["package"] == "homeassistant"}
    # the domain id stands for its brand only where it is the integration's name
    assert "camco" in names and "bulbco lights" in names and "bulbco" not in names
    assert "weatherco" not in names                      # a service, not a device
    assert names["camco vision"]["categories"] == {"camera": 1.0}     # a virtual brand, by its supporter


def test_build_reads_libraries_model_tables_and_classes(small_build):
    doc, _ = small_build
    kasa = {r["pattern"]["model"]: r["categories"] for r in _rows(doc, match="model")}
    assert kasa == {"hs100": {"plug": 1.0}, "hs110": {"plug": 1.0}, "kl110": {"light": 1.0}}   # KP1 too short
    assert any("hub-connected" in k for k in doc["skipped"])
    wemo = {r["pattern"]["prefix"]: r["categories"] for r in _rows(doc, match="uuid_prefix")}
    assert wemo == {"uuid:socket": {"plug": 1.0}, "uuid:bridge": {"hub": 1.0}}   # Gizmo names no category
    hk = {r["pattern"]["code"]: r["categories"] for r in _rows(doc, match="homekit_category")}
    assert hk == {2: {"hub": 1.0}, 5: {"light": 1.0}, 17: {"camera": 1.0}}
    assert any("33 ROUTER" in k for k in doc["skipped"])
    assert {r["pattern"]["suffix"] for r in _rows(doc, match="stop") if r["source"]["package"] == "publicsuffixlist"} \
        == {"cloudhost.com", "example.io"}


def test_every_row_names_its_source_and_only_known_categories(small_build):
    doc, _ = small_build
    for r in doc["rows"]:
        assert set(r["source"]) == {"package", "version", "file", "field"} and all(r["source"].values()), r
        assert all(c in CATEGORIES for c in r["categories"]), r
        if r["categories"]:
            assert sum(r["categories"].values()) == pytest.approx(1.0, abs=1e-5), r
    assert len({r["id"] for r in doc["rows"]}) == len(doc["rows"])


def test_small_build_matches_what_its_sources_say(small_build):
    _, k = small_build
    def fired(recs, mac):
        return {h.rule.split("-0")[0] for h in k.hits(recs, mac_to_int(mac))}
    assert knowledge_verdict([(0, "dhcp.hostname", "camco-1234")], mac_to_int("a8:bb:cc:00:00:01"), k) == "camera"
    # Home Assistant's rule needs the host name and the MAC prefix; elsewhere only the brand's name
    # (read as a word, weaker) fires
    assert fired([(0, "dhcp.hostname", "camco-1234")], "a8:bb:cc:00:00:01") == {"ha-dhcp", "ha-name"}
    assert fired([(0, "dhcp.hostname", "camco-1234")], "00:11:22:00:00:01") == {"ha-name"}
    assert knowledge_verdict([(0, "mdns.txt", "md=BC100-2")], None, k) == "light"
    assert knowledge_verdict([(0, "ssdp.type", "uuid:Socket-1_0-2215")], None, k) == "plug"
    assert knowledge_verdict([(0, "ssdp.type", "urn:multico-com:device:Thing:1")], None, k) is None   # spread
    assert knowledge_verdict([(0, "dns.query", "api.camco.cloudhost.com")], None, k) is None   # shared infrastructure
    assert knowledge_verdict([(0, "dns.query", "api.camco.com")], None, k) == "camera"         # the brand's own


def test_build_refuses_a_file_that_is_not_the_pinned_one(tmp_path):
    src = kb.Source("pywemo", "2.1.2", "pywemo-2.1.2-py3-none-any.whl", "0" * 64, "MIT", "test")
    _pywemo_wheel(tmp_path / src.filename)
    with pytest.raises(kb.KnowledgeBuildError, match="sha256"):
        kb.fetch(tmp_path, [src])


def test_build_names_a_missing_source_file(tmp_path):
    with pytest.raises(kb.KnowledgeBuildError, match="no file for"):
        kb.build({}, lambda p: None, sources=[kb.SOURCES[0]])
    bad = tmp_path / "broken.whl"
    bad.write_bytes(b"not an archive")
    with pytest.raises(kb.KnowledgeBuildError, match="neither a wheel nor an sdist"):
        kb.Archive(bad)


# --------------------------------------------------------------------------- the shipped knowledge


def test_shipped_knowledge_is_compiled_from_the_pinned_sources_only():
    doc = json.loads(KNOWLEDGE_FILE.read_text())
    pinned = {s.package: s.version for s in kb.SOURCES}
    assert {s["package"]: s["version"] for s in doc["sources"] if s["package"] in pinned} == pinned
    allowed = set(pinned) | {"iot-sdn-classifier", "IEEE 802"}
    for r in doc["rows"]:
        src = r["source"]
        assert src["package"] in allowed and all(src.values()), r
        if src["package"] in pinned:
            assert src["version"] == pinned[src["package"]], r
        assert all(c in CATEGORIES for c in r["categories"]), r
    assert doc["digest"] == kb.digest(doc)


def test_shipped_knowledge_rebuilds_identically_from_the_registry(tmp_path_factory):
    """The only way rows enter is the build: rebuilt from the pinned sources (downloaded from the
    package registry, checked against their sha256) it gives the shipped file's rows."""
    import os
    cache = os.environ.get("IOT_KNOWLEDGE_CACHE") or str(tmp_path_factory.mktemp("knowledge-sources"))
    try:
        paths = kb.fetch(Path(cache))
    except kb.KnowledgeBuildError as exc:
        pytest.skip(f"the package registry cannot be reached from here: {exc}")
    from classifier.identity.commands import oui_vendor_of_registry
    doc = kb.build(paths, oui_vendor_of_registry())
    shipped = json.loads(KNOWLEDGE_FILE.read_text())
    assert kb.digest(doc) == shipped["digest"]
    assert doc["rows"] == shipped["rows"]


@pytest.mark.parametrize("kind, value, category", [
    ("mdns.txt", "ci=5", "light"),
    ("mdns.txt", "ci=17", "camera"),
    ("ssdp.type", "urn:schemas-upnp-org:device:BinaryLight:1", "light"),
    ("ssdp.type", "urn:Belkin:device:bridge:1", "hub"),             # a device type of another namespace
    ("ssdp.type", "hnap:NetworkCamera", "camera"),                  # an HNAP type
    ("mdns.service", "_spotify-connect._tcp", "speaker"),
    ("dhcp.hostname", "Front-Doorbell-3", "camera"),
    ("dhcp.hostname", "KitchenSmartPlug", "plug"),                  # a compound: smart + plug
    ("mdns.host", "iotcam5b0e", "camera"),                          # a short word in a compound: iot + cam
    ("mdns.instance", "Hallway Thermostat", "sensor"),
    ("dns.query", "scalews.example.net", "sensor"),                 # a word inside a DNS label
    ("dhcp.hostname", "HS110(EU)", "plug"),                         # python-kasa's model table
    ("dhcp.hostname", "KL110", "light"),
    ("mdns.txt", "md=Google Home Mini", "speaker"),                 # pychromecast's Cast models
    ("mdns.txt", 'irobotmcs={"ver":"3"}', "appliance"),             # roombapy's discovery key
    ("dhcp.hostname", "Roomba-123456", "appliance"),
    ("dhcp.hostname", "shellyplug-s-7A1B", "plug"),                 # a brand's name beside a word: shelly + plug
    ("dhcp.hostname", "Samsung-TV", "appliance"),
])
def test_knowledge_names_what_a_record_says(kind, value, category):
    k = default_knowledge()
    hits = k.record_hits(kind, value)
    assert hits and k.verdict(hits) == category, [h.describe() for h in hits]


@pytest.mark.parametrize("kind, value", [
    ("mdns.txt", "ci=1"), ("mdns.txt", "ci=x"), ("dhcp.hostname", "disabled"),
    ("ssdp.type", "urn:schemas-upnp-org:device:InternetGatewayDevice:1"),
    ("ssdp.location", "http://10.0.0.2/cam.xml"),
    ("dhcp.hostname", "Lightify-7B5F6B"),                           # light + ify is no compound
    ("dns.query", "android.clients.google.com"),                    # shared infrastructure
    ("dns.query", "euw1-device-cloudgateway.iot.example.com"),      # control words do not count in DNS
    ("dns.query", "plug.example.cn"),
    ("mdns.txt", "version=0124"),                                   # a TXT key is not a name
    ("dhcp.hostname", "DCH-S220"),                                  # a later part of a number is no model
])
def test_knowledge_stays_silent_where_nothing_names_a_category(kind, value):
    k = default_knowledge()
    assert k.verdict(k.record_hits(kind, value)) is None


def test_an_integration_spanning_categories_abstains_until_something_specific_decides():
    k = default_knowledge()
    tuya = [(0, "dns.query", "a3.tuyaus.com")]
    assert k.verdict(k.hits(tuya)) is None and sum(k.scores(k.hits(tuya)).values()) > 0
    assert k.verdict(k.hits(tuya + [(1, "dhcp.hostname", "smart-bulb-7")])) == "light"


def test_knowledge_scores_count_each_rule_once():
    k = default_knowledge()
    recs = [(i, "dhcp.hostname", "garage-camera") for i in range(50)] + [(99, "mdns.txt", "ci=17")]
    s = k.scores(k.hits(recs))
    assert s["camera"] == pytest.approx(2.0 + 3.0)


def test_a_randomised_mac_is_evidence_of_a_phone_or_computer():
    k = default_knowledge()
    hits = k.mac_hits(mac_to_int("da:a1:19:00:00:01"))
    assert [(h.category, h.kind, h.value) for h in hits] == [("non-iot", "mac", "da:a1:19:00:00:01")]
    assert k.mac_hits(None) == []
    assert knowledge_verdict([], mac_to_int("da:a1:19:00:00:01")) == "non-iot"


def test_vocabulary_compounds_and_model_pieces():
    v = Vocabulary({"plug": ("plug", 2.0, False), "cam": ("camera", 2.0, True), "light": ("light", 2.0, False)},
                   frozenset({"smart", "iot", "wifi"}))
    assert v.match("smartplug") == "plug" and v.match("wifismartplug") == "plug" and v.match("iotcam") == "cam"
    assert v.match("lights") == "light" and v.match("lightify") is None and v.match("scam") is None
    assert v.match("camel") is None and v.match("camco") is None
    assert [w for w, _, _ in v.hits("plug.example.com", dns=True)] == []
    assert v.category_of("OutdoorPlug") == ("plug", "plug")
    assert tokens("AmazonPlug14US") == ["amazon", "plug", "us"]
    assert model_pieces("HS110(EU)") == ["hs110", "eu"]
    assert model_pieces("DCH-S220 setup") == ["dchs220", "dch", "setup"]


# --------------------------------------------------------------------------- the command


def test_explain_prints_each_rule_with_its_source(capsys):
    from classifier.cli import main
    assert main(["knowledge", "explain", "dhcp.hostname=KL110", "mdns.txt=ci=5"]) == 0
    out = capsys.readouterr().out
    assert "python-kasa 0.12.0" in out and "aiohomekit 4.0.1, aiohomekit/model/categories.py, Categories.LIGHTBULB" in out
    assert "verdict: light" in out
    assert main(["knowledge", "explain", "--json", "dhcp.hostname=nothing-here"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rules"] == [] and doc["verdict"] is None
    assert main(["knowledge", "explain", "hostname"]) == 1
    assert "expected KIND=VALUE" in capsys.readouterr().err
    assert main(["knowledge", "explain", "dhcp.name=x"]) == 1
    assert "unknown kind 'dhcp.name'" in capsys.readouterr().err


def test_check_on_generated_devices_that_name_themselves(tmp_path, capsys):
    from classifier.cli import main
    from testing.synth import IDENTITY, default_network, write_devices_csv, write_network_capture
    net = default_network(identity=True)
    write_network_capture(str(tmp_path / "net.pcap"), net, 120.0, seed=3)
    write_devices_csv(str(tmp_path / "devices.csv"), net)
    assert main(["knowledge", "check", str(tmp_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    by_cat = {r["category"]: r for r in doc["devices"]}
    for cat in IDENTITY:
        assert by_cat[cat]["status"] == "right", by_cat[cat]
    assert by_cat["non-iot"]["status"] == "right"          # the generated phone's randomised MAC
    assert doc["summary"]["wrong"] == 0 and doc["summary"]["devices"] == len(net.devices)
    assert doc["sources"]["aiohomekit"]["right"] == len(IDENTITY)


@pytest.mark.shared
def test_knowledge_alone_on_the_shared_devices(datasets):
    """What the compiled knowledge names on the 60 shared devices (README, docs/identity.md). It is
    a measurement: no rule was written for any of them."""
    from classifier.identity.check import check_captures
    doc = check_captures([str(datasets)])
    s = doc["summary"]
    assert s["devices"] == 60
    assert s["right"] >= 30 and s["wrong"] <= 3, s
