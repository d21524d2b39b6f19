"""Learning devices: their mirrored packets, and the classification worker.

:class:`Learner` (part of the pure core's state) keeps, per learning device, the mirrored
packets that involve it as a columnar :class:`~classifier.capture.packets.Packets` table with room
to grow — the same table the offline tools build from a capture, decoded by the same kernel — so
that the features the engine computes online are the offline ones. Rows are written once, so a
table handed to the decision worker never changes, and the engine can tell the same rows again
(and keep a device's segment window while they hold it). A packet between two learning
devices is in both buffers. Beside them it keeps each device's identity evidence (what it
said about itself: :mod:`classifier.features.identity`), each distinct value once with the
time it was first seen, pooled over the device's life: the values outlive the packet buffer
(a device decided ``unknown`` or ``provisional`` keeps them in memory, its identity protocols
still read), every new value is queued for the inventory (:meth:`Learner.take_pending`), and a
device whose values left memory (confirmed, parked, or met again after a restart) gets them
back from the inventory when it is mirrored again (:meth:`Learner.load_identity`). Once a
device's decision is confirmed its buffer and values are dropped from memory and only a few
fields of compact state remain (in the core's device record).

:class:`DecisionWorker` (used by the os-ken shell, never by the core) runs
``engine.decide`` and pool look-ups in one background thread, so that neither a slow model
nor an RDAP server can block the event loop; results come back through a callback.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, fields
from typing import Callable

import numpy as np

from classifier.capture.packets import Packets
from classifier.features.identity import IdentityRecords

LOG = logging.getLogger("controller_app.learning")


_STORES = itertools.count(1)
_COLUMNS = tuple(f.name for f in fields(Packets))


@dataclass
class DeviceBuffer:
    """One device's mirrored packets: rows ``[lo, hi)`` of ``store``, a packet table with room to
    grow. Each row is written once: a batch is appended at ``hi``, dropping the oldest moves ``lo``,
    and growing copies the rows to a new store (a new ``store_id``). So a table handed out
    (:meth:`Learner.packets`, a view) never changes, and one row of a store is the same packet for
    as long as the store lives."""

    store: Packets | None = None
    store_id: int = 0
    lo: int = 0
    hi: int = 0
    new: int = 0            #: packets since the last decision request
    first_ns: int = 0        #: its first packet's time, the first kept after a trim (segments start there)
    last_ns: int = 0
    sessions: object = None  #: its sessions so far (DeviceSessions), kept from request to request
    taken: int = 0           #: the buffer's packets the sessions have taken
    trimmed: bool = False    #: packets were dropped since: the sessions start again
    prepared: tuple = ()     #: (first_ns, segment count) its window was last prepared at (PrepareWindow)

    @property
    def n(self) -> int:
        """Its packets."""
        return self.hi - self.lo


class Learner:
    """Per-device buffers of mirrored packets (at most ``max_packets`` each, the oldest eighth
    dropped when over),
    and of identity values: at most ``max_identity_values`` distinct ones each, later new ones
    dropped (the first records say the most), except the first value of a kind the device has
    not sent before, which still gets in (it says something new): at most
    ``max_identity_values`` + the number of kinds (20). The same bound holds in the inventory,
    which holds only values kept here."""

    def __init__(self, max_packets: int = 50_000, max_identity_values: int = 1000):
        self.max_packets = max_packets
        self.max_identity_values = max_identity_values
        #: the engine's session idle timeout when each decision request carries the device's
        #: sessions, kept incrementally (:meth:`sessions`); None: the engine builds them
        self.session_idle: float | None = None
        self.buffers: dict[int, DeviceBuffer] = {}
        self.identities: dict[int, dict[tuple[int, str], int]] = {}   # mac -> {(kind, value): first t_ns}
        self.pending: list[tuple[int, int, str, int]] = []            # (mac, kind, value, t_ns) not written yet

    def add(self, pk: Packets, tx_owner: np.ndarray, rx_owner: np.ndarray) -> int:
        """File each packet under the device that sent it (where ``tx_owner`` is True) and the
        device that received it (where ``rx_owner`` is True). Returns the rows filed."""
        if len(pk) == 0:
            return 0
        src = pk.eth_src[tx_owner]
        dst = pk.eth_dst[rx_owner]
        owners = np.unique(np.concatenate([src, dst]))
        filed = 0
        for mac in owners.tolist():
            sel = (tx_owner & (pk.eth_src == mac)) | (rx_owner & (pk.eth_dst == mac))
            rows = np.flatnonzero(sel)
            buf = self.buffers.get(mac)
            fresh = buf is None
            if fresh:
                buf = self.buffers[mac] = DeviceBuffer()
            self._append(buf, pk, rows)
            chunk_ts = buf.store.ts_ns[buf.hi - len(rows):buf.hi]
            if fresh:
                buf.first_ns = int(chunk_ts.min())
            buf.new += len(rows)
            buf.last_ns = max(buf.last_ns, int(chunk_ts.max()))
            filed += len(rows)
            if buf.n > self.max_packets:
                self._trim(buf)
        return filed

    @staticmethod
    def _append(buf: DeviceBuffer, pk: Packets, rows: np.ndarray) -> None:
        """Write rows ``rows`` of ``pk`` after the buffer's rows; a full store is replaced by one
        twice the size of what it keeps (its kept rows copied over), so appending costs one copy
        of each row on average, however long the buffer."""
        m = len(rows)
        store = buf.store
        if store is None or buf.hi + m > len(store):
            live = buf.hi - buf.lo
            grown = Packets(**{name: np.empty((max(64, 2 * (live + m)),) + getattr(pk, name).shape[1:],
                                              getattr(pk, name).dtype) for name in _COLUMNS})
            if live:
                for name in _COLUMNS:
                    getattr(grown, name)[:live] = getattr(store, name)[buf.lo:buf.hi]
            buf.store, buf.store_id, buf.lo, buf.hi = grown, next(_STORES), 0, live
            store = grown
        hi = buf.hi
        for name in _COLUMNS:
            getattr(store, name)[hi:hi + m] = getattr(pk, name)[rows]
        buf.hi = hi + m

    def keep_after_trim(self) -> int:
        """Packets a buffer over ``max_packets`` keeps: seven eighths of it. Dropping an eighth
        at once, not a few oldest packets per batch, keeps a busy device's buffer still between
        drops: its segments (counted from its oldest packet) and its sessions then continue from
        request to request, and are built again once per drop. (An eighth, not more: a buffer
        must still span a segment window, 30 minutes, for a device of up to 24 packets/s.)"""
        return self.max_packets - self.max_packets // 8

    def _trim(self, buf: DeviceBuffer) -> None:
        """Drop the oldest packets down to :meth:`keep_after_trim` (the rows stay in the store
        until it grows again: nothing is copied)."""
        buf.lo = max(buf.lo, buf.hi - self.keep_after_trim())
        buf.first_ns = int(buf.store.ts_ns[buf.lo]) if buf.n else 0
        buf.trimmed = True

    def packets(self, mac: int) -> Packets:
        """The device's mirrored packets so far, in arrival order: a view of its buffer that later
        packets do not change. Its ``rows`` attribute, ``(store id, first row)``, says where its
        rows lie in the buffer's store (:class:`DeviceBuffer`): two tables with rows at the same
        place of the same store hold the same packets there."""
        buf = self.buffers.get(mac)
        if buf is None or buf.store is None:
            return Packets.empty()
        lo, hi, store = buf.lo, buf.hi, buf.store
        view = Packets(**{name: getattr(store, name)[lo:hi] for name in _COLUMNS})
        view.rows = (buf.store_id, lo)
        return view

    def sessions(self, mac: int):
        """The device's sessions over the packets :meth:`packets` gives now (a copy, pools not
        filled), continued from the last request with only the packets that came since
        (:class:`~classifier.features.incremental.DeviceSessions`); started again from the whole
        buffer after it dropped its oldest packets or when packets came out of time order.
        None when :attr:`session_idle` is not set."""
        if self.session_idle is None:
            return None
        buf = self.buffers.get(mac)
        if buf is None:
            return None
        from classifier.features.incremental import DeviceSessions
        pk = self.packets(mac)
        state = buf.sessions
        if state is None or buf.trimmed or state.idle_timeout != self.session_idle or buf.taken > len(pk):
            state = buf.sessions = DeviceSessions(mac, self.session_idle)
            state.rebuild(pk)
        else:
            new = pk.take(slice(buf.taken, None))
            if state.in_order(new):
                state.extend(new)
            else:
                state.rebuild(pk)
        buf.taken = len(pk)
        buf.trimmed = False
        return state.table_now()

    def _room(self, held: dict, kind: int) -> bool:
        """Whether a new value of ``kind`` may join ``held`` (see the class docstring)."""
        if len(held) < self.max_identity_values:
            return True
        return self.max_identity_values > 0 and all(k != kind for k, _ in held)

    def add_identity(self, recs: IdentityRecords) -> tuple[int, set]:
        """Keep each device's new identity values (with the time first seen) and queue them for
        the inventory. Returns how many new values were dropped at the cap, and the MACs that
        gained a value."""
        dropped = 0
        fresh: set = set()
        for t, mac, kind, value in zip(recs.t_ns.tolist(), recs.mac.tolist(), recs.kind.tolist(),
                                       recs.value.tolist()):
            held = self.identities.setdefault(mac, {})
            key = (kind, value)
            first = held.get(key)
            if first is None:
                if not self._room(held, kind):
                    dropped += 1
                    continue
                held[key] = t
                fresh.add(mac)
            elif t < first:
                held[key] = t
            else:
                continue
            self.pending.append((mac, kind, value, t))
        return dropped, fresh

    def load_identity(self, mac: int, rows) -> int:
        """Values the inventory holds for ``mac`` (``(t_ns, kind code, value)``, oldest first)
        join those held (the earlier first sight kept), within the cap; they are not queued
        again. Returns the values added."""
        held = self.identities.setdefault(mac, {})
        added = 0
        for t, kind, value in rows:
            key = (kind, value)
            first = held.get(key)
            if first is None:
                if self._room(held, kind):
                    held[key] = t
                    added += 1
            elif t < first:
                held[key] = t
        return added

    def take_pending(self) -> list[tuple[int, int, str, int]]:
        """The identity values kept since the last call, for the inventory."""
        out, self.pending = self.pending, []
        return out

    def identity(self, mac: int) -> IdentityRecords:
        """The device's identity values, each once, in order of first sight (``row`` is -1:
        they come from mirrored packets, not a capture's table)."""
        held = self.identities.get(mac)
        if not held:
            return IdentityRecords.empty()
        items = sorted(held.items(), key=lambda kv: kv[1])
        n = len(items)
        value = np.empty(n, dtype=object)
        value[:] = [v for (_, v), _ in items]
        return IdentityRecords(np.fromiter((t for _, t in items), np.int64, n), np.full(n, mac, np.uint64),
                               np.fromiter((k for (k, _), _ in items), np.uint8, n), value,
                               np.full(n, -1, np.int64))

    def drop(self, mac: int) -> None:
        """Forget the device's packets and the identity values in memory (the inventory keeps
        them; values not written yet stay queued)."""
        self.buffers.pop(mac, None)
        self.identities.pop(mac, None)

    def drop_packets(self, mac: int) -> None:
        """Forget the device's packets; its identity values stay (it is still read for them)."""
        self.buffers.pop(mac, None)

    def nbytes(self) -> int:
        """Bytes held: the packet columns, and about the identity values (their text and a
        dictionary entry each)."""
        ident = sum(len(v) + 100 for held in self.identities.values() for (_, v) in held) + 120 * len(self.pending)
        return sum(b.store.nbytes() for b in self.buffers.values() if b.store is not None) + ident


