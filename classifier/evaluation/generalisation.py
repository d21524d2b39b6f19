"""Does the whole engine carry to devices, vendors and networks it was not trained on?

Protocols (``iotclass evaluate lovo|cross|fusion-openset``), on every shared data set at once
(T = 300 s, as the shipped engine):

* ``lovo`` — leave vendors out: MAC vendors (the OUI registry's organisation; a device whose
  MAC has none is its own vendor) dealt into ``folds`` folds; each fold's devices are tested by
  an engine trained (behaviour models and identity voter, with their calibration) on the other
  folds' only, so no device of a test vendor is seen in training;
* ``cross`` — leave a data set out: train on the other data sets, test on it (each of
  ``CROSS_TESTS`` in turn);
* ``fusion-openset`` — leave a category out of training; its devices must not be accepted as
  another category at the thresholds the training calibrated;
* ``fusion-known`` — known devices: capture files in ``folds`` folds (as ``known``).

For each split and each ablation — ``behaviour`` (session and segment models: the engine as it
was), ``identity`` (the identity voter alone), ``fused`` (all three: the engine as shipped, with
its rule that behaviour alone vouches only for devices of vendors seen in training) and
``fused-ungated`` (all three, that rule off) — all concluded from the same evidence of the same
trained engine, two measures per test stream (one device in one capture):

* *final*: the decision on the whole stream (its packets and identity records);
* *online*: the stream replayed decision by decision (at each identity record, each session
  start, each segment boundary and every ``GRID_SECONDS`` in the first ``GRID_SPAN`` seconds)
  up to its first *final* decision — confirmed or unknown, whatever its category. See
  :func:`first_final_metrics` (kept apart so that any replay loop can use it).

And the open set within any split: the test streams whose category no training stream had
(every test stream in ``fusion-openset``), the share of them accepted as another category
(:func:`false_accepts`).

And what the evidence gives (:func:`evidence_reach`): the share of test streams with any
identity record, the share on which public knowledge alone names the right category (and a
wrong one), and the share whose category public knowledge, at least one ablation's
whole-stream decision (provisional ones included) or one voter's top class (below its threshold
too) names — a bound for any rule that re-chooses among this engine's answers with this
knowledge, not a limit of the data (another engine could name more); and the share holding the
minimum evidence for a confirmation within ``GOAL_SECONDS``.

And per device, over time (:mod:`classifier.evaluation.devices`, with ``online``): each test
device's test streams joined in time order and replayed at the controller's cadence, the
decision in force at 1, 10 and 60 minutes of its traffic and its wrong confirmations, per
ablation; what public knowledge alone names on its pooled records; the share of devices with
any identity record and whose records name nothing.

The identity voter reads the device's identity records through ``records_of``: by default
the ``identity`` table a decoded capture carries (``LoadedCapture.identity``), none otherwise.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from classifier.engine.decision import CONFIRMED, UNKNOWN
from classifier.evaluation.devices import (device_row, device_streams, format_devices, pool_streams, replay_device,
                                           summarise_devices, wrong_confirmations)
from classifier.evaluation.records import RecordSource, capture_records  # noqa: F401
from classifier.identity.knowledge import knowledge_verdict

ABLATIONS = {"behaviour": ("session", "segment"), "identity": ("identity",), "fused": ("identity", "session", "segment"),
             "fused-ungated": ("identity", "session", "segment")}
#: ablations concluded without the engine's seen-vendor rule (``behaviour``: the models alone, as before it)
UNGATED = ("behaviour", "fused-ungated")
GRID_SECONDS = 10.0
GRID_SPAN = 600.0
MAX_POINTS = 120
MAX_SESSION_POINTS = 12
#: test streams per device and split: IoT Sentinel has about 20 near-identical set-up captures per
#: device; a seeded choice of this many bounds the replay's cost (None: every stream)
MAX_STREAMS_PER_DEVICE = 4
#: ``--probes``: seconds from a device's first packet to its answer to the controller's first
#: identity probe (sent a second after its mirror entries go in, which follow its first packet
#: by a batch and a round trip)
PROBE_DELAY_S = 2.0
#: cross-dataset tests: each is tested by an engine trained on every other data set
CROSS_TESTS = (("home",), ("iot-sentinel",), ("longterm", "unsw-2014", "mud-2024", "speaker"))
#: the issue's goal for the median time to a first final decision; the reach reports how many
#: test streams hold the stated minimum evidence for a confirmation by then
GOAL_SECONDS = 60.0


# --------------------------------------------------------------------------- identity records


# --------------------------------------------------------------------------- splits


def stream_vendors(streams) -> list[str]:
    from classifier.identity.training import vendor_of
    return [vendor_of(s.mac, s.group) for s in streams]


def vendor_splits(streams, folds: int = 5, seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    from classifier.identity.training import vendor_folds
    vendors = stream_vendors(streams)
    # deal devices' vendors so that each fold's share of streams is about equal
    f = vendor_folds(vendors, folds, seed)
    out = []
    for k in range(folds):
        test = f == k
        names = sorted({v for v, t in zip(vendors, test) if t})
        out.append((f"vendors {', '.join(names)}", ~test, test))
    return out


def dataset_splits(streams, tests=CROSS_TESTS) -> list[tuple[str, np.ndarray, np.ndarray]]:
    ds = np.array([s.dataset for s in streams], dtype=object)
    out = []
    for names in tests:
        test = np.isin(ds, list(names))
        if test.any() and (~test).any():
            out.append((f"test on {'+'.join(names)}", ~test, test))
    return out


def capture_splits(streams, folds: int = 5, seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Known devices: capture files in folds (as the ``known`` protocol)."""
    from classifier.evaluation.protocols import capture_folds
    f = capture_folds(streams, folds, seed)
    return [(f"capture fold {k}", f != k, f == k) for k in range(folds)]


