"""Policy rules: the entries (and rate-limit meter) that enforce each device's action on its
edge switch, IP pools resolved per device, and policy reloads (like Faucet's valve_acl).

Owns ``Device.policy_* / meter_kbps / pools / pools_pending``.
"""

from __future__ import annotations

import ipaddress

from classifier.engine.decision import CONFIRMED, UNKNOWN

from controller_app.core.state import Device, State, net_key
from controller_app.intents import (ETH_TYPE_IPV4, ETH_TYPE_IPV6, OFPTT_ALL, FlowAdd, FlowDelete, Match, MeterAdd,
                                    MeterDelete, ResolvePools, SetDscp, SetQueue)
from controller_app.pipeline import (FULL_MASK, PRIO_DEVICE, PRIO_IP_DENY, PRIO_IP_MARK, PRIO_POOL_ALLOW,
                                     PRIO_SERVICE_ALLOW, CookieKind, Table, cookie)
from controller_app.policy import Action, Policy, Treatment


def policy_flows(dpid: int, mac: int, action: Action, lan, pool_prefixes, rate_meter: int) -> list[FlowAdd]:
    """The flow entries that enforce ``action`` for device ``mac`` (both directions)."""
    c = cookie(CookieKind.POLICY, mac)
    out: list[FlowAdd] = []
    meter = rate_meter if action.rate_limit_kbps else None
    pre = (SetQueue(action.queue),) if action.queue is not None else ()
    ip_actions = pre + ((SetDscp(action.dscp),) if action.dscp is not None else ())
    nets = None
    if action.restricts:
        nets = sorted({*lan, *pool_prefixes, *action.prefixes()}, key=net_key)
    services = action.services()
    for table, mac_field, ip_field, nxt in ((Table.POLICY_SRC, "eth_src", "ip_dst", Table.POLICY_DST),
                                            (Table.POLICY_DST, "eth_dst", "ip_src", Table.ETH_SRC)):
        base = {mac_field: mac}
        if action.block:
            out.append(FlowAdd(dpid, table, PRIO_DEVICE, Match(**base), goto=Table.MIRROR, cookie=c))
            continue
        if nets is not None:
            for net in nets:
                et = ETH_TYPE_IPV4 if net.version == 4 else ETH_TYPE_IPV6
                out.append(FlowAdd(dpid, table, PRIO_POOL_ALLOW + net.prefixlen,
                                   Match(**base, eth_type=et, **{ip_field: net}),
                                   actions=ip_actions, goto=nxt, meter=meter, cookie=c))
            # a service: the device's packets to its port (any address), the answers from it
            port_field = "dst" if mac_field == "eth_src" else "src"
            for proto, port in services:
                l4 = {f"{'udp' if proto == 17 else 'tcp'}_{port_field}": port}
                for et in (ETH_TYPE_IPV4, ETH_TYPE_IPV6):
                    out.append(FlowAdd(dpid, table, PRIO_SERVICE_ALLOW, Match(**base, eth_type=et, ip_proto=proto, **l4),
                                       actions=ip_actions, goto=nxt, meter=meter, cookie=c))
            for et in (ETH_TYPE_IPV4, ETH_TYPE_IPV6):
                out.append(FlowAdd(dpid, table, PRIO_IP_DENY, Match(**base, eth_type=et), goto=Table.MIRROR,
                                   cookie=c))
        elif action.dscp is not None:
            for et in (ETH_TYPE_IPV4, ETH_TYPE_IPV6):
                out.append(FlowAdd(dpid, table, PRIO_IP_MARK, Match(**base, eth_type=et), actions=ip_actions,
                                   goto=nxt, meter=meter, cookie=c))
        out.append(FlowAdd(dpid, table, PRIO_DEVICE, Match(**base), actions=pre, goto=nxt, meter=meter, cookie=c))
    return out


