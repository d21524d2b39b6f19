"""The end-to-end harness without a switch: ovs-ofctl output parsing, splitting a capture into
per-host replay streams, the compression analysis, probes, and the one-line skip where the
lab cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from classifier.capture.reader import read_frames  # noqa: E402
from classifier.capture.decode import read_packets  # noqa: E402
from classifier.capture.packets import mac_to_int  # noqa: E402
from classifier.capture.writer import Record, write_pcap  # noqa: E402
from topologies import harness, ovs  # noqa: E402
from topologies.replay import (SEC, ReplayError, ReplayRun, effect_text, measure_effects, plan_capture,  # noqa: E402
                               plan_synthetic)
from topologies.scenario import write_probe  # noqa: E402
from testing.synth import device_mac  # noqa: E402

FLOWS = """OFPST_FLOW reply (OF1.3) (xid=0x2):
 cookie=0x1500020000000102, duration=6.235s, table=0, n_packets=141, n_bytes=141000, priority=100,dl_src=02:00:00:00:01:02 actions=meter:4,goto_table:1
 cookie=0x1000000000000000, duration=12.188s, table=0, n_packets=113, n_bytes=9000, priority=0 actions=goto_table:1
 cookie=0x1300020000000101, duration=9.04s, table=2, n_packets=199, n_bytes=19900, idle_timeout=300, send_flow_rem priority=100,in_port=1,dl_src=02:00:00:00:01:01 actions=goto_table:3
 cookie=0x1500020000000101, duration=8.23s, table=0, n_packets=146, n_bytes=1, priority=150,ip,dl_src=02:00:00:00:01:01 actions=set_queue:1,set_field:46->ip_dscp,goto_table:1
"""
METERS = """OFPST_METER_CONFIG reply (OF1.3) (xid=0x2):
meter=4 kbps burst bands=
type=drop rate=256 burst_size=256

