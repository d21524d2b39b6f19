"""Decision latency with RDAP black-holed: the controller app with the shipped default engine,
pool mode ``offline`` (the baseline, same run) against ``rdap`` whose server accepts
connections and never answers (a network that swallows replies; RDAP time-out 5 s, the
default).

``python -m benchmarks.rdap [--devices N] [--sessions S] [--runs R]``

For each mode, a fake OpenFlow switch connects to a fresh app, N devices are learned, and
each sends mirrored packet-ins of S short UDP exchanges, each to its own public address (one
session each: enough for the engine to decide, and S addresses for RDAP to look up), all
devices interleaved. The figure per device is the time from its first mirrored packet-in to
the engine's first answer for it (a decision, or "not enough evidence yet"), seen on the app's
/devices endpoint (polled every 20 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from controller_app.intents import CookieKind, Table, cookie
from testing.fakeswitch import T_FLOW_MOD, FakeSwitch, packet_in
from testing.synth import arp_request, ether, udp4

ROOT = Path(__file__).resolve().parent.parent
GW = "02:00:00:00:00:01"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BlackHole:
    """A loopback TCP server that accepts and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/bootstrap"
        self.held, self.stop = [], threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stop.is_set():
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                continue

    def close(self):
        self.stop.set()
        for c in self.held:
            c.close()
        self.sock.close()


def _devices(http_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/devices", timeout=5) as r:
        return {d["mac"]: d for d in json.loads(r.read())}


def run_mode(mode: str, n_devices: int, n_sessions: int, url: str | None, workdir: str, timeout: float) -> list:
    """Seconds from each device's first mirrored packet-in to the engine's first answer, on a
    fresh app with a fresh inventory and pool cache in ``workdir``."""
    os.makedirs(workdir)
    of_port, http_port = _free_port(), _free_port()
    args = [sys.executable, "-m", "controller_app.manager", "controller_app", "--ofp-tcp-listen-port", str(of_port),
            "--ofp-listen-host", "127.0.0.1", "--http-port", str(http_port),
            "--inventory-db", os.path.join(workdir, f"inv-{mode}.sqlite"),
            "--policy-file", str(ROOT / "policies" / "default.yaml"),
            "--decide-interval", "0.2", "--decide-min-packets", str(2 * n_sessions), "--tick-interval", "0.1",
            "--lldp-interval", "600", "--pool-mode", mode, "--default-log-level", "30"]
    if mode != "offline":
        args += ["--pool-cache", os.path.join(workdir, f"pools-{mode}.sqlite"), "--rdap-url", url]
    log = open(os.path.join(workdir, f"app-{mode}.log"), "w")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        sw = FakeSwitch("127.0.0.1", of_port, dpid=1, ports=list(range(1, n_devices + 2)))
        sw.wait_for(lambda r: sum(m.type == T_FLOW_MOD for m in r) >= 6)
        macs = [f"02:00:00:00:10:{i:02x}" for i in range(n_devices)]
        ips = [f"192.168.1.{20 + i}" for i in range(n_devices)]
        for i, (mac, ip) in enumerate(zip(macs, ips)):
            frame = arp_request(mac, ip, "192.168.1.1")
            sw.send(packet_in(frame, i + 1, cookie(CookieKind.LEARN), int(Table.ETH_SRC), len(frame)))
        want = {m.lower() for m in macs}

        def mirrored(r):
            got = set()
            for m in r:
                if m.type == T_FLOW_MOD and m.parsed is not None and m.parsed.table_id == Table.MIRROR:
                    src = dict(m.parsed.match.items()).get("eth_src")
                    if src:
                        got.add(src.lower())
            return want <= got

        sw.wait_for(mirrored, timeout=30)
        first: dict = {}
        for k in range(n_sessions):                       # every device's k-th session, then the next
            for i, (mac, ip) in enumerate(zip(macs, ips)):
                remote = f"52.{16 + i}.{k}.10"            # a distinct public address per session
                for frame in (ether(mac, GW, 0x0800, udp4(ip, remote, 40000 + k, 443, bytes(60))),
                              ether(GW, mac, 0x0800, udp4(remote, ip, 443, 40000 + k, bytes(200)))):
                    owner = int(mac.replace(":", ""), 16)
                    sw.send(packet_in(frame[:128], i + 1 if frame[6:12] == bytes.fromhex(mac.replace(":", ""))
                                      else n_devices + 1, cookie(CookieKind.MIRROR, owner), int(Table.MIRROR),
                                      len(frame)))
                first.setdefault(mac, time.monotonic())
            time.sleep(0.02)
        answered: dict = {}
        deadline = time.monotonic() + timeout
        while len(answered) < n_devices and time.monotonic() < deadline:
            now = time.monotonic()
            for mac, d in _devices(http_port).items():
                if mac in first and mac not in answered and (d["stage"] is not None or d["thin_answers"] > 0):
                    answered[mac] = now - first[mac]
            time.sleep(0.02)
        sw.close()
        return [answered.get(m) for m in macs]
    finally:
        proc.send_signal(2)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=3)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=300.0, help="give up waiting for an answer after this")
    args = ap.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="iot-bench-rdap-")
    hole = BlackHole()
    try:
        for run in range(args.runs):
            rows = {}
            for mode in ("offline", "rdap"):
                rows[mode] = run_mode(mode, args.devices, args.sessions, hole.url,
                                      os.path.join(workdir, f"run{run + 1}-{mode}"), args.timeout)
            for mode, times in rows.items():
                shown = ", ".join("never" if t is None else f"{t:.2f} s" for t in times)
                done = [t for t in times if t is not None]
                med = f"{statistics.median(done):.2f} s" if done else "-"
                print(f"run {run + 1}: {mode:8s} first answer per device: {shown} (median {med})")
            print(f"black-holed RDAP connections accepted so far: {len(hole.held)}")
        print(f"logs in {workdir}")
    finally:
        hole.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
