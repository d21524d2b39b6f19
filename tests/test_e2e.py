"""End to end on Mininet and Open vSwitch (userspace datapath): real captures (or generated
ones where ../shared is absent) replayed by tcpreplay from one host per device, through the
controller (``ryu-manager controller_app``, the shipped default model), and what the switch
and the gateway host show afterwards.

Module ``home``: one switch, every device of a whole-home capture, speed-up 60. Module ``two``:
two switches, a generated capture's devices on both. Every figure measured here is printed
at the end of the run (see ``conftest.py``: "end-to-end figures")."""

from __future__ import annotations

import math
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from lab_required import require_lab  # noqa: E402

require_lab()

from classifier.capture.packets import mac_to_int  # noqa: E402
from classifier.shared import datasets_root  # noqa: E402
from controller_app.intents import CookieKind, Table  # noqa: E402
from controller_app.pipeline import PRIO_MIRROR_DST, PRIO_MIRROR_SRC  # noqa: E402
from controller_app.inventory import read_inventory  # noqa: E402
from topologies import ovs  # noqa: E402
from topologies.replay import format_effects, plan_capture, plan_synthetic, simulate_decisions  # noqa: E402
from topologies.scenario import (GatewayTap, Scenario, mirror_flows, policy_flows, steady_kbps,  # noqa: E402
                                 write_probe)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SPEEDUP = 60.0
DECIDE_INTERVAL = 2.0
HOME_CAPTURE = "home/training_2023-5-26_1_13_9.pcapng.gz"
HOME_WINDOW_S = 2700.0          # 45 min of the capture: 45 s of replay at 60x
SYNTH_WINDOW_S = 1800.0
FINAL = ("confirmed", "unknown")

LAN = ("[10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 169.254.0.0/16, 224.0.0.0/4, 255.255.255.255/32, fc00::/7, "
       "fe80::/10, ff00::/8]")
CATEGORIES = {"camera": "block", "plug": "{rate_limit_kbps: 256}", "light": "{priority: 1, dscp: 46}",
              "non-iot": "allow"}


#: These tests exercise the categories' actions on whatever the engine decides, also for devices
#: decided on their own claims (the generated light, hub and sensor name themselves): the policy
#: trusts every category's claims. That claims alone only tighten is tested in test_e2e_claims.py.
TRUST = "[camera, plug, hub, sensor, light, speaker, lock, appliance, non-iot]"


def policy_text(categories: dict | None = None, unknown: str = "{rate_limit_kbps: 1024}") -> str:
    cats = dict(CATEGORIES) if categories is None else categories
    return ("# end-to-end tests: cameras blocked, plugs rate-limited, lights marked; unknown devices limited\n"
            f"version: 1\nenforce_on: confirmed\nmin_confidence: 0.8\nlan: {LAN}\ndefault: allow\n"
            f"trust_claims: {TRUST}\n"
            f"unknown: {unknown}\ncategories:\n" + "".join(f"  {c}: {a}\n" for c, a in cats.items()))


POLICY = policy_text()


def report(request, key: str, value) -> None:
    """A measured figure, printed at the end of the run (conftest's terminal summary)."""
    request.config.e2e_figures.append((key, value))