meter=3 pktps burst stats bands=
type=drop rate=200 burst_size=200
"""


def test_dump_flows_and_meters_are_parsed_with_flags_counters_and_cookies():
    flows = ovs.parse_flows(FLOWS)
    assert len(flows) == 4
    f = flows[0]
    assert (f.kind, f.mac, f.table, f.priority, f.match, f.actions, f.n_packets, f.duration) == (
        0x15, 0x020000000102, 0, 100, "dl_src=02:00:00:00:01:02", "meter:4,goto_table:1", 141, 6.235)
    assert flows[1].priority == 0 and flows[1].match == ""
    learned = flows[2]                       # "send_flow_rem" sits before the priority
    assert (learned.priority, learned.match, learned.idle_timeout) == (100, "in_port=1,dl_src=02:00:00:00:01:01", 300)
    assert flows[3].match == "ip,dl_src=02:00:00:00:01:01" and flows[3].priority == 150
    assert flows[0].key() != flows[3].key()
    meters = ovs.parse_meters(METERS)
    assert (meters[4].unit, meters[4].rate, meters[4].burst) == ("kbps", 256, 256)
    assert (meters[3].unit, meters[3].rate) == ("pktps", 200)


def test_a_capture_is_split_into_one_stream_per_sender_keeping_every_frame(tmp_path):
    plan, _ = plan_synthetic(tmp_path / "s", duration_s=600, categories=["camera", "plug", "light"])
    assert [d.category for d in plan.devices] == ["camera", "plug", "light"]
    assert [d.name for d in plan.devices] == ["h1", "h2", "h3"] and plan.gateway.name == "gw"
    by_label = {s.label: s for s in plan.streams}
    assert set(by_label) >= {"h1", "h2", "h3", "gw-h1", "gw-h2", "gw-h3"}
    total = 0
    for st in plan.streams:
        pk = read_packets(str(st.pcap))
        total += len(pk)
        assert len(pk) == st.packets and int(pk.ts_ns[0]) == st.first_ns
        assert (np.diff(pk.ts_ns) >= 0).all()
        if st.host != "gw":                   # a device host sends only its own frames
            assert set(pk.eth_src.tolist()) == {mac_to_int(plan.device_by_host(st.host).mac)}
        elif st.label != "gw-group":          # the gateway's frames for one device
            dev = plan.device_by_host(st.label[3:])
            assert set(pk.eth_dst.tolist()) == {mac_to_int(dev.mac)}
            assert set(pk.eth_src.tolist()) == {mac_to_int(plan.gateway.mac)}
    assert total == len(plan.packets) == len(plan.frames)
    # every frame of the original capture involving a device is replayed, once
    orig = read_packets(str(tmp_path / "s" / "synthetic.pcap"))
    assert total == len(orig)
    assert plan.ip_of(plan.devices[0].mac) == "192.168.1.10" and plan.gateway_ip() == "192.168.1.1"


def test_a_window_and_a_device_subset_are_honoured(tmp_path):
    plan, labels = plan_synthetic(tmp_path / "s", duration_s=600, categories=["camera", "plug"])
    sub = plan_capture(tmp_path / "s" / "synthetic.pcap", labels, tmp_path / "w", start_s=100, duration_s=200,
                       macs=[plan.devices[1].mac])
    assert [d.mac for d in sub.devices] == [plan.devices[1].mac]
    t_first = int(read_frames(str(tmp_path / "s" / "synthetic.pcap")).ts_ns.min())
    assert sub.t0_ns >= t_first + 100 * SEC and sub.end_ns < t_first + 300 * SEC
    m = mac_to_int(plan.devices[1].mac)
    assert ((sub.packets.eth_src == m) | (sub.packets.eth_dst == m) | (sub.packets.eth_dst == 0xFFFFFFFFFFFF)).all()


def test_bad_replay_inputs_get_clear_errors(tmp_path):
    plan, labels = plan_synthetic(tmp_path / "s", duration_s=60, categories=["plug"])
    with pytest.raises(ReplayError, match="02:00:00:00:09:09 not labelled"):
        plan_capture(tmp_path / "s" / "synthetic.pcap", labels, tmp_path / "w", macs=["02:00:00:00:09:09"])
    cut = tmp_path / "cut.pcap"
    fr = read_frames(str(tmp_path / "s" / "synthetic.pcap"))
    recs = [Record(int(fr.ts_ns[i]), bytes(fr.buf[int(fr.offset[i]):int(fr.offset[i]) + 58]),
                   wire_len=int(fr.wirelen[i])) for i in range(len(fr.offset)) if fr.caplen[i] > 58]
    with open(cut, "wb") as fh:
        write_pcap(fh, recs)
    plug = device_mac("plug", 0, 0)
    (tmp_path / "cut.csv").write_text(f"file,mac,device,category\ncut.pcap,{plug},p,plug\n"
                                      "cut.pcap,02:00:00:00:00:01,g,gateway\n")
    with pytest.raises(ReplayError, match=r"cut\.pcap: \d+ of \d+ frames were captured cut short"):
        plan_capture(cut, tmp_path / "cut.csv", tmp_path / "w2")
    (tmp_path / "nogw.csv").write_text(f"file,mac,device,category\ncut.pcap,{plug},p,plug\n")
    with pytest.raises(ReplayError, match="no device of category gateway"):
        plan_capture(cut, tmp_path / "nogw.csv", tmp_path / "w3")


def test_compression_effects_are_measured_from_what_the_gateway_saw(tmp_path):
    """A gateway capture built from the plan itself, K times faster, with every frame 200 ms
    late (12 s of capture time at K = 60) and one device's frames missing after the middle."""
    plan, _ = plan_synthetic(tmp_path / "s", duration_s=1800, categories=["hub", "sensor"])
    k = 60.0
    run = ReplayRun(k, start_ns=1_800_000_000 * SEC)
    late = 200_000_000                                  # 12 s of capture time
    sensor = mac_to_int(plan.devices[1].mac)
    mid = (plan.t0_ns + plan.end_ns) // 2
    recs = []
    for i, data in enumerate(plan.frames):
        t = int(plan.packets.ts_ns[i])
        if plan.packets.eth_src[i] == sensor and t > mid:
            continue                                    # as if blocked
        recs.append(Record(run.start_ns + int((t - plan.t0_ns) / k) + late, data))
    recs.sort(key=lambda r: r.ts_ns)
    cap = tmp_path / "gw.pcap"
    with open(cap, "wb") as fh:
        write_pcap(fh, recs, nano=True)
    eff = measure_effects(plan, run, cap)
    assert eff["timing_error_s"]["median"] == pytest.approx(late / SEC * k, abs=1e-3)
    assert eff["timing_error_s"]["max"] == pytest.approx(late / SEC * k, abs=1e-3)
    hub = eff["devices"][plan.devices[0].mac]
    assert hub["not_delivered"] == 0 and hub["seen"] == hub["packets"]
    assert eff["devices"][plan.devices[1].mac]["not_delivered"] > 0
    # a constant delay moves the frames less than 12 s before a 300 s boundary of their
    # device's grid into the next segment, and changes no feature computed from each
    # stream's own first frame
    pk = plan.packets
    moved = 0
    for d in plan.devices:
        m = mac_to_int(d.mac)
        mine = (pk.eth_src == m) | (pk.eth_dst == m)
        t = pk.ts_ns[mine]
        kept = ~((pk.eth_src[mine] == sensor) & (t > mid))
        pos = (t[kept] - t.min()) % (300 * SEC)
        moved += int((pos >= 300 * SEC - int(late * k)).sum())
    assert eff["packets_moved_segment"] == moved > 0
    assert eff["paper_features_rel_diff"]["max"] == 0.0
    assert eff["sessions_seen"] == eff["sessions_original"]
    assert eff["start_late_real_s"]["median"] == pytest.approx(late / SEC, abs=1e-6)
    assert "every millisecond of replay timing error becomes 60 ms" in effect_text(k, 12000)


