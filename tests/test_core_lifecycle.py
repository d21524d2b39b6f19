"""The devices' life cycle across the managers (the Core facade) on fake flow tables: idle
undecided devices forgotten, absent decided ones parked and brought back, slots reused, a MAC
flood held to the caps, caps and expiries logged once per interval."""

from __future__ import annotations

import logging
import random

from controller_app.core import Settings
from controller_app.intents import FlowAdd, FlowDelete, MeterAdd
from controller_app.pipeline import LEARN_METER, CookieKind, Table, cookie, cookie_kind
from controller_app.policy import parse_policy
from ctl_harness import A, B, CONFIRMED, GW, SEC, FakeEngine, Harness, arp, m, udp

POLICY = "enforce_on: confirmed\nmin_confidence: 0.5\ncategories:\n  camera: block\n  plug: {rate_limit_kbps: 64}\n"


def held(h, mac) -> list:
    """Every entry on switch 1 that names ``mac`` (match or cookie), and its meters."""
    sw = h.sw(1)
    flows = [f for f in sw.entries() if mac in (f.match.eth_src, f.match.eth_dst)
             or (cookie_kind(f.cookie) in (CookieKind.HOST, CookieKind.POLICY, CookieKind.MIRROR)
                 and f.cookie & 0xFFFFFFFFFFFF == mac)]
    return flows


def test_an_idle_undecided_device_is_forgotten_and_its_slot_reused():
    h = Harness(settings=Settings(host_timeout=600, decide_min_packets=10**6))
    h.connect(1, [1, 2, 3])
    h.send(1, 1, arp(A))
    h.send(1, 2, arp(GW))
    dev = h.core.devices[m(A)]
    slot, meter = dev.slot, dev.mirror_meter
    h.send(1, 1, udp(A, GW))
    assert held(h, m(A)) and meter in h.sw(1).meters and m(A) in h.core.learner.buffers
    h.tick(300)
    h.send(1, 2, udp(GW, B))                                        # GW stays active
    h.tick(299)
    assert m(A) in h.core.devices                                   # 599 s since A's last packet
    h.send(1, 2, udp(GW, B))
    h.tick(2)
    assert m(A) not in h.core.devices and m(GW) in h.core.devices
    assert held(h, m(A)) == [] and meter not in h.sw(1).meters and m(A) not in h.core.learner.buffers
    assert h.core.take_forgotten() == [m(A)] and h.core.take_forgotten() == []
    assert h.core.counters["devices_forgotten"] == 1 and (1, 1) not in h.core.state.port_hosts
    h.send(1, 3, arp(B))                                            # a new device gets the free slot
    assert h.core.devices[m(B)].slot == slot and h.core.devices[m(B)].mirror_meter == meter
    assert meter in h.sw(1).meters


def test_an_absent_decided_device_is_parked_and_its_rules_come_back_when_it_is_seen():
    h = Harness(policy=parse_policy(POLICY, "p.yaml"), engine=FakeEngine({A: ("plug", 0.9, CONFIRMED)}),
                settings=Settings(host_timeout=600, decide_min_packets=1))
    h.connect(1, [1, 2])
    h.send(1, 2, arp(GW))
    h.send(1, 1, arp(A))
    h.send(1, 1, udp(A, GW))
    h.tick(31)
    dev = h.core.devices[m(A)]
    assert dev.stage == CONFIRMED and dev.policy_action is not None and dev.rate_meter in h.sw(1).meters
    rate_meter = dev.rate_meter
    assert h.core.snapshot()["parked"] == 0
    h.tick(700)
    assert dev.policy_action is not None                            # located (its entry has not idled out): kept
    entry = [f for f in h.sw(1).entries(Table.ETH_SRC) if f.match.eth_src == m(A)][0]
    h.sw(1).apply_one(FlowDelete(1, entry.table, entry.match, priority=entry.priority))   # the switch's idle timeout
    h.run(h.core.flow_removed(1, Table.ETH_SRC, entry.cookie, 1, m(A), h.ns))
    h.tick(299)
    assert dev.attached                                             # unseen for 599 s
    h.tick(2)
    assert not dev.attached and dev.slot is None and m(A) in h.core.devices and dev.category == "plug"
    assert held(h, m(A)) == [] and rate_meter not in h.sw(1).meters
    assert h.core.counters["devices_parked"] == 1 and h.core.snapshot()["parked"] == 1
    assert dev.to_record()["parked"] and dev.to_record()["category"] == "plug"
    # the switch reconnects: nothing of A is pushed
    h.disconnect(1)
    h.net.switches[1] = type(h.sw(1))(1)
    h.connect(1, [1, 2])
    assert m(GW) not in h.core.devices                              # undecided and as quiet: forgotten
    assert held(h, m(A)) == [] and sorted(h.sw(1).meters) == [LEARN_METER]
    # A is seen again: learned, its policy (rate limit) back, no re-learning
    h.send(1, 2, arp(GW))
    h.send(1, 1, udp(A, GW))
    assert dev.attached and dev.slot is not None and not dev.mirroring
    flows = [f for f in h.sw(1).entries(Table.POLICY_SRC) if f.match.eth_src == m(A)]
    assert flows and h.sw(1).meters[flows[0].meter].spec.rate == 64
    assert h.core.counters["devices_returned"] == 1


