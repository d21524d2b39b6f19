"""The OpenFlow side under attack and failure (controller_app.ofconn, controller_app.guard):
the real app (``ryu-manager controller_app``) against fake switches over TCP and TLS.

- a second connection claiming a connected switch's datapath id is refused while the switch
  answers, and counted; a switch that stopped answering is replaced;
- idle and half-open connections: closed by the handshake and idle timeouts; 1,500 of them
  opened and closed leave no thread behind; connection limits; ``accept()`` failing for lack of
  file descriptors is survived;
- an exception inside an event handler is logged, counted, and the app goes on;
- a port in use, or TLS files that cannot be read, end the process with status 1 and the reason;
- TLS with switch certificates: a switch with a certificate from the right CA is served, one
  without is refused and counted.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

from controller_app import guard
from controller_app.intents import Table
from testing.fakeswitch import T_FLOW_MOD, FakeSwitch, header
from testing.pki import client_context, have_openssl, make_pki
from test_controller_app import A, ROOT, App, flow_mods, fm_match, free_port, learn, mirror

B = "02:00:00:00:00:0b"
C = "02:00:00:00:00:0c"


@pytest.fixture
def apps(tmp_path):
    started = []

    def make(*extra, **kw):
        a = App(tmp_path, extra=extra, **kw)
        started.append(a)
        return a
    yield make
    for a in started:
        if a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait()
        if not a.fh.closed:
            a.fh.close()


def proc_status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def metric(app, name: str, **labels) -> float:
    text = app.get("/metrics").decode()
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


def wait(pred, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


def ready_switch(app, dpid: int, ports=(1, 2, 3), **kw) -> FakeSwitch:
    sw = FakeSwitch("127.0.0.1", app.of_port, dpid=dpid, ports=list(ports), **kw)
    sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 0))
    return sw


def host_rule_for(sw, mac: str):
    return flow_mods(sw, lambda fm: fm.table_id == Table.ETH_SRC and fm_match(fm).get("eth_src") == mac)


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Does the other side close ``sock`` within ``timeout`` seconds (anything it sends is read)?"""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


# ---------------------------------------------------------------------------- switch identity


def test_impostor_is_refused_and_a_dead_switch_is_replaced(apps):
    app = apps("--ofp-takeover-probe-timeout", "1")
    real = ready_switch(app, 0xABCD)
    learn(real, A, 1)
    real.wait_for(lambda r: host_rule_for(real, A))

    # an impostor presents the connected switch's datapath id: probed switch answers, impostor closed
    impostor = FakeSwitch("127.0.0.1", app.of_port, dpid=0xABCD, ports=[1, 2, 3])
    wait(lambda: impostor.closed, 10, "the impostor's connection closed by the controller")
    assert not impostor.messages(T_FLOW_MOD), "the impostor got rules"
    assert real.echo_requests >= 1                       # the real switch was asked whether it lives
    assert metric(app, "iot_errors_total", kind="openflow_takeover") == 1.0
    assert '"event": "of_takeover_refused"' in app.text() and '"dpid": "000000000000abcd"' in app.text()
    # the real switch keeps its place: a new device there gets its rules, the switch stays listed
    learn(real, B, 2)
    real.wait_for(lambda r: host_rule_for(real, B))
    app.wait_status(lambda s: s["switches"] == ["000000000000abcd"] and s["openflow"]["counts"].get("takeover") == 1)
    real.echo(timeout=10)
    assert not real.closed

    # the real switch hangs (connection open, no echo replies): a newcomer with its id replaces it
    real.answer_echo = False
    newcomer = ready_switch(app, 0xABCD)
    wait(lambda: real.closed, 10, "the hung switch's connection closed")
    assert '"event": "of_switch_replaced"' in app.text()
    learn(newcomer, C, 3)
    newcomer.wait_for(lambda r: host_rule_for(newcomer, C))
    assert not host_rule_for(real, C)                      # the new device's rules went to the newcomer
    assert app.wait_status(lambda s: s["switches"] == ["000000000000abcd"] and s["openflow"]["switches"] == 1)
    newcomer.close()
    assert app.stop() == 0


# ---------------------------------------------------------------------------- idle connections


