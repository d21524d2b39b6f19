"""The decision manager with the mirror manager: when a learning device is asked about, what
decisions change, re-checks, restore."""

from __future__ import annotations

import numpy as np

from classifier.capture.decode import decode_frames
from classifier.engine.decision import Decision
from controller_app.core.decisions import DecisionManager
from controller_app.core.mirror import MirrorManager
from controller_app.core.state import SEC, Settings, State
from controller_app.intents import DecideRequest, PrepareWindow
from ctl_harness import A, B, CONFIRMED, PROVISIONAL, UNKNOWN, m, udp


class Parts:
    def __init__(self, **settings):
        self.st = State(Settings(**settings))
        self.mirror = MirrorManager(self.st)
        self.synced = []
        self.decisions = DecisionManager(self.st, self.mirror, lambda dev: self.synced.append(dev.mac) or [])

    def device(self, mac):
        dev = self.st.new_device(m(mac), 0)
        self.st.attach(dev, 1, 1)
        dev.mirror_dpid = 1                 # as if mirrored on switch 1 (no switch here)
        self.st.mirrored.add(dev.mac)
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
    assert p.requests(7 * SEC) == []                       # new packets, but the request is unanswered
    p.decisions.decision_made(m(A), None, 7 * SEC)
    assert p.requests(8 * SEC) == []                       # answered, but within the interval
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


def test_restore_keeps_final_decisions_attaches_recent_devices_and_parks_the_others():
    p = Parts(recheck_interval=100, host_timeout=600)
    c = "02:00:00:00:00:0c"
    records = [{"mac": m(A), "dpid": 1, "port": 3, "category": "camera", "confidence": 0.9, "stage": CONFIRMED,
                "model": "v1", "first_seen_ns": 5, "last_seen_ns": 1000 * SEC},
               {"mac": m(B), "dpid": 1, "port": 4, "category": None, "confidence": None, "stage": None,
                "model": None, "first_seen_ns": 5, "last_seen_ns": 1000 * SEC},
               {"mac": m(c), "dpid": 1, "port": 5, "category": "plug", "confidence": 0.9, "stage": UNKNOWN,
                "model": "v1", "first_seen_ns": 5, "last_seen_ns": 300 * SEC}]
    p.decisions.restore(records, 1000 * SEC)
    a, cc = p.st.devices[m(A)], p.st.devices[m(c)]
    assert (a.category, a.stage, a.mirroring, a.next_check_ns, a.port) == ("camera", CONFIRMED, False, 1100 * SEC, 3)
    assert m(B) not in p.st.devices and p.st.counters["restore_skipped"] == 1      # undecided: relearned if seen
    assert a.attached and a.slot is not None and p.st.port_hosts[(1, 3)] == {m(A)}  # seen 0 s ago
    assert not cc.attached and cc.slot is None and (cc.dpid, cc.port) == (1, 5)     # seen 700 s ago: parked
    assert p.st.slots_in_use() == 1


class Worker:
    """A decision worker with a bounded queue that refuses jobs when full (as the shell's does),
    answering ``per_tick`` jobs each tick with "not enough evidence yet"."""

    def __init__(self, parts, capacity, per_tick):
        self.p, self.capacity, self.per_tick = parts, capacity, per_tick
        self.queue, self.asked = [], {}

    def tick(self, now_ns):
        for r in self.p.requests(now_ns):
            if len(self.queue) >= self.capacity:
                self.p.decisions.dropped(r.mac)
            else:
                self.queue.append(r)
        done, self.queue = self.queue[:self.per_tick], self.queue[self.per_tick:]
        for r in done:
            self.asked[r.mac] = self.asked.get(r.mac, 0) + 1
            self.p.decisions.decision_made(r.mac, None, now_ns)


