"""OpenFlow connections for ``ryu-manager`` on os-ken: the listener, each switch's connection,
and which connection may speak for which datapath id.

os-ken 4.2.2's ``os_ken.controller.controller`` (``OpenFlowController``, ``Datapath``) is the
part of the framework that faces the network, and on its native (thread) hub it fails there:

- a closed connection is never finished: ``Datapath.serve`` waits for its send thread, which
  ``hub.kill`` cannot stop, so every connection that ever opened keeps two threads, and its
  ``DEAD_DISPATCHER`` state change (the app's "switch down") never comes;
- nothing bounds a handshake: a peer that opens TCP and never answers is held for ever, and
  there is no limit on connections, in total or per address;
- one ``accept()`` error (``EMFILE``: out of file descriptors) ends the listener, and with it
  the process;
- a second connection that presents a connected switch's datapath id takes its place: the
  app then sends that switch's rules to the newcomer;
- every malformed message logs a traceback and a hex dump.

``install()`` (called by :mod:`controller_app.manager` before the apps load) puts
:class:`GuardedOpenFlowController` in the place ``os_ken.controller.ofp_handler`` takes its
controller from. It keeps os-ken's options (``--ofp-listen-host``, ``--ofp-tcp-listen-port``,
``--ofp-ssl-listen-port``, ``--ctl-privkey``, ``--ctl-cert``, ``--ca-certs``, ``--ciphers``),
its parsers, handlers and events, and changes the connection handling:

- a *handshake timeout* from accept (TLS included) to the datapath being ready;
- an *echo probe* after ``--ofp-echo-interval`` seconds of silence and an *idle timeout*
  (``--ofp-idle-timeout``) after which the connection is closed (silence counts only while the
  receive loop waits on the switch, not while an app with a full event queue holds it);
- limits on connections in total, per peer address, and still in handshake (total and per
  address); a connection over a limit is closed at once;
- two threads per connection (receive, send), both ended with the connection: no thread
  outlives its connection;
- ``accept()`` errors are logged (rate-limited), counted, and retried with a back-off;
- a connection that presents the datapath id of a connected switch does not displace it while
  that switch answers an echo request (``--ofp-takeover-probe-timeout``): the newcomer is
  refused, logged and counted; a switch that does not answer is taken to be dead and replaced;
- malformed messages (bad length, unknown version or type, a parser error, a version other
  than the negotiated one) are counted; the first few are logged, then a few a minute; a
  connection that sends more than ``--ofp-max-malformed`` of them in 10 s is closed;
- only messages some handler takes in the connection's state are parsed, lengths that make
  os-ken's parsers loop for ever are rejected first (hello elements, flow statistics), and a
  parser that runs longer than ``parse_timeout`` is interrupted and its connection closed;
- a failing handler in the receive path is logged (rate-limited) and counted; the connection
  goes on.

Counts go to :data:`controller_app.guard.ERRORS` (``iot_errors_total{kind="openflow_..."}``)
and :meth:`Connections.status` (the app's ``/status``, section ``openflow``).
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import json
import logging
import socket
import ssl
import struct
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from os_ken import cfg
from os_ken.base import app_manager  # noqa: F401  (first: os-ken's controller module needs it loaded)
from os_ken.controller import controller as of_controller
from os_ken.controller import ofp_event, ofp_handler
from os_ken.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, HANDSHAKE_DISPATCHER, MAIN_DISPATCHER
from os_ken.lib import hub, ip
from os_ken.ofproto import ofproto_common, ofproto_parser

from controller_app.fastpath import packet_in_row
from controller_app.guard import ERRORS, Backoff, RateLimitedLog, fatal

LOG = logging.getLogger("controller_app.ofconn")
CONF = cfg.CONF
HEADER = struct.Struct("!BBHI")
OFPT_HELLO, OFPT_ERROR, OFPT_ECHO_REQUEST, OFPT_ECHO_REPLY = 0, 1, 2, 3


@dataclass
class Limits:
    handshake_timeout: float = 15.0      #: seconds from accept to a ready datapath (TLS, hello, features, ports)
    echo_interval: float = 10.0          #: seconds of silence before an echo request
    idle_timeout: float = 30.0           #: seconds of silence before the connection is closed
    takeover_probe_timeout: float = 3.0  #: seconds a connected switch has to answer before a newcomer replaces it
    max_connections: int = 1024          #: connections in total
    max_connections_per_host: int = 256  #: connections from one peer address
    max_handshakes: int = 256            #: connections not yet ready, in total
    max_handshakes_per_host: int = 64    #: connections not yet ready, from one peer address
    max_malformed: int = 100             #: malformed messages in 10 s before a connection is closed
    parse_timeout: float = 2.0           #: seconds one message may take to parse before it is given up
    send_queue: int = 256                #: messages queued for one switch
    send_timeout: float = 5.0            #: seconds a sender waits for room in a full queue
    accept_backoff_max: float = 1.0      #: longest pause after a failed accept()
    backlog: int = 128
    reconnect_burst: int = 5             #: times a datapath (from one address) may become ready freely
    reconnect_interval: float = 10.0     #: then once per this many seconds
    reconnect_backoff_max: float = 60.0  #: longest back-off for a datapath or an address
    host_connect_burst: int = 256        #: connections one address may open freely
    host_connect_interval: float = 0.1   #: then one per this many seconds


_OPTS = [
    ("ofp-handshake-timeout", float, "handshake_timeout",
     "seconds from accepting an OpenFlow connection to the switch being ready (TLS, hello, features); "
     "slower connections are closed"),
    ("ofp-echo-interval", float, "echo_interval", "seconds of silence from a switch before an echo request is sent"),
    ("ofp-idle-timeout", float, "idle_timeout", "seconds of silence from a switch before its connection is closed"),
    ("ofp-takeover-probe-timeout", float, "takeover_probe_timeout",
     "seconds a connected switch has to answer an echo request when another connection claims its datapath id "
     "(it answers: the newcomer is refused; it does not: it is replaced)"),
    ("ofp-max-connections", int, "max_connections", "OpenFlow connections in total"),
    ("ofp-max-connections-per-host", int, "max_connections_per_host", "OpenFlow connections from one address"),
    ("ofp-max-handshakes", int, "max_handshakes", "OpenFlow connections still in their handshake, in total"),
    ("ofp-max-handshakes-per-host", int, "max_handshakes_per_host",
     "OpenFlow connections still in their handshake, from one address"),
    ("ofp-max-malformed", int, "max_malformed", "malformed OpenFlow messages in 10 s before a connection is closed"),
    ("ofp-reconnect-burst", int, "reconnect_burst",
     "times a datapath (from one address) may come up freely; then once per --ofp-reconnect-interval, and beyond "
     "that it backs off (1 s, doubling up to --ofp-reconnect-backoff-max)"),
    ("ofp-reconnect-interval", float, "reconnect_interval", "seconds per further 'up' of a datapath once its burst "
                                                            "is spent"),
    ("ofp-reconnect-backoff-max", float, "reconnect_backoff_max",
     "longest back-off, in seconds, of a datapath or an address that reconnects too often"),
    ("ofp-host-connect-burst", int, "host_connect_burst",
     "OpenFlow connections one address may open freely; then one per --ofp-host-connect-interval, and beyond that "
     "it backs off"),
    ("ofp-host-connect-interval", float, "host_connect_interval",
     "seconds per further connection from one address once its burst is spent"),
]


def register_opts(conf, cli: bool = True) -> None:
    defaults = Limits()
    for name, typ, attr, help_ in _OPTS:
        cls = {float: cfg.FloatOpt, int: cfg.IntOpt}[typ]
        opt = cls(name, default=getattr(defaults, attr), help=help_)
        if opt.dest in conf:
            continue
        (conf.register_cli_opt if cli else conf.register_opt)(opt)


def limits_from_conf(conf) -> Limits:
    lim = Limits()
    for name, typ, attr, _ in _OPTS:
        v = getattr(conf, name.replace("-", "_"), None)
        if v is None:
            continue
        if not v > 0:
            raise ValueError(f"--{name}: {v!r} is not a positive number")
        setattr(lim, attr, typ(v))
    if lim.idle_timeout <= lim.echo_interval:
        raise ValueError(f"--ofp-idle-timeout ({lim.idle_timeout:g}) must be longer than --ofp-echo-interval "
                         f"({lim.echo_interval:g})")
    return lim


def _event(event: str, /, **fields) -> str:
    return json.dumps({"event": event, **fields}, default=str)


def _dpid(v) -> str:
    return "-" if v is None else f"{v:016x}"


# ---------------------------------------------------------------------------- the registry


@dataclass(eq=False)
class Conn:
    """One accepted socket, from accept to close (its datapath once there is one)."""

    host: str
    port: int
    sock: object
    accepted: float = field(default_factory=time.monotonic)
    dp: "GuardedDatapath | None" = None
    ready: bool = False             #: reached MAIN_DISPATCHER (out of the handshake counts)
    tls: bool = False


class Connections:
    """Every live connection, which one speaks for each datapath id, the limits, the counts,
    and one monitor thread for timeouts and echo probes."""

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits()
        self._lock = threading.Lock()
        self.conns: set[Conn] = set()
        self._per_host: Counter = Counter()
        self._handshaking = 0
        self._hs_per_host: Counter = Counter()
        self.by_dpid: dict = {}
        self._probing: set = set()
        self.stats: Counter = Counter()
        self.listeners: list = []
        #: the app's bulk packet-in handler, and the per-message handler it stands for on the
        #: OpenFlow service (:meth:`take_packet_ins`)
        self.packet_in_sink = None
        self.packet_in_handler = None
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self.log = RateLimitedLog(LOG, burst=5, per=60.0)
        self.log_all = RateLimitedLog(LOG, burst=20, per=60.0)
        lim = self.limits
        #: a switch that keeps reconnecting: per (datapath id, address), and per address
        self.dp_backoff = Backoff(lim.reconnect_burst, lim.reconnect_interval, longest=lim.reconnect_backoff_max)
        self.host_backoff = Backoff(lim.host_connect_burst, lim.host_connect_interval,
                                    longest=lim.reconnect_backoff_max)

    def take_packet_ins(self, sink, handler) -> None:
        """Packet-ins of connections in MAIN_DISPATCHER go to ``sink(dpid, rows)`` straight from
        the receive loop, ``rows`` a list of (in_port, cookie, total_len, data) in arrival order,
        instead of one parsed message and event each to ``handler`` -- while ``handler`` is the
        only one the OpenFlow service has for packet-ins and no app observes them (else every
        packet-in takes the framework's path, as before)."""
        self.packet_in_sink, self.packet_in_handler = sink, handler

    def sink_for(self, brick):
        """The bulk packet-in sink, if it may take this service's packet-ins now."""
        sink = self.packet_in_sink
        if sink is None or brick is None:
            return None
        ev_cls = ofp_event.EventOFPPacketIn
        if brick.observers.get(ev_cls):
            return None
        handlers = brick.event_handlers.get(ev_cls, ())
        if len(handlers) != 1 or handlers[0] != self.packet_in_handler:
            return None
        return sink

    # -------------------------------------------------------------- counting and logging

    def count(self, kind: str, error: bool = True) -> None:
        with self._lock:
            self.stats[kind] += 1
        if error:
            ERRORS.count(f"openflow_{kind}")

    def note(self, level: int, key, event: str, /, **fields) -> None:
        """A rate-limited structured log line: per ``key`` (e.g. the peer's address) and overall."""
        ok, held = self.log.allow((event, key))
        if ok:
            ok2, held2 = self.log_all.allow(event)
            if ok2:
                if held or held2:
                    fields["suppressed"] = held + held2
                LOG.log(level, _event(event, **fields))

    # -------------------------------------------------------------- admission

    def admit(self, host: str, port: int, sock) -> Conn | None:
        lim = self.limits
        wait = self.host_backoff.attempt(host)
        if wait:
            self.count("connect_backoff")
            with self._lock:
                self.stats["refused"] += 1           # a refused connection, whatever refused it
            self.note(logging.WARNING, host, "of_connect_backoff", peer=host, back_off_s=round(wait, 1),
                      refused=self.host_backoff.refused(host),
                      reason=f"more than {lim.host_connect_burst} connections, then one per "
                             f"{lim.host_connect_interval:g} s (--ofp-host-connect-burst, --ofp-host-connect-interval)")
            return None
        with self._lock:
            why = None
            if len(self.conns) >= lim.max_connections:
                why = f"{len(self.conns)} connections (--ofp-max-connections)"
            elif self._per_host[host] >= lim.max_connections_per_host:
                why = f"{self._per_host[host]} connections from {host} (--ofp-max-connections-per-host)"
            elif self._handshaking >= lim.max_handshakes:
                why = f"{self._handshaking} connections in handshake (--ofp-max-handshakes)"
            elif self._hs_per_host[host] >= lim.max_handshakes_per_host:
                why = f"{self._hs_per_host[host]} connections in handshake from {host} (--ofp-max-handshakes-per-host)"
            if why is None:
                c = Conn(host, port, sock)
                self.conns.add(c)
                self._per_host[host] += 1
                self._handshaking += 1
                self._hs_per_host[host] += 1
                self.stats["accepted"] += 1
                return c
        self.count("refused")
        self.note(logging.WARNING, host, "of_connection_refused", peer=f"{host}:{port}", reason=why)
        return None

    def _ready(self, c: Conn) -> None:
        with self._lock:
            if not c.ready and c in self.conns:
                c.ready = True
                self._handshaking -= 1
                self._hs_per_host[c.host] -= 1
                if self._hs_per_host[c.host] <= 0:
                    del self._hs_per_host[c.host]

    def leave(self, c: Conn) -> None:
        with self._lock:
            if c not in self.conns:
                return
            self.conns.discard(c)
            self._per_host[c.host] -= 1
            if self._per_host[c.host] <= 0:
                del self._per_host[c.host]
            if not c.ready:
                self._handshaking -= 1
                self._hs_per_host[c.host] -= 1
                if self._hs_per_host[c.host] <= 0:
                    del self._hs_per_host[c.host]
            self.stats["closed"] += 1
            if c.dp is not None and self.by_dpid.get(c.dp.id) is c.dp:
                del self.by_dpid[c.dp.id]

    # -------------------------------------------------------------- datapath identity

    def reconnect_wait(self, dp: "GuardedDatapath") -> float:
        """0 when ``dp`` (handshake done) may come up now; else the seconds left of the back-off of
        its datapath id from its address (an impostor elsewhere does not spend a switch's own)."""
        host = dp.address[0] if isinstance(dp.address, tuple) and dp.address else "?"
        key = (dp.id, host)
        wait = self.dp_backoff.attempt(key)
        if wait:
            lim = self.limits
            self.count("reconnect_backoff")
            self.note(logging.WARNING, key, "of_reconnect_backoff", dpid=_dpid(dp.id), peer=_peer(dp),
                      back_off_s=round(wait, 1), refused=self.dp_backoff.refused(key),
                      reason=f"came up more than {lim.reconnect_burst} times, then more than once per "
                             f"{lim.reconnect_interval:g} s (--ofp-reconnect-burst, --ofp-reconnect-interval)")
        return wait

    def claim(self, dp: "GuardedDatapath") -> bool:
        """May ``dp`` (handshake done, its id known) become the connection for its datapath id?
        Yes if no other live connection holds that id, or if the holder does not answer an echo
        request within the probe timeout (it is then closed). No if the holder answers, or if
        another claim for the same id is being decided."""
        dpid = dp.id
        with self._lock:
            cur = self.by_dpid.get(dpid)
            if cur is None or cur is dp or cur.closing:
                self.by_dpid[dpid] = dp
                busy = None
            else:
                busy = dpid in self._probing
                if not busy:
                    self._probing.add(dpid)
        if busy is None:
            if cur is not None and cur is not dp:   # on its way out: its "switch down" goes first
                cur.wait_dead(2.0)
            return self._claimed(dp)
        if busy:
            self._refuse(dp, cur, "another connection's claim to this datapath id is being checked")
            return False
        try:
            t0 = time.monotonic()
            alive = cur.probe(self.limits.takeover_probe_timeout)
            waited = time.monotonic() - t0
        finally:
            with self._lock:
                self._probing.discard(dpid)
        with self._lock:
            holder = self.by_dpid.get(dpid)
            if alive and holder is cur and not cur.closing:
                refuse = True
            else:
                refuse = False
                self.by_dpid[dpid] = dp
        if refuse:
            self._refuse(dp, cur, f"the connected switch answered an echo request in {waited * 1000:.0f} ms")
            return False
        self.count("replaced", error=False)
        LOG.warning(_event("of_switch_replaced", dpid=_dpid(dpid), old=_peer(cur), new=_peer(dp),
                           reason=f"no echo reply within {self.limits.takeover_probe_timeout:g} s"))
        cur.abort("replaced by a new connection for its datapath id")
        cur.wait_dead(2.0)      # its "switch down" goes to the apps before the newcomer's "switch up"
        return self._claimed(dp)

    def _claimed(self, dp) -> bool:
        if dp.conn is not None:
            self._ready(dp.conn)
        return True

    def _refuse(self, dp, cur, why: str) -> None:
        self.count("takeover")
        self.note(logging.WARNING, dp.address[0] if dp.address else "?", "of_takeover_refused",
                  dpid=_dpid(dp.id), connected=_peer(cur), claimant=_peer(dp), reason=why)

    # -------------------------------------------------------------- monitor: timeouts and echoes

    def start(self) -> None:
        if self._monitor is None:
            self._monitor = threading.Thread(target=self._monitor_loop, name="of-monitor", daemon=True)
            self._monitor.start()

    def _monitor_loop(self) -> None:
        lim = self.limits
        period = max(0.05, min(0.5, lim.handshake_timeout / 4, lim.echo_interval / 4))
        while not self._stop.wait(period):
            try:
                self._check(time.monotonic())
            except Exception as exc:  # noqa: BLE001 - the monitor must outlive any one round
                ERRORS.count("openflow_monitor")
                self.note(logging.ERROR, "monitor", "of_monitor_error", error=f"{type(exc).__name__}: {exc}")

    def _check(self, now: float) -> None:
        lim = self.limits
        with self._lock:
            conns = list(self.conns)
        for c in conns:
            dp = c.dp
            if dp is not None and dp.closing:
                continue
            if dp is not None and dp.parsing and now - dp.parsing > lim.parse_timeout:
                self.count("parse_timeout")
                self.note(logging.ERROR, c.host, "of_parse_timeout", peer=f"{c.host}:{c.port}", dpid=_dpid(dp.id),
                          seconds=lim.parse_timeout)
                dp.abort("a message's parser did not finish")
                _interrupt(dp.owner_ident, ParseTimeout)
                continue
            if not c.ready:
                if now - c.accepted > lim.handshake_timeout:
                    self.count("handshake_timeout")
                    stage = "TLS" if dp is None and c.tls else ("hello" if dp is None or dp.state ==
                                                                HANDSHAKE_DISPATCHER else "features")
                    self.note(logging.WARNING, c.host, "of_handshake_timeout", peer=f"{c.host}:{c.port}",
                              stage=stage, seconds=lim.handshake_timeout,
                              dpid=_dpid(dp.id if dp is not None else None))
                    if dp is not None:
                        dp.abort("handshake timeout")
                    else:
                        _shutdown(c.sock)
                continue
            if dp.feeding:               # the receive loop is held by the app: not the switch's silence
                continue
            idle = now - dp.last_rx
            if idle > lim.idle_timeout:
                self.count("idle_timeout")
                self.note(logging.WARNING, c.host, "of_idle_timeout", peer=f"{c.host}:{c.port}",
                          dpid=_dpid(dp.id), silent_s=round(idle, 1))
                dp.abort("idle timeout")
            elif idle > lim.echo_interval and now - dp.last_echo > lim.echo_interval:
                dp.send_echo()

    def stop(self) -> None:
        """Stop accepting, then close every connection."""
        self._stop.set()
        for lst in list(self.listeners):
            lst.stop()
        with self._lock:
            conns = list(self.conns)
        for c in conns:
            if c.dp is not None:
                c.dp.abort("controller stopping")
            else:
                _shutdown(c.sock)

    # -------------------------------------------------------------- status

    def status(self) -> dict:
        with self._lock:
            return {"connections": len(self.conns), "handshaking": self._handshaking,
                    "switches": len(self.by_dpid), "peers": len(self._per_host),
                    "counts": dict(sorted(self.stats.items())),
                    "limits": {k: getattr(self.limits, k) for k in ("max_connections", "max_connections_per_host",
                                                                    "max_handshakes", "max_handshakes_per_host",
                                                                    "handshake_timeout", "idle_timeout")}}


def _peer(dp) -> str:
    a = getattr(dp, "address", None)
    return f"{a[0]}:{a[1]}" if isinstance(a, tuple) and len(a) >= 2 else str(a)


def _shutdown(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError):
        pass


# ---------------------------------------------------------------------------- one connection


_conn_ids = itertools.count(1)


class GuardedDatapath(of_controller.Datapath):
    """os-ken's ``Datapath`` (same attributes, ``send_msg``, events and handlers for the apps)
    with the connection handling of this module: own receive and send loops, a bounded send
    queue, echo probes, a claim on its datapath id before it is announced, and a close that
    ends both of its threads."""

    def __init__(self, sock, address, registry: Connections, conn: Conn | None = None):
        self.registry = registry
        self.conn = conn
        self.limits = registry.limits
        self.conn_id = next(_conn_ids)
        self.last_rx = self.last_echo = time.monotonic()
        self.feeding = False             #: the receive loop is handing messages to the app
        self.closing = False
        self.close_reason = None
        self._owner = threading.current_thread()
        self.owner_ident = self._owner.ident
        self.parsing = 0.0          #: when the message being parsed arrived in the parser (0: none)
        self._dead = threading.Event()
        self._q: deque = deque()
        self._q_cond = threading.Condition()
        self._xid_lock = threading.Lock()
        self._echo_waiters: dict = {}
        self._malformed = [time.monotonic(), 0]
        self._rx = bytearray()
        super().__init__(sock, address)
        self.send_q = None          # os-ken's queue is not used (see send); None tells its helpers so
        self.socket.settimeout(max(0.5, min(CONF.socket_timeout or 5.0, self.limits.send_timeout)))

    # -------------------------------------------------------------- state

    def set_state(self, state):
        if state == self.state:
            return
        if self.__dict__.get("closing") and state != DEAD_DISPATCHER:
            return                                   # closing: no more "up" announcements
        if state == MAIN_DISPATCHER and "registry" in self.__dict__:
            if self.id is None:
                self.malformed("handshake", self.ofproto.OFP_VERSION, 0, 0, "ready without a features reply")
                self.abort("no datapath id")
                return
            if self.registry.reconnect_wait(self):
                self.abort("reconnecting too often: backing off")
                return
            if not self.registry.claim(self):
                self.abort("datapath id held by a live switch")
                return
        super().set_state(state)
        if state == DEAD_DISPATCHER and "registry" in self.__dict__:
            self._dead.set()

    def wait_dead(self, timeout: float) -> bool:
        return self._dead.wait(timeout)

    def abort(self, reason: str) -> None:
        """Close from any thread: the receive loop ends, the send loop ends, the connection's
        own thread announces the switch down (``DEAD_DISPATCHER``)."""
        if self.closing:
            return
        self.closing = True
        self.close_reason = reason
        _shutdown(self.socket)
        with self._q_cond:
            self._q.clear()
            self._q_cond.notify_all()
        for ev in list(self._echo_waiters.values()):
            ev.set()

    def close(self):
        """os-ken's close: from the connection's own thread, announces the switch down; from
        any other thread, asks the connection to close (its own thread then announces it)."""
        self.abort(self.close_reason or "closed")
        if threading.current_thread() is self._owner:
            self.set_state(DEAD_DISPATCHER)
            try:
                self.socket.close()
            except OSError:
                pass

    # -------------------------------------------------------------- sending

    def set_xid(self, msg):
        with self._xid_lock:
            self.xid = (self.xid + 1) & self.ofproto.MAX_XID
            xid = self.xid
        msg.set_xid(xid)
        return xid

    def send(self, buf, close_socket=False):
        """Queue bytes for the switch. Waits up to ``send_timeout`` for room in a full queue;
        a switch that does not drain its queue in that time is disconnected. False when the
        message was not queued (closing, or the switch stalled)."""
        deadline = None
        with self._q_cond:
            while len(self._q) >= self.limits.send_queue and not self.closing:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.limits.send_timeout
                if now >= deadline:
                    break
                self._q_cond.wait(deadline - now)
            if self.closing:
                return False
            if len(self._q) < self.limits.send_queue:
                self._q.append((bytes(buf), close_socket))
                self._q_cond.notify_all()
                return True
        self.registry.count("send_stalled")
        self.registry.note(logging.WARNING, self.address[0], "of_send_stalled", peer=_peer(self),
                           dpid=_dpid(self.id), queued=len(self._q), seconds=self.limits.send_timeout)
        self.abort("send queue full")
        return False

    def _try_send(self, buf) -> bool:
        with self._q_cond:
            if self.closing or len(self._q) >= self.limits.send_queue:
                return False
            self._q.append((bytes(buf), False))
            self._q_cond.notify_all()
            return True

    def _send_loop(self):
        try:
            while True:
                with self._q_cond:
                    while not self._q and not self.closing:
                        self._q_cond.wait()
                    if self.closing:
                        return
                    buf, close_socket = self._q.popleft()
                    self._q_cond.notify_all()
                self.socket.sendall(buf)
                if close_socket:
                    return
        except socket.timeout:                 # the switch read nothing for that long: say so
            if not self.closing:
                self.registry.count("send_timeout")
                self.registry.note(logging.WARNING, self.address[0], "of_send_timeout", peer=_peer(self),
                                   dpid=_dpid(self.id), seconds=self.socket.gettimeout())
        except (OSError, ValueError) as exc:   # the switch closed the connection, or it was closed here
            if not self.closing:
                LOG.debug("send to %s failed: %s", _peer(self), exc)
        finally:
            self.abort("send loop ended")

    # -------------------------------------------------------------- echo

    def send_echo(self, data: bytes = b"") -> int | None:
        req = self.ofproto_parser.OFPEchoRequest(self, data=data)
        xid = self.set_xid(req)
        req.serialize()
        self.last_echo = time.monotonic()
        return xid if self._try_send(req.buf) else None

    def probe(self, timeout: float) -> bool:
        """Does the switch answer an echo request within ``timeout`` seconds?"""
        if self.closing:
            return False
        ev = threading.Event()
        req = self.ofproto_parser.OFPEchoRequest(self, data=b"iot-probe")
        xid = self.set_xid(req)
        req.serialize()
        self._echo_waiters[xid] = ev
        try:
            if not self._try_send(req.buf):
                return False
            return ev.wait(timeout) and not self.closing
        finally:
            self._echo_waiters.pop(xid, None)

    def acknowledge_echo_reply(self, xid):
        ev = self._echo_waiters.get(xid)
        if ev is not None:
            ev.set()

    def _echo_request_loop(self):   # replaced by the registry's monitor
        return

    # -------------------------------------------------------------- receiving

    def serve(self):
        sender = threading.Thread(target=self._send_loop, name=f"of-send-{self.conn_id}", daemon=True)
        sender.start()
        try:
            self.send_msg(self.ofproto_parser.OFPHello(self))
            self._recv_loop()
        finally:
            self.abort(self.close_reason or "connection closed")
            sender.join(self.limits.send_timeout + 1.0)
            self.is_active = False

    def _recv_loop(self):
        sock = self.socket
        while not self.closing:
            try:
                chunk = sock.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            except (OSError, ValueError, EOFError):
                break
            if not chunk:
                break
            # Silence counts only while this loop waits on the socket: while it hands messages to
            # an app whose event queue is full, the controller is the one behind, and the
            # switch's echo reply waits unread in the socket buffer.
            self.last_rx = time.monotonic()
            self.feeding = True
            try:
                self.feed(chunk)
            finally:
                self.feeding = False
                self.last_rx = time.monotonic()

    def feed(self, chunk) -> None:
        """Bytes from the switch: every complete message is dispatched, a partial one kept
        (at most one message, < 64 KiB, since the length field has 16 bits). A length under
        the header's 8 bytes cannot be framed: the connection is closed."""
        buf = self._rx
        buf += chunk
        n = len(buf)
        pos = 0
        # Packet-ins straight to the app's bulk handler (Connections.take_packet_ins), read in
        # place: no parsed message, event and handler call each. Any other message is
        # dispatched as before, after the packet-ins that came before it.
        sink = self.registry.sink_for(self.ofp_brick) if self.state == MAIN_DISPATCHER else None
        rows: list = []
        ofp_version = self.ofproto.OFP_VERSION
        packet_in = self.ofproto.OFPT_PACKET_IN
        try:
            while n - pos >= 8 and not self.closing:
                version, msg_type, msg_len, xid = HEADER.unpack_from(buf, pos)
                if msg_len < 8:
                    if rows:                     # the packet-ins before it were whole: the app has them
                        self._sink(sink, rows)
                        rows = []
                    self.malformed("bad_length", version, msg_type, msg_len, f"length {msg_len} < 8: stream lost")
                    self.abort("unframeable message")
                    buf.clear()
                    pos = 0
                    return
                if n - pos < msg_len:
                    break
                if sink is not None and msg_type == packet_in and version == ofp_version:
                    row = packet_in_row(buf, pos, msg_len)
                    if row is not None:
                        rows.append(row)
                        pos += msg_len
                        continue
                if rows:
                    self._sink(sink, rows)
                    rows = []
                raw = buf[pos:pos + msg_len]
                pos += msg_len
                self.dispatch(version, msg_type, msg_len, xid, raw)
        finally:
            if pos:
                del buf[:pos]
        if rows:
            self._sink(sink, rows)

    def _sink(self, sink, rows: list) -> None:
        try:
            sink(self.id, rows)
        except Exception as exc:  # noqa: BLE001 - the app's failure is not the connection's
            self._handler_failed(getattr(sink, "__name__", "packet-in sink"), None, exc)

    def dispatch(self, version: int, msg_type: int, msg_len: int, xid: int, raw) -> None:
        """One framed message: parse it, hand its event to the observers and to the handlers
        registered on the OpenFlow service. Never raises."""
        if self.state != HANDSHAKE_DISPATCHER and version != self.ofproto.OFP_VERSION:
            self.malformed("version", version, msg_type, msg_len,
                           f"version 0x{version:02x} on a 0x{self.ofproto.OFP_VERSION:02x} connection")
            return
        vparser = ofproto_parser._MSG_PARSERS.get(version)
        if vparser is None:
            self.malformed("version", version, msg_type, msg_len, f"unknown OpenFlow version 0x{version:02x}")
            return
        table = getattr(sys.modules.get(vparser.__module__), "_MSG_PARSERS", None)
        if isinstance(table, dict) and msg_type not in table:
            self.malformed("type", version, msg_type, msg_len, f"unknown message type {msg_type}")
            return
        brick = self.ofp_brick
        state = self.state
        # Parse only what some handler listens for in this state: several of os-ken's parsers
        # (group, meter, table-features statistics...) loop for ever on a zero length field.
        # Of those the app takes, the hello and the flow statistics are checked before parsing
        # (_bad_structure); a parser that still does not return is interrupted (the monitor).
        try:
            cls = _message_class(table, msg_type, raw) if isinstance(table, dict) else None
            ev_cls = ofp_event._OFP_MSG_EVENTS.get("Event" + cls.__name__) if cls is not None else None
            unwanted = cls is not None and brick is not None and (ev_cls is None or
                                                                   not _listened(brick, ev_cls, state))
        except Exception:  # noqa: BLE001 - cannot tell (handlers changing): parse it
            unwanted = False
        if unwanted:
            self.registry.count("ignored", error=False)
            return
        bad = _bad_structure(version, msg_type, raw, msg_len)
        if bad:
            self.malformed("structure", version, msg_type, msg_len, bad)
            return
        try:
            self.parsing = time.monotonic()      # the monitor interrupts a parser that never returns
            try:
                msg = vparser(self, version, msg_type, msg_len, xid, raw)
            finally:
                self.parsing = 0.0
            ev = ofp_event.ofp_msg_to_ev(msg) if msg is not None else None
        except Exception as exc:  # noqa: BLE001 - any parser failure is the message's fault
            self.malformed("parse", version, msg_type, msg_len, f"{type(exc).__name__}: {str(exc)[:200]}")
            return
        if ev is None:
            self.malformed("parse", version, msg_type, msg_len, "no message")
            return
        if brick is None:
            return
        try:
            brick.send_event_to_observers(ev, state)
        except Exception as exc:  # noqa: BLE001
            self._handler_failed("observers", ev, exc)
        for handler in [h for h in brick.get_handlers(ev) if _wants(h, ev, state)]:
            try:
                handler(ev)
            except Exception as exc:  # noqa: BLE001 - one handler's failure is not the connection's
                self._handler_failed(getattr(handler, "__name__", "?"), ev, exc)

    def malformed(self, kind: str, version: int, msg_type: int, msg_len: int, detail: str) -> None:
        reg = self.registry
        reg.count("malformed")
        reg.note(logging.WARNING, self.address[0] if self.address else "?", "of_malformed", peer=_peer(self),
                 dpid=_dpid(self.id), problem=kind, version=version, type=msg_type, length=msg_len, detail=detail)
        now = time.monotonic()
        w = self._malformed
        if now - w[0] > 10.0:
            w[0], w[1] = now, 0
        w[1] += 1
        if w[1] > self.limits.max_malformed and not self.closing:
            reg.count("malformed_disconnect")
            reg.note(logging.WARNING, self.address[0] if self.address else "?", "of_malformed_disconnect",
                     peer=_peer(self), dpid=_dpid(self.id), malformed=w[1], seconds=10)
            self.abort("too many malformed messages")

    def _handler_failed(self, name: str, ev, exc: BaseException) -> None:
        reg = self.registry
        reg.count("handler")
        ok, held = reg.log.allow(("handler", name, type(exc).__name__))
        if ok:
            LOG.error(_event("of_handler_error", handler=name, on=type(ev).__name__, peer=_peer(self),
                             dpid=_dpid(self.id), error=f"{type(exc).__name__}: {str(exc)[:300]}",
                             suppressed=held), exc_info=exc)


def _message_class(table: dict, msg_type: int, raw):
    """The message class os-ken's parser would build for this message (None: cannot tell)."""
    fn = table.get(msg_type)
    cls = getattr(fn, "__self__", None)
    if cls is None:
        return None
    stats = getattr(cls, "_STATS_MSG_TYPES", None)
    if stats is not None and len(raw) >= 10:                  # multipart: the body's type decides
        return stats.get(struct.unpack_from("!H", raw, 8)[0])
    return cls


def _listened(brick, ev_cls, state) -> bool:
    """Does a handler of the OpenFlow service, or an observing app, take this event in this state?"""
    for h in brick.event_handlers.get(ev_cls, ()):
        caller = (getattr(h, "callers", None) or {}).get(ev_cls)
        if caller is not None and state in caller.dispatchers:
            return True
    for states in brick.observers.get(ev_cls, {}).values():
        if not states or state in states:
            return True
    return False


class ParseTimeout(Exception):
    """Raised in a connection's thread whose message parser has run for too long."""


def _interrupt(thread_ident, exc_type) -> bool:
    """Raise ``exc_type`` in the thread ``thread_ident`` at its next Python instruction. The
    last resort against a parser that never returns (pure-Python loops): the checks before
    parsing reject the structures known to do that; this is for the ones not known."""
    if not thread_ident:
        return False
    n = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_ident), ctypes.py_object(exc_type))
    if n > 1:                                   # cannot happen for one id; undo, as the C API asks
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_ident), None)
    return n == 1


