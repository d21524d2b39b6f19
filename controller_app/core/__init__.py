"""The controller's pure core: events in, flow intents out.

Nothing here touches a socket, a thread, a clock or a framework: every handler takes the
event (and the current time) and returns a list of intents (:mod:`controller_app.intents`).
The os-ken shell turns those into OpenFlow messages; the tests apply them to a fake flow
table and ask what happens to packets.

:class:`Core` is the façade the shell calls. The work is done by managers over one shared
:class:`~controller_app.core.state.State` (as Faucet splits its valve into managers):

* :mod:`~controller_app.core.topology` — switches, table defaults, LLDP links, spanning tree, flooding;
* :mod:`~controller_app.core.hosts` — L2 hosts: learning, forwarding entries, host caps and learning bans;
* :mod:`~controller_app.core.mirror` — mirror entries and meters (at most ``max_mirrored``), mirrored packets;
* :mod:`~controller_app.core.rules` — policy entries and rate meters, pools, reloads;
* :mod:`~controller_app.core.decisions` — decision requests (bounded, never dropped), decisions, re-checks, restore.

The façade also runs the devices' life cycle across the managers: a device unseen for
``host_timeout`` gives back every switch resource it holds (entries, meters, its slot); an
undecided one is then forgotten, one with a final decision (or an override, or a gateway) is
*parked*: kept, with its decision, until it is seen again.

The pipeline's tables, cookies and priorities are named in :mod:`controller_app.pipeline`.
Forwarding outputs happen in ETH_DST's apply-actions, *before* LEARN and MIRROR: a meter that
drops a copy cannot drop the forwarded packet (an OpenFlow 1.3 meter is an instruction on the
whole packet, so it must never sit on the forwarding path). A blocked device's packets skip
forwarding and go straight to MIRROR, so a device still being learned is seen even when blocked.
"""

from __future__ import annotations

from collections import Counter

import logging

import numpy as np

from classifier.capture.decode import decode_frames
from classifier.capture.packets import DecodeFlag
from classifier.engine.decision import Decision
from classifier.features.devices import is_unicast
from classifier.features.identity import KIND_CODES, KINDS

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

