"""--workers and --scheduler: the same output as one process, in the same order, with the same
warnings; a worker's error is the command's one-line error. The Dask test starts a local
scheduler with two worker processes."""

from __future__ import annotations

import json

import pytest

from classifier.cli import main


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Four generated captures of one network (and a devices.csv), one of them cut short."""
    from classifier.capture.writer import write_pcap
    from testing.synth import default_network, network_records, write_devices_csv
    root = tmp_path_factory.mktemp("many")
    net = default_network(identity=True)
    for k in range(4):
        with open(root / f"part-{k}.pcap", "wb") as fh:
            write_pcap(fh, network_records(net, 900.0, start_ns=1_700_000_000 * 10**9 + k * 900 * 10**9, seed=20 + k))
    data = (root / "part-3.pcap").read_bytes()
    (root / "part-3.pcap").write_bytes(data[:-40])         # a truncated last record: a warning
    write_devices_csv(str(root / "devices.csv"), net)
    return root


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if not line.startswith("wrote ")]


def _run(capsys, argv):
    assert main(argv) == 0
    return capsys.readouterr()


@pytest.mark.parametrize("kind", ["segments", "sessions", "ccit"])
def test_features_with_workers_equal_one_process(folder, tmp_path, capsys, kind):
    one = _run(capsys, ["features", kind, str(folder), "--devices", str(folder), "--workers", "1",
                        "--out", str(tmp_path / "one.csv")])
    two = _run(capsys, ["features", kind, str(folder), "--devices", str(folder), "--workers", "2",
                        "--out", str(tmp_path / "two.csv")])
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "two.csv").read_bytes()
    assert _warnings(one.err) == _warnings(two.err) and "truncated" in one.err
    _run(capsys, ["features", kind, str(folder), "--workers", "2", "--out", str(tmp_path / "two.parquet")])
    _run(capsys, ["features", kind, str(folder), "--workers", "1", "--out", str(tmp_path / "one.parquet")])
    import pandas as pd
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "two.parquet"))


def test_identity_with_workers_equals_one_process(folder, capsys):
    one = _run(capsys, ["identity", str(folder), "--devices", str(folder), "--json", "--workers", "1"])
    two = _run(capsys, ["identity", str(folder), "--devices", str(folder), "--json", "--workers", "2"])
    assert one.out == two.out and json.loads(one.out)


def test_a_workers_error_is_the_commands_error(tmp_path, capsys):
    (tmp_path / "a.pcap").write_bytes(b"not a capture at all")
    assert main(["features", "segments", str(tmp_path / "a.pcap"), "--workers", "2", "--out",
                 str(tmp_path / "x.csv")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("iotclass: error:") and "a.pcap" in err and "not a capture" in err
    assert main(["features", "segments", str(tmp_path / "a.pcap"), "--workers", "0", "--out",
                 str(tmp_path / "x.csv")]) == 1
    assert "--workers must be at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_features_on_a_dask_cluster_equal_local(folder, tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://")
        for kind in ("segments", "sessions"):
            local = _run(capsys, ["features", kind, str(folder), "--devices", str(folder), "--workers", "1",
                                  "--out", str(tmp_path / f"{kind}-local.csv")])
            remote = _run(capsys, ["features", kind, str(folder), "--devices", str(folder), "--scheduler", address,
                                   "--out", str(tmp_path / f"{kind}-dask.csv")])
            assert (tmp_path / f"{kind}-local.csv").read_bytes() == (tmp_path / f"{kind}-dask.csv").read_bytes()
            assert _warnings(local.err) == _warnings(remote.err)
        with distributed.Client(address) as client:
            assert len(client.scheduler_info()["workers"]) == 2
    assert main(["features", "segments", str(folder), "--scheduler", "tcp://127.0.0.1:9", "--out",
                 str(tmp_path / "x.csv")]) == 1
    assert "cannot connect" in capsys.readouterr().err
