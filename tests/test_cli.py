"""The iotclass command line: inspect, features, bench."""

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


def test_bench_json(synth_capture):
    path, _, _ = synth_capture
    proc = run("bench", path, "--json", "--scapy-sample", "200", "--repeat", "1")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert {"packets", "project_pps", "dpkt_pps", "scapy_pps"} <= set(r)
    assert r["packets"] > 1000 and r["project_pps"] > 0 and r["dpkt_pps"] > 0 and r["scapy_pps"] > 0
