"""Driving the lab from the project's venv: prerequisites, the lab process (Mininet under the
system Python), commands in its hosts, and the controller (``ryu-manager controller_app``).

Everything started here is stopped by the object that started it (``stop()``, also as a
context manager and at interpreter exit); nothing is ever killed by name.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from topologies import ovs

ROOT = Path(__file__).resolve().parent.parent
LAB = Path(__file__).resolve().parent / "lab.py"
SYSTEM_PYTHON = "/usr/bin/python3"


def why_not_runnable() -> str | None:
    """One line saying why the lab cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "end-to-end tests need root (Mininet and Open vSwitch): run them as root, e.g. sudo make test"
    missing = [t for t in ("ovs-vsctl", "ovs-ofctl", "mnexec", "tcpreplay", "dumpcap", "tshark") if not shutil.which(t)]
    if not os.path.exists(ovs.OVS_CTL):
        missing.append("openvswitch-switch")
    if missing:
        return f"end-to-end tests need {', '.join(missing)} (make install as root installs them)"
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import mininet.net"], capture_output=True)
    if r.returncode != 0:
        return f"end-to-end tests need Mininet's Python API under {SYSTEM_PYTHON} (Debian package mininet)"
    return None


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the process that started it dies (Linux), so a
    harness killed outright leaves no controller or lab behind (the lab then cleans up)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ the lab


class LabError(RuntimeError):
    pass


