"""RDAP behind a network that swallows replies: the decision engine answers from the cache or
the offline database at once (as fast as offline), looks addresses up in the background, and
later decisions use what RDAP answered. Background look-ups back off when the network fails."""

from __future__ import annotations

import time

import numpy as np
import pytest

from classifier.capture.decode import read_packets
from classifier.capture.packets import ip_from_str, mac_to_int
from classifier.engine.engine import load_engine
from classifier.features.devices import split_devices
from classifier.features.sessions import session_table
from classifier.pools.resolver import PoolResolver, fill_pools
from rdap_server import BlackHole, RdapServer, network_response, wait_for

from test_pools import loopback_only  # noqa: F401  (fixture)


def _timed(engine, pk, mac):
    t0 = time.perf_counter()
    d = engine.decide(pk, mac)
    return (None if d is None else (d.category, round(d.confidence, 6), d.stage)), time.perf_counter() - t0


def test_black_holed_rdap_does_not_delay_decisions(synth_capture, tmp_path, loopback_only):  # noqa: F811
    path, _, net = synth_capture
    pk = read_packets(str(path))
    macs = [mac_to_int(d.mac) for d in net.devices]
    offline = load_engine()
    for mac in macs:                                                   # warm-up (kernels, torch)
        offline.decide(pk, mac)
    timeout = 5.0                                                      # the default: a wait would show
    with BlackHole() as hole:
        resolver = PoolResolver("rdap", cache_path=tmp_path / "pools.sqlite", bootstrap_url=hole.url,
                                timeout=timeout, retries=2, backoff=1.0, workers=2)
        engine = load_engine(resolver=resolver)
        try:
            rows = []
            for mac in macs:                       # interleaved, so that other work on the machine hits both
                rows.append((_timed(offline, pk, mac), _timed(engine, pk, mac)))
            assert wait_for(lambda: hole.connections >= 1, 5.0)       # look-ups were sent, into the hole
        finally:
            t0 = time.monotonic()
            resolver.close()
            assert time.monotonic() - t0 < timeout + 1.0               # closing waits for one time-out at most
    assert [a for (a, _), _ in rows] == [b for _, (b, _) in rows]      # the offline answers, unchanged
    assert sum(a is not None for (a, _), _ in rows) >= 5
    t_off = [t for (_, t), _ in rows]
    t_rdap = [t for _, (_, t) in rows]
    # no decision waited for a look-up (one would add at least the 5 s time-out)
    assert all(b < a + timeout / 2 for a, b in zip(t_off, t_rdap)), (t_off, t_rdap)
    print(f"decisions for {len(macs)} devices: offline {sum(t_off):.3f} s, RDAP black-holed {sum(t_rdap):.3f} s "
          f"(slowest {max(t_off):.3f} / {max(t_rdap):.3f} s)")


def test_later_decisions_use_rdap_answers(synth_capture, tmp_path, loopback_only):  # noqa: F811
    path, _, net = synth_capture
    pk = read_packets(str(path))
    cam = next(d for d in net.devices if d.category == "camera")
    sess = session_table(pk, split_devices(pk, devices=[mac_to_int(cam.mac)]))
    public = sorted({a for a in _texts(sess.remote_ip) if not a.startswith("192.168.")})
    assert public
    responses = {a: network_response(f"{a}/32", "CAMCLOUD", registrant="Camcloud Example", origin_as=64500)
                 for a in public}
    with RdapServer(responses, behaviour="slow", delay=0.3) as srv:
        with PoolResolver("rdap", cache_path=tmp_path / "pools.sqlite", bootstrap_url=srv.url, timeout=2.0) as r:
            engine = load_engine(resolver=r)
            t0 = time.perf_counter()
            first = fill_pools(sess, resolver=r, blocking=False).pool.copy()
            assert time.perf_counter() - t0 < 0.25                     # the server takes 0.3 s a request
            assert "as64500-camcloud-example" not in set(first)
            engine.decide(pk, mac_to_int(cam.mac))
            assert wait_for(lambda: all(r.cache.lookup(_value(a)) is not None for a in public), 10.0)
            later = fill_pools(sess, resolver=r, blocking=False).pool
            assert engine.decide(pk, mac_to_int(cam.mac)) is not None
    public_rows = np.array([not a.startswith("192.168.") for a in _texts(sess.remote_ip)])
    assert set(later[public_rows]) == {"as64500-camcloud-example"}
    assert sorted(set(srv.requests)) == sorted(f"/bootstrap/ip/{a}" for a in public)   # each asked once


def test_background_look_ups_pause_when_the_network_fails(tmp_path, loopback_only):  # noqa: F811
    addresses = [f"52.94.{i}.1" for i in range(20)]
    with BlackHole() as hole:
        r = PoolResolver("rdap", cache_path=tmp_path / "pools.sqlite", bootstrap_url=hole.url, timeout=0.3,
                         retries=0, workers=1, pause=30.0)
        try:
            t0 = time.monotonic()
            infos = [r.resolve_cached_or_offline(a) for a in addresses]
            assert time.monotonic() - t0 < 0.5 and {i.source for i in infos} == {"offline"}
            assert wait_for(r.background_paused, 5.0)
            assert r.paused == 1
            time.sleep(0.5)
            seen = hole.connections
            assert 3 <= seen <= 4                                      # three failures, then the queue is dropped
            infos = [r.resolve_cached_or_offline(f"52.95.{i}.1") for i in range(5)]   # paused: nothing sent
            time.sleep(0.5)
            assert hole.connections == seen and {i.source for i in infos} == {"offline"}
            assert not r._inflight
        finally:
            r.close()


def test_pause_doubles_and_a_success_resets_it(tmp_path):
    r = PoolResolver("rdap", cache_path=tmp_path / "pools.sqlite", bootstrap_url="http://127.0.0.1:9/x",
                     backoff_after=2, pause=10.0, max_pause=25.0)
    try:
        pauses = []
        for _ in range(4):
            r._paused_until = 0.0                                      # the pause ran out
            r._network_failed()
            r._network_failed()
            pauses.append(r._pause)
        assert pauses == [10.0, 20.0, 25.0, 25.0] and r.background_paused()
        r._network_ok()
        assert not r.background_paused() and r._pause == 0.0
    finally:
        r.close()


def _texts(ips):
    from classifier.capture.packets import ips_to_str
    return list(ips_to_str(ips))


def _value(text):
    hi, lo = ip_from_str(text)
    return (int(hi) << 64) | int(lo)
