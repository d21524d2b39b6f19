"""Replaying one device's traffic through an engine the way the controller asks it.

The one decision replay of the project: ``iotclass evaluate online``
(:mod:`classifier.evaluation.online`), the end-to-end harness and the demo
(:mod:`topologies.replay`) all call :func:`replay_decisions`. Its rules are the controller's
(``controller_app.core``):

* the first decision request comes once the device has ``min_packets`` packets (the
  controller's ``decide_min_packets``, 10), at the time the last of them arrives;
* then one request every ``interval_s`` seconds of capture time (the controller's
  ``decide_interval``, 30 s, times the replay's speed-up), but only once the device has sent or
  received a packet since the previous request (the controller asks only about devices with
  new packets: without one the next request waits for the next packet);
* each request decides on the device's packets up to that time, with ``now`` = the request time,
  and its identity records where the caller has them (the engine reads those up to ``now``);
* the first *confirmed* or *unknown* decision is final: the controller stops mirroring the
  device there, so it is asked nothing more (until a re-check hours later).

What the controller sees differs in ways this replay leaves out: its timer ticks once a
second (a request comes up to a second after the time given here), mirrored packets may be
rate-limited by the mirror meter, and a replay through a switch has timing errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from classifier.capture.packets import Packets
from classifier.engine.decision import CONFIRMED, PROVISIONAL, UNKNOWN, Decision
from classifier.features.devices import split_devices

SEC = 1_000_000_000
#: the controller's defaults (controller_app.core.Settings): decide_interval, decide_min_packets
DECIDE_INTERVAL_S = 30.0
DECIDE_MIN_PACKETS = 10
FINAL = (CONFIRMED, UNKNOWN)


def device_packets(pk: Packets, mac: int) -> Packets:
    """The packets device ``mac`` sent or received (unicast), in time order: what the
    controller mirrors for it."""
    return pk.take(split_devices(pk, devices=[mac]).pkt)


def request_times(ts_ns: np.ndarray, interval_s: float = DECIDE_INTERVAL_S, min_packets: int = DECIDE_MIN_PACKETS,
                  end_ns: int | None = None) -> np.ndarray:
    """The times (ns) at which the controller asks for a decision on a device whose packets
    arrive at ``ts_ns`` (sorted), up to ``end_ns`` (default: the last packet)."""
    ts = np.asarray(ts_ns, dtype=np.int64)
    if len(ts) < max(1, min_packets):
        return np.zeros(0, np.int64)
    end = int(ts[-1]) if end_ns is None else int(end_ns)
    step = int(round(interval_s * SEC))
    if step <= 0:
        raise ValueError(f"decision interval must be positive, got {interval_s!r}")
    out = []
    t = int(ts[max(1, min_packets) - 1])
    while t <= end:
        out.append(t)
        k = int(np.searchsorted(ts, t, side="right"))     # the first packet after this request
        if k == len(ts):
            break
        t = max(t + step, int(ts[k]))
    return np.asarray(out, np.int64)


@dataclass
class Replay:
    """The decisions one device got: ``times`` (ns) of every request, ``decisions`` (None
    where the engine had not enough evidence yet), up to and including the final one."""

    mac: int
    t0_ns: int                                   #: the device's first packet
    times: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    decisions: list = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.decisions)

    def _first(self, pred) -> tuple[float, Decision] | tuple[None, None]:
        for t, d in zip(self.times.tolist(), self.decisions):
            if d is not None and pred(d):
                return (t - self.t0_ns) / SEC, d
        return None, None

    @property
    def final(self) -> Decision | None:
        """The first confirmed or unknown decision (where mirroring stops), if any."""
        return self._first(lambda d: d.stage in FINAL)[1]

    @property
    def final_s(self) -> float | None:
        """Seconds from the device's first packet to its final decision."""
        return self._first(lambda d: d.stage in FINAL)[0]

    @property
    def last(self) -> Decision | None:
        return next((d for d in reversed(self.decisions) if d is not None), None)

    def first_correct_s(self, truth: str, stage: str = PROVISIONAL) -> float | None:
        """Seconds to the first decision of category ``truth`` at ``stage`` (``provisional``:
        any stage, a confirmed decision being at least provisional)."""
        if stage == PROVISIONAL:
            return self._first(lambda d: d.category == truth)[0]
        return self._first(lambda d: d.category == truth and d.stage == stage)[0]


def replay_decisions(engine, pk: Packets, mac: int, interval_s: float = DECIDE_INTERVAL_S,
                     min_packets: int = DECIDE_MIN_PACKETS, end_ns: int | None = None,
                     stop_at_final: bool = True, identity=None) -> Replay:
    """Ask ``engine`` about device ``mac`` at the controller's times (see the module
    docstring) on its packets in ``pk`` (any table holding them), until its final decision
    (``stop_at_final``) or ``end_ns`` (default: its last packet). ``identity``: identity records
    (an :class:`~classifier.features.identity.IdentityRecords` table, or the device's
    ``(t_ns, kind, value)`` tuples), handed to ``engine.decide`` as the controller does."""
    dev = device_packets(pk, mac)
    if len(dev) == 0:
        return Replay(mac, 0)
    ts = dev.ts_ns
    times = request_times(ts, interval_s, min_packets, end_ns)
    out = Replay(mac, int(ts[0]))
    extra = {} if identity is None else {"identity": identity}
    done = []
    for t in times.tolist():
        k = int(np.searchsorted(ts, t, side="right"))
        d = engine.decide(dev.take(slice(0, k)), mac, now_ns=t, **extra)
        done.append(t)
        out.decisions.append(d)
        if stop_at_final and d is not None and d.stage in FINAL:
            break
    out.times = np.asarray(done, np.int64)
    return out
