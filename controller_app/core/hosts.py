"""L2 hosts: learning (in_port, eth_src) from table-miss copies, forwarding entries toward
each host on every switch, and forgetting a host whose entry idled out (like Faucet's
valve_host).

Owns ``Device.dpid / port / located`` and ``Switch.fwd``.
"""

from __future__ import annotations

from typing import Callable

from controller_app.core.state import SEC, Device, State
from controller_app.core.topology import TopologyManager
from controller_app.intents import FlowAdd, FlowDelete, Match, Output
from controller_app.pipeline import PRIO_HOST, CookieKind, Table, cookie


class HostManager:
    def __init__(self, state: State, topology: TopologyManager, sync_device: Callable[[Device], list]):
        self.state = state
        self.topology = topology
        self.sync_device = sync_device     # the device's mirror and policy rules follow where it is

    def learn(self, mac: int, dpid: int, port: int, now_ns: int) -> list:
        """A table-miss copy: ``mac`` sent from ``port`` of ``dpid``."""
        st = self.state
        sw = st.switches.get(dpid)
        if sw is None or port in self.topology.link_ports(dpid):
            return []
        if port not in sw.ports:
            st.counters["packet_ins_unknown_port"] += 1   # a port the switch never reported: ignore
            return []
        dev = st.devices.get(mac)
        out: list = []
        if dev is None:
            dev = st.new_device(mac, now_ns)
            st.counters["devices_seen"] += 1
        elif dev.located and dev.dpid == dpid and dev.port == port:
            return []   # a copy that raced the flow entry
        elif dev.located:
            out += self.unlocate(dev)
        dev.dpid, dev.port, dev.located = dpid, port, True
        dev.last_ns = max(dev.last_ns, now_ns)
        out.append(FlowAdd(dpid, Table.ETH_SRC, PRIO_HOST, Match(in_port=port, eth_src=mac), goto=Table.ETH_DST,
                           cookie=cookie(CookieKind.HOST, mac), idle_timeout=st.settings.l2_idle_timeout,
                           notify_removed=True))
        out += self.sync_forwarding(dev)
        out += self.sync_device(dev)
        return out

    def unlocate(self, dev: Device) -> list:
        out = []
        if dev.located and dev.dpid in self.state.switches:
            out.append(FlowDelete(dev.dpid, Table.ETH_SRC, Match(in_port=dev.port, eth_src=dev.mac),
                                  priority=PRIO_HOST))
        dev.located = False
        return out

    def sync_forwarding(self, dev: Device) -> list:
        """ETH_DST entries toward ``dev`` on every switch (none when it is not located), as a diff."""
        st = self.state
        want: dict = {}
        if dev.located and dev.dpid in st.switches:
            want[dev.dpid] = dev.port
            for s, port in self.topology.ports_toward(dev.dpid).items():
                if s in st.switches:
                    want[s] = port
        out: list = []
        c = cookie(CookieKind.HOST, dev.mac)
        for dpid, sw in st.switches.items():
            have = sw.fwd.get(dev.mac)
            port = want.get(dpid)
            if port == have:
                continue
            if port is None:
                out.append(FlowDelete(dpid, Table.ETH_DST, Match(eth_dst=dev.mac), priority=PRIO_HOST))
                del sw.fwd[dev.mac]
            else:
                out.append(FlowAdd(dpid, Table.ETH_DST, PRIO_HOST, Match(eth_dst=dev.mac), actions=(Output(port),),
                                   goto=Table.MIRROR, cookie=c))
                sw.fwd[dev.mac] = port
        return out

    def resync(self) -> list:
        """After a topology change: hosts learned on what is now a link (or a switch that went)
        are forgotten, and every host's forwarding entries follow the new paths."""
        st = self.state
        out: list = []
        for dev in st.devices.values():
            if dev.located and (dev.dpid not in st.switches or dev.port in self.topology.link_ports(dev.dpid)):
                out += self.unlocate(dev)
        for dev in list(st.devices.values()):
            out += self.sync_forwarding(dev)
        return out

    def port_down(self, dpid: int, port: int) -> list:
        out: list = []
        for dev in self.state.devices.values():
            if dev.located and dev.dpid == dpid and dev.port == port:
                out += self.unlocate(dev)
        return out

    def switch_gone(self, dpid: int) -> None:
        for dev in self.state.devices.values():
            if dev.dpid == dpid:
                dev.located = False

    def flow_removed(self, dpid: int, table: int, cookie_value: int, in_port: int | None, eth_src: int | None,
                     now_ns: int) -> list:
        """An ETH_SRC host entry timed out: the host is gone from there; stop forwarding to it."""
        st = self.state
        if (cookie_value >> 56) != CookieKind.HOST or table != Table.ETH_SRC or eth_src is None:
            return []
        dev = st.devices.get(eth_src)
        if dev is None or not dev.located or dev.dpid != dpid or dev.port != in_port:
            return []
        dev.located = False
        dev.last_ns = max(dev.last_ns, now_ns - st.settings.l2_idle_timeout * SEC)
        return self.sync_forwarding(dev)