OFPT_MULTIPART_REPLY, OFPMP_FLOW = 19, 1


def _bad_structure(version: int, msg_type: int, raw, msg_len: int) -> str | None:
    """Lengths os-ken's OpenFlow 1.3 parsers step by, checked before they run: a zero (or
    short) one makes them loop for ever. Hello elements; flow statistics entries, their
    instructions and actions (the app asks switches for flow statistics)."""
    if version != 4:
        return None
    if msg_type == OFPT_HELLO:
        return _bad_hello(raw, msg_len)
    if msg_type == OFPT_MULTIPART_REPLY and msg_len >= 10 and struct.unpack_from("!H", raw, 8)[0] == OFPMP_FLOW:
        return _bad_flow_stats(raw, msg_len)
    return None


def _bad_flow_stats(raw, msg_len: int) -> str | None:
    """ofp_flow_stats entries (48 bytes, a match padded to 8, instructions), each within the
    message; instructions and the actions of write/apply-actions at least 8 bytes, multiples
    of 8, within their parent."""
    off = 16
    while off < msg_len:
        if off + 56 > msg_len:
            return f"flow statistics entry cut at byte {off}"
        (length,) = struct.unpack_from("!H", raw, off)
        if length < 56 or off + length > msg_len:
            return f"flow statistics entry at byte {off}: length {length}"
        (mlen,) = struct.unpack_from("!H", raw, off + 50)
        span = (mlen + 7) // 8 * 8
        if mlen < 4 or 48 + span > length:
            return f"flow statistics entry at byte {off}: match length {mlen}"
        p, end = off + 48 + span, off + length
        while p < end:
            if p + 4 > end:
                return f"instruction cut at byte {p}"
            itype, ilen = struct.unpack_from("!HH", raw, p)
            if ilen < 8 or ilen % 8 or p + ilen > end:
                return f"instruction at byte {p}: length {ilen}"
            if itype in (3, 4):                          # write-actions, apply-actions
                q, qend = p + 8, p + ilen
                while q < qend:
                    if q + 4 > qend:
                        return f"action cut at byte {q}"
                    _atype, alen = struct.unpack_from("!HH", raw, q)
                    if alen < 8 or alen % 8 or q + alen > qend:
                        return f"action at byte {q}: length {alen}"
                    q += alen
            p += ilen
        off += length
    return None


