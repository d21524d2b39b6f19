"""How fast the project turns captures into features: ``iotclass bench``.

Two figures, each the best of ``repeat`` runs over the same files: the parse alone (records ->
packet columns) and the parse with the features every tool computes next (per-device split,
segment features at T = 300 s, sessions). Compressed captures are decompressed to a temporary
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
    returns the packets."""
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
        view = split_devices(pk)
        segment_features(pk, view)
        session_table(pk, view)
        n += len(pk)
    return n


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
    """The two figures on files already uncompressed."""
    parse(files[:1])  # load the compiled kernels before timing
    n, t_parse = best_of(lambda: parse(files), repeat)
    _, t_feat = best_of(lambda: parse_and_features(files), repeat)
    result = {"files": len(files), "packets": n,
              "project_pps": n / t_parse if t_parse > 0 else 0.0,
              "project_features_pps": n / t_feat if t_feat > 0 else 0.0}
    result["features_vs_parse"] = (result["project_features_pps"] / result["project_pps"]
                                   if result["project_pps"] else 0.0)
    return result


def measure(paths: list[str], repeat: int = 3) -> dict:
    """The two figures on ``paths`` (decompressed first where compressed)."""
    from classifier.capture.reader import capture_paths
    paths = capture_paths(paths)
    tmp = tempfile.mkdtemp(prefix="iotclass-bench-")
    try:
        return measure_files(uncompressed_copies(paths, tmp), repeat)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def format_throughput(r: dict) -> str:
    return "\n".join([
        f"files                     {r['files']}",
        f"packets                   {r['packets']}",
        f"project parse             {r['project_pps']:>12,.0f} packets/s",
        f"project parse + features  {r['project_features_pps']:>12,.0f} packets/s "
        f"({r['features_vs_parse']:.2f} of parse alone; segments T=300 s + sessions)",
    ])