def wait_for(pred, timeout: float, what: str, interval: float = 0.25, explain=None):
    """Poll ``pred()`` until it is true; on time-out an AssertionError naming ``what``, with
    ``explain()`` (what the last poll saw) where given."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s" + (f"\n{explain()}" if explain else ""))
        time.sleep(interval)


# ------------------------------------------------------------------ the home scenario


@pytest.fixture(scope="module")
def home(request, tmp_path_factory):
    """A whole home, replayed once for the module (about 1.5 minutes)."""
    work = tmp_path_factory.mktemp("e2e-home")
    root = datasets_root()
    if root is not None and (root / HOME_CAPTURE).exists():
        plan = plan_capture(root / HOME_CAPTURE, root / "home" / "devices.csv", work / "streams",
                            duration_s=HOME_WINDOW_S)
        source = f"shared capture {HOME_CAPTURE}, first {HOME_WINDOW_S:g} s"
    else:
        # the light, hub and sensor name themselves (testing.synth.IDENTITY): two plainly allowed
        # categories (hub, sensor) decided whatever the model makes of the other caricatures,
        # for the tests' policy roles
        plan, _ = plan_synthetic(work / "synthetic", duration_s=SYNTH_WINDOW_S, identity=True)
        source = f"generated capture (../shared absent), {SYNTH_WINDOW_S:g} s"
    sim = simulate_decisions(plan, DECIDE_INTERVAL * SPEEDUP)
    policy = work / "policy.yaml"
    policy.write_text(POLICY)
    sc = Scenario(plan, work, policy, speedup=SPEEDUP, prefix="iote2e", decide_interval=DECIDE_INTERVAL,
                  # the module's tests run for minutes after the replay and compare rules and decision
                  # counts before and after: unknown devices' re-examinations (every 5 min by default,
                  # tested in the core) would add decisions meanwhile
                  controller_args=["--mirror-max-len", "128", "--unknown-recheck-interval", "3600"])
    sc.source = source
    sc.sim = sim
    sc.policy_path = policy
    sc.openflow_capture = work / "openflow.pcapng"
    with sc:
        of = subprocess.Popen(["dumpcap", "-q", "-i", "lo", "-f", f"tcp dst port {sc.controller.of_port}",
                               "-w", str(sc.openflow_capture)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            t = time.monotonic()
            sc.replay()
            sc.replay_s = time.monotonic() - t
        finally:
            of.terminate()
            of.wait(10)
        report(request, "home: source", f"{source}; {len(plan.devices)} devices, speed-up {SPEEDUP:g}, "
                                        f"replay {sc.replay_s:.0f} s")
        yield sc


def final_devices(sc) -> dict:
    return {m: d for m, d in sc.devices().items() if d["stage"] in FINAL}


def check_categories(sc, real: bool) -> tuple[list, list, list]:
    """Each replayed device is in the controller's devices and its inventory, with a decision
    (or none where too few packets were mirrored or the engine said the evidence was too thin)
    whose category
    the model has (or ``unknown``). Real devices: their own category or ``unknown``,
    never another one. The devices the default model knows (its decisions offline, on the
    same traffic at the controller's cadence, end confirmed and right): at least two thirds
    come out right, the rest being borderline ones that the replay's timing error moves
    across the confirmation threshold. Generated devices are caricatures that the model often
    misreads, depending on when it is asked: the ones it knows come out with their category
    or ``unknown``; the others are not checked."""
    from classifier.engine.engine import load_engine
    classes = set(load_engine().classes) | {"unknown"}
    devs = sc.devices()
    inv = {r["mac"]: r for r in read_inventory(sc.controller.inventory)}
    pk = sc.plan.packets
    rows, known, known_right = [], [], []
    for d in sc.plan.devices:
        got = devs.get(d.mac)
        assert got is not None, f"{d.mac} ({d.device}) is not among the controller's devices"
        assert d.mac in inv, f"{d.mac} ({d.device}) is not in the inventory {sc.controller.inventory}"
        frames = int(((pk.eth_src == mac_to_int(d.mac)) | (pk.eth_dst == mac_to_int(d.mac))).sum())
        if got["category"] is None:
            # No decision is right only where the evidence was too thin: the controller asks from
            # 10 mirrored packets on, and the engine answers "not enough yet" below 3 sessions
            # and a full segment window (the replay's timing error can join a sparse device's
            # sessions, so the offline run at the same cadence is no guide here).
            assert got["mirrored_packets"] < 10 or got["thin_answers"] > 0, (
                f"{d.mac} ({d.device}, {frames} frames, {got['mirrored_packets']} mirrored) got no decision, "
                f"and the engine never said the evidence was too thin: {got}")
            rows.append(f"{d.mac} {d.device} ({d.category}): no decision ({frames} frames in the replay, "
                        f"{got['mirrored_packets']} mirrored, {got['thin_answers']} answers 'not enough evidence')")
            continue
        assert got["category"] in classes, got
        assert inv[d.mac]["category"] == got["category"] and inv[d.mac]["stage"] == got["stage"]
        sim = sc.sim[d.mac]
        rows.append(f"{d.mac} {d.device} ({d.category}): {got['category']} {got['confidence']:.2f} {got['stage']}; "
                    f"offline at the same cadence: {'/'.join(sim['final'] or ('none',))}")
        if sim["final"] == (d.category, "confirmed"):
            known.append(d.mac)
            if got["category"] == d.category:
                known_right.append(d.mac)
    if real:
        wrong = [f"{d.mac} ({d.device}, {d.category}): {devs[d.mac]['category']}" for d in sc.plan.devices
                 if devs[d.mac]["category"] not in (d.category, "unknown", None)]
        assert not wrong, "wrong categories: " + "; ".join(wrong) + "\n" + "\n".join(rows)
        assert len(known) >= 5, "the default model should know several of these devices:\n" + "\n".join(rows)
        assert len(known_right) >= math.ceil(2 * len(known) / 3), (
            f"only {len(known_right)} of the {len(known)} devices the model knows came out right:\n" + "\n".join(rows))
    else:
        wrong = [f"{m} ({devs[m]['category']})" for m in known
                 if devs[m]["category"] not in (sc.plan.device(m).category, "unknown")]
        assert not wrong, "generated devices the model knows came out wrong: " + "; ".join(wrong) + "\n" + \
            "\n".join(rows)
    return rows, known, known_right


def test_each_replayed_device_is_in_the_inventory_with_its_category_or_unknown(home, request):
    rows, known, known_right = check_categories(home, real=home.source.startswith("shared"))
    devs = home.devices()
    report(request, "home: decisions", "\n    " + "\n    ".join(rows))
    report(request, "home: right category", f"{sum(devs[d.mac]['category'] == d.category for d in home.plan.devices)}"
                                            f" of {len(home.plan.devices)} devices ({len(known_right)} of the "
                                            f"{len(known)} the model knows offline)")


def behaviour_mirror(flows, mac: str) -> list:
    """The device's behaviour mirror entries (its traffic both ways): a learning device's only.
    A device decided unknown keeps its identity entries (its identity protocols are read)."""
    return [f for f in mirror_flows(flows, mac) if f.priority in (PRIO_MIRROR_SRC, PRIO_MIRROR_DST)]


def expected_policy_text(action: str) -> dict:
    """What a device's table-0 entries must contain for the action the controller reports."""
    if action == "block":
        return {"actions": f"goto_table:{int(Table.MIRROR)}"}
    if action.startswith("rate_limit_kbps="):
        return {"actions_has": "meter:"}
    if action.startswith("priority="):
        return {"actions_has": "set_queue:"}
    return {"actions": "goto_table:1"}


def test_switch_holds_each_decided_devices_policy_rules_and_no_more_mirror_rules(home):
    # the devices first: a device decided by then had its rules sent before the dump (one decided
    # after it is left out, rather than found without rules)
    decided = final_devices(home)
    flows = ovs.dump_flows(home.lab.bridge(1))
    meters = ovs.dump_meters(home.lab.bridge(1))
    assert decided, "no device reached a final decision"
    for mac, d in decided.items():
        mine = policy_flows(flows, mac)
        action = d["enforced"]
        assert action, f"{mac}: final decision {d['category']}/{d['stage']} but no action in force"
        assert {f.table for f in mine} == {0, 1}, f"{mac}: policy entries in tables {sorted({f.table for f in mine})}"
        src = [f for f in mine if f.table == 0 and f.priority == 100]
        assert len(src) == 1 and f"dl_src={mac}" in src[0].match, f"{mac}: {[f.raw for f in mine]}"
        exp = expected_policy_text(action)
        if "actions" in exp:
            assert src[0].actions == exp["actions"], f"{mac} ({action}): {src[0].raw}"
        else:
            assert exp["actions_has"] in src[0].actions, f"{mac} ({action}): {src[0].raw}"
        if action.startswith("rate_limit_kbps="):
            meter_id = int(src[0].actions.split("meter:")[1].split(",")[0])
            assert meters[meter_id].unit == "kbps" and meters[meter_id].rate == int(action.split("=")[1])
        if action.startswith("priority="):
            assert "set_field:46->ip_dscp" in " ".join(f.actions for f in mine)
        # mirrored while it was learned, not any more (unless a new identity value re-opened an
        # unknown decision: mirrored again); an unknown device's identity protocols are still read
        assert home.rules[mac_to_int(mac)].mirror_seen, f"{mac}: its mirror entries were never seen"
        if d["mirroring"]:
            assert d["stage"] == "unknown" and home.controller.get("/status")["counters"].get("identity_reopened"), d
            continue
        assert not behaviour_mirror(flows, mac), f"{mac}: still mirrored after a final decision"
        identity = mirror_flows(flows, mac)
        assert len(identity) == (10 if d["stage"] == "unknown" else 0), f"{mac} ({d['stage']}): {identity}"


def test_time_from_first_packet_to_rules_installed_is_measured(home, request):
    ttr = home.time_to_rules()
    # the devices with a final decision by the replay's last look at the switch: the rules were
    # watched for until then (a learning device's "unknown" waits for its identity probes, and
    # can be decided after the replay)
    decided = [m for m, d in home.last_devices.items() if d["stage"] in FINAL]
    assert decided, "no device reached a final decision during the replay"
    missing = [m for m in decided if m not in ttr]
    assert not missing, f"devices with a final decision during the replay but no policy entry seen: {missing}"
    vals = np.array(list(ttr.values()))
    assert (vals > 0).all(), ttr
    # generous: everything happens within the replay (plus the settling time)
    assert vals.max() < home.replay_s + 10, ttr
    rows = [f"{m} {home.plan.device(m).device}: {s:.1f} s (= {s * SPEEDUP / 60:.0f} min of capture time)"
            for m, s in sorted(ttr.items(), key=lambda kv: kv[1])]
    report(request, "home: first packet -> policy rules installed",
           f"median {np.median(vals):.1f} s real at speed-up {SPEEDUP:g} (= {np.median(vals) * SPEEDUP / 60:.1f} min "
           f"of capture time), min {vals.min():.1f} s, max {vals.max():.1f} s\n    " + "\n    ".join(rows))


def test_replay_timing_and_its_effect_on_features_are_measured(home, request):
    eff = home.effects
    assert eff is not None and eff["seen"] > 0
    # everything sent towards the gateway host and not dropped by the policy arrives
    assert eff["timing_error_s"]["median"] < 60, format_effects(eff)     # generous: one idle timeout
    report(request, "home: what the speed-up does", home.effect_text())
    report(request, "home: measured", format_effects(eff) + f"; tcpreplay first frames late by "
                                      f"{1000 * eff['start_late_real_s']['median']:.0f} ms (median, real time)")


def test_packet_ins_carry_the_wire_length(home, request):
    """Every mirrored packet-in's total_len is the length of a frame the device's stream really
    had; OVS sends the whole frame (OpenFlow 1.3: an unbuffered packet-in carries the entire
    packet), so its data is as long as total_len, whatever max_len the flow asks for."""
    # When the controller reads late (under load) the switch's TCP segments grow to 64 KiB on
    # loopback, a hundred packet-ins and more each. tshark (4.0) then crawls for minutes: past its
    # tree depth (500 layers a frame: some thousand packet-ins of about 8 layers fit in 64 KiB) it
    # fails an assertion, and its reassembly of OpenFlow messages across such segments slows down
    # quadratically. Neither is needed here: the lengths checked are the headers', so messages are
    # not reassembled (one split across segments is read from its first part, where its header and
    # match are; tshark's PDU tracking skips the rest in the next segment).
    out = subprocess.run(["tshark", "-o", "gui.max_tree_depth:100000", "-o", "openflow.desegment:FALSE",
                          "-r", str(home.openflow_capture), "-d",
                          f"tcp.port=={home.controller.of_port},openflow", "-Y", "openflow_v4.type == 10",
                          "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=;", "-e", "openflow_v4.type",
                          "-e", "openflow_v4.packet_in.cookie", "-e", "openflow_v4.packet_in.total_len",
                          "-e", "openflow_v4.length", "-e", "openflow_v4.match.length"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-500:]
    seen, mixed = [], 0
    for line in out.stdout.splitlines():
        cols = [c.split(";") for c in line.split("\t")]
        if len(cols) != 5:
            continue
        # a TCP segment holds several messages, each field's values in message order: the header's
        # (type, length) for every message, the packet-in's cookie and total_len for packet-ins only,
        # a match length for every match (packet-ins, flow-removed messages, flow-stats replies: the
        # traffic counters). Lengths are the packet-ins' by their type; a segment with a message
        # whose match is not a packet-in's, or a packet-in cut before its match, is left out (its
        # values cannot be paired: a few under load)
        types, cks, tls, lns, mls = cols
        pin = [i for i, t in enumerate(types) if t == "10"]
        if ({"11", "19"} & set(types) or len(lns) != len(types)
                or not (len(cks) == len(tls) == len(mls) == len(pin))):
            mixed += 1
            continue
        for ck, tl, ln, ml in zip(cks, tls, [lns[i] for i in pin], mls):
            ck = int(ck, 16)
            if ck >> 56 != CookieKind.MIRROR:
                continue
            data_len = int(ln) - 8 - 16 - (int(ml) + 7) // 8 * 8 - 2
            seen.append((ck & 0xFFFFFFFFFFFF, int(tl), data_len))
    assert len(seen) > 100, f"only {len(seen)} mirrored packet-ins decoded from {home.openflow_capture}"
    pk = home.plan.packets
    lengths = {}
    for d in home.plan.devices:
        m = mac_to_int(d.mac)
        lengths[m] = set(pk.wire_len[(pk.eth_src == m) | (pk.eth_dst == m)].tolist())
    bad = [(hex(m), tl) for m, tl, _ in seen if tl not in lengths.get(m, ())]
    assert not bad, f"{len(bad)} packet-ins with a total_len no frame of their device has: {bad[:5]}"
    cut = [(hex(m), tl, dl) for m, tl, dl in seen if dl != tl]
    assert not cut, f"packet-ins whose data is not the whole frame: {cut[:5]}"
    big = sum(1 for _, tl, _ in seen if tl > 128)
    report(request, "home: mirrored packet-ins", f"{len(seen)} decoded ({mixed} TCP segments with other messages' "
                                                 f"matches left out): total_len = the frame's wire length for all; "
                                                 f"{big} frames over 128 bytes came whole (OVS ignores max_len=128 in "
                                                 f"unbuffered OpenFlow 1.3 packet-ins)")


def _roles(home):
    devs = home.devices()
    blocked = [m for m, d in devs.items() if d.get("enforced") == "block"]
    limited = sorted((int(d["enforced"].split("=")[1]), m) for m, d in devs.items()
                     if (d.get("enforced") or "").startswith("rate_limit_kbps="))
    allowed = sorted((m for m, d in devs.items() if d.get("enforced") == "allow" or
                      (d.get("enforced") or "").startswith("priority=")), key=lambda m: devs[m]["enforced"] != "allow")
    return blocked, limited, allowed


class policy_in_force:
    """Write a policy, wait until every device's action is what it says, and put the test
    policy back (and wait for its rules) on exit."""

    def __init__(self, home, text: str, expect: dict, timeout: float = 30):
        self.home, self.text, self.expect, self.timeout = home, text, expect, timeout

    def __enter__(self):
        self.decided = self._decisions()
        self.before = self._rules_by_device(list(self.decided))
        self.home.policy_path.write_text(self.text)
        wait_for(lambda: all(self.home.devices()[m]["enforced"] == a for m, a in self.expect.items()), self.timeout,
                 f"the new policy's actions {self.expect}")
        return self

    def _decisions(self) -> dict:
        return {m: (d["category"], d["stage"], d.get("claims_only")) for m, d in self.home.devices().items()}

    def _rules_by_device(self, macs) -> dict:
        bridge = self.home.lab.bridge(1)
        flows, meters = ovs.dump_flows(bridge), ovs.dump_meters(bridge)
        return {m: _policy_keys(flows, [m], meters) for m in macs}

    def __exit__(self, *exc):
        self.home.policy_path.write_text(POLICY)

        def back():
            # devices whose decision is the same as before the policy change (an undecided or unknown
            # device may be decided meanwhile: it keeps being watched; its rules then rightly change)
            now = self._decisions()
            same = [m for m, v in self.decided.items() if now.get(m) == v]
            rules = self._rules_by_device(same)
            return all(rules[m] == self.before[m] for m in same)
        wait_for(back, self.timeout, "the test policy's rules back")


def ensure(home, role: str):
    """Devices in ``role`` ("block", "rate" or "priority") under the test policy, or, when the
    replay left none there (generated devices are often misread), a policy that puts the
    category of a decided, allowed device there. Returns (context manager, devices, a device
    that is simply allowed)."""
    import contextlib
    blocked, limited, allowed = _roles(home)
    devs = home.devices()
    marked = [m for m in allowed if devs[m]["enforced"].startswith("priority=")]
    plain = [m for m in allowed if devs[m]["enforced"] == "allow"]
    have = {"block": blocked, "rate": limited, "priority": marked}[role]
    if have and plain:
        return contextlib.nullcontext(), have, plain[0]
    cats = {}
    for m in plain or allowed:
        cats.setdefault(devs[m]["category"], []).append(m)
    assert len(cats) >= 2, f"not enough decided, allowed devices of two categories to test with: {devs}"
    cat, other_cat = sorted(cats, key=lambda c: c == "non-iot")[:2]
    action, enforced = {"block": ("block", "block"), "rate": ("{rate_limit_kbps: 256}", "rate_limit_kbps=256"),
                        "priority": ("{priority: 1, dscp: 46}", "priority=1 dscp=46")}[role]
    ctx = policy_in_force(home, policy_text(dict(CATEGORIES, **{cat: action})), {m: enforced for m in cats[cat]})
    devices = [(256, m) for m in cats[cat]] if role == "rate" else cats[cat]
    return ctx, devices, cats[other_cat][0]


def _probe(home, mac: str, work: Path, count: int, size: int = 1000) -> Path:
    return write_probe(work / f"probe-{mac.replace(':', '')}.pcap", mac, home.plan.ip_of(mac) or "192.168.1.99",
                       home.plan.gateway.mac, home.plan.gateway_ip() or "192.168.1.1", count, size)


def test_blocked_category_delivers_nothing_to_the_gateway_after_enforcement(home, request):
    # 1. during the replay: frames the gateway host got from a blocked device after its block entry
    from classifier.capture.decode import read_packets
    replay_blocked, _, _ = _roles(home)
    got = read_packets(str(home.gw_capture))
    late = {}
    for mac in replay_blocked:
        installed = home.rules[mac_to_int(mac)].policy_installed_ns
        ts = got.ts_ns[got.eth_src == mac_to_int(mac)]
        late[mac] = {"after": int((ts > installed).sum()), "after_1s": int((ts > installed + 1_000_000_000).sum())}
    for mac in replay_blocked:       # nothing once the entry had taken effect (1 s for OVS to revalidate)
        assert late[mac]["after_1s"] == 0, f"{mac}: {late[mac]}"
    # 2. afterwards: 200 frames from each blocked device and from an allowed one, counted at the gateway
    ctx, blocked, other = ensure(home, "block")
    work = home.workdir / "probes"
    work.mkdir(exist_ok=True)
    bridge = home.lab.bridge(1)

    def block_counter(mac):
        return sum(f.n_packets for f in policy_flows(ovs.dump_flows(bridge), mac) if f.table == 0 and f.priority == 100)

    with ctx:
        before = {m: block_counter(m) for m in blocked}
        tap = GatewayTap(home.lab, work / "block.pcapng", [*blocked, other])
        for mac in [*blocked, other]:
            home.lab.run(home.host_of(mac), ["tcpreplay", "-q", "--pps", "200", "-i",
                                             home.lab.intf(home.host_of(mac)), str(_probe(home, mac, work, 200))])
        counted = tap.stop().frames()
        after = {m: block_counter(m) for m in blocked}
    for mac in blocked:
        assert len(counted[mac][0]) == 0, f"{mac} is blocked but {len(counted[mac][0])} frames reached the gateway"
        assert after[mac] - before[mac] >= 200, f"{mac}: the block entry counted {after[mac] - before[mac]} of 200"
    assert len(counted[other][0]) == 200, f"{other} (allowed): {len(counted[other][0])} of 200 frames delivered"
    how = "by the test policy" if replay_blocked else "by a reloaded policy (the replay left no device blocked)"
    report(request, "home: blocked devices", f"{len(blocked)} blocked {how} ({', '.join(blocked)}): 0 of 200 probe "
                                             f"frames each reached the gateway host, the block entries counted them all,"
                                             f" {other} (allowed) got 200 of 200 through; during the replay, frames "
                                             f"after the block entry's install: "
                                             + (", ".join(f"{m}: {v['after']}" for m, v in late.items()) or "-"))


def test_rate_limited_device_stays_within_ten_percent_of_its_limit_and_others_are_unaffected(home, request):
    ctx, limited, other = ensure(home, "rate")
    kbps, mac = limited[0]
    work = home.workdir / "probes"
    work.mkdir(exist_ok=True)
    offered_mbps = 3 * kbps / 1000
    seconds = 10
    with ctx:
        tap = GatewayTap(home.lab, work / "rate.pcapng", [mac, other])
        procs = []
        for m in (mac, other):
            h = home.host_of(m)
            procs.append(home.lab.popen(h, ["tcpreplay", "-q", "-K", "--mbps", f"{offered_mbps:g}", "--loop", "0",
                                            "--duration", str(seconds), "-i", home.lab.intf(h),
                                            str(_probe(home, m, work, 50))],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outs = [p.communicate(timeout=seconds + 30)[0] for p in procs]
        counted = tap.stop().frames()
    ts, ln = counted[mac]
    assert len(ts) > 10, f"{mac}: {len(ts)} frames delivered; tcpreplay said {outs[0][-300:]}"
    rate_kbps = steady_kbps(ts, ln)                     # without the meter's burst of about one second
    whole_kbps = ln.sum() * 8 / seconds / 1000          # with it
    assert abs(rate_kbps - kbps) <= 0.1 * kbps, f"{mac}: delivered {rate_kbps:.1f} kbps for a limit of {kbps} kbps"
    ots, oln = counted[other]
    sent_other = int(outs[1].split("Successful packets:")[1].split()[0]) if "Successful packets:" in outs[1] else None
    assert sent_other and len(ots) == sent_other, f"{other} (allowed): {len(ots)} of {sent_other} frames delivered"
    report(request, "home: rate limit", f"{mac} limited to {kbps} kbps, offered {offered_mbps * 1000:.0f} kbps for "
                                        f"{seconds} s: delivered {rate_kbps:.1f} kbps in steady state "
                                        f"({100 * (rate_kbps - kbps) / kbps:+.1f}%), {whole_kbps:.1f} kbps over the "
                                        f"{seconds} s with the meter's initial burst; {other} (allowed) at the same "
                                        f"time: {len(ots)} of {sent_other} frames delivered")


def test_priority_devices_frames_reach_the_gateway_marked_dscp_46(home, request):
    """``priority: 1, dscp: 46`` (lights in the test policy): the device's IPv4 frames reach the
    gateway host with DSCP 46 (EF); a plainly allowed device's keep theirs. (The queue part,
    set_queue, selects no egress queue on the userspace datapath: see docs/e2e.md.)"""
    ctx, marked, other = ensure(home, "priority")
    mac = marked[0]
    work = home.workdir / "probes"
    work.mkdir(exist_ok=True)
    with ctx:
        tap = GatewayTap(home.lab, work / "dscp.pcapng", [mac, other])
        for m in (mac, other):
            home.lab.run(home.host_of(m), ["tcpreplay", "-q", "--pps", "200", "-i", home.lab.intf(home.host_of(m)),
                                           str(_probe(home, m, work, 50))])
        dscp = tap.stop().ipv4_dscp()
    assert len(dscp[mac]) == 50 and set(dscp[mac]) == {46}, f"{mac}: DSCP {sorted(set(dscp[mac]))} on {len(dscp[mac])}"
    assert len(dscp[other]) == 50 and set(dscp[other]) == {0}, f"{other}: DSCP {sorted(set(dscp[other]))}"
    report(request, "home: priority", f"{mac} ({home.devices()[mac]['category']}): 50 of 50 probe frames reached the "
                                      f"gateway host marked DSCP 46; {other} (allowed): DSCP 0 kept")


def _rules(bridge: str, macs) -> set:
    """The devices' policy entries on the switch, meters by their band (see _policy_keys)."""
    return _policy_keys(ovs.dump_flows(bridge), macs, ovs.dump_meters(bridge))


def _policy_keys(flows, macs, meters: dict | None = None) -> set:
    """What each device's policy entries are; with ``meters`` (dump-meters), a meter is named by
    its band instead of its id (ids follow the order devices were created in, which a
    restarted controller does not keep)."""
    import re

    def actions(a):
        if meters is None:
            return a
        return re.sub(r"meter:(\d+)", lambda mo: f"meter:{meters[int(mo.group(1))].rate}{meters[int(mo.group(1))].unit}"
                      if int(mo.group(1)) in meters else mo.group(0), a)
    return {(f.table, f.priority, f.match, actions(f.actions), f.cookie) for m in macs for f in policy_flows(flows, m)}


def _decision(d: dict) -> tuple:
    """What a device record says of its decision and of the action in force."""
    return (d["category"], d["confidence"], d["stage"], d.get("claims_only"), d["enforced"], d.get("parked"))


def _expected_action(home, pol, d: dict):
    """The action ``pol`` gives a device for its current decision (None: no policy entry), as
    the controller works it out (controller_app.core.rules.RulesManager.treatment): its
    decision's treatment; for a decision that enforces nothing (provisional, with the policy
    enforcing on confirmed decisions), its last final decision's, held while a re-check or
    re-opened decision is under way (its history, from the inventory: the module's policies
    trust every category's claims, so the decision's claims_only, which the history does not
    keep, changes nothing there); else the policy's learning action. Gateways and parked
    devices have no policy entry."""
    if d.get("gateway") or d.get("parked") or d.get("dpid") is None:
        return None
    t = pol.treatment(d["category"], d["confidence"], d["stage"], bool(d.get("claims_only"))) \
        if d["stage"] is not None else None
    if t is None and d["stage"] is not None:
        final = [h for h in home.controller.get(f"/devices/{d['mac']}")["history"] if h["stage"] in FINAL]
        if final:
            t = pol.treatment(final[-1]["category"], final[-1]["confidence"], final[-1]["stage"])
    if t is None:
        t = pol.learning_treatment()
    return None if t is None else t.action


def _meter_rate(flows, meters, mac: str):
    """The rate (kbps) of the meter on the device's table-0 policy entry; None without one."""
    src = [f for f in policy_flows(flows, mac) if f.table == 0 and f.priority == 100]
    if not src or "meter:" not in src[0].actions:
        return None
    mid = int(src[0].actions.split("meter:")[1].split(",")[0])
    return meters[mid].rate if mid in meters else None


def _rule_problem(flows, meters, mac: str, action) -> str | None:
    """What is wrong with the device's policy entries on the switch for ``action`` (an
    Action, or None: no entry at all); None when they enforce it."""
    mine = policy_flows(flows, mac)
    if action is None:
        return f"policy entries on the switch, none expected: {[f.raw for f in mine]}" if mine else None
    src = [f for f in mine if f.table == 0 and f.priority == 100]
    if {f.table for f in mine} != {0, 1} or len(src) != 1:
        return f"policy entries in tables {sorted({f.table for f in mine})}, {len(src)} device entries in table 0"
    exp = expected_policy_text(action.describe())
    if "actions" in exp and src[0].actions != exp["actions"]:
        return f"table 0 entry {src[0].actions!r}, expected {exp['actions']!r}"
    if "actions_has" in exp and exp["actions_has"] not in src[0].actions:
        return f"table 0 entry {src[0].actions!r} without {exp['actions_has']!r}"
    rate = _meter_rate(flows, meters, mac)
    if rate != action.rate_limit_kbps:
        return f"meter {rate} kbps on the switch, expected {action.rate_limit_kbps}"
    return None


class RulesCheck:
    """Every device's rules on the switch, and the action the controller reports in force,
    against what a policy gives each one for its decision *at the time of the check*
    (decisions may be made meanwhile: learning devices' ``unknown`` answers wait for their
    identity probes, and so can land at any point of the module's tests). A check reads the
    devices, then the switch, then the devices again, and only counts when no decision
    changed in between; ``last`` keeps each device's state for the failure message."""

    def __init__(self, home, bridge: str, pol, extra=None):
        self.home, self.bridge, self.pol, self.extra = home, bridge, pol, extra
        self.last: dict = {}
        self.expected: dict = {}
        self.rules: dict = {}

    def __call__(self) -> bool:
        devs = self.home.devices()
        flows, meters = ovs.dump_flows(self.bridge), ovs.dump_meters(self.bridge)
        again = self.home.devices()
        self.expected = {m: _expected_action(self.home, self.pol, d) for m, d in devs.items()}
        self.rules = {m: _policy_keys(flows, [m], meters) for m in devs}
        self.last = {}
        ok = set(devs) == set(again)
        for m, d in devs.items():
            act = self.expected[m]
            want = act.describe() if act is not None else None
            problem = None
            if m not in again or _decision(again[m]) != _decision(d):
                problem = "its decision changed during the check"
            elif d["enforced"] != want:
                problem = f"the controller reports {d['enforced']!r} in force"
            else:
                problem = _rule_problem(flows, meters, m, act)
            if problem is None and self.extra is not None:
                problem = self.extra(m, d)
            ok = ok and problem is None
            self.last[m] = (_meter_rate(flows, meters, m), d, want, problem)
        return ok

    def explain(self) -> str:
        return "\n".join(f"  {m}: meter {rate} kbps on the switch; {d['category']} {d['confidence']} {d['stage']}, "
                         f"enforced {d['enforced']!r}, claims_only {d.get('claims_only')}; expected {want!r}"
                         + (f": {problem}" if problem else ": ok")
                         for m, (rate, d, want, problem) in sorted(self.last.items()))



def test_policy_hot_reload_changes_live_rules_and_an_invalid_file_changes_nothing(home, request):
    """The test policy is replaced by one that rate-limits a decided category (cameras where the
    replay decided any) at 128 kbps and unknown devices at 512 kbps: the live switch gets the
    new meters and entries; then an invalid file is rejected and nothing changes; then the test
    policy comes back with its rules. Each device's rules are checked against the action its
    decision at the time of the check gets (a learning device may be decided meanwhile)."""
    from controller_app.policy import parse_policy
    original = parse_policy(POLICY)
    devs = home.devices()
    # a category with a device the test policy gives that category's action: confirmed at
    # min_confidence or more (a camera confirmed at 0.75 gets the unknown action, like an
    # unknown device; the reloaded policy moves it to 512 kbps, not 128)
    cats = sorted({d["category"] for d in devs.values() if d["stage"] == "confirmed" and d["category"] != "unknown"
                   and d["confidence"] >= original.min_confidence}, key=lambda c: c != "camera")
    assert cats, f"no device confirmed at min_confidence {original.min_confidence} or more: {devs}"
    cat = cats[0]
    bridge = home.lab.bridge(1)
    ctl = home.controller
    reloaded_text = policy_text(dict(CATEGORIES, **{cat: "{rate_limit_kbps: 128}"}), unknown="{rate_limit_kbps: 512}")
    reloaded = parse_policy(reloaded_text)

    def in_force(pol):
        return ctl.get("/status")["policy"]["digest"] == pol.digest

    before = RulesCheck(home, bridge, original)
    wait_for(lambda: before() and in_force(original), 30, "the test policy's rules on the switch before the reload",
             explain=before.explain)

    def same_as_before(m, d):
        was = before.last.get(m)
        if was is None or _decision(was[1]) != _decision(d) or before.rules[m] == back.rules[m]:
            return None
        return "its rules are not those it had before the reload, its decision is the same"
    back = RulesCheck(home, bridge, original, extra=same_as_before)
    passed = False
    t = time.monotonic()
    home.policy_path.write_text(reloaded_text)
    try:
        moved = RulesCheck(home, bridge, reloaded)
        wait_for(lambda: moved() and in_force(reloaded), 30,
                 f"the reloaded policy's rules on the switch ({cat} at 128 kbps, unknown at 512 kbps)",
                 explain=moved.explain)
        reload_s = time.monotonic() - t
        limited = [m for m, a in moved.expected.items() if a is not None and a.rate_limit_kbps == 128]
        unknown = [m for m, a in moved.expected.items() if a is not None and a.rate_limit_kbps == 512]
        assert limited, f"no device at 128 kbps ({cat} confirmed at min_confidence or more):\n{moved.explain()}"
        assert any(moved.rules[m] != before.rules.get(m) for m in limited), "the reload changed no device's rules"
        # an invalid file: rejected, the rules stay as they are (a device whose decision changes
        # meanwhile gets the rules of the policy in force for its new decision)
        changed = {m: (_decision(d), moved.rules[m]) for m, (_, d, _, _) in moved.last.items()}
        events = len(ctl.log_events("policy_rejected"))
        home.policy_path.write_text(reloaded_text.replace(f"{cat}: {{rate_limit_kbps: 128}}", f"{cat}: blok"))
        wait_for(lambda: len(ctl.log_events("policy_rejected")) > events, 30, "the invalid policy to be rejected")
        rejected = ctl.log_events("policy_rejected")[-1]
        assert any(cat in p for p in rejected["problems"]), rejected
        time.sleep(1.5)

        def same_as_changed(m, d):
            was = changed.get(m)
            if was is None or was[0] != _decision(d) or was[1] == kept.rules[m]:
                return None
            return "its rules changed, its decision did not"
        kept = RulesCheck(home, bridge, reloaded, extra=same_as_changed)
        wait_for(lambda: kept() and in_force(reloaded), 10, "the reloaded policy's rules kept after the invalid file",
                 explain=kept.explain)
        passed = True
    finally:
        home.policy_path.write_text(POLICY)
        # back before the next test, also when this one failed (its own failure is the one reported)
        try:
            wait_for(lambda: back() and in_force(original), 30, "the original policy's rules back",
                     explain=back.explain)
        except AssertionError:
            if passed:
                raise
    report(request, "home: policy hot reload", f"{cat} -> 128 kbps ({len(limited)} devices), unknown -> 512 kbps "
                                               f"({len(unknown)}): on the switch {reload_s:.1f} s after the file "
                                               f"changed (watch interval 0.5 s); an invalid file rejected, rules "
                                               f"unchanged; the test policy back")


def test_controller_restart_restores_every_rule_without_reclassifying(home, request):
    bridge = home.lab.bridge(1)
    blocked, _, allowed = _roles(home)
    devs = home.devices()
    decided = [m for m, d in devs.items() if d["stage"] in FINAL]
    assert decided and allowed, f"need decided and allowed devices: {devs}"
    flows = ovs.dump_flows(bridge)
    rules_before = _rules(bridge, list(devs))
    meters_before = sorted((m.unit, m.rate) for m in ovs.dump_meters(bridge).values() if m.unit == "kbps")
    inv_before = {r["mac"]: r for r in read_inventory(home.controller.inventory)}
    # traffic keeps flowing while the controller is away: an allowed device and a blocked one
    work = home.workdir / "probes"
    work.mkdir(exist_ok=True)
    movers = [allowed[0]] + blocked[:1]
    procs = [home.lab.popen(home.host_of(m), ["tcpreplay", "-q", "--pps", "20", "--loop", "0", "--duration", "40",
                                              "-i", home.lab.intf(home.host_of(m)), str(_probe(home, m, work, 20, 200))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for m in movers]
    try:
        time.sleep(2)
        assert home.controller.stop() == 0
        t = time.monotonic()
        home.controller.start()
        home.controller.wait_switches(1)
        wait_for(lambda: _rules(bridge, list(devs)) == rules_before,
                 30, "every policy rule back on the switch")
        restore_s = time.monotonic() - t
        tap = GatewayTap(home.lab, work / "restart.pcapng", movers)
        time.sleep(3)
        counted = tap.stop().frames()
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
    flows = ovs.dump_flows(bridge)
    after = home.devices()
    for m in decided:
        assert m in after, f"{m} lost from the controller's devices"
        assert (after[m]["category"], after[m]["stage"], after[m]["enforced"]) == (
            devs[m]["category"], devs[m]["stage"], devs[m]["enforced"]), (m, devs[m], after[m])
        assert not behaviour_mirror(flows, m), f"{m}: mirrored again after the restart (reclassified from scratch)"
    assert sorted((m.unit, m.rate) for m in ovs.dump_meters(bridge).values() if m.unit == "kbps") == meters_before
    time.sleep(2 * DECIDE_INTERVAL)
    inv_after = {r["mac"]: r for r in read_inventory(home.controller.inventory)}
    assert set(inv_before) <= set(inv_after), f"lost from the inventory: {set(inv_before) - set(inv_after)}"
    for m in decided:
        assert inv_after[m]["decisions"] == inv_before[m]["decisions"], f"{m} was classified again"
    assert len(counted[allowed[0]][0]) > 0, "the allowed device's traffic does not flow after the restart"
    for m in blocked[:1]:
        assert len(counted[m][0]) == 0, f"{m} is blocked but its frames reach the gateway after the restart"
    report(request, "home: controller restart", f"all {len(rules_before)} policy entries of {len(decided)} decided "
                                                f"devices back {restore_s:.1f} s after the restart began (controller "
                                                f"start-up included); no new decision, no mirroring")


# ------------------------------------------------------------------ two switches


@pytest.fixture(scope="module")
def two(request, tmp_path_factory):
    """A generated capture on two switches: the camera, the sensor and the light on the
    second switch, the rest and the gateway on the first (about 40 s). The light (the hub and
    sensor too) names itself in its first seconds (a DHCP request with a host name, HomeKit mDNS announcements:
    ``testing.synth.IDENTITY``), for the live identity feed's check. Cameras and unknown
    devices are blocked, and so is whatever category the shipped model gives the far camera
    offline (generated traffic is a caricature: what the model makes of it is not the point
    here, a block across the link is)."""
    work = tmp_path_factory.mktemp("e2e-two")
    plan, _ = plan_synthetic(work / "synthetic", duration_s=1200.0, seed=11, identity=True)
    far = {d.name for d in plan.devices if d.category in ("camera", "sensor", "light")}
    sim = simulate_decisions(plan, DECIDE_INTERVAL * SPEEDUP)
    cats = dict(CATEGORIES)
    for d in plan.devices:
        got = sim[d.mac]["final"]
        if d.category == "camera" and got is not None and got[0] != "unknown":
            cats[got[0]] = "block"
    policy = work / "policy.yaml"
    policy.write_text(policy_text(cats, unknown="block"))
    sc = Scenario(plan, work, policy, speedup=SPEEDUP, topology="two", second_switch=far, prefix="iote2f",
                  decide_interval=DECIDE_INTERVAL)
    sc.far = far
    sc.sim = sim
    with sc:
        t = time.monotonic()
        sc.replay()
        sc.replay_s = time.monotonic() - t
        yield sc


def test_two_switches_devices_on_both_are_classified_and_ruled_on_their_edge_switch(two, request):
    check_categories(two, real=False)
    devs = two.devices()
    flows = two.flows()
    assert two.controller.get("/status")["links"] == 1
    for d in two.plan.devices:
        got = devs[d.mac]
        edge = two.edge_dpid(d.name)
        assert int(got["dpid"], 16) == edge, f"{d.mac} located on {got['dpid']}, its host is on {edge}"
        if got["stage"] in FINAL:
            for dpid, fl in flows.items():
                mine = policy_flows(fl, d.mac)
                assert bool(mine) == (dpid == edge), f"{d.mac}: policy entries on switch {dpid} (edge {edge})"
    # forwarding across the link: the gateway host (first switch) got every far device's frames,
    # and none from a blocked one once its block entry had taken effect
    from classifier.capture.decode import read_packets
    got = read_packets(str(two.gw_capture))
    far = [d for d in two.plan.devices if d.name in two.far]
    blocked_far = [d for d in far if devs[d.mac]["enforced"] == "block"]
    assert blocked_far, f"no device on the far switch ended blocked (cameras and unknown devices are): {devs}"
    for d in far:
        ts = got.ts_ns[got.eth_src == mac_to_int(d.mac)]
        assert len(ts) > 0, f"{d.mac} on the far switch never reached the gateway"
        if d in blocked_far:
            installed = two.rules[mac_to_int(d.mac)].policy_installed_ns
            assert int((ts > installed + 1_000_000_000).sum()) == 0, f"{d.mac} blocked, yet delivered afterwards"
    rows = [f"{d.mac} ({d.category}, switch {two.edge_dpid(d.name)}): {devs[d.mac]['category']} "
            f"{devs[d.mac]['stage']} -> {devs[d.mac]['enforced']}" for d in two.plan.devices]
    report(request, "two switches", f"replay {two.replay_s:.0f} s; link found by LLDP; rules on each device's edge "
                                    f"switch only; {len(blocked_far)} blocked on the far switch deliver nothing "
                                    f"afterwards\n    " + "\n    ".join(rows))


def test_identity_evidence_reaches_the_engine_live_and_names_itself_in_the_decision(two, request):
    """The far light's DHCP host name and HomeKit mDNS records: mirrored whole by its edge switch
    (longer than the 128 bytes the controller asks for other mirrored traffic), read by the
    controller, handed to the engine's identity voter, and named in its decision's explanation
    (the controller's decision history, from its inventory). Offline, the same engine on the
    same packets without those records decides otherwise, so the records are what decided."""
    from classifier.engine.engine import load_engine
    from classifier.engine.replay import replay_decisions
    from testing.synth import IDENTITY
    host, ci = IDENTITY["light"]
    want = (f"DHCP host name '{host}'", f"mDNS _hap._tcp ci={ci}")
    d = next(d for d in two.plan.devices if d.category == "light")
    got = two.controller.get(f"/devices/{d.mac}")
    hist = got["history"]
    assert hist, f"{d.mac} ({d.device}): no decision in the controller's history: {got}"
    named = [i for i, h in enumerate(hist) if all(w in (h["explanation"] or "") for w in want)]
    assert named, (f"{d.mac} ({d.device}): no decision names its identity evidence {want}:\n"
                   + "\n".join(f"{h['category']} {h['stage']} {h['evidence']}: {h['explanation']}" for h in hist))
    last = hist[-1]
    assert named[-1] == len(hist) - 1, f"its latest decision does not name its identity evidence: {last}"
    assert last["evidence"].get("identity_records", 0) >= 2, last
    assert got["category"] == "light", f"{d.mac}: {got['category']} {got['stage']}, its identity says light: {last}"
    inv = {r["mac"]: r for r in read_inventory(two.controller.inventory)}
    assert all(w in (inv[d.mac]["explanation"] or "") for w in want), inv[d.mac]
    counters = two.controller.get("/status").get("counters", {})
    assert counters.get("identity_records", 0) > 0, counters
    # without the records, on the same packets at the same cadence, the engine decides otherwise
    rep = replay_decisions(load_engine(), two.plan.packets, mac_to_int(d.mac), DECIDE_INTERVAL * SPEEDUP,
                           end_ns=two.plan.end_ns, identity=None)
    blind = rep.final or rep.last
    blind_text = f"{blind.category} {blind.stage}" if blind is not None else "no decision"
    ident = next((p for p in last["explanation"].split("; ") if p.startswith("identity: ")), "")
    report(request, "two switches: live identity feed",
           f"{d.mac} ({d.device}, far switch): {counters['identity_records']} identity records read from mirrored "
           f"packets (all devices); {len(hist)} decisions, identity named from decision {named[0] + 1} on; final "
           f"{last['category']} {last['confidence']:.2f} {last['stage']} on {last['evidence'].get('identity_records')} "
           f"of its records, {ident}; offline without its records: {blind_text}")
