"""The timeline: what changed on the network, as events an operator can read and be alerted by.

Kinds (:data:`KINDS`): a device met for the first time (``new_device``: not in the inventory),
its category changed (``category_changed``; its first decision too, from no category), it was
``confirmed``, it was decided ``unknown``, it was pinned or released from the page (``pin``,
``release``), a switch connected or went away (``switch_up``, ``switch_down``; not while it is
flapping, whose log is summarised), the policy was reloaded (``policy_reloaded``).

An event is a flat JSON object: ``id`` (increasing), ``ts`` (seconds since the epoch), ``event``
(the kind), ``mac`` (or None) and the kind's own fields (``from``, ``to``, ``stage``, ``who``,
``dpid``, ``digest``, ...). Whatever a device said is never part of an event.

:class:`EventLog` keeps the last :data:`MEMORY` events in memory (the page and ``/api/events``
read them), queues them for the inventory (written with the device rows) and hands each to the
webhook (:mod:`controller_app.webhook`), which never blocks. Thread-safe: the event loop emits
most events, an HTTP thread the pins. New devices are rate-limited (:data:`NEW_DEVICE_RATE` a
minute, then one event says how many were left out), so a flood of MACs does not flood the
timeline or the webhook; the Prometheus counter counts every one.
"""

from __future__ import annotations

import threading
import time
from collections import deque

KINDS = ("new_device", "category_changed", "confirmed", "unknown", "pin", "release", "switch_up", "switch_down",
         "policy_reloaded")
MEMORY = 1000
NEW_DEVICE_RATE = 60          #: new-device events a minute at most (burst the same)


class EventLog:
    def __init__(self, memory: int = MEMORY, sink=None, counter=None, new_device_rate: float = NEW_DEVICE_RATE,
                 clock=time.time):
        self._ring: deque = deque(maxlen=memory)
        self._pending: list = []
        self._lock = threading.Lock()
        self._seq = 0
        self.sink = sink              #: callable(event dict) -> None, e.g. Webhook.send (never blocks)
        self.counter = counter        #: Prometheus counter with an ``event`` label, or None
        self.clock = clock
        self._rate = float(new_device_rate)
        self._tokens = float(new_device_rate)
        self._last = clock()
        self._suppressed = 0

    def load(self, events) -> None:
        """Events read back from the inventory (oldest first): the ring and the next id."""
        with self._lock:
            for ev in events:
                self._ring.append(dict(ev))
                self._seq = max(self._seq, int(ev.get("id") or 0))

    def _allow_new_device(self, now: float) -> bool:
        self._tokens = min(self._rate, self._tokens + (now - self._last) * self._rate / 60.0)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self._suppressed += 1
        return False

    def emit(self, kind: str, mac: str | None = None, **fields) -> dict | None:
        """Record an event; returns it (None when rate-limited away)."""
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}; expected one of {', '.join(KINDS)}")
        if self.counter is not None:
            self.counter.labels(kind).inc()
        now = self.clock()
        with self._lock:
            if kind == "new_device":
                if not self._allow_new_device(now):
                    return None
                if self._suppressed:
                    fields["left_out"] = self._suppressed     # new devices not announced one by one
                    self._suppressed = 0
            self._seq += 1
            ev = {"id": self._seq, "ts": round(now, 3), "event": kind, "mac": mac, **fields}
            self._ring.append(ev)
            self._pending.append(ev)
            if len(self._pending) > 10 * MEMORY:          # the inventory cannot keep up: oldest go
                del self._pending[:len(self._pending) - 10 * MEMORY]
        if self.sink is not None:
            try:
                self.sink(dict(ev))
            except Exception:  # noqa: BLE001 - alerting must never stop the controller
                pass
        return ev

    def take_pending(self) -> list:
        with self._lock:
            out, self._pending = self._pending, []
        return out

    def untake(self, events) -> None:
        with self._lock:
            self._pending[:0] = list(events)

    def recent(self, mac: str | None = None, since: int | None = None, limit: int = 100) -> list:
        """Newest first: the events of ``mac`` (or all), with an id above ``since``."""
        with self._lock:
            items = list(self._ring)
        out = []
        for ev in reversed(items):
            if since is not None and ev["id"] <= since:
                break
            if mac is None or ev.get("mac") == mac:
                out.append(dict(ev))
                if len(out) >= limit:
                    break
        return out

    def last_id(self) -> int:
        with self._lock:
            return self._seq


__all__ = ["EventLog", "KINDS"]
