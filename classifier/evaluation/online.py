"""Online decisions on replayed captures: how soon does a device get a correct decision?

Known-device protocol: capture files in 5 folds; for each fold an engine (session model,
and the segment model where captures are long enough) is trained and calibrated on the
other folds, and each held-out device stream is replayed: the engine decides at each new
session's first packet and at each segment boundary, on the device's packets up to then.
Reported: the median time from the device's first packet to its first correct
*provisional* and first correct *confirmed* decision, the share of streams that reach
them, and how the last decision of each stream came out.
"""

from __future__ import annotations

import time

import numpy as np

from classifier.capture.labels import load_datasets
from classifier.engine.decision import CONFIRMED, PROVISIONAL, UNKNOWN
from classifier.evaluation.protocols import Data, capture_folds, labels_of
from classifier.evaluation.training import DATA_LONG_OK, EarlyData, build_engine
from classifier.features.devices import split_devices


def replay_stream(engine, pk, mac: int, points_ns: np.ndarray, truth: str) -> dict:
    """Decisions at each time point; times (s since the device's first packet) of the first
    correct provisional / confirmed decision, and the last decision."""
    view = split_devices(pk, devices=[mac])
    dev = pk.take(view.pkt)
    ts = dev.ts_ns
    t0 = int(ts.min())
    first = {PROVISIONAL: None, CONFIRMED: None}
    last = None
    n_calls = 0
    for t in points_ns:
        k = int(np.searchsorted(ts, t, side="right"))
        if k == 0:
            continue
        d = engine.decide(dev.take(slice(0, k)), mac, now_ns=int(t))
        n_calls += 1
        if d is None:
            continue
        last = d
        if d.category == truth:
            secs = (int(t) - t0) / 1e9
            if first[PROVISIONAL] is None:
                first[PROVISIONAL] = secs  # a confirmed decision is also (at least) provisional
            if d.stage == CONFIRMED and first[CONFIRMED] is None:
                first[CONFIRMED] = secs
                break
    return {"provisional_s": first[PROVISIONAL], "confirmed_s": first[CONFIRMED], "calls": n_calls,
            "last_category": last.category if last else None, "last_stage": last.stage if last else None}


def run_online(name: str, roots: list[str], folds: int = 5, seed: int = 0, max_points: int = 80, log=print) -> dict:
    from classifier.evaluation.protocols import DATA, DEFAULT_SETTINGS
    ds = load_datasets(roots)
    if DATA[name] is not None:
        ds.captures = [c for c in ds.captures if c.dataset in DATA[name]]
    settings = DEFAULT_SETTINGS[name] if name not in DATA_LONG_OK else DEFAULT_SETTINGS["long"]
    data = EarlyData(name, ds, settings)
    use_segments = name in DATA_LONG_OK
    f = capture_folds(data.streams, folds, seed)
    truth = labels_of(data.streams, "category")
    rows = []
    t_start = time.time()
    for k in range(folds):
        train = f != k
        engine = build_engine(data, data if use_segments else None, train, train if use_segments else None, seed,
                              segment_model=None if not use_segments else "lstm-cnn-all", log=lambda m: None)
        for i in np.flatnonzero(f == k):
            st = data.streams[i]
            lc = data.cache.get([st.capture])[0]
            points = np.unique(st.sessions.start_ns)[:max_points]
            if use_segments:
                seg_pts = st.t0_ns + (np.arange(settings.t, settings.t + max_points) * settings.interval * 1e9)
                points = np.union1d(points, seg_pts[seg_pts <= st.end_ns].astype(np.int64))
            r = replay_stream(engine, lc.packets, st.mac, points, truth[i])
            r.update(device=st.device, category=st.category, capture=st.capture)
            rows.append(r)
        log(f"  fold {k}: {int((f == k).sum())} streams replayed ({time.time() - t_start:.0f} s)")
    prov = [r["provisional_s"] for r in rows if r["provisional_s"] is not None]
    conf = [r["confirmed_s"] for r in rows if r["confirmed_s"] is not None]
    decided = [r for r in rows if r["last_category"] is not None]
    summary = {
        "streams": len(rows),
        "median_first_correct_provisional_s": float(np.median(prov)) if prov else None,
        "median_first_correct_confirmed_s": float(np.median(conf)) if conf else None,
        "share_correct_provisional": len(prov) / max(1, len(rows)),
        "share_correct_confirmed": len(conf) / max(1, len(rows)),
        "share_decided": len(decided) / max(1, len(rows)),
        "last_decision_accuracy": float(np.mean([r["last_category"] == r["category"] for r in decided]))
        if decided else None,
        "last_decision_unknown_share": float(np.mean([r["last_category"] == UNKNOWN for r in decided]))
        if decided else None,
    }
    return {"protocol": "online", "data": name, "settings": settings.as_dict(), "folds": folds, "seed": seed,
            "summary": summary, "streams": rows}
