"""Public, device-independent knowledge: what a device's self-description says its category is.

The knowledge is compiled (:mod:`classifier.knowledge.build`, ``iotclass knowledge build``) from
maintained public sources — Home Assistant's discovery matchers and integrations, device libraries'
model tables (python-kasa, pywemo, aiohomekit, pychromecast, roombapy, blinkpy, ring_doorbell,
tinytuya), the Public Suffix List — and this project's curated tables (category words, standard UPnP
and DNS-SD types, HomeKit category names, entity platforms, module makers, a stop-list) into
``classifier/knowledge/compiled.json``, every row naming its source. This module reads that file
and matches a device's identity records against it:

* **host names** (DHCP, mDNS instance and host names): Home Assistant's DHCP host-name patterns (with
  their MAC prefix when they have one, as Home Assistant requires), libraries' model numbers and
  host-name prefixes, brand and integration names, category words;
* **mDNS**: service types (Home Assistant's zeroconf matchers, DNS-SD types), HomeKit's ``ci=``
  category and ``md=`` model, Cast models, TXT keys and the words and names in TXT keys and values;
* **SSDP**: device types of any namespace (``urn:Belkin:device:bridge:1``, ``hnap:NetworkCamera``),
  libraries' ``uuid:`` prefixes, Home Assistant's SSDP types; words of server strings;
* **DNS names** (queries, TLS server names, HTTP hosts): libraries' cloud domains, brand names in the
  registered domain, and the few category words that name device-specific cloud services; never
  under shared third-party infrastructure (the stop-list);
* **the MAC**: Home Assistant's MAC-prefix matchers (never a Wi-Fi module maker's prefix alone) and
  a locally administered (randomised) address, which phones and computers use.

A rule that names several categories (an integration spanning cameras and plugs, say) gives each an
equal share of its weight: it abstains unless something more specific decides. :meth:`Knowledge.hits`
turns records into :class:`Hit` objects; :meth:`Knowledge.scores` sums them per category — one term
per rule and category, so a record repeated a thousand times counts once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path

from classifier.capture.labels import CATEGORIES
from classifier.capture.packets import mac_to_str
from classifier.errors import IotClassError
from classifier.identity.oui import LOCAL_BIT
from classifier.knowledge.text import Vocabulary, dns_labels, model_pieces, normalise_model, tokens  # noqa: F401

KNOWLEDGE_FILE = Path(__file__).resolve().parent.parent / "knowledge" / "compiled.json"
KNOWLEDGE_DIR = KNOWLEDGE_FILE.parent

#: How much a word or name found in each kind of record counts (a host name says more than a DNS name).
WORD_SOURCE_WEIGHT = {
    "dhcp.hostname": 1.0, "mdns.instance": 1.0, "mdns.host": 0.8, "dhcp.vendor_class": 0.6,
    "ssdp.server": 0.6, "http.user_agent": 0.6, "ssdp.user_agent": 0.6, "mdns.txt": 0.8, "ssdp.type": 1.0,
    "dns.query": 0.35, "tls.sni": 0.35, "http.host": 0.35,
}
#: mDNS TXT keys whose values name the device (friendly name, model); TXT strings that are not
#: key=value pairs are free text and read as names too.
TXT_NAME_KEYS = ("fn", "md", "model", "name", "n", "ty", "product", "model_number", "modelname", "friendlyname")
#: The knowledge names a category when it outweighs every other by this factor (else it abstains).
VERDICT_MARGIN = 1.5
#: Record kinds that carry a device's names (brand, model, words).
NAME_KINDS = ("dhcp.hostname", "mdns.instance", "mdns.host", "dhcp.vendor_class", "mdns.txt")
#: Record kinds that name software (server strings, user agents): words and model numbers only.
SOFTWARE_KINDS = ("ssdp.server", "http.user_agent", "ssdp.user_agent")
DNS_KINDS = ("dns.query", "tls.sni", "http.host")
#: A model number of a library's table counts this share of its weight when the device's MAC
#: vendor is not the library's (another maker may use the same number).
FOREIGN_MODEL_SHARE = 0.5

_UPNP = re.compile(r"^urn:([^:]+):device:([^:]+)(?::[\d.]+)?$", re.I)
_HEXMAC = re.compile(r"[^0-9A-F]")


class KnowledgeError(IotClassError):
    pass


@dataclass(frozen=True)
class Hit:
    category: str
    weight: float      # the rule's weight times the category's share and the record kind's
    kind: str          # the record kind it came from
    value: str         # the record's value
    reason: str        # e.g. "word 'camera'", "HomeKit category 5 LIGHTBULB"
    rule: str = ""     # the compiled row's id (iotclass knowledge explain)

    def describe(self) -> str:
        return f"{KIND_NAMES.get(self.kind, self.kind)} {self.value!r}: {self.reason}"


KIND_NAMES = {
    "dhcp.hostname": "DHCP host name", "dhcp.vendor_class": "DHCP vendor class", "dhcp.prl": "DHCP parameter list",
    "dns.query": "DNS", "mdns.service": "mDNS", "mdns.instance": "mDNS name", "mdns.txt": "mDNS TXT",
    "mdns.host": "mDNS host", "ssdp.type": "SSDP", "ssdp.server": "SSDP server", "ssdp.location": "SSDP location",
    "tls.sni": "TLS SNI", "http.user_agent": "HTTP user agent", "http.host": "HTTP host",
    "mac": "MAC",
}


def _registered(host: str) -> str:
    parts = [p for p in host.lower().rstrip(".").split(".") if p]
    if len(parts) >= 3 and len(parts[-1]) == 2 and parts[-2] in ("co", "com", "net", "org", "ac", "gov", "edu", "ne",
                                                                   "or", "go"):
        return ".".join(parts[-3:])
    return ".".join(parts[-2:])


class Knowledge:
    """The compiled rows, indexed for look-up."""

    def __init__(self, doc: dict, source: str = "<knowledge>"):
        if doc.get("format") != "iotclass-knowledge" or doc.get("format_version") != 1:
            raise KnowledgeError(f"{source}: not compiled knowledge of a version this code reads")
        self.doc = doc
        self.source = source
        self.rows: dict[str, dict] = {}
        by: dict[str, list[dict]] = {}
        for r in doc.get("rows", []):
            self.rows[r["id"]] = r
            by.setdefault(r["match"], []).append(r)
        self.by_match = by
        self.vocab = Vocabulary({r["pattern"]["word"]: (next(iter(r["categories"])), r["weight"], r["pattern"]["dns"])
                                 for r in by.get("word", [])}, frozenset(r["pattern"]["word"] for r in by.get("modifier", [])))
        self._word_rows = {r["pattern"]["word"]: r for r in by.get("word", [])}
        self.stop = tuple(sorted({r["pattern"]["suffix"] for r in by.get("stop", [])}))
        self._stop = frozenset(self.stop)
        self.modules = frozenset(r["pattern"]["vendor"] for r in by.get("module", []))
        self.services = {r["pattern"]["service"]: r for r in by.get("service", [])}
        self.zeroconf: dict[str, list[dict]] = {}
        for r in by.get("zeroconf", []) + by.get("zeroconf_specific", []):
            self.zeroconf.setdefault(r["pattern"]["type"], []).append(r)
        self.upnp = {r["pattern"]["type"]: r for r in by.get("upnp_type", [])}
        self.ssdp: dict[str, list[dict]] = {}
        for r in by.get("ssdp", []):
            self.ssdp.setdefault(r["pattern"]["type"], []).append(r)
        self.uuid_prefixes = sorted(by.get("uuid_prefix", []), key=lambda r: -len(r["pattern"]["prefix"]))
        self.homekit = {int(r["pattern"]["code"]): r for r in by.get("homekit_category", [])}
        self.homekit_models = sorted(by.get("homekit_model", []), key=lambda r: -len(r["pattern"]["model"]))
        self.cast_models = {r["pattern"]["model"]: r for r in by.get("cast_model", [])}
        self.models: dict[str, list[dict]] = {}
        for r in by.get("model", []):
            self.models.setdefault(r["pattern"]["model"], []).append(r)
        self.names: dict[str, list[tuple[list[str], dict]]] = {}
        for r in by.get("name", []):
            toks = tokens(r["pattern"]["name"])
            if toks:
                self.names.setdefault(toks[0], []).append((toks, r))
        self._single_names = sorted((t for t, cands in self.names.items() if len(t) >= 4
                                     and any(len(toks) == 1 for toks, _ in cands)), key=len, reverse=True)
        # a brand's one-word name may stand beside a category word in one token (shellyplug)
        self.vocab.modifiers = self.vocab.modifiers | frozenset(self._single_names)
        self.dhcp = by.get("dhcp", [])
        self.dhcp_hostname = by.get("dhcp_hostname", [])
        self.dhcp_mac = by.get("dhcp_mac", [])
        self.host_prefixes = by.get("hostname_prefix", [])
        self.txt_keys = {r["pattern"]["key"]: r for r in by.get("txt_key", [])}
        self.domains = {r["pattern"]["suffix"]: r for r in by.get("domain", [])}
        self.local_mac = (by.get("local_mac") or [None])[0]
        self.version = doc.get("digest", "")
        #: the DNS-SD service types of the curated table (the identity probe asks for them by name;
        #: Home Assistant's zeroconf types come back through the probe's service enumeration)
        self.dnssd = dict(self.services)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Knowledge":
        path = Path(path) if path else KNOWLEDGE_FILE
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise KnowledgeError(f"{path}: cannot read the compiled knowledge ({exc.strerror}); build it with "
                                 f"`iotclass knowledge build`") from None
        except ValueError as exc:
            raise KnowledgeError(f"{path}: not valid JSON ({exc})") from None
        return cls(doc, str(path))

    # ------------------------------------------------------------------ helpers

    def _hits(self, row: dict, kind: str, value: str, reason: str, mult: float = 1.0) -> list[Hit]:
        return [Hit(c, row["weight"] * share * mult, kind, value, reason, row["id"]) for c, share in row["categories"].items()]

    def stopped(self, host: str) -> bool:
        """Whether a DNS name is shared third-party infrastructure (never votes)."""
        labels = host.lower().rstrip(".").split(".")
        return any(".".join(labels[i:]) in self._stop for i in range(len(labels) - 1))

    def _word_hits(self, text: str, kind: str, value: str, dns: bool = False) -> list[Hit]:
        mult = WORD_SOURCE_WEIGHT.get(kind, 0.0)
        out = []
        for word, _, _ in self.vocab.hits(text, dns=dns):
            out += self._hits(self._word_rows[word], kind, value, f"word '{word}'", mult)
        return out

    def _name_hits(self, text: str, kind: str, value: str) -> list[Hit]:
        """Brand and integration names read as words (a whole name, in order; a one-word name also
        as part of a compound: tplinkcloud)."""
        toks = tokens(text)
        mult = WORD_SOURCE_WEIGHT.get(kind, 0.0)
        out: list[Hit] = []
        seen: set[str] = set()
        for i, t in enumerate(toks):
            cands = list(self.names.get(t, ()))
            if not cands and len(t) >= 6:
                # a one-word name in a compound: tplinkcloud = tplink + cloud, myedimax = my + edimax
                head = next((n for n in self._single_names if n != t and (
                    (t.startswith(n) and (len(t) - len(n) <= 2 or self.vocab._known(t[len(n):])))
                    or (t.endswith(n) and self.vocab._known(t[:-len(n)])))), None)
                if head:
                    cands = [c for c in self.names[head] if len(c[0]) == 1]
            for name_toks, row in cands:
                if row["id"] in seen:
                    continue
                if len(name_toks) > 1 and toks[i:i + len(name_toks)] != name_toks:
                    continue
                seen.add(row["id"])
                out += self._hits(row, kind, value, f"{row['label']} (name '{row['pattern']['name']}')", mult)
        return out

    def _model_hits(self, text: str, kind: str, value: str, vendor: str | None) -> list[Hit]:
        out = []
        for piece in model_pieces(text):
            rows = self.models.get(piece)
            if rows is None and len(piece) >= 5:
                # a variant suffix of at most two letters: KL110B, DCS930LB
                for cut in (1, 2):
                    base = piece[:-cut]
                    if piece[-cut:].isalpha() and base in self.models:
                        rows = self.models[base]
                        break
            for row in rows or ():
                own = not row["pattern"].get("vendor") or row["pattern"]["vendor"] == vendor
                if not own and len(row["pattern"]["model"]) <= 4:
                    continue     # a short number of another maker's device: too easily someone else's
                share = 1.0 if own else FOREIGN_MODEL_SHARE
                out += self._hits(row, kind, value, f"{row['label']}", share)
        return out

    # ------------------------------------------------------------------ per record

    def record_hits(self, kind: str, value: str, vendor: str | None = None) -> list[Hit]:
        """The hits of one record, read alone (rules that need two records or the MAC are in
        :meth:`hits`)."""
        return list(_record_hits(self, kind, value, vendor))

    def _record_hits(self, kind: str, value: str, vendor: str | None) -> list[Hit]:
        v = value.strip()
        if not v:
            return []
        hits: list[Hit] = []
        if kind == "mdns.service":
            t = v.lower().rstrip(".").removesuffix(".local")
            row = self.services.get(t)
            if row and row["categories"]:
                hits += self._hits(row, kind, v, f"service type {t}")
            for row in self.zeroconf.get(t, ()):
                if row["match"] == "zeroconf":
                    hits += self._hits(row, kind, v, f"{row['label']} (zeroconf {t})")
            return hits
        if kind == "ssdp.type":
            low = v.lower()
            m = _UPNP.match(v)
            # the device part of a type of any namespace (urn:Belkin:device:bridge:1, hnap:NetworkCamera)
            name = m.group(2) if m else (v.split(":", 1)[1] if ":" in v and not low.startswith(("uuid:", "urn:"))
                                         else None)
            if m and m.group(2).lower() in self.upnp:
                # a standard UPnP type: the standard says what it is (or that it names no category)
                row = self.upnp[m.group(2).lower()]
                return self._hits(row, kind, v, row["label"])
            if name:
                hits += self._word_hits(name, kind, v)
            for row in self.ssdp.get(low, ()):
                hits += self._hits(row, kind, v, f"{row['label']} (SSDP {low})")
            for row in self.uuid_prefixes:
                if low.startswith(row["pattern"]["prefix"]):
                    hits += self._hits(row, kind, v, row["label"])
                    break
            return hits
        if kind == "mdns.txt":
            key, sep, val = v.partition("=")
            key_l = key.strip().lower()
            if sep and key_l == "ci":
                try:
                    row = self.homekit.get(int(val.strip()))
                except ValueError:
                    row = None
                if row:
                    hits += self._hits(row, kind, v, row["label"])
                return hits
            if sep and key_l == "md":
                md = val.strip().lower()
                row = next((r for r in self.homekit_models if md.startswith(r["pattern"]["model"])), None)
                if row:
                    hits += self._hits(row, kind, v, f"{row['label']} (HomeKit model {row['pattern']['model']})")
                if md in self.cast_models:
                    hits += self._hits(self.cast_models[md], kind, v, self.cast_models[md]["label"])
            if sep and key_l in self.txt_keys:
                row = self.txt_keys[key_l]
                hits += self._hits(row, kind, v, row["label"])
            # category words in keys and values; names and model numbers only where the TXT string
            # names the device (a name key's value, or free text), not in keys such as version=
            hits += self._word_hits(f"{key} {val}" if sep else v, kind, v)
            if not sep or key_l in TXT_NAME_KEYS:
                text = val if sep else v
                hits += self._name_hits(text, kind, v) + self._model_hits(text, kind, v, vendor)
            return hits
        if kind in DNS_KINDS:
            host = v.split(":")[0].lower().rstrip(".")
            if not host or host.replace(".", "").isdigit() or self.stopped(host):
                return []
            labels = host.split(".")
            for i in range(len(labels) - 1):
                row = self.domains.get(".".join(labels[i:]))
                if row:
                    hits += self._hits(row, kind, v, row["label"])
                    break
            hits += self._word_hits(dns_labels(host), kind, v, dns=True)
            reg = _registered(host)
            hits += self._name_hits(reg.split(".")[0], kind, v)
            return hits
        if kind in NAME_KINDS:
            text = v.removesuffix(".local").removesuffix(".LOCAL") if kind != "dhcp.vendor_class" else v
            if kind in ("dhcp.hostname", "mdns.instance", "mdns.host"):
                low = text.lower()
                for row in self.dhcp_hostname:
                    if kind == "dhcp.hostname" and fnmatchcase(low, row["pattern"]["hostname"]):
                        hits += self._hits(row, kind, v, f"{row['label']} (DHCP host name {row['pattern']['hostname']})")
                for row in self.host_prefixes:
                    if low.startswith(row["pattern"]["prefix"]):
                        hits += self._hits(row, kind, v, row["label"])
                hits += self._model_hits(text, kind, v, vendor)
            hits += self._word_hits(text, kind, v) + self._name_hits(text, kind, v)
            return hits
        if kind in SOFTWARE_KINDS:
            return self._word_hits(v, kind, v) + self._model_hits(v, kind, v, vendor)
        return hits

    # ------------------------------------------------------------------ per device

    def mac_hits(self, mac: int | None, vendor: str | None = None) -> list[Hit]:
        """What the device's MAC itself says: a locally administered (randomised) address suggests a
        phone or computer; a vendor prefix Home Assistant matches alone names its integration's
        categories (never a module maker's, which the build already left out)."""
        if mac is None:
            return []
        mac = int(mac)
        if mac & LOCAL_BIT:
            row = self.local_mac
            return self._hits(row, "mac", mac_to_str(mac), "locally administered, randomised") if row else []
        hexmac = f"{mac:012X}"
        out = []
        for row in self.dhcp_mac:
            if hexmac.startswith(row["pattern"]["mac"]):
                out += self._hits(row, "mac", mac_to_str(mac), f"{row['label']} (MAC prefix {row['pattern']['mac']})")
        return out

    def hits(self, records, mac: int | None = None) -> list[Hit]:
        """Every hit of a device's records and of its MAC, if given; a (kind, value) pair counts once.
        Rules that need two pieces (a DHCP host name and the MAC prefix; a zeroconf type and its
        instance name or TXT properties) are read across the device's records."""
        vendor = _vendor(mac) if mac is not None else None
        seen: set[tuple[str, str]] = set()
        out: list[Hit] = self.mac_hits(mac, vendor)
        by_kind: dict[str, list[str]] = {}
        for _, kind, value in records:
            key = (kind, value)
            if key in seen:
                continue
            seen.add(key)
            by_kind.setdefault(kind, []).append(value)
            out.extend(_record_hits(self, kind, value, vendor))
        if mac is not None and not int(mac) & LOCAL_BIT and self.dhcp:
            hexmac = f"{int(mac):012X}"
            for host in by_kind.get("dhcp.hostname", ()):
                low = host.strip().lower()
                for row in self.dhcp:
                    p = row["pattern"]
                    if hexmac.startswith(p["mac"]) and fnmatchcase(low, p["hostname"]):
                        out += self._hits(row, "dhcp.hostname", host,
                                          f"{row['label']} (DHCP host name {p['hostname']} and MAC prefix {p['mac']})")
        services = {s.lower().rstrip(".").removesuffix(".local") for s in by_kind.get("mdns.service", ())}
        if services:
            names = [n.lower() for n in by_kind.get("mdns.instance", ())]
            txt = {}
            for t in by_kind.get("mdns.txt", ()):
                k, sep, v = t.partition("=")
                if sep:
                    txt.setdefault(k.strip().lower(), []).append(v.strip().lower())
            for s in sorted(services):
                for row in self.zeroconf.get(s, ()):
                    if row["match"] != "zeroconf_specific":
                        continue
                    p = row["pattern"]
                    if "name" in p and not any(fnmatchcase(f"{n}.{s}.local.", p["name"]) or fnmatchcase(n, p["name"])
                                               for n in names):
                        continue
                    if "properties" in p and not all(any(fnmatchcase(v, pat) for v in txt.get(k, ()))
                                                     for k, pat in p["properties"].items()):
                        continue
                    what = " ".join(f"{k}={v}" for k, v in p.items() if k != "type")
                    out += self._hits(row, "mdns.service", s, f"{row['label']} (zeroconf {s} {what})")
        return out

    def scores(self, hits: list[Hit]) -> dict[str, float]:
        """Per category, the summed weight of its hits; a rule counts once per category however many
        records fire it."""
        best: dict[tuple[str, str], float] = {}
        for h in hits:
            key = (h.category, h.rule or h.reason)
            best[key] = max(best.get(key, 0.0), h.weight)
        out = {c: 0.0 for c in CATEGORIES}
        for (cat, _), w in best.items():
            out[cat] += w
        return out

    def verdict(self, hits: list[Hit]) -> str | None:
        """The category with the most weight when it outweighs every other by :data:`VERDICT_MARGIN`
        (sources that disagree leave the knowledge silent), else None."""
        ranked = sorted(self.scores(hits).items(), key=lambda kv: -kv[1])
        if not ranked or ranked[0][1] <= 0 or (len(ranked) > 1 and ranked[1][1] * VERDICT_MARGIN > ranked[0][1] + 1e-9):
            return None
        return ranked[0][0]

    def source_of(self, rule: str) -> dict | None:
        row = self.rows.get(rule)
        return None if row is None else row["source"]


@lru_cache(maxsize=200_000)
def _record_hits(k: Knowledge, kind: str, value: str, vendor: str | None) -> tuple[Hit, ...]:
    return tuple(k._record_hits(kind, value, vendor))


@lru_cache(maxsize=100_000)
def _vendor(mac: int) -> str | None:
    from classifier.identity.oui import default_registry
    return default_registry().vendor(int(mac))


@lru_cache(maxsize=1)
def default_knowledge() -> Knowledge:
    return Knowledge.load()


def knowledge_verdict(records, mac: int | None = None, knowledge: Knowledge | None = None) -> str | None:
    """The category public knowledge alone names on a device's identity records (and its MAC,
    if given), with no learning: the category with the most weight, when it has strictly more
    than any other; ``None`` when nothing names a category or two tie (the knowledge abstains)."""
    k = knowledge if knowledge is not None else default_knowledge()
    return k.verdict(k.hits(records, mac))
