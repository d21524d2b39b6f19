"""Switches, topology and flooding: table defaults, LLDP probes and links, the spanning tree,
flooding and link-port entries (like Faucet's valve_lldp and valve_flood).

Owns ``State.switches``, ``State.links`` and the derived graph, spanning tree and paths.
"""

from __future__ import annotations

import logging

import networkx as nx

from controller_app import lldp
from controller_app.core.state import SEC, State, Switch
from controller_app.intents import (OFPCML_NO_BUFFER, OFPM_ALL, OFPP_CONTROLLER, OFPP_MAX, OFPTT_ALL, FlowAdd,
                                    FlowDelete, Match, MeterAdd, MeterDelete, Output, PacketOut)
from controller_app.pipeline import (IDENTITY_MATCHES, LEARN_METER, META_UNKNOWN_SRC, PRIO_FLOOD, PRIO_LEARN_COPY, PRIO_LEARN_IDENTITY, PRIO_LINK_PORT,
                                     PRIO_LLDP, PRIO_MISS, PRIO_NO_FLOOD, CookieKind, Table, cookie)

LOG = logging.getLogger("controller_app.core")


class TopologyManager:
    def __init__(self, state: State):
        self.state = state

    # ------------------------------------------------------------------ switches

    def switch_added(self, dpid: int, ports) -> list:
        """A clean slate and the table defaults for a switch that connected (not yet synced)."""
        ports = {int(p) for p in ports if int(p) < OFPP_MAX or int(p) == 0xFFFFFFFE}
        self.state.switches[dpid] = Switch(dpid, ports)
        out: list = [FlowDelete(dpid, OFPTT_ALL), MeterDelete(dpid, OFPM_ALL)]
        out += self.defaults(dpid)
        return out

    def defaults(self, dpid: int) -> list:
        """Every table's default entry; unknown sources are marked in ETH_SRC and copied, through
        the switch's learning meter, in LEARN (after forwarding, so the meter drops only copies)."""
        s = self.state.settings
        d = cookie(CookieKind.DEFAULT)
        lc = cookie(CookieKind.LEARN)
        meter = LEARN_METER if s.learn_rate_pps > 0 else None
        out: list = []
        if meter is not None:
            out.append(MeterAdd(dpid, LEARN_METER, s.learn_rate_pps, max(1, s.learn_burst), "pktps"))
        out += [
            FlowAdd(dpid, Table.POLICY_SRC, PRIO_LLDP, Match(eth_src=lldp.PROBE_SRC, eth_type=lldp.ETH_TYPE_LLDP),
                    actions=(Output(OFPP_CONTROLLER, OFPCML_NO_BUFFER),), cookie=cookie(CookieKind.LLDP)),
            FlowAdd(dpid, Table.POLICY_SRC, PRIO_MISS, Match(), goto=Table.POLICY_DST, cookie=d),
            FlowAdd(dpid, Table.POLICY_DST, PRIO_MISS, Match(), goto=Table.ETH_SRC, cookie=d),
            FlowAdd(dpid, Table.ETH_SRC, PRIO_MISS, Match(), write_metadata=(META_UNKNOWN_SRC, META_UNKNOWN_SRC),
                    goto=Table.ETH_DST, cookie=lc),
            FlowAdd(dpid, Table.ETH_DST, PRIO_MISS, Match(), goto=Table.LEARN, cookie=d),
            FlowAdd(dpid, Table.LEARN, PRIO_LEARN_COPY, Match(metadata=(META_UNKNOWN_SRC, META_UNKNOWN_SRC)),
                    actions=(Output(OFPP_CONTROLLER, s.learn_max_len),), meter=meter, goto=Table.MIRROR, cookie=lc),
            FlowAdd(dpid, Table.LEARN, PRIO_MISS, Match(), goto=Table.MIRROR, cookie=d),
            FlowAdd(dpid, Table.MIRROR, PRIO_MISS, Match(), cookie=d),
        ]
        # A new device's first words are often its identity (a DHCP request with its host name,
        # mDNS announcements): they come before its mirror entries, as learning copies, so
        # those are copied whole (through the same meter) for the identity reader.
        whole = (Output(OFPP_CONTROLLER, OFPCML_NO_BUFFER),)
        unknown = (META_UNKNOWN_SRC, META_UNKNOWN_SRC)
        for et, field, port in IDENTITY_MATCHES:
            prio = PRIO_LEARN_IDENTITY if field == "udp_dst" else PRIO_LEARN_IDENTITY - 1
            out.append(FlowAdd(dpid, Table.LEARN, prio, Match(metadata=unknown, eth_type=et, ip_proto=17,
                                                              **{field: port}),
                               actions=whole, meter=meter, goto=Table.MIRROR, cookie=lc))
        return out

    def switch_removed(self, dpid: int):
        """Forget a switch and its links; returns its record (None if it was not known)."""
        st = self.state
        sw = st.switches.pop(dpid, None)
        if sw is None:
            return None
        for key in [k for k, v in st.links.items() if k[0] == dpid or v[0] == dpid]:
            del st.links[key]
        return sw

    def port_up(self, dpid: int, port: int) -> list | None:
        """A port came up: probes on it. None if nothing changed."""
        sw = self.state.switches[dpid]
        if port in sw.ports:
            return None
        sw.ports.add(port)
        return self.probes(dpid, [port])

    def port_down(self, dpid: int, port: int) -> tuple[bool, bool]:
        """A port went down: forget it and its link. Returns (the port was up, a link went)."""
        st = self.state
        sw = st.switches[dpid]
        if port not in sw.ports:
            return False, False
        sw.ports.discard(port)
        gone = [k for k, v in st.links.items() if k == (dpid, port) or v[:2] == (dpid, port)]
        for key in gone:
            del st.links[key]
        return True, bool(gone)

    # ------------------------------------------------------------------ LLDP and links

    def link_ports(self, dpid: int) -> set:
        sw = self.state.switches.get(dpid)
        return sw.link_ports if sw is not None else {p for (d, p) in self.state.links if d == dpid}

    def probes(self, dpid: int, ports) -> list:
        return [PacketOut(dpid, lldp.probe_frame(dpid, p), p) for p in ports]

    def lldp_in(self, dpid: int, in_port: int, data: bytes, now_ns: int) -> bool:
        """One of our probes came back: a link. True if it is a new link (the topology changed)."""
        st = self.state
        probe = lldp.parse_probe(data)
        if probe is None:
            st.counters["lldp_foreign"] += 1
            return False
        src = probe
        if src[0] not in st.switches or src == (dpid, in_port):
            return False
        new = (dpid, in_port) not in st.links or st.links[(dpid, in_port)][:2] != src
        st.links[(dpid, in_port)] = (src[0], src[1], now_ns)
        st.links[src] = (dpid, in_port, now_ns)
        if not new:
            return False
        LOG.info("link %016x:%d <-> %016x:%d", src[0], src[1], dpid, in_port)
        self.changed()
        return True

    def timer(self, now_ns: int) -> tuple[list, bool]:
        """Probes every ``lldp_interval`` and link expiry. Returns (probes, topology changed)."""
        st = self.state
        s = st.settings
        out: list = []
        changed = False
        if now_ns >= st.next_lldp_ns:
            first = st.next_lldp_ns == 0     # switches probed when they connected
            st.next_lldp_ns = now_ns + int(s.lldp_interval * SEC)
            stale = [k for k, v in st.links.items() if now_ns - v[2] > s.link_timeout * SEC]
            if stale:
                for k in stale:
                    st.links.pop(k, None)
                self.changed()
                changed = True
            if not first:
                for dpid, sw in st.switches.items():
                    out += self.probes(dpid, sorted(sw.ports))
        return out, changed

    # ------------------------------------------------------------------ spanning tree and paths

    def changed(self) -> None:
        """Recompute the link ports, the graph, its spanning tree and (lazily) the paths."""
        st = self.state
        for sw in st.switches.values():
            sw.link_ports = set()
        for d, p in st.links:
            if d in st.switches:
                st.switches[d].link_ports.add(p)
        g = nx.Graph()
        g.add_nodes_from(sorted(st.switches))
        for (d1, p1), (d2, p2, _) in sorted(st.links.items()):
            if d1 in st.switches and d2 in st.switches and d1 < d2 and not g.has_edge(d1, d2):
                g.add_edge(d1, d2, ports={d1: p1, d2: p2})
        st.graph = g
        tree = nx.minimum_spanning_tree(g)
        st.tree_ports = {d: set() for d in st.switches}
        for a, b in tree.edges():
            ports = g.edges[a, b]["ports"]
            st.tree_ports[a].add(ports[a])
            st.tree_ports[b].add(ports[b])
        st.paths = {}

    def ports_toward(self, edge: int) -> dict:
        """{dpid: the port of that switch toward switch ``edge``} along shortest paths."""
        st = self.state
        res = st.paths.get(edge)
        if res is None:
            res = {}
            if edge in st.graph:
                for s, path in nx.single_source_shortest_path(st.graph, edge).items():
                    if s != edge:
                        res[s] = st.graph.edges[s, path[-2]]["ports"][s]
            st.paths[edge] = res
        return res

    # ------------------------------------------------------------------ flooding and link ports

    def sync(self) -> list:
        """Flooding and link-port entries on every switch, as a diff."""
        out: list = []
        for dpid in self.state.switches:
            out += self.sync_switch(dpid)
        return out

    def sync_switch(self, dpid: int) -> list:
        """One switch's flooding and link-port entries, as a diff.

        Flooding is one entry whatever the number of ports: output to every edge port and every
        spanning-tree port (a switch never sends a packet back out of the port it came in on),
        plus one no-flood entry per link port outside the tree. A port that comes or goes
        changes the flood entry only: linear in ports, not quadratic."""
        sw = self.state.switches[dpid]
        lp = sw.link_ports
        tree = self.state.tree_ports.get(dpid, set())
        flood = tuple(sorted((sw.ports - lp) | (tree & sw.ports)))
        no_flood = (lp & sw.ports) - tree
        out: list = []
        if sw.flood != flood:
            out.append(FlowAdd(dpid, Table.ETH_DST, PRIO_FLOOD, Match(), actions=tuple(Output(q) for q in flood),
                               goto=Table.LEARN, cookie=cookie(CookieKind.FLOOD)))
            sw.flood = flood
        for p in sorted(no_flood - sw.no_flood):
            out.append(FlowAdd(dpid, Table.ETH_DST, PRIO_NO_FLOOD, Match(in_port=p), goto=Table.LEARN,
                               cookie=cookie(CookieKind.FLOOD)))
        for p in sorted(sw.no_flood - no_flood):
            out.append(FlowDelete(dpid, Table.ETH_DST, Match(in_port=p), priority=PRIO_NO_FLOOD))
        sw.no_flood = no_flood
        lc = cookie(CookieKind.LEARN)
        for p in sorted(lp - sw.link_ports_installed):
            out.append(FlowAdd(dpid, Table.ETH_SRC, PRIO_LINK_PORT, Match(in_port=p), goto=Table.ETH_DST,
                               cookie=lc))
        for p in sorted(sw.link_ports_installed - lp):
            out.append(FlowDelete(dpid, Table.ETH_SRC, Match(in_port=p), priority=PRIO_LINK_PORT))
        sw.link_ports_installed = set(lp)
        return out
