"""End to end: Open vSwitch connects to the controller over TLS (``ssl:`` controller target)
with certificates made here, as docs/deployment.md describes; a bridge pointed at the same
port without TLS never gets in.

Needs root and Open vSwitch (started here when it is not running, stopped again after); run
it under the end-to-end lock like the other end-to-end tests:
``flock /tmp/iot-e2e.lock .venv/bin/pytest -q -m e2e tests/test_e2e_tls.py``. Open vSwitch's
TLS settings are global to ovs-vswitchd: the test sets them and removes them at the end.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from topologies import ovs  # noqa: E402
from testing.pki import have_openssl, make_pki  # noqa: E402
from controller_app.intents import Table  # noqa: E402


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "the TLS end-to-end test needs root (Open vSwitch): run it as root"
    missing = [t for t in ("ovs-vsctl", "ovs-ofctl", "ovs-appctl") if not shutil.which(t)]
    if not os.path.exists(ovs.OVS_CTL):
        missing.append(ovs.OVS_CTL)
    if missing:
        return f"the TLS end-to-end test needs Open vSwitch ({', '.join(missing)} missing: apt-get install " \
               "openvswitch-switch)"
    if not have_openssl():
        return "the TLS end-to-end test needs the openssl command (apt-get install openssl)"
    return None


REASON = _why_not()
if REASON:
    pytest.skip(REASON, allow_module_level=True)

from topologies.harness import Controller  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TLS_BR, TCP_BR = "iottls0", "iottls1"
TLS_DPID, TCP_DPID = 0x51A1, 0x51A2


def _vsctl(*args: str) -> str:
    return ovs.run(["ovs-vsctl", "--timeout=10", *args])


def _bridge(name: str, dpid: int, target: str) -> None:
    _vsctl("--may-exist", "add-br", name, "--", "set", "bridge", name, "datapath_type=netdev",
           "protocols=OpenFlow13", "fail-mode=secure", f"other-config:datapath-id={dpid:016x}",
           "--", "set-controller", name, target)
    ovs.set_controller_backoff(name, 1000)


def _is_connected(name: str) -> bool:
    uuid = _vsctl("get", "bridge", name, "controller").strip().strip("[]")
    return bool(uuid) and _vsctl("get", "controller", uuid, "is_connected").strip() == "true"


@pytest.fixture
def ovs_up():
    started = ovs.start_ovs()
    previous_ssl = _vsctl("get-ssl").strip()
    yield
    ovs.delete_bridges([TLS_BR, TCP_BR])
    if not previous_ssl:
        _vsctl("del-ssl")
    if started:
        ovs.stop_ovs()


def test_open_vswitch_over_tls_with_certificates(ovs_up, tmp_path):
    ovs.delete_bridges([TLS_BR, TCP_BR])
    pki = make_pki(tmp_path / "pki")
    policy = tmp_path / "policy.yaml"
    policy.write_text("categories:\n  camera: block\n")
    ctl = Controller(tmp_path / "ctl", policy, args=[])
    port = ctl.of_port
    ctl.args = ["--ofp-ssl-listen-port", str(port), "--ctl-privkey", str(pki["controller"][1]),
                "--ctl-cert", str(pki["controller"][0]), "--ca-certs", str(pki["ca"])]
    ctl.start()
    try:
        # the switch's key, certificate and the CA it trusts for the controller's certificate
        _vsctl("set-ssl", str(pki["switch"][1]), str(pki["switch"][0]), str(pki["ca"]))
        _bridge(TLS_BR, TLS_DPID, f"ssl:127.0.0.1:{port}")
        _bridge(TCP_BR, TCP_DPID, f"tcp:127.0.0.1:{port}")            # no TLS: must not get in

        deadline = time.monotonic() + 60
        while not _is_connected(TLS_BR):
            assert time.monotonic() < deadline, f"{TLS_BR} never connected over TLS: {ctl.tail()}"
            time.sleep(0.5)
        ctl.wait(lambda: f"{TLS_DPID:016x}" in ctl.get("/status")["switches"], 30, "the TLS switch in /status")
        flows = ctl.wait(lambda: [f for f in ovs.dump_flows(TLS_BR) if f.priority == 0], 30,
                         "table-miss entries on the TLS bridge")
        assert sorted({f.table for f in flows}) == sorted(int(t) for t in Table)

        time.sleep(5)                                                  # the plain bridge keeps trying
        assert not _is_connected(TCP_BR)
        status = ctl.get("/status")
        assert status["switches"] == [f"{TLS_DPID:016x}"]
        metrics = ctl.get("/metrics")
        tls_refused = [x for x in metrics.splitlines() if x.startswith('iot_errors_total{kind="openflow_tls"}')]
        assert tls_refused and float(tls_refused[0].split()[-1]) >= 1, metrics
        log = ctl.log_path.read_text()
        assert '"tls": true, "client_certificates": true' in log
    finally:
        ovs.delete_bridges([TLS_BR, TCP_BR])
        ctl.stop()
