"""Per device, over time, as an operator sees it.

The per-stream measures (:mod:`classifier.evaluation.generalisation`, :mod:`.online`) judge one
device in one capture. An operator sees a device: everything it has said and sent so far, and
the decision in force now. Here each test device's captures are joined into one timeline and
replayed at the controller's cadence; the figures are the decision in force at
``MINUTES`` (1, 10 and 60 minutes of the device's traffic) and the wrong confirmations.

**The timeline** (:func:`pool_streams`). A device is one labelled MAC of a data set
(``Stream.device``); its test streams (IoT Sentinel: about 20 set-up captures; home: many
captures of hours) are taken in time order, and each is laid after the previous one's end: a
capture's part starts at the device's first packet in it and lasts to the capture's last
packet. Time is the device's observed time, the gaps between captures removed; its identity
records are moved with their capture's packets (a record before the device's first packet of
its capture is put at that packet). Only the first ``HORIZON_S`` seconds of packets are kept:
the engine reads the packets up to each request, no more. Sessions are rebuilt on the joined
packets, so a session's interval to the previous one across a joint is the gap removed.

**The cadence** (:func:`replay_device`), the controller's (``controller_app/core/decisions.py``;
:func:`classifier.engine.replay.request_times`): a request once the device has
``DECIDE_MIN_PACKETS`` packets, then every ``DECIDE_INTERVAL_S`` seconds when it has sent or
received packets since. Each ablation is its own controller, all concluded from the same
evidence (the engine's ``evidence`` and ``conclude``, on the packets up to the request):

* no decision yet or ``provisional``: asked at every request;
* ``confirmed``: never asked again (the controller stops mirroring; its re-check, hours
  later, is beyond the horizon);
* ``unknown``: asked again at the first request after a new identity record of the device, or
  ``UNKNOWN_RECHECK_S`` after the unknown decision (the controller's re-examination of unknown
  devices).

An answer ``None`` (not enough evidence) leaves the decision in force as it was, as in the
controller. The decision in force at a time is the latest answer up to then; a device whose
timeline ends before a milestone keeps its last decision there (the counts of devices with at
least 1, 10 and 60 minutes of traffic say how many do).

**Per device and milestone** (:func:`summarise_devices`): the share of devices *right* (the
category in force is the device's), *wrong* (a category in force that is not, ``unknown``
excluded), *unknown*, *undecided* (no decision yet); *wrong confirmations*: devices with a
``confirmed`` decision in a wrong category within the replay (with its minute). Beside it, what
public knowledge alone names on the device's pooled records and MAC
(:func:`classifier.identity.knowledge.knowledge_verdict`, all its test captures' records, not
only the first hour's): right, wrong, abstains; the share of devices whose records hold any
identity record, and whose records and MAC give no knowledge hit at all (named by nothing: what
no method reading records alone could name).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import numpy as np

from classifier.capture.packets import Packets, mac_to_str
from classifier.engine.decision import CONFIRMED, UNKNOWN
from classifier.engine.replay import DECIDE_INTERVAL_S, DECIDE_MIN_PACKETS, SEC, device_packets, request_times

#: the milestones (minutes of the device's traffic) at which the decision in force is read
MINUTES = (1, 10, 60)
#: the replay's horizon: a device's first hour of traffic
HORIZON_S = 3600.0
#: an unknown device is re-decided this long after its unknown decision (or at a new record)
UNKNOWN_RECHECK_S = 300.0
OUTCOMES = ("right", "wrong", "unknown", "undecided")


@dataclass
class Timeline:
    """One device's test captures joined in time order (see the module docstring)."""

    device: str
    dataset: str
    category: str
    mac: int
    packets: Packets            #: its packets within the horizon, on the timeline's clock
    records: list               #: every identity record of its captures, on the same clock
    t0_ns: int                  #: the timeline's origin: the device's first packet
    observed_s: float           #: the device's observed time over all its captures (not cut)
    captures: int               #: captures joined
    streams: list = field(default_factory=list)
    horizon_s: float = HORIZON_S

    @property
    def end_ns(self) -> int:
        """Where the replay stops: the end of the device's timeline, or the horizon."""
        return self.t0_ns + int(round(min(self.observed_s, self.horizon_s) * SEC))


