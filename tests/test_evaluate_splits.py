"""The evaluation splits are honest: no device group, capture or time overlap across sides."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.evaluation.dataset import Stream
from classifier.evaluation.protocols import capture_folds, metrics, time_split, unseen_split
from classifier.features.sessions import Sessions


def fake_stream(capture, device, category, group, t0=0):
    z = np.zeros(0)
    sess = Sessions(mac=z.astype(np.uint64), start_ns=z.astype(np.int64), interval=z, duration=z,
                    ip_proto=z.astype(np.uint8), local_ip=np.zeros((0, 2), np.uint64), local_port=z.astype(np.int32),
                    remote_ip=np.zeros((0, 2), np.uint64), remote_port=z.astype(np.int32),
                    ip_version=z.astype(np.uint8), packets_out=z.astype(np.int64), packets_in=z.astype(np.int64),
                    bytes_out=z.astype(np.int64), bytes_in=z.astype(np.int64), outbound=z.astype(bool))
    return Stream(capture, "lab", device, device.split("#")[0], category, group, 1, t0, t0 + 1, 300.0,
                  np.zeros((1, 1), np.float32), np.ones(1, bool), sess, np.zeros((1, 11), np.float32), 300.0)


def lab_streams():
    streams = []
    layout = {"camera": ["camA#1", "camA#2", "camB", "camC"], "plug": ["plugA", "plugB", "plugC"],
              "hub": ["hubA"], "sensor": ["senA", "senB"]}
    for cat, devs in layout.items():
        for d in devs:
            group = d.split("#")[0]  # two units of camA form one group
            for k in range(4):
                streams.append(fake_stream(f"{d}-{k}.pcap", d, cat, group, t0=k * 100))
    return streams


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("share", [0.25, 0.5, 0.75])
def test_unseen_split_keeps_groups_on_one_side(seed, share):
    streams = lab_streams()
    tr, te = unseen_split(streams, seed, share)
    assert not np.any(tr & te)
    train_groups = {s.group for s, t in zip(streams, tr) if t}
    test_groups = {s.group for s, t in zip(streams, te) if t}
    assert not train_groups & test_groups
    # every usable category is on both sides; a category with one group is left out
    for cat in ("camera", "plug", "sensor"):
        assert any(s.category == cat for s, t in zip(streams, tr) if t)
        assert any(s.category == cat for s, t in zip(streams, te) if t)
    assert not any(s.category == "hub" for s, t in zip(streams, tr | te) if t)


def test_unseen_split_varies_with_seed():
    streams = lab_streams()
    splits = {tuple(unseen_split(streams, s)[0]) for s in range(10)}
    assert len(splits) > 1


def test_capture_folds_put_each_capture_in_one_fold_and_spread_devices():
    streams = lab_streams()
    f = capture_folds(streams, 4, seed=3)
    by_cap = {}
    for s, k in zip(streams, f):
        assert by_cap.setdefault(s.capture, k) == k
    for dev in {s.device for s in streams}:
        folds = {k for s, k in zip(streams, f) if s.device == dev}
        assert len(folds) == 4  # four captures each, dealt into four folds


def test_time_split_trains_on_earlier_captures():
    streams = lab_streams()
    tr, te = time_split(streams, 0.5)
    assert max(s.t0_ns for s, t in zip(streams, tr) if t) <= min(s.t0_ns for s, t in zip(streams, te) if t)


def test_metrics_per_instance_and_per_stream():
    y = np.array(["a", "a", "b", "b", "b"], dtype=object)
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    stream = np.array([0, 0, 1, 1, 2])
    m = metrics(y, proba, ["a", "b"], stream)
    assert m["accuracy"] == pytest.approx(3 / 5)
    # stream 0: mean [0.65, 0.35] -> a (right); stream 1 -> b (right); stream 2 -> a (wrong)
    assert m["stream_accuracy"] == pytest.approx(2 / 3)
    assert m["per_class"]["a"]["recall"] == pytest.approx(0.5)
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert m["confusion"]["matrix"] == [[1, 1], [1, 2]]


def _vendor_streams():
    """Devices of a few MAC vendors (several devices each), an unregistered one and a phone's
    randomised MAC, each with several captures, in three data sets."""
    from dataclasses import replace
    layout = [("home", "camera", 0x0017A0, 3), ("home", "plug", 0x0017A0, 2), ("iot-sentinel", "plug", 0x50C7BF, 4),
              ("iot-sentinel", "camera", 0xB0C554, 3), ("iot-sentinel", "sensor", 0xB0C554, 2),
              ("longterm", "lock", 0x3C6105, 1), ("speaker", "speaker", 0x3C6105, 1), ("home", "hub", 0xF0FE6B, 1),
              ("home", "non-iot", None, 1), ("unsw-2014", "hub", 0x001788, 2)]
    streams = []
    for d, (dataset, cat, oui, captures) in enumerate(layout):
        mac = (oui << 24 | d) if oui is not None else 0xDAA119000000 | d        # None: locally administered
        name = f"{dataset}/{cat}{d}"
        for k in range(captures):
            streams.append(replace(fake_stream(f"{name}-{k}.pcap", name, cat, name, t0=k), dataset=dataset, mac=mac))
    return streams


@pytest.fixture
def registry(monkeypatch):
    """An OUI registry of the vendors above (0xF0FE6B left unregistered), whatever is installed."""
    import classifier.identity.training as training
    from classifier.identity.oui import OuiRegistry
    reg = OuiRegistry()
    for prefix, org in ((0x0017A0, "Acme Cameras Inc."), (0x50C7BF, "Plugco Ltd."), (0xB0C554, "D-Link International"),
                        (0x3C6105, "Amazon Technologies Inc."), (0x001788, "Philips Lighting BV")):
        reg.add(24, prefix, org)
    monkeypatch.setattr(training, "default_registry", lambda: reg)
    return reg


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("folds", [2, 3, 5])
def test_vendor_splits_never_train_on_a_test_device_or_vendor(registry, seed, folds):
    from classifier.evaluation.generalisation import stream_vendors, vendor_splits
    streams = _vendor_streams()
    vendors = stream_vendors(streams)
    assert vendors.count("acme") == 5 and vendors.count("d-link") == 5 and len(set(vendors)) == 7
    splits = vendor_splits(streams, folds, seed)
    assert len(splits) == folds
    tested = np.zeros(len(streams), int)
    for name, train, test in splits:
        assert not np.any(train & test) and np.all(train | test)
        train_devices = {s.device for s, t in zip(streams, train) if t}
        test_devices = {s.device for s, t in zip(streams, test) if t}
        assert not train_devices & test_devices, name
        train_vendors = {v for v, t in zip(vendors, train) if t}
        test_vendors = {v for v, t in zip(vendors, test) if t}
        assert not train_vendors & test_vendors, name
        assert name == f"vendors {', '.join(sorted(test_vendors))}"
        tested += test
    assert np.all(tested == 1)          # every stream tested once, in the split of its vendor


def test_dataset_splits_never_train_on_a_test_device_or_data_set():
    from classifier.evaluation.generalisation import CROSS_TESTS, dataset_splits
    streams = _vendor_streams()
    splits = dataset_splits(streams)
    assert [n for n, _, _ in splits] == [f"test on {'+'.join(t)}" for t in CROSS_TESTS]
    tested = np.zeros(len(streams), int)
    for (name, train, test), names in zip(splits, CROSS_TESTS):
        assert not np.any(train & test) and np.all(train | test)
        assert not {s.device for s, t in zip(streams, train) if t} & {s.device for s, t in zip(streams, test) if t}
        assert {s.dataset for s, t in zip(streams, test) if t} <= set(names)
        assert not {s.dataset for s, t in zip(streams, train) if t} & set(names)
        tested += test
    assert np.all(tested == 1)
    # a data set that is the only one left has no training side: no split
    assert dataset_splits([s for s in streams if s.dataset == "home"]) == []
