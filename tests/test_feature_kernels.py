"""The columnar feature kernels (classifier/features/kernels.py) against the vectorised numpy
code they replaced (tests/vectorised_reference.py), bit for bit: the device split, segment
features and sessions of generated captures (in time order and shuffled, with gateways and a
device filter, a device that sends to itself) and, marked ``shared``, of every shared capture."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from classifier.capture.decode import read_packets
from classifier.features.devices import split_devices
from classifier.features.segments import segment_features
from classifier.features.sessions import session_table

import vectorised_reference as ref


def _same_array(a, b, what):
    assert a.dtype == b.dtype, (what, a.dtype, b.dtype)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    if a.dtype == object:
        assert a.tolist() == b.tolist(), what
    else:
        # bit for bit (NaN never occurs; -0.0 and 0.0 would differ here)
        assert np.array_equal(a.view(np.uint8) if a.dtype.kind == "f" else a,
                              b.view(np.uint8) if b.dtype.kind == "f" else b), what


def check_capture(pk, gateways=(), devices=None, interval=300.0, idle=60.0, end_ns=None):
    view = split_devices(pk, gateways=gateways, devices=devices)
    want = ref.split_devices(pk, gateways=gateways, devices=devices)
    for name in ("macs", "pkt", "dev", "tx", "start"):
        _same_array(getattr(view, name), getattr(want, name), f"view.{name}")
    seg, seg_ref = segment_features(pk, view, interval, end_ns), ref.segment_features(pk, want, interval, end_ns)
    assert seg.names == seg_ref.names
    for name in ("macs", "segment", "start_ns", "complete", "values"):
        _same_array(getattr(seg, name), getattr(seg_ref, name), f"segments.{name}")
    s, s_ref = session_table(pk, view, idle), ref.session_table(pk, want, idle)
    for f in fields(s):
        _same_array(getattr(s, f.name), getattr(s_ref, f.name), f"sessions.{f.name}")
    return view


def test_generated_capture_bit_for_bit(synth_capture):
    path, _, net = synth_capture
    pk = read_packets(str(path), warnings=[])
    view = check_capture(pk)
    assert len(view) >= len(net.devices)
    check_capture(pk, gateways=[net.gateway_mac])
    check_capture(pk, devices=[net.devices[0].mac, net.devices[3].mac], interval=60.0, idle=5.0)
    check_capture(pk, end_ns=int(pk.ts_ns.max()) + 3_600 * 10**9, interval=17.5)
    one = net.devices[2].mac
    check_capture(pk.take(split_devices(pk, devices=[one]).pkt), devices=[one])


def test_out_of_order_and_odd_packets_bit_for_bit(synth_capture):
    path, _, net = synth_capture
    pk = read_packets(str(path), warnings=[])
    rng = np.random.default_rng(3)
    # timestamps out of order, equal timestamps, a packet from a device to itself
    shuffled = pk.take(rng.permutation(len(pk)))
    check_capture(shuffled)
    coarse = pk.take(np.arange(len(pk)))
    coarse.ts_ns = (coarse.ts_ns // 10**9) * 10**9
    check_capture(coarse, idle=1.0)
    selfie = pk.take(np.arange(min(len(pk), 500)))
    selfie.eth_dst[::7] = selfie.eth_src[::7]
    check_capture(selfie)
    check_capture(pk.take(np.zeros(0, np.int64)))


def test_many_devices_grow_the_tables():
    """More MACs and 5-tuples than the kernels' first tables hold."""
    from classifier.capture.packets import Packets
    rng = np.random.default_rng(5)
    n = 20_000
    pk = Packets.empty(n)
    pk.ts_ns[:] = np.sort(rng.integers(0, 3_600 * 10**9, n))
    pk.eth_src[:] = (rng.integers(1, 3000, n).astype(np.uint64) << np.uint64(8)) & np.uint64(0xFEFFFFFFFFFF)
    pk.eth_dst[:] = np.uint64(0x02AAAAAAAAAA)
    pk.wire_len[:] = rng.integers(60, 1500, n)
    pk.ip_version[:] = 4
    pk.ip_proto[:] = 17
    pk.src_ip[:, 1] = rng.integers(0, 50, n).astype(np.uint64) | np.uint64(0xFFFF0A000000)
    pk.dst_ip[:, 1] = np.uint64(0xFFFF08080808)
    pk.sport[:] = rng.integers(1024, 4000, n)
    pk.dport[:] = 53
    pk.proto[:] = rng.integers(0, 5, n)
    check_capture(pk, idle=30.0)


@pytest.mark.shared
@pytest.mark.slow
def test_shared_captures_bit_for_bit(datasets):
    from classifier.capture.labels import is_capture_file
    files = sorted(p for p in datasets.rglob("*") if p.is_file() and is_capture_file(p.name))
    assert files
    for p in files:
        check_capture(read_packets(str(p), warnings=[]))
