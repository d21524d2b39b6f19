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
def test_features_on_a_dask_cluster_equal_local(folder, synth_dataset, tmp_path, capsys):
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
        # the runs of a protocol: the data selection scattered to the workers once
        base = ["evaluate", "known", "--data", "all", "--datasets", str(synth_dataset[0]), "--models", "rf,nba",
                "--folds", "2", "--epochs", "2", "--interval", "60", "--window", "4", "--sessions", "8"]
        _run(capsys, base + ["--workers", "1", "--out", str(tmp_path / "ev-local")])
        _run(capsys, base + ["--scheduler", address, "--out", str(tmp_path / "ev-dask")])
        local, remote = (json.loads((tmp_path / d / "known-all.json").read_text()) for d in ("ev-local", "ev-dask"))
        assert len(local["runs"]) == 4 and _without_seconds(local) == _without_seconds(remote)
        with distributed.Client(address) as client:
            assert len(client.scheduler_info()["workers"]) == 2
    assert main(["features", "segments", str(folder), "--scheduler", "tcp://127.0.0.1:9", "--out",
                 str(tmp_path / "x.csv")]) == 1
    assert "cannot connect" in capsys.readouterr().err


def test_classify_with_workers_equals_one_process(folder, capsys):
    for extra in ([], ["--per-file"]):
        one = _run(capsys, ["classify", str(folder), "--devices", str(folder), "--json", "--workers", "1", *extra])
        two = _run(capsys, ["classify", str(folder), "--devices", str(folder), "--json", "--workers", "2", *extra])
        assert one.out == two.out and json.loads(one.out)
        assert _warnings(one.err) == _warnings(two.err) and "truncated" in one.err
    again = _run(capsys, ["classify", str(folder), "--devices", str(folder), "--json", "--workers", "1"])
    assert "truncated" in again.err          # each command shows its warnings, whatever came before


def _without_seconds(x):
    """A result with its wall-clock times left out (they differ run to run)."""
    if isinstance(x, dict):
        return {k: _without_seconds(v) for k, v in x.items() if "seconds" not in k}
    if isinstance(x, list):
        return [_without_seconds(v) for v in x]
    return x


@pytest.mark.slow
def test_evaluate_runs_with_workers_equal_one_process(synth_dataset, tmp_path, capsys):
    """The runs of a protocol (a model on a fold) spread over two processes: the same metrics,
    per run and pooled, as in one process."""
    folder, _ = synth_dataset
    base = ["evaluate", "known", "--data", "all", "--datasets", str(folder), "--models", "rf,nba", "--folds", "3",
            "--epochs", "3", "--interval", "60", "--window", "4", "--sessions", "8"]
    results = []
    for w in ("1", "2"):
        _run(capsys, base + ["--workers", w, "--out", str(tmp_path / w)])
        results.append(json.loads((tmp_path / w / "known-all.json").read_text()))
    assert len(results[0]["runs"]) == 6
    assert _without_seconds(results[0]) == _without_seconds(results[1])


@pytest.mark.slow
def test_engine_models_fitted_side_by_side_equal_one_process(synth_data):
    """build_engine's two behaviour models fitted in two processes: the same weights,
    temperatures and thresholds as one after the other in this process."""
    import numpy as np

    from classifier.evaluation.protocols import capture_folds
    from classifier.evaluation.training import build_engine
    from classifier.parallel import Runner
    f = capture_folds(synth_data.streams, 3, 0)
    engines = []
    for w in (1, 2):
        with Runner(w) as runner:
            engines.append(build_engine(synth_data, synth_data, f != 0, f != 0, seed=0, log=lambda m: None,
                                        runner=runner))
    one, two = engines
    assert one.config == two.config and one.segment_model is not None
    for a, b in ((one.session_model, two.session_model), (one.segment_model, two.segment_model)):
        assert a.temperature == b.temperature and a.classes == b.classes
        sa, sb = a.net.state_dict(), b.net.state_dict()
        assert sa.keys() == sb.keys() and all(np.array_equal(sa[k].numpy(), sb[k].numpy()) for k in sa)