def category_splits(streams) -> list[tuple[str, np.ndarray, np.ndarray]]:
    cats = np.array([s.category for s in streams], dtype=object)
    return [(f"{c} left out", cats != c, cats == c) for c in sorted(set(cats.tolist()))
            if len(set(cats[cats != c].tolist())) >= 2]


# --------------------------------------------------------------------------- training


def train_engine(data, long, train: np.ndarray, records_of, seed: int = 0, log=lambda m: None):
    """An engine (behaviour models and identity voter) trained on the streams in ``train``."""
    from classifier.evaluation.training import SEGMENT_MODEL, build_engine
    from classifier.identity.training import train_identity
    train_long = None
    if long is not None:
        keys = {(s.capture, s.mac) for s, t in zip(data.streams, train) if t}
        train_long = np.array([(s.capture, s.mac) in keys for s in long.streams])
    engine = build_engine(data, long, train, train_long, seed, segment_model=SEGMENT_MODEL if long is not None else None,
                          log=log)
    engine.identity_model = train_identity(data.streams, records_of, train, seed, log=log)
    engine.config = replace(engine.config, explain=False)
    return engine


# --------------------------------------------------------------------------- replay


def cap_streams(streams, test: np.ndarray, per_device: int | None, seed: int) -> np.ndarray:
    """At most ``per_device`` test streams of each device (a seeded choice)."""
    if per_device is None:
        return test
    rng = np.random.default_rng(seed)
    out = np.zeros_like(test)
    by_dev: dict[str, list[int]] = {}
    for i in np.flatnonzero(test):
        by_dev.setdefault(streams[i].device, []).append(int(i))
    for dev in sorted(by_dev):
        idx = by_dev[dev]
        keep = idx if len(idx) <= per_device else sorted(rng.choice(idx, per_device, replace=False).tolist())
        out[keep] = True
    return out


def decision_points(st, records, settings, max_points: int = MAX_POINTS) -> np.ndarray:
    """When the engine is asked: at the first identity record, at each of the first
    ``MAX_SESSION_POINTS`` session starts, at each segment boundary, and every GRID_SECONDS in
    the first GRID_SPAN seconds (earliest ``max_points``). Later records are read at the next
    of these points (the controller asks every 30 s)."""
    first = [min(int(r[0]) for r in records)] if records else []
    pts = [np.asarray(first, np.int64), st.sessions.start_ns[:MAX_SESSION_POINTS].astype(np.int64)]
    grid = st.t0_ns + (np.arange(1, int(GRID_SPAN / GRID_SECONDS) + 1) * GRID_SECONDS * 1e9).astype(np.int64)
    seg = st.t0_ns + (np.arange(1, max_points + 1) * settings.interval * 1e9).astype(np.int64)
    pts += [grid, seg]
    allp = np.unique(np.concatenate(pts))
    allp = allp[(allp >= st.t0_ns) & (allp <= st.end_ns)]
    return allp[:max_points]


