"""The identity voter: a device's self-description -> calibrated category probabilities.

Two parts, combined into one calibrated distribution over every category:

* **knowledge** (:mod:`classifier.identity.knowledge`): public tables and category words —
  ``K_c``, the summed weight of the device's evidence for category ``c``; it needs no training
  data, so it can name categories no training device had;
* **learned**: a multinomial logistic regression over identity tokens (host-name words and
  character 3-grams, DNS registered domains and their words, DHCP vendor class and parameter
  list, DNS-SD service types announced and browsed for, UPnP types announced and searched for,
  SSDP server and user-agent words, the MAC's OUI vendor), trained on training devices only —
  ``L_c`` its log-probabilities (categories it never saw get a floor).

``logit_c = a·K_c + b·L_c``, with two calibrations, both from training devices only:

* *unseen vendor* (the device's MAC vendor is not among the training devices'): ``a``, ``b``
  fitted (negative log-likelihood) on *vendor-held-out* predictions — the training devices
  split into folds by MAC vendor, each fold predicted by a token model trained on the others;
* *seen vendor*: ``a``, ``b`` fitted on *device-held-out* predictions of devices whose vendor
  has other training devices — each device predicted by a token model trained without it.

Each regime's open-set threshold comes from the same predictions: the lowest top probability
at which they reach ``target_precision``. A device whose vendor the token model saw is read
with the second; any other with the first.

With no record but the MAC (only its OUI token) the voter still answers; a vendor never seen
in training then gives a flat distribution that no threshold accepts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from classifier.capture.labels import CATEGORIES
from classifier.identity.knowledge import KIND_NAMES, Hit, Knowledge, default_knowledge, dns_labels, tokens
from classifier.identity.oui import OuiRegistry, default_registry

KIND = "identity"
FLOOR = 1e-3     # learned probability floor (categories the token model never saw)


def registered_domain(name: str) -> str:
    """The registrable part of a DNS name, by a simple rule (the last two labels; three when the
    second-level label is a generic one under a two-letter country code, as in co.uk)."""
    parts = [p for p in name.lower().rstrip(".").split(".") if p]
    if len(parts) >= 3 and len(parts[-1]) == 2 and parts[-2] in ("co", "com", "net", "org", "ac", "gov", "edu", "ne",
                                                                   "or", "go"):
        return ".".join(parts[-3:])
    return ".".join(parts[-2:])


_DIGITS = re.compile(r"\d+")


def record_tokens(kind: str, value: str) -> list[str]:
    """The learned model's tokens for one record."""
    v = value.strip()
    if not v:
        return []
    out: list[str] = []
    if kind in ("dhcp.hostname", "mdns.instance", "mdns.host"):
        name = v.lower().removesuffix(".local").removesuffix(".")
        toks = tokens(name)
        out += [f"name:{t}" for t in toks]
        letters = "".join(toks)
        padded = f"^{letters}$"
        out += [f"name3:{padded[i:i + 3]}" for i in range(max(0, len(padded) - 2))]
    elif kind == "dhcp.vendor_class":
        out.append(f"vc:{_DIGITS.sub('#', v.lower())}")
        out += [f"vcw:{t}" for t in tokens(v)]
    elif kind == "dhcp.prl":
        out.append(f"prl:{v}")
        out += [f"opt:{o}" for o in v.split(",") if o]
    elif kind in ("dns.query", "tls.sni", "http.host"):
        host = v.split(":")[0]
        if host.replace(".", "").isdigit():
            return []
        out.append(f"dom:{registered_domain(host)}")
        out += [f"dnsw:{t}" for t in tokens(dns_labels(host))]
    elif kind == "mdns.service":
        out.append(f"svc:{v.lower()}")
    elif kind == "mdns.browse":
        # what the device looks for: only service types (``_googlecast._tcp``); instance and
        # host look-ups name other devices
        name = v.lower().removesuffix(".").removesuffix(".local")
        if name.startswith("_"):
            out.append(f"browse:{name}")
    elif kind == "mdns.txt":
        key, sep, val = v.partition("=")
        if sep and key.lower() in ("ci", "md", "fn", "model", "ty", "product"):
            out.append(f"txt:{key.lower()}")
            out += [f"txtw:{t}" for t in tokens(val)]
        elif not sep:
            out += [f"txtw:{t}" for t in tokens(v)]
    elif kind == "ssdp.type":
        out.append(f"upnp:{_DIGITS.sub('#', v.lower())}")
    elif kind == "ssdp.search":
        out.append(f"ssearch:{_DIGITS.sub('#', v.lower())}")
    elif kind in ("ssdp.server", "ssdp.user_agent", "http.user_agent"):
        out += [f"ua:{t}" for t in tokens(v)]
    return out


