"""Parsing benchmark: this project vs dpkt vs scapy doing the same extraction, same run.

Every parser reads the same *uncompressed* captures (compressed inputs are decompressed to
a temporary folder first, outside the timing) and extracts the same fields into columns:
timestamp, wire length, source/destination MAC, ethertype, IP source/destination, IP
protocol, ports and TCP flags. Each measurement is the best of ``repeat`` runs.

The project's rows add, on the same files: the parse plus the identity evidence
(:mod:`classifier.features.identity`), and the whole offline pipeline per capture (parse,
identity evidence, device split, segment features, sessions).

* dpkt's readers do not expose a record's original length; its extraction uses the
  captured length instead (slightly less work than the others do).
* scapy parses a sample: about ``scapy_sample`` packets in all, the first
  ``scapy_sample // files`` (at least 20) of each file; its rate is measured on that sample
  and its whole-set time extrapolated from it.

``python -m benchmarks.parsing`` runs it on ../shared/datasets (the README's figures).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _uncompressed_copies(paths: list[str], folder: str) -> list[str]:
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


def _project(paths: list[str]) -> int:
    from classifier.capture.reader import read_frames
    from classifier.capture.decode import decode
    n = 0
    for p in paths:
        n += len(decode(read_frames(p)))
    return n


def _project_identity(paths: list[str]) -> int:
    from classifier.capture.reader import read_frames
    from classifier.capture.decode import decode
    from classifier.features.identity import extract
    n = 0
    for p in paths:
        fr = read_frames(p)
        pk = decode(fr)
        extract(fr.buf, fr.offset, fr.caplen, fr.wirelen, pk, warnings=[])
        n += len(pk)
    return n


def _project_features(paths: list[str]) -> int:
    """What the offline pipeline does per capture: decode, identity evidence, device split,
    segment features and sessions."""
    from classifier.capture.reader import read_frames
    from classifier.capture.decode import decode
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


def _guarded(reader):
    """dpkt's readers raise on a truncated last record; stop there like the others do."""
    it = iter(reader)
    while True:
        try:
            yield next(it)
        except StopIteration:
            return
        except Exception:  # noqa: BLE001 - dpkt raises assorted errors on a cut-short record
            return


def _dpkt(paths: list[str]) -> int:
    import dpkt
    n = 0
    for p in paths:
        cols: dict[str, list] = {k: [] for k in ("ts", "len", "src", "dst", "type", "ipsrc", "ipdst", "proto",
                                                  "sport", "dport", "flags")}
        with open(p, "rb") as fh:
            ng = fh.read(4) == b"\n\r\r\n"
            fh.seek(0)
            reader = dpkt.pcapng.Reader(fh) if ng else dpkt.pcap.Reader(fh)
            for ts, buf in _guarded(reader):
                cols["ts"].append(ts)
                cols["len"].append(len(buf))
                try:
                    eth = dpkt.ethernet.Ethernet(buf)
                except (dpkt.UnpackError, IndexError):
                    continue
                cols["src"].append(eth.src)
                cols["dst"].append(eth.dst)
                cols["type"].append(eth.type)
                ip = eth.data
                if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
                    cols["ipsrc"].append(ip.src)
                    cols["ipdst"].append(ip.dst)
                    cols["proto"].append(ip.p if isinstance(ip, dpkt.ip.IP) else ip.nxt)
                    l4 = ip.data
                    if isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
                        cols["sport"].append(l4.sport)
                        cols["dport"].append(l4.dport)
                        if isinstance(l4, dpkt.tcp.TCP):
                            cols["flags"].append(l4.flags)
        np.asarray(cols["ts"])
        n += len(cols["ts"])
    return n


