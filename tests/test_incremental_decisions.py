"""The controller's incremental decision path decides exactly as the path before it.

Before: each decision rebuilt the device's sessions and every segment from all its buffered
packets (the engine's evidence code as it was, kept here verbatim in :class:`RebuildingEngine`,
and no remembered model answers). Now: the learner keeps each device's sessions from request
to request (:meth:`controller_app.learning.Learner.sessions`), the engine reads only the last
window's packets for the segment model, and remembers model answers for inputs it has seen.

A capture is fed to a :class:`~controller_app.learning.Learner` in batches as the controller
files mirrored packets, and at the controller's cadence each device is decided both ways; every
field of the two decisions must be equal: category, confidence, stage, model, explanation,
``evidence`` (with ``evidence["explain"]``) and ``vouching``. Every other decision is asked as
the controller asks (``explain_later``): where the segment model's explanation was left for
later, the completed decision (:meth:`DecisionEngine.explained`) must equal the other. Buffers
small enough to drop their oldest packets and batches out of time order are part of the run.
"""

from __future__ import annotations

import numpy as np
import pytest

from classifier.capture.decode import read_packets
from classifier.capture.packets import Packets
from classifier.engine import engine as engine_mod
from classifier.engine.engine import DecisionEngine, _Evidence, _Vote, load_engine
from classifier.features.devices import split_devices
from classifier.features.identity import identity_records
from classifier.features.segments import FEATURE_NAMES, segment_features
from classifier.features.sessions import session_table
from classifier.features.instances import Instances
from controller_app.learning import Learner


