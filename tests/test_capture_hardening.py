"""Captures the hostile probe had not tried (issue 19, items 9 and 10): a compression bomb read
in bounded memory (streamed: the decompressed bytes beyond 32 MiB go to a temporary file that
is mapped, not held), a large capture read that way giving the same frames as in memory, a
pcapng cut anywhere, records that captured more than their snap length."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from classifier.capture import reader
from classifier.capture.decode import decode
from classifier.capture.reader import read_frames
from classifier.capture.writer import Interface, write_pcap, write_pcapng
from classifier.errors import CaptureError

from test_capture_formats import sample_records

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20


def _pcap(**kw) -> bytes:
    b = io.BytesIO()
    write_pcap(b, sample_records(), **kw)
    return b.getvalue()


def _pcapng(**kw) -> bytes:
    b = io.BytesIO()
    write_pcapng(b, sample_records(), **kw)
    return b.getvalue()


def _peak_rss_growth_mib(body: str) -> tuple[float, str]:
    """Run ``body`` in a fresh interpreter (the project imported first) and return the growth of
    its peak resident memory over the imports, in MiB, and what it printed."""
    script = textwrap.dedent(f"""
        import resource, sys
        sys.path.insert(0, {str(ROOT)!r})
        import numpy, classifier.capture.reader, classifier.capture.decode
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = ""
    """) + textwrap.dedent(body) + textwrap.dedent("""
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((peak - base) / 1024, out)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    grow, _, said = r.stdout.strip().partition(" ")
    return float(grow), said


@pytest.mark.parametrize("kind", ["gzip", "xz"])
def test_a_bomb_past_a_large_limit_is_refused_in_bounded_memory(kind):
    """A 24-byte pcap header and 400 MiB of zeros, read with a 320 MiB limit: refused, and the
    process's peak memory grew by far less than the limit (before: the limit and more)."""
    grow, said = _peak_rss_growth_mib(f"""
        import lzma, zlib
        from classifier.errors import CaptureError
        head = b"\\xd4\\xc3\\xb2\\xa1" + bytes(12) + (65535).to_bytes(4, "little") + (1).to_bytes(4, "little")
        if {kind!r} == "gzip":
            z = zlib.compressobj(9, zlib.DEFLATED, 31)
            parts = [z.compress(head)] + [z.compress(bytes(1 << 20)) for _ in range(400)] + [z.flush()]
        else:
            z = lzma.LZMACompressor()
            parts = [z.compress(head)] + [z.compress(bytes(1 << 20)) for _ in range(400)] + [z.flush()]
        bomb = b"".join(parts)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            classifier.capture.reader.read_frames(bomb, name="bomb", max_bytes=320 << 20)
            out = "read"
        except CaptureError as exc:
            out = str(exc)
    """)
    assert "more than the capture size limit of 320 MiB" in said, said
    assert grow < 128, f"peak memory grew by {grow:.0f} MiB reading a bomb refused at 320 MiB"


@pytest.mark.parametrize("kind", ["gzip", "xz", "bzip2", "plain", "gzip-members"])
def test_a_capture_larger_than_the_memory_spool_reads_as_the_same_frames(kind, tmp_path, monkeypatch):
    raw = _pcap()
    packed = {"gzip": lambda d: gzip.compress(d), "xz": lzma.compress, "bzip2": bz2.compress,
              "plain": lambda d: d,
              "gzip-members": lambda d: gzip.compress(d[:100]) + gzip.compress(d[100:]) + bytes(512)}[kind](raw)
    path = tmp_path / "c.pcap.x"
    path.write_bytes(packed)
    whole = read_frames(str(path))
    monkeypatch.setattr(reader, "SPOOL_MEMORY", 64)          # everything past 64 bytes: the temporary file
    spooled = read_frames(str(path))
    assert not isinstance(spooled.buf.base, bytearray)       # a mapping, not memory
    for col in ("offset", "caplen", "wirelen", "ts_ns", "linktype"):
        assert np.array_equal(getattr(whole, col), getattr(spooled, col)), col
    a, b = decode(whole), decode(spooled)
    assert len(a) == len(b) == len(sample_records())
    assert np.array_equal(a.eth_src, b.eth_src) and np.array_equal(a.ts_ns, b.ts_ns)
    assert [str(w) for w in whole.warnings] == [str(w) for w in spooled.warnings]


def test_a_pcapng_cut_anywhere_gives_its_whole_packets_or_an_error_naming_the_byte():
    data = _pcapng(extra_blocks=True)
    full = len(read_frames(data, name="x.pcapng"))
    for cut in range(0, len(data), 3):
        for packed, name in ((data[:cut], "cut.pcapng"), (gzip.compress(data)[:max(cut // 3, 1)], "cut.pcapng.gz")):
            try:
                fr = read_frames(packed, name=name)
            except CaptureError as err:
                assert name in str(err) and (err.offset is None or err.offset <= len(data) + 64), str(err)
                continue
            assert len(fr) <= full
            if name.endswith(".gz") or cut < len(data):
                assert len(fr) < full or fr.warnings or cut >= len(data) - 4
            decode(fr)


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_records_larger_than_the_snap_length_are_read_with_a_warning(fmt):
    if fmt == "pcap":
        data = _pcap(snaplen=40)
    else:
        data = _pcapng(interfaces=[Interface(snaplen=40)])
    fr = read_frames(data, name=f"snap.{fmt}")
    assert len(fr) == len(sample_records())
    over = int((fr.caplen > 40).sum())
    assert over >= 1
    (w,) = [w for w in fr.warnings if "snap length" in str(w)]
    assert f"{over} record(s) captured more bytes than" in str(w) and "snap length of 40" in str(w)
    assert f"snap.{fmt}: byte " in str(w)
    decode(fr)
