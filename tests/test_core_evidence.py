"""Evidence pooled per device over time: a device's identity values outlive its packet buffer
and restarts (kept in the inventory, given back when it is read again) and every decision is
made on all of them."""

from __future__ import annotations

from controller_app.core import Settings
from controller_app.intents import DecideRequest, LoadIdentity
from controller_app.inventory import Inventory
from ctl_harness import A, CONFIRMED, GW, SEC, UNKNOWN, FakeEngine, Harness, m, udp
from test_core_identity import dhcp_discover


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


def pairs(h, mac) -> set:
    return {(k, v) for _, k, v in h.core.learner.identity(m(mac)).for_mac(m(mac))}


def requests_for(h, mac, seconds: float = 1.0) -> list:
    start = len(h.log)
    h.tick(seconds)
    return [i for i in h.log[start:] if isinstance(i, DecideRequest) and i.mac == m(mac)]


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