"""L2 hosts: learning (in_port, eth_src) from table-miss copies, forwarding entries toward
each host on every switch, hosts that idle out, and the host caps (like Faucet's valve_host
with its max_hosts and learn_ban_timeout).

Owns ``Device.dpid / port / attached / located``, ``Switch.fwd``, ``State.port_hosts /
switch_hosts / bans``.

Caps: a *new* MAC is learned only while its port holds fewer than ``max_hosts_per_port``
devices and its switch fewer than ``max_hosts_per_switch``. At a cap it is forwarded (the
switch floods it) but not learned: no device, no entry, no meter; the refusal is counted and
the port (or the whole switch) stops copying unknown sources to the controller for
``learn_ban_timeout`` seconds (a "ban" entry in ETH_SRC). Devices the controller already
knows (returning ones, ones that move) are never refused: the caps bound what unknown MACs
can make the controller hold.
"""

from __future__ import annotations

from typing import Callable

from controller_app.core.state import SEC, Device, State
from controller_app.core.topology import TopologyManager
from controller_app.intents import FlowAdd, FlowDelete, Match, Output
from controller_app.pipeline import PRIO_BAN_PORT, PRIO_BAN_SWITCH, PRIO_HOST, CookieKind, Table, cookie


class HostManager:
    def __init__(self, state: State, topology: TopologyManager, sync_device: Callable[[Device], list]):
        self.state = state
        self.topology = topology
        self.sync_device = sync_device     # the device's mirror and policy rules follow where it is

    # ------------------------------------------------------------------ learning

    def learn(self, mac: int, dpid: int, port: int, now_ns: int) -> list:
        """A table-miss copy: ``mac`` sent from ``port`` of ``dpid``."""
        st = self.state
        sw = st.switches.get(dpid)
        if sw is None or port in sw.link_ports:
            return []
        if port not in sw.ports:
            st.counters["packet_ins_unknown_port"] += 1   # a port the switch never reported: ignore
            return []
        dev = st.devices.get(mac)
        out: list = []
        if dev is None:
            cap = None if mac in st.gateways or st.pinned(mac) else self.cap_reached(dpid, port)
            if cap is not None:
                return self.refuse(cap, dpid, port, now_ns)
            dev = st.new_device(mac, now_ns)
            st.counters["devices_seen"] += 1
            st.attach(dev, dpid, port)
        elif dev.located and dev.dpid == dpid and dev.port == port:
            return []   # a copy that raced the flow entry
        else:
            if dev.located:
                out += self.unlocate(dev)
            if not dev.attached:                           # parked: it came back
                dev.slot = st.alloc_slot()
                st.counters["devices_returned"] += 1
                st.tally["returned"] += 1
            if not dev.attached or (dev.dpid, dev.port) != (dpid, port):
                st.attach(dev, dpid, port)
        dev.located = True
        dev.last_ns = max(dev.last_ns, now_ns)
        out.append(FlowAdd(dpid, Table.ETH_SRC, PRIO_HOST, Match(in_port=port, eth_src=mac), goto=Table.ETH_DST,
                           cookie=cookie(CookieKind.HOST, mac), idle_timeout=st.settings.l2_idle_timeout,
                           notify_removed=True))
        out += self.sync_forwarding(dev)
        out += self.sync_device(dev)
        return out

    def cap_reached(self, dpid: int, port: int) -> str | None:
        """Which cap a new MAC at (dpid, port) would exceed: "port", "switch" or None."""
        st = self.state
        s = st.settings
        if len(st.port_hosts.get((dpid, port), ())) >= s.max_hosts_per_port:
            return "port"
        if st.switch_hosts.get(dpid, 0) >= s.max_hosts_per_switch:
            return "switch"
        return None

    def refuse(self, cap: str, dpid: int, port: int, now_ns: int) -> list:
        """A new MAC at a cap: counted, and learning at that port (switch) banned for a while."""
        st = self.state
        st.counters[f"learn_refused_{cap}"] += 1
        st.tally[f"refused_{cap}"] += 1
        key = (dpid, port) if cap == "port" else (dpid, None)
        st.capped_at.add(key)
        timeout = st.settings.learn_ban_timeout
        if timeout <= 0 or key in st.bans:
            return []
        st.bans[key] = now_ns + int(timeout * SEC)
        st.counters["learn_bans"] += 1
        prio, match = (PRIO_BAN_PORT, Match(in_port=port)) if cap == "port" else (PRIO_BAN_SWITCH, Match())
        return [FlowAdd(dpid, Table.ETH_SRC, prio, match, goto=Table.ETH_DST, cookie=cookie(CookieKind.LEARN))]

    def lift_bans(self, now_ns: int, dpid: int | None = None, port: int | None = None) -> list:
        """Bans that ended (or all of a switch's, or of one port, when named)."""
        st = self.state
        out: list = []
        for key, until in list(st.bans.items()):
            d, p = key
            if dpid is not None:
                if d != dpid or (port is not None and p != port):
                    continue
            elif until > now_ns:
                continue
            del st.bans[key]
            if d in st.switches:
                prio, match = (PRIO_BAN_PORT, Match(in_port=p)) if p is not None else (PRIO_BAN_SWITCH, Match())
                out.append(FlowDelete(d, Table.ETH_SRC, match, priority=prio))
        return out

    # ------------------------------------------------------------------ where hosts are

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
                                   goto=Table.LEARN, cookie=c))
                sw.fwd[dev.mac] = port
        return out

    def release(self, dev: Device) -> list:
        """Every host entry of the device, and its place under the caps."""
        out = self.unlocate(dev)
        out += self.sync_forwarding(dev)
        self.state.detach(dev)
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
            if dev.located or any(dev.mac in sw.fwd for sw in st.switches.values()):
                out += self.sync_forwarding(dev)
        return out

    def port_down(self, dpid: int, port: int) -> list:
        """The hosts on that port (and only those) are no longer there."""
        out: list = []
        for mac in sorted(self.state.port_hosts.get((dpid, port), ())):
            dev = self.state.devices[mac]
            if dev.located:
                out += self.unlocate(dev)
                out += self.sync_forwarding(dev)
        return out

    def switch_gone(self, dpid: int) -> None:
        for dev in self.state.devices.values():
            if dev.dpid == dpid:
                dev.located = False
        for key in [k for k in self.state.bans if k[0] == dpid]:
            del self.state.bans[key]

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
