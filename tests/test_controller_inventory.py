"""The inventory's schema 2: identity values per device (round trip, first sight kept, gone with
a forgotten device), whether a decision rests on the device's claims alone and who vouched for
it; an inventory written by the previous version (schema 1) is migrated when the app opens it,
and read as it is by the readers before that."""

from __future__ import annotations

import os
import sqlite3
from types import SimpleNamespace

import pytest

from classifier.engine.decision import CONFIRMED, UNKNOWN, Decision
from controller_app.inventory import (SCHEMA_VERSION, Inventory, InventoryError, device_history, read_inventory)
from ctl_harness import A, B, SEC, m

#: The schema of the previous version (1), as it shipped: what an existing inventory holds.
SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE devices (mac TEXT PRIMARY KEY, dpid TEXT, port INTEGER, first_seen REAL NOT NULL,
    last_seen REAL NOT NULL, category TEXT, confidence REAL, stage TEXT, model TEXT, explanation TEXT,
    enforced TEXT, gateway INTEGER NOT NULL DEFAULT 0);
CREATE TABLE decisions (id INTEGER PRIMARY KEY AUTOINCREMENT, mac TEXT NOT NULL, ts REAL NOT NULL,
    category TEXT NOT NULL, confidence REAL NOT NULL, stage TEXT NOT NULL, model TEXT, explanation TEXT,
    evidence TEXT);
CREATE INDEX decisions_mac ON decisions (mac, id);
CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, who TEXT NOT NULL, client TEXT,
    op TEXT NOT NULL, mac TEXT NOT NULL, before TEXT, after TEXT, digest TEXT);
CREATE INDEX audit_mac ON audit (mac, id);
INSERT INTO meta VALUES ('schema', '1');
INSERT INTO devices VALUES ('02:00:00:00:00:0a', '0000000000000001', 3, 1700000000.0, 1700000100.0, 'plug', 0.93,
    'confirmed', 'model-v1', 'behaviour says plug', 'rate_limit_kbps=64', 0);
INSERT INTO decisions (mac, ts, category, confidence, stage, model, explanation, evidence)
    VALUES ('02:00:00:00:00:0a', 1700000050.0, 'plug', 0.93, 'confirmed', 'model-v1', 'behaviour says plug', '{}');
