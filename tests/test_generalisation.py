"""The generalisation protocols' summaries: ablations side by side, the open set within a split."""

from __future__ import annotations

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