def test_a_parked_devices_recheck_waits_until_it_is_back():
    h = Harness(engine=FakeEngine({A: ("plug", 0.9, CONFIRMED)}),
                settings=Settings(host_timeout=100, decide_min_packets=1, recheck_interval=50, recheck_window=30))
    h.connect(1, [1, 2])
    h.send(1, 1, arp(A))
    h.send(1, 1, udp(A, GW))
    h.tick(31)
    dev = h.core.devices[m(A)]
    assert dev.stage == CONFIRMED and not dev.mirroring
    h.disconnect(1)                                                 # gone with its switch
    h.tick(60)                                                      # re-check due, but A is not located ...
    assert dev.mirroring and dev.mirror_dpid is None                # ... wanted, nowhere to mirror
    h.tick(60)
    assert not dev.attached and not dev.mirroring and dev.next_check_ns is not None   # parked; re-check ended
    h.connect(1, [1, 2])
    h.send(1, 1, arp(A))
    h.tick(1)
    assert dev.mirroring and dev.mirror_dpid == 1                   # back: the re-check resumes


def test_a_mac_flood_is_held_to_the_caps():
    """10,000 random source MACs over 8 ports of a switch, caps of 64 per port, 256 per switch,
    100 mirrored: at most 100 devices with a mirror and an identity meter, and 256 learned hosts,
    whatever the flood; every MAC beyond them forwarded (flooded) but neither learned nor holding
    anything."""
    s = Settings(max_hosts_per_port=64, max_hosts_per_switch=256, max_mirrored=100, learn_ban_timeout=0)
    h = Harness(settings=s)
    h.connect(1, list(range(1, 10)))
    rng = random.Random(5)
    rows = []
    for i in range(10_000):
        mac = 0x020000000000 | rng.getrandbits(40)
        frame = udp(mac.to_bytes(6, "big").hex(":"), "ff:ff:ff:ff:ff:ff")
        rows.append((1, 1 + i % 8, cookie(CookieKind.LEARN), len(frame), h.ns, frame))
    from controller_app.core import PacketInBatch
    meters = flows = 0
    for i in range(0, len(rows), 1000):
        out = h.core.packet_ins(PacketInBatch.from_rows(rows[i:i + 1000]), h.ns)
        meters += sum(1 for x in out if isinstance(x, MeterAdd))
        flows += sum(1 for x in out if isinstance(x, FlowAdd))
        h.run(out)
    st = h.core.state
    assert len(h.core.devices) == 256 and st.switch_hosts[1] == 256
    assert all(len(v) <= 64 for v in st.port_hosts.values())
    assert meters == 2 * 100 and len(st.mirrored) == 100 and len(st.mirror_wait) == 156   # mirror + identity meter
    assert flows == 256 * 2 + 100 * 12         # ETH_SRC + ETH_DST each; 2 mirror + 10 identity entries each
    assert h.core.counters["learn_refused_switch"] + h.core.counters["learn_refused_port"] == 10_000 - 256
    assert len(h.sw(1).meters) == 1 + 2 * 100 and len(h.sw(1).entries()) < 256 * 2 + 100 * 12 + 20
    d = h.send(1, 9, udp("02:00:00:00:99:99", "ff:ff:ff:ff:ff:ff"))    # the 10,001st: forwarded, not learned
    assert len(d.received) == 8 and m("02:00:00:00:99:99") not in h.core.devices


