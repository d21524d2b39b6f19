"""Fuzzing the core with random packet-ins: malformed, truncated, unknown ethertypes, unknown
switches and cookies, forged topology probes. The core never raises, every intent it emits is
one the (strict) fake switch accepts, every packet-in is counted, and forwarding still works."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller_app import lldp
from controller_app.core import PacketInBatch
from controller_app.intents import CookieKind, cookie
from ctl_harness import A, B, Harness, arp, m, udp

KINDS = [int(k) for k in CookieKind] + [0, 0x99, 0xFF]

frame_st = st.one_of(
    st.binary(min_size=0, max_size=200),                                       # noise, often shorter than 14
    st.builds(lambda f, cut: f[:cut], st.sampled_from([udp(A, B), arp(A), udp(B, A, size=700)]),
              st.integers(0, 140)),                                            # truncated real frames
    st.builds(lambda et, body: bytes.fromhex("02000000000b02000000000a") + et.to_bytes(2, "big") + body,
              st.integers(0, 0xFFFF), st.binary(max_size=80)),                 # any ethertype
    st.builds(lambda d, p, cut: lldp.probe_frame(d, p)[:cut], st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1),
              st.integers(0, 60)),                                             # forged / cut probes
)

row_st = st.tuples(st.sampled_from([1, 1, 1, 2, 999]), st.integers(0, 2**32 - 1), st.sampled_from(KINDS),
                   st.sampled_from([0, m(A), m(B), 0xFFFFFFFFFFFF]), st.integers(0, 70000), frame_st)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(row_st, min_size=1, max_size=40), min_size=1, max_size=6))
def test_random_packet_ins_never_break_the_core(batches):
    h = Harness()
    h.connect(1, [1, 2, 3])
    h.connect(2, [1, 2])
    h.send(1, 1, arp(A))
    h.send(1, 2, arp(B))
    total = h.core.counters["packet_ins"]
    for batch in batches:
        rows = [(dpid, port, cookie(kind, mac) if kind < 256 else 0, min(tl, 65535), h.ns + i, data)
                for i, (dpid, port, kind, mac, tl, data) in enumerate(batch)]
        intents = h.core.packet_ins(PacketInBatch.from_rows(rows), h.ns)
        total += len(rows)
        h.run(intents)                                   # the fake switch raises on anything invalid
        h.tick(1.0)
    assert h.core.counters["packet_ins"] >= total
    assert h.send(1, 1, udp(A, B)).received == [(1, 2)]