def _bad_hello(raw, msg_len: int) -> str | None:
    """Hello elements (OpenFlow 1.3+): each at least its 4-byte header, all within the message."""
    off = 8
    while off < msg_len:
        if off + 4 > msg_len:
            return f"hello element header cut at byte {off}"
        etype, elen = struct.unpack_from("!HH", raw, off)
        if elen < 4 or off + elen > msg_len:
            return f"hello element at byte {off}: length {elen}"
        off += elen
    return None


def _wants(handler, ev, state) -> bool:
    """As os-ken's receive loop: a handler of the OpenFlow service runs in the states it names."""
    callers = getattr(handler, "callers", None)
    caller = callers.get(ev.__class__) if callers else None
    return caller is not None and state in caller.dispatchers


# ---------------------------------------------------------------------------- the listener


def tls_context() -> ssl.SSLContext | None:
    """os-ken's TLS options (``--ctl-privkey``, ``--ctl-cert``, ``--ca-certs``, ``--ciphers``) as a
    server context: TLS 1.2 or later; with ``--ca-certs``, switches must present a certificate
    signed by one of those CAs (mutual TLS)."""
    if CONF.ctl_privkey is None or CONF.ctl_cert is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(CONF.ctl_cert, CONF.ctl_privkey)
        if CONF.ca_certs is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(CONF.ca_certs)
        if CONF.ciphers is not None:
            ctx.set_ciphers(CONF.ciphers)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ValueError(f"TLS for OpenFlow: cannot load --ctl-cert {CONF.ctl_cert} / --ctl-privkey "
                         f"{CONF.ctl_privkey} / --ca-certs {CONF.ca_certs}: {exc}") from None
    return ctx


