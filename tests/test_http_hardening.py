"""The controller's HTTP server under abuse (issue 19): half-finished requests, a Content-Length
larger than its body, oversized request lines, heads and bodies, search words, foreign Host
headers on every endpoint, deeply nested pin bodies, garbage, a failing handler, a full worker
queue; and fuzzed request bytes. Each case checks the answer (a JSON error naming what and the
limit) and that the server still answers ``/status`` at once afterwards."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller_app.httpserver import HttpLimits, HttpServer, Reply
from controller_app.observe import Metrics, Observer
from controller_app.pins import Tokens
from controller_app.web import MAX_QUERY_WORDS, WebUI, json_depth

ROOT = Path(__file__).resolve().parent.parent
MAC = "02:00:00:00:0a:01"
TOKEN = "t" * 24
POLICY = "version: 1\ncategories:\n  camera: block\noverrides: {}\n"


def _record(i: int) -> dict:
    return {"mac": f"02:00:00:00:0a:{i:02x}", "dpid": "0000000000000001", "port": i, "category": "camera",
            "confidence": 0.9, "stage": "confirmed", "enforced": "block", "first_seen_ns": i, "last_seen_ns": i}


@pytest.fixture
def server(tmp_path):
    """An Observer with the page (pins on), short time limits; yields (observer, port)."""
    made = []

    def make(**limits):
        policy = tmp_path / f"policy{len(made)}.yaml"
        policy.write_text(POLICY)
        tok = tmp_path / "tokens"
        tok.write_text(f"alice:{TOKEN}\n")
        lim = dict(header_timeout=1.0, body_timeout=1.0, idle_timeout=0.5, write_timeout=2.0)
        lim.update(limits)
        obs = Observer(Metrics(), None, limits=HttpLimits(**lim))
        obs.web = WebUI(obs.view, policy_file=str(policy), pins=True, tokens=Tokens.load(str(tok)), apply_wait=0)
        obs.publish({"switches": [], "devices": 3}, [_record(i) for i in range(1, 4)], {"overrides": {}})
        port = obs.start("127.0.0.1", 0)
        made.append(obs)
        return obs, port
    yield make
    for o in made:
        o.stop()


def _raw(port: int, data: bytes, timeout: float = 5.0) -> tuple[int, dict, bytes]:
    """Send ``data`` on a new connection; (status, JSON body or {}, raw reply)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                piece = s.recv(65536)
                if not piece:
                    break
                out += piece
        except (ConnectionResetError, socket.timeout):
            pass
    if out.startswith(b"HTTP/1.1 100 "):                     # an interim answer to Expect: 100-continue
        out = out.partition(b"\r\n\r\n")[2]
    if not out:
        return 0, {}, out
    head, _, body = out.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    try:
        js = json.loads(body) if body else {}
    except ValueError:
        js = {}
    return status, js, out


