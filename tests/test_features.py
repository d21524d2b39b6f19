"""Device streams, segment features and sessions against plain-Python references
(tests/reference.py), on a generated capture everywhere and on shared captures when present."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.capture.decode import read_packets
from classifier.features.devices import split_devices
from classifier.capture.packets import mac_to_int
from classifier.features.segments import FEATURE_NAMES, PAPER_FEATURES, ccit_features, segment_features
from classifier.features.sessions import session_table

import reference


def _check_split(pk, gateways=()):
    view = split_devices(pk, gateways=gateways)
    ref = reference.device_entries(pk, set(gateways))
    assert sorted(ref) == view.macs.tolist()
    for d, mac in enumerate(view.macs.tolist()):
        sl = view.entries(d)
        got = sorted(zip(view.pkt[sl].tolist(), view.tx[sl].tolist()))
        assert got == sorted(ref[mac]), mac
        ts = pk.ts_ns[view.pkt[sl]]
        assert np.all(np.diff(ts) >= 0)
    return view


def _check_segments(pk, view, interval, gateways=()):
    table = segment_features(pk, view, interval)
    ref = reference.segment_rows(pk, interval, set(gateways))
    assert len(table) == len(ref)
    cols = {n: i for i, n in enumerate(table.names)}
    for r in range(len(table)):
        row = ref[(int(table.macs[r]), int(table.segment[r]))]
        assert table.start_ns[r] == row["start_ns"]
        for name, value in row.items():
            if name == "start_ns":
                continue
            got = table.values[r, cols[name]]
            assert got == pytest.approx(value, rel=1e-9, abs=1e-6), (name, r)
    return table


def _check_sessions(pk, view, timeout, gateways=()):
    s = session_table(pk, view, timeout)
    ref = reference.sessions(pk, timeout, set(gateways))
    assert len(s) == sum(len(v) for v in ref.values())
    for mac, sess in ref.items():
        mine = np.flatnonzero(s.mac == mac)
        assert len(mine) == len(sess), mac
        # same starts in the same order; ties in start time may come in any order
        assert [int(x) for x in s.start_ns[mine]] == [x["start"] for x in sess]
        by_key = {}
        for i in mine.tolist():
            key = (int(s.ip_proto[i]), tuple(s.local_ip[i].tolist()), int(s.local_port[i]),
                   tuple(s.remote_ip[i].tolist()), int(s.remote_port[i]), int(s.start_ns[i]))
            by_key[key] = i
        for x in sess:
            i = by_key[x["key"] + (x["start"],)]
            for f in ("packets_out", "packets_in", "bytes_out", "bytes_in", "outbound"):
                assert getattr(s, f)[i] == x[f], f
            assert s.duration[i] == pytest.approx(x["duration"])
            assert s.interval[i] == pytest.approx(x["interval"])
    return s


def test_generated_capture_against_reference(synth_capture):
    path, _, net = synth_capture
    pk = read_packets(str(path))
    gw = {mac_to_int(net.gateway_mac)}
    view = _check_split(pk, gw)
    assert len(view) == len(net.devices)
    for interval in (300.0, 60.0, 7.5):
        _check_segments(pk, view, interval, gw)
    _check_sessions(pk, view, 60.0, gw)
    _check_sessions(pk, view, 5.0, gw)


def test_gateway_and_group_macs_are_not_devices(synth_capture):
    path, _, net = synth_capture
    pk = read_packets(str(path))
    view = split_devices(pk)
    assert mac_to_int(net.gateway_mac) in view.macs.tolist()
    view = split_devices(pk, gateways=[net.gateway_mac])
    assert mac_to_int(net.gateway_mac) not in view.macs.tolist()
    assert all(not (m >> 40) & 1 for m in view.macs.tolist())


def test_empty_segments_are_explicit():
    """A device silent for a while gets all-zero segments, not missing rows."""
    import io
    from classifier.capture.writer import Record, write_pcap
    from testing.synth import ether, udp4
    dev, gw = "02:00:00:00:00:0a", "02:00:00:00:00:01"
    frame = ether(dev, gw, 0x0800, udp4("10.0.0.2", "10.0.0.1", 1000, 2000, bytes(20)))
    t0 = 10**18
    recs = [Record(t0, frame), Record(t0 + 5 * 10**9, frame), Record(t0 + 35 * 10**9, frame)]
    buf = io.BytesIO()
    write_pcap(buf, recs)
    pk = read_packets(buf.getvalue(), name="gap.pcap")
    view = split_devices(pk, gateways=[gw])
    t = segment_features(pk, view, 10.0)
    assert list(t.segment) == [0, 1, 2, 3]
    n = t.select(["n_total"])[:, 0]
    assert list(n) == [2, 0, 0, 1]
    assert np.all(t.values[1:3] == 0)
    assert list(t.complete) == [True, True, True, False]


def test_paper_feature_set_is_selectable():
    assert set(PAPER_FEATURES) <= set(FEATURE_NAMES) and len(PAPER_FEATURES) == 6
    for name in ("n_dns", "n_arp", "n_ntp", "n_dhcp", "len_rx_kurt", "len_tx_skew"):
        assert name in FEATURE_NAMES


def test_ccit_features_on_generated_capture(synth_capture):
    path, _, net = synth_capture
    pk = read_packets(str(path))
    view = split_devices(pk, gateways=[net.gateway_mac])
    t = ccit_features(pk, view, 600.0)
    frame = t.to_frame()
    cam = frame[frame.mac == net.devices[0].mac]   # the camera streams
    sensor = frame[frame.mac == next(d.mac for d in net.devices if d.category == "sensor")]
    assert (cam.mean_rate.mean() > 100 * sensor.mean_rate.mean())
    assert (cam.sleep_time.mean() < sensor.sleep_time.mean())
    phone = frame[frame.mac == next(d.mac for d in net.devices if d.category == "non-iot")]
    assert phone.n_servers.max() > cam.n_servers.max()
    assert phone.unique_dns.max() >= 5 and cam.unique_dns.max() <= 2
    assert np.all(frame.sleep_time <= 600.0) and np.all(frame.active_time <= 600.0)


@pytest.mark.shared
def test_shared_captures_against_reference(datasets):
    for rel in ["longterm/schlage-lock-01.pcap.gz", "home/training_2023-5-25_19_35_49.pcapng.gz",
                "iot-sentinel/Aria/Setup-A-1-STA.pcap.gz"]:
        pk = read_packets(str(datasets / rel), warnings=[])
        view = _check_split(pk)
        _check_segments(pk, view, 300.0)
        _check_sessions(pk, view, 60.0)