def test_1500_idle_connections_leave_no_thread_behind(apps):
    """1,500 connections that never speak are accepted (limits raised to let them all in),
    then closed by their peer: the app's thread count returns to where it was, and it goes on
    serving switches at once."""
    n = 1500
    app = apps("--ofp-max-connections", "2000", "--ofp-max-connections-per-host", "2000",
               "--ofp-max-handshakes", "2000", "--ofp-max-handshakes-per-host", "2000",
               "--ofp-handshake-timeout", "120", "--ofp-host-connect-burst", "4000")
    sw = ready_switch(app, 0x51)
    app.get("/status")
    time.sleep(1.0)
    pid = app.proc.pid
    before_threads, before_rss = proc_status(pid, "Threads"), proc_status(pid, "VmRSS")
    socks = [socket.create_connection(("127.0.0.1", app.of_port)) for _ in range(n)]
    app.wait_status(lambda s: s["openflow"]["connections"] >= n + 1, timeout=60)
    held_threads, held_rss = proc_status(pid, "Threads"), proc_status(pid, "VmRSS")
    for s in socks:
        s.close()
    t0 = time.monotonic()
    wait(lambda: proc_status(pid, "Threads") <= before_threads, 30, "threads back to the count before")
    released_s = time.monotonic() - t0
    after_threads, after_rss = proc_status(pid, "Threads"), proc_status(pid, "VmRSS")
    t0 = time.monotonic()
    learn(sw, A, 1)
    sw.wait_for(lambda r: host_rule_for(sw, A), timeout=10)
    new_device_s = time.monotonic() - t0
    t0 = time.monotonic()
    sw2 = ready_switch(app, 0x52)
    new_switch_s = time.monotonic() - t0
    print(f"\nidle connections: {n}; threads before {before_threads}, held {held_threads}, after {after_threads} "
          f"(released in {released_s:.1f} s); RSS before {before_rss // 1024} MB, held {held_rss // 1024} MB, "
          f"after {after_rss // 1024} MB; new device's rules in {new_device_s:.2f} s, new switch ready in "
          f"{new_switch_s:.2f} s")
    assert held_threads >= before_threads + n          # they were all held (two threads each)
    assert after_threads <= before_threads
    assert new_device_s < 5 and new_switch_s < 5
    app.wait_status(lambda s: s["openflow"]["connections"] == 2 and s["openflow"]["handshaking"] == 0)
    sw.close()
    sw2.close()
    assert app.stop() == 0