def test_caps_and_expiries_are_logged_once_per_interval(caplog):
    s = Settings(max_hosts_per_port=1, learn_ban_timeout=0, cap_log_interval=60, host_timeout=100)
    h = Harness(settings=s)
    h.connect(1, [1, 2])
    caplog.set_level(logging.INFO, logger="controller_app.core")
    for i in range(200):
        h.send(1, 1, udp(f"02:00:00:00:30:{i:02x}", "ff:ff:ff:ff:ff:ff"))
    lines = lambda: [r for r in caplog.records if "bounded learning" in r.getMessage()]  # noqa: E731
    assert lines() == []                                               # nothing per packet
    h.tick(1)
    assert len(lines()) == 1 and "199 new MACs refused at the per-port cap" in lines()[0].getMessage()
    assert "0000000000000001:1" in lines()[0].getMessage()
    for i in range(5):
        h.send(1, 1, udp(f"02:00:00:00:31:{i:02x}", "ff:ff:ff:ff:ff:ff"))
        h.tick(1)
    assert len(lines()) == 1                                           # within the interval: no new line
    h.tick(60)
    assert len(lines()) == 2 and "5 new MACs refused" in lines()[1].getMessage()
    h.tick(60)                                                         # the one learned device: 126 s unseen
    assert len(lines()) == 3 and "1 idle devices forgotten" in lines()[2].getMessage()
    assert lines()[2].levelno == logging.INFO and lines()[0].levelno == logging.WARNING


def test_a_device_that_waited_for_a_mirror_slot_gets_a_whole_grace_period_once_mirrored():
    h = Harness(settings=Settings(max_mirrored=1, host_timeout=100, decide_min_packets=10**6))
    h.connect(1, [1, 2, 3])
    h.send(1, 1, arp(A))
    h.send(1, 2, arp(B))
    a, b = h.core.devices[m(A)], h.core.devices[m(B)]
    assert a.mirror_dpid == 1 and b.mirror_dpid is None and list(h.core.state.mirror_wait) == [m(B)]
    h.tick(90)
    assert b.mirror_dpid is None                    # B is located (its entry is alive): waiting, not idle
    h.tick(20)                                      # A: 110 s without a copy -> forgotten; B gets the slot
    assert m(A) not in h.core.devices and b.mirror_dpid == 1 and b.last_ns == 1000 * SEC
    h.tick(60)
    assert m(B) in h.core.devices                   # 170 s since B was learned, 60 s since mirrored
    h.tick(50)
    assert m(B) not in h.core.devices               # 110 s mirrored without one copy


def test_forgotten_devices_leave_the_inventory_decided_ones_stay(tmp_path):
    from controller_app.inventory import Inventory
    from classifier.engine.decision import Decision
    inv = Inventory(str(tmp_path / "inv.sqlite"))
    h = Harness(settings=Settings(host_timeout=100, decide_min_packets=10**6))
    h.connect(1, [1, 2, 3])
    h.send(1, 1, arp(A))
    h.send(1, 2, arp(B))
    h.run(h.core.decision_made(m(B), Decision("plug", 0.9, CONFIRMED, "v1", "x"), h.ns))
    inv.upsert_devices(list(h.core.devices.values()))
    inv.add_decision(m(B), h.ns, Decision("plug", 0.9, CONFIRMED, "v1", "x"))
    h.tick(200)
    gone = h.core.take_forgotten()
    assert gone == [m(A)]
    assert inv.forget(gone + [m(B)]) == 1            # B has a decision: kept even if asked
    assert [r["mac"] for r in inv.load()] == [m(B)]
    inv.close()


def test_a_parked_device_kept_only_for_an_override_is_forgotten_when_the_policy_drops_it():
    pinned = parse_policy(f'overrides:\n  "{A}": {{action: block}}\n', "p.yaml")
    h = Harness(policy=pinned, settings=Settings(host_timeout=100))
    h.connect(1, [1, 2])
    h.send(1, 1, arp(A))
    entry = [f for f in h.sw(1).entries(Table.ETH_SRC) if f.match.eth_src == m(A)][0]
    h.sw(1).apply_one(FlowDelete(1, entry.table, entry.match, priority=entry.priority))
    h.run(h.core.flow_removed(1, Table.ETH_SRC, entry.cookie, 1, m(A), h.ns + 300 * SEC))
    h.tick(101)
    assert not h.core.devices[m(A)].attached and h.core.counters["devices_parked"] == 1
    h.run(h.core.policy_reloaded(parse_policy(POLICY, "p.yaml"), h.ns))
    assert m(A) not in h.core.devices and h.core.take_forgotten() == [m(A)]
