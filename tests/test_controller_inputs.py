"""The real app (``ryu-manager controller_app`` on os-ken, fake switch over TCP) against hostile
inputs and crashes: policy files that are deeply nested, oversized or a FIFO are rejected at
once while the old policy stays in force and new devices still get their rules; a decision
logged as made is always in the inventory, even when the app is killed (SIGKILL) under load."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time

from testing.fakeswitch import FakeSwitch, packet_in
from testing.synth import arp_request, ether, udp4
from controller_app.intents import CookieKind, Table, cookie
from controller_app.policy import MAX_POLICY_BYTES

from test_controller_app import POLICY_BLOCK, App, app_factory, flow_mods, fm_match  # noqa: F401

GW = "02:00:00:00:00:01"


def mac_of(i: int) -> str:
    return f"02:00:00:00:20:{i:02x}"


def learn(sw, mac: str, port: int) -> None:
    frame = arp_request(mac, "192.168.1.50", "192.168.1.1")
    sw.send(packet_in(frame, port, cookie(CookieKind.LEARN), int(Table.ETH_SRC), len(frame)))


def mirror_frames(mac: str, n: int, port: int, start: int = 0) -> bytes:
    out = []
    owner = int(mac.replace(":", ""), 16)
    for k in range(start, start + n):
        frame = ether(mac, GW, 0x0800, udp4("192.168.1.50", "52.1.2.3", 40000 + k % 20000, 443, bytes(300)))
        out.append(packet_in(frame[:128], port, cookie(CookieKind.MIRROR, owner), int(Table.MIRROR), len(frame)))
    return b"".join(out)


def blocked(sw, mac: str) -> bool:
    return bool(flow_mods(sw, lambda fm: fm.table_id == Table.POLICY_SRC and fm.priority == 100 and fm.command == 0
                          and fm_match(fm).get("eth_src") == mac))


def started(app: App) -> App:
    """The app, once it listens (its start-up takes longer than the harness's 20 s on a busy machine)."""
    wait_log(app, '"event": "http"', timeout=120)
    return app


def wait_log(app: App, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in app.text():
        assert app.proc.poll() is None, f"the app exited:\n{app.text()[-3000:]}"
        assert time.monotonic() < deadline, f"{text!r} never logged:\n{app.text()[-3000:]}"
        time.sleep(0.05)


def test_hostile_policy_files_are_rejected_at_once_and_enforcement_goes_on(app_factory, tmp_path):  # noqa: F811
    devices = [mac_of(i) for i in range(1, 5)]
    app = started(app_factory(table={**{m: ["camera", 0.95, "confirmed"] for m in devices}, "min_packets": 3},
                              watch=0.2))
    sw = FakeSwitch("127.0.0.1", app.of_port, dpid=9, ports=[1, 2, 3, 4, 5])
    sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 0))

    def new_device_is_blocked(i: int) -> float:
        mac = devices[i]
        t0 = time.monotonic()
        learn(sw, mac, i + 1)
        sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 100
                                        and fm_match(fm).get("eth_src") == mac), timeout=10)
        sw.send(mirror_frames(mac, 5, i + 1))
        sw.wait_for(lambda r: blocked(sw, mac), timeout=10)
        return time.monotonic() - t0

    new_device_is_blocked(0)
    policy = app.get("/policy")
    hostile = [
        ("nested", lambda p: p.write_text("[" * 40_000), "nested more than 32 levels deep"),
        ("oversized", lambda p: p.write_text(POLICY_BLOCK + "#" * (MAX_POLICY_BYTES + 10) + "\n"),
         f"more than the policy size limit of {MAX_POLICY_BYTES} bytes"),
        ("fifo", lambda p: (p.unlink(), os.mkfifo(p)), "a FIFO (named pipe), not a policy file"),
    ]
    for i, (what, make, message) in enumerate(hostile, start=1):
        before = app.text().count("policy_rejected")
        t0 = time.monotonic()
        make(app.policy)
        deadline = time.monotonic() + 10
        while app.text().count("policy_rejected") == before:
            assert app.proc.poll() is None, f"{what}: the app exited:\n{app.text()[-3000:]}"
            assert time.monotonic() < deadline, f"{what}: never rejected:\n{app.text()[-3000:]}"
            time.sleep(0.05)
        assert message in app.text(), what
        assert time.monotonic() - t0 < 5.0, what
        # the event loop is free: status answers, the old policy is in force, a new device gets its rules
        t1 = time.monotonic()
        app.get("/status")
        assert time.monotonic() - t1 < 1.0, what
        assert app.get("/policy") == policy, what
        assert new_device_is_blocked(i) < 8.0, what
        if what == "fifo":
            app.policy.unlink()
    assert "Traceback" not in app.text() and "RecursionError" not in app.text()
    sw.close()
    assert app.stop() == 0