class Listener:
    """One listening socket and its accept loop."""

    def __init__(self, registry: Connections, host: str, port: int, ctx: ssl.SSLContext | None):
        self.registry = registry
        self.host, self.port, self.ctx = host, port, ctx
        self.sock: socket.socket | None = None
        self._stopped = False

    def bind(self) -> None:
        family = socket.AF_INET6 if ip.valid_ipv6(self.host) else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.host, self.port))
            s.listen(self.registry.limits.backlog)
        except OSError:
            s.close()
            raise
        self.sock = s
        self.port = s.getsockname()[1]

    def stop(self) -> None:
        self._stopped = True
        if self.sock is not None:
            _shutdown(self.sock)
            try:
                self.sock.close()
            except OSError:
                pass

    def serve(self) -> None:
        reg = self.registry
        backoff = 0.0
        while not self._stopped:
            try:
                sock, addr = self.sock.accept()
            except OSError as exc:
                if self._stopped:
                    return
                if exc.errno in (errno.EBADF, errno.EINVAL) and self.sock.fileno() < 0:
                    return
                backoff = min(reg.limits.accept_backoff_max, max(0.01, backoff * 2))
                reg.count("accept")
                reg.note(logging.ERROR, "accept", "of_accept_error", listen=f"{self.host}:{self.port}",
                         error=f"{exc}", retry_s=backoff)
                time.sleep(backoff)
                continue
            backoff = 0.0
            self.handle(sock, addr)

    def handle(self, sock, addr) -> None:
        reg = self.registry
        host, port = str(addr[0]), int(addr[1]) if len(addr) > 1 else 0
        c = reg.admit(host, port, sock)
        if c is None:
            _close(sock)
            return
        c.tls = self.ctx is not None
        try:
            threading.Thread(target=run_connection, args=(reg, c, self.ctx), name=f"of-conn-{host}:{port}",
                             daemon=True).start()
        except RuntimeError as exc:        # no thread can be started: refuse, wait a little
            reg.leave(c)
            _close(sock)
            reg.count("spawn")
            reg.note(logging.ERROR, "spawn", "of_spawn_error", peer=f"{host}:{port}", error=str(exc))
            time.sleep(0.1)