def replay(engine, pk, mac: int, records, points: np.ndarray, ablations=ABLATIONS) -> dict[str, dict]:
    """Per ablation: the first final decision (time in s since the device's first packet,
    category, stage, evidence) — or none within the points."""
    from classifier.features.devices import split_devices
    view = split_devices(pk, devices=[mac])
    dev = pk.take(view.pkt)
    ts = dev.ts_ns
    t0 = int(ts.min())
    out = {name: None for name in ablations}
    for t in points:
        if all(v is not None for v in out.values()):
            break
        kk = int(np.searchsorted(ts, t, side="right"))
        if kk == 0:
            continue
        ev = engine.evidence(dev.take(slice(0, kk)), mac, now_ns=int(t), identity=records, voters=ABLATIONS["fused"])
        if ev is None:
            continue
        for name, voters in ablations.items():
            if out[name] is not None:
                continue
            d = engine.conclude(ev, voters, gate=_gate(name))
            if d is not None and d.stage in (CONFIRMED, UNKNOWN):
                out[name] = {"seconds": (int(t) - t0) / 1e9, "category": d.category, "stage": d.stage,
                             "confidence": d.confidence, "evidence": d.evidence}
    return out


def _gate(ablation: str) -> bool | None:
    """The seen-vendor rule for an ablation: off for the ungated ones, else the engine's own."""
    return False if ablation in UNGATED else None


def final_decisions(engine, pk, mac: int, records, ablations=ABLATIONS) -> dict[str, dict]:
    """Per ablation, the decision on the whole stream; under ``"voters"``, each present voter's
    top class, whether or not it reaches its threshold."""
    ev = engine.evidence(pk, mac, identity=records, voters=ABLATIONS["fused"])
    out = {}
    for name, voters in ablations.items():
        d = engine.conclude(ev, voters, gate=_gate(name)) if ev is not None else None
        out[name] = None if d is None else {"category": d.category, "stage": d.stage, "confidence": d.confidence}
    out["voters"] = {} if ev is None else {v.name: engine.classes[int(v.p.argmax())] for v in ev.votes}
    return out


# --------------------------------------------------------------------------- metrics


def first_final_metrics(rows: list[dict], min_packets: int) -> dict:
    """The online measure. ``rows``: per stream ``{"category": truth, "first_final": None or
    {"seconds", "category", "stage", "evidence"}}``. Streams without a final decision count as
    never decided (infinite time) in the median."""
    n = len(rows)
    finals = [r["first_final"] for r in rows if r["first_final"] is not None]
    truth = [r["category"] for r in rows if r["first_final"] is not None]
    times = [f["seconds"] for f in finals] + [float("inf")] * (n - len(finals))
    right = [f["category"] == t for f, t in zip(finals, truth)]
    confirmed = [(f, t) for f, t in zip(finals, truth) if f["stage"] == CONFIRMED]
    below = [f for f in finals if f["stage"] == CONFIRMED and f["evidence"]["packets"] < min_packets]
    med = float(np.median(times)) if n else None
    return {
        "streams": n,
        "share_with_final": len(finals) / max(1, n),
        "median_seconds_to_first_final": med if med is None or np.isfinite(med) else None,
        "median_seconds_among_finals": float(np.median([f["seconds"] for f in finals])) if finals else None,
        "accuracy_of_first_finals": float(np.mean(right)) if finals else None,   # unknown counts as wrong
        "share_unknown": float(np.mean([f["category"] == UNKNOWN for f in finals])) if finals else None,
        "accuracy_of_first_confirmed": float(np.mean([f["category"] == t for f, t in confirmed])) if confirmed else None,
        "confirmed_below_minimum": len(below),
    }


def final_metrics(rows: list[dict]) -> dict:
    """The offline measure on whole streams, per stream and per device (a device's streams
    vote: its most frequent decision)."""
    n = len(rows)
    decided = [r for r in rows if r["final"] is not None]
    right = [r["final"]["category"] == r["category"] for r in decided]
    accepted = [r for r in decided if r["final"]["category"] != UNKNOWN]
    by_dev: dict[str, list] = {}
    for r in rows:
        by_dev.setdefault(r["device"], []).append(r["final"]["category"] if r["final"] else "-")
    dev_right = []
    for dev, cats in by_dev.items():
        vals, cnt = np.unique(np.array(cats, dtype=object), return_counts=True)
        truth = next(r["category"] for r in rows if r["device"] == dev)
        dev_right.append(vals[cnt.argmax()] == truth)
    return {
        "streams": n,
        "accuracy": float(np.sum(right) / max(1, n)),             # undecided and unknown count as wrong
        "share_unknown": float(np.mean([r["final"]["category"] == UNKNOWN for r in decided])) if decided else None,
        "share_undecided": 1 - len(decided) / max(1, n),
        "accuracy_on_accepted": float(np.mean([r["final"]["category"] == r["category"] for r in accepted]))
        if accepted else None,
        "devices": len(by_dev),
        "device_accuracy": float(np.mean(dev_right)) if dev_right else None,
    }


