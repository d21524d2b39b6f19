"""OpenFlow 1.3 messages a switch sends, built by hand (struct), and a mutator that breaks them:
for fuzzing the controller's receive path.

:func:`corpus` gives well-formed switch-to-controller messages of most types (hello with and
without a version bitmap, error, echo, experimenter, features reply, config reply, packet-in,
flow removed, port status, multipart replies of several kinds, barrier, role and async replies,
queue config). :class:`Mutator` draws cases from a seeded ``random.Random``: the valid message
as is, truncated (header length fixed up, body cut), extended or oversized (up to 65,535 bytes),
bytes flipped, inner length fields overwritten, another or an unknown type, another or an
unknown version, a random body, and a header whose length lies (shorter than 8, or longer than
what follows).
"""

from __future__ import annotations

import random
import struct

from testing.fakeswitch import packet_in, port_desc, port_status

V = 0x04
HDR = struct.Struct("!BBHI")


def msg(msg_type: int, body: bytes = b"", xid: int = 0, version: int = V) -> bytes:
    return HDR.pack(version, msg_type, 8 + len(body), xid) + body


def match(*oxms: bytes) -> bytes:
    """An OXM match (type 1), padded to 8 bytes."""
    body = b"".join(oxms)
    m = struct.pack("!HH", 1, 4 + len(body)) + body
    return m + b"\x00" * (-len(m) % 8)


def oxm_in_port(port: int) -> bytes:
    return struct.pack("!II", 0x80000004, port)


def oxm_eth_src(mac: bytes) -> bytes:
    return struct.pack("!I", 0x80000806) + mac


def instr_goto(table: int) -> bytes:
    return struct.pack("!HHB3x", 1, 8, table)


def instr_actions_output(port: int) -> bytes:
    action = struct.pack("!HHIH6x", 0, 16, port, 0xFFFF)
    return struct.pack("!HH4x", 4, 8 + len(action)) + action


def multipart(mp_type: int, body: bytes, flags: int = 0) -> bytes:
    return msg(19, struct.pack("!HH4x", mp_type, flags) + body)


def flow_stats(table: int, cookie: int, m: bytes, instructions: bytes) -> bytes:
    body = struct.pack("!BxIIHHHH4xQQQ", table, 5, 0, 100, 300, 0, 1, cookie, 10, 1000) + m + instructions
    return struct.pack("!H", 2 + len(body)) + body


def corpus() -> list[bytes]:
    mac = bytes.fromhex("02000000000a")
    frame = mac + bytes.fromhex("02000000000b0800") + bytes(46)
    m = match(oxm_in_port(1), oxm_eth_src(mac))
    out = [
        msg(0),                                                                    # hello
        msg(0, struct.pack("!HHI", 1, 8, 1 << 4)),                                 # hello, version bitmap
        msg(1, struct.pack("!HH", 5, 1) + msg(14, bytes(48))),                     # error, with a request
        msg(1, struct.pack("!HH", 0, 0) + b"incompatible"),                        # hello failed, text
        msg(1, struct.pack("!HHIHH", 0xFFFF, 1, 0x2320, 0, 0)),                    # experimenter error
        msg(2, b"ping"), msg(3, b"pong"),
        msg(4, struct.pack("!II", 0x2320, 7) + bytes(8)),                          # experimenter (Nicira)
        msg(6, struct.pack("!QIBB2xII", 0xABCD, 256, 254, 0, 0x4F, 0)),            # features reply
        msg(8, struct.pack("!HH", 0, 128)),                                        # get config reply
        packet_in(frame, 1, 0x0100000000000000, 0, len(frame)),
        packet_in(frame[:20], 2, 0, 2, 1500, reason=0),
        msg(11, struct.pack("!QHBBIIHHQQ", 0x0200000000000A, 100, 0, 1, 5, 0, 300, 0, 10, 1000) + m),
        port_status(3, 0), port_status(2, 2, link_down=True), port_status(1, 1),
        multipart(13, b"".join(port_desc(p) for p in (1, 2, 3))),                  # port description
        multipart(13, port_desc(4), flags=1),                                      # ... more to come
        multipart(0, b"vendor".ljust(256, b"\0") + b"hw".ljust(256, b"\0") + b"sw".ljust(256, b"\0")
                  + b"serial".ljust(32, b"\0") + b"dp".ljust(256, b"\0")),         # switch description
        multipart(1, flow_stats(0, 1, m, instr_goto(1)) + flow_stats(2, 2, match(), instr_actions_output(2))),
        multipart(2, struct.pack("!QQI4x", 10, 1000, 2)),                          # aggregate
        multipart(3, struct.pack("!B3xIQQ", 0, 3, 100, 90) * 2),                   # table stats
        multipart(4, struct.pack("!I4xQQQQQQQQQQQQII", 1, *range(12), 5, 0)),      # port stats
        multipart(9, struct.pack("!IH6xIQQII", 7, 56, 1, 10, 1000, 5, 0) + struct.pack("!QQ", 1, 2)),  # meter
        multipart(10, struct.pack("!HHI", 24, 2, 7) + struct.pack("!HHII4x", 1, 16, 200, 200)),  # meter config
        multipart(7, struct.pack("!HBxI", 24, 0, 1) + struct.pack("!HHII4x", 16, 0, 0xFFFFFFFF, 0xFFFFFFFF)),
        multipart(0xFFFF, struct.pack("!II", 0x2320, 1) + bytes(8)),              # experimenter multipart
        msg(21),                                                                   # barrier reply
        msg(23, struct.pack("!I4x", 1) + struct.pack("!IIH6x", 1, 1, 32) + struct.pack("!HH4xH6x", 1, 16, 500)),
        msg(25, struct.pack("!I4xQ", 1, 5)),                                       # role reply
        msg(27, struct.pack("!6I", 1, 0, 7, 0, 15, 0)),                            # async reply
    ]
    return out


