"""The controller's pure core: events in, flow intents out.

Nothing here touches a socket, a thread, a clock or a framework: every handler takes the
event (and the current time) and returns a list of intents (:mod:`controller_app.intents`).
The os-ken shell turns those into OpenFlow messages; the tests apply them to a fake flow
table and ask what happens to packets.

:class:`Core` is the façade the shell calls. The work is done by managers over one shared
:class:`~controller_app.core.state.State` (as Faucet splits its valve into managers):

* :mod:`~controller_app.core.topology` — switches, table defaults, LLDP links, spanning tree, flooding;
* :mod:`~controller_app.core.hosts` — L2 hosts: learning, forwarding entries, idle hosts;
* :mod:`~controller_app.core.mirror` — mirror entries and meters, mirrored packets into the learner;
* :mod:`~controller_app.core.rules` — policy entries and rate meters, pools, reloads;
* :mod:`~controller_app.core.decisions` — decision requests, decisions, re-checks, restore.

The pipeline's tables, cookies and priorities are named in :mod:`controller_app.pipeline`.
Forwarding outputs happen in ETH_DST's apply-actions, *before* MIRROR: a mirror meter that
drops a copy cannot drop the forwarded packet (an OpenFlow 1.3 meter is an instruction on the
whole packet, so it must never sit on the forwarding path). A blocked device's packets skip
forwarding and go straight to MIRROR, so a device still being learned is seen even when blocked.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from classifier.capture.decode import decode_frames
from classifier.capture.packets import DecodeFlag
from classifier.engine.decision import Decision
from classifier.features.devices import is_unicast

from controller_app.core.decisions import DecisionManager
from controller_app.core.hosts import HostManager
from controller_app.core.mirror import MirrorManager, mirror_flows
from controller_app.core.rules import RulesManager, policy_flows
from controller_app.core.state import SEC, Device, PacketInBatch, Settings, State, Switch
from controller_app.core.topology import TopologyManager
from controller_app.intents import OFPP_MAX
from controller_app.pipeline import (PRIO_DEVICE, PRIO_FLOOD, PRIO_HOST, PRIO_IP_DENY, PRIO_IP_MARK,  # noqa: F401
                                     PRIO_LINK_PORT, PRIO_LLDP, PRIO_MIRROR_DST, PRIO_MIRROR_SRC, PRIO_MISS,
                                     PRIO_POOL_ALLOW, CookieKind)
from controller_app.policy import Policy

__all__ = ["Core", "Device", "PacketInBatch", "Settings", "State", "Switch", "SEC", "mirror_flows", "policy_flows"]


class Core:
    """The controller's event handlers (see the module docstring): each one hands the event to
    the managers concerned and returns the intents they produced, counted."""

    def __init__(self, settings: Settings | None = None, policy: Policy | None = None):
        self.state = State(settings, policy)
        self.topology = TopologyManager(self.state)
        self.mirror = MirrorManager(self.state)
        self.rules = RulesManager(self.state)
        self.hosts = HostManager(self.state, self.topology, self.sync_device)
        self.decisions = DecisionManager(self.state, self.mirror, self.sync_device)

    # ------------------------------------------------------------------ the shared state, as before

    @property
    def settings(self) -> Settings:
        return self.state.settings

    @property
    def policy(self) -> Policy:
        return self.state.policy

    @property
    def switches(self) -> dict:
        return self.state.switches

    @property
    def devices(self) -> dict:
        return self.state.devices

    @property
    def links(self) -> dict:
        return self.state.links

    @property
    def learner(self):
        return self.state.learner

    @property
    def counters(self) -> Counter:
        return self.state.counters

    def classifier_time(self, ts_ns):
        return self.mirror.classifier_time(ts_ns)

    def link_ports(self, dpid: int) -> set:
        return self.topology.link_ports(dpid)

    # ------------------------------------------------------------------ orchestration

    def sync_device(self, dev: Device) -> list:
        """Bring a device's mirror and policy rules to what its state asks for (a diff)."""
        return self.mirror.sync(dev) + self.rules.sync(dev)

    def _sync_switching(self) -> list:
        """Flooding, link-port and per-host forwarding entries on every switch, as a diff."""
        return self.topology.sync() + self.hosts.resync()

    # ------------------------------------------------------------------ switches

    def switch_up(self, dpid: int, ports, now_ns: int) -> list:
        """A switch connected (or reconnected): clean slate, defaults, then every rule it should hold."""
        down = self.switch_down(dpid, now_ns) if dpid in self.state.switches else []
        out = self.topology.switch_added(dpid, ports)
        self.topology.changed()
        out += self._sync_switching()
        for dev in self.state.devices.values():
            if dev.dpid == dpid:
                out += self.sync_device(dev)
        out += self.topology.probes(dpid, sorted(self.state.switches[dpid].ports))
        return down + self.state.count(out)

    def switch_down(self, dpid: int, now_ns: int) -> list:
        """A switch disconnected: forget what it held; its devices keep their state and get
        their rules back when it reconnects."""
        if self.topology.switch_removed(dpid) is None:
            return []
        self.mirror.switch_gone(dpid)
        self.rules.switch_gone(dpid)
        self.hosts.switch_gone(dpid)
        self.topology.changed()
        return self.state.count(self._sync_switching())

    def port_changed(self, dpid: int, port: int, up: bool, now_ns: int) -> list:
        if dpid not in self.state.switches or port >= OFPP_MAX:
            return []
        out: list = []
        if up:
            probes = self.topology.port_up(dpid, port)
            if probes is None:
                return []
            out += probes
        else:
            if not self.topology.port_down(dpid, port):
                return []
            out += self.hosts.port_down(dpid, port)
        self.topology.changed()
        out += self._sync_switching()
        return self.state.count(out)

    def flow_removed(self, dpid: int, table: int, cookie_value: int, in_port: int | None, eth_src: int | None,
                     now_ns: int) -> list:
        """An ETH_SRC host entry timed out: the host is gone from there; stop forwarding to it."""
        return self.state.count(self.hosts.flow_removed(dpid, table, cookie_value, in_port, eth_src, now_ns))

    def switch_error(self, dpid: int, err_type: int, code: int, now_ns: int) -> list:
        self.state.counters["switch_errors"] += 1
        return []

    # ------------------------------------------------------------------ packet-ins

    def packet_ins(self, batch: PacketInBatch, now_ns: int) -> list:
        """A batch of packet-ins: topology probes, L2 learning copies and mirrored packets,
        decoded together by the capture decoder. Malformed ones are counted and skipped."""
        st = self.state
        counters = st.counters
        n = len(batch)
        if n == 0:
            return []
        counters["packet_ins"] += n
        pk = decode_frames(batch.datas, batch.ts_ns, batch.total_len)
        kind = (batch.cookie >> np.uint64(56)).astype(np.uint8)
        bad = (pk.flags & np.uint8(DecodeFlag.L2_TRUNCATED)) != 0
        nbad = int(bad.sum())
        if nbad:
            counters["packet_ins_malformed"] += nbad
        ok = ~bad
        known_dp = np.isin(batch.dpid, np.fromiter(st.switches, np.uint64, len(st.switches)))
        if not known_dp.all():
            counters["packet_ins_unknown_switch"] += int((~known_dp & ok).sum())
            ok &= known_dp
        out: list = []
        is_lldp = ok & (kind == CookieKind.LLDP)
        is_learn = ok & (kind == CookieKind.LEARN)
        is_mirror = ok & (kind == CookieKind.MIRROR)
        other = ok & ~(is_lldp | is_learn | is_mirror)
        if other.any():
            counters["packet_ins_unexpected"] += int(other.sum())
        for i in np.flatnonzero(is_lldp).tolist():
            counters["packet_ins_lldp"] += 1
            if self.topology.lldp_in(int(batch.dpid[i]), int(batch.in_port[i]), batch.datas[i], now_ns):
                out += self._sync_switching()
        if is_learn.any():
            counters["packet_ins_learn"] += int(is_learn.sum())
            li = np.flatnonzero(is_learn & is_unicast(pk.eth_src))
            if len(li):
                keys = np.stack([batch.dpid[li], batch.in_port[li].astype(np.uint64), pk.eth_src[li]], axis=1)
                uniq, first = np.unique(keys, axis=0, return_index=True)
                for j in np.argsort(first).tolist():
                    dpid, port, mac = (int(v) for v in uniq[j])
                    out += self.hosts.learn(mac, dpid, port, int(batch.ts_ns[li[first[j]]]))
        if is_mirror.any():
            mi = np.flatnonzero(is_mirror)
            counters["packet_ins_mirror"] += len(mi)
            self.mirror.file(pk.take(mi), batch.dpid[mi])
        return st.count(out)

    # ------------------------------------------------------------------ time

    def timer(self, now_ns: int) -> list:
        """Periodic work: topology probes and link expiry, decision requests, re-checks."""
        out: list = []
        probes, changed = self.topology.timer(now_ns)
        if changed:
            out += self._sync_switching()
        out += probes
        out += self.decisions.timer(now_ns)
        return self.state.count(out)

    # ------------------------------------------------------------------ decisions and policies

    def decision_made(self, mac: int, decision: Decision | None, now_ns: int) -> list:
        """The engine decided (``None``: not enough evidence yet)."""
        return self.state.count(self.decisions.decision_made(mac, decision, now_ns))

    def policy_reloaded(self, policy: Policy, now_ns: int) -> list:
        """Swap in a new (already validated) policy and move every device's rules to it."""
        self.rules.reloaded(policy)
        out: list = []
        for dev in self.state.devices.values():
            out += self.sync_device(dev)
        return self.state.count(out)

    def pools_resolved(self, mac: int, mapping: dict, now_ns: int) -> list:
        dev = self.rules.pools_resolved(mac, mapping)
        return [] if dev is None else self.state.count(self.sync_device(dev))

    # ------------------------------------------------------------------ persistence and views

    def restore(self, records, now_ns: int) -> None:
        """Devices from the inventory (see :meth:`DecisionManager.restore`)."""
        self.decisions.restore(records, now_ns)

    def snapshot(self) -> dict:
        devices = self.state.devices.values()
        by = Counter((d.category or "undecided", d.stage or "learning") for d in devices if not d.gateway)
        return {"switches": sorted(self.state.switches), "devices": len(self.state.devices),
                "learning": sum(1 for d in devices if d.mirroring),
                "links": len(self.state.links) // 2, "by_category_stage": dict(by),
                "counters": dict(self.state.counters)}
