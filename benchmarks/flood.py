"""MAC flood: the real app under 100,000 random source MACs.

``python -m benchmarks.flood [--macs N] [--baseline-macs M] [--ports P] [--no-baseline] [--json]``

Runs the controller app (``ryu-manager controller_app``, pinned to one core) and drives it from
a fake OpenFlow 1.3 switch over TCP on loopback (``testing/fakeswitch.py``) on another core:
after the handshake the switch sends N table-miss copies (cookie LEARN), each from a new random
unicast source MAC on one of P ports, as fast as TCP takes them (the app's receive thread waits
for its decoder, which is the switch's sending rate). The fake switch applies no flow entry and
no meter, so every copy reaches the controller: the worst case of a switch that does not shed
them (a real one drops most at the learning meter and the learning bans).

When the app has processed half of the flood a second switch connects; its time to the table
defaults (the priority-0 entry of every table) is measured from the start of its TCP connection.

Reported, from one run with the default caps and, in the same run, one with the caps off
(``--max-hosts-per-port``, ``--max-hosts-per-switch`` and ``--max-mirrored`` at 10^9, no
learning bans), the baseline — of M MACs (default N; the caps-off app slows down as it holds
more devices, 100,000 take it about ten minutes, so ``make bench`` floods it with 20,000):

* meters and flow entries the switches were asked for (meter-mod adds, flow-mod adds);
* memory growth of the app (RSS, sampled every 0.1 s, peak minus the RSS after the handshake);
* copies processed per second (the flood's N over the time from its first byte to the moment
  the app's /status counts N learning copies);
* the HTTP endpoint's worst latency (/status and /devices, each polled every 0.1 s during the
  flood);
* the second switch's time to its defaults;
* the app's log (bytes, default INFO level).

Goals (default caps): at most 2,000 meters in all, memory growth at most 200 MB, HTTP worst
latency at most 1 s, the second switch's defaults within 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import sys
import tempfile
import threading
import time
import urllib.request

from testing.fakeswitch import T_FLOW_MOD, T_METER_MOD, FakeSwitch, packet_in
from controller_app.pipeline import CookieKind, Table, cookie
from benchmarks.controller import EXTRA, _free_port, _start, _stop

CAPS_OFF = ["--max-hosts-per-port", str(10**9), "--max-hosts-per-switch", str(10**9), "--max-mirrored", str(10**9),
            "--learn-ban-timeout", "0"]
GOALS = {"meters": 2000, "rss_growth_mb": 200, "http_worst_s": 1.0, "second_switch_s": 2.0}


class CountingSwitch(FakeSwitch):
    """A fake switch that counts flow-mods and meter-mods (by command, table, priority) instead
    of keeping and parsing every message: the flood's baseline asks for hundreds of thousands."""

    def __init__(self, *a, **kw):
        self.flow_adds = self.flow_deletes = self.meter_adds = self.meter_deletes = 0
        self.defaults: set = set()            # tables whose priority-0 entry arrived
        self.defaults_at = None
        self.started = time.monotonic()
        super().__init__(*a, **kw)

    def _handle(self, typ: int, xid: int, raw: bytes) -> None:
        if typ == T_FLOW_MOD:
            table, command = raw[24], raw[25]
            (priority,) = struct.unpack_from("!H", raw, 30)
            if command == 0:
                self.flow_adds += 1
                if priority == 0 and self.defaults_at is None:
                    self.defaults.add(table)
                    if len(self.defaults) == len(Table):
                        self.defaults_at = time.monotonic()
            elif command in (3, 4):
                self.flow_deletes += 1
            return
        if typ == T_METER_MOD:
            (command,) = struct.unpack_from("!H", raw, 8)
            if command == 0:
                self.meter_adds += 1
            elif command == 2:
                self.meter_deletes += 1
            return
        super()._handle(typ, xid, raw)


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _get(port: int, path: str, timeout: float = 30.0):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return json.loads(r.read())


