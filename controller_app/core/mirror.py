"""Mirroring and learning: the mirror entries and meter of each learning device, and the
mirrored packets filed into the learner's per-device buffers (in the classifier's time).

What a learning device sends of its identity protocols (DHCP and DHCPv6 requests, DNS
queries, mDNS, SSDP) is mirrored whole rather than cut to ``mirror_max_len``, through an
identity meter of its own (``identity_rate_pps``), so that a device busy with other traffic
cannot starve its own announcements; the learner keeps the identity records read from them
(:mod:`classifier.features.identity`).

A device's identity values outlive its packet buffer; when it is mirrored again after its
values left memory, the manager asks for them back from the inventory
(:class:`~controller_app.intents.LoadIdentity`) before reading new ones.

Owns ``Device.mirror_dpid``, ``State.mirror_index``, ``State.time_origin_ns`` and the
learner's buffers.

Devices that were already running when they were first mirrored have often said what they
are long before; the manager asks them (:meth:`MirrorManager.probes`, an mDNS / DNS-SD query
out of their edge port, :mod:`controller_app.idprobe`), and their answers come back through
the same identity entries.
"""

from __future__ import annotations

import numpy as np

from classifier.features.identity import Kind, identity_from_frames
from controller_app.core.state import SEC, Device, State
from controller_app.idprobe import probe_frames
from controller_app.intents import FlowAdd, FlowDelete, LoadIdentity, Match, MeterAdd, MeterDelete, Output, PacketOut
from controller_app.intents import OFPCML_NO_BUFFER, OFPP_CONTROLLER
from controller_app.pipeline import (FULL_MASK, IDENTITY_MATCHES, PRIO_MIRROR_DST, PRIO_MIRROR_IDENTITY, PRIO_MIRROR_SRC, CookieKind,
                                     Table, cookie)

_OWN_MDNS = frozenset((int(Kind.MDNS_SERVICE), int(Kind.MDNS_INSTANCE), int(Kind.MDNS_TXT)))


def mirror_flows(dpid: int, mac: int, meter: int, max_len: int, identity_meter: int | None = None) -> list[FlowAdd]:
    """A learning device's mirror entries: its traffic both ways, cut to ``max_len``, through
    its mirror meter; with ``identity_meter``, what it sends of its identity protocols whole,
    through that meter."""
    c = cookie(CookieKind.MIRROR, mac)
    act = (Output(OFPP_CONTROLLER, max_len),)
    out = [FlowAdd(dpid, Table.MIRROR, PRIO_MIRROR_SRC, Match(eth_src=mac), actions=act, meter=meter, cookie=c),
           FlowAdd(dpid, Table.MIRROR, PRIO_MIRROR_DST, Match(eth_dst=mac), actions=act, meter=meter, cookie=c)]
    if identity_meter is not None:
        whole = (Output(OFPP_CONTROLLER, OFPCML_NO_BUFFER),)
        for et, field, port in IDENTITY_MATCHES:
            prio = PRIO_MIRROR_IDENTITY if field == "udp_dst" else PRIO_MIRROR_IDENTITY - 1
            out.append(FlowAdd(dpid, Table.MIRROR, prio, Match(eth_src=mac, eth_type=et, ip_proto=17, **{field: port}),
                               actions=whole, meter=identity_meter, cookie=c))
    return out