def false_accepts(rows: list[dict]) -> dict:
    """Open set: the share of a left-out category's streams accepted as another category
    (wrong), and the share named right anyway (public knowledge names every category), over
    whole streams; ``devices``: the number of distinct devices among them."""
    n = len(rows)
    fin = [r["final"] for r in rows]
    wrong = [f is not None and f["category"] not in (UNKNOWN, r["category"]) for f, r in zip(fin, rows)]
    named = [f is not None and f["category"] == r["category"] for f, r in zip(fin, rows)]
    return {"streams": n, "devices": len({r["device"] for r in rows}), "false_accepts": int(np.sum(wrong)),
            "false_accept_rate": float(np.mean(wrong)) if n else None,
            "named_right": float(np.mean(named)) if n else None}


# --------------------------------------------------------------------------- running


def run_generalisation(protocol: str, data, long, records_of, folds: int = 5, seed: int = 0,
                       online: bool = True, log=print, splits=None, probes: bool = False) -> dict:
    """``protocol``: lovo | cross | fusion-openset. Returns per split and overall, per ablation,
    the final and online measures. ``probes``: the online replay simulates the controller's
    identity probes (:func:`classifier.identity.probe.probe_answers`: a device's own mDNS
    records answered ``PROBE_DELAY_S`` after its first packet); whole-stream decisions are
    the same either way."""
    from classifier.identity.probe import probe_answers
    streams = data.streams
    if splits is None:
        splits = {"lovo": lambda: vendor_splits(streams, folds, seed), "cross": lambda: dataset_splits(streams),
                  "fusion-openset": lambda: category_splits(streams),
                  "fusion-known": lambda: capture_splits(streams, folds, seed)}[protocol]()
    rows_all: list[dict] = []
    dev_rows_all: list[dict] = []
    per_split = []
    t_start = time.time()
    min_packets = None
    for name, train, test in splits:
        t0 = time.time()
        test_all = test
        test = cap_streams(streams, test, MAX_STREAMS_PER_DEVICE, seed)
        engine = train_engine(data, long, train, records_of, seed, log=lambda m: log("    " + m))
        min_packets = engine.config.min_packets_confirmed
        trained = {s.category for s, t in zip(streams, train) if t}
        dev_rows = replay_devices(engine, data, test_all, records_of, name, online=online, probes=probes)
        dev_rows_all += dev_rows
        rows = []
        for i in np.flatnonzero(test):
            st = streams[i]
            lc = data.cache.get([st.capture])[0]
            recs = records_of(int(i))
            vendor = engine.vendor_status(st.mac)
            row = {"stream": int(i), "device": st.device, "dataset": st.dataset, "category": st.category,
                   "capture": st.capture, "split": name, "novel_category": st.category not in trained,
                   "vendor": None if vendor is None else vendor[0]}
            fin = final_decisions(engine, lc.packets, st.mac, recs)
            row["records"] = len(recs)
            row["packets_by_goal"] = packets_within(lc.packets, st.mac, GOAL_SECONDS)
            row["knowledge"] = knowledge_verdict(recs, st.mac)
            live = probe_answers(recs, st.t0_ns + int(PROBE_DELAY_S * 1e9)) if probes else recs
            on = replay(engine, lc.packets, st.mac, live, decision_points(st, live, data.settings)) if online else {}
            row["by"] = {a: {"final": fin[a], "first_final": on.get(a)} for a in ABLATIONS}
            row["voter_tops"] = fin["voters"]
            rows.append(row)
        rows_all += rows
        summary = summarise(rows, protocol, min_packets)
        summary["devices"] = summarise_devices(dev_rows)
        per_split.append({"split": name, "train_streams": int(train.sum()), "test_streams": int(test.sum()),
                          "identity_threshold": engine.identity_model.threshold,
                          "identity_threshold_seen_vendor": (engine.identity_model.seen or (None, None, None))[2],
                          "session_threshold": engine.config.threshold, "summary": summary})
        log(f"  {name}: {int(test.sum())} test streams ({time.time() - t0:.0f} s) — " + "; ".join(
            f"{a} {fmt(summary[a])}" for a in ABLATIONS))
        if online and dev_rows:
            d60 = summary["devices"]["by"]["fused"]["at_minute"]["60"]
            log(f"    per device (fused, {len(dev_rows)} devices), in force at 60 min: right {d60['right']:.2f}, "
                f"wrong {d60['wrong']:.2f}, unknown {d60['unknown']:.2f}, undecided {d60['undecided']:.2f}; "
                f"wrong confirmations {summary['devices']['by']['fused']['wrong_confirmations']}")
        log("    test streams by MAC vendor: " + ", ".join(
            f"{k or 'rule not applicable'} {sum(r['vendor'] == k for r in rows)}"
            for k in ("seen", "unseen", "unregistered", "local", None)
            if any(r["vendor"] == k for r in rows)))
    overall = summarise(rows_all, protocol, min_packets or 20)
    overall["devices"] = summarise_devices(dev_rows_all)
    by_dataset = {}
    for ds in sorted({r["dataset"] for r in rows_all}):
        by_dataset[ds] = summarise([r for r in rows_all if r["dataset"] == ds], protocol, min_packets or 20)
        by_dataset[ds]["devices"] = summarise_devices([r for r in dev_rows_all if r["dataset"] == ds])
    return {"protocol": protocol, "data": data.name, "settings": data.settings.as_dict(), "folds": folds, "seed": seed,
            "probes": probes,
            "splits": per_split, "overall": overall, "by_dataset": by_dataset, "rows": rows_all,
            "devices": dev_rows_all, "wrong_confirmations": wrong_confirmations(dev_rows_all),
            "seconds": round(time.time() - t_start, 1)}