def test_timeouts_limits_and_running_out_of_file_descriptors(apps):
    # (--ofp-host-connect-burst raised: this test's floods are about the caps and accept(), not the back-off)
    app = apps("--ofp-handshake-timeout", "1", "--ofp-echo-interval", "0.5", "--ofp-idle-timeout", "1.5",
               "--ofp-host-connect-burst", "4000")
    sw = ready_switch(app, 0x61)
    pid = app.proc.pid

    # a peer that opens TCP and says nothing, and one that says hello and no more: closed after ~1 s
    mute = socket.create_connection(("127.0.0.1", app.of_port))
    hello_only = socket.create_connection(("127.0.0.1", app.of_port))
    hello_only.sendall(header(0, 8, 1))
    t0 = time.monotonic()
    assert closed_by_peer(mute, 5) and closed_by_peer(hello_only, 5)
    assert time.monotonic() - t0 < 8
    wait(lambda: metric(app, "iot_errors_total", kind="openflow_handshake_timeout") == 2, 5,
         "two handshake timeouts counted")

    # a switch that hangs after its handshake: echo requests, then closed for silence, switch down
    hung = ready_switch(app, 0x62)
    hung.answer_echo = False
    hung_t0 = time.monotonic()
    wait(lambda: hung.closed, 10, "the hung switch closed by the controller")
    assert hung.echo_requests >= 1 and time.monotonic() - hung_t0 < 8
    wait(lambda: '"event": "switch_down", "dpid": "0000000000000062"' in app.text(), 5, "switch_down logged")
    assert metric(app, "iot_errors_total", kind="openflow_idle_timeout") == 1.0
    assert not sw.closed                                    # the healthy switch answers its echoes and stays

    # default limits: a flood from one address gets 64 handshakes at a time, the rest are refused
    before = proc_status(pid, "Threads")
    # counts from a snapshot taken after the hung switch went (/status is published once a tick:
    # an older one would miss earlier connections and skew the flood's count)
    c0 = app.wait_status(lambda s: s["openflow"]["connections"] == 1 and s["openflow"]["handshaking"] == 0
                         and "0000000000000062" not in s["switches"])["openflow"]["counts"]
    flood = []
    peak = 0
    for _ in range(300):
        flood.append(socket.create_connection(("127.0.0.1", app.of_port)))
        peak = max(peak, proc_status(pid, "Threads"))
    seen = lambda s, k: s["openflow"]["counts"].get(k, 0) - c0.get(k, 0)  # noqa: E731
    st = app.wait_status(lambda s: seen(s, "accepted") + seen(s, "refused") == 300, timeout=20)
    peak = max(peak, proc_status(pid, "Threads"))
    assert seen(st, "refused") > 0
    assert peak <= before + 2 * 64 + 16, (before, peak)          # 64 in handshake at a time, two threads each
    for s in flood:
        s.close()
    refused_lines = app.text().count('"event": "of_connection_refused"')
    assert refused_lines <= 25, refused_lines               # counted every time, logged a few times

    # out of file descriptors: accept() fails, the listener backs off and keeps going
    wait(lambda: app.get("/status")["openflow"]["connections"] == 1, 10, "the flood gone")
    used = len(os.listdir(f"/proc/{pid}/fd"))
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (used + 10, hard))
    try:
        many = [socket.create_connection(("127.0.0.1", app.of_port)) for _ in range(40)]
        wait(lambda: metric(app, "iot_errors_total", kind="openflow_accept") >= 1, 10, "accept errors counted")
        assert app.proc.poll() is None
        assert '"event": "of_accept_error"' in app.text() and "Too many open files" in app.text()
        for s in many:
            s.close()
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    sw2 = ready_switch(app, 0x63)                     # served again once descriptors are free
    learn(sw2, A, 1)
    sw2.wait_for(lambda r: host_rule_for(sw2, A))
    assert app.proc.poll() is None
    sw.close()
    sw2.close()
    assert app.stop() == 0


# ---------------------------------------------------------------------------- a flapping switch


def test_a_flapping_switch_backs_off_its_log_is_summarised_and_others_are_served(apps):
    """A switch (from 127.0.0.2) that reconnects as fast as it can for 6 s comes up five times
    (and once per 2 s here), then backs off; its switch_up and rule lines are written for its first time up, then one
    switch_flapping line and counts; another switch (from 127.0.0.1) connects and gets a new
    device's rules meanwhile; after its back-off the flapping switch is served again."""
    app = apps("--ofp-reconnect-backoff-max", "4", "--ofp-reconnect-interval", "2")
    lines0 = app.text().count("\n")
    ups = attempts = 0
    other_ready_s = other_rules_s = None
    t_end = time.monotonic() + 6
    other = None
    while time.monotonic() < t_end:
        try:
            sw = FakeSwitch("127.0.0.1", app.of_port, dpid=0x77, ports=[1, 2], connect_timeout=2,
                            source="127.0.0.2")
        except OSError:
            continue
        attempts += 1
        try:
            sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 0),
                        timeout=1.0)
            ups += 1
        except TimeoutError:
            pass
        sw.close()
        if other is None and attempts == 20:
            t0 = time.monotonic()
            other = ready_switch(app, 0x78)
            other_ready_s = time.monotonic() - t0
            t0 = time.monotonic()
            learn(other, A, 1)
            other.wait_for(lambda r: host_rule_for(other, A), timeout=5)
            other_rules_s = time.monotonic() - t0
    text = app.text()
    assert attempts >= 20 and 5 <= ups <= 9, (attempts, ups)
    assert text.count('"event": "switch_up", "dpid": "0000000000000077"') == 2     # a reconnection is no flap
    assert '"event": "switch_flapping", "dpid": "0000000000000077"' in text
    assert text.count('"dpid": "0000000000000077"') < 60            # its first time up, then summaries
    assert other_ready_s < 2 and other_rules_s < 2, (other_ready_s, other_rules_s)
    st = app.get("/status")["openflow"]["counts"]
    assert st.get("reconnect_backoff", 0) >= 1
    assert text.count("\n") - lines0 < 200
    time.sleep(6.5)           # quiet: a token back (one per 2 s here) and the back-off (at most 4 s) over
    back = FakeSwitch("127.0.0.1", app.of_port, dpid=0x77, ports=[1, 2], source="127.0.0.2")
    back.wait_for(lambda r: flow_mods(back, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 0), timeout=5)
    back.close()
    other.close()
    assert app.stop() == 0


