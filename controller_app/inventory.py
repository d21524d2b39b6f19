"""The device inventory: SQLite, survives restarts.

``devices``: one row per MAC (where it was last seen: switch and port; first and last seen;
the latest decision: category, confidence, stage, model version, explanation; the action in
force). ``decisions``: every decision, in order. ``audit``: every pin and release made from
the operator page (who, when, from where, what). The app writes it from its event loop
(batched; audit rows from the HTTP thread); readers (``iotclass devices``, the HTTP endpoint)
open it read-only, which WAL mode allows while the app runs.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime, timezone

from classifier.errors import IotClassError
from classifier.capture.packets import mac_to_int, mac_to_str

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    mac TEXT PRIMARY KEY,
    dpid TEXT,               -- datapath id, 16 hex digits (64-bit unsigned does not fit SQLite INTEGER)
    port INTEGER,
    first_seen REAL NOT NULL,  -- seconds since the epoch
    last_seen REAL NOT NULL,
    category TEXT,
    confidence REAL,
    stage TEXT,
    model TEXT,
    explanation TEXT,
    enforced TEXT,
    gateway INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mac TEXT NOT NULL,
    ts REAL NOT NULL,
    category TEXT NOT NULL,
    confidence REAL NOT NULL,
    stage TEXT NOT NULL,
    model TEXT,
    explanation TEXT,
    evidence TEXT
);
CREATE INDEX IF NOT EXISTS decisions_mac ON decisions (mac, id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    who TEXT NOT NULL,       -- the operator (named by the token file)
    client TEXT,             -- address the request came from
    op TEXT NOT NULL,        -- pin | release
    mac TEXT NOT NULL,
    before TEXT,             -- the override before (category=... | action=...), or NULL
    after TEXT,              -- after, or NULL
    digest TEXT              -- the policy file's digest after the change
);
CREATE INDEX IF NOT EXISTS audit_mac ON audit (mac, id);
"""
COLUMNS = ("mac", "dpid", "port", "first_seen", "last_seen", "category", "confidence", "stage", "model",
           "explanation", "enforced", "gateway")


class InventoryError(IotClassError):
    pass


def _dpid_text(dpid) -> str | None:
    return None if dpid is None else f"{int(dpid):016x}"


