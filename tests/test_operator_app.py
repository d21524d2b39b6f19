"""Issue 20 on the real app (``ryu-manager controller_app``, a fake engine) driven by a fake switch:
names and addresses from what devices say, found by the filter; labels in the inventory; the
timeline, its webhook and its metrics; the review queue, a suggestion accepted; a switch that goes
away; an unknown MAC."""

from __future__ import annotations

import sqlite3
import time

import pytest

from test_operator import Receiver
from web_app import A, B, C, GW, IPS, NAMED_MODEL, WebApp, named_site

pytestmark = pytest.mark.slow
TABLE = NAMED_MODEL


@pytest.fixture
def site(tmp_path):
    rx = Receiver()
    try:
        with named_site(tmp_path, ("--webhook-url", rx.url, "--review-after", "3600")) as app:
            app.rx = rx
            yield app
    finally:
        rx.close()


def rows(app, **q):
    from urllib.parse import urlencode
    st, body = app.request("GET", "/api/devices?" + urlencode(q))
    assert st == 200, body
    return {r["mac"]: r for r in body["rows"]}


def test_names_addresses_and_labels_are_listed_and_found(site):
    app = site
    r = app.wait(lambda: (lambda rs: rs if rs.get(C, {}).get("names") and rs[C]["addresses"] else None)(rows(app)),
                 15, "C's name and address")
    assert r[C]["names"] == [{"kind": "dhcp.hostname", "source": "DHCP", "value": "Roomba-3F8A"}]
    assert r[C]["addresses"] == [IPS[C]] and r[B]["names"] == [] and r[B]["label"] is None
    assert list(rows(app, q="roomba")) == [C]                      # found by what it calls itself
    assert list(rows(app, q=IPS[A])) == [A]                        # and by its address
    assert app.devices()[C]["names"][0]["value"] == "Roomba-3F8A"  # /devices too
    # a device that says nothing about itself: its address from the packets it is decided on
    assert r[B]["addresses"] == []
    app.mirror(B, 4)
    app.wait(lambda: rows(app)[B]["addresses"] == [IPS[B]], 15, "B's address, read from its decision's packets")
    # a label: the operator's, in the inventory, found by the filter
    st, body = app.request("PUT", f"/api/devices/{B}/label", {"label": "Kitchen plug"})
    assert st == 401
    st, body = app.request("PUT", f"/api/devices/{B}/label", {"label": "bad\u0007"}, app.auth())
    assert st == 400 and body["error"] == "label: control character U+0007 at 4 is not allowed"
    st, body = app.request("PUT", f"/api/devices/{B}/label", {"label": "<b>Kitchen plug</b>"}, app.auth())
    assert st == 200 and body["label"] == "<b>Kitchen plug</b>", body
    app.wait(lambda: rows(app, q="kitchen").get(B, {}).get("label") == "<b>Kitchen plug</b>", 10, "the label")
    assert list(rows(app, sort="name")) [0] == B                    # "<b>kitchen..." sorts first by name
    db = sqlite3.connect(str(app.inventory))
    assert db.execute("SELECT label, who FROM labels").fetchall() == [("<b>Kitchen plug</b>", "alice")]
    app.wait(lambda: db.execute("SELECT address FROM addresses WHERE mac=?", (C,)).fetchall() == [(IPS[C],)], 15,
             "C's address in the inventory")
    db.close()
    assert "Kitchen" not in app.policy.read_text()                 # labels are not policy
    st, body = app.request("PUT", f"/api/devices/{A}/label", {"nope": 1}, app.auth())
    assert st == 400 and "expected {\"label\": TEXT}" in body["error"]


