"""Each device's traffic over time, from the switch's own counters.

Every ``--traffic-interval`` seconds the shell asks each switch for the counters of the
controller's per-host forwarding entries (cookie kind HOST; one request per switch, tables
ETH_SRC and ETH_DST). On the device's edge switch, its ETH_SRC entry (``in_port, eth_src``)
counts what the switch forwarded *from* it and its ETH_DST entry (``eth_dst``) what it
forwarded *to* it: traffic the policy let through (a blocked device's frames skip
forwarding, so they count nowhere here; a rate-limited device's count after its meter).

Samples are kept per device as rates (bytes/s each way) over the last ``samples`` intervals,
in a small fixed-size ring (float32); ``python -m benchmarks.web`` measures its bytes a device.
An entry that was re-installed (its duration went back) counts from zero again; the first
reading of an entry gives no rate (there is nothing to compare it with).
"""

from __future__ import annotations

import threading
from array import array

import numpy as np

from controller_app.intents import KIND_SHIFT, CookieKind, Table, cookie_mac

_TX, _RX = int(Table.ETH_SRC), int(Table.ETH_DST)
FIELDS = ("t", "tx_Bps", "rx_Bps")


def entries_from_stats(body) -> list[tuple]:
    """(table, cookie, packets, bytes, duration s) of a flow-stats reply's entries (os-ken or Ryu)."""
    return [(s.table_id, s.cookie, s.packet_count, s.byte_count, s.duration_sec + s.duration_nsec * 1e-9)
            for s in body]


_NAN = float("nan")


class _Ring:
    __slots__ = ("data", "n", "last")

    def __init__(self, samples: int):
        self.data = array("f", bytes(4 * samples * len(FIELDS)))   # samples x (t, tx, rx), oldest overwritten
        self.n = 0                                                  # samples written so far
        self.last = array("d", [_NAN] * 6)         # per direction: bytes, duration, t of the last reading


class TrafficHistory:
    """Per-device rates from successive flow-stats replies (thread-safe: the event loop adds,
    the HTTP threads read)."""

    def __init__(self, samples: int = 90):
        self.samples = int(samples)
        self._rings: dict[int, _Ring] = {}
        self._pending: dict[int, list] = {}
        self._lock = threading.Lock()
        self.t0 = None
        self.replies = 0

    def add(self, dpid: int, entries, now_s: float, more: bool, edge_of) -> int:
        """One part of a switch's reply; ``more``: further parts follow. ``edge_of(mac)``: the
        device's edge switch (None for an unknown device). Returns the devices sampled (0 until
        the last part)."""
        part = self._pending.setdefault(dpid, [])
        part.extend(entries)
        if more:
            return 0
        entries = self._pending.pop(dpid)
        host = int(CookieKind.HOST)
        seen: dict[int, list] = {}
        for table, ck, packets, nbytes, duration in entries:
            if (ck >> KIND_SHIFT) != host or table not in (_TX, _RX):
                continue
            mac = cookie_mac(ck)
            if edge_of(mac) != dpid:
                continue
            seen.setdefault(mac, [None, None])[0 if table == _TX else 1] = (float(nbytes), float(duration))
        if self.t0 is None:
            self.t0 = now_s
        t = now_s - self.t0
        with self._lock:
            self.replies += 1
            for mac, dirs in seen.items():
                ring = self._rings.get(mac)
                if ring is None:
                    ring = self._rings[mac] = _Ring(self.samples)
                tx = rx = 0.0
                have = False
                last = ring.last
                for k, got in enumerate(dirs):
                    if got is None:
                        continue
                    nbytes, duration = got
                    j = 3 * k
                    b0, d0, t_prev = last[j], last[j + 1], last[j + 2]
                    last[j], last[j + 1], last[j + 2] = nbytes, duration, t
                    if not t > t_prev:                 # the first reading (nan), or no time between
                        continue
                    dt = t - t_prev
                    if duration < d0 or nbytes < b0:   # re-installed: it counts from zero again
                        b0 = 0.0
                        dt = min(dt, max(duration, 1e-3))
                    if k == 0:
                        tx = (nbytes - b0) / dt
                    else:
                        rx = (nbytes - b0) / dt
                    have = True
                if have:
                    i = 3 * (ring.n % self.samples)
                    ring.data[i:i + 3] = array("f", (t, tx, rx))
                    ring.n += 1
        return len(seen)

    def series(self, mac: int) -> dict:
        """The device's samples, oldest first: {"start": epoch seconds of t = 0, "t": seconds,
        "tx_Bps": [...], ...}."""
        with self._lock:
            ring = self._rings.get(mac)
            if ring is None or ring.n == 0:
                return {"start": self.t0, **{f: [] for f in FIELDS}}
            k = min(ring.n, self.samples)
            rows = np.frombuffer(ring.data, np.float32).reshape(self.samples, len(FIELDS)).copy()
            if ring.n > self.samples:
                rows = np.roll(rows, -(ring.n % self.samples), axis=0)
            rows = rows[:k]
        return {"start": self.t0, **{f: [round(float(v), 3) for v in rows[:, i]] for i, f in enumerate(FIELDS)}}

    def __len__(self) -> int:
        return len(self._rings)