def pool_streams(streams, idx, records_of, packets_of, horizon_s: float = HORIZON_S) -> Timeline:
    """The timeline of one device from its streams ``idx`` (indices into ``streams``, all of one
    device, any order). ``records_of(i)``: stream ``i``'s identity records; ``packets_of(i)``: a
    packet table holding stream ``i``'s packets (its decoded capture)."""
    idx = sorted((int(i) for i in idx), key=lambda i: (streams[i].t0_ns, streams[i].capture))
    if not idx:
        raise ValueError("a timeline needs at least one stream")
    first = streams[idx[0]]
    if len({streams[i].device for i in idx}) != 1:
        raise ValueError(f"streams of several devices: {sorted({streams[i].device for i in idx})}")
    origin = int(first.t0_ns)
    horizon = int(round(horizon_s * SEC))
    parts, records = [], []
    clock = 0                                  # observed time before this capture (ns)
    for i in idx:
        st = streams[i]
        dev = device_packets(packets_of(i), st.mac)
        start = int(dev.ts_ns[0]) if len(dev) else int(st.t0_ns)
        start = min(start, int(st.t0_ns))
        end = max(int(st.end_ns), int(dev.ts_ns[-1]) if len(dev) else start)
        shift = origin + clock - start
        if clock <= horizon and len(dev):
            ts = dev.ts_ns.astype(np.int64) + shift
            keep = ts <= origin + horizon
            parts.append(replace(dev.take(keep), ts_ns=ts[keep]))
        records += [(max(int(t), start) + shift, kind, value) for t, kind, value in records_of(i)]
        clock += end - start
    pk = Packets.concat(parts) if parts else Packets.empty()
    records.sort(key=lambda r: r[0])
    return Timeline(first.device, first.dataset, first.category, int(first.mac), pk, records, origin, clock / SEC,
                    len(idx), idx, horizon_s)


def device_streams(streams, mask) -> dict[str, list[int]]:
    """The streams selected by ``mask``, per device (devices in order of first appearance)."""
    out: dict[str, list[int]] = {}
    for i in np.flatnonzero(mask):
        out.setdefault(streams[i].device, []).append(int(i))
    return out


def replay_device(engine, tl: Timeline, ablations: dict, interval_s: float = DECIDE_INTERVAL_S,
                  min_packets: int = DECIDE_MIN_PACKETS, recheck_s: float = UNKNOWN_RECHECK_S) -> dict:
    """Per ablation, every answer the device got on its timeline, as ``[seconds, category,
    stage]`` (seconds from its first packet), and the number of times it was asked.
    ``ablations``: name -> (voters, gate), handed to ``engine.conclude``. The evidence is built
    once per request for every voter, without explanations."""
    eng = copy.copy(engine)
    eng.config = replace(engine.config, explain=False)
    voters = tuple(sorted({v for vs, _ in ablations.values() for v in (vs or engine.config.voters)}))
    pk = tl.packets
    ts = pk.ts_ns
    end = tl.end_ns
    records = [r for r in tl.records if r[0] <= end]
    rec_t = np.array([r[0] for r in records], np.int64)
    stage = {a: None for a in ablations}
    since = {a: 0 for a in ablations}       # time of the answer in force
    asked = {a: None for a in ablations}    # time last asked
    out = {a: {"answers": [], "requests": 0} for a in ablations}
    recheck = int(round(recheck_s * SEC))
    for t in request_times(ts, interval_s, min_packets, end).tolist():
        due = []
        for a in ablations:
            if stage[a] == CONFIRMED:
                continue
            if stage[a] == UNKNOWN:
                new_record = np.searchsorted(rec_t, t, "right") > np.searchsorted(rec_t, asked[a], "right")
                if not new_record and t < since[a] + recheck:
                    continue
            due.append(a)
        if not due:
            if all(s == CONFIRMED for s in stage.values()):
                break
            continue
        k = int(np.searchsorted(ts, t, side="right"))
        ev = eng.evidence(pk.take(slice(0, k)), tl.mac, now_ns=t, identity=records, voters=voters)
        for a in due:
            vs, gate = ablations[a]
            d = None if ev is None else eng.conclude(ev, vs, gate=gate)
            asked[a] = t
            out[a]["requests"] += 1
            if d is None:
                continue
            stage[a], since[a] = d.stage, t
            out[a]["answers"].append([(t - tl.t0_ns) / SEC, d.category, d.stage])
    return out


def in_force(answers: list, seconds: float):
    """The answer in force at ``seconds`` (the latest up to then), or None."""
    last = None
    for a in answers:
        if a[0] > seconds:
            break
        last = a
    return last


def outcome(answer, truth: str) -> str:
    if answer is None:
        return "undecided"
    if answer[1] == UNKNOWN:
        return "unknown"
    return "right" if answer[1] == truth else "wrong"


def knowledge_of(records, mac: int) -> tuple[str | None, bool]:
    """What public knowledge alone names on a device's records and MAC (None: abstains), and
    whether anything in them is a knowledge hit at all."""
    from classifier.identity.knowledge import default_knowledge, knowledge_verdict
    k = default_knowledge()
    return knowledge_verdict(records, mac, k), bool(k.hits(records, mac))


def device_row(tl: Timeline, replayed: dict, split: str | None = None) -> dict:
    """One device's figures (JSON-ready)."""
    verdict, hit = knowledge_of(tl.records, tl.mac)
    row = {"device": tl.device, "dataset": tl.dataset, "category": tl.category, "mac": mac_to_str(tl.mac),
           "captures": tl.captures, "observed_s": round(tl.observed_s, 1), "records": len(tl.records),
           "knowledge": verdict, "named_by_nothing": not hit, "by": {}}
    if split is not None:
        row["split"] = split
    for a, r in replayed.items():
        ans = r["answers"]
        changes = [x for j, x in enumerate(ans) if j == 0 or x[1:] != ans[j - 1][1:]]
        conf = next((x for x in ans if x[2] == CONFIRMED), None)
        row["by"][a] = {
            "in_force": {str(m): in_force(ans, m * 60.0) for m in MINUTES},
            "confirmed": None if conf is None else {"seconds": conf[0], "category": conf[1]},
            "requests": r["requests"], "changes": changes}
    return row


