"""One feature path: a capture replayed as mirrored packet-ins into the core yields exactly the
segment features and sessions the offline tools compute from the file."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.capture.reader import read_frames
from classifier.capture.decode import decode
from classifier.features.devices import split_devices
from classifier.capture.labels import load_datasets
from classifier.features.segments import segment_features
from classifier.features.sessions import session_table
from controller_app.core import Core, PacketInBatch, Settings
from controller_app.intents import CookieKind, cookie

MAX_LEN = 128


def replay(path, devices: list[int], gateways: list[int], limit: int | None = None, compress: int = 1,
           time_scale: float | None = None):
    """Feed a capture to a core as a switch would: every device learned at its own port, then
    each frame mirrored (truncated to 128 bytes, total_len = wire length) in batches.
    ``compress`` K: the frames arrive K times faster than captured (a replay at K times the
    speed) and the core runs with ``time_scale`` K, or ``time_scale`` where given.
    Returns the core and the offline packet table (the same first ``limit`` frames)."""
    fr = read_frames(str(path))
    pk = decode(fr)
    n = len(fr.offset) if limit is None else min(limit, len(fr.offset))
    core = Core(Settings(gateways=tuple(gateways), max_buffer_packets=10**9, decide_min_packets=10**9,
                         time_scale=float(compress if time_scale is None else time_scale)))
    arrival = fr.ts_ns.copy()
    if compress != 1:
        assert (np.diff(arrival) % compress == 0).all()       # so that compressing loses nothing
        arrival = arrival[0] + (arrival - arrival[0]) // compress
    ports = {mac: i + 1 for i, mac in enumerate(sorted(devices))}
    core.switch_up(1, list(ports.values()) + [1000], 0)
    learn = []
    for mac, port in ports.items():
        frame = (0xFFFFFFFFFFFF).to_bytes(6, "big") + mac.to_bytes(6, "big") + b"\x08\x06" + bytes(28)
        learn.append((1, port, cookie(CookieKind.LEARN), len(frame), 0, frame))
    core.packet_ins(PacketInBatch.from_rows(learn), 0)
    assert all(core.devices[m].mirror_dpid == 1 for m in devices)
    rows = []
    src, dst = pk.eth_src.tolist(), pk.eth_dst.tolist()
    for i in range(n):
        o, cap = int(fr.offset[i]), int(fr.caplen[i])
        data = bytes(fr.buf[o:o + min(cap, MAX_LEN)])
        owner = src[i] if src[i] in ports else dst[i]
        if owner not in ports:
            continue          # the switch mirrors only learning devices' packets
        rows.append((1, ports.get(src[i], 1000), cookie(CookieKind.MIRROR, owner), int(fr.wirelen[i]),
                     int(arrival[i]), data))
        if len(rows) == 997:  # an odd batch size, so batches straddle segments and sessions
            core.packet_ins(PacketInBatch.from_rows(rows), 0)
            rows = []
    core.packet_ins(PacketInBatch.from_rows(rows), 0)
    return core, pk.take(slice(0, n))


def assert_same_features(core, offline, devices, gateways, interval=60.0, idle=30.0):
    end_ns = int(offline.ts_ns.max())
    off_view = split_devices(offline, gateways=gateways)
    off_seg = segment_features(offline, off_view, interval, end_ns)
    off_sess = session_table(offline, off_view, idle)
    checked = 0
    for mac in devices:
        online = core.learner.packets(mac)
        if len(online) == 0:
            continue
        on_view = split_devices(online, gateways=gateways, devices=[mac])
        on_seg = segment_features(online, on_view, interval, end_ns)
        rows = off_seg.macs == mac
        assert on_seg.names == off_seg.names
        np.testing.assert_array_equal(on_seg.start_ns, off_seg.start_ns[rows])
        np.testing.assert_array_equal(on_seg.complete, off_seg.complete[rows])
        np.testing.assert_array_equal(on_seg.values, off_seg.values[rows])
        on_sess = session_table(online, on_view, idle)
        srows = np.flatnonzero(off_sess.mac == mac)
        assert len(on_sess) == len(srows)
        for col in ("start_ns", "interval", "duration", "ip_proto", "local_ip", "local_port", "remote_ip",
                    "remote_port", "packets_out", "packets_in", "bytes_out", "bytes_in", "outbound"):
            np.testing.assert_array_equal(getattr(on_sess, col), getattr(off_sess, col)[srows], err_msg=col)
        checked += 1
    return checked


def test_replayed_synthetic_capture_gives_the_offline_features(synth_capture):
    path, _, net = synth_capture
    from classifier.capture.packets import mac_to_int
    devices = [mac_to_int(d.mac) for d in net.devices]
    gateways = [mac_to_int(net.gateway_mac)]
    core, offline = replay(path, devices, gateways)
    assert core.counters["packet_ins_mirror"] > 10_000
    assert core.counters.get("packet_ins_malformed", 0) == 0
    assert max(core.learner.packets(d).cap_len.max() for d in devices) == MAX_LEN   # really truncated
    assert assert_same_features(core, offline, devices, gateways) == len(devices)


def test_capture_replayed_eight_times_faster_gives_the_offline_features_with_time_scale(synth_capture):
    """A replay compressed K times, classified with ``--time-scale K``, is seen in the capture's
    own time: the same segments and sessions as offline. The same replay with time scale 1: the
    core hands the classifier the compressed times, so K times fewer segments, and sessions
    whose gaps shrink below the idle timeout merge."""
    path, _, net = synth_capture
    from classifier.capture.packets import mac_to_int
    devices = [mac_to_int(d.mac) for d in net.devices]
    gateways = [mac_to_int(net.gateway_mac)]
    fr = read_frames(str(path))
    assert int(fr.ts_ns[0]) == int(fr.ts_ns.min())            # the first frame is mirrored: it is t0
    core, offline = replay(path, devices, gateways, compress=8)
    assert assert_same_features(core, offline, devices, gateways) == len(devices)
    plain, _ = replay(path, devices, gateways, compress=8, time_scale=1.0)
    merged = 0
    for mac in devices:
        slow = core.learner.packets(mac)
        fast = plain.learner.packets(mac)
        t0 = int(fr.ts_ns[0])
        np.testing.assert_array_equal(fast.ts_ns - t0, (slow.ts_ns - t0) // 8)   # the arrival times as they were
        slow_view = split_devices(slow, gateways=gateways, devices=[mac])
        fast_view = split_devices(fast, gateways=gateways, devices=[mac])
        n_slow = len(segment_features(slow, slow_view, 60.0, int(slow.ts_ns.max())).start_ns)
        n_fast = len(segment_features(fast, fast_view, 60.0, int(fast.ts_ns.max())).start_ns)
        assert n_fast * 7 < n_slow
        s_slow = session_table(slow, slow_view, 30.0)
        s_fast = session_table(fast, fast_view, 30.0)
        assert len(s_fast) <= len(s_slow)
        merged += len(s_slow) - len(s_fast)
        # with the idle timeout divided by K too, the same sessions, their intervals K times shorter
        s_scaled = session_table(fast, fast_view, 30.0 / 8)
        assert len(s_scaled) == len(s_slow)
        np.testing.assert_allclose(s_scaled.interval * 8, s_slow.interval, atol=1e-6)
    assert merged > 0


@pytest.mark.shared
def test_replayed_shared_home_capture_gives_the_offline_features(datasets):
    folder = datasets / "home"
    path = folder / "training_2023-5-25_19_35_49.pcapng.gz"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    gateways = sorted(load_datasets([str(folder / "devices.csv")]).gateways())
    offline_all = decode(read_frames(str(path)))
    view = split_devices(offline_all, gateways=gateways)
    devices = [int(m) for m in view.macs]
    core, offline = replay(path, devices, gateways, limit=60_000)
    assert assert_same_features(core, offline, devices, gateways) >= 5
