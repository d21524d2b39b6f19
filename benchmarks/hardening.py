"""Issue 19's abuse, measured: the HTTP side, a flapping switch, search abuse, pins racing hand
edits. Each scenario runs ``ryu-manager controller_app`` (a fake engine, loopback only) and
prints its figure with a baseline measured in the same run, as a ratio.

``python -m benchmarks.hardening [halfopen|flap|search|pins|all] [--json]``

- ``halfopen`` (a): the app under ``ulimit -n 1024``; 1,100 HTTP connections each holding a
  request head cut short (from this process, whose own limit is higher). ``/status`` answer
  times, and a new switch's new device: from the switch's connection to its host rule. Baseline:
  the same measures before the connections are opened.
- ``flap`` (b): a switch (from 127.0.0.2) reconnecting as fast as it can for 20 s; the log's
  growth, as bytes per hour of such abuse; meanwhile five other switches (from 127.0.0.1)
  connect, and five more each get a new device's rules (their own switch_up and rule lines,
  which any switch connecting writes, are counted apart from the abuse's). Baseline: the same 20 s against the app with its back-off and
  log summary turned off (the behaviour before).
- ``search`` (c): 2,054 devices; 8 clients each asking ``/api/devices`` in a loop for the
  largest search allowed (8 words, each matching every device); a new switch's handshake
  (connection to its table defaults), 15 times. Baseline: the same handshakes without clients.
- ``pins`` (d): ``tests/test_pins_race.hand_edit_race``: an editor saves the policy file (a
  marker line, one more each save) every 0.5 ms (renamed into place) or 5 ms (rewritten in
  place) while pins are made and released as fast as they go, 20 s each; hand edits lost.
  Baseline: the pin editor as it was (re-read, compare, rename; no lock, no swap check).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks.ofconn import App, _flow_mods, _has_host_rule, _learn
from controller_app.intents import Table
from testing.fakeswitch import FakeSwitch

ROOT = Path(__file__).resolve().parent.parent
NEW_DEVICE = "02:00:00:00:77:01"


def _get(port: int, path: str, timeout: float = 10.0) -> float:
    t0 = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        r.read()
    return time.monotonic() - t0


def _defaults(sw) -> bool:
    return bool(_flow_mods(sw, lambda fm: fm.table_id == Table.MIRROR and fm.priority == 0))


def _handshake(app: App, dpid: int, source: str | None = None) -> tuple[float, FakeSwitch]:
    """Seconds from a new switch's connection to its table defaults."""
    t0 = time.monotonic()
    sw = FakeSwitch("127.0.0.1", app.of_port, dpid=dpid, ports=[1, 2, 3], source=source)
    sw.wait_for(lambda r: _defaults(sw), 20)
    return time.monotonic() - t0, sw


def _new_switch_device(app: App, dpid: int) -> float:
    """Seconds from a new switch's connection to the host rule of a new device on it."""
    t0 = time.monotonic()
    sw = FakeSwitch("127.0.0.1", app.of_port, dpid=dpid, ports=[1, 2, 3])
    sw.wait_for(lambda r: _defaults(sw), 20)
    _learn(sw, NEW_DEVICE, 1)
    sw.wait_for(lambda r: _has_host_rule(sw, NEW_DEVICE), 20)
    took = time.monotonic() - t0
    sw.close()
    return took


# ------------------------------------------------------------------ (a) half-finished requests


def scenario_halfopen(work: Path, n: int = 1100) -> dict:
    app = App("project", work, nofile=1024)
    socks: list = []
    try:
        sw = FakeSwitch("127.0.0.1", app.of_port, dpid=0xA1, ports=[1, 2, 3])
        sw.wait_for(lambda r: _defaults(sw), 20)
        base_status = [_get(app.http_port, "/status") for _ in range(10)]
        base_device = _new_switch_device(app, 0xA2)
        during: list = []
        flooding = threading.Event()

        def poll():                         # /status asked every 50 ms while the connections are opened
            while not flooding.is_set():
                try:
                    during.append(_get(app.http_port, "/status", timeout=5))
                except OSError:
                    during.append(float("inf"))
                time.sleep(0.05)
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        for _ in range(n):
            try:
                s = socket.create_connection(("127.0.0.1", app.http_port), timeout=5)
                s.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                socks.append(s)
            except OSError:
                break
        time.sleep(0.5)
        flooding.set()
        poller.join(10)
        fds = len(list(Path(f"/proc/{app.proc.pid}/fd").iterdir()))
        status = []
        for _ in range(10):
            try:
                status.append(_get(app.http_port, "/status", timeout=5))
            except OSError:
                status.append(float("inf"))
        device = _new_switch_device(app, 0xA3)
        http = app.status()["http"]
        out = {"half_finished": len(socks), "app_open_files": fds, "nofile": 1024, "status_s": [round(x, 4) for x in status],
               "status_worst_s": round(max(status), 4), "status_median_s": round(statistics.median(status), 4),
               "new_switch_device_rules_s": round(device, 3),
               "status_while_opening_worst_s": round(max(during), 4), "status_while_opening_asked": len(during),
               "baseline_status_worst_s": round(max(base_status), 4),
               "baseline_new_switch_device_rules_s": round(base_device, 3),
               "ratio_status_worst": round(max(status) / max(max(base_status), 1e-4), 1),
               "ratio_new_switch_device": round(device / max(base_device, 1e-4), 2),
               "http_connections": http["connections"], "http_counts": http["counts"],
               "app_alive": app.proc.poll() is None,
               "goal": "status <= 1 s, new switch's new device's rules <= 2 s"}
        sw.close()
    finally:
        for s in socks:
            s.close()
        app.stop()
    return out


