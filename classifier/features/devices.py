"""Per-device streams: which packets belong to which device, and in which direction.

A packet belongs to its source device as *transmitted* and to its destination device as
*received* (Bai et al. 2018, eq. 4). Broadcast and multicast MACs are never devices, nor
are the gateway MACs given, nor the all-zero MAC of link layers that carry none.

The result is a :class:`DeviceView`: index arrays into a :class:`~classifier.capture.packets.Packets`
table, grouped by device and in time order within each device. Features are computed
on these arrays, never by copying packets per device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from classifier.capture.packets import Packets, mac_to_int, mac_to_str


def as_mac_ints(macs: Iterable[int | str] | None) -> np.ndarray:
    """MACs given as integers or strings -> a sorted uint64 array."""
    if macs is None:
        return np.zeros(0, dtype=np.uint64)
    vals = [m if isinstance(m, (int, np.integer)) else mac_to_int(m) for m in macs]
    return np.unique(np.asarray(vals, dtype=np.uint64))


def is_unicast(macs: np.ndarray) -> np.ndarray:
    """True for unicast, non-zero MACs (the I/G bit of the first octet is clear)."""
    group_bit = (macs >> np.uint64(40)) & np.uint64(1)
    return (group_bit == np.uint64(0)) & (macs != np.uint64(0))


@dataclass
class DeviceView:
    """The packets of each device, as indices into a packet table.

    Entries ``start[d]:start[d + 1]`` belong to device ``d`` (MAC ``macs[d]``), in time
    order; ``pkt`` indexes the packet table and ``tx`` says whether the device sent it.
    """

    macs: np.ndarray
    pkt: np.ndarray
    dev: np.ndarray
    tx: np.ndarray
    start: np.ndarray

    def __len__(self) -> int:
        return len(self.macs)

    def entries(self, d: int) -> slice:
        return slice(int(self.start[d]), int(self.start[d + 1]))

    def mac_strings(self) -> list[str]:
        return [mac_to_str(m) for m in self.macs.tolist()]


def split_devices(pk: Packets, gateways: Iterable[int | str] | None = None,
                  devices: Iterable[int | str] | None = None) -> DeviceView:
    """Split a packet table into per-device streams.

    ``gateways``: MACs never treated as devices. ``devices``: when given, only these MACs.
    """
    gw = as_mac_ints(gateways)
    src_ok = is_unicast(pk.eth_src)
    dst_ok = is_unicast(pk.eth_dst)
    if len(gw):
        src_ok &= ~np.isin(pk.eth_src, gw)
        dst_ok &= ~np.isin(pk.eth_dst, gw)
    if devices is not None:
        only = as_mac_ints(devices)
        src_ok &= np.isin(pk.eth_src, only)
        dst_ok &= np.isin(pk.eth_dst, only)
    tx_idx = np.flatnonzero(src_ok)
    rx_idx = np.flatnonzero(dst_ok)
    pkt = np.concatenate([tx_idx, rx_idx])
    mac = np.concatenate([pk.eth_src[tx_idx], pk.eth_dst[rx_idx]])
    tx = np.concatenate([np.ones(len(tx_idx), bool), np.zeros(len(rx_idx), bool)])
    macs, dev = np.unique(mac, return_inverse=True)
    dev = dev.astype(np.int32)
    order = np.lexsort((pkt, pk.ts_ns[pkt], dev))
    pkt, dev, tx = pkt[order], dev[order], tx[order]
    start = np.searchsorted(dev, np.arange(len(macs) + 1), side="left").astype(np.int64)
    return DeviceView(macs=macs, pkt=pkt, dev=dev, tx=tx, start=start)
