"""Plain words for the operator page: a decision in one sentence, the evidence a device gave in
words, its history as changes, and the review queue's suggestions.

Everything here is built from structured data (the decision's explanation parts,
:func:`controller_app.web.explanation_parts`; identity records; public-knowledge hits), never by
parsing the engine's prose; whatever a device said stays a quoted value (shortened), which the
page draws as text.
"""

from __future__ import annotations

from classifier.identity.model import registered_domain

#: how each record kind is named to a person
KIND_WORDS = {
    "dhcp.hostname": "DHCP", "dhcpv6.fqdn": "DHCPv6", "dhcp.vendor_class": "DHCP", "dhcp.prl": "DHCP",
    "dhcpv6.vendor_class": "DHCPv6", "mdns.instance": "mDNS", "mdns.host": "mDNS", "mdns.service": "mDNS",
    "mdns.txt": "mDNS", "mdns.browse": "mDNS", "ssdp.type": "SSDP", "ssdp.server": "SSDP", "ssdp.search": "SSDP",
    "ssdp.user_agent": "SSDP", "ssdp.location": "SSDP", "dns.query": "DNS", "llmnr.query": "LLMNR",
    "tls.sni": "TLS", "http.host": "HTTP", "http.user_agent": "HTTP", "mac": "MAC address",
}
NAME_KINDS = ("dhcp.hostname", "dhcpv6.fqdn", "mdns.instance", "mdns.host")
DNS_KINDS = ("dns.query", "tls.sni", "http.host")
#: the voters as a person would say what each looked at
VOTER_WORDS = {"identity": "what it says about itself", "session": "the services it talks to",
               "segment": "its traffic volumes"}
_PLURAL = {"non-iot": "phones and computers", "unknown": "unknown devices"}
_FEATURE_WHAT = {"total": "all", "user": "application", "control": "control", "rx": "received", "tx": "sent",
                 "other": "other", "tcp": "TCP", "udp": "UDP", "ip_other": "other IP", "arp": "ARP",
                 "icmp": "ICMP", "icmpv6": "ICMPv6", "igmp": "IGMP", "dns": "DNS", "mdns": "mDNS", "llmnr": "LLMNR",
                 "netbios": "NetBIOS", "ntp": "NTP", "dhcp": "DHCP", "dhcpv6": "DHCPv6", "ssdp": "SSDP",
                 "eapol": "EAPOL", "l2_other": "other link-layer", "all": "all"}
_FEATURE_STAT = {"max": "largest size of", "min": "smallest size of", "mean": "average size of", "sum": "bytes of",
                 "std": "spread of the sizes of", "var": "spread of the sizes of", "skew": "skew of the sizes of",
                 "kurt": "peakedness of the sizes of"}


def plural(category: str) -> str:
    """``camera`` -> ``cameras``; ``non-iot`` -> ``phones and computers``."""
    return _PLURAL.get(category, category + "s")


def article(category: str) -> str:
    return ("an " if category[:1] in "aeiou" else "a ") + category


def quote(value: str, limit: int = 40) -> str:
    v = " ".join(str(value).split())
    return "'" + (v if len(v) <= limit else v[:limit - 1] + "…") + "'"


def feature_words(name: str) -> str:
    """A segment feature in words: ``n_udp`` -> ``UDP packets``, ``len_user_mean`` -> ``average
    size of application packets``."""
    if name.startswith("n_"):
        what = _FEATURE_WHAT.get(name[2:])
        return f"{what} packets" if what else name
    if name.startswith("len_"):
        group, _, stat = name[4:].rpartition("_")
        what, how = _FEATURE_WHAT.get(group), _FEATURE_STAT.get(stat)
        return f"{how} {what} packets" if what and how else name
    return name


def record_phrase(kind: str, value: str) -> str:
    """What one identity record says, as a person would put it."""
    src = KIND_WORDS.get(kind, kind)
    if kind in NAME_KINDS:
        return f"announces itself as {quote(value.rstrip('.').removesuffix('.local'))} ({src})"
    if kind in DNS_KINDS:
        host = value.split(":")[0].rstrip(".")
        return f"talks to {registered_domain(host) if not host.replace('.', '').isdigit() else host} ({src})"
    if kind == "mdns.service":
        return f"offers the service {quote(value.rstrip('.').removesuffix('.local'))} ({src})"
    if kind == "mdns.txt":
        key, sep, val = value.partition("=")
        if sep and key.strip().lower() == "ci":
            return f"announces a HomeKit category code {quote(val)} ({src})"
        return f"announces {quote(value)} ({src})"
    if kind == "ssdp.type":
        return f"announces the UPnP device type {quote(value)} ({src})"
    if kind in ("ssdp.server", "ssdp.user_agent", "http.user_agent"):
        return f"runs {quote(value)} ({src})"
    if kind in ("dhcp.vendor_class", "dhcpv6.vendor_class"):
        return f"calls its network software {quote(value)} ({src})"
    if kind in ("mdns.browse", "ssdp.search"):
        return f"looks for {quote(value)} ({src})"
    if kind == "mac":
        return "has a randomised MAC address, as phones and computers do"
    return f"says {quote(value)} ({src})"