# ---------------------------------------------------------------------------- handlers and fatal failures


def test_exception_in_a_handler_is_logged_counted_and_survived(apps, tmp_path):
    model = tmp_path / "poisoned.json"
    model.write_text(json.dumps({B: ["plug", 0.95, "confirmed"], "poison": [A], "min_packets": 3}))
    app = apps("--engine", "fake_engine:make_poisoned", "--model", str(model))
    sw = ready_switch(app, 0x71)
    learn(sw, A, 1)
    sw.wait_for(lambda r: host_rule_for(sw, A))
    mirror(sw, 4)                                              # A's decision: its handler raises
    wait(lambda: metric(app, "iot_errors_total", kind="handler") >= 1, 20, "the handler error counted")
    # the process's output reaches its log file through a pipe: read until the line is there
    text = wait(lambda: (lambda t: t if "handler _on_result failed on EventResult: RecursionError" in t else None)(
        app.text()), 10, "the handler's failure logged")
    assert "Traceback" in text
    # the event loop goes on: another device is learned and gets its rules, /status moves
    learn(sw, B, 2)
    sw.wait_for(lambda r: host_rule_for(sw, B))
    app.wait_status(lambda s: s["devices"] == 2)
    t0 = time.monotonic()
    assert app.stop() == 0 and time.monotonic() - t0 < 15
    assert '"event": "shutdown"' in app.text()


def test_event_loop_survives_handlers_in_process():
    """guard.run_event_loop on os-ken's app class: a RecursionError, a ValueError, then normal
    events; every event is handled, the errors are counted, the loop stops when asked."""
    from os_ken.base.app_manager import OSKenApp
    from os_ken.controller import event, handler

    class Ev(event.EventBase):
        def __init__(self, n):
            super().__init__()
            self.n = n

    seen = []

    class Probe(OSKenApp):
        def _event_loop(self):
            guard.run_event_loop(self)

        @handler.set_ev_cls(Ev)
        def on_ev(self, ev):
            seen.append(ev.n)
            if ev.n == 1:
                def deep(k):
                    return deep(k + 1)
                deep(0)
            if ev.n == 2:
                raise ValueError("bad value")

    app = Probe()
    handler.register_instance(app)
    before = guard.ERRORS.snapshot().get("handler", 0)
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)
    keep = Keep()
    guard.LOG.addHandler(keep)
    try:
        app.start()
        for i in range(5):
            app._send_event(Ev(i), None)
        wait(lambda: len(seen) == 5, 10, "all events handled")
        t = threading.Thread(target=app.stop)
        t.start()
        t.join(10)
        assert not t.is_alive()
    finally:
        guard.LOG.removeHandler(keep)
    assert seen == [0, 1, 2, 3, 4]
    assert guard.ERRORS.snapshot()["handler"] - before == 2
    failures = [r.getMessage() for r in records if "failed on" in r.getMessage()]
    assert any("RecursionError" in m for m in failures) and any("ValueError: bad value" in m for m in failures)
    assert guard.fatal_reason() is None

    # what no handler may swallow (here KeyboardInterrupt) ends the loop: recorded as fatal,
    # which makes ryu-manager exit 1 with the reason
    seen.clear()
    app2 = Probe()
    handler.register_instance(app2)

    class Stop(event.EventBase):
        pass

    def interrupt(ev):
        raise KeyboardInterrupt("injected")
    app2.register_handler(Stop, interrupt)
    try:
        app2.start()
        app2._send_event(Stop(), None)
        wait(lambda: guard.fatal_reason() is not None, 10, "the fatal failure recorded")
        assert "the event loop of Probe stopped: KeyboardInterrupt: injected" in guard.fatal_reason()
        app2.threads[0].join(10)
        assert not app2.threads[0].is_alive()
    finally:
        app2.is_active = False
        with guard._fatal_lock:
            guard._fatal.clear()