def _logged_decisions(apps) -> list[dict]:
    out = []
    for app in apps:
        for line in app.text().splitlines():
            at = line.find('{"event": "decision"')
            if at >= 0:
                try:
                    out.append(json.loads(line[at:]))
                except ValueError:       # the very last line, cut by the kill
                    pass
    return out


def test_every_logged_decision_is_in_the_inventory_after_kill_9(app_factory, tmp_path):  # noqa: F811
    """Forty learning devices, each sending mirrored packet-ins all the time (2,000 a second in
    all) and re-decided
    (provisionally) every 0.2 s; the app is killed with SIGKILL while that goes on, three
    times, and restarted on the same inventory. Every decision any of its logs reports as made
    is in the inventory, with its id, device, category and stage."""
    n = 40
    table = {mac_of(i): ["plug", 0.6, "provisional"] for i in range(n)}
    table["min_packets"] = 3
    apps, killed_after = [], []
    for cycle in range(3):
        app = started(app_factory(table=table, watch=0))
        apps.append(app)
        sw = FakeSwitch("127.0.0.1", app.of_port, dpid=11, ports=list(range(1, n + 1)))
        sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 0))
        for i in range(n):
            learn(sw, mac_of(i), i + 1)
        stop = threading.Event()

        def traffic():
            k = 0
            try:
                while not stop.is_set():         # about 2,000 packet-ins a second
                    sw.send(b"".join(mirror_frames(mac_of(i), 1, i + 1, k) for i in range(n)))
                    k += 1
                    time.sleep(0.02)
            except OSError:          # the app was killed
                pass

        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        target = 150 + 37 * cycle               # a different point in each cycle
        deadline = time.monotonic() + 60
        seen, tail = 0, b""
        with open(app.log, "rb") as log:        # read as it grows: the kill follows a decision's line closely
            while seen < target:
                assert app.proc.poll() is None, app.text()[-3000:]
                assert time.monotonic() < deadline, "too few decisions"
                chunk = log.read()
                if not chunk:
                    time.sleep(0.0005)
                    continue
                text = tail + chunk
                seen += text.count(b'"event": "decision"') - tail.count(b'"event": "decision"')
                tail = text[-24:]
        app.proc.kill()                          # SIGKILL, with traffic flowing and decisions being made
        app.proc.wait()
        stop.set()
        sender.join(5)
        sw.close()
        app.fh.close()
        killed_after.append(app.text().count('"event": "decision"'))
    # a restart on the same inventory comes up, reading every device from it
    last = started(app_factory(table=table, watch=0))
    apps.append(last)
    startup = next(json.loads(line[line.index("{"):]) for line in last.text().splitlines()
                   if '"event": "startup"' in line)
    assert startup["restored_devices"] == n
    last.get("/status")
    sw = FakeSwitch("127.0.0.1", last.of_port, dpid=11, ports=list(range(1, n + 1)))
    sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 0))
    sw.close()
    assert last.stop() == 0

    logged = _logged_decisions(apps[:-1])
    assert len(logged) >= sum(150 + 37 * c for c in range(3)) and all(d["decision_id"] for d in logged)
    db = sqlite3.connect(f"file:{apps[0].inventory}?mode=ro", uri=True)
    rows = {r[0]: r[1:] for r in db.execute("SELECT id, mac, category, stage FROM decisions")}
    devices = {r[0]: r[1:] for r in db.execute("SELECT mac, category, stage FROM devices")}
    db.close()
    missing = [d for d in logged if rows.get(d["decision_id"]) != (d["mac"], d["category"], d["stage"])]
    assert not missing, f"{len(missing)} of {len(logged)} logged decisions are not in the inventory: {missing[:3]}"
    assert len({d["decision_id"] for d in logged}) == len(logged)        # one row per logged decision
    for d in logged:                                                     # the device row is there too
        assert devices[d["mac"]] == ("plug", "provisional")
    print(f"decisions logged before each SIGKILL: {killed_after}; all {len(logged)} in the inventory "
          f"({len(rows)} rows: a kill may come between a commit and its log line, never the other way)")


