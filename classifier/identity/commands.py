"""``iotclass knowledge``: build the compiled knowledge (:mod:`classifier.knowledge.build`), explain what fires on records, check it
against labelled captures.

    iotclass knowledge build [--cache DIR] [--out FILE]
    iotclass knowledge explain RECORD... [--mac MAC] [--json]
    iotclass knowledge check PATH... [--devices CSV] [--json]

A RECORD is ``kind=value`` (``dhcp.hostname=RingDoorbell-74``, ``mdns.txt=ci=5``,
``ssdp.type=urn:Belkin:device:bridge:1``, ``dns.query=api.ring.com``); the kinds are those of
``iotclass identity``.
"""

from __future__ import annotations

import json
import os
import sys

from classifier.errors import IotClassError

#: Where ``build`` keeps the downloaded sources by default.
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "iotclass", "knowledge-sources")


def parse_record(text: str) -> tuple[str, str]:
    from classifier.features.identity import KINDS
    kind, sep, value = text.partition("=")
    kind = kind.strip()
    if not sep or not kind or not value:
        raise IotClassError(f"record {text!r}: expected KIND=VALUE, e.g. dhcp.hostname=RingDoorbell-74")
    if kind not in KINDS:
        raise IotClassError(f"record {text!r}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
    return kind, value


def explain(records: list[tuple[str, str]], mac: int | None = None, knowledge=None) -> dict:
    """The rules that fire on ``records`` (and ``mac``), each with its source, the scores and the
    knowledge's verdict."""
    from classifier.identity.knowledge import default_knowledge
    k = knowledge or default_knowledge()
    hits = k.hits([(0, kind, value) for kind, value in records], mac)
    fired: dict[str, dict] = {}
    for h in hits:
        row = k.rows.get(h.rule, {})
        f = fired.setdefault(h.rule or h.reason, {
            "rule": h.rule, "record": f"{h.kind}={h.value}", "why": h.reason, "match": row.get("match"),
            "pattern": row.get("pattern"), "source": row.get("source"), "categories": {}})
        f["categories"][h.category] = max(f["categories"].get(h.category, 0.0), round(h.weight, 4))
    scores = {c: round(v, 4) for c, v in k.scores(hits).items() if v > 0}
    return {"knowledge": k.version, "rules": list(fired.values()), "scores": scores, "verdict": k.verdict(hits)}


def format_explain(doc: dict) -> str:
    lines = []
    if not doc["rules"]:
        lines.append("no rule fires")
    for f in doc["rules"]:
        s = f["source"] or {}
        cats = ", ".join(f"{c} {w:.2f}" for c, w in f["categories"].items())
        lines.append(f"{f['rule']}  {f['record']}")
        lines.append(f"    {f['why']}")
        lines.append(f"    -> {cats}")
        lines.append(f"    source: {s.get('package')} {s.get('version')}, {s.get('file')}, {s.get('field')}")
    ranked = sorted(doc["scores"].items(), key=lambda kv: -kv[1])
    lines.append("scores: " + (", ".join(f"{c} {v:.2f}" for c, v in ranked) or "none"))
    lines.append(f"verdict: {doc['verdict'] or 'none (the knowledge abstains)'}")
    return "\n".join(lines)


def oui_vendor_of_registry(registry=None):
    """``oui_vendor(prefix)`` for the build: the OUI registry's short vendor name of a MAC prefix."""
    from classifier.identity.oui import default_registry
    reg = registry if registry is not None else default_registry()

    def oui_vendor(prefix: str):
        hexs = (prefix + "0" * 12)[:12]
        return reg.vendor(int(hexs, 16)) if len(prefix) >= 6 else None
    return oui_vendor


def cmd_build(args) -> int:
    from pathlib import Path
    from classifier.knowledge.build import COMPILED, build, digest, fetch, write
    out = Path(args.out or COMPILED)
    paths = fetch(Path(args.cache), log=lambda m: print(m, file=sys.stderr))
    doc = build(paths, oui_vendor=oui_vendor_of_registry())
    doc["digest"] = digest(doc)
    write(doc, out)
    print(f"wrote {len(doc['rows'])} rows to {out} (digest {doc['digest']})")
    for s in doc["sources"]:
        print(f"  {s['package']} {s['version']}: {s['rows']} rows")
    for what, k in doc["skipped"].items():
        print(f"  skipped {k}: {what}")
    return 0


def cmd_knowledge(args) -> int:
    if args.action == "build":
        return cmd_build(args)
    if args.action == "explain":
        from classifier.capture.packets import mac_to_int
        recs = [parse_record(r) for r in args.record]
        mac = None
        if args.mac:
            try:
                mac = mac_to_int(args.mac)
            except ValueError:
                raise IotClassError(f"--mac {args.mac!r}: not a MAC address") from None
        doc = explain(recs, mac)
        print(json.dumps(doc, indent=2) if args.json else format_explain(doc))
        return 0
    from classifier.identity.check import check_captures, format_check
    doc = check_captures(args.path, args.devices)
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        print()
    else:
        print(format_check(doc))
    return 0


def add_knowledge_command(sub) -> None:
    sp = sub.add_parser("knowledge", help="public device knowledge: build it, explain it, check it",
                        description="The compiled public knowledge (Home Assistant's discovery matchers, device "
                                    "libraries' model tables, curated words): build it from its pinned sources, "
                                    "explain which rules fire on records, check it on labelled captures.")
    act = sp.add_subparsers(dest="action", required=True, metavar="ACTION")
    b = act.add_parser("build", help="compile classifier/knowledge/compiled.json from the pinned sources")
    b.add_argument("--cache", default=DEFAULT_CACHE, metavar="DIR",
                   help=f"where the sources' files are kept (downloaded with pip when missing; default {DEFAULT_CACHE})")
    b.add_argument("--out", metavar="FILE", help="where to write (default: the package's compiled.json)")
    e = act.add_parser("explain", help="the rules that fire on identity records, with their sources")
    e.add_argument("record", nargs="+", metavar="RECORD", help="KIND=VALUE, e.g. dhcp.hostname=RingDoorbell-74")
    e.add_argument("--mac", help="the device's MAC (MAC-prefix rules, a randomised MAC)")
    e.add_argument("--json", action="store_true")
    c = act.add_parser("check", help="per labelled device: what the knowledge alone names; per source: false hits")
    c.add_argument("path", nargs="+", metavar="PATH", help="labelled captures or folders (each with a devices.csv)")
    c.add_argument("--devices", action="append", metavar="CSV", help="devices.csv naming the captures' devices")
    c.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_knowledge)


