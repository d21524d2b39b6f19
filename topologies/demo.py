"""``make demo``: the whole product on real parts, in about two minutes.

Starts Open vSwitch (if it is not running) and a Mininet network (one switch, a host per
device, a gateway host), starts ``ryu-manager controller_app`` with the shipped default model
and a copy of ``policies/default.yaml``, replays a whole-home capture from
``../shared/datasets`` (a generated one where that is absent) 60 times faster than it was
recorded, and shows a live table of the devices the controller sees until the replay ends.
The operator page is up meanwhile (its address and a one-time operator token for pins are
printed first). Then a summary beside what the same model decides offline on the same traffic
at the controller's cadence (:func:`topologies.replay.simulate_decisions`), and everything it
started is stopped and removed.

    sudo make demo                      # or: sudo .venv/bin/python -m topologies.demo [options]
    --capture FILE --devices CSV        another capture and its labels (one gateway, by MAC)
    --minutes M                         how much of the capture to replay (default 45)
    --speedup K                         how much faster than real time (default 60)
    --http-port N                       the page's port (default 8080, or a free one if taken)
    --keep                              keep the controller and its page up after the replay
                                        (until Ctrl-C), and the working folder afterwards
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from topologies.harness import ROOT, LabError, free_port, tempdir, why_not_runnable
from topologies.replay import ReplayError, format_effects, plan_capture, plan_synthetic, simulate_decisions

HOME = "home/training_2023-5-26_1_13_9.pcapng.gz"
DECIDE_INTERVAL = 2.0       #: seconds between the controller's decision requests for a device (real time)


def _fmt_table(plan, devices: dict, ttr: dict, offline: dict | None = None) -> list[str]:
    head = ("MAC", "device", "true", "category", "conf", "stage", "action", "rules after") + \
        (("offline",) if offline is not None else ())
    rows = []
    for d in plan.devices:
        got = devices.get(d.mac) or {}
        stage = got.get("stage") or ("learning" if got else "not seen yet")
        conf = got.get("confidence")
        row = (d.mac, d.device[:28], d.category, got.get("category") or "-",
               f"{conf:.2f}" if got.get("category") else "-", stage, got.get("enforced") or "-",
               f"{ttr[d.mac]:.1f} s" if d.mac in ttr else "-")
        if offline is not None:
            row += ("/".join((offline.get(d.mac) or {}).get("final") or ("none",)),)
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    return [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]


class LiveTable:
    """Redraws the table in place on a terminal; elsewhere prints each change once."""

    def __init__(self, plan, speedup: float, out=sys.stdout):
        self.plan = plan
        self.speedup = speedup
        self.out = out
        self.tty = out.isatty()
        self.t0 = time.monotonic()
        self.seen: dict = {}
        self.lines = 0

    def __call__(self, sc) -> None:
        devices = sc.last_devices
        el = time.monotonic() - self.t0
        total = self.plan.duration_s / self.speedup
        status = (f"replay {min(el, total):5.1f} / {total:.0f} s  (capture time {min(el, total) * self.speedup / 60:5.1f} "
                  f"/ {self.plan.duration_s / 60:.0f} min, {self.speedup:g}x)   devices seen: "
                  f"{sum(1 for d in self.plan.devices if d.mac in devices)} / {len(self.plan.devices)}")
        if self.tty:
            text = [status, ""] + _fmt_table(self.plan, devices, sc.time_to_rules())
            if self.lines:
                self.out.write(f"\x1b[{self.lines}F\x1b[J")
            self.out.write("\n".join(text) + "\n")
            self.lines = len(text)
        else:
            for d in self.plan.devices:
                got = devices.get(d.mac)
                key = got and (got.get("category"), got.get("stage"), got.get("enforced"))
                if got and self.seen.get(d.mac) != key:
                    self.seen[d.mac] = key
                    what = (f"{got['category']} {got['confidence']:.2f} {got['stage']} -> {got.get('enforced') or 'not enforced yet'}"
                            if got.get("category") else "learning")
                    self.out.write(f"[{el:5.1f} s] {d.mac} {d.device}: {what}\n")
        self.out.flush()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--capture", help="capture to replay (default: ../shared/datasets/" + HOME + ")")
    ap.add_argument("--devices", help="its devices.csv")
    ap.add_argument("--minutes", type=float, default=45.0, help="minutes of the capture to replay (default 45)")
    ap.add_argument("--speedup", type=float, default=60.0, help="replay speed-up (default 60)")
    ap.add_argument("--http-port", type=int, default=8080, help="the operator page's port (default 8080, or a free "
                                                                 "one if 8080 is taken)")
    ap.add_argument("--keep", action="store_true", help="keep the controller and its page up after the replay "
                                                        "(until Ctrl-C), and the working folder")
    args = ap.parse_args(argv)
    reason = why_not_runnable()
    if reason:
        print(f"make demo: {reason.replace('end-to-end tests need', 'the demo needs')}", file=sys.stderr)
        return 1
    if args.speedup <= 0 or args.minutes <= 0:
        print("make demo: --speedup and --minutes must be positive", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(KeyboardInterrupt()))
    from classifier.shared import datasets_root
    from topologies.scenario import Scenario

    work = tempdir("iot-demo-")
    try:
        root = datasets_root()
        if args.capture:
            if not args.devices:
                print("make demo: --capture needs --devices (its devices.csv)", file=sys.stderr)
                return 2
            plan = plan_capture(args.capture, args.devices, work / "streams", duration_s=args.minutes * 60)
            source = args.capture
        elif root is not None and (root / HOME).exists():
            plan = plan_capture(root / HOME, root / "home" / "devices.csv", work / "streams",
                                duration_s=args.minutes * 60)
            source = f"{root / HOME} (a real home: 13 devices and a phone)"
        else:
            # generated devices carry burnt-in MACs of a vendor the shipped engine never saw
            # (RFC 7042's documentation block), so behaviour alone does not accept them: the
            # light, the hub and the sensor name themselves, as real ones do
            plan, _ = plan_synthetic(work / "synthetic", duration_s=args.minutes * 60, identity=True)
            source = ("a generated capture (../shared/datasets is absent): caricatures of 7 device types, "
                      "3 of which name themselves")
        ryu = Path(sys.executable).parent / "ryu-manager"
        command = [str(ryu)] if ryu.exists() else None
        shipped = ROOT / "policies" / "default.yaml"
        policy = work / "policy.yaml"            # pins from the page edit this copy, not the shipped file
        policy.write_text(shipped.read_text())
        token = secrets.token_urlsafe(18)
        tokens = work / "operator-tokens"
        tokens.write_text(f"demo:{token}\n")
        os.chmod(tokens, 0o600)
        port = args.http_port if _port_free(args.http_port) else free_port()
        print(f"capture : {source}, first {plan.duration_s / 60:.0f} min, {len(plan.devices)} devices")
        print(f"replay  : {args.speedup:g}x faster (about {plan.duration_s / args.speedup:.0f} s), one Mininet host "
              f"per device, tcpreplay, the gateway host for the router and the internet")
        print(f"control : ryu-manager controller_app, default model, a copy of {shipped.relative_to(ROOT)} "
              f"({policy}), --time-scale {args.speedup:g}")
        print(f"offline : the same model on the same traffic at the controller's cadence (a request every "
              f"{DECIDE_INTERVAL * args.speedup:g} s of capture time) ...")
        offline = simulate_decisions(plan, DECIDE_INTERVAL * args.speedup)
        print("starting Open vSwitch (if needed), Mininet and the controller ...")
        sc = Scenario(plan, work, policy, speedup=args.speedup, prefix="iotdemo", decide_interval=DECIDE_INTERVAL,
                      controller_command=command, http_port=port,
                      controller_args=["--web-pins", "--web-token-file", str(tokens), "--traffic-interval", "2"])
        with sc:
            print(f"controller up: http://127.0.0.1:{sc.controller.http_port}/status  (inventory "
                  f"{sc.controller.inventory})")
            print(f"operator page: http://127.0.0.1:{sc.controller.http_port}/ui/   (token for pins: {token})\n")
            table = LiveTable(plan, args.speedup)
            sc.replay(on_poll=table, poll_interval=1.0)
            devices = sc.devices()
            ttr = sc.time_to_rules()
            print("\nsummary")
            print("\n".join("  " + ln for ln in _fmt_table(plan, devices, ttr, offline)))
            right = sum(1 for d in plan.devices if (devices.get(d.mac) or {}).get("category") == d.category)
            unknown = sum(1 for d in plan.devices if (devices.get(d.mac) or {}).get("category") == "unknown")
            final = sum(1 for d in plan.devices if (devices.get(d.mac) or {}).get("stage") in ("confirmed", "unknown"))
            print(f"\n  {final} of {len(plan.devices)} devices decided ({right} with their own category, {unknown} "
                  f"unknown: a type the model does not know well enough)")
            same = sum(1 for d in plan.devices if (offline[d.mac]["final"] or (None, None))
                       == ((devices.get(d.mac) or {}).get("category"), (devices.get(d.mac) or {}).get("stage")))
            print(f"  {same} of {len(plan.devices)} end as the model decides offline on the same traffic (column "
                  f"'offline'; a replay's timing error and the mirror meter can move a decision)")
            if ttr:
                vals = sorted(ttr.values())
                med = vals[len(vals) // 2]
                print(f"  first packet -> policy rules on the switch: median {med:.1f} s of replay "
                      f"(= {med * args.speedup / 60:.0f} min of capture time)")
            st = sc.controller.get("/status")
            print(f"  packet-ins handled: {st['counters'].get('packet_ins', 0)}; rule changes: "
                  f"{st['counters'].get('rule_installs', 0)} installs, {st['counters'].get('rule_deletes', 0)} deletes")
            print(f"  {sc.effect_text()}")
            if sc.effects:
                print(f"  {format_effects(sc.effects)}")
            if args.keep:
                print(f"\nthe operator page stays up: http://127.0.0.1:{sc.controller.http_port}/ui/  (token for pins: "
                      f"{token}); Ctrl-C to stop")
                while sc.controller.proc is not None and sc.controller.proc.poll() is None:
                    time.sleep(1)
            print("\nstopping the controller and removing the network ...")
        print("done.")
        return 0
    except KeyboardInterrupt:
        if args.keep:
            print("\nstopped: everything the demo started has been stopped and removed")
            return 0
        print("\ninterrupted: everything the demo started has been stopped and removed", file=sys.stderr)
        return 130
    except (LabError, ReplayError, OSError) as exc:
        print(f"make demo: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