def test_timeline_webhook_and_metrics(site):
    app = site
    def kinds():
        return [(e["event"], e["mac"]) for e in app.request("GET", "/api/events")[1]["events"]]
    app.wait(lambda: ("unknown", C) in kinds(), 10, "the unknown event")
    k = kinds()
    assert {("new_device", m) for m in (A, B, C)} <= set(k) and ("new_device", GW) not in k
    assert ("category_changed", A) in k and ("confirmed", A) in k and ("switch_up", None) in k
    app.wait(lambda: {b["mac"] for _, b in app.rx.bodies if b["event"] == "new_device"} == {A, B, C}, 15,
             "the webhook's new-device events")
    ctype, ev = next(x for x in app.rx.bodies if x[1]["event"] == "confirmed")
    assert ctype == "application/json" and ev["mac"] == A and ev["to"] == "camera" and ev["id"] > 0
    st, page = app.request("GET", f"/api/events?mac={A}&limit=2")
    assert st == 200 and len(page["events"]) == 2 and all(e["mac"] == A for e in page["events"])
    assert app.request("GET", "/api/events?since=x")[0] == 400
    metrics = app.request("GET", "/metrics")[1]
    assert 'iot_events_total{event="new_device"} 3.0' in metrics
    assert 'iot_events_total{event="policy_reloaded"} 0.0' in metrics        # 0, not absent
    assert 'iot_devices{action="block",category="camera",stage="confirmed"} 1.0' in metrics
    assert 'iot_devices{action="rate_limit",category="unknown",stage="unknown"} 1.0' in metrics
    assert app.request("GET", "/status")[1]["webhook"]["sent"] >= 5


def test_the_review_queue_suggests_in_plain_words_and_a_suggestion_is_accepted(site):
    app = site
    st, q = app.request("GET", "/api/review")
    assert st == 200 and [i["device"]["mac"] for i in q["items"]] == [C] and q["total"] == 1
    item = q["items"][0]
    sugg = {s["category"]: s for s in item["suggestions"]}
    assert item["why"] == "unknown" and set(sugg) == {"appliance", "non-iot"}   # the test MACs are randomised ones
    assert [e["text"] for e in sugg["appliance"]["evidence"]][0] == "announces itself as 'Roomba-3F8A' (DHCP)"
    assert [e["text"] for e in sugg["non-iot"]["evidence"]] == [
        "has a randomised MAC address, as phones and computers do"]
    assert sugg["appliance"]["action"] == "allow" and item["records"] >= 2
    assert app.request("GET", "/api/devices?limit=1")[1]["status"]["review"] == 1
    assert app.devices()[C]["enforced"] == "rate_limit_kbps=512"
    st, body = app.request("POST", f"/api/devices/{C}/pin", {"category": "appliance"}, app.auth())
    assert st == 200 and body["applied"] and body["pending"] is None, body
    app.wait(lambda: app.devices()[C]["enforced"] == "allow", 10, "C's rules changed")
    assert app.request("GET", "/api/review")[1]["total"] == 0
    assert ("pin", C) in [(e["event"], e["mac"]) for e in app.request("GET", "/api/events")[1]["events"]]
    # released: on the timeline with the reloads the pins caused, back in the queue
    st, body = app.request("DELETE", f"/api/devices/{C}/pin", None, app.auth())
    assert st == 200, body
    app.wait(lambda: (lambda k: ("release", C) in k and k.count(("policy_reloaded", None)) >= 2)(
        [(e["event"], e["mac"]) for e in app.request("GET", "/api/events")[1]["events"]]), 10, "release and reloads")
    app.wait(lambda: app.request("GET", "/api/review")[1]["total"] == 1, 10, "C back in the queue")
    assert 'iot_events_total{event="release"} 1.0' in app.request("GET", "/metrics")[1]
    # the device page: a plain sentence per decision, the history as changes, its own timeline
    st, dev = app.request("GET", f"/api/devices/{A}")
    assert dev["history"][-1]["summary"].startswith("Named camera (confirmed, 95% sure)")
    assert dev["changes"][0]["category"] == "camera" and dev["changes"][0]["from"] is None
    assert {e["event"] for e in dev["events"]} >= {"new_device", "category_changed", "confirmed"}
    # the engine here has no learn_site: nothing learned, nothing broken
    assert '"event": "site_learned"' not in app.text()


def test_a_switch_that_is_down_is_shown_and_a_pin_then_is_pending(site):
    app = site
    app.sw.close()
    app.sw = None
    app.wait(lambda: app.request("GET", "/status")[1]["switches"] == [], 15, "the switch gone")
    app.wait(lambda: rows(app)[A]["switch_up"] is False, 10, "A's switch down on its row")
    assert rows(app)[GW]["switch_up"] is False
    st, body = app.request("POST", f"/api/devices/{A}/pin", {"category": "plug"}, app.auth())
    assert st == 200 and body["pending"] == "switch down" and "pending: switch down" in body["message"], body
    assert "in force" not in body["message"]
    kinds = [e["event"] for e in app.request("GET", "/api/events")[1]["events"]]
    assert "switch_down" in kinds
    st, body = app.request("GET", "/api/devices/02:00:00:00:99:99")
    assert st == 404 and "has not seen it" in body["error"]


