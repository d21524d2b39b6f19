"""A fake classification engine for tests that run the real app (``--engine fake_engine:make``).

``make(path)`` reads ``path`` (JSON: {"MAC": [category, confidence, stage], ...,
"min_packets": n, "delay": seconds}) and decides by MAC once a device has ``min_packets``
mirrored packets, taking ``delay`` seconds per call (a slow model); without a path it never
decides.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

from classifier.engine.decision import Decision
from classifier.capture.packets import mac_to_int


class TableEngine:
    version = "fake-table-1"

    def __init__(self, table: dict, min_packets: int = 1, delay: float = 0.0):
        self.table = {mac_to_int(k): v for k, v in table.items()}
        self.min_packets = min_packets
        self.delay = delay

    def decide(self, pk, mac, now_ns=None):
        if self.delay:
            time.sleep(self.delay)
        if mac not in self.table or len(pk) < self.min_packets:
            return None
        cat, conf, stage = self.table[mac]
        return Decision(cat, float(conf), stage, self.version, f"table says {cat}", {"packets": len(pk)})


def make(path=None):
    if not path:
        return TableEngine({})
    with open(path) as fh:
        spec = json.load(fh)
    n = int(spec.pop("min_packets", 1))
    delay = float(spec.pop("delay", 0.0))
    return TableEngine(spec, n, delay)


class LaterEngine(TableEngine):
    """Decides like :class:`TableEngine`; asked with ``explain_later`` (as the controller asks),
    it leaves the end of its explanation pending and :meth:`explained` completes it, taking
    ``delay`` seconds (an occlusion explanation): the controller must enforce before it."""

    def decide(self, pk, mac, now_ns=None, explain_later=False):
        d = super().decide(pk, mac, now_ns)
        if d is None:
            return None
        d = replace(d, pending=lambda: (f"{d.explanation}; segments: n_total (+0.50)",
                                        {"segments": [{"feature": "n_total", "change": 0.5}]}))
        return d if explain_later else self.explained(d)

    def explained(self, d):
        if d is None or d.pending is None:
            return d
        time.sleep(self.explain_delay)
        text, parts = d.pending()
        return replace(d, explanation=text, evidence=dict(d.evidence, explain=parts), pending=None)


def make_later(path):
    with open(path) as fh:
        spec = json.load(fh)
    n = int(spec.pop("min_packets", 1))
    explain_delay = float(spec.pop("explain_delay", 0.0))
    e = LaterEngine(spec, n)
    e.explain_delay = explain_delay
    return e


class _Poison:
    """A confidence that fails whatever the app does with it, as a buggy engine's answer might."""

    def _fail(self, *args):
        raise RecursionError("maximum recursion depth exceeded (injected by the test engine)")

    __float__ = __lt__ = __le__ = __gt__ = __ge__ = __round__ = __format__ = _fail

    def __repr__(self):
        return "<poison>"


class PoisonEngine(TableEngine):
    """Decides like :class:`TableEngine`; for the MACs under ``"poison"`` it answers a decision
    whose confidence raises RecursionError when used: an exception inside the app's handler."""

    def __init__(self, table: dict, min_packets: int, poison):
        super().__init__(table, min_packets)
        self.poison = {mac_to_int(m) for m in poison}

    def decide(self, pk, mac, now_ns=None):
        if mac in self.poison and len(pk) >= self.min_packets:
            return Decision("camera", _Poison(), "confirmed", self.version, "poisoned", {"packets": len(pk)})
        return super().decide(pk, mac, now_ns)


def make_poisoned(path):
    with open(path) as fh:
        spec = json.load(fh)
    n = int(spec.pop("min_packets", 1))
    poison = spec.pop("poison", [])
    return PoisonEngine(spec, n, poison)


# ------------------------------------------------------------------ an engine that learns from the site

#: generated vendors: OUI prefix -> organisation (a registry of their own, for the tests' voter)
SITE_VENDORS = {0x00AA01: "Lumo Lights Inc.", 0x00AA02: "Plugwell Ltd.", 0x00AA03: "Hubbo GmbH",
                0x00AA04: "Sensaro Oy", 0x00AA05: "Qorvane Vision Co.", 0x5CCF7F: "Espressif Inc."}
#: the training vendors' devices: prefix -> (category, host-name stem, DHCP vendor class, mDNS service)
SITE_TRAIN = {
    0x00AA01: ("light", "LUMO-B", "lumo-fw", "_lumo._tcp"),
    0x00AA02: ("plug", "PW-SOCK", "pw-os", "_pwsock._tcp"),
    0x00AA03: ("hub", "HUBBO-GW", "hubbo-linux", "_hubbo._tcp"),
    0x00AA04: ("sensor", "SNS-T", "sns-rtos", "_sns._udp"),
}


