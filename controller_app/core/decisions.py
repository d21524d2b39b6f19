"""Decisions and re-checks: when a learning device is ready to be classified, what a decision
changes (stop mirroring once it is final, enforce), re-checks of decided devices (unknown ones
within minutes), decisions re-opened by what a device says about itself, and devices restored
from the inventory.

Owns ``Device.category / confidence / stage / model / claims_only / enforced / mirroring /
next_check_ns / recheck_until_ns / last_decide_ns / thin_answers``, ``State.reopened`` and the
learner buffers' ``prepared``.
"""

from __future__ import annotations

from typing import Callable

from classifier.engine.decision import CONFIRMED, UNKNOWN, Decision

from controller_app.core.mirror import MirrorManager
from controller_app.core.state import SEC, Device, State
from controller_app.intents import DecideRequest, PrepareWindow


class DecisionManager:
    def __init__(self, state: State, mirror: MirrorManager, sync_device: Callable[[Device], list]):
        self.state = state
        self.mirror = mirror
        self.sync_device = sync_device

    def timer(self, now_ns: int) -> list:
        """Decision requests for learning devices that are ready; re-checks start and end.

        A device is ready with ``decide_min_packets`` mirrored packets, some of them new since
        its last request (or a request that could not be queued), and ``decide_interval``
        after its last request; a device whose decision a new identity value re-opened
        (:meth:`reopen`) is ready with any packet. At most ``max_pending_decisions`` requests
        are outstanding: the ready devices asked longest ago (never first) go first, the others
        next time. A request unanswered after ``decide_timeout`` is assumed lost and asked again.
        With ``prepare_every`` set, devices whose segment window moved are prepared (:meth:`prepare`),
        and one whose request falls due at that tick is asked at the next, after its preparation."""
        st = self.state
        s = st.settings
        out: list = []
        for mac, (sent, _) in list(st.deciding.items()):
            if now_ns - sent > s.decide_timeout * SEC:
                self.dropped(mac, failed=True)
                st.counters["decide_timeouts"] += 1
        ready = []
        now_c = self.mirror.classifier_time(now_ns)
        for mac, buf in st.learner.buffers.items():
            dev = st.devices.get(mac)
            if dev is None or not dev.mirroring or mac in st.deciding:
                continue
            if mac not in st.reopened and ((buf.new == 0 and not dev.decide_retry) or buf.n < s.decide_min_packets):
                continue
            if dev.last_decide_ns is not None and now_ns - dev.last_decide_ns < s.decide_interval * SEC:
                continue
            if s.prepare_every > 0 and self.moved(buf, now_c) is not None:
                st.counters["decide_after_prepare"] += 1
                continue            # its new window is prepared at this tick, and it is asked at the next
            ready.append(dev)
        room = s.max_pending_decisions - len(st.deciding)
        if len(ready) > room:
            st.counters["decide_deferred"] += len(ready) - max(room, 0)
            ready.sort(key=lambda d: -1 if d.last_decide_ns is None else d.last_decide_ns)
            ready = ready[:max(room, 0)]
        for dev in ready:
            st.deciding[dev.mac] = (now_ns, dev.last_decide_ns)
            dev.last_decide_ns = now_ns
            dev.decide_retry = False
            st.reopened.discard(dev.mac)
            st.learner.buffers[dev.mac].new = 0
            out.append(DecideRequest(dev.mac, st.learner.packets(dev.mac), self.mirror.classifier_time(now_ns),
                                     st.learner.identity(dev.mac), st.learner.sessions(dev.mac)))
        if s.prepare_every > 0:
            out += self.prepare(now_c)
        for dev in st.devices.values():
            if not dev.attached:
                continue
            if dev.next_check_ns is not None and not dev.mirroring and now_ns >= dev.next_check_ns:
                st.counters["rechecks"] += 1
                if dev.stage == UNKNOWN:
                    st.counters["unknown_rechecks"] += 1
                out += self.recheck(dev, now_ns)
            elif dev.recheck_until_ns is not None and dev.mirroring and now_ns >= dev.recheck_until_ns:
                out += self.stop_learning(dev, now_ns)
        return out

    def moved(self, buf, now: int) -> tuple | None:
        """(first packet time, segment count) of a device's buffer at classifier time ``now`` when
        its window has moved since it was last prepared (a segment completed, or the buffer
        dropped its oldest packets, which moves the segments), and it has ``prepare_from`` complete
        segments; else None. Segments are counted from the device's first buffered packet, as the
        engine counts them; where the two differ (a late packet older than the first), the
        decision just computes the vote itself."""
        s = self.state.settings
        k = (now - buf.first_ns) // int(s.prepare_every * SEC)
        if k < s.prepare_from:
            return None
        at = (buf.first_ns, k)
        return at if at != buf.prepared else None

    def prepare(self, now: int) -> list:
        """Window preparations at classifier time ``now``: a learning device whose segment window
        has moved (:meth:`moved`: a segment completed, or its buffer dropped its oldest packets)
        has the engine vote on the new window at
        once, so its next decision finds the vote ready. A device whose decision falls due at that
        tick is asked at the next one (:meth:`timer`), after the vote; one whose decision is
        outstanding is prepared at a later tick, once that decision has come back."""
        st = self.state
        out: list = []
        for mac, buf in st.learner.buffers.items():
            at = self.moved(buf, now)
            if at is None:
                continue
            dev = st.devices.get(mac)
            if dev is None or not dev.mirroring or mac in st.deciding:
                continue
            buf.prepared = at
            st.counters["windows_prepared"] += 1
            out.append(PrepareWindow(mac, st.learner.packets(mac), now))
        return out

    def dropped(self, mac: int, failed: bool = False) -> None:
        """A decision request that could not be queued (or failed, or was lost): the device is
        asked again — at the next tick, or after ``decide_interval`` when it ``failed``."""
        st = self.state
        sent = st.deciding.pop(mac, None)
        dev = st.devices.get(mac)
        if dev is None:
            return
        if sent is not None and not failed:
            dev.last_decide_ns = sent[1]
        dev.decide_retry = True
        st.counters["decide_requeued" if not failed else "decide_failed"] += 1

    def recheck(self, dev: Device, now_ns: int) -> list:
        """Mirror a decided device again for at most ``recheck_window`` (a re-check, or the
        re-examination of an unknown device)."""
        dev.mirroring = True
        dev.next_check_ns = None
        dev.recheck_until_ns = now_ns + int(self.state.settings.recheck_window * SEC)
        return self.sync_device(dev)

    def reopen(self, macs, now_ns: int) -> list:
        """Devices that said something new about themselves (a new distinct identity value): a
        watched one (decision ``unknown`` or ``provisional``, not mirrored) has its decision
        re-opened — it is mirrored again as for a re-check and asked at the next tick with
        whatever packets it has (after ``decide_interval`` since its last request), on all its
        identity values. Devices already learning are asked anyway."""
        st = self.state
        out: list = []
        for mac in macs:
            dev = st.devices.get(mac)
            if dev is None or dev.mirroring or dev.watch_dpid is None:
                continue
            st.counters["identity_reopened"] += 1
            st.reopened.add(mac)
            out += self.recheck(dev, now_ns)
        return out

    def stop_learning(self, dev: Device, now_ns: int) -> list:
        """Mirroring ends (a final decision, or a re-check's window): the next re-check after
        ``unknown_recheck_interval`` for an unknown device or one confirmed on its own claims alone,
        ``recheck_interval`` for the others.
        Its packets go; its identity values stay in memory while it is watched (unknown,
        provisional), else they are left to the inventory."""
        st = self.state
        s = st.settings
        dev.mirroring = False
        dev.recheck_until_ns = None
        interval = s.unknown_recheck_interval if self.soon(dev) else s.recheck_interval
        dev.next_check_ns = now_ns + int(interval * SEC)
        st.reopened.discard(dev.mac)
        if self.mirror.watches(dev):
            st.learner.drop_packets(dev.mac)
        else:
            st.learner.drop(dev.mac)
        return self.sync_device(dev)

    @staticmethod
    def soon(dev: Device) -> bool:
        """Whether the device is re-examined after ``unknown_recheck_interval`` rather than
        ``recheck_interval``: an unknown one, and one whose decision rests on its own claims alone
        (its treatment is held to the intersection with the unknown action until its behaviour
        agrees, which only a re-examination can show)."""
        return dev.stage == UNKNOWN or bool(dev.claims_only)

    def defers(self, dev: Device | None, decision: Decision | None, now_ns: int) -> bool:
        """Whether ``decision`` is an ``unknown`` answer given while the device's identity probes
        are still outstanding (:meth:`MirrorManager.probing`): not final then, the probes being
        part of its learning period."""
        return (dev is not None and decision is not None and decision.stage == UNKNOWN and dev.mirroring
                and self.mirror.probing(dev, now_ns))

    def decision_made(self, mac: int, decision: Decision | None, now_ns: int) -> list:
        """The engine decided (``None``: not enough evidence yet). An ``unknown`` answer while
        the device's identity probes are outstanding counts as "not enough evidence yet", and
        the device is asked again after ``decide_interval``, new packets or not."""
        st = self.state
        st.deciding.pop(mac, None)
        dev = st.devices.get(mac)
        if dev is None:
            return []
        if decision is None:
            dev.thin_answers += 1
            return []
        if self.defers(dev, decision, now_ns):
            dev.thin_answers += 1
            dev.decide_retry = True
            st.counters["unknown_deferred"] += 1
            return []
        dev.thin_answers = 0
        st.counters["decisions"] += 1
        dev.category = decision.category
        dev.confidence = float(decision.confidence)
        dev.stage = decision.stage
        dev.model = decision.model
        dev.claims_only = bool(getattr(decision, "identity_alone", False))
        if st.policy.enforcement(dev.category, dev.confidence, dev.stage, dev.claims_only) is not None:
            dev.enforced = (dev.category, dev.confidence, dev.stage, dev.claims_only)
        if decision.stage in (CONFIRMED, UNKNOWN) and dev.mirroring:
            return self.stop_learning(dev, now_ns)
        if not dev.mirroring and not self.mirror.watches(dev):
            st.learner.drop(dev.mac)        # a late answer confirmed a watched device: values to the inventory
        return self.sync_device(dev)

    def restore(self, records, now_ns: int) -> list:
        """Devices from the inventory (dicts with mac int, dpid, port, category, confidence,
        stage, model, first/last seen). Only final decisions (and overridden MACs) are
        restored; a device seen within ``host_timeout`` is attached where it was, so its rules
        are installed as soon as its switch connects; the others are parked until they are
        seen again. Final decisions are re-checked after ``recheck_interval`` (unknown ones
        after ``unknown_recheck_interval``). Returns the restored devices."""
        st = self.state
        s = st.settings
        out = []
        for r in records:
            mac = int(r["mac"])
            final = r.get("stage") in (CONFIRMED, UNKNOWN)
            if not final and not st.pinned(mac):
                st.counters["restore_skipped"] += 1
                continue
            dev = st.devices.get(mac) or st.new_device(mac, int(r.get("first_seen_ns") or now_ns), slot=False)
            dev.first_ns = int(r.get("first_seen_ns") or now_ns)
            dev.last_ns = int(r.get("last_seen_ns") or now_ns)
            if final:
                dev.category = r["category"]
                dev.confidence = float(r.get("confidence") or 0.0)
                dev.stage = r["stage"]
                dev.model = r.get("model")
                dev.claims_only = bool(r.get("claims_only"))
                if st.policy.enforcement(dev.category, dev.confidence, dev.stage, dev.claims_only) is not None:
                    dev.enforced = (dev.category, dev.confidence, dev.stage, dev.claims_only)
                dev.mirroring = False
                dev.next_check_ns = now_ns + int((s.unknown_recheck_interval if self.soon(dev)
                                                  else s.recheck_interval) * SEC)
            if dev.attached:
                st.detach(dev)
            dev.dpid, dev.port = r.get("dpid"), r.get("port")
            if dev.dpid is not None and now_ns - dev.last_ns <= s.host_timeout * SEC:
                if dev.slot is None:
                    dev.slot = st.alloc_slot()
                st.attach(dev, dev.dpid, dev.port)
            else:
                st.free_slot(dev)
            out.append(dev)
        return out