def test_names_labels_and_the_timeline_survive_a_restart(tmp_path):
    app = WebApp(tmp_path, model=TABLE)
    try:
        app.connect()
        for mac in (GW, A):
            app.learn(mac)
        app.wait(lambda: app.devices().get(A, {}).get("mirroring"), 20, "A mirrored")
        app.announce(A, "porch-cam-01", "cloud.example.com")
        app.mirror(A, 5)
        app.wait(lambda: app.devices()[A]["stage"] == "confirmed", 20, "A confirmed")
        app.request("PUT", f"/api/devices/{A}/label", {"label": "Porch"}, app.auth())
        app.wait(lambda: rows(app)[A]["names"] and rows(app)[A]["addresses"], 15, "names and addresses")
        n_events = len(app.request("GET", "/api/events")[1]["events"])
    finally:
        app.stop()
    app = WebApp(tmp_path, model=TABLE)
    try:
        app.connect()
        app.learn(A)
        r = app.wait(lambda: rows(app).get(A), 20, "A back")
        assert r["label"] == "Porch" and r["names"][0]["value"] == "porch-cam-01" and r["addresses"] == [IPS[A]]
        evs = app.request("GET", "/api/events")[1]["events"]
        assert len(evs) >= n_events and ("new_device", A) not in [(e["event"], e["mac"]) for e in evs[:2]]
        assert [e["mac"] for e in evs if e["event"] == "new_device"].count(A) == 1    # not new the second time
        time.sleep(0.1)
    finally:
        app.stop()


def test_the_running_controller_learns_a_pin_and_names_a_second_unit_without_a_restart(tmp_path):
    """A pinned device is this site's example: the engine (one that learns from the site, as the
    project's does) folds it in, in its worker, and a second unit of the model it could not name
    is named at its next decision — no restart, no retraining of anything else."""
    from fake_engine import qorvane_records
    from testing.fakeswitch import packet_in
    from testing.synth import dhcp_request, dns_query, ether, udp4
    from controller_app.intents import CookieKind, Table, cookie
    units = {"00:aa:05:00:00:11": (1, "192.168.1.51", 1), "00:aa:05:00:00:22": (2, "192.168.1.52", 2)}
    app = WebApp(tmp_path, model={"min_packets": 3}, extra=("--engine", "fake_engine:make_site",
                                                            "--identity-probes", "0"))
    try:
        app.connect()
        app.learn(GW)
        for mac, (unit, ip, port) in units.items():
            from testing.synth import arp_request
            frame = arp_request(mac, ip, IPS[GW])
            app.sw.send(packet_in(frame, port, cookie(CookieKind.LEARN), int(Table.ETH_SRC), len(frame)))
        app.wait(lambda: all(app.devices().get(m, {}).get("mirroring") for m in units), 20, "both units mirrored")

        def say(mac):
            unit, ip, port = units[mac]
            m = int(mac.replace(":", ""), 16)
            host = next(v for _, k, v in qorvane_records(unit) if k == "dhcp.hostname")
            frames = [dhcp_request(mac, host)] + [
                ether(mac, GW, 0x0800, udp4(ip, IPS[GW], 53000 + i, 53, dns_query(v, i)))
                for i, (_, k, v) in enumerate(qorvane_records(unit)) if k == "dns.query"]
            frames += [ether(mac, GW, 0x0800, udp4(ip, "52.1.2.3", 40000 + i, 443, bytes(200))) for i in range(4)]
            for f in frames:
                app.sw.send(packet_in(f, port, cookie(CookieKind.MIRROR, m), int(Table.MIRROR), len(f)))
        for mac in units:
            say(mac)
        first, second = list(units)
        time.sleep(2.0)
        assert app.devices()[second]["stage"] is None, "the second unit was named before any pin"
        st, body = app.request("POST", f"/api/devices/{first}/pin", {"category": "camera"}, app.auth())
        assert st == 200 and body["applied"], body
        app.wait(lambda: '"event": "site_learned"' in app.text() and '"devices": 1' in app.text(), 20,
                 "the engine learning the pin")
        for _ in range(3):
            say(second)
            time.sleep(0.5)
        dev = app.wait(lambda: (lambda d: d if d.get("category") == "camera" else None)(app.devices()[second]), 20,
                       "the second unit named")
        assert dev["stage"] == "provisional" and dev["claims_only"]
    finally:
        app.stop()