def site_records(stem: str, vclass: str, service: str, unit: int, domain: str) -> list:
    """What a generated device of one model says: a DHCP host name (the model's stem and the
    unit), vendor class, an mDNS service, its cloud's DNS names."""
    t = 1_000_000_000_000
    return [(t, "dhcp.hostname", f"{stem}{unit:04d}-{unit * 7919 % 65536:04x}"), (t + 1, "dhcp.vendor_class", vclass),
            (t + 2 * 10**9, "mdns.service", service), (t + 3 * 10**9, "dns.query", f"api.{domain}.example"),
            (t + 60 * 10**9, "dns.query", f"telemetry.{domain}.example")]


def qorvane_records(unit: int) -> list:
    """A camera model (vendor Qorvane) no training device had and public knowledge does not read."""
    return site_records("QV-IPC", "qv-linux", "_qvstream._tcp", unit, "qorvanecloud")


def site_voter():
    """An identity voter trained on four generated vendors' devices (three units each)."""
    from types import SimpleNamespace

    import numpy as np

    from classifier.identity.oui import OuiRegistry
    from classifier.identity.training import train_identity
    reg = OuiRegistry()
    for prefix, org in SITE_VENDORS.items():
        reg.add(24, prefix, org)
    devs, recs = [], []
    for prefix, (cat, stem, vc, svc) in SITE_TRAIN.items():
        for unit in range(3):
            devs.append(SimpleNamespace(mac=(prefix << 24) | (unit + 1), t0_ns=0, category=cat, device=f"{stem}-{unit}",
                                        group=f"{stem}-{unit}"))
            recs.append(site_records(stem, vc, svc, unit + 1, stem.lower().replace("-", "")))
    return train_identity(devs, lambda i: recs[i], np.ones(len(devs), bool), folds=4, registry=reg)


class SiteEngine:
    """Decides on identity alone with :func:`site_voter` (provisional, claims only) once a device
    has ``min_packets`` packets and the voter vouches; learns the site's pins as the project's
    engine does (``learn_site``)."""

    version = "fake-site-1"

    def __init__(self, min_packets: int = 3):
        from classifier.engine.engine import DecisionEngine
        self.min_packets = min_packets
        self._engine = DecisionEngine(session_model=None, identity_model=site_voter())
        self.learned: list = []

    def learn_site(self, examples):
        out = self._engine.learn_site(examples)
        self.learned.append(out)
        return out

    def decide(self, pk, mac, now_ns=None, identity=None):
        from classifier.capture.labels import CATEGORIES
        recs = [] if identity is None else list(identity.for_mac(mac)) if hasattr(identity, "for_mac") else list(identity)
        if len(pk) < self.min_packets or not recs:
            return None
        vote = self._engine.identity_model.vote(recs, mac)
        k = int(vote.proba.argmax())
        if vote.proba[k] < vote.threshold:
            return None
        return Decision(CATEGORIES[k], float(vote.proba[k]), "provisional", self.version,
                        f"identity says {CATEGORIES[k]}", {"packets": len(pk), "records": len(recs)},
                        vouching=("identity",))


def make_site(path=None):
    return SiteEngine()


class PreparingEngine(TableEngine):
    """Decides like :class:`TableEngine`, but only on a device whose window it was asked to
    prepare (``prepare``) before: a segment window of one one-second segment. With
    ``prepare_error`` its preparations fail, and its decisions do not mention them."""

    window_schedule = (1.0, 1)

    def __init__(self, table: dict, min_packets: int = 1, prepare_error: bool = False):
        super().__init__(table, min_packets)
        self.prepare_error = prepare_error
        self.prepared: list = []

    def prepare(self, pk, mac, now_ns=None):
        self.prepared.append((mac, len(pk)))
        if self.prepare_error:
            raise RuntimeError("no window today")
        return True

    def decide(self, pk, mac, now_ns=None):
        d = super().decide(pk, mac, now_ns)
        mine = [n for m, n in self.prepared if m == mac]
        if d is None or not mine:
            return None
        if self.prepare_error:
            return d
        return replace(d, explanation=f"{d.explanation} (window prepared on {mine[0]} packets)")


def make_preparing(path):
    with open(path) as fh:
        spec = json.load(fh)
    n = int(spec.pop("min_packets", 1))
    error = bool(spec.pop("prepare_error", False))
    return PreparingEngine(spec, n, error)
