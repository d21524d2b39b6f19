"""A network through several captures: the gateway found in the traffic, and one verdict per
device from its stream across the files (as the controller sees it live)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from classifier.capture.decode import read_packets
from classifier.capture.packets import mac_to_int, mac_to_str
from classifier.capture.writer import write_pcap
from classifier.cli import main
from classifier.pools.network import find_gateways, join_captures, offlink_counts
from testing.synth import default_network, ether, network_records, tcp4, udp4


@pytest.fixture(scope="module")
def split_network(tmp_path_factory):
    """One hour of a generated network, as one capture and as three consecutive ones."""
    folder = tmp_path_factory.mktemp("net")
    net = default_network()
    recs = network_records(net, 3600.0, seed=11)
    whole = folder / "whole.pcap"
    with open(whole, "wb") as fh:
        write_pcap(fh, recs)
    cut = [0, len(recs) // 3, 2 * len(recs) // 3, len(recs)]
    parts = []
    for k in range(3):
        p = folder / f"part-{k}.pcap"
        with open(p, "wb") as fh:
            write_pcap(fh, recs[cut[k]:cut[k + 1]])
        parts.append(p)
    return net, whole, parts


def test_gateway_found_in_generated_traffic(split_network):
    net, whole, parts = split_network
    pk = read_packets(str(whole))
    found = find_gateways(pk)
    assert list(found) == [mac_to_int(net.gateway_mac)]
    v4, v6 = found[mac_to_int(net.gateway_mac)]
    assert v4 >= 10 and v6 == 0
    counts = offlink_counts(pk)
    assert all(counts.get(mac_to_int(d.mac), (0, 0)) == (0, 0) for d in net.devices)


def test_gateway_from_hosts_with_public_addresses():
    """Hosts with public addresses show one each (their own); the router carries many."""
    gw, hosts = "02:00:00:00:00:01", [f"02:00:00:00:01:{i:02x}" for i in range(4)]
    frames = []
    for i, h in enumerate(hosts):
        me = f"130.1.2.{10 + i}"
        for j in range(3):
            far = f"52.0.{i}.{j}"
            frames.append(ether(h, gw, 0x0800, tcp4(me, far, 40000 + j, 443, 0x02)))
            frames.append(ether(gw, h, 0x0800, tcp4(far, me, 443, 40000 + j, 0x12)))
    from classifier.capture.decode import decode_frames
    pk = decode_frames(frames, np.arange(len(frames)) * 1000, [len(f) for f in frames])
    assert list(find_gateways(pk)) == [mac_to_int(gw)]
    assert offlink_counts(pk)[mac_to_int(hosts[0])] == (1, 0)
    # traffic that never leaves the link names no gateway
    lan = [ether(hosts[0], hosts[1], 0x0800, udp4("192.168.1.2", "192.168.1.3", 5000, 5001, b"x"))]
    assert find_gateways(decode_frames(lan, [0], [len(lan[0])])) == {}


def test_join_captures_is_time_order(split_network):
    net, whole, parts = split_network
    pks = [read_packets(str(p)) for p in parts]
    joined, source = join_captures(pks[::-1])  # given out of order
    ref = read_packets(str(whole))
    assert len(joined) == len(ref)
    for name in ("ts_ns", "eth_src", "eth_dst", "wire_len", "sport", "dport", "proto"):
        assert np.array_equal(getattr(joined, name), getattr(ref, name)), name
    assert np.array_equal(source, np.repeat([2, 1, 0], [len(p) for p in pks]))


def _classify(*args, capsys):
    assert main(["classify", *map(str, args), "--json"]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def test_classify_a_network_not_a_file(split_network, capsys):
    net, whole, parts = split_network
    shuffled = list(parts)
    random.Random(3).shuffle(shuffled)
    rows, err = _classify(*shuffled, capsys=capsys)
    assert f"gateway {net.gateway_mac}" in err
    ref, _ = _classify(whole, capsys=capsys)
    # one verdict per device, the same as from the whole capture
    assert sorted(r["mac"] for r in rows) == sorted(d.mac for d in net.devices)
    key = lambda r: r["mac"]  # noqa: E731
    for a, b in zip(sorted(rows, key=key), sorted(ref, key=key)):
        assert a["captures"] == 3 and b["captures"] == 1
        for field in ("category", "confidence", "decision", "packets", "first_seen", "last_seen"):
            assert a[field] == b[field], (a["mac"], field)
    # today's view: a verdict per device and capture
    per_file, _ = _classify(*parts, "--per-file", capsys=capsys)
    assert len(per_file) == 3 * len(net.devices)
    assert {r["capture"] for r in per_file} == {p.name for p in parts}
    by_mac = {}
    for r in per_file:
        by_mac[r["mac"]] = by_mac.get(r["mac"], 0) + r["packets"]
    assert by_mac == {r["mac"]: r["packets"] for r in rows}


def test_gateway_option_overrides(split_network, capsys):
    net, whole, parts = split_network
    dev = net.devices[0].mac
    rows, err = _classify(whole, "--gateway", dev, capsys=capsys)
    assert "found" not in err
    macs = {r["mac"] for r in rows}
    assert dev not in macs and net.gateway_mac in macs  # the override is taken as given


@pytest.mark.shared
@pytest.mark.slow
def test_gateways_of_the_shared_networks(datasets):
    """The routers the data sets name are found, and no labelled device is ever taken for one."""
    from classifier.capture.labels import load_datasets
    from test_exactness import _files
    labels = load_datasets([str(datasets)])
    expect = {"home": {"dc:a6:32:ce:31:63"}, "mud-2024": {"b8:27:eb:a0:92:24", "d8:3a:dd:ee:25:0a"},
              "unsw-2014": {"00:13:c4:5c:81:1a"}}
    for subset in ("home", "mud-2024", "unsw-2014", "longterm", "speaker", "iot-sentinel"):
        found, silent = set(), 0
        files = _files(datasets / subset)
        assert files
        for path in files:
            gws = find_gateways(read_packets(path, warnings=[]))
            silent += not gws
            for mac in gws:
                dev = labels.label(path, mac)
                assert dev is None or dev.category == "gateway", f"{path}: {dev.name} taken for a gateway"
            found |= {mac_to_str(m) for m in gws}
        if subset in expect:
            assert found == expect[subset], (subset, found)
            assert silent <= (1 if subset == "home" else 0)  # one home capture never leaves the link
        if subset == "home":
            assert labels.gateways() >= {mac_to_int(m) for m in expect["home"]}
