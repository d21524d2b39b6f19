"""The real app (``ryu-manager controller_app`` on os-ken) against a fake switch over TCP:
handshake and table-miss entries, learning, mirroring, a decision and its policy rules,
HTTP/metrics, malformed packet-ins and switch errors, policy reload (file change, SIGHUP,
invalid file kept out), SIGTERM, and an inventory that survives a restart."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from testing.synth import arp_request, ether, udp4
from testing.fakeswitch import (T_FLOW_MOD, T_METER_MOD, T_PACKET_OUT, FakeSwitch, header, packet_in)
from controller_app.intents import OFPP_CONTROLLER, CookieKind, Table, cookie

ROOT = Path(__file__).resolve().parent.parent
A, GW = "02:00:00:00:00:0a", "02:00:00:00:00:01"
A_INT = 0x02000000000A

POLICY_BLOCK = "enforce_on: confirmed\nmin_confidence: 0.5\ncategories:\n  camera: block\n"
POLICY_LIMIT = "enforce_on: confirmed\nmin_confidence: 0.5\ncategories:\n  camera: {rate_limit_kbps: 77}\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    def __init__(self, tmp: Path, policy: str = POLICY_BLOCK, watch: float = 0.3, extra=(), table=None):
        self.tmp = tmp
        self.of_port, self.http_port = free_port(), free_port()
        self.policy = tmp / "policy.yaml"
        if not self.policy.exists():
            self.policy.write_text(policy)
        model = tmp / "model.json"
        model.write_text(json.dumps(table or {A: ["camera", 0.95, "confirmed"], "min_packets": 3}))
        self.inventory = tmp / "inventory.sqlite"
        self.log = tmp / f"app-{self.of_port}.log"
        env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}")
        cmd = [sys.executable, "-m", "controller_app.manager", "controller_app",
               "--ofp-tcp-listen-port", str(self.of_port), "--ofp-listen-host", "127.0.0.1",
               "--engine", "fake_engine:make", "--model", str(model), "--policy-file", str(self.policy),
               "--inventory-db", str(self.inventory), "--http-port", str(self.http_port),
               "--decide-interval", "0.2", "--decide-min-packets", "3", "--tick-interval", "0.2",
               "--policy-watch-interval", str(watch), "--lldp-interval", "60", *extra]
        self.fh = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.fh, stderr=subprocess.STDOUT, env=env)

    def get(self, path: str):
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
                    body = r.read()
                    return body if path == "/metrics" else json.loads(body)
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.1)

    def wait_status(self, pred, timeout=20.0):
        deadline = time.monotonic() + timeout
        while True:
            st = self.get("/status")
            if pred(st):
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"status never matched: {st}")
            time.sleep(0.1)

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(20)
        finally:
            self.fh.close()

    def text(self) -> str:
        return self.log.read_text()


@pytest.fixture
def app_factory(tmp_path):
    apps = []

    def make(**kw):
        a = App(tmp_path, **kw)
        apps.append(a)
        return a
    yield make
    for a in apps:
        if a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait()


def flow_mods(sw, pred=lambda fm: True):
    return [m.parsed for m in sw.messages(T_FLOW_MOD) if m.parsed is not None and pred(m.parsed)]


def fm_match(fm) -> dict:
    return dict(fm.match.items())


def learn(sw, mac: str, port: int):
    frame = arp_request(mac, "192.168.1.10", "192.168.1.1")
    sw.send(packet_in(frame, port, cookie(CookieKind.LEARN), int(Table.ETH_SRC), len(frame)))


def mirror(sw, n: int, port: int = 1, size: int = 400):
    for i in range(n):
        frame = ether(A, GW, 0x0800, udp4("192.168.1.10", "52.1.2.3", 40000 + i, 443, bytes(size)))
        sw.send(packet_in(frame[:128], port, cookie(CookieKind.MIRROR, A_INT), int(Table.MIRROR), len(frame)))


def test_handshake_learning_mirroring_decision_and_enforcement(app_factory):
    app = app_factory()
    sw = FakeSwitch("127.0.0.1", app.of_port, dpid=0xABCD, ports=[1, 2, 3])
    # clean slate, then the table defaults: one priority-0 entry per table
    sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 0))
    first = flow_mods(sw)[0]
    assert first.command == 3 and first.table_id == 0xFF                      # delete all
    misses = {fm.table_id: fm for fm in flow_mods(sw, lambda fm: fm.priority == 0 and fm.command == 0)}
    assert sorted(misses) == [int(t) for t in Table]
    # an unknown source is marked in ETH_SRC, forwarded, and copied (128 bytes) through the
    # switch's learning meter in LEARN, after forwarding
    learn_miss = misses[Table.ETH_SRC]
    assert learn_miss.instructions[0].metadata == 1 and learn_miss.instructions[0].metadata_mask == 1
    assert learn_miss.instructions[1].table_id == Table.ETH_DST
    copy = flow_mods(sw, lambda fm: fm.table_id == Table.LEARN and fm.priority > 0)[0]
    assert fm_match(copy) == {"metadata": (1, 1)}
    learn_meter = [m.parsed for m in sw.messages(T_METER_MOD) if m.parsed["meter_id"] == copy.instructions[0].meter_id]
    assert learn_meter and learn_meter[0]["command"] == 0 and learn_meter[0]["bands"] == [(1, 500, 500)]
    acts = copy.instructions[1].actions
    assert acts[0].port == OFPP_CONTROLLER and acts[0].max_len == 128
    assert copy.instructions[2].table_id == Table.MIRROR
    sw.wait_for(lambda r: len([m for m in r if m.type == T_PACKET_OUT]) >= 3)  # topology probes, one per port
    assert sorted(p for m in sw.messages(T_PACKET_OUT) for p in m.parsed["ports"]) == [1, 2, 3]

    # a new device: learned at its port, forwarded to, and mirrored through a meter
    learn(sw, A, 1)
    sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 90))
    host = flow_mods(sw, lambda fm: fm.table_id == Table.ETH_SRC and fm_match(fm).get("eth_src") == A)[0]
    assert fm_match(host) == {"in_port": 1, "eth_src": A} and host.idle_timeout == 300 and host.flags & 1
    fwd = flow_mods(sw, lambda fm: fm.table_id == Table.ETH_DST and fm_match(fm).get("eth_dst") == A)[0]
    assert fwd.instructions[0].actions[0].port == 1
    mirror_fm = flow_mods(sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 100)[0]
    meter = [m.parsed for m in sw.messages(T_METER_MOD) if m.parsed["command"] == 0
             and m.parsed["meter_id"] == mirror_fm.instructions[0].meter_id][0]
    assert meter["flags"] & 0b10 and meter["bands"] == [(1, 200, 200)]                    # pktps, drop band
    assert fm_match(mirror_fm) == {"eth_src": A}
    assert mirror_fm.instructions[1].actions[0].max_len == 128

    # mirrored packets -> a confirmed decision -> block rules, mirroring stops
    mirror(sw, 5)
    sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.POLICY_DST and fm.command == 0
                                    and fm_match(fm).get("eth_dst") == A))
    blocks = flow_mods(sw, lambda fm: fm.table_id in (0, 1) and fm.priority == 100 and fm.command == 0)
    assert {fm.table_id for fm in blocks} == {0, 1}
    assert all(fm.instructions[0].table_id == Table.MIRROR for fm in blocks)
    sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.command == 3 and fm.cookie == cookie(CookieKind.MIRROR, A_INT)))
    st = app.wait_status(lambda s: s["learning"] == 0)
    assert st["devices"] == 1 and st["counters"]["packet_ins_mirror"] == 5
    devices = app.get("/devices")
    assert devices[0]["mac"] == A and devices[0]["category"] == "camera" and devices[0]["stage"] == "confirmed"
    assert devices[0]["enforced"] == "block"
    one = app.get(f"/devices/{A}")
    assert one["history"] and one["history"][0]["category"] == "camera"
    metrics = app.get("/metrics").decode()
    assert 'iot_decisions_total{category="camera",stage="confirmed"} 1.0' in metrics
    assert 'iot_packet_ins_total{kind="mirror"} 5.0' in metrics
    assert 'iot_devices{action="block",category="camera",stage="confirmed"} 1.0' in metrics
    assert "iot_rule_changes_total" in metrics
    post = urllib.request.Request(f"http://127.0.0.1:{app.http_port}/devices", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(post, timeout=5)
    assert refused.value.code == 405                                      # read-only

    # malformed packet-ins and a switch error are counted; the app keeps answering
    for data in (b"\x01\x02", b"", bytes(13)):
        sw.send(packet_in(data, 2, cookie(CookieKind.MIRROR, A_INT), int(Table.MIRROR), 60))
    err = struct.pack("!HH", 5, 1) + bytes(16)
    sw.send(header(1, 8 + len(err), 99) + err)
    st = app.wait_status(lambda s: s["counters"].get("packet_ins_malformed") == 3
                         and s["counters"].get("switch_errors") == 1)
    sw.echo(timeout=10)
    assert 'iot_errors_total{kind="switch"} 1.0' in app.get("/metrics").decode()

    # policy file changed: rules move; an invalid file is rejected and the rules stay
    n_before = len(flow_mods(sw))
    app.policy.write_text(POLICY_LIMIT)
    sw.wait_for(lambda r: any(m.type == T_METER_MOD and m.parsed["bands"] and m.parsed["bands"][0][1] == 77
                              for m in r))
    sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == 0 and fm.priority == 100 and fm.command == 0
                                    and any(type(i).__name__ == "OFPInstructionMeter" for i in fm.instructions)))
    assert len(flow_mods(sw)) > n_before
    time.sleep(0.5)
    n_valid = len(flow_mods(sw))
    app.policy.write_text("categories:\n  camera: blok\n")
    deadline = time.monotonic() + 10
    while "policy_rejected" not in app.text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "policy_rejected" in app.text() and "policy.yaml:2:11: categories.camera" in app.text()
    time.sleep(0.5)
    assert len(flow_mods(sw)) == n_valid                                  # nothing changed
    assert app.get("/policy")["categories"]["camera"] == "rate_limit_kbps=77"

    # SIGTERM: clean exit, inventory written
    sw.close()
    assert app.stop() == 0
    assert '"event": "shutdown"' in app.text()
    proc = subprocess.run([sys.executable, "-m", "controller_app.cli", "devices", "--db", str(app.inventory), "--json"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows[0]["mac"] == A and rows[0]["category"] == "camera" and rows[0]["decisions"] == 1
    assert rows[0]["dpid"] == "000000000000abcd" and rows[0]["port"] == 1
    table = subprocess.run([sys.executable, "-m", "controller_app.cli", "devices", "--db", str(app.inventory)],
                           capture_output=True, text=True, cwd=ROOT).stdout
    assert table.splitlines()[0].split()[:4] == ["mac", "dpid", "port", "category"] and A in table


def test_engine_answers_of_too_little_evidence_show_in_devices(app_factory):
    """An engine that never decides (``None``: not enough evidence yet) leaves the device
    learning and undecided, and each such answer is counted on its ``/devices`` record, with
    the mirrored packets the controller holds for it."""
    app = app_factory(extra=("--model", ""))                  # the fake engine without a table
    sw = FakeSwitch("127.0.0.1", app.of_port, dpid=7, ports=[1, 2])
    sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 0))
    learn(sw, A, 1)
    sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 100))
    mirror(sw, 4)
    deadline = time.monotonic() + 20
    while True:
        dev = {d["mac"]: d for d in app.get("/devices")}.get(A)
        if dev is not None and dev["thin_answers"] >= 1:
            break
        assert time.monotonic() < deadline, f"the engine's answers never showed: {dev}"
        time.sleep(0.1)
    assert dev["category"] is None and dev["stage"] is None and dev["mirroring"]
    assert dev["mirrored_packets"] == 4


def test_restart_restores_inventory_and_reconnecting_switch_gets_rules(app_factory):
    app = app_factory(watch=0)
    sw = FakeSwitch("127.0.0.1", app.of_port, dpid=5, ports=[1, 2])
    sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 0))
    learn(sw, A, 1)
    sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 100))
    mirror(sw, 4)
    sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.POLICY_SRC and fm.priority == 100))
    sw.close()
    assert app.stop(signal.SIGINT) == 0

    app2 = app_factory(watch=0)
    sw2 = FakeSwitch("127.0.0.1", app2.of_port, dpid=5, ports=[1, 2])
    # no packet-in needed: the restored device's block rules come with the handshake, no mirroring
    sw2.wait_for(lambda r: flow_mods(sw2, lambda fm: fm.table_id == Table.POLICY_SRC and fm.priority == 100
                                     and fm_match(fm).get("eth_src") == A))
    time.sleep(0.5)
    assert not flow_mods(sw2, lambda fm: fm.table_id == Table.MIRROR and fm.priority > 0)
    sw2.close()
    # the switch reconnects: its rules again
    sw3 = FakeSwitch("127.0.0.1", app2.of_port, dpid=5, ports=[1, 2])
    sw3.wait_for(lambda r: flow_mods(sw3, lambda fm: fm.table_id == Table.POLICY_SRC and fm.priority == 100
                                     and fm_match(fm).get("eth_src") == A))
    # SIGHUP reload (file watching is off here): the new policy's rules arrive
    app2.policy.write_text(POLICY_LIMIT)
    app2.proc.send_signal(signal.SIGHUP)
    sw3.wait_for(lambda r: any(m.type == T_METER_MOD and m.parsed["bands"] and m.parsed["bands"][0][1] == 77
                               for m in r))
    assert '"reason": "SIGHUP"' in app2.text()
    sw3.close()
    assert app2.stop() == 0


def test_manager_command_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = lambda *a: subprocess.run([sys.executable, "-m", "controller_app.manager", *a], capture_output=True,  # noqa
                                    text=True, cwd=ROOT, env=env, timeout=60)
    h = run("--help")
    assert h.returncode == 0
    for flag in ("--ofp-tcp-listen-port", "--ofp-listen-host", "--config-file", "--policy-file", "--model",
                 "--inventory-db", "--http-port", "--mirror-rate-pps", "--gateway-macs"):
        assert flag in h.stdout, flag
    r = run("classifier.capture.packets")
    assert r.returncode == 1 and "no OpenFlow app class defined in classifier.capture.packets" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("categories: {camera: blok}\n")
    r = run("--policy-file", str(bad), "--inventory-db", str(tmp_path / "i.sqlite"), "--http-port", "-1",
            "--ofp-tcp-listen-port", str(free_port()))
    assert r.returncode == 1 and f"{bad}:1:22: categories.camera" in r.stderr


def test_config_file_sets_options(tmp_path):
    from controller_app import config as app_config
    from oslo_config import cfg as oslo
    conf = oslo.ConfigOpts()
    app_config.register_opts(oslo, conf)
    ini = tmp_path / "controller.conf"
    ini.write_text("[DEFAULT]\npolicy_file = /etc/p.yaml\nmirror_rate_pps = 50\ngateway_macs = 02:00:00:00:00:01\n")
    conf(args=["--config-file", str(ini), "--mirror-rate-pps", "70"], default_config_files=[])
    c = app_config.from_conf(conf)
    assert c.policy_file == "/etc/p.yaml" and c.core.mirror_rate_pps == 70 and c.core.gateways == (0x020000000001,)
    assert c.batch_size == 2048 and c.http_host == "127.0.0.1"


def test_time_scale_option_and_its_error(tmp_path):
    from controller_app import config as app_config
    from oslo_config import cfg as oslo
    conf = oslo.ConfigOpts()
    app_config.register_opts(oslo, conf)
    conf(args=["--time-scale", "60"], default_config_files=[])
    assert app_config.from_conf(conf).core.time_scale == 60.0
    conf = oslo.ConfigOpts()
    app_config.register_opts(oslo, conf)
    conf(args=[], default_config_files=[])
    assert app_config.from_conf(conf).core.time_scale == 1.0
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "controller_app.manager", "--time-scale", "0", "--http-port", "-1",
                        "--inventory-db", str(tmp_path / "i.sqlite"), "--ofp-tcp-listen-port", str(free_port())],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 1 and "cannot start: --time-scale: 0.0 is not a positive number" in r.stderr


@pytest.mark.parametrize("fails", [False, True])
def test_an_engine_with_a_window_schedule_is_asked_to_prepare_a_moved_window_before_the_decision(app_factory, fails):
    """An engine that names when a device's segment window moves (``window_schedule``; here a
    one-second segment) and can vote on it ahead of time (``prepare``) is asked to, on its worker,
    at the first tick after it moves while no decision is due; the decision after it finds the
    preparation done. A preparation that fails is logged and counted, and the decision is made
    all the same."""
    table = {A: ["camera", 0.95, "confirmed"], "min_packets": 3, "prepare_error": fails}
    app = app_factory(table=table, extra=("--engine", "fake_engine:make_preparing", "--decide-interval", "2"))
    sw = FakeSwitch("127.0.0.1", app.of_port, dpid=9, ports=[1, 2])
    sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 0))
    learn(sw, A, 1)
    sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 100))
    mirror(sw, 5)
    app.wait_status(lambda s: s["counters"].get("windows_prepared", 0) >= 1)
    if fails:
        deadline = time.monotonic() + 20
        while "prepare_error" not in app.text():
            assert time.monotonic() < deadline, "the failed preparation was never logged"
            time.sleep(0.1)
        assert b'iot_errors_total{kind="prepare"}' in app.get("/metrics")
    mirror(sw, 3)                                    # new packets: asked again after the interval
    sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.POLICY_DST and fm.command == 0
                                    and fm_match(fm).get("eth_dst") == A), timeout=30)
    history = app.get(f"/devices/{A}")["history"]
    if fails:
        assert [h["explanation"] for h in history] == ["table says camera"]
    else:
        assert [h["explanation"] for h in history] == ["table says camera (window prepared on 5 packets)"]
        assert "prepare_error" not in app.text()


def test_a_decision_is_enforced_before_its_slow_explanation_which_completes_it_after(app_factory):
    """An engine that can leave the slow end of an explanation for later (``explain_later``; the
    project's engine: the segment model's occlusion) is asked so: the decision is recorded and its
    rules sent at once; the explanation is completed on the worker afterwards and written into the
    same decision of the inventory, which the device's page then shows."""
    table = {A: ["camera", 0.95, "confirmed"], "min_packets": 3, "explain_delay": 3.0}
    app = app_factory(table=table, extra=("--engine", "fake_engine:make_later"))
    sw = FakeSwitch("127.0.0.1", app.of_port, dpid=9, ports=[1, 2])
    sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 0))
    learn(sw, A, 1)
    sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 100))
    mirror(sw, 5)
    sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.POLICY_DST and fm.command == 0
                                    and fm_match(fm).get("eth_dst") == A))
    assert "decision_explained" not in app.text()          # enforced without waiting for the explanation
    first = app.get(f"/devices/{A}")["history"]
    assert [h["explanation"] for h in first] == ["table says camera"]
    deadline = time.monotonic() + 30
    while "decision_explained" not in app.text():
        assert time.monotonic() < deadline, "the explanation was never completed"
        time.sleep(0.1)
    one = app.get(f"/devices/{A}")
    assert [h["explanation"] for h in one["history"]] == ["table says camera; segments: n_total (+0.50)"]
    assert [s["feature"] for s in one["history"][0]["explained"]["segments"]] == ["n_total"]
    proc = subprocess.run([sys.executable, "-m", "controller_app.cli", "devices", "--db", str(app.inventory), "--json"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["explanation"] == "table says camera; segments: n_total (+0.50)"