class Inventory:
    """Read-write access for the app (one connection, guarded by a lock)."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.db = sqlite3.connect(path, check_same_thread=False, timeout=5.0)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif row[0] != str(SCHEMA_VERSION):
                raise InventoryError(f"{path}: inventory schema {row[0]}, this version reads {SCHEMA_VERSION}")
            self.db.commit()
        except sqlite3.DatabaseError as exc:
            raise InventoryError(f"{path}: cannot open the inventory: {exc}") from None
        self.lock = threading.Lock()

    def load(self) -> list[dict]:
        """Every device, as records for :meth:`controller_app.core.Core.restore`."""
        with self.lock:
            rows = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM devices").fetchall()
        out = []
        for r in rows:
            d = dict(zip(COLUMNS, r))
            try:
                mac = mac_to_int(d["mac"])
            except ValueError:
                continue
            out.append({"mac": mac, "dpid": int(d["dpid"], 16) if d["dpid"] else None, "port": d["port"],
                        "first_seen_ns": int(d["first_seen"] * 1e9), "last_seen_ns": int(d["last_seen"] * 1e9),
                        "category": d["category"], "confidence": d["confidence"], "stage": d["stage"],
                        "model": d["model"]})
        return out

    def _upsert(self, devices) -> int:
        rows = []
        for dev in devices:
            rows.append((mac_to_str(dev.mac), _dpid_text(dev.dpid), dev.port, dev.first_ns / 1e9, dev.last_ns / 1e9,
                         dev.category, dev.confidence if dev.stage else None, dev.stage, dev.model,
                         dev.policy_action.describe() if dev.policy_action is not None else None, int(dev.gateway)))
        self.db.executemany(
            "INSERT INTO devices (mac, dpid, port, first_seen, last_seen, category, confidence, stage, model, "
            "enforced, gateway) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(mac) DO UPDATE SET "
            "dpid=excluded.dpid, port=excluded.port, first_seen=min(first_seen, excluded.first_seen), "
            "last_seen=max(last_seen, excluded.last_seen), category=excluded.category, "
            "confidence=excluded.confidence, stage=excluded.stage, model=excluded.model, "
            "enforced=excluded.enforced, gateway=excluded.gateway", rows)
        return len(rows)

    def forget(self, macs) -> int:
        """Remove devices the controller forgot (undecided, unseen for a while), unless a
        decision was ever recorded for them. Returns the rows removed."""
        rows = [(mac_to_str(m), mac_to_str(m)) for m in macs]
        if not rows:
            return 0
        with self.lock:
            cur = self.db.executemany("DELETE FROM devices WHERE mac=? AND stage IS NULL AND NOT EXISTS "
                                      "(SELECT 1 FROM decisions WHERE decisions.mac=?)", rows)
            self.db.commit()
        return cur.rowcount

    def _insert_decision(self, mac: int, ts_ns: int, decision) -> int:
        cur = self.db.execute("INSERT INTO decisions (mac, ts, category, confidence, stage, model, explanation, "
                              "evidence) VALUES (?,?,?,?,?,?,?,?)",
                              (mac_to_str(mac), ts_ns / 1e9, decision.category, float(decision.confidence),
                               decision.stage, decision.model, decision.explanation,
                               json.dumps(decision.evidence, default=str)))
        self.db.execute("UPDATE devices SET explanation=? WHERE mac=?", (decision.explanation, mac_to_str(mac)))
        return int(cur.lastrowid)

    def _commit(self, work):
        """Run ``work()`` in one transaction: all of it is committed, or none of it."""
        with self.lock:
            try:
                out = work()
                self.db.commit()
            except BaseException:
                self.db.rollback()
                raise
            return out

    def upsert_devices(self, devices) -> int:
        """Write the state of core devices (objects with the core's Device fields)."""
        devices = list(devices)
        return self._commit(lambda: self._upsert(devices))

    def add_decision(self, mac: int, ts_ns: int, decision) -> int:
        """Append a decision; returns its id."""
        return self._commit(lambda: self._insert_decision(mac, ts_ns, decision))

    def record_decision(self, mac: int, ts_ns: int, decision, device=None) -> int:
        """A decision and the device's new state (``device``, if given), in one transaction;
        returns the decision's id once it is committed. WAL mode: a committed decision
        survives the process being killed (``synchronous=NORMAL`` risks only the last commits
        on a power failure)."""
        def work():
            if device is not None:
                self._upsert([device])
            return self._insert_decision(mac, ts_ns, decision)
        return self._commit(work)

    def add_audit(self, ts: float, who: str, client: str, op: str, mac: str, before, after, digest) -> None:
        with self.lock:
            self.db.execute("INSERT INTO audit (ts, who, client, op, mac, before, after, digest) "
                            "VALUES (?,?,?,?,?,?,?,?)", (ts, who, client, op, mac, before, after, digest))
            self.db.commit()

    def close(self) -> None:
        with self.lock:
            self.db.close()


# ------------------------------------------------------------------ readers


def _iso(seconds) -> str:
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def read_inventory(path: str, history: bool = False) -> list[dict]:
    """The inventory's devices (and each one's decision history), read-only."""
    import os
    if not os.path.exists(path):
        raise InventoryError(f"{path}: no inventory there (the controller creates it; see --inventory-db)")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
        try:
            rows = db.execute(f"SELECT {', '.join(COLUMNS)} FROM devices ORDER BY mac").fetchall()
            counts = dict(db.execute("SELECT mac, count(*) FROM decisions GROUP BY mac").fetchall())
            hist: dict = {}
            if history:
                for r in db.execute("SELECT mac, ts, category, confidence, stage, model, explanation FROM decisions "
                                    "ORDER BY id"):
                    hist.setdefault(r[0], []).append({"time": _iso(r[1]), "category": r[2], "confidence": r[3],
                                                      "stage": r[4], "model": r[5], "explanation": r[6]})
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise InventoryError(f"{path}: cannot read the inventory: {exc}") from None
    out = []
    for r in rows:
        d = dict(zip(COLUMNS, r))
        d["first_seen"] = _iso(d["first_seen"])
        d["last_seen"] = _iso(d["last_seen"])
        d["gateway"] = bool(d["gateway"])
        d["decisions"] = counts.get(d["mac"], 0)
        if history:
            d["history"] = hist.get(d["mac"], [])
        out.append(d)
    return out


def _ro(path: str) -> sqlite3.Connection:
    import os
    if not os.path.exists(path):
        raise InventoryError(f"{path}: no inventory there (the controller creates it; see --inventory-db)")
    try:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.DatabaseError as exc:
        raise InventoryError(f"{path}: cannot read the inventory: {exc}") from None


def device_history(path: str, mac: str, limit: int = 500) -> list[dict]:
    """One device's decisions, oldest first (the last ``limit``), with their evidence."""
    db = _ro(path)
    try:
        rows = db.execute("SELECT ts, category, confidence, stage, model, explanation, evidence FROM decisions "
                          "WHERE mac=? ORDER BY id DESC LIMIT ?", (mac, int(limit))).fetchall()
    except sqlite3.DatabaseError as exc:
        raise InventoryError(f"{path}: cannot read the inventory: {exc}") from None
    finally:
        db.close()
    out = []
    for ts, cat, conf, stage, model, expl, ev in reversed(rows):
        try:
            evidence = json.loads(ev) if ev else {}
        except ValueError:
            evidence = {"unreadable": ev}
        out.append({"time": _iso(ts), "ts": ts, "category": cat, "confidence": conf, "stage": stage, "model": model,
                    "explanation": expl, "evidence": evidence})
    return out


def read_audit(path: str, mac: str | None = None, limit: int = 200) -> list[dict]:
    """Pins and releases made from the operator page, newest first (an inventory written by a
    version without the audit table has none)."""
    db = _ro(path)
    try:
        q = "SELECT ts, who, client, op, mac, before, after, digest FROM audit"
        args: tuple = ()
        if mac is not None:
            q += " WHERE mac=?"
            args = (mac,)
        rows = db.execute(q + " ORDER BY id DESC LIMIT ?", (*args, int(limit))).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise InventoryError(f"{path}: cannot read the inventory: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise InventoryError(f"{path}: cannot read the inventory: {exc}") from None
    finally:
        db.close()
    return [{"time": _iso(ts), "ts": ts, "who": who, "client": client, "op": op, "mac": m, "before": before,
             "after": after, "digest": digest} for ts, who, client, op, m, before, after, digest in rows]


def cmd_devices(args) -> int:
    import sys
    if args.audit:
        rows = read_audit(args.db, limit=100_000)
        if args.json:
            json.dump(rows, sys.stdout, indent=2)
            print()
            return 0
        if not rows:
            print("(no pin or release made from the operator page)")
        for r in reversed(rows):
            what = f"pinned {r['after']}" + (f" (was {r['before']})" if r["before"] else "") if r["op"] == "pin" \
                else f"released {r['before'] or ''}".rstrip()
            print(f"{r['time']}  {r['who']:<12s} {r['client'] or '':<15s} {r['mac']}  {what}  (policy {r['digest']})")
        return 0
    rows = read_inventory(args.db, history=args.history)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    if not rows:
        print("(no devices)")
        return 0
    cols = ["mac", "dpid", "port", "category", "confidence", "stage", "enforced", "first_seen", "last_seen",
            "decisions", "model"]
    text = [[("" if r.get(c) is None else (f"{r[c]:.2f}" if c == "confidence" else str(r[c]))) for c in cols]
            for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
    for t in text:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)).rstrip())
    return 0


def add_devices_command(subparsers) -> None:
    """``iotclass devices [--db PATH] [--json]``: the controller's device inventory."""
    sp = subparsers.add_parser("devices", help="the controller's device inventory (SQLite)")
    sp.add_argument("--db", default="inventory.sqlite", metavar="PATH",
                    help="inventory database (default: inventory.sqlite, the controller's default)")
    sp.add_argument("--json", action="store_true", help="a JSON list of objects")
    sp.add_argument("--history", action="store_true", help="with each device's decisions (JSON)")
    sp.add_argument("--audit", action="store_true", help="the pins and releases made from the operator page: who, "
                                                         "when, from where, what")
    sp.set_defaults(func=cmd_devices)
