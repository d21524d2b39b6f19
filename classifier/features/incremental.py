"""One device's sessions kept as its packets arrive, so that a decision does not rebuild them
from all of the device's packets.

:class:`DeviceSessions` holds the session kernel's state for one device (its open 5-tuples, each
session's first packet's fields, last time and volumes) and takes the device's new packets in
arrival order (:meth:`DeviceSessions.extend`): the same kernel as
:func:`~classifier.features.sessions.session_table` (:func:`classifier.features.kernels._session_run`),
continued where it stopped. :meth:`DeviceSessions.table` gives the session table that
``session_table(packets, split_devices(packets, devices=[mac]), idle_timeout)`` gives on every
packet taken so far, bit for bit.

That holds while the packets come in time order. A packet earlier than the last one taken, or
packets taken away (a buffer that drops its oldest), cannot be continued from: the owner then
calls :meth:`DeviceSessions.rebuild` with every packet it holds (one kernel pass, in time order).
"""

from __future__ import annotations

import numpy as np

from classifier.capture.packets import Packets
from classifier.features.kernels import _grown, _grown_rows, _grown_sessions, _session_run, device_sides
from classifier.features.sessions import Sessions


class DeviceSessions:
    """One device's sessions, extended packet batch by packet batch (see the module docstring)."""

    def __init__(self, mac: int, idle_timeout: float):
        self.mac = int(mac)
        self.idle_timeout = idle_timeout
        self.idle_ns = int(idle_timeout * 1e9)
        self.last_ns: int | None = None         #: the latest packet time taken
        cap = 64
        self.table = np.full(128, -1, np.int64)
        self.keys = np.empty((cap, 8), np.uint64)
        self.s_pkt = np.empty(cap, np.int64)
        self.s_tx = np.empty(cap, np.bool_)
        self.s_dev = np.empty(cap, np.int32)
        self.s_last = np.empty(cap, np.int64)
        self.vol = np.empty((cap, 4), np.int64)
        self.st = np.zeros(2, np.int64)          # 5-tuples held, sessions held
        self.recent = np.full(1, -1, np.int64)   # the session the last entry joined
        # each session's first packet's fields (its packet lives in a batch long gone)
        self.start = np.empty(cap, np.int64)
        self.ip_proto = np.empty(cap, np.uint8)
        self.ip_version = np.empty(cap, np.uint8)
        self.src_ip = np.empty((cap, 2), np.uint64)
        self.dst_ip = np.empty((cap, 2), np.uint64)
        self.sport = np.empty(cap, np.int32)
        self.dport = np.empty(cap, np.int32)

    def __len__(self) -> int:
        return int(self.st[1])

    def in_order(self, pk: Packets) -> bool:
        """Whether ``pk`` (the next packets) can continue the sessions: in time order, none
        earlier than the last packet taken."""
        ts = pk.ts_ns
        if len(ts) == 0:
            return True
        if self.last_ns is not None and int(ts[0]) < self.last_ns:
            return False
        return len(ts) < 2 or bool((ts[1:] >= ts[:-1]).all())

    def extend(self, pk: Packets, order: np.ndarray | None = None) -> None:
        """Take the device's next packets (every packet of ``pk`` that it sent or received is
        one of its entries, as split_devices files them), in time order (``order``: their time
        order when ``pk`` is not in it; only :meth:`rebuild` passes one)."""
        n = len(pk)
        if n == 0:
            return
        dev_tx, dev_rx = device_sides(pk.eth_src, pk.eth_dst, np.uint64(self.mac))
        use = order is not None
        order = order if use else np.zeros(0, np.int64)
        before = int(self.st[1])
        j = 0
        while True:
            j = _session_run(dev_tx, dev_rx, order, use, pk.ip_version, pk.ip_proto, pk.src_ip, pk.dst_ip, pk.sport,
                             pk.dport, pk.ts_ns, pk.wire_len, self.idle_ns, j, self.table, self.keys, self.s_pkt,
                             self.s_tx, self.s_dev, self.s_last, self.vol, self.st, self.recent)
            if j >= n:
                break
            self._grow()
        after = int(self.st[1])
        if after > before:
            self._room(after)
            new = slice(before, after)
            first = self.s_pkt[new]
            self.start[new] = pk.ts_ns[first]
            self.ip_proto[new] = pk.ip_proto[first]
            self.ip_version[new] = pk.ip_version[first]
            self.src_ip[new] = pk.src_ip[first]
            self.dst_ip[new] = pk.dst_ip[first]
            self.sport[new] = pk.sport[first]
            self.dport[new] = pk.dport[first]
        last = int(pk.ts_ns.max())
        self.last_ns = last if self.last_ns is None else max(self.last_ns, last)

    def rebuild(self, pk: Packets) -> None:
        """Start again from every packet the owner holds (any order)."""
        self.__init__(self.mac, self.idle_timeout)
        ts = pk.ts_ns
        ordered = len(ts) < 2 or bool((ts[1:] >= ts[:-1]).all())
        self.extend(pk, None if ordered else np.argsort(ts, kind="stable"))

    def _grow(self) -> None:
        ns = int(self.st[1])
        if ns + 2 > len(self.s_pkt):
            self.keys = _grown_rows(self.keys, ns)
            self.s_pkt = _grown(self.s_pkt, ns)
            self.s_tx = _grown(self.s_tx, ns)
            self.s_dev = _grown(self.s_dev, ns)
            self.s_last = _grown(self.s_last, ns)
            self.vol = _grown_rows(self.vol, ns)
        if 2 * (int(self.st[0]) + 2) > len(self.table):
            self.table = _grown_sessions(self.table, self.keys)

    def _room(self, ns: int) -> None:
        if ns <= len(self.start):
            return
        size = len(self.s_pkt)
        for name in ("start", "ip_proto", "ip_version", "sport", "dport"):
            a = getattr(self, name)
            b = np.empty(size, a.dtype)
            b[:len(a)] = a
            setattr(self, name, b)
        for name in ("src_ip", "dst_ip"):
            a = getattr(self, name)
            b = np.empty((size, 2), a.dtype)
            b[:len(a)] = a
            setattr(self, name, b)

    def table_now(self) -> Sessions:
        """The session table of every packet taken so far (a copy: later packets do not change
        it), pools not filled."""
        ns = len(self)
        tx = self.s_tx[:ns].copy()
        start = self.start[:ns].copy()
        src, dst = self.src_ip[:ns], self.dst_ip[:ns]
        sp, dp = self.sport[:ns], self.dport[:ns]
        vol = self.vol[:ns]
        s = Sessions(
            mac=np.full(ns, self.mac, np.uint64),
            start_ns=start,
            interval=np.zeros(ns),
            duration=(self.s_last[:ns] - start) * 1e-9,
            ip_proto=self.ip_proto[:ns].copy(),
            local_ip=np.where(tx[:, None], src, dst),
            local_port=np.where(tx, sp, dp).astype(np.int32),
            remote_ip=np.where(tx[:, None], dst, src),
            remote_port=np.where(tx, dp, sp).astype(np.int32),
            ip_version=self.ip_version[:ns].copy(),
            packets_out=vol[:, 0].copy(),
            packets_in=vol[:, 1].copy(),
            bytes_out=vol[:, 2].copy(),
            bytes_in=vol[:, 3].copy(),
            outbound=tx,
        )
        if ns > 1:
            s.interval[1:] = np.diff(start) * 1e-9
        return s
