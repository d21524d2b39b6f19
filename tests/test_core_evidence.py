"""Evidence pooled per device over time: a device's identity values outlive its packet buffer
and restarts (kept in the inventory, given back when it is read again) and every decision is
made on all of them; a device decided ``unknown`` or ``provisional`` keeps its identity entries
(watched), a new value re-opens its decision, and unknown devices are re-examined within
minutes."""

from __future__ import annotations

from classifier.engine.decision import Decision
from controller_app.core import Settings
from controller_app.intents import DecideRequest, LoadIdentity
from controller_app.inventory import Inventory
from controller_app.pipeline import PRIO_MIRROR_DST, PRIO_MIRROR_SRC, CookieKind, Table, cookie_kind, cookie_mac
from controller_app.web import device_records
from ctl_harness import A, CONFIRMED, GW, SEC, UNKNOWN, FakeEngine, Harness, m, tcp, udp
from test_core_identity import dhcp_discover, mdns_announcement


def harness(table=None, inventory=None, **settings) -> Harness:
    """A on port 1 (its first frame a DHCP request naming it), the gateway on port 2, ten
    packets of A mirrored; identity probes off unless asked (they defer unknown answers)."""
    settings.setdefault("identity_probes", 0)
    h = Harness(settings=Settings(gateways=(m(GW),), **settings), inventory=inventory,
                engine=FakeEngine(table if table is not None else {A: ("unknown", 0.4, UNKNOWN)}))
    h.connect(1, [1, 2, 3])
    h.send(1, 2, udp(GW, A))
    h.send(1, 1, dhcp_discover(A, b"porch-thing"))
    for _ in range(10):
        h.send(1, 1, udp(A, GW))
    return h


def mirror_entries(h, mac):
    return [f for f in h.sw(1).entries(Table.MIRROR) if cookie_kind(f.cookie) == CookieKind.MIRROR
            and cookie_mac(f.cookie) == m(mac)]


def pairs(h, mac) -> set:
    return {(k, v) for _, k, v in h.core.learner.identity(m(mac)).for_mac(m(mac))}


def requests_for(h, mac, seconds: float = 1.0) -> list:
    start = len(h.log)
    h.tick(seconds)
    return [i for i in h.log[start:] if isinstance(i, DecideRequest) and i.mac == m(mac)]


def test_an_unknown_device_keeps_its_identity_entries_and_values_not_its_behaviour_mirror():
    h = harness()
    h.tick(31)
    dev = h.core.devices[m(A)]
    assert (dev.stage, dev.mirroring, dev.mirror_dpid, dev.watch_dpid) == (UNKNOWN, False, None, 1)
    entries = mirror_entries(h, A)
    assert len(entries) == 10 and {f.meter for f in entries} == {dev.identity_meter}
    assert not [f for f in entries if f.priority in (PRIO_MIRROR_SRC, PRIO_MIRROR_DST)]
    assert dev.identity_meter in h.sw(1).meters and dev.mirror_meter not in h.sw(1).meters
    assert m(A) not in h.core.learner.buffers and ("dhcp.hostname", "porch-thing") in pairs(h, A)
    assert m(A) not in h.core.state.mirrored                          # no mirror slot held
    assert not [p for p in h.send(1, 1, tcp(A, GW, "52.1.2.3")).packet_ins if cookie_kind(p[2]) == CookieKind.MIRROR]
    again = dhcp_discover(A, b"porch-thing")                          # said before: read, nothing new
    copies = [p for p in h.send(1, 1, again).packet_ins if cookie_kind(p[2]) == CookieKind.MIRROR]
    assert len(copies) == 1 and len(copies[0][5]) == copies[0][3] == len(again)   # whole, as while learning
    assert m(A) not in h.core.learner.buffers and not dev.mirroring   # read, not buffered
    rec = device_records(h.core, h.core.settings)[0][[d.mac for d in h.core.devices.values()].index(m(A))]
    assert rec["identity_watch"] and not rec["mirroring"]
    # a confirmed device holds neither entries nor values
    h2 = harness({A: ("plug", 0.9, CONFIRMED)})
    h2.tick(31)
    d2 = h2.core.devices[m(A)]
    assert d2.watch_dpid is None and mirror_entries(h2, A) == [] and m(A) not in h2.core.learner.identities