def test_a_parser_that_never_returns_is_interrupted():
    """The last resort behind the checks before parsing: a message parser stuck in a loop is
    interrupted by the monitor after parse_timeout, the message counted as malformed and the
    connection closed; the connection's thread goes on to its end."""
    from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

    from controller_app import ofconn

    class Sock:
        def setsockopt(self, *a):
            pass

        settimeout = shutdown = close = setsockopt

    class Brick:
        event_handlers: dict = {}
        observers: dict = {}

        def get_handlers(self, ev, state=None):
            return []

        def send_event_to_observers(self, ev, state=None):
            pass

    def forever(datapath, version, msg_type, msg_len, xid, buf):
        while True:
            pass

    reg = ofconn.Connections(ofconn.Limits(parse_timeout=0.5))
    reg.start()
    table = ofproto_v1_3_parser._MSG_PARSERS
    saved = table[ofproto_v1_3.OFPT_BARRIER_REPLY]
    table[ofproto_v1_3.OFPT_BARRIER_REPLY] = forever
    result = {}

    def connection():
        c = reg.admit("192.0.2.9", 1, None)
        dp = ofconn.GuardedDatapath(Sock(), ("192.0.2.9", 1), reg, c)
        c.dp = dp
        dp.ofp_brick = Brick()
        dp.set_version(ofproto_v1_3.OFP_VERSION)           # as after the hello
        dp.set_state(ofconn.CONFIG_DISPATCHER)
        t0 = time.monotonic()
        dp.feed(header(21, 8, 7))                         # a barrier reply: its parser never returns
        result["seconds"] = time.monotonic() - t0
        result["closing"] = dp.closing
        reg.leave(c)

    try:
        t = threading.Thread(target=connection, daemon=True)
        t.start()
        t.join(20)
        assert not t.is_alive(), "the parser was not interrupted"
    finally:
        table[ofproto_v1_3.OFPT_BARRIER_REPLY] = saved
        reg.stop()
    assert 0.5 <= result["seconds"] < 5 and result["closing"]
    assert reg.stats["parse_timeout"] == 1 and reg.stats["malformed"] == 1


def test_port_in_use_or_unreadable_tls_files_exit_1_with_the_reason(tmp_path):
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}")

    def run(port, *extra):
        return subprocess.run([sys.executable, "-m", "controller_app.manager", "--ofp-tcp-listen-port", str(port),
                               "--ofp-listen-host", "127.0.0.1", "--engine", "fake_engine:make", "--http-port", "-1",
                               "--inventory-db", str(tmp_path / "i.sqlite"), *extra], capture_output=True, text=True,
                              cwd=ROOT, env=env, timeout=120)

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        r = run(port)
    finally:
        holder.close()
    assert r.returncode == 1
    assert f"cannot go on: cannot listen for OpenFlow on 127.0.0.1:{port}" in r.stderr
    assert "Address already in use" in r.stderr

    missing = tmp_path / "no-such-key.pem"
    r = run(free_port(), "--ofp-ssl-listen-port", str(free_port()), "--ctl-privkey", str(missing),
            "--ctl-cert", str(missing))
    assert r.returncode == 1
    assert "cannot go on: TLS for OpenFlow: cannot load --ctl-cert" in r.stderr and str(missing) in r.stderr


