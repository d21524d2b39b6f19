"""The controller's own topology probes: minimal LLDP frames naming (datapath id, port).

The controller sends one out of every switch port now and then; when one comes back in on
another switch, the two ports form a link. Only frames from :data:`PROBE_SRC` are probes, so
LLDP sent by devices themselves is left to the normal pipeline (and mirrored like anything else).
"""

from __future__ import annotations

import struct

LLDP_DST = 0x0180C200000E
PROBE_SRC = 0x0E0000000001          # locally administered, never a device
ETH_TYPE_LLDP = 0x88CC
_CHASSIS_PREFIX = b"dpid:"


def _tlv(t: int, value: bytes) -> bytes:
    return struct.pack("!H", (t << 9) | len(value)) + value


def probe_frame(dpid: int, port: int) -> bytes:
    """An LLDP frame whose chassis id is ``dpid:<16 hex>`` and port id the port number."""
    return (LLDP_DST.to_bytes(6, "big") + PROBE_SRC.to_bytes(6, "big") + struct.pack("!H", ETH_TYPE_LLDP)
            + _tlv(1, b"\x07" + _CHASSIS_PREFIX + f"{dpid:016x}".encode())
            + _tlv(2, b"\x07" + str(port).encode())
            + _tlv(3, struct.pack("!H", 120))
            + _tlv(0, b""))


def parse_probe(frame: bytes) -> tuple[int, int] | None:
    """(dpid, port) of one of our probes, or None for anything else (never raises)."""
    if len(frame) < 14 or int.from_bytes(frame[6:12], "big") != PROBE_SRC or frame[12:14] != b"\x88\xcc":
        return None
    p = 14
    dpid = port = None
    while p + 2 <= len(frame):
        (h,) = struct.unpack_from("!H", frame, p)
        t, n = h >> 9, h & 0x1FF
        v = frame[p + 2:p + 2 + n]
        if len(v) < n or t == 0:
            break
        try:
            if t == 1 and v[:1] == b"\x07" and v[1:].startswith(_CHASSIS_PREFIX):
                dpid = int(v[1 + len(_CHASSIS_PREFIX):].decode("ascii"), 16)
            elif t == 2 and v[:1] == b"\x07":
                port = int(v[1:].decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            return None
        p += 2 + n
    if dpid is None or port is None:
        return None
    return dpid, port
