"""The controller's HTTP server: bounded in connections, threads, time and size.

The standard library's ``ThreadingHTTPServer`` gave every connection a thread and a descriptor
until the client finished its request, which a client need never do: 1,100 half-finished
requests took the controller to its 1,024 open files (new switches could not connect) and a
``Content-Length`` larger than the body held its thread for ever. Here:

* **One I/O thread** (asyncio) reads every connection; a request costs a worker only once it is
  whole. Requests are parsed by h11 (python-hyper's sans-I/O HTTP/1.1 parser: request line,
  headers, ``Content-Length`` and chunked bodies, its size cap on the head), not by hand.
* **A bounded worker pool** (``workers`` threads) answers whole requests; at most ``max_queue``
  wait for one, beyond that the answer is 503 at once. The workers share a **CPU budget**
  (``cpu_share`` of one core, a token bucket of thread CPU time): clients asking for expensive
  answers in a loop get them more slowly, and the controller's own threads (the same
  interpreter, one lock) keep the rest (eight clients searching 2,054 devices without it made
  a new switch's handshake four times slower).
* **A connection cap** (``max_connections``, and ``max_connections_per_host`` from one address).
  A connection over a cap does not wait and does not refuse the newcomer: the oldest connection
  still sending its request (of the busiest address, for the total) is closed, so a client
  that holds connections half-open loses its own oldest ones while a client that sends its
  request at once is answered.
* **Time limits**: the request head within ``header_timeout`` of the connection, its body
  within ``body_timeout`` after the head, no more than ``idle_timeout`` of silence in between,
  and the reply read by the client within ``write_timeout``; past any of them the connection is
  closed (a 408 when it had sent part of a request).
* **Size limits**: the request target (``max_target``, 414), the head (``max_head``, 431, at
  most ``max_headers`` lines) and the body (``max_body``, 413), checked as the bytes arrive:
  a ``Content-Length`` over the cap is refused before any body is read.
* **One answer a connection** (``Connection: close``): no keep-alive connection to hold idle.
* A ``host_ok(host)`` check on every request (421 otherwise), before any handler runs.

Every refusal is a JSON ``{"error": ...}`` naming what and the limit; each is counted in
:meth:`HttpServer.stats` and rate-limited in the log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
import threading
import time
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus

import h11

from controller_app.guard import ERRORS, RateLimitedLog

LOG = logging.getLogger("controller_app.http")
_RL = RateLimitedLog(LOG, burst=5, per=60.0)


@dataclasses.dataclass(frozen=True)
class HttpLimits:
    max_connections: int = 256          #: open HTTP connections in total
    max_connections_per_host: int = 128  #: from one client address
    workers: int = 4                    #: threads answering whole requests
    max_queue: int = 64                 #: whole requests waiting for a worker (then 503)
    header_timeout: float = 10.0        #: from the connection to the end of the request head
    body_timeout: float = 10.0          #: from the head to the end of the body
    idle_timeout: float = 5.0           #: silence while a request is being sent
    write_timeout: float = 10.0         #: for the client to take the reply
    max_target: int = 4096              #: bytes of the request target (path and query)
    max_head: int = 16384               #: bytes of the request line and headers together
    max_headers: int = 64               #: header lines
    max_body: int = 16384               #: bytes of a request body
    max_buffered: int = 64 << 20        #: reply bytes waiting for slow readers, all connections
    cpu_share: float = 0.25             #: of one core, at most, spent answering requests (on average)


class Headers(dict):
    """A request's headers, looked up without regard to case (``headers.get("Host")``)."""

    def get(self, key, default=None):
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key):
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key):
        return dict.__contains__(self, key.lower())


@dataclasses.dataclass
class Request:
    method: str
    target: str           #: path and query as sent
    path: str
    query: str
    headers: Headers
    body: bytes
    client: str


class Reply:
    """An answer: status, body, content type, extra headers; ``delay`` seconds before it is
    sent (the I/O thread waits, not a worker: a refused token is answered late at no cost)."""

    __slots__ = ("status", "body", "ctype", "headers", "delay")

    def __init__(self, status: int, body: bytes, ctype: str = "application/json", headers: dict | None = None,
                 delay: float = 0.0):
        self.status, self.body, self.ctype, self.headers, self.delay = status, body, ctype, headers or {}, delay


