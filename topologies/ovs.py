"""Open vSwitch from the outside: start/stop the daemons, read flow tables and meters.

Standard library only: used by the lab process (system Python, Mininet) and by the tests and
the demo (the project's venv). Everything goes through ``ovs-ctl``, ``ovs-vsctl``,
``ovs-appctl`` and ``ovs-ofctl -O OpenFlow13``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field

OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"


class OvsError(RuntimeError):
    pass


def run(cmd: list[str], timeout: float = 20.0, check: bool = True) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise OvsError(f"{cmd[0]}: not installed") from None
    except subprocess.TimeoutExpired:
        raise OvsError(f"{' '.join(cmd)}: no answer within {timeout:g} s") from None
    if check and r.returncode != 0:
        raise OvsError(f"{' '.join(cmd)}: exit {r.returncode}: {(r.stderr or r.stdout).strip()}")
    return r.stdout


def ovs_running() -> bool:
    """Both daemons answer (ovsdb-server through ovs-vsctl, ovs-vswitchd through ovs-appctl)."""
    if not shutil.which("ovs-vsctl"):
        return False
    db = subprocess.run(["ovs-vsctl", "--timeout=3", "show"], capture_output=True).returncode == 0
    sw = subprocess.run(["ovs-appctl", "-t", "ovs-vswitchd", "version"], capture_output=True,
                        timeout=10).returncode == 0
    return db and sw


def start_ovs() -> bool:
    """Start Open vSwitch when it is not running. Returns True if this call started it (the
    caller then stops it with :func:`stop_ovs`)."""
    if ovs_running():
        return False
    if not shutil.which("ovs-vsctl") or not shutil.which(OVS_CTL):
        raise OvsError(f"Open vSwitch is not installed ({OVS_CTL} missing): apt-get install openvswitch-switch")
    # no kernel module here: ovs-ctl says so and goes on; bridges use datapath_type=netdev
    run([OVS_CTL, "start"], timeout=60)
    deadline = time.monotonic() + 20
    while not ovs_running():
        if time.monotonic() > deadline:
            raise OvsError("ovs-ctl start returned but the daemons do not answer")
        time.sleep(0.2)
    return True


def stop_ovs() -> None:
    run([OVS_CTL, "stop"], timeout=60, check=False)


def list_bridges() -> list[str]:
    return run(["ovs-vsctl", "--timeout=5", "list-br"]).split()


def is_stale_bridge(name: str) -> bool:
    """True for a bridge left in Open vSwitch's database by a lab that was killed (SIGKILL
    leaves no chance to clean up): it has ports, and none of them is a network device any more
    (a running lab's ports are the live ends of its links)."""
    ports = run(["ovs-vsctl", "--timeout=5", "list-ports", name]).split()
    return bool(ports) and not any(os.path.exists(f"/sys/class/net/{p}") for p in ports)


def delete_bridges(names) -> None:
    """Delete these bridges if they exist (nothing else)."""
    names = [n for n in names if n]
    if names:
        cmd = ["ovs-vsctl", "--timeout=10"]
        for n in names:
            cmd += ["--", "--if-exists", "del-br", n]
        run(cmd, check=False)


def delete_links(names) -> None:
    """Delete these network interfaces of the root namespace if they exist (nothing else)."""
    for n in names:
        subprocess.run(["ip", "link", "del", n], capture_output=True)


def set_controller_backoff(bridge: str, max_backoff_ms: int = 1000) -> None:
    """Reconnect to a restarted controller within about a second (OVS waits up to 8 s by default)."""
    uuids = run(["ovs-vsctl", "get", "bridge", bridge, "controller"]).strip().strip("[]")
    for u in filter(None, (x.strip() for x in uuids.split(","))):
        run(["ovs-vsctl", "set", "controller", u, f"max_backoff={max_backoff_ms}"])


# ------------------------------------------------------------------ flow tables and meters

@dataclass
class Flow:
    """One entry of ``ovs-ofctl -O OpenFlow13 dump-flows``."""

    cookie: int
    table: int
    priority: int
    match: str            #: the match as OVS prints it (fields in OVS's order)
    actions: str
    n_packets: int
    n_bytes: int
    duration: float       #: seconds since the entry was installed (or last modified)
    idle_timeout: int = 0
    raw: str = field(default="", repr=False)

    @property
    def kind(self) -> int:
        """The cookie's top byte (the controller's rule kind)."""
        return self.cookie >> 56

    @property
    def mac(self) -> int:
        """The MAC in the cookie's low 48 bits (per-device rules)."""
        return self.cookie & 0xFFFFFFFFFFFF

    def key(self) -> tuple:
        """What the entry is, without its counters: (table, priority, match, actions, cookie)."""
        return (self.table, self.priority, self.match, self.actions, self.cookie)


_COUNTERS = ("cookie", "duration", "table", "n_packets", "n_bytes", "idle_timeout", "hard_timeout", "idle_age",
             "hard_age", "importance")


def parse_flows(text: str) -> list[Flow]:
    """Entries of ``ovs-ofctl -O OpenFlow13 dump-flows`` output, e.g.
    ``cookie=0x13.., duration=9.04s, table=2, n_packets=199, n_bytes=.., idle_timeout=300,
    send_flow_rem priority=100,in_port=1,dl_src=.. actions=goto_table:3``."""
    flows = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("cookie="):
            continue
        head, _, actions = line.partition(" actions=")
        kv = {}
        rest = []
        for part in head.split(", "):
            m = re.fullmatch(r"(\w+)=(\S+)", part)
            if m and m.group(1) in _COUNTERS:
                kv[m.group(1)] = m.group(2)
            else:
                rest.append(part)
        # what is left: flags (send_flow_rem, reset_counts, ...) then "priority=N,match" (or the match alone)
        words = " ".join(rest).split()
        match_text = words[-1] if words and "=" in words[-1] else ""
        prio = 32768
        fields = [f for f in match_text.split(",") if f]
        if fields and fields[0].startswith("priority="):
            prio = int(fields.pop(0).split("=", 1)[1])
        flows.append(Flow(cookie=int(kv.get("cookie", "0"), 16), table=int(kv.get("table", 0)), priority=prio,
                          match=",".join(fields), actions=actions.strip(), n_packets=int(kv.get("n_packets", 0)),
                          n_bytes=int(kv.get("n_bytes", 0)), duration=float(kv.get("duration", "0s").rstrip("s")),
                          idle_timeout=int(kv.get("idle_timeout", 0)), raw=line))
    return flows


def dump_flows(bridge: str) -> list[Flow]:
    return parse_flows(run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge]))


@dataclass
class Meter:
    meter_id: int
    unit: str             #: kbps | pktps
    rate: int
    burst: int | None
    text: str = field(default="", repr=False)


def parse_meters(text: str) -> dict[int, Meter]:
    """``ovs-ofctl -O OpenFlow13 dump-meters`` output: ``meter=4 kbps burst bands=`` followed by
    ``type=drop rate=256 burst_size=256`` on the next line."""
    out = {}
    flat = " ".join(text.split())
    for m in re.finditer(r"meter=(\d+) (kbps|pktps)[a-z ]*bands= type=drop rate=(\d+)(?: burst_size=(\d+))?", flat):
        out[int(m.group(1))] = Meter(int(m.group(1)), m.group(2), int(m.group(3)),
                                     int(m.group(4)) if m.group(4) else None, m.group(0))
    return out


def dump_meters(bridge: str) -> dict[int, Meter]:
    return parse_meters(run(["ovs-ofctl", "-O", "OpenFlow13", "dump-meters", bridge]))
