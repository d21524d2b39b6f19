"""Fuzzing the core with random packet-ins: malformed, truncated, unknown ethertypes, unknown
switches and cookies, forged topology probes. The core never raises, every intent it emits is
one the (strict) fake switch accepts, every packet-in is counted, and forwarding still works."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from controller_app import lldp
from controller_app.core import PacketInBatch
from controller_app.intents import CookieKind, cookie
from ctl_harness import A, B, Harness, arp, m, udp

KINDS = [int(k) for k in CookieKind] + [0, 0x99, 0xFF]

frame_st = st.one_of(
    st.binary(min_size=0, max_size=200),                                       # noise, often shorter than 14
    st.builds(lambda f, cut: f[:cut], st.sampled_from([udp(A, B), arp(A), udp(B, A, size=700)]),
              st.integers(0, 140)),                                            # truncated real frames
    st.builds(lambda et, body: bytes.fromhex("02000000000b02000000000a") + et.to_bytes(2, "big") + body,
              st.integers(0, 0xFFFF), st.binary(max_size=80)),                 # any ethertype
    st.builds(lambda d, p, cut: lldp.probe_frame(d, p)[:cut], st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1),
              st.integers(0, 60)),                                             # forged / cut probes
)

row_st = st.tuples(st.sampled_from([1, 1, 1, 2, 999]), st.integers(0, 2**32 - 1), st.sampled_from(KINDS),
                   st.sampled_from([0, m(A), m(B), 0xFFFFFFFFFFFF]), st.integers(0, 70000), frame_st)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(row_st, min_size=1, max_size=40), min_size=1, max_size=6))
@example([[(1, 0, 16, 0, 0, b""), (1, 1, 18, 0, 0, bytes(6) + bytes.fromhex("02000000000b") + bytes(2))]])   # B at A's port
def test_random_packet_ins_never_break_the_core(batches):
    h = Harness()
    h.connect(1, [1, 2, 3])
    h.connect(2, [1, 2])
    h.send(1, 1, arp(A))
    h.send(1, 2, arp(B))
    total = h.core.counters["packet_ins"]
    for batch in batches:
        rows = [(dpid, port, cookie(kind, mac) if kind < 256 else 0, min(tl, 65535), h.ns + i, data)
                for i, (dpid, port, kind, mac, tl, data) in enumerate(batch)]
        intents = h.core.packet_ins(PacketInBatch.from_rows(rows), h.ns)
        total += len(rows)
        h.run(intents)                                   # the fake switch raises on anything invalid
        h.tick(1.0)
    assert h.core.counters["packet_ins"] >= total
    # the core still forwards (the random rows may have moved A or B, say B to A's port: both are
    # seen again where they are first)
    h.send(1, 1, arp(A))
    h.send(1, 2, arp(B))
    assert h.send(1, 1, udp(A, B)).received == [(1, 2)]


# ---------------------------------------------------------------------------- the OpenFlow receive path
#
# The bytes a switch sends, through the controller's framing, os-ken's parsers, os-ken's own
# OpenFlow handlers (hello, features, port description, echo, error) and the app's handlers
# (packet-in, switch up/down, port status, flow removed, error) into the core: well-formed
# messages of most kinds and broken ones (truncated, oversized, bytes flipped, inner lengths
# overwritten, unknown or other types and versions, random bodies, lying header lengths), in
# every connection state. In process (>= 100,000 cases), then a smaller number over TCP
# against the real app.

import logging  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402


import struct  # noqa: E402

from testing.ofmsgs import Mutator, msg  # noqa: E402

FUZZ_CASES = int(os.environ.get("IOT_FUZZ_CASES", 100_000))


class _NullSocket:
    def setsockopt(self, *a):
        pass

    def settimeout(self, *a):
        pass

    def shutdown(self, *a):
        pass

    def close(self):
        pass


def _receive_path():
    """os-ken's OpenFlow service (its handlers) and the app's handlers, wired as in the running
    app, around datapaths that discard what is sent to them."""
    from os_ken.controller import handler as fw_handler
    from os_ken.controller import ofp_event, ofp_handler
    from os_ken.controller.handler import MAIN_DISPATCHER

    from controller_app import ofconn, shell
    from controller_app.config import AppConfig
    from controller_app.core import Core, Settings
    from controller_app.events import EventLog
    from controller_app.guard import FlapLog, RateLimitedLog
    from controller_app.observe import Metrics
    from controller_app.policy import default_policy_path, load_policy
    from controller_app.traffic import TrafficHistory

    S = shell.IotControllerShell

    class App:
        name = "IotController"
        is_active = True
        _packet_in, _batch_full, _flush, _hold_early, _run = S._packet_in, S._batch_full, S._flush, S._hold_early, S._run
        _packet_ins_bulk, _add_rows = S._packet_ins_bulk, S._add_rows
        _state_change, _port_status, _flow_removed, _error = S._state_change, S._port_status, S._flow_removed, S._error
        _flow_stats = S._flow_stats

        def __init__(self):
            self.cfg = AppConfig()
            self.core = Core(Settings(), load_policy(default_policy_path()))
            self.metrics = Metrics()
            self.traffic = TrafficHistory()
            self.datapaths = {}
            self._batch, self._early, self._flush_requested = [], [], False
            self._batch_lock = threading.Lock()
            self._drained = threading.Condition()
            self._switch_error_log = RateLimitedLog(logging.getLogger("controller_app"), burst=5, per=60.0)
            self._flaps = FlapLog(logging.getLogger("controller_app"))
            self.timeline = EventLog()         # switches up and down, decisions: the page's timeline
            self._last_flush = time.monotonic()
            self.worker = self

        def submit(self, *a):          # the classification worker: not needed here
            return True

        def send_event(self, name, ev):  # the batch is full: decode it now
            self._flush()

    class Datapath(ofconn.GuardedDatapath):
        def send(self, buf, close_socket=False):
            return not self.closing

        _try_send = send

        def probe(self, timeout):      # a connected switch that answers
            return True

    from os_ken.ofproto import ofproto_protocol
    ofproto_protocol.set_app_supported_versions(shell.IotControllerShell.OFP_VERSIONS)   # as the app manager does
    from classifier.capture.decode import decode_frames
    decode_frames([bytes(64)], [0], [64])          # the decoder's compiled kernel, loaded once (as the app does)
    # as ryu-manager does, before the service starts (the datapaths here come up again and again: no back-off)
    reg = ofconn.install(ofconn.Limits(max_malformed=10**9, reconnect_burst=10**9))
    app = App()
    brick = ofp_handler.OFPHandler()
    fw_handler.register_instance(brick)
    failures: list = []

    @fw_handler.set_ev_handler(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(ev):                    # the app's handler in the receive path, failures recorded
        try:
            app._packet_in(ev)
        except Exception as exc:  # noqa: BLE001 - recorded: the test requires none
            failures.append(("_packet_in", type(ev).__name__, f"{type(exc).__name__}: {exc}"[:300]))

    brick.register_handler(ofp_event.EventOFPPacketIn, packet_in)

    def packet_ins_bulk(dpid, rows):      # the receive loop's bulk path, as the app registers it
        try:
            app._packet_ins_bulk(dpid, rows)
        except Exception as exc:  # noqa: BLE001 - recorded: the test requires none
            failures.append(("_packet_ins_bulk", "rows", f"{type(exc).__name__}: {exc}"[:300]))

    reg.take_packet_ins(packet_ins_bulk, packet_in)
    observers: dict = {}
    for name in ("_state_change", "_port_status", "_flow_removed", "_error", "_flow_stats"):
        m = getattr(app, name)
        for ev_cls, c in m.callers.items():
            observers.setdefault(ev_cls, []).append((m, c.dispatchers))
            brick.register_observer(ev_cls, app.name, set(c.dispatchers))

    def to_observers(ev, state=None):   # the app's event loop, run at once
        for m, states in observers.get(ev.__class__, ()):
            if not states or state in states:
                try:
                    m(ev)
                except Exception as exc:  # noqa: BLE001 - recorded: the test requires none
                    failures.append((m.__name__, type(ev).__name__, f"{type(exc).__name__}: {exc}"[:300]))

    brick.send_event_to_observers = to_observers
    return app, brick, reg, Datapath, failures


def test_openflow_receive_path_fuzz_in_process():
    from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

    from controller_app import fastpath

    table = ofproto_v1_3_parser._MSG_PARSERS
    saved = table[ofproto_v1_3.OFPT_PACKET_IN]
    fastpath.install(ofproto_v1_3_parser, ofproto_v1_3)     # the app's packet-in parser, as the app does
    try:
        _fuzz_receive_path()
    finally:
        table[ofproto_v1_3.OFPT_PACKET_IN] = saved


def _fuzz_receive_path():
    from os_ken.controller.handler import CONFIG_DISPATCHER, HANDSHAKE_DISPATCHER, MAIN_DISPATCHER

    from controller_app import guard

    app, brick, reg, Datapath, failures = _receive_path()
    records: list = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)
    keep = Keep(level=logging.WARNING)
    root = logging.getLogger()
    root.addHandler(keep)
    handler_errors_before = guard.ERRORS.snapshot().get("openflow_handler", 0)

    def fresh(state, dpid):
        dp = Datapath(_NullSocket(), ("192.0.2.7", 40000 + dpid), reg)
        dp.ofp_brick = brick
        if state != HANDSHAKE_DISPATCHER:
            dp.set_state(CONFIG_DISPATCHER)
        if state == MAIN_DISPATCHER:
            dp.id, dp.ports = dpid, {}
            dp.set_state(MAIN_DISPATCHER)
        assert dp.state == state
        return dp

    plan = [(HANDSHAKE_DISPATCHER, 0x10), (CONFIG_DISPATCHER, 0x20), (MAIN_DISPATCHER, 0x30),
            (MAIN_DISPATCHER, 0x31)]
    dps = [fresh(s, d) for s, d in plan]
    mut = Mutator(seed=20240613)
    mut.corpus += [msg(6, struct.pack("!QIBB2xII", dpid, 256, 254, 0, 0x4F, 0)) for _, dpid in plan[2:]]  # claimants
    kinds: Counter = Counter()
    rebuilt = 0
    slowest = (0.0, None)
    t_start = time.monotonic()
    try:
        for i in range(FUZZ_CASES):
            k = i % len(dps)
            dp = dps[k]
            kind, raw = mut.case()
            kinds[kind] += 1
            t0 = time.perf_counter()
            dp.feed(raw)                       # must not raise, whatever the bytes
            dt = time.perf_counter() - t0
            if dt > slowest[0]:
                slowest = (dt, (kind, raw[:64].hex()))
            dp._rx.clear()
            state, dpid = plan[k]
            if dp.closing or dp.state != state or (state == MAIN_DISPATCHER and dp.id != dpid):
                dp.close()                     # its own thread: announces the switch down
                dps[k] = fresh(state, dpid)
                rebuilt += 1
        app._flush()
    finally:
        root.removeHandler(keep)
    elapsed = time.monotonic() - t_start
    stats = reg.status()["counts"]
    handler_errors = guard.ERRORS.snapshot().get("openflow_handler", 0) - handler_errors_before
    print(f"\nOpenFlow receive path, in process: {FUZZ_CASES} cases in {elapsed:.1f} s "
          f"({FUZZ_CASES / elapsed:,.0f}/s); slowest {slowest[0] * 1000:.1f} ms ({slowest[1][0]}); "
          f"malformed {stats.get('malformed', 0)}, handler errors {handler_errors}, refused takeovers "
          f"{stats.get('takeover', 0)}, datapaths rebuilt {rebuilt}, log lines {len(records)}; "
          f"core packet-ins {app.core.counters.get('packet_ins', 0)}, kinds {dict(kinds)}")
    assert not failures, failures[:5]                      # the app's handlers never raise
    assert sum(kinds.values()) == FUZZ_CASES and min(kinds.values()) > FUZZ_CASES // 200
    assert stats.get("malformed", 0) > FUZZ_CASES // 10    # the broken ones were seen as such
    assert stats.get("ignored", 0) > 0                     # kinds no handler takes were not parsed
    assert app.core.counters.get("packet_ins", 0) > 0      # and the good ones went through
    assert stats.get("takeover", 0) > 0                    # claims on connected datapath ids were refused
    assert slowest[0] < 1.0                                # no case hangs
    assert len(records) <= 300, Counter(r.getMessage()[:60] for r in records).most_common(5)


def test_openflow_fuzz_over_tcp(tmp_path):
    """Fuzzed messages from switches that completed their handshake and from peers that did
    not, over TCP, against the real app: it stays up, serves a new switch, counts what it
    refused, and its log stays small."""
    from test_controller_app import App, flow_mods, learn
    from testing.fakeswitch import FakeSwitch
    from controller_app.intents import Table

    app = App(tmp_path)
    mut = Mutator(seed=7)
    sent = disconnected = 0
    try:
        guard_sw = FakeSwitch("127.0.0.1", app.of_port, dpid=0x900, ports=[1, 2])
        guard_sw.wait_for(lambda r: flow_mods(guard_sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 0))
        for c in range(40):
            if c % 2 == 0:
                sw = FakeSwitch("127.0.0.1", app.of_port, dpid=0x1000 + c, ports=[1, 2, 3])
                sw.wait_for(lambda r: flow_mods(sw, lambda fm: fm.priority == 0))
                out = sw.sock
            else:
                sw = None
                out = socket.create_connection(("127.0.0.1", app.of_port), timeout=10)
            try:
                for _ in range(150):
                    out.sendall(mut.case()[1])
                    sent += 1
            except OSError:
                disconnected += 1          # the controller closed it (malformed, unframeable)
            finally:
                if sw is not None:
                    sw.close()
                else:
                    out.close()
        guard_sw.echo(timeout=20)                        # the first switch is still served
        learn(guard_sw, "02:00:00:00:00:0a", 1)
        guard_sw.wait_for(lambda r: flow_mods(guard_sw, lambda fm: fm.table_id == Table.ETH_SRC and fm.priority > 0))
        late = FakeSwitch("127.0.0.1", app.of_port, dpid=0x2000, ports=[1])
        late.wait_for(lambda r: flow_mods(late, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 0))
        # /status is a snapshot the app publishes each tick: read one taken after the late
        # switch came up (so after every fuzzed connection), not an older one
        status = app.wait_status(lambda s: f"{0x2000:016x}" in s["switches"], timeout=30)
        counts = status["openflow"]["counts"]
        metrics = app.get("/metrics").decode()
        malformed = next(float(x.split()[-1]) for x in metrics.splitlines()
                         if x.startswith('iot_errors_total{kind="openflow_malformed"}'))
        assert app.proc.poll() is None
        late.close()
        guard_sw.close()
        assert app.stop() == 0
    finally:
        if app.proc.poll() is None:
            app.proc.kill()
            app.proc.wait()
    lines = app.text().splitlines()
    noisy = [x for x in lines if '"rule"' not in x and "packet_out" not in x]
    print(f"\nOpenFlow over TCP: {sent} fuzzed messages on 40 connections ({disconnected} closed by the "
          f"controller while sending); malformed counted {malformed:.0f}; log {len(lines)} lines, "
          f"{len(noisy)} besides rule changes, {os.path.getsize(app.log)} bytes; connection counts {counts}")
    assert malformed >= 100 and malformed >= counts["malformed"] and counts["ignored"] > 0
    assert len(noisy) <= 250, "\n".join(noisy[-20:])
    assert app.text().count("Traceback") <= 10