class RulesManager:
    def __init__(self, state: State):
        self.state = state

    def treatment(self, dev: Device) -> Treatment | None:
        """The action the device's state asks for, and its basis: an override; else its latest
        decision's (tightened when it rests on the device's own claims alone), or the last
        decision that enforced one (a re-check's provisional answer keeps the action in force);
        else, while no decision enforces anything, the policy's ``learning`` action (None when it
        is ``allow``: nothing installed)."""
        if dev.gateway:
            return None
        pol = self.state.policy
        ov = pol.overrides.get(dev.mac)
        if ov is not None:
            if ov.action is not None:
                return Treatment(ov.action, "override")
            return Treatment(pol.action_for(ov.category), f"override: category {ov.category}")
        t = None
        if dev.stage is not None:
            t = pol.treatment(dev.category, dev.confidence, dev.stage, dev.claims_only)
        if t is None and dev.enforced is not None:
            t = pol.treatment(*dev.enforced)
        if t is None:
            t = pol.learning_treatment()
        return t

    def desired_action(self, dev: Device) -> Action | None:
        t = self.treatment(dev)
        return None if t is None else t.action

    def resolved_pools(self, dev: Device, action: Action) -> tuple[tuple, list]:
        names = action.pool_names()
        if not names:
            return (), []
        have = dev.pools or {}
        missing = tuple(sorted(n for n in names if n not in have))
        req = []
        if missing and not dev.pools_pending:
            dev.pools_pending = True
            req.append(ResolvePools(dev.mac, missing))
        nets = sorted({n for name in names for n in have.get(name, ())}, key=net_key)
        return tuple(nets), req

    def sync(self, dev: Device) -> list:
        """The device's policy entries and rate meter on its edge switch (a diff)."""
        st = self.state
        out: list = []
        target = st.edge(dev)
        action = self.desired_action(dev) if target is not None else None
        pools: tuple = ()
        if action is not None:
            pools, req = self.resolved_pools(dev, action)
            out += req
        lan = st.policy.lan
        want = (target, action, pools, lan) if action is not None else (None, None, None, None)
        if (dev.policy_dpid, dev.policy_action, dev.policy_pools, dev.policy_lan) == want:
            return out
        new = policy_flows(target, dev.mac, action, lan, pools, dev.rate_meter) if action is not None else []
        new_rate = action.rate_limit_kbps if action is not None else None
        old: list = []
        if dev.policy_dpid is not None and dev.policy_dpid != want[0]:
            # moved, or nothing to enforce any more: remove everything from the old switch
            if dev.policy_dpid in st.switches:
                out.append(FlowDelete(dev.policy_dpid, OFPTT_ALL, cookie=cookie(CookieKind.POLICY, dev.mac),
                                      cookie_mask=FULL_MASK))
                if dev.meter_kbps is not None:
                    out.append(MeterDelete(dev.policy_dpid, dev.rate_meter))
            dev.meter_kbps = None
        elif dev.policy_action is not None:
            old = policy_flows(dev.policy_dpid, dev.mac, dev.policy_action, dev.policy_lan, dev.policy_pools,
                               dev.rate_meter)
        if new_rate is not None and dev.meter_kbps != new_rate:
            out.append(MeterAdd(target, dev.rate_meter, new_rate, max(new_rate, 64), "kbps",   # ~1 s of burst
                                modify=dev.meter_kbps is not None))
        old_by_key = {f.key: f for f in old}
        new_keys = {f.key for f in new}
        out += [f for f in new if old_by_key.get(f.key) != f]              # add the new entries first ...
        out += [FlowDelete(f.dpid, f.table, f.match, priority=f.priority)  # ... then remove stale ones
                for k, f in old_by_key.items() if k not in new_keys]
        if new_rate is None and dev.meter_kbps is not None:
            out.append(MeterDelete(target, dev.rate_meter))  # after the entries that used it
        dev.meter_kbps = new_rate
        dev.policy_dpid, dev.policy_action, dev.policy_pools, dev.policy_lan = want
        return out

    def release(self, dev: Device) -> list:
        """Remove the device's policy entries and rate meter from its switch."""
        out: list = []
        if dev.policy_dpid is not None and dev.policy_dpid in self.state.switches:
            out.append(FlowDelete(dev.policy_dpid, OFPTT_ALL, cookie=cookie(CookieKind.POLICY, dev.mac),
                                  cookie_mask=FULL_MASK))
            if dev.meter_kbps is not None:
                out.append(MeterDelete(dev.policy_dpid, dev.rate_meter))
        dev.policy_dpid = dev.policy_action = dev.policy_pools = dev.policy_lan = dev.meter_kbps = None
        return out

    def pools_dropped(self, mac: int) -> None:
        """A pool look-up that could not be queued: asked again by :meth:`retry`."""
        dev = self.state.devices.get(mac)
        if dev is not None:
            dev.pools_pending = False
            self.state.pools_retry.add(mac)
            self.state.counters["pools_requeued"] += 1

    def retry(self) -> list:
        out: list = []
        st = self.state
        while st.pools_retry:
            dev = st.devices.get(st.pools_retry.pop())
            if dev is not None:
                out += self.sync(dev)
        return out

    def switch_gone(self, dpid: int) -> None:
        for dev in self.state.devices.values():
            if dev.policy_dpid == dpid:
                dev.policy_dpid = dev.policy_action = dev.policy_pools = dev.meter_kbps = None

    def reloaded(self, policy: Policy) -> Policy:
        """Swap in ``policy``; the devices' learning state follows overrides that came or went
        (their rules are synced by the caller). Returns the old policy."""
        st = self.state
        old = st.policy
        st.policy = policy
        for dev in st.devices.values():
            was_pinned = dev.mac in old.overrides
            pinned = dev.mac in policy.overrides
            if pinned and (dev.mirroring or not was_pinned):   # learning or watched: neither any more
                dev.mirroring = False
                st.learner.drop(dev.mac)
            elif was_pinned and not pinned and not dev.gateway and dev.stage not in (CONFIRMED, UNKNOWN):
                dev.mirroring = True
            if policy.pool_names() != old.pool_names():
                dev.pools_pending = False
        return old

    def pools_resolved(self, mac: int, mapping: dict) -> Device | None:
        """Pool look-up answers for a device (its rules are synced by the caller)."""
        dev = self.state.devices.get(mac)
        if dev is None:
            return None
        dev.pools_pending = False
        pools = dict(dev.pools or {})
        for name, nets in mapping.items():
            pools[name] = tuple(sorted({ipaddress.ip_network(n, strict=False) for n in nets}, key=net_key))
        dev.pools = pools
        return dev