LOG = logging.getLogger("controller_app.core")

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
        self.mirror.reopen = self.decisions.reopen

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
        """A switch connected (or reconnected): clean slate, defaults, then every rule it should
        hold (for the devices attached to it; parked ones get theirs when they are seen again)."""
        self.state.now_ns = now_ns
        down = self.switch_down(dpid, now_ns) if dpid in self.state.switches else []
        out = self.topology.switch_added(dpid, ports)
        self.topology.changed()
        out += self._sync_switching()
        for dev in self.state.devices.values():
            if dev.dpid == dpid and dev.attached:
                out += self.sync_device(dev)
        out += self.topology.probes(dpid, sorted(self.state.switches[dpid].ports))
        return down + self.state.count(out)

    def switch_down(self, dpid: int, now_ns: int) -> list:
        """A switch disconnected: forget what it held; its devices keep their state and get
        their rules back when it reconnects."""
        self.state.now_ns = now_ns
        if self.topology.switch_removed(dpid) is None:
            return []
        self.mirror.switch_gone(dpid)
        self.rules.switch_gone(dpid)
        self.hosts.switch_gone(dpid)
        self.topology.changed()
        return self.state.count(self._sync_switching())

    def port_changed(self, dpid: int, port: int, up: bool, now_ns: int) -> list:
        """A port came up or went down. Only what the port touches changes: the switch's flood
        entry, the hosts on that port, a learning ban on it; the whole topology only when the
        port carried a link."""
        self.state.now_ns = now_ns
        if dpid not in self.state.switches or port >= OFPP_MAX:
            return []
        out: list = []
        if up:
            probes = self.topology.port_up(dpid, port)
            if probes is None:
                return []
            out += self.topology.sync_switch(dpid)
            out += probes
        else:
            was_up, link_gone = self.topology.port_down(dpid, port)
            if not was_up:
                return []
            out += self.hosts.port_down(dpid, port)
            out += self.hosts.lift_bans(now_ns, dpid, port)
            if link_gone:
                self.topology.changed()
                out += self._sync_switching()
            else:
                out += self.topology.sync_switch(dpid)
        return self.state.count(out)

    def flow_removed(self, dpid: int, table: int, cookie_value: int, in_port: int | None, eth_src: int | None,
                     now_ns: int) -> list:
        """An ETH_SRC host entry timed out: the host is gone from there; stop forwarding to it."""
        self.state.now_ns = now_ns
        return self.state.count(self.hosts.flow_removed(dpid, table, cookie_value, in_port, eth_src, now_ns))

    def switch_error(self, dpid: int, err_type: int, code: int, now_ns: int) -> list:
        self.state.counters["switch_errors"] += 1
        return []

    # ------------------------------------------------------------------ packet-ins

    def packet_ins(self, batch: PacketInBatch, now_ns: int) -> list:
        """A batch of packet-ins: topology probes, L2 learning copies and mirrored packets,
        decoded together by the capture decoder. Malformed ones are counted and skipped."""
        st = self.state
        st.now_ns = now_ns
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
                # a device's first identity messages (its DHCP request, say) come as learning
                # copies, before its mirror entries: read them for the device now learning
                out += self.mirror.identity_from_learning(pk.take(li), batch.dpid[li],
                                                          [batch.datas[i] for i in li.tolist()])
        if is_mirror.any():
            mi = np.flatnonzero(is_mirror)
            counters["packet_ins_mirror"] += len(mi)
            out += self.mirror.file(pk.take(mi), batch.dpid[mi], [batch.datas[i] for i in mi.tolist()])
        return st.count(out)

    # ------------------------------------------------------------------ time

    def timer(self, now_ns: int) -> list:
        """Periodic work: topology probes and link expiry, learning bans that end, devices unseen
        for ``host_timeout``, free mirror slots, decision requests, re-checks."""
        st = self.state
        st.now_ns = now_ns
        out: list = []
        probes, changed = self.topology.timer(now_ns)
        if changed:
            out += self._sync_switching()
        out += probes
        out += self.hosts.lift_bans(now_ns)
        out += self._expire(now_ns)
        out += self.mirror.promote(now_ns)
        out += self.mirror.probes(now_ns)
        out += self.decisions.timer(now_ns)
        out += self.rules.retry()
        self._log(now_ns)
        return st.count(out)

    def _expire(self, now_ns: int) -> list:
        """Attached devices unseen for ``host_timeout`` give back their switch resources.
        "Unseen" needs evidence: a mirrored device's copies stop (mirroring shows all its
        traffic), any other's ETH_SRC entry idled out (it is no longer located)."""
        st = self.state
        limit = now_ns - int(st.settings.host_timeout * SEC)
        idle = []
        for macs in st.port_hosts.values():
            for mac in macs:
                dev = st.devices[mac]
                if dev.mirror_dpid is not None:
                    if max(dev.last_ns, dev.mirror_since_ns or 0) < limit:
                        idle.append(dev)
                elif not dev.located and dev.last_ns < limit:
                    idle.append(dev)
        out: list = []
        for dev in idle:
            out += self.forget(dev) if not st.keeps(dev) else self.park(dev)
        return out

    def _release(self, dev: Device) -> list:
        """Every switch resource of the device: mirror and policy entries and meters, host entries,
        its place under the caps, its slot (meter ids)."""
        st = self.state
        out = self.mirror.release(dev) + self.rules.release(dev) + self.hosts.release(dev)
        st.mirror_wait.pop(dev.mac, None)
        st.free_slot(dev)
        return out

    def forget(self, dev: Device) -> list:
        """An undecided device unseen for ``host_timeout``: gone, with its buffer."""
        st = self.state
        out = self._release(dev)
        st.learner.drop(dev.mac)
        st.deciding.pop(dev.mac, None)
        st.reopened.discard(dev.mac)
        st.pools_retry.discard(dev.mac)
        del st.devices[dev.mac]
        st.forgotten.append(dev.mac)
        st.counters["devices_forgotten"] += 1
        st.tally["forgotten"] += 1
        return out

    def park(self, dev: Device) -> list:
        """A decided device unseen for ``host_timeout``: kept with its decision, holding nothing
        on any switch until it is seen again (a re-check under way ends). Its identity values
        leave memory (the inventory keeps them; they come back when it is read again)."""
        st = self.state
        out = self._release(dev)
        if dev.mirroring:
            dev.mirroring = False
            dev.recheck_until_ns = None
            if dev.next_check_ns is None:
                dev.next_check_ns = st.now_ns
        st.learner.drop(dev.mac)
        st.reopened.discard(dev.mac)
        st.counters["devices_parked"] += 1
        st.tally["parked"] += 1
        return out

    def _log(self, now_ns: int) -> None:
        """One line per ``cap_log_interval`` about refused learning and expired devices."""
        st = self.state
        if not st.tally or now_ns < st.next_log_ns:
            return
        st.next_log_ns = now_ns + int(st.settings.cap_log_interval * SEC)
        span = "so far" if st.last_log_ns is None else f"last {(now_ns - st.last_log_ns) / SEC:.0f} s"
        st.last_log_ns = now_ns
        t = st.tally
        where = sorted(st.capped_at, key=lambda k: (k[0], -1 if k[1] is None else k[1]))
        level = logging.WARNING if t["refused_port"] or t["refused_switch"] or t["mirror_capped"] else logging.INFO
        LOG.log(level, "bounded learning, %s: %d new MACs refused at the per-port cap, %d at the per-switch "
                    "cap%s; %d devices waiting for a mirror slot (%d mirrored, cap %d); %d idle devices forgotten, "
                    "%d parked, %d returned", span, t["refused_port"], t["refused_switch"],
                    (" (at " + ", ".join(f"{d:016x}" + ("" if p is None else f":{p}") for d, p in where[:5])
                     + (", ..." if len(where) > 5 else "") + ")") if where else "",
                    len(st.mirror_wait), len(st.mirrored), st.settings.max_mirrored, t["forgotten"], t["parked"],
                    t["returned"])
        st.tally.clear()
        st.capped_at.clear()

    # ------------------------------------------------------------------ decisions and policies

    def decision_made(self, mac: int, decision: Decision | None, now_ns: int) -> list:
        """The engine decided (``None``: not enough evidence yet)."""
        self.state.now_ns = now_ns
        return self.state.count(self.decisions.decision_made(mac, decision, now_ns))

    def defers(self, mac: int, decision: Decision | None, now_ns: int) -> bool:
        """Whether :meth:`decision_made` will not take ``decision`` as made: an ``unknown``
        answer while the device's identity probes are outstanding (see
        :meth:`DecisionManager.defers`); the shell then neither records nor counts it."""
        return self.decisions.defers(self.state.devices.get(mac), decision, now_ns)

    def decide_dropped(self, mac: int, now_ns: int, failed: bool = False) -> list:
        """A decision request the shell could not queue (``failed``: the engine raised): the
        device is asked again later, never dropped."""
        self.decisions.dropped(mac, failed)
        return []

    def pools_dropped(self, mac: int, now_ns: int) -> list:
        """A pool look-up the shell could not queue: asked again at the next tick."""
        self.rules.pools_dropped(mac)
        return []

    def policy_reloaded(self, policy: Policy, now_ns: int) -> list:
        """Swap in a new (already validated) policy and move every device's rules to it."""
        st = self.state
        st.now_ns = now_ns
        self.rules.reloaded(policy)
        out: list = []
        for dev in list(st.devices.values()):
            if not dev.attached and not st.keeps(dev):
                out += self.forget(dev)          # parked for an override the policy no longer has
            else:
                out += self.sync_device(dev)
        return st.count(out)

    def pools_resolved(self, mac: int, mapping: dict, now_ns: int) -> list:
        self.state.now_ns = now_ns
        dev = self.rules.pools_resolved(mac, mapping)
        return [] if dev is None else self.state.count(self.sync_device(dev))

    # ------------------------------------------------------------------ persistence and views

    def restore(self, records, now_ns: int) -> None:
        """Devices from the inventory (see :meth:`DecisionManager.restore`)."""
        self.state.now_ns = now_ns
        self.decisions.restore(records, now_ns)

    def identity_loaded(self, mac: int, rows, now_ns: int) -> int:
        """The inventory's identity values for ``mac`` (:class:`~controller_app.intents.LoadIdentity`):
        ``(first seen ns, kind name, value)``, in real time; they join those held (the classifier
        sees them in its own time). Kinds this version does not know are skipped. Returns the
        values added."""
        self.state.now_ns = now_ns
        mirror = self.mirror
        codes = [(mirror.classifier_time(int(t)), KIND_CODES.get(kind), value) for t, kind, value in rows]
        return self.state.learner.load_identity(mac, [r for r in codes if r[1] is not None])

    def take_identity(self) -> list[tuple[int, str, str, int]]:
        """Identity values kept since the last call, for the inventory: ``(mac, kind name, value,
        first seen ns)`` in real time (not the classifier's), of devices still known."""
        st = self.state
        devices = st.devices
        ctl = self.mirror.controller_time
        return [(mac, KINDS[kind], value, ctl(t)) for mac, kind, value, t in st.learner.take_pending()
                if mac in devices]

    def untake_identity(self, rows) -> None:
        """Values :meth:`take_identity` gave that could not be written: queued again, first."""
        cls = self.mirror.classifier_time
        self.state.learner.pending[:0] = [(mac, KIND_CODES[kind], value, cls(t)) for mac, kind, value, t in rows]

    def take_addresses(self) -> list[tuple[int, str, int]]:
        """``(mac, address, last seen ns)`` read from devices' identity packets since the last call
        (:func:`controller_app.names.harvest`), of devices still known."""
        out, self.state.addresses = self.state.addresses, []
        devices = self.state.devices
        return [r for r in out if r[0] in devices]

    def take_forgotten(self) -> list[int]:
        """MACs forgotten since the last call (the shell removes them from the inventory)."""
        out, self.state.forgotten = self.state.forgotten, []
        return out

    def snapshot(self) -> dict:
        st = self.state
        devices = st.devices.values()
        by = Counter((d.category or "undecided", d.stage or "learning") for d in devices if not d.gateway)
        return {"switches": sorted(st.switches), "devices": len(st.devices),
                "learning": sum(1 for d in devices if d.mirroring),
                "links": len(st.links) // 2, "by_category_stage": dict(by),
                "counters": dict(st.counters), "mirrored": len(st.mirrored), "mirror_waiting": len(st.mirror_wait),
                "parked": sum(1 for d in devices if not d.attached), "decisions_pending": len(st.deciding),
                "slots": st.slots_in_use()}