def test_4000_devices_ready_at_once_are_all_asked_none_dropped():
    """4,000 quiet devices become ready in the same tick; the worker's queue holds 500 and it
    answers 300 a tick. Requests outstanding stay under the bound, requests refused by the full
    queue are asked again, and every device is asked — none is left undecided and unasked."""
    p = Parts(decide_min_packets=3, decide_interval=10**6, max_pending_decisions=800)
    macs = [0x020000100000 + i for i in range(4000)]
    for mac in macs:
        dev = p.st.new_device(mac, 0)
        p.st.attach(dev, 1, 1)
        dev.mirror_dpid = 1
        p.st.mirrored.add(mac)
    p.st.mirror_index = None
    frames = [udp(mac, B) for mac in macs for _ in range(3)]
    pk = decode_frames(frames, np.full(len(frames), SEC), [len(f) for f in frames])
    p.mirror.file(pk, np.ones(len(frames), np.uint64))
    w = Worker(p, capacity=500, per_tick=300)
    for t in range(2, 40):
        w.tick(t * SEC)
        assert len(p.st.deciding) <= 800
    assert sorted(w.asked) == macs and set(w.asked.values()) == {1}      # each once: no new packets since
    assert p.st.counters["decide_requeued"] > 0                          # the full queue did refuse some
    assert p.st.deciding == {}
    assert all(p.st.devices[mac].thin_answers == 1 for mac in macs)


def test_a_refused_request_is_asked_again_at_once_a_failed_one_after_the_interval_a_lost_one_after_the_timeout():
    p = Parts(decide_min_packets=1, decide_interval=10, decide_timeout=60)
    p.device(A)
    p.mirrored(A, 2, SEC)
    assert len(p.requests(2 * SEC)) == 1
    p.decisions.dropped(m(A))                                           # the queue was full
    assert len(p.requests(3 * SEC)) == 1                                # asked again, no new packets needed
    p.decisions.dropped(m(A), failed=True)                              # the engine raised
    assert p.requests(4 * SEC) == [] and len(p.requests(14 * SEC)) == 1
    assert p.requests(30 * SEC) == []                                   # outstanding
    assert len(p.requests(75 * SEC)) == 1 and p.st.counters["decide_timeouts"] == 1


def test_a_window_is_prepared_at_the_first_tick_after_it_moves_unless_its_decision_reads_it_then():
    """With the engine's window schedule (a segment every 10 s, windows of 2 segments), a learning
    device's new window is prepared at the first tick after a segment completes, once it has 2
    complete segments; once per window; never while its decision is outstanding (later then).
    A device whose decision falls due at that tick is prepared, and asked at the next tick."""
    p = Parts(decide_min_packets=1, decide_interval=1000, prepare_every=10, prepare_from=2)
    p.device(A)
    p.mirrored(A, 3, 5 * SEC)                       # segments from 5 s: 5-15, 15-25, 25-35, ...

    def prepared(now_ns):
        out = p.decisions.timer(now_ns)
        return ([(i.mac, len(i.packets), i.now_ns) for i in out if isinstance(i, PrepareWindow)],
                [i.mac for i in out if isinstance(i, DecideRequest)])

    assert prepared(6 * SEC) == ([], [m(A)])                 # asked at once: 1 packet is enough
    p.decisions.decision_made(m(A), None, 6 * SEC)
    assert prepared(24 * SEC) == ([], [])                    # one complete segment: no window yet
    p.mirrored(A, 2, 24 * SEC)
    assert prepared(25 * SEC) == ([(m(A), 5, 25 * SEC)], [])  # two complete: the first window
    assert prepared(26 * SEC) == ([], [])                    # the same window: once
    assert p.st.counters["windows_prepared"] == 1
    p.st.deciding[m(A)] = (30 * SEC, None)                   # a decision outstanding across the next boundary
    assert prepared(35 * SEC) == ([], [])
    del p.st.deciding[m(A)]
    assert prepared(36 * SEC) == ([(m(A), 5, 36 * SEC)], [])  # prepared once it is back
    p.st.devices[m(A)].last_decide_ns = -1000 * SEC          # due again at the next boundary tick
    p.mirrored(A, 1, 40 * SEC)
    assert prepared(45 * SEC) == ([(m(A), 6, 45 * SEC)], [])  # prepared first,
    assert p.st.counters["decide_after_prepare"] == 1
    assert prepared(46 * SEC) == ([], [m(A)])                # and asked at the next tick
    p.decisions.decision_made(m(A), None, 46 * SEC)
    assert prepared(47 * SEC) == ([], [])
    p.st.devices[m(A)].mirroring = False
    assert prepared(55 * SEC) == ([], [])                    # a device not learning is never prepared
    q = Parts(decide_min_packets=1, decide_interval=1000)    # without a schedule: never
    q.device(A)
    q.mirrored(A, 3, 5 * SEC)
    assert not any(isinstance(i, PrepareWindow) for t in range(6, 100) for i in q.decisions.timer(t * SEC))
