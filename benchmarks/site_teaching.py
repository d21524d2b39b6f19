"""The site teaches the engine, measured on the shared captures: pin one unit of a device model,
and a second unit of that model, never seen before, is decided again.

``python -m benchmarks.site_teaching [--json] [--pairs NAME,...]``

For each pair of units of one model (IoT Sentinel EdimaxCam1/2, EdnetCam1/2, WeMoSwitch/2,
WeMoInsightSwitch/2; longterm blink-cam-01/02 and 01/03): the engine of the ``lovo`` fold
that holds the model's MAC vendor (``iotclass evaluate lovo``'s folds: 5, seed 0; trained on the
other folds only, so no device of that vendor was seen), and unit 2's timeline (its captures
joined, its first hour) replayed at the controller's cadence (``classifier.evaluation.devices``,
the whole engine, ``fused``): the decision in force at 1, 10 and 60 minutes, before and after
unit 1 is pinned — its pooled identity records and its category folded into the identity voter
(:func:`classifier.identity.site.fold_site`, as the controller does when a pin is made; the
behaviour models untouched). And what the pin does to every other test device of the fold
(its decision in force at 60 minutes before and after), other devices of the same vendor first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

PAIRS = {"EdimaxCam": ("EdimaxCam1", ("EdimaxCam2",)), "EdnetCam": ("EdnetCam1", ("EdnetCam2",)),
         "WeMoSwitch": ("WeMoSwitch", ("WeMoSwitch2",)),
         "WeMoInsightSwitch": ("WeMoInsightSwitch", ("WeMoInsightSwitch2",)),
         "blink-cam": ("Blink indoor camera (unit 1)", ("Blink indoor camera (unit 2)", "Blink indoor camera (unit 3)"))}
MINUTES = (1, 10, 60)


def _in_force(answers, minute):
    from classifier.evaluation.devices import in_force
    a = in_force(answers, minute * 60.0)
    return None if a is None else f"{a[1]} {a[2]}"


def run(pairs, log=print) -> dict:
    from classifier.capture.labels import Dataset, load_datasets
    from classifier.evaluation import generalisation as gen
    from classifier.evaluation import protocols as ev
    from classifier.evaluation.devices import device_streams, pool_streams, replay_device
    from classifier.evaluation.training import LONG, EarlyData, default_roots
    from classifier.identity.site import SiteExample
    t_start = time.time()
    roots = default_roots()
    if not roots:
        raise SystemExit("the shared captures (../shared/datasets) are needed")
    ds = load_datasets(roots)
    data = EarlyData("all", ds, ev.DEFAULT_SETTINGS["all"])
    long_ds = Dataset([c for c in ds.captures if c.dataset in LONG])
    long = ev.Data("long", long_ds, data.settings, data.cache) if long_ds.captures else None
    records = gen.RecordSource(data)
    streams = data.streams
    log(f"{len(streams)} streams loaded ({time.time() - t_start:.0f} s)")
    splits = gen.vendor_splits(streams, 5, 0)
    by_dev = device_streams(streams, np.ones(len(streams), bool))
    for key in list(by_dev):                     # "iot-sentinel/EdimaxCam1" also as "EdimaxCam1"
        by_dev.setdefault(key.split("/", 1)[-1], by_dev[key])
    log("devices: " + ", ".join(sorted(k for k in by_dev if "/" in k)))
    fused = {"fused": (gen.ABLATIONS["fused"], None)}

    def timeline(name):
        return pool_streams(streams, by_dev[name], records, lambda i: data.cache.get([streams[i].capture])[0].packets)

    def answers(engine, tl):
        return replay_device(engine, tl, fused)["fused"]["answers"]

    engines: dict = {}
    out = {"pairs": [], "seconds": None}
    for model, (first, others) in pairs.items():
        if first not in by_dev:
            log(f"{model}: {first} not in the shared data; skipped")
            continue
        i0 = by_dev[first][0]
        k = next(k for k, (_, _, test) in enumerate(splits) if test[i0])
        name, train, test = splits[k]
        if k not in engines:
            t0 = time.time()
            engines[k] = gen.train_engine(data, long, train, records, 0, log=lambda m: None)
            log(f"fold {k} ({name}): engine trained in {time.time() - t0:.0f} s")
        engine = engines[k]
        tl1 = timeline(first)
        site = [SiteExample(tl1.mac, tl1.category, tuple(tl1.records))]
        engine.learn_site([])                               # the fold's engine as trained
        full = {k.split("/", 1)[-1]: k for k in by_dev if "/" in k}
        first, others = full.get(first, first), tuple(full.get(o, o) for o in others)
        fold_devs = [d for d in device_streams(streams, test) if d != first]
        before = {d: answers(engine, timeline(d)) for d in fold_devs}
        learned = engine.learn_site(site)
        after = {d: answers(engine, timeline(d)) for d in fold_devs}
        engine.learn_site([])
        vendor = engine.identity_model.vendor(tl1.mac)
        for other in others:
            tl2 = timeline(other)
            row = {"model": model, "pinned": first, "second_unit": other, "category": tl2.category,
                   "fold": name, "records_pinned": len(tl1.records), "records_second": len(tl2.records),
                   "learned": learned,
                   "before": {m: _in_force(before[other], m) for m in MINUTES},
                   "after": {m: _in_force(after[other], m) for m in MINUTES}}
            out["pairs"].append(row)
            log(f"{model}: pinned {first} ({tl1.category}, {len(tl1.records)} records); {other} at 1/10/60 min: "
                f"before {' | '.join(str(row['before'][m]) for m in MINUTES)}; "
                f"after {' | '.join(str(row['after'][m]) for m in MINUTES)}")
        others_set = set(others)
        changed = []
        for d in fold_devs:
            if d in others_set:
                continue
            b, a = _in_force(before[d], 60), _in_force(after[d], 60)
            same_vendor = engine.identity_model.vendor(timeline(d).mac) == vendor
            if b != a:
                changed.append({"device": d, "truth": timeline(d).category, "before": b, "after": a,
                                "same_vendor": same_vendor})
        out["pairs"][-1]["other_devices"] = {"fold_devices": len(fold_devs) - len(others), "changed": changed}
        log(f"  other devices of the fold at 60 min: {len(changed)} of {len(fold_devs) - len(others)} changed"
            + "".join(f"; {c['device']} ({c['truth']}{', same vendor' if c['same_vendor'] else ''}): "
                      f"{c['before']} -> {c['after']}" for c in changed))
    out["seconds"] = round(time.time() - t_start, 1)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.site_teaching", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--pairs", help=f"comma-separated, of {', '.join(PAIRS)} (default: all)")
    args = ap.parse_args(argv)
    pairs = PAIRS if not args.pairs else {k: PAIRS[k] for k in args.pairs.split(",")}
    res = run(pairs, log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json:
        json.dump(res, sys.stdout, indent=2, default=str)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
