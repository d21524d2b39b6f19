"""The decision manager with the mirror manager: when a learning device is asked about, what
decisions change, re-checks, restore."""

from __future__ import annotations

import numpy as np

from classifier.capture.decode import decode_frames
from classifier.engine.decision import Decision
from controller_app.core.decisions import DecisionManager
from controller_app.core.mirror import MirrorManager
from controller_app.core.state import SEC, Settings, State
from controller_app.intents import DecideRequest
from ctl_harness import A, B, CONFIRMED, PROVISIONAL, UNKNOWN, m, udp


class Parts:
    def __init__(self, **settings):
        self.st = State(Settings(**settings))
        self.mirror = MirrorManager(self.st)
        self.synced = []
        self.decisions = DecisionManager(self.st, self.mirror, lambda dev: self.synced.append(dev.mac) or [])

    def device(self, mac):
        dev = self.st.new_device(m(mac), 0)
        dev.dpid, dev.mirror_dpid = 1, 1
        self.st.mirror_index = None
        return dev

    def mirrored(self, mac, n, t_ns):
        frames = [udp(mac, B) for _ in range(n)]
        pk = decode_frames(frames, np.full(n, t_ns), [len(f) for f in frames])
        self.mirror.file(pk, np.ones(n, np.uint64))

    def requests(self, now_ns):
        return [i for i in self.decisions.timer(now_ns) if isinstance(i, DecideRequest)]


def test_a_device_is_asked_about_once_it_has_enough_new_packets_at_most_every_interval():
    p = Parts(decide_min_packets=3, decide_interval=10)
    p.device(A)
    p.mirrored(A, 2, 1 * SEC)
    assert p.requests(2 * SEC) == []                       # 2 < 3 packets
    p.mirrored(A, 1, 3 * SEC)
    reqs = p.requests(4 * SEC)
    assert [(r.mac, len(r.packets), r.now_ns) for r in reqs] == [(m(A), 3, 4 * SEC)]
    assert p.requests(5 * SEC) == []                       # nothing new
    p.mirrored(A, 1, 6 * SEC)
    assert p.requests(7 * SEC) == []                       # new packets, but within the interval
    assert [len(r.packets) for r in p.requests(15 * SEC)] == [4]


def test_a_final_decision_stops_learning_a_provisional_one_does_not():
    p = Parts(decide_min_packets=1, recheck_interval=100)
    a, b = p.device(A), p.device("02:00:00:00:00:0c")
    p.mirrored(A, 2, SEC)
    p.decisions.decision_made(m(A), Decision("plug", 0.9, CONFIRMED, "v1", "x"), 2 * SEC)
    assert not a.mirroring and m(A) not in p.st.learner.buffers and a.next_check_ns == 102 * SEC
    p.decisions.decision_made(b.mac, Decision("hub", 0.7, PROVISIONAL, "v1", "x"), 2 * SEC)
    assert b.mirroring and b.category == "hub" and b.enforced is None     # the default policy enforces nothing
    p.decisions.decision_made(b.mac, None, 3 * SEC)
    assert b.thin_answers == 1 and b.category == "hub"
    assert p.synced == [m(A), b.mac]
    assert p.decisions.decision_made(0x0200000000FF, Decision("hub", 1.0, UNKNOWN, "v1", "x"), 0) == []


def test_a_recheck_mirrors_again_for_a_window():
    p = Parts(recheck_interval=100, recheck_window=50)
    a = p.device(A)
    p.decisions.decision_made(m(A), Decision("plug", 0.9, CONFIRMED, "v1", "x"), 0)
    p.decisions.timer(99 * SEC)
    assert not a.mirroring
    p.decisions.timer(100 * SEC)
    assert a.mirroring and a.recheck_until_ns == 150 * SEC and p.st.counters["rechecks"] == 1
    p.decisions.timer(151 * SEC)
    assert not a.mirroring and a.next_check_ns == 251 * SEC


def test_restore_keeps_final_decisions_without_learning():
    p = Parts(recheck_interval=100)
    p.decisions.restore([
        {"mac": m(A), "dpid": 1, "port": 3, "category": "camera", "confidence": 0.9, "stage": CONFIRMED,
         "model": "v1", "first_seen_ns": 5, "last_seen_ns": 7},
        {"mac": m(B), "dpid": 1, "port": 4, "category": None, "confidence": None, "stage": None, "model": None,
         "first_seen_ns": 5, "last_seen_ns": 7}], 10 * SEC)
    a, b = p.st.devices[m(A)], p.st.devices[m(B)]
    assert (a.category, a.stage, a.mirroring, a.next_check_ns, a.port) == ("camera", CONFIRMED, False, 110 * SEC, 3)
    assert b.stage is None and b.mirroring and (b.first_ns, b.last_ns) == (5, 7)
