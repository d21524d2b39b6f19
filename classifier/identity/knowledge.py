"""Public, device-independent knowledge: what a device's self-description says its category is.

The tables live in ``classifier/knowledge/`` (small CSV files, each naming its public source):

* ``homekit.csv``: HomeKit accessory category codes (the ``ci=`` key of ``_hap._tcp`` TXT records);
* ``upnp.csv``: UPnP device types (SSDP ``NT``/``ST`` headers);
* ``dnssd.csv``: DNS-SD service types a device announces;
* ``words.csv``: the ordinary words for each category, matched against the names a device
  gives itself (DHCP host name, mDNS names, SSDP server string, user agent, DNS names);

and one fact of the MAC itself: a locally administered (randomised) address is what phones,
tablets and computers use (:data:`LOCAL_MAC_WEIGHT`).

Nothing here is learned or read from any data set's device names. :func:`Knowledge.hits`
turns identity records into :class:`Hit` objects (category, weight, the evidence, in words);
:func:`Knowledge.scores` sums them per category — one term per distinct piece of evidence, so a
record repeated a thousand times counts once.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from classifier.capture.labels import CATEGORIES
from classifier.capture.packets import mac_to_str
from classifier.identity.oui import LOCAL_BIT

KNOWLEDGE_DIR = Path(__file__).resolve().parent.parent / "knowledge"

#: How much a word found in each kind of record counts (a host name says more than a DNS name).
WORD_SOURCE_WEIGHT = {
    "dhcp.hostname": 1.0, "mdns.instance": 1.0, "mdns.host": 0.8, "dhcp.vendor_class": 0.6,
    "ssdp.server": 0.6, "http.user_agent": 0.6, "mdns.txt": 0.8,
    "dns.query": 0.35, "tls.sni": 0.35, "http.host": 0.35,
}
#: A HomeKit category code, a standard UPnP device type: the device states its category.
HOMEKIT_WEIGHT = 3.0
UPNP_WEIGHT = 2.0
DNSSD_WEIGHT = 1.0   # times the table's own weight (1 or 2)
#: A locally administered MAC (IEEE 802 "U/L" bit set, IEEE 802c-2017's local address space):
#: Android 10+, iOS 14+/iPadOS, Windows 10+ and recent Linux desktops randomise the Wi-Fi MAC
#: per network by default, as do virtual machines and containers; appliances keep the address
#: their vendor burnt in. Strong evidence of a phone or computer, not proof (a hub running
#: containers could show one), so it weighs as a word naming the category in a host name.
LOCAL_MAC_WEIGHT = 2.0
#: mDNS TXT keys whose values are names (friendly name, model) rather than codes; TXT strings
#: that are not key=value pairs are free text and read as names too.
TXT_NAME_KEYS = ("fn", "md", "model", "name", "n", "ty", "product")

_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SPLIT = re.compile(r"[^a-z]+")
_UPNP = re.compile(r"^urn:([^:]+):device:([^:]+)(?::\d+)?$", re.I)


def tokens(text: str) -> list[str]:
    """Lower-case letter runs of ``text``, split at punctuation, digits and camelCase (an
    acronym before a capitalised word is a word of its own: IoTHub -> io, t, hub)."""
    return [t for t in _SPLIT.split(_CAMEL.sub(" ", text).lower()) if t]


def dns_labels(name: str) -> str:
    """A DNS name without its last label (the TLD): the part that can carry words."""
    parts = name.rstrip(".").split(".")
    return " ".join(parts[:-1]) if len(parts) > 1 else name


@dataclass(frozen=True)
class Hit:
    category: str
    weight: float
    kind: str          # the record kind it came from
    value: str         # the record's value
    reason: str        # e.g. "word 'camera'", "HomeKit ci=5 (Lightbulb)"

    def describe(self) -> str:
        return f"{KIND_NAMES.get(self.kind, self.kind)} {self.value!r}: {self.reason}"


KIND_NAMES = {
    "dhcp.hostname": "DHCP host name", "dhcp.vendor_class": "DHCP vendor class", "dhcp.prl": "DHCP parameter list",
    "dns.query": "DNS", "mdns.service": "mDNS", "mdns.instance": "mDNS name", "mdns.txt": "mDNS TXT",
    "mdns.host": "mDNS host", "ssdp.type": "SSDP", "ssdp.server": "SSDP server", "ssdp.location": "SSDP location",
    "tls.sni": "TLS SNI", "http.user_agent": "HTTP user agent", "http.host": "HTTP host",
    "mac": "MAC",
}


def _read_table(name: str) -> list[dict]:
    path = KNOWLEDGE_DIR / name
    with open(path, newline="", encoding="utf-8") as fh:
        lines = [ln for ln in fh if not ln.startswith("#")]
    rows = list(csv.DictReader(lines))
    for i, row in enumerate(rows, start=2):
        cat = (row.get("category") or "").strip()
        if cat and cat not in CATEGORIES:
            raise ValueError(f"{path}: row {i}: category {cat!r} is not one of {', '.join(CATEGORIES)}")
    return rows


class Knowledge:
    """The tables, indexed for look-up."""

    def __init__(self, homekit: dict[int, tuple[str, str]], upnp: dict[str, str], dnssd: dict[str, tuple[str, float]],
                 words: dict[str, tuple[str, float]]):
        self.homekit = homekit      # code -> (name, category or '')
        self.upnp = upnp            # lower-case type name -> category or ''
        self.dnssd = dnssd          # service -> (category or '', weight)
        self.words = words          # word -> (category, weight)
        self._long_words = sorted((w for w in words if len(w) >= 4), key=len, reverse=True)

    @classmethod
    def load(cls) -> "Knowledge":
        homekit = {int(r["code"]): (r["name"], r["category"].strip()) for r in _read_table("homekit.csv")}
        upnp = {r["type"].strip().lower(): r["category"].strip() for r in _read_table("upnp.csv")}
        dnssd = {r["service"].strip().lower(): (r["category"].strip(), float(r["weight"]))
                 for r in _read_table("dnssd.csv")}
        words = {r["word"].strip().lower(): (r["category"].strip(), float(r["weight"])) for r in _read_table("words.csv")}
        return cls(homekit, upnp, dnssd, words)

    # ------------------------------------------------------------------ matching

    def word_hits(self, text: str) -> list[tuple[str, str, float]]:
        """(word, category, weight) for each category word in ``text`` (once per word)."""
        out: dict[str, tuple[str, str, float]] = {}
        for tok in tokens(text):
            if tok in self.words:
                cat, w = self.words[tok]
                out.setdefault(tok, (tok, cat, w))
                continue
            if len(tok) >= 7:
                for word in self._long_words:
                    if word != tok and (tok.startswith(word) or tok.endswith(word)):
                        cat, w = self.words[word]
                        out.setdefault(word, (word, cat, w))
                        break
        return list(out.values())

    def record_hits(self, kind: str, value: str) -> list[Hit]:
        hits: list[Hit] = []
        if kind == "mdns.service":
            cat, w = self.dnssd.get(value.lower().rstrip("."), ("", 0.0))
            if cat and w > 0:
                hits.append(Hit(cat, DNSSD_WEIGHT * w, kind, value, f"service type {value}"))
            return hits
        if kind == "ssdp.type":
            m = _UPNP.match(value.strip())
            if m:
                cat = self.upnp.get(m.group(2).lower(), "")
                if cat:
                    hits.append(Hit(cat, UPNP_WEIGHT, kind, value, f"UPnP device type {m.group(2)}"))
            return hits
        if kind == "mdns.txt":
            key, sep, val = value.partition("=")
            key = key.strip().lower()
            if sep and key == "ci":
                try:
                    code = int(val.strip())
                except ValueError:
                    return hits
                name, cat = self.homekit.get(code, ("", ""))
                if cat:
                    hits.append(Hit(cat, HOMEKIT_WEIGHT, kind, value, f"HomeKit ci={code} ({name.lower()})"))
                return hits
            if sep and key not in TXT_NAME_KEYS:
                return hits
            value_text = val if sep else value    # a TXT string that is not key=value: free text
        elif kind in ("dns.query", "tls.sni", "http.host"):
            value_text = dns_labels(value)
        elif kind in WORD_SOURCE_WEIGHT:
            value_text = value
        else:
            return hits
        mult = WORD_SOURCE_WEIGHT.get(kind, 0.0)
        for word, cat, w in self.word_hits(value_text):
            hits.append(Hit(cat, w * mult, kind, value, f"word '{word}'"))
        return hits

    def mac_hits(self, mac: int | None) -> list[Hit]:
        """What the device's MAC itself says: a locally administered (randomised) address
        suggests a phone or computer (``non-iot``)."""
        if mac is None or not int(mac) & LOCAL_BIT:
            return []
        return [Hit("non-iot", LOCAL_MAC_WEIGHT, "mac", mac_to_str(mac), "locally administered, randomised")]

    def hits(self, records, mac: int | None = None) -> list[Hit]:
        """Every hit of a device's records, and of its MAC if given; a (kind, value) pair
        counts once."""
        seen: set[tuple[str, str]] = set()
        out: list[Hit] = self.mac_hits(mac)
        for _, kind, value in records:
            key = (kind, value)
            if key in seen:
                continue
            seen.add(key)
            out.extend(self.record_hits(kind, value))
        return out

    def scores(self, hits: list[Hit]) -> dict[str, float]:
        """Per category, the summed weight of its hits; a word or code counts once per category
        however many records carry it."""
        best: dict[tuple[str, str], float] = {}
        for h in hits:
            key = (h.category, h.reason)
            best[key] = max(best.get(key, 0.0), h.weight)
        out = {c: 0.0 for c in CATEGORIES}
        for (cat, _), w in best.items():
            out[cat] += w
        return out


@lru_cache(maxsize=1)
def default_knowledge() -> Knowledge:
    return Knowledge.load()


def knowledge_verdict(records, mac: int | None = None, knowledge: Knowledge | None = None) -> str | None:
    """The category public knowledge alone names on a device's identity records (and its MAC,
    if given), with no learning: the category with the most weight, when it has strictly more
    than any other; ``None`` when nothing names a category or two tie (the knowledge abstains)."""
    k = knowledge if knowledge is not None else default_knowledge()
    scores = k.scores(k.hits(records, mac))
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    if not ranked or ranked[0][1] <= 0 or (len(ranked) > 1 and ranked[1][1] >= ranked[0][1]):
        return None
    return ranked[0][0]