class MirrorManager:
    def __init__(self, state: State):
        self.state = state

    # ------------------------------------------------------------------ rules

    def sync(self, dev: Device) -> list:
        """The device's mirror entries and meter where it should be mirrored (a diff). With
        ``max_mirrored`` devices mirrored already, a device that wants mirroring waits (in
        arrival order) for :meth:`promote` to give it a slot."""
        st = self.state
        want = st.edge(dev) if dev.mirroring else None
        if want is None:
            st.mirror_wait.pop(dev.mac, None)
        elif dev.mirror_dpid is None and len(st.mirrored) >= st.settings.max_mirrored:
            if dev.mac not in st.mirror_wait:
                st.mirror_wait[dev.mac] = None
                st.counters["mirror_capped"] += 1
                st.tally["mirror_capped"] += 1
            want = None
        if dev.mirror_dpid == want:
            return []
        out = self.release(dev)
        if want is not None:
            s = st.settings
            st.mirror_wait.pop(dev.mac, None)
            out.append(MeterAdd(want, dev.mirror_meter, s.mirror_rate_pps, s.mirror_burst, "pktps"))
            identity = s.identity_rate_pps > 0
            if identity:
                out.append(MeterAdd(want, dev.identity_meter, s.identity_rate_pps, s.identity_burst, "pktps"))
            out += mirror_flows(want, dev.mac, dev.mirror_meter, s.mirror_max_len,
                                dev.identity_meter if identity else None)
            if dev.mac not in st.learner.identities:       # its values are in the inventory, if anywhere
                st.learner.identities[dev.mac] = {}
                out.append(LoadIdentity(dev.mac))
            dev.mirror_dpid = want
            dev.mirror_since_ns = st.now_ns
            dev.probes_sent = 0
            dev.next_probe_ns = st.now_ns + SEC if s.identity_probes > 0 else None
            st.mirrored.add(dev.mac)
            st.mirror_index = None
        return out

    def release(self, dev: Device) -> list:
        """Remove the device's mirror entries and meter (its buffer stays)."""
        st = self.state
        out: list = []
        if dev.mirror_dpid is not None:
            if dev.mirror_dpid in st.switches:
                out.append(FlowDelete(dev.mirror_dpid, Table.MIRROR, cookie=cookie(CookieKind.MIRROR, dev.mac),
                                      cookie_mask=FULL_MASK))
                out.append(MeterDelete(dev.mirror_dpid, dev.mirror_meter))
                if st.settings.identity_rate_pps > 0:
                    out.append(MeterDelete(dev.mirror_dpid, dev.identity_meter))
            dev.mirror_dpid = None
            st.mirrored.discard(dev.mac)
            st.mirror_index = None
        return out

    def promote(self, now_ns: int) -> list:
        """Give free mirror slots to waiting devices, first come first served, skipping those
        not seen on their port any more (their entry idled out: probably gone)."""
        st = self.state
        room = st.settings.max_mirrored - len(st.mirrored)
        out: list = []
        if room <= 0 or not st.mirror_wait:
            return out
        for mac in list(st.mirror_wait):
            dev = st.devices.get(mac)
            if dev is None or not dev.mirroring or st.edge(dev) is None:
                del st.mirror_wait[mac]
                continue
            if not dev.located:
                continue
            out += self.sync(dev)
            room -= 1
            if room <= 0:
                break
        return out

    def probes(self, now_ns: int) -> list:
        """Identity probes (:mod:`controller_app.idprobe`) out of the edge ports of mirrored
        devices that are due one: ``identity_probes`` of them, ``identity_probe_interval`` apart,
        the first a second after the mirror entries went in, none once the device has announced
        mDNS services of its own (it has said what it asked). At most
        ``identity_probes_per_tick`` devices a tick, those waiting longest first."""
        st = self.state
        s = st.settings
        if s.identity_probes <= 0:
            return []
        due = [d for d in st.devices.values()
               if d.next_probe_ns is not None and d.next_probe_ns <= now_ns]
        if not due:
            return []
        due.sort(key=lambda d: d.next_probe_ns)
        out: list = []
        sent = 0
        frames = probe_frames()
        for dev in due:
            if (dev.mirror_dpid is None or dev.mirror_dpid != st.edge(dev) or dev.port is None
                    or dev.probes_sent >= s.identity_probes or self.announced(dev.mac)):
                dev.next_probe_ns = None
                continue
            if sent >= s.identity_probes_per_tick:
                st.counters["identity_probes_deferred"] += 1
                continue
            out += [PacketOut(dev.mirror_dpid, f, dev.port) for f in frames]
            dev.probes_sent += 1
            dev.next_probe_ns = (now_ns + int(s.identity_probe_interval * SEC)
                                 if dev.probes_sent < s.identity_probes else None)
            st.counters["identity_probes_sent"] += 1
            sent += 1
        return out

    def announced(self, mac: int) -> bool:
        """Whether the device has sent mDNS records of its own (service types, instances, TXT)."""
        held = self.state.learner.identities.get(mac)
        return bool(held) and any(k in _OWN_MDNS for k, _ in held)

    def switch_gone(self, dpid: int) -> None:
        for dev in self.state.devices.values():
            if dev.mirror_dpid == dpid:
                dev.mirror_dpid = None
                self.state.mirrored.discard(dev.mac)
        self.state.mirror_index = None

    # ------------------------------------------------------------------ mirrored packets

    def _lookup(self):
        st = self.state
        if st.mirror_index is None:
            items = sorted((d.mac, d.mirror_dpid) for d in st.devices.values() if d.mirror_dpid is not None)
            macs = np.array([m for m, _ in items], dtype=np.uint64)
            dpids = np.array([p for _, p in items], dtype=np.uint64)
            st.mirror_index = (macs, dpids)
        return st.mirror_index

    def mirrored_here(self, macs: np.ndarray, dpids: np.ndarray) -> np.ndarray:
        """Which of ``macs`` are mirrored on the switch in ``dpids`` (element-wise)."""
        lm, ld = self._lookup()
        if len(lm) == 0:
            return np.zeros(len(macs), bool)
        idx = np.minimum(np.searchsorted(lm, macs), len(lm) - 1)
        return (lm[idx] == macs) & (ld[idx] == dpids)

    def file(self, mp, dp: np.ndarray, frames=None) -> None:
        """Mirrored packets ``mp`` (decoded, one per packet-in) sent by the switches ``dp``:
        filed under every learning device they involve whose edge switch sent them. With
        ``frames`` (their bytes, in the same order), the identity evidence in what those
        devices sent is read and kept too."""
        st = self.state
        n = len(mp)
        if st.time_origin_ns is None:
            st.time_origin_ns = int(mp.ts_ns.min())
        mp.ts_ns = self.classifier_time(mp.ts_ns)
        tx = self.mirrored_here(mp.eth_src, dp)
        rx = self.mirrored_here(mp.eth_dst, dp)
        filed = st.learner.add(mp, tx, rx)
        if filed == 0:
            st.counters["packet_ins_mirror_unowned"] += n
        marked = np.flatnonzero(tx & (mp.payload_off != 0))
        if frames is not None and len(marked):
            problems: list = []
            recs = identity_from_frames([frames[i] for i in marked.tolist()], mp.take(marked), warnings=problems)
            st.counters["identity_records"] += len(recs)
            st.counters["identity_malformed"] += len(problems)
            st.counters["identity_dropped"] += st.learner.add_identity(recs)[0]
        for mac in np.unique(np.concatenate([mp.eth_src[tx], mp.eth_dst[rx]])).tolist():
            dev = st.devices.get(mac)
            if dev is not None:
                dev.last_ns = max(dev.last_ns, self.controller_time(st.learner.buffers[mac].last_ns))

    def identity_from_learning(self, lp, dp: np.ndarray, frames) -> None:
        """Learning copies ``lp`` (decoded) sent by the switches ``dp`` with their bytes
        ``frames``: the identity records in what devices mirrored on that switch sent are kept,
        as from mirrored packets (copies of other sources are not read)."""
        st = self.state
        mine = np.flatnonzero(self.mirrored_here(lp.eth_src, dp) & (lp.payload_off != 0))
        if len(mine) == 0:
            return
        if st.time_origin_ns is None:
            st.time_origin_ns = int(lp.ts_ns[mine].min())
        sub = lp.take(mine)
        sub.ts_ns = self.classifier_time(sub.ts_ns)
        problems: list = []
        recs = identity_from_frames([frames[i] for i in mine.tolist()], sub, warnings=problems)
        st.counters["identity_records"] += len(recs)
        st.counters["identity_records_learning"] += len(recs)
        st.counters["identity_malformed"] += len(problems)
        st.counters["identity_dropped"] += st.learner.add_identity(recs)[0]

    # ------------------------------------------------------------------ the classifier's time

    def classifier_time(self, ts_ns):
        """Controller time -> the time the classifier is given (packet timestamps, "now").

        With ``time_scale`` K != 1 (replays whose time was compressed K times), ``t0 + (t - t0) * K``
        with t0 the first mirrored packet's arrival: segments, session idle timeouts and
        intervals are then measured in the replayed capture's own time. Every other clock of
        the controller (decision interval, re-checks, LLDP, idle timeouts) stays real time."""
        k = self.state.settings.time_scale
        t0 = self.state.time_origin_ns
        if k == 1.0 or t0 is None:
            return ts_ns
        if isinstance(ts_ns, np.ndarray):
            return t0 + np.rint((ts_ns - t0).astype(np.float64) * k).astype(np.int64)
        return t0 + int(round((int(ts_ns) - t0) * k))

    def controller_time(self, ts_ns: int) -> int:
        """The inverse of :meth:`classifier_time` (for a buffer's last packet time)."""
        k = self.state.settings.time_scale
        t0 = self.state.time_origin_ns
        if k == 1.0 or t0 is None:
            return ts_ns
        return t0 + int(round((int(ts_ns) - t0) / k))
