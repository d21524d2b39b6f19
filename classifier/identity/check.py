"""What the compiled knowledge alone names, per labelled device, and each source's false hits.

For each labelled device (a ``devices.csv`` row: one device of one data set), its identity
records are pooled across every capture that holds it, in time order, and read with its MAC by
the knowledge with no learning (:func:`classifier.identity.knowledge.knowledge_verdict`): right,
wrong, or abstains. Each source (package) is also read alone — only its rules' hits — so that a
source that names devices wrongly shows, whatever the others say: its *false hits* are the
devices on which its own verdict is a wrong category.
"""

from __future__ import annotations

from classifier.capture.labels import load_datasets
from classifier.capture.packets import mac_to_str


def pooled_records(paths, devices=None) -> list[dict]:
    """Per labelled device: its records pooled over the captures, in time order."""
    from classifier.features.pipeline import load_captures
    labels = load_datasets(devices or paths)
    out: dict[tuple, dict] = {}
    for cap in load_captures(paths, (), labels, desc="reading"):
        for mac in cap.view.macs.tolist():
            dev = labels.label(cap.path, mac)
            if dev is None:
                continue
            d = out.setdefault((dev.dataset, dev.key), {"dataset": dev.dataset, "device": dev.name, "key": dev.key,
                                                          "category": dev.category, "mac": mac, "records": set()})
            d["records"].update((int(t), k, v) for t, k, v in cap.identity.for_mac(mac))
    rows = []
    for d in out.values():
        d["records"] = sorted(d["records"])
        rows.append(d)
    return sorted(rows, key=lambda d: (d["dataset"], d["device"]))


def check_devices(devices: list[dict], knowledge=None) -> dict:
    """``devices``: dicts with category, mac and records. Per device the verdict; per source its
    own verdicts' right and wrong counts."""
    from classifier.identity.knowledge import default_knowledge
    k = knowledge or default_knowledge()
    rows, per_source = [], {}
    for d in devices:
        hits = k.hits(d["records"], d["mac"])
        verdict = k.verdict(hits)
        status = "abstains" if verdict is None else ("right" if verdict == d["category"] else "wrong")
        by_source: dict[str, list] = {}
        for h in hits:
            src = (k.source_of(h.rule) or {}).get("package", "?")
            by_source.setdefault(src, []).append(h)
        own = {}
        for src, hs in by_source.items():
            v = k.verdict(hs)
            own[src] = v
            s = per_source.setdefault(src, {"fires": 0, "right": 0, "wrong": 0, "abstains": 0, "wrong_devices": []})
            s["fires"] += 1
            if v is None:
                s["abstains"] += 1
            elif v == d["category"]:
                s["right"] += 1
            else:
                s["wrong"] += 1
                s["wrong_devices"].append(f"{d['device']} ({d['category']}) -> {v}")
        scores = {c: round(v, 3) for c, v in sorted(k.scores(hits).items(), key=lambda kv: -kv[1]) if v > 0}
        rows.append({"dataset": d.get("dataset"), "device": d.get("device"), "category": d["category"],
                     "mac": mac_to_str(d["mac"]) if d.get("mac") is not None else None,
                     "records": len({(kd, v) for _, kd, v in d["records"]}), "verdict": verdict, "status": status,
                     "scores": scores, "sources": own,
                     "evidence": sorted({f"{h.rule}: {h.describe()}" for h in hits if h.category == verdict})[:6]})
    n = len(rows)
    summary = {"devices": n, "right": sum(r["status"] == "right" for r in rows),
               "wrong": sum(r["status"] == "wrong" for r in rows),
               "abstains": sum(r["status"] == "abstains" for r in rows),
               "with_records": sum(r["records"] > 0 for r in rows),
               "no_hit": sum(not r["scores"] for r in rows)}
    for s in per_source.values():
        s["false_hit_rate"] = round(s["wrong"] / n, 4) if n else None
    return {"knowledge": k.version, "summary": summary, "sources": per_source, "devices": rows}


def check_captures(paths, devices=None) -> dict:
    return check_devices(pooled_records(paths, devices))


def format_check(doc: dict) -> str:
    s = doc["summary"]
    lines = [f"knowledge {doc['knowledge']}: {s['devices']} labelled devices, {s['with_records']} with identity "
             f"records, {s['no_hit']} on which no rule fires",
             f"knowledge alone: right {s['right']}, wrong {s['wrong']}, abstains {s['abstains']}", ""]
    lines.append(f"{'device':48s} {'truth':9s} {'verdict':9s} {'':8s} scores")
    for r in doc["devices"]:
        sc = ", ".join(f"{c} {v:.2f}" for c, v in list(r["scores"].items())[:3])
        lines.append(f"{(r['dataset'] + '/' + r['device'])[:48]:48s} {r['category']:9s} {r['verdict'] or '-':9s} "
                     f"{r['status']:8s} {sc}")
    lines += ["", f"{'source':20s} {'fires on':>8s} {'right':>6s} {'wrong':>6s} {'abstains':>8s} {'false hits':>10s}"]
    for src, v in sorted(doc["sources"].items(), key=lambda kv: -kv[1]["fires"]):
        lines.append(f"{src:20s} {v['fires']:8d} {v['right']:6d} {v['wrong']:6d} {v['abstains']:8d} "
                     f"{v['false_hit_rate']:10.3f}" + (f"  ({'; '.join(v['wrong_devices'])})" if v["wrong_devices"] else ""))
    return "\n".join(lines)