# ------------------------------------------------------------------ (b) a flapping switch


_NO_FLAP_GUARD = ("import controller_app.guard as g; g.FlapLog.up = lambda self, d, now=None: True; "
                  "g.FlapLog.quiet = lambda self, d, n=1, now=None: False; "
                  "import controller_app.manager as m; m.main()")


def _flap_run(work: Path, guarded: bool, seconds: float) -> dict:
    extra = () if guarded else ("--ofp-reconnect-burst", "100000000", "--ofp-host-connect-burst", "100000000")
    launch = None if guarded else ["-c", _NO_FLAP_GUARD]
    app = App("project", work, extra=extra, launch=launch)
    try:
        time.sleep(1.0)
        size0 = app.log.stat().st_size
        stop = threading.Event()
        counts = {"attempts": 0, "ups": 0}

        def flapper():
            while not stop.is_set():
                try:
                    sw = FakeSwitch("127.0.0.1", app.of_port, dpid=0xB1, ports=[1, 2, 3], connect_timeout=1,
                                    source="127.0.0.2")
                except OSError:
                    continue
                counts["attempts"] += 1
                try:
                    sw.wait_for(lambda r: _defaults(sw), 1.0)
                    counts["ups"] += 1
                except TimeoutError:
                    pass
                sw.close()
        t = threading.Thread(target=flapper, daemon=True)
        t0 = time.monotonic()
        t.start()
        time.sleep(seconds / 2)
        handshakes, devices = [], []
        for i in range(5):
            hs, sw = _handshake(app, 0xB100 + i)
            handshakes.append(hs)
            sw.close()
            devices.append(_new_switch_device(app, 0xB200 + i))
        time.sleep(max(0.0, seconds - (time.monotonic() - t0)))
        stop.set()
        t.join(5)
        took = time.monotonic() - t0
        time.sleep(1.0)
        with open(app.log, "rb") as fh:
            fh.seek(size0)
            added = fh.read().decode(errors="replace").splitlines(keepends=True)
        grown = sum(len(x.encode()) for x in added)
        # the other switches' own lines (their switch_up and rules, as any switch that connects
        # writes them) are not the abuse's: counted apart
        others = sum(len(x.encode()) for x in added if any(f'"dpid": "{d:016x}"' in x for d in
                                                           list(range(0xB100, 0xB105)) + list(range(0xB200, 0xB205))))
        abuse = grown - others
        return {"seconds": round(took, 1), "reconnect_attempts": counts["attempts"], "times_up": counts["ups"],
                "log_bytes": grown, "log_bytes_other_switches": others, "log_bytes_of_the_abuse": abuse,
                "log_mb_per_hour_of_the_abuse": round(abuse / took * 3600 / 1e6, 2),
                "other_switch_handshake_worst_s": round(max(handshakes), 3),
                "other_switch_new_device_rules_worst_s": round(max(devices), 3),
                "openflow_counts": app.status()["openflow"]["counts"]}
    finally:
        app.stop()


def scenario_flap(work: Path, seconds: float = 20.0) -> dict:
    guarded = _flap_run(work, True, seconds)
    before = _flap_run(work, False, seconds)
    return {"project": guarded, "baseline_without_backoff_and_summary": before,
            "ratio_log_growth_of_the_abuse": round(guarded["log_bytes_of_the_abuse"] /
                                                   max(before["log_bytes_of_the_abuse"], 1), 5),
            "goal": "log <= 5 MB per hour of such abuse; other switches served"}


# ------------------------------------------------------------------ (c) search abuse


