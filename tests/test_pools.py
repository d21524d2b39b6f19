"""IP pools: special addresses, offline databases, RDAP through ipwhois against a loopback server,
the SQLite cache across processes, the vocabulary and the CLI."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from classifier.capture.packets import ip_from_str
from classifier.features.sessions import Sessions
from classifier.pools.asndb import SPECIAL_POOLS, PoolError, SpecialClassifier, value_of
from classifier.pools.cache import PoolCache, default_cache_path
from classifier.pools.resolver import PoolResolver, fill_pools
from classifier.pools.vocabulary import OOV_ID, PAD_ID, PoolVocabulary, pool_name
from rdap_server import RdapServer, closed_port_url, network_response, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ips_array(texts):
    return np.array([ip_from_str(t) for t in texts], dtype=np.uint64).reshape(-1, 2)


@pytest.fixture
def loopback_only(monkeypatch):
    """Fails any connection or name look-up that would leave the machine; records loopback ones."""
    seen = {"connect": [], "resolve": []}
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def loopback(host) -> bool:
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return host == "localhost"

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        seen["connect"].append(host)
        if isinstance(address, tuple) and not loopback(host):
            raise AssertionError(f"a test tried to connect to {address}")
        return real_connect(self, address)

    def getaddrinfo(host, *args, **kw):
        seen["resolve"].append(host)
        if host is not None and not loopback(host if isinstance(host, str) else host.decode()):
            raise AssertionError(f"a test tried to resolve {host!r}")
        return real_getaddrinfo(host, *args, **kw)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return seen


FAST = dict(timeout=0.5, retries=1, backoff=0.05, max_backoff=0.1, deadline=5.0)


def rdap_resolver(tmp_path, url, mode="rdap", name="cache.sqlite", **kw):
    opts = dict(FAST)
    opts.update(kw)
    return PoolResolver(mode, cache_path=tmp_path / name, bootstrap_url=url, **opts)


GENERATED = {
    "8.8.8.8": network_response("8.8.8.0/24", "LVLT-GOGL-8-8-8", country="US", registrant="Google LLC",
                                origin_as=15169),
    "23.142.129.1": network_response("23.142.129.0/24", "EXAMPLE-HOLDER-NET", country="US",
                                     registrant="Example Holder Inc."),
    "2001:4860:4860::8888": network_response("2001:4860::/32", "GOOGLE-IPV6", country="US",
                                             registrant="Google LLC"),
}

SPECIAL_CASES = [
    ("192.168.1.10", "lan"), ("10.20.30.40", "lan"), ("172.16.5.4", "lan"), ("fd00::1234", "lan"),
    ("127.0.0.1", "loopback"), ("::1", "loopback"),
    ("169.254.10.1", "link-local"), ("fe80::1", "link-local"),
    ("224.0.0.251", "multicast"), ("239.255.255.250", "multicast"), ("ff02::fb", "multicast"),
    ("255.255.255.255", "broadcast"),
    ("100.64.0.1", "private"),
    ("0.0.0.0", "reserved"), ("::", "reserved"), ("192.0.2.1", "reserved"), ("240.0.0.1", "reserved"),
    ("2001:db8::1", "reserved"), ("fec0::1", "reserved"),
]


# --------------------------------------------------------------------------- special and offline


@pytest.mark.parametrize("ip,pool", SPECIAL_CASES)
def test_special_addresses_have_named_pools(ip, pool):
    info = PoolResolver().resolve(ip)
    assert (info.pool, info.source) == (pool, "special")


def test_special_classifier_is_vectorised_and_agrees_with_one_by_one():
    texts = [ip for ip, _ in SPECIAL_CASES] + ["8.8.8.8", "2a00:1450::1", "::ffff:192.168.0.1"]
    got = SpecialClassifier().classify(ips_array(texts)).tolist()
    assert got == [p for _, p in SPECIAL_CASES] + ["", "", "lan"]


def test_special_classifier_answers_the_same_in_blocks_of_any_size():
    """Addresses are tested against every rule at once, a block of them at a time: the block
    boundaries change no answer (the first rule that holds wins, as in the rules' order)."""
    texts = ([ip for ip, _ in SPECIAL_CASES] + ["8.8.8.8", "2a00:1450::1", "::ffff:192.168.0.1"]) * 7
    ips = ips_array(texts)
    whole = SpecialClassifier(["192.168.0.0/16"]).classify(ips).tolist()
    small = SpecialClassifier(["192.168.0.0/16"])
    small.BLOCK = 3
    assert small.classify(ips).tolist() == whole
    assert whole[:len(SPECIAL_CASES)] == [p if p != "private" or not ip.startswith("192.168.") else "lan"
                                          for ip, p in SPECIAL_CASES]


def test_lan_networks_and_their_broadcast():
    r = PoolResolver(lan_networks=["198.51.0.0/16", "2a01:4f8:1::/48"])
    assert r.resolve("198.51.7.7").pool == "lan"
    assert r.resolve("198.51.255.255").pool == "broadcast"
    assert r.resolve("2a01:4f8:1::5").pool == "lan"
    assert r.resolve("198.52.0.1").pool != "lan"
    with pytest.raises(PoolError, match="LAN prefix"):
        PoolResolver(lan_networks=["300.1.0.0/16"])


@pytest.mark.parametrize("ip,asn,pool,registry", [
    ("8.8.8.8", 15169, "as15169-google", "arin"),
    ("2001:4860:4860::8888", 15169, "as15169-google", "arin"),
    ("1.1.1.1", 13335, "as13335-cloudflare", "apnic"),
    ("52.94.236.248", 16509, "as16509-amazon", "arin"),
])
def test_offline_lookups_of_well_known_addresses(ip, asn, pool, registry):
    info = PoolResolver().resolve(ip)
    assert (info.asn, info.pool, info.source, info.registry) == (asn, pool, "offline", registry)
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(info.prefix)
    assert info.country


def test_offline_mode_opens_no_cache_and_needs_no_network(tmp_path, loopback_only):
    cache = tmp_path / "never.sqlite"
    r = PoolResolver("offline", cache_path=cache)
    assert r.resolve("8.8.8.8").pool == "as15169-google"
    assert r.cache is None and not cache.exists()
    assert loopback_only["connect"] == [] and loopback_only["resolve"] == []


def test_pool_names():
    assert pool_name(15169, "Google") == "as15169-google"
    assert pool_name(64500, "") == "as64500"
    assert pool_name(None, "Société Générale S.A.") == "org-societe-generale-s-a"
    assert pool_name(None, "") == "unknown"


def test_resolve_many_matches_resolve_and_looks_each_address_up_once():
    texts = ["8.8.8.8", "192.168.1.2", "1.1.1.1", "8.8.8.8", "ff02::fb", "2001:4860:4860::8888", "1.1.1.1",
             "23.142.129.1"] * 50
    r = PoolResolver()
    calls = []
    real = r.offline.lookup

    def counting(value):
        calls.append(value)
        return real(value)

    r.offline.lookup = counting
    got = r.resolve_many(ips_array(texts))
    assert got.dtype == object and len(got) == len(texts)
    assert sorted(calls) == sorted({value_of(t) for t in texts if SpecialClassifier().pool_of(value_of(t)) == ""})
    other = PoolResolver()
    one_by_one = [other.resolve(t).pool for t in texts]
    assert got.tolist() == one_by_one
    assert r.resolve_many(np.zeros((0, 2), np.uint64)).shape == (0,)


def test_mmdb_offline_database(tmp_path):
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-ASN")
    w.insert_network(IPSet(["8.8.8.0/24"]), {"autonomous_system_number": 15169,
                                            "autonomous_system_organization": "GOOGLE"})
    w.insert_network(IPSet(["2001:4860::/32"]), {"autonomous_system_number": 15169,
                                                "autonomous_system_organization": "GOOGLE"})
    path = tmp_path / "asn.mmdb"
    w.to_db_file(str(path))
    r = PoolResolver(offline_db=str(path))
    a = r.resolve("8.8.8.8")
    assert (a.asn, a.pool, a.prefix, a.source) == (15169, "as15169-google", "8.8.8.0/24", "offline")
    b = r.resolve("2001:4860:4860::8888")
    assert (b.asn, b.prefix) == (15169, "2001:4860::/32")
    assert r.resolve("1.1.1.1").pool == "unknown"
    assert "GeoLite2-ASN" in r.offline.name


def test_bad_offline_database_is_named(tmp_path):
    bad = tmp_path / "broken.mmdb"
    bad.write_bytes(b"not a maxmind database" * 10)
    with pytest.raises(PoolError, match="broken.mmdb"):
        PoolResolver(offline_db=str(bad))
    with pytest.raises(PoolError, match="no such file"):
        PoolResolver(offline_db=str(tmp_path / "missing.mmdb"))
    with pytest.raises(PoolError, match="pool mode"):
        PoolResolver("online")
    with pytest.raises(PoolError, match="not an IP address"):
        PoolResolver().resolve("8.8.8.256")


# --------------------------------------------------------------------------- RDAP on loopback


def test_rdap_success_is_cached_by_prefix(tmp_path, loopback_only):
    with RdapServer(GENERATED) as srv, rdap_resolver(tmp_path, srv.url) as r:
        a = r.resolve("8.8.8.8")
        assert (a.asn, a.pool, a.prefix, a.registry, a.country, a.source) == \
            (15169, "as15169-google", "8.8.8.0/24", "arin", "US", "rdap")
        b = r.resolve("8.8.8.200")  # same /24: answered by the cache, nothing sent
        assert (b.pool, b.prefix, b.source) == ("as15169-google", "8.8.8.0/24", "cache")
        c = r.resolve("23.142.129.1")  # unknown to the offline database: RDAP's holder names the pool
        assert (c.asn, c.pool, c.source) == (None, "org-example-holder-inc", "rdap")
        v6 = r.resolve("2001:4860:4860::8888")
        assert (v6.asn, v6.pool, v6.source) == (15169, "as15169-google", "rdap")
        assert srv.requests == ["/bootstrap/ip/8.8.8.8", "/bootstrap/ip/23.142.129.1",
                                "/bootstrap/ip/2001:4860:4860::8888"]
    assert set(loopback_only["connect"]) == {"127.0.0.1"}


@pytest.mark.parametrize("behaviour", ["down", "slow", "malformed", "429", "500"])
@pytest.mark.parametrize("mode", ["rdap", "auto"])
def test_rdap_failures_end_in_the_documented_fallback_in_bounded_time(tmp_path, loopback_only, behaviour, mode):
    offline = PoolResolver().resolve("8.8.8.8")
    with RdapServer(GENERATED, behaviour="ok" if behaviour == "down" else behaviour, delay=3.0) as srv:
        url = closed_port_url() if behaviour == "down" else srv.url
        with rdap_resolver(tmp_path, url, mode) as r:
            t0 = time.monotonic()
            info = r.resolve("8.8.8.8")
            elapsed = time.monotonic() - t0
            # worst case: (retries + 1) * timeout + back-off = 2 * 0.5 + 0.05, far below the server's 3 s delay
            assert elapsed < 2.0, f"{behaviour}: took {elapsed:.2f} s"
            if behaviour == "slow":
                assert elapsed >= 2 * FAST["timeout"]  # both attempts waited for their time-out
            if mode == "auto":
                assert info == offline
            else:
                assert (info.pool, info.source, info.asn) == ("unknown", "rdap", None)
            sent = len(srv.requests)
            assert sent == (0 if behaviour == "down" else 2)  # one retry of a transient failure
            failures = [e for e in r.cache.entries() if e.negative]
            assert len(failures) == 1 and failures[0].prefix == "8.8.8.8/32" and "RDAP 8.8.8.8" in failures[0].error
            # ipwhois reports a body that is not JSON like a failed connection (one HTTPLookupError)
            kind = {"down": "unreachable", "slow": "timeout", "malformed": "unreachable", "429": "rate-limited",
                    "500": "http"}[behaviour]
            assert f": {kind}: " in failures[0].error
            assert failures[0].expires - failures[0].fetched == pytest.approx(r.cache.negative_ttl)
            # the negative entry answers at once, with nothing sent, until it expires
            t0 = time.monotonic()
            again = r.resolve("8.8.8.8")
            assert time.monotonic() - t0 < 0.2 and len(srv.requests) == sent
            assert again.pool == info.pool


def test_rate_limit_is_retried_with_backoff(tmp_path, loopback_only):
    with RdapServer(GENERATED, behaviour="429") as srv, \
            rdap_resolver(tmp_path, srv.url, "auto", retries=3, backoff=0.1, max_backoff=1.0) as r:
        t0 = time.monotonic()
        assert r.resolve("8.8.8.8").source == "offline"
        elapsed = time.monotonic() - t0
        assert len(srv.requests) == 4
        assert 0.1 + 0.2 + 0.4 <= elapsed < 2.0  # back-offs doubled between the attempts
        assert "rate-limited" in r.cache.entries()[0].error


def test_stale_answer_is_kept_when_the_refresh_fails(tmp_path, loopback_only):
    cache = PoolCache(tmp_path / "c.sqlite")
    cache.put_answer(value_of("8.8.8.0"), 120, asn=15169, asn_org="Google", registry="arin", country="US",
                     pool="as15169-google", now=time.time() - cache.positive_ttl - 10)
    with PoolResolver("rdap", cache_path=cache, bootstrap_url=closed_port_url(), **FAST) as r:
        info = r.resolve("8.8.8.8")
        assert (info.pool, info.source) == ("as15169-google", "cache")
        # the failure is recorded, and the stale answer still wins over it
        assert [(e.prefix, e.negative) for e in r.cache.entries()] == [("8.8.8.0/24", False), ("8.8.8.8/32", True)]
        assert r.resolve("8.8.8.8").pool == "as15169-google"


def test_special_addresses_are_never_sent_anywhere(tmp_path, loopback_only):
    texts = [ip for ip, _ in SPECIAL_CASES]
    with RdapServer(GENERATED) as srv, rdap_resolver(tmp_path, srv.url) as r:
        pools = r.resolve_many(ips_array(texts))
        infos = [r.resolve(t) for t in texts] + [r.resolve_cached_or_offline(t) for t in texts]
        assert r.cache.entries() == []
    assert pools.tolist() == [p for _, p in SPECIAL_CASES]
    assert {i.source for i in infos} == {"special"}
    assert srv.requests == [] and loopback_only["connect"] == [] and loopback_only["resolve"] == []


def test_non_blocking_path_answers_at_once_and_refreshes_in_background(tmp_path, loopback_only):
    with RdapServer(GENERATED, behaviour="slow", delay=0.4) as srv, \
            rdap_resolver(tmp_path, srv.url, timeout=2.0) as r:
        t0 = time.monotonic()
        first = r.resolve_cached_or_offline("8.8.8.8")
        assert time.monotonic() - t0 < 0.1
        assert first.source == "offline" and first.pool == "as15169-google"
        r.resolve_cached_or_offline("8.8.8.8")  # one refresh in flight, not two
        assert wait_for(lambda: r.cache.lookup(value_of("8.8.8.8")) is not None, 5.0)
        later = r.resolve_cached_or_offline("8.8.8.8")
        assert (later.source, later.prefix) == ("cache", "8.8.8.0/24")
        assert srv.requests == ["/bootstrap/ip/8.8.8.8"]


def test_concurrency_is_bounded(tmp_path, loopback_only):
    texts = [str(ipaddress.ip_address(f"2c0f:ffff:{i}::1")) for i in range(6)]  # addresses the offline database knows nothing of
    assert {PoolResolver().resolve(t).pool for t in texts} == {"unknown"}
    with RdapServer({t: network_response(f"2c0f:ffff:{i}::/48", f"NET{i}", registrant=f"Holder {i}")
                     for i, t in enumerate(texts)}, behaviour="slow", delay=0.2) as srv, \
            rdap_resolver(tmp_path, srv.url, workers=2, timeout=2.0) as r:
        pools = r.resolve_many(ips_array(texts))
    assert pools.tolist() == [f"org-holder-{i}" for i in range(6)]
    assert len(srv.requests) == 6 and srv.max_concurrent == 2


def test_recorded_responses_of_five_registries(tmp_path, fixtures_root, loopback_only):
    recorded = json.loads((fixtures_root / "rdap" / "rdap.json").read_text())
    responses = {ip: rec["response"] for ip, rec in recorded.items()}
    with RdapServer(responses) as srv, rdap_resolver(tmp_path, srv.url) as r:
        infos = {ip: r.resolve(ip) for ip in recorded}
    assert len(srv.requests) == len(recorded) == 10
    registries = set()
    for ip, info in infos.items():
        asn_data, resp = recorded[ip]["asn_data"], recorded[ip]["response"]
        assert info.source == "rdap", ip
        assert info.registry == asn_data["asn_registry"], ip
        registries.add(info.registry)
        if resp.get("country"):
            assert info.country == resp["country"], ip
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(info.prefix), ip
        assert info.pool and info.pool not in ("lan", "reserved"), ip
    assert registries == {"arin", "ripencc", "apnic", "lacnic", "afrinic"}


# --------------------------------------------------------------------------- cache


def test_cache_expiry_and_most_specific_answer(tmp_path):
    c = PoolCache(tmp_path / "c.sqlite", positive_ttl=100.0, negative_ttl=10.0)
    now = 1_000_000.0
    c.put_answer(value_of("8.0.0.0"), 96 + 9, asn=3356, asn_org="Level 3", registry="arin", country="US",
                 pool="as3356-level-3", now=now)
    c.put_answer(value_of("8.8.8.0"), 96 + 24, asn=15169, asn_org="Google", registry="arin", country="US",
                 pool="as15169-google", now=now)
    assert c.lookup(value_of("8.8.8.8"), now=now + 1).pool == "as15169-google"
    assert c.lookup(value_of("8.9.0.1"), now=now + 1).pool == "as3356-level-3"
    assert c.lookup(value_of("9.0.0.1"), now=now + 1) is None
    c.put_failure(value_of("8.8.8.8"), "RDAP 8.8.8.8: unreachable", now=now)
    assert c.lookup(value_of("8.8.8.8"), now=now + 1).pool == "as15169-google"  # an answer beats a failure
    c.put_failure(value_of("9.0.0.1"), "RDAP 9.0.0.1: http", now=now)
    neg = c.lookup(value_of("9.0.0.1"), now=now + 1)
    assert neg.negative and not neg.expired(now + 9) and neg.expired(now + 10)
    stale = c.lookup(value_of("8.8.8.8"), now=now + 200)
    assert stale.pool == "as15169-google" and stale.expired(now + 200)
    assert stale.age(now + 200) == pytest.approx(200)
    assert c.prune(now=now + 50) == 2 and len(c) == 2
    assert c.prune(now=now + 200) == 2 and len(c) == 0


def test_default_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("IOT_POOL_CACHE", str(tmp_path / "x.sqlite"))
    assert default_cache_path() == tmp_path / "x.sqlite"
    monkeypatch.delenv("IOT_POOL_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_path() == tmp_path / ".cache" / "iotclass" / "pools.sqlite"


def test_corrupt_cache_is_named_and_left_alone(tmp_path):
    path = tmp_path / "pools.sqlite"
    content = b"this is somebody's file, not a cache" * 100
    path.write_bytes(content)
    with pytest.raises(PoolError, match="pools.sqlite"):
        PoolCache(path)
    assert path.read_bytes() == content
    other = tmp_path / "other.sqlite"
    import sqlite3
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (x)")
    with pytest.raises(PoolError, match="not an iotclass pool cache"):
        PoolCache(other)


_WRITER = textwrap.dedent("""
    import sys, time
    from classifier.pools.cache import PoolCache
    from classifier.pools.asndb import V4_MAPPED
    c = PoolCache(sys.argv[1])
    for i in range(int(sys.argv[2])):
        c.put_answer(V4_MAPPED | (i << 8), 120, asn=64500 + i, asn_org=f"Org {i}", registry="ripencc",
                     country="NL", pool=f"as{64500 + i}-org-{i}")
    print("done", flush=True)
""")

_READER = textwrap.dedent("""
    import sys, time
    from classifier.pools.cache import PoolCache
    from classifier.pools.asndb import V4_MAPPED
    c = PoolCache(sys.argv[1])
    n, seen, end = int(sys.argv[2]), 0, time.monotonic() + 50
    while time.monotonic() < end:
        c.refresh()
        now = [i for i in range(n) if c.lookup(V4_MAPPED | (i << 8) | 7) is not None]
        assert len(now) >= seen, (len(now), seen)            # never loses an entry it saw
        for i in now:
            assert c.lookup(V4_MAPPED | (i << 8) | 7).pool == f"as{64500 + i}-org-{i}"
        seen = len(now)
        if seen == n:
            break
    print(seen, flush=True)
""")


def _python(code, *args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def test_cache_persists_across_processes_with_concurrent_readers(tmp_path):
    path = tmp_path / "shared.sqlite"
    PoolCache(path).close()  # the schema exists before the readers start
    n = 200
    readers = [_python(_READER, path, n) for _ in range(3)]
    writer = _python(_WRITER, path, n)
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    for p in readers:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert out.split() == [str(n)]
    # and this process, opened after, sees all of it; a process writing later is seen after refresh()
    mine = PoolCache(path)
    assert len(mine) == n and mine.lookup(value_of("0.0.1.9")).pool == "as64501-org-1"
    later = _python(_WRITER.replace("64500 + i", "65000 + i"), path, 1)
    assert later.communicate(timeout=60)[1] == "" and later.returncode == 0
    assert mine.lookup(value_of("0.0.0.1")).pool == "as64500-org-0"
    mine.refresh()
    assert mine.lookup(value_of("0.0.0.1")).pool == "as65000-org-0"


def test_rdap_answers_are_shared_through_the_cache(tmp_path, loopback_only):
    with RdapServer(GENERATED) as srv:
        with rdap_resolver(tmp_path, srv.url) as r1:
            assert r1.resolve("8.8.8.8").source == "rdap"
        with rdap_resolver(tmp_path, srv.url) as r2:  # a new resolver (as another process) on the same file
            assert r2.resolve("8.8.8.9").source == "cache"
        assert len(srv.requests) == 1


# --------------------------------------------------------------------------- sessions, vocabulary


def test_fill_pools_on_generated_capture(synth_capture):
    from classifier.features.pipeline import load_captures
    from classifier.features.sessions import session_table
    path, _, net = synth_capture
    cap = next(load_captures([str(path)], [net.gateway_mac]))
    s = session_table(cap.packets, cap.view)
    assert set(s.pool.tolist()) == {""}
    out = fill_pools(s)
    assert out is s and "" not in set(s.pool.tolist())
    by_ip = dict(zip((ipaddress.ip_address(x) for x in s.to_frame()["remote_ip"]), s.pool.tolist()))
    assert by_ip[ipaddress.ip_address("52.94.236.248")] == "as16509-amazon"
    assert by_ip[ipaddress.ip_address("162.159.200.1")] == "as13335-cloudflare"
    assert by_ip[ipaddress.ip_address("224.0.0.251")] == "multicast"
    assert by_ip[ipaddress.ip_address(net.gateway_ip)] == "lan"


def _sessions(rows):
    """A Sessions table from (mac, start seconds, remote ip, pool) rows, in device/start order."""
    rows = sorted(rows)
    n = len(rows)
    z = np.zeros(n, np.int64)
    return Sessions(mac=np.array([r[0] for r in rows], np.uint64),
                    start_ns=np.array([int(r[1] * 1e9) for r in rows], np.int64),
                    interval=np.zeros(n), duration=np.zeros(n), ip_proto=np.full(n, 6, np.uint8),
                    local_ip=np.zeros((n, 2), np.uint64), local_port=z.astype(np.int32),
                    remote_ip=ips_array([r[2] for r in rows]), remote_port=z.astype(np.int32),
                    ip_version=np.full(n, 4, np.uint8), packets_out=z, packets_in=z, bytes_out=z, bytes_in=z,
                    outbound=np.ones(n, bool), pool=np.array([r[3] for r in rows], dtype=object))


def _co_used():
    rows = []
    for dev in (1, 2, 3):
        for k in range(5):  # bursts 600 s apart: a and b together, c alone in its own bursts
            t = 600.0 * k + dev
            rows += [(dev, t, "1.0.0.1", "as1-a"), (dev, t + 1, "2.0.0.1", "as2-b"), (dev, t + 2, "10.0.0.1", "lan")]
            rows += [(dev, t + 300, "3.0.0.1", "as3-c")]
        rows.append((dev, 5000.0 + dev, "2.0.0.1", "as2-b"))  # b once more, alone
    return rows


def test_vocabulary_ids_oov_and_round_trip():
    names = ["as15169-google"] * 5 + ["as16509-amazon"] * 3 + ["lan"] * 9 + ["as1-rare"]
    v = PoolVocabulary.build(names, min_count=2, merges={"as14618-amazon": "as16509-amazon"}, source="test")
    assert v.pools[:len(SPECIAL_POOLS)] == SPECIAL_POOLS
    assert v.pools[len(SPECIAL_POOLS):] == ("as15169-google", "as16509-amazon")
    assert len(v) == len(v.pools) + 2
    ids = v.index(np.array([["", "lan", "as15169-google"], ["as1-rare", "as14618-amazon", "as99-new"]], dtype=object))
    first = len(SPECIAL_POOLS) + 2
    assert ids.tolist() == [[PAD_ID, 2, first], [OOV_ID, first + 1, OOV_ID]]
    assert v.id("as15169-google-llc") == first  # same AS, organisation renamed: same id
    assert v.name(first) == "as15169-google" and v.name(OOV_ID) == "<oov>" and v.name(PAD_ID) == ""
    back = PoolVocabulary.from_json(v.to_json())
    assert back == v and back.version == v.version and back.source == "test"
    assert v.version.startswith("pools-v1-")
    other = PoolVocabulary.build(names, min_count=1)
    assert other.version != v.version


def test_vocabulary_rejects_bad_input_clearly():
    v = PoolVocabulary.build(["as1-a"])
    data = json.loads(v.to_json())
    data["pools"].append("as2-b")
    with pytest.raises(PoolError, match="does not match its content"):
        PoolVocabulary.from_dict(data, "model.json")
    with pytest.raises(PoolError, match="model.json: not JSON"):
        PoolVocabulary.from_json("{", "model.json")
    with pytest.raises(PoolError, match="not a pool vocabulary"):
        PoolVocabulary.from_dict({"format": "something else"})
    with pytest.raises(PoolError, match="appears twice"):
        PoolVocabulary(["lan", "lan"])
    with pytest.raises(PoolError, match="does not lead"):
        PoolVocabulary(["lan"], merges={"as1-a": "as2-b"})


def test_vocabulary_from_sessions():
    s = _sessions(_co_used())
    v = PoolVocabulary.from_sessions([s, s])
    assert set(v.pools) >= {"as1-a", "as2-b", "as3-c", "lan"}
    ids = v.index(s.pool)
    assert ids.min() >= 2 and OOV_ID not in ids


# --------------------------------------------------------------------------- command line


def test_features_sessions_cli_fills_the_pool_column(synth_capture, tmp_path):
    import pandas as pd

    from classifier.cli import main
    path, devices, _ = synth_capture
    out = tmp_path / "s.csv"
    assert main(["features", "sessions", str(path), "--devices", str(devices), "--out", str(out)]) == 0
    frame = pd.read_csv(out, keep_default_na=False)
    assert (frame["pool"] != "").all()
    assert set(frame.loc[frame["remote_ip"] == "52.94.236.248", "pool"]) == {"as16509-amazon"}
    assert main(["features", "sessions", str(path), "--no-pools", "--out", str(out)]) == 0
    assert (pd.read_csv(out, keep_default_na=False)["pool"] == "").all()


def test_features_sessions_cli_auto_mode_falls_back_offline(synth_capture, tmp_path, loopback_only):
    import pandas as pd

    from classifier.cli import main
    path, _, _ = synth_capture
    out, cache = tmp_path / "s.csv", tmp_path / "pools.sqlite"
    with RdapServer({}) as srv:  # knows no address: every look-up ends in HTTP 404
        assert main(["features", "sessions", str(path), "--out", str(out), "--pool-mode", "auto",
                     "--pool-cache", str(cache), "--rdap-url", srv.url, "--rdap-timeout", "1"]) == 0
        offline = PoolResolver()
        frame = pd.read_csv(out, keep_default_na=False)
        expected = [offline.resolve(ip).pool for ip in frame["remote_ip"]]
        assert frame["pool"].tolist() == expected
        public = {ip for ip, p in zip(frame["remote_ip"], expected) if p not in SPECIAL_POOLS}
        assert sorted(srv.requests) == sorted(f"/bootstrap/ip/{ip}" for ip in public)
    failures = PoolCache(cache).entries()
    assert len(failures) == len(public) and all(": http: " in e.error for e in failures)


def test_pools_cli_table_and_json(synth_capture, capsys):
    from classifier.cli import main
    path, _, net = synth_capture
    assert main(["pools", str(path), "9.9.9.9", "--json", "--gateway", net.gateway_mac]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["address"] == "9.9.9.9" and rows[0]["sessions"] == 0
    amazon = next(r for r in rows if r["address"] == "52.94.236.248")
    assert (amazon["asn"], amazon["pool"], amazon["source"], amazon["devices"]) == \
        (16509, "as16509-amazon", "offline", 1)
    assert amazon["sessions"] > 10
    mdns = next(r for r in rows if r["address"] == "224.0.0.251")
    assert mdns["pool"] == "multicast" and mdns["source"] == "special"
    assert main(["pools", "1.1.1.1", "fe80::1"]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0].split() == ["address", "asn", "organisation", "pool", "source"]
    assert lines[1].split() == ["1.1.1.1", "13335", "Cloudflare", "as13335-cloudflare", "offline"]
    assert lines[2].split() == ["fe80::1", "link-local", "special"]
    assert "2 addresses: 1 in organisation pools, 1 special, 0 unknown" in out.err


def test_pools_cli_errors(capsys, tmp_path):
    from classifier.cli import main
    assert main(["pools", "1.2.3.999"]) == 1
    assert "1.2.3.999: neither an IP address nor a capture file" in capsys.readouterr().err
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"x" * 100)
    assert main(["pools", "8.8.8.8", "--offline-db", str(bad)]) == 1
    assert "bad.mmdb" in capsys.readouterr().err


def test_shared_captures_resolve_offline(datasets):
    from classifier.features.pipeline import load_captures
    from classifier.features.sessions import session_table
    paths = sorted((datasets / "longterm").glob("*.gz"))[:2]
    r = PoolResolver()
    for cap in load_captures([str(p) for p in paths]):
        s = fill_pools(session_table(cap.packets, cap.view), r)
        assert len(s) and "" not in set(s.pool.tolist())
        assert any(p.startswith("as") for p in s.pool.tolist()), cap.path


def test_one_look_up_per_prefix_in_a_batch(tmp_path, loopback_only):
    texts = ["8.8.8.8", "8.8.8.1", "8.8.8.77", "8.8.8.8"]  # one announced /24
    with RdapServer({t: GENERATED["8.8.8.8"] for t in texts}) as srv, rdap_resolver(tmp_path, srv.url) as r:
        uniq, infos, inverse = r.resolve_table(ips_array(texts))
    assert len(srv.requests) == 1 and len(uniq) == 3
    assert sorted(i.source for i in infos) == ["cache", "cache", "rdap"]
    assert {i.pool for i in infos} == {"as15169-google"}


def test_unique_rows_agrees_with_numpy():
    from classifier.pools.resolver import _unique_rows
    rng = np.random.default_rng(3)
    ips = rng.integers(0, 4, size=(500, 2)).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    uniq, inverse = _unique_rows(ips)
    want, want_inverse = np.unique(ips, axis=0, return_inverse=True)
    assert np.array_equal(uniq, want) and np.array_equal(inverse, want_inverse.ravel())
    assert np.array_equal(uniq[inverse], ips)
