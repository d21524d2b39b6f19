"""How fast the project turns captures into features: ``iotclass bench``.

Two figures, each the best of ``repeat`` runs over the same files: the parse alone (records ->
packet columns) and the parse with the features every tool computes next (identity records,
per-device split, segment features at T = 300 s, sessions); ``--profile`` adds each stage's
time. Compressed captures are decompressed to a temporary
folder first, outside the timing, so that the figures measure the project's code, not zlib.

The comparison with other parsers (dpkt, scapy) doing the same extraction lives beside the
other benchmarks, in the source tree: ``python -m benchmarks.parsing``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path


def uncompressed_copies(paths: list[str], folder: str) -> list[str]:
    """``paths``, with every compressed capture replaced by its decompressed copy in ``folder``."""
    from classifier.capture.reader import _decompress
    out = []
    for i, p in enumerate(paths):
        with open(p, "rb") as fh:
            raw = fh.read()
        data, kind = _decompress(raw, p, [])
        if not kind:
            out.append(p)
            continue
        target = os.path.join(folder, f"{i:05d}-{Path(p).name.rsplit('.', 1)[0]}")
        with open(target, "wb") as fh:
            fh.write(data)
        out.append(target)
    return out


def parse(paths: list[str]) -> int:
    """Decode every file into packet columns; returns the packets."""
    from classifier.capture.decode import decode
    from classifier.capture.reader import read_frames
    return sum(len(decode(read_frames(p))) for p in paths)


def parse_and_features(paths: list[str]) -> int:
    """Decode, identity evidence, split by device, segment features (T = 300 s) and sessions;
    returns the packets. Like :func:`parse`, it lets each capture go before it reads the next
    (a streaming consumer's pattern: one capture's tables in memory at a time, their memory
    reused by the next)."""
    from classifier.capture.decode import decode
    from classifier.capture.reader import read_frames
    from classifier.features.devices import split_devices
    from classifier.features.identity import extract
    from classifier.features.segments import segment_features
    from classifier.features.sessions import session_table
    n = 0
    for p in paths:
        fr = read_frames(p)
        pk = decode(fr)
        extract(fr.buf, fr.offset, fr.caplen, fr.wirelen, pk, warnings=[])
        del fr                  # the frames go once read, as in load_capture
        view = split_devices(pk)
        segment_features(pk, view)
        session_table(pk, view)
        n += len(pk)
        del pk, view            # each capture goes before the next is read, as in the parse-only run
    return n


#: The stages of parse + features, in order, as :func:`profile_files` times them.
STAGES = ("read", "decode", "identity", "split", "segments", "sessions")


def profile_files(files: list[str], repeat: int = 3) -> dict:
    """Where the time of parse + features goes: each stage's shortest total over ``repeat``
    runs of the whole pipeline on ``files`` (read: framing, and copying a file larger than the
    spool into its mapped temporary file; decode: the header decoder; identity: identity
    records; split: devices; segments: segment features at T = 300 s; sessions)."""
    from classifier.capture.decode import decode
    from classifier.capture.reader import read_frames
    from classifier.features.devices import split_devices
    from classifier.features.identity import extract
    from classifier.features.segments import segment_features
    from classifier.features.sessions import session_table
    parse(files[:1])
    best = {k: float("inf") for k in STAGES}
    n = 0
    for _ in range(max(1, repeat)):
        took = dict.fromkeys(STAGES, 0.0)
        n = 0
        for p in files:
            t0 = time.perf_counter()
            fr = read_frames(p)
            t1 = time.perf_counter()
            pk = decode(fr)
            t2 = time.perf_counter()
            extract(fr.buf, fr.offset, fr.caplen, fr.wirelen, pk, warnings=[])
            del fr
            t3 = time.perf_counter()
            view = split_devices(pk)
            t4 = time.perf_counter()
            segment_features(pk, view)
            t5 = time.perf_counter()
            session_table(pk, view)
            t6 = time.perf_counter()
            for k, a, b in zip(STAGES, (t0, t1, t2, t3, t4, t5), (t1, t2, t3, t4, t5, t6)):
                took[k] += b - a
            n += len(pk)
            del pk, view
        for k in STAGES:
            best[k] = min(best[k], took[k])
    return {"files": len(files), "packets": n, "seconds": best}


def format_profile(r: dict) -> str:
    total = sum(r["seconds"].values())
    n = max(r["packets"], 1)
    lines = [f"where the time of parse + features goes ({r['packets']} packets, {r['files']} files; "
             "each stage's best of the runs)",
             f"  {'stage':10s} {'seconds':>9s} {'ns/packet':>10s} {'share':>6s}"]
    for k, v in r["seconds"].items():
        lines.append(f"  {k:10s} {v:9.3f} {v / n * 1e9:10.1f} {v / total if total else 0:6.1%}")
    parse_s = r["seconds"]["read"] + r["seconds"]["decode"]
    lines.append(f"  {'total':10s} {total:9.3f} {total / n * 1e9:10.1f}   (parse {parse_s:.3f} s, features "
                 f"{total - parse_s:.3f} s: {parse_s / total if total else 0:.2f} of the parse rate)")
    return "\n".join(lines)


def best_of(fn, repeat: int) -> tuple[int, float]:
    """(what ``fn`` returns, its shortest time in seconds over ``repeat`` runs)."""
    best = float("inf")
    n = 0
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        n = fn()
        best = min(best, time.perf_counter() - t0)
    return n, best


def measure_files(files: list[str], repeat: int = 3) -> dict:
    """The two figures on files already uncompressed: each the best of ``repeat`` runs, the runs
    of the two interleaved (parse, parse + features, parse, ...) so that a burst of other work
    on a shared machine weighs on both alike rather than on the ratio."""
    parse(files[:1])  # load the compiled kernels before timing
    parse_and_features(files[:1])
    t_parse = t_feat = float("inf")
    n = 0
    for _ in range(max(1, repeat)):
        n, t = best_of(lambda: parse(files), 1)
        t_parse = min(t_parse, t)
        _, t = best_of(lambda: parse_and_features(files), 1)
        t_feat = min(t_feat, t)
    result = {"files": len(files), "packets": n,
              "project_pps": n / t_parse if t_parse > 0 else 0.0,
              "project_features_pps": n / t_feat if t_feat > 0 else 0.0}
    result["features_vs_parse"] = (result["project_features_pps"] / result["project_pps"]
                                   if result["project_pps"] else 0.0)
    return result


def measure(paths: list[str], repeat: int = 3, profile: bool = False) -> dict:
    """The two figures on ``paths`` (decompressed first where compressed); with ``profile``,
    also each stage's time (``result["profile"]``, :func:`profile_files`)."""
    from classifier.capture.reader import capture_paths
    paths = capture_paths(paths)
    tmp = tempfile.mkdtemp(prefix="iotclass-bench-")
    try:
        files = uncompressed_copies(paths, tmp)
        result = measure_files(files, repeat)
        if profile:
            result["profile"] = profile_files(files, repeat)
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def format_throughput(r: dict) -> str:
    lines = [
        f"files                     {r['files']}",
        f"packets                   {r['packets']}",
        f"project parse             {r['project_pps']:>12,.0f} packets/s",
        f"project parse + features  {r['project_features_pps']:>12,.0f} packets/s "
        f"({r['features_vs_parse']:.2f} of parse alone; identity records, segments T=300 s, sessions)",
    ]
    if "profile" in r:
        lines.append(format_profile(r["profile"]))
    return "\n".join(lines)