class Mutator:
    """Cases for the receive path, from a seeded generator: ``(kind, bytes)``."""

    #: kind -> weight. A header length under 8 ends the connection (the stream cannot be framed
    #: again), so it is drawn rarely: every other kind goes on on the same connection.
    KINDS = {"valid": 10, "truncated": 12, "extended": 8, "oversized": 4, "flipped": 14, "lengths": 14, "type": 8,
             "unknown_type": 5, "version": 6, "random": 10, "short_length": 1, "long_length": 4}

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)
        self.corpus = corpus()
        self._kinds, self._weights = list(self.KINDS), list(self.KINDS.values())

    def case(self) -> tuple[str, bytes]:
        rng = self.rng
        base = bytearray(rng.choice(self.corpus))
        kind = rng.choices(self._kinds, self._weights)[0]
        if kind == "truncated" and len(base) > 8:
            base = base[:rng.randrange(8, len(base))]
        elif kind == "extended":
            base += bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64)))
        elif kind == "oversized":
            base += (b"\xff" if rng.random() < 0.5 else b"\0") * (rng.randrange(len(base), 65536) - len(base))
        elif kind == "flipped" and len(base) > 8:
            for _ in range(rng.randrange(1, 9)):
                base[rng.randrange(8, len(base))] = rng.getrandbits(8)
        elif kind == "lengths" and len(base) > 10:
            for _ in range(rng.randrange(1, 4)):
                pos = rng.randrange(8, len(base) - 1)
                v = rng.choice((0, 1, 4, 7, 8, 0xFFFF, len(base), len(base) - pos, rng.getrandbits(16)))
                struct.pack_into("!H", base, pos, v & 0xFFFF)
        elif kind == "type":
            base[1] = rng.randrange(0, 30)
        elif kind == "unknown_type":
            base[1] = rng.randrange(30, 256)
        elif kind == "version":
            base[0] = rng.choice((0, 1, 2, 3, 5, 6, 0x7F, 0xFF))
        elif kind == "random":
            base = base[:8] + bytearray(rng.getrandbits(8) for _ in range(rng.randrange(0, 300)))
        if kind == "short_length":
            struct.pack_into("!H", base, 2, rng.randrange(0, 8))
        elif kind == "long_length":
            struct.pack_into("!H", base, 2, min(0xFFFF, len(base) + rng.randrange(1, 200)))
        else:
            struct.pack_into("!H", base, 2, len(base))
        struct.pack_into("!I", base, 4, rng.getrandbits(32))
        return kind, bytes(base)


__all__ = ["Mutator", "corpus", "match", "msg", "multipart"]
