"""The one decision replay (:mod:`classifier.engine.replay`): it asks at the controller's times
(checked against the controller's core itself) and stops at the first final decision."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.capture.decode import decode_frames
from classifier.engine.decision import CONFIRMED, PROVISIONAL, UNKNOWN, Decision
from classifier.engine.replay import Replay, replay_decisions, request_times
from controller_app.core import Settings
from ctl_harness import A, B, SEC, Harness, arp, m, udp

#: seconds (from the start) at which device A sends a packet: ten in the first ten seconds, then
#: gaps shorter and longer than the decision interval
SCHEDULE = list(range(10)) + [12, 20, 41, 42, 43, 100, 160, 161, 175, 300, 301]


class ScriptedEngine:
    """Answers from a script, one answer per call (None: not enough evidence); records the
    time and packets of each call."""

    version = "scripted"

    def __init__(self, script):
        self.script = list(script)
        self.calls: list[tuple[int, int]] = []

    def decide(self, pk, mac, now_ns=None):
        self.calls.append((now_ns, len(pk)))
        stage = self.script[min(len(self.calls), len(self.script)) - 1]
        if stage is None:
            return None
        return Decision("plug" if stage != UNKNOWN else UNKNOWN, 0.95, stage, self.version)


def controller_requests(script, interval: float = 30.0, min_packets: int = 10) -> tuple[list, np.ndarray]:
    """Drive the controller's core with SCHEDULE (one timer tick at each packet and each second
    between); returns the times of its decision requests for A, and A's mirrored packet times."""
    # no identity probes: the controller defers an unknown answer while its probes are outstanding
    # (its first 41 s); the engine itself never answers unknown that early (min_unknown_seconds),
    # but this scripted one does, at 39 s
    s = Settings(decide_interval=interval, decide_min_packets=min_packets, recheck_interval=10**6,
                 identity_probes=0)
    eng = ScriptedEngine(script)
    h = Harness(settings=s)
    h.connect(1, [1, 2])
    for mac, port in ((A, 1), (B, 2)):
        h.send(1, port, arp(mac))
    t0 = h.now
    times = []

    class OnlyA:                     # B gets requests too (it receives A's packets): never decides
        version = "only-a"

        def decide(self, pk, mac, now_ns=None):
            if mac != m(A):
                return None
            times.append(now_ns)
            return eng.decide(pk, mac, now_ns)

    h.engine = OnlyA()
    for sec in range(SCHEDULE[-1] + 2):
        h.now = t0 + sec
        if sec in SCHEDULE:
            h.send(1, 1, udp(A, B))
        h.run(h.core.timer(h.ns))
    return times, eng


def device_packets(t0_ns: int) -> tuple:
    frames = [udp(A, B) for _ in SCHEDULE]
    ts = np.array([t0_ns + s * SEC for s in SCHEDULE], np.int64)
    return decode_frames(frames, ts, [len(f) for f in frames]), ts