class DecisionWorker:
    """One background thread that runs jobs (``engine.decide``, pool look-ups) in order and
    hands each result to ``deliver(kind, key, result, error)`` — which the shell uses to post
    an event back into its own event loop. A failing job is delivered with its exception."""

    def __init__(self, deliver: Callable, name: str = "iot-decide", max_pending: int = 1024,
                 log_interval: float = 10.0):
        self.deliver = deliver
        self.jobs: queue.Queue = queue.Queue(max_pending)
        self.pending: set = set()
        self.refused = 0            #: jobs refused because the queue was full
        self._lock = threading.Lock()
        self._log_interval = log_interval
        self._next_log = 0.0
        self._refused_since_log = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._stop = False
        self._thread.start()

    def submit(self, kind: str, key, fn: Callable, *args) -> bool:
        """Queue a job unless one with the same (kind, key) is pending or the queue is full
        (False: the caller asks again later). A full queue is logged at most once per
        ``log_interval`` seconds, with the number of jobs refused since the last line."""
        with self._lock:
            if (kind, key) in self.pending:
                return False
            try:
                self.jobs.put_nowait((kind, key, fn, args))
            except queue.Full:
                self.refused += 1
                self._refused_since_log += 1
                now = time.monotonic()
                if now >= self._next_log:
                    LOG.warning("decision queue full (%d jobs): %d refused since the last report, asked again "
                                "later", self.jobs.maxsize, self._refused_since_log)
                    self._next_log = now + self._log_interval
                    self._refused_since_log = 0
                return False
            self.pending.add((kind, key))
            return True

    def _run(self) -> None:
        while True:
            item = self.jobs.get()
            if item is None:
                return
            kind, key, fn, args = item
            result = error = None
            try:
                result = fn(*args)
            except Exception as exc:  # delivered to the event loop, which counts and logs it
                error = exc
            with self._lock:
                self.pending.discard((kind, key))
            try:
                self.deliver(kind, key, result, error)
            except Exception:
                LOG.exception("delivering a %s result failed", kind)

    def stop(self, timeout: float = 5.0) -> None:
        try:
            self.jobs.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout)