def _scapy(paths: list[str], budget: int) -> tuple[int, float]:
    """Parse about ``budget`` packets spread over the files; returns (packets parsed, seconds)."""
    sample = max(20, budget // max(1, len(paths)))
    import logging
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from scapy.utils import PcapReader
    n = 0
    elapsed = 0.0
    for p in paths:
        cols: dict[str, list] = {k: [] for k in ("ts", "len", "src", "dst", "type", "ipsrc", "ipdst", "proto",
                                                  "sport", "dport", "flags")}
        t0 = time.perf_counter()
        with PcapReader(p) as reader:
            for i, pkt in enumerate(reader):
                if i >= sample:
                    break
                cols["ts"].append(float(pkt.time))
                cols["len"].append(pkt.wirelen or len(pkt))
                if Ether in pkt:
                    e = pkt[Ether]
                    cols["src"].append(e.src)
                    cols["dst"].append(e.dst)
                    cols["type"].append(e.type)
                ip = pkt[IP] if IP in pkt else (pkt[IPv6] if IPv6 in pkt else None)
                if ip is not None:
                    cols["ipsrc"].append(ip.src)
                    cols["ipdst"].append(ip.dst)
                    cols["proto"].append(ip.proto if IP in pkt else ip.nh)
                    l4 = pkt[TCP] if TCP in pkt else (pkt[UDP] if UDP in pkt else None)
                    if l4 is not None:
                        cols["sport"].append(l4.sport)
                        cols["dport"].append(l4.dport)
                        if TCP in pkt:
                            cols["flags"].append(int(l4.flags))
                n += 1
        elapsed += time.perf_counter() - t0
    return n, elapsed


def _best(fn, repeat: int) -> tuple[int, float]:
    best = float("inf")
    n = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = fn()
        best = min(best, time.perf_counter() - t0)
    return n, best


def run_bench(paths: list[str], scapy_sample: int = 20000, repeat: int = 3) -> dict:
    """Measure all parsers on the same files; returns the figures as a dict."""
    paths = [str(p) for p in paths]
    tmp = tempfile.mkdtemp(prefix="iotclass-bench-")
    try:
        files = _uncompressed_copies(paths, tmp)
        _project(files[:1])  # load the compiled kernels before timing
        n, t_proj = _best(lambda: _project(files), repeat)
        _, t_ident = _best(lambda: _project_identity(files), repeat)
        _, t_feat = _best(lambda: _project_features(files), repeat)
        n_dpkt, t_dpkt = _best(lambda: _dpkt(files), 1 if repeat < 2 else 2)
        n_scapy, t_scapy = _scapy(files, scapy_sample)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    scapy_pps = n_scapy / t_scapy if t_scapy > 0 else 0.0
    result = {
        "files": len(paths),
        "packets": n,
        "project_pps": n / t_proj,
        "project_identity_pps": n / t_ident,
        "project_features_pps": n / t_feat,
        "dpkt_pps": n_dpkt / t_dpkt,
        "scapy_pps": scapy_pps,
        "scapy_sampled_packets": n_scapy,
        "scapy_extrapolated_seconds": n / scapy_pps if scapy_pps else None,
    }
    result["project_vs_dpkt"] = result["project_pps"] / result["dpkt_pps"]
    result["project_vs_scapy"] = result["project_pps"] / scapy_pps if scapy_pps else None
    result["features_vs_parse"] = result["project_features_pps"] / result["project_pps"]
    return result


def format_bench(r: dict) -> str:
    lines = [
        f"files                     {r['files']}",
        f"packets                   {r['packets']}",
        f"project parse             {r['project_pps']:>12,.0f} packets/s",
        f"project parse + identity  {r['project_identity_pps']:>12,.0f} packets/s",
        f"project parse + features  {r['project_features_pps']:>12,.0f} packets/s "
        f"({r['features_vs_parse']:.2f} of parse alone; identity evidence + segments T=300 s + sessions)",
        f"dpkt                      {r['dpkt_pps']:>12,.0f} packets/s   project/dpkt  = {r['project_vs_dpkt']:.1f}x",
        f"scapy                     {r['scapy_pps']:>12,.0f} packets/s   project/scapy = "
        f"{r['project_vs_scapy']:.0f}x  (measured on {r['scapy_sampled_packets']} packets, extrapolated)",
    ]
    return "\n".join(lines)


def shared_captures(root: str | None = None) -> list[str]:
    from classifier.evaluation.labels import is_capture_file
    from classifier.shared import datasets_root
    root = root or datasets_root()
    if root is None:
        return []
    return sorted(str(p) for p in Path(root).rglob("*") if p.is_file() and is_capture_file(p.name))


def main() -> int:
    files = shared_captures(sys.argv[1] if len(sys.argv) > 1 else None)
    if not files:
        print("bench: no captures found (expected ../shared/datasets)", file=sys.stderr)
        return 1
    print(format_bench(run_bench(files)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
