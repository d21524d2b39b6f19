"""Mininet topologies of the end-to-end tests and the demo (Mininet's Python API, system Python).

Open vSwitch runs on the userspace datapath (``datapath_type=netdev``: the kernel module is
absent on many VMs and containers) and speaks OpenFlow 1.3 to a remote controller.

* :class:`IotSingleSwitch`: one switch, one host per device, and a gateway host that stands
  for the router and the internet.
* :class:`IotTwoSwitch`: two switches joined by a link, devices on both, the gateway on the
  first.

Hosts are :class:`QuietHost`: no IPv4 address and IPv6 off, so that their kernels send nothing
of their own (no neighbour discovery, no router solicitation, no RST or ICMP answer to a
replayed frame). Every frame a device host sends is one the replay harness sends with
tcpreplay, under the device's own MAC and addresses.

Also usable with ``mn``::

    mn --custom topologies/iot.py --topo iotsingle,4 --switch user,protocols=OpenFlow13 \\
       --controller remote,ip=127.0.0.1,port=6653
"""

from __future__ import annotations

from mininet.node import Host
from mininet.topo import Topo

GATEWAY = "gw"


class QuietHost(Host):
    """A host whose kernel sends nothing on its own (IPv6 off before its links exist, no IPv4)."""

    def startShell(self, *args, **kwargs):
        super().startShell(*args, **kwargs)
        self.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")


def _dpid(n: int) -> str:
    return f"{n:016x}"


def _device_list(devices):
    """``devices``: an int (that many devices, generated MACs) or (host name, MAC) pairs."""
    if isinstance(devices, int):
        return [(f"h{i + 1}", f"02:00:00:00:01:{i + 1:02x}") for i in range(devices)]
    return [(str(n), str(m)) for n, m in devices]


class IotSingleSwitch(Topo):
    """One switch (``<prefix>1``), a host per device on ports 1..N, the gateway on port N+1."""

    def build(self, devices=4, gateway_mac="02:00:00:00:00:01", prefix="iotsw"):
        sw = self.addSwitch(f"{prefix}1", dpid=_dpid(1))
        for name, mac in _device_list(devices):
            self.addLink(self.addHost(name, ip=None, mac=mac), sw)
        self.addLink(self.addHost(GATEWAY, ip=None, mac=gateway_mac), sw)


class IotTwoSwitch(Topo):
    """Two switches joined by a link: ``devices_a`` and the gateway on the first switch,
    ``devices_b`` on the second (port 1 of each switch is the inter-switch link)."""

    def build(self, devices_a=2, devices_b=2, gateway_mac="02:00:00:00:00:01", prefix="iotsw"):
        s1 = self.addSwitch(f"{prefix}1", dpid=_dpid(1))
        s2 = self.addSwitch(f"{prefix}2", dpid=_dpid(2))
        self.addLink(s1, s2)
        a = _device_list(devices_a)
        b = _device_list(devices_b)
        if isinstance(devices_b, int):   # generated names must not collide with the first switch's
            b = [(f"h{len(a) + i + 1}", f"02:00:00:00:01:{len(a) + i + 1:02x}") for i in range(devices_b)]
        for name, mac in a:
            self.addLink(self.addHost(name, ip=None, mac=mac), s1)
        self.addLink(self.addHost(GATEWAY, ip=None, mac=gateway_mac), s1)
        for name, mac in b:
            self.addLink(self.addHost(name, ip=None, mac=mac), s2)


TOPOLOGIES = {"single": IotSingleSwitch, "two": IotTwoSwitch}

# for `mn --custom topologies/iot.py --topo iotsingle,N` / `--topo iottwo,A,B`
topos = {"iotsingle": lambda n=4: IotSingleSwitch(devices=int(n)),
         "iottwo": lambda a=2, b=2: IotTwoSwitch(devices_a=int(a), devices_b=int(b))}
