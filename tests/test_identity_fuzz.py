"""Fuzz: mutated and random identity payloads (DHCP, DHCPv6, DNS, mDNS, LLMNR, SSDP, TLS,
HTTP) never crash the reader. Whatever it keeps is well formed (a known kind, valid text of
bounded length, the sender and time of its packet), problems come as CaptureWarnings, and
each packet is read on its own (the same records alone or among others)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from classifier.capture.decode import decode_frames
from classifier.errors import CaptureWarning
from classifier.features.identity import KINDS, MAX_VALUE, identity_from_frames
from testing.synth import ether, tcp4, udp4

from test_identity import DEV, GW, T0, identity_zoo

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
pytestmark = pytest.mark.timeout(600)

ZOO = identity_zoo()
UDP_PORTS = [53, 5353, 5355, 67, 68, 546, 547, 1900]
TCP_PREFIXES = [b"\x16\x03\x01", b"GET ", b"POST", b"HEAD", b""]


def read(frames: list[bytes], wire: list[int] | None = None):
    ts = [T0 + i * 1_000 for i in range(len(frames))]
    pk = decode_frames(frames, ts, wire or [len(f) for f in frames])
    warns: list = []
    recs = identity_from_frames(frames, pk, warnings=warns)
    return pk, recs, warns


def check(frames: list[bytes], wire: list[int] | None = None):
    pk, recs, warns = read(frames, wire)
    assert all(isinstance(w, CaptureWarning) for w in warns)
    assert np.all((recs.row >= 0) & (recs.row < len(frames)))
    assert np.all(recs.kind < len(KINDS))
    assert np.array_equal(recs.mac, pk.eth_src[recs.row]) and np.array_equal(recs.t_ns, pk.ts_ns[recs.row])
    for v in recs.value.tolist():
        assert isinstance(v, str) and v and len(v.encode("utf-8")) <= MAX_VALUE
    return recs


def triples(recs, shift=0):
    return sorted(zip((recs.row + shift).tolist(), recs.kind.tolist(), recs.value.tolist()))


@FUZZ
@given(which=st.integers(0, len(ZOO) - 1), data=st.data())
def test_mutated_identity_packets(which, data):
    frame = bytearray(ZOO[which])
    start = 42 if len(frame) > 42 else 14   # past Ethernet + IPv4 + UDP for most of the zoo
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(start, len(frame) - 1))
        frame[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        frame = frame[:data.draw(st.integers(start, len(frame)))]
    check([bytes(frame)])
    # a snap length cutting the same packet
    cut = data.draw(st.integers(14, len(frame)))
    check([bytes(frame[:cut])], [len(frame)])


def _dns_like(draw) -> bytes:
    """A DNS header with small counts, then labels, pointers (loops included) and noise."""
    counts = [draw(st.integers(0, 4)) for _ in range(4)]
    head = struct.pack("!HHHHHH", 0, draw(st.sampled_from([0, 0x8400, 0x0100, 0x2800])), *counts)
    parts = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            label = draw(st.binary(min_size=0, max_size=70))
            parts.append(bytes([min(len(label), 255)]) + label)
        elif kind == 1:
            parts.append(struct.pack("!H", 0xC000 | draw(st.integers(0, 80))))
        elif kind == 2:
            parts.append(struct.pack("!HHIH", draw(st.sampled_from([1, 12, 16, 28, 33, 47])), 1, 120,
                                     draw(st.integers(0, 600))))
        else:
            parts.append(draw(st.binary(max_size=20)))
    return head + b"".join(parts)


@FUZZ
@given(data=st.data())
def test_random_payloads_on_identity_ports(data):
    frames = []
    for _ in range(data.draw(st.integers(1, 6))):
        if data.draw(st.booleans()):
            port = data.draw(st.sampled_from(UDP_PORTS))
            payload = _dns_like(data.draw) if port in (53, 5353, 5355) and data.draw(st.booleans()) \
                else data.draw(st.binary(min_size=1, max_size=600))
            frames.append(ether(DEV, GW, 0x0800, udp4("192.168.1.10", "192.168.1.1", 40000, port, payload)))
        else:
            payload = data.draw(st.sampled_from(TCP_PREFIXES)) + data.draw(st.binary(max_size=400))
            port = data.draw(st.sampled_from([53, 443, 80, 8883]))
            if payload:
                frames.append(ether(DEV, GW, 0x0800, tcp4("192.168.1.10", "52.1.2.3", 40001, port, 0x18, payload)))
    if not frames:
        return
    together = check(frames)
    # each packet is read on its own: the same records alone as among the others
    alone = []
    for i, f in enumerate(frames):
        alone += triples(read([f])[1], shift=i)
    assert triples(together) == sorted(alone)


def _problems(warns) -> int:
    """Malformed or oversized messages the warnings count."""
    import re
    return sum(int(m.group(1)) for w in warns for m in [re.search(r"(\d+) malformed or oversized", str(w))] if m)


@FUZZ
@given(data=st.data())
def test_repeated_datagrams_give_the_records_and_problems_of_each_read_alone(data):
    """The reader gives a byte-for-byte repeat of a datagram the first one's records (it does
    not read it again): with repeats of zoo and mutated datagrams, whole and cut short by the
    snap length, every record and every problem is still that of each packet read alone."""
    udp = [f for f in ZOO if len(f) > 42 and f[23] == 17]
    base = []
    for _ in range(data.draw(st.integers(1, 4))):
        frame = bytearray(data.draw(st.sampled_from(udp)))
        for _ in range(data.draw(st.integers(0, 3))):
            frame[data.draw(st.integers(42, len(frame) - 1))] = data.draw(st.integers(0, 255))
        base.append(bytes(frame))
    frames, wire = [], []
    for _ in range(data.draw(st.integers(2, 12))):
        f = data.draw(st.sampled_from(base))
        if data.draw(st.booleans()):
            frames.append(f)
            wire.append(len(f))
        else:   # the same bytes, the rest cut by the snap length (or the whole datagram, but not its end)
            keep = data.draw(st.integers(42, len(f)))
            frames.append(f[:keep])
            wire.append(len(f) + data.draw(st.integers(0, 1)) if keep == len(f) else len(f))
    _, together, warns = read(frames, wire)
    alone, problems = [], 0
    for i, (f, w) in enumerate(zip(frames, wire)):
        _, recs, ws = read([f], [w])
        alone += triples(recs, shift=i)
        problems += _problems(ws)
    assert triples(together) == sorted(alone)
    assert _problems(warns) == problems
