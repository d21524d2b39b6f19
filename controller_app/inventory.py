"""The device inventory: SQLite, survives restarts.

``devices``: one row per MAC (where it was last seen: switch and port; first and last seen;
the latest decision: category, confidence, stage, model version, explanation, whether it rests
on the device's own claims alone; the action in force). ``decisions``: every decision, in
order, with the voters that vouched for it. ``identity``: each device's distinct identity
values (what it said about itself: kind, value, first seen), kept as long as the device is, so
that its decisions are made on all of them across restarts. ``audit``: every pin and release
made from the operator page (who, when, from where, what). ``addresses``: each device's IP
addresses (first and last seen). ``labels``: the operator's own name for a device (kept by MAC,
also while the device is forgotten). ``events``: the timeline (new devices, category changes,
pins, switches, policy reloads; the last :data:`MAX_EVENTS`). The app writes it from its event
loop (batched; a decision, its device and the identity values not written yet in one
transaction; audit rows from the HTTP thread); readers (``iotclass devices``, the HTTP
endpoint) open it read-only, which WAL mode allows while the app runs.

Schema 2 added ``devices.claims_only``, ``decisions.vouching`` and the ``identity`` table; schema
3 the ``addresses``, ``labels`` and ``events`` tables. An older inventory is migrated when the app
opens it (in one transaction), and readers of an inventory not migrated yet read it without them.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime, timezone

from classifier.errors import IotClassError
from classifier.capture.packets import mac_to_int, mac_to_str

SCHEMA_VERSION = 3
#: events kept in the inventory (older ones are removed as new ones are written)
MAX_EVENTS = 10_000
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
    gateway INTEGER NOT NULL DEFAULT 0,
    claims_only INTEGER NOT NULL DEFAULT 0   -- the latest decision rests on the device's own claims alone
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
    evidence TEXT,
    vouching TEXT            -- the voters that vouched for the category, comma-separated (schema 2)
);
CREATE INDEX IF NOT EXISTS decisions_mac ON decisions (mac, id);
CREATE TABLE IF NOT EXISTS identity (
    mac TEXT NOT NULL,
    kind TEXT NOT NULL,      -- dhcp.hostname, mdns.txt, ... (classifier.features.identity.KINDS)
    value TEXT NOT NULL,
    first_seen REAL NOT NULL,  -- seconds since the epoch
    PRIMARY KEY (mac, kind, value)
) WITHOUT ROWID;
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
CREATE TABLE IF NOT EXISTS addresses (
    mac TEXT NOT NULL,
    address TEXT NOT NULL,     -- IPv4 or IPv6, as text
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (mac, address)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS labels (
    mac TEXT PRIMARY KEY,
    label TEXT NOT NULL,       -- the operator's name for the device
    who TEXT,
    ts REAL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,        -- new_device, category_changed, confirmed, unknown, pin, release, ...
    mac TEXT,
    data TEXT                  -- the event's other fields, JSON
);
CREATE INDEX IF NOT EXISTS events_mac ON events (mac, id);
"""
COLUMNS = ("mac", "dpid", "port", "first_seen", "last_seen", "category", "confidence", "stage", "model",
           "explanation", "enforced", "gateway", "claims_only")
#: What schema 2 adds to a schema-1 inventory (the identity table is created by SCHEMA itself).
MIGRATE_1_TO_2 = ("ALTER TABLE devices ADD COLUMN claims_only INTEGER NOT NULL DEFAULT 0",
                  "ALTER TABLE decisions ADD COLUMN vouching TEXT")


class InventoryError(IotClassError):
    pass


def _dpid_text(dpid) -> str | None:
    return None if dpid is None else f"{int(dpid):016x}"


def private_file(path: str, what: str, log=None) -> None:
    """Make ``path`` readable by its owner alone: created 0600 when missing; an existing file
    that others may read is narrowed to its owner (with SQLite's ``-wal`` and ``-shm`` beside it,
    which SQLite creates with the database's mode) and ``log`` (a callable) told so."""
    import os
    import stat as st
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.close(fd)
        return
    except FileExistsError:
        pass
    except OSError:
        return                              # the opener that follows says why
    for p in (path, path + "-wal", path + "-shm"):
        try:
            mode = st.S_IMODE(os.stat(p).st_mode)
            if mode & 0o077 and st.S_ISREG(os.stat(p).st_mode):
                os.chmod(p, mode & 0o700)
                if log is not None:
                    log(f"{p}: {what} was readable by others (mode {mode:04o}); now {mode & 0o700:04o}")
        except OSError:
            pass


