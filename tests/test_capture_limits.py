"""The capture size limit: a small file that decompresses to far more than the limit (a
compression bomb) is refused once its output passes the limit, with one line naming the file,
and the memory it costs stays near the limit; the limit comes from the call, the CLI flag, the
environment or the default, in that order."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import subprocess
import sys
import tracemalloc
import zlib

import pytest

from classifier.capture import reader
from classifier.capture.reader import (DEFAULT_MAX_CAPTURE_BYTES, max_capture_bytes, parse_size, read_frames,
                                       set_max_capture_bytes)
from classifier.capture.writer import write_pcap
from classifier.errors import CaptureError, IotClassError

from test_capture_formats import sample_records

MiB = 1 << 20


def pcap_bytes() -> bytes:
    buf = io.BytesIO()
    write_pcap(buf, sample_records())
    return buf.getvalue()


def bomb(kind: str, inflated: int) -> bytes:
    """A valid pcap header followed by ``inflated`` zero bytes, compressed."""
    head = pcap_bytes()[:24]
    if kind == "gzip":
        z = zlib.compressobj(9, zlib.DEFLATED, 31)
        out = [z.compress(head)]
        block = bytes(MiB)
        for _ in range(inflated // MiB):
            out.append(z.compress(block))
        return b"".join(out) + z.flush()
    raw = head + bytes(inflated)
    return lzma.compress(raw) if kind == "xz" else bz2.compress(raw, 9)


@pytest.mark.parametrize("kind", ["gzip", "xz", "bzip2"])
def test_bomb_is_refused_once_past_the_limit_in_bounded_memory(kind):
    data = bomb(kind, 64 * MiB)
    assert len(data) < 200_000                                     # small on disk ...
    tracemalloc.start()
    try:
        with pytest.raises(CaptureError) as exc:
            read_frames(data, name=f"bomb.pcap.{kind}", max_bytes=4 * MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    msg = str(exc.value)
    assert msg.startswith(f"bomb.pcap.{kind}: {kind} data that decompresses (by compressed byte ")
    assert "more than the capture size limit of 4 MiB; raise the limit with --max-capture-size or " \
           "IOT_MAX_CAPTURE_SIZE" in msg and "\n" not in msg
    assert peak < 24 * MiB, peak          # ... and costs the limit and the decoder's state (xz: 8 MiB), not 64 MiB


def test_multi_member_gzip_counts_every_member():
    one = gzip.compress(pcap_bytes()[:24] + bytes(3 * MiB))
    with pytest.raises(CaptureError, match="more than the capture size limit of 8 MiB"):
        read_frames(one * 3, name="x.pcap.gz", max_bytes=8 * MiB)


def test_limit_is_inclusive_and_applies_to_plain_captures(tmp_path):
    data = pcap_bytes()
    n = len(data)
    assert len(read_frames(data, name="x.pcap", max_bytes=n)) == len(sample_records())
    with pytest.raises(CaptureError, match=f"x.pcap: {n} bytes, more than the capture size limit of"):
        read_frames(data, name="x.pcap", max_bytes=n - 1)
    path = tmp_path / "x.pcap"
    path.write_bytes(data)
    with pytest.raises(CaptureError, match=f"x.pcap: {n} bytes, more than the capture size limit of"):
        read_frames(str(path), max_bytes=n - 1)
    with pytest.raises(CaptureError, match="stream: holds more than the capture size limit"):
        read_frames(io.BytesIO(data), name="stream", max_bytes=n - 1)
    z = gzip.compress(data)
    assert len(read_frames(z, name="x.pcap.gz", max_bytes=n)) == len(sample_records())
    with pytest.raises(CaptureError, match="x.pcap.gz: gzip data that decompresses"):
        read_frames(z, name="x.pcap.gz", max_bytes=n - 1)


def test_where_the_limit_comes_from(monkeypatch):
    monkeypatch.delenv("IOT_MAX_CAPTURE_SIZE", raising=False)
    assert max_capture_bytes() == DEFAULT_MAX_CAPTURE_BYTES == 1 << 30
    monkeypatch.setenv("IOT_MAX_CAPTURE_SIZE", "512M")
    assert max_capture_bytes() == 512 * MiB
    previous = set_max_capture_bytes(3 * MiB)
    try:
        assert max_capture_bytes() == 3 * MiB                      # the CLI flag wins over the environment
    finally:
        set_max_capture_bytes(previous)
    monkeypatch.setenv("IOT_MAX_CAPTURE_SIZE", "lots")
    with pytest.raises(IotClassError, match="IOT_MAX_CAPTURE_SIZE: 'lots' is not a size"):
        max_capture_bytes()
    assert [parse_size(t) for t in ("1000", "64k", "1.5G", "2GiB", "3mb")] == [1000, 64 << 10, 3 << 29, 2 << 30, 3 * MiB]
    for bad in ("", "0", "-5M", "1X", "M"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_cli_one_line_with_flag_or_environment(tmp_path):
    path = tmp_path / "bomb.pcap.gz"
    path.write_bytes(bomb("gzip", 32 * MiB))
    env = {k: v for k, v in os.environ.items() if k != "IOT_MAX_CAPTURE_SIZE"}
    for args, extra_env in ((["inspect", str(path), "--max-capture-size", "2M"], {}),
                            (["--max-capture-size", "2M", "inspect", str(path)], {}),
                            (["inspect", str(path)], {"IOT_MAX_CAPTURE_SIZE": "2M"})):
        proc = subprocess.run([sys.executable, "-m", "classifier.cli", *args], capture_output=True, text=True,
                              env={**env, **extra_env}, timeout=120)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"iotclass: error: {path}: gzip data that decompresses")
        assert "limit of 2 MiB" in lines[0]
    assert reader._max_bytes_override is None


def test_cli_turns_any_unexpected_exception_into_one_line(monkeypatch, capsys, tmp_path):
    from classifier import cli

    def broken(args):
        raise RuntimeError("something\nunforeseen")

    monkeypatch.setattr(cli, "cmd_inspect", broken)
    assert cli.main(["inspect", str(tmp_path / "x.pcap")]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == ["iotclass: error: RuntimeError: something unforeseen (--debug shows the traceback)"]
    with pytest.raises(RuntimeError):
        cli.main(["--debug", "inspect", str(tmp_path / "x.pcap")])
