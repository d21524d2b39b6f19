"""A minimal OpenFlow 1.3 switch over TCP, for tests and the packet-in benchmark.

It connects to a controller, completes the handshake (hello, features, port description),
answers echo and barrier requests, records every message the controller sends (flow-mods
parsed with os-ken's own parser, meter-mods and packet-outs decoded), and sends packet-ins —
one at a time or as a pre-built burst for load generation. Flow-stats requests are answered
when ``flow_stats`` is set: a function of the request (table, cookie, cookie mask) returning
entries (table, cookie, packets, bytes, duration in seconds). ``tls`` (an ``ssl.SSLContext``)
makes it connect over TLS; ``answer_echo = False`` makes it stop answering echo requests (a
switch that hangs without closing its connection).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass

OFP_VERSION = 0x04
T_HELLO, T_ERROR, T_ECHO_REQUEST, T_ECHO_REPLY = 0, 1, 2, 3
T_FEATURES_REQUEST, T_FEATURES_REPLY = 5, 6
T_PACKET_IN, T_FLOW_REMOVED, T_PORT_STATUS, T_PACKET_OUT, T_FLOW_MOD = 10, 11, 12, 13, 14
T_MULTIPART_REQUEST, T_MULTIPART_REPLY, T_BARRIER_REQUEST, T_BARRIER_REPLY, T_METER_MOD = 18, 19, 20, 21, 29
MP_FLOW, MP_PORT_DESC = 1, 13
OFPR_NO_MATCH, OFPR_ACTION = 0, 1


def header(msg_type: int, length: int, xid: int) -> bytes:
    return struct.pack("!BBHI", OFP_VERSION, msg_type, length, xid)


def packet_in(data: bytes, in_port: int, cookie: int = 0, table_id: int = 0, total_len: int | None = None,
              reason: int = OFPR_ACTION, xid: int = 0) -> bytes:
    """An OFPT_PACKET_IN carrying ``data`` with an OXM match of ``in_port``."""
    match = struct.pack("!HHII", 1, 12, 0x80000004, in_port) + b"\x00" * 4       # padded to 8
    body = struct.pack("!IHBBQ", 0xFFFFFFFF, len(data) if total_len is None else total_len, reason, table_id,
                       cookie) + match + b"\x00\x00" + data
    return header(T_PACKET_IN, 8 + len(body), xid) + body


def port_desc(port_no: int) -> bytes:
    hw = (0x020000000000 | port_no).to_bytes(6, "big")
    name = f"p{port_no}".encode().ljust(16, b"\x00")
    return struct.pack("!I4x6s2x16sIIIIIIII", port_no, hw, name, 0, 4, 0, 0, 0, 0, 10_000_000, 10_000_000)


def flow_stats_reply(entries, xid: int) -> bytes:
    """An OFPMP_FLOW reply: one ofp_flow_stats per (table, cookie, packets, bytes, duration s),
    with an empty match and no instructions."""
    body = b""
    for table, ck, packets, nbytes, duration in entries:
        sec = int(duration)
        body += struct.pack("!HBxIIHHHH4xQQQ", 56, table, sec, int((duration - sec) * 1e9), 100, 0, 0, 0, ck,
                            packets, nbytes) + struct.pack("!HH4x", 1, 4)
    body = struct.pack("!HH4x", MP_FLOW, 0) + body
    return header(T_MULTIPART_REPLY, 8 + len(body), xid) + body


def port_status(port_no: int, reason: int, link_down: bool = False) -> bytes:
    desc = bytearray(port_desc(port_no))
    struct.pack_into("!I", desc, 36, 1 if link_down else 4)
    body = struct.pack("!B7x", reason) + bytes(desc)
    return header(T_PORT_STATUS, 8 + len(body), 0) + body


@dataclass
class Received:
    type: int
    xid: int
    raw: bytes
    parsed: object = None


class FakeSwitch:
    def __init__(self, host: str, port: int, dpid: int = 1, ports=(1, 2, 3), connect_timeout: float = 20.0,
                 tls=None, source: str | None = None):
        self.dpid = dpid
        self.answer_echo = True
        self.echo_requests = 0
        self.ports = list(ports)
        self.received: list[Received] = []
        self.cond = threading.Condition()
        self.closed = False
        self._echo_xid = 0x10000000
        self._echo_replies: set = set()
        self.flow_stats = None        #: fn(request dict) -> [(table, cookie, packets, bytes, duration s)]
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.sock = socket.create_connection((host, port), timeout=2.0,
                                                     source_address=(source, 0) if source else None)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=None)
        self.sock.settimeout(None)
        self._send_lock = threading.Lock()
        self.send(header(T_HELLO, 8, 1))
        self._reader = threading.Thread(target=self._read_loop, name=f"fakeswitch-{dpid}", daemon=True)
        self._reader.start()

    # ---------------------------------------------------------------- wire

    def send(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(data)

    def _read_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("controller closed the connection")
            buf += chunk
        return bytes(buf)

    def _read_loop(self) -> None:
        try:
            while True:
                hdr = self._read_exact(8)
                ver, typ, length, xid = struct.unpack("!BBHI", hdr)
                raw = hdr + self._read_exact(length - 8)
                self._handle(typ, xid, raw)
        except (OSError, ConnectionError):
            pass
        finally:
            with self.cond:
                self.closed = True
                self.cond.notify_all()

    def _handle(self, typ: int, xid: int, raw: bytes) -> None:
        parsed = None
        if typ == T_ECHO_REQUEST:
            self.echo_requests += 1
            if self.answer_echo:
                self.send(header(T_ECHO_REPLY, len(raw), xid) + raw[8:])
        elif typ == T_FEATURES_REQUEST:
            body = struct.pack("!QIBB2xII", self.dpid, 0, 254, 0, 0x4F, 0)
            self.send(header(T_FEATURES_REPLY, 8 + len(body), xid) + body)
        elif typ == T_MULTIPART_REQUEST:
            (mp_type,) = struct.unpack_from("!H", raw, 8)
            if mp_type == MP_PORT_DESC:
                body = struct.pack("!HH4x", MP_PORT_DESC, 0) + b"".join(port_desc(p) for p in self.ports)
                self.send(header(T_MULTIPART_REPLY, 8 + len(body), xid) + body)
            elif mp_type == MP_FLOW:
                table, out_port, out_group, ck, mask = struct.unpack_from("!B3xII4xQQ", raw, 16)
                parsed = {"multipart": "flow", "table": table, "cookie": ck, "cookie_mask": mask}
                if self.flow_stats is not None:
                    self.send(flow_stats_reply(self.flow_stats(parsed), xid))
        elif typ == T_BARRIER_REQUEST:
            self.send(header(T_BARRIER_REPLY, 8, xid))
        elif typ == T_FLOW_MOD:
            parsed = _parse_flow_mod(raw, xid)
        elif typ == T_METER_MOD:
            cmd, flags, meter_id = struct.unpack_from("!HHI", raw, 8)
            bands = []
            p = 16
            while p + 16 <= len(raw):
                btype, blen, rate, burst = struct.unpack_from("!HHII", raw, p)
                bands.append((btype, rate, burst))
                p += max(blen, 16)
            parsed = {"command": cmd, "flags": flags, "meter_id": meter_id, "bands": bands}
        elif typ == T_PACKET_OUT:
            buffer_id, in_port, alen = struct.unpack_from("!IIH", raw, 8)
            actions = raw[24:24 + alen]
            out_ports = []
            p = 0
            while p + 8 <= len(actions):
                atype, al = struct.unpack_from("!HH", actions, p)
                if atype == 0:
                    out_ports.append(struct.unpack_from("!I", actions, p + 4)[0])
                p += max(al, 8)
            parsed = {"in_port": in_port, "ports": out_ports, "data": raw[24 + alen:]}
        elif typ == T_ECHO_REPLY:
            with self.cond:
                self._echo_replies.add(xid)
                self.cond.notify_all()
            return
        with self.cond:
            self.received.append(Received(typ, xid, raw, parsed))
            self.cond.notify_all()

    # ---------------------------------------------------------------- helpers

    def wait_for(self, predicate, timeout: float = 20.0):
        """Wait until ``predicate(received)`` is truthy; returns its value (raises on timeout)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                v = predicate(self.received)
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise TimeoutError(f"switch {self.dpid}: condition not met within {timeout}s "
                                       f"({len(self.received)} messages received, closed={self.closed})")
                self.cond.wait(min(left, 0.5))

    def messages(self, typ: int) -> list:
        with self.cond:
            return [m for m in self.received if m.type == typ]

    def echo(self, timeout: float = 60.0) -> float:
        """Send an echo request and wait for its reply; returns when the reply arrived (monotonic)."""
        self._echo_xid += 1
        xid = self._echo_xid
        self.send(header(T_ECHO_REQUEST, 8, xid))
        deadline = time.monotonic() + timeout
        with self.cond:
            while xid not in self._echo_replies:
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise TimeoutError("no echo reply")
                self.cond.wait(min(left, 0.5))
        return time.monotonic()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def _parse_flow_mod(raw: bytes, xid: int):
    """A FLOW_MOD as os-ken parses it (or None if os-ken is not importable)."""
    try:
        from os_ken.ofproto import ofproto_v1_3_parser as parser
    except ImportError:  # pragma: no cover
        return None
    return parser.OFPFlowMod.parser(None, OFP_VERSION, T_FLOW_MOD, len(raw), xid, raw)