class Inventory:
    """Read-write access for the app (one connection, guarded by a lock). The file (and SQLite's
    files beside it) is its owner's alone: it holds the pin audit."""

    def __init__(self, path: str, log=None):
        self.path = path
        if path != ":memory:" and not path.startswith("file:"):
            private_file(path, "the inventory", log)
        try:
            self.db = sqlite3.connect(path, check_same_thread=False, timeout=5.0)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif row[0] in ("1", "2"):
                self._migrate_from(int(row[0]))
            elif row[0] != str(SCHEMA_VERSION):
                raise InventoryError(f"{path}: inventory schema {row[0]}, this version reads {SCHEMA_VERSION}")
            self.db.commit()
        except sqlite3.DatabaseError as exc:
            raise InventoryError(f"{path}: cannot open the inventory: {exc}") from None
        self.lock = threading.Lock()

    def _migrate_from(self, version: int) -> None:
        """Schema 1 or 2 -> 3, all or nothing: a crash half-way leaves the inventory as it was
        (schema 3's tables are new ones, created by SCHEMA)."""
        self.db.execute("BEGIN")
        try:
            for stmt in (MIGRATE_1_TO_2 if version == 1 else ()):
                self.db.execute(stmt)
            self.db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))
            self.db.commit()
        except BaseException:
            self.db.rollback()
            raise

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
                        "model": d["model"], "claims_only": bool(d["claims_only"])})
        return out

    def macs(self) -> list[int]:
        """Every device the inventory holds, as integers."""
        with self.lock:
            rows = self.db.execute("SELECT mac FROM devices").fetchall()
        out = []
        for (m,) in rows:
            try:
                out.append(mac_to_int(m))
            except ValueError:
                continue
        return out

    def identity_of(self, mac: int) -> list[tuple[int, str, str]]:
        """The device's identity values, ``(first seen ns, kind, value)``, oldest first."""
        with self.lock:
            rows = self.db.execute("SELECT first_seen, kind, value FROM identity WHERE mac=? ORDER BY first_seen",
                                   (mac_to_str(mac),)).fetchall()
        return [(int(round(t * 1e9)), k, v) for t, k, v in rows]

    def _add_identity(self, rows) -> int:
        """``rows``: (mac int, kind, value, first seen ns); a value already held keeps the
        earlier first sight."""
        rows = [(mac_to_str(mac), kind, value, t_ns / 1e9) for mac, kind, value, t_ns in rows]
        self.db.executemany("INSERT INTO identity (mac, kind, value, first_seen) VALUES (?,?,?,?) "
                            "ON CONFLICT(mac, kind, value) DO UPDATE SET "
                            "first_seen=min(first_seen, excluded.first_seen)", rows)
        return len(rows)

    def _upsert(self, devices) -> int:
        rows = []
        for dev in devices:
            rows.append((mac_to_str(dev.mac), _dpid_text(dev.dpid), dev.port, dev.first_ns / 1e9, dev.last_ns / 1e9,
                         dev.category, dev.confidence if dev.stage else None, dev.stage, dev.model,
                         dev.policy_action.describe() if dev.policy_action is not None else None, int(dev.gateway),
                         int(bool(getattr(dev, "claims_only", False)))))
        self.db.executemany(
            "INSERT INTO devices (mac, dpid, port, first_seen, last_seen, category, confidence, stage, model, "
            "enforced, gateway, claims_only) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(mac) DO UPDATE SET "
            "dpid=excluded.dpid, port=excluded.port, first_seen=min(first_seen, excluded.first_seen), "
            "last_seen=max(last_seen, excluded.last_seen), category=excluded.category, "
            "confidence=excluded.confidence, stage=excluded.stage, model=excluded.model, "
            "enforced=excluded.enforced, gateway=excluded.gateway, claims_only=excluded.claims_only", rows)
        return len(rows)

    def forget(self, macs) -> int:
        """Remove devices the controller forgot (undecided, unseen for a while), and their
        identity values, unless a decision was ever recorded for them. Returns the device rows
        removed."""
        rows = [(mac_to_str(m), mac_to_str(m)) for m in macs]
        if not rows:
            return 0

        def work():
            cur = self.db.executemany("DELETE FROM devices WHERE mac=? AND stage IS NULL AND NOT EXISTS "
                                      "(SELECT 1 FROM decisions WHERE decisions.mac=?)", rows)
            n = cur.rowcount
            for table in ("identity", "addresses"):
                self.db.executemany(f"DELETE FROM {table} WHERE mac=? AND NOT EXISTS "
                                    "(SELECT 1 FROM devices WHERE devices.mac=?)", rows)
            return n
        return self._commit(work)

    def _insert_decision(self, mac: int, ts_ns: int, decision) -> int:
        cur = self.db.execute("INSERT INTO decisions (mac, ts, category, confidence, stage, model, explanation, "
                              "evidence, vouching) VALUES (?,?,?,?,?,?,?,?,?)",
                              (mac_to_str(mac), ts_ns / 1e9, decision.category, float(decision.confidence),
                               decision.stage, decision.model, decision.explanation,
                               json.dumps(decision.evidence, default=str),
                               ",".join(getattr(decision, "vouching", ()) or ())))
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

    def upsert_devices(self, devices, identity=(), addresses=(), events=()) -> int:
        """Write the state of core devices (objects with the core's Device fields), new
        identity values (``(mac, kind, value, first seen ns)``), addresses (``(mac, address, last
        seen ns)``) and events (:meth:`add_events`), in one transaction."""
        devices = list(devices)

        def work():
            n = self._upsert(devices)
            self._add_identity(identity)
            self._add_addresses(addresses)
            self._add_events(events)
            return n
        return self._commit(work)

    def _add_addresses(self, rows) -> None:
        rows = [(mac_to_str(mac) if not isinstance(mac, str) else mac, addr, t / 1e9, t / 1e9)
                for mac, addr, t in rows]
        self.db.executemany("INSERT INTO addresses (mac, address, first_seen, last_seen) VALUES (?,?,?,?) "
                            "ON CONFLICT(mac, address) DO UPDATE SET "
                            "first_seen=min(first_seen, excluded.first_seen), "
                            "last_seen=max(last_seen, excluded.last_seen)", rows)

    def _add_events(self, events) -> None:
        """``events``: dicts with ``ts`` (seconds), ``event`` (the kind), ``mac`` (or None) and
        other fields; their ids are written back into them (``id``)."""
        if not events:
            return
        for ev in events:
            data = {k: v for k, v in ev.items() if k not in ("id", "ts", "event", "mac")}
            cur = self.db.execute("INSERT INTO events (ts, kind, mac, data) VALUES (?,?,?,?)",
                                  (float(ev["ts"]), ev["event"], ev.get("mac"), json.dumps(data, default=str)))
            ev["id"] = int(cur.lastrowid)
        self.db.execute("DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?", (MAX_EVENTS,))

    def add_events(self, events) -> None:
        """Append timeline events (see :meth:`_add_events`), in one transaction."""
        self._commit(lambda: self._add_events(events))

    def set_label(self, mac: str, label: str, who: str | None, ts: float) -> None:
        """The operator's label of ``mac`` ("" removes it)."""
        def work():
            if label:
                self.db.execute("INSERT INTO labels (mac, label, who, ts) VALUES (?,?,?,?) ON CONFLICT(mac) DO "
                                "UPDATE SET label=excluded.label, who=excluded.who, ts=excluded.ts",
                                (mac, label, who, ts))
            else:
                self.db.execute("DELETE FROM labels WHERE mac=?", (mac,))
        self._commit(work)

    def names(self, kinds) -> tuple[list, list, list]:
        """For the operator page at start-up: the identity values of ``kinds`` (``(mac, kind,
        value)``, oldest first), the addresses (``(mac, address, last seen ns)``) and the labels
        (``(mac, label)``)."""
        kinds = list(kinds)
        with self.lock:
            ids = self.db.execute(f"SELECT mac, kind, value FROM identity WHERE kind IN ({','.join('?' * len(kinds))}) "
                                  "ORDER BY mac, first_seen", kinds).fetchall()
            addrs = self.db.execute("SELECT mac, address, last_seen FROM addresses").fetchall()
            labels = self.db.execute("SELECT mac, label FROM labels").fetchall()
        return ([tuple(r) for r in ids], [(m, a, int(t * 1e9)) for m, a, t in addrs], [tuple(r) for r in labels])

    def recent_events(self, limit: int) -> list[dict]:
        """The last ``limit`` events, oldest first."""
        with self.lock:
            rows = self.db.execute("SELECT id, ts, kind, mac, data FROM events ORDER BY id DESC LIMIT ?",
                                   (int(limit),)).fetchall()
        return [_event_row(r) for r in reversed(rows)]

    def add_decision(self, mac: int, ts_ns: int, decision) -> int:
        """Append a decision; returns its id."""
        return self._commit(lambda: self._insert_decision(mac, ts_ns, decision))

    def record_decision(self, mac: int, ts_ns: int, decision, device=None, identity=()) -> int:
        """A decision, the device's new state (``device``, if given) and the identity values not
        written yet (``identity``, as for :meth:`upsert_devices`: those the decision was made on
        among them), in one transaction; returns the decision's id once it is committed. WAL
        mode: a committed decision survives the process being killed (``synchronous=NORMAL``
        risks only the last commits on a power failure)."""
        def work():
            if device is not None:
                self._upsert([device])
            self._add_identity(identity)
            return self._insert_decision(mac, ts_ns, decision)
        return self._commit(work)

    def complete_explanation(self, mac: int, decision_id: int, explanation: str, evidence: dict) -> bool:
        """Decision ``decision_id`` of ``mac`` with its whole explanation (the controller records a
        decision first and completes the slow part of its explanation after enforcing it); the
        device's own explanation too when that decision is still its latest. False when there is
        no such decision of that device."""
        text = str(explanation)

        def work():
            cur = self.db.execute("UPDATE decisions SET explanation=?, evidence=? WHERE id=? AND mac=?",
                                  (text, json.dumps(evidence, default=str), int(decision_id), mac_to_str(mac)))
            if cur.rowcount == 0:
                return False
            self.db.execute("UPDATE devices SET explanation=? WHERE mac=? AND "
                            "(SELECT max(id) FROM decisions WHERE mac=?) = ?",
                            (text, mac_to_str(mac), mac_to_str(mac), int(decision_id)))
            return True
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
            have = {r[1] for r in db.execute("PRAGMA table_info(devices)")}
            cols = [c if c in have else f"NULL AS {c}" for c in COLUMNS]     # schema 1: no claims_only
            rows = db.execute(f"SELECT {', '.join(cols)} FROM devices ORDER BY mac").fetchall()
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
        d["claims_only"] = bool(d["claims_only"])
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
        have = {r[1] for r in db.execute("PRAGMA table_info(decisions)")}
        vouching = "vouching" if "vouching" in have else "NULL"             # schema 1: not recorded
        rows = db.execute(f"SELECT ts, category, confidence, stage, model, explanation, evidence, {vouching} "
                          "FROM decisions WHERE mac=? ORDER BY id DESC LIMIT ?", (mac, int(limit))).fetchall()
    except sqlite3.DatabaseError as exc:
        raise InventoryError(f"{path}: cannot read the inventory: {exc}") from None
    finally:
        db.close()
    out = []
    for ts, cat, conf, stage, model, expl, ev, vouch in reversed(rows):
        try:
            evidence = json.loads(ev) if ev else {}
        except ValueError:
            evidence = {"unreadable": ev}
        out.append({"time": _iso(ts), "ts": ts, "category": cat, "confidence": conf, "stage": stage, "model": model,
                    "explanation": expl, "evidence": evidence,
                    "vouching": None if vouch is None else [v for v in vouch.split(",") if v]})
    return out