def _close(sock) -> None:
    _shutdown(sock)
    try:
        sock.close()
    except OSError:
        pass


def run_connection(reg: Connections, c: Conn, ctx: ssl.SSLContext | None) -> None:
    """A connection's own thread: TLS, then the datapath until it closes; then it is counted out."""
    sock = c.sock
    try:
        if ctx is not None:
            sock.settimeout(reg.limits.handshake_timeout)
            try:   # handshake after wrapping, so that the monitor can cut a slow one (c.sock)
                sock = c.sock = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                sock.do_handshake()
            except (OSError, ssl.SSLError, ValueError) as exc:
                reg.count("tls")
                reg.note(logging.WARNING, c.host, "of_tls_refused", peer=f"{c.host}:{c.port}",
                         error=f"{type(exc).__name__}: {exc}")
                return
        dp = GuardedDatapath(sock, (c.host, c.port), reg, c)
        c.dp = dp
        if reg._stop.is_set():
            return
        try:
            dp.serve()
        finally:
            dp.close()
    except Exception as exc:  # noqa: BLE001 - a connection's failure is logged, counted, contained
        reg.count("connection")
        ok, held = reg.log.allow(("connection", type(exc).__name__))
        if ok:
            LOG.error(_event("of_connection_error", peer=f"{c.host}:{c.port}",
                             error=f"{type(exc).__name__}: {str(exc)[:300]}", suppressed=held), exc_info=exc)
    finally:
        reg.leave(c)
        _close(c.sock)