def error_reply(status: int, message: str, **extra) -> Reply:
    return Reply(status, json.dumps({"error": message, **extra}, separators=(",", ":")).encode(),
                 "application/json", {"Cache-Control": "no-store"})


_READING, _WAITING, _WRITING, _CLOSED = range(4)
#: connections accepted in one go (asyncio's accept loop), and the kernel's queue behind them
ACCEPT_BATCH = 16
LISTEN_BACKLOG = 4096


class _Conn(asyncio.Protocol):
    __slots__ = ("srv", "transport", "client", "state", "parser", "started", "head_at", "last", "body", "request",
                 "got_bytes", "_timer", "key")

    def __init__(self, srv: "HttpServer"):
        self.srv = srv
        self.transport = None
        self.client = "?"
        self.state = _READING
        self.parser = h11.Connection(h11.SERVER, max_incomplete_event_size=srv.limits.max_head)
        self.started = self.last = time.monotonic()
        self.head_at = None
        self.body = bytearray()
        self.request = None
        self.got_bytes = False
        self._timer = None
        self.key = id(self)

    # ------------------------------------------------------------ life

    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if isinstance(peer, tuple) and peer else "?"
        self.srv._admit(self)
        if self.state == _READING:
            self._arm(self.srv.limits.idle_timeout)

    def connection_lost(self, exc):
        self.state = _CLOSED
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.srv._gone(self)

    def close(self, why: str | None = None) -> None:
        if self.state == _CLOSED:
            return
        if why:
            self.srv._count(why)
        self.state = _CLOSED
        self.srv._gone(self)                 # out of the counts now, not when the loop gets to it
        if self.transport is not None:
            self.transport.abort()

    def evictable(self, strict: bool = False) -> bool:
        """Still sending its request, or answered and waiting for the client to close.
        ``strict``: and nothing received that is waiting to be read (a client that sent its whole
        request at once, in the same instant as a flood of newer connections, is about to be
        answered: it goes last)."""
        if self.transport is None:
            return False
        if self.state == _WRITING:
            return not self.transport.get_write_buffer_size()
        return self.state == _READING and not (strict and self._pending())

    def _pending(self) -> bool:
        """Bytes received and not read yet (peeked at, not taken)."""
        ts = self.transport.get_extra_info("socket")
        if ts is None:
            return False
        s = socket.socket(fileno=ts.fileno())
        try:
            return bool(s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:
            return False
        finally:
            s.detach()

    def _arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.srv.loop.call_later(max(0.0, seconds), self._timeout)

    def _deadline(self) -> float:
        """Seconds until this connection's next time limit while it sends its request."""
        lim, now = self.srv.limits, time.monotonic()
        idle = self.last + lim.idle_timeout - now
        whole = (self.started + lim.header_timeout if self.head_at is None
                 else self.head_at + lim.body_timeout) - now
        return min(idle, whole)

    def _timeout(self) -> None:
        self._timer = None
        if self.state == _WRITING:
            t = self.transport
            self.close("write_timeout" if t is not None and t.get_write_buffer_size() else None)
            return
        if self.state != _READING:
            return
        left = self._deadline()
        if left > 0.001:
            self._arm(left)
            return
        lim = self.srv.limits
        idle = time.monotonic() - self.last >= lim.idle_timeout - 0.001
        what = ("idle_timeout" if idle else "header_timeout" if self.head_at is None else "body_timeout")
        if self.got_bytes:
            limit = {"idle_timeout": lim.idle_timeout, "header_timeout": lim.header_timeout,
                     "body_timeout": lim.body_timeout}[what]
            self._refuse(408, f"request not complete in time ({what.replace('_', ' ')}: {limit:g} s; the head "
                              f"within {lim.header_timeout:g} s of connecting, the body within "
                              f"{lim.body_timeout:g} s after it, at most {lim.idle_timeout:g} s of silence)", what)
        else:
            self.close(what)

    # ------------------------------------------------------------ reading

    def data_received(self, data: bytes):
        if self.state != _READING:
            return                       # a request is whole: whatever follows is not read
        self.got_bytes = True
        self.last = time.monotonic()
        lim = self.srv.limits
        try:
            self.parser.receive_data(data)
            while self.state == _READING:
                ev = self.parser.next_event()
                if ev is h11.NEED_DATA:
                    break
                if isinstance(ev, h11.Request):
                    if not self._head(ev):
                        return
                elif isinstance(ev, h11.Data):
                    self.body += ev.data
                    if len(self.body) > lim.max_body:
                        self._refuse(413, f"request body: more than {lim.max_body} bytes", "body_too_large")
                        return
                elif isinstance(ev, h11.EndOfMessage):
                    self._dispatch()
                    return
                elif isinstance(ev, h11.ConnectionClosed):
                    self.close()
                    return
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            if status == 431 or "exceeds" in str(exc).lower() or "too long" in str(exc).lower():
                self._refuse(431, f"request head: more than {lim.max_head} bytes of request line and headers",
                             "head_too_large")
            else:
                self._refuse(status if 400 <= status < 500 else 400, f"not a valid HTTP/1.1 request: {exc}",
                             "bad_request")
            return
        if self.state == _READING:
            self._arm(self._deadline())

    def _head(self, ev: h11.Request) -> bool:
        lim = self.srv.limits
        target = ev.target.decode("latin-1")
        if len(ev.target) > lim.max_target:
            self._refuse(414, f"request target: {len(ev.target)} bytes, more than {lim.max_target}", "target_too_long")
            return False
        size = len(ev.method) + len(ev.target) + 12 + sum(len(n) + len(v) + 4 for n, v in ev.headers)
        if size > lim.max_head:          # h11 caps a head still arriving; this one came whole
            self._refuse(431, f"request head: {size} bytes of request line and headers, more than {lim.max_head}",
                         "head_too_large")
            return False
        if len(ev.headers) > lim.max_headers:
            self._refuse(431, f"request head: {len(ev.headers)} header lines, more than {lim.max_headers}",
                         "too_many_headers")
            return False
        headers = Headers()
        for name, value in ev.headers:
            headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        length = headers.get("content-length")
        if length is not None and int(length) > lim.max_body:      # h11 checked it is a number
            self._refuse(413, f"request body: Content-Length {int(length)}, more than {lim.max_body} bytes",
                         "body_too_large")
            return False
        path, _, query = target.partition("?")
        self.request = Request(ev.method.decode("latin-1").upper(), target, path, query, headers, b"", self.client)
        self.head_at = time.monotonic()
        if not self.srv.host_ok(headers.get("host")):
            self._refuse(421, "this server answers only for its own address (Host header); "
                              f"got {headers.get('host')!r}", "host_refused")
            return False
        if self.parser.they_are_waiting_for_100_continue:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _dispatch(self) -> None:
        self.request.body = bytes(self.body)
        self.body = bytearray()
        self.state = _WAITING
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.transport.pause_reading()
        self.srv._submit(self)

    # ------------------------------------------------------------ writing

    def _refuse(self, status: int, message: str, what: str) -> None:
        self.srv._count(what)
        self.srv.log_refusal(what, self.client, message)
        self.respond(error_reply(status, message), head_only=False)

    def respond(self, reply: Reply, head_only: bool | None = None) -> None:
        if self.state in (_CLOSED, _WRITING):
            return
        if reply.delay > 0:
            delay, reply.delay = reply.delay, 0.0
            self.state = _WAITING
            self.srv.loop.call_later(delay, self.respond, reply, head_only)
            return
        if head_only is None:
            head_only = self.request is not None and self.request.method == "HEAD"
        if not head_only and len(reply.body) > 65536 and self.srv.buffered() + len(reply.body) > \
                self.srv.limits.max_buffered:
            self.srv._count("refused_buffered")
            reply = Reply(*_busy_buffered(self.srv.limits.max_buffered))
        try:
            data = encode_reply(reply, head_only)
        except ValueError as exc:                    # a header a handler should not have made
            LOG.error("http: cannot send a reply: %s", exc)
            self.close("reply_error")
            return
        self.state = _WRITING
        t = self.transport
        t.write(data)
        # the reply, then FIN; what the client still sends is read and dropped until it closes
        # (closing with unread bytes would reset the connection and could lose the reply)
        if t.can_write_eof():
            t.write_eof()
            t.resume_reading()
        else:
            t.close()
        self._arm(self.srv.limits.write_timeout)

    def eof_received(self):
        return False                     # the transport closes itself


def encode_reply(reply: Reply, head_only: bool = False) -> bytes:
    """The reply's bytes on the wire: status line, headers, body (``Connection: close``)."""
    try:
        phrase = HTTPStatus(reply.status).phrase
    except ValueError:
        phrase = ""
    lines = [f"HTTP/1.1 {reply.status} {phrase}", f"Content-Type: {reply.ctype}",
             f"Content-Length: {len(reply.body)}", "Connection: close", "Server: iot-controller"]
    for k, v in reply.headers.items():
        k, v = str(k), str(v)
        if any(c in k + v for c in "\r\n\0") or not k:
            raise ValueError(f"header {k!r}: a name or value with a line break")
        lines.append(f"{k}: {v}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + reply.body


class CpuBudget:
    """A token bucket of CPU seconds: ``share`` of a core a second, up to ``burst`` seconds saved."""

    def __init__(self, share: float, burst: float = 0.25):
        self.share = max(1e-3, float(share))
        self.burst = burst
        self._tokens = burst
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.share)
        self._last = now

    def wait(self) -> float:
        """Seconds to wait before spending more (0: go on)."""
        with self._lock:
            self._refill()
            return 0.0 if self._tokens > 0 else -self._tokens / self.share + 1e-3

    def spend(self, seconds: float) -> None:
        with self._lock:
            self._refill()
            self._tokens -= max(0.0, seconds)


class HttpServer:
    """``handler(request) -> Reply`` answered from a worker pool; see the module's text."""

    def __init__(self, handler, limits: HttpLimits | None = None, host_ok=None, name: str = "iot-http"):
        self.handler = handler
        self.limits = limits or HttpLimits()
        self.host_ok = host_ok or (lambda host: True)
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pool: ThreadPoolExecutor | None = None
        self._server = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None
        self._conns: OrderedDict = OrderedDict()        # key -> _Conn, oldest first
        self._by_host: Counter = Counter()
        self._queued = 0
        self._busy = 0
        self._counts: Counter = Counter()
        self._lock = threading.Lock()
        self._cpu = CpuBudget(self.limits.cpu_share)

    # ------------------------------------------------------------ start and stop

    def start(self, host: str, port: int) -> int:
        """Listen and serve in a daemon thread; returns the bound port."""
        self.pool = ThreadPoolExecutor(max_workers=self.limits.workers, thread_name_prefix=f"{self.name}-worker")
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._loop_error)
        family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError:
            sock.close()
            self.pool.shutdown(wait=False)
            self.loop.close()
            raise
        sock.setblocking(False)
        # asyncio accepts up to `backlog` connections at a time: a few, so that a flood cannot make
        # the process hold a thousand descriptors in one go before any of them is closed; the
        # kernel's queue is made long again (listen() once more) so that connections wait there
        self._server = self.loop.run_until_complete(
            self.loop.create_server(lambda: _Conn(self), sock=sock, backlog=ACCEPT_BATCH))
        sock.listen(LISTEN_BACKLOG)
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self.loop.run_forever, name=self.name, daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        loop = self.loop
        if loop is None:
            return

        def shut():
            self._server.close()
            for c in list(self._conns.values()):
                c.close()
            loop.stop()
        loop.call_soon_threadsafe(shut)
        if self._thread is not None:
            self._thread.join(5)
        self.pool.shutdown(wait=False, cancel_futures=True)
        if not loop.is_running():
            loop.close()
        self.loop = None

    # ------------------------------------------------------------ connections

    def _admit(self, conn: _Conn) -> None:
        lim = self.limits
        self._conns[conn.key] = conn
        self._by_host[conn.client] += 1
        if self._by_host[conn.client] > lim.max_connections_per_host:
            self._evict(conn, conn.client, "evicted_per_host")
        if conn.state != _CLOSED and len(self._conns) > lim.max_connections:
            busiest = max(self._by_host, key=self._by_host.__getitem__)
            self._evict(conn, busiest, "evicted")

    def _evict(self, newcomer: _Conn, host: str, why: str) -> None:
        """Close the oldest connection of ``host`` still sending its request (one whose next bytes
        are already waiting goes last; another address's when ``host`` has none; the newcomer
        itself, with a 503, only when every other one is being answered)."""
        for strict in (True, False):
            for scope in (host, None):
                looked = 0
                for c in self._conns.values():
                    if c is newcomer or (scope is not None and c.client != scope):
                        continue
                    if c.evictable(strict):
                        c.close(why)
                        return
                    looked += 1
                    if strict and looked >= 32:        # a peek each: look at the oldest few only
                        break
        self._count("refused_busy")
        self.log_refusal("refused_busy", newcomer.client, "every connection is being answered")
        newcomer.respond(error_reply(503, f"busy: {len(self._conns) - 1} connections are being answered "
                                          f"(limit {self.limits.max_connections}); try again"), head_only=False)

    def _gone(self, conn: _Conn) -> None:
        if self._conns.pop(conn.key, None) is not None:
            self._by_host[conn.client] -= 1
            if self._by_host[conn.client] <= 0:
                del self._by_host[conn.client]

    # ------------------------------------------------------------ requests

    def _submit(self, conn: _Conn) -> None:
        if self._queued >= self.limits.max_queue:
            self._count("refused_queue")
            self.log_refusal("refused_queue", conn.client, "the worker queue is full")
            conn.respond(Reply(*_busy(self.limits.max_queue)))
            return
        self._queued += 1
        self.pool.submit(self._work, conn)

    def _work(self, conn: _Conn) -> None:
        loop = self.loop
        wait = self._cpu.wait()
        if wait > 0:                        # over the CPU budget: this request waits, holding nothing
            time.sleep(wait)
        with self._lock:
            self._busy += 1
        t0 = time.thread_time()
        try:
            if conn.state == _CLOSED:
                reply = None
            else:
                try:
                    reply = self.handler(conn.request)
                except Exception as exc:  # noqa: BLE001 - one request fails, the server goes on
                    ERRORS.count("http_handler")
                    _RL.log(logging.ERROR, ("handler", type(exc).__name__),
                            "http: %s %s failed: %s: %s", conn.request.method, conn.request.path[:200],
                            type(exc).__name__, str(exc)[:300])
                    reply = error_reply(500, f"internal error ({type(exc).__name__}); the controller logged it")
        finally:
            self._cpu.spend(time.thread_time() - t0)
            with self._lock:
                self._busy -= 1
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._done, conn, reply)

    def _done(self, conn: _Conn, reply: Reply | None) -> None:
        self._queued -= 1
        self._count("answered")
        if reply is not None:
            conn.respond(reply)

    # ------------------------------------------------------------ accounting

    def _count(self, what: str) -> None:
        self._counts[what] += 1
        if what not in ("answered",):
            ERRORS.count(f"http_{what}")

    def log_refusal(self, what: str, client: str, message: str) -> None:
        _RL.log(logging.WARNING, (what, client), json.dumps({"event": "http_refused", "reason": what,
                                                              "client": client, "detail": message[:200]}))

    def _loop_error(self, loop, context) -> None:
        exc = context.get("exception")
        what = type(exc).__name__ if exc is not None else "error"
        ERRORS.count("http_loop")
        _RL.log(logging.WARNING, ("loop", what), "http: %s: %s", context.get("message", ""), exc or "")

    def buffered(self) -> int:
        """Reply bytes not yet taken by their clients."""
        return sum(c.transport.get_write_buffer_size() for c in self._conns.values()
                   if c.state == _WRITING and c.transport is not None)

    def stats(self) -> dict:
        """Open connections, requests waiting and being answered, the counts by outcome, the limits."""
        return {"connections": len(self._conns), "queued": self._queued, "busy": self._busy,
                "counts": dict(self._counts), "limits": dataclasses.asdict(self.limits)}


def _busy_buffered(limit: int):
    body = json.dumps({"error": f"busy: more than {limit} bytes of replies wait for their clients; try again"}).encode()
    return 503, body, "application/json", {"Retry-After": "1", "Cache-Control": "no-store"}


def _busy(limit: int):
    body = json.dumps({"error": f"busy: {limit} requests are waiting for an answer; try again"}).encode()
    return 503, body, "application/json", {"Retry-After": "1", "Cache-Control": "no-store"}


__all__ = ["HttpServer", "HttpLimits", "Reply", "Request", "Headers", "error_reply"]