def wrong_confirmation(row: dict, ablation: str) -> dict | None:
    c = row["by"][ablation]["confirmed"]
    return c if c is not None and c["category"] != row["category"] else None


def summarise_devices(rows: list[dict]) -> dict:
    """Per device: shares right / wrong / unknown / undecided at each milestone and wrong
    confirmations, per ablation; the knowledge's verdicts; the devices' evidence."""
    n = len(rows)
    share = (lambda k: k / n) if n else (lambda k: None)
    out = {"devices": n, "distinct_devices": len({r["device"] for r in rows}),
           "observed_at_least": {str(m): sum(r["observed_s"] >= m * 60.0 for r in rows) for m in MINUTES},
           "with_records": share(sum(r["records"] > 0 for r in rows)),
           "named_by_nothing": share(sum(r["named_by_nothing"] for r in rows)),
           "knowledge": {"right": share(sum(r["knowledge"] == r["category"] for r in rows)),
                         "wrong": share(sum(r["knowledge"] not in (None, r["category"]) for r in rows)),
                         "abstains": share(sum(r["knowledge"] is None for r in rows))},
           "by": {}}
    for a in dict.fromkeys(a for r in rows for a in r["by"]):
        sub = [r for r in rows if a in r["by"]]
        m_out = {}
        for m in MINUTES:
            got = [outcome(r["by"][a]["in_force"][str(m)], r["category"]) for r in sub]
            m_out[str(m)] = {o: got.count(o) / len(sub) for o in OUTCOMES}
        wrong = sum(wrong_confirmation(r, a) is not None for r in sub)
        out["by"][a] = {"devices": len(sub), "at_minute": m_out, "wrong_confirmations": wrong,
                        "wrong_confirmation_share": wrong / len(sub)}
    return out


def wrong_confirmations(rows: list[dict]) -> list[dict]:
    """Every wrong confirmation: device, data set, ablation, category confirmed, truth, minute."""
    out = []
    for r in rows:
        for a in r["by"]:
            c = wrong_confirmation(r, a)
            if c is not None:
                out.append({"device": r["device"], "dataset": r["dataset"], "ablation": a, "category": c["category"],
                            "truth": r["category"], "minute": round(c["seconds"] / 60.0, 2),
                            **({"split": r["split"]} if "split" in r else {})})
    return sorted(out, key=lambda w: (w["ablation"], w["dataset"], w["device"]))


def format_devices(groups: dict[str, dict], rows: list[dict]) -> str:
    """The per-device table: per group (overall, each data set) and ablation, the shares right /
    wrong / unknown / undecided at each milestone and the wrong confirmations; then the list of
    wrong confirmations."""
    heads = " | ".join(f"{m:>2d} min: right wrong unkn undec" for m in MINUTES)
    lines = ["per device: a device's test captures joined in time order (time = its observed time, gaps between "
             "captures removed), replayed at the controller's cadence up to "
             f"{HORIZON_S / 60:.0f} min; the decision in force at {', '.join(map(str, MINUTES))} min "
             "(a device whose traffic ends sooner keeps its last decision)",
             f"{'':14s} {'ablation':13s} {heads} | wrong confirmations"]
    for label, s in groups.items():
        if not s or not s["devices"]:
            continue
        k = s["knowledge"]
        obs = s["observed_at_least"]
        per_split = (f" ({s['distinct_devices']} distinct: a device counts once per split it is tested in)"
                     if s.get("distinct_devices", s["devices"]) < s["devices"] else "")
        lines.append(f"{label[:14]:14s} {s['devices']} devices{per_split} "
                     f"({', '.join(f'{obs[str(m)]} with {m} min' for m in MINUTES)} of traffic); {s['with_records']:.2f} with identity records, {s['named_by_nothing']:.2f} "
                     f"named by nothing (no knowledge hit on their records and MAC); knowledge alone: "
                     f"{k['right']:.3f} right, {k['wrong']:.3f} wrong, {k['abstains']:.3f} abstains")
        for a, f in s["by"].items():
            cells = " | ".join(" ".join(f"{f['at_minute'][str(m)][o]:5.2f}" for o in OUTCOMES).rjust(len(
                f"{m:>2d} min: right wrong unkn undec")) for m in MINUTES)
            lines.append(f"{label[:14]:14s} {a:13s} {cells} | {f['wrong_confirmations']} "
                         f"({f['wrong_confirmation_share']:.3f})")
    wrong = wrong_confirmations(rows)
    lines.append(f"wrong confirmations ({len(wrong)}):" if wrong else "wrong confirmations: none")
    for w in wrong:
        lines.append(f"  {w['ablation']:13s} {w['device']}: confirmed {w['category']}, is "
                     f"{w['truth']}, at minute {w['minute']:.1f}" + (f" ({w['split']})" if "split" in w else ""))
    return "\n".join(lines)
