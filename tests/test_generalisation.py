"""The generalisation protocols' summaries: ablations side by side, the open set within a split."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.engine.decision import CONFIRMED, UNKNOWN
from classifier.evaluation.generalisation import ABLATIONS, UNGATED, format_table, summarise


def _row(device, category, novel, decisions):
    ev = {"packets": 50}
    by = {}
    for a in ABLATIONS:
        cat = decisions.get(a)
        fin = None if cat is None else {"category": cat, "stage": UNKNOWN if cat == UNKNOWN else CONFIRMED,
                                        "confidence": 0.9}
        by[a] = {"final": fin, "first_final": None if fin is None else {**fin, "seconds": 30.0, "evidence": ev}}
    return {"device": device, "dataset": "lab", "category": category, "novel_category": novel, "by": by}


def test_summary_carries_every_ablation_and_the_open_set_of_novel_categories():
    assert "fused-ungated" in ABLATIONS and "fused-ungated" in UNGATED and "fused" not in UNGATED
    rows = [_row("cam1", "camera", False, {"behaviour": "camera", "identity": UNKNOWN, "fused": "camera",
                                           "fused-ungated": "camera"}),
            _row("lock1", "lock", True, {"behaviour": "plug", "identity": UNKNOWN, "fused": UNKNOWN,
                                         "fused-ungated": "plug"}),
            _row("lock2", "lock", True, {"behaviour": "plug", "identity": "lock", "fused": "lock",
                                         "fused-ungated": "lock"})]
    s = summarise(rows, "lovo", 20)
    assert set(s) == set(ABLATIONS)
    # the open set counts only the streams whose category no training stream had
    assert s["fused"]["open_set"] == {"streams": 2, "devices": 2, "false_accepts": 0, "false_accept_rate": 0.0,
                                      "named_right": 0.5}
    assert s["fused-ungated"]["open_set"]["false_accept_rate"] == pytest.approx(0.5)
    assert s["behaviour"]["open_set"]["false_accept_rate"] == pytest.approx(1.0)
    assert s["fused"]["final"]["accuracy"] == pytest.approx(2 / 3)
    assert s["fused-ungated"]["final"]["accuracy_on_accepted"] == pytest.approx(2 / 3)
    # no novel category in the split: no open-set figure
    assert "open_set" not in summarise(rows[:1], "lovo", 20)["fused"]
    table = format_table({"protocol": "lovo", "data": "all", "overall": s, "by_dataset": {"lab": s}})
    lines = [ln for ln in table.splitlines() if ln.startswith("all ")]
    assert [ln.split()[1] for ln in lines] == list(ABLATIONS)
    assert "false accepts 1/2 = 0.500 (2 devices of a category not in training)" in lines[3]


def test_reach_is_what_public_knowledge_or_any_ablation_names():
    """The share of streams some answer of this engine or the knowledge names: a bound on
    re-choosing among them (renamed from a "ceiling": another engine could name more)."""
    from classifier.evaluation.generalisation import evidence_reach
    rows = [_row("cam1", "camera", False, {"behaviour": "plug", "fused-ungated": "plug"}),     # nobody right
            _row("cam2", "camera", False, {"behaviour": "camera", "fused": UNKNOWN}),          # behaviour right
            _row("bulb", "light", False, {}),                                                  # knowledge right
            _row("lock", "lock", False, {"identity": "lock"}),                                # identity right
            _row("plug", "plug", False, {"identity": UNKNOWN})]     # identity's top, below its threshold
    for r, top, n, tops in zip(rows, ("hub", None, "light", None, None), (3, 0, 1, 2, 1),
                               ({"session": "plug"}, {}, {}, {"identity": "lock"}, {"identity": "plug"})):
        r["knowledge"], r["records"], r["voter_tops"] = top, n, tops
        r["packets_by_goal"] = 25 if r["device"] == "bulb" else 5
    reach = evidence_reach(rows)
    assert reach == {"streams": 5, "with_records": 0.8, "knowledge_right": 0.2, "knowledge_wrong": 0.2,
                     "named_by_engine_or_knowledge": 0.8, "minimum_by_goal": 0.2}
    s = summarise(rows, "lovo", 20)
    assert s["reach"] == reach and set(s) == set(ABLATIONS) | {"reach"}
    table = format_table({"protocol": "lovo", "data": "all", "overall": s, "by_dataset": {}})
    assert ("all                    reach: 5 streams, 0.80 with identity records; public knowledge alone names "
            "0.200 right, 0.200 wrong; named by some answer of this engine or the knowledge (bound on re-choosing "
            "among them) 0.800; 0.20 hold the minimum for a confirmation by 60 s") in table
    assert "ceiling" not in table and "per device" not in table       # no per-device block without its rows
    # beside it, from the per-device summary: devices with records, and whose records name nothing
    s["devices"] = {"devices": 4, "with_records": 0.75, "named_by_nothing": 0.5}
    table = format_table({"protocol": "lovo", "data": "all", "overall": s, "by_dataset": {}})
    assert "0.20 hold the minimum for a confirmation by 60 s; of 4 devices 0.75 carry identity records, 0.50 " \
           "have records that name nothing" in table
    assert evidence_reach([{k: v for k, v in r.items() if k != "knowledge"} for r in rows]) is None
    assert evidence_reach([{k: v for k, v in r.items() if k != "packets_by_goal"} for r in rows])["minimum_by_goal"] is None


def test_packets_within_counts_from_the_device_first_packet(synth_capture):
    from classifier.capture.decode import read_packets
    from classifier.capture.packets import mac_to_int
    from classifier.evaluation.generalisation import packets_within
    from classifier.features.devices import split_devices
    path, _, net = synth_capture
    pk = read_packets(str(path))
    mac = mac_to_int(net.devices[0].mac)
    ts = np.sort(pk.ts_ns[split_devices(pk, devices=[mac]).pkt])
    assert packets_within(pk, mac, 0.0) == int((ts == ts[0]).sum())
    k = len(ts) // 2
    assert packets_within(pk, mac, (ts[k] - ts[0]) / 1e9) == int((ts <= ts[k]).sum())
    assert packets_within(pk, mac, 1e9) == len(ts)
    assert packets_within(pk, 0x0E0000000099, 60.0) == 0