def replay_devices(engine, data, test: np.ndarray, records_of, split: str, online: bool = True,
                   probes: bool = False) -> list[dict]:
    """Per test device, its test streams joined in time order (all of them, not the capped
    choice of the per-stream measures): what public knowledge names on its pooled records, and
    with ``online`` its replay at the controller's cadence per ablation
    (:mod:`classifier.evaluation.devices`). ``probes``: each capture's records as the probes'
    simulation gives them."""
    from classifier.identity.probe import probe_answers
    streams = data.streams

    def recs(i):
        r = records_of(i)
        return probe_answers(r, streams[i].t0_ns + int(PROBE_DELAY_S * 1e9)) if probes else r
    out = []
    ablations = {a: (v, _gate(a)) for a, v in ABLATIONS.items()}
    for dev, idx in device_streams(streams, test).items():
        tl = pool_streams(streams, idx, recs, lambda i: data.cache.get([streams[i].capture])[0].packets)
        out.append(device_row(tl, replay_device(engine, tl, ablations) if online else {}, split))
    return out


def packets_within(pk, mac: int, seconds: float) -> int:
    """Device ``mac``'s packets (both directions) within ``seconds`` of its first one, the
    clock of the online replay."""
    from classifier.features.devices import split_devices
    ts = pk.ts_ns[split_devices(pk, devices=[mac]).pkt]
    return int((ts <= ts.min() + int(seconds * 1e9)).sum()) if len(ts) else 0


def evidence_reach(rows: list[dict], min_packets: int = 20) -> dict | None:
    """Shares of test streams: with any identity record; whose category public knowledge alone
    names (right, wrong; :func:`~classifier.identity.knowledge.knowledge_verdict` on the
    stream's records and MAC); whose category public knowledge, any ablation's whole-stream
    decision or any voter's top class names (``named_by_engine_or_knowledge``: a bound on
    re-choosing among this engine's answers with this knowledge, not a limit of the data); holding
    ``min_packets`` (the minimum for a confirmation) by ``GOAL_SECONDS`` after their first
    packet — if under half, no engine keeping that minimum can have its median first final
    decision by then. ``None`` for rows without the fields (older results)."""
    rows = [r for r in rows if "knowledge" in r]
    if not rows:
        return None
    n = len(rows)

    def named(r):
        cats = ({r["knowledge"]} | {(r["by"][a]["final"] or {}).get("category") for a in r["by"]}
                | set(r.get("voter_tops", {}).values()))
        return r["category"] in cats
    return {"streams": n, "with_records": sum(r["records"] > 0 for r in rows) / n,
            "knowledge_right": sum(r["knowledge"] == r["category"] for r in rows) / n,
            "knowledge_wrong": sum(r["knowledge"] not in (None, r["category"]) for r in rows) / n,
            "named_by_engine_or_knowledge": sum(named(r) for r in rows) / n,
            "minimum_by_goal": (sum(r["packets_by_goal"] >= min_packets for r in rows) / n
                                if all("packets_by_goal" in r for r in rows) else None)}


