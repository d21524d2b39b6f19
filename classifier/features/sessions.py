"""Session features (Chen et al., network behaviour analysis).

A session is a device's traffic with one remote endpoint over one transport: the 5-tuple
(protocol, local address and port, remote address and port), both directions joined, UDP
and ICMP included (ports -1 where the protocol has none). A session ends after
``idle_timeout`` seconds without a packet; the next packet of the same 5-tuple opens a new
one. Sessions are ordered by start time per device.

Per session: start, interval since the device's previous session start (0 for its first),
duration, protocol, local and remote address and port, packets and bytes each way, who
opened it, and the remote address's IP pool (filled in by :mod:`classifier.pools.resolver`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from classifier.features.devices import DeviceView
from classifier.capture.packets import Packets, ips_to_str, macs_to_str

DEFAULT_IDLE_TIMEOUT = 60.0


@dataclass
class Sessions:
    """A table of sessions, one numpy array per column, grouped by device, in start order."""

    mac: np.ndarray           # uint64
    start_ns: np.ndarray      # int64
    interval: np.ndarray      # float64 seconds since the device's previous session start
    duration: np.ndarray      # float64 seconds
    ip_proto: np.ndarray      # uint8
    local_ip: np.ndarray      # (n, 2) uint64
    local_port: np.ndarray    # int32, -1 if none
    remote_ip: np.ndarray     # (n, 2) uint64
    remote_port: np.ndarray   # int32, -1 if none
    ip_version: np.ndarray    # uint8
    packets_out: np.ndarray   # int64 (sent by the device)
    packets_in: np.ndarray
    bytes_out: np.ndarray
    bytes_in: np.ndarray
    outbound: np.ndarray      # bool: the device sent the first packet
    pool: np.ndarray = field(default=None)  # object array of pool names ('' until resolved)

    def __post_init__(self):
        if self.pool is None:
            self.pool = np.full(len(self.mac), "", dtype=object)

    def __len__(self) -> int:
        return len(self.mac)

    def take(self, index) -> "Sessions":
        return Sessions(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to_frame(self):
        import pandas as pd
        return pd.DataFrame({
            "mac": macs_to_str(self.mac),
            "start": self.start_ns * 1e-9,
            "interval": self.interval,
            "duration": self.duration,
            "ip_proto": self.ip_proto,
            "local_ip": ips_to_str(self.local_ip),
            "local_port": self.local_port,
            "remote_ip": ips_to_str(self.remote_ip),
            "remote_port": self.remote_port,
            "packets_out": self.packets_out,
            "packets_in": self.packets_in,
            "bytes_out": self.bytes_out,
            "bytes_in": self.bytes_in,
            "outbound": self.outbound,
            "pool": self.pool,
        })


def session_table(pk: Packets, view: DeviceView, idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> Sessions:
    """Every device's sessions (see the module docstring): one numba pass over the packets
    with an open-addressing table of the devices' 5-tuples
    (:func:`classifier.features.kernels.session_kernel`)."""
    from classifier.features.kernels import session_kernel
    order, use_order = view.walk()
    (tx, s_dev, p_out, p_in, b_out, b_in, start, interval, duration, ip_proto, ip_version, local_ip, remote_ip,
     local_port, remote_port) = session_kernel(
        view.tx_dev, view.rx_dev, order, use_order, len(view), pk.ip_version, pk.ip_proto, pk.src_ip, pk.dst_ip,
        pk.sport, pk.dport, pk.ts_ns, pk.wire_len, int(idle_timeout * 1e9))
    s = Sessions(
        mac=view.macs[s_dev],
        start_ns=start,
        interval=interval,
        duration=duration,
        ip_proto=ip_proto,
        local_ip=local_ip,
        local_port=local_port,
        remote_ip=remote_ip,
        remote_port=remote_port,
        ip_version=ip_version,
        packets_out=p_out,
        packets_in=p_in,
        bytes_out=b_out,
        bytes_in=b_in,
        outbound=tx,
    )
    return s