def device_tokens(records, mac: int | None, registry: OuiRegistry | None = None) -> set[str]:
    """Every token of a device's records (each once), plus its OUI vendor."""
    toks: set[str] = set()
    seen: set[tuple[str, str]] = set()
    for _, kind, value in records:
        if (kind, value) in seen:
            continue
        seen.add((kind, value))
        toks.update(record_tokens(kind, value))
    if mac is not None:
        reg = registry if registry is not None else default_registry()
        vendor = reg.vendor(mac)
        toks.add(f"oui:{vendor}" if vendor else "oui:-")
    return toks


@dataclass
class IdentityVote:
    proba: np.ndarray               # over CATEGORIES
    hits: list[Hit]                 # knowledge hits
    tokens: list[tuple[str, float]]  # learned tokens that pushed the top class most
    records: int                    # distinct records read
    kinds: int                      # distinct record kinds
    threshold: float = 0.5          # the open-set threshold of the calibration used

    def supporting_kinds(self, category: str) -> set[str]:
        """Record kinds with a knowledge hit for ``category``."""
        return {h.kind for h in self.hits if h.category == category}


@dataclass
class IdentityModel:
    vocab: dict[str, int] = field(default_factory=dict)
    coef: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))   # (len(vocab), classes)
    intercept: np.ndarray = field(default_factory=lambda: np.zeros(0))
    classes: list[str] = field(default_factory=list)   # the token model's classes (training categories)
    a: float = 1.0
    b: float = 1.0
    threshold: float = 0.5
    #: the seen-vendor calibration (a, b, threshold); None: the unseen-vendor one for every device
    seen: tuple | None = None
    meta: dict = field(default_factory=dict)
    knowledge: Knowledge | None = None
    registry: OuiRegistry | None = None

    kind = KIND

    def _knowledge(self) -> Knowledge:
        return self.knowledge if self.knowledge is not None else default_knowledge()

    def _registry(self) -> OuiRegistry:
        return self.registry if self.registry is not None else default_registry()

    # ------------------------------------------------------------------ parts

    def learned_logp(self, toks: set[str]) -> np.ndarray:
        """log-probabilities over CATEGORIES from the token model (floored)."""
        out = np.full(len(CATEGORIES), np.log(FLOOR))
        if not self.classes:
            return np.full(len(CATEGORIES), -np.log(len(CATEGORIES)))
        idx = [self.vocab[t] for t in toks if t in self.vocab]
        z = self.intercept + (self.coef[idx].sum(axis=0) if idx else 0.0)
        z = z - z.max()
        p = np.exp(z) / np.exp(z).sum()
        for j, c in enumerate(self.classes):
            out[CATEGORIES.index(c)] = np.log(FLOOR + (1 - FLOOR * len(CATEGORIES)) * p[j])
        return out

    def knowledge_scores(self, hits: list[Hit]) -> np.ndarray:
        s = self._knowledge().scores(hits)
        return np.array([s[c] for c in CATEGORIES])

    def combine(self, K: np.ndarray, L: np.ndarray, a: float | None = None, b: float | None = None) -> np.ndarray:
        a = self.a if a is None else a
        b = self.b if b is None else b
        z = a * K + b * L
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    def vendor(self, mac: int) -> str | None:
        """The MAC vendor of ``mac`` in this model's registry (None: locally administered or
        not registered)."""
        return self._registry().vendor(mac)

    def training_vendors(self) -> frozenset[str]:
        """The MAC vendors of the devices the token model was trained on (its ``oui:`` tokens;
        a device with no registered vendor adds none)."""
        key = (id(self.vocab), len(self.vocab))
        cached = getattr(self, "_vendors", None)
        if cached is None or cached[0] != key:
            found = frozenset(t[4:] for t in self.vocab if t.startswith("oui:") and t != "oui:-")
            cached = self._vendors = (key, found)
        return cached[1]

    def module_makers(self) -> frozenset[str]:
        """The Wi-Fi module makers of the public knowledge (their MAC prefixes name the radio's maker)."""
        return self._knowledge().modules

    def vendor_categories(self) -> dict[str, frozenset[str]] | None:
        """Per MAC vendor of the training devices, the categories its devices had (None: a model
        trained before this was kept)."""
        made = self.meta.get("vendor_categories")
        if made is None:
            return None
        cached = getattr(self, "_made", None)
        if cached is None or cached[0] is not made:
            cached = self._made = (made, {v: frozenset(c) for v, c in made.items()})
        return cached[1]

    def regime(self, toks: set[str]) -> tuple[float, float, float]:
        """(a, b, threshold) for a device with these tokens: the seen-vendor calibration when
        its MAC vendor is one the token model was trained on."""
        vendor = next((t for t in toks if t.startswith("oui:")), None)
        if self.seen is not None and vendor and vendor != "oui:-" and vendor in self.vocab:
            return self.seen
        return self.a, self.b, self.threshold

    def speaks_for_mac(self, mac: int | None) -> bool:
        """Whether the MAC alone, before any record, gives public knowledge to go on (a
        locally administered address)."""
        return bool(self._knowledge().mac_hits(mac))

    def vote(self, records, mac: int | None = None) -> IdentityVote:
        records = list(records)
        hits = self._knowledge().hits(records, mac)
        toks = device_tokens(records, mac, self._registry())
        L = self.learned_logp(toks)
        a, b, thr = self.regime(toks)
        p = self.combine(self.knowledge_scores(hits), L, a, b)
        k = int(p.argmax())
        top = []
        if self.classes and CATEGORIES[k] in self.classes:
            j = self.classes.index(CATEGORIES[k])
            contrib = [(t, float(self.coef[self.vocab[t], j] - self.coef[self.vocab[t]].mean()))
                       for t in toks if t in self.vocab]
            top = sorted((c for c in contrib if c[1] > 0), key=lambda c: -c[1])[:3]
        distinct = {(kd, v) for _, kd, v in records}
        return IdentityVote(p, hits, top, len(distinct), len({kd for kd, _ in distinct}), thr)

    # ------------------------------------------------------------------ training

    def fit_tokens(self, token_sets: list[set[str]], y: np.ndarray, weights: np.ndarray | None = None,
                   min_count: int = 1, C: float = 1.0, seed: int = 0) -> "IdentityModel":
        """Train the token model (logistic regression) on training devices' token sets."""
        from scipy.sparse import csr_matrix
        from sklearn.linear_model import LogisticRegression
        counts: dict[str, int] = {}
        for ts in token_sets:
            for t in ts:
                counts[t] = counts.get(t, 0) + 1
        vocab = {t: i for i, t in enumerate(sorted(t for t, n in counts.items() if n >= min_count))}
        classes = sorted(set(y.tolist()), key=CATEGORIES.index)
        self.vocab, self.classes = vocab, classes
        if len(classes) < 2:
            self.coef = np.zeros((len(vocab), len(classes)))
            self.intercept = np.zeros(len(classes))
            return self
        rows, cols = [], []
        for i, ts in enumerate(token_sets):
            for t in ts:
                if t in vocab:
                    rows.append(i)
                    cols.append(vocab[t])
        X = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(token_sets), len(vocab)))
        lr = LogisticRegression(C=C, max_iter=2000, random_state=seed)
        lr.fit(X, y, sample_weight=weights)
        coef, intercept = lr.coef_, lr.intercept_
        if len(lr.classes_) == 2:
            # two classes: one row, for the second against the first; as two softmax columns
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
        order = [list(lr.classes_).index(c) for c in classes]
        self.coef = coef[order].T.copy()
        self.intercept = intercept[order].copy()
        return self

    def fit_calibration(self, K: np.ndarray, L: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None,
                        target_precision: float = 0.9, min_threshold: float = 0.5) -> None:
        """Fit ``a``, ``b`` and the threshold on held-out predictions (K, L: (n, categories))."""
        self.a, self.b, self.threshold, info = self._calibrate(K, L, y, weights, target_precision, min_threshold)
        self.meta["calibration"] = info

    def fit_seen_calibration(self, K, L, y, weights=None, target_precision: float = 0.9,
                             min_threshold: float = 0.5) -> None:
        a, b, thr, info = self._calibrate(K, L, y, weights, target_precision, min_threshold)
        self.seen = (a, b, thr)
        self.meta["calibration_seen_vendor"] = info

    def _calibrate(self, K, L, y, weights, target_precision, min_threshold):
        from scipy.optimize import minimize
        yi = np.array([CATEGORIES.index(c) for c in y])
        w = np.ones(len(yi)) if weights is None else np.asarray(weights, float)

        def nll(params):
            a, b = np.exp(params)
            p = self.combine(K, L, a, b)
            return float(-(w * np.log(p[np.arange(len(yi)), yi] + 1e-12)).sum() / w.sum())

        res = minimize(nll, x0=np.log([1.0, 1.0]), method="L-BFGS-B", bounds=[(np.log(0.05), np.log(20))] * 2)
        a, b = (float(v) for v in np.exp(res.x))
        thr = precision_threshold(self.combine(K, L, a, b), yi, w, target_precision, min_threshold)
        return a, b, thr, {"a": a, "b": b, "threshold": thr, "instances": int(len(yi)),
                           "target_precision": target_precision, "nll": float(res.fun)}

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> None:
        from classifier.models.base import write_model
        vocab = sorted(self.vocab, key=self.vocab.get)
        meta = {"kind": KIND, "classes": self.classes, "vocab": vocab, "a": self.a, "b": self.b,
                "threshold": self.threshold, "seen": list(self.seen) if self.seen else None, "info": self.meta}
        write_model(path, {"coef": self.coef.astype(np.float32), "intercept": self.intercept.astype(np.float32)}, meta)

    @classmethod
    def load(cls, path: str | Path) -> "IdentityModel":
        from classifier.models.base import ModelError, read_model
        tensors, meta = read_model(path)
        if meta.get("kind") != KIND:
            raise ModelError(f"{path}: a {meta.get('kind')!r} model, expected {KIND!r}")
        vocab = {t: i for i, t in enumerate(meta["vocab"])}
        coef = tensors["coef"].astype(np.float64)
        if coef.shape != (len(vocab), len(meta["classes"])):
            raise ModelError(f"{path}: coefficients {coef.shape} do not match {len(vocab)} tokens × "
                             f"{len(meta['classes'])} classes")
        seen = tuple(float(v) for v in meta["seen"]) if meta.get("seen") else None
        return cls(vocab, coef, tensors["intercept"].astype(np.float64), list(meta["classes"]), float(meta["a"]),
                   float(meta["b"]), float(meta["threshold"]), seen, meta.get("info", {}))