def _get(port: int, path: str, host: str = "127.0.0.1", extra: bytes = b"") -> tuple[int, dict, bytes]:
    return _raw(port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\n".encode() + extra + b"\r\n")


def _status_time(port: int) -> float:
    t = time.monotonic()
    st_, body, _ = _get(port, "/status")
    assert st_ == 200 and body["devices"] == 3
    return time.monotonic() - t


def test_half_finished_requests_hold_no_thread_and_status_answers_at_once(server):
    obs, port = server(max_connections=64, max_connections_per_host=64)
    socks = []
    try:
        for _ in range(200):                  # three times the cap, each a request head cut short
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            socks.append(s)
        assert _status_time(port) < 1.0
        time.sleep(0.2)
        st = obs.server.stats()
        assert st["connections"] <= 64 and st["counts"].get("evicted_per_host", 0) >= 100
        assert threading.active_count() < 40           # no thread per connection
        deadline = time.monotonic() + 4.5              # the head's limit, then the 408's write limit
        while obs.server.stats()["connections"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert obs.server.stats()["connections"] == 0
        assert obs.server.stats()["counts"].get("idle_timeout", 0) + \
            obs.server.stats()["counts"].get("header_timeout", 0) >= 1
    finally:
        for s in socks:
            s.close()


def test_a_byte_at_a_time_head_is_cut_at_the_header_time_limit(server):
    obs, port = server(header_timeout=1.0, idle_timeout=0.5)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        t0 = time.monotonic()
        data = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: " + b"a" * 100
        got = b""
        for b in data:
            try:
                s.sendall(bytes([b]))
            except OSError:
                break
            time.sleep(0.1)                            # never silent for the idle limit
            if time.monotonic() - t0 > 2.5:
                break
        s.settimeout(2)
        try:
            got = s.recv(4096)
        except OSError:
            pass
    assert got.startswith(b"HTTP/1.1 408") and b"header timeout" in got
    assert obs.server.stats()["counts"]["header_timeout"] == 1


def test_a_content_length_larger_than_the_body_is_answered_408_and_holds_no_worker(server):
    obs, port = server(workers=1)
    t = time.monotonic()
    st_, body, _ = _raw(port, b"POST /api/devices/02:00:00:00:0a:01/pin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{}")
    assert st_ == 408 and "time" in body["error"] and time.monotonic() - t < 2.5
    assert _status_time(port) < 0.5                   # the single worker was never taken


@pytest.mark.parametrize("data,status,words", [
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 414, "request target: 5001 bytes"),
    (b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n", 431, "request head"),
    (b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(70)) + b"\r\n",
     431, "71 header lines, more than 64"),
    (b"POST /api/devices/02:00:00:00:0a:01/pin HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999999\r\n\r\n",
     413, "Content-Length 99999999, more than 16384"),
    (b"POST /api/devices/02:00:00:00:0a:01/pin HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
     + b"".join(b"1000\r\n" + b"x" * 4096 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n", 413, "more than 16384"),
    (b"NOT HTTP AT ALL\r\n\r\n", 400, "not a valid HTTP/1.1 request"),
    (b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n", 400, "not a valid HTTP/1.1 request"),
    (b"GET /status HTTP/1.1\r\n\r\n", 400, "not a valid HTTP/1.1 request"),       # no Host
])
def test_oversized_and_malformed_requests_get_a_json_error_naming_what_and_the_limit(server, data, status, words):
    obs, port = server()
    st_, body, raw = _raw(port, data)
    assert st_ == status, raw[:300]
    assert words in body["error"], body
    assert _status_time(port) < 0.5


def test_search_words_and_length_are_capped(server):
    obs, port = server()
    st_, body, _ = _get(port, "/api/devices?q=" + "+".join(["cam"] * (MAX_QUERY_WORDS + 1)))
    assert st_ == 400 and f"{MAX_QUERY_WORDS + 1} words, at most {MAX_QUERY_WORDS}" in body["error"]
    st_, body, _ = _get(port, "/api/devices?q=" + "c" * 300)
    assert st_ == 400 and "300 characters, at most 256" in body["error"]
    st_, body, _ = _get(port, "/api/devices?q=" + "+".join(["cam"] * MAX_QUERY_WORDS))
    assert st_ == 200 and body["matched"] == 3


@pytest.mark.parametrize("path", ["/", "/status", "/devices", f"/devices/{MAC}", "/policy", "/metrics", "/ui/",
                                  "/api/devices", "/nothing"])
def test_every_endpoint_refuses_a_foreign_host(server, path):
    obs, port = server()
    st_, body, _ = _get(port, path, host="rebind.example:8080")
    assert st_ == 421 and "Host" in body["error"]
    st_, _, _ = _get(port, path, host="localhost:8080")
    assert st_ in (200, 404)


def test_deeply_nested_pin_bodies_get_a_structured_400_and_no_traceback(server, caplog):
    obs, port = server()
    for body in (b"[" * 7000, b'{"action": ' + b"[" * 50 + b"]" * 50 + b"}", b'{"a": "' + b"[" * 9000 + b'"}'):
        head = (f"POST /api/devices/{MAC}/pin HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        st_, out, _ = _raw(port, head + body)
        assert st_ == 400, out
        assert "nests" in out["error"] or "unknown field" in out["error"]
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text
    assert json_depth('{"a": "[[[[", "b": [[1]]}') == 3


def test_a_failing_handler_is_a_500_and_a_full_queue_a_503(server):
    gate = threading.Event()

    def handler(req):
        if req.path == "/boom":
            raise RuntimeError("kaboom")
        if req.path == "/slow":
            gate.wait(5)
        return Reply(200, b"{}")
    srv = HttpServer(handler, HttpLimits(workers=1, max_queue=2))
    port = srv.start("127.0.0.1", 0)
    try:
        st_, body, _ = _get(port, "/boom")
        assert st_ == 500 and "RuntimeError" in body["error"]
        slow = [threading.Thread(target=_get, args=(port, "/slow")) for _ in range(2)]
        for t in slow:
            t.start()
        time.sleep(0.3)
        st_, body, raw = _get(port, "/fast")
        assert st_ == 503 and "busy" in body["error"] and b"Retry-After: 1" in raw
        gate.set()
        for t in slow:
            t.join()
        assert _get(port, "/fast")[0] == 200
    finally:
        gate.set()
        srv.stop()


def test_a_refused_token_waits_without_holding_a_worker(server):
    obs, port = server(workers=1)
    head = (f"POST /api/devices/{MAC}/pin HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {'x' * 24}\r\n"
            "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}").encode()
    threads = [threading.Thread(target=_raw, args=(port, head)) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    assert _status_time(port) < 0.2           # eight refusals waiting, the one worker free
    for t in threads:
        t.join()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(max_size=600),
    st.builds(lambda m, p, h, b: m + b" " + p + b" HTTP/1.1\r\n" + h + b"\r\n" + b,
              st.sampled_from([b"GET", b"POST", b"DELETE", b"HEAD", b"PUT", b"G\x00T"]),
              st.sampled_from([b"/status", b"/api/devices?q=%ff%fe", b"/api/devices/" + MAC.encode() + b"/pin",
                               b"/devices/zz", b"/ui/../../etc/passwd", b"*", b"http://x/"]),
              st.lists(st.sampled_from([b"Host: 127.0.0.1", b"Host: evil", b"Content-Length: 5",
                                        b"Content-Length: 1x", b"Transfer-Encoding: chunked",
                                        b"Content-Type: application/json", b"Authorization: Bearer " + TOKEN.encode(),
                                        b"Expect: 100-continue", b"X: \x80\xff"]), max_size=5)
              .map(lambda hs: b"".join(h + b"\r\n" for h in hs)),
              st.binary(max_size=64))))
def test_fuzzed_request_bytes_get_an_answer_or_a_close_and_the_server_goes_on(server, data):
    if not hasattr(test_fuzzed_request_bytes_get_an_answer_or_a_close_and_the_server_goes_on, "srv"):
        test_fuzzed_request_bytes_get_an_answer_or_a_close_and_the_server_goes_on.srv = server(
            header_timeout=0.3, idle_timeout=0.2, body_timeout=0.3)
    obs, port = test_fuzzed_request_bytes_get_an_answer_or_a_close_and_the_server_goes_on.srv
    st_, body, raw = _raw(port, data, timeout=3)
    assert st_ == 0 or 200 <= st_ < 600
    if st_ >= 400 and not data.startswith(b"HEAD "):          # a HEAD's answer has no body
        assert body.get("error"), raw[:300]
    assert _status_time(port) < 1.0


def test_under_a_low_descriptor_limit_half_finished_requests_leave_room_for_everything_else(tmp_path):
    """The app's process at ``ulimit -n 256`` (its HTTP cap 64): 400 half-finished requests
    neither take its descriptors nor delay /status, and it can still open files."""
    script = textwrap.dedent(f"""
        import resource, sys, time
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        sys.path.insert(0, {str(ROOT)!r})
        from controller_app.observe import Observer, Metrics
        from controller_app.httpserver import HttpLimits
        o = Observer(Metrics(), None, limits=HttpLimits(max_connections=64, max_connections_per_host=64))
        o.publish({{"devices": 0}}, [], {{}})
        print(o.start("127.0.0.1", 0), flush=True)
        for line in sys.stdin:
            fds = []
            try:
                for _ in range(100):
                    fds.append(open({str(tmp_path / 'probe')!r}, "w"))
                print("opened", len(fds), o.server.stats()["connections"], flush=True)
            except OSError as exc:
                print("failed", exc, flush=True)
            finally:
                for f in fds:
                    f.close()
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    socks = []
    try:
        port = int(p.stdout.readline())
        for _ in range(400):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            socks.append(s)
        time.sleep(0.3)
        assert _status_time_any(port) < 1.0
        p.stdin.write("go\n")
        p.stdin.flush()
        line = p.stdout.readline().split()
        assert line[0] == "opened" and int(line[1]) == 100 and int(line[2]) <= 64, line
    finally:
        for s in socks:
            s.close()
        p.kill()
        p.wait()


def _status_time_any(port: int) -> float:
    t = time.monotonic()
    st_, _, _ = _get(port, "/status")
    assert st_ == 200
    return time.monotonic() - t


def test_rlimit_of_this_process_is_enough_for_the_tests():
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 1024
