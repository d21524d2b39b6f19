"""The lab: a Mininet network on Open vSwitch (userspace datapath) that lives as long as this
process. Run with the system Python, which has Mininet's API (not the project's venv)::

    /usr/bin/python3 topologies/lab.py SPEC.json

SPEC (JSON): ``{"topology": "single"|"two", "devices": [[host, mac], ...]`` (single) or
``"devices_a"``/``"devices_b"`` (two), ``"gateway_mac"``, ``"prefix"`` (switch names
``<prefix>1``, ``<prefix>2``), ``"controller": [ip, port]}``.

It starts Open vSwitch if it is not running, builds and starts the network, and prints ONE
line of JSON on stdout::

    {"ready": true, "ovs_started": bool,
     "switches": {"iotsw1": {"dpid": 1, "ports": {"iotsw1-eth1": 1, ...}}, ...},
     "hosts": {"h1": {"pid": 1234, "intf": "h1-eth0", "mac": "...", "switch": "iotsw1", "port": 1}, ...}}

Commands run inside a host with Mininet's ``mnexec -a PID`` (its network namespace). The lab
stops when its stdin closes (or on SIGTERM/SIGINT/SIGHUP): it stops the network (hosts, links,
bridges), removes anything of its own left behind, and stops Open vSwitch if it started it.
On an error it prints ``{"ready": false, "error": "..."}`` and exits 1.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
from functools import partial

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ovs  # noqa: E402  (topologies/ovs.py, standard library only)


def _say(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _stop_signal(signum, frame):
    raise SystemExit(128 + signum)


def _quiet_ipv6(intf: str) -> None:
    try:
        with open(f"/proc/sys/net/ipv6/conf/{intf}/disable_ipv6", "w") as fh:
            fh.write("1")
    except FileNotFoundError:     # no IPv6 in this kernel: nothing to silence
        pass


def build(spec: dict):
    from mininet.log import setLogLevel
    from mininet.net import Mininet
    from mininet.node import OVSSwitch, RemoteController

    from iot import TOPOLOGIES, QuietHost

    setLogLevel("warning")
    kind = spec.get("topology", "single")
    if kind not in TOPOLOGIES:
        raise ValueError(f"spec: topology {kind!r} is not one of {sorted(TOPOLOGIES)}")
    kw = {"gateway_mac": spec["gateway_mac"], "prefix": spec.get("prefix", "iotsw")}
    if kind == "single":
        kw["devices"] = spec["devices"]
    else:
        kw["devices_a"], kw["devices_b"] = spec["devices_a"], spec["devices_b"]
    topo = TOPOLOGIES[kind](**kw)
    ip, port = spec.get("controller", ["127.0.0.1", 6653])
    net = Mininet(topo=topo, host=QuietHost,
                  switch=partial(OVSSwitch, datapath="user", protocols="OpenFlow13"),
                  controller=partial(RemoteController, ip=ip, port=int(port)),
                  autoSetMacs=False, autoStaticArp=False, build=False, waitConnected=False)
    return net


def describe(net) -> dict:
    switches = {}
    for sw in net.switches:
        switches[sw.name] = {"dpid": int(sw.dpid, 16),
                             "ports": {i.name: sw.ports[i] for i in sw.intfList() if i.name != "lo"}}
    hosts = {}
    for h in net.hosts:
        intf = h.defaultIntf()
        link = intf.link
        peer = link.intf2 if link.intf1 is intf else link.intf1
        hosts[h.name] = {"pid": h.pid, "intf": intf.name, "mac": intf.MAC(), "switch": peer.node.name,
                         "port": peer.node.ports[peer]}
    return {"switches": switches, "hosts": hosts}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop_signal)
    started = False
    net = None
    names: list[str] = []
    links: list[str] = []

    def cleanup():
        nonlocal net, started
        if net is not None:
            n, net = net, None
            try:
                n.stop()
            except Exception as exc:  # noqa: BLE001 - go on with the rest of the clean-up
                print(f"lab: stopping the network: {exc}", file=sys.stderr)
        # whatever Mininet could not remove: only this lab's own bridges and links
        try:
            ovs.delete_bridges([b for b in names if b in ovs.list_bridges()])
        except ovs.OvsError:
            pass
        ovs.delete_links(links)
        if started:
            started = False
            ovs.stop_ovs()

    atexit.register(cleanup)
    try:
        with open(argv[0]) as fh:
            spec = json.load(fh)
        started = ovs.start_ovs()
        prefix = spec.get("prefix", "iotsw")
        wanted = [f"{prefix}1"] + ([f"{prefix}2"] if spec.get("topology") == "two" else [])
        present = [b for b in wanted if b in ovs.list_bridges()]
        stale = [b for b in present if ovs.is_stale_bridge(b)]
        if stale:
            print(f"lab: removing {', '.join(stale)}, left by a lab that was killed (none of its ports "
                  f"exists any more)", file=sys.stderr)
            ovs.delete_bridges(stale)
        busy = [b for b in present if b not in stale]
        if busy:
            raise RuntimeError(f"bridge {', '.join(busy)} already exists: another lab is running or a previous one "
                               f"was killed (remove it with: ovs-vsctl del-br {busy[0]})")
        names = wanted
        net = build(spec)
        net.build()
        links = [i.name for sw in net.switches for i in sw.intfList() if i.name != "lo"]
        for name in links:
            # the switches' ends of the links live in the root namespace, where IPv6 is on: their
            # neighbour discovery would enter the bridge as frames from an unknown "device"
            _quiet_ipv6(name)
        net.start()
        for sw in net.switches:
            ovs.set_controller_backoff(sw.name)
        _say({"ready": True, "ovs_started": started, **describe(net)})
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        return 0
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - one line for the caller, which shows it
        _say({"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