def test_a_switch_is_not_timed_out_while_the_app_holds_its_receive_loop():
    """An app whose event queue is full holds the connection's receive loop in the hand-over:
    the switch's next messages (its echo replies included) wait unread in the socket. That is
    the controller behind, not the switch silent: no idle timeout while the loop is held (here
    3 s against an idle timeout of 1 s); counted from when it reads again."""
    from os_ken.ofproto import ofproto_v1_3

    from controller_app import ofconn

    released = threading.Event()
    chunks = [header(2, 8, 1)]                             # an echo request from the switch

    class Sock:
        def setsockopt(self, *a):
            pass

        settimeout = shutdown = close = setsockopt

        def recv(self, n):
            if chunks:
                return chunks.pop()
            released.wait(0.05)
            raise socket.timeout()

        def sendall(self, data):
            pass

    class Brick:
        observers: dict = {}

        def __init__(self):
            self.event_handlers = {}

        def get_handlers(self, ev, state=None):
            return []

        def send_event_to_observers(self, ev, state=None):
            if type(ev).__name__ == "EventOFPEchoRequest":
                time.sleep(3.0)                             # the app's queue is full for 3 s

    reg = ofconn.Connections(ofconn.Limits(echo_interval=0.3, idle_timeout=1.0))
    reg.start()
    c = reg.admit("192.0.2.10", 1, None)
    dp = ofconn.GuardedDatapath(Sock(), ("192.0.2.10", 1), reg, c)
    c.dp = dp
    brick = Brick()
    dp.ofp_brick = brick
    dp.set_version(ofproto_v1_3.OFP_VERSION)
    dp.id = 0x42                                            # as after the features reply
    dp.set_state(ofconn.MAIN_DISPATCHER)
    reg._ready(c)
    from os_ken.controller import ofp_event
    brick.observers[ofp_event.EventOFPEchoRequest] = {"app": set()}
    t = threading.Thread(target=dp._recv_loop, daemon=True)
    try:
        t.start()
        time.sleep(3.4)                                     # the hand-over takes 3 s, then 0.4 s quiet
        assert not dp.closing and reg.stats["idle_timeout"] == 0
        time.sleep(1.5)                                     # now the switch is silent: timed out
        assert dp.closing and reg.stats["idle_timeout"] == 1
    finally:
        released.set()
        dp.abort("test over")
        t.join(5)
        reg.stop()


def test_rate_limited_log_and_limits_from_conf():
    lines = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())
    lg = logging.getLogger("test.ratelimit")
    lg.propagate = False
    lg.addHandler(Keep())
    rl = guard.RateLimitedLog(lg, burst=3, per=0.3)
    for i in range(100):
        rl.log(logging.WARNING, "k", "line %d", i)
    assert lines == ["line 0", "line 1", "line 2"]
    time.sleep(0.15)
    rl.log(logging.WARNING, "k", "line %d", 100)
    assert lines[-1] == "line 100 (97 similar lines suppressed)"
    rl.log(logging.WARNING, "other", "first of another key")
    assert lines[-1] == "first of another key"

    from oslo_config import cfg as oslo
    from controller_app import ofconn
    conf = oslo.ConfigOpts()
    ofconn.register_opts(conf)
    conf(args=["--ofp-handshake-timeout", "3", "--ofp-max-connections", "10"], default_config_files=[])
    lim = ofconn.limits_from_conf(conf)
    assert lim.handshake_timeout == 3.0 and lim.max_connections == 10 and lim.idle_timeout == 30.0
    conf = oslo.ConfigOpts()
    ofconn.register_opts(conf)
    conf(args=["--ofp-echo-interval", "40"], default_config_files=[])
    with pytest.raises(ValueError, match="--ofp-idle-timeout .* must be longer than --ofp-echo-interval"):
        ofconn.limits_from_conf(conf)


# ---------------------------------------------------------------------------- TLS (no Open vSwitch needed)


@pytest.mark.skipif(not have_openssl(), reason="TLS test needs the openssl command (Debian: openssl)")
def test_tls_with_switch_certificates(apps, tmp_path):
    pki = make_pki(tmp_path / "pki")
    other = make_pki(tmp_path / "other", "rogue")
    port = free_port()
    app = apps("--ofp-ssl-listen-port", str(port), "--ctl-privkey", str(pki["controller"][1]),
               "--ctl-cert", str(pki["controller"][0]), "--ca-certs", str(pki["ca"]))
    app.of_port = port
    sw = FakeSwitch("127.0.0.1", port, dpid=0x81, ports=[1, 2], tls=client_context(pki["ca"], pki["switch"]))
    sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 0))
    learn(sw, A, 1)
    sw.wait_for(lambda r: host_rule_for(sw, A))
    assert '"tls": true, "client_certificates": true' in app.text()

    # no client certificate, then one from another CA: the TLS handshake fails, nothing is served
    for ctx in (client_context(pki["ca"], None), client_context(pki["ca"], other["switch"])):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            tls = ctx.wrap_socket(raw)
            tls.sendall(header(0, 8, 1))
            assert closed_by_peer(tls, 10)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            pass
        finally:
            raw.close()
    wait(lambda: metric(app, "iot_errors_total", kind="openflow_tls") == 2, 10, "two refused TLS handshakes counted")
    app.wait_status(lambda s: s["switches"] == ["0000000000000081"])
    sw.close()
    assert app.stop() == 0
