"""One end-to-end run: the lab (Mininet + Open vSwitch), the controller, a replay, and what the
switches and the controller show while it runs. Used by the end-to-end tests and ``make demo``.

    sc = Scenario(plan, workdir, policy_file, speedup=60)
    with sc:                      # lab, then controller (stopped, and everything removed, on exit)
        sc.replay()               # blocks until the replay ends; polls flows and devices meanwhile
        sc.devices()              # /devices of the controller
        sc.time_to_rules()        # per device: first packet -> its policy rules on the switch
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from classifier.capture.packets import mac_to_int, mac_to_str
from controller_app.intents import CookieKind

from topologies import ovs
from topologies.harness import Controller, Lab, stop_process
from topologies.replay import ReplayPlan, ReplayRun, effect_text, measure_effects, start_replay, wait_replay

SEC = 1_000_000_000


@dataclass
class RuleSeen:
    """What polling the switches saw of one device's rules."""

    policy_installed_ns: int | None = None     #: wall clock, from the first policy entry's duration
    mirror_seen: bool = False                  #: its mirror entries were on the switch at some poll
    switches: set = field(default_factory=set)  #: dpids holding its policy entries


class Scenario:
    def __init__(self, plan: ReplayPlan, workdir: str | Path, policy_file: str | Path, speedup: float = 60.0,
                 topology: str = "single", second_switch: set | None = None, prefix: str = "iotsw",
                 decide_interval: float = 2.0, controller_args: list[str] = (), controller_command=None,
                 capture_gateway: bool = True, http_port: int | None = None):
        self.plan = plan
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.policy_file = Path(policy_file)
        self.speedup = float(speedup)
        self.topology = topology
        self.second = set(second_switch or ())     # device host names on the second switch
        self.prefix = prefix
        self.mirror_rate = int(round(200 * self.speedup))
        self.capture_gateway = capture_gateway
        args = ["--gateway-macs", plan.gateway.mac, "--time-scale", f"{self.speedup:g}",
                "--mirror-rate-pps", str(self.mirror_rate), "--decide-interval", f"{decide_interval:g}",
                "--policy-watch-interval", "0.5", *controller_args]
        self.controller = Controller(self.workdir / "controller", self.policy_file, args, command=controller_command,
                                     http_port=http_port)
        self.lab: Lab | None = None
        self.run: ReplayRun | None = None
        self.sent: dict = {}
        self.rules: dict[int, RuleSeen] = {}
        self.last_devices: dict = {}
        self.effects: dict | None = None
        self.gw_capture = self.workdir / "gateway.pcapng"
        self._dumpcap = None

    # ------------------------------------------------------------------ life cycle

    def lab_spec(self) -> dict:
        spec = {"gateway_mac": self.plan.gateway.mac, "prefix": self.prefix,
                "controller": ["127.0.0.1", self.controller.of_port]}
        devs = [[d.name, d.mac] for d in self.plan.devices]
        if self.topology == "two":
            spec.update(topology="two", devices_a=[d for d in devs if d[0] not in self.second],
                        devices_b=[d for d in devs if d[0] in self.second])
        else:
            spec.update(topology="single", devices=devs)
        return spec

    def start(self) -> None:
        # The lab first: its switches wait for the controller (reconnecting every second), so the
        # controller meets quiet switches, and sees nothing but the replay.
        self.lab = Lab(self.lab_spec(), self.workdir / "lab")
        self.controller.start()
        self.controller.wait_switches(len(self.lab.switches))
        if self.topology == "two":
            self.controller.wait(lambda: self.controller.get("/status")["links"] >= 1, 30,
                                 "the link between the switches to be discovered")

    def stop(self) -> None:
        self._stop_dumpcap()
        try:
            self.controller.stop()
        finally:
            if self.lab is not None:
                self.lab.stop()

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------ the replay

    def bridges(self) -> dict[str, int]:
        return {name: sw["dpid"] for name, sw in self.lab.switches.items()}

    def flows(self) -> dict[int, list[ovs.Flow]]:
        return {dpid: ovs.dump_flows(name) for name, dpid in self.bridges().items()}

    def poll(self) -> None:
        """One look at the controller's devices and the switches: first policy install per
        device (from the entry's duration), mirror entries present. The devices first: a
        decision they show had its rules sent before the switches are read."""
        try:
            devices = self.controller.devices()
        except OSError:
            devices = None
        for dpid, flows in self.flows().items():
            now = time.time_ns()
            for f in flows:
                if f.kind == CookieKind.POLICY:
                    seen = self.rules.setdefault(f.mac, RuleSeen())
                    at = now - int(f.duration * SEC)
                    if seen.policy_installed_ns is None or at < seen.policy_installed_ns:
                        seen.policy_installed_ns = at
                    seen.switches.add(dpid)
                elif f.kind == CookieKind.MIRROR:
                    self.rules.setdefault(f.mac, RuleSeen()).mirror_seen = True
        if devices is not None:
            self.last_devices = devices

    def start_gateway_capture(self) -> None:
        self._dumpcap = self.lab.popen("gw", ["dumpcap", "-q", "-i", self.lab.intf("gw"), "-w", str(self.gw_capture)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.gw_capture.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)

    def _stop_dumpcap(self) -> None:
        if self._dumpcap is not None:
            stop_process(self._dumpcap)
        self._dumpcap = None

    def replay(self, poll_interval: float = 0.5, settle_s: float = 3.0, on_poll=None, timeout: float | None = None):
        """Replay the plan (blocking), polling every ``poll_interval`` s; ``on_poll(self)``
        after each poll. Afterwards the gateway capture is compared with the plan
        (:attr:`effects`)."""
        if self.capture_gateway:
            self.start_gateway_capture()
        self.run = start_replay(self.lab, self.plan, self.speedup)
        limit = timeout or (self.plan.duration_s / self.speedup * 2 + 60)
        t_end = time.monotonic() + limit
        while self.run.running() and time.monotonic() < t_end:
            self.poll()
            if on_poll:
                on_poll(self)
            time.sleep(poll_interval)
        self.sent = wait_replay(self.run, max(1.0, t_end - time.monotonic()))
        t_settle = time.monotonic() + settle_s
        while time.monotonic() < t_settle:
            self.poll()
            if on_poll:
                on_poll(self)
            time.sleep(poll_interval)
        if self.capture_gateway:
            self._stop_dumpcap()
            self.effects = measure_effects(self.plan, self.run, self.gw_capture)
        return self.sent

    # ------------------------------------------------------------------ views

    def devices(self) -> dict:
        return self.controller.devices()

    def time_to_rules(self) -> dict[str, float]:
        """MAC -> seconds (wall clock) from the device's first packet at the controller to its
        first policy entry on the switch, for devices that got rules."""
        devs = self.devices()
        out = {}
        for mac_int, seen in self.rules.items():
            mac = mac_to_str(mac_int)
            d = devs.get(mac)
            if d is None or seen.policy_installed_ns is None:
                continue
            out[mac] = (seen.policy_installed_ns - int(d["first_seen_ns"])) / SEC
        return out

    def effect_text(self) -> str:
        return effect_text(self.speedup, self.mirror_rate)

    def host_of(self, mac: str) -> str:
        return self.plan.device(mac).name

    def edge_dpid(self, host: str) -> int:
        return self.lab.switches[self.lab.hosts[host]["switch"]]["dpid"]


def policy_flows(flows: list[ovs.Flow], mac: str) -> list[ovs.Flow]:
    m = mac_to_int(mac)
    return [f for f in flows if f.kind == CookieKind.POLICY and f.mac == m]


def mirror_flows(flows: list[ovs.Flow], mac: str) -> list[ovs.Flow]:
    m = mac_to_int(mac)
    return [f for f in flows if f.kind == CookieKind.MIRROR and f.mac == m]


# ------------------------------------------------------------------ probes


def write_probe(path: str | Path, src_mac: str, src_ip: str, dst_mac: str, dst_ip: str, count: int = 100,
                size: int = 1000, sport: int = 40000, dport: int = 9) -> Path:
    """A pcap of ``count`` UDP frames of ``size`` bytes from a device to the gateway (port 9,
    discard), for tcpreplay; each frame differs (its IP id) so they can be told apart."""
    from classifier.capture.writer import Record, write_pcap
    from testing.synth import ether, ipv4, udp4
    payload = bytes(max(0, size - 14 - 20 - 8))
    recs = []
    for i in range(count):
        ip = udp4(src_ip, dst_ip, sport, dport, payload)
        ip = ipv4(src_ip, dst_ip, 17, ip[20:], ident=i)
        recs.append(Record(1_700_000_000 * SEC + i * 10_000_000, ether(src_mac, dst_mac, 0x0800, ip)))
    with open(path, "wb") as fh:
        write_pcap(fh, recs)
    return Path(path)


class GatewayTap:
    """dumpcap on the gateway host, keeping only frames from some MACs; read it with
    :meth:`frames` (MAC -> arrays of timestamps ns and lengths) after :meth:`stop`."""

    def __init__(self, lab: Lab, path: str | Path, macs):
        self.path = Path(path)
        self.macs = list(macs)
        filt = " or ".join(f"ether src {m}" for m in self.macs)
        self.proc = lab.popen("gw", ["dumpcap", "-q", "-i", lab.intf("gw"), "-f", filt, "-w", str(self.path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)

    def stop(self):
        time.sleep(0.3)
        stop_process(self.proc)
        return self

    def frames(self) -> dict:
        import numpy as np
        from classifier.capture.decode import read_packets
        pk = read_packets(str(self.path))
        out = {}
        for m in self.macs:
            sel = pk.eth_src == mac_to_int(m)
            out[m] = (pk.ts_ns[sel].astype(np.int64), pk.wire_len[sel].astype(np.int64))
        return out

    def ipv4_dscp(self) -> dict:
        """MAC -> the DSCP of each of its IPv4 frames, in order (after :meth:`stop`)."""
        from classifier.capture.reader import read_frames
        fr = read_frames(str(self.path))
        out: dict = {m: [] for m in self.macs}
        for o, c in zip(fr.offset.tolist(), fr.caplen.tolist()):
            b = bytes(fr.buf[o:o + min(c, 16)])
            src = mac_to_str(int.from_bytes(b[6:12], "big"))
            if src in out and b[12:14] == b"\x08\x00":
                out[src].append(b[15] >> 2)
        return out


def steady_kbps(ts_ns, lengths, skip_s: float = 2.0, tail_s: float = 0.5) -> float:
    """The delivered rate of frames at ``ts_ns`` of ``lengths`` bytes, in kbps, in steady state:
    from ``skip_s`` after the first (a meter's burst lasts about a second) to ``tail_s`` before
    the last."""
    import numpy as np
    ts, ln = np.asarray(ts_ns), np.asarray(lengths)
    t0, t1 = ts.min() + int(skip_s * SEC), ts.max() - int(tail_s * SEC)
    sel = (ts >= t0) & (ts <= t1)
    return float(ln[sel].sum() * 8 / ((t1 - t0) / 1e9) / 1000)