def _join(parts: list[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def decision_sentence(h: dict) -> str:
    """One plain sentence for a decision (a history entry with ``explained``)."""
    cat, stage = h.get("category") or "unknown", h.get("stage") or ""
    ex = h.get("explained") or {}
    conf = h.get("confidence")
    sure = f", {round(100 * float(conf))}% sure" if isinstance(conf, (int, float)) and stage != "unknown" else ""
    if stage == "unknown" or cat == "unknown":
        tops = [f"{VOTER_WORDS.get(v['name'], v['name'])} looked most like {article(v['category'])}"
                for v in ex.get("voters") or [] if v.get("category")]
        return ("Not named: no evidence the engine may rely on was strong enough" + (f" ({_join(tops)})" if tops else "") +
                "; it stays under the unknown action and is looked at again.")
    why = []
    seen = set()
    for r in sorted(ex.get("identity") or [], key=lambda r: -(r.get("weight") or 0)):
        phrase = record_phrase(r["kind"], r["value"])
        if phrase not in seen:
            seen.add(phrase)
            why.append(phrase)
        if len(why) >= 2:
            break
    vouching = [v for v in ex.get("voters") or [] if v.get("vouches") and v.get("category") == cat]
    for v in vouching:
        if v["name"] != "identity":
            why.append(f"{VOTER_WORDS.get(v['name'], v['name'])} look like {article(cat)}'s")
    if why:
        text = f"Named {cat} ({stage}{sure}) because it {_join(why)}."
    else:
        names = [VOTER_WORDS.get(v, v) for v in h.get("vouching") or ex.get("vouching") or []]
        text = f"Named {cat} ({stage}{sure}): " + (f"{_join(names)} {'point' if len(names) > 1 else 'points'} to it."
                                                   if names else "the engine's details are below.")
    if stage == "provisional":
        text += " Not confirmed yet."
    if [v["name"] for v in vouching] == ["identity"] or list(h.get("vouching") or []) == ["identity"]:
        text += " This rests on what the device says about itself alone."
    return text


def changes(history: list) -> list:
    """A device's decisions (oldest first) collapsed to changes, newest first: each run of
    decisions with the same category and stage is one entry ``{ts, until, category, stage,
    from, from_stage, decisions}``."""
    runs: list = []
    for h in history:
        key = (h.get("category"), h.get("stage"))
        if runs and (runs[-1]["category"], runs[-1]["stage"]) == key:
            runs[-1]["decisions"] += 1
            runs[-1]["until"] = h.get("ts")
            continue
        prev = runs[-1] if runs else None
        runs.append({"ts": h.get("ts"), "until": h.get("ts"), "category": key[0], "stage": key[1],
                     "from": prev["category"] if prev else None, "from_stage": prev["stage"] if prev else None,
                     "decisions": 1})
    return runs[::-1]


# ------------------------------------------------------------------ the review queue


def suggestions(records, mac: int, last: dict | None, knowledge=None, limit: int = 3) -> list[dict]:
    """The engine's top suggestions for a device it could not settle, each with its evidence in
    plain words: public knowledge on its identity records (each rule's source kept), and the
    voters of its latest decision (``last``: a history entry with ``explained``).
    ``[{category, score, evidence: [{text, source}]}]``, best first; no suggestion has a
    score of 0."""
    from classifier.identity.knowledge import default_knowledge
    k = knowledge if knowledge is not None else default_knowledge()
    hits = k.hits(records, mac) if records or mac is not None else []
    scores = k.scores(hits)
    total = sum(scores.values())
    by: dict[str, dict] = {}

    def entry(cat):
        return by.setdefault(cat, {"category": cat, "score": 0.0, "evidence": []})

    for cat, sc in scores.items():
        if sc <= 0:
            continue
        e = entry(cat)
        e["score"] += sc / total
        seen = set()
        for h in sorted((h for h in hits if h.category == cat), key=lambda h: -h.weight):
            phrase = record_phrase(h.kind, h.value)
            if phrase in seen:
                continue
            seen.add(phrase)
            src = k.source_of(h.rule) if getattr(h, "rule", None) else None
            e["evidence"].append({"text": phrase, "source": _source_words(src, h.reason)})
            if len(seen) >= 3:
                break
    ex = (last or {}).get("explained") or {}
    for v in ex.get("voters") or []:
        cat = v.get("category")
        if not cat or cat == "unknown" or v.get("probability") is None:
            continue
        e = entry(cat)
        e["score"] += 0.5 * float(v["probability"])
        what = {"identity": f"what it says about itself points to {plural(cat)}",
                "session": f"talks to the services {plural(cat)} talk to",
                "segment": f"traffic like {plural(cat)}"}.get(v["name"], f"{v['name']} says {cat}")
        e["evidence"].append({"text": what, "source": f"{v['name']} model, {float(v['probability']):.2f}"})
    out = sorted((e for e in by.values() if e["score"] > 0), key=lambda e: (-e["score"], e["category"]))[:limit]
    for e in out:
        e["score"] = round(e["score"], 3)
        e["summary"] = "; ".join(x["text"] for x in e["evidence"])
    return out


def _source_words(src, reason: str) -> str:
    if isinstance(src, dict):
        pkg = " ".join(str(src.get(k)) for k in ("package", "version") if src.get(k))
        return f"{pkg}: {reason}" if pkg else reason
    return reason


__all__ = ["KIND_WORDS", "changes", "decision_sentence", "feature_words", "plural", "record_phrase", "suggestions"]
