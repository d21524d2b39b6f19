"""Per-device streams: which packets belong to which device, and in which direction.

A packet belongs to its source device as *transmitted* and to its destination device as
*received* (Bai et al. 2018, eq. 4). Broadcast and multicast MACs are never devices, nor
are the gateway MACs given, nor the all-zero MAC of link layers that carry none.

The result is a :class:`DeviceView`: index arrays into a :class:`~classifier.capture.packets.Packets`
table, grouped by device and in time order within each device. Features are computed
on these arrays, never by copying packets per device.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from classifier.capture.packets import Packets, mac_to_int, mac_to_str


def as_mac_ints(macs: Iterable[int | str] | None) -> np.ndarray:
    """MACs given as integers or strings -> a sorted uint64 array."""
    if macs is None or (isinstance(macs, (list, tuple, set, frozenset)) and not macs):
        return np.zeros(0, dtype=np.uint64)
    vals = [m if isinstance(m, (int, np.integer)) else mac_to_int(m) for m in macs]
    return np.unique(np.asarray(vals, dtype=np.uint64))


def is_unicast(macs: np.ndarray) -> np.ndarray:
    """True for unicast, non-zero MACs (the I/G bit of the first octet is clear)."""
    group_bit = (macs >> np.uint64(40)) & np.uint64(1)
    return (group_bit == np.uint64(0)) & (macs != np.uint64(0))


class DeviceView:
    """The packets of each device, as indices into a packet table.

    Entries ``start[d]:start[d + 1]`` belong to device ``d`` (MAC ``macs[d]``), in time
    order; ``pkt`` indexes the packet table and ``tx`` says whether the device sent it.

    The view is held per packet -- ``tx_dev`` / ``rx_dev``: the device that sent / received
    each packet (-1: none), ``order``: the packets in time order (None: the table's order is
    time order) -- which is what the feature kernels walk; the entry arrays ``pkt``, ``dev``
    and ``tx`` are laid out when first read. ``t_first`` / ``t_last``: each device's first and
    last packet time.
    """

    def __init__(self, macs: np.ndarray, start: np.ndarray, tx_dev: np.ndarray, rx_dev: np.ndarray,
                 order: np.ndarray | None, t_first: np.ndarray, t_last: np.ndarray):
        self.macs = macs
        self.start = start
        self.tx_dev = tx_dev
        self.rx_dev = rx_dev
        self.order = order
        self.t_first = t_first
        self.t_last = t_last
        self._entries = None

    def __len__(self) -> int:
        return len(self.macs)

    def _laid_out(self):
        if self._entries is None:
            from classifier.features.kernels import split_fill
            order = self.order if self.order is not None else np.zeros(0, np.int64)
            self._entries = split_fill(self.tx_dev, self.rx_dev, self.start, order, self.order is not None)
        return self._entries

    @property
    def pkt(self) -> np.ndarray:
        return self._laid_out()[0]

    @property
    def dev(self) -> np.ndarray:
        return self._laid_out()[1]

    @property
    def tx(self) -> np.ndarray:
        return self._laid_out()[2]

    def walk(self) -> tuple[np.ndarray, bool]:
        """(the packets' time order, whether to use it) as the kernels take them."""
        if self.order is None:
            return np.zeros(0, np.int64), False
        return self.order, True

    def entries(self, d: int) -> slice:
        return slice(int(self.start[d]), int(self.start[d + 1]))

    def mac_strings(self) -> list[str]:
        return [mac_to_str(m) for m in self.macs.tolist()]


def split_devices(pk: Packets, gateways: Iterable[int | str] | None = None,
                  devices: Iterable[int | str] | None = None) -> DeviceView:
    """Split a packet table into per-device streams.

    ``gateways``: MACs never treated as devices. ``devices``: when given, only these MACs.
    Device ids follow the MACs' order; within a device, entries are in (time, packet) order,
    a packet's transmitted entry before its received one (one numba pass over the packets:
    :mod:`classifier.features.kernels`).
    """
    from classifier.features.kernels import split_ids
    gw = as_mac_ints(gateways)
    only = as_mac_ints(devices)
    ts = pk.ts_ns
    dev_tx, dev_rx, macs, start, tmin, tmax, ordered = split_ids(pk.eth_src, pk.eth_dst, ts, gw, only,
                                                                 devices is not None)
    order = None if ordered else np.argsort(ts, kind="stable")
    return DeviceView(macs, start, dev_tx, dev_rx, order, tmin, tmax)