"""


def device(mac, stage=CONFIRMED, category="camera", claims_only=False, **kw):
    return SimpleNamespace(mac=m(mac), dpid=1, port=2, first_ns=1000 * SEC, last_ns=1010 * SEC, category=category,
                           confidence=0.97, stage=stage, model="v1", policy_action=None, gateway=False,
                           claims_only=claims_only, **kw)


def old_inventory(path) -> str:
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_1)
    db.close()
    return str(path)


def test_identity_values_round_trip_keep_the_first_sight_and_go_with_a_forgotten_device(tmp_path):
    inv = Inventory(str(tmp_path / "inv.sqlite"))
    inv.upsert_devices([device(A), device(B, stage=None, category=None)],
                       [(m(A), "dhcp.hostname", "porch-camera", 1005 * SEC), (m(A), "mdns.txt", "ci=17", 1003 * SEC),
                        (m(B), "dns.query", "b.example", 1004 * SEC)])
    assert inv.identity_of(m(A)) == [(1003 * SEC, "mdns.txt", "ci=17"), (1005 * SEC, "dhcp.hostname", "porch-camera")]
    d = Decision("camera", 0.97, CONFIRMED, "v1", "identity camera", vouching=("identity",))
    inv.record_decision(m(A), 1020 * SEC, d, device(A, claims_only=True),
                        [(m(A), "dhcp.hostname", "porch-camera", 1001 * SEC), (m(A), "ssdp.type", "urn:x", 1019 * SEC)])
    assert inv.identity_of(m(A)) == [(1001 * SEC, "dhcp.hostname", "porch-camera"), (1003 * SEC, "mdns.txt", "ci=17"),
                                     (1019 * SEC, "ssdp.type", "urn:x")]          # the earlier sight wins
    inv.upsert_devices([], [(m(A), "mdns.txt", "ci=17", 1500 * SEC)])
    assert inv.identity_of(m(A))[1] == (1003 * SEC, "mdns.txt", "ci=17")          # a later one does not
    (rec,) = [r for r in inv.load() if r["mac"] == m(A)]
    assert rec["claims_only"] is True
    hist = device_history(inv.path, A)
    assert hist[-1]["vouching"] == ["identity"]
    assert inv.forget([m(A), m(B)]) == 1                     # B: undecided, never decided: gone, values too
    assert inv.identity_of(m(B)) == [] and len(inv.identity_of(m(A))) == 3
    inv.close()
    rows = read_inventory(str(tmp_path / "inv.sqlite"))
    assert [(r["mac"], r["claims_only"]) for r in rows] == [(A, True)]


def test_an_inventory_of_the_previous_schema_is_read_as_it_is_and_migrated_when_the_app_opens_it(tmp_path):
    path = old_inventory(tmp_path / "old.sqlite")
    # readers (iotclass devices, the page) before the app has opened it
    (row,) = read_inventory(path, history=True)
    assert (row["mac"], row["category"], row["claims_only"], row["decisions"]) == (A, "plug", False, 1)
    assert device_history(path, A)[0]["vouching"] is None
    inv = Inventory(path)
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == (str(SCHEMA_VERSION),)
    assert {r[1] for r in db.execute("PRAGMA table_info(devices)")} >= {"claims_only", "enforced", "gateway"}
    assert "vouching" in {r[1] for r in db.execute("PRAGMA table_info(decisions)")}
    db.close()
    (rec,) = inv.load()
    assert (rec["mac"], rec["stage"], rec["claims_only"], rec["dpid"], rec["port"]) == (m(A), CONFIRMED, False, 1, 3)
    assert device_history(path, A)[0]["explanation"] == "behaviour says plug"     # the old decision is kept
    inv.record_decision(m(A), 1700000200 * SEC, Decision("unknown", 0.3, UNKNOWN, "v2", vouching=()),
                        device(A, stage=UNKNOWN, category="unknown"),
                        [(m(A), "dhcp.hostname", "plug-1", 1700000150 * SEC)])
    assert inv.identity_of(m(A)) == [(1700000150 * SEC, "dhcp.hostname", "plug-1")]
    assert [h["vouching"] for h in device_history(path, A)] == [None, []]
    inv.close()
    inv = Inventory(path)                                   # opening a migrated file again changes nothing
    assert len(inv.load()) == 1 and len(inv.identity_of(m(A))) == 1
    inv.close()


def test_a_failed_migration_leaves_the_old_schema_and_a_newer_schema_is_refused(tmp_path, monkeypatch):
    import controller_app.inventory as inventory
    path = old_inventory(tmp_path / "old.sqlite")
    monkeypatch.setattr(inventory, "MIGRATE_1_TO_2", inventory.MIGRATE_1_TO_2 + ("ALTER TABLE nowhere ADD x",))
    with pytest.raises(InventoryError, match="cannot open the inventory"):
        Inventory(path)
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == ("1",)
    assert "claims_only" not in {r[1] for r in db.execute("PRAGMA table_info(devices)")}
    db.execute("UPDATE meta SET value='4' WHERE key='schema'")
    db.commit()
    db.close()
    monkeypatch.undo()
    with pytest.raises(InventoryError, match="inventory schema 4, this version reads 3"):
        Inventory(path)


def test_the_inventory_holding_the_audit_is_its_owners_alone(tmp_path):
    """Created 0600, SQLite's -wal and -shm too; an inventory an older version left 0644 is
    narrowed to its owner and the app told (issue 19, item 8)."""
    import stat as st_
    path = str(tmp_path / "inv.sqlite")
    inv = Inventory(path)
    inv.add_audit(1.0, "alice", "127.0.0.1", "pin", "02:00:00:00:00:01", None, "category=camera", "d")
    for p in (path, path + "-wal", path + "-shm"):
        assert st_.S_IMODE(os.stat(p).st_mode) == 0o600, p
    inv.close()
    old = str(tmp_path / "old.sqlite")
    Inventory(old).close()
    os.chmod(old, 0o644)
    told = []
    Inventory(old, log=told.append).close()
    assert st_.S_IMODE(os.stat(old).st_mode) == 0o600
    assert told and "readable by others (mode 0644); now 0600" in told[0]


def test_the_log_file_is_created_private(tmp_path):
    import stat as st_
    from controller_app.inventory import private_file
    log = tmp_path / "controller.log"
    private_file(str(log), "the log file")
    assert log.exists() and st_.S_IMODE(log.stat().st_mode) == 0o600


def test_an_explanation_completed_after_the_decision_lands_in_that_decision_only(tmp_path):
    """The controller records a decision at once and completes its explanation after enforcing
    it: the decision's row gets the whole explanation and its structured parts; the device's own
    explanation only while that decision is its latest; another device's decision is never touched."""
    path = str(tmp_path / "inv.sqlite")
    inv = Inventory(path)
    first = inv.record_decision(m(A), 1020 * SEC, Decision("camera", 0.9, CONFIRMED, "v", "voters"), device(A))
    assert inv.complete_explanation(m(A), first, "voters; segments: n_total (+0.40)",
                                    {"packets": 5, "explain": {"segments": [{"feature": "n_total"}]}})
    hist = device_history(path, A)
    assert [h["explanation"] for h in hist] == ["voters; segments: n_total (+0.40)"]
    assert hist[0]["evidence"]["explain"]["segments"] == [{"feature": "n_total"}]
    assert read_inventory(path)[0]["explanation"] == "voters; segments: n_total (+0.40)"
    # a later decision came in before the first one's explanation was done: the device keeps the later's
    second = inv.record_decision(m(A), 1050 * SEC, Decision("camera", 0.95, CONFIRMED, "v", "later"), device(A))
    assert inv.complete_explanation(m(A), first, "voters; segments: n_bytes (+0.10)", {})
    assert read_inventory(path)[0]["explanation"] == "later"
    assert [h["explanation"] for h in device_history(path, A)] == ["voters; segments: n_bytes (+0.10)", "later"]
    assert not inv.complete_explanation(m(B), second, "not B's", {})       # the decision is A's
    assert device_history(path, A)[1]["explanation"] == "later"
    inv.close()