class Lab:
    """A running Mininet network (see ``topologies/lab.py``)."""

    def __init__(self, spec: dict, workdir: str | os.PathLike, timeout: float = 60.0):
        self.spec = spec
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        spec_path = self.workdir / "lab-spec.json"
        spec_path.write_text(json.dumps(spec))
        self.stderr_path = self.workdir / "lab.stderr"
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(LAB), str(spec_path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, text=True, cwd=str(ROOT),
                                     preexec_fn=_die_with_parent)
        self._children: list[subprocess.Popen] = []
        self.info: dict = {}
        atexit.register(self.stop)
        line = self._read_line(timeout)
        try:
            info = json.loads(line)
        except json.JSONDecodeError:
            info = {"ready": False, "error": line.strip() or "no answer"}
        if not info.get("ready"):
            err = info.get("error", "?")
            self.stop()
            raise LabError(f"the lab did not start: {err} (see {self.stderr_path}: {self._tail()})")
        self.info = info
        self.hosts: dict = info["hosts"]
        self.switches: dict = info["switches"]

    def _read_line(self, timeout: float) -> str:
        box: list = []
        t = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout)
        if not box:
            return f"no answer within {timeout:g} s"
        return box[0]

    def _tail(self) -> str:
        try:
            return self.stderr_path.read_text()[-500:].strip().replace("\n", " | ")
        except OSError:
            return ""

    # commands inside hosts (their network namespace, through Mininet's mnexec)

    def host_cmd(self, host: str, args: list[str]) -> list[str]:
        if host not in self.hosts:
            raise LabError(f"no host {host!r} in the lab (hosts: {', '.join(sorted(self.hosts))})")
        return ["mnexec", "-a", str(self.hosts[host]["pid"]), *args]

    def popen(self, host: str, args: list[str], **kw) -> subprocess.Popen:
        p = subprocess.Popen(self.host_cmd(host, args), **kw)
        self._children.append(p)
        return p

    def run(self, host: str, args: list[str], timeout: float = 60.0, check: bool = True) -> str:
        r = subprocess.run(self.host_cmd(host, args), capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise LabError(f"{host}: {' '.join(args)}: exit {r.returncode}: {(r.stderr or r.stdout).strip()[-400:]}")
        return r.stdout

    def intf(self, host: str) -> str:
        return self.hosts[host]["intf"]

    def bridge(self, dpid: int = 1) -> str:
        for name, sw in self.switches.items():
            if sw["dpid"] == dpid:
                return name
        raise LabError(f"no switch with dpid {dpid}")

    def stop(self) -> None:
        """Stop the processes started in hosts, then the lab (which removes the network and
        stops Open vSwitch if it started it). Safe to call twice."""
        for p in self._children:
            stop_process(p)
        self._children = []
        proc = getattr(self, "proc", None)
        if proc is None:
            return
        self.proc = None
        if proc.poll() is None:
            try:
                proc.stdin.write("stop\n")
                proc.stdin.flush()
                proc.stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                stop_process(proc, 30)
        self._stderr.close()
        # the lab removes its network; should it have died first, remove what is ours
        prefix = self.spec.get("prefix", "iotsw")
        try:
            ovs.delete_bridges([b for b in ovs.list_bridges() if b in (f"{prefix}1", f"{prefix}2")])
        except ovs.OvsError:
            pass
        ovs.delete_links([i for sw in getattr(self, "switches", {}).values() for i in sw["ports"]])
        for h in getattr(self, "hosts", {}).values():   # the hosts' shells hold their namespaces
            try:
                os.kill(h["pid"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def stop_process(p: subprocess.Popen, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to a running process, and SIGKILL if it has not ended ``timeout`` s later."""
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# ------------------------------------------------------------------ the controller


class Controller:
    """``ryu-manager controller_app`` (the project's launcher on os-ken) in a subprocess,
    listening for the lab's switches on loopback.

    ``command`` defaults to this interpreter running ``controller_app.manager`` (what the
    ``ryu-manager`` console script runs) from the checkout."""

    def __init__(self, workdir: str | os.PathLike, policy_file: str | os.PathLike, args: list[str] = (),
                 of_port: int | None = None, http_port: int | None = None, inventory: str | None = None,
                 command: list[str] | None = None, env: dict | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.policy_file = str(policy_file)
        self.args = list(args)
        self.of_port = of_port or free_port()
        self.http_port = http_port or free_port()
        self.inventory = inventory or str(self.workdir / "inventory.sqlite")
        self.command = command or [sys.executable, "-m", "controller_app.manager"]
        self.env = dict(os.environ, **(env or {}))
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), self.env.get("PYTHONPATH")]))
        self.proc: subprocess.Popen | None = None
        self.runs = 0
        self.log_path: Path | None = None
        self._log = None
        atexit.register(self.stop)

    def start(self, wait: float = 120.0) -> None:
        self.runs += 1
        self.log_path = self.workdir / f"controller-{self.runs}.log"
        self._log = open(self.log_path, "w")
        cmd = [*self.command, "controller_app", "--ofp-listen-host", "127.0.0.1",
               "--ofp-tcp-listen-port", str(self.of_port), "--http-port", str(self.http_port),
               "--policy-file", self.policy_file, "--inventory-db", self.inventory, *self.args]
        self.proc = subprocess.Popen(cmd, cwd=str(ROOT), stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     preexec_fn=_die_with_parent)
        deadline = time.monotonic() + wait
        while True:
            if self.proc.poll() is not None:
                raise LabError(f"the controller exited with {self.proc.returncode}: {self.tail()}")
            try:
                self.get("/status", timeout=2)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise LabError(f"the controller did not answer on port {self.http_port} within {wait:g} s: "
                                   f"{self.tail()}") from None
                time.sleep(0.2)

    def get(self, path: str, timeout: float = 10.0):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=timeout) as r:
            body = r.read()
        return body.decode() if path == "/metrics" else json.loads(body)

    def devices(self) -> dict:
        """MAC -> device record (``/devices``)."""
        return {d["mac"]: d for d in self.get("/devices")}

    def wait(self, pred, timeout: float, what: str, interval: float = 0.25):
        """Poll ``pred()`` until it returns something true; LabError naming ``what`` otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v:
                return v
            if self.proc is None or self.proc.poll() is not None:
                raise LabError(f"waiting for {what}: the controller is not running: {self.tail()}")
            if time.monotonic() > deadline:
                raise LabError(f"waiting for {what}: not within {timeout:g} s")
            time.sleep(interval)

    def wait_switches(self, n: int, timeout: float = 60.0) -> None:
        self.wait(lambda: len(self.get("/status")["switches"]) >= n, timeout, f"{n} switch(es) to connect")

    def log_events(self, kind: str | None = None) -> list[dict]:
        """The structured log lines (``{"event": ...}``) of every run so far."""
        out = []
        for i in range(1, self.runs + 1):
            p = self.workdir / f"controller-{i}.log"
            if not p.exists():
                continue
            for line in p.read_text(errors="replace").splitlines():
                s = line.find('{"event"')
                if s < 0:
                    continue
                try:
                    ev = json.loads(line[s:])
                except json.JSONDecodeError:
                    continue
                if kind is None or ev.get("event") == kind:
                    ev["run"] = i
                    out.append(ev)
        return out

    def tail(self, n: int = 600) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:].strip().replace("\n", " | ")
        except (OSError, AttributeError):
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        p, self.proc = self.proc, None
        if p is None:
            return None
        stop_process(p, timeout, sig)
        if self._log:
            self._log.close()
            self._log = None
        return p.returncode


def tempdir(prefix: str = "iot-e2e-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