class GuardedOpenFlowController(of_controller.OpenFlowController):
    """os-ken's ``OpenFlowController`` (same options, same ports: 6653, and 6633 as well when no
    port is given) with :class:`Listener` and :class:`GuardedDatapath`."""

    def __init__(self):
        self.registry = current() or install()
        self._clients = {}
        if not CONF.ofp_tcp_listen_port and not CONF.ofp_ssl_listen_port:
            self.ofp_tcp_listen_port = ofproto_common.OFP_TCP_PORT
            self.ofp_ssl_listen_port = ofproto_common.OFP_SSL_PORT
            threading.Thread(target=self._serve, args=(ofproto_common.OFP_TCP_PORT_OLD,
                                                       ofproto_common.OFP_SSL_PORT_OLD, True),
                             name="of-listen-legacy", daemon=True).start()
        else:
            self.ofp_tcp_listen_port = CONF.ofp_tcp_listen_port
            self.ofp_ssl_listen_port = CONF.ofp_ssl_listen_port
        self.registry.start()

    def spawn_client_loop(self, addr, interval=None):
        interval = interval or CONF.ofp_switch_connect_interval
        client = hub.StreamClient(addr)
        reg = self.registry

        def handle(sock, address):
            c = reg.admit(str(address[0]), int(address[1]), sock)
            if c is None:
                _close(sock)
                return
            run_connection(reg, c, None)

        threading.Thread(target=client.connect_loop, args=(handle, interval), daemon=True).start()
        self._clients[addr] = client

    def server_loop(self, ofp_tcp_listen_port, ofp_ssl_listen_port):
        self._serve(ofp_tcp_listen_port, ofp_ssl_listen_port, False)

    def _serve(self, tcp_port, ssl_port, legacy: bool) -> None:
        try:
            ctx = tls_context()
        except ValueError as exc:
            fatal(str(exc))
            return
        port = ssl_port if ctx is not None else tcp_port
        lst = Listener(self.registry, CONF.ofp_listen_host, port, ctx)
        try:
            lst.bind()
        except OSError as exc:
            where = f"{CONF.ofp_listen_host}:{port}"
            if legacy:
                LOG.warning(_event("of_listen_skipped", listen=where, error=str(exc),
                                   note="the legacy OpenFlow port; the main one is unaffected"))
            else:
                fatal(f"cannot listen for OpenFlow on {where}: {exc}")
            return
        self.registry.listeners.append(lst)
        LOG.info(_event("of_listen", listen=f"{CONF.ofp_listen_host}:{lst.port}", tls=ctx is not None,
                        client_certificates=bool(ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED)))
        lst.serve()


