"""The OpenFlow side under abuse: the project's connection handling (``controller_app.ofconn``,
``controller_app.guard``) against os-ken's own, measured in the same run.

``python -m benchmarks.ofconn [--idle N] [--cycles N] [--malformed N] [--json]``

Runs ``ryu-manager controller_app`` (a fake engine, loopback only) twice: as shipped, and as
the baseline — the same manager and app with os-ken's connection handling and os-ken's event
loop (``_harden_openflow`` replaced by a no-op and the app's ``_event_loop`` override removed,
in the launching command only). Each run drives the same scenarios with fake switches
(``testing.fakeswitch``) and reads the process's threads and resident memory from /proc:

- ``idle``: N TCP connections that never speak, held 3 s, then closed by the peer; threads
  and RSS before, held, and 10 s after closing;
- ``cycles``: N switches that complete the handshake and disconnect, one after the other;
  threads after, and whether the app still lists them as connected;
- ``takeover``: a second connection with a connected switch's datapath id; does the impostor
  get rules, does the real switch get the rules of a device learned afterwards, and is the
  real switch still listed once the impostor has left;
- ``malformed``: N broken messages (``testing.ofmsgs``) from 10 switches after their
  handshake; log lines and bytes per message (besides the app's lines on switches up and
  down and the rules it sends them);
- ``hello``: one hello with a zero-length element; the process's CPU seconds in the next 5 s;
- ``handler``: an engine answer that raises inside the app's event handler; does a device
  learned afterwards get its rules within 10 s, and how long SIGTERM takes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from testing.fakeswitch import T_FLOW_MOD, FakeSwitch, header, packet_in
from testing.ofmsgs import Mutator
from testing.synth import arp_request, ether, udp4
from controller_app.intents import CookieKind, Table, cookie

ROOT = Path(__file__).resolve().parent.parent
A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
BASELINE = ("import controller_app.manager as m, controller_app.shell as sh; "
            "m._harden_openflow = lambda limits: None; del sh.IotControllerShell._event_loop; m.main()")


def _nofile(n: int) -> None:
    import resource
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))      # as `ulimit -n N` in a shell


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    def __init__(self, variant: str, work: Path, engine: str = "fake_engine:make", model: dict | None = None,
                 extra: tuple = (), launch: list | None = None, nofile: int | None = None):
        self.of_port, self.http_port = _free_port(), _free_port()
        self.log = work / f"{variant}-{self.of_port}.log"
        model_path = work / f"model-{self.of_port}.json"
        model_path.write_text(json.dumps(model or {}))
        if launch is None:
            launch = ["-m", "controller_app.manager"] if variant == "project" else ["-c", BASELINE]
        env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}")
        self.fh = open(self.log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, *launch, "controller_app", "--ofp-tcp-listen-port", str(self.of_port),
             "--ofp-listen-host", "127.0.0.1", "--engine", engine, "--model", str(model_path),
             "--http-port", str(self.http_port), "--inventory-db", str(work / f"inv-{self.of_port}.sqlite"),
             "--decide-interval", "0.2", "--decide-min-packets", "3", "--tick-interval", "0.2",
             "--lldp-interval", "60", *extra], cwd=ROOT, env=env, stdout=self.fh, stderr=subprocess.STDOUT,
            preexec_fn=None if nofile is None else (lambda: _nofile(nofile)))
        deadline = time.monotonic() + 180
        while True:
            try:
                self.status(timeout=2)
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the app did not start: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.2)

    def status(self, timeout: float = 5.0) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/status", timeout=timeout) as r:
            return json.loads(r.read())

    def proc_status(self, key: str) -> int:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise KeyError(key)

    def threads(self) -> int:
        return self.proc_status("Threads")

    def rss_mb(self) -> float:
        return round(self.proc_status("VmRSS") / 1024, 1)

    def cpu_s(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

    def log_size(self) -> tuple[int, int]:
        """Lines and bytes of the log, leaving out the app's own lines about switches coming and
        going and the rules it sends them (the same in both variants)."""
        lines = [x for x in self.log.read_text(errors="replace").splitlines()
                 if not any(k in x for k in ('"event": "rule"', '"event": "switch_up"', '"event": "switch_down"'))]
        return len(lines), sum(len(x.encode()) + 1 for x in lines)

    def stop(self) -> float | None:
        """SIGTERM; seconds until the process ended (None: still running after 20 s, killed)."""
        t0 = time.monotonic()
        self.proc.terminate()
        try:
            self.proc.wait(20)
            return round(time.monotonic() - t0, 2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        finally:
            self.fh.close()


def _flow_mods(sw, pred=lambda fm: True) -> list:
    return [m.parsed for m in sw.messages(T_FLOW_MOD) if m.parsed is not None and pred(m.parsed)]


def _ready(app: App, dpid: int, timeout: float = 20.0) -> FakeSwitch:
    sw = FakeSwitch("127.0.0.1", app.of_port, dpid=dpid, ports=[1, 2, 3])
    sw.wait_for(lambda r: _flow_mods(sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 0), timeout)
    return sw


def _learn(sw, mac: str, port: int) -> None:
    frame = arp_request(mac, "192.168.1.10", "192.168.1.1")
    sw.send(packet_in(frame, port, cookie(CookieKind.LEARN), int(Table.ETH_SRC), len(frame)))


def _has_host_rule(sw, mac: str) -> bool:
    return bool(_flow_mods(sw, lambda fm: fm.table_id == Table.ETH_SRC and dict(fm.match.items()).get("eth_src") == mac))


def _wait(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return bool(pred())


def scenario_connections(variant: str, work: Path, n_idle: int, n_cycles: int, n_malformed: int) -> dict:
    app = App(variant, work)
    out: dict = {}
    try:
        real = _ready(app, 0xABCD)
        time.sleep(1.0)
        out["threads_start"] = t0 = app.threads()
        rss0 = app.rss_mb()
        socks = []
        for _ in range(n_idle):
            try:
                socks.append(socket.create_connection(("127.0.0.1", app.of_port), timeout=5))
            except OSError:
                break
        time.sleep(3.0)
        held_t, held_rss = app.threads(), app.rss_mb()
        for s in socks:
            s.close()
        time.sleep(10.0)
        out["idle"] = {"connections": len(socks), "threads_before": t0, "threads_held": held_t,
                       "threads_after": app.threads(), "rss_before_mb": rss0, "rss_held_mb": held_rss,
                       "rss_after_mb": app.rss_mb()}

        t1 = app.threads()
        for i in range(n_cycles):
            sw = _ready(app, 0x1000 + i)
            sw.close()
            _wait(lambda: sw.closed, 5)
        time.sleep(3.0)
        listed = len(app.status()["switches"])
        out["cycles"] = {"cycles": n_cycles, "threads_before": t1, "threads_after": app.threads(),
                         "switches_listed_after": listed, "switches_connected": 1}

        impostor = FakeSwitch("127.0.0.1", app.of_port, dpid=0xABCD, ports=[1, 2, 3])
        time.sleep(3.0)
        _learn(real, A, 1)
        real_got = _wait(lambda: _has_host_rule(real, A), 10)
        impostor_rules = len(impostor.messages(T_FLOW_MOD))
        impostor.close()
        time.sleep(2.0)
        _learn(real, B, 2)
        real_got_after = _wait(lambda: _has_host_rule(real, B), 10)
        out["takeover"] = {"impostor_flow_mods": impostor_rules, "real_switch_gets_new_rules": real_got,
                           "real_switch_listed_after_impostor_left":
                               f"{0xABCD:016x}" in app.status()["switches"],
                           "real_switch_gets_rules_after_impostor_left": real_got_after}

        lines0, bytes0 = app.log_size()
        mut = Mutator(seed=11)
        sent = 0
        kinds = [k for k in Mutator.KINDS if k not in ("valid", "short_length", "long_length")]
        for c in range(10):
            sw = _ready(app, 0x2000 + c)
            try:
                while sent < n_malformed * (c + 1) // 10:
                    kind, raw = mut.case()
                    if kind in kinds:
                        sw.send(raw)
                        sent += 1
            except OSError:
                pass
            time.sleep(0.5)
            sw.close()
        time.sleep(2.0)
        lines1, bytes1 = app.log_size()
        out["malformed"] = {"messages": sent, "log_lines": lines1 - lines0, "log_bytes": bytes1 - bytes0,
                            "log_lines_per_message": round((lines1 - lines0) / max(sent, 1), 3),
                            "log_bytes_per_message": round((bytes1 - bytes0) / max(sent, 1), 1)}
        real.close()
        out["sigterm_s"] = app.stop()
    finally:
        if app.proc.poll() is None:
            app.proc.kill()
    return out


def scenario_hello(variant: str, work: Path) -> dict:
    app = App(variant, work)
    try:
        time.sleep(2.0)
        cpu0 = app.cpu_s()
        s = socket.create_connection(("127.0.0.1", app.of_port))
        s.sendall(header(0, 16, 1) + struct.pack("!HHI", 1, 0, 1 << 4))      # element of length 0
        time.sleep(5.0)
        cpu = round(app.cpu_s() - cpu0, 2)
        t0 = time.monotonic()
        sw = _ready(app, 0x77, timeout=60)
        ready_s = round(time.monotonic() - t0, 2)
        sw.close()
        s.close()
        return {"cpu_s_in_5s": cpu, "next_switch_ready_s": ready_s, "sigterm_s": app.stop()}
    finally:
        if app.proc.poll() is None:
            app.proc.kill()


def scenario_handler(variant: str, work: Path) -> dict:
    app = App(variant, work, engine="fake_engine:make_poisoned",
              model={B: ["plug", 0.95, "confirmed"], "poison": [A], "min_packets": 3})
    try:
        sw = _ready(app, 0x71)
        _learn(sw, A, 1)
        _wait(lambda: _has_host_rule(sw, A), 10)
        for i in range(4):
            frame = ether(A, "02:00:00:00:00:01", 0x0800, udp4("192.168.1.10", "52.1.2.3", 40000 + i, 443, bytes(300)))
            sw.send(packet_in(frame[:128], 1, cookie(CookieKind.MIRROR, int(A.replace(":", ""), 16)),
                              int(Table.MIRROR), len(frame)))
        time.sleep(3.0)
        _learn(sw, B, 2)
        later = _wait(lambda: _has_host_rule(sw, B), 10)
        text = app.log.read_text(errors="replace")
        logged = "RecursionError" in text
        sw.close()
        return {"device_after_the_failure_gets_rules": later, "failure_logged": logged, "sigterm_s": app.stop()}
    finally:
        if app.proc.poll() is None:
            app.proc.kill()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ofconn", description=__doc__.split("\n")[0])
    p.add_argument("--idle", type=int, default=1500, help="idle connections held and closed")
    p.add_argument("--cycles", type=int, default=100, help="switch connect/disconnect cycles")
    p.add_argument("--malformed", type=int, default=2000, help="broken messages sent")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="ofconn-bench-") as tmp:
        work = Path(tmp)
        for variant in ("baseline", "project"):
            r = scenario_connections(variant, work, a.idle, a.cycles, a.malformed)
            r["hello"] = scenario_hello(variant, work)
            r["handler"] = scenario_handler(variant, work)
            results[variant] = r
    if a.json:
        print(json.dumps(results, indent=1))
        return 0
    print("OpenFlow side under abuse: baseline (os-ken's connection handling and event loop) vs the project's")
    for section in ("idle", "cycles", "takeover", "malformed", "hello", "handler"):
        for key in results["project"][section]:
            print(f"  {section:9s} {key:42s} {str(results['baseline'][section].get(key)):>12s} "
                  f"{str(results['project'][section].get(key)):>12s}")
    print(f"  {'sigterm':9s} {'seconds to exit (None: hung, killed)':42s} "
          f"{str(results['baseline']['sigterm_s']):>12s} {str(results['project']['sigterm_s']):>12s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
