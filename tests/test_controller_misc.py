"""Framework selection (os-ken or Ryu by what is imported), the default pool resolver, the
learner's buffers and the decision worker."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from classifier.capture.decode import decode_frames
from controller_app.learning import DecisionWorker, Learner
from controller_app.poolres import SeenPoolResolver
from ctl_harness import A, GW, m, udp

ROOT = Path(__file__).resolve().parent.parent

RYU_STUB = {
    "ryu/__init__.py": "",
    "ryu/base/__init__.py": "",
    "ryu/base/app_manager.py": "from os_ken.base.app_manager import *\nfrom os_ken.base.app_manager import "
                               "OSKenApp as RyuApp, lookup_service_brick\n",
    "ryu/cfg.py": "from os_ken.cfg import *\n",
    "ryu/controller/__init__.py": "",
    "ryu/controller/ofp_event.py": "from os_ken.controller.ofp_event import *\n",
    "ryu/controller/event.py": "from os_ken.controller.event import *\n",
    "ryu/controller/handler.py": "from os_ken.controller.handler import *\n",
    "ryu/lib/__init__.py": "",
    "ryu/lib/hub.py": "from os_ken.lib.hub import *\n",
    "ryu/ofproto/__init__.py": "",
    "ryu/ofproto/ofproto_v1_3.py": "from os_ken.ofproto.ofproto_v1_3 import *\n",
    "ryu/ofproto/ofproto_v1_3_parser.py": "from os_ken.ofproto.ofproto_v1_3_parser import *\n",
}


def test_framework_follows_what_the_manager_imported(tmp_path):
    """Under a manager that imported ``ryu`` first, the app class derives from ``RyuApp`` and
    imports everything from ``ryu.*`` (a stand-in package re-exporting os-ken here, since Ryu
    itself does not run on this Python)."""
    for rel, text in RYU_STUB.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    # The stand-in imports os_ken itself; a real Ryu run has ryu's app manager imported and
    # os-ken's not, so the child drops os-ken's from sys.modules before importing the app.
    code = ("import sys, ryu.base.app_manager as am\n"
            "del sys.modules['os_ken.base.app_manager']\n"
            "import controller_app as c\n"
            "assert c.FRAMEWORK == 'ryu', c.FRAMEWORK\n"
            "assert issubclass(c.IotController, am.RyuApp) and c.IotController.__module__ == 'controller_app'\n"
            "assert c.shell.ofp_event.__name__ == 'ryu.controller.ofp_event'\n"
            "print('ok')\n")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    env.pop("IOT_CONTROLLER_FRAMEWORK", None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    r = subprocess.run([sys.executable, "-c", "import controller_app as c, sys; assert 'os_ken' not in sys.modules; "
                        "print(c.FRAMEWORK, c.shell.BaseApp.__name__)"],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT)
    assert r.stdout.split() == ["os_ken", "OSKenApp"], r.stderr


def test_seen_pool_resolver_remembers_each_devices_destinations_per_pool():
    frames = [udp(A, GW, "52.94.1.1"), udp(A, GW, "52.94.1.2"), udp(A, GW, "8.8.8.8"), udp(GW, A, src_ip="1.1.1.1")]
    pk = decode_frames(frames, np.arange(len(frames)) * 10**9, [len(f) for f in frames])
    pools = {"52.94.1.1": "aws", "52.94.1.2": "aws", "8.8.8.8": "google"}
    r = SeenPoolResolver(pool_of=pools.get)
    r.observe(m(A), pk)
    assert [str(n) for n in r.prefixes("aws", m(A))] == ["52.94.1.1/32", "52.94.1.2/32"]
    assert [str(n) for n in r.prefixes("google", m(A))] == ["8.8.8.8/32"]
    assert r.prefixes("aws", m(GW)) == [] and r.prefixes("nowhere", m(A)) == []
    assert SeenPoolResolver().prefixes("aws", m(A)) == []            # no pool_of: nothing, with a warning


def test_seen_pool_resolver_uses_registered_prefixes_when_the_pool_source_gives_them():
    from types import SimpleNamespace as NS
    frames = [udp(A, GW, "52.94.1.1"), udp(A, GW, "8.8.8.8")]
    pk = decode_frames(frames, np.arange(2), [len(f) for f in frames])
    info = {"52.94.1.1": NS(pool="aws", prefix="52.94.0.0/15"), "8.8.8.8": NS(pool="google", prefix="bogus")}
    r = SeenPoolResolver(pool_of=info.get)
    r.observe(m(A), pk)
    assert [str(n) for n in r.prefixes("aws", m(A))] == ["52.94.0.0/15"]
    assert [str(n) for n in r.prefixes("google", m(A))] == ["8.8.8.8/32"]     # unusable prefix: the address


def test_seen_pool_resolver_resolves_each_distinct_address_once_and_fills_the_sessions_pools():
    from classifier.features.devices import split_devices
    from classifier.features.sessions import session_table
    from classifier.pools.resolver import PoolResolver
    frames = [udp(A, GW, "8.8.8.8", sport=40000 + i) for i in range(5)] + [udp(A, GW, "10.1.2.3")]
    pk = decode_frames(frames, np.arange(len(frames)) * 10**9, [len(f) for f in frames])
    sess = session_table(pk, split_devices(pk, devices=[m(A)]))
    calls = []
    with PoolResolver(mode="offline") as pools:
        def table(ips):
            calls.append(len(ips))
            return pools.resolve_table(ips)
        r = SeenPoolResolver(pool_table=table)
        r.observe(m(A), pk, sess)
        assert calls == [6]                                   # one vectorised call for the table
        assert set(sess.pool.tolist()) == {pools.resolve("8.8.8.8").pool, "lan"}
        google = pools.resolve("8.8.8.8")
    assert [str(n) for n in r.prefixes(google.pool, m(A))] == [google.prefix]   # the registered prefix


def test_one_decision_builds_the_device_sessions_once_and_resolves_their_pools_once(synth_capture, monkeypatch):
    """The shell's decision job: the session table is built once (by the engine, for the pool
    observation and for the engine), its pools resolved in one vectorised call, never one
    address at a time; the decision is the engine's own."""
    from types import SimpleNamespace

    import classifier.engine.engine as engine_module
    import controller_app.poolres as poolres_module
    from classifier.capture.decode import read_packets
    from classifier.capture.packets import mac_to_int
    from classifier.engine.engine import load_engine
    from classifier.pools.resolver import PoolResolver
    from controller_app import shell
    from controller_app.intents import DecideRequest
    path, _, net = synth_capture
    pk = read_packets(str(path))
    mac = mac_to_int(next(d.mac for d in net.devices if d.category == "plug"))
    engine = load_engine()
    expected = engine.decide(pk, mac)
    builds, tables = [], []
    for module in (engine_module, poolres_module):
        real = module.session_table
        monkeypatch.setattr(module, "session_table", lambda *a, real=real, **k: builds.append(1) or real(*a, **k))
    with PoolResolver(mode="offline") as pools:
        engine.resolver = pools
        real_table = pools.resolve_table
        monkeypatch.setattr(pools, "resolve_table", lambda ips: tables.append(len(ips)) or real_table(ips))
        monkeypatch.setattr(pools, "resolve", lambda ip: pytest.fail(f"{ip} resolved on its own"))
        monkeypatch.setattr(pools, "resolve_cached_or_offline", lambda ip: pytest.fail(f"{ip} resolved on its own"))
        job = SimpleNamespace(engine=engine, resolver=SeenPoolResolver(pool_table=pools.resolve_table),
                              _share_sessions=shell.takes_sessions(engine), _engine_identity=True,
                              _explain_later=True, _worker_addresses=collections.deque())
        d = shell.IotControllerShell._decide(job, DecideRequest(mac, pk, None))
    assert job._share_sessions and not shell.takes_sessions(SimpleNamespace(decide=lambda pk, mac, now_ns=None: None))
    assert expected is not None and engine.explained(d) == expected
    assert len(builds) == 1 and len(tables) == 1
    assert any(job.resolver.seen[mac].values())
    # and where the device is, for the page: the source address of what it sent
    plug = next(d for d in net.devices if d.category == "plug")
    assert [(m_, a) for m_, a, _ in job._worker_addresses] == [(mac, plug.ip)], list(job._worker_addresses)