def test_a_new_identity_value_reopens_an_unknown_decision_on_all_the_pooled_values():
    h = harness()
    eng = h.engine
    h.tick(31)                                                        # unknown at 1031
    dev = h.core.devices[m(A)]
    h.now += 4
    h.send(1, 1, dhcp_discover(A, b"porch-thing"))                    # said before: nothing new
    assert not dev.mirroring and h.core.counters["identity_reopened"] == 0
    h.send(1, 1, mdns_announcement(A))                                # new: its decision re-opens
    assert h.core.counters["identity_reopened"] == 1
    assert (dev.mirroring, dev.mirror_dpid, dev.watch_dpid) == (True, 1, None) and m(A) in h.core.state.mirrored
    assert dev.recheck_until_ns == h.ns + int(h.core.settings.recheck_window * SEC)
    assert h.core.learner.buffers[m(A)].n == 1                        # the announcement itself, filed
    assert len(mirror_entries(h, A)) == 12
    assert requests_for(h, A, 1) == []                                # within decide_interval of the last
    eng.table[m(A)] = ("hub", 0.95, CONFIRMED)
    (req,) = requests_for(h, A, 30)                                   # asked with 1 packet (< decide_min_packets)
    assert len(req.packets) == 1
    got = {(k, v) for _, k, v in eng.identities[-1].for_mac(m(A))}
    assert {("dhcp.hostname", "porch-thing"), ("mdns.txt", "ci=2"), ("mdns.instance", "Hue Bridge")} <= got
    assert (dev.category, dev.stage, dev.watch_dpid, dev.mirroring) == ("hub", CONFIRMED, None, False)
    assert mirror_entries(h, A) == [] and m(A) not in h.core.learner.identities


def test_unknown_devices_are_reexamined_within_minutes_confirmed_ones_at_the_recheck_interval():
    h = harness(unknown_recheck_interval=300, recheck_window=60, recheck_interval=6 * 3600)
    h.tick(31)
    dev = h.core.devices[m(A)]
    assert dev.next_check_ns == h.ns + 300 * SEC
    h.tick(299)
    assert not dev.mirroring
    h.tick(1)                                                         # re-examined: mirrored again
    assert dev.mirroring and dev.mirror_dpid == 1 and dev.recheck_until_ns == h.ns + 60 * SEC
    assert h.core.counters["unknown_rechecks"] == 1 and h.core.counters["rechecks"] == 1
    assert ("dhcp.hostname", "porch-thing") in pairs(h, A)           # its values were kept meanwhile
    h.tick(61)                                                        # nothing new: watched again
    assert (dev.mirroring, dev.watch_dpid, dev.next_check_ns) == (False, 1, h.ns + 300 * SEC)
    h2 = harness({A: ("plug", 0.9, CONFIRMED)}, unknown_recheck_interval=300, recheck_interval=6 * 3600)
    h2.tick(31)
    assert h2.core.devices[m(A)].next_check_ns == h2.ns + 6 * 3600 * SEC


def flush(h, inv):
    """What the shell does every few seconds: every device's state and the new identity values."""
    inv.upsert_devices(list(h.core.devices.values()), h.core.take_identity())


def test_a_confirmed_devices_values_leave_memory_and_come_back_from_the_inventory(tmp_path):
    inv = Inventory(str(tmp_path / "inv.sqlite"))
    h = harness({A: ("plug", 0.9, CONFIRMED)}, inventory=inv, recheck_interval=3600, recheck_window=600)
    flush(h, inv)
    stored = inv.identity_of(m(A))
    assert ("dhcp.hostname", "porch-thing") in {(k, v) for _, k, v in stored}
    assert all(t == 1000 * SEC for t, _, _ in stored)                 # first seen, real time
    h.tick(31)
    assert m(A) not in h.core.learner.identities                      # confirmed: memory holds no values
    assert h.core.take_identity() == []                               # nothing new to write
    h.tick(3600)                                                      # the re-check: values back first
    assert [i for i in h.log if isinstance(i, LoadIdentity)][-1] == LoadIdentity(m(A))
    assert pairs(h, A) >= {(k, v) for _, k, v in stored}
    assert h.core.take_identity() == []                               # loaded values are not written again
    for _ in range(10):
        h.send(1, 1, udp(A, GW))
    h.engine.table[m(A)] = ("plug", 0.9, "provisional")
    (req,) = requests_for(h, A, 31)
    assert ("dhcp.hostname", "porch-thing") in {(k, v) for _, k, v in req.identity.for_mac(m(A))}
    inv.close()


