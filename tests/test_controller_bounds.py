"""Bounded learning through the real app (``ryu-manager controller_app`` and a fake switch over
TCP): host caps with their learning ban, counted in /metrics and logged once; 4,000 devices
ready for a decision at once, with a decision queue that refuses most of them, all asked."""

from __future__ import annotations

import json
import time

from testing.fakeswitch import T_FLOW_MOD, FakeSwitch, packet_in
from testing.synth import ether, udp4
from controller_app.intents import CookieKind, Table, cookie
from test_controller_app import app_factory, flow_mods, fm_match, learn  # noqa: F401  (fixture)


def mac_text(i: int) -> str:
    return f"02:00:00:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"


def test_port_cap_through_the_app_counts_bans_and_logs_once(app_factory):
    app = app_factory(extra=("--max-hosts-per-port", "3", "--learn-ban-timeout", "60", "--cap-log-interval", "60"))
    sw = FakeSwitch("127.0.0.1", app.of_port, dpid=9, ports=[1, 2])
    sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 0))
    for i in range(10):
        learn(sw, mac_text(0x100 + i), 1)
    learn(sw, mac_text(0x200), 2)                                   # another port still learns
    st = app.wait_status(lambda s: s["counters"].get("learn_refused_port") == 7 and s["devices"] == 4)
    assert st["counters"]["learn_bans"] == 1
    hosts = flow_mods(sw, lambda fm: fm.table_id == Table.ETH_SRC and fm.priority == 100)
    assert sorted(fm_match(fm)["eth_src"] for fm in hosts) == [mac_text(0x100 + i) for i in range(3)] + \
        [mac_text(0x200)]
    bans = flow_mods(sw, lambda fm: fm.table_id == Table.ETH_SRC and fm.priority == 50)
    assert len(bans) == 1 and fm_match(bans[0]) == {"in_port": 1}
    assert bans[0].instructions[0].table_id == Table.ETH_DST         # forwarded, not marked for a copy
    deadline = time.monotonic() + 10
    while 'iot_learning_capped_total{cap="port"} 7.0' not in app.get("/metrics").decode():
        assert time.monotonic() < deadline, "the cap counter never reached /metrics"
        time.sleep(0.2)
    time.sleep(1.0)                                                  # several ticks
    lines = [ln for ln in app.text().splitlines() if "bounded learning" in ln]
    assert len(lines) == 1 and "7 new MACs refused at the per-port cap" in lines[0]
    sw.close()
    assert app.stop() == 0


