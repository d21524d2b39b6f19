"""Mirroring and learning: the mirror entries and meter of each learning device, and the
mirrored packets filed into the learner's per-device buffers (in the classifier's time).

What a learning device sends of its identity protocols (DHCP and DHCPv6 requests, DNS
queries, mDNS, SSDP) is mirrored whole rather than cut to ``mirror_max_len``, through an
identity meter of its own (``identity_rate_pps``), so that a device busy with other traffic
cannot starve its own announcements; the learner keeps the identity records read from them
(:mod:`classifier.features.identity`).

A device whose decision is ``unknown`` or ``provisional`` stops being mirrored but keeps its
identity entries and meter (``Device.watch_dpid``): what it says about itself is still read,
and a new value re-opens its decision (the ``reopen`` callback, :meth:`DecisionManager.reopen`).
A device's identity values outlive its packet buffer; when it is mirrored or watched again
after its values left memory, the manager asks for them back from the inventory
(:class:`~controller_app.intents.LoadIdentity`) before reading new ones.

Owns ``Device.mirror_dpid / watch_dpid``, ``State.mirror_index``, ``State.time_origin_ns`` and
the learner's buffers.

Devices that were already running when they were first mirrored have often said what they
are long before; the manager asks them (:meth:`MirrorManager.probes`, an mDNS / DNS-SD query
out of their edge port, :mod:`controller_app.idprobe`), and their answers come back through
the same identity entries.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from classifier.engine.decision import PROVISIONAL, UNKNOWN
from classifier.features.identity import Kind, identity_from_frames
from controller_app.core.state import SEC, Device, State
from controller_app.idprobe import probe_frames
from controller_app.names import MAX_PENDING, harvest
from controller_app.intents import FlowAdd, FlowDelete, LoadIdentity, Match, MeterAdd, MeterDelete, Output, PacketOut
from controller_app.intents import OFPCML_NO_BUFFER, OFPP_CONTROLLER
from controller_app.pipeline import (FULL_MASK, IDENTITY_MATCHES, PRIO_MIRROR_DST, PRIO_MIRROR_IDENTITY, PRIO_MIRROR_SRC, CookieKind,
                                     Table, cookie)

_OWN_MDNS = frozenset((int(Kind.MDNS_SERVICE), int(Kind.MDNS_INSTANCE), int(Kind.MDNS_TXT)))
#: Seconds after the last identity probe during which its answer is still awaited: an ``unknown``
#: answer then is not taken as final (the probes are part of the learning period).
PROBE_ANSWER_GRACE_S = 5.0


def behaviour_flows(dpid: int, mac: int, meter: int, max_len: int) -> list[FlowAdd]:
    """A learning device's behaviour mirror entries: its traffic both ways, cut to ``max_len``,
    through its mirror meter."""
    c = cookie(CookieKind.MIRROR, mac)
    act = (Output(OFPP_CONTROLLER, max_len),)
    return [FlowAdd(dpid, Table.MIRROR, PRIO_MIRROR_SRC, Match(eth_src=mac), actions=act, meter=meter, cookie=c),
            FlowAdd(dpid, Table.MIRROR, PRIO_MIRROR_DST, Match(eth_dst=mac), actions=act, meter=meter, cookie=c)]


def identity_flows(dpid: int, mac: int, identity_meter: int) -> list[FlowAdd]:
    """What a device sends of its identity protocols, whole, through its identity meter."""
    c = cookie(CookieKind.MIRROR, mac)
    whole = (Output(OFPP_CONTROLLER, OFPCML_NO_BUFFER),)
    out = []
    for et, field, port in IDENTITY_MATCHES:
        prio = PRIO_MIRROR_IDENTITY if field == "udp_dst" else PRIO_MIRROR_IDENTITY - 1
        out.append(FlowAdd(dpid, Table.MIRROR, prio, Match(eth_src=mac, eth_type=et, ip_proto=17, **{field: port}),
                           actions=whole, meter=identity_meter, cookie=c))
    return out


def mirror_flows(dpid: int, mac: int, meter: int, max_len: int, identity_meter: int | None = None,
                 behaviour: bool = True) -> list[FlowAdd]:
    """A device's mirror entries: while it is learning (``behaviour``), its traffic both ways
    (:func:`behaviour_flows`); with ``identity_meter``, its identity protocols whole
    (:func:`identity_flows`) — alone for a device watched for identity (``behaviour=False``)."""
    out = behaviour_flows(dpid, mac, meter, max_len) if behaviour else []
    if identity_meter is not None:
        out += identity_flows(dpid, mac, identity_meter)
    return out


class MirrorManager:
    def __init__(self, state: State, reopen: Callable[[set, int], list] | None = None):
        self.state = state
        #: called with the MACs that said something new about themselves (and the time): the
        #: decision manager re-opens the decisions of watched devices among them
        self.reopen = reopen or (lambda macs, now_ns: [])

    # ------------------------------------------------------------------ rules

    def watches(self, dev: Device) -> bool:
        """Whether a device that is not mirrored keeps its identity entries: its decision is
        ``unknown`` or ``provisional`` (not final in its favour), so what it says about itself
        may still re-open it. Not with identity mirroring off, nor for gateways and pinned MACs."""
        st = self.state
        return (st.settings.identity_rate_pps > 0 and dev.stage in (UNKNOWN, PROVISIONAL) and not dev.gateway
                and not st.pinned(dev.mac))

    def sync(self, dev: Device) -> list:
        """The device's mirror entries and meters where they should be (a diff): all of them
        while it is learning (``mirroring``), its identity entries alone while :meth:`watches`
        says so, none otherwise. With ``max_mirrored`` devices mirrored already, a device that
        wants mirroring waits (in arrival order) for :meth:`promote` to give it a slot (a
        watched one keeps its identity entries meanwhile)."""
        st = self.state
        s = st.settings
        edge = st.edge(dev)
        full = edge is not None and dev.mirroring
        if not full:
            st.mirror_wait.pop(dev.mac, None)
        elif dev.mirror_dpid is None and len(st.mirrored) >= s.max_mirrored:
            if dev.mac not in st.mirror_wait:
                st.mirror_wait[dev.mac] = None
                st.counters["mirror_capped"] += 1
                st.tally["mirror_capped"] += 1
            full = False
        want_m = edge if full else None
        want_w = edge if not full and edge is not None and self.watches(dev) else None
        if (dev.mirror_dpid, dev.watch_dpid) == (want_m, want_w):
            return []
        target = want_m if want_m is not None else want_w
        here = dev.mirror_dpid if dev.mirror_dpid is not None else dev.watch_dpid
        out: list = []
        if here is not None and here != target:
            out += self.release(dev)
            here = None
        if target is None:
            return out
        identity = s.identity_rate_pps > 0
        if here is None:                                   # nothing here yet: meters, then entries
            if full:
                out.append(MeterAdd(target, dev.mirror_meter, s.mirror_rate_pps, s.mirror_burst, "pktps"))
            if identity:
                out.append(MeterAdd(target, dev.identity_meter, s.identity_rate_pps, s.identity_burst, "pktps"))
            out += mirror_flows(target, dev.mac, dev.mirror_meter, s.mirror_max_len,
                                dev.identity_meter if identity else None, behaviour=full)
            if dev.mac not in st.learner.identities:       # its values are in the inventory, if anywhere
                out.append(LoadIdentity(dev.mac))           # (asked again after a reconnect: merged, harmless)
        elif full:                                         # watched -> mirrored: the behaviour part
            out.append(MeterAdd(target, dev.mirror_meter, s.mirror_rate_pps, s.mirror_burst, "pktps"))
            out += behaviour_flows(target, dev.mac, dev.mirror_meter, s.mirror_max_len)
        else:                                              # mirrored -> watched: the identity part stays
            out += [FlowDelete(target, f.table, f.match, priority=f.priority)
                    for f in behaviour_flows(target, dev.mac, dev.mirror_meter, s.mirror_max_len)]
            out.append(MeterDelete(target, dev.mirror_meter))   # after the entries that used it
        if full:
            st.mirror_wait.pop(dev.mac, None)
            dev.mirror_since_ns = st.now_ns
            dev.probes_sent = 0
            dev.next_probe_ns = st.now_ns + SEC if s.identity_probes > 0 else None
            st.mirrored.add(dev.mac)
        else:
            st.mirrored.discard(dev.mac)
        dev.mirror_dpid, dev.watch_dpid = want_m, want_w
        st.mirror_index = None
        return out

    def release(self, dev: Device) -> list:
        """Remove the device's mirror (or identity) entries and meters (its buffer stays)."""
        st = self.state
        out: list = []
        here = dev.mirror_dpid if dev.mirror_dpid is not None else dev.watch_dpid
        if here is not None:
            if here in st.switches:
                out.append(FlowDelete(here, Table.MIRROR, cookie=cookie(CookieKind.MIRROR, dev.mac),
                                      cookie_mask=FULL_MASK))
                if dev.mirror_dpid is not None:
                    out.append(MeterDelete(here, dev.mirror_meter))
                if st.settings.identity_rate_pps > 0:
                    out.append(MeterDelete(here, dev.identity_meter))
            dev.mirror_dpid = dev.watch_dpid = None
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
            # after the last one, its answer is awaited PROBE_ANSWER_GRACE_S (see probing())
            dev.next_probe_ns = now_ns + int((s.identity_probe_interval if dev.probes_sent < s.identity_probes
                                              else PROBE_ANSWER_GRACE_S) * SEC)
            st.counters["identity_probes_sent"] += 1
            sent += 1
        return out

    def probing(self, dev: Device, now_ns: int) -> bool:
        """Whether the device's identity probes are still outstanding: it is mirrored, has not
        announced mDNS records of its own, and fewer than ``identity_probes`` were sent or the
        last one went out less than :data:`PROBE_ANSWER_GRACE_S` ago. The probes are part of
        its learning period: an ``unknown`` answer meanwhile is not final."""
        s = self.state.settings
        if s.identity_probes <= 0 or dev.mirror_dpid is None or dev.next_probe_ns is None or self.announced(dev.mac):
            return False
        return dev.probes_sent < s.identity_probes or now_ns < dev.next_probe_ns

    def announced(self, mac: int) -> bool:
        """Whether the device has sent mDNS records of its own (service types, instances, TXT)."""
        held = self.state.learner.identities.get(mac)
        return bool(held) and any(k in _OWN_MDNS for k, _ in held)

    def switch_gone(self, dpid: int) -> None:
        for dev in self.state.devices.values():
            if dev.mirror_dpid == dpid:
                dev.mirror_dpid = None
                self.state.mirrored.discard(dev.mac)
            if dev.watch_dpid == dpid:
                dev.watch_dpid = None
        self.state.mirror_index = None

    # ------------------------------------------------------------------ mirrored packets

    def _lookup(self, read: bool = False):
        """(sorted MACs, their switches) of the mirrored devices, or with ``read`` of every
        device whose identity protocols are read (mirrored or watched)."""
        st = self.state
        if st.mirror_index is None:
            def index(items):
                items = sorted(items)
                return (np.array([m for m, _ in items], dtype=np.uint64),
                        np.array([p for _, p in items], dtype=np.uint64))
            devs = st.devices.values()
            st.mirror_index = (index((d.mac, d.mirror_dpid) for d in devs if d.mirror_dpid is not None),
                               index((d.mac, d.mirror_dpid if d.mirror_dpid is not None else d.watch_dpid)
                                     for d in devs if d.mirror_dpid is not None or d.watch_dpid is not None))
        return st.mirror_index[1 if read else 0]

    def mirrored_here(self, macs: np.ndarray, dpids: np.ndarray, read: bool = False) -> np.ndarray:
        """Which of ``macs`` are mirrored (with ``read``: mirrored or watched for identity) on
        the switch in ``dpids`` (element-wise)."""
        lm, ld = self._lookup(read)
        if len(lm) == 0:
            return np.zeros(len(macs), bool)
        idx = np.minimum(np.searchsorted(lm, macs), len(lm) - 1)
        return (lm[idx] == macs) & (ld[idx] == dpids)

    def _identity(self, frames: list, pk, learning: bool = False) -> list:
        """Read the identity records of packets ``pk`` (with their bytes ``frames``), keep the new
        values; the devices that said something new may have their decision re-opened."""
        st = self.state
        if len(st.addresses) < MAX_PENDING:      # where the device is: the source of what it says
            ctl = self.controller_time
            st.addresses += [(mac, a, ctl(t)) for mac, a, t in harvest(pk)[:MAX_PENDING - len(st.addresses)]]
        problems: list = []
        recs = identity_from_frames(frames, pk, warnings=problems)
        st.counters["identity_records"] += len(recs)
        if learning:
            st.counters["identity_records_learning"] += len(recs)
        st.counters["identity_malformed"] += len(problems)
        dropped, fresh = st.learner.add_identity(recs)
        st.counters["identity_dropped"] += dropped
        return self.reopen(fresh, st.now_ns) if fresh else []

    def file(self, mp, dp: np.ndarray, frames=None) -> list:
        """Mirrored packets ``mp`` (decoded, one per packet-in) sent by the switches ``dp``:
        filed under every learning device they involve whose edge switch sent them. With
        ``frames`` (their bytes, in the same order), the identity evidence in what mirrored or
        watched devices sent is read and kept first: a watched device that said something new
        is mirrored again from this batch on (its decision re-opened). Returns the intents that
        re-opening asks for."""
        st = self.state
        n = len(mp)
        if st.time_origin_ns is None:
            st.time_origin_ns = int(mp.ts_ns.min())
        mp.ts_ns = self.classifier_time(mp.ts_ns)
        out: list = []
        said = self.mirrored_here(mp.eth_src, dp, read=True)
        marked = np.flatnonzero(said & (mp.payload_off != 0))
        if frames is not None and len(marked):
            out += self._identity([frames[i] for i in marked.tolist()], mp.take(marked))
        tx = self.mirrored_here(mp.eth_src, dp)
        rx = self.mirrored_here(mp.eth_dst, dp)
        filed = st.learner.add(mp, tx, rx)
        if filed == 0 and not said.any():
            st.counters["packet_ins_mirror_unowned"] += n
        for mac in np.unique(np.concatenate([mp.eth_src[tx], mp.eth_dst[rx]])).tolist():
            dev = st.devices.get(mac)
            if dev is not None:
                dev.last_ns = max(dev.last_ns, self.controller_time(st.learner.buffers[mac].last_ns))
        watched = said & ~tx
        if watched.any():                                   # watched devices' identity copies: seen
            for mac in np.unique(mp.eth_src[watched]).tolist():
                dev = st.devices.get(mac)
                if dev is not None:
                    t = int(mp.ts_ns[watched & (mp.eth_src == np.uint64(mac))].max())
                    dev.last_ns = max(dev.last_ns, self.controller_time(t))
        return out

    def identity_from_learning(self, lp, dp: np.ndarray, frames) -> list:
        """Learning copies ``lp`` (decoded) sent by the switches ``dp`` with their bytes
        ``frames``: the identity records in what devices mirrored or watched on that switch
        sent are kept, as from mirrored packets (copies of other sources are not read).
        Returns the intents that re-opening a watched device's decision asks for."""
        st = self.state
        mine = np.flatnonzero(self.mirrored_here(lp.eth_src, dp, read=True) & (lp.payload_off != 0))
        if len(mine) == 0:
            return []
        if st.time_origin_ns is None:
            st.time_origin_ns = int(lp.ts_ns[mine].min())
        sub = lp.take(mine)
        sub.ts_ns = self.classifier_time(sub.ts_ns)
        return self._identity([frames[i] for i in mine.tolist()], sub, learning=True)

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
