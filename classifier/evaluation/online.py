"""Online decisions on replayed captures: how soon does a device get its final decision, and
is it right?

Known-device protocol: capture files in 5 folds; for each fold an engine (session model,
the segment model where captures are long enough, and the identity voter on the streams'
identity records, as the shipped engine; ``behaviour_only``: without the identity voter, the
engine before identity evidence) is trained and calibrated on the other folds, and each
held-out device stream is replayed through it as the controller asks
(:func:`classifier.engine.replay.replay_decisions`): a decision request every 30 s of capture
time once the device has 10 packets (and only after new packets), on the device's packets up
to then; the first confirmed or unknown decision is final, because the controller stops
mirroring the device there.

Per device (:mod:`classifier.evaluation.devices`): each device's held-out captures of a fold
joined in time order and replayed at the same cadence, with the controller's rules after a
decision (a confirmed device is not asked again, an unknown one at a new identity record or
after 5 minutes): the decision in force at 1, 10 and 60 minutes of its traffic, its wrong
confirmations, and what public knowledge alone names on its pooled records. A device counts
once per fold it is tested in.

Reported: the first *final* decision (confirmed or unknown, whatever its category): the share
of streams that reach one, the share of those that are right and that are ``unknown``, and
the median time from the device's first packet to it; the first correct *provisional* and
*confirmed* decisions (median times, shares of streams reaching them before the final one);
and the last decision of each stream.
"""

from __future__ import annotations

import time

import numpy as np

from classifier.capture.labels import load_datasets
from classifier.engine.decision import CONFIRMED, UNKNOWN
from classifier.engine.replay import DECIDE_INTERVAL_S, DECIDE_MIN_PACKETS, Replay, replay_decisions
from classifier.evaluation.devices import (device_row, device_streams, pool_streams, replay_device,
                                           summarise_devices, wrong_confirmations)
from classifier.evaluation.protocols import capture_folds, labels_of
from classifier.evaluation.records import RecordSource
from classifier.evaluation.training import DATA_LONG_OK, EarlyData, build_engine
from classifier.identity.training import train_identity


def stream_row(rep: Replay, truth: str) -> dict:
    """One replayed stream's figures (times in seconds from the device's first packet)."""
    final, last = rep.final, rep.last
    return {"provisional_s": rep.first_correct_s(truth), "confirmed_s": rep.first_correct_s(truth, CONFIRMED),
            "final_s": rep.final_s, "final_category": final.category if final else None,
            "final_stage": final.stage if final else None, "calls": rep.requests,
            "last_category": last.category if last else None, "last_stage": last.stage if last else None}


def _median(xs: list) -> float | None:
    return float(np.median(xs)) if xs else None


def summarise(rows: list[dict]) -> dict:
    n = max(1, len(rows))
    prov = [r["provisional_s"] for r in rows if r["provisional_s"] is not None]
    conf = [r["confirmed_s"] for r in rows if r["confirmed_s"] is not None]
    final = [r for r in rows if r["final_category"] is not None]
    decided = [r for r in rows if r["last_category"] is not None]
    return {
        "streams": len(rows),
        "share_final": len(final) / n,
        "final_accuracy": float(np.mean([r["final_category"] == r["category"] for r in final])) if final else None,
        "final_unknown_share": float(np.mean([r["final_category"] == UNKNOWN for r in final])) if final else None,
        "median_final_s": _median([r["final_s"] for r in final]),
        "median_first_correct_provisional_s": _median(prov),
        "median_first_correct_confirmed_s": _median(conf),
        "share_correct_provisional": len(prov) / n,
        "share_correct_confirmed": len(conf) / n,
        "share_decided": len(decided) / n,
        "last_decision_accuracy": float(np.mean([r["last_category"] == r["category"] for r in decided]))
        if decided else None,
        "last_decision_unknown_share": float(np.mean([r["last_category"] == UNKNOWN for r in decided]))
        if decided else None,
    }


def run_online(name: str, roots: list[str], folds: int = 5, seed: int = 0, interval_s: float = DECIDE_INTERVAL_S,
               min_packets: int = DECIDE_MIN_PACKETS, log=print, behaviour_only: bool = False) -> dict:
    from classifier.evaluation.protocols import DATA, DEFAULT_SETTINGS
    ds = load_datasets(roots)
    if DATA[name] is not None:
        ds.captures = [c for c in ds.captures if c.dataset in DATA[name]]
    settings = DEFAULT_SETTINGS[name] if name not in DATA_LONG_OK else DEFAULT_SETTINGS["long"]
    data = EarlyData(name, ds, settings)
    use_segments = name in DATA_LONG_OK
    records = RecordSource(data)
    f = capture_folds(data.streams, folds, seed)
    truth = labels_of(data.streams, "category")
    rows, dev_rows = [], []
    t_start = time.time()
    for k in range(folds):
        train = f != k
        engine = build_engine(data, data if use_segments else None, train, train if use_segments else None, seed,
                              segment_model=None if not use_segments else "lstm-cnn-all", log=lambda m: None)
        if not behaviour_only:
            engine.identity_model = train_identity(data.streams, records, train, seed)
        for i in np.flatnonzero(f == k):
            st = data.streams[i]
            lc = data.cache.get([st.capture])[0]
            rep = replay_decisions(engine, lc.packets, st.mac, interval_s, min_packets, end_ns=st.end_ns,
                                   identity=lc.identity)
            r = stream_row(rep, truth[i])
            r.update(device=st.device, category=st.category, capture=st.capture)
            rows.append(r)
        ablation = {"engine": (engine.config.voters, None)}
        for dev, idx in device_streams(data.streams, f == k).items():
            tl = pool_streams(data.streams, idx, records, lambda i: data.cache.get([data.streams[i].capture])[0].packets)
            dev_rows.append(device_row(tl, replay_device(engine, tl, ablation), f"capture fold {k}"))
        log(f"  fold {k}: {int((f == k).sum())} streams replayed, and their devices ({time.time() - t_start:.0f} s)")
    return {"protocol": "online", "data": name, "settings": settings.as_dict(), "folds": folds, "seed": seed,
            "engine": "behaviour models only" if behaviour_only else "whole (identity, session, segment)",
            "decide_interval_s": interval_s, "decide_min_packets": min_packets,
            "summary": summarise(rows), "streams": rows,
            "device_summary": {"overall": summarise_devices(dev_rows),
                               "by_dataset": {ds: summarise_devices([r for r in dev_rows if r["dataset"] == ds])
                                              for ds in sorted({r["dataset"] for r in dev_rows})}},
            "devices": dev_rows, "wrong_confirmations": wrong_confirmations(dev_rows)}