def _flood(n: int, ports: int, seed: int) -> list[bytes]:
    """N table-miss copies, each from a new random unicast MAC (locally administered)."""
    rng = random.Random(seed)
    seen: set = set()
    out = []
    body = b"\x08\x06" + bytes(46)                          # a 60-byte frame
    bcast = b"\xff" * 6
    while len(out) < n:
        mac = (rng.getrandbits(48) & ~(1 << 40)) | (1 << 41)   # unicast, locally administered
        if mac in seen:
            continue
        seen.add(mac)
        frame = bcast + mac.to_bytes(6, "big") + body
        out.append(packet_in(frame, 1 + len(out) % ports, cookie(CookieKind.LEARN), int(Table.LEARN), len(frame)))
    return out


def run(n: int, ports: int, caps_off: bool, seed: int = 1, engine: str | None = None, cores=(0, 1)) -> dict:
    msgs = _flood(n, ports, seed)
    try:
        os.sched_setaffinity(0, {cores[1]})
    except (AttributeError, OSError):
        pass
    tmp = tempfile.mkdtemp(prefix="iot-flood-")
    of_port, http_port = _free_port(), _free_port()
    log_path = os.path.join(tmp, "controller.log")
    args = [*(["--engine", engine] if engine else []), "--inventory-db", os.path.join(tmp, "inv.sqlite"),
            "--http-port", str(http_port), *(CAPS_OFF if caps_off else []), *EXTRA]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {"PYTHONPATH": os.pathsep.join([root, os.path.join(root, "tests"), os.environ.get("PYTHONPATH", "")])}
    proc = _start("controller_app", of_port, args, cores[0], log_path, env)
    res: dict = {"caps": "off" if caps_off else "default", "macs": n, "ports": ports, "logs": tmp}
    try:
        sw = CountingSwitch("127.0.0.1", of_port, dpid=1, ports=list(range(1, ports + 1)))
        sw.wait_for(lambda r: sw.defaults_at is not None, timeout=60)
        deadline = time.monotonic() + 30
        while True:                                        # the HTTP endpoint is up
            try:
                base = _get(http_port, "/status")["counters"].get("packet_ins_learn", 0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        time.sleep(0.5)
        rss0 = _rss_kb(proc.pid)
        stop = threading.Event()
        samples = {"rss_max": rss0, "status": 0.0, "devices": 0.0, "http_errors": 0}

        def sample():
            while not stop.is_set():
                samples["rss_max"] = max(samples["rss_max"], _rss_kb(proc.pid))
                for path, key in (("/status", "status"), ("/devices", "devices")):
                    t = time.monotonic()
                    try:
                        _get(http_port, path)
                    except OSError:
                        samples["http_errors"] += 1
                    samples[key] = max(samples[key], time.monotonic() - t)
                stop.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        second: dict = {}

        def join_second():
            t = time.monotonic()
            try:
                s2 = CountingSwitch("127.0.0.1", of_port, dpid=2, ports=[1, 2, 3])
                s2.wait_for(lambda r: s2.defaults_at is not None, timeout=300)
                second["seconds"] = s2.defaults_at - t
                second["switch"] = s2
            except (OSError, TimeoutError) as exc:
                second["error"] = f"{type(exc).__name__}: {exc}"

        joiner = threading.Thread(target=join_second, daemon=True)

        def send_all():
            for i in range(0, n, 500):
                sw.send(b"".join(msgs[i:i + 500]))

        sender = threading.Thread(target=send_all, daemon=True)
        t0 = time.monotonic()
        sender.start()
        deadline = time.monotonic() + 900
        got = base
        while time.monotonic() < deadline:
            got = _get(http_port, "/status")["counters"].get("packet_ins_learn", 0)
            if not joiner.is_alive() and not second and got - base >= n // 2:
                joiner.start()            # halfway through what the app has processed: it is busy
            if got - base >= n:
                break
            time.sleep(0.05)
        t1 = time.monotonic()
        sender.join(60)
        joiner.join(300)
        time.sleep(0.3)
        stop.set()
        sampler.join(10)
        st = _get(http_port, "/status")
        switches = [sw] + ([second["switch"]] if "switch" in second else [])
        res.update({
            "seconds": t1 - t0, "processed": got - base, "packet_ins_per_s": (got - base) / (t1 - t0),
            "meter_adds": sum(s.meter_adds for s in switches), "meter_deletes": sum(s.meter_deletes for s in switches),
            "flow_adds": sum(s.flow_adds for s in switches), "flow_deletes": sum(s.flow_deletes for s in switches),
            "rss_before_mb": rss0 / 1024, "rss_peak_mb": samples["rss_max"] / 1024,
            "rss_growth_mb": (samples["rss_max"] - rss0) / 1024,
            "http_worst_s": max(samples["status"], samples["devices"]), "http_worst_status_s": samples["status"],
            "http_worst_devices_s": samples["devices"], "http_errors": samples["http_errors"],
            "second_switch_s": second.get("seconds"), "second_switch_error": second.get("error"),
            "devices": st["devices"], "learning": st["learning"],
            "counters": {k: v for k, v in st["counters"].items()
                         if k.startswith(("learn_", "mirror_", "devices_", "decide_"))},
        })
        for s in switches:
            s.close()
    finally:
        res["exit_status"] = _stop(proc, timeout=120)
    res["log_bytes"] = os.path.getsize(log_path)
    return res


def _line(r: dict) -> str:
    second = f"{r['second_switch_s']:.2f} s" if r.get("second_switch_s") is not None else r.get("second_switch_error")
    return (f"  caps {r['caps']:>7}, {r['macs']:>7,} MACs: {r['meter_adds']:>7,} meters, "
            f"{r['flow_adds']:>8,} flow entries requested; "
            f"RSS {r['rss_before_mb']:.0f} -> {r['rss_peak_mb']:.0f} MB (+{r['rss_growth_mb']:.0f}); "
            f"{r['packet_ins_per_s']:>8,.0f} copies/s ({r['processed']:,} in {r['seconds']:.1f} s); "
            f"HTTP worst {r['http_worst_s']:.2f} s; second switch's defaults {second}; "
            f"log {r['log_bytes'] / 1e6:.1f} MB; {r['devices']:,} devices held")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.flood", description=__doc__.split("\n")[0])
    p.add_argument("--macs", type=int, default=100_000)
    p.add_argument("--ports", type=int, default=48)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--baseline-macs", type=int, help="MACs of the caps-off run (default: --macs)")
    p.add_argument("--no-baseline", action="store_true", help="skip the run with the caps off")
    p.add_argument("--engine", help="engine factory for the app (default: the shipped engine; the flood's MACs "
                                    "are never mirrored, so it is never called)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    runs = [run(args.macs, args.ports, caps_off=False, seed=args.seed, engine=args.engine)]
    if not args.no_baseline:
        runs.append(run(args.baseline_macs or args.macs, args.ports, caps_off=True, seed=args.seed,
                        engine=args.engine))
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    r = runs[0]
    print(f"MAC flood: {args.macs:,} random source MACs over {args.ports} ports of one switch, a second switch "
          "joining halfway (app pinned to one core, fake switches on another)")
    for x in runs:
        print(_line(x))
    ok = {"meters": r["meter_adds"] <= GOALS["meters"], "rss_growth_mb": r["rss_growth_mb"] <= GOALS["rss_growth_mb"],
          "http_worst_s": r["http_worst_s"] <= GOALS["http_worst_s"],
          "second_switch_s": r["second_switch_s"] is not None and r["second_switch_s"] <= GOALS["second_switch_s"]}
    print("  goals (default caps): " + ", ".join(f"{k} <= {GOALS[k]}: {'met' if v else 'NOT met'}"
                                                 for k, v in ok.items()))
    print(f"  default caps, counters: {r['counters']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
