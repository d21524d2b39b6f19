"""Controller benchmarks: mirrored packet-ins per second, and memory per confirmed device.

``python -m benchmarks.controller packet-ins [--packets N] [--pcap FILE] [--engine MOD:FN]``
    Runs the controller app (``ryu-manager controller_app``) and, in the same run, the baseline
    (``ryu-manager benchmarks.baseline``: an os-ken app that only parses each packet-in with
    os-ken's packet library), each pinned to one core, and drives each with the same load
    generator: a fake OpenFlow 1.3 switch on another core that sends N mirrored packet-ins
    (frames of a capture, truncated to 128 bytes, ``total_len`` = wire length) as fast as TCP
    takes them. os-ken's receive loop stops reading when an app's event queue is full, so
    the switch's sending rate is the app's processing rate. The time runs from the first
    byte sent to the moment every packet-in is processed: for the controller, when its
    /status endpoint counts N mirrored packet-ins decoded and filed (polled every 0.1 s, which
    the measured time includes); for
    the baseline, when the echo request sent after the burst is answered (os-ken answers it
    after parsing everything before it; at most 128 events are then still queued) and its
    count, logged at exit, must equal N.

``python -m benchmarks.controller memory [--devices N]``
    Memory per tracked device once its decision is confirmed (buffers dropped): tracemalloc
    of a core holding N confirmed devices, minus the same core with none, over N.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request

import numpy as np

from classifier.capture.packets import mac_to_int

from testing.fakeswitch import T_FLOW_MOD, FakeSwitch, packet_in
from controller_app.intents import CookieKind, Table, cookie

MIRROR_MAX_LEN = 128
EXTRA = [a for a in os.environ.get("IOT_BENCH_APP_ARGS", "").split() if a]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _frames(pcap: str | None, limit: int):
    """(data, wire_len, device MAC, in_port) per frame, from a capture (generated when none)."""
    from classifier.capture.reader import read_frames
    from testing.synth import default_network, network_records
    from classifier.capture.writer import write_pcap
    if pcap is None:
        net = default_network()
        tmp = tempfile.NamedTemporaryFile(suffix=".pcap", delete=False)
        with tmp:
            write_pcap(tmp, network_records(net, 1800.0, seed=3))
        pcap = tmp.name
        devices = [d.mac for d in net.devices]
    else:
        devices = None
    fr = read_frames(pcap)
    from classifier.capture.decode import decode
    pk = decode(fr)
    if devices is None:
        from classifier.features.devices import split_devices
        view = split_devices(pk)
        devices = view.mac_strings()
    dev_ints = {mac_to_int(d) for d in devices}
    ports = {m: i + 1 for i, m in enumerate(sorted(dev_ints))}
    out = []
    for i in range(min(len(fr.offset), limit)):
        src, dst = int(pk.eth_src[i]), int(pk.eth_dst[i])
        owner = src if src in dev_ints else (dst if dst in dev_ints else None)
        if owner is None:
            continue
        o = int(fr.offset[i])
        data = bytes(fr.buf[o:o + int(fr.caplen[i])])
        out.append((data, int(fr.wirelen[i]), owner, ports[owner] if owner == src else 0))
    return out, ports


def _start(app: str, port: int, args: list[str], core: int, log_path: str, env_extra: dict) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(env_extra)
    cmd = [sys.executable, "-m", "controller_app.manager", app, "--ofp-tcp-listen-port", str(port),
           "--ofp-listen-host", "127.0.0.1", *args]
    fh = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        os.sched_setaffinity(proc.pid, {core})
    except (AttributeError, OSError):
        pass
    return proc


def _stop(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    proc.send_signal(2)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _status(http_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/status", timeout=5) as r:
        return json.loads(r.read())


def run_packet_ins(n: int, pcap: str | None, engine: str, env_extra: dict, cores=(0, 1)) -> dict:
    frames, ports = _frames(pcap, 10**9)
    if not frames:
        raise SystemExit("no device frames in the capture")
    burst_parts = []
    for i in range(n):
        data, wire, owner, in_port = frames[i % len(frames)]
        burst_parts.append(packet_in(data[:MIRROR_MAX_LEN], in_port or 99, cookie(CookieKind.MIRROR, owner),
                                     int(Table.MIRROR), wire))
    burst = b"".join(burst_parts)
    del burst_parts
    try:
        os.sched_setaffinity(0, {cores[1]})
    except (AttributeError, OSError):
        pass
    results = {"packets": n, "frames_in_capture": len(frames), "devices": len(ports), "burst_bytes": len(burst)}
    tmpdir = tempfile.mkdtemp(prefix="iot-bench-")

    # --- the controller app
    of_port, http_port = _free_port(), _free_port()
    log_app = os.path.join(tmpdir, "controller.log")
    proc = _start("controller_app", of_port, [
        "--engine", engine, "--inventory-db", os.path.join(tmpdir, "inv.sqlite"), "--http-port", str(http_port),
        "--decide-min-packets", str(10 * n), "--tick-interval", "0.1", "--default-log-level", "30",
        "--max-buffer-packets", str(2 * n), *EXTRA], cores[0], log_app, env_extra)
    try:
        sw = FakeSwitch("127.0.0.1", of_port, dpid=1, ports=sorted(ports.values()) + [99])
        sw.wait_for(lambda r: sum(m.type == T_FLOW_MOD for m in r) >= 6)
        for mac, p in ports.items():   # teach the controller every device: it starts mirroring them
            learn = (0xFFFFFFFFFFFF).to_bytes(6, "big") + mac.to_bytes(6, "big") + b"\x08\x06" + bytes(28)
            sw.send(packet_in(learn, p, cookie(CookieKind.LEARN), int(Table.ETH_SRC), len(learn)))
        want = set(ports)
        sw.wait_for(lambda r: want <= {_mac_of(m) for m in r if m.type == T_FLOW_MOD and m.parsed is not None
                                       and m.parsed.table_id == Table.MIRROR})
        time.sleep(0.5)
        base = _status(http_port)["counters"].get("packet_ins_mirror", 0)
        t0 = time.monotonic()
        sw.send(burst)
        t_echo = sw.echo()
        deadline = time.monotonic() + 120
        got = base
        while time.monotonic() < deadline:
            got = _status(http_port)["counters"].get("packet_ins_mirror", 0)
            if got - base >= n:
                break
            time.sleep(0.1)
        t_done = time.monotonic()
        st = _status(http_port)
        sw.close()
    finally:
        rc = _stop(proc)
    results["controller"] = {"seconds": t_done - t0, "echo_seconds": t_echo - t0, "processed": got - base,
                             "packet_ins_per_s": (got - base) / (t_done - t0), "exit_status": rc,
                             "errors": {k: v for k, v in st["counters"].items() if "malformed" in k or "unexp" in k}}

    # --- the baseline: os-ken's packet library only
    of_port = _free_port()
    log_base = os.path.join(tmpdir, "baseline.log")
    proc = _start("benchmarks.baseline", of_port, [], cores[0], log_base, env_extra)
    try:
        sw = FakeSwitch("127.0.0.1", of_port, dpid=1, ports=sorted(ports.values()) + [99])
        sw.wait_for(lambda r: True)   # connected
        time.sleep(1.0)               # handshake done (features, port description)
        t0 = time.monotonic()
        sw.send(burst)
        t_echo = sw.echo()
        sw.close()
    finally:
        rc = _stop(proc)
    with open(log_base) as fh:
        m = re.findall(r"baseline parsed (\d+) packet-ins", fh.read())
    parsed = int(m[-1]) if m else -1
    results["baseline"] = {"seconds": t_echo - t0, "parsed_at_exit": parsed,
                           "packet_ins_per_s": n / (t_echo - t0), "exit_status": rc}
    results["ratio"] = results["controller"]["packet_ins_per_s"] / results["baseline"]["packet_ins_per_s"]
    results["logs"] = tmpdir
    return results


def _mac_of(msg) -> int | None:
    try:
        return mac_to_int(dict(msg.parsed.match.items()).get("eth_src", ""))
    except ValueError:
        return None


def run_memory(n_devices: int) -> dict:
    """Bytes per confirmed device: a core with ``n_devices`` learned, mirrored a little,
    decided (confirmed, buffers dropped), minus the same core without devices (after a
    warm-up run, so that module imports and one-time caches are not counted)."""
    from classifier.engine.decision import CONFIRMED, Decision
    from testing.synth import ether, udp4

    from controller_app.core import Core, PacketInBatch, Settings

    def build(n: int):
        core = Core(Settings(decide_min_packets=1, max_hosts_per_port=10**9, max_hosts_per_switch=10**9,
                             max_mirrored=10**9))
        core.switch_up(1, range(1, 49), 0)
        rows = []
        for i in range(n):
            mac = 0x020000000000 + i + 1
            frame = ether(mac, 0x02FFFFFFFFFF, 0x0800, udp4("10.0.0.2", "52.1.2.3", 40000, 443, bytes(60)))
            rows.append((1, 1 + i % 48, cookie(CookieKind.LEARN), len(frame), 1_000_000_000, frame))
        for i in range(0, len(rows), 4096):
            core.packet_ins(PacketInBatch.from_rows(rows[i:i + 4096]), 1_000_000_000)
        mirror = [(1, r[1], cookie(CookieKind.MIRROR, mac_to_int_safe(r[5])), r[3], 2_000_000_000 + k, r[5])
                  for k, r in enumerate(rows) for _ in range(3)]
        for i in range(0, len(mirror), 4096):
            core.packet_ins(PacketInBatch.from_rows(mirror[i:i + 4096]), 2_000_000_000)
        learning_bytes = core.learner.nbytes()
        for mac in list(core.devices):
            core.decision_made(mac, Decision(sys.intern("plug"), 0.93, CONFIRMED, "model-v1", "x"), 3_000_000_000)
        return core, learning_bytes

    warm, _ = build(200)      # imports and one-time caches happen here, outside the measurement
    del warm
    gc.collect()
    tracemalloc.start()
    empty, _ = build(0)
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    core, learning_bytes = build(n_devices)
    gc.collect()
    full = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(core.devices) == n_devices and not core.learner.buffers
    per = (full - base) / n_devices
    return {"devices": n_devices, "bytes_per_confirmed_device": per, "total_bytes": full - base,
            "mirrored_bytes_per_learning_device": learning_bytes / max(n_devices, 1), "goal_bytes": 2048,
            "_keep": id(empty)}


def mac_to_int_safe(frame: bytes) -> int:
    return int.from_bytes(frame[6:12], "big")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.controller", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    a = sub.add_parser("packet-ins", help="packet-ins/s: the controller app vs a minimal os-ken app")
    a.add_argument("--packets", type=int, default=200_000)
    a.add_argument("--pcap", help="capture whose frames are mirrored (default: a generated one)")
    a.add_argument("--engine", default="classifier.engine.engine:load_engine",
                   help="engine factory for the app (it is never called: --decide-min-packets exceeds N)")
    a.add_argument("--repeat", type=int, default=3, help="runs of each app; the median is reported")
    a.add_argument("--json", action="store_true")
    b = sub.add_parser("memory", help="bytes per confirmed device")
    b.add_argument("--devices", type=int, default=20_000)
    b.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.what == "packet-ins":
        runs = [run_packet_ins(args.packets, args.pcap, args.engine, {}) for _ in range(max(1, args.repeat))]
        r = dict(runs[0])
        for key in ("controller", "baseline"):
            rates = sorted(x[key]["packet_ins_per_s"] for x in runs)
            r[key] = dict(sorted(runs, key=lambda x: x[key]["packet_ins_per_s"])[len(runs) // 2][key])
            r[key]["runs_packet_ins_per_s"] = [round(v) for v in rates]
        r["ratio"] = r["controller"]["packet_ins_per_s"] / r["baseline"]["packet_ins_per_s"]
        if args.json:
            print(json.dumps(r, indent=2))
        else:
            c, bl = r["controller"], r["baseline"]
            print(f"{r['packets']} mirrored packet-ins ({r['devices']} devices), each app pinned to one core, "
                  f"median of {len(c['runs_packet_ins_per_s'])} runs")
            print(f"  controller_app:          {c['packet_ins_per_s']:10,.0f} packet-ins/s "
                  f"({c['processed']} decoded and filed in {c['seconds']:.2f} s; runs {c['runs_packet_ins_per_s']})")
            print(f"  os-ken parse-only app:   {bl['packet_ins_per_s']:10,.0f} packet-ins/s "
                  f"({bl['parsed_at_exit']} parsed in {bl['seconds']:.2f} s; runs {bl['runs_packet_ins_per_s']})")
            print(f"  ratio controller/baseline: {r['ratio']:.2f}   (goal: controller >= 150,000/s)")
    else:
        r = run_memory(args.devices)
        r.pop("_keep", None)
        if args.json:
            print(json.dumps(r, indent=2))
        else:
            print(f"{r['devices']} confirmed devices: {r['bytes_per_confirmed_device']:.0f} bytes each "
                  f"(goal <= 2048); while learning they held {r['mirrored_bytes_per_learning_device']:.0f} "
                  "bytes of mirrored packets each, dropped at confirmation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