def test_learner_files_sent_and_received_and_trims_oldest():
    frames = [udp(A, GW, "8.8.8.8", size=i) for i in range(10)] + [udp(GW, A, src_ip="8.8.8.8")]
    pk = decode_frames(frames, np.arange(len(frames)), [len(f) for f in frames])
    lr = Learner(max_packets=8)
    n = lr.add(pk, pk.eth_src == m(A), pk.eth_dst == m(A))
    assert n == 11 and len(lr.packets(m(A))) == 7                      # over 8: the oldest dropped, down to 7
    assert lr.packets(m(A)).ts_ns.tolist() == list(range(4, 11))
    assert len(lr.packets(m(GW))) == 0
    kept = lr.packets(m(A))
    assert lr.nbytes() == 64 * kept.nbytes() // len(kept)         # its store counts, with its room (64 rows)


def test_a_learner_at_its_cap_keeps_exactly_the_newest_packets_over_batches_of_any_size():
    """Whatever the batch sizes, the buffer is the newest rows in arrival order: all of them up to
    ``max_packets``, and over it the newest seven eighths of it; its first packet's time is
    where the engine's segments then start; a table handed out
    earlier never changes as later batches come, are dropped or the buffer grows, and two tables
    that name the same rows of the same store hold the same packets there."""
    rng = np.random.default_rng(5)
    sizes = [1, 7, 3, 12, 1, 1, 20, 5, 9, 2, 30, 4]
    frames = [udp(A, GW, "8.8.8.8", size=i % 200) for i in range(sum(sizes))]
    pk = decode_frames(frames, np.arange(len(frames)) * 10, [len(f) for f in frames])
    for cap in (1, 5, 8, 13, 40, 200):
        lr, at, handed, held = Learner(max_packets=cap), 0, [], 0
        for n in sizes:
            chunk = pk.take(slice(at, at + n))
            lr.add(chunk, chunk.eth_src == m(A), chunk.eth_dst == m(A))
            at += n
            held += n
            if held > cap:
                held = cap - cap // 8
            got, want = lr.packets(m(A)), pk.take(slice(at - held, at))
            assert got.ts_ns.tolist() == want.ts_ns.tolist(), (cap, at)
            assert got.wire_len.tolist() == want.wire_len.tolist() and got.src_ip.tolist() == want.src_ip.tolist()
            assert lr.buffers[m(A)].n == len(want) and lr.buffers[m(A)].first_ns == int(want.ts_ns[0])
            if rng.random() < 0.5:
                handed.append((got, want.ts_ns.tolist()))
        for got, was in handed:
            assert got.ts_ns.tolist() == was                    # unchanged by what came after
        by_row = {}
        for got, _ in handed:
            store, first = got.rows
            for i, t in enumerate(got.ts_ns.tolist()):
                assert by_row.setdefault((store, first + i), t) == t


def test_decision_worker_runs_jobs_off_the_caller_thread_and_reports_errors():
    got, done = [], threading.Event()

    def deliver(kind, key, result, error):
        got.append((kind, key, result, type(error).__name__ if error else None, threading.current_thread().name))
        if len(got) == 2:
            done.set()
    w = DecisionWorker(deliver)
    assert w.submit("decide", 1, lambda: 42)
    assert w.submit("pools", 1, lambda: 1 / 0)
    assert done.wait(10)
    w.stop()
    assert got[0][:4] == ("decide", 1, 42, None) and got[1][:4] == ("pools", 1, None, "ZeroDivisionError")
    assert all(g[4] == "iot-decide" for g in got)