def precision_threshold(p: np.ndarray, yi: np.ndarray, w: np.ndarray, target: float, floor: float) -> float:
    """The lowest top-probability threshold at which the accepted predictions (weighted) are
    right at least ``target`` of the time, and never below ``floor``; 0.99 when none is."""
    top = p.max(axis=1)
    right = (p.argmax(axis=1) == yi).astype(float)
    order = np.argsort(-top)
    cum_w = np.cumsum(w[order])
    cum_r = np.cumsum(w[order] * right[order])
    prec = cum_r / np.maximum(cum_w, 1e-12)
    ok = np.flatnonzero(prec >= target)
    if len(ok) == 0:
        return 0.99
    # the largest accepted set still at the target precision
    t = float(top[order][ok[-1]])
    return float(min(0.99, max(floor, t)))


def describe(vote: IdentityVote, category: str, limit: int = 3) -> str:
    """The evidence for ``category`` in words: knowledge hits first, then learned tokens."""
    parts = []
    seen = set()
    for h in sorted((h for h in vote.hits if h.category == category), key=lambda h: -h.weight):
        key = (h.kind, h.value)
        if key in seen:
            continue
        seen.add(key)
        parts.append(_short(h))
        if len(parts) >= limit:
            break
    for tok, w in vote.tokens[: max(0, limit - len(parts)) or 1]:
        parts.append(f"learned {_token_words(tok)} ({w:+.1f})")
    return ", ".join(parts)


def _short(h: Hit) -> str:
    name = KIND_NAMES.get(h.kind, h.kind)
    if h.kind == "mdns.txt" and h.reason.startswith("HomeKit"):
        return f"mDNS _hap._tcp {h.value} ({h.reason.split('(')[-1].rstrip(')')})"
    if h.kind == "mdns.service":
        return f"mDNS {h.value} ({h.category})"
    return f"{name} {h.value!r} ({h.reason})"


def _token_words(tok: str) -> str:
    kind, _, val = tok.partition(":")
    names = {"name": "host-name word", "name3": "host-name letters", "vc": "DHCP vendor class",
             "vcw": "DHCP vendor class word", "prl": "DHCP parameter list", "opt": "DHCP option",
             "dom": "DNS", "dnsw": "DNS word", "svc": "mDNS", "txt": "mDNS TXT key", "txtw": "mDNS TXT word",
             "upnp": "SSDP", "ua": "server/user-agent word", "oui": "MAC vendor"}
    if kind == "dom":
        return f"DNS *.{val}"
    return f"{names.get(kind, kind)} {val!r}"
