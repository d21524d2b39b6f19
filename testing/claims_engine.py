"""A classification engine that believes what a device says about itself, for tests that need a
decision resting on identity alone, deterministically (``--engine testing.claims_engine:make``).

It reads the device's identity records with the project's public knowledge alone
(:func:`classifier.identity.knowledge.knowledge_verdict`: HomeKit ``ci=`` codes, UPnP types,
DNS-SD services, category words in host names) and, once the device has ``min_packets``
mirrored packets and the knowledge names a category, confirms it with only the identity voter
vouching (``Decision.identity_alone``). No behaviour model takes part: whatever the device
claims is what it gets, as a liar would wish. ``make(path)`` reads an optional JSON file
``{"min_packets": n}``.
"""

from __future__ import annotations

import json

from classifier.engine.decision import CONFIRMED, Decision

VOUCHING = ("identity",)


class ClaimsEngine:
    version = "claims-test-1"

    def __init__(self, min_packets: int = 5):
        from classifier.identity.knowledge import default_knowledge
        self.min_packets = min_packets
        self.knowledge = default_knowledge()

    def decide(self, pk, mac, now_ns=None, identity=None):
        from classifier.identity.knowledge import knowledge_verdict
        records = identity.for_mac(mac) if hasattr(identity, "for_mac") else list(identity or ())
        category = knowledge_verdict(records, knowledge=self.knowledge) if records else None
        if category is None or len(pk) < self.min_packets:
            return None
        said = ", ".join(f"{kind} {value!r}" for _, kind, value in records[:8])
        return Decision(category, 0.99, CONFIRMED, self.version, f"identity {category} 0.99; identity: {said}",
                        {"packets": len(pk), "identity_records": len(records)}, vouching=VOUCHING)


def make(path=None) -> ClaimsEngine:
    if not path:
        return ClaimsEngine()
    with open(path) as fh:
        spec = json.load(fh)
    return ClaimsEngine(int(spec.get("min_packets", 5)))