_REGISTRY: Connections | None = None


def current() -> Connections | None:
    return _REGISTRY


def install(limits: Limits | None = None) -> Connections:
    """Use this module's connection handling for os-ken's OpenFlow service (before the apps
    are instantiated). Returns the registry."""
    global _REGISTRY
    _REGISTRY = Connections(limits)
    ofp_handler.OpenFlowController = GuardedOpenFlowController
    _quiet_framework_logs()
    _lighter_error_handler()
    return _REGISTRY


def _lighter_error_handler() -> None:
    """os-ken's handler of switch error messages formats a hex dump of the whole message for a
    debug line before it knows whether debug lines are wanted: about 8 ms per 64 KiB error
    message, which a peer can send as fast as it likes. In its place: the same lines when
    debug logging is on; otherwise only its one warning (short data), rate-limited."""
    from os_ken.controller.handler import set_ev_handler

    cls = ofp_handler.OFPHandler
    original = getattr(cls.error_msg_handler, "__wrapped__", cls.error_msg_handler)
    dispatchers = [HANDSHAKE_DISPATCHER, CONFIG_DISPATCHER, MAIN_DISPATCHER]

    def error_msg_handler(self, ev):
        if self.logger.isEnabledFor(logging.DEBUG):
            return original(self, ev)
        msg = ev.msg
        ofp = msg.datapath.ofproto
        if msg.type not in (ofp.OFPET_HELLO_FAILED, ofp.OFPET_EXPERIMENTER) and len(msg.data) < ofp.OFP_HEADER_SIZE:
            self.logger.warning("error message from %s: its data field is shorter than an OpenFlow header "
                                "(the specification asks for at least 64 bytes of the failed request)",
                                msg.datapath.address)
        return None

    error_msg_handler.__wrapped__ = original
    cls.error_msg_handler = set_ev_handler(ofp_event.EventOFPErrorMsg, dispatchers)(error_msg_handler)


class _RateLimitFilter(logging.Filter):
    """At most a few records a minute per logger and message template (then a count)."""

    def __init__(self):
        super().__init__()
        self.limiter = RateLimitedLog(LOG, burst=5, per=60.0)

    def filter(self, record: logging.LogRecord) -> bool:
        ok, held = self.limiter.allow((record.name, record.msg if isinstance(record.msg, str) else "?"))
        if ok and held:
            record.msg = f"{record.msg} ({held} similar lines suppressed)"
        return ok


def _quiet_framework_logs() -> None:
    """os-ken's own lines about a peer's messages (hello failures, short error data, parser
    tracebacks with hex dumps, uncaught thread exceptions) are rate-limited."""
    f = _RateLimitFilter()
    for name in ("OFPHandler", "ofp_event", "os_ken.ofproto.ofproto_parser", "os_ken.controller.controller",
                 "os_ken.lib.hub", "os_ken.base.app_manager"):
        lg = logging.getLogger(name)
        if not any(isinstance(x, _RateLimitFilter) for x in lg.filters):
            lg.addFilter(f)


__all__ = ["Connections", "GuardedDatapath", "GuardedOpenFlowController", "Limits", "Listener", "current",
           "install", "limits_from_conf", "register_opts", "tls_context"]
