"""Decisions and re-checks: when a learning device is ready to be classified, what a decision
changes (stop mirroring once it is final, enforce), re-checks of confirmed devices, and
devices restored from the inventory.

Owns ``Device.category / confidence / stage / model / enforced / mirroring / next_check_ns /
recheck_until_ns / last_decide_ns / thin_answers``.
"""

from __future__ import annotations

from typing import Callable

from classifier.engine.decision import CONFIRMED, UNKNOWN, Decision

from controller_app.core.mirror import MirrorManager
from controller_app.core.state import SEC, Device, State
from controller_app.intents import DecideRequest


class DecisionManager:
    def __init__(self, state: State, mirror: MirrorManager, sync_device: Callable[[Device], list]):
        self.state = state
        self.mirror = mirror
        self.sync_device = sync_device

    def timer(self, now_ns: int) -> list:
        """Decision requests for learning devices with new packets; re-checks start and end."""
        st = self.state
        s = st.settings
        out: list = []
        for mac, buf in list(st.learner.buffers.items()):
            dev = st.devices.get(mac)
            if dev is None or not dev.mirroring:
                continue
            if buf.new == 0 or buf.n < s.decide_min_packets:
                continue
            if dev.last_decide_ns is not None and now_ns - dev.last_decide_ns < s.decide_interval * SEC:
                continue
            dev.last_decide_ns = now_ns
            buf.new = 0
            out.append(DecideRequest(mac, st.learner.packets(mac), self.mirror.classifier_time(now_ns)))
        for dev in st.devices.values():
            if dev.next_check_ns is not None and not dev.mirroring and now_ns >= dev.next_check_ns:
                dev.mirroring = True
                dev.next_check_ns = None
                dev.recheck_until_ns = now_ns + int(s.recheck_window * SEC)
                st.counters["rechecks"] += 1
                out += self.sync_device(dev)
            elif dev.recheck_until_ns is not None and dev.mirroring and now_ns >= dev.recheck_until_ns:
                out += self.stop_learning(dev, now_ns)
        return out

    def stop_learning(self, dev: Device, now_ns: int) -> list:
        dev.mirroring = False
        dev.recheck_until_ns = None
        dev.next_check_ns = now_ns + int(self.state.settings.recheck_interval * SEC)
        self.state.learner.drop(dev.mac)
        return self.sync_device(dev)

    def decision_made(self, mac: int, decision: Decision | None, now_ns: int) -> list:
        """The engine decided (``None``: not enough evidence yet)."""
        st = self.state
        dev = st.devices.get(mac)
        if dev is None:
            return []
        if decision is None:
            dev.thin_answers += 1
            return []
        dev.thin_answers = 0
        st.counters["decisions"] += 1
        dev.category = decision.category
        dev.confidence = float(decision.confidence)
        dev.stage = decision.stage
        dev.model = decision.model
        if st.policy.enforcement(dev.category, dev.confidence, dev.stage) is not None:
            dev.enforced = (dev.category, dev.confidence, dev.stage)
        if decision.stage in (CONFIRMED, UNKNOWN) and dev.mirroring:
            return self.stop_learning(dev, now_ns)
        return self.sync_device(dev)

    def restore(self, records, now_ns: int) -> None:
        """Devices from the inventory (dicts with mac int, dpid, port, category, confidence,
        stage, model, first/last seen): final decisions are enforced as soon as their switch
        connects, and re-checked after ``recheck_interval``."""
        st = self.state
        for r in records:
            mac = int(r["mac"])
            dev = st.devices.get(mac) or st.new_device(mac, int(r.get("first_seen_ns") or now_ns))
            dev.dpid = r.get("dpid")
            dev.port = r.get("port")
            dev.first_ns = int(r.get("first_seen_ns") or now_ns)
            dev.last_ns = int(r.get("last_seen_ns") or now_ns)
            if r.get("stage"):
                dev.category = r["category"]
                dev.confidence = float(r.get("confidence") or 0.0)
                dev.stage = r["stage"]
                dev.model = r.get("model")
                if st.policy.enforcement(dev.category, dev.confidence, dev.stage) is not None:
                    dev.enforced = (dev.category, dev.confidence, dev.stage)
                if dev.stage in (CONFIRMED, UNKNOWN):
                    dev.mirroring = False
                    dev.next_check_ns = now_ns + int(st.settings.recheck_interval * SEC)