def test_request_times_follow_the_controller():
    """Same times as the core's own decision requests: the 10th packet first, then every 30 s,
    each waiting for a packet newer than the previous request."""
    times, eng = controller_requests([None])
    t0 = times[0] - 9 * SEC
    _, ts = device_packets(t0)
    expected = request_times(ts, 30.0, 10, end_ns=t0 + (SCHEDULE[-1] + 1) * SEC)
    assert times == expected.tolist()
    offsets = ((expected - t0) // SEC).tolist()
    assert offsets == [9, 39, 69, 100, 160, 190, 300]     # after 69, nothing new until 100; after 190, until 300
    assert [n for _, n in eng.calls] == [10, 12, 15, 16, 17, 19, 20]


@pytest.mark.parametrize("script, calls", [([None, PROVISIONAL, CONFIRMED, PROVISIONAL], 3),
                                           ([PROVISIONAL, UNKNOWN], 2), ([None], 7)])
def test_the_replay_asks_what_the_controller_asks_and_stops_at_the_first_final_decision(script, calls):
    """The controller stops mirroring at the first confirmed or unknown decision: no more
    requests. The replay makes the same calls, at the same times, on the same packets."""
    times, ctl = controller_requests(script)
    t0 = times[0] - 9 * SEC
    pk, _ = device_packets(t0)
    eng = ScriptedEngine(script)
    rep = replay_decisions(eng, pk, m(A), 30.0, 10, end_ns=t0 + (SCHEDULE[-1] + 1) * SEC)
    assert len(times) == calls and rep.requests == calls
    assert eng.calls == ctl.calls
    final = [s for s in script[:calls] if s in (CONFIRMED, UNKNOWN)]
    assert (rep.final.stage if rep.final else None) == (final[0] if final else None)


def test_replay_reports_first_final_and_first_correct_decisions():
    d = lambda cat, stage: Decision(cat, 0.9, stage, "m")  # noqa: E731
    rep = Replay(1, 0, np.array([10, 20, 30, 40]) * SEC,
                 [None, d("camera", PROVISIONAL), d("plug", PROVISIONAL), d("plug", CONFIRMED)])
    assert rep.final_s == 40 and rep.final.category == "plug" and rep.last is rep.final
    assert rep.first_correct_s("plug") == 30 and rep.first_correct_s("plug", CONFIRMED) == 40
    assert rep.first_correct_s("camera") == 20 and rep.first_correct_s("camera", CONFIRMED) is None
    assert Replay(1, 0).final is None and Replay(1, 0).last is None


def test_too_few_packets_get_no_request():
    pk, ts = device_packets(0)
    assert len(request_times(ts[:9], 30.0, 10)) == 0
    rep = replay_decisions(ScriptedEngine([CONFIRMED]), pk.take(slice(0, 9)), m(A))
    assert rep.requests == 0 and rep.final is None


def test_online_summary_reports_first_final_and_first_correct_decisions():
    from classifier.evaluation.online import stream_row, summarise
    d = lambda cat, stage: Decision(cat, 0.9, stage, "m")  # noqa: E731
    reps = [(Replay(1, 0, np.array([30, 60]) * SEC, [d("plug", PROVISIONAL), d("plug", CONFIRMED)]), "plug"),
            (Replay(2, 0, np.array([30, 60]) * SEC, [d("plug", PROVISIONAL), d(UNKNOWN, UNKNOWN)]), "plug"),
            (Replay(3, 0, np.array([30, 90]) * SEC, [None, d("camera", CONFIRMED)]), "plug"),
            (Replay(4, 0, np.array([30]) * SEC, [None]), "plug")]
    rows = [dict(stream_row(r, truth), category=truth) for r, truth in reps]
    s = summarise(rows)
    assert s["streams"] == 4 and s["share_final"] == 0.75
    assert s["final_accuracy"] == pytest.approx(1 / 3) and s["final_unknown_share"] == pytest.approx(1 / 3)
    assert s["median_final_s"] == 60
    assert s["share_correct_provisional"] == 0.5 and s["median_first_correct_provisional_s"] == 30
    assert s["share_correct_confirmed"] == 0.25 and s["median_first_correct_confirmed_s"] == 60
    assert s["share_decided"] == 0.75 and s["last_decision_accuracy"] == pytest.approx(1 / 3)


def test_identity_records_go_to_the_engine_as_the_controller_hands_them():
    """Where the caller has the device's identity records, every request gets them (the
    engine reads those up to its ``now``); without them the engine is asked as before."""
    got = []

    class IdentityEngine:
        def decide(self, pk, mac, now_ns=None, identity=None):
            got.append(identity)

    pk, _ = device_packets(0)
    records = [(3 * SEC, "dhcp_hostname", "kasa-plug")]
    rep = replay_decisions(IdentityEngine(), pk, m(A), identity=records)
    assert rep.requests == len(got) > 1 and all(r is records for r in got)
    got.clear()
    replay_decisions(IdentityEngine(), pk, m(A))
    assert got and all(r is None for r in got)
