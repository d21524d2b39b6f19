"""The operator page with many devices: how long its JSON takes, over HTTP on loopback.

``python -m benchmarks.web [--devices 10000] [--decisions 3] [--requests 40]``

A real core holds N devices (learned at 48 ports of each of five switches, within the default
caps; decided: a mix of categories and stages, a tenth still learning) under a policy that blocks, rate-limits and
restricts some categories; the inventory holds each one with its decisions; the traffic
history holds 90 samples for each. The app's HTTP endpoint (the observer and the page's
routes, the same code the controller runs) serves the snapshot the event loop publishes.
Each request is a new connection (as a browser's fetch to this HTTP/1.0 server), made by a
client in a process of its own (as a browser is). Two times a request: wall clock at the
client (what a browser waits; on a busy machine it includes waiting for a core), and the CPU
time the server's thread spent answering (the page's own cost, whatever the machine's load).

Measured, in the same run:

* the page's device list (``/api/devices``, 100 rows) under several sorts and filters: on a
  *fresh* snapshot (the event loop publishes one a second, so a page polling every 2 s
  always meets a new one: index, sort and filter from scratch) and on a *cached* one;
* one device's page (``/api/devices/MAC``: decisions from the inventory, entries, traffic);
* the baseline: the JSON endpoint that was there before the page, ``/devices`` (every
  device, indented JSON);
* the event loop's side: building the published records (with and without what the page
  needs to list a device's entries), and one flow-stats reply of N devices into the traffic
  history; the history's memory a device (tracemalloc).

The page's goal: its JSON under 100 ms at 10,000 devices.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

GOAL_MS = 100.0


def build_core(n: int):
    from classifier.engine.decision import CONFIRMED, PROVISIONAL, UNKNOWN, Decision
    from controller_app.core import Core, PacketInBatch, Settings
    from controller_app.intents import CookieKind, cookie
    from controller_app.policy import parse_policy
    from testing.synth import ether, udp4
    policy = parse_policy("enforce_on: provisional\nmin_confidence: 0.5\nunknown: {rate_limit_kbps: 512}\n"
                          "categories:\n  camera: block\n  plug: {rate_limit_kbps: 64}\n"
                          "  hub: {allow_pools: [10.20.0.0/16, 52.94.0.0/16]}\n  speaker: {priority: 1, dscp: 46}\n",
                          "bench")
    # five switches of 48 ports (the default caps allow 2,048 devices a switch, 256 a port)
    switches = 5
    core = Core(Settings(decide_min_packets=1), policy)
    for dpid in range(1, switches + 1):
        core.switch_up(dpid, range(1, 49), 0)
    rows = []
    for i in range(n):
        mac = 0x3C0000000000 + (i * 7919 % (1 << 24)) * 256 + i % 256   # varied OUIs
        frame = ether(mac, 0x02FFFFFFFFFF, 0x0800, udp4("10.0.0.2", "52.1.2.3", 40000, 443, bytes(60)))
        rows.append((1 + i % switches, 1 + (i // switches) % 48, cookie(CookieKind.LEARN), len(frame),
                     1_000_000_000 + i, frame))
    for i in range(0, len(rows), 4096):
        core.packet_ins(PacketInBatch.from_rows(rows[i:i + 4096]), 1_000_000_000)
    macs = list(core.devices)
    mirror = [(r[0], r[1], cookie(CookieKind.MIRROR, int.from_bytes(r[5][6:12], "big")), r[3], 2_000_000_000 + k,
               r[5]) for k, r in enumerate(rows)]
    for i in range(0, len(mirror), 4096):
        core.packet_ins(PacketInBatch.from_rows(mirror[i:i + 4096]), 2_000_000_000)
    cats = ["camera", "plug", "hub", "speaker", "light", "sensor", "non-iot", "unknown"]
    decided = []
    for k, mac in enumerate(macs):
        if k % 10 == 9:
            continue                      # still learning
        cat = cats[k % len(cats)]
        stage = UNKNOWN if cat == "unknown" else (PROVISIONAL if k % 3 == 0 else CONFIRMED)
        d = Decision(cat, 0.55 + (k % 40) / 100, stage, "session+segment@bench",
                     f"sessions: #16 vendor-{k % 13}-cloud (0.4{k % 10}), #9 AMAZON-02 (0.22); "
                     f"segments: n_total (+0.31), mean_size (-0.04)", {"packets": 120 + k % 50, "sessions": 9,
                                                                      "segments": 6})
        core.decision_made(mac, d, 3_000_000_000 + k)
        decided.append((mac, d))
    return core, decided


def fill_inventory(path: str, core, decided, per_device: int) -> None:
    from controller_app.inventory import Inventory
    inv = Inventory(path)
    inv.upsert_devices(list(core.devices.values()))
    with inv.lock:
        rows = []
        for j in range(per_device):
            for mac, d in decided:
                rows.append((f"{mac:012x}", 3.0 + j, d.category, d.confidence, d.stage, d.model, d.explanation,
                             json.dumps(d.evidence)))
        rows = [(":".join(m[i:i + 2] for i in range(0, 12, 2)), *rest) for m, *rest in rows]
        inv.db.executemany("INSERT INTO decisions (mac, ts, category, confidence, stage, model, explanation, "
                           "evidence) VALUES (?,?,?,?,?,?,?,?)", rows)
        inv.db.commit()
    inv.close()


def fill_traffic(core, samples: int = 90):
    """A traffic history with ``samples`` rates for every device, from as many flow-stats
    replies (built one at a time, outside the measured time); the CPU time of each reply."""
    from controller_app.intents import CookieKind, cookie
    from controller_app.traffic import TrafficHistory
    th = TrafficHistory(samples)
    edge = {m: d.dpid for m, d in core.devices.items()}.get
    per_switch: dict = {}
    for mac, d in core.devices.items():
        per_switch.setdefault(d.dpid, []).append(cookie(CookieKind.HOST, mac))
    times = []
    for s in range(samples + 1):                # a reading of every switch: one reply each
        cpu = 0.0
        for dpid, cookies in per_switch.items():
            entries = []
            for k, c in enumerate(cookies):
                entries.append((2, c, s * 10, s * (1000 + k), 10.0 * s + 1))
                entries.append((3, c, s * 20, s * (3000 + k), 10.0 * s + 1))
            t = time.thread_time()
            th.add(dpid, entries, 1000.0 + 10 * s, False, edge)
            cpu += time.thread_time() - t
        times.append(cpu)
    return th, times


def traffic_bytes_per_device(core, samples: int = 90) -> float:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    th, _ = fill_traffic(core, samples)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    n = len(th)
    del th
    return used / max(n, 1)


CLIENT = """
import sys, time, urllib.request
for line in sys.stdin:
    t = time.perf_counter()
    with urllib.request.urlopen(line.strip(), timeout=60) as r:
        n = len(r.read())
    print(f"{(time.perf_counter() - t) * 1000:.3f} {n}", flush=True)