def _event_row(r) -> dict:
    ev_id, ts, kind, mac, data = r
    try:
        extra = json.loads(data) if data else {}
    except ValueError:
        extra = {}
    return {**(extra if isinstance(extra, dict) else {}), "id": ev_id, "ts": ts, "event": kind, "mac": mac}


def _read(path: str, query: str, args: tuple = ()) -> list:
    """Rows of a read-only query; a table an older inventory does not have gives none."""
    db = _ro(path)
    try:
        return db.execute(query, args).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise InventoryError(f"{path}: cannot read the inventory: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise InventoryError(f"{path}: cannot read the inventory: {exc}") from None
    finally:
        db.close()


def _of_mac(query: str, mac: str | None, limit: int) -> tuple[str, tuple]:
    """``query`` newest first, of one MAC when ``mac`` is given, at most ``limit`` rows."""
    where, args = ("", ()) if mac is None else (" WHERE mac=?", (mac,))
    return query + where + " ORDER BY id DESC LIMIT ?", (*args, int(limit))


def read_events(path: str, mac: str | None = None, limit: int = 200) -> list[dict]:
    """Timeline events, newest first (an inventory older than schema 3 has none)."""
    rows = _read(path, *_of_mac("SELECT id, ts, kind, mac, data FROM events", mac, limit))
    return [_event_row(r) for r in rows]


def read_identity(path: str, mac: str, limit: int = 2000) -> list[tuple[int, str, str]]:
    """One device's identity values ``(first seen ns, kind, value)``, oldest first, read-only."""
    rows = _read(path, "SELECT first_seen, kind, value FROM identity WHERE mac=? ORDER BY first_seen LIMIT ?",
                 (mac, int(limit)))
    return [(int(round(t * 1e9)), k, v) for t, k, v in rows]


def read_audit(path: str, mac: str | None = None, limit: int = 200) -> list[dict]:
    """Pins and releases made from the operator page, newest first (an inventory written by a
    version without the audit table has none)."""
    rows = _read(path, *_of_mac("SELECT ts, who, client, op, mac, before, after, digest FROM audit", mac, limit))
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