def test_identity_values_survive_a_restart_and_the_first_sight_stays(tmp_path):
    path = str(tmp_path / "inv.sqlite")
    inv = Inventory(path)
    h = harness(inventory=inv, unknown_recheck_interval=3600)
    h.tick(31)
    inv.record_decision(m(A), h.ns, Decision("unknown", 0.4, UNKNOWN, "v1"), h.core.devices[m(A)],
                        h.core.take_identity())
    inv.close()
    # the controller restarts: the unknown device is restored, watched once its switch connects
    inv = Inventory(path)
    h2 = Harness(settings=Settings(gateways=(m(GW),), identity_probes=0, unknown_recheck_interval=3600),
                 inventory=inv, engine=FakeEngine({A: ("hub", 0.9, CONFIRMED)}))
    h2.now = h.now + 20
    h2.core.restore(inv.load(), h2.ns)
    h2.connect(1, [1, 2, 3])
    dev = h2.core.devices[m(A)]
    assert (dev.stage, dev.watch_dpid) == (UNKNOWN, 1) and len(mirror_entries(h2, A)) == 10
    assert ("dhcp.hostname", "porch-thing") in pairs(h2, A)
    first = dict(((k, v), t) for t, k, v in h2.core.learner.identity(m(A)).for_mac(m(A)))
    assert first[("dhcp.hostname", "porch-thing")] == 1000 * SEC
    h2.send(1, 1, dhcp_discover(A, b"porch-thing"))                   # said before the restart: nothing new
    assert not dev.mirroring
    t_new = h2.ns
    h2.send(1, 1, mdns_announcement(A))                               # new: re-opens, on both runs' values
    (req,) = requests_for(h2, A, 1)
    got = {(k, v) for _, k, v in req.identity.for_mac(m(A))}
    assert {("dhcp.hostname", "porch-thing"), ("mdns.service", "_hap._tcp")} <= got
    assert h2.core.devices[m(A)].stage == CONFIRMED
    flush(h2, inv)
    stored = {(k, v): t for t, k, v in inv.identity_of(m(A))}
    assert stored[("dhcp.hostname", "porch-thing")] == 1000 * SEC and stored[("mdns.service", "_hap._tcp")] == t_new
    inv.close()


def test_a_forgotten_device_takes_its_values_with_it(tmp_path):
    inv = Inventory(str(tmp_path / "inv.sqlite"))
    h = harness({}, inventory=inv, host_timeout=100)
    flush(h, inv)
    assert inv.identity_of(m(A))
    h.tick(200)
    gone = h.core.take_forgotten()
    assert gone == [m(A)] and h.core.take_identity() == []
    inv.forget(gone)
    assert inv.identity_of(m(A)) == []
    inv.close()


def test_a_watched_device_stops_being_read_once_pinned_or_confirmed():
    from controller_app.policy import parse_policy
    h = harness()
    h.tick(31)
    dev = h.core.devices[m(A)]
    assert dev.watch_dpid == 1
    h.run(h.core.policy_reloaded(parse_policy(f'overrides:\n  "{A}": {{category: plug}}\n', "p.yaml"), h.ns))
    assert dev.watch_dpid is None and mirror_entries(h, A) == [] and m(A) not in h.core.learner.identities
    start = len(h.log)
    h.run(h.core.policy_reloaded(parse_policy("default: allow\n", "p.yaml"), h.ns))
    assert dev.watch_dpid == 1 and len(mirror_entries(h, A)) == 10        # unknown again: watched again
    assert LoadIdentity(m(A)) in h.log[start:] and ("dhcp.hostname", "porch-thing") not in pairs(h, A)
    h.run(h.core.decision_made(m(A), Decision("plug", 0.9, CONFIRMED, "v1"), h.ns))   # a late answer
    assert dev.watch_dpid is None and mirror_entries(h, A) == [] and m(A) not in h.core.learner.identities