def scenario_search(work: Path, devices: int = 2054, clients: int = 8, handshakes: int = 15) -> dict:
    from controller_app.web import MAX_QUERY_CHARS, MAX_QUERY_WORDS
    app = App("project", work, extra=("--max-hosts-per-port", "4096", "--max-hosts-per-switch", "4096"))
    try:
        sw = FakeSwitch("127.0.0.1", app.of_port, dpid=1, ports=list(range(1, 11)))
        sw.wait_for(lambda r: _defaults(sw), 20)
        for i in range(devices):
            _learn(sw, f"02:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}", 1 + i % 10)
            if i % 200 == 199:
                time.sleep(0.05)
        deadline = time.monotonic() + 60
        while app.status()["devices"] < devices and time.monotonic() < deadline:
            time.sleep(0.5)
        held = app.status()["devices"]
        word = "0000000000000001"                         # the switch's datapath id: every device matches
        q = "+".join([word] * MAX_QUERY_WORDS)
        assert len(q) <= MAX_QUERY_CHARS
        path = f"/api/devices?q={q}&sort=vendor"
        one = [_get(app.http_port, path) for _ in range(5)]
        base = []
        for i in range(handshakes):
            hs, s = _handshake(app, 0xC000 + i)
            base.append(hs)
            s.close()
        stop = threading.Event()
        answered = [0] * clients

        def client(k):
            while not stop.is_set():
                try:
                    _get(app.http_port, path)
                    answered[k] += 1
                except OSError:
                    pass
        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
        for t in threads:
            t.start()
        time.sleep(2.0)
        t0 = time.monotonic()
        n0 = sum(answered)
        loaded = []
        for i in range(handshakes):
            hs, s = _handshake(app, 0xC100 + i)
            loaded.append(hs)
            s.close()
            time.sleep(0.2)
        rate = (sum(answered) - n0) / (time.monotonic() - t0)
        stop.set()
        for t in threads:
            t.join(15)
        sw.close()
        return {"devices": held, "clients": clients, "query_words": MAX_QUERY_WORDS, "query_chars": len(q),
                "one_query_s": round(statistics.median(one), 4), "queries_per_s_under_load": round(rate, 1),
                "handshake_median_ms": round(statistics.median(loaded) * 1e3, 1),
                "handshake_worst_ms": round(max(loaded) * 1e3, 1),
                "baseline_handshake_median_ms": round(statistics.median(base) * 1e3, 1),
                "baseline_handshake_worst_ms": round(max(base) * 1e3, 1),
                "ratio_handshake_median": round(statistics.median(loaded) / statistics.median(base), 2),
                "goal": "handshake <= 50 ms"}
    finally:
        app.stop()


# ------------------------------------------------------------------ (d) pins racing hand edits


def scenario_pins(work: Path, seconds: float = 20.0) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    import controller_app.pins as pins
    from test_pins_race import BASE, hand_edit_race

    def race(name, how, pause):
        path = work / f"{name}.yaml"
        path.write_text(BASE)
        return hand_edit_race(str(path), seconds, how, pause=pause)

    out = {"project": {}, "baseline_reread_then_rename": {}}
    cases = (("rename", 0.0005), ("in-place", 0.005))
    for how, pause in cases:
        out["project"][f"{how}@{pause * 1e3:g}ms"] = race(f"p-{how}", how, pause)
    # the editor as it was: a re-read compared just before an ordinary rename, no lock, no swap check
    real_replace, real_lock = pins.PolicyEditor._replace, pins.policy_lock

    def old_replace(self, text, read):
        import os
        import tempfile as tf
        if pins.FileState.of(self.path) != read:
            raise self._changed()
        fd, tmp = tf.mkstemp(dir=os.path.dirname(self.path))
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, self.path)
    try:
        pins.PolicyEditor._replace = old_replace
        for how, pause in cases:
            out["baseline_reread_then_rename"][f"{how}@{pause * 1e3:g}ms"] = race(f"b-{how}", how, pause)
    finally:
        pins.PolicyEditor._replace, pins.policy_lock = real_replace, real_lock
    out["goal"] = "0 hand edits lost"
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.hardening", description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario", nargs="?", default="all", choices=["halfopen", "flap", "search", "pins", "all"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="iot-hardening-") as d:
        work = Path(d)
        for name, fn in (("halfopen", scenario_halfopen), ("flap", scenario_flap), ("search", scenario_search),
                         ("pins", scenario_pins)):
            if args.scenario in (name, "all"):
                results[name] = fn(work)
                if not args.json:
                    print(f"== {name}")
                    print(json.dumps(results[name], indent=1))
                    sys.stdout.flush()
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
