"""Inference speed of the shipped engine: milliseconds per decision on one core.

For each device of a capture the engine decides once (warm-up), then ``repeat`` times; the
figures are the median over devices of: the session model's inference alone, the segment
model's inference alone (where a device has a full window), and the whole decision from the
device's packets (sessions, pools, segments, both models, explanation). The random-forest
baseline's inference on the same segment windows is measured in the same run, as a ratio.

The controller's decisions (``controller_*``): each device's packets and identity records are
filed into a learner in one-second batches, as the controller files mirrored packets, and once
the device has a full segment window it is decided every 30 s of capture time (when it sent or
received packets since), as the controller asks: the learner's sessions taken since the last
request (:meth:`Learner.sessions`), its identity values (each distinct value once) plus the whole
decision. Beside it, at the same moments and on the same packets, the baseline: the decision
that rebuilds the sessions and every segment from all the device's packets and runs every
model afresh (what a decision cost before the incremental path). Decisions are split by
whether the device's segment window moved since its last decision (once per 5-minute segment,
so about 1 in 10 at the 30 s cadence) or not; the figures are the medians over decisions.
As in the controller, a decision is made with ``explain_later``: the segment model's occlusion
explanation, when the window moved, is computed after it (``controller_explanation_after_ms``,
which the controller spends once the rules are sent) and is not counted in the decision; the
sum is ``controller_decision_and_explanation_window_moved_ms``.

As in the controller, at the first one-second tick after a device's window moves (a segment
completed, and it has a full window) the engine votes on the new window (``engine.prepare``,
``controller_prepare_ms``: once per window, on the decision worker, before the decision that reads
it), and a decision due at that very tick is asked at the next one. A decision's window "moved"
when it starts elsewhere than at the device's last decision. Moved-window decisions are split into
those that found their window's vote prepared and those that did not: a device whose buffer is at
its cap (50,000 packets) drops its oldest packets, its segments (counted from its oldest packet)
shift with each drop and its sessions are rebuilt, so its decisions compute everything themselves.
The same moved-window decisions made by a second engine that is never asked to prepare, at the
same moments on the same packets, are ``controller_decision_window_moved_without_prepare_ms``;
prepared or not, each must equal it once explained (the benchmark stops otherwise).

``python -m benchmarks.models [CAPTURE | --generated]`` (default: a home capture from ../shared,
else a generated one: an hour of the generated home network, whose busiest devices send 5-24
packets/s, where the shared home capture's send under 2). ``controller_decision_per_device_ms``:
each device's median decision, with its packets per second.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import numpy as np


def _ms(fn, repeat: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat * 1e3


def _forget(engine) -> None:
    """The session model's remembered last answer dropped: the next inference runs (the
    figures that say "afresh" or "inference" time the model, not that memory)."""
    if engine.session_model is not None:
        engine.session_model.__dict__.pop("_last_one", None)


def run(capture: str, repeat: int = 50) -> dict:
    import torch
    torch.set_num_threads(1)
    from classifier.capture.decode import read_packets
    from classifier.features.devices import split_devices
    from classifier.engine.engine import load_engine
    from classifier.models.baselines import SklearnModel
    from classifier.features.sessions import session_table
    engine = load_engine()
    fresh = load_engine()
    fresh._memo = lambda what, model, inst, fn: fn(inst)          # a whole decision, every model afresh
    pk = read_packets(capture, warnings=[])
    view = split_devices(pk)
    whole, sess_ms, seg_ms, rf_ms = [], [], [], []
    windows, labels = [], []
    for mac in view.macs.tolist():
        if engine.decide(pk, mac) is None:
            continue
        whole.append(_ms(lambda: (_forget(fresh), fresh.decide(pk, mac)), max(5, repeat // 10)))
        dv = split_devices(pk, devices=[mac])
        s = session_table(pk, dv, engine.config.idle_timeout)
        engine._fill_pools(s)
        inst = engine._session_instance(s)
        sess_ms.append(_ms(lambda: (_forget(engine), engine.session_model.predict_proba(inst)), repeat))
        g = engine._segment_instance(pk, dv, int(pk.ts_ns.max())) if engine.segment_model else None
        if g is not None:
            seg_ms.append(_ms(lambda: engine.segment_model.predict_proba(g), repeat))
            windows.append(g)
            labels.append(engine.classes[int(engine.segment_model.predict_proba(g)[0].argmax())])
    if windows:
        from classifier.features.instances import Instances
        X = np.concatenate([w.X["seg"] for w in windows])
        inst = Instances({"seg": X}, np.zeros(len(X), np.int64), np.zeros(len(X), np.int64))
        rf = SklearnModel("rf", t=engine.config.t).fit(inst, np.asarray(labels, dtype=object))
        one = inst.take(slice(0, 1))
        rf_ms.append(_ms(lambda: rf.predict_proba(one), repeat))
    med = lambda xs: float(np.median(xs)) if xs else None  # noqa: E731
    r = {"capture": os.path.basename(capture), "devices": len(whole),
         "session_inference_ms": med(sess_ms), "segment_inference_ms": med(seg_ms),
         "decision_ms": med(whole), "rf_baseline_inference_ms": med(rf_ms)}
    r.update(controller_decisions(engine, capture, pk))
    if r["segment_inference_ms"] and r["rf_baseline_inference_ms"]:
        r["segment_vs_rf"] = r["segment_inference_ms"] / r["rf_baseline_inference_ms"]
    return r


def controller_decisions(engine, capture: str, pk, every_s: float = 30.0, batch_s: float = 1.0) -> dict:
    """Decisions as the controller makes them, and the rebuilding baseline (see the module
    docstring)."""
    from classifier.engine.engine import load_engine
    from classifier.features.devices import split_devices
    from classifier.features.identity import identity_records
    from controller_app.learning import Learner
    recs = identity_records(capture, warnings=[])
    baseline = load_engine()
    baseline._memo = lambda what, model, inst, fn: fn(inst)       # every model afresh
    unprepared = load_engine()                                     # as the engine, never asked to prepare
    votes, infer = [0], engine.segment_model.predict_proba
    engine.segment_model.predict_proba = lambda inst: votes.__setitem__(0, votes[0] + 1) or infer(inst)
    c = engine.config
    T = int(round(c.interval * 1e9))
    view = split_devices(pk)
    moved, still, rebuilt, ratios, devices = [], [], [], [], 0
    explained, whole_moved = [], []
    prepares, moved_prepared, moved_unprepared, moved_plain, everything = [], [], [], [], []
    per_device = {}          # MAC -> (its decisions' median ms, its packets per second)
    for d, mac in enumerate(view.macs.tolist()):
        mine = pk.take(np.unique(view.pkt[view.entries(d)]))
        ts = mine.ts_ns
        t_first = int(ts[0])
        if int(ts[-1]) - t_first < (c.t + 1) * T:
            continue                                    # never a full window in this capture
        devices += 1
        mine_from = len(everything)
        said = recs.take(np.flatnonzero(recs.mac == np.uint64(mac)))
        said = said.take(np.argsort(said.t_ns, kind="stable"))
        learner = Learner()
        learner.session_idle = c.idle_timeout
        step = int(batch_s * 1e9)
        ticks = np.arange(t_first + step, int(ts[-1]) + 2 * step, step)     # the controller's timer
        edges = np.searchsorted(ts, ticks)                                   # packets filed before each tick
        said_edges = np.searchsorted(said.t_ns, ticks)                       # and what the device said
        next_at, last_start, prepared, lo, fresh, said_lo = t_first + (c.t + 1) * T, None, (), 0, 0, 0
        for now, hi, said_hi in zip(ticks.tolist(), edges.tolist(), said_edges.tolist()):
            if hi > lo:
                chunk = mine.take(slice(lo, hi))
                learner.add(chunk, chunk.eth_src == np.uint64(mac), chunk.eth_dst == np.uint64(mac))
                fresh, lo = fresh + hi - lo, hi
            if said_hi > said_lo:
                learner.add_identity(said.take(slice(said_lo, said_hi)))
                said_lo = said_hi
            first_ns = learner.buffers[mac].first_ns
            k_now = (now - first_ns) // T                           # as the controller's core counts
            if k_now >= c.t and (first_ns, k_now) != prepared:      # the window moved: prepared at this
                prepared = (first_ns, k_now)            # tick, and a decision due now is asked at the next one
                t0 = time.perf_counter()
                engine.prepare(learner.packets(mac), mac, now)
                prepares.append((time.perf_counter() - t0) * 1e3)
                continue
            if now < next_at or not fresh:          # not due: every 30 s, with packets new since the last
                continue
            next_at, fresh = now + int(every_s * 1e9), 0
            votes[0] = 0
            t0 = time.perf_counter()
            sessions = learner.sessions(mac)
            packets = learner.packets(mac)
            identity = learner.identity(mac)        # each distinct value once, as the controller holds them
            d = engine.decide(packets, mac, now, identity=identity, sessions=sessions, explain_later=True)
            took = (time.perf_counter() - t0) * 1e3
            # the window the decision read (the engine keeps it per device), and whether its vote
            # was prepared (the decision ran no segment inference)
            g = engine._windows[mac][1] if d is not None and "segment" in d.model else None
            start = None if g is None else int(g.start_ns[0])
            ready = g is not None and votes[0] == 0
            t0 = time.perf_counter()
            full = engine.explained(d)
            after = (time.perf_counter() - t0) * 1e3
            window_moved = start is not None and start != last_start    # (no window: nothing to vote on)
            (moved if window_moved else still).append(took)
            everything.append(took)
            if window_moved:
                explained.append(after)
                whole_moved.append(took + after)
                (moved_prepared if ready else moved_unprepared).append(took)
                t0 = time.perf_counter()
                u = unprepared.decide(packets, mac, now, identity=identity, sessions=sessions, explain_later=True)
                moved_plain.append((time.perf_counter() - t0) * 1e3)
                if (full is None) != (u is None) or (full is not None and
                                                     full.to_dict() != unprepared.explained(u).to_dict()):
                    raise AssertionError(f"a prepared decision differs from the unprepared one ({mac:012x} at {now})")
            last_start = start
            _forget(baseline)
            t0 = time.perf_counter()
            baseline.decide(packets, mac, now, identity=identity)
            base = (time.perf_counter() - t0) * 1e3
            rebuilt.append(base)
            ratios.append(base / took)
        if len(everything) > mine_from:
            per_device[mac] = (float(np.median(everything[mine_from:])), len(ts) / ((int(ts[-1]) - t_first) / 1e9))
    del engine.segment_model.predict_proba                         # the model's own method again
    med = lambda xs: float(np.median(xs)) if xs else None  # noqa: E731
    return {"controller_devices": devices, "controller_decisions": len(rebuilt),
            "controller_decision_ms": med(moved + still), "controller_decision_window_unchanged_ms": med(still),
            "controller_decision_window_moved_ms": med(moved), "controller_decisions_window_moved": len(moved),
            "controller_decision_window_moved_prepared_ms": med(moved_prepared),
            "controller_decisions_window_moved_prepared": len(moved_prepared),
            "controller_decision_window_moved_unprepared_ms": med(moved_unprepared),
            "controller_decision_window_moved_without_prepare_ms": med(moved_plain),
            "controller_decision_p90_ms": float(np.percentile(everything, 90)) if everything else None,
            "controller_prepare_ms": med(prepares), "controller_prepares": len(prepares),
            "controller_decision_per_device_ms": {f"{m:012x}": {"median_ms": round(v[0], 3), "packets_per_s": round(v[1], 2)}
                                                  for m, v in sorted(per_device.items(), key=lambda kv: kv[1][1])},
            "controller_explanation_after_ms": med(explained),
            "controller_decision_and_explanation_window_moved_ms": med(whole_moved),
            "controller_rebuilt_decision_ms": med(rebuilt), "controller_rebuilt_vs_incremental": med(ratios)}


def main() -> int:
    from classifier.shared import datasets_root
    if len(sys.argv) > 1 and sys.argv[1] != "--generated":
        capture = sys.argv[1]
    elif datasets_root() and sys.argv[1:] != ["--generated"]:
        capture = str(datasets_root() / "home" / "training_2023-5-26_1_13_9.pcapng.gz")
    else:
        from testing.synth import default_network, write_network_capture
        capture = os.path.join(tempfile.mkdtemp(), "synthetic.pcap")
        write_network_capture(capture, default_network(), 3600.0, seed=1)
    print(json.dumps(run(capture), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
