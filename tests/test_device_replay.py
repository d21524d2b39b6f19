"""Per device, over time: a device's captures joined into one timeline (gaps removed), replayed
at the controller's cadence with its rules after a decision, and the figures an operator reads
(the decision in force at 1, 10 and 60 minutes, wrong confirmations, what knowledge alone
names). Also: ``iotclass classify`` pools a device's identity records across captures."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest

from classifier.capture.decode import read_packets
from classifier.capture.packets import Packets, mac_to_int
from classifier.capture.writer import write_pcap
from classifier.engine.decision import CONFIRMED, PROVISIONAL, UNKNOWN, Decision
from classifier.engine.engine import EngineConfig
from classifier.engine.replay import device_packets
from classifier.evaluation.devices import (MINUTES, Timeline, device_row, format_devices, in_force, knowledge_of,
                                           pool_streams, replay_device, summarise_devices, wrong_confirmations)
from testing.synth import default_network, network_records

SEC = 10**9
START = 1_700_000_000 * SEC


# --------------------------------------------------------------------------- the timeline


@pytest.fixture(scope="module")
def two_captures(tmp_path_factory):
    """One generated network captured twice: 300 s at START, and 120 s two hours later."""
    folder = tmp_path_factory.mktemp("pool")
    net = default_network(["plug", "hub"], identity=True)
    paths = [_pcap(folder / f"cap-{k}.pcap", network_records(net, secs, start_ns=start, seed=k))
             for k, (start, secs) in enumerate(((START, 300.0), (START + 7200 * SEC, 120.0)))]
    return net, [read_packets(str(p)) for p in paths]


def _pcap(path, records):
    with open(path, "wb") as fh:
        write_pcap(fh, records)
    return path


def _streams(net, pks, dev_index=1):
    mac = mac_to_int(net.devices[dev_index].mac)
    out = []
    for k, pk in enumerate(pks):
        ts = device_packets(pk, mac).ts_ns
        out.append(SimpleNamespace(capture=f"cap-{k}", device="lab/hub", dataset="lab", category="hub", mac=mac,
                                   t0_ns=int(ts[0]), end_ns=int(pk.ts_ns.max())))
    return out, mac


def test_timeline_joins_captures_in_time_order_without_the_gaps(two_captures):
    net, pks = two_captures
    streams, mac = _streams(net, pks)
    # records of each capture: one before the device's first packet (put at that packet), the rest as they are
    recs = {0: [(streams[0].t0_ns - 5 * SEC, "dhcp.hostname", "early"), (streams[0].t0_ns + 10 * SEC, "dns.query", "a")],
            1: [(streams[1].t0_ns + 3 * SEC, "dns.query", "b")]}
    order = [1, 0]                                   # given latest first
    tl = pool_streams(streams, order, lambda i: recs[i], lambda i: pks[i])
    d0, d1 = (device_packets(pk, mac) for pk in pks)
    span0 = streams[0].end_ns - streams[0].t0_ns
    span1 = streams[1].end_ns - streams[1].t0_ns
    assert tl.t0_ns == streams[0].t0_ns and tl.captures == 2 and tl.streams == [0, 1]
    assert tl.observed_s == pytest.approx((span0 + span1) / SEC)
    # the first capture as it was, the second laid right after the first one's end
    assert np.array_equal(tl.packets.ts_ns[:len(d0)], d0.ts_ns)
    assert np.array_equal(tl.packets.ts_ns[len(d0):], d1.ts_ns - streams[1].t0_ns + streams[0].t0_ns + span0)
    assert np.array_equal(tl.packets.eth_src, np.concatenate([d0.eth_src, d1.eth_src]))
    assert (np.diff(tl.packets.ts_ns) >= 0).all()
    assert tl.records == [(streams[0].t0_ns, "dhcp.hostname", "early"), (streams[0].t0_ns + 10 * SEC, "dns.query", "a"),
                          (streams[0].t0_ns + span0 + 3 * SEC, "dns.query", "b")]
    # the horizon cuts packets, never records; the replay stops at it
    short = pool_streams(streams, order, lambda i: recs[i], lambda i: pks[i], horizon_s=100.0)
    assert short.packets.ts_ns.max() <= short.t0_ns + 100 * SEC and len(short.packets) < len(d0)
    assert short.records == tl.records and short.observed_s == tl.observed_s
    assert short.end_ns == short.t0_ns + 100 * SEC and tl.end_ns == tl.t0_ns + span0 + span1
    with pytest.raises(ValueError, match="several devices"):
        pool_streams(streams + [SimpleNamespace(**{**vars(streams[0]), "device": "lab/other"})], [0, 2],
                     lambda i: [], lambda i: pks[0])


# --------------------------------------------------------------------------- the cadence


@dataclass
class ScriptedEngine:
    """An engine whose answers follow a script: ``script[name](seconds)`` gives (category,
    stage) or None, for the ablation whose voters are ``(name,)``. It records each question."""

    script: dict
    t0_ns: int
    config: EngineConfig = None

    def __post_init__(self):
        self.config = self.config or EngineConfig()
        self.asked: dict[str, list[float]] = {k: [] for k in self.script}
        self.evidence_at: list[float] = []      # shared with the replay's copy of the engine

    def evidence(self, pk, mac, now_ns=None, identity=None, voters=None):
        self.evidence_at.append((now_ns - self.t0_ns) / SEC)
        assert int(pk.ts_ns.max()) <= now_ns            # the packets up to the request, no more
        return SimpleNamespace(now=now_ns, packets=len(pk))

    def conclude(self, ev, voters, gate=None):
        name = voters[0]
        s = (ev.now - self.t0_ns) / SEC
        self.asked[name].append(s)
        got = self.script[name](s)
        return None if got is None else Decision(got[0], 0.9, got[1], "m", "", {"packets": ev.packets})


def _timeline(seconds=900, records=()):
    pk = Packets.empty(seconds)
    pk.ts_ns = START + np.arange(seconds, dtype=np.int64) * SEC       # a packet a second
    return Timeline("lab/d", "lab", "plug", 0x0000_5E00_5301, pk, list(records), START, float(seconds), 1, [0])


def test_replay_asks_as_the_controller_and_stops_on_confirmation():
    tl = _timeline(900, records=[(START + 150 * SEC, "dns.query", "x")])
    script = {
        "prov": lambda s: None if s < 60 else ("plug", PROVISIONAL),                  # always provisional
        "conf": lambda s: ("camera", PROVISIONAL) if s < 95 else ("camera", CONFIRMED),
        "unkn": lambda s: (UNKNOWN, UNKNOWN) if s < 400 else ("plug", PROVISIONAL),
    }
    eng = ScriptedEngine(script, START)
    out = replay_device(eng, tl, {k: ((k,), None) for k in script})
    requests = [9.0 + 30 * j for j in range(30)]       # the 10th packet, then every 30 s
    assert eng.asked["prov"] == requests and out["prov"]["requests"] == 30
    # confirmed at 99 s: never asked again
    assert eng.asked["conf"] == [9.0, 39.0, 69.0, 99.0]
    # unknown: asked again at the first request after its new record (150 s), then 300 s after its last answer
    assert eng.asked["unkn"][:3] == [9.0, 159.0, 459.0]
    assert eng.asked["unkn"][3:] == requests[16:]         # provisional from 459 s: every request again
    assert eng.evidence_at == requests                     # one evidence per request, however many ablations
    # answers; None keeps what was in force
    assert out["prov"]["answers"][0] == [69.0, "plug", PROVISIONAL] and len(out["prov"]["answers"]) == 28
    assert out["conf"]["answers"][-1] == [99.0, "camera", CONFIRMED]
    assert in_force(out["prov"]["answers"], 60.0) is None and in_force(out["prov"]["answers"], 600.0)[0] == 579.0
    # explanations are not built in the replay, and the engine given is left as it was
    assert eng.config.explain is True


def test_device_figures_at_each_milestone():
    tl = _timeline(900)                    # 15 minutes of traffic: at 60 min its last decision is in force
    script = {
        "late": lambda s: None if s < 600 else ("plug", PROVISIONAL),
        "wrong": lambda s: ("camera", PROVISIONAL) if s < 120 else ("camera", CONFIRMED),
        "unkn": lambda s: (UNKNOWN, UNKNOWN),
    }
    row = device_row(tl, replay_device(ScriptedEngine(script, START), tl, {k: ((k,), None) for k in script}),
                     split="fold 0")
    f = row["by"]
    assert [f["late"]["in_force"][str(m)] for m in MINUTES] == [None, None, [879.0, "plug", PROVISIONAL]]
    assert f["late"]["changes"] == [[609.0, "plug", PROVISIONAL]] and f["late"]["requests"] == 30
    assert f["wrong"]["confirmed"] == {"seconds": 129.0, "category": "camera"}
    assert f["wrong"]["changes"] == [[9.0, "camera", PROVISIONAL], [129.0, "camera", CONFIRMED]]
    assert f["unkn"]["in_force"]["60"] == [609.0, UNKNOWN, UNKNOWN]
    assert row["observed_s"] == 900.0 and row["split"] == "fold 0" and row["records"] == 0
    s = summarise_devices([row])
    assert s["by"]["late"]["at_minute"]["1"] == {"right": 0.0, "wrong": 0.0, "unknown": 0.0, "undecided": 1.0}
    assert s["by"]["late"]["at_minute"]["60"]["right"] == 1.0
    assert s["by"]["wrong"]["at_minute"]["10"]["wrong"] == 1.0 and s["by"]["wrong"]["wrong_confirmations"] == 1
    assert s["by"]["unkn"]["at_minute"]["60"]["unknown"] == 1.0 and s["by"]["unkn"]["wrong_confirmations"] == 0
    assert s["observed_at_least"] == {"1": 1, "10": 1, "60": 0}
    assert wrong_confirmations([row]) == [{"device": "lab/d", "dataset": "lab", "ablation": "wrong",
                                           "category": "camera", "truth": "plug", "minute": 2.15, "split": "fold 0"}]


def _row(device, category, knowledge, hit, records, observed, answers, dataset="lab"):
    by = {"fused": {"in_force": {str(m): answers.get(m) for m in MINUTES},
                    "confirmed": next(({"seconds": a[0], "category": a[1]} for a in answers.values()
                                       if a and a[2] == CONFIRMED), None), "requests": 3, "changes": []}}
    return {"device": device, "dataset": dataset, "category": category, "mac": "00:00:5e:00:53:01", "captures": 1,
            "observed_s": observed, "records": records, "knowledge": knowledge, "named_by_nothing": not hit, "by": by}


def test_summary_shares_knowledge_and_the_printed_table():
    rows = [_row("a", "camera", "camera", True, 5, 4000, {1: [30, "camera", PROVISIONAL], 10: [300, "camera", CONFIRMED],
                                                           60: [300, "camera", CONFIRMED]}),
            _row("b", "plug", "light", True, 2, 700, {10: [400, "light", CONFIRMED], 60: [400, "light", CONFIRMED]}),
            _row("c", "hub", None, False, 0, 30, {1: [20, UNKNOWN, UNKNOWN], 10: [20, UNKNOWN, UNKNOWN],
                                                   60: [20, UNKNOWN, UNKNOWN]}),
            _row("d", "lock", None, True, 1, 90, {}, dataset="other")]
    s = summarise_devices(rows)
    assert s["devices"] == 4 and s["distinct_devices"] == 4
    assert s["observed_at_least"] == {"1": 3, "10": 2, "60": 1}
    assert s["with_records"] == 0.75 and s["named_by_nothing"] == 0.25
    assert s["knowledge"] == {"right": 0.25, "wrong": 0.25, "abstains": 0.5}
    f = s["by"]["fused"]
    assert f["at_minute"]["1"] == {"right": 0.25, "wrong": 0.0, "unknown": 0.25, "undecided": 0.5}
    assert f["at_minute"]["60"] == {"right": 0.25, "wrong": 0.25, "unknown": 0.25, "undecided": 0.25}
    assert f["wrong_confirmations"] == 1 and f["wrong_confirmation_share"] == 0.25
    assert summarise_devices([rows[0], rows[0]])["distinct_devices"] == 1
    text = format_devices({"all": s, "lab": summarise_devices(rows[:3])}, rows)
    assert ("all            4 devices (3 with 1 min, 2 with 10 min, 1 with 60 min of traffic); 0.75 with identity "
            "records, 0.25 named by nothing (no knowledge hit on their records and MAC); knowledge alone: 0.250 right, "
            "0.250 wrong, 0.500 abstains") in text
    line = next(ln for ln in text.splitlines() if ln.startswith("all            fused"))
    assert line.split("|")[-1].strip() == "1 (0.250)"
    assert line.split()[2:6] == ["0.25", "0.00", "0.25", "0.50"]
    assert "wrong confirmations (1):\n  fused         b: confirmed light, is plug, at minute 6.7" in text


def test_knowledge_of_names_the_category_or_abstains_and_says_whether_anything_hit():
    assert knowledge_of([(0, "mdns.txt", "ci=5")], None) == ("light", True)
    assert knowledge_of([(0, "dhcp.hostname", "xk-2041")], mac_to_int("00:00:5e:00:53:01")) == (None, False)
    assert knowledge_of([], mac_to_int("da:a1:19:00:00:01")) == ("non-iot", True)      # a randomised MAC


# --------------------------------------------------------------------------- through the command line


def test_evaluate_fusion_known_and_online_report_per_device(synth_dataset, tmp_path, capsys):
    """The per-device block is added to the per-stream one, in the table and the JSON: every
    test device once per split, its timeline its test captures of that split."""
    from classifier.cli import main
    folder, net = synth_dataset
    out = tmp_path / "res"
    assert main(["evaluate", "fusion-known", "--folds", "3", "--datasets", str(folder), "--epochs", "1",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    result = json.loads((out / "fusion-known-all.json").read_text())
    assert result["rows"] and result["overall"]["fused"]["final"]["streams"] == len(result["rows"])
    rows = result["devices"]
    assert len(rows) == 3 * len(net.devices) and {r["captures"] for r in rows} == {1}
    assert {(r["device"], r["split"]) for r in rows} == {(s["device"], s["split"]) for s in result["rows"]}
    d = result["overall"]["devices"]
    assert d["devices"] == len(rows) and d["distinct_devices"] == len(net.devices)
    for a in ("behaviour", "identity", "fused", "fused-ungated"):
        for m in MINUTES:
            assert sum(d["by"][a]["at_minute"][str(m)].values()) == pytest.approx(1.0)
    assert d["observed_at_least"] == {"1": len(rows), "10": len(rows), "60": 0}     # 15-minute captures
    assert "per device: a device's test captures joined in time order" in text and "fused-ungated" in text
    assert "named by some answer of this engine or the knowledge" in text
    assert "named_by_engine_or_knowledge" in result["overall"]["reach"]
    assert main(["evaluate", "online", "--data", "all", "--datasets", str(folder), "--folds", "2", "--epochs", "1",
                 "--out", str(out)]) == 0
    online = json.loads((out / "online-all.json").read_text())
    assert len(online["devices"]) == 2 * len(net.devices)            # 3 captures in 2 folds: each device in both
    assert {r["captures"] for r in online["devices"]} == {1, 2}
    assert set(online["device_summary"]["overall"]["by"]) == {"engine"}
    assert "engine" in capsys.readouterr().out


# --------------------------------------------------------------------------- classify pools records


def test_classify_pools_a_device_identity_records_across_captures_in_time_order(tmp_path, capsys, monkeypatch):
    """``iotclass classify`` on a network's captures (any order): the engine gets each device's
    identity records from every capture, in time order, as from one capture of it all."""
    from classifier.cli import main
    from classifier.engine.engine import DecisionEngine
    net = default_network(["light", "hub", "plug"], identity=True)
    recs = network_records(net, 600.0, seed=5)
    a, b = START + 15 * SEC, START + 50 * SEC
    parts = [[r for r in recs if r.ts_ns < a], [r for r in recs if a <= r.ts_ns < b], [r for r in recs if r.ts_ns >= b]]
    paths = [_pcap(tmp_path / f"part-{k}.pcap", part) for k, part in enumerate(parts)]
    whole = _pcap(tmp_path / "whole.pcap", recs)
    seen: dict[str, list] = {}
    orig = DecisionEngine.decide

    def spy(self, pk, mac, now_ns=None, identity=None, sessions=None):
        seen.setdefault(key, {})[mac] = list(identity or [])
        return orig(self, pk, mac, now_ns, identity, sessions)
    monkeypatch.setattr(DecisionEngine, "decide", spy)
    key = "parts"
    shuffled = list(paths)
    random.Random(1).shuffle(shuffled)
    assert main(["classify", *map(str, shuffled), "--json"]) == 0
    key = "whole"
    assert main(["classify", str(whole), "--json"]) == 0
    capsys.readouterr()
    light = mac_to_int(next(d.mac for d in net.devices if d.category == "light"))
    got, ref = seen["parts"][light], seen["whole"][light]
    assert got == ref and [r[0] for r in got] == sorted(r[0] for r in got)
    # the light's records come from all three captures: its announcements before 15 s, between, after 50 s
    times = [(r[0] - START) / SEC for r in got]
    assert min(times) < 15 and any(15 <= t < 50 for t in times) and max(times) >= 50
    assert {"dhcp.hostname", "mdns.txt"} <= {r[1] for r in got}
    assert seen["parts"] == seen["whole"]


# --------------------------------------------------------------------------- shared captures


@pytest.mark.shared
def test_timeline_of_an_iot_sentinel_device(datasets):
    """Twenty set-up captures of one IoT Sentinel device: one timeline, as long as they are
    together, its packets in order, its records within it."""
    from classifier.capture.labels import load_datasets
    from classifier.evaluation.protocols import Data
    from classifier.evaluation.records import RecordSource
    from classifier.models.registry import Settings
    ds = load_datasets([str(datasets / "iot-sentinel")])
    ds.captures = [c for c in ds.captures if "/TP-LinkPlugHS110/" in c.path.replace("\\", "/")]
    data = Data("one", ds, Settings(interval=300.0, t=6, overlap=3, n=16))
    idx = list(range(len(data.streams)))
    assert len(idx) >= 10
    records = RecordSource(data)
    tl = pool_streams(data.streams, idx, records, lambda i: data.cache.get([data.streams[i].capture])[0].packets)
    assert tl.captures == len(idx)
    assert tl.observed_s == pytest.approx(sum((s.end_ns - s.t0_ns) for s in data.streams) / SEC, rel=1e-9)
    assert (np.diff(tl.packets.ts_ns) >= 0).all()
    assert len(tl.packets) == sum(len(device_packets(data.cache.get([s.capture])[0].packets, s.mac))
                                  for s in data.streams)
    assert len(tl.records) == sum(len(records(i)) for i in idx)
    assert all(tl.t0_ns <= r[0] <= tl.t0_ns + tl.observed_s * SEC for r in tl.records)