def test_4000_devices_ready_at_once_are_all_asked(app_factory, tmp_path):
    """4,000 learning devices get their third mirrored packet in the same instant. Every
    request is allowed out at once (--max-pending-decisions 5000) into a worker queue of 1,024
    whose engine takes 2 ms a call: most requests are refused at first. Each refused device is
    asked again later, so every one gets its answer (here "not enough evidence yet")."""
    model = tmp_path / "slow.json"
    model.write_text(json.dumps({"min_packets": 10**6, "delay": 0.002}))
    n = 4000
    app = app_factory(extra=("--model", str(model), "--max-hosts-per-switch", "5000", "--max-hosts-per-port", "500",
                             "--max-mirrored", "5000", "--max-pending-decisions", "5000",
                             "--default-log-level", "30",
                             # the fake switch parses every flow-mod in Python: its echo reply comes
                             # after ~15,000 queued flow-mods, later than the 30 s a real switch gets
                             "--ofp-echo-interval", "60", "--ofp-idle-timeout", "300",
                             # nor identity probes: 4,000 learning devices get 24,000 packet-outs
                             # (1 KB a probe) that this Python switch parses after the flow-mods; a
                             # clean-clone CI run saw the app drop it for not reading (of_send_timeout)
                             "--identity-probes", "0"))
    ports = list(range(1, 17))
    sw = FakeSwitch("127.0.0.1", app.of_port, dpid=11, ports=ports)
    sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 0))
    learns, mirrors = [], []
    for i in range(n):
        mac = mac_text(0x10000 + i)
        frame = ether(mac, "ff:ff:ff:ff:ff:ff", 0x0800, udp4("10.0.0.2", "10.0.0.255", 5000, 5000, bytes(20)))
        learns.append(packet_in(frame, ports[i % 16], cookie(CookieKind.LEARN), int(Table.LEARN), len(frame)))
        mirrors.append(packet_in(frame, ports[i % 16], cookie(CookieKind.MIRROR, 0x020000010000 + i),
                                 int(Table.MIRROR), len(frame)) * 3)
    sw.send(b"".join(learns))
    sw.wait_for(lambda r: sum(1 for m in r if m.type == T_FLOW_MOD and m.parsed is not None
                              and m.parsed.table_id == Table.MIRROR and m.parsed.priority == 100) >= n, timeout=120)
    sw.send(b"".join(mirrors))                                      # every device ready in the same tick
    deadline = time.monotonic() + 180
    while True:
        devs = app.get("/devices")
        asked = sum(1 for d in devs if d["thin_answers"] >= 1)
        if asked == n:
            break
        assert time.monotonic() < deadline, f"only {asked} of {n} devices were ever asked"
        time.sleep(1.0)
    st = app.get("/status")
    assert st["counters"]["decide_requeued"] > 0                    # the queue did refuse requests
    full = [ln for ln in app.text().splitlines() if "decision queue full" in ln]
    assert 1 <= len(full) <= 30                                     # at most one line per 10 s
    sw.close()
    assert app.stop() == 0


def test_cap_options_defaults_and_errors():
    import pytest
    from oslo_config import cfg as oslo
    from controller_app import config as app_config

    def parse(*args):
        conf = oslo.ConfigOpts()
        app_config.register_opts(oslo, conf)
        conf(args=list(args), default_config_files=[])
        return app_config.from_conf(conf).core

    c = parse()
    assert (c.max_hosts_per_port, c.max_hosts_per_switch, c.max_mirrored, c.learn_rate_pps, c.host_timeout) == \
        (256, 2048, 990, 500, 600.0)
    c = parse("--max-hosts-per-port", "8", "--max-mirrored", "0", "--host-timeout", "30", "--learn-rate-pps", "0")
    assert (c.max_hosts_per_port, c.max_mirrored, c.host_timeout, c.learn_rate_pps) == (8, 0, 30.0, 0)
    with pytest.raises(ValueError, match="--max-hosts-per-switch: -1 is negative"):
        parse("--max-hosts-per-switch", "-1")
    with pytest.raises(ValueError, match="--host-timeout: 0.0 is not a positive number"):
        parse("--host-timeout", "0")


def test_port_churn_through_the_app_is_linear(app_factory):
    """248 ports added one at a time, then deleted, by port-status messages: each change costs
    one flow-mod (the switch's flood entry), where one flood entry per in_port cost ~n^2/2."""
    from testing.fakeswitch import port_status
    app = app_factory()
    sw = FakeSwitch("127.0.0.1", app.of_port, dpid=12, ports=[1, 2])
    sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 0))
    time.sleep(0.5)
    before = len(flow_mods(sw))
    for p in range(3, 251):
        sw.send(port_status(p, 0))                                   # OFPPR_ADD
    for p in range(3, 251):
        sw.send(port_status(p, 1))                                   # OFPPR_DELETE
    flood = lambda fm: fm.table_id == Table.ETH_DST and fm.priority == 10  # noqa: E731
    sw.wait_for(lambda r: len(flow_mods(sw, flood)) >= 1 + 2 * 248, timeout=120)
    time.sleep(1.0)
    assert len(flow_mods(sw)) - before == 2 * 248                    # nothing else changed
    assert [len(fm.instructions[0].actions) for fm in flow_mods(sw, flood)] == \
        list(range(2, 251)) + list(range(249, 1, -1))
    sw.close()
    assert app.stop() == 0
