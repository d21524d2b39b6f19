"""Fuzz: mutated captures either raise a CaptureError naming the file and offset, or read
into structurally valid frames. Truncation is checked exactly: the packets fully inside
the kept bytes, no more, no fewer."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from classifier.capture.reader import MAX_CAPLEN, read_frames
from classifier.capture.decode import decode
from classifier.errors import CaptureError
from classifier.capture.writer import Interface, write_pcap, write_pcapng

from test_capture_formats import sample_records


def _captures() -> list[bytes]:
    out = []
    for kw in ({}, {"nano": True}, {"big_endian": True}):
        b = io.BytesIO()
        write_pcap(b, sample_records(), **kw)
        out.append(b.getvalue())
    for kw in ({}, {"big_endian": True, "extra_blocks": True},
               {"interfaces": [Interface(tsresol=9), Interface(tsresol=0x86)]}):
        b = io.BytesIO()
        recs = sample_records()
        if "interfaces" in kw:
            for i, r in enumerate(recs):
                r.interface = i % 2
        write_pcapng(b, recs, **kw)
        out.append(b.getvalue())
    return out


CAPTURES = _captures()
# No per-example deadline (timing on shared machines is noisy); a hang is caught by the
# module's timeout instead.
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
pytestmark = pytest.mark.timeout(300)


def check(data: bytes) -> None:
    try:
        fr = read_frames(data, name="fuzz.pcap")
    except CaptureError as err:
        assert "fuzz.pcap" in str(err)
        assert err.offset is None or 0 <= err.offset <= len(data) + 64
        return
    n = len(data)
    assert np.all(fr.offset >= 0)
    assert np.all(fr.offset + fr.caplen <= n)
    assert np.all(fr.caplen > 0) and np.all(fr.caplen <= MAX_CAPLEN)
    assert np.all(fr.caplen <= fr.wirelen)
    pk = decode(fr)  # the decoder must cope with whatever the framing let through
    assert len(pk) == len(fr)
    for w in fr.warnings:
        assert "fuzz.pcap" in str(w)


@FUZZ
@given(st.sampled_from(range(len(CAPTURES))), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                       min_size=1, max_size=8))
def test_byte_flips(which, flips):
    data = bytearray(CAPTURES[which])
    for pos, val in flips:
        data[pos % len(data)] = val
    check(bytes(data))


@FUZZ
@given(st.sampled_from(range(len(CAPTURES))), st.integers(0, 10**6),
       st.sampled_from([0, 1, 11, 12, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, MAX_CAPLEN, MAX_CAPLEN + 1]))
def test_length_fields_overwritten(which, pos, value):
    data = bytearray(CAPTURES[which])
    pos = (pos % (len(data) - 4)) & ~3
    struct.pack_into("<I", data, pos, value)
    check(bytes(data))


@FUZZ
@given(st.sampled_from(range(len(CAPTURES))), st.integers(0, 10**6), st.binary(min_size=1, max_size=40))
def test_insertions(which, pos, junk):
    data = CAPTURES[which]
    pos %= len(data)
    check(data[:pos] + junk + data[pos:])


@FUZZ
@given(st.sampled_from(range(len(CAPTURES))), st.integers(0, 10**6))
def test_truncation_gives_exactly_the_complete_packets(which, cut):
    data = CAPTURES[which]
    full = read_frames(data, name="fuzz.pcap")
    cut %= len(data) + 1
    try:
        fr = read_frames(data[:cut], name="fuzz.pcap")
    except CaptureError as err:
        assert "fuzz.pcap" in str(err)
        # only a cut inside the file header / section header / interface descriptions fails
        assert cut < full.offset[0] - 16
        return
    complete = int(np.sum(full.offset + full.caplen <= cut))
    assert len(fr) <= complete <= len(fr) + 1  # a pcapng block's padding/trailer may be cut
    assert np.array_equal(fr.ts_ns, full.ts_ns[: len(fr)])
    assert np.array_equal(fr.caplen, full.caplen[: len(fr)])
    assert (len(fr.warnings) > 0) == (cut not in _record_ends(data, full))


def _record_ends(data: bytes, full) -> set[int]:
    """Cut points that leave no partial record: the end of each record/block, the end of
    the file header(s) and the end of the file."""
    ends = {len(data)}
    if data[:4] == b"\n\r\r\n":
        off = 0
        while off < len(data):
            e = ">" if data[8:12] == b"\x1a\x2b\x3c\x4d" else "<"
            blen = struct.unpack_from(e + "I", data, off + 4)[0]
            off += blen
            ends.add(off)
    else:
        ends.add(24)
        for o, c in zip(full.offset.tolist(), full.caplen.tolist()):
            ends.add(o + c)
    return ends
