"""Parsing benchmark: this project vs dpkt vs scapy doing the same extraction, same run.

Every parser reads the same *uncompressed* captures (compressed inputs are decompressed to
a temporary folder first, outside the timing) and extracts the same fields into columns:
timestamp, wire length, source/destination MAC, ethertype, IP source/destination, IP
protocol, ports and TCP flags. Each measurement is the best of ``repeat`` runs.

* dpkt's readers do not expose a record's original length; its extraction uses the
  captured length instead (slightly less work than the others do).
* scapy parses a sample: about ``scapy_sample`` packets in all, the first
  ``scapy_sample // files`` (at least 20) of each file; its rate is measured on that sample
  and its whole-set time extrapolated from it.

* nfstream (``--nfstream``, when installed: it is no dependency of the project) builds its
  bidirectional flows with their statistics (``statistical_analysis=True``) on one meter
  process, that is one core like the project; its rate counts every packet of the files, as
  the project's does.

The project's own two figures (parse, parse + features) come from
:mod:`classifier.features.throughput`, the code behind ``iotclass bench``.

``python -m benchmarks.parsing [PCAP|FOLDER...]`` runs it (default: every capture under
../shared/datasets, the README's figures); ``--generated-day`` adds a generated day of one home
(testing/synth.py's network, 86,400 s, about 2.06 M packets, each kept to 128 bytes as the
controller's mirror keeps them), the input of issue 21's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


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


def _nfstream(paths: list[str]) -> int:
    """Every file through nfstream with its statistics on, one meter (one core); returns the
    packets its flows hold."""
    from nfstream import NFStreamer
    n = 0
    for p in paths:
        for flow in NFStreamer(source=p, statistical_analysis=True, n_meters=1):
            n += flow.bidirectional_packets
    return n


def write_day_capture(path: str, seconds: float = 86_400.0, snaplen: int = 128, seed: int = 1) -> int:
    """A generated day of one home (testing/synth.py's network), each packet kept to
    ``snaplen`` bytes with its wire length; returns the packets."""
    from classifier.capture.writer import Record, write_pcap
    from testing.synth import default_network, network_records
    recs = network_records(default_network(), seconds, seed=seed)
    with open(path, "wb") as fh:
        return write_pcap(fh, (Record(r.ts_ns, r.data[:snaplen], r.wire_len or len(r.data)) for r in recs),
                          snaplen=snaplen)


def run_bench(paths: list[str], scapy_sample: int = 20000, repeat: int = 3, nfstream: bool = False,
              others: bool = True, profile: bool = False) -> dict:
    """Measure all parsers on the same files; returns the figures as a dict (the project's
    own from :func:`classifier.features.throughput.measure_files`, as ``iotclass bench``).
    ``others``: dpkt and scapy too; ``nfstream``: nfstream too."""
    from classifier.features.throughput import best_of, measure_files, profile_files, uncompressed_copies
    paths = [str(p) for p in paths]
    tmp = tempfile.mkdtemp(prefix="iotclass-bench-")
    result: dict = {}
    try:
        files = uncompressed_copies(paths, tmp)
        result = measure_files(files, repeat)
        if profile:
            result["profile"] = profile_files(files, repeat)
        if nfstream:
            n_nf, t_nf = best_of(lambda: _nfstream(files), 1 if repeat < 3 else 2)
            result.update({"nfstream_pps": result["packets"] / t_nf, "nfstream_flow_packets": n_nf})
            result["features_vs_nfstream"] = result["project_features_pps"] / result["nfstream_pps"]
        if not others:
            return result
        n_dpkt, t_dpkt = best_of(lambda: _dpkt(files), 1 if repeat < 2 else 2)
        n_scapy, t_scapy = _scapy(files, scapy_sample)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = result["packets"]
    scapy_pps = n_scapy / t_scapy if t_scapy > 0 else 0.0
    result.update({
        "dpkt_pps": n_dpkt / t_dpkt,
        "scapy_pps": scapy_pps,
        "scapy_sampled_packets": n_scapy,
        "scapy_extrapolated_seconds": n / scapy_pps if scapy_pps else None,
    })
    result["project_vs_dpkt"] = result["project_pps"] / result["dpkt_pps"]
    result["project_vs_scapy"] = result["project_pps"] / scapy_pps if scapy_pps else None
    return result


def format_bench(r: dict) -> str:
    from classifier.features.throughput import format_throughput
    lines = [format_throughput(r)]
    if "nfstream_pps" in r:
        lines.append(f"nfstream, statistics on      {r['nfstream_pps']:>12,.0f} packets/s   project parse + features / "
                     f"nfstream = {r['features_vs_nfstream']:.1f}x  (one meter process: one core)")
    if "dpkt_pps" not in r:
        return "\n".join(lines)
    lines += [
        f"dpkt                      {r['dpkt_pps']:>12,.0f} packets/s   project/dpkt  = {r['project_vs_dpkt']:.1f}x",
        f"scapy                     {r['scapy_pps']:>12,.0f} packets/s   project/scapy = "
        f"{r['project_vs_scapy']:.0f}x  (measured on {r['scapy_sampled_packets']} packets, extrapolated)",
    ]
    return "\n".join(lines)


def shared_captures(root: str | None = None) -> list[str]:
    from classifier.capture.labels import is_capture_file
    from classifier.shared import datasets_root
    root = root or datasets_root()
    if root is None:
        return []
    return sorted(str(p) for p in Path(root).rglob("*") if p.is_file() and is_capture_file(p.name))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.parsing",
                                 description="parsing speed: this project vs dpkt vs scapy on the same files")
    ap.add_argument("target", nargs="*", metavar="PCAP|FOLDER",
                    help="capture files, or folders searched for them (default: ../shared/datasets)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--scapy-sample", type=int, default=20000, metavar="N",
                    help="scapy parses about N packets spread over the files; its rate is extrapolated")
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs for each parser")
    ap.add_argument("--nfstream", action="store_true", help="nfstream too, statistics on (when installed)")
    ap.add_argument("--generated-day", action="store_true",
                    help="a generated day of one home (about 2.06 M packets) instead of the shared captures")
    ap.add_argument("--no-others", action="store_true", help="leave dpkt and scapy out")
    ap.add_argument("--profile", action="store_true", help="also where the project's time goes, stage by stage")
    args = ap.parse_args(argv)
    if args.nfstream:
        try:
            import nfstream  # noqa: F401
        except ImportError:
            print("bench: --nfstream: nfstream is not installed (pip install nfstream==6.6.0)", file=sys.stderr)
            return 1
    files: list[str] = []
    day_dir = None
    if args.generated_day:
        day_dir = tempfile.mkdtemp(prefix="iotclass-day-")
        files.append(os.path.join(day_dir, "day.pcap"))
        write_day_capture(files[0])
    for t in args.target or ([] if args.generated_day else [None]):
        files += [t] if t is not None and os.path.isfile(t) else shared_captures(t)
    if not files:
        print("bench: no captures found (expected ../shared/datasets)", file=sys.stderr)
        return 1
    try:
        result = run_bench(files, scapy_sample=args.scapy_sample, repeat=args.repeat, nfstream=args.nfstream,
                           others=not args.no_others, profile=args.profile)
    finally:
        if day_dir is not None:
            shutil.rmtree(day_dir, ignore_errors=True)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print(format_bench(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
