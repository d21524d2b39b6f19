"""Issue 20, the operator loop, below the browser: names and addresses (read from what devices say,
kept in the inventory), the operator's labels, the timeline and its webhook, the review queue's
suggestions in plain words, plain sentences for decisions, history as changes, a switch that is
down — units first, then the real app (fake engine) driven by a fake switch."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from classifier.capture.decode import decode_frames
from controller_app.events import EventLog
from controller_app.names import NameBook, clean_label, harvest, harvest_sent, name_of
from controller_app.plain import changes, decision_sentence, feature_words, record_phrase, suggestions
from controller_app.web import explanation_parts
from controller_app.webhook import Webhook, check_url
from testing.synth import dhcp_request, dns_query, ether, udp4

A = "00:00:5e:00:53:0a"


def frames_to_packets(frames):
    return decode_frames(frames, [10**18 + i for i in range(len(frames))], [len(f) for f in frames])


# ------------------------------------------------------------------ names and addresses


def test_harvest_keeps_each_devices_unicast_source_addresses():
    from testing.synth import _csum  # noqa: F401  (synth builds the frames)
    frames = [dhcp_request(A, "porch-cam"),                                                  # from 0.0.0.0: none
              ether(A, "02:00:00:00:00:01", 0x0800, udp4("192.168.1.20", "192.168.1.1", 5353, 53, dns_query("a.b", 1))),
              ether(A, "02:00:00:00:00:01", 0x0800, udp4("192.168.1.20", "192.168.1.1", 5353, 53, dns_query("c.d", 2))),
              ether(A, "01:00:5e:00:00:fb", 0x0800, udp4("224.0.0.251", "224.0.0.251", 5353, 5353, b"x" * 12))]
    got = harvest(frames_to_packets(frames))
    assert [(m, a) for m, a, _ in got] == [(0x00005E00530A, "192.168.1.20")]
    assert got[0][2] == 10**18 + 2                                                             # the latest sight
    # what a device's decision is made on holds its peers' packets too: only what it sent counts
    reply = ether("02:00:00:00:00:01", A, 0x0800, udp4("192.168.1.1", "192.168.1.20", 53, 5353, b"y" * 12))
    pk = frames_to_packets(frames + [reply])
    assert len(harvest(pk)) == 2 and harvest_sent(pk, 0x00005E00530A) == got
    assert harvest_sent(pk.take([]), 0x00005E00530A) == []


def test_name_book_names_addresses_labels():
    book = NameBook()
    book.add_identity([(A, "dhcp.hostname", "Roomba-3F8A", 1), (A, "dhcp.hostname", "roomba-3f8a", 2),
                       (A, "mdns.host", "roomba.local.", 3), (A, "mdns.txt", "fn=Living\u0007 room", 4),
                       (A, "mdns.txt", "md=RVC", 5), (A, "dns.query", "irobot.com", 6)])
    names, addrs, label = book.of(A)
    assert [(n["source"], n["value"]) for n in names] == [("DHCP", "Roomba-3F8A"), ("mDNS host", "roomba"),
                                                          ("mDNS friendly name", "Living room")]
    book.add_addresses([(A, "192.168.1.20", 5), (A, "fe80::1", 9), (A, "192.168.1.21", 7)])
    assert book.of(A)[1] == ["192.168.1.21", "192.168.1.20", "fe80::1"]           # IPv4 first, latest first
    book.add_addresses([(A, f"10.0.0.{i}", 100 + i) for i in range(10)])
    assert len(book.of(A)[1]) == 8 and "fe80::1" not in book.of(A)[1]               # the oldest give way
    book.set_label(A, "Kitchen robot")
    assert book.of(A.upper())[2] == "Kitchen robot"
    book.forget([0x00005E00530A])
    assert book.of(A) == ([], [], "Kitchen robot")                                   # labels outlive forgetting
    assert name_of("dns.query", "x") is None and name_of("mdns.txt", "ci=5") is None


@pytest.mark.parametrize("text, error", [("x" * 65, "label: 65 characters, at most 64"),
                                         ("bad\x00name", "label: control character U+0000 at 4"),
                                         (5, "label: expected a string, got int")])
def test_a_bad_label_says_what_and_where(text, error):
    import re
    with pytest.raises(ValueError, match=re.escape(error)):
        clean_label(text)
    assert clean_label("  <b>Kitchen</b>  ") == "<b>Kitchen</b>"           # text, drawn as text


# ------------------------------------------------------------------ events and the webhook


def test_event_log_rate_limits_new_devices_and_keeps_the_rest():
    now = [1000.0]
    sent = []
    log = EventLog(memory=5, sink=lambda ev: sent.append(ev) or (_ for _ in ()).throw(RuntimeError("down")),
                   new_device_rate=2, clock=lambda: now[0])
    for i in range(5):
        log.emit("new_device", f"02:00:00:00:00:{i:02x}")
    log.emit("switch_down", None, dpid="0000000000000001")
    now[0] += 60
    ev = log.emit("new_device", "02:00:00:00:00:99")
    assert ev["left_out"] == 3                            # two passed, three were left out, then said so
    assert [e["event"] for e in sent] == ["new_device", "new_device", "switch_down", "new_device"]
    recent = log.recent()
    assert [e["id"] for e in recent] == [4, 3, 2, 1] and recent[0]["mac"] == "02:00:00:00:00:99"
    assert [e["id"] for e in log.recent(since=2)] == [4, 3]
    assert (recent[1]["event"], recent[1]["dpid"]) == ("switch_down", "0000000000000001")
    assert len(log.take_pending()) == 4 and log.take_pending() == []
    with pytest.raises(ValueError, match="unknown event kind 'nope'"):
        log.emit("nope")


class Receiver:
    """A webhook receiver on loopback: answers ``codes`` in turn (then 200), keeps the bodies."""

    def __init__(self, codes=(), delay=0.0):
        self.codes, self.delay, self.bodies = list(codes), delay, []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(outer.delay)
                code = outer.codes.pop(0) if outer.codes else 200
                if code == 200:
                    outer.bodies.append((self.headers["Content-Type"], json.loads(body)))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass
        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/hook"

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("not within the time")
        time.sleep(0.02)


def test_webhook_retries_with_back_off_and_never_blocks():
    rx = Receiver(codes=[503, 500])
    hook = Webhook(rx.url, backoff=0.05, max_backoff=0.2)
    try:
        t = time.monotonic()
        assert hook.send({"id": 1, "event": "new_device", "mac": A})
        assert time.monotonic() - t < 0.05
        wait(lambda: hook.stats()["sent"] == 1)
        assert rx.bodies == [("application/json", {"id": 1, "event": "new_device", "mac": A})]
        assert hook.stats()["retries"] == 2 and hook.stats()["failed"] == 0
    finally:
        hook.stop()
        rx.close()
    rx = Receiver(codes=[404])
    hook = Webhook(rx.url, backoff=0.05)
    try:
        hook.send({"id": 2, "event": "pin"})
        wait(lambda: hook.stats()["failed"] == 1)           # a 4xx is not retried
        assert rx.bodies == [] and hook.stats()["retries"] == 0
    finally:
        hook.stop()
        rx.close()


def test_webhook_queue_is_bounded_and_a_dead_receiver_costs_nothing():
    rx = Receiver(delay=1.0)
    hook = Webhook(rx.url, max_queue=3, backoff=0.05)
    try:
        t = time.monotonic()
        ok = [hook.send({"id": i, "event": "new_device"}) for i in range(20)]
        assert time.monotonic() - t < 0.1
        assert ok.count(False) >= 16 and hook.stats()["dropped"] == ok.count(False)
    finally:
        hook.stop(timeout=0.1)
        rx.close()
    for bad, why in (("ftp://x/", "expected an http:// or https:// URL"), ("http:///x", "no host name")):
        with pytest.raises(ValueError, match=why):
            check_url(bad)


# ------------------------------------------------------------------ plain words


def test_feature_and_record_phrases():
    assert feature_words("n_udp") == "UDP packets"
    assert feature_words("len_user_mean") == "average size of application packets"
    assert feature_words("len_tx_sum") == "bytes of sent packets"
    assert feature_words("odd") == "odd"
    assert record_phrase("dhcp.hostname", "Roomba-3F8A") == "announces itself as 'Roomba-3F8A' (DHCP)"
    assert record_phrase("dns.query", "disc-prod.iot.irobotapi.com") == "talks to irobotapi.com (DNS)"
    assert record_phrase("mdns.txt", "ci=5") == "announces a HomeKit category code '5' (mDNS)"
    assert record_phrase("dhcp.hostname", "x" * 80).endswith("…' (DHCP)")


def explained(**parts):
    return explanation_parts({"voters": [], "identity": [], "sessions": [], "segments": [], **parts})


def test_a_decision_in_one_plain_sentence_with_zero_weights_hidden():
    ex = explained(voters=[{"name": "identity", "category": "light", "probability": 0.97, "threshold": 0.5,
                            "vouches": True},
                           {"name": "session", "category": "light", "probability": 0.91, "threshold": 0.77,
                            "vouches": True},
                           {"name": "segment", "category": "plug", "probability": 0.4, "threshold": 0.99,
                            "vouches": False}],
                   identity=[{"kind": "dhcp.hostname", "value": "LightCo-Bulb-4A21", "category": "light", "weight": 2.0},
                             {"kind": "mdns.txt", "value": "ci=5", "category": "light", "weight": 3.0}],
                   segments=[{"feature": "n_udp", "change": 0.0}, {"feature": "len_user_mean", "change": 0.12},
                             {"feature": "n_tcp", "change": -0.001}])
    assert [s["feature"] for s in ex["segments"]] == ["len_user_mean"]        # the +0.00 ones are not evidence
    assert ex["segments"][0]["label"] == "average size of application packets"
    h = {"category": "light", "stage": "confirmed", "confidence": 0.97, "explained": ex, "vouching": ["identity", "session"]}
    assert decision_sentence(h) == ("Named light (confirmed, 97% sure) because it announces a HomeKit category code "
                                    "'5' (mDNS), announces itself as 'LightCo-Bulb-4A21' (DHCP) and the services it "
                                    "talks to look like a light's.")
    claims = {**h, "stage": "provisional", "vouching": ["identity"]}
    assert decision_sentence(claims).endswith("Not confirmed yet. This rests on what the device says about itself "
                                              "alone.")
    unk = {"category": "unknown", "stage": "unknown", "confidence": 0.3, "explained": explained(voters=[
        {"name": "session", "category": "plug", "probability": 0.4, "threshold": 0.77, "vouches": False}])}
    assert decision_sentence(unk) == ("Not named: no evidence the engine may rely on was strong enough (the services it "
                                      "talks to looked most like a plug); it stays under the unknown action and is "
                                      "looked at again.")
    bare = {"category": "camera", "stage": "confirmed", "confidence": 0.95, "explained": explanation_parts(None, "x")}
    assert decision_sentence(bare) == "Named camera (confirmed, 95% sure): the engine's details are below."
    bare["vouching"] = ["session", "segment"]
    assert decision_sentence(bare) == ("Named camera (confirmed, 95% sure): the services it talks to and its traffic "
                                       "volumes point to it.")


def test_history_collapses_to_changes():
    hist = [{"ts": 100 + i, "category": "hub", "stage": "provisional"} for i in range(3)] + \
           [{"ts": 200 + i, "category": "light", "stage": "provisional"} for i in range(19)] + \
           [{"ts": 300, "category": "light", "stage": "confirmed"}]
    ch = changes(hist)
    assert [(c["from"], c["category"], c["stage"], c["decisions"]) for c in ch] == [
        ("light", "light", "confirmed", 1), ("hub", "light", "provisional", 19), (None, "hub", "provisional", 3)]
    assert ch[1]["ts"] == 200 and ch[1]["until"] == 218


def test_review_suggestions_in_plain_words_with_sources():
    recs = [(0, "dhcp.hostname", "Roomba-3F8A"), (1, "dns.query", "disc-prod.iot.irobotapi.com")]
    last = {"explained": explained(voters=[{"name": "session", "category": "appliance", "probability": 0.6,
                                            "threshold": 0.77, "vouches": False},
                                           {"name": "segment", "category": "plug", "probability": 0.5,
                                            "threshold": 0.99, "vouches": False}])}
    sugg = suggestions(recs, 0x00005E00530A, last)
    assert [s["category"] for s in sugg] == ["appliance", "plug"]
    texts = [e["text"] for e in sugg[0]["evidence"]]
    assert texts[0] == "announces itself as 'Roomba-3F8A' (DHCP)" and "roombapy" in sugg[0]["evidence"][0]["source"]
    assert "talks to the services appliances talk to" in texts
    assert sugg[1]["summary"] == "traffic like plugs"
    assert suggestions([], 0x00005E00530A, None) == []


def test_the_pages_share_their_head_and_header():
    from controller_app.web import STATIC, include
    for name, title in (("index.html", "Devices"), ("device.html", "Device"), ("review.html", "Review")):
        page = include((STATIC / name).read_text())
        assert f"<title>{title} · IoT controller</title>" in page and 'id="banner"' in page
        assert "<!--#include" not in page and page.count("<header") == 1