def summarise(rows: list[dict], protocol: str, min_packets: int) -> dict:
    out = {}
    reach = evidence_reach(rows, min_packets)
    if reach is not None:
        out["reach"] = reach
    for a in ABLATIONS:
        sub = [{"device": r["device"], "category": r["category"], "final": r["by"][a]["final"],
                "first_final": r["by"][a]["first_final"], "novel": r.get("novel_category", protocol == "fusion-openset")}
               for r in rows if a in r["by"]]
        out[a] = {"final": final_metrics(sub), "online": first_final_metrics(sub, min_packets)}
        novel = [r for r in sub if r["novel"]]
        if novel or protocol == "fusion-openset":
            out[a]["open_set"] = false_accepts(novel)
    return out


def fmt(s: dict) -> str:
    f, o = s["final"], s["online"]
    acc = f"acc {f['accuracy']:.3f} (unknown {f['share_unknown'] or 0:.2f})"
    if "open_set" in s and s["open_set"]["streams"]:
        acc += f", false accepts {s['open_set']['false_accept_rate']:.3f}"
    med = o["median_seconds_to_first_final"]
    on = (f"first final: acc {o['accuracy_of_first_finals']:.3f}, median {med:.0f} s" if med is not None and
          o["accuracy_of_first_finals"] is not None else "first final: median not reached")
    return f"{acc}; {on}"


def format_table(result: dict) -> str:
    lines = [f"{result['protocol']} on {result['data']}",
             f"{'':22s} {'ablation':13s} {'acc':>6s} {'dev acc':>7s} {'unknown':>7s} {'acc acc.':>8s} "
             f"{'1st-final acc':>13s} {'unk':>5s} {'median s':>9s} {'with final':>10s} {'below min':>9s}"]

    def row(label, s):
        r = s.get("reach")
        if r:
            d = s.get("devices") or {}
            lines.append(f"{label[:22]:22s} reach: {r['streams']} streams, {r['with_records']:.2f} with identity "
                         f"records; public knowledge alone names {r['knowledge_right']:.3f} right, "
                         f"{r['knowledge_wrong']:.3f} wrong; named by some answer of this engine or the knowledge "
                         f"(bound on re-choosing among them) {r['named_by_engine_or_knowledge']:.3f}"
                         + (f"; {r['minimum_by_goal']:.2f} hold the minimum for a confirmation by {GOAL_SECONDS:.0f} s"
                            if r.get("minimum_by_goal") is not None else "")
                         + (f"; of {d['devices']} devices {d['with_records']:.2f} carry identity records, "
                            f"{d['named_by_nothing']:.2f} have records that name nothing" if d.get("devices") else ""))
        for a in [a for a in ABLATIONS if a in s]:
            f, o = s[a]["final"], s[a]["online"]
            med = o["median_seconds_to_first_final"]
            cells = [f"{f['accuracy']:6.3f}", f"{f['device_accuracy'] or 0:7.3f}", f"{f['share_unknown'] or 0:7.3f}",
                     f"{f['accuracy_on_accepted'] or 0:8.3f}",
                     f"{o['accuracy_of_first_finals'] if o['accuracy_of_first_finals'] is not None else float('nan'):13.3f}",
                     f"{o['share_unknown'] if o['share_unknown'] is not None else float('nan'):5.2f}",
                     f"{med:9.0f}" if med is not None else f"{'never':>9s}", f"{o['share_with_final']:10.2f}",
                     f"{o['confirmed_below_minimum']:9d}"]
            fa = s[a].get("open_set")
            extra = (f"  false accepts {fa['false_accepts']}/{fa['streams']} = {fa['false_accept_rate']:.3f} "
                     f"({fa['devices']} devices of a category not in training)" if fa and fa["streams"] else "")
            lines.append(f"{label[:22]:22s} {a:13s} " + " ".join(cells) + extra)

    row("all", result["overall"])
    for ds, s in result["by_dataset"].items():
        row(ds, s)
    groups = {"all": result["overall"].get("devices")} | {ds: s.get("devices") for ds, s in result["by_dataset"].items()}
    if any(g and g.get("by") for g in groups.values()):
        lines += ["", format_devices(groups, result.get("devices", []))]
    return "\n".join(lines)
