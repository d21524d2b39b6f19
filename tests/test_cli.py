"""The iotclass command line: inspect, features, bench; the installed command adds the controller's."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from classifier.cli import main
from classifier.features.segments import PAPER_FEATURES


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "classifier.cli", *map(str, args)], capture_output=True, text=True)


def test_inspect_json(synth_capture, capsys):
    path, devices, net = synth_capture
    assert main(["inspect", str(path), "--json", "--devices", str(devices)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {d.mac for d in net.devices} == {r["mac"] for r in rows}
    for r in rows:
        assert set(r) >= {"mac", "packets", "bytes", "first_seen", "last_seen", "sessions"}
        assert r["packets"] > 0 and r["sessions"] > 0 and r["category"]


def test_inspect_table_lists_every_device(synth_capture):
    path, _, net = synth_capture
    proc = run("inspect", path, "--gateway", net.gateway_mac)
    assert proc.returncode == 0
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split()[:6] == ["mac", "packets", "bytes", "first_seen", "last_seen", "sessions"]
    assert len(lines) == 1 + len(net.devices)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_features_segments(synth_capture, tmp_path, suffix):
    path, devices, net = synth_capture
    out = tmp_path / f"seg.{suffix}"
    assert main(["features", "segments", str(path), "--interval", "120", "--devices", str(devices),
                 "--out", str(out)]) == 0
    frame = pd.read_csv(out) if suffix == "csv" else pd.read_parquet(out)
    assert {"capture", "mac", "segment", "start", "n_total", "len_user_kurt", "category"} <= set(frame.columns)
    assert set(frame.category) == {d.category for d in net.devices}
    assert frame.groupby("mac").segment.max().min() >= 29  # an hour in 2-minute segments


def test_features_paper_set_and_sessions(synth_capture, tmp_path):
    path, devices, _ = synth_capture
    out = tmp_path / "paper.csv"
    assert main(["features", "segments", str(path), "--set", "paper", "--out", str(out)]) == 0
    cols = list(pd.read_csv(out).columns)
    assert cols[-6:] == PAPER_FEATURES
    out = tmp_path / "sessions.csv"
    assert main(["features", "sessions", str(path), "--devices", str(devices), "--labelled-only",
                 "--out", str(out)]) == 0
    s = pd.read_csv(out)
    assert {"start", "interval", "remote_ip", "remote_port", "ip_proto", "packets_out", "bytes_in",
            "duration", "pool"} <= set(s.columns)
    assert (s.groupby("mac").start.apply(lambda x: x.is_monotonic_increasing)).all()


def test_features_rejects_bad_output_and_interval(synth_capture, tmp_path):
    path, _, _ = synth_capture
    proc = run("features", "segments", path, "--out", tmp_path / "x.xlsx")
    assert proc.returncode == 1 and "unsupported format" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("features", "segments", path, "--interval", "0", "--out", tmp_path / "x.csv")
    assert proc.returncode == 1 and "--interval must be positive" in proc.stderr


def test_bench_json(synth_capture, capsys):
    path, _, _ = synth_capture
    assert main(["bench", str(path), "--json", "--repeat", "1"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert {"packets", "project_pps", "project_features_pps"} <= set(r)
    assert r["packets"] > 1000 and r["project_pps"] > 0 and r["project_features_pps"] > 0


def test_bench_profile_says_where_the_time_goes(synth_capture, capsys):
    path, _, _ = synth_capture
    assert main(["bench", str(path), "--profile", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    for stage in ("read", "decode", "identity", "split", "segments", "sessions", "total"):
        assert f"\n  {stage} " in out, stage
    assert main(["bench", str(path), "--profile", "--json", "--repeat", "1"]) == 0
    r = json.loads(capsys.readouterr().out)["profile"]
    assert r["packets"] > 1000 and set(r["seconds"]) == {"read", "decode", "identity", "split", "segments",
                                                         "sessions"}


def test_parsing_benchmark_compares_with_dpkt_and_scapy(synth_capture, capsys):
    """The comparison with other parsers stays in the source tree (benchmarks/, not installed)."""
    from benchmarks.parsing import main as parsing_benchmark
    path, _, _ = synth_capture
    assert parsing_benchmark([str(path), "--json", "--scapy-sample", "200", "--repeat", "1"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert {"packets", "project_pps", "dpkt_pps", "scapy_pps"} <= set(r)
    assert r["packets"] > 1000 and r["project_pps"] > 0 and r["dpkt_pps"] > 0 and r["scapy_pps"] > 0


def test_parsing_benchmark_with_nfstream(synth_capture, capsys):
    """nfstream side by side (when installed: no dependency of the project)."""
    pytest.importorskip("nfstream")
    from benchmarks.parsing import main as parsing_benchmark
    path, _, _ = synth_capture
    assert parsing_benchmark([str(path), "--json", "--nfstream", "--no-others", "--repeat", "1"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["nfstream_pps"] > 0 and r["nfstream_flow_packets"] > 1000 and "dpkt_pps" not in r


def test_installed_command_adds_the_controller_commands():
    """``iotclass`` (controller_app.cli) is the classifier's parser plus policy and devices;
    the classifier's own parser has no controller command."""
    from classifier.cli import build_parser
    from controller_app.cli import build_parser as installed_parser
    with pytest.raises(SystemExit):
        build_parser().parse_args(["devices"])
    args = installed_parser().parse_args(["devices", "--db", "x.sqlite"])
    assert args.db == "x.sqlite" and args.func.__module__ == "controller_app.inventory"
    assert installed_parser().parse_args(["inspect", "x.pcap"]).func.__module__ == "classifier.cli"


def test_a_folder_stands_for_its_captures(synth_capture, tmp_path, capsys):
    """A folder argument is the capture files under it (compressed ones and sub-folders too);
    inspect on the folder lists the same devices as on the file; a folder with none is refused
    with its name."""
    import gzip
    import shutil
    path, _, net = synth_capture
    folder = tmp_path / "site"
    (folder / "day2").mkdir(parents=True)
    shutil.copy(path, folder / "a.pcap")
    with open(path, "rb") as src, gzip.open(folder / "day2" / "b.pcap.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    with open(path, "rb") as src, gzip.open(folder / "day2" / "c_idle.gz", "wb") as dst:   # named without pcap
        shutil.copyfileobj(src, dst)
    (folder / "notes.txt").write_text("not a capture")
    with gzip.open(folder / "notes.gz", "wb") as dst:
        dst.write(b"not a capture either")
    from classifier.capture.reader import capture_paths
    assert capture_paths([folder]) == [str(folder / "a.pcap"), str(folder / "day2" / "b.pcap.gz"),
                                       str(folder / "day2" / "c_idle.gz")]
    assert main(["inspect", str(folder), "--json", "--gateway", net.gateway_mac]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {d.mac for d in net.devices} == {r["mac"] for r in rows}
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run("identity", empty)
    assert proc.returncode != 0 and f"{empty}: a folder with no capture files" in proc.stderr
