"""Shared fixtures: the shared datasets (skipped with a reason when absent) and generated captures."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from classifier.shared import datasets_root, shared_root  # noqa: E402


def pytest_configure(config):
    # The models in the tests are tiny: one intra-op thread avoids oversubscribing the two
    # cores when the suite runs beside other work (the end-to-end tests' switch, a controller).
    # Set for torch to read when something imports it: importing torch here would cost every
    # pytest run seconds, the ones the tests start in a subprocess included.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    config.e2e_figures = []      # (what, figure) measured by the end-to-end tests
    config.artefacts = []        # files the tests kept (the page tests' screenshots)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The end-to-end tests' measured figures (time to rules, rate-limit accuracy, ...), also
    written as JSON to $IOT_E2E_REPORT when that is set."""
    artefacts = getattr(config, "artefacts", [])
    if artefacts:
        terminalreporter.section("test artefacts")
        folder = getattr(config, "artefacts_dir", None)
        if folder is not None:
            terminalreporter.write_line(f"folder: {folder}")
        for path in artefacts:
            terminalreporter.write_line(f"  {path}")
    figures = getattr(config, "e2e_figures", [])
    if not figures:
        return
    terminalreporter.section("end-to-end figures")
    for what, figure in figures:
        terminalreporter.write_line(f"{what}: {figure}")
    path = os.environ.get("IOT_E2E_REPORT")
    if path:
        import json
        with open(path, "w") as fh:
            json.dump([{"what": w, "figure": f} for w, f in figures], fh, indent=1)


@pytest.fixture(scope="session")
def datasets():
    root = datasets_root()
    if root is None:
        pytest.skip("../shared/datasets is absent (set IOT_SHARED to the shared folder to run this test)")
    return root


@pytest.fixture(scope="session")
def fixtures_root():
    root = shared_root()
    if root is None or not (root / "fixtures").is_dir():
        pytest.skip("../shared/fixtures is absent (set IOT_SHARED to the shared folder to run this test)")
    return root / "fixtures"


@pytest.fixture(scope="session")
def synth_capture(tmp_path_factory):
    """A one-hour capture of one synthetic device per category, with its devices.csv."""
    from testing.synth import default_network, write_devices_csv, write_network_capture
    folder = tmp_path_factory.mktemp("synth")
    net = default_network()
    path = folder / "network.pcap"
    write_network_capture(str(path), net, 3600.0, seed=7)
    write_devices_csv(str(folder / "devices.csv"), net)
    return path, folder / "devices.csv", net


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory):
    """A labelled dataset the project generates: three 15-minute captures of a network with
    two units of each device category (by-MAC devices.csv)."""
    from testing.synth import default_network, write_devices_csv, write_network_capture
    folder = tmp_path_factory.mktemp("lab") / "lab"
    folder.mkdir()
    net = default_network(units=2)
    for k in range(3):
        write_network_capture(str(folder / f"capture-{k}.pcap"), net, 900.0, seed=100 + k)
    write_devices_csv(str(folder / "devices.csv"), net)
    return folder, net


@pytest.fixture(scope="session")
def synth_data(synth_dataset):
    """The generated dataset as model-ready streams (T = 60 s, t = 4, n = 8, 10 epochs)."""
    from classifier.evaluation.protocols import Data
    from classifier.capture.labels import load_labels
    from classifier.models.registry import Settings
    folder, net = synth_dataset
    return Data("lab", load_labels(folder / "devices.csv"), Settings(interval=60.0, t=4, overlap=3, n=8, epochs=10))