"""


class Client:
    """A fetching process: one URL a line in, "ms bytes" a line out."""

    def __init__(self):
        import subprocess
        self.proc = subprocess.Popen([sys.executable, "-c", CLIENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)

    def get(self, url: str) -> tuple[float, int]:
        self.proc.stdin.write(url + "\n")
        self.proc.stdin.flush()
        ms, n = self.proc.stdout.readline().split()
        return float(ms), int(n)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


def _summary(ms: list) -> dict:
    ms = sorted(ms)
    return {"median_ms": statistics.median(ms), "p95_ms": ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))],
            "max_ms": ms[-1]}


def run(n: int, per_device: int, requests: int) -> dict:
    from controller_app.observe import Metrics, Observer
    from controller_app.web import WebUI, device_records, no_vendor, oui_vendors, rules_state

    t = time.perf_counter()
    core, decided = build_core(n)
    build_s = time.perf_counter() - t
    settings = core.settings
    # the event loop's side: publishing the records (before the page: records alone)
    pub, pub_base = [], []
    for _ in range(9):                  # CPU time of this thread (the event loop's work, not the machine's load)
        t = time.thread_time()
        devices, rules = device_records(core, settings)
        pub.append((time.thread_time() - t) * 1000)
        t = time.thread_time()
        for d in core.devices.values():
            r = d.to_record()
            r["dpid"] = None if d.dpid is None else f"{d.dpid:016x}"
            b = core.learner.buffers.get(d.mac)
            r["mirrored_packets"] = 0 if b is None else b.n
        pub_base.append((time.thread_time() - t) * 1000)
    assert rules and rules_state(next(iter(core.devices.values())), settings) is not None
    folder = Path(tempfile.mkdtemp(prefix="iot-bench-web-"))
    inv = str(folder / "inventory.sqlite")
    fill_inventory(inv, core, decided, per_device)
    traffic, add_times = fill_traffic(core)
    status = {"switches": [f"{d:016x}" for d in sorted(core.state.switches)], "devices": n, "learning": sum(1 for d in core.devices.values()
                                                                              if d.mirroring)}
    policy = core.policy.summary()
    obs = Observer(Metrics(), inv)
    t = time.perf_counter()
    registry = oui_vendors()            # the vendor look-up the app builds at start (the IEEE registry)
    out_registry = {"vendor_registry_load_s": time.perf_counter() - t,
                    "vendor_registry": registry is not no_vendor}
    obs.web = WebUI(obs.view, inventory_path=inv, traffic=traffic, vendor_of=registry)
    cpu: list = []
    handle = obs.web.handle

    def timed(*a, **kw):
        t = time.thread_time()
        try:
            return handle(*a, **kw)
        finally:
            cpu.append((time.thread_time() - t) * 1000)
    obs.web.handle = timed
    obs.publish(status, devices, policy, rules)
    port = obs.start("127.0.0.1", 0)
    base = f"http://127.0.0.1:{port}"
    client = Client()
    _get = client.get
    some = [d["mac"] for d in devices[:: max(1, n // 50)]]
    queries = {
        "list: last seen (the default)": "/api/devices",
        "list: by category, offset 5000": "/api/devices?sort=category&offset=5000",
        "list: filter 'camera', by vendor": "/api/devices?q=camera&sort=vendor",
        "list: plug+confirmed, by confidence": "/api/devices?category=plug&stage=confirmed&sort=confidence&order=desc",
        # the same filter and sort without vendor names (the page before the registry): the baseline
        "list: filter 'camera', by vendor, no names": "/api/devices?q=camera&sort=vendor",
    }
    load = os.getloadavg()
    out: dict = {**out_registry, "cores": os.cpu_count(), "loadavg_start": load[0], "devices": n, "decisions": len(decided) * per_device, "build_core_s": build_s,
                 "publish_ms": _summary(pub), "publish_records_only_ms": _summary(pub_base),
                 "traffic_reply_ms": _summary([x * 1000 for x in add_times[1:]]), "requests": {}}
    try:
        for label, path in queries.items():
            obs.web.vendor_of = no_vendor if label.endswith("no names") else registry
            fresh, cached, fresh_cpu, cached_cpu, size = [], [], [], [], 0
            for _ in range(requests):
                devs2, rules2 = list(devices), list(rules)     # a new snapshot: a new list, as each tick
                obs.publish(status, devs2, policy, rules2)
                ms, size = _get(base + path)
                fresh.append(ms)
                fresh_cpu.append(cpu[-1])
                ms, _ = _get(base + path)
                cached.append(ms)
                cached_cpu.append(cpu[-1])
            out["requests"][label] = {"fresh": _summary(fresh), "cached": _summary(cached),
                                      "fresh_cpu": _summary(fresh_cpu), "cached_cpu": _summary(cached_cpu),
                                      "bytes": size}
        dev, dev_cpu = [], []
        for k in range(requests):
            ms, size = _get(f"{base}/api/devices/{some[k % len(some)]}")
            dev.append(ms)
            dev_cpu.append(cpu[-1])
        out["requests"]["device page: /api/devices/MAC"] = {"fresh": _summary(dev), "fresh_cpu": _summary(dev_cpu),
                                                            "bytes": size}
        base_ms = []
        for _ in range(max(5, requests // 4)):
            ms, size = _get(base + "/devices")
            base_ms.append(ms)
        out["baseline /devices (every device)"] = {**_summary(base_ms), "bytes": size}
    finally:
        client.close()
        obs.stop()
    del traffic
    out["traffic_bytes_per_device"] = traffic_bytes_per_device(core)
    out["loadavg_end"] = os.getloadavg()[0]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.web", description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--decisions", type=int, default=3, help="decisions per decided device in the inventory")
    ap.add_argument("--requests", type=int, default=40, help="requests per query")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    r = run(args.devices, args.decisions, args.requests)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"{r['devices']} devices ({r['decisions']} decisions in the inventory); core built in "
          f"{r['build_core_s']:.1f} s; {args.requests} requests a query, each on a new connection; "
          f"{r['cores']} cores, load average {r['loadavg_start']:.1f} at the start, {r['loadavg_end']:.1f} at the end")
    print(f"vendor names: " + (f"IEEE registry, read once in {r['vendor_registry_load_s']:.2f} s" if r["vendor_registry"]
                               else "no registry on this machine (ieee-data, libwireshark-data): none"))
    print(f"{'':46s} {'wall clock at the client':>26s}   {'server CPU':>18s}")
    print(f"{'':46s} {'median':>8s} {'p95':>8s} {'max':>8s}   {'median':>8s} {'p95':>8s}   (ms)")
    worst = worst_cpu = 0.0
    for label, v in r["requests"].items():
        for kind in ("fresh", "cached"):
            if kind in v:
                s, c = v[kind], v[f"{kind}_cpu"]
                worst = max(worst, s["p95_ms"])
                worst_cpu = max(worst_cpu, c["p95_ms"])
                name = f"{label} [{kind}]" if "list" in label else label
                print(f"  {name:44s} {s['median_ms']:8.1f} {s['p95_ms']:8.1f} {s['max_ms']:8.1f}   "
                      f"{c['median_ms']:8.1f} {c['p95_ms']:8.1f}   {v['bytes'] / 1024:.0f} KB")
    b = r["baseline /devices (every device)"]
    print(f"  {'baseline: /devices (every device)':44s} {b['median_ms']:8.1f} {b['p95_ms']:8.1f} {b['max_ms']:8.1f}"
          f"   {'':8s} {'':8s}   {b['bytes'] / 1024:.0f} KB")
    p, pb = r["publish_ms"], r["publish_records_only_ms"]
    print(f"event loop, each tick (CPU): publishing the records {p['median_ms']:.1f} ms (the records alone, as "
          f"before the page: {pb['median_ms']:.1f} ms)")
    print(f"event loop, each traffic read (CPU): the flow-stats replies of {r['devices']} devices into the history "
          f"{r['traffic_reply_ms']['median_ms']:.1f} ms; the history holds "
          f"{r['traffic_bytes_per_device']:.0f} bytes a device (90 samples)")
    print(f"goal: the page's JSON under {GOAL_MS:.0f} ms: worst p95 wall clock {worst:.1f} ms "
          f"({'met' if worst < GOAL_MS else 'NOT met'}), worst p95 server CPU {worst_cpu:.1f} ms "
          f"({'met' if worst_cpu < GOAL_MS else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
