"""Shared fixtures: the shared datasets (skipped with a reason when absent) and generated captures."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from classifier.shared import datasets_root, shared_root  # noqa: E402


def pytest_configure(config):
    config.e2e_figures = []      # (what, figure) measured by the end-to-end tests


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The end-to-end tests' measured figures (time to rules, rate-limit accuracy, ...), also
    written as JSON to $IOT_E2E_REPORT when that is set."""
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
    from classifier.synth import default_network, write_devices_csv, write_network_capture
    folder = tmp_path_factory.mktemp("synth")
    net = default_network()
    path = folder / "network.pcap"
    write_network_capture(str(path), net, 3600.0, seed=7)
    write_devices_csv(str(folder / "devices.csv"), net)
    return path, folder / "devices.csv", net