class RebuildingEngine(DecisionEngine):
    """The engine's evidence as it was computed before the incremental path (verbatim)."""

    def _memo(self, what, model, inst, fn):
        return fn(inst)

    def _segment_instance(self, pk, view, now_ns):
        c = self.config
        seg = segment_features(pk, view, c.interval, end_ns=now_ns)
        rows = np.flatnonzero(seg.complete)
        if len(rows) < c.t:
            return None
        win = seg.values[rows[-c.t:]].astype(np.float32)
        if win[:, FEATURE_NAMES.index("n_total")].sum() == 0:
            return None
        return Instances({"seg": win[None]}, np.zeros(1, np.int64), np.array([int(seg.start_ns[rows[-c.t]])]))

    def evidence(self, pk, mac, now_ns=None, identity=None, voters=None, sessions=None):
        c = self.config
        voters = c.voters if voters is None else voters
        if identity is not None and hasattr(identity, "for_mac"):   # an IdentityRecords table
            identity = identity.for_mac(mac)
        view = split_devices(pk, devices=[mac])
        if len(view) == 0:
            return None
        ts = pk.ts_ns[view.pkt]
        now = int(ts.max()) if now_ns is None else max(int(now_ns), int(ts.max()))
        classes = self.classes
        votes: list[_Vote] = []
        id_vote = None
        if self.identity_model is not None and "identity" in voters:
            records = [r for r in (identity or ()) if int(r[0]) <= now]
            if records or self.identity_model.speaks_for_mac(mac):   # the MAC is a record too
                id_vote = self.identity_model.vote(records, mac)
                votes.append(_Vote("identity", self._aligned_to(list(engine_mod.CATEGORIES_ALL), id_vote.proba,
                                                                classes),
                                   id_vote.threshold, c.identity_weight, self.identity_model.kind))
        sess = session_table(pk, view, c.idle_timeout) if sessions is None else sessions
        n_s = len(sess)
        s_inst = g_inst = None
        if "segment" in voters and self.segment_model is not None:
            g_inst = self._segment_instance(pk, view, now)
        if "session" in voters and n_s >= c.min_sessions_provisional:
            if (sess.pool == "").any():
                self._fill_pools(sess)
            s_inst = self._session_instance(sess)
            ps = self._aligned_to(self.session_model.classes, self.session_model.predict_proba(s_inst)[0], classes)
            votes.append(_Vote("session", ps, c.threshold, 1 - c.segment_weight, self.session_model.kind))
        if g_inst is not None:
            pg = self._aligned_to(self.segment_model.classes, self.segment_model.predict_proba(g_inst)[0], classes)
            votes.append(_Vote("segment", pg, c.segment_threshold, c.segment_weight, self.segment_model.kind))
        counts = {"packets": int(len(view.pkt)), "sessions": n_s,
                  "segments": int((now - int(ts.min())) // int(c.interval * 1e9)),
                  "seconds": round((now - int(ts.min())) / 1e9, 3),
                  "identity_records": id_vote.records if id_vote is not None else 0}
        vendor = self.vendor_status(mac) if "identity" in voters else None
        return _Evidence(votes, counts, g_inst is not None, id_vote, s_inst, g_inst, vendor)


def _engines():
    new = load_engine()
    old = load_engine()
    old.__class__ = RebuildingEngine
    return new, old


def replay(pk: Packets, identity, devices: list[int], max_packets: int = 50_000, batch_s: float = 1.0,
           every_s: float = 30.0, shuffle_every: int = 0, limit: int | None = None) -> int:
    """Feed ``pk`` to a learner in ``batch_s`` batches; every ``every_s`` decide each device both
    ways and compare. ``shuffle_every``: every k-th batch reversed (out of time order). Returns
    the decisions compared."""
    new, old = _engines()
    learner = Learner(max_packets=max_packets)
    learner.session_idle = new.config.idle_timeout
    macs = np.asarray(sorted(devices), np.uint64)
    ts = pk.ts_ns
    t0 = int(ts.min())
    edges = np.searchsorted(ts, np.arange(t0, int(ts.max()) + 2 * int(batch_s * 1e9), int(batch_s * 1e9)))
    next_decide = t0 + int(every_s * 1e9)
    compared = decided = pending = 0
    for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        if hi > lo:
            rows = np.arange(lo, hi)
            if shuffle_every and b % shuffle_every == 0:
                rows = rows[::-1]
            chunk = pk.take(rows)
            learner.add(chunk, np.isin(chunk.eth_src, macs), np.isin(chunk.eth_dst, macs))
        now = int(ts[hi - 1]) if hi > 0 else t0
        if now < next_decide:
            continue
        next_decide = now + int(every_s * 1e9)
        for mac in learner.buffers:
            if learner.buffers[mac].n < 10:
                continue
            packets = learner.packets(mac)
            sess = learner.sessions(mac)
            recs = identity.for_mac(mac)
            later = compared % 2 == 0     # every other decision as the controller asks: explained after
            got = new.decide(packets, mac, now, identity=recs, sessions=sess, explain_later=later)
            want = old.decide(packets, mac, now, identity=recs)
            assert (got is None) == (want is None), (mac, now)
            compared += 1
            if got is not None:
                decided += 1
                if got.pending is not None:
                    pending += 1
                    assert later and got.explanation != want.explanation, (mac, now)
                    got = DecisionEngine.explained(got)
                    assert got.pending is None
                assert got.to_dict() == want.to_dict(), (mac, now, got, want)
            if limit and compared >= limit:
                break
        if limit and compared >= limit:
            break
    assert decided > 0
    # a window that moved between a device's decisions was explained after the decision, at least once
    assert pending > 0
    return compared


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from testing.synth import default_network, write_network_capture
    folder = tmp_path_factory.mktemp("incremental")
    net = default_network(identity=True)
    path = folder / "network.pcap"
    write_network_capture(str(path), net, 2 * 3600.0, seed=11)
    return read_packets(str(path), warnings=[]), identity_records(str(path), warnings=[]), net


@pytest.mark.slow
def test_incremental_decisions_equal_rebuilt_ones(generated):
    pk, recs, net = generated
    n = replay(pk, recs, [_mac(d.mac) for d in net.devices], every_s=120.0)
    assert n > 100


@pytest.mark.slow
def test_incremental_decisions_equal_when_buffers_drop_packets_and_batches_come_out_of_order(generated):
    pk, recs, net = generated
    macs = [_mac(d.mac) for d in net.devices]
    n = replay(pk, recs, macs, max_packets=3_000, every_s=300.0, shuffle_every=7)
    assert n > 20


@pytest.mark.shared
@pytest.mark.slow
def test_incremental_decisions_equal_on_a_shared_capture(datasets):
    path = datasets / "home" / "training_2023-5-26_1_13_9.pcapng.gz"
    pk = read_packets(str(path), warnings=[])
    recs = identity_records(str(path), warnings=[])
    from classifier.capture.labels import load_datasets
    labelled = load_datasets([str(datasets / "home")]).for_path(str(path))
    macs = sorted(labelled.devices) if labelled is not None else split_devices(pk).macs.tolist()
    assert replay(pk, recs, macs, every_s=120.0) > 50


def _mac(text: str) -> int:
    from classifier.capture.packets import mac_to_int
    return mac_to_int(text)


@pytest.mark.slow
def test_a_prepared_window_is_the_one_the_next_decision_reads(generated, monkeypatch):
    """``engine.prepare`` at the first second after a segment completes votes on the window the
    device's decision reads 25 s later (the decision runs no segment inference), and that decision
    equals the rebuilt one; a decision after the next segment completes reads a new window."""
    pk, recs, net = generated
    new, old = _engines()
    T = int(new.config.interval * 1e9)
    assert new.window_schedule == (new.config.interval, new.config.t)
    checked = 0
    for d in net.devices:
        mac = _mac(d.mac)
        mine = pk.take(np.flatnonzero((pk.eth_src == np.uint64(mac)) | (pk.eth_dst == np.uint64(mac))))
        t0 = int(mine.ts_ns.min())
        boundary = t0 + (new.config.t + 2) * T
        if int(mine.ts_ns.max()) < boundary + T:
            continue
        at = lambda t: mine.take(np.flatnonzero(mine.ts_ns <= t))   # noqa: E731 - the buffer at time t
        assert new.prepare(at(boundary + 10**9), mac, boundary + 10**9)
        segment = new.segment_model
        real = segment.predict_proba
        monkeypatch.setattr(segment, "predict_proba", lambda inst: pytest.fail("the decision ran the segment model"))
        later = at(boundary + 25 * 10**9)
        got = new.decide(later, mac, boundary + 25 * 10**9, identity=recs.for_mac(mac))
        assert got is not None and "segment" in got.model
        want = old.decide(later, mac, boundary + 25 * 10**9, identity=recs.for_mac(mac))
        assert DecisionEngine.explained(got).to_dict() == want.to_dict()
        with pytest.raises(pytest.fail.Exception, match="ran the segment model"):
            new.decide(at(boundary + T + 10**9), mac, boundary + T + 10**9, identity=recs.for_mac(mac))
        monkeypatch.setattr(segment, "predict_proba", real)
        checked += 1
    assert checked >= 3
    # nothing to prepare: no packets of the device, or no full window yet
    assert not new.prepare(pk.take(slice(0, 0)), _mac(net.devices[0].mac), 0)
    first = pk.take(np.flatnonzero(pk.ts_ns <= int(pk.ts_ns.min()) + T))
    assert not new.prepare(first, _mac(net.devices[0].mac))


@pytest.mark.slow
def test_a_buffers_window_is_built_once_until_its_rows_change(generated, monkeypatch):
    """On a controller buffer's table the engine builds a device's window once and reads it again
    while the same rows of the same store hold it: later packets (after the window) change
    nothing; a late packet filed inside the window, in time order still, is a different window,
    built again and equal to the window built from scratch."""
    pk, recs, net = generated
    new, _ = _engines()
    T = int(new.config.interval * 1e9)
    mac = _mac(net.devices[0].mac)
    mine = pk.take(np.flatnonzero((pk.eth_src == np.uint64(mac)) | (pk.eth_dst == np.uint64(mac))))
    t0 = int(mine.ts_ns.min())
    boundary = t0 + (new.config.t + 1) * T
    last = int(np.flatnonzero(mine.ts_ns < boundary)[-1])          # its last packet before the boundary
    before = np.arange(last)                                       # and every one before that
    learner = Learner()
    first = mine.take(before)
    learner.add(first, first.eth_src == np.uint64(mac), first.eth_dst == np.uint64(mac))
    built = []
    real = engine_mod.window_of_rows
    monkeypatch.setattr(engine_mod, "window_of_rows", lambda *a: built.append(a[-3:]) or real(*a))
    at = boundary + 5 * 10**9
    one = new._segment_instance(learner.packets(mac), mac, at)
    assert one is not None and len(built) == 1
    after = mine.take(np.flatnonzero((mine.ts_ns >= boundary) & (mine.ts_ns < boundary + 60 * 10**9)))
    assert len(after)
    learner.add(after, after.eth_src == np.uint64(mac), after.eth_dst == np.uint64(mac))
    two = new._segment_instance(learner.packets(mac), mac, at + 60 * 10**9)     # within the same segment
    assert two is one and len(built) == 1                          # read again, not built
    # its last packet before the boundary, filed late: still in time order (nothing of the device
    # after the boundary came yet in this learner), inside the window
    other = Learner()
    other.add(first, first.eth_src == np.uint64(mac), first.eth_dst == np.uint64(mac))
    three = new._segment_instance(other.packets(mac), mac, at)
    assert len(built) == 2                                         # another store: built
    late = mine.take(np.array([last]))
    other.add(late, late.eth_src == np.uint64(mac), late.eth_dst == np.uint64(mac))
    four = new._segment_instance(other.packets(mac), mac, at)
    assert len(built) == 3
    fresh = load_engine()._segment_instance(mine.take(np.flatnonzero(mine.ts_ns < boundary)), mac, at)
    assert np.array_equal(four.X["seg"], fresh.X["seg"]) and not np.array_equal(four.X["seg"], three.X["seg"])
