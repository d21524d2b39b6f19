"""A fake classification engine for tests that run the real app (``--engine fake_engine:make``).

``make(path)`` reads ``path`` (JSON: {"MAC": [category, confidence, stage], ...,
"min_packets": n, "delay": seconds}) and decides by MAC once a device has ``min_packets``
mirrored packets, taking ``delay`` seconds per call (a slow model); without a path it never
decides.
"""

from __future__ import annotations

import json
import time

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