def test_probe_frames_are_valid_udp_from_the_device(tmp_path):
    p = write_probe(tmp_path / "p.pcap", "02:00:00:00:01:02", "192.168.1.11", "02:00:00:00:00:01", "192.168.1.1",
                    count=5, size=1000)
    pk = read_packets(str(p))
    assert len(pk) == 5 and (pk.wire_len == 1000).all() and (pk.ip_proto == 17).all()
    assert (pk.eth_src == 0x020000000102).all() and (pk.dport == 9).all()
    fr = read_frames(str(p))
    assert len({bytes(fr.buf[int(o):int(o) + 1000]) for o in fr.offset}) == 5      # told apart by their IP id


def test_without_root_the_end_to_end_tests_skip_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    reason = harness.why_not_runnable()
    assert reason and "\n" not in reason and "root" in reason
    # the whole module is skipped with that one line
    (tmp_path / "fake_user.py").write_text("import os\nos.geteuid = lambda: 1000\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "fake_user", "-p", "no:cacheprovider",
                        str(ROOT / "tests" / "test_e2e.py")], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=300)
    skipped = [ln for ln in r.stdout.splitlines() if ln.startswith("SKIPPED")]
    assert len(skipped) == 1 and "need root" in skipped[0], r.stdout[-2000:]
    assert "1 skipped" in r.stdout


def test_a_generated_light_names_itself_and_the_engine_says_so(tmp_path):
    """``plan_synthetic(identity=True)``, which the two-switch end-to-end replay uses: the light
    sends a DHCP host name and HomeKit announcements (``ci=5``, a lightbulb), repeated on the RFC
    schedules, the other devices nothing of the kind; tshark reads the same records from them
    where it is installed; and the engine's decisions at the controller's cadence name them."""
    from testing.synth import IDENTITY
    from topologies.replay import simulate_decisions
    plan, _ = plan_synthetic(tmp_path / "s", duration_s=600, categories=["light", "plug"], identity=True)
    host, ci = IDENTITY["light"]
    light, plug = (mac_to_int(d.mac) for d in plan.devices)
    got = plan.identity.distinct(light)
    assert [v for v, _, _ in got["dhcp.hostname"]] == [host] and got["dhcp.hostname"][0][2] == 6
    assert f"ci={ci}" in [v for v, _, _ in got["mdns.txt"]] and got["mdns.service"][0][:1] == ("_hap._tcp",)
    assert [v for v, _, _ in got["mdns.instance"]] == [host.replace("-", " ")]
    assert not {"dhcp.hostname", "mdns.txt"} & set(plan.identity.distinct(plug))
    rep = simulate_decisions(plan, 120.0)[plan.devices[0].mac]["replay"]
    final = rep.final or rep.last
    assert final.category == "light" and f"DHCP host name '{host}'" in final.explanation \
        and f"mDNS _hap._tcp ci={ci}" in final.explanation, final
    import shutil
    if shutil.which("tshark"):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from tshark_identity import compare, expected_records, ours
        from classifier.features.identity import identity_records
        cap = tmp_path / "s" / "synthetic.pcap"
        exp, decoded = expected_records(str(cap))
        result = compare(ours(identity_records(str(cap))), exp, decoded)
        assert not {k: r for k, r in result.items() if r["missing"] or r["extra"]}, result
        assert result["dhcp.hostname"]["same"] == 6 and result["mdns.txt"]["same"] >= 8, result