def test_a_decision_and_its_device_are_one_transaction(tmp_path):
    from types import SimpleNamespace

    import pytest

    from classifier.engine.decision import Decision
    from controller_app.inventory import Inventory, read_inventory
    inv = Inventory(str(tmp_path / "inv.sqlite"))
    dev = SimpleNamespace(mac=0x020000000001, dpid=5, port=2, first_ns=10**18, last_ns=10**18 + 5, category="plug",
                          confidence=0.7, stage="provisional", model="m", policy_action=None, gateway=False)
    d = Decision("plug", 0.7, "provisional", "m", "why", {"packets": 9})
    first = inv.record_decision(dev.mac, 10**18, d, dev)
    assert first == 1
    rows = read_inventory(str(tmp_path / "inv.sqlite"), history=True)
    assert rows[0]["decisions"] == 1 and rows[0]["explanation"] == "why"      # a new device's first decision too
    later = SimpleNamespace(**{**vars(dev), "last_ns": 2 * 10**18, "category": "camera"})
    bad = Decision("camera", "sure", "provisional", "m", "no", {})            # fails after the device's row is written
    with pytest.raises(ValueError):
        inv.record_decision(dev.mac, 10**18 + 1, bad, later)
    row = read_inventory(str(tmp_path / "inv.sqlite"))[0]
    assert (row["category"], row["decisions"], row["last_seen"]) == ("plug", 1, rows[0]["last_seen"])   # rolled back
    assert inv.record_decision(dev.mac, 10**18 + 2, d, dev) == 2
    assert read_inventory(str(tmp_path / "inv.sqlite"))[0]["decisions"] == 2
    inv.close()


def test_rdap_options_reach_the_pool_resolver_only_in_rdap_modes():
    from oslo_config import cfg as oslo

    import pytest

    from controller_app import config as app_config

    def conf_of(*args):
        conf = oslo.ConfigOpts()
        app_config.register_opts(oslo, conf)
        conf(args=list(args), default_config_files=[])
        return app_config.from_conf(conf)

    c = conf_of("--pool-mode", "rdap", "--rdap-url", "http://127.0.0.1:9/bootstrap", "--rdap-timeout", "1.5")
    assert c.rdap_options() == {"bootstrap_url": "http://127.0.0.1:9/bootstrap", "timeout": 1.5}
    assert conf_of("--rdap-url", "http://127.0.0.1:9/bootstrap").rdap_options() == {}      # offline: none
    with pytest.raises(ValueError, match="--rdap-timeout"):
        conf_of("--pool-mode", "auto", "--rdap-timeout", "-1")


def test_a_pin_from_the_web_page_never_waits_on_a_fifo_policy(tmp_path):
    import pytest

    from controller_app.pins import PinError, PolicyEditor
    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    with pytest.raises(PinError, match="a FIFO"):
        PolicyEditor(str(fifo)).set(0x020000000001, {"action": "block"})
    assert time.monotonic() - t0 < 1.0
